// One limiter for every login path (POP3, IMAP, submission, webmail), so a password guesser
// cannot spread its attempts over protocols. Each failure from an address makes the next
// answer slower (a growing delay), and after too many failures in the window the address, or
// the account being guessed, is locked out for a while. A success clears the address.
export type LoginLimiterOptions = {
  /** Failures from one address within the window before it is locked out. */
  maxFailuresPerAddress?: number;
  /** Failures against one account (from anywhere) within the window before it is locked. */
  maxFailuresPerAccount?: number;
  windowMs?: number;
  lockoutMs?: number;
  /** Delay after the first failure; doubles with each further one, up to maxDelayMs. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  now?: () => number;
};

type Entry = { failures: number; firstAt: number; lockedUntil: number };

export type LoginVerdict = { allowed: true } | { allowed: false; retryAfterMs: number; reason: 'address' | 'account' };

export class LoginLimiter {
  readonly #opts: Required<LoginLimiterOptions>;
  readonly #byAddress = new Map<string, Entry>();
  readonly #byAccount = new Map<string, Entry>();

  constructor(opts: LoginLimiterOptions = {}) {
    this.#opts = {
      maxFailuresPerAddress: opts.maxFailuresPerAddress ?? 10,
      maxFailuresPerAccount: opts.maxFailuresPerAccount ?? 30,
      windowMs: opts.windowMs ?? 15 * 60_000,
      lockoutMs: opts.lockoutMs ?? 15 * 60_000,
      baseDelayMs: opts.baseDelayMs ?? 250,
      maxDelayMs: opts.maxDelayMs ?? 8_000,
      now: opts.now ?? Date.now,
    };
  }

  /** May this address try to log in to this account now? */
  check(address: string, account?: string): LoginVerdict {
    const now = this.#opts.now();
    const a = this.#live(this.#byAddress, address, now);
    if (a && a.lockedUntil > now) return { allowed: false, retryAfterMs: a.lockedUntil - now, reason: 'address' };
    if (account) {
      const u = this.#live(this.#byAccount, account.toLowerCase(), now);
      if (u && u.lockedUntil > now) return { allowed: false, retryAfterMs: u.lockedUntil - now, reason: 'account' };
    }
    return { allowed: true };
  }

  /** Record a failure; returns how long to wait before answering the client. */
  failure(address: string, account?: string): number {
    const now = this.#opts.now();
    const failures = this.#bump(this.#byAddress, address, now, this.#opts.maxFailuresPerAddress);
    if (account) this.#bump(this.#byAccount, account.toLowerCase(), now, this.#opts.maxFailuresPerAccount);
    return Math.min(this.#opts.maxDelayMs, this.#opts.baseDelayMs * 2 ** (failures - 1));
  }

  success(address: string): void {
    this.#byAddress.delete(address);
  }

  #live(map: Map<string, Entry>, key: string, now: number): Entry | undefined {
    const e = map.get(key);
    if (e && e.lockedUntil <= now && now - e.firstAt > this.#opts.windowMs) {
      map.delete(key);
      return undefined;
    }
    return e;
  }

  /** Count one failure; returns the number of failures in the window, this one included. */
  #bump(map: Map<string, Entry>, key: string, now: number, max: number): number {
    let e = this.#live(map, key, now);
    if (!e) {
      e = { failures: 0, firstAt: now, lockedUntil: 0 };
      map.set(key, e);
    }
    e.failures += 1;
    const failures = e.failures;
    if (e.failures >= max) {
      e.lockedUntil = now + this.#opts.lockoutMs;
      // A fresh window starts after the lockout.
      e.firstAt = e.lockedUntil;
      e.failures = 0;
    }
    // Bound memory under a flood from many addresses: drop the oldest entries.
    if (map.size > 100_000) {
      const oldest = map.keys().next().value;
      if (oldest !== undefined) map.delete(oldest);
    }
    return failures;
  }
}
