// A line-oriented server connection that can switch to TLS in the middle (POP3 STLS, IMAP
// STARTTLS). It owns the socket, the LineReader and the SocketWriter, and swaps all three
// on upgrade. Anything the client pipelined after the STARTTLS command, before the
// handshake, is thrown away (RFC 3207 / RFC 2595: it was not protected by TLS, and honouring
// it is the STARTTLS command-injection hole).
import type { Socket } from 'node:net';
import tls from 'node:tls';
import type { SecureContext } from 'node:tls';
import { LineReader, SocketWriter } from './lines.ts';

/** Passwords over an unencrypted connection: never, only from loopback, or always. */
export type PlaintextPolicy = 'never' | 'loopback' | 'always';

export type LineConnectionHandlers = {
  maxLine: number;
  /** One line; a returned promise holds the next line until it settles (one command at a time). */
  onLine(line: Buffer): void | Promise<void>;
  onOverflow(): void | Promise<void>;
  /** The connection is gone (closed by either side, or failed). Called once. */
  onClose(): void;
  onError?(err: unknown): void;
};

export class LineConnection {
  socket: Socket;
  reader!: LineReader;
  writer!: SocketWriter;
  readonly remoteAddress: string;
  /** Picks a certificate by the name the client asks for at STARTTLS (set by the server). */
  sni: ((name: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void) | undefined;
  readonly #h: LineConnectionHandlers;
  #secure: boolean;
  #closed = false;
  #upgrading = false;

  constructor(socket: Socket, handlers: LineConnectionHandlers, opts: { secure: boolean }) {
    this.socket = socket;
    this.remoteAddress = normaliseAddress(socket.remoteAddress ?? '');
    this.#h = handlers;
    this.#secure = opts.secure;
    this.#attach(socket);
  }

  get secure(): boolean {
    return this.#secure;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Is the peer on this machine? (plaintext logins may be allowed there) */
  get isLoopback(): boolean {
    return this.remoteAddress === '::1' || this.remoteAddress.startsWith('127.');
  }

  #attach(socket: Socket): void {
    const writer = new SocketWriter(socket);
    const reader: LineReader = new LineReader({
      maxLine: this.#h.maxLine,
      onLine: (line) => this.#run(reader, () => this.#h.onLine(line)),
      onOverflow: () => this.#run(reader, () => this.#h.onOverflow()),
      onPressure: (high) => (high ? socket.pause() : socket.resume()),
      onEnd: () => void writer.end(),
    });
    this.reader = reader;
    this.writer = writer;
    socket.on('data', (chunk: Buffer) => {
      if (!this.#upgrading) reader.push(chunk);
    });
    socket.on('end', () => {
      if (!this.#upgrading) reader.end();
    });
    socket.on('close', () => {
      if (!this.#upgrading) this.#finish();
    });
    socket.on('error', () => undefined);
  }

  #run(reader: LineReader, fn: () => void | Promise<void>): void {
    let result: void | Promise<void>;
    try {
      result = fn();
    } catch (err) {
      this.#fail(err);
      return;
    }
    if (result && typeof result.then === 'function') {
      reader.pause();
      result.then(
        () => {
          if (this.reader === reader) reader.resume();
        },
        (err: unknown) => this.#fail(err),
      );
    }
  }

  #fail(err: unknown): void {
    this.#h.onError?.(err);
    this.socket.destroy();
  }

  #finish(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#h.onClose();
  }

  /**
   * Call after writing the "go ahead" reply to STLS/STARTTLS. Discards whatever the client
   * pipelined, then runs the TLS handshake on the same TCP connection. Rejects (and closes)
   * if the handshake fails.
   */
  async startTls(context: SecureContext, timeoutMs = 30_000): Promise<void> {
    const plain = this.socket;
    this.#upgrading = true;
    this.reader.discardBuffered();
    this.reader.pause();
    plain.removeAllListeners('data');
    plain.removeAllListeners('end');
    const secure = new tls.TLSSocket(plain, { isServer: true, secureContext: context, SNICallback: this.sni });
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('TLS handshake timed out')), timeoutMs);
        secure.once('secure', () => {
          clearTimeout(timer);
          resolve();
        });
        secure.once('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        secure.once('close', () => {
          clearTimeout(timer);
          reject(new Error('connection closed during the TLS handshake'));
        });
      });
    } catch (err) {
      this.#upgrading = false;
      secure.destroy();
      plain.destroy();
      this.#finish();
      throw err;
    }
    this.socket = secure;
    this.#secure = true;
    this.#upgrading = false;
    this.#attach(secure);
  }

  /** Write a last reply, then close our side. */
  async close(last?: string): Promise<void> {
    await this.writer.end(last);
    this.socket.destroy();
  }
}

/** May a password cross this connection under `policy`? Always once it is TLS. */
export function plaintextAllowed(conn: Pick<LineConnection, 'secure' | 'isLoopback'>, policy: PlaintextPolicy): boolean {
  if (conn.secure) return true;
  return policy === 'always' || (policy === 'loopback' && conn.isLoopback);
}

export function normaliseAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

/**
 * The client's side of STARTTLS (SMTP relay, POP3 STLS): settles when the TLS handshake on an
 * upgraded socket ends. Rejects on a socket error, and when the connection closes first, so a
 * timeout or abort that destroys the socket mid-handshake does not leave the caller waiting.
 */
export function tlsHandshake(secure: tls.TLSSocket): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    secure.once('secureConnect', () => resolve());
    secure.once('error', reject);
    secure.once('close', () => reject(new Error('connection closed during the TLS handshake')));
  });
}
