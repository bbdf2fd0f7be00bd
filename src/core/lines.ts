// Framing: bytes to lines and IMAP literals (LineReader), replies to bytes with backpressure
// (SocketWriter), and dot-stuffing for POP3 RETR and the SMTP client (dotStuff). Every
// buffer here is bounded: a hostile peer cannot make us hold more than a few lines.
import { Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import type { Socket } from 'node:net';
import { HearthError } from './errors.ts';

type Emitter = { once(event: string, fn: () => void): unknown; off(event: string, fn: () => void): unknown };

/**
 * Resolves on the first of `events` (e.g. 'drain' or 'close': a stream that is destroyed never
 * drains), and removes all its listeners then, so waiting in a loop piles none up.
 */
export function firstOf(emitter: Emitter, events: readonly string[]): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = (): void => {
      for (const e of events) emitter.off(e, done);
      resolve();
    };
    for (const e of events) emitter.once(e, done);
  });
}

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const CRLF = Buffer.from('\r\n');
const EMPTY = Buffer.alloc(0);

export interface LineReaderOptions {
  /** Longest line accepted, in bytes, not counting the CRLF/LF terminator. */
  maxLine: number;
  /** One line without its terminator. May call pause(), resume() or readLiteral(). */
  onLine(line: Buffer): void;
  /** Called once per overlong line; the rest of that line is discarded. */
  onOverflow(): void;
  /**
   * Bytes buffered (pipelined while paused) above which `onPressure(true)` is called, so the
   * owner can stop reading the socket; `onPressure(false)` when back under half. Default
   * `max(64 KiB, 4 * maxLine)`.
   */
  highWater?: number;
  onPressure?(high: boolean): void;
  /** After `end()`, once every complete buffered line has been delivered. */
  onEnd?(): void;
}

interface Literal {
  remaining: number;
  onData(chunk: Buffer): void;
  resolve(): void;
  reject(err: Error): void;
}

/**
 * CRLF line splitter (a lone LF also ends a line, for POP3/IMAP client leniency) with a
 * length limit, pause/resume for one-command-at-a-time sessions, and a counted-bytes mode
 * for IMAP literals.
 */
export class LineReader {
  readonly #opts: LineReaderOptions;
  readonly #highWater: number;
  #buf: Buffer = EMPTY;
  /** Bytes of #buf already known to contain no LF. */
  #scanned = 0;
  #discarding = false;
  #paused = false;
  #draining = false;
  #pressure = false;
  #ended = false;
  #endReported = false;
  #literal: Literal | undefined;

  constructor(opts: LineReaderOptions) {
    this.#opts = opts;
    this.#highWater = opts.highWater ?? Math.max(64 * 1024, 4 * opts.maxLine);
  }

  get paused(): boolean {
    return this.#paused;
  }

  /** Bytes received and not yet delivered. */
  get buffered(): number {
    return this.#buf.length;
  }

  push(chunk: Buffer): void {
    if (this.#ended || chunk.length === 0) return;
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    this.#drain();
  }

  /** Stop delivering lines (they stay buffered) until resume(). Literal bytes still flow. */
  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#drain();
  }

  /** The peer sent FIN: deliver what is complete, then call onEnd. A partial line is dropped. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#drain();
  }

  /**
   * Drop everything buffered and not yet delivered, returning the byte count. For STARTTLS:
   * RFC 3207 / RFC 2595 — commands pipelined after STARTTLS must not be acted on after the
   * handshake.
   */
  discardBuffered(): number {
    const n = this.#buf.length;
    this.#buf = EMPTY;
    this.#scanned = 0;
    this.#setPressure();
    return n;
  }

