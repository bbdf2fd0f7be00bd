import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveRoute } from '../../src/queue/routing.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import type { DnsServer } from '../helpers/dns-server.ts';

let dns: DnsServer;

beforeAll(async () => {
  dns = await startDnsServer(
    {
      'ordered.test': {
        MX: [
          { preference: 20, exchange: 'mx2.ordered.test' },
          { preference: 10, exchange: 'mx1.ordered.test' },
          { preference: 30, exchange: 'mx3.ordered.test' },
        ],
      },
      'mx1.ordered.test': { A: ['127.0.0.11'] },
      'mx2.ordered.test': { A: ['127.0.0.12'], AAAA: ['::1'] },
      'mx3.ordered.test': { A: ['127.0.0.13'] },
      'equal.test': {
        MX: [
          { preference: 10, exchange: 'a.equal.test' },
          { preference: 10, exchange: 'b.equal.test' },
          { preference: 10, exchange: 'c.equal.test' },
          { preference: 5, exchange: 'first.equal.test' },
        ],
      },
      'a.equal.test': { A: ['127.0.0.1'] },
      'b.equal.test': { A: ['127.0.0.1'] },
      'c.equal.test': { A: ['127.0.0.1'] },
      'first.equal.test': { A: ['127.0.0.1'] },
      'implicit.test': { A: ['127.0.0.5'], TXT: [['v=spf1 -all']] },
      'noaddress.test': { TXT: [['hello']] },
      'nullmx.test': { MX: [{ preference: 0, exchange: '.' }] },
      'dangling.test': { MX: [{ preference: 10, exchange: 'gone.dangling.test' }] },
    },
    { servfail: ['broken.test'], drop: ['slow.test'] },
  );
});
afterAll(async () => {
  await dns.close();
});

