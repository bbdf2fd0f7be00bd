// `hearth doctor`: the checks a person would otherwise do by hand when mail does not flow, each
// finding with the fix. It reads nothing itself: the CLI (src/cli/ops.ts) gathers the config
// values, the certificate files, a resolver and a way to list the running queue, so every check
// runs against fixtures in tests (a loopback DNS server, a local "port 25" listener).
import { X509Certificate, createPrivateKey } from 'node:crypto';
import dns from 'node:dns';
import type { promises as dnsPromises } from 'node:dns';
import net from 'node:net';
import { resolveRoute } from '../queue/routing.ts';
import { addressRecords, recordData } from '../setup/dns-records.ts';
import type { QueueEntry } from '../queue/queue.ts';

export type Severity = 'ok' | 'warn' | 'fail' | 'skip';
export type Finding = { check: 'dns' | 'rdns' | 'tls' | 'queue' | 'outbound'; severity: Severity; message: string; fix?: string };

export type DoctorInput = {
  hostname: string;
  domains: string[];
  /** [client] addresses: this server's public addresses, filled into the A/AAAA record to add (as `hearth dns` does). */
  addresses?: string[];
  resolver: dnsPromises.Resolver;
  dnsTimeoutMs?: number;
  /** The served certificate (PEM) and its key, or why they could not be read. */
  certificate: { file: string; cert?: Buffer; key?: Buffer; error?: string };
  /** DKIM keys configured here, with the TXT record each needs. */
  dkim: Array<{ domain: string; selector: string; txt: string }>;
  /** The running server's queue, or 'not-running'. */
  queue(): Promise<QueueEntry[] | 'not-running'>;
  /** Outbound: a smarthost (host:port) if configured, and where to try port 25 otherwise. */
  outbound: { smarthost?: { host: string; port: number }; testHost: string; testPort: number; timeoutMs: number };
  now?: () => number;
  /** Warn when the certificate expires within this many days (default 14). */
  expiryWarnDays?: number;
  /** A queued message older than this, still undelivered, is "stuck" (default 1 h). */
  stuckAfterMs?: number;
};

const DAY = 86_400_000;

async function txt(resolver: dnsPromises.Resolver, name: string): Promise<{ records: string[]; error?: string }> {
  try {
    return { records: (await resolver.resolveTxt(name)).map((chunks) => chunks.join('')) };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTFOUND' || code === 'ENODATA') return { records: [] };
    return { records: [], error: code ?? (err as Error).message };
  }
}

async function addresses(resolver: dnsPromises.Resolver, name: string): Promise<string[]> {
  const [a, aaaa] = await Promise.all([resolver.resolve4(name).catch(() => [] as string[]), resolver.resolve6(name).catch(() => [] as string[])]);
  return [...a, ...aaaa];
}

function isPublic(ip: string): boolean {
  if (net.isIPv4(ip)) {
    const [a, b] = ip.split('.').map(Number);
    return !(a === 10 || a === 127 || a === 0 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 169 && b === 254) || (a === 100 && b >= 64 && b <= 127));
  }
  return !/^(::1$|fe80:|f[cd])/i.test(ip);
}

