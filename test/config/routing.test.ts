// Routing in the directory (plus-addressing, postmaster@/abuse@ that always exist) and the
// [routing] config block.
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Directory } from '../../src/config/directory.ts';
import { parseConfigText } from '../../src/config/load.ts';
import { silentLogger } from '../../src/core/log.ts';
import { tempDir } from './helpers.ts';

const HASH = '{PLAIN}x';
const open: Directory[] = [];
afterEach(() => {
  for (const d of open.splice(0)) d.close();
});

async function directory(users: string[], aliases: string[], plusDelimiter?: string): Promise<Directory> {
  const dir = await tempDir();
  await writeFile(join(dir, 'users'), users.map((u) => `${u}:${HASH}\n`).join(''));
  await writeFile(join(dir, 'aliases'), aliases.join('\n'));
  const d = await Directory.open({ configDir: dir, domains: ['example.org', 'family.test', 'empty.test'], log: silentLogger(), watch: false, plusDelimiter });
  open.push(d);
  return d;
}

describe('plus-addressing', () => {
  it('delivers user+tag@ to the user with the tag; aliases (also through +) and a literal "+" alias win', async () => {
    const d = await directory(['me@example.org', 'kid@example.org'], ['list@example.org: kid@example.org, friend@elsewhere.net', 'me+kid@example.org: kid@example.org']);
    expect(d.resolve('Me+Shop@example.org')).toEqual({ local: [{ user: 'me', domain: 'example.org', tag: 'shop' }], remote: [] });
    expect(d.resolve('me+@example.org')).toEqual({ local: [{ user: 'me', domain: 'example.org' }], remote: [] });
    expect(d.resolve('me+kid@example.org')).toEqual({ local: [{ user: 'kid', domain: 'example.org' }], remote: [] });
    expect(d.resolve('list+x@example.org')).toEqual({ local: [{ user: 'kid', domain: 'example.org' }], remote: ['friend@elsewhere.net'] });
    expect(d.resolve('nobody+x@example.org')).toBeNull();
    // Only the first delimiter splits: the tag keeps the rest.
    expect(d.resolve('me+a+b@example.org')?.local[0].tag).toBe('a+b');
  });

  it('takes its delimiters from config, and can be turned off', async () => {
    const dash = await directory(['me@example.org'], [], '-+');
    expect(dash.resolve('me-news@example.org')?.local[0]).toEqual({ user: 'me', domain: 'example.org', tag: 'news' });
    expect(dash.resolve('me+news@example.org')?.local[0].tag).toBe('news');
    dash.setPlusDelimiter('');
    expect(dash.resolve('me+news@example.org')).toBeNull();
  });

  it('a catch-all does not take plus-addresses of an existing user', async () => {
    const d = await directory(['me@example.org', 'mum@family.test'], ['@example.org: mum@family.test']);
    expect(d.resolve('me+x@example.org')?.local).toEqual([{ user: 'me', domain: 'example.org', tag: 'x' }]);
    expect(d.resolve('other@example.org')?.local).toEqual([{ user: 'mum', domain: 'family.test' }]);
  });
});

describe('postmaster@ and abuse@', () => {
  it('exist in every local domain: an alias if there is one, else the first user of the domain, else the first user at all', async () => {
    const d = await directory(['me@example.org', 'kid@example.org', 'mum@family.test'], ['abuse@family.test: kid@example.org', '@family.test: me@example.org']);
    expect(d.resolve('POSTMASTER@example.org')).toEqual({ local: [{ user: 'me', domain: 'example.org' }], remote: [] });
    expect(d.resolve('abuse@example.org')).toEqual({ local: [{ user: 'me', domain: 'example.org' }], remote: [] });
    expect(d.resolve('postmaster@family.test')).toEqual({ local: [{ user: 'mum', domain: 'family.test' }], remote: [] });
    expect(d.resolve('abuse@family.test')).toEqual({ local: [{ user: 'kid', domain: 'example.org' }], remote: [] });
    expect(d.resolve('postmaster@empty.test')).toEqual({ local: [{ user: 'me', domain: 'example.org' }], remote: [] });
    expect(d.resolve('postmaster+reports@example.org')?.local[0]).toMatchObject({ user: 'me' });
    expect(d.resolve('hostmaster@example.org')).toBeNull();
  });

  it('with no users at all, there is nobody to take them', async () => {
    const d = await directory([], []);
    expect(d.resolve('postmaster@example.org')).toBeNull();
  });
});

describe('[routing] config', () => {
  const MINIMAL = 'hostname = "mail.example.org"\ndomains = ["example.org"]\n';
  it('has defaults', () => {
    expect(parseConfigText(MINIMAL, 'x.toml').routing).toEqual({
      plus_delimiter: '+',
      plus_to_folder: false,
      srs_secret_file: 'srs.secret',
      srs_max_age: 21 * 86_400_000,
      max_received: 50,
      forward_arc_seal: false,
      vacation_interval: 7 * 86_400_000,
    });
  });

  it('parses values and refuses bad ones naming the key', () => {
    const r = parseConfigText(`${MINIMAL}[routing]\nplus_delimiter = "-+"\nplus_to_folder = true\nvacation_interval = "3d"\nmax_received = 30\n`, 'x.toml').routing;
    expect(r).toMatchObject({ plus_delimiter: '-+', plus_to_folder: true, vacation_interval: 3 * 86_400_000, max_received: 30 });
    expect(() => parseConfigText(`${MINIMAL}[routing]\nplus_delimiter = "a"\n`, 'x.toml')).toThrow(/plus_delimiter/);
    expect(() => parseConfigText(`${MINIMAL}[routing]\nmax_received = 1\n`, 'x.toml')).toThrow(/max_received/);
    expect(() => parseConfigText(`${MINIMAL}[routing]\nforward = true\n`, 'x.toml')).toThrow(/forward/);
  });

  it('config/hearth.example.toml lists every [routing] key', () => {
    const text = readFileSync(new URL('../../config/hearth.example.toml', import.meta.url), 'utf8');
    const section = text.slice(text.indexOf('[routing]'));
    for (const key of Object.keys(parseConfigText(MINIMAL, 'x.toml').routing)) expect(section).toMatch(new RegExp(`^${key} = `, 'm'));
  });
});
