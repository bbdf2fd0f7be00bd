// One SMTP listener on smtp-server, shared by the MX (inbound.ts) and submission
// (submission.ts). smtp-server runs the protocol; this class supplies what both need: TLS
// mode, connection caps per address, the transaction's recipient list, the DATA hand-off with
// errors mapped to SMTP replies, and a graceful close that waits for deliveries in flight.
// The policy (who may send what to whom, where the message goes) is the caller's.
import { SMTPServer } from 'smtp-server';
import type { SMTPServerAddress, SMTPServerAuthentication, SMTPServerDataStream, SMTPServerOptions, SMTPServerSession } from 'smtp-server';
import { isStorageFault } from '../core/errors.ts';
import { ConnectionCounter } from '../core/limits.ts';
import type { Logger } from '../core/log.ts';
import { DataError } from './data-guard.ts';
import { allowOwnEnhancedCodes, smtpError } from './replies.ts';

export type MailboxRef = { user: string; domain: string };

/** The recipients accepted so far in the current transaction, as the policy recorded them. */
export type Transaction<R> = { rcpts: R[] };

export type SmtpPolicy<R> = {
  /** Checks the credentials of AUTH; return what identifies the user, or null. Only for submission. */
  authenticate?(username: string, password: string, session: SMTPServerSession): Promise<unknown | null>;
  /** Throw an smtpError to refuse the sender. */
  mailFrom(address: string, session: SMTPServerSession): void | Promise<void>;
  /** Throw an smtpError to refuse; otherwise return what the transaction should remember. */
  rcptTo(address: string, session: SMTPServerSession, tx: Transaction<R>): R | Promise<R>;
  /** Take the message durably; resolves with the 250 text. */
  receive(stream: SMTPServerDataStream, session: SMTPServerSession, tx: Transaction<R>): Promise<string>;
};

export type SmtpListenerOptions<R> = {
  hostname: string;
  log: Logger;
  policy: SmtpPolicy<R>;
  /** 'plain' offers no TLS, 'starttls' offers STARTTLS, 'implicit' speaks TLS from the first byte. */
  tls: 'plain' | 'starttls' | 'implicit';
  key?: Buffer | string;
  cert?: Buffer | string;
  /** With a policy that authenticates: may AUTH run without TLS, and from where. */
  plaintextAuth?: 'never' | 'loopback' | 'always';
  maxMessageBytes: number;
  maxRecipients: number;
  connectionsPerIp: number;
  maxConnections: number;
  idleTimeoutMs: number;
  /** How long in-flight transactions may run after close() before they get 421. */
  closeTimeoutMs: number;
  /** The domain a bare `RCPT TO:<postmaster>` belongs to; RFC 5321 4.5.1 requires accepting it. */
  postmasterDomain?: () => string | undefined;
};

type Counted = SMTPServerSession & { hearthCounted?: boolean };

export function splitAddress(address: string): { local: string; domain: string } | null {
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) return null;
  return { local: address.slice(0, at), domain: address.slice(at + 1).toLowerCase() };
}

export function isLoopback(address: string): boolean {
  const ip = address.startsWith('::ffff:') ? address.slice(7) : address;
  return ip === '::1' || ip.startsWith('127.');
}

export class SmtpListener<R> {
  readonly server: SMTPServer;
  readonly #opts: SmtpListenerOptions<R>;
  readonly #log: Logger;
  readonly #perIp: ConnectionCounter;
  readonly #tx = new Map<string, Transaction<R>>();
  /** Deliveries running now, so shutdown can wait for them. */
  readonly #inFlight = new Set<Promise<unknown>>();
  /** Called after each message is accepted (250 to DATA); ops metrics (issue 9) set it. */
  onReceived: (() => void) | undefined;

  constructor(opts: SmtpListenerOptions<R>) {
    this.#opts = opts;
    this.#log = opts.log;
    this.#perIp = new ConnectionCounter(opts.connectionsPerIp);
    allowOwnEnhancedCodes();
    const submission = Boolean(opts.policy.authenticate);
    const disabled: string[] = [];
    if (!submission) disabled.push('AUTH');
    if (opts.tls === 'plain') disabled.push('STARTTLS');
    const serverOptions: SMTPServerOptions = {
      name: opts.hostname,
      banner: 'hearth',
      secure: opts.tls === 'implicit',
      key: opts.key,
      cert: opts.cert,
      minVersion: 'TLSv1.2',
      disabledCommands: disabled,
      authOptional: !submission,
      authMethods: ['PLAIN', 'LOGIN'],
      // smtp-server refuses AUTH before STARTTLS unless this is set; the real decision (by
      // client address) is made in onAuth.
      allowInsecureAuth: submission && (opts.plaintextAuth ?? 'never') !== 'never',
      size: opts.maxMessageBytes,
      maxRecipients: opts.maxRecipients,
      maxClients: opts.maxConnections,
      hideENHANCEDSTATUSCODES: false,
      hideSMTPUTF8: false,
      hideDSN: !submission,
      disableReverseLookup: true,
      socketTimeout: opts.idleTimeoutMs,
      closeTimeout: opts.closeTimeoutMs,
      logger: false,
      onConnect: (session, cb) => this.#onConnect(session, cb),
      onAuth: (auth, session, cb) => void this.#onAuth(auth, session, cb),
      onMailFrom: (address, session, cb) => void this.#run(cb, () => this.#onMailFrom(address, session)),
      onRcptTo: (address, session, cb) => void this.#run(cb, () => this.#onRcptTo(address, session)),
      onData: (stream, session, cb) => this.#onData(stream, session, cb),
      onClose: (session) => this.#onClose(session),
    };
    if (!opts.key) delete serverOptions.key;
    if (!opts.cert) delete serverOptions.cert;
    this.server = new SMTPServer(serverOptions);
    // Replies are single small writes that the client waits for: never hold them for Nagle.
    this.server.server.on(opts.tls === 'implicit' ? 'secureConnection' : 'connection', (socket: import('node:net').Socket) => socket.setNoDelay(true));
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

  async #run(cb: (err?: Error | null) => void, fn: () => void | Promise<void>): Promise<void> {
    try {
      await fn();
      cb();
    } catch (err) {
      cb(this.#toSmtpError(err, undefined));
    }
  }

  #onConnect(session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const ip = session.remoteAddress;
    if (!this.#perIp.acquire(ip)) {
      this.#log.warn({ cid: session.id, peer: ip, limit: this.#opts.connectionsPerIp }, 'too many connections from one address');
      (session as Counted).hearthCounted = false;
      return cb(smtpError(421, '4.7.0 Too many connections from your address, try again later'));
    }
    (session as Counted).hearthCounted = true;
    this.#log.debug({ cid: session.id, peer: ip }, 'smtp connect');
    cb();
  }

