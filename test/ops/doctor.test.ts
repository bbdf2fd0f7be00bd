// `hearth doctor` against a loopback DNS server with some records wrong, an expired and a
// mismatched certificate, a stuck queue, and a "port 25" that answers or not.
import { execFile } from 'node:child_process';
import net from 'node:net';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { checkCertificate, checkOutbound, checkQueue, runDoctor } from '../../src/ops/doctor.ts';
import type { Finding } from '../../src/ops/doctor.ts';
import type { QueueEntry } from '../../src/queue/queue.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { CLI, makeSetup } from '../helpers/hearth.ts';
import { makePair, makePairAt } from './helpers.ts';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const find = (findings: Finding[], severity: Finding['severity'], text: RegExp) => findings.find((f) => f.severity === severity && text.test(f.message));

/** A listener that greets like an MX (or not at all). */
async function fakeMx(greeting: string | null): Promise<number> {
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    if (greeting !== null) s.end(`${greeting}\r\n`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as net.AddressInfo).port;
}

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

const ZONE = {
  // good.test is right; bad.test has its MX elsewhere, two SPF records, no DMARC, a stale DKIM key.
  'good.test': { MX: [{ preference: 10, exchange: 'mx.good.test' }], TXT: [['v=spf1 mx -all']] },
  '_dmarc.good.test': { TXT: [['v=DMARC1; p=reject']] },
  'bad.test': { MX: [{ preference: 10, exchange: 'mail.elsewhere.example' }], TXT: [['v=spf1 mx -all'], ['v=spf1 a ~all']] },
  'sel._domainkey.bad.test': { TXT: [['v=DKIM1; k=rsa; p=AAAAold']] },
  'nomx.test': { A: ['203.0.113.9'] },
  'mx.good.test': { A: ['203.0.113.5'] },
  '5.113.0.203.in-addr.arpa': { PTR: ['host-5.provider.example'] },
};

