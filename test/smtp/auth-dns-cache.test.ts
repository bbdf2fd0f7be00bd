// The DNS answer cache the inbound checks share: TTLs, negative caching, no caching of
// failures, one query for concurrent questions, a bounded size; against a real DNS server on
// loopback, with an injected clock.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import { startDnsServer } from '../helpers/dns-server.ts';
import type { DnsServer } from '../helpers/dns-server.ts';
import { DnsCache } from '../../src/smtp/dns-cache.ts';
import type { DnsCacheOptions } from '../../src/smtp/dns-cache.ts';
import { SenderAuthenticator } from '../../src/smtp/auth-checks.ts';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const DKIM_TXT = `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;

let dns: DnsServer;
beforeAll(async () => {
  dns = await startDnsServer(
    {
      'cached.test': { TXT: [['v=spf1 ip4:127.0.0.1 -all']], A: ['192.0.2.7'] },
      'other.test': { TXT: [['other']] },
      'third.test': { TXT: [['third']] },
      'signed.test': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
      's1._domainkey.signed.test': { TXT: [[DKIM_TXT.slice(0, 250), DKIM_TXT.slice(250)]] },
      '_dmarc.signed.test': { TXT: [['v=DMARC1; p=reject']] },
      'flaky.test': { TXT: [['v=spf1 -all']] },
    },
    { ttl: 30 },
  );
});
afterAll(() => dns?.close());

function setup(over: Partial<DnsCacheOptions> = {}) {
  const clock = { now: 1_000 };
  const cache = new DnsCache(dns.resolver({ timeout: 150, tries: 1 }), { maxEntries: 100, maxTtlMs: 300_000, negativeTtlMs: 60_000, clock: () => clock.now, ...over });
  return { cache, clock };
}
const asked = (name: string, type: string) => dns.queries.filter((q) => q.name === name && q.type === type).length;

describe('DnsCache', () => {
  it('answers a repeated question from memory, and gives each caller its own copy', async () => {
    const { cache } = setup();
    const before = asked('other.test', 'TXT');
    const first = (await cache.resolve('other.test', 'TXT')) as string[][];
    first[0][0] = 'changed by a caller';
    expect(await cache.resolve('Other.Test.', 'TXT')).toEqual([['other']]);
    expect(asked('other.test', 'TXT') - before).toBe(1);
    expect(cache.hits).toBe(1);
  });

  it('keeps an A answer for its TTL, and TXT for at most max_ttl', async () => {
    const { cache, clock } = setup({ maxTtlMs: 120_000 });
    const a = asked('cached.test', 'A');
    const t = asked('cached.test', 'TXT');
    expect(await cache.resolve4('cached.test')).toEqual(['192.0.2.7']);
    await cache.resolve('cached.test', 'TXT');
    clock.now += 29_000; // within the record's 30 s TTL
    await cache.resolve('cached.test', 'A');
    await cache.resolve('cached.test', 'TXT');
    expect([asked('cached.test', 'A') - a, asked('cached.test', 'TXT') - t]).toEqual([1, 1]);
    clock.now += 2_000; // past the A record's TTL, not past max_ttl
    await cache.resolve('cached.test', 'A');
    await cache.resolve('cached.test', 'TXT');
    expect([asked('cached.test', 'A') - a, asked('cached.test', 'TXT') - t]).toEqual([2, 1]);
    clock.now += 120_000; // past max_ttl: TXT (whose TTL node:dns does not report) is asked again
    await cache.resolve('cached.test', 'TXT');
    expect(asked('cached.test', 'TXT') - t).toBe(2);
  });

  it('remembers "no such name" and "no such record" for the negative TTL, with the same error codes', async () => {
    const { cache, clock } = setup({ negativeTtlMs: 10_000 });
    const n = asked('missing.test', 'TXT');
    const d = asked('other.test', 'MX');
    await expect(cache.resolve('missing.test', 'TXT')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(cache.resolve('missing.test', 'TXT')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(cache.resolve('other.test', 'MX')).rejects.toMatchObject({ code: 'ENODATA' });
    await expect(cache.resolve('other.test', 'MX')).rejects.toMatchObject({ code: 'ENODATA' });
    expect([asked('missing.test', 'TXT') - n, asked('other.test', 'MX') - d]).toEqual([1, 1]);
    clock.now += 10_001;
    await expect(cache.resolve('missing.test', 'TXT')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    expect(asked('missing.test', 'TXT') - n).toBe(2);
  });

  it('never keeps a timeout or a SERVFAIL as an answer', async () => {
    const { cache } = setup();
    dns.drop('flaky.test');
    await expect(cache.resolve('flaky.test', 'TXT')).rejects.toMatchObject({ code: 'ETIMEOUT' });
    dns.drop('flaky.test', false);
    dns.servfail('flaky.test');
    await expect(cache.resolve('flaky.test', 'TXT')).rejects.toMatchObject({ code: 'ESERVFAIL' });
    dns.servfail('flaky.test', false);
    expect(await cache.resolve('flaky.test', 'TXT')).toEqual([['v=spf1 -all']]);
    expect(cache.size).toBe(1);
  });

  it('sends one query for concurrent identical questions', async () => {
    const { cache } = setup();
    const before = asked('third.test', 'TXT');
    const answers = await Promise.all(Array.from({ length: 10 }, () => cache.resolve('third.test', 'TXT')));
    expect(answers).toEqual(Array.from({ length: 10 }, () => [['third']]));
    expect(asked('third.test', 'TXT') - before).toBe(1);
  });

  it('is bounded: past max entries the least recently used answer goes', async () => {
    const { cache } = setup({ maxEntries: 2 });
    await cache.resolve('cached.test', 'TXT');
    await cache.resolve('other.test', 'TXT');
    await cache.resolve('cached.test', 'TXT'); // used again: other.test is now the oldest
    await cache.resolve('third.test', 'TXT');
    expect(cache.size).toBe(2);
    const before = [asked('cached.test', 'TXT'), asked('other.test', 'TXT')];
    await cache.resolve('cached.test', 'TXT');
    await cache.resolve('other.test', 'TXT');
    expect([asked('cached.test', 'TXT') - before[0], asked('other.test', 'TXT') - before[1]]).toEqual([0, 1]);
  });

  it('tells another thread how much longer an answer is kept (answer())', async () => {
    const { cache, clock } = setup({ maxTtlMs: 100_000, negativeTtlMs: 20_000 });
    expect(await cache.answer('other.test', 'txt')).toEqual({ value: [['other']], expiresInMs: 100_000 });
    clock.now += 30_000;
    expect(await cache.answer('other.test', 'TXT')).toEqual({ value: [['other']], expiresInMs: 70_000 });
    expect(await cache.answer('missing.test', 'TXT')).toEqual({ code: 'ENOTFOUND', expiresInMs: 20_000 });
    const off = setup({ maxEntries: 0 }).cache;
    expect(await off.answer('other.test', 'TXT')).toEqual({ value: [['other']], expiresInMs: 0 });
  });

  it('gives the sender checks the same results from memory: a second message makes no queries', async () => {
    const { cache } = setup();
    const auth = new SenderAuthenticator({ hostname: 'mx.test.example', resolver: cache, deadlineMs: 3000, maxLookups: 50, dmarcReject: true, dmarcQuarantine: true, rejectSpfFail: false });
    const raw = Buffer.from('From: <a@signed.test>\r\nTo: <alice@example.test>\r\nSubject: cached\r\nMessage-ID: <cached@test>\r\n\r\nHello.\r\n');
    const signed = await dkimSign(raw, { signatureData: [{ signingDomain: 'signed.test', selector: 's1', privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }] } as never);
    expect(signed.signatures).toMatch(/^DKIM-Signature: /);
    const message = Buffer.concat([Buffer.from(signed.signatures), raw]);
    const input = { message, ip: '127.0.0.1', helo: 'client.test', sender: 'a@signed.test' };
    const first = await auth.check(input);
    const queriesAfterFirst = dns.queries.length;
    const second = await auth.check(input);
    expect(dns.queries.length).toBe(queriesAfterFirst);
    expect([first.spf, first.dkim, first.dmarc, first.action]).toEqual(['pass', ['pass:signed.test'], 'pass', 'accept']);
    expect([second.spf, second.dkim, second.dmarc, second.action]).toEqual([first.spf, first.dkim, first.dmarc, first.action]);
    expect(second.header).toBe(first.header);
  });
});
