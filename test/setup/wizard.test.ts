// `hearth setup`: non-interactive with flags, it writes a config/ that loads and serves.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.ts';
import { UsersFile, verifyPassword } from '../../src/config/users.ts';
import { checkAnswers, writeSetup } from '../../src/setup/wizard.ts';
import { CLI } from '../helpers/hearth.ts';

type Run = { code: number; stdout: string; stderr: string };

function hearth(args: string[], input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
    child.stdin!.end(input ?? '');
  });
}

describe('hearth setup', () => {
  let root: string;
  let configDir: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'hearth-setup-'));
    configDir = join(root, 'config');
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  it('--yes writes a config that loadConfig accepts, with the user, aliases, certificate and DKIM key, and prints the DNS records', async () => {
    const r = await hearth(['setup', '--yes', '--domain', 'Example.test', '--user', 'ann@example.test', '--password-stdin', '--config', configDir], 'ann-secret-pw\n');
    expect(r.code, r.stderr).toBe(0);
    const loaded = await loadConfig(configDir);
    expect(loaded.config.hostname).toBe('mail.example.test');
    expect(loaded.config.domains).toEqual(['example.test']);
    expect(loaded.config.relay.mode).toBe('mx');
    expect(loaded.config.listeners.smtp?.listen.port).toBe(25);
    expect(loaded.config.listeners.imaps).toMatchObject({ listen: { port: 993 }, tls: 'implicit' });
    expect(loaded.config.auth.plaintext).toBe('never');

    const users = await new UsersFile(join(configDir, 'users')).list();
    expect(users.map((u) => u.address)).toEqual(['ann@example.test']);
    expect(await verifyPassword('ann-secret-pw', users[0].hash)).toBe(true);
    expect((await stat(join(configDir, 'users'))).mode & 0o777).toBe(0o600);
    expect(await readFile(join(configDir, 'aliases'), 'utf8')).toContain('postmaster@example.test: ann@example.test');
    expect((await stat(join(configDir, 'tls', 'key.pem'))).mode & 0o777).toBe(0o600);
    const keys = await readdir(join(configDir, 'dkim', 'example.test'));
    expect(keys).toHaveLength(1);

    expect(r.stdout).toMatch(/^example\.test\.\s+3600 IN MX\s+10 mail\.example\.test\.$/m);
    expect(r.stdout).toContain(`${keys[0].replace(/\.pem$/, '')}._domainkey.example.test.`);
    expect(r.stdout).toContain('hearth dns check example.test');
    expect(r.stdout).not.toContain('ann-secret-pw');

    // `hearth check` agrees
    const check = await hearth(['check', '--config', configDir]);
    expect(check.code, check.stderr).toBe(0);
  });

  it('--yes with a smarthost and high ports behind a port mapping', async () => {
    const r = await hearth(
      ['setup', '--yes', '--domain', 'example.test', '--hostname', 'mx.example.test', '--relay', 'smarthost', '--smarthost', 'smtp.provider.example:587', '--smarthost-user', 'me@provider.example', '--smarthost-password-file', 'sh-pass', '--ports', 'high', '--password-stdin', '--config', configDir],
      'ann-secret-pw',
    );
    expect(r.code, r.stderr).toBe(0);
    const { config } = await loadConfig(configDir);
    expect(config.relay).toMatchObject({ mode: 'smarthost', smarthost: 'smtp.provider.example:587', smarthost_tls: 'starttls', smarthost_user: 'me@provider.example', smarthost_password_file: 'sh-pass' });
    expect(config.listeners.imaps?.listen.port).toBe(1993);
    expect(config.client.ports).toMatchObject({ imaps: 993, submissions: 465, submission: 587 });
    // clients are told the public ports
    expect(r.stdout).toMatch(/^_imaps\._tcp\.example\.test\.\s+3600 IN SRV\s+0 1 993 mx\.example\.test\.$/m);
    expect(r.stdout).toContain('v=spf1 mx ~all');
  });

  it('refuses to overwrite a config without --force, and keeps a backup with it', async () => {
    expect((await hearth(['setup', '--yes', '--domain', 'example.test', '--password-stdin', '--config', configDir], 'ann-secret-pw')).code).toBe(0);
    const again = await hearth(['setup', '--yes', '--domain', 'example.test', '--password-stdin', '--config', configDir], 'ann-secret-pw');
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/exists already: pass --force/);
    const forced = await hearth(['setup', '--yes', '--force', '--domain', 'example.test', '--hostname', 'mx2.example.test', '--password-stdin', '--config', configDir], 'ann-other-pw');
    expect(forced.code, forced.stderr).toBe(0);
    expect((await loadConfig(configDir)).config.hostname).toBe('mx2.example.test');
    expect((await readdir(configDir)).some((f) => f.startsWith('hearth.toml.bak-'))).toBe(true);
    // the existing user gets the new password, the DKIM key is kept
    const users = await new UsersFile(join(configDir, 'users')).list();
    expect(users).toHaveLength(1);
    expect(await verifyPassword('ann-other-pw', users[0].hash)).toBe(true);
    expect(await readdir(join(configDir, 'dkim', 'example.test'))).toHaveLength(1);
  });

  it('says what is missing or wrong in the flags', async () => {
    expect((await hearth(['setup', '--yes', '--password-stdin', '--config', configDir], 'pw-123456')).stderr).toMatch(/needs --domain/);
    expect((await hearth(['setup', '--yes', '--domain', 'example.test', '--config', configDir])).stderr).toMatch(/--password-stdin/);
    expect((await hearth(['setup', '--domain', 'example.test', '--config', configDir])).stderr).toMatch(/no terminal.*--yes/);
    expect((await hearth(['setup', '--yes', '--domain', 'example.test', '--relay', 'smarthost', '--password-stdin', '--config', configDir], 'pw-123456')).stderr).toMatch(/needs --smarthost/);
    const bad = await hearth(['setup', '--yes', '--domain', 'not a domain', '--password-stdin', '--config', configDir], 'pw-123456');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/not a domain name/);
    await expect(readdir(configDir)).rejects.toThrow();
    expect(checkAnswers({ domain: 'example.test', hostname: 'mail.example.test', user: 'ann@other.test', password: 'short', tls: { kind: 'self-signed' }, relay: { mode: 'mx' }, ports: 'standard' })).toEqual([
      'user "ann@other.test" should be an address in example.test, e.g. me@example.test',
      'the password needs at least 8 characters',
    ]);
  });

  it('writes the smarthost password it is given to a 0600 file', async () => {
    await writeSetup(configDir, { domain: 'example.test', hostname: 'mail.example.test', user: 'me@example.test', password: 'me-secret-pw', tls: { kind: 'self-signed' }, relay: { mode: 'smarthost', smarthost: 'smtp.provider.example:465', user: 'me', password: 'sh-secret' }, ports: 'standard' });
    const { config } = await loadConfig(configDir);
    expect(config.relay).toMatchObject({ smarthost_tls: 'implicit', smarthost_password_file: 'smarthost-password' });
    expect(await readFile(join(configDir, 'smarthost-password'), 'utf8')).toBe('sh-secret\n');
    expect((await stat(join(configDir, 'smarthost-password'))).mode & 0o777).toBe(0o600);
  });
});
