// A DNS answer cache shared by the inbound checks (SPF, DKIM, DMARC, ARC and DNSBL), in front of
// a node:dns Resolver. Mail from one sender domain asks the same few names again and again (the
// SPF record, the DKIM key, _dmarc), so answering them from memory saves a round trip each, and
// concurrent identical questions share one query.
//
// What is kept, and for how long:
//   - an answer with records: for its TTL where node:dns reports one (A and AAAA), at most
//     `maxTtlMs`; node:dns does not report TTLs for TXT, MX, PTR and the rest, so those are kept
//     for `maxTtlMs`, which is why it defaults to a few minutes, well under usual record TTLs;
//   - "does not exist" (NXDOMAIN, NODATA): negative caching (RFC 2308) for `negativeTtlMs`;
//   - anything else (timeout, SERVFAIL, refused): never kept, so the next message asks again.
// The cache is bounded: past `maxEntries` the least recently used answer goes.
import type { promises as dnsPromises } from 'node:dns';

/** What the checks need from a resolver: node:dns's Resolver, or this cache in front of one. */
export type DnsResolver = Pick<dnsPromises.Resolver, 'resolve4'> & {
  resolve(name: string, rrtype: string): Promise<unknown>;
};

export type DnsCacheOptions = {
  maxEntries: number;
  maxTtlMs: number;
  negativeTtlMs: number;
  /** Monotonic milliseconds; injectable for tests. */
  clock?: () => number;
};

/** The codes that mean "this name or record does not exist": safe to remember. */
const NEGATIVE = new Set(['ENOTFOUND', 'ENODATA']);

type Entry = { expires: number; value?: unknown; code?: string };

export class DnsCache implements DnsResolver {
  readonly #resolver: dnsPromises.Resolver;
  readonly #opts: DnsCacheOptions;
  readonly #clock: () => number;
  readonly #entries = new Map<string, Entry>();
  readonly #inflight = new Map<string, Promise<Entry>>();
  hits = 0;
  misses = 0;

  constructor(resolver: dnsPromises.Resolver, opts: DnsCacheOptions) {
    this.#resolver = resolver;
    this.#opts = opts;
    this.#clock = opts.clock ?? (() => performance.now());
  }

  get size(): number {
    return this.#entries.size;
  }

  resolve(name: string, rrtype: string): Promise<unknown> {
    return this.#get(name, rrtype.toUpperCase());
  }

  resolve4(name: string): Promise<string[]>;
  resolve4(name: string, options: { ttl: true }): Promise<Array<{ address: string; ttl: number }>>;
  resolve4(name: string, options?: { ttl: boolean }): Promise<string[] | Array<{ address: string; ttl: number }>>;
  async resolve4(name: string, options?: { ttl: boolean }): Promise<string[] | Array<{ address: string; ttl: number }>> {
    // Callers that want TTLs get the resolver's own answer (and its real TTLs).
    if (options?.ttl) return this.#resolver.resolve4(name, { ttl: true });
    return (await this.#get(name, 'A')) as string[];
  }

  /**
   * The answer with how much longer this cache keeps it, for a cache in another thread (the
   * sender-checks worker) that must not keep it longer. "Does not exist" comes back as `code`.
   */
  async answer(name: string, rrtype: string): Promise<{ value?: unknown; code?: string; expiresInMs: number }> {
    const entry = await this.#entry(name, rrtype.toUpperCase());
    const expiresInMs = Math.max(0, entry.expires - this.#clock());
    return entry.code ? { code: entry.code, expiresInMs } : { value: copy(entry.value), expiresInMs };
  }

  async #get(name: string, rrtype: string): Promise<unknown> {
    const entry = await this.#entry(name, rrtype);
    if (entry.code) throw notFound(entry.code, name, rrtype);
    return copy(entry.value);
  }

  async #entry(name: string, rrtype: string): Promise<Entry> {
    const key = `${rrtype} ${name.toLowerCase().replace(/\.$/, '')}`;
    const now = this.#clock();
    let entry = this.#entries.get(key);
    if (entry && entry.expires > now) {
      this.hits++;
      // Least recently used goes first: move this one to the end.
      this.#entries.delete(key);
      this.#entries.set(key, entry);
    } else {
      if (entry) this.#entries.delete(key);
      let pending = this.#inflight.get(key);
      if (!pending) {
        this.misses++;
        pending = this.#query(name, rrtype, key).finally(() => this.#inflight.delete(key));
        this.#inflight.set(key, pending);
      }
      entry = await pending;
    }
    return entry;
  }

  /** Ask the resolver; remember answers and "does not exist", rethrow everything else unremembered. */
  async #query(name: string, rrtype: string, key: string): Promise<Entry> {
    let value: unknown;
    let ttlMs = this.#opts.maxTtlMs;
    try {
      if (rrtype === 'A' || rrtype === 'AAAA') {
        const records = rrtype === 'A' ? await this.#resolver.resolve4(name, { ttl: true }) : await this.#resolver.resolve6(name, { ttl: true });
        value = records.map((r) => r.address);
        if (records.length) ttlMs = Math.min(ttlMs, Math.min(...records.map((r) => r.ttl)) * 1000);
      } else {
        const resolve = this.#resolver.resolve as (name: string, rrtype: string) => Promise<unknown>;
        value = await resolve.call(this.#resolver, name, rrtype);
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (!code || !NEGATIVE.has(code)) throw err;
      const entry = { expires: this.#clock() + this.#opts.negativeTtlMs, code };
      this.#remember(key, entry);
      return entry;
    }
    const entry = { expires: this.#clock() + ttlMs, value };
    if (ttlMs > 0) this.#remember(key, entry);
    return entry;
  }

  #remember(key: string, entry: Entry): void {
    if (this.#opts.maxEntries <= 0) {
      entry.expires = 0; // not kept, so nobody else may keep it either (answer())
      return;
    }
    this.#entries.set(key, entry);
    while (this.#entries.size > this.#opts.maxEntries) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
  }
}

/** A fresh error per caller, shaped as node:dns shapes its own (mailauth reads `code`). */
export function notFound(code: string, name: string, rrtype: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`query${rrtype[0]}${rrtype.slice(1).toLowerCase()} ${code} ${name}`);
  err.code = code;
  (err as { hostname?: string }).hostname = name;
  return err;
}

/** Callers get their own arrays, so one caller's changes never reach the cache. */
function copy(value: unknown): unknown {
  if (!Array.isArray(value)) return value;
  return value.map((v) => (Array.isArray(v) ? [...v] : v && typeof v === 'object' ? { ...v } : v));
}