describe('resolveRoute', () => {
  it('orders MX hosts by preference and resolves their addresses through the same resolver', async () => {
    const route = await resolveRoute('Ordered.Test', { resolver: dns.resolver(), port: 2525 });
    expect(route.kind).toBe('mx');
    if (route.kind !== 'mx') return;
    expect(route.hosts.map((h) => [h.host, h.preference, h.port])).toEqual([
      ['mx1.ordered.test', 10, 2525],
      ['mx2.ordered.test', 20, 2525],
      ['mx3.ordered.test', 30, 2525],
    ]);
    expect(route.hosts[0].addresses).toEqual(['127.0.0.11']);
    expect(route.hosts[1].addresses).toEqual(['127.0.0.12', '::1']);
  });

  it('shuffles hosts of equal preference but keeps the lower preference first', async () => {
    const orders = new Set<string>();
    for (let i = 0; i < 30; i++) {
      const route = await resolveRoute('equal.test', { resolver: dns.resolver() });
      if (route.kind !== 'mx') throw new Error(`unexpected ${route.kind}`);
      expect(route.hosts[0].host).toBe('first.equal.test');
      expect(route.hosts.slice(1).map((h) => h.preference)).toEqual([10, 10, 10]);
      orders.add(route.hosts.slice(1).map((h) => h.host).join(','));
    }
    // 30 draws from 6 orders: all alike has probability 6 * (1/6)^30.
    expect(orders.size).toBeGreaterThan(1);
  });

  it('uses the domain itself when it has no MX but an address (implicit MX, RFC 5321 5.1)', async () => {
    const route = await resolveRoute('implicit.test', { resolver: dns.resolver(), port: 25 });
    expect(route).toEqual({ kind: 'mx', hosts: [{ host: 'implicit.test', port: 25, preference: 0, addresses: ['127.0.0.5'] }] });
  });

  it('fails permanently for a name with neither MX nor address', async () => {
    const route = await resolveRoute('noaddress.test', { resolver: dns.resolver() });
    expect(route.kind).toBe('fail');
    if (route.kind === 'fail') expect(route.reply).toMatch(/^550 5\.1\.2 .*no MX and no address/);
  });

  it('fails permanently on a null MX (RFC 7505)', async () => {
    const route = await resolveRoute('nullmx.test', { resolver: dns.resolver() });
    expect(route.kind).toBe('fail');
    if (route.kind === 'fail') expect(route.reply).toMatch(/^556 5\.1\.10 nullmx\.test .*null MX/);
  });

  it('fails permanently on NXDOMAIN', async () => {
    const route = await resolveRoute('nowhere.test', { resolver: dns.resolver() });
    expect(route.kind).toBe('fail');
    if (route.kind === 'fail') expect(route.reply).toMatch(/^550 5\.1\.2 nowhere\.test does not exist/);
  });

  it('defers on SERVFAIL', async () => {
    const route = await resolveRoute('broken.test', { resolver: dns.resolver() });
    expect(route.kind).toBe('defer');
    if (route.kind === 'defer') expect(route.reply).toMatch(/^451 4\.4\.3 .*SERVFAIL/);
  });

  it('defers when the name server does not answer (resolver timeout)', async () => {
    const started = performance.now();
    const route = await resolveRoute('slow.test', { resolver: dns.resolver({ timeout: 200, tries: 1 }) });
    expect(route.kind).toBe('defer');
    if (route.kind === 'defer') expect(route.reply).toMatch(/^451 4\.4\.3 .*timed out/);
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it('defers when a lookup outlasts timeoutMs even if the resolver would wait longer', async () => {
    const route = await resolveRoute('slow.test', { resolver: dns.resolver({ timeout: 10_000, tries: 2 }), timeoutMs: 150 });
    expect(route).toMatchObject({ kind: 'defer', reply: expect.stringMatching(/timed out/) });
  });

  it('defers when no MX host has an address', async () => {
    const route = await resolveRoute('dangling.test', { resolver: dns.resolver() });
    expect(route).toMatchObject({ kind: 'defer', reply: expect.stringMatching(/^451 4\.4\.4 .*gone\.dangling\.test/) });
  });

  it('sends everything to the smarthost without asking DNS', async () => {
    const before = dns.queries.length;
    const route = await resolveRoute('nowhere.test', { resolver: dns.resolver(), smarthost: { host: 'smtp.provider.test', port: 587 } });
    expect(route).toEqual({ kind: 'smarthost', host: 'smtp.provider.test', port: 587 });
    expect(dns.queries.length).toBe(before);
  });

  it('routes an address literal to the address itself and refuses nonsense', async () => {
    expect(await resolveRoute('[127.0.0.9]', { resolver: dns.resolver(), port: 26 })).toEqual({ kind: 'mx', hosts: [{ host: '127.0.0.9', port: 26, preference: 0, addresses: ['127.0.0.9'] }] });
    expect(await resolveRoute('[IPv6:::1]', { resolver: dns.resolver() })).toMatchObject({ kind: 'mx', hosts: [{ host: '::1' }] });
    expect(await resolveRoute('[not-an-ip]', { resolver: dns.resolver() })).toMatchObject({ kind: 'fail' });
    expect(await resolveRoute('bad..domain', { resolver: dns.resolver() })).toMatchObject({ kind: 'fail', reply: expect.stringMatching(/^501 /) });
  });

  it('the fixture answers TXT and follows set() changes (for SPF/DKIM tests later)', async () => {
    const r = dns.resolver();
    expect(await r.resolveTxt('implicit.test')).toEqual([['v=spf1 -all']]);
    dns.set('late.test', { MX: [{ preference: 1, exchange: 'implicit.test' }] });
    const route = await resolveRoute('late.test', { resolver: r });
    expect(route).toMatchObject({ kind: 'mx', hosts: [{ host: 'implicit.test', addresses: ['127.0.0.5'] }] });
    dns.set('late.test', undefined);
    await expect(r.resolveMx('late.test')).rejects.toMatchObject({ code: 'ENOTFOUND' });
  });
});
