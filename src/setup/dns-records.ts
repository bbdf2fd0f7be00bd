// The DNS records a hearth domain needs, as data (for `hearth dns check`) and as zone-file text
// ready to paste (`hearth dns`). Also in charge of turning the config into ClientSettings:
// what autoconfig, Autodiscover, the SRV records and the MTA-STS policy advertise, derived
// from [listeners] and `hostname`, overridden by [client] where the public view differs.
//
// RFCs: MX 5321 5.1; SPF 7208; DKIM 6376 3.6.2.1 (+ 8463 ed25519); DMARC 7489 6.3;
// MTA-STS 8461 3.1; TLS-RPT 8460 3; SRV for mail clients 6186 3 (+ 8314 5.1 for the
// implicit-TLS names and their priorities).
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { HearthConfig } from '../config/schema.ts';
import { dkimTxtRecord } from '../smtp/dkim.ts';
import { mtaStsId } from '../webmail/autoconfig.ts';
import type { ClientEndpoint, ClientService, ClientSettings, ClientSocket } from '../webmail/autoconfig.ts';

const SERVICE_INFO: Record<ClientService, { protocol: ClientEndpoint['protocol']; implicit: boolean }> = {
  imaps: { protocol: 'imap', implicit: true },
  imap: { protocol: 'imap', implicit: false },
  pop3s: { protocol: 'pop3', implicit: true },
  pop3: { protocol: 'pop3', implicit: false },
  submissions: { protocol: 'smtp', implicit: true },
  submission: { protocol: 'smtp', implicit: false },
};
const CLIENT_SERVICES = Object.keys(SERVICE_INFO) as ClientService[];

/** What clients are told, from the config: enabled listeners, public ports from [client.ports]. */
export function clientSettings(config: HearthConfig): ClientSettings {
  const host = config.client.hostname ?? config.hostname;
  const endpoints: ClientEndpoint[] = [];
  for (const service of CLIENT_SERVICES) {
    const listener = config.listeners[service];
    const override = config.client.ports[service];
    if (override === 0) continue;
    if (!listener?.enabled && override === undefined) continue;
    const socket: ClientSocket = listener?.enabled ? ({ implicit: 'SSL', starttls: 'STARTTLS', plain: 'plain' } as const)[listener.tls] : SERVICE_INFO[service].implicit ? 'SSL' : 'STARTTLS';
    const port = override ?? listener!.listen.port;
    if (port === 0) continue; // an ephemeral port (tests) cannot be advertised
    endpoints.push({ service, protocol: SERVICE_INFO[service].protocol, host, port, socket });
  }
  // RFC 8314 5.1: implicit TLS first; within a protocol the order above stands
  const rank = (e: ClientEndpoint) => ({ SSL: 0, STARTTLS: 1, plain: 2 })[e.socket];
  endpoints.sort((a, b) => (a.protocol === b.protocol ? rank(a) - rank(b) : 0));
  const http = config.listeners.http;
  // autoconfig and MTA-STS are fetched over HTTPS on 443, directly or through a proxy
  const httpsPort = config.client.ports.https ?? (http?.enabled ? 443 : 0);
  return {
    hostname: host,
    mxHost: config.hostname,
    domains: config.domains,
    displayName: config.client.display_name,
    endpoints,
    httpsPort,
    mtaSts: { mode: config.client.mta_sts_mode, maxAgeSeconds: Math.round(config.client.mta_sts_max_age / 1000) },
  };
}

export type RecordKind = 'mx' | 'address' | 'spf' | 'dkim' | 'dmarc' | 'mta-sts' | 'tls-rpt' | 'srv' | 'autoconfig';

type Base = { name: string; kind: RecordKind; why: string };
export type DnsRecord =
  | (Base & { type: 'MX'; priority: number; exchange: string })
  | (Base & { type: 'A' | 'AAAA'; /** undefined: the server's public address, unknown to us */ address?: string })
  | (Base & { type: 'TXT'; text: string })
  | (Base & { type: 'SRV'; priority: number; weight: number; port: number; target: string })
  | (Base & { type: 'CNAME'; target: string });

export type DkimPublicKey = { selector: string; record: string };

/** The TXT value of every key under <configDir>/dkim/<domain>/, by selector. A key that cannot be read is skipped. */
export async function dkimPublicKeys(configDir: string, domain: string): Promise<DkimPublicKey[]> {
  const dir = join(configDir, 'dkim', domain.toLowerCase());
  let files: string[];
  try {
    files = (await readdir(dir)).filter((f) => f.endsWith('.pem')).sort();
  } catch {
    return [];
  }
  const keys: DkimPublicKey[] = [];
  for (const file of files) {
    try {
      keys.push({ selector: file.slice(0, -4), record: dkimTxtRecord(await readFile(join(dir, file), 'utf8')) });
    } catch {
      // a broken key signs nothing either (loadDkimKeys logs it); `hearth dns` says no key
    }
  }
  return keys;
}

