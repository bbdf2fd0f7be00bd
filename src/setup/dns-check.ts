// `hearth dns check DOMAIN`: resolve every record dns-records.ts says the domain needs and
// compare. Each finding is ok, a warning, missing, wrong, or unanswered (the lookup itself
// failed); every finding that is not ok carries the change to make, in the same zone-file
// syntax `hearth dns` prints.
import { promises as dns } from 'node:dns';
import { HearthError } from '../core/errors.ts';
import type { DnsRecord } from './dns-records.ts';
import { recordData } from './dns-records.ts';

export type DnsLookup = Pick<dns.Resolver, 'resolveMx' | 'resolveTxt' | 'resolve4' | 'resolve6' | 'resolveSrv' | 'resolveCname'>;

export type FindingStatus = 'ok' | 'warn' | 'missing' | 'wrong' | 'unanswered';
export type Finding = {
  status: FindingStatus;
  record: DnsRecord;
  /** What DNS holds for the name and type, as text. */
  found: string[];
  /** What is the matter, for any status but ok (an ok may carry a note). */
  message?: string;
  /** What to change; set for every status but ok. */
  fix?: string;
};

/** A resolver on the configured servers ([dns] servers; empty = the system's). */
export function makeResolver(servers: string[], timeoutMs: number): dns.Resolver {
  const resolver = new dns.Resolver({ timeout: Math.min(timeoutMs, 10_000), tries: 2 });
  if (servers.length) {
    try {
      resolver.setServers(servers);
    } catch (err) {
      throw new HearthError('DNS_BAD_SERVERS', `[dns] servers ${JSON.stringify(servers)}: ${(err as Error).message}; write "ip" or "ip:port"`);
    }
  }
  return resolver;
}

const NOT_THERE = new Set(['ENODATA', 'ENOTFOUND']);
const norm = (name: string) => name.toLowerCase().replace(/\.$/, '');

type Answer<T> = { ok: true; values: T[] } | { ok: false; error: string };

async function ask<T>(lookup: () => Promise<T[]>): Promise<Answer<T>> {
  try {
    return { ok: true, values: await lookup() };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    if (NOT_THERE.has(code)) return { ok: true, values: [] };
    return { ok: false, error: `${code || 'error'}: ${(err as Error).message}` };
  }
}

const line = (r: DnsRecord) => `${r.name}. 3600 IN ${r.type} ${recordData(r)}`;
const add = (r: DnsRecord) => `add: ${line(r)}`;
const replace = (r: DnsRecord, what = 'it') => `replace ${what} with: ${line(r)}`;

function unanswered(record: DnsRecord, error: string): Finding {
  return { status: 'unanswered', record, found: [], message: `the lookup failed (${error})`, fix: 'try again; if it persists, check [dns] servers in hearth.toml and that the domain is delegated to your DNS provider' };
}

/** TXT records of a name starting with `prefix` (case-insensitive), each joined from its strings. */
async function txt(lookup: DnsLookup, name: string, prefix: RegExp): Promise<Answer<string>> {
  const a = await ask(() => lookup.resolveTxt(name));
  return a.ok ? { ok: true, values: a.values.map((parts) => parts.join('')).filter((t) => prefix.test(t.trim())) } : a;
}

/** key=value tags of a DKIM/DMARC/STS record, names lower-cased, whitespace removed from values. */
function tags(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of text.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) m.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).replace(/\s+/g, ''));
  }
  return m;
}