  /**
   * Switch to counted-bytes mode: the next `n` bytes go to `onData` as they arrive (never
   * more than `n`), then back to lines. Bytes flow even while line delivery is paused, since
   * the caller asked for them. Rejects with `LINE_EOF` if the peer ends first.
   */
  readLiteral(n: number, onData: (chunk: Buffer) => void): Promise<void> {
    if (this.#literal) return Promise.reject(new HearthError('LINE_LITERAL_BUSY', 'a literal is already being read'));
    if (!Number.isSafeInteger(n) || n < 0) return Promise.reject(new HearthError('LINE_LITERAL_SIZE', `bad literal size ${n}`));
    if (n === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#literal = { remaining: n, onData, resolve, reject };
      // Called from inside onLine: the drain loop already running will switch modes. From
      // outside (after an await), start delivering what is buffered now.
      if (!this.#draining) queueMicrotask(() => this.#drain());
    });
  }

  #drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    try {
      for (;;) {
        const lit = this.#literal;
        if (lit) {
          if (this.#buf.length === 0) break;
          const take = Math.min(lit.remaining, this.#buf.length);
          const chunk = this.#buf.subarray(0, take);
          this.#buf = this.#buf.subarray(take);
          this.#scanned = 0;
          lit.remaining -= take;
          if (lit.remaining === 0) this.#literal = undefined;
          try {
            lit.onData(chunk);
          } finally {
            if (lit.remaining === 0) lit.resolve();
          }
          continue;
        }
        if (this.#discarding) {
          const lf = this.#buf.indexOf(LF);
          if (lf < 0) {
            this.#buf = EMPTY;
            break;
          }
          this.#buf = this.#buf.subarray(lf + 1);
          this.#scanned = 0;
          this.#discarding = false;
          continue;
        }
        if (this.#paused) break;
        const lf = this.#buf.indexOf(LF, this.#scanned);
        if (lf < 0) {
          // +1: the CR of a maximal line may be here while its LF has not arrived.
          if (this.#buf.length > this.#opts.maxLine + 1) {
            this.#buf = EMPTY;
            this.#scanned = 0;
            this.#discarding = true;
            this.#opts.onOverflow();
            continue;
          }
          this.#scanned = this.#buf.length;
          break;
        }
        const end = lf > 0 && this.#buf[lf - 1] === CR ? lf - 1 : lf;
        const line = this.#buf.subarray(0, end);
        this.#buf = this.#buf.subarray(lf + 1);
        this.#scanned = 0;
        if (line.length > this.#opts.maxLine) this.#opts.onOverflow();
        else this.#opts.onLine(line);
      }
    } finally {
      this.#draining = false;
    }
    // Give the memory back: a subarray would keep a large concatenated chunk alive.
    if (this.#buf.length === 0) this.#buf = EMPTY;
    this.#setPressure();
    if (this.#ended) this.#finishIfIdle();
  }

  #setPressure(): void {
    const onPressure = this.#opts.onPressure;
    if (!this.#pressure && this.#buf.length >= this.#highWater) {
      this.#pressure = true;
      onPressure?.(true);
    } else if (this.#pressure && this.#buf.length < this.#highWater / 2) {
      this.#pressure = false;
      onPressure?.(false);
    }
  }

  #finishIfIdle(): void {
    // The drain loop has fed the literal everything buffered: no more bytes will come.
    if (this.#literal) {
      const lit = this.#literal;
      this.#literal = undefined;
      lit.reject(new HearthError('LINE_EOF', `connection ended with ${lit.remaining} literal bytes outstanding`));
    }
    if (this.#endReported) return;
    // Paused means a command is still being handled (and lines may wait behind it): report
    // the end only after resume() has let everything complete be delivered.
    if (this.#paused) return;
    this.#endReported = true;
    this.#buf = EMPTY;
    this.#opts.onEnd?.();
  }
}

/** The subset of net.Socket / tls.TLSSocket SocketWriter needs (tests may fake it). */
type WritableSocket = Pick<Socket, 'write' | 'end' | 'once' | 'on' | 'off' | 'destroyed' | 'writableEnded' | 'writableFinished'>;

/**
 * Writes replies with backpressure: `await write()` resolves at once when the socket took
 * the data, otherwise after 'drain'. Never throws: after the peer reset or we destroyed the
 * socket, writes are dropped and resolve (the session will see 'close' and stop).
 */
export class SocketWriter {
  readonly #socket: WritableSocket;
  #drain: Promise<void> | undefined;
  #error: Error | undefined;

  constructor(socket: WritableSocket) {
    this.#socket = socket;
    // An EPIPE/ECONNRESET on write is emitted as 'error'; unheard, it would kill the process.
    socket.on('error', (err: Error) => {
      this.#error ??= err;
    });
  }

  /** The first socket error seen, if any. */
  get error(): Error | undefined {
    return this.#error;
  }

  get closed(): boolean {
    return this.#socket.destroyed || this.#socket.writableEnded;
  }

  write(data: string | Buffer): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.#socket.write(data)) return Promise.resolve();
    return this.#waitDrain();
  }

  writeLine(line: string | Buffer): Promise<void> {
    return this.write(typeof line === 'string' ? `${line}\r\n` : Buffer.concat([line, CRLF]));
  }

  /** End our side after everything written so far is flushed; resolves when done or closed. */
  end(last?: string | Buffer): Promise<void> {
    const socket = this.#socket;
    if (socket.destroyed || socket.writableFinished) return Promise.resolve();
    const ended = firstOf(socket, ['finish', 'close']);
    if (!socket.writableEnded) {
      if (last === undefined) socket.end();
      else socket.end(last);
    }
    return ended;
  }

  #waitDrain(): Promise<void> {
    // One shared waiter however many writes are queued (no listener pile-up).
    this.#drain ??= firstOf(this.#socket, ['drain', 'close']).then(() => {
      this.#drain = undefined;
    });
    return this.#drain;
  }
}

/**
 * Turns a message into a dot-stuffed body ending with `.\r\n` (RFC 5321 4.5.2, RFC 1939 3):
 * every line end becomes CRLF (bare LF and bare CR are normalised: SMTP smuggling relies on
 * them), a line starting with `.` gets another `.`, and an unterminated last line is
 * terminated. Fed chunk by chunk; chunk boundaries may fall anywhere.
 */
export class DotStuffer {
  #atLineStart = true;
  #pendingCR = false;

