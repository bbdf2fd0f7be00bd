// Issue 2 (core): graceful shutdown on SIGTERM. New connections stop at once; a client between
// transactions is told `421 4.3.2` and let go at once; a transaction in DATA gets
// timeouts.shutdown_grace to finish and is then aborted with 421, leaving nothing behind
// (nothing in new/, tmp/ empty). hearth exits 0 either way.
import { afterEach, describe, expect, it } from 'vitest';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { makeSetup, spawnHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';

async function list(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

function logEntries(logs: string[]): Array<{ level: number; msg: string; svc?: string }> {
  return logs.flatMap((line) => {
    try {
      return [JSON.parse(line) as { level: number; msg: string; svc?: string }];
    } catch {
      return [];
    }
  });
}

async function openTransaction(port: number): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  expect(await c.reply()).toMatch(/^220 /);
  expect(await c.command('EHLO client.remote.example')).toMatch(/^250/);
  expect(await c.command('MAIL FROM:<sender@remote.example>')).toMatch(/^250 /);
  expect(await c.command('RCPT TO:<alice@example.test>')).toMatch(/^250 /);
  expect(await c.command('DATA')).toMatch(/^354 /);
  return c;
}

describe('graceful shutdown of SMTP', () => {
  let setup: TestSetup | undefined;
  afterEach(async () => {
    await setup?.cleanup();
    setup = undefined;
  });

  it('aborts a transaction still in DATA after the grace period with 421; nothing is stored; exit 0', async () => {
    setup = await makeSetup({ toml: '[timeouts]\nshutdown_grace = "1s"\n' });
    const hearth = await spawnHearth(setup.configDir);
    const c = await openTransaction(hearth.smtpPort);
    c.send('Subject: half\r\n\r\n' + 'the first half of the message\r\n'.repeat(200));
    await new Promise((r) => setTimeout(r, 200)); // let the store start writing to tmp/
    const started = Date.now();
    hearth.child.kill('SIGTERM');
    const reply = await c.reply(10_000);
    const waited = Date.now() - started;
    expect(reply).toMatch(/^421 4\.3\.2 /);
    expect(waited).toBeGreaterThanOrEqual(900);
    expect(await hearth.exited).toBe(0);
    const maildir = join(setup.dataDir, 'example.test', 'alice');
    expect(await list(join(maildir, 'new'))).toEqual([]);
    expect(await list(join(maildir, 'cur'))).toEqual([]);
    expect(await list(join(maildir, 'tmp'))).toEqual([]);
    const entries = logEntries(hearth.logs);
    // The abort is expected: logged at info, not as a failure.
    expect(entries.filter((e) => e.level >= 50).map((e) => e.msg)).toEqual([]);
    expect(entries.some((e) => e.level === 30 && /aborted/.test(e.msg))).toBe(true);
  }, 30_000);

  it('lets a transaction that finishes within the grace period have its 250, then says 421', async () => {
    setup = await makeSetup({ toml: '[timeouts]\nshutdown_grace = "10s"\n' });
    const hearth = await spawnHearth(setup.configDir);
    const c = await openTransaction(hearth.smtpPort);
    c.send('Subject: finished in time\r\n\r\nfirst half\r\n');
    await new Promise((r) => setTimeout(r, 100));
    hearth.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    c.send('second half\r\n.\r\n');
    expect(await c.reply(10_000)).toMatch(/^250 /);
    expect(await c.reply(10_000)).toMatch(/^421 4\.3\.2 /);
    expect(await hearth.exited).toBe(0);
    expect(await list(join(setup.dataDir, 'example.test', 'alice', 'new'))).toHaveLength(1);
  }, 30_000);

  it('does not let an idle client hold shutdown: 421 4.3.2 at once, exit well before the grace ends', async () => {
    setup = await makeSetup({ toml: '[timeouts]\nshutdown_grace = "20s"\n' });
    const hearth = await spawnHearth(setup.configDir);
    const idle = await RawSmtp.connect(hearth.smtpPort);
    expect(await idle.reply()).toMatch(/^220 /);
    expect(await idle.command('EHLO idle.remote.example')).toMatch(/^250/);
    const started = Date.now();
    hearth.child.kill('SIGTERM');
    expect(await idle.reply(10_000)).toMatch(/^421 4\.3\.2 /);
    expect(await hearth.exited).toBe(0);
    expect(Date.now() - started).toBeLessThan(5_000);
  }, 30_000);
});