async function checkOne(lookup: DnsLookup, r: DnsRecord, ctx: { mxHost: string; addresses: string[] }): Promise<Finding> {
  const name = r.name;
  switch (r.type) {
    case 'MX': {
      const a = await ask(() => lookup.resolveMx(name));
      if (!a.ok) return unanswered(r, a.error);
      const found = a.values.sort((x, y) => x.priority - y.priority).map((mx) => `${mx.priority} ${mx.exchange || '.'}`);
      if (a.values.length === 0) return { status: 'missing', record: r, found, message: `no MX record: mail for ${name} cannot reach you`, fix: add(r) };
      const ours = a.values.filter((mx) => norm(mx.exchange) === norm(r.exchange));
      if (ours.length === 0) return { status: 'wrong', record: r, found, message: `MX points at ${found.join(', ')}, not at ${r.exchange}`, fix: replace(r, 'them') };
      const best = Math.min(...a.values.map((mx) => mx.priority));
      const others = a.values.filter((mx) => norm(mx.exchange) !== norm(r.exchange));
      if (others.length) {
        const first = ours.some((mx) => mx.priority === best);
        return { status: 'warn', record: r, found, message: `${first ? 'other' : 'preferred'} MX hosts also receive mail: ${others.map((mx) => mx.exchange).join(', ')}`, fix: `remove the other MX records unless those servers pass mail on to ${r.exchange}` };
      }
      return { status: 'ok', record: r, found };
    }
    case 'A':
    case 'AAAA': {
      const a = await ask(() => (r.type === 'A' ? lookup.resolve4(name) : lookup.resolve6(name)));
      if (!a.ok) return unanswered(r, a.error);
      const found = a.values;
      if (r.address === undefined) {
        if (found.length) return { status: 'ok', record: r, found, message: 'set [client] addresses to have hearth compare it with this server' };
        if (r.type === 'AAAA') return { status: 'ok', record: r, found, message: 'no IPv6 address (fine if the server has none)' };
        return { status: 'missing', record: r, found, message: `${name} has no address: nothing can connect to it`, fix: `add: ${name}. 3600 IN A <public IPv4 address of this server>` };
      }
      if (found.some((ip) => ip === r.address)) return { status: 'ok', record: r, found };
      return found.length
        ? { status: 'wrong', record: r, found, message: `${name} leads to ${found.join(', ')}, not to ${r.address}`, fix: replace(r, `${found.join(', ')}`) }
        : { status: 'missing', record: r, found, message: `${name} has no ${r.type} record`, fix: add(r) };
    }
    case 'TXT':
      return checkTxt(lookup, r, ctx);
    case 'SRV': {
      const a = await ask(() => lookup.resolveSrv(name));
      if (!a.ok) return unanswered(r, a.error);
      const found = a.values.map((s) => `${s.priority} ${s.weight} ${s.port} ${s.name || '.'}`);
      if (r.target === '.') {
        const live = a.values.filter((s) => s.name && s.name !== '.');
        return live.length ? { status: 'wrong', record: r, found, message: `clients are sent to ${found.join(', ')}, but this server does not offer ${name.split('.')[0].slice(1)}`, fix: replace(r) } : { status: 'ok', record: r, found };
      }
      if (a.values.length === 0) return { status: 'missing', record: r, found, message: 'mail clients cannot discover this service', fix: add(r) };
      if (a.values.some((s) => norm(s.name) === norm(r.target) && s.port === r.port)) return { status: 'ok', record: r, found };
      return { status: 'wrong', record: r, found, message: `points at ${found.join(', ')}, expected port ${r.port} on ${r.target}`, fix: replace(r) };
    }
    case 'CNAME': {
      const a = await ask(() => lookup.resolveCname(name));
      if (!a.ok) return unanswered(r, a.error);
      if (a.values.some((t) => norm(t) === norm(r.target))) return { status: 'ok', record: r, found: a.values };
      if (a.values.length) return { status: 'wrong', record: r, found: a.values, message: `${name} is an alias of ${a.values.join(', ')}, not of ${r.target}`, fix: replace(r) };
      // an A record of its own is fine when it leads to this server
      const v4 = await ask(() => lookup.resolve4(name));
      if (v4.ok && v4.values.length) {
        const here = ctx.addresses.length === 0 || v4.values.some((ip) => ctx.addresses.includes(ip));
        return here
          ? { status: 'ok', record: r, found: v4.values.map((ip) => `A ${ip}`), message: 'an A record instead of the CNAME; keep it in step with the server' }
          : { status: 'wrong', record: r, found: v4.values.map((ip) => `A ${ip}`), message: `${name} leads to ${v4.values.join(', ')}, not to this server`, fix: replace(r, 'the A record') };
      }
      return { status: 'missing', record: r, found: [], message: `${name} does not exist`, fix: add(r) };
    }
  }
}

