// Vacation auto-replies (RFC 3834), per user. The user's settings (subject, body, optional
// first and last day) and the senders already answered live in one small JSON file per user
// under <data_dir>/vacation/ (this module owns that folder). Inbound SMTP hands every
// delivered message to `consider()` after the 250-worthy work is done; the reply is built and
// sent in the background, so it never delays or fails the delivery.
//
// RFC 3834 2 and 3.1: answer only what a person most likely sent to this person:
//   - never the null sender, MAILER-DAEMON, noreply and list-owner style senders;
//   - never mail with Auto-Submitted other than "no", List-Id/List-Unsubscribe/List-Post, or
//     Precedence bulk/list/junk (nor Microsoft's X-Auto-Response-Suppress OOF/All);
//   - only when one of the user's addresses is in To: or Cc: (not Bcc, not a list);
//   - at most once per sender per `intervalMs`, remembered across restarts;
//   - never mail filed as junk.
// The reply goes to the envelope sender, from the null sender, with Auto-Submitted:
// auto-replied, In-Reply-To and References, and "Re: <subject>".
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import addressparser from 'nodemailer/lib/addressparser';
import type { Logger } from '../core/log.ts';
import type { ForwardQueue } from './forwarding.ts';
import { bareAddress, headerFields } from './forwarding.ts';
import type { MailboxRef } from './listener.ts';

export type VacationSettings = {
  subject: string;
  body: string;
  /** First day ("2026-07-01", local time) or instant (ISO 8601) the reply is active; absent: now. */
  start?: string;
  /** Last day (inclusive) or instant it is active; absent: until turned off. */
  end?: string;
};

type VacationFile = { version: 1; settings: VacationSettings | null; replied: Record<string, number> };

/** The default subject template: `{subject}` stands for the subject of the message answered. */
export const DEFAULT_VACATION_SUBJECT = 'Re: {subject}';

const ADDRESS = /^[^\s/\\@]{1,64}@[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$/;

/** Settings and reply log on disk: <dir>/<user@domain>.json, written tmp -> rename. */
export class VacationStore {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  path(address: string): string {
    const a = address.toLowerCase();
    if (!ADDRESS.test(a) || a.includes('..') || a.startsWith('.')) throw new TypeError(`not a user address: ${JSON.stringify(address)}`);
    return join(this.dir, `${a}.json`);
  }

  async read(address: string): Promise<VacationFile> {
    try {
      const parsed = JSON.parse(await readFile(this.path(address), 'utf8')) as Partial<VacationFile>;
      return { version: 1, settings: parsed.settings ?? null, replied: parsed.replied ?? {} };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, settings: null, replied: {} };
      throw err;
    }
  }

  async write(address: string, file: VacationFile): Promise<void> {
    const path = this.path(address);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(tmp, JSON.stringify(file, null, 2) + '\n', { mode: 0o600 });
    await rename(tmp, path);
  }
}

/** Check and normalise settings from the CLI or the control socket; the problem as a string. */
export function validateVacation(input: { subject?: unknown; body?: unknown; start?: unknown; end?: unknown }): VacationSettings | string {
  const subject = typeof input.subject === 'string' && input.subject.trim() ? input.subject.trim() : DEFAULT_VACATION_SUBJECT;
  if (/[\r\n]/.test(subject)) return 'the subject must be one line';
  if (typeof input.body !== 'string' || input.body.trim() === '') return 'give the reply text (--body or --body-file)';
  if (input.body.length > 16 * 1024) return 'the reply text is longer than 16 KB';
  const settings: VacationSettings = { subject, body: input.body };
  for (const key of ['start', 'end'] as const) {
    const v = input[key];
    if (v === undefined || v === null || v === '') continue;
    if (typeof v !== 'string' || Number.isNaN(boundary(v, key === 'end'))) return `--${key} must be a date (2026-07-01) or an ISO 8601 time`;
    settings[key] = v;
  }
  if (settings.start && settings.end && boundary(settings.end, true) <= boundary(settings.start, false)) return '--end is before --start';
  return settings;
}

