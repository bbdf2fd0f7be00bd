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
import type { MailboxRef, SmtpListenerOptions, SmtpSession, Transaction } from './listener.ts';
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

export type PipelineOptions = {
  hostname: string;
  log: Logger;
  directory: RecipientDirectory;
  store: MessageStore;
  queue: OutboundEnqueue;
  /** Signs what leaves for other servers; mail from a domain without a key goes unsigned. */
  dkim?: { sign(message: Buffer, domain: string): Promise<string> };
  onDelivered?: (boxes: MailboxRef[]) => void;
};

export type Submission = {
  user: SubmissionUser;
  /** Envelope sender ('' for the null sender). */
  sender: string;
  recipients: Array<{ address: string; notify?: string[]; orcpt?: string }>;
  message: Buffer;
  /** Our Received: header for this hop (SMTP submission adds one; the webmail does not). */
  received?: string;
  dsn?: { ret?: 'FULL' | 'HDRS'; envid?: string };
  smtpUtf8?: boolean;
  eightBitMime?: boolean;
  /** Where to log the submission: the SMTP session's logger (with its `cid`); else the pipeline's. */
  log?: Logger;
};

/**
 * The one way mail from a user leaves hearth, for SMTP submission and the webmail alike:
 * checks that the sender and From: are the user's, completes Date/Message-ID, signs with
 * DKIM, stores local copies and queues the rest, all before it returns.
 */
export class SubmissionPipeline {
  readonly #opts: PipelineOptions;
  constructor(opts: PipelineOptions) {
    this.#opts = opts;
  }

  /** Does this address deliver to the user's mailbox (their address or an alias of theirs)? */
  owns(user: SubmissionUser, address: string): boolean {
    const parts = splitAddress(address);
    if (!parts || !this.#opts.directory.isLocalDomain(parts.domain)) return false;
    const r = this.#opts.directory.resolve(address);
    return Boolean(r?.local.some((b) => b.user === user.user && b.domain === user.domain));
  }

  checkSender(user: SubmissionUser, address: string): void {
    // The null sender is allowed: clients send read receipts and vacation replies with it.
    if (address !== '' && !this.owns(user, address)) {
      throw smtpError(553, `5.7.1 You may send only as your own addresses; <${address}> is not one of ${user.address}'s`);
    }
  }

  /**
   * Where a recipient's copies go: local mailboxes, and remote addresses for the queue (the
   * address itself for another domain, an alias's external targets for ours). Throws 550 for
   * an unknown local address.
   */
  route(address: string): { local: MailboxRef[]; remote: string[] } {
    const parts = splitAddress(address);
    if (!parts) throw smtpError(553, '5.1.3 Recipient address must be user@domain');
    if (!this.#opts.directory.isLocalDomain(parts.domain)) return { local: [], remote: [address] };
    const r = this.#opts.directory.resolve(address);
    if (!r || r.local.length + r.remote.length === 0) throw smtpError(550, `5.1.1 No such user here: <${address}>`);
    return { local: r.local, remote: r.remote };
  }

  async submit(s: Submission): Promise<{ queueId?: string; local: number; remote: number }> {
    this.checkSender(s.user, s.sender);
    const routed = s.recipients.map((r) => ({ ...r, ...this.route(r.address) }));
    const fromDomain = this.#checkFrom(s.user, s.message);
    const message = completeHeaders(s.message, this.#opts.hostname);
    const signature = this.#opts.dkim ? await this.#opts.dkim.sign(message, fromDomain) : '';
    const outgoing = Buffer.concat([Buffer.from((s.received ?? '') + signature, 'utf8'), message]);

    const local = uniqueMailboxes(routed.flatMap((r) => r.local));
    // An alias's external targets are queued like any remote recipient; DSN options stay with
    // the address the client named.
    const remote = [...new Map(routed.flatMap((r) => r.remote.map((address) => [address.toLowerCase(), { address, notify: r.notify, orcpt: r.orcpt }] as const))).values()];
    let queueId: string | undefined;
    if (remote.length > 0) {
      queueId = await this.#opts.queue.enqueue(
        {
          from: s.sender,
          recipients: remote.map((r) => ({ address: r.address, notify: r.notify, orcpt: r.orcpt })),
          dsn: s.dsn,
          needsSmtpUtf8: Boolean(s.smtpUtf8) || routed.some((r) => /[^\x00-\x7f]/.test(r.address)) || /[^\x00-\x7f]/.test(s.sender),
          eightBit: Boolean(s.eightBitMime) || hasEightBit(outgoing),
        },
        outgoing,
      );
    }
    if (local.length > 0) {
      const localCopy = Buffer.concat([Buffer.from(`Return-Path: <${s.sender}>\r\n`), outgoing]);
      await this.#opts.store.deliver(local, (async function* () {
        yield localCopy;
      })());
      this.#opts.onDelivered?.(local);
    }
    (s.log ?? this.#opts.log).info({ user: s.user.address, from: s.sender, local: local.length, remote: remote.map((r) => r.address), queueId, bytes: outgoing.length }, 'message submitted');
    return { queueId, local: local.length, remote: remote.length };
  }

