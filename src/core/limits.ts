// Connection limits: a per-key (per client IP) counter, so one host cannot take every
// connection slot of a service.

export interface ConnectionCounterOptions {
  /** Connections one key may hold at once. */
  maxPerKey: number;
  /** Connections all keys together may hold at once. Default unlimited. */
  maxTotal?: number;
}

export class ConnectionCounter {
  readonly #maxPerKey: number;
  readonly #maxTotal: number;
  readonly #counts = new Map<string, number>();
  #total = 0;

  /** A number is shorthand for `{ maxPerKey }`. */
  constructor(opts: ConnectionCounterOptions | number) {
    const o = typeof opts === 'number' ? { maxPerKey: opts } : opts;
    this.#maxPerKey = o.maxPerKey;
    this.#maxTotal = o.maxTotal ?? Infinity;
  }

  /** Take a slot for `key`; false (and nothing taken) if its limit or the total is reached. */
  acquire(key: string): boolean {
    const n = this.#counts.get(key) ?? 0;
    if (n >= this.#maxPerKey || this.#total >= this.#maxTotal) return false;
    this.#counts.set(key, n + 1);
    this.#total++;
    return true;
  }

  /** Give back a slot taken by a successful acquire(); call once per acquire, on 'close'. */
  release(key: string): void {
    const n = this.#counts.get(key);
    if (n === undefined) return;
    if (n <= 1) this.#counts.delete(key);
    else this.#counts.set(key, n - 1);
    this.#total--;
  }

  count(key: string): number {
    return this.#counts.get(key) ?? 0;
  }

  get total(): number {
    return this.#total;
  }
}

/**
 * Paces commands on one connection: up to `perSecond` commands in each second pass at once;
 * past that the caller waits for the next second instead of being refused, so a client that
 * pipelines a burst still gets every answer, just not faster than the limit.
 */
export class CommandPacer {
  readonly #perSecond: number;
  readonly #now: () => number;
  #windowStart = 0;
  #count = 0;

  constructor(perSecond: number, now: () => number = () => performance.now()) {
    this.#perSecond = perSecond;
    this.#now = now;
  }

  /** Milliseconds to wait before running the next command (0 = now). Counts the command. */
  next(): number {
    const now = this.#now();
    if (now - this.#windowStart >= 1000) {
      this.#windowStart = now;
      this.#count = 0;
    }
    this.#count += 1;
    if (this.#count <= this.#perSecond) return 0;
    const wait = this.#windowStart + 1000 - now;
    // The delayed command opens the next window.
    this.#windowStart += 1000;
    this.#count = 1;
    return Math.max(0, wait);
  }
}
