// `hearth dns check`: against a real loopback DNS server holding some records right, some wrong,
// some missing; every finding that is not ok says what to change.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfigText } from '../../src/config/load.ts';
import { generateDkimKey } from '../../src/smtp/dkim.ts';
import { checkDns, formatFindings, problemsIn } from '../../src/setup/dns-check.ts';
import type { DnsLookup, Finding } from '../../src/setup/dns-check.ts';
import { clientSettings, dkimPublicKeys, dnsRecords } from '../../src/setup/dns-records.ts';
import { mtaStsId } from '../../src/webmail/autoconfig.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import type { DnsServer } from '../helpers/dns-server.ts';
import { CLI, publicConfigToml } from '../helpers/hearth.ts';

const TOML = publicConfigToml(['192.0.2.10']);

// The fixture server answers no SRV queries; these stand in for the zone's SRV records.
const SRV: Record<string, Array<{ priority: number; weight: number; port: number; name: string }>> = {
  '_submissions._tcp.example.test': [{ priority: 0, weight: 1, port: 465, name: 'mail.example.test' }],
  '_submission._tcp.example.test': [{ priority: 10, weight: 1, port: 25, name: 'mail.example.test' }], // wrong port
  '_imaps._tcp.example.test': [{ priority: 0, weight: 1, port: 993, name: 'mail.example.test' }],
  '_pop3._tcp.example.test': [{ priority: 0, weight: 1, port: 110, name: 'mail.example.test' }], // not offered here
};

