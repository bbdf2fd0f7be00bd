// The queue's `deliver(job)`: routes a domain (MX records, or the smarthost) and hands the
// message to the relay client, trying the next MX when one cannot be reached, and turns the
// relay's per-recipient results into the queue's outcome. main.ts passes this function to the
// queue, so the queue itself never imports protocol code.
import type { promises as dnsPromises } from 'node:dns';
import type { Logger } from '../core/log.ts';
import type { DeliveryJob, DeliveryOutcome } from '../queue/queue.ts';
import { resolveRoute, shuffleEqualPreferences } from '../queue/routing.ts';
import type { Route } from '../queue/routing.ts';
import { relay } from './relay-client.ts';
import { RelayPool } from './relay-pool.ts';
import type { RelayPoolOptions } from './relay-pool.ts';
import type { RecipientResult, RelayMessage, RelayTarget, RelayTimeouts } from './relay-client.ts';

export type OutboundOptions = {
  heloName: string;
  log: Logger;
  resolver: dnsPromises.Resolver;
  dnsTimeoutMs: number;
  /** Port of remote MXes (25; tests use loopback servers). */
  mxPort: number;
  /** Refuse an MX without STARTTLS (default: opportunistic). */
  requireTls: boolean;
  /** When set, every remote message goes here instead of the MX. */
  smarthost?: RelayTarget;
  timeouts?: Partial<RelayTimeouts>;
  /**
   * How long an MX route found in DNS is used again for the same domain (default 60 s, far
   * below usual DNS TTLs): a burst of mail to one domain asks DNS once. 0 = every delivery asks.
   */
  routeCacheMs?: number;
  /** Reuse connections per destination (relay-pool.ts); false = one connection per delivery. */
  pool?: Omit<RelayPoolOptions, 'log'> | false;
};

/** The queue's deliver function; close() QUITs the connections kept for reuse. */
export type Deliver = ((job: DeliveryJob) => Promise<DeliveryOutcome>) & { close(): Promise<void> };

type Outcome = DeliveryOutcome['recipients'][number];

/** The failures that say "this server, not this recipient": worth trying the next MX. */
function connectionLevel(r: RecipientResult): boolean {
  return r.status !== 'delivered' && (r.state === 'CONNECT' || r.state === 'GREETING' || r.state === 'EHLO' || /^RELAY_TLS_FAILED/.test(r.text));
}

function replyText(r: RecipientResult, host: string): string {
  const text = r.text.replace(/\s+/g, ' ').trim();
  // "from HOST" at the end lets the DSN name the Remote-MTA.
  return `${r.code}${r.enhanced ? ` ${r.enhanced}` : ''} ${text} (in reply to ${r.state}, from ${host})`;
}

export function makeDeliver(opts: OutboundOptions): Deliver {
  const pool = opts.pool === false ? undefined : new RelayPool({ ...opts.pool, log: opts.log });
  const routeCacheMs = opts.routeCacheMs ?? 60_000;
  const routes = new Map<string, { route: Extract<Route, { kind: 'mx' }>; until: number }>();
  const routeOf = async (domain: string): Promise<Route> => {
    const now = performance.now();
    const cached = routes.get(domain);
    // Equal preferences are shuffled again on each use, as a fresh lookup would be.
    if (cached && cached.until > now) return { kind: 'mx', hosts: shuffleEqualPreferences(cached.route.hosts) };
    const route = await resolveRoute(domain, { resolver: opts.resolver, port: opts.mxPort, timeoutMs: opts.dnsTimeoutMs });
    // Only answers that found hosts: a failure or a deferral is looked up afresh next time.
    if (route.kind === 'mx' && routeCacheMs > 0) {
      if (routes.size >= 10_000) routes.clear();
      routes.set(domain, { route, until: now + routeCacheMs });
    } else routes.delete(domain);
    return route;
  };
  const deliver = async (job: DeliveryJob): Promise<DeliveryOutcome> => {
    const message: RelayMessage = {
      id: job.entry.id,
      from: job.entry.from,
      recipients: job.recipients.map((r) => ({ address: r.address, notify: r.notify, orcpt: r.orcpt })),
      size: job.entry.size,
      open: () => job.open(),
      needsSmtpUtf8: job.entry.needsSmtpUtf8,
      eightBit: job.entry.eightBit,
      dsn: job.entry.dsn,
    };
    const all = (status: Outcome['status'], reply: string): DeliveryOutcome => ({ recipients: job.recipients.map((r) => ({ address: r.address, status, reply })) });

    const targets: Array<{ target: RelayTarget; name: string }> = [];
    if (opts.smarthost) {
      targets.push({ target: opts.smarthost, name: opts.smarthost.host });
    } else {
      const route = await routeOf(job.domain);
      if (route.kind === 'fail') return all('failed', route.reply);
      if (route.kind === 'defer') return all('deferred', route.reply);
      if (route.kind === 'smarthost') {
        targets.push({ target: { host: route.host, port: route.port, tls: 'required' }, name: route.host });
      } else {
        for (const h of route.hosts) {
          for (const address of h.addresses?.length ? h.addresses : [h.host]) {
            targets.push({ target: { host: address, port: h.port, tls: opts.requireTls ? 'required' : 'opportunistic', servername: h.host }, name: h.host });
          }
        }
      }
    }

    let last: DeliveryOutcome | undefined;
    let transcript: string[] = [];
    for (const { target, name } of targets) {
      if (job.signal.aborted) break;
      const relayOptions = { heloName: opts.heloName, log: opts.log, signal: job.signal, timeouts: opts.timeouts };
      const session = pool ? await pool.relay(target, [message], relayOptions) : await relay(target, [message], relayOptions);
      transcript = session.transcript;
      const results = session.results[0]?.recipients ?? [];
      last = { recipients: results.map((r) => ({ address: r.address, status: r.status, reply: replyText(r, name) })), transcript };
      // Another MX only helps when this one could not be talked to at all.
      if (!results.every(connectionLevel)) return last;
      opts.log.info({ queueId: job.entry.id, mx: name, reason: results[0]?.text }, 'MX unreachable, trying the next one');
    }
    if (last) {
      // Every MX failed at connection level: that is temporary, whatever one of them said.
      return { recipients: last.recipients.map((r) => ({ ...r, status: r.status === 'delivered' ? r.status : 'deferred' })), transcript };
    }
    return all('deferred', '451 4.4.4 No MX host could be tried');
  };
  return Object.assign(deliver, { close: async () => pool?.close() });
}
