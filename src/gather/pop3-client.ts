// The POP3 client is in charge of one session with a remote POP3 server (RFC 1939, CAPA RFC
// 2449, STLS RFC 2595, RESP-CODES RFC 2449 8 / RFC 3206) for gathering: log in, list UIDLs,
// retrieve messages one at a time, delete, QUIT. It knows nothing of the ledger or the store.
//
// It is an explicit state machine on core/state-machine.ts, modelled on the SMTP relay client:
// before each command we enter the state whose reply we then wait for, and the status line is
// dispatched as `do_${state}_${code}` where code is `OK` (`+OK`) or `ERR` (`-ERR`): the code
// pattern is /^(OK|ERR)$/; anything else goes to `do_default` (a protocol error). Multi-line
// answers (CAPA, UIDL, LIST, RETR) are read by a collector the OK handler installs, ending at
// the lone "." (dot-unstuffed, RFC 1939 3). Every state that waits on the network has a timer.
//
// Why our own rather than a library: the maintained npm POP3 clients (node-pop3, poplib) buffer
// whole listings as strings, give no typed errors for "wrong password" vs "server broken", and
// none follows our StateMachine conventions; the protocol subset gathering needs is small.
import net from 'node:net';
import tls from 'node:tls';
import { tlsHandshake } from '../core/connection.ts';
import { HearthError } from '../core/errors.ts';
import { LineReader, SocketWriter } from '../core/lines.ts';
import { named, newConnectionId } from '../core/log.ts';
import type { Logger } from '../core/log.ts';
import { StateMachine } from '../core/state-machine.ts';
import type { NoStrayHandlers } from '../core/state-machine.ts';

export const POP3_CODE_PATTERN = /^(OK|ERR)$/;
export const POP3_STATES = ['CONNECT', 'GREETING', 'CAPA', 'STLS', 'USER', 'PASS', 'STAT', 'UIDL', 'RETR', 'DELE', 'NOOP', 'QUIT', 'READY', 'CLOSED'] as const;
export type Pop3State = (typeof POP3_STATES)[number];
export type Pop3Code = 'OK' | 'ERR';

export type Pop3ErrorCode =
  | 'POP3_CONNECT_FAILED'
  | 'POP3_TIMEOUT'
  | 'POP3_CONNECTION_LOST'
  | 'POP3_TLS_FAILED'
  | 'POP3_TLS_REQUIRED'
  | 'POP3_AUTH_FAILED'
  | 'POP3_IN_USE'
  | 'POP3_REFUSED'
  | 'POP3_NO_UIDL'
  | 'POP3_PROTOCOL'
  | 'POP3_TOO_BIG'
  | 'POP3_ABORTED'
  | 'POP3_INTERNAL';

export class Pop3Error extends HearthError {
  declare readonly code: Pop3ErrorCode;
  /** The server's text, when it said something. */
  readonly serverText: string | undefined;
  constructor(code: Pop3ErrorCode, message: string, serverText?: string, options?: ErrorOptions) {
    super(code, message, options);
    this.serverText = serverText;
  }
}

export type Pop3Tls = 'implicit' | 'starttls' | 'none';
export type Pop3Options = {
  host: string;
  port: number;
  tls: Pop3Tls;
  rejectUnauthorized?: boolean;
  log: Logger;
  /** ms per network wait (connect, each reply, each line of a listing). Default 60 s. */
  timeoutMs?: number;
  /** Longest message accepted (bytes). Default 64 MiB. */
  maxMessage?: number;
  signal?: AbortSignal;
};

export type UidlEntry = { n: number; uidl: string };

const MAX_LINE = 64 * 1024;
const TRANSCRIPT_LINES = 20;

type Pending = { resolve(value: unknown): void; reject(err: Error): void };
type Collector = { line(buf: Buffer): void; end(): void; bytes: number };

export class Pop3Client extends StateMachine<Pop3State> {
  readonly #opts: Pop3Options;
  #socket: net.Socket | undefined;
  #reader: LineReader | undefined;
  #writer: SocketWriter | undefined;
  #pending: Pending | undefined;
  #collector: Collector | undefined;
  #capabilities = new Set<string>();
  #secure = false;
  #closedError: Pop3Error | undefined;
  #lastCommand = '';
  readonly #transcript: string[] = [];
  #onAbort: (() => void) | undefined;

