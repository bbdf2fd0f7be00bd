// The queue's deliver (outbound.ts): MX routes found in DNS are used again for a short while,
// so a burst of mail to one domain asks DNS once; failures are not remembered.
import { afterEach, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { silentLogger } from '../../src/core/log.ts';
import type { DeliveryJob, QueueEntry } from '../../src/queue/queue.ts';
import { makeDeliver } from '../../src/smtp/outbound.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { startRemoteMx } from '../helpers/remote-mx.ts';

const log = silentLogger();
const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function job(i: number, domain: string): DeliveryJob {
  const raw = Buffer.from(`From: alice@example.test\r\nTo: u${i}@${domain}\r\nSubject: ${i}\r\n\r\nbody ${i}\r\n`);
  const entry: QueueEntry = {
    id: `0000000000${String(i).padStart(2, '0')}abcdef`,
    from: 'alice@example.test',
    recipients: [{ address: `u${i}@${domain}`, status: 'pending', attempts: 1 }],
    size: raw.length,
    createdAt: Date.now(),
    held: false,
    needsSmtpUtf8: false,
    eightBit: false,
  };
  return { entry, domain, recipients: entry.recipients, open: () => Readable.from([raw]), signal: new AbortController().signal };
}

async function setup(routeCacheMs?: number) {
  const mx = await startRemoteMx();
  cleanups.push(() => mx.close());
  const dns = await startDnsServer({
    'cached.test': { MX: [{ preference: 10, exchange: 'mx.cached.test' }] },
    'mx.cached.test': { A: ['127.0.0.1'] },
    'broken.test': { MX: [{ preference: 10, exchange: 'mx.cached.test' }] },
  });
  cleanups.push(() => dns.close());
  const deliver = makeDeliver({ heloName: 'hearth.test.example', log, resolver: dns.resolver(), dnsTimeoutMs: 2000, mxPort: mx.port, requireTls: false, routeCacheMs });
  cleanups.push(() => deliver.close());
  const mxQueries = (name: string) => dns.queries.filter((q) => q.name === name && q.type === 'MX').length;
  return { mx, dns, deliver, mxQueries };
}

describe('outbound: MX routes', () => {
  it('asks DNS once for a burst of mail to one domain and delivers every message', async () => {
    const { mx, deliver, mxQueries } = await setup();
    for (let i = 0; i < 4; i++) {
      const outcome = await deliver(job(i, 'cached.test'));
      expect(outcome.recipients).toMatchObject([{ address: `u${i}@cached.test`, status: 'delivered' }]);
    }
    expect(mxQueries('cached.test')).toBe(1);
    expect(mx.received.map((m) => m.to)).toEqual([0, 1, 2, 3].map((i) => [`u${i}@cached.test`]));
  });

  it('does not remember a failed lookup, and asks every time with routeCacheMs = 0', async () => {
    const { dns, deliver, mxQueries } = await setup();
    dns.servfail('broken.test');
    expect((await deliver(job(1, 'broken.test'))).recipients[0]).toMatchObject({ status: 'deferred', reply: expect.stringMatching(/^451 4\.4\.3 /) });
    dns.servfail('broken.test', false);
    expect((await deliver(job(2, 'broken.test'))).recipients[0].status).toBe('delivered');
    expect(mxQueries('broken.test')).toBe(2);

    const uncached = await setup(0);
    await uncached.deliver(job(3, 'cached.test'));
    await uncached.deliver(job(4, 'cached.test'));
    expect(uncached.mxQueries('cached.test')).toBe(2);
  });
});
