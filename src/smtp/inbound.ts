// Inbound SMTP (port 25): mail from the internet for the local domains. smtp-server runs the
// protocol; this module supplies the policy (who may send to whom), the trace headers, the
// smuggling and size guards, and the durable hand-off to the store. A 250 after DATA is sent
// only once every recipient's copy is on disk (DESIGN invariant 1).
import type { Readable } from 'node:stream';
import { SMTPServer } from 'smtp-server';
import type { SMTPServerAddress, SMTPServerDataStream, SMTPServerOptions, SMTPServerSession } from 'smtp-server';
import { isStorageFault } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { ConnectionCounter } from '../core/limits.ts';
import { DataError, DataGuard } from './data-guard.ts';
import { allowOwnEnhancedCodes, smtpError } from './replies.ts';

export type MailboxRef = { user: string; domain: string };
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

export type InboundOptions = {
  hostname: string;
  log: Logger;
  directory: RecipientDirectory;
  store: MessageStore;
  /** 'plain' offers no TLS, 'starttls' offers STARTTLS, 'implicit' speaks TLS from the first byte. */
  tls: 'plain' | 'starttls' | 'implicit';
  key?: Buffer | string;
  cert?: Buffer | string;
  maxMessageBytes: number;
  maxRecipients: number;
  connectionsPerIp: number;
  maxConnections: number;
  idleTimeoutMs: number;
  /** How long in-flight transactions may run after close() before they get 421. */
  closeTimeoutMs: number;
  /** Told after each durable delivery, so open mailbox views can show the new mail at once. */
  onDelivered?: (boxes: MailboxRef[]) => void;
};

/** Recipients accepted for this transaction, keyed by session id. */
type Accepted = { targets: Map<string, MailboxRef>; rcpts: string[] };

export function splitAddress(address: string): { local: string; domain: string } | null {
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) return null;
  return { local: address.slice(0, at), domain: address.slice(at + 1).toLowerCase() };
}

