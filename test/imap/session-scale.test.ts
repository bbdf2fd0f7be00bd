// A 20,000-message Maildir (files written straight to disk) selects and fetches flags
// correctly; UIDs and UIDVALIDITY survive a restart; the login deadline and autologout fire;
// LOGINDISABLED where config forbids plaintext passwords.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { RawImap, startImapHearth } from './imap-helpers.ts';
import type { Running } from './imap-helpers.ts';

const COUNT = 20_000;

describe('IMAP at scale and across restarts', () => {
  let setup: TestSetup;
  let hearth: Running;

  beforeAll(async () => {
    ({ setup, hearth } = await startImapHearth());
    const dir = join(setup.dataDir, 'example.test', 'bob');
    for (const sub of ['new', 'cur', 'tmp']) await mkdir(join(dir, sub), { recursive: true });
    const jobs: Array<() => Promise<void>> = [];
    for (let i = 0; i < COUNT; i++) {
      const body = `Subject: message ${i}\r\nMessage-ID: <m${i}@scale>\r\n\r\nbody ${i}\r\n`;
      // Every third message read, every seventh flagged; the first 100 still in new/.
      const letters = `${i % 7 === 0 ? 'F' : ''}${i % 3 === 0 ? 'S' : ''}`;
      const base = `${1_600_000_000 + i}.M${i}P1.scale,S=${body.length}`;
      const file = i < 100 ? join(dir, 'new', base) : join(dir, 'cur', `${base}:2,${letters}`);
      jobs.push(() => writeFile(file, body));
    }
    for (let i = 0; i < jobs.length; i += 500) await Promise.all(jobs.slice(i, i + 500).map((j) => j()));
  }, 120_000);
  afterAll(async () => {
    await hearth?.close();
    await setup?.cleanup();
  });

  let uidValidity = 0;
  const uidOfSeq = new Map<number, number>();

  it(`selects ${COUNT} messages and returns every message's flags`, async () => {
    const c = await RawImap.connect(hearth.port('imap'));
    await c.login('bob@example.test', 'bob-password');
    let t = performance.now();
    const sel = await c.ok('SELECT INBOX');
    const selectMs = performance.now() - t;
    expect(sel).toContain(`* ${COUNT} EXISTS`);
    expect(sel).toContain('* 100 RECENT');
    uidValidity = Number(/UIDVALIDITY (\d+)/.exec(sel.join('\n'))![1]);
    t = performance.now();
    const lines = await c.ok('UID FETCH 1:* (UID FLAGS)');
    const fetchMs = performance.now() - t;
    expect(lines).toHaveLength(COUNT + 1);
    for (let seq = 1; seq <= COUNT; seq++) {
      const m = /^\* (\d+) FETCH \(UID (\d+) FLAGS \(([^)]*)\)\)$/.exec(lines[seq - 1]);
      expect(m, lines[seq - 1]).not.toBeNull();
      expect(Number(m![1])).toBe(seq);
      uidOfSeq.set(seq, Number(m![2]));
      const i = seq - 1;
      const flags = m![3].split(' ').filter(Boolean);
      const want = i < 100 ? ['\\Recent'] : [...(i % 3 === 0 ? ['\\Seen'] : []), ...(i % 7 === 0 ? ['\\Flagged'] : [])];
      if (flags.sort().join(' ') !== want.sort().join(' ')) expect(flags, `seq ${seq}`).toEqual(want);
    }
    // UIDs follow delivery order.
    expect(uidOfSeq.get(1)).toBeLessThan(uidOfSeq.get(COUNT)!);
    // Again, warm (index built, nothing to scan); \Recent went to the first SELECT only.
    t = performance.now();
    const again = await c.ok('SELECT INBOX');
    const warmSelectMs = performance.now() - t;
    expect(again).toContain('* 0 RECENT');
    t = performance.now();
    const second = await c.ok('UID FETCH 1:* (UID FLAGS)');
    const warmFetchMs = performance.now() - t;
    expect(second).toHaveLength(COUNT + 1);
    const subj = await c.ok(`UID FETCH ${uidOfSeq.get(12_345)} BODY.PEEK[HEADER.FIELDS (SUBJECT)]`);
    expect(subj[1]).toBe('Subject: message 12344');
    console.log(`[imap scale] ${COUNT} msgs: first SELECT ${selectMs.toFixed(0)} ms, warm SELECT ${warmSelectMs.toFixed(0)} ms, UID FETCH 1:* (UID FLAGS) ${fetchMs.toFixed(0)} ms, warm ${warmFetchMs.toFixed(0)} ms`);
    c.close();
  }, 120_000);

  it('keeps UIDVALIDITY and every UID across a restart', async () => {
    await hearth.close();
    hearth = await startTestHearth(setup);
    const c = await RawImap.connect(hearth.port('imap'));
    await c.login('bob@example.test', 'bob-password');
    const sel = await c.ok('EXAMINE INBOX');
    expect(Number(/UIDVALIDITY (\d+)/.exec(sel.join('\n'))![1])).toBe(uidValidity);
    const lines = await c.ok('FETCH 1:* (UID)');
    expect(lines).toHaveLength(COUNT + 1);
    for (const seq of [1, 2, 777, 10_000, COUNT]) expect(lines[seq - 1]).toBe(`* ${seq} FETCH (UID ${uidOfSeq.get(seq)})`);
    c.close();
  }, 120_000);
});

describe('IMAP timers and plaintext policy', () => {
  let setup: TestSetup;
  let hearth: Running;

  beforeAll(async () => {
    ({ setup, hearth } = await startImapHearth('plaintext = "never"\n[timeouts]\nimap_login = "300ms"\nimap_idle = "600ms"\n'));
  });
  afterAll(async () => {
    await hearth?.close();
    await setup?.cleanup();
  });

  it('LOGINDISABLED and no AUTH=PLAIN in the clear; both work after STARTTLS', async () => {
    const c = await RawImap.connect(hearth.port('imap'));
    expect(c.greeting).toContain('LOGINDISABLED');
    expect(c.greeting).not.toContain('AUTH=PLAIN');
    expect((await c.run('LOGIN alice@example.test alice-password'))[0]).toMatch(/^t1 NO \[PRIVACYREQUIRED\]/);
    c.c.send('s STARTTLS\r\n');
    expect(await c.c.line()).toMatch(/^s OK/);
    await c.c.starttls();
    const caps = await c.ok('CAPABILITY');
    expect(caps[0]).toContain('AUTH=PLAIN');
    expect(caps[0]).not.toContain('LOGINDISABLED');
    await c.login();
    c.close();
  });

  it('closes a connection that does not log in by the deadline, even if it keeps sending NOOP', async () => {
    const c = await RawImap.connect(hearth.port('imap'));
    const started = Date.now();
    let bye = '';
    while (!c.c.closed && Date.now() - started < 5000) {
      const lines = await c.run('NOOP').catch(() => [] as string[]);
      bye = lines.find((l) => l.startsWith('* BYE')) ?? bye;
    }
    expect(c.c.closed).toBe(true);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('autologout after the idle time, with a BYE', async () => {
    const c = await RawImap.connect(hearth.port('imaps'), { tls: true });
    await c.login();
    expect(await c.c.line(5000)).toMatch(/^\* BYE autologout/);
    expect(await c.c.waitClosed()).toBe(true);
  });
});
