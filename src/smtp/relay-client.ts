// The relay client is in charge of one outbound SMTP session (RFC 5321, with STARTTLS RFC
// 3207, AUTH RFC 4954, SIZE RFC 1870, 8BITMIME RFC 6152, SMTPUTF8 RFC 6531, DSN RFC 3461,
// ENHANCEDSTATUSCODES RFC 2034/3463, PIPELINING RFC 2920): one connection, several messages in
// sequence, and a verdict for every recipient. With `reuse` a sound connection waits in IDLE
// after its messages and send() hands it more, each batch starting with RSET (relay-pool.ts
// keeps them). It knows nothing of the queue: the queue's `deliver(job)` (wired in main.ts)
// calls `relay()` or the pool and records the results.
//
// It is an explicit state machine. Before each command we enter the state whose reply we then
// wait for, and the reply is dispatched to `do_${state}_${code}` (do_RCPT_550), then the reply
// class (`do_RCPT_5xx`), then `do_${state}_default`, then `do_default`. Every state has a timer
// (RFC 5321 4.5.3.2). Remote misbehaviour never throws: it becomes a `deferred` or `failed`
// result whose text names the failure code (RELAY_*) and the state.
//
// PIPELINING only changes when commands are written, not how replies are read: to a server
// that offers it, MAIL FROM, every RCPT TO and DATA go out in one write (with the RSET before
// them on a reused connection), and the replies still walk MAIL -> RCPT (one per recipient, in
// order) -> DATA, each under its own timer. The body is never written before the 354.
import net from 'node:net';
import tls from 'node:tls';
import { tlsHandshake } from '../core/connection.ts';
import { HearthError } from '../core/errors.ts';
import { DotStuffer, LineReader, SocketWriter } from '../core/lines.ts';
import { named, newConnectionId } from '../core/log.ts';
import type { Logger } from '../core/log.ts';
import { REPLY_CODE_PATTERN, StateMachine } from '../core/state-machine.ts';
import type { NoStrayHandlers, ReplyClass } from '../core/state-machine.ts';
import { buildReply, isSafeAddress, mailFromCommand, NO_CAPABILITIES, parseEhlo, parseReplyLine, rcptToCommand } from './relay-protocol.ts';
import type { EhloCapabilities, ReplyLine, SmtpReply } from './relay-protocol.ts';

// ---- the contract ------------------------------------------------------------------------

/** opportunistic = STARTTLS if offered, plaintext otherwise. */
export type RelayTls = 'opportunistic' | 'required' | 'implicit' | 'none';
export type RelayTarget = {
  host: string;
  port: number;
  tls: RelayTls;
  servername?: string;
  /** Default false for opportunistic MX delivery, true for required/implicit unless set. */
  rejectUnauthorized?: boolean;
  auth?: { user: string; pass: string };
};
export type RelayRecipient = { address: string; notify?: string[]; orcpt?: string };
export type RelayMessage = {
  id: string;
  from: string;
  recipients: RelayRecipient[];
  size: number;
  open(): NodeJS.ReadableStream | AsyncIterable<Uint8Array>;
  needsSmtpUtf8: boolean;
  eightBit: boolean;
  dsn?: { ret?: 'FULL' | 'HDRS'; envid?: string };
};
export type RecipientResult = {
  address: string;
  status: 'delivered' | 'deferred' | 'failed';
  code: number;
  enhanced?: string;
  text: string;
  /** The state whose reply (or failure) decided it, e.g. 'RCPT', 'BODY', 'CONNECT'. */
  state: string;
};
export type MessageResult = { id: string; recipients: RecipientResult[] };
export type RelaySession = {
  results: MessageResult[];
  /**
   * A reused connection was found dead (its RSET failed) before anything of these messages
   * was sent: the results say nothing about them, and a new connection may be tried at once.
   */
  staleConnection?: boolean;
  /** The last C:/S: lines, AUTH redacted. */
  transcript: string[];
  remote: { host: string; address?: string; tls?: { protocol: string; cipher: string } };
};
export type RelayTimeouts = { connect: number; greeting: number; ehlo: number; mail: number; rcpt: number; data: number; dataBlock: number; finalDot: number; quit: number };

/** RFC 5321 4.5.3.2 (connect and QUIT are ours: it gives none). */
export const DEFAULT_RELAY_TIMEOUTS: RelayTimeouts = Object.freeze({
  connect: 30_000,
  greeting: 300_000,
  ehlo: 300_000,
  mail: 300_000,
  rcpt: 300_000,
  data: 120_000,
  dataBlock: 180_000,
  finalDot: 600_000,
  quit: 60_000,
});

export const RELAY_ERROR_CODES = [
  'RELAY_CONNECT_TIMEOUT',
  'RELAY_GREETING_TIMEOUT',
  'RELAY_EHLO_TIMEOUT',
  'RELAY_HELO_TIMEOUT',
  'RELAY_STARTTLS_TIMEOUT',
  'RELAY_AUTH_TIMEOUT',
  'RELAY_MAIL_TIMEOUT',
  'RELAY_RCPT_TIMEOUT',
  'RELAY_DATA_TIMEOUT',
  'RELAY_BODY_TIMEOUT',
  'RELAY_FINAL_DOT_TIMEOUT',
  'RELAY_RSET_TIMEOUT',
  'RELAY_QUIT_TIMEOUT',
  'RELAY_CONNECT_FAILED',
  'RELAY_CONNECTION_LOST',
  'RELAY_GREETING_REJECTED',
  'RELAY_EHLO_REJECTED',
  'RELAY_TLS_REQUIRED',
  'RELAY_TLS_FAILED',
  'RELAY_AUTH_FAILED',
  'RELAY_PROTOCOL',
  'RELAY_SIZE_EXCEEDED',
  'RELAY_SMTPUTF8_REQUIRED',
  'RELAY_BAD_ADDRESS',
  'RELAY_SOURCE_FAILED',
  'RELAY_ABORTED',
  'RELAY_INTERNAL',
  'RELAY_INVALID_INPUT',
] as const;
export type RelayErrorCode = (typeof RELAY_ERROR_CODES)[number];

/**
 * A relay failure with a stable code. Connection-level failures are turned into recipient
 * results (their text starts with the code); only `RELAY_INVALID_INPUT` (a bug in the caller)
 * is ever thrown out of `relay()`.
 */
export class RelayError extends HearthError {
  declare readonly code: RelayErrorCode;
  constructor(code: RelayErrorCode, message: string, options?: ErrorOptions) {
    super(code, message, options);
  }
}

export type RelayOptions = {
  heloName: string;
  log: Logger;
  timeouts?: Partial<RelayTimeouts>;
  signal?: AbortSignal;
  localAddress?: string;
  /**
   * Keep the connection after the messages (state IDLE, no QUIT) for `send()` to hand it more
   * (relay-pool.ts). It QUITs after `idleMs` without work; `onClose` says it is gone.
   */
  reuse?: { idleMs: number; onClose?: (client: RelayClient) => void };
};