export class InboundSmtp {
  readonly server: SMTPServer;
  readonly #opts: InboundOptions;
  readonly #log: Logger;
  readonly #perIp: ConnectionCounter;
  readonly #accepted = new Map<string, Accepted>();
  /** Deliveries running now, so shutdown can wait for them. */
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(opts: InboundOptions) {
    this.#opts = opts;
    this.#log = opts.log;
    this.#perIp = new ConnectionCounter(opts.connectionsPerIp);
    allowOwnEnhancedCodes();
    const serverOptions: SMTPServerOptions = {
      name: opts.hostname,
      banner: 'hearth',
      secure: opts.tls === 'implicit',
      key: opts.key,
      cert: opts.cert,
      minVersion: 'TLSv1.2',
      disabledCommands: opts.tls === 'plain' ? ['AUTH', 'STARTTLS'] : ['AUTH'],
      authOptional: true,
      size: opts.maxMessageBytes,
      maxRecipients: opts.maxRecipients,
      maxClients: opts.maxConnections,
      hideENHANCEDSTATUSCODES: false,
      hideSMTPUTF8: false,
      disableReverseLookup: true,
      socketTimeout: opts.idleTimeoutMs,
      closeTimeout: opts.closeTimeoutMs,
      logger: false,
      onConnect: (session, cb) => this.#onConnect(session, cb),
      onMailFrom: (address, session, cb) => this.#onMailFrom(address, session, cb),
      onRcptTo: (address, session, cb) => this.#onRcptTo(address, session, cb),
      onData: (stream, session, cb) => this.#onData(stream, session, cb),
      onClose: (session) => this.#onClose(session),
    };
    if (!opts.key) delete serverOptions.key;
    if (!opts.cert) delete serverOptions.cert;
    this.server = new SMTPServer(serverOptions);
    this.server.on('error', (err) => this.#log.warn({ err: err.message }, 'smtp connection error'));
  }

  listen(port: number, host: string): Promise<{ port: number; host: string }> {
    return new Promise((resolve, reject) => {
      this.server.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.server.off('error', reject);
        const addr = this.server.server.address();
        resolve(typeof addr === 'object' && addr ? { port: addr.port, host: addr.address } : { port, host });
      });
    });
  }

  /** Stop accepting; let transactions in flight finish (bounded by closeTimeoutMs). */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await Promise.allSettled([...this.#inFlight]);
  }

  #onConnect(session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const ip = session.remoteAddress;
    if (!this.#perIp.acquire(ip)) {
      this.#log.warn({ cid: session.id, peer: ip, limit: this.#opts.connectionsPerIp }, 'too many connections from one address');
      (session as SMTPServerSession & { hearthCounted?: boolean }).hearthCounted = false;
      return cb(smtpError(421, '4.7.0 Too many connections from your address, try again later'));
    }
    (session as SMTPServerSession & { hearthCounted?: boolean }).hearthCounted = true;
    this.#log.debug({ cid: session.id, peer: ip }, 'smtp connect');
    cb();
  }

  #onClose(session: SMTPServerSession): void {
    if ((session as SMTPServerSession & { hearthCounted?: boolean }).hearthCounted) this.#perIp.release(session.remoteAddress);
    this.#accepted.delete(session.id);
  }

  #onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    // A new transaction starts: forget the recipients of the last one.
    this.#accepted.set(session.id, { targets: new Map(), rcpts: [] });
    if (address.address !== '' && !splitAddress(address.address)) {
      return cb(smtpError(553, '5.1.7 Sender address must be user@domain or <>'));
    }
    cb();
  }

  #onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const parts = splitAddress(address.address);
    if (!parts) return cb(smtpError(553, '5.1.3 Recipient address must be user@domain'));
    const { directory } = this.#opts;
    if (!directory.isLocalDomain(parts.domain)) {
      // DESIGN invariant 2: never an open relay. Inbound port 25 takes mail for local domains only.
      this.#log.info({ cid: session.id, peer: session.remoteAddress, rcpt: address.address }, 'relay attempt refused');
      return cb(smtpError(554, `5.7.1 Relay access denied: ${parts.domain} is not a domain of this server`));
    }
    const resolution = directory.resolve(address.address);
    if (!resolution || resolution.local.length === 0) {
      if (resolution && resolution.remote.length > 0) {
        this.#log.warn({ cid: session.id, rcpt: address.address, remote: resolution.remote }, 'alias forwards only to remote addresses, and forwarding is not enabled yet');
        return cb(smtpError(550, '5.7.0 This address forwards elsewhere, which this server does not do yet'));
      }
      return cb(smtpError(550, `5.1.1 No such user here: <${address.address}>`));
    }
    if (resolution.remote.length > 0) {
      this.#log.warn({ cid: session.id, rcpt: address.address, remote: resolution.remote }, 'remote alias targets skipped: forwarding is not enabled yet');
    }
    let accepted = this.#accepted.get(session.id);
    if (!accepted) {
      accepted = { targets: new Map(), rcpts: [] };
      this.#accepted.set(session.id, accepted);
    }
    for (const box of resolution.local) accepted.targets.set(`${box.user}@${box.domain}`, box);
    accepted.rcpts.push(address.address);
    cb();
  }

  #onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string) => void): void {
    const accepted = this.#accepted.get(session.id);
    this.#accepted.delete(session.id);
    const work = this.#receive(stream, session, accepted).then(
      (reply) => cb(null, reply),
      (err: unknown) => {
        // Read (and discard) whatever the client still sends, so the reply comes after its final dot.
        if (!stream.readableEnded) stream.resume();
        cb(toSmtpError(err, this.#log, session));
      },
    );
    this.#inFlight.add(work);
    void work.finally(() => this.#inFlight.delete(work));
  }

  async #receive(stream: SMTPServerDataStream, session: SMTPServerSession, accepted: Accepted | undefined): Promise<string> {
    if (!accepted || accepted.targets.size === 0) throw smtpError(503, '5.5.1 No valid recipients');
    const targets = [...accepted.targets.values()];
    const sender = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const header = traceHeaders({
      hostname: this.#opts.hostname,
      session,
      sender,
      // RFC 5321 4.4: "for" and Delivered-To name a recipient only when there is one, since
      // all recipients share one stored file (hard links), as Dovecot's LMTP does.
      recipient: accepted.rcpts.length === 1 ? accepted.rcpts[0] : undefined,
      deliveredTo: targets.length === 1 ? `${targets[0].user}@${targets[0].domain}` : undefined,
    });
    const guard = new DataGuard(this.#opts.maxMessageBytes);
    const started = performance.now();
    await this.#opts.store.deliver(targets, guarded(stream, guard, Buffer.from(header, 'utf8')));
    const ms = Math.round(performance.now() - started);
    this.#opts.onDelivered?.(targets);
    this.#log.info({ cid: session.id, peer: session.remoteAddress, from: sender, rcpts: accepted.rcpts, bytes: guard.bytes, ms }, 'message delivered');
    return `2.6.0 Message accepted for delivery (${targets.length} mailbox${targets.length === 1 ? '' : 'es'})`;
  }
}

/** The message as the store should write it: trace headers, then DATA checked chunk by chunk. */
async function* guarded(stream: Readable, guard: DataGuard, header: Buffer): AsyncGenerator<Uint8Array> {
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

function toSmtpError(err: unknown, log: Logger, session: SMTPServerSession): Error {
  const cause = (err as { cause?: unknown }).cause;
  if (err instanceof DataError) {
    log.info({ cid: session.id, peer: session.remoteAddress, code: err.code }, err.message);
    return smtpError(err.responseCode, err.message);
  }
  if (cause instanceof DataError) {
    log.info({ cid: session.id, peer: session.remoteAddress, code: cause.code }, cause.message);
    return smtpError(cause.responseCode, cause.message);
  }
  if (typeof (err as { responseCode?: unknown }).responseCode === 'number') return err as Error;
  if ((cause as NodeJS.ErrnoException | undefined)?.code === 'ERR_STREAM_PREMATURE_CLOSE') {
    // Nobody is left to read a reply; the store already removed the partial file.
    log.info({ cid: session.id, peer: session.remoteAddress }, 'client disconnected during DATA; nothing stored');
    return smtpError(451, '4.4.2 Connection lost during DATA');
  }
  if (isStorageFault(err) || isStorageFault(cause)) {
    log.error({ cid: session.id, err }, 'storage failure: message not accepted');
    return smtpError(451, '4.3.0 Temporary storage failure here; please try again later');
  }
  log.error({ cid: session.id, err }, 'delivery failed');
  return smtpError(451, '4.3.0 Local error in processing; please try again later');
}
