// A listener for line-based protocols (POP3, IMAP): plain with optional STARTTLS, or implicit
// TLS (RFC 8314); a cap on connections per client address and in total; one session object
// per connection, built by the protocol's factory; and a graceful close that asks every
// session to finish. The protocol folders supply only the session and its farewell line.
import net from 'node:net';
import tls from 'node:tls';
import type { SecureContext } from 'node:tls';
import { LineConnection, normaliseAddress } from './connection.ts';
import type { PlaintextPolicy } from './connection.ts';
import { ConnectionCounter } from './limits.ts';
import { newConnectionId } from './log.ts';
import type { Logger } from './log.ts';
import type { LoginLimiter } from './login-limiter.ts';

/** What the server needs from a session. */
export type LineSessionLike = {
  greet(): Promise<void>;
  onLine(line: Buffer): Promise<void>;
  onOverflow(): Promise<void>;
  /** The connection is gone; release whatever the session holds. */
  onClosed(): void;
  /** Server shutdown: finish or abandon the session politely. */
  shutdown(): Promise<void>;
};

/** How long close() lets sessions say goodbye before cutting the connections that remain. */
const CLOSE_GRACE_MS = 5_000;

/** The options every line-protocol session (POP3, IMAP) takes: who we are, its backend, the login policy. */
export type LineSessionOptions<Backend> = {
  hostname: string;
  log: Logger;
  backend: Backend;
  limiter: LoginLimiter;
  plaintext: PlaintextPolicy;
  /** Offered (IMAP STARTTLS, POP3 STLS) when set and the connection is not yet secure. */
  tlsContext?: SecureContext;
};

/** What a protocol's server takes besides its session options (POP3, IMAP). */
export type LineServiceOptions = {
  log: Logger;
  tls: 'plain' | 'starttls' | 'implicit';
  /** Certificate and key (PEM) for STARTTLS and implicit TLS. */
  tlsCredentials?: { key: Buffer; cert: Buffer };
  maxLine: number;
  connectionsPerIp: number;
  maxConnections: number;
};

export type LineServerOptions<S extends LineSessionLike> = LineServiceOptions & {
  /** The line sent to a client over its address's connection cap, before closing. */
  tooManyConnections: string;
  /** Builds a session; `tlsContext` is set when the session may offer STARTTLS. */
  createSession(conn: LineConnection, log: Logger, tlsContext: SecureContext | undefined): S;
};

export class LineServer<S extends LineSessionLike> {
  readonly #opts: LineServerOptions<S>;
  readonly #server: net.Server;
  readonly #perIp: ConnectionCounter;
  readonly #sessions = new Set<S>();
  readonly #connections = new Set<LineConnection>();
  /** Every accepted TCP socket, including those whose TLS handshake never finished. */
  readonly #rawSockets = new Set<net.Socket>();
  #tlsContext: SecureContext | undefined;
  // --- ops (issue 9): certificate reload and SNI ---
  #sni: ((name: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void) | undefined;

  constructor(opts: LineServerOptions<S>) {
    this.#opts = opts;
    this.#perIp = new ConnectionCounter({ maxPerKey: opts.connectionsPerIp, maxTotal: opts.maxConnections });
    const creds = opts.tlsCredentials;
    // One context per listener, shared by every STARTTLS session (a SecureContext per connection
    // would cost an SSL_CTX each). Implicit TLS uses the tls.Server's own, so none is made here.
    this.#tlsContext = creds && opts.tls === 'starttls' ? tls.createSecureContext({ key: creds.key, cert: creds.cert, minVersion: 'TLSv1.2' }) : undefined;
    if (opts.tls === 'implicit') {
      if (!creds) throw new Error('implicit TLS needs a certificate');
      // SNICallback answering undefined keeps the default context (the one setSecureContext swaps).
      const SNICallback = (name: string, cb: (err: Error | null, ctx?: SecureContext) => void) => (this.#sni ? this.#sni(name, cb) : cb(null, undefined));
      // A handshake gets 20 s (not Node's 120 s), so a silent client cannot park a socket.
      this.#server = tls.createServer({ key: creds.key, cert: creds.cert, allowHalfOpen: true, minVersion: 'TLSv1.2', SNICallback, handshakeTimeout: 20_000 }, (s) => this.#accept(s, true));
      this.#server.on('tlsClientError', (err) => opts.log.debug({ err: err.message }, 'TLS handshake failed'));
    } else {
      this.#server = net.createServer({ allowHalfOpen: true }, (s) => this.#accept(s, false));
    }
    this.#server.on('connection', (raw: net.Socket) => {
      this.#rawSockets.add(raw);
      raw.once('close', () => this.#rawSockets.delete(raw));
    });
  }

