import { writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseConfigText } from '../../src/config/load.ts';
import { tempDir } from './helpers.ts';

const MINIMAL = 'hostname = "mail.example.org"\ndomains = ["Example.org"]\n';

async function configWith(text: string): Promise<string> {
  const dir = await tempDir();
  await writeFile(join(dir, 'hearth.toml'), text);
  return dir;
}

async function problemsOf(text: string): Promise<ConfigError> {
  const err = await loadConfig(await configWith(text)).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ConfigError);
  return err as ConfigError;
}

describe('loadConfig', () => {
  it('loads a minimal file, applies defaults and resolves paths against the config folder', async () => {
    const dir = await configWith(MINIMAL + '[listeners.smtp]\nlisten = "127.0.0.1:2525"\ntls = "starttls"\n');
    const loaded = await loadConfig(dir);
    expect(loaded.dir).toBe(dir);
    expect(loaded.file).toBe(join(dir, 'hearth.toml'));
    expect(loaded.config.domains).toEqual(['example.org']);
    expect(loaded.config.limits.message_size).toBe(25 * 1024 * 1024);
    expect(loaded.config.timeouts.smtp_idle).toBe(5 * 60_000);
    expect(loaded.config.auth.plaintext).toBe('loopback');
    expect(loaded.config.listeners.smtp).toEqual({ listen: { host: '127.0.0.1', port: 2525 }, tls: 'starttls', enabled: true });
    expect(loaded.dataDir).toBe(join(dir, '..', 'maildir'));
    expect(loaded.tlsCert).toBe(join(dir, 'tls', 'cert.pem'));
    expect(loaded.tlsKey).toBe(join(dir, 'tls', 'key.pem'));
  });

  it('keeps absolute paths as they are', async () => {
    const loaded = await loadConfig(await configWith(MINIMAL + 'data_dir = "/var/mail/hearth"\n'));
    expect(loaded.dataDir).toBe('/var/mail/hearth');
  });

  it('reports a TOML syntax error with file, line and column', async () => {
    const err = await problemsOf('hostname = "a"\ndomains = ["a"]\nlog_level = info\n');
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.problems).toHaveLength(1);
    expect(err.problems[0]).toMatch(/hearth\.toml:3:\d+: TOML syntax error/);
    expect(err.message).toContain('"quotes"');
  });

  it('names an unknown key and suggests the close one', async () => {
    const err = await problemsOf(MINIMAL + 'bogus = 1\nlog_levle = "info"\n[limits]\nmesage_size = "1MB"\n[listeners.smpt]\nlisten = ":25"\ntls = "plain"\n');
    expect(err.problems).toHaveLength(4);
    const text = err.problems.join('\n');
    expect(text).toContain('unknown key "bogus"');
    expect(text).toContain('unknown key "log_levle": did you mean "log_level"?');
    expect(text).toContain('limits: unknown key "mesage_size": did you mean "message_size"?');
    expect(text).toContain('listeners: unknown key "smpt": did you mean "smtp"?');
  });

  it('says a top-level key was put inside a table', async () => {
    const err = await problemsOf(MINIMAL + '[limits]\nfsync = false\n');
    expect(err.problems[0]).toContain('"fsync" is a top-level key: move it above the first [table] header');
  });

  it('lists bad sizes, durations and listen addresses together, with key paths and fixes', async () => {
    const err = await problemsOf(
      MINIMAL + '[limits]\nmessage_size = "10XB"\nrecipients = "ten"\n[timeouts]\nsmtp_idle = "5 minutes"\n[listeners.imap]\nlisten = "localhost"\ntls = "starttls"\n',
    );
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.problems).toHaveLength(4);
    const text = err.problems.join('\n');
    expect(text).toMatch(/hearth\.toml: limits\.message_size: "10XB" is not a size: write/);
    expect(text).toMatch(/limits\.recipients: expected a number, got the string "ten" \(write the number without quotes\)/);
    expect(text).toMatch(/timeouts\.smtp_idle: "5 minutes" is not a duration: write e\.g\./);
    expect(text).toMatch(/listeners\.imap\.listen: "localhost" is not host:port/);
    expect(err.message).toMatch(/^4 configuration problems:/);
  });

  it('explains missing required keys and bad enum values', async () => {
    const err = await problemsOf('log_level = "inf"\n[auth]\nplaintext = "sometimes"\n');
    const text = err.problems.join('\n');
    expect(text).toContain('hostname: missing required key: add hostname = "mail.example.org"');
    expect(text).toContain('domains: missing required key: add domains = ["example.org"]');
    expect(text).toContain('log_level: "inf" is not allowed: write one of "fatal"');
    expect(text).toContain('did you mean "info"?');
    expect(text).toContain('auth.plaintext: "sometimes" is not allowed');
  });

  it('refuses two enabled listeners on one port, but allows port 0', async () => {
    const err = await problemsOf(MINIMAL + '[listeners.imap]\nlisten = ":143"\ntls = "starttls"\n[listeners.pop3]\nlisten = ":143"\ntls = "starttls"\n');
    expect(err.problems[0]).toContain('listeners.pop3.listen: port 143 is already used by listeners.imap');
    await expect(
      loadConfig(await configWith(MINIMAL + '[listeners.imap]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n[listeners.pop3]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n')),
    ).resolves.toBeTruthy();
  });

  it('reports a missing file with CONFIG_MISSING, the path and what to do', async () => {
    const dir = await tempDir();
    const err = (await loadConfig(dir).catch((e: unknown) => e)) as ConfigError;
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.code).toBe('CONFIG_MISSING');
    expect(err.message).toContain(join(dir, 'hearth.toml'));
    expect(err.message).toContain('run `hearth serve` once to create a default, or copy config/hearth.example.toml');
  });

  it('reports an unreadable file with CONFIG_IO', async () => {
    const dir = await tempDir();
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(dir, 'hearth.toml'));
    await expect(loadConfig(dir)).rejects.toMatchObject({ code: 'CONFIG_IO' });
  });

  it('accepts config/hearth.example.toml, which lists every key', () => {
    const text = readFileSync(new URL('../../config/hearth.example.toml', import.meta.url), 'utf8');
    const config = parseConfigText(text, 'config/hearth.example.toml');
    expect(config.hostname).toBe('mail.example.org');
    expect(Object.keys(config.listeners).sort()).toEqual(['http', 'imap', 'imaps', 'pop3', 'pop3s', 'smtp', 'submission', 'submissions']);
    for (const key of ['data_dir', 'log_level', 'fsync']) expect(text).toMatch(new RegExp(`^${key} = `, 'm'));
  });
});
