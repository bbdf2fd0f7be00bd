// Issue 2 (core, logging): a connection id on every log line of that connection. Each SMTP
// session (MX and submission) gets one child logger carrying `cid` and `peer`, and everything
// that logs for the session uses it: refusals, deliveries, logins, submissions, socket errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger } from '../../src/core/log.ts';
import type { Logger } from '../../src/core/log.ts';
import { startHearth } from '../../src/main.ts';
import type { RunningHearth } from '../../src/main.ts';
import { inboxFiles, makeSetup } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';

type Line = Record<string, unknown> & { msg: string; svc?: string; cid?: string; peer?: string };

function capture(): { log: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const log = createLogger('debug', { write: (s: string) => void lines.push(JSON.parse(s) as Line) });
  return { log, lines };
}

const SMTP_SERVICES = new Set(['smtp', 'submission']);

describe('SMTP connection ids in the log', () => {
  let setup: TestSetup;
  let hearth: RunningHearth;
  const { log, lines } = capture();
  const port = (service: string) => hearth.endpoints.find((e) => e.service === service)!.port;

  beforeAll(async () => {
    setup = await makeSetup({ toml: '[listeners.submission]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n[auth]\nplaintext = "loopback"\n' });
    hearth = await startHearth({ configDir: setup.configDir, log });
  });
  afterAll(async () => {
    await hearth?.close();
    await setup?.cleanup();
  });

  /** Run one session; return the SMTP services' log lines it caused, once they settled. */
  async function session(run: () => Promise<void>): Promise<Line[]> {
    const from = lines.length;
    await run();
    await sleep(150); // the close (and its log lines) come after the client's last reply
    return lines.slice(from).filter((l) => SMTP_SERVICES.has(l.svc ?? ''));
  }

  function expectOneConnection(own: Line[]): string {
    for (const l of own) expect(l, `log line "${l.msg}"`).toMatchObject({ cid: expect.any(String), peer: '127.0.0.1' });
    const cids = new Set(own.map((l) => l.cid));
    expect([...cids], own.map((l) => `${l.cid} ${l.msg}`).join('\n')).toHaveLength(1);
    return [...cids][0]!;
  }

  it('MX: a refused RCPT, a delivery and the close all carry the session id', async () => {
    const own = await session(async () => {
      const c = await RawSmtp.connect(port('smtp'));
      expect(await c.reply()).toMatch(/^220 /);
      expect(await c.command('EHLO client.remote.example')).toMatch(/^250/);
      expect(await c.command('MAIL FROM:<sender@remote.example>')).toMatch(/^250 /);
      expect(await c.command('RCPT TO:<nobody@example.test>')).toMatch(/^550 5\.1\.1 /);
      expect(await c.command('RCPT TO:<alice@example.test>')).toMatch(/^250 /);
      expect(await c.command('DATA')).toMatch(/^354 /);
      expect(await c.command('Subject: logged\r\n\r\nhello\r\n.')).toMatch(/^250 /);
      expect(await c.command('QUIT')).toMatch(/^221 /);
      c.close();
    });
    const cid = expectOneConnection(own);
    const messages = own.map((l) => l.msg);
    expect(messages).toContain('smtp connect');
    expect(messages).toContain('unknown recipient refused');
    expect(messages).toContain('message delivered');
    expect(own.find((l) => l.msg === 'unknown recipient refused')).toMatchObject({ rcpt: 'nobody@example.test' });
    // The same id is the one in the stored message's Received: header.
    const [stored] = await inboxFiles(setup.dataDir, 'alice@example.test');
    expect(stored.content.toString('latin1')).toContain(`\tid ${cid}\r\n\tfor <alice@example.test>;`);
  });

  it('submission: the login and the submitted message carry the session id', async () => {
    const own = await session(async () => {
      const c = await RawSmtp.connect(port('submission'));
      expect(await c.reply()).toMatch(/^220 /);
      expect(await c.command('EHLO laptop')).toMatch(/^250/);
      expect(await c.command('AUTH PLAIN ' + Buffer.from('\0alice@example.test\0alice-password').toString('base64'))).toMatch(/^235 /);
      expect(await c.command('MAIL FROM:<alice@example.test>')).toMatch(/^250 /);
      expect(await c.command('RCPT TO:<bob@example.test>')).toMatch(/^250 /);
      expect(await c.command('DATA')).toMatch(/^354 /);
      expect(await c.command('From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nhello bob\r\n.')).toMatch(/^250 /);
      expect(await c.command('QUIT')).toMatch(/^221 /);
      c.close();
    });
    expectOneConnection(own);
    const messages = own.map((l) => l.msg);
    expect(messages).toContain('logged in');
    expect(messages).toContain('message submitted');
    expect(own.find((l) => l.msg === 'message submitted')).toMatchObject({ user: 'alice@example.test', local: 1 });
  });

  it('a socket error in a transaction is logged with the session id', async () => {
    const own = await session(async () => {
      const c = await RawSmtp.connect(port('smtp'));
      expect(await c.reply()).toMatch(/^220 /);
      expect(await c.command('EHLO client.remote.example')).toMatch(/^250/);
      expect(await c.command('MAIL FROM:<sender@remote.example>')).toMatch(/^250 /);
      c.socket.resetAndDestroy();
    });
    expectOneConnection(own);
    expect(own.map((l) => l.msg)).toContain('smtp connection error');
  });

  it('every session had its own id', () => {
    const perCid = new Map<string, Set<string>>();
    for (const l of lines.filter((x) => SMTP_SERVICES.has(x.svc ?? '') && x.cid)) {
      perCid.set(l.cid!, (perCid.get(l.cid!) ?? new Set()).add(l.svc!));
    }
    expect(perCid.size).toBe(3);
    // And no line of the SMTP services goes without one (start-up lines come from the root logger).
    expect(lines.filter((x) => SMTP_SERVICES.has(x.svc ?? '') && !x.cid).map((x) => x.msg)).toEqual([]);
  });
});
