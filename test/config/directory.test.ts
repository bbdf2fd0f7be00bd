import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Directory } from '../../src/config/directory.ts';
import type { ReloadEvent } from '../../src/config/directory.ts';
import { UsersFile } from '../../src/config/users.ts';
import { silentLogger } from '../../src/core/log.ts';
import { tempDir } from './helpers.ts';

const open: Directory[] = [];
afterEach(() => {
  for (const d of open.splice(0)) d.close();
});

async function setup(files: { users?: string; aliases?: string }, watch = false): Promise<{ dir: string; directory: Directory; users: UsersFile }> {
  const dir = await tempDir();
  const users = new UsersFile(join(dir, 'users'));
  if (files.users !== undefined) await writeFile(join(dir, 'users'), files.users);
  if (files.aliases !== undefined) await writeFile(join(dir, 'aliases'), files.aliases);
  const directory = await Directory.open({ configDir: dir, domains: ['example.org', 'Family.Test'], log: silentLogger(), watch });
  open.push(directory);
  return { dir, directory, users };
}

/** The next reload of `file` (bounded: fails the test after 5 s). */
function nextReload(directory: Directory, file: ReloadEvent['file']): Promise<ReloadEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no reload of ${file} within 5 s`)), 5000);
    const onReload = (e: ReloadEvent): void => {
      if (e.file !== file) return;
      clearTimeout(timer);
      directory.off('reload', onReload);
      resolve(e);
    };
    directory.on('reload', onReload);
  });
}

const HASH = '{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1'; // "Hello world!"

describe('Directory.resolve', () => {
  const USERS = `me@example.org:${HASH}\nkid@example.org:${HASH}\nmum@family.test:${HASH}\n`;
  const ALIASES = [
    'postmaster@example.org: me@example.org',
    'family@family.test: me@example.org, mum@family.test, aunt@elsewhere.net',
    'everyone@example.org: family@family.test, kid@example.org, ME@example.org',
    'loop-a@example.org: loop-b@example.org',
    'loop-b@example.org: loop-a@example.org, me@example.org',
    'pure-loop@example.org: pure-loop2@example.org',
    'pure-loop2@example.org: pure-loop@example.org',
    'me@example.org: someone-else@elsewhere.net',
    'forward@example.org: Friend@Elsewhere.net',
    'typo@example.org: nobody-here@example.org',
    '@family.test: mum@family.test',
  ].join('\n');

  it('answers local domains case-insensitively', async () => {
    const { directory } = await setup({});
    expect(directory.isLocalDomain('EXAMPLE.org')).toBe(true);
    expect(directory.isLocalDomain('family.test')).toBe(true);
    expect(directory.isLocalDomain('elsewhere.net')).toBe(false);
    directory.setDomains(['other.test']);
    expect(directory.isLocalDomain('example.org')).toBe(false);
    expect(directory.isLocalDomain('other.test')).toBe(true);
  });

  it('resolves users, aliases, nested aliases, remote targets and catch-alls', async () => {
    const { directory } = await setup({ users: USERS, aliases: ALIASES });
    // a user wins over an alias of the same name
    expect(directory.resolve('Me@Example.ORG')).toEqual({ local: [{ user: 'me', domain: 'example.org' }], remote: [] });
    expect(directory.resolve('postmaster@example.org')).toEqual({ local: [{ user: 'me', domain: 'example.org' }], remote: [] });
    expect(directory.resolve('everyone@example.org')).toEqual({
      local: [
        { user: 'me', domain: 'example.org' },
        { user: 'mum', domain: 'family.test' },
        { user: 'kid', domain: 'example.org' },
      ],
      remote: ['aunt@elsewhere.net'],
    });
    expect(directory.resolve('forward@example.org')).toEqual({ local: [], remote: ['Friend@elsewhere.net'] });
    // catch-all only for its own domain, and only when nothing else matches
    expect(directory.resolve('anything@family.test')).toEqual({ local: [{ user: 'mum', domain: 'family.test' }], remote: [] });
    expect(directory.resolve('anything@example.org')).toBeNull();
    expect(directory.resolve('typo@example.org')).toBeNull();
    // not a local domain: null (callers check isLocalDomain first)
    expect(directory.resolve('someone@elsewhere.net')).toBeNull();
    expect(directory.resolve('not-an-address')).toBeNull();
  });

  it('survives alias loops', async () => {
    const { directory } = await setup({ users: USERS, aliases: ALIASES });
    expect(directory.resolve('loop-a@example.org')).toEqual({ local: [{ user: 'me', domain: 'example.org' }], remote: [] });
    expect(directory.resolve('pure-loop@example.org')).toBeNull();
  });

  it('stops deep alias chains', async () => {
    const chain = Array.from({ length: 30 }, (_, i) => `a${i}@example.org: a${i + 1}@example.org`).join('\n');
    const { directory } = await setup({ users: `a30@example.org:${HASH}\n`, aliases: chain });
    // 5 hops: delivered; 30 hops: past the limit of 10, so nobody
    expect(directory.resolve('a25@example.org')).toEqual({ local: [{ user: 'a30', domain: 'example.org' }], remote: [] });
    expect(directory.resolve('a20@example.org')).toEqual({ local: [{ user: 'a30', domain: 'example.org' }], remote: [] });
    expect(directory.resolve('a0@example.org')).toBeNull();
  });
});

describe('Directory.authenticate', () => {
  it('accepts the right password only, never a disabled user', async () => {
    const { directory } = await setup({ users: `me@example.org:${HASH}\nbob@example.org:{PLAIN}Hello world!\n` });
    expect(await directory.authenticate('ME@example.org', 'Hello world!')).toMatchObject({ address: 'me@example.org', user: 'me', domain: 'example.org' });
    expect(await directory.authenticate('me@example.org', 'hello world!')).toBeNull();
    expect(await directory.authenticate('nobody@example.org', 'Hello world!')).toBeNull();
    expect(await directory.authenticate('bob@example.org', 'Hello world!')).toBeNull();
    // a disabled user still receives mail
    expect(directory.resolve('bob@example.org')).toEqual({ local: [{ user: 'bob', domain: 'example.org' }], remote: [] });
    expect(directory.problems()).toHaveLength(1);
    expect(directory.problems()[0]).toContain('hearth user passwd bob@example.org');
  });
});

describe('Directory live reload', () => {
  it('picks up users added with UsersFile while running, including a users file created after start', async () => {
    const { directory, users } = await setup({}, true);
    expect(directory.resolve('new@example.org')).toBeNull();
    const reloaded = nextReload(directory, 'users');
    await users.add('new@example.org', 'new-pw');
    expect((await reloaded).ok).toBe(true);
    expect(directory.resolve('new@example.org')).toEqual({ local: [{ user: 'new', domain: 'example.org' }], remote: [] });
    expect(await directory.authenticate('new@example.org', 'new-pw')).not.toBeNull();
  });

  it('picks up alias edits', async () => {
    const { dir, directory } = await setup({ users: `me@example.org:${HASH}\n`, aliases: '' }, true);
    const reloaded = nextReload(directory, 'aliases');
    await writeFile(join(dir, 'aliases'), 'info@example.org: me@example.org\n');
    await reloaded;
    expect(directory.resolve('info@example.org')).toEqual({ local: [{ user: 'me', domain: 'example.org' }], remote: [] });
  });

  it('keeps the last good users when the file becomes unusable, skips bad lines otherwise', async () => {
    const { dir, directory } = await setup({ users: `me@example.org:${HASH}\n` }, true);
    const path = join(dir, 'users');

    let reloaded = nextReload(directory, 'users');
    await writeFile(path, '\u0000\u0001garbage\nmore garbage without structure\n');
    expect((await reloaded).ok).toBe(false);
    expect(directory.resolve('me@example.org')).not.toBeNull();
    expect(await directory.authenticate('me@example.org', 'Hello world!')).not.toBeNull();

    // unreadable (a folder where the file was): still the last good version
    reloaded = nextReload(directory, 'users');
    await rm(path);
    await mkdir(path);
    await reloaded;
    expect(directory.resolve('me@example.org')).not.toBeNull();

    // a file with one bad line: that line is skipped, the rest applies
    await rm(path, { recursive: true });
    reloaded = nextReload(directory, 'users');
    await writeFile(path, `you@example.org:${HASH}\nbad line\n`);
    const event = await reloaded;
    expect(event.ok).toBe(true);
    expect(event.problems).toHaveLength(1);
    expect(directory.resolve('you@example.org')).not.toBeNull();
    expect(directory.resolve('me@example.org')).toBeNull();
  });

  it('reload() re-reads on request', async () => {
    const { dir, directory } = await setup({ users: '' });
    await writeFile(join(dir, 'users'), `me@example.org:${HASH}\n`);
    expect(directory.resolve('me@example.org')).toBeNull();
    await directory.reload();
    expect(directory.resolve('me@example.org')).not.toBeNull();
  });
});
