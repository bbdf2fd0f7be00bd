// DNS blocklists (RFC 5782) for inbound SMTP: is the client listed in one of the configured
// zones? Queries for all zones run in parallel under one timeout; a zone that does not answer
// in time, or answers with an error, counts as "not listed", so a slow blocklist never blocks
// mail. Answers are cached briefly, per client and zone.
import type { Logger } from '../core/log.ts';
import { reversedForDnsbl } from './client-address.ts';
import type { DnsResolver } from './dns-cache.ts';

export type DnsblOptions = {
  zones: string[];
  resolver: DnsResolver;
  /** For all zones together, per client. */
  timeoutMs: number;
  log: Logger;
  cacheMs?: number;
  clock?: () => number;
};

export type DnsblListing = { zone: string; answer: string };

const CACHE_LIMIT = 10_000;

export class Dnsbl {
  readonly #opts: DnsblOptions;
  readonly #clock: () => number;
  readonly #cache = new Map<string, { at: number; listing: DnsblListing | null }>();

  constructor(opts: DnsblOptions) {
    this.#opts = opts;
    this.#clock = opts.clock ?? Date.now;
  }

  get enabled(): boolean {
    return this.#opts.zones.length > 0;
  }

  /**
   * The first zone (in config order) that lists `ip`, or null. Never throws. `log`: the
   * connection's logger, so problems are logged with its id.
   */
  async lookup(ip: string, log: Logger = this.#opts.log): Promise<DnsblListing | null> {
    const reversed = reversedForDnsbl(ip);
    if (!reversed || !this.enabled) return null;
    const cached = this.#cache.get(ip);
    const now = this.#clock();
    if (cached && now - cached.at < (this.#opts.cacheMs ?? 300_000)) return cached.listing;

    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), this.#opts.timeoutMs)));
    const answers = this.#opts.zones.map((zone) => this.#query(reversed, zone, log));
    const settled = await Promise.race([Promise.all(answers), timeout]);
    clearTimeout(timer);
    if (settled === 'timeout') {
      // Whatever answered in time still counts; the rest are treated as not listed.
      const early = await Promise.all(answers.map((a) => Promise.race([a, Promise.resolve(undefined)])));
      const hit = early.find((x): x is DnsblListing => Boolean(x)) ?? null;
      log.warn({ ...(log === this.#opts.log ? { peer: ip } : {}), zones: this.#opts.zones, timeoutMs: this.#opts.timeoutMs }, 'DNSBL lookup timed out; not treated as listed');
      return hit;
    }
    const listing = settled.find((x): x is DnsblListing => Boolean(x)) ?? null;
    if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear();
    this.#cache.set(ip, { at: now, listing });
    return listing;
  }

  async #query(reversed: string, zone: string, log: Logger): Promise<DnsblListing | null> {
    const name = `${reversed}.${zone}`;
    try {
      const addrs = await this.#opts.resolver.resolve4(name);
      // RFC 5782 2.1: listings are 127.0.0.2 and up; 127.255.255.x are the lists' own error
      // codes (query refused, e.g. from a public resolver), not listings.
      const hit = addrs.find((a) => a.startsWith('127.') && a !== '127.0.0.1' && !a.startsWith('127.255.255.'));
      if (!hit && addrs.length) log.warn({ zone, answers: addrs }, 'DNSBL answered with an error code or a non-listing address; ignored');
      return hit ? { zone, answer: hit } : null;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTFOUND' && code !== 'ENODATA') log.warn({ zone, code }, 'DNSBL lookup failed; not treated as listed');
      return null;
    }
  }
}