  /** Refuses a From: that is not the user's; returns its domain (the DKIM signing domain). */
  #checkFrom(user: SubmissionUser, message: Buffer): string {
    const from = headerValues(message, 'from');
    if (from.length !== 1) throw new DataError('DATA_BAD_HEADER', 550, '5.6.0 A message needs exactly one From: header (RFC 5322 3.6)');
    const addresses = flattenAddresses(addressparser(from[0]));
    if (addresses.length === 0) throw new DataError('DATA_BAD_HEADER', 550, '5.6.0 The From: header has no address');
    const foreign = addresses.filter((a) => !this.owns(user, a));
    if (foreign.length > 0) {
      throw new DataError('DATA_BAD_HEADER', 553, `5.7.1 You may send only as your own addresses; From: <${foreign[0]}> is not one of ${user.address}'s`);
    }
    return splitAddress(addresses[0])!.domain;
  }
}

export type SubmissionOptions = Omit<SmtpListenerOptions<SubmittedRcpt>, 'policy'> & {
  directory: RecipientDirectory & { authenticate(address: string, password: string): Promise<{ user: string; domain: string } | null> };
  pipeline: SubmissionPipeline;
  limiter: LoginLimiter;
  /** Local domains, for qualifying a bare user name at login when there is only one. */
  domains: () => string[];
};

type SubmittedRcpt = { address: string; notify?: string[]; orcpt?: string };

export class SubmissionSmtp extends SmtpListener<SubmittedRcpt> {
  constructor(opts: SubmissionOptions) {
    super({ ...opts, policy: new SubmissionPolicy(opts) });
  }
}

function userOf(session: SmtpSession): SubmissionUser {
  return session.user as SubmissionUser;
}

/** Submission's policy; it logs through each session's own logger (`session.log`). */
class SubmissionPolicy {
  readonly #opts: SubmissionOptions;
  constructor(opts: SubmissionOptions) {
    this.#opts = opts;
  }

  async authenticate(username: string, password: string, session: SmtpSession): Promise<SubmissionUser | null> {
    const peer = session.remoteAddress;
    const domains = this.#opts.domains();
    const address = username.includes('@') || domains.length !== 1 ? username : `${username}@${domains[0]}`;
    const verdict = this.#opts.limiter.check(peer, address);
    if (!verdict.allowed) {
      session.log.warn({ user: address, reason: verdict.reason }, 'login refused: locked out after repeated failures');
      throw smtpError(454, `4.7.0 Too many failed logins; try again in ${Math.ceil(verdict.retryAfterMs / 60_000)} minutes`);
    }
    const box = await this.#opts.directory.authenticate(address, password);
    if (!box) {
      const delay = this.#opts.limiter.failure(peer, address);
      session.log.info({ user: address, delayMs: delay }, 'login failed');
      await sleep(delay);
      return null;
    }
    this.#opts.limiter.success(peer);
    session.log.info({ user: `${box.user}@${box.domain}` }, 'logged in');
    return { user: box.user, domain: box.domain, address: `${box.user}@${box.domain}` };
  }

  mailFrom(address: string, session: SmtpSession): void {
    try {
      this.#opts.pipeline.checkSender(userOf(session), address);
    } catch (err) {
      session.log.warn({ user: userOf(session).address, from: address }, 'sender address refused');
      throw err;
    }
  }

  rcptTo(address: string, session: SmtpSession): SubmittedRcpt {
    this.#opts.pipeline.route(address);
    const rcpt = session.envelope.rcptTo.find((r) => r.address === address);
    return { address, notify: rcpt?.dsn?.notify, orcpt: rcpt?.dsn?.orcpt };
  }

  async receive(stream: SMTPServerDataStream, session: SmtpSession, tx: Transaction<SubmittedRcpt>): Promise<string> {
    const sender = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const guard = new DataGuard(this.#opts.maxMessageBytes);
    // Read the whole message (bounded by the size limit): the From: check must pass before
    // anything is stored, and local copies and the queue both need it.
    const chunks: Buffer[] = [];
    for await (const chunk of guarded(stream, guard, Buffer.alloc(0))) chunks.push(Buffer.from(chunk));
    const envelope = session.envelope;
    const result = await this.#opts.pipeline.submit({
      user: userOf(session),
      sender,
      recipients: tx.rcpts,
      message: Buffer.concat(chunks),
      received: traceHeaders({ hostname: this.#opts.hostname, session, sender }).replace(/^Return-Path: [^\r]*\r\n/, ''),
      dsn: envelope.dsn ? { ret: (envelope.dsn.ret ?? undefined) as 'FULL' | 'HDRS' | undefined, envid: envelope.dsn.envid ?? undefined } : undefined,
      smtpUtf8: Boolean(envelope.smtpUtf8),
      eightBitMime: envelope.bodyType === '8bitmime',
      log: session.log,
    });
    return `2.0.0 Message accepted${result.queueId ? ` (queued as ${result.queueId})` : ''}`;
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
  // A native scan: latin1 maps each byte to one char, so a char >= 0x80 is a byte >= 0x80.
  return /[\x80-\xff]/.test(message.toString('latin1'));
}