/** A day ("2026-07-01", local time; as an end: the end of that day) or an ISO instant, in ms. */
function boundary(text: string, isEnd: boolean): number {
  const day = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text);
  if (day) return new Date(Number(day[1]), Number(day[2]) - 1, Number(day[3]) + (isEnd ? 1 : 0)).getTime();
  return Date.parse(text);
}

export function vacationActive(s: VacationSettings | null, now: number): boolean {
  if (!s) return false;
  if (s.start && now < boundary(s.start, false)) return false;
  if (s.end && now >= boundary(s.end, true)) return false;
  return true;
}

/** Sender local parts that are machines or lists (RFC 3834 2; RFC 2142). */
const MACHINE_SENDER = /^(mailer-daemon|postmaster|listserv|majordomo|no[-_.]?reply|do[-_.]?not[-_.]?reply|bounces?|.*-request|owner-.*|.*-owner|.*-bounces?|noreply[-+.].*|bounces?[-+.].*)$/i;

/** Why this message gets no auto-reply at all, or undefined if it may get one. */
export function whyNoAutoReply(sender: string, fields: Array<{ name: string; value: string }>): string | undefined {
  if (sender === '') return 'null sender';
  const local = sender.slice(0, sender.lastIndexOf('@'));
  if (MACHINE_SENDER.test(local)) return 'machine sender';
  for (const { name, value } of fields) {
    const v = value.toLowerCase();
    if (name === 'auto-submitted' && v.split(';')[0].trim() !== 'no') return 'Auto-Submitted';
    if (name === 'list-id' || name === 'list-unsubscribe' || name === 'list-post') return 'mailing list';
    if (name === 'precedence' && /^(bulk|list|junk)\b/.test(v.trim())) return `Precedence: ${v.trim()}`;
    if (name === 'x-auto-response-suppress' && /\b(oof|all)\b/.test(v)) return 'X-Auto-Response-Suppress';
  }
  return undefined;
}

export type VacationDelivery = {
  box: MailboxRef;
  /** The addresses the message reached this user by (RCPT addresses: aliases, plus-addresses). */
  addresses: string[];
  folder?: string;
};

export type VacationResponderOptions = {
  store: VacationStore;
  hostname: string;
  log: Logger;
  intervalMs: number;
  /** Folder of mail judged junk: never answered. */
  junkFolder: string;
  isLocalDomain(domain: string): boolean;
  resolveLocal(address: string): MailboxRef[];
  deliverLocal(boxes: MailboxRef[], raw: Buffer): Promise<void>;
  queue: ForwardQueue;
  /** DKIM-Signature lines for the reply (domain of its From:), or ''. */
  sign?: (message: Buffer, domain: string) => Promise<string>;
  now?: () => number;
};

export class VacationResponder {
  readonly #opts: VacationResponderOptions;
  readonly #log: Logger;
  readonly #now: () => number;
  /** Per user: the file's state, loaded once, changed only inside #locked. */
  readonly #files = new Map<string, Promise<VacationFile>>();
  readonly #locks = new Map<string, Promise<unknown>>();
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(opts: VacationResponderOptions) {
    this.#opts = opts;
    this.#log = opts.log;
    this.#now = opts.now ?? Date.now;
  }

  /** Look at a delivered message; replies (if any) are sent in the background. */
  consider(input: { cid: string; sender: string; head: Buffer; deliveries: VacationDelivery[] }): void {
    const fields = headerFields(input.head);
    const why = whyNoAutoReply(input.sender, fields);
    for (const d of input.deliveries) {
      const address = `${d.box.user}@${d.box.domain}`.toLowerCase();
      const work = this.#locked(address, () => this.#consider(address, d, input, fields, why)).catch((err: unknown) =>
        this.#log.error({ cid: input.cid, user: address, err: (err as Error).message }, 'vacation auto-reply failed'),
      );
      this.#inFlight.add(work);
      void work.finally(() => this.#inFlight.delete(work));
    }
  }

