// `hearth dns`: every record a domain needs, with the DKIM key of config/dkim/, ready to paste.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfigText } from '../../src/config/load.ts';
import { generateDkimKey } from '../../src/smtp/dkim.ts';
import { clientSettings, dkimPublicKeys, dnsRecords, formatZone, txtStrings } from '../../src/setup/dns-records.ts';
import { mtaStsId } from '../../src/webmail/autoconfig.ts';
import { CLI, publicConfigToml } from '../helpers/hearth.ts';

const TOML = publicConfigToml(['192.0.2.10', '2001:db8::10'], '[listeners.pop3]\nlisten = ":110"\ntls = "starttls"\nenabled = false\n');

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

describe('hearth dns', () => {
  let root: string;
  let configDir: string;
  let dkimTxt: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'hearth-dns-'));
    configDir = join(root, 'config');
    dkimTxt = (await generateDkimKey(configDir, 'example.test', 'sel1', 'rsa')).record;
    await writeFile(join(configDir, 'hearth.toml'), TOML);
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  it('lists MX, A/AAAA, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, SRV and autoconfig records', async () => {
    const config = parseConfigText(TOML, 'hearth.toml');
    const records = dnsRecords({ domain: 'example.test', config, dkim: await dkimPublicKeys(configDir, 'example.test') });
    const by = (type: string, name: string) => records.filter((r) => r.type === type && r.name === name);
    expect(by('MX', 'example.test')).toMatchObject([{ priority: 10, exchange: 'mail.example.test' }]);
    expect(by('A', 'mail.example.test')).toMatchObject([{ address: '192.0.2.10' }]);
    expect(by('AAAA', 'mail.example.test')).toMatchObject([{ address: '2001:db8::10' }]);
    expect(by('TXT', 'example.test')).toMatchObject([{ text: 'v=spf1 mx -all' }]);
    expect(by('TXT', 'sel1._domainkey.example.test')).toMatchObject([{ text: dkimTxt }]);
    expect(by('TXT', '_dmarc.example.test')[0]).toMatchObject({ text: 'v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test' });
    expect(by('TXT', '_mta-sts.example.test')).toMatchObject([{ text: `v=STSv1; id=${mtaStsId(clientSettings(config))}` }]);
    expect(by('CNAME', 'mta-sts.example.test')).toMatchObject([{ target: 'mail.example.test' }]);
    expect(by('TXT', '_smtp._tls.example.test')).toMatchObject([{ text: 'v=TLSRPTv1; rua=mailto:postmaster@example.test' }]);
    const srv = Object.fromEntries(records.filter((r) => r.type === 'SRV').map((r) => [r.name, r.type === 'SRV' ? [r.priority, r.port, r.target] : []]));
    expect(srv).toEqual({
      '_submissions._tcp.example.test': [0, 465, 'mail.example.test'],
      '_submission._tcp.example.test': [10, 587, 'mail.example.test'],
      '_imaps._tcp.example.test': [0, 993, 'mail.example.test'],
      // no listener: RFC 6186 "." says the service is not offered
      '_imap._tcp.example.test': [0, 0, '.'],
      '_pop3s._tcp.example.test': [0, 0, '.'],
      '_pop3._tcp.example.test': [0, 0, '.'],
      '_autodiscover._tcp.example.test': [0, 443, 'mail.example.test'],
    });
    expect(by('CNAME', 'autoconfig.example.test')).toHaveLength(1);
    expect(by('CNAME', 'autodiscover.example.test')).toHaveLength(1);
  });

  it('splits long TXT data into strings of at most 255 octets', () => {
    const long = 'v=DKIM1; k=rsa; p=' + 'A'.repeat(400);
    const parts = [...txtStrings(long).matchAll(/"([^"]*)"/g)].map((m) => m[1]);
    expect(parts.map((p) => p.length)).toEqual([255, 163]);
    expect(parts.join('')).toBe(long);
  });

  it('prints them ready to paste, with the DKIM key of config/dkim/', async () => {
    const r = await run(['dns', 'example.test', '--config', configDir]);
    expect(r.code, r.stderr).toBe(0);
    const zone = r.stdout;
    const lines = zone.split('\n').filter((l) => l && !l.startsWith(';'));
    for (const expected of [
      /^example\.test\.\s+3600 IN MX\s+10 mail\.example\.test\.$/,
      /^mail\.example\.test\.\s+3600 IN A\s+192\.0\.2\.10$/,
      /^mail\.example\.test\.\s+3600 IN AAAA\s+2001:db8::10$/,
      /^example\.test\.\s+3600 IN TXT\s+"v=spf1 mx -all"$/,
      /^sel1\._domainkey\.example\.test\.\s+3600 IN TXT\s+"v=DKIM1; k=rsa; p=/,
      /^_dmarc\.example\.test\.\s+3600 IN TXT\s+"v=DMARC1; p=quarantine; rua=mailto:postmaster@example\.test"$/,
      /^_mta-sts\.example\.test\.\s+3600 IN TXT\s+"v=STSv1; id=[A-Za-z0-9]{1,32}"$/,
      /^mta-sts\.example\.test\.\s+3600 IN CNAME mail\.example\.test\.$/,
      /^_smtp\._tls\.example\.test\.\s+3600 IN TXT\s+"v=TLSRPTv1; rua=mailto:postmaster@example\.test"$/,
      /^_submission\._tcp\.example\.test\.\s+3600 IN SRV\s+10 1 587 mail\.example\.test\.$/,
      /^_submissions\._tcp\.example\.test\.\s+3600 IN SRV\s+0 1 465 mail\.example\.test\.$/,
      /^_imap\._tcp\.example\.test\.\s+3600 IN SRV\s+0 0 0 \.$/,
      /^_imaps\._tcp\.example\.test\.\s+3600 IN SRV\s+0 1 993 mail\.example\.test\.$/,
      /^_pop3\._tcp\.example\.test\.\s+3600 IN SRV\s+0 0 0 \.$/,
      /^_pop3s\._tcp\.example\.test\.\s+3600 IN SRV\s+0 0 0 \.$/,
      /^_autodiscover\._tcp\.example\.test\.\s+3600 IN SRV\s+0 1 443 mail\.example\.test\.$/,
      /^autoconfig\.example\.test\.\s+3600 IN CNAME mail\.example\.test\.$/,
    ]) {
      expect(lines.some((l) => expected.test(l)), String(expected)).toBe(true);
    }
    // the DKIM record, once its strings are joined, is exactly dkimTxtRecord of the key
    const dkimLine = lines.find((l) => l.startsWith('sel1._domainkey'))!;
    expect([...dkimLine.matchAll(/"([^"]*)"/g)].map((m) => m[1]).join('')).toBe(dkimTxt);
    const json = JSON.parse((await run(['dns', '--json', '--config', configDir])).stdout) as Record<string, unknown[]>;
    expect(Object.keys(json)).toEqual(['example.test']);
  });

  it('says how to make a DKIM key when there is none, and refuses a domain not configured', async () => {
    const config = parseConfigText(TOML, 'hearth.toml');
    const text = formatZone('example.test', dnsRecords({ domain: 'example.test', config, dkim: [] }));
    expect(text).toContain('hearth dkim generate example.test');
    const r = await run(['dns', 'other.example', '--config', configDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not one of this server's domains/);
  });

  it('advertises the public ports of [client.ports] behind port mapping, and a smarthost in SPF', () => {
    const config = parseConfigText(`hostname = "mail.example.test"\ndomains = ["example.test"]\n[listeners.imaps]\nlisten = ":1993"\ntls = "implicit"\n[relay]\nmode = "smarthost"\nsmarthost = "smtp.provider.example:587"\n[client]\nhostname = "imap.example.test"\n[client.ports]\nimaps = 993\nsubmissions = 465\n`, 'x');
    const s = clientSettings(config);
    expect(s.endpoints.map((e) => [e.service, e.host, e.port, e.socket])).toEqual([
      ['imaps', 'imap.example.test', 993, 'SSL'],
      ['submissions', 'imap.example.test', 465, 'SSL'],
    ]);
    const spf = dnsRecords({ domain: 'example.test', config, dkim: [] }).find((r) => r.kind === 'spf' && r.name === 'example.test');
    expect(spf).toMatchObject({ text: 'v=spf1 mx ~all' });
    expect(spf!.why).toMatch(/smarthost/);
  });
});