export type RecordOptions = {
  domain: string;
  config: HearthConfig;
  dkim: DkimPublicKey[];
};

const SRV_PRIORITY: Record<ClientService, number> = { submissions: 0, submission: 10, imaps: 0, imap: 10, pop3s: 20, pop3: 30 };

/**
 * The A/AAAA records that make each name lead to this server: one per address in [client]
 * addresses, or placeholders (no `address`) when none is configured. Also used by `hearth doctor`.
 */
export function addressRecords(names: string[], addresses: string[]): DnsRecord[] {
  const records: DnsRecord[] = [];
  const v4 = addresses.filter((a) => !a.includes(':'));
  const v6 = addresses.filter((a) => a.includes(':'));
  for (const name of new Set(names)) {
    if (addresses.length === 0) {
      records.push({ kind: 'address', type: 'A', name, why: `${name} must lead to this server: its public IPv4 address (set [client] addresses to have it filled in)` });
      records.push({ kind: 'address', type: 'AAAA', name, why: `and its public IPv6 address, if it has one` });
    }
    for (const address of v4) records.push({ kind: 'address', type: 'A', name, address, why: `${name} leads to this server` });
    for (const address of v6) records.push({ kind: 'address', type: 'AAAA', name, address, why: `${name} leads to this server (IPv6)` });
  }
  return records;
}

/** Every record `domain` needs, in the order a person would add them. */
export function dnsRecords(opts: RecordOptions): DnsRecord[] {
  const { config } = opts;
  const domain = opts.domain.toLowerCase();
  const settings = clientSettings(config);
  const mx = config.hostname;
  const reports = config.client.reports_to ?? `postmaster@${domain}`;
  const records: DnsRecord[] = [];

  records.push({ kind: 'mx', type: 'MX', name: domain, priority: 10, exchange: mx, why: `other servers deliver mail for ${domain} to ${mx}` });

  records.push(...addressRecords([mx, settings.hostname], config.client.addresses));

  const smarthost = config.relay.mode === 'smarthost';
  records.push({
    kind: 'spf',
    type: 'TXT',
    name: domain,
    text: smarthost ? 'v=spf1 mx ~all' : 'v=spf1 mx -all',
    why: smarthost
      ? `SPF: which servers may send as @${domain}; mail leaves through your smarthost, so add what its provider says (usually include:...) before ~all`
      : `SPF: only the MX host (${mx}) sends mail as @${domain}`,
  });
  if (mx !== domain) records.push({ kind: 'spf', type: 'TXT', name: mx, text: 'v=spf1 a -all', why: `SPF for the name ${mx} says in its greeting (HELO)` });

  if (opts.dkim.length === 0) {
    records.push({ kind: 'dkim', type: 'TXT', name: `SELECTOR._domainkey.${domain}`, text: 'v=DKIM1; k=rsa; p=...', why: `DKIM: no key yet; make one with \`hearth dkim generate ${domain}\` and run \`hearth dns\` again` });
  }
  for (const key of opts.dkim) records.push({ kind: 'dkim', type: 'TXT', name: `${key.selector}._domainkey.${domain}`, text: key.record, why: `DKIM: the public key of config/dkim/${domain}/${key.selector}.pem, which signs mail from @${domain}` });

  records.push({ kind: 'dmarc', type: 'TXT', name: `_dmarc.${domain}`, text: `v=DMARC1; p=${config.client.dmarc_policy}; rua=mailto:${reports}`, why: `DMARC: what receivers do with mail that fails SPF and DKIM, and where they send reports` });

  if (config.client.mta_sts_mode !== 'none') {
    records.push({ kind: 'mta-sts', type: 'TXT', name: `_mta-sts.${domain}`, text: `v=STSv1; id=${mtaStsId(settings)}`, why: `MTA-STS: senders must use TLS to reach ${mx}; the id changes whenever the policy does` });
    records.push({ kind: 'mta-sts', type: 'CNAME', name: `mta-sts.${domain}`, target: settings.hostname, why: `MTA-STS: the policy is fetched from https://mta-sts.${domain}/.well-known/mta-sts.txt (the certificate must cover this name)` });
  }
  records.push({ kind: 'tls-rpt', type: 'TXT', name: `_smtp._tls.${domain}`, text: `v=TLSRPTv1; rua=mailto:${reports}`, why: 'TLS-RPT: where senders report TLS failures reaching you' });

  const offered = new Map(settings.endpoints.map((e) => [e.service, e]));
  for (const service of ['submissions', 'submission', 'imaps', 'imap', 'pop3s', 'pop3'] as const) {
    const e = offered.get(service);
    // RFC 6186 3: a target of "." says the service is not offered here
    records.push(
      e
        ? { kind: 'srv', type: 'SRV', name: `_${service}._tcp.${domain}`, priority: SRV_PRIORITY[service], weight: 1, port: e.port, target: e.host, why: `mail clients find ${service} (RFC 6186)` }
        : { kind: 'srv', type: 'SRV', name: `_${service}._tcp.${domain}`, priority: 0, weight: 0, port: 0, target: '.', why: `${service} is not offered (RFC 6186: target ".")` },
    );
  }
  if (settings.httpsPort) {
    records.push({ kind: 'srv', type: 'SRV', name: `_autodiscover._tcp.${domain}`, priority: 0, weight: 1, port: settings.httpsPort, target: settings.hostname, why: 'Outlook finds Autodiscover' });
    records.push({ kind: 'autoconfig', type: 'CNAME', name: `autoconfig.${domain}`, target: settings.hostname, why: 'Thunderbird asks https://autoconfig.<domain>/mail/config-v1.1.xml (the certificate must cover this name)' });
    records.push({ kind: 'autoconfig', type: 'CNAME', name: `autodiscover.${domain}`, target: settings.hostname, why: 'Outlook asks https://autodiscover.<domain>/autodiscover/autodiscover.xml' });
  }
  return records;
}

