// The IMAP listeners: 143 with STARTTLS and 993 with implicit TLS (RFC 8314). Accepts
// connections, applies the per-address connection cap, and gives each connection its own
// ImapSession. Knows nothing of the store beyond the ImapBackend interface.
import net from 'node:net';
import tls from 'node:tls';
import type { SecureContext } from 'node:tls';
import { LineConnection, normaliseAddress } from '../core/connection.ts';
import { ConnectionCounter } from '../core/limits.ts';
import { newConnectionId } from '../core/log.ts';
import type { Logger } from '../core/log.ts';
import { StateMachine } from '../core/state-machine.ts';
import { ImapSession, STATES } from './session.ts';
import type { ImapSessionOptions } from './session.ts';

export type ImapServerOptions = Omit<ImapSessionOptions, 'log' | 'tlsContext'> & {
  log: Logger;
  tls: 'plain' | 'starttls' | 'implicit';
  /** Certificate and key (PEM) for STARTTLS and implicit TLS. */
  tlsCredentials?: { key: Buffer; cert: Buffer };
  maxLine: number;
  connectionsPerIp: number;
  maxConnections: number;
};

export class ImapServer {
  readonly #opts: ImapServerOptions;
  readonly #server: net.Server;
  readonly #perIp: ConnectionCounter;
  readonly #sessions = new Set<ImapSession>();
  readonly #tlsContext: SecureContext | undefined;

  constructor(opts: ImapServerOptions) {
    StateMachine.assertHandlers(ImapSession.prototype, STATES);
    this.#opts = opts;
    this.#perIp = new ConnectionCounter({ maxPerKey: opts.connectionsPerIp, maxTotal: opts.maxConnections });
    const creds = opts.tlsCredentials;
    this.#tlsContext = creds ? tls.createSecureContext({ key: creds.key, cert: creds.cert, minVersion: 'TLSv1.2' }) : undefined;
    if (opts.tls === 'implicit') {
      if (!creds) throw new Error('implicit TLS needs a certificate');
      this.#server = tls.createServer({ key: creds.key, cert: creds.cert, allowHalfOpen: true, minVersion: 'TLSv1.2' }, (s) => this.#accept(s, true));
      this.#server.on('tlsClientError', (err) => opts.log.debug({ err: err.message }, 'TLS handshake failed'));
    } else {
      this.#server = net.createServer({ allowHalfOpen: true }, (s) => this.#accept(s, false));
    }
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

  /** Connections open now (for tests and status). */
  get sessions(): number {
    return this.#sessions.size;
  }

  /** Stop accepting and say BYE to every session. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await Promise.all([...this.#sessions].map((s) => s.shutdown()));
    await closed;
  }

  #accept(socket: net.Socket, secure: boolean): void {
    const peer = normaliseAddress(socket.remoteAddress ?? '');
    const log = this.#opts.log.child({ cid: newConnectionId(), peer });
    socket.setNoDelay(true);
    if (!this.#perIp.acquire(peer)) {
      log.warn('too many connections from one address');
      socket.on('error', () => undefined);
      socket.end('* BYE [UNAVAILABLE] too many connections from your address; try again later\r\n');
      return;
    }
    let session: ImapSession | undefined;
    const conn = new LineConnection(
      socket,
      {
        maxLine: this.#opts.maxLine,
        onLine: (line) => session!.onLine(line),
        onOverflow: () => session!.onOverflow(),
        onClose: () => {
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
    session = new ImapSession(conn, { ...this.#opts, log, tlsContext: this.#opts.tls === 'starttls' ? this.#tlsContext : undefined });
    this.#sessions.add(session);
    log.debug({ secure }, 'connection accepted');
    void session.greet();
  }
}