export async function checkDns(input: DoctorInput): Promise<Finding[]> {
  const out: Finding[] = [];
  const { resolver, hostname } = input;
  const host = hostname.toLowerCase();
  const timeoutMs = input.dnsTimeoutMs ?? 10_000;
  for (const domain of input.domains) {
    // The same routing a sending server does (RFC 5321 5.1): where would mail for this domain go?
    const route = await resolveRoute(domain, { resolver, timeoutMs, resolveAddresses: false });
    const mxFix = `${domain}. MX 10 ${host}.`;
    if (route.kind === 'mx') {
      const hosts = route.hosts.map((h) => h.host);
      const implicit = hosts.length === 1 && hosts[0] === domain.toLowerCase();
      if (hosts.includes(host)) out.push({ check: 'dns', severity: 'ok', message: `${domain}: MX points to ${host}` });
      else if (implicit) out.push({ check: 'dns', severity: 'fail', message: `${domain} has no MX record (senders fall back to the address of ${domain} itself)`, fix: `add the record  ${mxFix}` });
      else out.push({ check: 'dns', severity: 'fail', message: `${domain}: MX points to ${hosts.join(', ')}, not to this server (${host}); mail for ${domain} goes there`, fix: `replace the MX record with  ${mxFix}  (or set hostname in hearth.toml to the name your MX uses)` });
    } else if (route.kind === 'fail') {
      out.push({ check: 'dns', severity: 'fail', message: `${domain}: ${route.reply.replace(/^\d{3} \d\.\d+\.\d+ /, '')}`, fix: `add the record  ${mxFix}` });
    } else if (route.kind === 'defer') {
      out.push({ check: 'dns', severity: 'warn', message: `${domain}: ${route.reply.replace(/^\d{3} \d\.\d+\.\d+ /, '')}`, fix: 'check the name servers of the domain (and [dns] servers in hearth.toml), then run hearth doctor again' });
    }

    const spf = await txt(resolver, domain);
    const spfRecords = spf.records.filter((r) => /^v=spf1(\s|$)/i.test(r));
    if (spf.error) out.push({ check: 'dns', severity: 'warn', message: `${domain}: SPF lookup failed (${spf.error})` });
    else if (spfRecords.length === 0) out.push({ check: 'dns', severity: 'warn', message: `${domain} has no SPF record; receivers trust its mail less`, fix: `add the record  ${domain}. TXT "v=spf1 mx -all"` });
    // RFC 7208 4.5: more than one SPF record is a permanent error for every receiver.
    else if (spfRecords.length > 1) out.push({ check: 'dns', severity: 'fail', message: `${domain} has ${spfRecords.length} SPF records (RFC 7208 allows one): ${spfRecords.join(' | ')}`, fix: 'merge them into one TXT record starting with v=spf1' });
    else out.push({ check: 'dns', severity: 'ok', message: `${domain}: SPF ${spfRecords[0]}` });

    const dmarc = (await txt(resolver, `_dmarc.${domain}`)).records.filter((r) => /^v=DMARC1/i.test(r));
    if (dmarc.length === 0) out.push({ check: 'dns', severity: 'warn', message: `${domain} has no DMARC record`, fix: `add the record  _dmarc.${domain}. TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@${domain}"` });
    else out.push({ check: 'dns', severity: 'ok', message: `${domain}: DMARC ${dmarc[0]}` });

    for (const key of input.dkim.filter((k) => k.domain === domain.toLowerCase())) {
      const name = `${key.selector}._domainkey.${domain}`;
      const published = (await txt(resolver, name)).records.find((r) => /(^|;)\s*p=/.test(r));
      const want = /p=([^;\s]+)/.exec(key.txt)?.[1];
      const have = published ? /p=([^;\s]*)/.exec(published.replace(/\s+/g, ''))?.[1] : undefined;
      if (!published) out.push({ check: 'dns', severity: 'fail', message: `${domain}: DKIM key ${key.selector} is not published; receivers cannot verify the signature`, fix: `add the record  ${name}. TXT "${key.txt}"` });
      else if (have !== want) out.push({ check: 'dns', severity: 'fail', message: `${domain}: the DKIM record ${name} holds a different key than config/dkim/${domain}/${key.selector}.pem`, fix: `replace it with  ${name}. TXT "${key.txt}"` });
      else out.push({ check: 'dns', severity: 'ok', message: `${domain}: DKIM ${key.selector} published` });
    }
  }

  // The server's own name: it must resolve, and its addresses should point back (FCrDNS).
  const own = await addresses(resolver, host);
  if (own.length === 0) {
    const records = addressRecords([host], input.addresses ?? []);
    const lines = records.map((r) => `${r.name}. ${r.type} ${recordData(r)}`).join('  and  ');
    const unknown = records.some((r) => (r.type === 'A' || r.type === 'AAAA') && !r.address);
    out.push({ check: 'dns', severity: 'fail', message: `${host} (hostname in hearth.toml) has no A or AAAA record`, fix: `add the record${records.length === 1 ? '' : 's'}  ${lines}${unknown ? '  (AAAA only if it has IPv6; set [client] addresses in hearth.toml to have the addresses filled in)' : ''}` });
  } else {
    out.push({ check: 'dns', severity: 'ok', message: `${host} has address ${own.join(', ')}` });
    for (const ip of own) {
      if (!isPublic(ip)) {
        out.push({ check: 'rdns', severity: 'warn', message: `${host} resolves to ${ip}, a private address: other servers cannot reach it`, fix: `point ${host} at this server's public address` });
        continue;
      }
      const names = await resolver.reverse(ip).then((n) => n.map((x) => x.toLowerCase().replace(/\.$/, '')), () => [] as string[]);
      if (names.includes(host)) out.push({ check: 'rdns', severity: 'ok', message: `reverse DNS of ${ip} is ${host}` });
      else out.push({ check: 'rdns', severity: 'warn', message: names.length ? `reverse DNS of ${ip} is ${names.join(', ')}, not ${host}; many receivers distrust such mail` : `${ip} has no reverse DNS (PTR); many receivers refuse mail from it`, fix: `ask whoever runs ${ip} (your hosting provider's panel) to set its PTR record to ${host}` });
    }
  }
  return out;
}

