// [relay] smarthost settings become the relay target: host, port, TLS, and the password read
// from its file, relative to the config folder or absolute.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadedFromText } from '../../src/config/load.ts';
import { smarthostTarget } from '../../src/main.ts';

const toml = (passwordFile: string) =>
  `hostname = "mail.example.test"\ndomains = ["example.test"]\n[relay]\nmode = "smarthost"\nsmarthost = "smtp.provider.example:465"\nsmarthost_tls = "implicit"\nsmarthost_user = "me@provider.example"\nsmarthost_password_file = ${JSON.stringify(passwordFile)}\n`;

describe('smarthostTarget', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-smarthost-'));
    await writeFile(join(dir, 'relative-pass'), 'relative secret\n', { mode: 0o600 });
    await writeFile(join(dir, 'absolute-pass'), 'absolute secret', { mode: 0o600 });
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('reads a password file named relative to the config folder', async () => {
    const target = await smarthostTarget(loadedFromText(dir, toml('relative-pass')));
    expect(target).toEqual({ host: 'smtp.provider.example', port: 465, tls: 'implicit', auth: { user: 'me@provider.example', pass: 'relative secret' } });
  });

  it('reads a password file named by an absolute path where it is, not inside the config folder', async () => {
    const configDir = join(dir, 'config');
    const target = await smarthostTarget(loadedFromText(configDir, toml(join(dir, 'absolute-pass'))));
    expect(target?.auth).toEqual({ user: 'me@provider.example', pass: 'absolute secret' });
  });

  it('says which file it could not read', async () => {
    await expect(smarthostTarget(loadedFromText(dir, toml('missing-pass')))).rejects.toThrow(`cannot read the smarthost password from ${join(dir, 'missing-pass')}`);
  });
});
