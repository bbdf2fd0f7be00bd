// Inbound SMTP (port 25): mail from the internet for the local domains. smtp-server runs the
// protocol; this module supplies the policy (who may send to whom), the trace headers, the
// smuggling and size guards, and the durable hand-off to the store. A 250 after DATA is sent
// only once every recipient's copy is on disk (DESIGN invariant 1).
import type { Readable } from 'node:stream';
import type { SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { Logger } from '../core/log.ts';
import { DataGuard } from './data-guard.ts';
import { SmtpListener, splitAddress } from './listener.ts';
import type { MailboxRef, SmtpListenerOptions, Transaction } from './listener.ts';
import { smtpError } from './replies.ts';

export { splitAddress } from './listener.ts';
export type { MailboxRef } from './listener.ts';
export type Resolution = { local: MailboxRef[]; remote: string[] };

/** What inbound SMTP needs to know about users and aliases (config/directory.ts provides it). */
export type RecipientDirectory = {
  isLocalDomain(domain: string): boolean;
  resolve(address: string): Resolution | null;
};

/** What inbound SMTP needs from the store (store/maildir.ts provides it). */
export type MessageStore = {
  deliver(targets: MailboxRef[], content: AsyncIterable<Uint8Array>, opts?: { signal?: AbortSignal }): Promise<unknown[]>;
};

export type InboundOptions = Omit<SmtpListenerOptions<AcceptedRcpt>, 'policy' | 'plaintextAuth'> & {
  directory: RecipientDirectory;
  store: MessageStore;
  /** Told after each durable delivery, so open mailbox views can show the new mail at once. */
  onDelivered?: (boxes: MailboxRef[]) => void;
};

type AcceptedRcpt = { address: string; mailboxes: MailboxRef[] };

/** Inbound SMTP: mail for local users only, stored in their Maildirs before the 250. */
export class InboundSmtp extends SmtpListener<AcceptedRcpt> {
  constructor(opts: InboundOptions) {
    super({ ...opts, policy: new MxPolicy(opts) });
  }
}

class MxPolicy {
  readonly #opts: InboundOptions;
  readonly #log: Logger;
  constructor(opts: InboundOptions) {
    this.#opts = opts;
    this.#log = opts.log;
  }

  mailFrom(): void {
    // Sender checks (SPF, DMARC) come with the inbound-trust issue.
  }

  rcptTo(address: string, session: SMTPServerSession): AcceptedRcpt {
    const parts = splitAddress(address)!;
    const { directory } = this.#opts;
    if (!directory.isLocalDomain(parts.domain)) {
      // DESIGN invariant 2: never an open relay. Inbound port 25 takes mail for local domains only.
      this.#log.info({ cid: session.id, peer: session.remoteAddress, rcpt: address }, 'relay attempt refused');
      throw smtpError(554, `5.7.1 Relay access denied: ${parts.domain} is not a domain of this server`);
    }
    const resolution = directory.resolve(address);
    if (!resolution || resolution.local.length === 0) {
      if (resolution && resolution.remote.length > 0) {
        this.#log.warn({ cid: session.id, rcpt: address, remote: resolution.remote }, 'alias forwards only to remote addresses, and forwarding is not enabled yet');
        throw smtpError(550, '5.7.0 This address forwards elsewhere, which this server does not do yet');
      }
      throw smtpError(550, `5.1.1 No such user here: <${address}>`);
    }
    if (resolution.remote.length > 0) {
      this.#log.warn({ cid: session.id, rcpt: address, remote: resolution.remote }, 'remote alias targets skipped: forwarding is not enabled yet');
    }
    return { address, mailboxes: resolution.local };
  }

  async receive(stream: SMTPServerDataStream, session: SMTPServerSession, tx: Transaction<AcceptedRcpt>): Promise<string> {
    const targets = uniqueMailboxes(tx.rcpts.flatMap((r) => r.mailboxes));
    const sender = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const header = traceHeaders({
      hostname: this.#opts.hostname,
      session,
      sender,
      // RFC 5321 4.4: "for" and Delivered-To name a recipient only when there is one, since
      // all recipients share one stored file (hard links), as Dovecot's LMTP does.
      recipient: tx.rcpts.length === 1 ? tx.rcpts[0].address : undefined,
      deliveredTo: targets.length === 1 ? `${targets[0].user}@${targets[0].domain}` : undefined,
    });
    const guard = new DataGuard(this.#opts.maxMessageBytes);
    const started = performance.now();
    await this.#opts.store.deliver(targets, guarded(stream, guard, Buffer.from(header, 'utf8')));
    const ms = Math.round(performance.now() - started);
    this.#opts.onDelivered?.(targets);
    this.#log.info({ cid: session.id, peer: session.remoteAddress, from: sender, rcpts: tx.rcpts.map((r) => r.address), bytes: guard.bytes, ms }, 'message delivered');
    return `2.6.0 Message accepted for delivery (${targets.length} mailbox${targets.length === 1 ? '' : 'es'})`;
  }
}

export function uniqueMailboxes(boxes: MailboxRef[]): MailboxRef[] {
  const seen = new Map<string, MailboxRef>();
  for (const b of boxes) seen.set(`${b.user}@${b.domain}`, b);
  return [...seen.values()];
}

/** The message as the store should write it: trace headers, then DATA checked chunk by chunk. */
export async function* guarded(stream: Readable, guard: DataGuard, header: Buffer): AsyncGenerator<Uint8Array> {
  yield header;
  // destroyOnReturn: false keeps smtp-server's stream alive when we stop early, so it can
  // still read up to the client's final dot before replying.
  for await (const chunk of stream.iterator({ destroyOnReturn: false })) {
    guard.check(chunk as Buffer);
    yield chunk as Buffer;
  }
  guard.finish();
}

type TraceInput = { hostname: string; session: SMTPServerSession; sender: string; recipient?: string; deliveredTo?: string };

/** Return-Path, Delivered-To and Received, folded as RFC 5322 wants. */
export function traceHeaders(t: TraceInput): string {
  const s = t.session;
  const helo = (s.hostNameAppearsAs || 'unknown').replace(/[^\x21-\x7e]/g, '?');
  const ip = s.remoteAddress.startsWith('::ffff:') ? s.remoteAddress.slice(7) : s.remoteAddress;
  const ipLiteral = ip.includes(':') ? `IPv6:${ip}` : ip;
  const tls = s.secure && s.tlsOptions ? ` (${s.tlsOptions.version} ${s.tlsOptions.name})` : '';
  const protocol = s.transmissionType || 'ESMTP';
  const lines = [`Return-Path: <${t.sender}>`];
  if (t.deliveredTo) lines.push(`Delivered-To: ${t.deliveredTo}`);
  lines.push(
    `Received: from ${helo} ([${ipLiteral}])\r\n\tby ${t.hostname} (hearth) with ${protocol}${tls}\r\n\tid ${s.id}${t.recipient ? `\r\n\tfor <${t.recipient}>` : ''}; ${rfc5322Date(new Date())}`,
  );
  return lines.join('\r\n') + '\r\n';
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

export function rfc5322Date(d: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  const offset = -d.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  const abs = Math.abs(offset);
  return `${DAYS[d.getDay()]}, ${d.getDate()} ${MONTHS[d.getMonth()]} ${d.getFullYear()} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${sign}${pad(Math.floor(abs / 60))}${pad(abs % 60)}`;
}
