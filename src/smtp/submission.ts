// Submission (RFC 6409 on 587 with STARTTLS, RFC 8314 on 465 with implicit TLS): mail from
// the users' own clients. AUTH is required before MAIL; a user may send only as one of their
// own addresses (envelope and From:); local recipients get the message in their Maildir at
// once, remote ones through the durable outbound queue. The 250 comes only after both.
import type { SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import addressparser from 'nodemailer/lib/addressparser';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../core/log.ts';
import type { LoginLimiter } from '../core/login-limiter.ts';
import { DataError, DataGuard } from './data-guard.ts';
import { guarded, rfc5322Date, traceHeaders, uniqueMailboxes } from './inbound.ts';
import type { MessageStore, RecipientDirectory } from './inbound.ts';
import { SmtpListener, splitAddress } from './listener.ts';
import type { MailboxRef, SmtpListenerOptions, Transaction } from './listener.ts';
import { smtpError } from './replies.ts';

export type SubmissionUser = { user: string; domain: string; address: string };

/** What submission needs from the outbound queue (queue/queue.ts provides it). */
export type OutboundEnqueue = {
  enqueue(
    envelope: {
      from: string;
      recipients: Array<{ address: string; notify?: string[]; orcpt?: string }>;
      dsn?: { ret?: 'FULL' | 'HDRS'; envid?: string };
      needsSmtpUtf8?: boolean;
      eightBit?: boolean;
    },
    content: Uint8Array,
  ): Promise<string>;
};

export type SubmissionOptions = Omit<SmtpListenerOptions<SubmittedRcpt>, 'policy'> & {
  directory: RecipientDirectory & { authenticate(address: string, password: string): Promise<{ user: string; domain: string } | null> };
  store: MessageStore;
  queue: OutboundEnqueue;
  limiter: LoginLimiter;
  /** Local domains, for qualifying a bare user name at login when there is only one. */
  domains: () => string[];
  onDelivered?: (boxes: MailboxRef[]) => void;
  /** Signs what leaves for other servers; mail from a domain without a key goes unsigned. */
  dkim?: { sign(message: Buffer, domain: string): Promise<string> };
};

type SubmittedRcpt = { address: string; local: MailboxRef[] | null; notify?: string[]; orcpt?: string };

export class SubmissionSmtp extends SmtpListener<SubmittedRcpt> {
  constructor(opts: SubmissionOptions) {
    super({ ...opts, policy: new SubmissionPolicy(opts) });
  }
}

function userOf(session: SMTPServerSession): SubmissionUser {
  return session.user as SubmissionUser;
}

class SubmissionPolicy {
  readonly #opts: SubmissionOptions;
  readonly #log: Logger;
  constructor(opts: SubmissionOptions) {
    this.#opts = opts;
    this.#log = opts.log;
  }

  async authenticate(username: string, password: string, session: SMTPServerSession): Promise<SubmissionUser | null> {
    const peer = session.remoteAddress;
    const domains = this.#opts.domains();
    const address = username.includes('@') || domains.length !== 1 ? username : `${username}@${domains[0]}`;
    const verdict = this.#opts.limiter.check(peer, address);
    if (!verdict.allowed) {
      this.#log.warn({ cid: session.id, peer, user: address, reason: verdict.reason }, 'login refused: locked out after repeated failures');
      throw smtpError(454, `4.7.0 Too many failed logins; try again in ${Math.ceil(verdict.retryAfterMs / 60_000)} minutes`);
    }
    const box = await this.#opts.directory.authenticate(address, password);
    if (!box) {
      const delay = this.#opts.limiter.failure(peer, address);
      this.#log.info({ cid: session.id, peer, user: address, delayMs: delay }, 'login failed');
      await sleep(delay);
      return null;
    }
    this.#opts.limiter.success(peer);
    this.#log.info({ cid: session.id, peer, user: `${box.user}@${box.domain}` }, 'logged in');
    return { user: box.user, domain: box.domain, address: `${box.user}@${box.domain}` };
  }

  /** Does this address deliver to the logged-in user's mailbox (their address or an alias of theirs)? */
  #owns(user: SubmissionUser, address: string): boolean {
    const parts = splitAddress(address);
    if (!parts || !this.#opts.directory.isLocalDomain(parts.domain)) return false;
    const r = this.#opts.directory.resolve(address);
    return Boolean(r?.local.some((b) => b.user === user.user && b.domain === user.domain));
  }

  mailFrom(address: string, session: SMTPServerSession): void {
    const user = userOf(session);
    // The null sender is allowed: clients send read receipts and vacation replies with it.
    if (address !== '' && !this.#owns(user, address)) {
      this.#log.warn({ cid: session.id, user: user.address, from: address }, 'sender address refused');
      throw smtpError(553, `5.7.1 You may send only as your own addresses; <${address}> is not one of ${user.address}'s`);
    }
  }

  rcptTo(address: string, session: SMTPServerSession): SubmittedRcpt {
    const parts = splitAddress(address)!;
    const rcpt = session.envelope.rcptTo.find((r) => r.address === address);
    const dsn = { notify: rcpt?.dsn?.notify, orcpt: rcpt?.dsn?.orcpt };
    if (!this.#opts.directory.isLocalDomain(parts.domain)) return { address, local: null, ...dsn };
    const r = this.#opts.directory.resolve(address);
    if (!r || r.local.length === 0) throw smtpError(550, `5.1.1 No such user here: <${address}>`);
    return { address, local: r.local, ...dsn };
  }

  async receive(stream: SMTPServerDataStream, session: SMTPServerSession, tx: Transaction<SubmittedRcpt>): Promise<string> {
    const user = userOf(session);
    const sender = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const guard = new DataGuard(this.#opts.maxMessageBytes);
    // Read the whole message (bounded by the size limit): the From: check must pass before
    // anything is stored, and local copies and the queue both need it.
    const chunks: Buffer[] = [];
    for await (const chunk of guarded(stream, guard, Buffer.alloc(0))) chunks.push(Buffer.from(chunk));
    let message: Buffer = Buffer.concat(chunks);
    const fromDomain = this.#checkFrom(user, message);
    message = completeHeaders(message, this.#opts.hostname);
    const signature = this.#opts.dkim ? await this.#opts.dkim.sign(message, fromDomain) : '';
    const trace = traceHeaders({ hostname: this.#opts.hostname, session, sender }).replace(/^Return-Path: [^\r]*\r\n/, '');
    const withTrace = Buffer.concat([Buffer.from(trace + signature, 'utf8'), message]);

    const local = uniqueMailboxes(tx.rcpts.flatMap((r) => r.local ?? []));
    const remote = tx.rcpts.filter((r) => r.local === null);
    const started = performance.now();
    let queueId: string | undefined;
    if (remote.length > 0) {
      const envelope = session.envelope;
      queueId = await this.#opts.queue.enqueue(
        {
          from: sender,
          recipients: remote.map((r) => ({ address: r.address, notify: r.notify, orcpt: r.orcpt })),
          dsn: envelope.dsn ? { ret: (envelope.dsn.ret ?? undefined) as 'FULL' | 'HDRS' | undefined, envid: envelope.dsn.envid ?? undefined } : undefined,
          needsSmtpUtf8: Boolean(envelope.smtpUtf8) || tx.rcpts.some((r) => /[^\x00-\x7f]/.test(r.address)) || /[^\x00-\x7f]/.test(sender),
          eightBit: envelope.bodyType === '8bitmime' || hasEightBit(withTrace),
        },
        withTrace,
      );
    }
    if (local.length > 0) {
      const localCopy = Buffer.concat([Buffer.from(`Return-Path: <${sender}>\r\n`), withTrace]);
      await this.#opts.store.deliver(local, (async function* () {
        yield localCopy;
      })());
      this.#opts.onDelivered?.(local);
    }
    this.#log.info(
      { cid: session.id, user: user.address, from: sender, local: local.length, remote: remote.map((r) => r.address), queueId, bytes: withTrace.length, ms: Math.round(performance.now() - started) },
      'message submitted',
    );
    return `2.0.0 Message accepted${queueId ? ` (queued as ${queueId})` : ''}`;
  }

  /** Refuses a From: that is not the user's; returns its domain (the DKIM signing domain). */
  #checkFrom(user: SubmissionUser, message: Buffer): string {
    const from = headerValues(message, 'from');
    if (from.length !== 1) throw new DataError('DATA_BAD_HEADER', 550, '5.6.0 A message needs exactly one From: header (RFC 5322 3.6)');
    const addresses = flattenAddresses(addressparser(from[0]));
    if (addresses.length === 0) throw new DataError('DATA_BAD_HEADER', 550, '5.6.0 The From: header has no address');
    const foreign = addresses.filter((a) => !this.#owns(user, a));
    if (foreign.length > 0) {
      throw new DataError('DATA_BAD_HEADER', 553, `5.7.1 You may send only as your own addresses; From: <${foreign[0]}> is not one of ${user.address}'s`);
    }
    return splitAddress(addresses[0])!.domain;
  }
}

type ParsedAddress = { address?: string; group?: ParsedAddress[] };

function flattenAddresses(list: ParsedAddress[]): string[] {
  return list.flatMap((a) => (a.group ? flattenAddresses(a.group) : a.address ? [a.address] : []));
}

/** The header block (up to the blank line) of a message. */
function headerBlock(message: Buffer): string {
  const end = message.indexOf('\r\n\r\n');
  return message.subarray(0, end < 0 ? message.length : end + 2).toString('utf8');
}

/** Unfolded values of one header field, in order. */
export function headerValues(message: Buffer, name: string): string[] {
  const lines = headerBlock(message).split('\r\n');
  const values: string[] = [];
  let current: string | undefined;
  const flush = () => {
    if (current !== undefined) values.push(current.trim());
    current = undefined;
  };
  for (const line of lines) {
    if (/^[ \t]/.test(line)) {
      if (current !== undefined) current += ` ${line.trim()}`;
      continue;
    }
    flush();
    const colon = line.indexOf(':');
    if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === name) current = line.slice(colon + 1);
  }
  flush();
  return values;
}

/** RFC 6409 8.2/8.3: the MSA adds Date: and Message-ID: when the client left them out. */
function completeHeaders(message: Buffer, hostname: string): Buffer {
  const add: string[] = [];
  if (headerValues(message, 'date').length === 0) add.push(`Date: ${rfc5322Date(new Date())}`);
  if (headerValues(message, 'message-id').length === 0) add.push(`Message-ID: <${Date.now().toString(36)}.${randomBytes(8).toString('hex')}@${hostname}>`);
  return add.length ? Buffer.concat([Buffer.from(add.join('\r\n') + '\r\n'), message]) : message;
}

function hasEightBit(message: Buffer): boolean {
  for (const byte of message) if (byte > 0x7f) return true;
  return false;
}