export function checkCertificate(input: Pick<DoctorInput, 'hostname' | 'certificate' | 'now' | 'expiryWarnDays'>): Finding[] {
  const { certificate: c, hostname } = input;
  const now = (input.now ?? Date.now)();
  const selfsigned = `for a test setup: hearth tls selfsigned --hostname ${hostname}; for real use, a certificate from a CA (e.g. certbot certonly --standalone -d ${hostname}) at tls.cert/tls.key`;
  if (!c.cert) return [{ check: 'tls', severity: 'fail', message: `no certificate at ${c.file}${c.error ? ` (${c.error})` : ''}`, fix: selfsigned }];
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(c.cert);
  } catch (err) {
    return [{ check: 'tls', severity: 'fail', message: `${c.file} is not a PEM certificate (${(err as Error).message})`, fix: selfsigned }];
  }
  const out: Finding[] = [];
  if (c.key) {
    let matches = false;
    try {
      matches = x509.checkPrivateKey(createPrivateKey(c.key));
    } catch {
      matches = false;
    }
    if (!matches) out.push({ check: 'tls', severity: 'fail', message: `the key at tls.key does not belong to ${c.file}`, fix: 'install the key that was issued with this certificate (or both files of a new pair), then hearth tls reload' });
  }
  if (x509.checkHost(hostname) === undefined) {
    const names = x509.subjectAltName ?? x509.subject;
    out.push({ check: 'tls', severity: 'fail', message: `the certificate is for ${names.replace(/DNS:/g, '').replace(/\n/g, ', ')}, not for ${hostname}; clients will refuse it`, fix: `get a certificate for ${hostname} (${selfsigned})` });
  } else {
    out.push({ check: 'tls', severity: 'ok', message: `the certificate covers ${hostname}` });
  }
  const notAfter = new Date(x509.validTo).getTime();
  const notBefore = new Date(x509.validFrom).getTime();
  const days = Math.floor((notAfter - now) / DAY);
  const renew = `renew it (certbot renew, or ${selfsigned}); hearth picks up the new files by itself`;
  if (notAfter <= now) out.push({ check: 'tls', severity: 'fail', message: `the certificate expired on ${new Date(notAfter).toISOString().slice(0, 10)}`, fix: renew });
  else if (notBefore > now) out.push({ check: 'tls', severity: 'fail', message: `the certificate is not valid before ${new Date(notBefore).toISOString()} (is the clock right?)`, fix: 'check the system clock (timedatectl)' });
  else if (days < (input.expiryWarnDays ?? 14)) out.push({ check: 'tls', severity: 'warn', message: `the certificate expires in ${days} day${days === 1 ? '' : 's'} (${new Date(notAfter).toISOString().slice(0, 10)})`, fix: renew });
  else out.push({ check: 'tls', severity: 'ok', message: `the certificate is valid until ${new Date(notAfter).toISOString().slice(0, 10)} (${days} days)` });
  if (x509.issuer === x509.subject && x509.verify(x509.publicKey)) {
    out.push({ check: 'tls', severity: 'warn', message: 'the certificate is self-signed: mail clients will ask to trust it, and some senders will not use TLS with it', fix: `use a certificate from a CA for ${hostname} (e.g. Let's Encrypt) at tls.cert/tls.key` });
  }
  return out;
}