async function checkTxt(lookup: DnsLookup, r: DnsRecord & { type: 'TXT' }, ctx: { mxHost: string; addresses: string[] }): Promise<Finding> {
  const version = /^v=(\w+)/i.exec(r.text)?.[1] ?? '';
  // a DKIM record may leave out v= (RFC 6376 3.6.1), so every TXT of a _domainkey name counts
  const a = await txt(lookup, r.name, r.kind === 'dkim' ? /^/ : new RegExp(`^v=${version}\\b`, 'i'));
  if (!a.ok) return unanswered(r, a.error);
  const found = a.values;
  if (r.name.startsWith('SELECTOR.')) return { status: 'missing', record: r, found, message: 'no DKIM key in config/dkim/: mail goes out unsigned', fix: `run \`hearth dkim generate ${r.name.replace(/^SELECTOR\._domainkey\./, '')}\`, then \`hearth dns\` for the record` };
  if (found.length === 0) return { status: 'missing', record: r, found, message: `no "v=${version}" record at ${r.name}`, fix: add(r) };
  if (found.length > 1 && r.kind !== 'dkim') {
    // RFC 7208 3.2, RFC 7489 6.6.3, RFC 8461 3.1: more than one record makes all of them void
    return { status: 'wrong', record: r, found, message: `${found.length} ${version} records: receivers then ignore them all`, fix: `keep exactly one: ${line(r)}` };
  }
  const have = found[0].trim();
  switch (r.kind) {
    case 'spf': {
      const terms = have.toLowerCase().split(/\s+/);
      if (terms.includes('+all') || terms.includes('all')) return { status: 'wrong', record: r, found, message: 'ends in +all: anyone may send as this domain', fix: replace(r) };
      const covers = terms.some((t) => t === 'mx' || t === 'a' || t === `a:${norm(ctx.mxHost)}` || t.startsWith('include:') || ctx.addresses.some((ip) => t === `ip4:${ip}` || t === `ip6:${ip}`));
      if (!covers) return { status: 'wrong', record: r, found, message: `SPF does not name this server (${ctx.mxHost})`, fix: replace(r) };
      if (have.toLowerCase() === r.text.toLowerCase()) return { status: 'ok', record: r, found };
      return { status: 'ok', record: r, found, message: `differs from the suggestion "${r.text}" but names this server` };
    }
    case 'dkim': {
      const want = tags(r.text).get('p');
      const match = found.some((t) => tags(t).get('p') === want);
      if (match) return { status: 'ok', record: r, found };
      const revoked = found.some((t) => tags(t).get('p') === '');
      return { status: 'wrong', record: r, found, message: revoked ? 'the key is revoked (empty p=)' : `the public key differs from config/dkim/…/${r.name.split('.')[0]}.pem: signatures fail`, fix: replace(r) };
    }
    case 'dmarc': {
      const t = tags(have);
      const p = t.get('p');
      if (!p || !['none', 'quarantine', 'reject'].includes(p.toLowerCase())) return { status: 'wrong', record: r, found, message: 'no valid p= (none, quarantine or reject)', fix: replace(r) };
      if (p.toLowerCase() === 'none') return { status: 'warn', record: r, found, message: 'p=none only monitors: forged mail in your name is still delivered', fix: `once reports look clean, ${replace(r)}` };
      if (!t.get('rua')) return { status: 'warn', record: r, found, message: 'no rua=: you get no reports', fix: replace(r) };
      return { status: 'ok', record: r, found };
    }
    case 'mta-sts': {
      const id = tags(have).get('id');
      if (!id || !/^[A-Za-z0-9]{1,32}$/.test(id)) return { status: 'wrong', record: r, found, message: 'no valid id= (1 to 32 letters and digits)', fix: replace(r) };
      if (id !== tags(r.text).get('id')) return { status: 'warn', record: r, found, message: 'the id is not the one of the policy this server serves: senders may keep an older policy', fix: replace(r) };
      return { status: 'ok', record: r, found };
    }
    case 'tls-rpt':
      if (!/rua=/i.test(have)) return { status: 'wrong', record: r, found, message: 'no rua= address', fix: replace(r) };
      return { status: 'ok', record: r, found };
    default:
      return have === r.text ? { status: 'ok', record: r, found } : { status: 'wrong', record: r, found, message: 'differs', fix: replace(r) };
  }
}

/** Check every record; lookups run side by side. */
export async function checkDns(lookup: DnsLookup, records: DnsRecord[], ctx: { mxHost: string; addresses: string[] }): Promise<Finding[]> {
  return Promise.all(records.map((r) => checkOne(lookup, r, ctx)));
}

const LABEL: Record<FindingStatus, string> = { ok: 'ok', warn: 'WARN', missing: 'MISSING', wrong: 'WRONG', unanswered: 'NO ANSWER' };

export function problemsIn(findings: Finding[]): number {
  return findings.filter((f) => f.status === 'missing' || f.status === 'wrong' || f.status === 'unanswered').length;
}

/** A report for a person: one line per record, found values and the fix under each problem. */
export function formatFindings(domain: string, findings: Finding[]): string {
  const out: string[] = [`DNS check of ${domain}`];
  for (const f of findings) {
    out.push(`  ${LABEL[f.status].padEnd(9)} ${f.record.type.padEnd(5)} ${f.record.name}${f.message ? `: ${f.message}` : ''}`);
    if (f.status !== 'ok' && f.found.length) for (const v of f.found) out.push(`            found: ${v.length > 120 ? `${v.slice(0, 117)}...` : v}`);
    if (f.fix) out.push(`            fix:   ${f.fix}`);
  }
  const problems = problemsIn(findings);
  const warnings = findings.filter((f) => f.status === 'warn').length;
  out.push('', problems === 0 && warnings === 0 ? 'All records are in place.' : `${problems} problem${problems === 1 ? '' : 's'}, ${warnings} warning${warnings === 1 ? '' : 's'}. DNS changes can take up to the record's TTL to show.`);
  return out.join('\n') + '\n';
}
