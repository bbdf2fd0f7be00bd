// Routing decides where mail for a remote domain goes: a smarthost when one is configured,
// otherwise the domain's MX hosts (RFC 5321 5.1), in preference order with equal preferences
// shuffled, the domain itself when it has no MX but has an address (the implicit MX), nowhere
// for a null MX (RFC 7505) or a domain that does not exist. Temporary DNS trouble is a deferral,
// never a bounce. It knows nothing of SMTP: the relay client gets the hosts and connects.
import { isIP } from 'node:net';
import type { promises as dnsPromises } from 'node:dns';

export type RouteHost = {
  host: string;
  port: number;
  preference: number;
  /** Addresses found for `host` through the same resolver (empty: let the connector look up). */
  addresses?: string[];
};
export type Route =
  | { kind: 'mx'; hosts: RouteHost[] }
  | { kind: 'smarthost'; host: string; port: number }
  | { kind: 'fail'; reply: string }
  | { kind: 'defer'; reply: string };

export type RouteOptions = {
  resolver: dnsPromises.Resolver;
  port?: number;
  smarthost?: { host: string; port: number };
  /** Per lookup; a lookup slower than this is a deferral. Default 20 s. */
  timeoutMs?: number;
  /** Resolve each MX host's A/AAAA too (default true), so callers need no second resolver. */
  resolveAddresses?: boolean;
};

type Lookup<T> = { ok: true; value: T } | { ok: false; code: string };

// node:dns codes that mean "this name or this type definitively does not exist".
const NXDOMAIN = new Set(['ENOTFOUND']);
const NODATA = new Set(['ENODATA']);

async function lookup<T>(fn: () => Promise<T>, timeoutMs: number): Promise<Lookup<T>> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Lookup<T>>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, code: 'ETIMEOUT' }), timeoutMs);
  });
  try {
    return await Promise.race([fn().then((value): Lookup<T> => ({ ok: true, value }), (err: unknown): Lookup<T> => ({ ok: false, code: String((err as NodeJS.ErrnoException).code ?? 'EUNKNOWN') })), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function describe(code: string): string {
  switch (code) {
    case 'ETIMEOUT':
      return 'timed out';
    case 'ESERVFAIL':
      return 'server failure (SERVFAIL)';
    case 'ECONNREFUSED':
      return 'name server refused the connection';
    case 'EREFUSED':
      return 'query refused (REFUSED)';
    default:
      return code;
  }
}

export function shuffleEqualPreferences<T extends { preference: number }>(list: T[]): T[] {
  const out = [...list];
  // Fisher-Yates, then a stable sort by preference keeps the random order among equals.
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out.sort((a, b) => a.preference - b.preference);
}

async function addressesOf(resolver: dnsPromises.Resolver, host: string, timeoutMs: number): Promise<{ addresses: string[]; tempFail: string | undefined; exists: boolean }> {
  const [a, aaaa] = await Promise.all([lookup(() => resolver.resolve4(host), timeoutMs), lookup(() => resolver.resolve6(host), timeoutMs)]);
  const addresses = [...(a.ok ? a.value : []), ...(aaaa.ok ? aaaa.value : [])];
  const fails = [a, aaaa].filter((r): r is { ok: false; code: string } => !r.ok);
  const temp = fails.find((f) => !NXDOMAIN.has(f.code) && !NODATA.has(f.code));
  const exists = !fails.some((f) => NXDOMAIN.has(f.code));
  return { addresses, tempFail: temp?.code, exists };
}

/** Where mail for `domain` goes. Never throws: DNS trouble is a `defer` route. */
export async function resolveRoute(domain: string, opts: RouteOptions): Promise<Route> {
  const port = opts.port ?? 25;
  const timeoutMs = opts.timeoutMs ?? 20_000;
  if (opts.smarthost) return { kind: 'smarthost', host: opts.smarthost.host, port: opts.smarthost.port };

  const name = domain.toLowerCase().replace(/\.$/, '');
  // RFC 5321 4.1.3: an address literal names the host itself; no DNS.
  const literal = /^\[(?:ipv6:)?([^\]]+)\]$/i.exec(name);
  if (literal) {
    if (isIP(literal[1]) === 0) return { kind: 'fail', reply: `501 5.1.3 ${domain}: not a valid address literal` };
    return { kind: 'mx', hosts: [{ host: literal[1], port, preference: 0, addresses: [literal[1]] }] };
  }
  if (!name || name.length > 253 || !/^[a-z0-9_.-]+$/.test(name) || name.split('.').some((l) => l.length === 0 || l.length > 63)) {
    return { kind: 'fail', reply: `501 5.1.2 ${domain}: not a valid domain name` };
  }

  const mx = await lookup(() => opts.resolver.resolveMx(name), timeoutMs);
  let hosts: RouteHost[];
  if (mx.ok && mx.value.length > 0) {
    const real = mx.value.filter((r) => r.exchange !== '' && r.exchange !== '.');
    // RFC 7505 3: a null MX means the domain accepts no mail at all.
    if (real.length === 0) return { kind: 'fail', reply: `556 5.1.10 ${name} does not accept mail (null MX, RFC 7505)` };
    hosts = shuffleEqualPreferences(real.map((r) => ({ host: r.exchange.toLowerCase().replace(/\.$/, ''), port, preference: r.priority })));
  } else if (!mx.ok && NXDOMAIN.has(mx.code)) {
    return { kind: 'fail', reply: `550 5.1.2 ${name} does not exist (DNS: NXDOMAIN)` };
  } else if (!mx.ok && !NODATA.has(mx.code)) {
    return { kind: 'defer', reply: `451 4.4.3 DNS lookup of the MX for ${name} failed: ${describe(mx.code)}` };
  } else {
    // RFC 5321 5.1: no MX records, so the domain itself is the implicit MX if it has an address.
    const own = await addressesOf(opts.resolver, name, timeoutMs);
    if (own.addresses.length > 0) return { kind: 'mx', hosts: [{ host: name, port, preference: 0, addresses: own.addresses }] };
    if (own.tempFail) return { kind: 'defer', reply: `451 4.4.3 DNS lookup of the address of ${name} failed: ${describe(own.tempFail)}` };
    return { kind: 'fail', reply: `550 5.1.2 ${name} has no MX and no address records; it cannot receive mail` };
  }

  if (opts.resolveAddresses ?? true) {
    await Promise.all(
      hosts.map(async (h) => {
        if (isIP(h.host) !== 0) {
          h.addresses = [h.host];
          return;
        }
        h.addresses = (await addressesOf(opts.resolver, h.host, timeoutMs)).addresses;
      }),
    );
    // Postfix treats this as temporary too: MX targets without addresses are usually fixed soon.
    if (hosts.every((h) => h.addresses?.length === 0)) {
      return { kind: 'defer', reply: `451 4.4.4 none of the MX hosts of ${name} (${hosts.map((h) => h.host).join(', ')}) has an address` };
    }
  }
  return { kind: 'mx', hosts };
}