  constructor(opts: Pop3Options) {
    const t = opts.timeoutMs ?? 60_000;
    const idle = Object.fromEntries(POP3_STATES.map((s) => [s, s === 'READY' || s === 'CLOSED' ? 0 : t])) as Record<Pop3State, number>;
    super('CONNECT', named(opts.log, 'gather-pop3', { cid: newConnectionId(), peer: `${opts.host}:${opts.port}` }), idle, { codePattern: POP3_CODE_PATTERN });
    this.stopTimer(); // armed when connect() starts
    this.#opts = opts;
  }

  get capabilities(): ReadonlySet<string> {
    return this.#capabilities;
  }

  get secure(): boolean {
    return this.#secure;
  }

  /** The last C:/S: lines (passwords redacted), for error reports. */
  get transcript(): string[] {
    return [...this.#transcript];
  }

  // ---- the caller's API: one command at a time ----------------------------------------------

  /** Connect, read the greeting, learn CAPA, upgrade with STLS when configured. */
  async connect(): Promise<void> {
    const o = this.#opts;
    const signal = o.signal;
    if (signal?.aborted) throw new Pop3Error('POP3_ABORTED', 'aborted before connecting');
    if (signal) {
      this.#onAbort = () => this.#fail(new Pop3Error('POP3_ABORTED', `aborted in state ${this.state}`));
      signal.addEventListener('abort', this.#onAbort, { once: true });
    }
    const greeting = this.#expect();
    this.transition('CONNECT', `connecting to ${o.host}:${o.port} (${o.tls})`);
    let socket: net.Socket;
    if (o.tls === 'implicit') {
      socket = tls.connect({ host: o.host, port: o.port, ...this.#tlsOptions() });
      socket.once('secureConnect', () => {
        this.#secure = true;
        this.transition('GREETING', 'TLS connected');
      });
    } else {
      socket = net.connect({ host: o.host, port: o.port });
      socket.once('connect', () => this.transition('GREETING', 'connected'));
    }
    socket.setNoDelay(true);
    this.#attach(socket);
    await greeting;
    await this.capa();
    if (o.tls === 'starttls') {
      if (!this.#capabilities.has('STLS')) throw this.#fail(new Pop3Error('POP3_TLS_REQUIRED', `${o.host} does not offer STLS, and this account requires TLS`));
      await this.#command('STLS', 'STLS');
      await this.#upgrade();
      // RFC 2595 4: capabilities may differ after TLS; ask again.
      await this.capa();
    }
  }

  async capa(): Promise<void> {
    const lines = (await this.#command('CAPA', 'CAPA')) as string[] | null;
    this.#capabilities = new Set((lines ?? []).map((l) => l.split(' ')[0].toUpperCase()));
  }

  async login(user: string, pass: string): Promise<void> {
    if (!this.#secure && !isLoopback(this.#socket?.remoteAddress ?? '')) {
      throw this.#fail(new Pop3Error('POP3_TLS_REQUIRED', `will not send the password for ${user} to ${this.#opts.host} without TLS`));
    }
    if (/[\r\n]/.test(user) || /[\r\n]/.test(pass)) throw new Pop3Error('POP3_AUTH_FAILED', 'user name or password contains a line break');
    await this.#command('USER', `USER ${user}`);
    await this.#command('PASS', `PASS ${pass}`, 'PASS [redacted]');
  }

  /** Message count and total size (STAT). */
  async stat(): Promise<{ count: number; size: number }> {
    return (await this.#command('STAT', 'STAT')) as { count: number; size: number };
  }

  /** Every message's number and unique id (UIDL), RFC 1939 7. */
  async uidl(): Promise<UidlEntry[]> {
    return (await this.#command('UIDL', 'UIDL')) as UidlEntry[];
  }

  /** One message, dot-unstuffed, with CRLF line ends. */
  async retr(n: number): Promise<Buffer> {
    return (await this.#command('RETR', `RETR ${n}`)) as Buffer;
  }

  async dele(n: number): Promise<void> {
    await this.#command('DELE', `DELE ${n}`);
  }

  async noop(): Promise<void> {
    await this.#command('NOOP', 'NOOP');
  }

  /** QUIT commits deletions (UPDATE state, RFC 1939 6); then the connection closes. */
  async quit(): Promise<void> {
    if (this.state === 'CLOSED') return;
    try {
      await this.#command('QUIT', 'QUIT');
    } finally {
      this.close();
    }
  }

  /** Drop the connection without QUIT: the server rolls back every DELE (RFC 1939 6). */
  close(): void {
    this.#cleanup();
    if (this.state !== 'CLOSED') this.transition('CLOSED', 'closed by us');
    this.stopTimer();
    this.#socket?.destroy();
  }

  // ---- handlers, in protocol order -----------------------------------------------------------

  do_GREETING_OK(): void {
    this.transition('READY', 'greeted');
    this.#settle(undefined);
  }

  do_GREETING_ERR(text: string): void {
    this.#fail(new Pop3Error('POP3_REFUSED', `${this.#opts.host} refused the connection: ${text}`, text));
  }

  do_CAPA_OK(): void {
    const lines: string[] = [];
    this.#collect((buf) => lines.push(buf.toString('latin1')), () => this.#ready(lines));
  }

  do_CAPA_ERR(): void {
    // RFC 2449: servers without CAPA answer -ERR; carry on with no known capabilities.
    this.#ready(null);
  }

  async do_STLS_OK(): Promise<void> {
    this.#ready(undefined);
  }

  do_STLS_ERR(text: string): void {
    this.#fail(new Pop3Error('POP3_TLS_FAILED', `${this.#opts.host} refused STLS: ${text}`, text));
  }

  do_USER_OK(): void {
    this.#ready(undefined);
  }

  do_USER_ERR(text: string): void {
    this.#authFailed(text);
  }

  do_PASS_OK(): void {
    this.#ready(undefined);
  }

  do_PASS_ERR(text: string): void {
    this.#authFailed(text);
  }

  do_STAT_OK(_text: string, line?: string): void {
    const m = /^\+OK (\d+) (\d+)/.exec(line ?? '');
    if (!m) return void this.#fail(this.#protocol(`bad STAT reply ${JSON.stringify((line ?? '').slice(0, 80))}`));
    this.#ready({ count: Number(m[1]), size: Number(m[2]) });
  }

  do_UIDL_OK(): void {
    const entries: UidlEntry[] = [];
    let bad: string | undefined;
    this.#collect(
      (buf) => {
        // RFC 1939 7: "n uid", uid is 1-70 characters 0x21-0x7E.
        const m = /^(\d+) ([\x21-\x7e]{1,70})$/.exec(buf.toString('latin1').trimEnd());
        if (m) entries.push({ n: Number(m[1]), uidl: m[2] });
        else bad ??= buf.toString('latin1').slice(0, 80);
      },
      () => {
        if (bad !== undefined) this.#fail(this.#protocol(`bad UIDL line ${JSON.stringify(bad)}`));
        else this.#ready(entries);
      },
    );
  }

  do_UIDL_ERR(text: string): void {
    // Without UIDL we cannot tell old mail from new: refuse rather than duplicate.
    this.#reject(new Pop3Error('POP3_NO_UIDL', `${this.#opts.host} does not support UIDL (${text}); hearth cannot tell which messages it already collected`, text));
  }

  do_RETR_OK(): void {
    const max = this.#opts.maxMessage ?? 64 * 1024 * 1024;
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    this.#collect(
      (buf) => {
        size += buf.length + 2;
        if (size > max) tooBig = true;
        if (tooBig) return;
        chunks.push(buf, CRLF);
      },
      () => {
        if (tooBig) this.#reject(new Pop3Error('POP3_TOO_BIG', `message of more than ${max} bytes`));
        else this.#ready(Buffer.concat(chunks, size));
      },
    );
  }

  do_RETR_ERR(text: string): void {
    this.#reject(new Pop3Error('POP3_REFUSED', `RETR refused: ${text}`, text));
  }

  do_DELE_OK(): void {
    this.#ready(undefined);
  }

  do_DELE_ERR(text: string): void {
    this.#reject(new Pop3Error('POP3_REFUSED', `DELE refused: ${text}`, text));
  }

  do_NOOP_OK(): void {
    this.#ready(undefined);
  }

  do_QUIT_OK(): void {
    this.transition('CLOSED', 'QUIT accepted');
    this.#settle(undefined);
  }

  do_QUIT_ERR(text: string): void {
    // RFC 1939 6: -ERR to QUIT means some deletions were not committed.
    this.#reject(new Pop3Error('POP3_REFUSED', `QUIT refused (deletions not committed): ${text}`, text));
  }

  /** A status line nobody expects here (or a line that is not +OK/-ERR at all). */
  do_default(code: string, text?: string): void {
    this.#fail(this.#protocol(`unexpected ${POP3_CODE_PATTERN.test(code) ? `${code} reply` : 'line'} ${JSON.stringify((text ?? code).slice(0, 80))} in state ${this.state}`));
  }

  onTimeout(): void {
    if (this.state === 'CLOSED' || this.state === 'READY') return;
    this.#fail(new Pop3Error('POP3_TIMEOUT', `no answer from ${this.#opts.host} in state ${this.state} within ${this.#opts.timeoutMs ?? 60_000} ms`));
  }

  onHandlerError(err: unknown): void {
    this.#fail(new Pop3Error('POP3_INTERNAL', `internal error: ${(err as Error)?.message ?? String(err)}`, undefined, { cause: err }));
  }

  // ---- plumbing ------------------------------------------------------------------------------

  #tlsOptions(): tls.ConnectionOptions {
    const host = this.#opts.host;
    return { servername: net.isIP(host) ? undefined : host, rejectUnauthorized: this.#opts.rejectUnauthorized ?? true, minVersion: 'TLSv1.2' };
  }

  #attach(socket: net.Socket): void {
    this.#socket = socket;
    this.#writer = new SocketWriter(socket);
    const reader = new LineReader({
      maxLine: MAX_LINE,
      onLine: (line) => this.#onLine(line),
      onOverflow: () => this.#fail(this.#protocol(`line longer than ${MAX_LINE} bytes`)),
      onPressure: (high) => (high ? socket.pause() : socket.resume()),
    });
    this.#reader = reader;
    socket.on('data', (chunk: Buffer) => {
      if (socket === this.#socket) reader.push(chunk);
    });
    let socketError: Error | undefined;
    socket.on('error', (err: Error) => {
      socketError ??= err;
    });
    socket.on('close', () => {
      if (socket !== this.#socket || this.state === 'CLOSED') return;
      const why = socketError ? `: ${socketError.message}` : '';
      if (this.state === 'CONNECT') {
        const tlsFailed = this.#opts.tls === 'implicit' && socketError && /certificate|SSL|TLS|self.signed/i.test(socketError.message);
        this.#fail(new Pop3Error(tlsFailed ? 'POP3_TLS_FAILED' : 'POP3_CONNECT_FAILED', `cannot connect to ${this.#opts.host}:${this.#opts.port}${why}`));
      } else {
        this.#fail(new Pop3Error('POP3_CONNECTION_LOST', `${this.#opts.host} closed the connection in state ${this.state}${why}`));
      }
    });
  }

  async #upgrade(): Promise<void> {
    const plain = this.#socket!;
    // RFC 2595 4: nothing the server sent before the handshake may be acted on.
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    plain.on('error', () => undefined);
    this.#reader?.discardBuffered();
    this.transition('STLS', 'TLS handshake');
    const secure = tls.connect({ socket: plain, ...this.#tlsOptions() });
    this.#attach(secure);
    try {
      await tlsHandshake(secure);
    } catch (err) {
      throw this.#fail(new Pop3Error('POP3_TLS_FAILED', `TLS handshake with ${this.#opts.host} failed: ${(err as Error).message}`));
    }
    this.#secure = true;
    this.transition('READY', 'TLS established');
  }

  #onLine(line: Buffer): void {
    const collector = this.#collector;
    if (collector) {
      this.rearm(); // a long listing keeps the connection alive line by line
      if (line.length === 1 && line[0] === DOT) {
        this.#collector = undefined;
        collector.end();
        return;
      }
      // RFC 1939 3: a line starting with "." was byte-stuffed.
      collector.line(line.length > 0 && line[0] === DOT ? line.subarray(1) : line);
      return;
    }
    const text = line.toString('latin1');
    this.#record(`S: ${text}`);
    const m = /^(\+OK|-ERR)(?:\s(.*))?$/i.exec(text);
    const code = m ? (m[1].toUpperCase() === '+OK' ? 'OK' : 'ERR') : 'BAD LINE';
    // Handlers get the text after the status, and the whole line (STAT parses it).
    void this.dispatch(code, m?.[2] ?? text, text);
  }

  #collect(onLine: (buf: Buffer) => void, onEnd: () => void): void {
    this.#collector = { line: onLine, end: onEnd, bytes: 0 };
  }

  /** Enter `state`, send `line`, and wait for the handler to settle. */
  #command(state: Pop3State, line: string, shown: string = line): Promise<unknown> {
    if (this.#closedError) return Promise.reject(this.#closedError);
    if (this.state !== 'READY') return Promise.reject(new Pop3Error('POP3_INTERNAL', `command ${shown} while in state ${this.state}`));
    const p = this.#expect();
    this.#lastCommand = shown;
    this.transition(state, shown.split(' ')[0]);
    this.#record(`C: ${shown}`);
    void this.#writer!.writeLine(line);
    return p;
  }

  #expect(): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.#pending = { resolve, reject };
    });
  }

  /** The command succeeded: back to READY (our turn) with `value`. */
  #ready(value: unknown): void {
    this.transition('READY', 'reply');
    this.#settle(value);
  }

  #settle(value: unknown): void {
    const p = this.#pending;
    this.#pending = undefined;
    p?.resolve(value);
  }

  /** The command failed but the session is usable (e.g. RETR of a vanished message). */
  #reject(err: Pop3Error): void {
    this.transition('READY', err.code);
    const p = this.#pending;
    this.#pending = undefined;
    p?.reject(err);
  }

  #authFailed(text: string): void {
    // RFC 3206: [IN-USE] is another session holding the maildrop, not a bad password.
    if (/^\[IN-USE\]/i.test(text)) this.#fail(new Pop3Error('POP3_IN_USE', `${this.#opts.host} says the mailbox is in use by another session: ${text}`, text));
    else if (/^\[SYS\//i.test(text)) this.#fail(new Pop3Error('POP3_REFUSED', `${this.#opts.host} could not open the mailbox: ${text}`, text));
    else this.#fail(new Pop3Error('POP3_AUTH_FAILED', `${this.#opts.host} refused the login: ${text}`, text));
  }

  #protocol(what: string): Pop3Error {
    return new Pop3Error('POP3_PROTOCOL', `${this.#opts.host}: ${what} (after ${this.#lastCommand || 'connecting'})`);
  }

  /** A session-level failure: reject what is waiting, drop the connection. Returns the error. */
  #fail(err: Pop3Error): Pop3Error {
    if (this.#closedError) return this.#closedError;
    this.#closedError = err;
    this.log.info({ code: err.code, state: this.state }, err.message);
    this.#record(`-- ${err.message}`);
    const p = this.#pending;
    this.#pending = undefined;
    this.#collector = undefined;
    this.#cleanup();
    if (this.state !== 'CLOSED') this.transition('CLOSED', err.code);
    this.stopTimer();
    this.#socket?.destroy();
    p?.reject(err);
    return err;
  }

  #cleanup(): void {
    if (this.#onAbort) this.#opts.signal?.removeEventListener('abort', this.#onAbort);
    this.#onAbort = undefined;
  }

  #record(line: string): void {
    this.#transcript.push(line.length > 200 ? `${line.slice(0, 200)}…` : line);
    if (this.#transcript.length > TRANSCRIPT_LINES) this.#transcript.shift();
    this.log.trace({ line }, 'pop3');
  }
}

const noStrayHandlers: NoStrayHandlers<Pop3Client, Pop3State, Pop3Code> = true;
void noStrayHandlers;

const DOT = 0x2e;
const CRLF = Buffer.from('\r\n');

function isLoopback(addr: string): boolean {
  return addr.startsWith('127.') || addr === '::1' || addr.startsWith('::ffff:127.');
}
