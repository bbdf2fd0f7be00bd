// `hearth gather` against a running server (through the control socket) and without one (on the
// data directory): add, list, run, status, passwd, remove; passwords stored 0600, never shown.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { LOCAL_USER, REMOTE_PASS, REMOTE_USER, localMessages, message, runCli, seedRemote, startRemote } from './helpers.ts';
import type { Remote } from './helpers.ts';

const hearthCli = (args: string[], input = '') => runCli(args, { input });

describe('hearth gather', () => {
  let remote: Remote;
  let setup: TestSetup;
  beforeAll(async () => {
    remote = await startRemote();
    // Sender checks (and their DNS) are tested in auth.test.ts, against a loopback DNS server.
    setup = await makeSetup({ fsync: false, toml: '[junk]\nenabled = false\n[gather]\nauth_checks = false\n' });
    await seedRemote(remote, [message('cli one'), message('cli two')]);
  });
  afterAll(async () => {
    await remote?.hearth.close();
    await remote?.setup.cleanup();
    await setup?.cleanup();
  });

  const addArgs = (name: string, extra: string[] = []) => ['gather', 'add', '--config', setup.configDir, '--to', LOCAL_USER, '--host', '127.0.0.1', '--port', String(remote.imap), '--tls', 'none', '--user', REMOTE_USER, '--name', name, '--password-stdin', ...extra];

  it('offline: add (password 0600, not in the accounts file), list, run, status', async () => {
    const add = await hearthCli(addArgs('offline'), REMOTE_PASS);
    expect(add.stderr).toBe('');
    expect(add.stdout).toContain('added offline');
    const pwFile = join(setup.dataDir, 'gather', 'passwords.json');
    expect((await stat(pwFile)).mode & 0o777).toBe(0o600);
    expect(await readFile(join(setup.dataDir, 'gather', 'accounts.json'), 'utf8')).not.toContain(REMOTE_PASS);

    const list = await hearthCli(['gather', 'list', '--config', setup.configDir]);
    expect(list.stdout).toContain(`offline  imap ${REMOTE_USER}@127.0.0.1 -> ${LOCAL_USER}/INBOX (copy)`);
    expect(list.stdout).not.toContain(REMOTE_PASS);

    const run = await hearthCli(['gather', 'run', 'offline', '--config', setup.configDir]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('offline: 2 new messages');
    const status = await hearthCli(['gather', 'status', '--config', setup.configDir]);
    expect(status.stdout).toMatch(/offline {2}imap:\/\/bob@example\.test@127\.0\.0\.1:\d+\/INBOX -> alice@example\.test\/INBOX {2}\[copy, every 5m, IDLE\]/);
    expect(status.stdout).toContain('2 messages collected in all');
    expect(status.stdout).toContain('last run');
  });

  it('explains mistakes before asking for a password', async () => {
    const bad = await hearthCli(['gather', 'add', '--config', setup.configDir, '--to', LOCAL_USER, '--host', 'mail.example.net', '--tls', 'none', '--user', 'x']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('tls = none is only allowed for a server on this machine');
    const dup = await hearthCli(addArgs('offline'), REMOTE_PASS);
    expect(dup.stderr).toContain('there is already an account named offline');
    const none = await hearthCli(['gather', 'run', 'nope', '--config', setup.configDir]);
    expect(none.stderr).toContain('no gather account named nope');
  });

  it('--trust-auth-results: an empty or malformed authserv-id is refused, a host name kept (lower-cased)', async () => {
    for (const bad of ['', 'mx.p.test; dkim=pass', 'mx.p.test\r\nX: y', '(c) mx.p.test']) {
      const r = await hearthCli(addArgs('trust-bad', ['--trust-auth-results', bad]), REMOTE_PASS);
      expect(r.code, `${JSON.stringify(bad)}: ${r.stdout}`).toBe(1);
      expect(r.stderr).toContain("the provider's authserv-id");
    }
    expect(await readFile(join(setup.dataDir, 'gather', 'accounts.json'), 'utf8')).not.toContain('trust-bad');
    const ok = await hearthCli(addArgs('trust-ok', ['--trust-auth-results', 'MX.Provider.Test']), REMOTE_PASS);
    expect(ok.code, ok.stderr).toBe(0);
    const saved = JSON.parse(await readFile(join(setup.dataDir, 'gather', 'accounts.json'), 'utf8')) as Array<{ id: string; trustAuthResults?: string }>;
    expect(saved.find((a) => a.id === 'trust-ok')?.trustAuthResults).toBe('mx.provider.test');
    expect((await hearthCli(['gather', 'status', 'trust-ok', '--config', setup.configDir])).stdout).toContain('trusts mx.provider.test');
    expect((await hearthCli(['gather', 'remove', 'trust-ok', '--config', setup.configDir])).code).toBe(0);
  });

  it('online: the same commands go through the running server; a bad password shows in status with the fix', async () => {
    const hearth = await startTestHearth(setup);
    try {
      const add = await hearthCli(addArgs('online', ['--into', 'Elsewhere']), 'wrong-password');
      expect(add.stdout).toContain('added online');
      const run = await hearthCli(['gather', 'run', 'online', '--config', setup.configDir]);
      expect(run.code).toBe(1);
      expect(run.stdout).toContain('online: failed: the server refused the password for bob@example.test at 127.0.0.1');
      const status = await hearthCli(['gather', 'status', 'online', '--config', setup.configDir]);
      expect(status.stdout).toContain('STOPPED: the server refused the password for bob@example.test at 127.0.0.1');
      expect(status.stdout).toContain('hearth gather passwd online');
      expect(status.stdout + status.stderr).not.toContain('wrong-password');
      const pw = await hearthCli(['gather', 'passwd', 'online', '--config', setup.configDir, '--password-stdin'], REMOTE_PASS);
      expect(pw.stdout).toContain('password changed for online');
      const again = await hearthCli(['gather', 'run', 'online', '--config', setup.configDir, '--json']);
      expect(JSON.parse(again.stdout)).toMatchObject([{ id: 'online', ok: true }]);
      expect((await localMessages(setup.dataDir, LOCAL_USER, 'Elsewhere')).map((m) => m.subject).sort()).toEqual(['cli one', 'cli two']);
      const rm = await hearthCli(['gather', 'remove', 'online', '--config', setup.configDir]);
      expect(rm.stdout).toContain('removed online');
      const list = await hearthCli(['gather', 'list', '--config', setup.configDir, '--json']);
      expect((JSON.parse(list.stdout) as Array<{ id: string }>).map((a) => a.id)).toEqual(['offline']);
    } finally {
      await hearth.close();
    }
  });
});