describe('hearth dns check', () => {
  let dns: DnsServer;
  let root: string;
  let configDir: string;
  let findings: Finding[];
  const config = parseConfigText(TOML, 'hearth.toml');

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'hearth-dnscheck-'));
    configDir = join(root, 'config');
    await generateDkimKey(configDir, 'example.test', 'sel1', 'rsa');
    await writeFile(join(configDir, 'hearth.toml'), `${TOML}\n[dns]\nservers = []\n`);
    const stale = (await generateDkimKey(join(root, 'other'), 'example.test', 'sel1', 'rsa')).record;
    const id = mtaStsId(clientSettings(config));
    dns = await startDnsServer(
      {
        'example.test': { MX: [{ preference: 10, exchange: 'mail.example.test' }], TXT: [['v=spf1 mx -all'], ['v=spf1 a ~all'], ['google-site-verification=xyz']] },
        'mail.example.test': { A: ['198.51.100.1'], TXT: [['v=spf1 a -all']] },
        'sel1._domainkey.example.test': { TXT: [[stale.slice(0, 200), stale.slice(200)]] },
        '_dmarc.example.test': { TXT: [['v=DMARC1; p=none; rua=mailto:postmaster@example.test']] },
        'mta-sts.example.test': { CNAME: 'mail.example.test' },
        '_smtp._tls.example.test': { TXT: [['v=TLSRPTv1; rua=mailto:postmaster@example.test']] },
        'autoconfig.example.test': { A: ['192.0.2.10'] },
        'autodiscover.example.test': { CNAME: 'elsewhere.example' },
        // the right id, but published at the wrong name: _mta-sts is missing
        'mta-sts-typo.example.test': { TXT: [[`v=STSv1; id=${id}`]] },
      },
      { servfail: ['_smtp._tls.example.test'] },
    );
    const resolver = dns.resolver({ timeout: 500, tries: 1 });
    const lookup: DnsLookup = {
      resolveMx: (n) => resolver.resolveMx(n),
      resolveTxt: (n) => resolver.resolveTxt(n),
      resolve4: (n) => resolver.resolve4(n),
      resolve6: (n) => resolver.resolve6(n),
      resolveCname: (n) => resolver.resolveCname(n),
      resolveSrv: async (n) => {
        const rr = SRV[n.toLowerCase()];
        if (!rr) throw Object.assign(new Error(`querySrv ENOTFOUND ${n}`), { code: 'ENOTFOUND' });
        return rr;
      },
    } as DnsLookup;
    findings = await checkDns(lookup, dnsRecords({ domain: 'example.test', config, dkim: await dkimPublicKeys(configDir, 'example.test') }), { mxHost: config.hostname, addresses: config.client.addresses });
  });
  afterAll(async () => {
    await dns?.close();
    await rm(root, { recursive: true, force: true });
  });

  const find = (type: string, name: string): Finding => {
    const f = findings.find((x) => x.record.type === type && x.record.name === name);
    if (!f) throw new Error(`no finding for ${type} ${name}`);
    return f;
  };

  it('finds what is right', () => {
    expect(find('MX', 'example.test').status).toBe('ok');
    expect(find('TXT', 'mail.example.test').status).toBe('ok');
    expect(find('CNAME', 'mta-sts.example.test').status).toBe('ok');
    expect(find('SRV', '_submissions._tcp.example.test').status).toBe('ok');
    expect(find('SRV', '_imaps._tcp.example.test').status).toBe('ok');
    // not offered, and not published: as it should be
    expect(find('SRV', '_imap._tcp.example.test').status).toBe('ok');
    // an A record at the server's address does instead of the CNAME
    expect(find('CNAME', 'autoconfig.example.test').status).toBe('ok');
  });

  it('says what is wrong, and how to fix it', () => {
    const a = find('A', 'mail.example.test');
    expect(a).toMatchObject({ status: 'wrong', found: ['198.51.100.1'] });
    expect(a.fix).toBe('replace 198.51.100.1 with: mail.example.test. 3600 IN A 192.0.2.10');

    const spf = find('TXT', 'example.test');
    expect(spf.status).toBe('wrong');
    expect(spf.message).toMatch(/2 spf1 records/);
    expect(spf.fix).toBe('keep exactly one: example.test. 3600 IN TXT "v=spf1 mx -all"');

    const dkim = find('TXT', 'sel1._domainkey.example.test');
    expect(dkim.status).toBe('wrong');
    expect(dkim.message).toMatch(/public key differs/);
    expect(dkim.fix).toMatch(/^replace it with: sel1\._domainkey\.example\.test\. 3600 IN TXT "v=DKIM1; k=rsa; p=/);

    expect(find('SRV', '_submission._tcp.example.test')).toMatchObject({ status: 'wrong', fix: 'replace it with: _submission._tcp.example.test. 3600 IN SRV 10 1 587 mail.example.test.' });
    expect(find('SRV', '_pop3._tcp.example.test')).toMatchObject({ status: 'wrong', fix: 'replace it with: _pop3._tcp.example.test. 3600 IN SRV 0 0 0 .' });
    expect(find('CNAME', 'autodiscover.example.test')).toMatchObject({ status: 'wrong', found: ['elsewhere.example'], fix: 'replace it with: autodiscover.example.test. 3600 IN CNAME mail.example.test.' });
  });

  it('says what is missing, with the record to add', () => {
    const sts = find('TXT', '_mta-sts.example.test');
    expect(sts.status).toBe('missing');
    expect(sts.fix).toMatch(/^add: _mta-sts\.example\.test\. 3600 IN TXT "v=STSv1; id=[A-Za-z0-9]+"$/);
    expect(find('SRV', '_autodiscover._tcp.example.test')).toMatchObject({ status: 'missing', fix: 'add: _autodiscover._tcp.example.test. 3600 IN SRV 0 1 443 mail.example.test.' });
  });

  it('warns about weak settings and reports failed lookups apart from missing records', () => {
    const dmarc = find('TXT', '_dmarc.example.test');
    expect(dmarc.status).toBe('warn');
    expect(dmarc.message).toMatch(/p=none/);
    expect(dmarc.fix).toContain('p=quarantine');
    const rpt = find('TXT', '_smtp._tls.example.test');
    expect(rpt.status).toBe('unanswered');
    expect(rpt.fix).toMatch(/\[dns\] servers/);
  });

  it('gives every finding that is not ok a fix, and a readable report', () => {
    for (const f of findings) if (f.status !== 'ok') expect(f.fix, `${f.record.type} ${f.record.name}`).toBeTruthy();
    expect(problemsIn(findings)).toBeGreaterThan(0);
    const text = formatFindings('example.test', findings);
    expect(text).toMatch(/^DNS check of example\.test/);
    expect(text).toMatch(/WRONG\s+A\s+mail\.example\.test/);
    expect(text).toMatch(/MISSING\s+TXT\s+_mta-sts\.example\.test/);
    expect(text).toMatch(/\d+ problems, 1 warning/);
  });

  it('runs as `hearth dns check` against the given server and exits 1 on problems', async () => {
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [CLI, 'dns', 'check', 'example.test', '--config', configDir, '--server', `127.0.0.1:${dns.port}`, '--json'], { timeout: 30_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
    expect(r.code, r.stderr).toBe(1);
    const out = JSON.parse(r.stdout) as Finding[];
    expect(out.find((f) => f.record.type === 'MX')?.status).toBe('ok');
    expect(out.find((f) => f.record.type === 'A')?.status).toBe('wrong');
  });
});