  /** Wait for replies being sent (shutdown, tests). */
  async idle(): Promise<void> {
    while (this.#inFlight.size) await Promise.allSettled([...this.#inFlight]);
  }

  async settings(address: string): Promise<{ settings: VacationSettings | null; active: boolean; answered: number }> {
    const a = address.toLowerCase();
    return this.#locked(a, async () => {
      const file = await this.#file(a);
      return { settings: file.settings, active: vacationActive(file.settings, this.#now()), answered: Object.keys(file.replied).length };
    });
  }

  /** Turn the reply on (settings) or off (null). Turning it on anew forgets who was answered. */
  async set(address: string, settings: VacationSettings | null): Promise<void> {
    const a = address.toLowerCase();
    await this.#locked(a, async () => {
      const file = await this.#file(a);
      file.settings = settings;
      file.replied = {};
      await this.#opts.store.write(a, file);
    });
  }

  async #consider(address: string, d: VacationDelivery, input: { cid: string; sender: string; head: Buffer }, fields: Array<{ name: string; value: string }>, why: string | undefined): Promise<void> {
    const file = await this.#file(address);
    const now = this.#now();
    if (!vacationActive(file.settings, now)) return;
    const log = { cid: input.cid, user: address, sender: input.sender };
    if (why) return void this.#log.debug({ ...log, why }, 'vacation: no auto-reply');
    if (d.folder && d.folder === this.#opts.junkFolder) return void this.#log.debug(log, 'vacation: no auto-reply to junk');
    const sender = input.sender.toLowerCase();
    const mine = new Set([address, ...d.addresses.map((a) => a.toLowerCase())]);
    if (mine.has(sender)) return;
    const listed = fields.filter((f) => f.name === 'to' || f.name === 'cc').flatMap((f) => flatten(addressparser(utf8(f.value))));
    const named = listed.find((a) => mine.has(a.toLowerCase()));
    if (!named) return void this.#log.debug(log, 'vacation: not addressed to the user in To/Cc; no auto-reply');
    const last = file.replied[sender];
    if (last !== undefined && now - last < this.#opts.intervalMs) return void this.#log.debug(log, 'vacation: answered this sender recently');
    // Remember first: a crash after sending must not answer the same sender twice.
    for (const [s, t] of Object.entries(file.replied)) if (now - t >= this.#opts.intervalMs) delete file.replied[s];
    file.replied[sender] = now;
    await this.#opts.store.write(address, file);
    const reply = this.#compose(named.toLowerCase(), input.sender, fields, file.settings!, now);
    await this.#send(input.sender, reply, named.slice(named.lastIndexOf('@') + 1).toLowerCase());
    this.#log.info(log, 'vacation auto-reply sent');
  }

  #compose(from: string, to: string, fields: Array<{ name: string; value: string }>, s: VacationSettings, now: number): Buffer {
    const get = (name: string) => fields.find((f) => f.name === name)?.value;
    const originalSubject = utf8(get('subject') ?? '').replace(/[\r\n]+/g, ' ').trim();
    const subject = s.subject.replaceAll('{subject}', originalSubject).trim() || 'Re:';
    const messageId = get('message-id');
    const references = [get('references') ?? get('in-reply-to') ?? '', messageId ?? ''].join(' ').trim();
    const body = s.body.replace(/\r?\n/g, '\r\n');
    const ascii = !/[^\x00-\x7f]/.test(body);
    const lines = [
      `From: <${from}>`,
      `To: <${to}>`,
      `Subject: ${encodeWord(subject)}`,
      `Date: ${new Date(now).toUTCString().replace('GMT', '+0000')}`,
      `Message-ID: <${now.toString(36)}.${randomBytes(8).toString('hex')}@${this.#opts.hostname}>`,
      ...(messageId ? [`In-Reply-To: ${messageId}`] : []),
      ...(references ? [`References: ${references}`] : []),
      // RFC 3834 5.1: marks the reply, so other responders do not answer it.
      'Auto-Submitted: auto-replied',
      'Precedence: bulk',
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      `Content-Transfer-Encoding: ${ascii ? '7bit' : 'base64'}`,
    ];
    const text = ascii ? (body.endsWith('\r\n') ? body : `${body}\r\n`) : (Buffer.from(body, 'utf8').toString('base64').match(/.{1,76}/g) ?? []).join('\r\n') + '\r\n';
    return Buffer.from(`${lines.join('\r\n')}\r\n\r\n${text}`, 'utf8');
  }

  async #send(to: string, reply: Buffer, fromDomain: string): Promise<void> {
    const signature = this.#opts.sign ? await this.#opts.sign(reply, fromDomain) : '';
    const raw = signature ? Buffer.concat([Buffer.from(signature, 'utf8'), reply]) : reply;
    const domain = to.slice(to.lastIndexOf('@') + 1);
    if (this.#opts.isLocalDomain(domain)) {
      const boxes = this.#opts.resolveLocal(to);
      if (boxes.length) await this.#opts.deliverLocal(boxes, Buffer.concat([Buffer.from('Return-Path: <>\r\n'), raw]));
      return;
    }
    await this.#opts.queue.enqueue({ from: '', recipients: [{ address: to }] }, raw);
  }

  #file(address: string): Promise<VacationFile> {
    let p = this.#files.get(address);
    if (!p) {
      p = this.#opts.store.read(address);
      this.#files.set(address, p);
      p.catch(() => this.#files.delete(address));
    }
    return p;
  }

  /** One change at a time per user, so two messages from one sender get one reply. */
  #locked<T>(address: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(address) ?? Promise.resolve();
    const next = previous.then(fn, fn);
    const settled = next.catch(() => undefined);
    this.#locks.set(address, settled);
    void settled.then(() => {
      if (this.#locks.get(address) === settled) this.#locks.delete(address);
    });
    return next;
  }
}