  listen(port: number, host: string): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, host, () => {
        this.#server.off('error', reject);
        const a = this.#server.address() as net.AddressInfo;
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  /**
   * A new certificate (ops, issue 9): later handshakes and later STARTTLS sessions use it;
   * connections already open keep theirs. `sni` picks a context by server name (implicit TLS).
   */
  setTlsCredentials(creds: { key: Buffer; cert: Buffer }, sni?: (name: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void): void {
    const options = { key: creds.key, cert: creds.cert, minVersion: 'TLSv1.2' as const };
    if (this.#opts.tls === 'starttls') this.#tlsContext = tls.createSecureContext(options);
    this.#sni = sni;
    if (this.#server instanceof tls.Server) this.#server.setSecureContext(options);
  }

  /** The listening socket server (ops: connection counting). */
  get netServer(): net.Server {
    return this.#server;
  }
  // --- end of ops ---

  /** Sessions open now (for tests, status and metrics). */
  get sessions(): number {
    return this.#sessions.size;
  }

  /** Stop accepting, and let every session finish (or say goodbye). */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    const polite = Promise.all([...this.#sessions].map((s) => s.shutdown()));
    // A peer that vanished without a FIN (or a TLS client that went away after the handshake)
    // would hold shutdown forever: after a grace period, whatever is left is cut.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([polite, new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_GRACE_MS)))]);
    clearTimeout(timer);
    for (const conn of this.#connections) conn.socket.destroy();
    // Sockets still in (or stuck after) a TLS handshake never became connections.
    for (const raw of this.#rawSockets) raw.destroy();
    await closed;
  }

  #accept(socket: net.Socket, secure: boolean): void {
    const peer = normaliseAddress(socket.remoteAddress ?? '');
    const log = this.#opts.log.child({ cid: newConnectionId(), peer });
    socket.setNoDelay(true);
    if (!this.#perIp.acquire(peer)) {
      log.warn('too many connections from one address');
      socket.on('error', () => undefined);
      socket.end(`${this.#opts.tooManyConnections}\r\n`);
      return;
    }
    let session: S | undefined;
    const conn = new LineConnection(
      socket,
      {
        maxLine: this.#opts.maxLine,
        onLine: (line) => session!.onLine(line),
        onOverflow: () => session!.onOverflow(),
        onClose: () => {
          this.#connections.delete(conn);
          this.#perIp.release(peer);
          if (session) {
            session.onClosed();
            this.#sessions.delete(session);
          }
          log.debug('connection closed');
        },
        onError: (err) => log.error({ err }, 'connection failed'),
      },
      { secure },
    );
    this.#connections.add(conn);
    // STARTTLS picks certificates by name like implicit TLS does; no match keeps the session's context.
    conn.sni = (name, cb) => (this.#sni ? this.#sni(name, cb) : cb(null, undefined));
    session = this.#opts.createSession(conn, log, this.#opts.tls === 'starttls' ? this.#tlsContext : undefined);
    this.#sessions.add(session);
    log.debug({ secure }, 'connection accepted');
    void session.greet();
  }
}
