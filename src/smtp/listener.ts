// One SMTP listener on smtp-server, shared by the MX (inbound.ts) and submission
// (submission.ts). smtp-server runs the protocol; this class supplies what both need: TLS
// mode, connection caps per address, the transaction's recipient list, the DATA hand-off with
// errors mapped to SMTP replies, one logger per session (its `cid` and `peer` on every line),
// and a graceful close: clients between transactions get 421 at once, transactions in DATA
// get the grace period and are then aborted with 421.
// The policy (who may send what to whom, where the message goes) is the caller's.
import type { Socket } from 'node:net';
import { SMTPServer } from 'smtp-server';
import type { SMTPServerAddress, SMTPServerAuthentication, SMTPServerDataStream, SMTPServerOptions, SMTPServerSession } from 'smtp-server';
import type { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { HearthError, errText, isStorageFault } from '../core/errors.ts';
import { ConnectionCounter } from '../core/limits.ts';
import { newConnectionId } from '../core/log.ts';
import type { Logger } from '../core/log.ts';
import { plainIp } from './client-address.ts';
import { DataError } from './data-guard.ts';
import { allowOwnEnhancedCodes, smtpError } from './replies.ts';

export type MailboxRef = { user: string; domain: string };

/** The recipients accepted so far in the current transaction, as the policy recorded them. */
export type Transaction<R> = { rcpts: R[] };

/**
 * smtp-server's session plus the session's logger: a child carrying `cid` (the session id,
 * also in our Received: header) and `peer`. Everything that logs for the session uses it.
 */
export type SmtpSession = SMTPServerSession & { log: Logger };

export type SmtpPolicy<R> = {
  /** Checks the credentials of AUTH; return what identifies the user, or null. Only for submission. */
  authenticate?(username: string, password: string, session: SmtpSession): Promise<unknown | null>;
  /** Throw an smtpError to refuse the sender. */
  mailFrom(address: string, session: SmtpSession): void | Promise<void>;
  /** Throw an smtpError to refuse; otherwise return what the transaction should remember. */
  rcptTo(address: string, session: SmtpSession, tx: Transaction<R>): R | Promise<R>;
  /**
   * Take the message durably; resolves with the 250 text. `signal` aborts when shutdown's
   * grace period is over: stop, and leave nothing stored (the store's `signal` does that); a
   * message already made durable resolves as usual, and its client gets the 250.
   */
  receive(stream: SMTPServerDataStream, session: SmtpSession, tx: Transaction<R>, signal: AbortSignal): Promise<string>;
};

/** What a client in a transaction is told when shutdown cuts it short, and one between transactions. */
const SHUTDOWN_ABORT = '4.3.2 Server shutting down: message not accepted, please try again later';
const SHUTDOWN_IDLE = '4.3.2 Server shutting down, please try again later';

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

/** `hearthCounted`: holds a per-address slot; `hearthClosed`: the connection is gone (onClose ran). */
type Counted = SMTPServerSession & { hearthCounted?: boolean; hearthClosed?: boolean };

/** The session's logger; set when smtp-server creates the connection (see the constructor). */
export function sessionOf(session: SMTPServerSession): SmtpSession {
  return session as SmtpSession;
}

/** Why a message stream ends early when the client goes away (smtp-server, node:stream, the socket). */
const CLIENT_GONE = new Set(['ECONNECTION', 'ERR_STREAM_PREMATURE_CLOSE', 'ECONNRESET', 'EPIPE']);

/**
 * A DATA transaction running now: its delivery, and how to cut it short at shutdown. `stream`
 * tells whether the message is in full (then the policy may be past the point of no return,
 * and only its outcome can say 250 or 421); `cut` answers 421 at once to one still arriving.
 */
type Delivery = { abort: AbortController; work: Promise<unknown>; stream: SMTPServerDataStream; cut: (reason: unknown) => void };

/**
 * How long smtp-server's own close timer waits past the grace period before it answers 421 to
 * whatever is left: the time a transaction aborted with its message in full has to settle
 * (a store past its last abort check finishes its links and fsyncs; the policy's answer wins).
 */
const SHUTDOWN_SETTLE_MS = 10_000;

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
  /** Transactions in DATA now, by session id: shutdown gives them the grace period. */
  readonly #inData = new Map<string, Delivery>();
  /** Connection errors already logged with their session's id. */
  readonly #logged = new WeakSet<Error>();
  #closing = false;
  #closed: Promise<void> | undefined;
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
      closeTimeout: opts.closeTimeoutMs + SHUTDOWN_SETTLE_MS,
      logger: false,
      onConnect: (session, cb) => this.#onConnect(session, cb),
      onAuth: (auth, session, cb) => void this.#onAuth(auth, session, cb),
      onMailFrom: (address, session, cb) => void this.#run(cb, session, () => this.#onMailFrom(address, session)),
      onRcptTo: (address, session, cb) => void this.#run(cb, session, () => this.#onRcptTo(address, session)),
      onData: (stream, session, cb) => this.#onData(stream, session, cb),
      onClose: (session) => this.#onClose(session),
    };
    if (!opts.key) delete serverOptions.key;
    if (!opts.cert) delete serverOptions.cert;
    this.server = new SMTPServer(serverOptions);
    // Replies are single small writes that the client waits for: never hold them for Nagle.
    this.server.server.on(opts.tls === 'implicit' ? 'secureConnection' : 'connection', (socket: Socket) => socket.setNoDelay(true));
    // Where smtp-server creates a connection, its session gets its logger. Our id replaces
    // smtp-server's, so log lines, the Received: header and POP3/IMAP ids look alike.
    const connect = this.server.connect.bind(this.server);
    this.server.connect = (socket, socketOptions) => {
      const id = newConnectionId();
      connect(socket, { ...socketOptions, id });
      const conn = lastOf(this.server.connections);
      if (conn?.id !== id) return;
      const log = this.#log.child({ cid: id, peer: plainIp(conn.remoteAddress) });
      (conn.session as SmtpSession).log = log;
      // Before smtp-server's own listener, which passes the error on to the server's 'error'.
      conn.prependListener('error', (err: Error) => {
        this.#logged.add(err);
        log.warn({ err: err.message, code: (err as NodeJS.ErrnoException).code }, 'smtp connection error');
      });
    };
    this.server.on('error', (err) => {
      if (!this.#logged.has(err)) this.#log.warn({ err: err.message }, 'smtp server error');
    });
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

  /**
   * Stop accepting. Clients between transactions get 421 and are let go at once; transactions
   * in DATA have closeTimeoutMs to finish, then are aborted: one still receiving its message
   * gets 421 at once (nothing stored); one with its message in full gets what its policy makes
   * of the abort, 421 if the store rolled back, 250 (then 421) if the message was already
   * durable. Resolves once every delivery has settled.
   */
  close(): Promise<void> {
    this.#closed ??= this.#shutdown();
    return this.#closed;
  }

  async #shutdown(): Promise<void> {
    this.#closing = true;
    // smtp-server's own close timer runs SHUTDOWN_SETTLE_MS longer than this grace timer: only
    // a transaction that is stuck past its abort hears its generic 421.
    let graceTimer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<void>((resolve) => (graceTimer = setTimeout(resolve, this.#opts.closeTimeoutMs)));
    // smtp-server answers 421 to every command from now on; it resolves when all sockets are
    // gone, or at its own close timeout.
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const conn of [...this.server.connections]) if (!this.#inData.has(conn.id)) this.#goAway(conn, SHUTDOWN_IDLE);
    const settled = () => Promise.allSettled([...this.#inData.values()].map((d) => d.work));
    if (this.#inData.size > 0) {
      this.#log.info({ transactions: this.#inData.size, graceMs: this.#opts.closeTimeoutMs }, 'shutdown: waiting for transactions in DATA');
      await Promise.race([settled(), graceOver]);
    }
    clearTimeout(graceTimer);
    if (this.#inData.size > 0) {
      this.#log.info({ transactions: this.#inData.size }, 'shutdown: grace period over, aborting transactions in DATA');
    }
    const remaining = settled();
    for (const [id, d] of this.#inData) {
      const reason = new HearthError('SMTP_SHUTDOWN', 'server shutting down');
      d.abort.abort(reason);
      // The message is in full: the policy may already have made it durable (the store past
      // its last abort check), so its outcome decides between 250 and 421 (#onData).
      if (d.stream.writableEnded) continue;
      // Still arriving: nothing can be stored yet. End the stream here, so that no policy (one
      // that ignores the signal included) can ever see it complete, and say 421 at once:
      // smtp-server replies to DATA only after the client's final dot.
      d.cut(reason);
      d.stream.destroy(d.stream.listenerCount('error') > 0 ? reason : undefined);
      this.#goAwayById(id, SHUTDOWN_ABORT);
    }
    for (const conn of [...this.server.connections]) if (!this.#inData.has(conn.id)) this.#goAway(conn, SHUTDOWN_IDLE);
    await remaining;
    await closed;
  }

  /** Say 421 and close (smtp-server closes the connection after any 421). */
  #goAway(conn: SMTPConnection, text: string): void {
    const session = conn.session as Partial<SmtpSession>;
    session.log?.debug('shutdown: closing the connection');
    conn.send(421, text);
  }

  async #run(cb: (err?: Error | null) => void, session: SMTPServerSession, fn: () => void | Promise<void>): Promise<void> {
    try {
      await fn();
      cb();
    } catch (err) {
      cb(this.#toSmtpError(err, session));
    }
  }

  #onConnect(session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const ip = session.remoteAddress;
    const log = sessionOf(session).log;
    // A slow check before this one (the MX's DNSBL) may finish after the client left: onClose
    // has run already and would never give the slot back.
    if ((session as Counted).hearthClosed) return cb(smtpError(421, '4.4.2 Connection closed'));
    if (!this.#perIp.acquire(ip)) {
      log.warn({ limit: this.#opts.connectionsPerIp }, 'too many connections from one address');
      (session as Counted).hearthCounted = false;
      return cb(smtpError(421, '4.7.0 Too many connections from your address, try again later'));
    }
    (session as Counted).hearthCounted = true;
    log.debug('smtp connect');
    cb();
  }

  #onClose(session: SMTPServerSession): void {
    (session as Counted).hearthClosed = true;
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
      const user = await policy.authenticate(auth.username ?? '', auth.password ?? '', sessionOf(session));
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
    return this.#opts.policy.mailFrom(address.address, sessionOf(session));
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
    tx.rcpts.push(await this.#opts.policy.rcptTo(address.address, sessionOf(session), tx));
  }

  #onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string) => void): void {
    const tx = this.#tx.get(session.id);
    this.#tx.delete(session.id);
    const abort = new AbortController();
    const received = (async () => {
      if (!tx || tx.rcpts.length === 0) throw smtpError(503, '5.5.1 No valid recipients');
      return this.#opts.policy.receive(stream, sessionOf(session), tx, abort.signal);
    })();
    // At shutdown the reply cannot wait for a policy that is still reading a slow client: the
    // cut answers at once; the policy stops (and rolls back) when its stream or signal ends.
    let cut: (reason: unknown) => void = noop;
    const cutShort = new Promise<never>((_, reject) => (cut = reject));
    // What shutdown waits for: the policy may still be unwinding after an abort (the store's rollback).
    this.#inData.set(session.id, { abort, work: received.then(noop, noop), stream, cut });
    void Promise.race([received, cutShort]).then(
      (reply) => {
        this.#inData.delete(session.id);
        this.onReceived?.();
        cb(null, reply);
        // Shutting down: the transaction had its 250 (sent once the stream ends); the session ends here.
        if (this.#closing) {
          if (stream.readableEnded) this.#goAwayById(session.id, SHUTDOWN_IDLE);
          else stream.once('end', () => setImmediate(() => this.#goAwayById(session.id, SHUTDOWN_IDLE)));
        }
      },
      (err: unknown) => {
        this.#inData.delete(session.id);
        // Read (and discard) whatever the client still sends, so the reply comes after its final dot.
        if (!stream.readableEnded && !abort.signal.aborted) stream.resume();
        cb(this.#toSmtpError(abort.signal.aborted ? abort.signal.reason : err, session));
        // Aborted by shutdown: smtp-server may still wait for the end of a stream nobody reads.
        if (abort.signal.aborted) this.#goAwayById(session.id, SHUTDOWN_ABORT);
      },
    );
  }

  #goAwayById(id: string, text: string): void {
    for (const conn of this.server.connections) if (conn.id === id) return this.#goAway(conn, text);
  }

  #toSmtpError(err: unknown, session: SMTPServerSession | undefined): Error {
    const log = (session && sessionOf(session).log) || this.#log;
    const cause = (err as { cause?: unknown }).cause;
    const data = err instanceof DataError ? err : cause instanceof DataError ? cause : undefined;
    if (data) {
      log.info({ code: data.code }, data.message);
      return smtpError(data.responseCode, data.message);
    }
    if (typeof (err as { responseCode?: unknown }).responseCode === 'number') return err as Error;
    if ((err as HearthError).code === 'SMTP_SHUTDOWN' || (cause as HearthError | undefined)?.code === 'SMTP_SHUTDOWN') {
      // Expected: the grace period is over. The store rolls the message back.
      log.info('transaction aborted by shutdown; nothing stored');
      return smtpError(421, SHUTDOWN_ABORT);
    }
    if (CLIENT_GONE.has((cause as NodeJS.ErrnoException | undefined)?.code ?? '')) {
      // The message stream ended early (the client went away); the store removed the partial
      // file, and nobody is left to read this reply.
      log.info({ why: errText(cause) }, 'client disconnected during DATA; nothing stored');
      return smtpError(451, '4.4.2 Connection lost during DATA');
    }
    if (isStorageFault(err) || isStorageFault(cause)) {
      log.error({ err }, 'storage failure: message not accepted');
      return smtpError(451, '4.3.0 Temporary storage failure here; please try again later');
    }
    log.error({ err }, 'delivery failed');
    return smtpError(451, '4.3.0 Local error in processing; please try again later');
  }
}

function noop(): void {}

/** The newest member of a Set (insertion order); O(n), called once per connection. */
function lastOf<T>(set: Set<T>): T | undefined {
  let last: T | undefined;
  for (const item of set) last = item;
  return last;
}
