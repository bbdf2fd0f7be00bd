// Greylisting: a new (client network, sender, recipient) triplet is deferred with 451 4.7.1,
// accepted after the delay, whitelisted after a delivery, and all of it survives a restart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inboxFiles, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { silentLogger } from '../../src/core/log.ts';
import { Greylist } from '../../src/smtp/greylist.ts';

type Running = Awaited<ReturnType<typeof startTestHearth>>;
const DELAY_MS = 700;

/** One transaction; returns the RCPT reply, and the final reply if RCPT was accepted. */
async function attempt(port: number, from: string, to: string, subject: string): Promise<{ rcpt: string; final?: string }> {
  const c = await RawSmtp.connect(port);
  try {
    await c.reply();
    await c.command('EHLO retry.example');
    await c.command(`MAIL FROM:<${from}>`);
    const rcpt = await c.command(`RCPT TO:<${to}>`);
    if (!rcpt.startsWith('250')) return { rcpt };
    await c.command('DATA');
    c.send(`From: ${from}\r\nSubject: ${subject}\r\n\r\nhello\r\n.\r\n`);
    return { rcpt, final: await c.reply() };
  } finally {
    c.close();
  }
}

/** Retry as an MTA would (but every 100 ms), until accepted or the bound passes. */
async function retryUntilAccepted(port: number, from: string, to: string, subject: string, boundMs = 10_000): Promise<{ attempts: number }> {
  const deadline = Date.now() + boundMs;
  for (let attempts = 1; ; attempts++) {
    const r = await attempt(port, from, to, subject);
    if (r.rcpt.startsWith('250')) {
      expect(r.final).toMatch(/^250 /);
      return { attempts };
    }
    expect(r.rcpt).toMatch(/^451 4\.7\.1 Greylisted/);
    if (Date.now() > deadline) throw new Error('still greylisted');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('greylisting', () => {
  let setup: TestSetup;
  let hearth: Running;

  beforeAll(async () => {
    setup = await makeSetup({
      toml: `[inbound]\ncheck_loopback = true\nauthentication = false\nconnections_per_minute = 0\nmessages_per_minute = 0\n\n[greylist]\nenabled = true\ndelay = "${DELAY_MS}ms"\n`,
    });
    hearth = await startTestHearth(setup);
  });
  afterAll(async () => {
    await hearth?.close();
    await setup?.cleanup();
  });

  it('defers a new triplet with 451 4.7.1, accepts it after the delay, then whitelists it', async () => {
    const started = Date.now();
    const first = await attempt(hearth.smtpPort, 'news@sender.example', 'alice@example.test', 'grey 1');
    expect(first.rcpt).toMatch(/^451 4\.7\.1 Greylisted: please try again in \d+ seconds/);
    // An immediate retry is still too early.
    expect((await attempt(hearth.smtpPort, 'news@sender.example', 'alice@example.test', 'grey 1')).rcpt).toMatch(/^451 4\.7\.1 /);
    const { attempts } = await retryUntilAccepted(hearth.smtpPort, 'news@sender.example', 'alice@example.test', 'grey 1');
    expect(attempts).toBeGreaterThan(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(DELAY_MS);
    expect((await inboxFiles(setup.dataDir, 'alice@example.test')).filter((f) => f.content.includes('Subject: grey 1'))).toHaveLength(1);
    // Whitelisted: the next message of the triplet passes at once.
    const again = await attempt(hearth.smtpPort, 'news@sender.example', 'alice@example.test', 'grey 2');
    expect(again.rcpt).toMatch(/^250 /);
    expect(again.final).toMatch(/^250 /);
    // Another recipient is another triplet.
    expect((await attempt(hearth.smtpPort, 'news@sender.example', 'bob@example.test', 'grey 3')).rcpt).toMatch(/^451 4\.7\.1 /);
  });

  it('answers unknown recipients with 550, not with a greylisting deferral', async () => {
    expect((await attempt(hearth.smtpPort, 'x@sender.example', 'nobody@example.test', 'n')).rcpt).toMatch(/^550 5\.1\.1 /);
  });

  it('keeps whitelisted and pending triplets across a restart (state in the data folder)', async () => {
    // Whitelisted before the restart.
    await retryUntilAccepted(hearth.smtpPort, 'list@kept.example', 'alice@example.test', 'kept 1');
    // Pending before the restart: two triplets seen now; once one passes, the delay is over for both.
    expect((await attempt(hearth.smtpPort, 'pending@kept.example', 'alice@example.test', 'pending')).rcpt).toMatch(/^451 /);
    expect((await attempt(hearth.smtpPort, 'pending@kept.example', 'bob@example.test', 'pending')).rcpt).toMatch(/^451 /);
    await retryUntilAccepted(hearth.smtpPort, 'pending@kept.example', 'bob@example.test', 'pending bob');

    await hearth.close();
    const saved = JSON.parse(await readFile(join(setup.dataDir, 'greylist.json'), 'utf8')) as { version: number; entries: unknown[][] };
    expect(saved.version).toBe(1);
    expect(saved.entries.map((e) => e[0])).toContain('127.0.0.0/24 list@kept.example alice@example.test');
    hearth = await startTestHearth(setup);

    const kept = await attempt(hearth.smtpPort, 'list@kept.example', 'alice@example.test', 'kept 2');
    expect(kept.rcpt).toMatch(/^250 /);
    // The pending triplet was not forgotten (that would restart its delay): accepted at once.
    expect((await attempt(hearth.smtpPort, 'pending@kept.example', 'alice@example.test', 'pending alice')).rcpt).toMatch(/^250 /);
    // And greylisting is still on for new triplets.
    expect((await attempt(hearth.smtpPort, 'new@kept.example', 'alice@example.test', 'new')).rcpt).toMatch(/^451 4\.7\.1 /);
  });
});

describe('Greylist (injected clock)', () => {
  let dir: string;
  let now = 1_000_000;
  const clock = () => now;
  const make = (file = join(dir, 'greylist.json')) =>
    new Greylist({ file, delayMs: 300_000, retryWindowMs: 2 * 86_400_000, expireMs: 35 * 86_400_000, log: silentLogger(), clock });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-greylist-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('groups IPv4 clients by /24 and IPv6 clients by /64', () => {
    expect(Greylist.key('192.0.2.10', 'A@Example.org', 'bob@example.test')).toBe(Greylist.key('::ffff:192.0.2.200', 'a@example.org', 'BOB@example.test'));
    expect(Greylist.key('192.0.2.10', 'a@x', 'b@y')).not.toBe(Greylist.key('192.0.3.10', 'a@x', 'b@y'));
    expect(Greylist.key('2001:db8:1:2::1', 'a@x', 'b@y')).toBe(Greylist.key('2001:db8:1:2:ffff::9', 'a@x', 'b@y'));
    expect(Greylist.key('2001:db8:1:2::1', 'a@x', 'b@y')).not.toBe(Greylist.key('2001:db8:1:3::1', 'a@x', 'b@y'));
  });

  it('expires pending triplets after the retry window and whitelisted ones after disuse', async () => {
    const g = make();
    expect(g.check('192.0.2.1', 'a@x.example', 'b@example.test')).toMatchObject({ ok: false, retryInMs: 300_000 });
    now += 100_000;
    expect(g.check('192.0.2.1', 'a@x.example', 'b@example.test')).toMatchObject({ ok: false, retryInMs: 200_000 });
    now += 3 * 86_400_000; // never retried in time: starts over
    expect(g.check('192.0.2.1', 'a@x.example', 'b@example.test')).toMatchObject({ ok: false, retryInMs: 300_000 });
    now += 300_000;
    const v = g.check('192.0.2.1', 'a@x.example', 'b@example.test');
    expect(v.ok).toBe(true);
    g.confirm([v.key]);
    now += 30 * 86_400_000;
    expect(g.check('192.0.2.1', 'a@x.example', 'b@example.test').ok).toBe(true);
    now += 36 * 86_400_000; // unused longer than expire
    expect(g.check('192.0.2.1', 'a@x.example', 'b@example.test').ok).toBe(false);
    await g.flush();
  });

  it('starts empty from a damaged file and replaces it atomically', async () => {
    const file = join(dir, 'damaged.json');
    await writeFile(file, '{"version":1,"entries":[["trunc');
    const g = make(file);
    expect(g.size).toBe(0);
    g.check('198.51.100.7', 'a@x.example', 'b@example.test');
    await g.flush();
    const data = JSON.parse(await readFile(file, 'utf8')) as { entries: unknown[][] };
    expect(data.entries).toEqual([['198.51.100.0/24 a@x.example b@example.test', now, now, 0]]);
    expect(make(file).size).toBe(1);
  });
});
