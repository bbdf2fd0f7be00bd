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