  push(buf: Buffer): Buffer {
    const out: Buffer[] = [];
    const n = buf.length;
    let i = 0;
    let nextCR = -2;
    let nextLF = -2;
    while (i < n) {
      if (this.#pendingCR) {
        this.#pendingCR = false;
        out.push(CRLF);
        this.#atLineStart = true;
        if (buf[i] === LF) {
          i++;
          continue;
        }
      }
      if (this.#atLineStart) {
        this.#atLineStart = false;
        if (buf[i] === DOT) out.push(DOT_BUF);
      }
      if (nextCR !== -1 && nextCR < i) nextCR = buf.indexOf(CR, i);
      if (nextLF !== -1 && nextLF < i) nextLF = buf.indexOf(LF, i);
      let j = nextCR === -1 ? nextLF : nextLF === -1 ? nextCR : Math.min(nextCR, nextLF);
      if (j === -1) j = n;
      if (j > i) out.push(buf.subarray(i, j));
      if (j === n) break;
      if (buf[j] === LF) {
        out.push(CRLF);
        this.#atLineStart = true;
      } else {
        this.#pendingCR = true;
      }
      i = j + 1;
    }
    return out.length === 1 ? out[0] : Buffer.concat(out);
  }

  /** The terminating dot (after a CRLF if the last line lacked one). */
  end(): Buffer {
    return this.#pendingCR || !this.#atLineStart ? FINAL_WITH_CRLF : FINAL;
  }
}

/** A whole small message, dot-stuffed in one go (no stream machinery per message). */
export function dotStuffBuffer(message: Buffer): Buffer {
  const stuffer = new DotStuffer();
  return Buffer.concat([stuffer.push(message), stuffer.end()]);
}

/** DotStuffer as a Transform, for streaming a large message. */
export function dotStuff(): Transform {
  const stuffer = new DotStuffer();
  return new Transform({
    transform(chunk: Buffer | string, _enc: BufferEncoding, callback: TransformCallback): void {
      callback(null, stuffer.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk));
    },
    flush(callback: TransformCallback): void {
      callback(null, stuffer.end());
    },
  });
}

const DOT_BUF = Buffer.from('.');
const FINAL = Buffer.from('.\r\n');
const FINAL_WITH_CRLF = Buffer.from('\r\n.\r\n');

export interface ServeLinesOptions {
  maxLine: number;
  /**
   * One line. If it returns a promise, line delivery pauses until it settles (one command at
   * a time; pipelined lines wait, bounded). If it returns nothing, the next line follows at
   * once (e.g. an IMAP command still being assembled around literals).
   */
  onLine(line: Buffer): void | Promise<void>;
  onOverflow(): void | Promise<void>;
  /** The peer sent FIN and every line before it has been handled; our side ends after. */
  onEnd?(): void | Promise<void>;
  /** A handler rejected (a bug: dispatch never rejects). The socket is destroyed after. */
  onError?(err: unknown): void;
}

export interface LineSession {
  reader: LineReader;
  writer: SocketWriter;
}

/**
 * Glue a socket to a LineReader and SocketWriter. The socket should come from a server with
 * `allowHalfOpen: true`, so a reply owed after the client's FIN is still written: on FIN,
 * queued lines are handled, then `onEnd`, then our side is ended after pending writes.
 */
export function serveLines(socket: Socket, opts: ServeLinesOptions): LineSession {
  const writer = new SocketWriter(socket);
  const fail = (err: unknown): void => {
    opts.onError?.(err);
    socket.destroy();
  };
  const reader: LineReader = new LineReader({
    maxLine: opts.maxLine,
    onLine(line) {
      let result: void | Promise<void>;
      try {
        result = opts.onLine(line);
      } catch (err) {
        fail(err);
        return;
      }
      if (result && typeof result.then === 'function') {
        reader.pause();
        result.then(
          () => reader.resume(),
          (err: unknown) => fail(err),
        );
      }
    },
    onOverflow() {
      const result = opts.onOverflow();
      if (result && typeof result.then === 'function') {
        reader.pause();
        result.then(
          () => reader.resume(),
          (err: unknown) => fail(err),
        );
      }
    },
    onPressure(high) {
      if (high) socket.pause();
      else socket.resume();
    },
    onEnd() {
      void (async () => {
        try {
          await opts.onEnd?.();
        } catch (err) {
          opts.onError?.(err);
        }
        await writer.end();
      })();
    },
  });
  socket.on('data', (chunk: Buffer) => reader.push(chunk));
  socket.on('end', () => reader.end());
  return { reader, writer };
}