/** Deliver `messages` over one connection to `target`. Resolves with a verdict for every recipient. */
export async function relay(target: RelayTarget, messages: RelayMessage[], opts: RelayOptions): Promise<RelaySession> {
  validateInput(target, messages, opts);
  const client = new RelayClient(target, messages, opts);
  return client.run();
}

/** Throws RELAY_INVALID_INPUT for a caller's mistake (relay() and the pool check first). */
export function validateInput(target: RelayTarget, messages: RelayMessage[], opts: RelayOptions): void {
  const bad = (what: string): never => {
    throw new RelayError('RELAY_INVALID_INPUT', what);
  };
  if (!target.host) bad('target.host is empty');
  if (!Number.isInteger(target.port) || target.port <= 0 || target.port > 65535) bad(`bad target.port ${target.port}`);
  if (!['opportunistic', 'required', 'implicit', 'none'].includes(target.tls)) bad(`bad target.tls ${String(target.tls)}`);
  if (!/^[A-Za-z0-9.-]+$|^\[[0-9A-Fa-f:.]+\]$|^\[IPv6:[0-9A-Fa-f:.]+\]$/.test(opts.heloName)) bad(`bad heloName ${JSON.stringify(opts.heloName)}`);
  for (const m of messages) {
    if (m.recipients.length === 0) bad(`message ${m.id} has no recipients`);
    if (typeof m.open !== 'function') bad(`message ${m.id} has no open()`);
  }
}

// ---- the state machine ---------------------------------------------------------------------

/** DOT: a lone "." was sent after a 354 that came with no recipient accepted (pipelining). */
export const STATES = ['CONNECT', 'GREETING', 'EHLO', 'HELO', 'STARTTLS', 'AUTH', 'MAIL', 'RCPT', 'DATA', 'BODY', 'DOT', 'RSET', 'IDLE', 'QUIT', 'CLOSED'] as const;
export type State = (typeof STATES)[number];
type Digit = '0' | '1' | '2' | '3' | '4' | '5' | '6' | '7' | '8' | '9';
/** Reply codes a handler may be named after (RFC 5321 4.2: 2yz..5yz). */
export type ReplyCode = `${'2' | '3' | '4' | '5'}${'0' | '1' | '2' | '3' | '4' | '5'}${Digit}`;

type Status = RecipientResult['status'];
type Job = {
  msg: RelayMessage;
  results: Array<RecipientResult | undefined>;
  /** Recipients the remote accepted at RCPT: their verdict comes with the final dot. */
  accepted: number[];
  /** The recipients a RCPT TO is (or will be) sent for, in order: the RCPT replies map onto it. */
  rcptQueue: number[];
  /** RCPT replies read so far: the next one is about `rcptQueue[rcptReplies]`. */
  rcptReplies: number;
  /** MAIL FROM, every RCPT TO and DATA went out in one write (RFC 2920). */
  pipelined: boolean;
};

/** Reply lines longer than this are a protocol error (RFC 5321 4.5.3.1.5 says 512). */
const MAX_REPLY_LINE = 8192;
/** Lines in one reply; a server sending more is broken or hostile. */
const MAX_REPLY_LINES = 200;
const TRANSCRIPT_LINES = 40;
/** RSET on a reused connection (Postfix's smtp_rset_timeout is 20 s too). */
const PROBE_TIMEOUT_MS = 20_000;
/** QUIT on an idle connection: nothing is at stake, so a silent remote does not hold a shutdown. */
const IDLE_QUIT_TIMEOUT_MS = 2_000;
const TRANSCRIPT_LINE_CHARS = 400;

/** A connection-level failure: what every undecided recipient gets. */
type Failure = { code: RelayErrorCode; status: Status; smtp: number; enhanced: string; text: string; reply?: SmtpReply };

export class RelayClient extends StateMachine<State> {
  readonly target: RelayTarget;
  readonly #opts: RelayOptions;
  readonly #timeouts: RelayTimeouts;
  /** Shared with the base class: BODY switches from the per-block to the final-dot timer. */
  readonly #idle: Record<State, number>;
  /** The messages of the current batch (one run() or send()). */
  #jobs: Job[];
  #nextJob = 0;
  /** Messages handed to this connection so far, over all batches. */
  #messagesHanded = 0;
  /**
   * A reused connection's batch has had no reply beyond its RSET yet: only RSET (and, pipelined,
   * the envelope and DATA, never a body) was sent, so if RSET fails nothing can have been delivered.
   */
  #probing = false;
  /** The RSET awaited was written with the next transaction's commands (pipelined). */
  #rsetLeadsGroup = false;
  #idleTimer: NodeJS.Timeout | undefined;
  #job: Job | undefined;
  #socket: net.Socket | undefined;
  #reader: LineReader | undefined;
  #writer: SocketWriter | undefined;
  #tcpConnected = false;
  #secure = false;
  #esmtp = false;
  #caps: EhloCapabilities = NO_CAPABILITIES;
  #replyLines: ReplyLine[] = [];
  #authMechanism: 'PLAIN' | 'LOGIN' = 'PLAIN';
  #authStep = 0;
  #dotSent = false;
  #socketError: Error | undefined;
  #failure: Failure | undefined;
  /** Replies and socket events are handled one at a time, in arrival order. */
  #chain: Promise<void> = Promise.resolve();
  #transcript: string[] = [];
  readonly #remote: RelaySession['remote'];
  #closedDone = false;
  /** Set while a batch runs; cleared once its results are handed back. */
  #resolve: ((session: RelaySession) => void) | undefined;
  #done: Promise<RelaySession>;
  #signal: AbortSignal | undefined;
  #onAbort: (() => void) | undefined;

  constructor(target: RelayTarget, messages: RelayMessage[], opts: RelayOptions) {
    const timeouts = { ...DEFAULT_RELAY_TIMEOUTS, ...opts.timeouts };
    const idle: Record<State, number> = {
      CONNECT: timeouts.connect,
      GREETING: timeouts.greeting,
      EHLO: timeouts.ehlo,
      HELO: timeouts.ehlo,
      // The reply and the handshake after it; AUTH is an EHLO-like exchange.
      STARTTLS: timeouts.ehlo,
      AUTH: timeouts.ehlo,
      MAIL: timeouts.mail,
      RCPT: timeouts.rcpt,
      DATA: timeouts.data,
      BODY: timeouts.dataBlock,
      DOT: timeouts.finalDot,
      RSET: timeouts.mail,
      IDLE: 0, // its own unref'd timer: an idle connection must not keep the process alive
      QUIT: timeouts.quit,
      CLOSED: 0,
    };
    const log = named(opts.log, 'relay', { cid: newConnectionId(), peer: `${target.host}:${target.port}` });
    super('CONNECT', log, idle, { codePattern: REPLY_CODE_PATTERN });
    this.stopTimer(); // armed again when run() connects
    this.target = target;
    this.#opts = opts;
    this.#timeouts = timeouts;
    this.#idle = idle;
    this.#jobs = RelayClient.#jobsOf(messages);
    this.#messagesHanded = messages.length;
    this.#remote = { host: target.host };
    this.#done = new Promise<RelaySession>((resolve) => (this.#resolve = resolve));
    this.#signal = opts.signal;
  }