type Parsed = { address?: string; group?: Parsed[] };
function flatten(list: Parsed[]): string[] {
  return list.flatMap((a) => (a.group ? flatten(a.group) : a.address ? [bareAddress(a.address)] : []));
}

/** Header bytes were read as latin1; UTF-8 header text (RFC 6532) is decoded back. */
function utf8(latin1: string): string {
  return Buffer.from(latin1, 'latin1').toString('utf8');
}

/** RFC 2047 B-encoding for a non-ASCII header value. */
function encodeWord(text: string): string {
  if (!/[^\x20-\x7e]/.test(text)) return text;
  return `=?UTF-8?B?${Buffer.from(text, 'utf8').toString('base64')}?=`;
}

/** Control-socket commands (vacation.show/set/off) for `hearth vacation`. */
export function vacationCommands(responder: VacationResponder, isUser: (address: string) => boolean): Record<string, (args: Record<string, unknown>) => Promise<unknown>> {
  const user = (args: Record<string, unknown>): string => {
    const address = String(args.address ?? '').toLowerCase();
    if (!isUser(address)) throw new Error(`${address || '(none)'} is not a user here; see \`hearth user list\``);
    return address;
  };
  return {
    'vacation.show': async (args) => responder.settings(user(args)),
    'vacation.set': async (args) => {
      const address = user(args);
      const settings = validateVacation(args);
      if (typeof settings === 'string') throw new Error(settings);
      await responder.set(address, settings);
      return responder.settings(address);
    },
    'vacation.off': async (args) => {
      const address = user(args);
      await responder.set(address, null);
      return responder.settings(address);
    },
  };
}