describe('hearth doctor', () => {
  it('reports wrong and missing DNS records, each with the record to add', async () => {
    const dns = await startDnsServer(ZONE);
    cleanups.push(() => dns.close());
    const good = await makePair('mx.good.test');
    const mxPort = await fakeMx('220 mx.test ESMTP');
    const findings = await runDoctor({
      hostname: 'mx.good.test',
      domains: ['good.test', 'bad.test', 'nomx.test'],
      resolver: dns.resolver({ timeout: 1000 }),
      certificate: { file: 'cert.pem', cert: Buffer.from(good.cert), key: Buffer.from(good.key) },
      dkim: [{ domain: 'bad.test', selector: 'sel', txt: 'v=DKIM1; k=rsa; p=BBBBnew' }],
      queue: async () => [],
      outbound: { testHost: '127.0.0.1', testPort: mxPort, timeoutMs: 2000 },
    });
    expect(find(findings, 'ok', /^good\.test: MX points to mx\.good\.test/)).toBeTruthy();
    expect(find(findings, 'ok', /^good\.test: DMARC/)).toBeTruthy();
    const mx = find(findings, 'fail', /^bad\.test: MX points to mail\.elsewhere\.example, not to this server/);
    expect(mx?.fix).toContain('bad.test. MX 10 mx.good.test.');
    expect(find(findings, 'fail', /^bad\.test has 2 SPF records/)?.fix).toMatch(/merge/);
    expect(find(findings, 'warn', /^bad\.test has no DMARC record/)?.fix).toContain('_dmarc.bad.test. TXT "v=DMARC1;');
    expect(find(findings, 'fail', /DKIM record sel\._domainkey\.bad\.test holds a different key/)?.fix).toContain('p=BBBBnew');
    expect(find(findings, 'fail', /^nomx\.test has no MX record/)?.fix).toContain('nomx.test. MX 10 mx.good.test.');
    expect(find(findings, 'warn', /^nomx\.test has no SPF record/)?.fix).toContain('"v=spf1 mx -all"');
    const rdns = find(findings, 'warn', /reverse DNS of 203\.0\.113\.5 is host-5\.provider\.example, not mx\.good\.test/);
    expect(rdns?.fix).toContain('PTR record to mx.good.test');
    expect(find(findings, 'ok', /outbound port \d+ works/)).toBeTruthy();
    // Every problem comes with a fix.
    for (const f of findings.filter((x) => x.severity === 'fail' || x.severity === 'warn')) expect(f.fix, f.message).toBeTruthy();
  }, 20_000);

  it('flags an expired certificate, one for another name, a key that does not match, and near expiry', async () => {
    const day = 86_400_000;
    const expired = await makePairAt(['mx.good.test'], new Date(Date.now() - 400 * day), new Date(Date.now() - day));
    const r1 = checkCertificate({ hostname: 'mx.good.test', certificate: { file: 'c', cert: Buffer.from(expired.cert), key: Buffer.from(expired.key) } });
    expect(find(r1, 'fail', /expired on/)?.fix).toMatch(/renew/);

    const other = await makePair('other.example');
    const r2 = checkCertificate({ hostname: 'mx.good.test', certificate: { file: 'c', cert: Buffer.from(other.cert), key: Buffer.from(expired.key) } });
    expect(find(r2, 'fail', /is for other\.example, localhost.*not for mx\.good\.test/)?.fix).toContain('hearth tls selfsigned --hostname mx.good.test');
    expect(find(r2, 'fail', /key .* does not belong/)).toBeTruthy();
    expect(find(r2, 'warn', /self-signed/)).toBeTruthy();

    const soon = await makePairAt(['mx.good.test'], new Date(Date.now() - day), new Date(Date.now() + 5 * day + 3_600_000));
    expect(find(checkCertificate({ hostname: 'mx.good.test', certificate: { file: 'c', cert: Buffer.from(soon.cert) } }), 'warn', /expires in 5 days/)).toBeTruthy();
    expect(find(checkCertificate({ hostname: 'mx.good.test', certificate: { file: 'c', error: 'ENOENT' } }), 'fail', /no certificate at c/)).toBeTruthy();
  }, 30_000);

  it('finds a stuck queue, and skips the check when hearth is not running', async () => {
    const now = Date.now();
    const entry = (id: string, ageMs: number, next: number): QueueEntry => ({
      id, from: 'a@x.test', size: 10, createdAt: now - ageMs, held: false, needsSmtpUtf8: false, eightBit: false,
      recipients: [{ address: 'b@remote.test', status: 'deferred', attempts: 3, lastReply: '421 4.7.0 try later', nextAttemptAt: next }],
    });
    const stuck = await checkQueue({ now: () => now, queue: async () => [entry('q1', 3 * 3_600_000, now - 3_600_000)] });
    expect(find(stuck, 'fail', /overdue for a retry/)?.fix).toMatch(/restart/);
    expect(find(stuck, 'warn', /waited over 60 minutes; last replies:\n\s+b@remote\.test: 421 4\.7\.0 try later/)).toBeTruthy();
    expect(await checkQueue({ now: () => now, queue: async () => [entry('q2', 60_000, now + 60_000)] })).toEqual([{ check: 'queue', severity: 'ok', message: '1 message(s) queued, none stuck' }]);
    expect((await checkQueue({ queue: async () => 'not-running' }))[0].severity).toBe('skip');
  });

  it('says when outbound port 25 is blocked, and accepts a smarthost instead', async () => {
    const blocked = await checkOutbound({ outbound: { testHost: '127.0.0.1', testPort: await closedPort(), timeoutMs: 2000 } });
    expect(blocked[0]).toMatchObject({ severity: 'fail', message: expect.stringMatching(/ECONNREFUSED.*port 25 looks blocked/) });
    expect(blocked[0].fix).toContain('relay.mode = "smarthost"');
    const silent = await checkOutbound({ outbound: { testHost: '127.0.0.1', testPort: await fakeMx(null), timeoutMs: 300 } });
    expect(silent[0].message).toMatch(/no answer within/);
    const viaSmarthost = await checkOutbound({ outbound: { smarthost: { host: '127.0.0.1', port: await fakeMx('220 relay ready') }, testHost: '127.0.0.1', testPort: 1, timeoutMs: 2000 } });
    expect(viaSmarthost[0]).toMatchObject({ severity: 'ok', message: expect.stringContaining('smarthost 127.0.0.1:') });
  });

  it('runs as `hearth doctor` from the config (DNS servers and port-25 test host on loopback), exit 1 on problems', async () => {
    const dns = await startDnsServer(ZONE);
    cleanups.push(() => dns.close());
    const setup = await makeSetup({ toml: `[dns]\nservers = ["127.0.0.1:${dns.port}"]\ntimeout = "1s"\n` });
    cleanups.push(() => setup.cleanup());
    // hostname is mx.test.example, domains example.test and family.test: none of it is in DNS.
    const port = await fakeMx('220 ok');
    const run = await promisify(execFile)(process.execPath, [CLI, 'doctor', '--config', setup.configDir, '--port25-test', `127.0.0.1:${port}`, '--timeout', '2'], { encoding: 'utf8' }).then(
      (r) => ({ code: 0, stdout: r.stdout }),
      (err: { code: number; stdout: string }) => ({ code: err.code, stdout: err.stdout }),
    );
    expect(run.code).toBe(1);
    expect(run.stdout).toContain('FAIL  dns      example.test: example.test does not exist (DNS: NXDOMAIN)');
    expect(run.stdout).toContain('fix: add the record  example.test. MX 10 mx.test.example.');
    expect(run.stdout).toMatch(/FAIL {2}tls {6}the certificate is for localhost.*not for mx\.test\.example/);
    expect(run.stdout).toContain('skip  queue    hearth is not running');
    expect(run.stdout).toMatch(/ok {4}outbound outbound port \d+ works/);
  }, 30_000);

  it('fills the address record in from [client] addresses, as hearth dns does', async () => {
    const dns = await startDnsServer(ZONE);
    cleanups.push(() => dns.close());
    const base = { hostname: 'mx.unknown.test', domains: [], resolver: dns.resolver({ timeout: 1000 }), certificate: { file: 'c', error: 'ENOENT' }, dkim: [], queue: async () => [] as QueueEntry[], outbound: { testHost: '127.0.0.1', testPort: await fakeMx('220 ok'), timeoutMs: 2000 } };
    const filled = find(await runDoctor({ ...base, addresses: ['203.0.113.7', '2001:db8::7'] }), 'fail', /mx\.unknown\.test .* has no A or AAAA record/);
    expect(filled?.fix).toContain('mx.unknown.test. A 203.0.113.7');
    expect(filled?.fix).toContain('mx.unknown.test. AAAA 2001:db8::7');
    expect(filled?.fix).not.toContain('<');
    const placeholder = find(await runDoctor(base), 'fail', /mx\.unknown\.test .* has no A or AAAA record/);
    expect(placeholder?.fix).toContain('mx.unknown.test. A <public IPv4 address of this server>');
    expect(placeholder?.fix).toContain('[client] addresses');
  });

  it('reports a port-25 test host that does not resolve as a DNS problem, not a blocked port', async () => {
    const dns = await startDnsServer(ZONE, { drop: ['slow.test'] });
    cleanups.push(() => dns.close());
    const resolver = dns.resolver({ timeout: 300, tries: 1 });
    for (const [host, code] of [['nowhere.test', 'ENOTFOUND'], ['slow.test', 'ETIMEOUT']] as const) {
      const r = await checkOutbound({ resolver, outbound: { testHost: host, testPort: 25, timeoutMs: 3000 } });
      expect(r).toHaveLength(1);
      expect(r[0], host).toMatchObject({ check: 'dns', severity: 'fail', message: expect.stringContaining(`${host} (${code})`) });
      expect(r[0].message).not.toMatch(/looks blocked/);
      expect(r[0].fix).toMatch(/\[dns\] servers/);
      expect(r[0].fix).toMatch(/resolv/);
    }
    // A name that resolves, to a closed port: still the blocked-port finding.
    const refused = await checkOutbound({ resolver, outbound: { testHost: 'mx.good.test', testPort: await closedPort(), timeoutMs: 2000 } });
    expect(refused[0]).toMatchObject({ check: 'outbound', severity: 'fail' });
  }, 20_000);

  it('`hearth doctor` uses [client] addresses and tells a DNS failure from a blocked port', async () => {
    const dns = await startDnsServer(ZONE);
    cleanups.push(() => dns.close());
    const setup = await makeSetup({ toml: `[dns]\nservers = ["127.0.0.1:${dns.port}"]\ntimeout = "1s"\n\n[client]\naddresses = ["203.0.113.7"]\n` });
    cleanups.push(() => setup.cleanup());
    const run = await promisify(execFile)(process.execPath, [CLI, 'doctor', '--config', setup.configDir, '--port25-test', 'nowhere.test:25', '--timeout', '2'], { encoding: 'utf8' }).then(
      (r) => ({ code: 0, stdout: r.stdout }),
      (err: { code: number; stdout: string }) => ({ code: err.code, stdout: err.stdout }),
    );
    expect(run.code).toBe(1);
    expect(run.stdout).toContain('mx.test.example. A 203.0.113.7');
    expect(run.stdout).not.toContain('<this server');
    expect(run.stdout).toMatch(/nowhere\.test \(ENOTFOUND\)/);
    expect(run.stdout).not.toMatch(/port 25 looks blocked/);
  }, 30_000);
});
