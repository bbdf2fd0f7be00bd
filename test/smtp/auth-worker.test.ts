// Sender checks in their worker thread: the same verdicts as on the event loop, DNS answered
// by the main thread's resolver (one cache for all), failures still deferring, and checks in
// flight finished on the loop when the thread goes away.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import { silentLogger } from '../../src/core/log.ts';
import { SenderAuthenticator } from '../../src/smtp/auth-checks.ts';
import type { SenderAuthOptions } from '../../src/smtp/auth-checks.ts';
import { AuthCheckWorker } from '../../src/smtp/auth-worker.ts';
import { DnsCache } from '../../src/smtp/dns-cache.ts';
import type { DnsResolver } from '../../src/smtp/dns-cache.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import type { DnsServer } from '../helpers/dns-server.ts';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const DKIM_TXT = `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;

let dns: DnsServer;
beforeAll(async () => {
  dns = await startDnsServer(
    {
      'signed.test': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
      's1._domainkey.signed.test': { TXT: [[DKIM_TXT.slice(0, 250), DKIM_TXT.slice(250)]] },
      '_dmarc.signed.test': { TXT: [['v=DMARC1; p=reject']] },
      'reject.test': { TXT: [['v=spf1 ip4:192.0.2.1 -all']] },
      '_dmarc.reject.test': { TXT: [['v=DMARC1; p=reject']] },
      'slow.test': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
    },
    { drop: ['slow.test'] },
  );
});
afterAll(() => dns?.close());

function message(from: string, subject: string): Buffer {
  return Buffer.from(`From: <${from}>\r\nTo: <alice@example.test>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@test>\r\n\r\nHello.\r\n`);
}
async function signed(subject: string): Promise<Buffer> {
  const raw = message('a@signed.test', subject);
  const r = await dkimSign(raw, { signatureData: [{ signingDomain: 'signed.test', selector: 's1', privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }] } as never);
  expect(r.signatures).toMatch(/^DKIM-Signature: /);
  return Buffer.concat([Buffer.from(r.signatures), raw]);
}

/** A resolver that counts what it is asked, in this (the main) thread. */
function counting(inner: DnsResolver): DnsResolver & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    resolve: (name, rrtype) => (asked.push(`${rrtype} ${name}`), inner.resolve(name, rrtype)),
    resolve4: ((name: string) => (asked.push(`A ${name}`), inner.resolve4(name))) as DnsResolver['resolve4'],
  };
}

const base = (resolver: DnsResolver): SenderAuthOptions => ({ hostname: 'mx.test.example', resolver, deadlineMs: 2000, maxLookups: 50, dmarcReject: true, dmarcQuarantine: true, rejectSpfFail: false });

describe('AuthCheckWorker', () => {
  it('gives the verdicts the event loop gives, asking this thread for DNS', async () => {
    const resolver = counting(new DnsCache(dns.resolver({ timeout: 150, tries: 1 }), { maxEntries: 100, maxTtlMs: 60_000, negativeTtlMs: 60_000 }));
    const worker = new AuthCheckWorker(base(resolver), silentLogger());
    const local = new SenderAuthenticator(base(dns.resolver({ timeout: 150, tries: 1 })));
    try {
      const inputs = [
        { message: await signed('worker pass'), ip: '127.0.0.1', helo: 'client.test', sender: 'a@signed.test' },
        { message: message('ceo@reject.test', 'worker spoof'), ip: '127.0.0.1', helo: 'client.test', sender: 'x@elsewhere.test' },
      ];
      const [viaWorker, viaLoop] = await Promise.all([Promise.all(inputs.map((i) => worker.check(i))), Promise.all(inputs.map((i) => local.check(i)))]);
      const shape = (o: (typeof viaWorker)[0]) => ({ action: o.action, reply: o.reply, header: o.header, spf: o.spf, dkim: o.dkim, dmarc: o.dmarc });
      expect(viaWorker.map(shape)).toEqual(viaLoop.map(shape));
      expect(viaWorker.map((o) => o.action)).toEqual(['accept', 'reject']);
      expect(resolver.asked).toEqual(expect.arrayContaining(['TXT s1._domainkey.signed.test', 'TXT signed.test', 'TXT _dmarc.signed.test', 'TXT _dmarc.reject.test']));
    } finally {
      await worker.close();
    }
  });

  it('keeps answers in the thread (for what is left of their life in the main cache), and none from a plain resolver', async () => {
    const clock = { now: 1_000 };
    const cache = new DnsCache(dns.resolver({ timeout: 150, tries: 1 }), { maxEntries: 100, maxTtlMs: 60_000, negativeTtlMs: 60_000, clock: () => clock.now });
    const worker = new AuthCheckWorker(base(cache), silentLogger());
    const plain = counting(dns.resolver({ timeout: 150, tries: 1 }));
    const uncached = new AuthCheckWorker(base(plain), silentLogger());
    try {
      const input = { message: await signed('worker keeps'), ip: '127.0.0.1', helo: 'client.test', sender: 'a@signed.test' };
      expect((await worker.check(input)).dmarc).toBe('pass');
      const asked = cache.hits + cache.misses;
      expect(asked).toBeGreaterThan(0);
      expect((await worker.check(input)).dmarc).toBe('pass');
      expect(cache.hits + cache.misses).toBe(asked); // answered in the thread
      // A resolver that says nothing about lifetimes: the thread keeps nothing and asks each time.
      await uncached.check(input);
      const once = plain.asked.length;
      await uncached.check(input);
      expect(plain.asked.length).toBe(2 * once);
    } finally {
      await worker.close();
      await uncached.close();
    }
  });

  it('defers on a DNS timeout answered from this thread (the error code crosses over)', async () => {
    const worker = new AuthCheckWorker(base(dns.resolver({ timeout: 150, tries: 1 })), silentLogger());
    try {
      const out = await worker.check({ message: message('a@slow.test', 'worker slow'), ip: '127.0.0.1', helo: 'client.test', sender: 'a@slow.test' });
      expect(out.action).toBe('defer');
      expect(out.reply).toMatch(/^4\.4\.3 .*ETIMEOUT/);
    } finally {
      await worker.close();
    }
  });

  it('finishes checks in flight on the event loop when the thread goes away', async () => {
    const worker = new AuthCheckWorker(base(dns.resolver({ timeout: 150, tries: 1 })), silentLogger());
    const pending = worker.check({ message: await signed('worker closing'), ip: '127.0.0.1', helo: 'client.test', sender: 'a@signed.test' });
    await worker.close();
    const out = await pending;
    expect([out.action, out.dmarc]).toEqual(['accept', 'pass']);
  });
});
