// Shared bits of the IMAP session tests: a hearth with IMAP listeners, SMTP delivery, and a raw
// IMAP conversation helper on RawLines.
import { expect } from 'vitest';
import { ALL_LISTENERS, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { RawLines } from '../helpers/raw-lines.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';

export type Running = Awaited<ReturnType<typeof startTestHearth>>;

export async function startImapHearth(extraToml = ''): Promise<{ setup: TestSetup; hearth: Running }> {
  const setup = await makeSetup({
    fsync: false,
    toml: `${ALL_LISTENERS}\n[auth]\nfailure_delay = "1ms"\nmax_failure_delay = "5ms"\nmax_failures = 50\n${extraToml}`,
  });
  const hearth = await startTestHearth(setup);
  return { setup, hearth };
}

/** Deliver over SMTP, like mail arriving from outside. */
export async function deliver(port: number, to: string, subject: string, body = 'Hello.', extraHeaders = ''): Promise<void> {
  const header = `From: Sender <sender@remote.example>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nDate: Mon, 2 Feb 2026 10:00:00 +0000\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@t>\r\n${extraHeaders}`;
  await deliverRaw(port, to, header, body);
}

/**
 * Deliver over SMTP from sender@remote.example: `header` (its lines each ending in CRLF) as
 * given, then a blank line and `body`, dot-stuffed here. Insists that RCPT and DATA are accepted.
 */
export async function deliverRaw(port: number, to: string, header: string, body: string): Promise<void> {
  const c = await RawSmtp.connect(port);
  await c.reply();
  await c.command('EHLO test');
  await c.command('MAIL FROM:<sender@remote.example>');
  expect(await c.command(`RCPT TO:<${to}>`)).toMatch(/^250/);
  await c.command('DATA');
  const stuffed = body.replace(/^\./gm, '..');
  c.send(`${header}\r\n${stuffed}\r\n.\r\n`);
  expect(await c.reply()).toMatch(/^250/);
  await c.command('QUIT');
  c.close();
}

/** A raw IMAP client: send a tagged command, collect lines up to its tagged reply. */
export class RawImap {
  readonly c: RawLines;
  greeting = '';
  #n = 0;
  private constructor(c: RawLines) {
    this.c = c;
  }

  static async connect(port: number, opts: { tls?: boolean } = {}): Promise<RawImap> {
    const r = new RawImap(await RawLines.connect(port, opts));
    r.greeting = await r.c.line();
    return r;
  }

  /** Lines until the tagged reply of `tag`; the last element is that reply. */
  async until(tag: string, timeoutMs = 10_000): Promise<string[]> {
    const out: string[] = [];
    for (;;) {
      const line = await this.c.line(timeoutMs);
      out.push(line);
      if (line.startsWith(`${tag} `)) return out;
    }
  }

  async run(command: string): Promise<string[]> {
    const tag = `t${++this.#n}`;
    this.c.send(`${tag} ${command}\r\n`);
    return this.until(tag);
  }

  /** The tagged reply only. */
  async ok(command: string): Promise<string[]> {
    const lines = await this.run(command);
    expect(lines[lines.length - 1], command).toMatch(/^t\d+ OK /);
    return lines;
  }

  async login(user = 'alice@example.test', pw = 'alice-password'): Promise<void> {
    await this.ok(`LOGIN ${user} ${pw}`);
  }

  close(): void {
    this.c.close();
  }
}

/** Poll `check` until it returns a value (bounded); no fixed sleeps. */
export async function eventually<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let delay = 5;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(100, delay * 2);
  }
}