/** TXT data as zone-file strings: each at most 255 octets (RFC 1035 3.3.14), quoted. */
export function txtStrings(text: string): string {
  const parts: string[] = [];
  for (let i = 0; i < text.length; i += 255) parts.push(text.slice(i, i + 255));
  return parts.map((p) => `"${p.replace(/["\\]/g, '\\$&')}"`).join(' ');
}

const fqdn = (name: string) => (name === '.' ? '.' : `${name}.`);

/** The record's data in zone-file syntax; placeholders in <angle brackets>. */
export function recordData(r: DnsRecord): string {
  switch (r.type) {
    case 'MX':
      return `${r.priority} ${fqdn(r.exchange)}`;
    case 'A':
      return r.address ?? '<public IPv4 address of this server>';
    case 'AAAA':
      return r.address ?? '<public IPv6 address of this server>';
    case 'TXT':
      return txtStrings(r.text);
    case 'SRV':
      return `${r.priority} ${r.weight} ${r.port} ${fqdn(r.target)}`;
    case 'CNAME':
      return fqdn(r.target);
  }
}

const HEADINGS: Record<RecordKind, string> = {
  mx: 'Where mail for the domain goes',
  address: 'The server itself',
  spf: 'Who may send (SPF)',
  dkim: 'Signatures (DKIM)',
  dmarc: 'Policy and reports (DMARC)',
  'mta-sts': 'TLS required for incoming mail (MTA-STS)',
  'tls-rpt': 'TLS failure reports (TLS-RPT)',
  srv: 'Mail client discovery (SRV, RFC 6186)',
  autoconfig: 'Mail client setup (Thunderbird autoconfig, Outlook Autodiscover)',
};

/** Zone-file text with a comment per record; paste as is, or copy name/type/value into a web form. */
export function formatZone(domain: string, records: DnsRecord[], ttl = 3600): string {
  const width = Math.max(...records.map((r) => fqdn(r.name).length)) + 1;
  const out: string[] = [`; DNS records for ${domain}, by hearth (zone-file syntax: name TTL class type value).`, '; In a provider\'s web form: the name without the trailing dot, the type, and the value.', ''];
  let kind: RecordKind | undefined;
  for (const r of records) {
    if (r.kind !== kind) {
      if (kind) out.push('');
      out.push(`; --- ${HEADINGS[r.kind]} ---`);
      kind = r.kind;
    }
    out.push(`; ${r.why}`);
    const line = `${fqdn(r.name).padEnd(width)} ${ttl} IN ${r.type.padEnd(5)} ${recordData(r)}`;
    const placeholder = (r.type === 'A' || r.type === 'AAAA') && !r.address;
    out.push(placeholder || r.name.startsWith('SELECTOR.') ? `; ${line}` : line);
  }
  return out.join('\n') + '\n';
}