  static #jobsOf(messages: RelayMessage[]): Job[] {
    return messages.map((msg) => ({ msg, results: msg.recipients.map(() => undefined), accepted: [], rcptQueue: [], rcptReplies: 0, pipelined: false }));
  }

  /**
   * Connect and run every message; resolves once the connection is closed, or (with `reuse`)
   * once it is IDLE and sound, waiting for send(). Never rejects.
   */
  run(): Promise<RelaySession> {
    const signal = this.#signal;
    if (this.#jobs.length === 0) {
      this.#finish();
      return this.#done;
    }
    if (signal?.aborted) {
      this.#fail('RELAY_ABORTED', 'deferred', `delivery aborted before connecting (${abortReason(signal)})`);
      this.#finish();
      return this.#done;
    }
    this.#watchAbort();
    this.#connect();
    return this.#done;
  }

  /** Is this connection waiting, sound, for more messages? */
  get idle(): boolean {
    return this.state === 'IDLE' && !this.#failure;
  }

  /** Messages handed to this connection so far. */
  get messagesHanded(): number {
    return this.#messagesHanded;
  }

  /**
   * Hand an IDLE connection more messages. RSET first (RFC 5321 4.1.1.5): its 250 shows the
   * connection still works before any message goes out; if it does not, the session comes
   * back with `staleConnection` and no verdict counts. Never rejects.
   */
  send(messages: RelayMessage[], signal?: AbortSignal): Promise<RelaySession> {
    if (!this.idle) throw new RelayError('RELAY_INVALID_INPUT', `send() on a connection in state ${this.state}`);
    validateInput(this.target, messages, this.#opts);
    clearTimeout(this.#idleTimer);
    this.#socket?.ref();
    this.#jobs = RelayClient.#jobsOf(messages);
    this.#nextJob = 0;
    this.#job = undefined;
    this.#messagesHanded += messages.length;
    this.#done = new Promise<RelaySession>((resolve) => (this.#resolve = resolve));
    this.#signal = signal;
    this.#transcript = [];
    this.#note(`reusing the connection to ${this.#describe()} (${this.#messagesHanded - messages.length} message(s) before)`);
    if (signal?.aborted) {
      this.#fail('RELAY_ABORTED', 'deferred', `delivery aborted before sending (${abortReason(signal)})`);
      return this.#done;
    }
    this.#watchAbort();
    this.#probing = true;
    // A probe: a connection that went bad while idle should not hold the message for long.
    this.#idle.RSET = Math.min(this.#timeouts.mail, PROBE_TIMEOUT_MS);
    this.transition('RSET', 'connection reused');
    this.#enqueue(() => this.#sendRset('connection reused'));
    return this.#done;
  }

  /** Close an IDLE connection politely; resolves once it is closed. */
  quit(): Promise<void> {
    if (this.state === 'CLOSED') return Promise.resolve();
    const socket = this.#socket;
    const closed = new Promise<void>((resolve) => (!socket || socket.closed ? resolve() : socket.once('close', () => resolve())));
    if (this.state === 'IDLE') {
      clearTimeout(this.#idleTimer);
      this.#enqueue(() => this.#quitIdle());
    }
    return closed;
  }

  #watchAbort(): void {
    const signal = this.#signal;
    if (!signal) return;
    const onAbort = (): void => this.#fail('RELAY_ABORTED', 'deferred', `delivery aborted in state ${this.state} (${abortReason(signal)})`);
    this.#onAbort = onAbort;
    signal.addEventListener('abort', onAbort, { once: true });
  }

  // ---- plumbing ----------------------------------------------------------------------------

  #connect(): void {
    const t = this.target;
    const base = { host: t.host, port: t.port, localAddress: this.#opts.localAddress };
    this.transition('CONNECT', `connecting to ${t.host}:${t.port} (${t.tls})`);
    let socket: net.Socket;
    if (t.tls === 'implicit') {
      socket = tls.connect({ ...base, ...this.#tlsOptions() });
      socket.once('secureConnect', () => this.#enqueue(() => this.#connected(socket)));
    } else {
      socket = net.connect(base);
      socket.once('connect', () => this.#enqueue(() => this.#connected(socket)));
    }
    socket.once('connect', () => (this.#tcpConnected = true));
    this.#attach(socket);
  }

  #tlsOptions(): tls.ConnectionOptions {
    const t = this.target;
    const servername = t.servername ?? (net.isIP(t.host) ? undefined : t.host);
    // Opportunistic STARTTLS to an MX: an unverifiable certificate still beats plaintext
    // (RFC 7435); a smarthost or configured TLS is checked unless told otherwise.
    const rejectUnauthorized = t.rejectUnauthorized ?? (t.tls === 'required' || t.tls === 'implicit');
    return { servername, rejectUnauthorized, minVersion: 'TLSv1.2' };
  }

  #attach(socket: net.Socket): void {
    this.#socket = socket;
    this.#writer = new SocketWriter(socket);
    const reader = new LineReader({
      maxLine: MAX_REPLY_LINE,
      onLine: (line) => this.#onLine(line.toString('utf8')),
      onOverflow: () => this.#enqueue(() => this.#protocolError(`reply line longer than ${MAX_REPLY_LINE} bytes`)),
      onPressure: (high) => (high ? socket.pause() : socket.resume()),
    });
    this.#reader = reader;
    socket.on('data', (chunk: Buffer) => {
      if (socket === this.#socket) reader.push(chunk);
    });
    socket.on('error', (err: Error) => {
      this.#socketError ??= err;
    });
    socket.on('close', () => {
      if (socket === this.#socket) this.#enqueue(() => this.#closed());
    });
  }

  async #connected(socket: net.Socket): Promise<void> {
    if (this.#failure || socket !== this.#socket) return;
    this.#remote.address = socket.remoteAddress;
    if (socket instanceof tls.TLSSocket) this.#noteTls(socket);
    this.transition('GREETING', 'connected');
  }

  #noteTls(socket: tls.TLSSocket): void {
    this.#secure = true;
    this.#remote.tls = { protocol: socket.getProtocol() ?? 'unknown', cipher: socket.getCipher()?.name ?? 'unknown' };
    this.#note(`TLS established: ${this.#remote.tls.protocol} ${this.#remote.tls.cipher}`);
  }

  #enqueue(fn: () => void | Promise<void>): void {
    this.#chain = this.#chain.then(fn).catch((err: unknown) => {
      this.log.error({ err }, 'relay event handler failed');
      this.#fail('RELAY_INTERNAL', 'deferred', `internal error in state ${this.state}: ${(err as Error)?.message ?? String(err)}`);
    });
  }

  #onLine(line: string): void {
    if (this.#failure && this.state === 'CLOSED') return;
    this.#record(`S: ${line}`);
    this.log.trace({ line }, 'S:');
    const parsed = parseReplyLine(line);
    if (!parsed) {
      this.#replyLines = [];
      this.#enqueue(() => this.#protocolError(`not an SMTP reply: ${JSON.stringify(line.slice(0, 80))}`));
      return;
    }
    this.#replyLines.push(parsed);
    if (!parsed.final) {
      if (this.#replyLines.length > MAX_REPLY_LINES) {
        this.#replyLines = [];
        this.#enqueue(() => this.#protocolError(`reply longer than ${MAX_REPLY_LINES} lines`));
      }
      return;
    }
    const reply = buildReply(this.#replyLines);
    this.#replyLines = [];
    if (typeof reply === 'string') this.#enqueue(() => this.#protocolError(reply));
    else this.#enqueue(() => this.#onReply(reply));
  }

  async #onReply(reply: SmtpReply): Promise<void> {
    if (this.state === 'CLOSED') return;
    await this.dispatch(String(reply.code), reply);
  }

  /** Write one command line; `shown` replaces it in the transcript and logs (credentials). */
  async #send(line: string, shown: string = line): Promise<void> {
    this.#record(`C: ${shown}`);
    this.log.trace({ line: shown }, 'C:');
    await this.#writer?.writeLine(line);
  }

  /** Write a pipelined command group in one write (RFC 2920 3.1); never holds credentials. */
  async #sendGroup(lines: string[]): Promise<void> {
    if (lines.length === 1) return this.#send(lines[0]);
    for (const line of lines) {
      this.#record(`C: ${line}`);
      this.log.trace({ line }, 'C:');
    }
    await this.#writer?.write(lines.map((l) => `${l}\r\n`).join(''));
  }

  #record(line: string): void {
    this.#transcript.push(line.length > TRANSCRIPT_LINE_CHARS ? `${line.slice(0, TRANSCRIPT_LINE_CHARS)}…` : line);
    if (this.#transcript.length > TRANSCRIPT_LINES) this.#transcript.splice(0, this.#transcript.length - TRANSCRIPT_LINES);
  }

  #note(text: string): void {
    this.#record(`-- ${text}`);
  }

  #describe(): string {
    const addr = this.#remote.address && this.#remote.address !== this.target.host ? ` [${this.#remote.address}]` : '';
    return `${this.target.host}${addr}`;
  }

  /** The socket closed. Expected in QUIT and after a failure; anywhere else the remote dropped us. */
  #closed(): void {
    if (this.state === 'IDLE') {
      // The remote ended an idle connection (its own timeout): nothing was lost.
      this.#note('closed by the remote while idle');
    } else if (this.state !== 'QUIT' && this.state !== 'CLOSED') {
      const why = this.#socketError ? `: ${this.#socketError.message}` : '';
      if (this.state === 'CONNECT' && this.target.tls === 'implicit' && this.#tcpConnected) {
        this.#fail('RELAY_TLS_FAILED', 'deferred', `TLS handshake with ${this.#describe()} failed${why}`);
      } else if (this.state === 'CONNECT') {
        this.#fail('RELAY_CONNECT_FAILED', 'deferred', `cannot connect to ${this.#describe()}:${this.target.port}${why}`);
      } else if (this.state === 'BODY' || this.state === 'DATA' || this.state === 'DOT') {
        this.#fail('RELAY_CONNECTION_LOST', 'deferred', `${this.#describe()} closed the connection during DATA${why}`);
      } else {
        this.#fail('RELAY_CONNECTION_LOST', 'deferred', `${this.#describe()} closed the connection${why}`);
      }
    }
    this.#finish();
  }

  /**
   * A connection-level failure: every recipient without a verdict gets `status` with this
   * text (naming the code and the state), and the connection is dropped. Idempotent: the
   * first failure decides.
   */
  #fail(code: RelayErrorCode, status: Status, text: string, reply?: SmtpReply, opts: { quit?: boolean } = {}): void {
    if (this.#failure) return;
    const state = this.state;
    const smtp = reply?.code ?? (status === 'failed' ? 554 : 421);
    const enhanced = reply?.enhanced ?? defaultEnhanced(code, status);
    const failure: Failure = { code, status, smtp, enhanced, text: `${code}: ${text} (state ${state})`, reply };
    this.#failure = failure;
    clearTimeout(this.#idleTimer);
    const error = new RelayError(code, failure.text);
    this.log.info({ code, state, status }, error.message);
    this.#note(error.message);
    for (const job of this.#jobs) {
      job.msg.recipients.forEach((r, i) => {
        if (!job.results[i]) job.results[i] = { address: r.address, status, code: smtp, enhanced, text: failure.text, state };
      });
    }
    if (opts.quit && this.#socket && !this.#socket.destroyed) {
      void this.#quit();
      return;
    }
    this.#drop();
  }

  #drop(): void {
    if (this.state !== 'CLOSED') this.transition('CLOSED', this.#failure?.code ?? 'dropped');
    this.stopTimer();
    clearTimeout(this.#idleTimer);
    if (this.#socket && !this.#socket.destroyed) this.#socket.destroy();
    else this.#enqueue(() => this.#finish());
  }

  /** The connection is gone: hand back the batch's results, if a batch was running. */
  #finish(): void {
    if (this.#closedDone) return;
    this.#closedDone = true;
    if (this.state !== 'CLOSED') this.transition('CLOSED', 'finished');
    this.stopTimer();
    clearTimeout(this.#idleTimer);
    this.#settle();
    this.#opts.reuse?.onClose?.(this);
  }

  /** All messages of the batch are done and the connection is sound: wait for more. */
  #goIdle(): void {
    this.transition('IDLE', 'messages done; kept for reuse');
    const idleMs = this.#opts.reuse!.idleMs;
    this.#idleTimer = setTimeout(() => {
      if (this.state !== 'IDLE') return;
      this.#note(`idle for ${idleMs} ms`);
      this.#enqueue(() => this.#quitIdle());
    }, idleMs);
    this.#idleTimer.unref();
    this.#socket?.unref();
    this.#settle();
  }

  #settle(): void {
    const resolve = this.#resolve;
    if (!resolve) return;
    this.#resolve = undefined;
    if (this.#onAbort) this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#onAbort = undefined;
    const results: MessageResult[] = this.#jobs.map((job) => ({
      id: job.msg.id,
      recipients: job.msg.recipients.map(
        (r, i) => job.results[i] ?? { address: r.address, status: 'deferred', code: 421, enhanced: '4.3.0', text: `RELAY_INTERNAL: no verdict reached (state ${this.state})`, state: this.state },
      ),
    }));
    for (const r of results) {
      const count = (s: Status): number => r.recipients.filter((x) => x.status === s).length;
      this.log.info({ id: r.id, delivered: count('delivered'), deferred: count('deferred'), failed: count('failed') }, 'relay attempt');
    }
    const session: RelaySession = { results, transcript: [...this.#transcript], remote: { ...this.#remote } };
    // An abort is the caller's doing, not a dead connection: no other connection is tried for it.
    if (this.#probing && this.#failure && this.#failure.code !== 'RELAY_ABORTED') session.staleConnection = true;
    this.#probing = false;
    resolve(session);
  }

  #protocolError(what: string): void {
    this.#fail('RELAY_PROTOCOL', 'deferred', `${this.#describe()}: ${what}`);
  }

  async #quit(): Promise<void> {
    this.transition('QUIT', 'done');
    await this.#send('QUIT');
  }

  async #quitIdle(): Promise<void> {
    this.#idle.QUIT = Math.min(this.#timeouts.quit, IDLE_QUIT_TIMEOUT_MS);
    await this.#quit();
  }

  #decide(job: Job, index: number, status: Status, reply: SmtpReply, state: string, text: string = reply.text): void {
    const r = job.msg.recipients[index];
    job.results[index] = { address: r.address, status, code: reply.code, ...(reply.enhanced ? { enhanced: reply.enhanced } : {}), text, state };
  }

  /** Every recipient of the current message that has no verdict yet gets this one. */
  #decideRest(job: Job, status: Status, reply: SmtpReply, state: string, text?: string): void {
    job.msg.recipients.forEach((_r, i) => {
      if (!job.results[i]) this.#decide(job, i, status, reply, state, text);
    });
  }

  /** 421 anywhere: the remote is closing the channel (RFC 5321 3.8). */
  #serviceClosing(code: string, reply: SmtpReply): boolean {
    if (code !== '421') return false;
    this.#fail('RELAY_CONNECTION_LOST', 'deferred', `${this.#describe()} is closing the connection: ${reply.code} ${reply.text}`, reply);
    return true;
  }

  // ---- state machine hooks -------------------------------------------------------------------

  onTimeout(): void {
    if (this.state === 'QUIT') {
      this.#note('no reply to QUIT; closing');
      this.#drop();
      return;
    }
    if (this.state === 'CLOSED') return;
    const ms = this.#idle[this.state];
    if (this.state === 'DOT') {
      this.#fail('RELAY_FINAL_DOT_TIMEOUT', 'deferred', `no reply to the empty message's "." from ${this.#describe()} within ${ms} ms`);
      return;
    }
    if (this.state === 'BODY') {
      if (this.#dotSent) this.#fail('RELAY_FINAL_DOT_TIMEOUT', 'deferred', `no reply to the final dot from ${this.#describe()} within ${ms} ms`);
      else this.#fail('RELAY_BODY_TIMEOUT', 'deferred', `${this.#describe()} took no message data for ${ms} ms`);
      return;
    }
    const what = this.state === 'CONNECT' ? `cannot connect to ${this.#describe()}:${this.target.port} within ${ms} ms` : `no reply from ${this.#describe()} within ${ms} ms`;
    this.#fail(`RELAY_${this.state}_TIMEOUT` as RelayErrorCode, 'deferred', what);
  }

  onHandlerError(err: unknown): void {
    this.#fail('RELAY_INTERNAL', 'deferred', `internal error: ${(err as Error)?.message ?? String(err)}`);
  }

  /** A reply nobody expects in this state: the remote does not speak SMTP as we know it. */
  do_default(code: string, reply?: SmtpReply): void {
    this.#fail('RELAY_PROTOCOL', 'deferred', `unexpected reply ${code} ${reply?.text ?? ''} from ${this.#describe()}`, reply);
  }

  // ---- GREETING ------------------------------------------------------------------------------

  async do_GREETING_220(): Promise<void> {
    this.transition('EHLO', 'greeted');
    await this.#send(`EHLO ${this.#opts.heloName}`);
  }

  do_GREETING_4xx(_code: string, reply: SmtpReply): Promise<void> {
    return this.#greetingRejected('deferred', reply);
  }

  do_GREETING_5xx(_code: string, reply: SmtpReply): Promise<void> {
    return this.#greetingRejected('failed', reply);
  }

  async #greetingRejected(status: Status, reply: SmtpReply): Promise<void> {
    // RFC 5321 3.1: after a 554 greeting the client should send QUIT and wait.
    this.#fail('RELAY_GREETING_REJECTED', status, `${this.#describe()} refused service: ${reply.code} ${reply.text}`, reply, { quit: true });
  }

  // ---- EHLO / HELO ---------------------------------------------------------------------------

  async do_EHLO_250(reply: SmtpReply): Promise<void> {
    this.#esmtp = true;
    this.#caps = parseEhlo(reply.lines);
    await this.#afterHello();
  }

  async do_EHLO_5xx(): Promise<void> {
    // RFC 5321 3.2: a server that does not know EHLO gets HELO.
    this.transition('HELO', 'EHLO refused');
    await this.#send(`HELO ${this.#opts.heloName}`);
  }

  do_EHLO_4xx(code: string, reply: SmtpReply): void {
    if (this.#serviceClosing(code, reply)) return;
    this.#fail('RELAY_EHLO_REJECTED', 'deferred', `${this.#describe()} refused EHLO: ${reply.code} ${reply.text}`, reply, { quit: true });
  }

  async do_HELO_250(): Promise<void> {
    this.#esmtp = false;
    this.#caps = NO_CAPABILITIES;
    await this.#afterHello();
  }

  do_HELO_4xx(code: string, reply: SmtpReply): void {
    if (this.#serviceClosing(code, reply)) return;
    this.#fail('RELAY_EHLO_REJECTED', 'deferred', `${this.#describe()} refused EHLO and HELO: ${reply.code} ${reply.text}`, reply, { quit: true });
  }

  do_HELO_5xx(_code: string, reply: SmtpReply): void {
    this.#fail('RELAY_EHLO_REJECTED', 'failed', `${this.#describe()} refused EHLO and HELO: ${reply.code} ${reply.text}`, reply, { quit: true });
  }

  /** After a successful EHLO/HELO: STARTTLS if we should, then AUTH if configured, then mail. */
  async #afterHello(): Promise<void> {
    const tlsMode = this.target.tls;
    if (!this.#secure && (tlsMode === 'opportunistic' || tlsMode === 'required')) {
      if (this.#caps.starttls) {
        this.transition('STARTTLS', 'offered');
        await this.#send('STARTTLS');
        return;
      }
      if (tlsMode === 'required') {
        this.#fail('RELAY_TLS_REQUIRED', 'deferred', `TLS is required but ${this.#describe()} does not offer STARTTLS`, undefined, { quit: true });
        return;
      }
    }
    await this.#afterTls();
  }

  async #afterTls(): Promise<void> {
    if (this.target.auth) {
      await this.#startAuth();
      return;
    }
    await this.#nextMessage();
  }

  // ---- STARTTLS ------------------------------------------------------------------------------

  async do_STARTTLS_220(): Promise<void> {
    const plain = this.#socket;
    if (!plain) return;
    // RFC 3207 4.2: forget everything learnt before TLS; nothing the server sent after its 220
    // may be acted on, so the old reader (and anything buffered in it) is dropped.
    plain.removeAllListeners('data');
    plain.on('error', () => undefined);
    const secure = tls.connect({ socket: plain, ...this.#tlsOptions() });
    this.#attach(secure);
    try {
      await tlsHandshake(secure);
    } catch (err) {
      this.#fail('RELAY_TLS_FAILED', 'deferred', `TLS handshake with ${this.#describe()} failed: ${(err as Error).message}`);
      return;
    }
    if (this.#failure) return;
    this.#noteTls(secure);
    this.#caps = NO_CAPABILITIES;
    this.transition('EHLO', 'TLS established');
    await this.#send(`EHLO ${this.#opts.heloName}`);
  }

  do_STARTTLS_4xx(code: string, reply: SmtpReply): Promise<void> | void {
    if (this.#serviceClosing(code, reply)) return;
    return this.#starttlsRefused(reply);
  }

  do_STARTTLS_5xx(_code: string, reply: SmtpReply): Promise<void> {
    return this.#starttlsRefused(reply);
  }

  async #starttlsRefused(reply: SmtpReply): Promise<void> {
    if (this.target.tls === 'required') {
      this.#fail('RELAY_TLS_FAILED', 'deferred', `${this.#describe()} refused STARTTLS: ${reply.code} ${reply.text}`, reply, { quit: true });
      return;
    }
    // Opportunistic: the channel is still plaintext and still usable (RFC 3207 4).
    this.#note(`STARTTLS refused (${reply.code}); continuing without TLS`);
    this.transition('EHLO', 'STARTTLS refused');
    await this.#afterTls();
  }

  // ---- AUTH ----------------------------------------------------------------------------------

  #plaintextCredentialsAllowed(): boolean {
    if (this.#secure) return true;
    const addr = this.#remote.address ?? '';
    return this.target.tls === 'none' && (addr.startsWith('127.') || addr === '::1' || addr.startsWith('::ffff:127.'));
  }

  async #startAuth(): Promise<void> {
    const auth = this.target.auth!;
    if (!this.#plaintextCredentialsAllowed()) {
      this.#fail('RELAY_TLS_REQUIRED', 'deferred', `will not send credentials to ${this.#describe()} without TLS`, undefined, { quit: true });
      return;
    }
    const mechs = this.#caps.auth;
    if (!this.#esmtp || (!mechs.includes('PLAIN') && !mechs.includes('LOGIN'))) {
      this.#fail('RELAY_AUTH_FAILED', 'deferred', `${this.#describe()} offers no AUTH PLAIN or LOGIN (offered: ${mechs.join(' ') || 'none'})`, undefined, { quit: true });
      return;
    }
    this.transition('AUTH', 'credentials configured');
    this.#authStep = 0;
    if (mechs.includes('PLAIN')) {
      this.#authMechanism = 'PLAIN';
      const token = Buffer.from(`\0${auth.user}\0${auth.pass}`, 'utf8').toString('base64');
      await this.#send(`AUTH PLAIN ${token}`, 'AUTH PLAIN [redacted]');
    } else {
      this.#authMechanism = 'LOGIN';
      await this.#send('AUTH LOGIN');
    }
  }

  async do_AUTH_235(): Promise<void> {
    await this.#nextMessage();
  }

  async do_AUTH_334(): Promise<void> {
    const auth = this.target.auth!;
    this.#authStep += 1;
    if (this.#authMechanism === 'PLAIN' && this.#authStep === 1) {
      // A server that ignores the initial response asks again with an empty challenge.
      await this.#send(Buffer.from(`\0${auth.user}\0${auth.pass}`, 'utf8').toString('base64'), '[redacted]');
    } else if (this.#authMechanism === 'LOGIN' && this.#authStep <= 2) {
      const value = this.#authStep === 1 ? auth.user : auth.pass;
      await this.#send(Buffer.from(value, 'utf8').toString('base64'), '[redacted]');
    } else {
      // Cancel an exchange that goes on longer than the mechanism allows (RFC 4954 4).
      await this.#send('*');
    }
  }

  do_AUTH_4xx(code: string, reply: SmtpReply): void {
    if (this.#serviceClosing(code, reply)) return;
    this.#fail('RELAY_AUTH_FAILED', 'deferred', `${this.#describe()} refused AUTH ${this.#authMechanism}: ${reply.code} ${reply.text}`, reply, { quit: true });
  }

  do_AUTH_5xx(_code: string, reply: SmtpReply): void {
    // Deferred, not failed: a wrong smarthost password is our configuration, and the mail
    // should wait for it to be fixed rather than bounce (Postfix's smtp_sasl_auth_soft_bounce).
    this.#fail('RELAY_AUTH_FAILED', 'deferred', `${this.#describe()} refused AUTH ${this.#authMechanism}: ${reply.code} ${reply.text}`, reply, { quit: true });
  }

  // ---- MAIL ----------------------------------------------------------------------------------

  /** Start the next message's transaction, or QUIT when none is left. */
  async #nextMessage(): Promise<void> {
    this.#probing = false;
    this.#idle.RSET = this.#timeouts.mail;
    const job = this.#takeJob();
    if (!job) {
      if (this.#opts.reuse && !this.#failure) this.#goIdle();
      else await this.#quit();
      return;
    }
    this.transition('MAIL', `message ${job.msg.id}`);
    await this.#sendTransaction(job);
  }

  /** The next message that needs a transaction (those refused before MAIL FROM get their verdict here). */
  #takeJob(): Job | undefined {
    for (;;) {
      const job = this.#jobs[this.#nextJob++];
      this.#job = job;
      if (!job || !this.#refuseBeforeMail(job)) return job;
    }
  }

  /**
   * Write `before` (an RSET) and MAIL FROM; to a server with PIPELINING also every RCPT TO
   * and DATA, the last command of the group (RFC 2920 3.1). The caller has entered the state
   * whose reply comes first.
   */
  async #sendTransaction(job: Job, before: string[] = []): Promise<void> {
    const m = job.msg;
    this.#dotSent = false;
    job.rcptQueue = m.recipients.flatMap((_r, i) => (job.results[i] ? [] : [i]));
    job.rcptReplies = 0;
    job.pipelined = this.#esmtp && this.#caps.pipelining;
    if (m.eightBit && !this.#caps.eightBitMime) {
      // Our choice: send the 8-bit body anyway (RFC 6152 does not let us, but nearly every
      // server accepts it and downgrading means re-encoding a signed message). Noted here.
      this.#note(`message ${m.id}: 8-bit body sent without 8BITMIME (not offered)`);
      this.log.warn({ id: m.id }, '8-bit body sent to a server without 8BITMIME');
    }
    const lines = [...before, mailFromCommand({ from: m.from, caps: this.#caps, esmtp: this.#esmtp, size: m.size, eightBit: m.eightBit, smtpUtf8: m.needsSmtpUtf8, dsn: m.dsn })];
    if (job.pipelined) lines.push(...job.rcptQueue.map((i) => this.#rcptCommand(job, i)), 'DATA');
    await this.#sendGroup(lines);
  }

  #rcptCommand(job: Job, index: number): string {
    const r = job.msg.recipients[index];
    return rcptToCommand(r.address, this.#caps, { notify: r.notify, orcpt: r.orcpt });
  }

  /** Permanent failures we can see before MAIL FROM: SMTPUTF8, SIZE, unusable addresses. */
  #refuseBeforeMail(job: Job): boolean {
    const m = job.msg;
    const host = this.#describe();
    let verdict: { code: RelayErrorCode; smtp: number; enhanced: string; text: string } | undefined;
    if (!isSafeAddress(m.from)) {
      verdict = { code: 'RELAY_BAD_ADDRESS', smtp: 553, enhanced: '5.1.7', text: `sender address ${JSON.stringify(m.from.slice(0, 100))} cannot be sent over SMTP` };
    } else if (m.needsSmtpUtf8 && !this.#caps.smtpUtf8) {
      // RFC 6531 3.5: no downgrade; the message cannot be delivered to this server.
      verdict = { code: 'RELAY_SMTPUTF8_REQUIRED', smtp: 553, enhanced: '5.6.7', text: `the message needs SMTPUTF8 (non-ASCII addresses or headers) but ${host} does not offer it` };
    } else if (this.#caps.size > 0 && m.size > this.#caps.size) {
      // RFC 1870 6: the declared limit is fixed; retrying will not help.
      verdict = { code: 'RELAY_SIZE_EXCEEDED', smtp: 552, enhanced: '5.3.4', text: `message of ${m.size} bytes is larger than the ${this.#caps.size} bytes ${host} accepts` };
    }
    if (verdict) {
      const reply: SmtpReply = { code: verdict.smtp, enhanced: verdict.enhanced, lines: [], text: `${verdict.code}: ${verdict.text}` };
      this.#note(reply.text);
      this.#decideRest(job, 'failed', reply, 'MAIL');
      return true;
    }
    job.msg.recipients.forEach((r, i) => {
      if (!isSafeAddress(r.address)) {
        this.#decide(job, i, 'failed', { code: 553, enhanced: '5.1.3', lines: [], text: '' }, 'RCPT', `RELAY_BAD_ADDRESS: recipient address cannot be sent over SMTP`);
      }
    });
    return job.results.every((r) => r !== undefined);
  }

  async do_MAIL_250(): Promise<void> {
    this.transition('RCPT', 'sender accepted');
    await this.#nextRcpt();
  }

  do_MAIL_4xx(code: string, reply: SmtpReply): Promise<void> | void {
    if (this.#serviceClosing(code, reply)) return;
    return this.#mailRefused('deferred', reply);
  }

  do_MAIL_5xx(_code: string, reply: SmtpReply): Promise<void> {
    return this.#mailRefused('failed', reply);
  }

  async #mailRefused(status: Status, reply: SmtpReply): Promise<void> {
    const job = this.#job!;
    this.#decideRest(job, status, reply, 'MAIL');
    if (job.pipelined) {
      // RFC 2920 3.1: the replies to the group's RCPTs and DATA (usually 503) are still to
      // come; each is read in its state and changes no verdict.
      this.transition('RCPT', 'sender refused; reading the rest of the group');
      return;
    }
    await this.#rset();
  }

  // ---- RCPT ----------------------------------------------------------------------------------

  /**
   * After a RCPT reply (or MAIL's 250): send the next RCPT TO, unless the group already did;
   * after the last reply, DATA (already on its way if pipelined), or RSET if nobody was accepted.
   */
  async #nextRcpt(): Promise<void> {
    const job = this.#job!;
    if (job.rcptReplies < job.rcptQueue.length) {
      if (!job.pipelined) await this.#send(this.#rcptCommand(job, job.rcptQueue[job.rcptReplies]));
      return;
    }
    if (job.pipelined) {
      // RFC 2920 3.1: DATA's reply is read whatever the RCPTs got; do_DATA_354 handles none accepted.
      this.transition('DATA', `${job.accepted.length} recipient(s) accepted; DATA already sent`);
      return;
    }
    if (job.accepted.length === 0) {
      await this.#rset();
      return;
    }
    this.transition('DATA', `${job.accepted.length} recipient(s) accepted`);
    await this.#send('DATA');
  }

  /** The recipient the RCPT reply being read is about; undefined once it has a verdict (MAIL refused). */
  #rcptReplied(): number | undefined {
    const job = this.#job!;
    const index = job.rcptQueue[job.rcptReplies++];
    if (job.results[index]) {
      this.#note(`RCPT reply for ${job.msg.recipients[index].address} after the sender was refused; ignored`);
      return undefined;
    }
    return index;
  }

  async do_RCPT_2xx(): Promise<void> {
    const index = this.#rcptReplied();
    if (index !== undefined) this.#job!.accepted.push(index);
    await this.#nextRcpt();
  }

  do_RCPT_4xx(code: string, reply: SmtpReply): Promise<void> | void {
    if (this.#serviceClosing(code, reply)) return;
    return this.#rcptRefused('deferred', reply);
  }

  do_RCPT_5xx(_code: string, reply: SmtpReply): Promise<void> {
    return this.#rcptRefused('failed', reply);
  }

  async #rcptRefused(status: Status, reply: SmtpReply): Promise<void> {
    const index = this.#rcptReplied();
    if (index !== undefined) this.#decide(this.#job!, index, status, reply, 'RCPT');
    await this.#nextRcpt();
  }

  // ---- DATA / BODY ---------------------------------------------------------------------------

  async do_DATA_354(): Promise<void> {
    const job = this.#job!;
    if (job.accepted.length === 0) {
      // Pipelined, with every RCPT (or the MAIL) refused, and the server says go ahead anyway:
      // end the data at once, an empty message to nobody (RFC 2920 3.1). The verdicts stand.
      this.#note('DATA got 354 but no recipient accepted; sending an empty message');
      this.transition('DOT', 'no recipient accepted');
      await this.#send('.');
      return;
    }
    this.#idle.BODY = this.#timeouts.dataBlock;
    this.transition('BODY', 'go ahead');
    const writer = this.#writer!;
    const stuffer = new DotStuffer();
    let bytes = 0;
    // Each block is written once the next is read, so the last goes out with the final dot:
    // one write for a message that is read in one piece.
    let held: Buffer | undefined;
    try {
      // Read only as fast as the socket drains: a 30 MB message never sits in memory.
      for await (const chunk of job.msg.open() as AsyncIterable<Uint8Array | string>) {
        if (this.#failure || writer.closed) break;
        const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
        bytes += buf.length;
        const out = stuffer.push(buf);
        if (out.length === 0) continue;
        if (held) await writer.write(held);
        held = out;
        this.rearm(); // RFC 5321 4.5.3.2.5: the timer is per block written
      }
    } catch (err) {
      this.#fail('RELAY_SOURCE_FAILED', 'deferred', `cannot read message ${job.msg.id}: ${(err as Error)?.message ?? String(err)}`);
      return;
    }
    if (this.#failure || writer.closed) return;
    this.#record(`C: [message body, ${bytes} bytes]`);
    this.#record('C: .');
    const end = stuffer.end();
    await writer.write(held ? Buffer.concat([held, end]) : end);
    if (this.#failure) return;
    this.#dotSent = true;
    this.#idle.BODY = this.#timeouts.finalDot;
    this.rearm();
  }

  do_DATA_4xx(code: string, reply: SmtpReply): Promise<void> | void {
    if (this.#serviceClosing(code, reply)) return;
    this.#decideRest(this.#job!, 'deferred', reply, 'DATA');
    return this.#rset();
  }

  do_DATA_5xx(_code: string, reply: SmtpReply): Promise<void> {
    this.#decideRest(this.#job!, 'failed', reply, 'DATA');
    return this.#rset();
  }

  async do_BODY_2xx(_code: string, reply: SmtpReply): Promise<void> {
    this.#bodyDone('delivered', reply);
    await this.#nextMessage();
  }

  async do_BODY_4xx(_code: string, reply: SmtpReply): Promise<void> {
    // The transaction is over either way (RFC 5321 4.1.1.4): no RSET needed. A 421 here
    // still applies to this message first.
    this.#bodyDone('deferred', reply);
    if (this.#serviceClosing(String(reply.code), reply)) return;
    await this.#nextMessage();
  }

  async do_BODY_5xx(_code: string, reply: SmtpReply): Promise<void> {
    this.#bodyDone('failed', reply);
    await this.#nextMessage();
  }

  #bodyDone(status: Status, reply: SmtpReply): void {
    const job = this.#job!;
    if (!this.#dotSent) this.#note(`reply ${reply.code} before the end of the message data`);
    for (const i of job.accepted) this.#decide(job, i, status, reply, 'BODY');
    this.#decideRest(job, status, reply, 'BODY');
  }

  /** Whatever the reply to the empty message, the transaction is over and nothing was delivered. */
  async do_DOT_default(code: string, reply: SmtpReply): Promise<void> {
    if (this.#serviceClosing(code, reply)) return;
    const job = this.#job!;
    this.#decideRest(job, 'failed', reply, 'DATA', `RELAY_PROTOCOL: DATA got 354 with no recipient accepted; empty message ended with ${reply.code}`);
    await this.#nextMessage();
  }

  // ---- RSET ----------------------------------------------------------------------------------

  /** Abandon the current transaction before the next one (RFC 5321 4.1.1.5). */
  async #rset(): Promise<void> {
    if (this.#nextJob >= this.#jobs.length) {
      // Nothing left to send: QUIT ends the transaction as well as RSET would.
      await this.#nextMessage();
      return;
    }
    await this.#sendRset('transaction abandoned');
  }

  /**
   * RSET; to a server with PIPELINING the next message's transaction goes in the same write
   * (RSET may appear anywhere in a group, RFC 2920 3.1), and its 250 leads straight to MAIL.
   */
  async #sendRset(why: string): Promise<void> {
    // send() queues this behind whatever the connection already heard: a close or a 421 that
    // came first has ended it, and a dead connection must not be brought back to life.
    if (this.#failure) return;
    this.transition('RSET', why);
    const job = this.#esmtp && this.#caps.pipelining ? this.#takeJob() : undefined;
    this.#rsetLeadsGroup = job !== undefined;
    if (job) {
      // A server may hold the RSET's reply until it has worked through the MAIL and every RCPT
      // of the group (RFC 2920 3.2), so the short probe timer of an RSET sent alone would take
      // a slow but sound server for a dead connection: wait as long as for the MAIL reply.
      this.#idle.RSET = this.#timeouts.mail;
      this.rearm();
      await this.#sendTransaction(job, ['RSET']);
    } else await this.#send('RSET');
  }

  async do_RSET_250(): Promise<void> {
    if (!this.#rsetLeadsGroup) {
      await this.#nextMessage();
      return;
    }
    this.#rsetLeadsGroup = false;
    this.#probing = false;
    this.#idle.RSET = this.#timeouts.mail;
    this.transition('MAIL', `message ${this.#job!.msg.id}`);
  }

  // ---- IDLE ----------------------------------------------------------------------------------

  do_IDLE_default(code: string, reply: SmtpReply): void {
    // Nothing was asked: a reply now (often a 421 on the remote's own timeout) means the
    // connection is out of step and must not carry another message.
    this.#fail('RELAY_PROTOCOL', 'deferred', `${this.#describe()} sent ${code} ${reply?.text ?? ''} on an idle connection`, reply);
  }

  do_RSET_default(code: string, reply: SmtpReply): void {
    if (this.#serviceClosing(code, reply)) return;
    this.#fail('RELAY_PROTOCOL', 'deferred', `${this.#describe()} refused RSET: ${reply.code} ${reply.text}`, reply);
  }

  // ---- QUIT ----------------------------------------------------------------------------------

  do_QUIT_default(): void {
    // Whatever it says, we are done (RFC 5321 4.1.1.10: the server closes after 221).
    this.#drop();
  }

  /** For diagnostics and tests: the current message's capabilities as last parsed. */
  get capabilities(): EhloCapabilities {
    return this.#caps;
  }

  get secure(): boolean {
    return this.#secure;
  }
}

const noStrayHandlers: NoStrayHandlers<RelayClient, State, ReplyCode | ReplyClass> = true;
void noStrayHandlers;

function defaultEnhanced(code: RelayErrorCode, status: Status): string {
  const cls = status === 'failed' ? '5' : '4';
  switch (code) {
    case 'RELAY_CONNECT_FAILED':
    case 'RELAY_CONNECT_TIMEOUT':
      return `${cls}.4.1`; // RFC 3463 X.4.1 no answer from host
    case 'RELAY_TLS_REQUIRED':
      return `${cls}.7.10`; // RFC 8098/7672 X.7.10 encryption needed
    case 'RELAY_TLS_FAILED':
      return `${cls}.7.5`; // X.7.5 cryptographic failure
    case 'RELAY_AUTH_FAILED':
      return `${cls}.7.8`; // RFC 4954 X.7.8 authentication credentials invalid
    case 'RELAY_PROTOCOL':
      return `${cls}.5.0`; // X.5.0 other protocol status
    case 'RELAY_INTERNAL':
    case 'RELAY_SOURCE_FAILED':
    case 'RELAY_ABORTED':
      return `${cls}.3.0`; // X.3.0 other mail system status
    default:
      return `${cls}.4.2`; // X.4.2 bad connection (timeouts, drops)
  }
}

function abortReason(signal: AbortSignal): string {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason.message;
  return reason === undefined ? 'aborted' : String(reason);
}
