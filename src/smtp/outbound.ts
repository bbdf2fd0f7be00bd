// The queue's `deliver(job)`: routes a domain (MX records, or the smarthost) and hands the
// message to the relay client, trying the next MX when one cannot be reached, and turns the
// relay's per-recipient results into the queue's outcome. main.ts passes this function to the
// queue, so the queue itself never imports protocol code.
import type { promises as dnsPromises } from 'node:dns';
import type { Logger } from '../core/log.ts';
import type { DeliveryJob, DeliveryOutcome } from '../queue/queue.ts';
import { resolveRoute } from '../queue/routing.ts';
import { relay } from './relay-client.ts';
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
};

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

export function makeDeliver(opts: OutboundOptions): (job: DeliveryJob) => Promise<DeliveryOutcome> {
  return async (job) => {
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
      const route = await resolveRoute(job.domain, { resolver: opts.resolver, port: opts.mxPort, timeoutMs: opts.dnsTimeoutMs });
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
      const session = await relay(target, [message], { heloName: opts.heloName, log: opts.log, signal: job.signal, timeouts: opts.timeouts });
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
}
