// The relay pool is in charge of reusing outbound SMTP connections: after a delivery the
// connection (already greeted, TLS'd and authenticated) waits a few seconds in state IDLE, and
// the next delivery to the same destination takes it instead of connecting again; each reuse
// starts with RSET, whose 250 shows the connection still works. A connection is reused only
// when every exchange on it went as expected; after a connection-level failure, an unexpected
// reply or a timeout it is closed (relay-client.ts never goes IDLE then). Caps: idle
// connections per destination and in total, messages per connection.
import { named } from '../core/log.ts';
import type { Logger } from '../core/log.ts';
import { RelayClient, relay, validateInput } from './relay-client.ts';
import type { RelayMessage, RelayOptions, RelaySession, RelayTarget } from './relay-client.ts';

export type RelayPoolOptions = {
  /** How long a connection waits for the next message before QUIT. */
  idleMs?: number;
  /** Idle connections kept per destination (MX host + port + TLS mode + credentials). */
  maxIdlePerDestination?: number;
  /** Idle connections kept in all. */
  maxIdle?: number;
  /** After this many messages a connection is closed (a fresh one spreads load and limits damage). */
  maxMessagesPerConnection?: number;
  log: Logger;
};

export const DEFAULT_RELAY_POOL = Object.freeze({ idleMs: 5_000, maxIdlePerDestination: 4, maxIdle: 32, maxMessagesPerConnection: 100 });

/** What makes two deliveries interchangeable on one connection. */
function destinationKey(target: RelayTarget, opts: RelayOptions): string {
  return JSON.stringify([
    target.host,
    target.port,
    target.tls,
    target.servername ?? '',
    target.rejectUnauthorized ?? null,
    target.auth?.user ?? '',
    target.auth?.pass ?? '',
    opts.localAddress ?? '',
    opts.heloName,
  ]);
}

export class RelayPool {
  readonly #idleMs: number;
  readonly #maxPerDestination: number;
  readonly #maxIdle: number;
  readonly #maxMessages: number;
  readonly #log: Logger;
  /** Idle connections by destination, most recently used last. */
  readonly #idle = new Map<string, RelayClient[]>();
  #idleCount = 0;
  /** Connections made since start, for tests and metrics. */
  connectionsOpened = 0;
  #closed = false;

  constructor(opts: RelayPoolOptions) {
    this.#idleMs = opts.idleMs ?? DEFAULT_RELAY_POOL.idleMs;
    this.#maxPerDestination = opts.maxIdlePerDestination ?? DEFAULT_RELAY_POOL.maxIdlePerDestination;
    this.#maxIdle = opts.maxIdle ?? DEFAULT_RELAY_POOL.maxIdle;
    this.#maxMessages = opts.maxMessagesPerConnection ?? DEFAULT_RELAY_POOL.maxMessagesPerConnection;
    this.#log = named(opts.log, 'relay-pool');
  }

  /** Idle connections now (all destinations). */
  get idleConnections(): number {
    return this.#idleCount;
  }

  /** As relay(): on an idle connection to the same destination if there is one, else a new one. */
  async relay(target: RelayTarget, messages: RelayMessage[], opts: RelayOptions): Promise<RelaySession> {
    if (this.#closed) return relay(target, messages, opts);
    validateInput(target, messages, opts);
    const key = destinationKey(target, opts);
    for (let client = this.#take(key); client; client = this.#take(key)) {
      const session = await client.send(messages, opts.signal);
      if (!session.staleConnection) {
        this.#keep(key, client);
        return session;
      }
      this.#log.debug({ host: target.host, transcript: session.transcript.slice(-4) }, 'idle connection found dead; trying another');
    }
    const client = new RelayClient(target, messages, { ...opts, reuse: { idleMs: this.#idleMs, onClose: (c) => this.#forget(key, c) } });
    this.connectionsOpened++;
    const session = await client.run();
    this.#keep(key, client);
    return session;
  }

  /** QUIT every idle connection; later deliveries use a connection each. */
  async close(): Promise<void> {
    this.#closed = true;
    const all = [...this.#idle.values()].flat();
    this.#idle.clear();
    this.#idleCount = 0;
    await Promise.all(all.map((c) => c.quit()));
  }

  #take(key: string): RelayClient | undefined {
    const list = this.#idle.get(key);
    while (list && list.length > 0) {
      const client = list.pop()!;
      this.#idleCount--;
      if (list.length === 0) this.#idle.delete(key);
      if (client.idle) return client;
    }
    return undefined;
  }

  /** After a batch: keep the connection if it is sound and there is room, else close it. */
  #keep(key: string, client: RelayClient): void {
    if (!client.idle) return;
    const list = this.#idle.get(key) ?? [];
    if (this.#closed || client.messagesHanded >= this.#maxMessages || list.length >= this.#maxPerDestination || this.#idleCount >= this.#maxIdle) {
      void client.quit();
      return;
    }
    list.push(client);
    this.#idle.set(key, list);
    this.#idleCount++;
  }

  #forget(key: string, client: RelayClient): void {
    const list = this.#idle.get(key);
    const i = list?.indexOf(client) ?? -1;
    if (!list || i < 0) return;
    list.splice(i, 1);
    this.#idleCount--;
    if (list.length === 0) this.#idle.delete(key);
  }
}
