// Per-client abuse limits for inbound SMTP: connections per minute, messages per minute and
// unknown recipients (directory harvesting) in a sliding window. Counters live in memory only:
// a restart forgets them, which is fine for limits measured in minutes. IPv6 clients are
// counted per /64, since one host usually holds a whole /64.
import { networkKey } from './client-address.ts';

/** Sliding-window counter: at most `limit` events per key in any `windowMs`. */
export class SlidingWindow {
  readonly limit: number;
  readonly windowMs: number;
  readonly #clock: () => number;
  readonly #events = new Map<string, number[]>();
  #hitsSinceSweep = 0;

  constructor(limit: number, windowMs: number, clock: () => number = Date.now) {
    this.limit = limit;
    this.windowMs = windowMs;
    this.#clock = clock;
  }

  /**
   * Record one event; false when it goes over the limit. Refused events count too, so a
   * client that keeps hammering stays refused until it slows down.
   */
  hit(key: string): boolean {
    const now = this.#clock();
    const times = this.#recent(key, now);
    times.push(now);
    // Only the last limit+1 instants matter for the decision; keep memory bounded per key.
    if (times.length > this.limit + 1) times.splice(0, times.length - this.limit - 1);
    this.#events.set(key, times);
    if (++this.#hitsSinceSweep >= 1000) this.#sweep(now);
    return times.length <= this.limit;
  }

  /** Events for `key` within the window, without recording one. */
  count(key: string): number {
    return this.#recent(key, this.#clock()).length;
  }

  #recent(key: string, now: number): number[] {
    const times = this.#events.get(key);
    if (!times) return [];
    const from = now - this.windowMs;
    let drop = 0;
    while (drop < times.length && times[drop] <= from) drop++;
    if (drop) times.splice(0, drop);
    return times;
  }

  #sweep(now: number): void {
    this.#hitsSinceSweep = 0;
    for (const [key, times] of this.#events) if (times.length === 0 || times[times.length - 1] <= now - this.windowMs) this.#events.delete(key);
  }
}

export type AbuseLimitOptions = {
  /** 0 turns a limit off. */
  connectionsPerMinute: number;
  messagesPerMinute: number;
  /** Unknown recipients a client may try (within failedRcptWindowMs) before it is disconnected. */
  maxFailedRcpts: number;
  failedRcptWindowMs: number;
  clock?: () => number;
};

const MINUTE = 60_000;

export class AbuseLimits {
  readonly #connections: SlidingWindow | undefined;
  readonly #messages: SlidingWindow | undefined;
  readonly #failedRcpts: SlidingWindow | undefined;
  readonly options: AbuseLimitOptions;

  constructor(opts: AbuseLimitOptions) {
    this.options = opts;
    const clock = opts.clock ?? Date.now;
    if (opts.connectionsPerMinute > 0) this.#connections = new SlidingWindow(opts.connectionsPerMinute, MINUTE, clock);
    if (opts.messagesPerMinute > 0) this.#messages = new SlidingWindow(opts.messagesPerMinute, MINUTE, clock);
    if (opts.maxFailedRcpts > 0) this.#failedRcpts = new SlidingWindow(opts.maxFailedRcpts - 1, opts.failedRcptWindowMs, clock);
  }

  /** A new connection: false when this client opened too many in the last minute. */
  connection(ip: string): boolean {
    return this.#connections?.hit(networkKey(ip)) ?? true;
  }

  /** A new transaction (MAIL FROM): false when this client sent too many in the last minute. */
  message(ip: string): boolean {
    return this.#messages?.hit(networkKey(ip)) ?? true;
  }

  /** An unknown recipient: false once this one reaches the limit (the caller disconnects). */
  failedRecipient(ip: string): boolean {
    return this.#failedRcpts?.hit(networkKey(ip)) ?? true;
  }
}