export async function checkQueue(input: Pick<DoctorInput, 'queue' | 'now' | 'stuckAfterMs'>): Promise<Finding[]> {
  const entries = await input.queue();
  if (entries === 'not-running') return [{ check: 'queue', severity: 'skip', message: 'hearth is not running: the queue was not checked', fix: 'start it (hearth serve) and run hearth doctor again' }];
  const now = (input.now ?? Date.now)();
  const stuckAfter = input.stuckAfterMs ?? 3_600_000;
  const out: Finding[] = [];
  const pending = entries.filter((e) => e.recipients.some((r) => r.status === 'pending' || r.status === 'deferred'));
  // Retries are scheduled; one due long ago means the scheduler is not getting to it.
  const overdue = pending.filter((e) => !e.held && e.recipients.some((r) => r.status !== 'delivered' && r.status !== 'failed' && (r.nextAttemptAt ?? e.createdAt) < now - 15 * 60_000));
  const old = pending.filter((e) => now - e.createdAt > stuckAfter);
  const held = entries.filter((e) => e.held);
  if (overdue.length) out.push({ check: 'queue', severity: 'fail', message: `${overdue.length} queued message(s) are overdue for a retry: the queue is not being worked`, fix: 'look for errors in the log (hearth status shows recent ones); restart hearth; hearth queue flush tries everything now' });
  if (old.length) {
    const replies = [...new Set(old.flatMap((e) => e.recipients.filter((r) => r.lastReply).map((r) => `${r.address}: ${r.lastReply}`)))].slice(0, 5);
    out.push({ check: 'queue', severity: 'warn', message: `${old.length} message(s) have waited over ${Math.round(stuckAfter / 60_000)} minutes${replies.length ? `; last replies:\n      ${replies.join('\n      ')}` : ''}`, fix: 'see hearth queue list; if the remote refuses port 25 connections from you, check the outbound finding below' });
  }
  if (held.length) out.push({ check: 'queue', severity: 'warn', message: `${held.length} message(s) are held`, fix: `release them with hearth queue release ID (${held.slice(0, 3).map((e) => e.id).join(', ')})` });
  if (out.length === 0) out.push({ check: 'queue', severity: 'ok', message: entries.length ? `${entries.length} message(s) queued, none stuck` : 'the queue is empty' });
  return out;
}

/**
 * Connect and wait for the greeting, bounded; resolves with the first line or the failure.
 * `resolving`: the failure came while looking the name up (DNS), before any connection attempt.
 */
export type Probe = { ok: true; banner: string } | { ok: false; error: string; connected: boolean; resolving: boolean };

type Lookup = NonNullable<net.TcpNetConnectOpts['lookup']>;
type LookupAnswer = Array<{ address: string; family: number }>;

/** A net.connect lookup through `resolver` (the [dns] servers), not the machine's resolver: A, then AAAA. */
function resolverLookup(resolver: dnsPromises.Resolver): Lookup {
  return ((hostname: string, options: { all?: boolean }, callback: (err: Error | null, address: string | LookupAnswer, family?: number) => void) => {
    const both = Promise.allSettled([resolver.resolve4(hostname), resolver.resolve6(hostname)]);
    both.then(([v4, v6]) => {
      const found: LookupAnswer = [...(v4.status === 'fulfilled' ? v4.value.map((address) => ({ address, family: 4 })) : []), ...(v6.status === 'fulfilled' ? v6.value.map((address) => ({ address, family: 6 })) : [])];
      if (found.length === 0) {
        // The A answer says most (NXDOMAIN, SERVFAIL, timeout); AAAA only when A had no data.
        const failed = [v4, v6].filter((r) => r.status === 'rejected').map((r) => r.reason as NodeJS.ErrnoException);
        const err = failed.find((e) => e.code !== 'ENODATA') ?? failed[0] ?? Object.assign(new Error(`${hostname} has no address`), { code: 'ENODATA' });
        callback(err, '');
      } else if (options.all) callback(null, found);
      else callback(null, found[0].address, found[0].family);
    }, (err: Error) => callback(err, ''));
  }) as Lookup;
}

