import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG_TOML, ensureDefaultConfig, randomPassword } from '../../src/config/defaults.ts';
import { Directory } from '../../src/config/directory.ts';
import { loadConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/core/log.ts';
import { tempDir } from './helpers.ts';

describe('ensureDefaultConfig', () => {
  it('creates a working trial configuration once', async () => {
    const root = await tempDir();
    const dir = join(root, 'config');
    const setup = await ensureDefaultConfig(dir, { log: silentLogger() });
    expect(setup).toMatchObject({ created: true, address: 'me@localhost', configDir: dir });
    expect(setup.password).toMatch(/^[a-z2-7]{5}-[a-z2-7]{5}-[a-z2-7]{5}-[a-z2-7]{5}$/);

    const loaded = await loadConfig(dir);
    const { config } = loaded;
    expect(config.hostname).toBe('localhost');
    expect(config.domains).toEqual(['localhost']);
    expect(loaded.dataDir).toBe(join(root, 'maildir'));
    expect(config.auth.plaintext).toBe('loopback');
    const ports = Object.fromEntries(Object.entries(config.listeners).map(([name, l]) => [name, `${l!.listen.host}:${l!.listen.port} ${l!.tls}`]));
    expect(ports).toEqual({
      smtp: '127.0.0.1:2525 starttls',
      submission: '127.0.0.1:2587 starttls',
      submissions: '127.0.0.1:2465 implicit',
      imap: '127.0.0.1:1143 starttls',
      imaps: '127.0.0.1:1993 implicit',
      pop3: '127.0.0.1:1110 starttls',
      pop3s: '127.0.0.1:1995 implicit',
      http: '127.0.0.1:8080 plain',
    });
    // the written file explains its keys
    const text = await readFile(loaded.file, 'utf8');
    expect(text).toBe(DEFAULT_CONFIG_TOML);
    expect(text.match(/^#/gm)!.length).toBeGreaterThan(20);

    const cert = new X509Certificate(await readFile(loaded.tlsCert));
    expect(cert.subjectAltName).toContain('DNS:localhost');
    expect(cert.subjectAltName).toContain('IP Address:127.0.0.1');
    expect(cert.checkHost('localhost')).toBe('localhost');
    expect(cert.checkPrivateKey(createPrivateKey(await readFile(loaded.tlsKey)))).toBe(true);
    expect((await stat(loaded.tlsKey)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'users'))).mode & 0o777).toBe(0o600);

    const directory = await Directory.open({ configDir: dir, domains: config.domains, log: silentLogger(), watch: false });
    try {
      expect(await directory.authenticate('me@localhost', setup.password!)).toMatchObject({ address: 'me@localhost' });
      expect(directory.resolve('postmaster@localhost')).toEqual({ local: [{ user: 'me', domain: 'localhost' }], remote: [] });
      expect(directory.problems()).toEqual([]);
    } finally {
      directory.close();
    }
    expect(await readFile(join(dir, 'aliases'), 'utf8')).toMatch(/^# family@localhost: /m);

    // a second call leaves everything alone
    const before = await readFile(join(dir, 'users'), 'utf8');
    expect(await ensureDefaultConfig(dir)).toEqual({ created: false, configDir: dir });
    expect(await readFile(join(dir, 'users'), 'utf8')).toBe(before);
  });

  it('does nothing when hearth.toml exists', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'hearth.toml'), 'hostname = "x.test"\ndomains = ["x.test"]\n');
    expect(await ensureDefaultConfig(dir)).toEqual({ created: false, configDir: dir });
    await expect(stat(join(dir, 'users'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(stat(join(dir, 'tls'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('keeps an existing users file and returns no credentials for it', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'users'), '# mine\n');
    const setup = await ensureDefaultConfig(dir);
    expect(setup).toEqual({ created: true, configDir: dir });
    expect(await readFile(join(dir, 'users'), 'utf8')).toBe('# mine\n');
  });

  it('makes distinct random passwords', () => {
    expect(new Set(Array.from({ length: 50 }, randomPassword)).size).toBe(50);
  });
});