  #onClose(session: SMTPServerSession): void {
    if ((session as Counted).hearthCounted) this.#perIp.release(session.remoteAddress);
    this.#tx.delete(session.id);
  }

  async #onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, cb: (err: Error | null | undefined, response?: { user?: unknown }) => void): Promise<void> {
    const policy = this.#opts.policy;
    if (!policy.authenticate) return cb(smtpError(502, '5.5.1 AUTH is not offered here'));
    const plaintext = this.#opts.plaintextAuth ?? 'never';
    if (!session.secure && !(plaintext === 'always' || (plaintext === 'loopback' && isLoopback(session.remoteAddress)))) {
      return cb(smtpError(538, '5.7.11 Encryption required: send STARTTLS first, or use port 465'));
    }
    try {
      const user = await policy.authenticate(auth.username ?? '', auth.password ?? '', session);
      if (!user) return cb(null, { user: undefined });
      cb(null, { user });
    } catch (err) {
      cb(this.#toSmtpError(err, session));
    }
  }

  #onMailFrom(address: SMTPServerAddress, session: SMTPServerSession): void | Promise<void> {
    // A new transaction starts: forget the recipients of the last one.
    this.#tx.set(session.id, { rcpts: [] });
    if (address.address !== '' && !splitAddress(address.address)) {
      throw smtpError(553, '5.1.7 Sender address must be user@domain or <>');
    }
    return this.#opts.policy.mailFrom(address.address, session);
  }

  async #onRcptTo(address: SMTPServerAddress, session: SMTPServerSession): Promise<void> {
    const postmasterDomain = /^postmaster$/i.test(address.address) ? this.#opts.postmasterDomain?.() : undefined;
    if (postmasterDomain) address = { ...address, address: `postmaster@${postmasterDomain}` };
    if (!splitAddress(address.address)) throw smtpError(553, '5.1.3 Recipient address must be user@domain');
    let tx = this.#tx.get(session.id);
    if (!tx) {
      tx = { rcpts: [] };
      this.#tx.set(session.id, tx);
    }
    tx.rcpts.push(await this.#opts.policy.rcptTo(address.address, session, tx));
  }

  #onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string) => void): void {
    const tx = this.#tx.get(session.id);
    this.#tx.delete(session.id);
    const work = (async () => {
      if (!tx || tx.rcpts.length === 0) throw smtpError(503, '5.5.1 No valid recipients');
      return this.#opts.policy.receive(stream, session, tx);
    })().then(
      (reply) => (this.onReceived?.(), cb(null, reply)),
      (err: unknown) => {
        // Read (and discard) whatever the client still sends, so the reply comes after its final dot.
        if (!stream.readableEnded) stream.resume();
        cb(this.#toSmtpError(err, session));
      },
    );
    this.#inFlight.add(work);
    void work.finally(() => this.#inFlight.delete(work));
  }

  #toSmtpError(err: unknown, session: SMTPServerSession | undefined): Error {
    const log = this.#log;
    const ctx = { cid: session?.id, peer: session?.remoteAddress };
    const cause = (err as { cause?: unknown }).cause;
    const data = err instanceof DataError ? err : cause instanceof DataError ? cause : undefined;
    if (data) {
      log.info({ ...ctx, code: data.code }, data.message);
      return smtpError(data.responseCode, data.message);
    }
    if (typeof (err as { responseCode?: unknown }).responseCode === 'number') return err as Error;
    if ((cause as NodeJS.ErrnoException | undefined)?.code === 'ERR_STREAM_PREMATURE_CLOSE') {
      // Nobody is left to read a reply; the store already removed the partial file.
      log.info(ctx, 'client disconnected during DATA; nothing stored');
      return smtpError(451, '4.4.2 Connection lost during DATA');
    }
    if (isStorageFault(err) || isStorageFault(cause)) {
      log.error({ ...ctx, err }, 'storage failure: message not accepted');
      return smtpError(451, '4.3.0 Temporary storage failure here; please try again later');
    }
    log.error({ ...ctx, err }, 'delivery failed');
    return smtpError(451, '4.3.0 Local error in processing; please try again later');
  }
}