export function probeSmtp(host: string, port: number, timeoutMs: number, resolver?: dnsPromises.Resolver): Promise<Probe> {
  return new Promise((resolve) => {
    // Any error out of the lookup is a DNS failure, whatever its code (c-ares has ECONNREFUSED too).
    let resolving = false;
    const lookup = resolver ? resolverLookup(resolver) : (dns.lookup as unknown as Lookup);
    const tracked = ((hostname: string, options: object, callback: (err: Error | null, ...rest: unknown[]) => void) =>
      lookup(hostname, options as never, ((err: Error | null, ...rest: unknown[]) => {
        if (err) resolving = true;
        callback(err, ...rest);
      }) as never)) as Lookup;
    const socket = net.connect({ host, port, lookup: tracked });
    let buffered = '';
    let connected = false;
    socket.once('connect', () => (connected = true));
    const done = (r: { ok: true; banner: string } | { ok: false; error: string }) => {
      clearTimeout(timer);
      socket.removeAllListeners('data');
      socket.on('error', () => undefined);
      socket.destroy();
      resolve(r.ok ? r : { ...r, connected, resolving });
    };
    const timer = setTimeout(() => done({ ok: false, error: `no answer within ${Math.round(timeoutMs / 1000)} s` }), timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      buffered += d;
      const nl = buffered.indexOf('\n');
      if (nl >= 0) {
        const line = buffered.slice(0, nl).trim();
        done(/^220[ -]/.test(line) ? { ok: true, banner: line } : { ok: false, error: `unexpected greeting: ${line.slice(0, 200)}` });
      }
    });
    socket.on('error', (err: NodeJS.ErrnoException) => done({ ok: false, error: err.code ?? err.message }));
  });
}

/** A name that does not resolve is a DNS problem: say so, instead of blaming the port. */
function unresolved(host: string, error: string, what: string): Finding {
  return {
    check: 'dns',
    severity: 'fail',
    message: `${what}: cannot resolve ${host} (${error}); that is a DNS problem, not a blocked port, and mail to other domains needs working DNS too`,
    fix: `check the DNS servers in [dns] servers in hearth.toml (or, when unset, the machine's resolver: /etc/resolv.conf, resolvectl status) and that they answer for ${host} (dig ${host}); then run hearth doctor again`,
  };
}

export async function checkOutbound(input: Pick<DoctorInput, 'outbound'> & { resolver?: dnsPromises.Resolver }): Promise<Finding[]> {
  const o = input.outbound;
  if (o.smarthost) {
    const r = await probeSmtp(o.smarthost.host, o.smarthost.port, o.timeoutMs, input.resolver);
    if (!r.ok && r.resolving) return [unresolved(o.smarthost.host, r.error, `the smarthost ${o.smarthost.host}:${o.smarthost.port} was not tried`)];
    // Implicit-TLS smarthosts (465) do not greet in clear text; reaching them is what counts.
    if (r.ok || r.connected) return [{ check: 'outbound', severity: 'ok', message: `mail leaves through the smarthost ${o.smarthost.host}:${o.smarthost.port}${r.ok ? ` (${r.banner})` : ''}` }];
    return [{ check: 'outbound', severity: 'fail', message: `the smarthost ${o.smarthost.host}:${o.smarthost.port} cannot be reached: ${r.error}`, fix: 'check relay.smarthost in hearth.toml (host:port of your provider\'s submission server) and the firewall' }];
  }
  const r = await probeSmtp(o.testHost, o.testPort, o.timeoutMs, input.resolver);
  if (!r.ok && r.resolving) return [unresolved(o.testHost, r.error, `outbound port ${o.testPort} was not tested`)];
  if (r.ok) return [{ check: 'outbound', severity: 'ok', message: `outbound port ${o.testPort} works (${o.testHost} answered: ${r.banner})` }];
  return [
    {
      check: 'outbound',
      severity: 'fail',
      message: `cannot reach ${o.testHost}:${o.testPort} (${r.error}): outbound port 25 looks blocked, so mail to other domains will not leave`,
      fix: 'many home and cloud providers block port 25: ask yours to open it, or send through a smarthost: relay.mode = "smarthost", relay.smarthost = "smtp.provider.example:587" (plus smarthost_user and smarthost_password_file) in hearth.toml',
    },
  ];
}

export async function runDoctor(input: DoctorInput): Promise<Finding[]> {
  const [dns, tls, queue, outbound] = await Promise.all([checkDns(input), Promise.resolve(checkCertificate(input)), checkQueue(input), checkOutbound(input)]);
  return [...dns, ...tls, ...queue, ...outbound];
}
