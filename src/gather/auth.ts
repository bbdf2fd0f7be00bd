// Sender authentication for gathered mail: DKIM (RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489)
// by mailauth, through the same DNS budget as port 25 (src/smtp/auth-checks.ts), with what
// differs for mail another provider already accepted:
//  - there is no connecting IP here, so SPF cannot be evaluated (the provider did that); it is
//    left out of the results rather than failed, and DMARC is judged on DKIM alignment alone,
//    which the Authentication-Results header says in a comment;
//  - nothing is refused or held back: in move mode the provider's copy is deleted afterwards.
//    A DMARC failure under p=reject or p=quarantine is delivered to Junk instead;
//  - a DNS failure is recorded as temperror and the message delivered all the same;
//  - an account may trust its provider's own Authentication-Results (the provider saw the real
//    connecting IP): then the topmost field with that authserv-id is used, as RFC 8601 advises,
//    and only the From domain's DMARC policy is looked up here.
// Authentication-Results fields claiming our own authserv-id are always removed (RFC 8601 5).
import { arc, dkimVerify, dmarc } from 'mailauth';
import type { ARCData, ARCResult, DKIMVerifyResult, DMARCResult } from 'mailauth';
import addressparser from 'nodemailer/lib/addressparser';
import type { HearthConfig } from '../config/schema.ts';
import { DnsCache } from '../smtp/dns-cache.ts';
import type { DnsResolver } from '../smtp/dns-cache.ts';
import { DnsBudget, authservId, dkimRows, foldResultRow, headerEnd, makeResolver, stripOwnAuthResults } from '../smtp/auth-checks.ts';

export type GatherAuthOptions = {
  /** Our authserv-id (RFC 8601 2.5): the configured hostname. */
  hostname: string;
  /** node:dns's Resolver, or a DnsCache in front of one. */
  resolver: DnsResolver;
  /** All DNS for one message's checks must be done within this. */
  deadlineMs: number;
  maxLookups: number;
  minKeyBits?: number;
  /** For DMARC pct= sampling; injectable for tests. */
  random?: () => number;
};

export type GatherAuthInput = {
  /** The message as collected (without our trace headers). */
  message: Buffer;
  /** Where it came from, for the header's comment: "IMAP from imap.example.net". */
  via: string;
  /** Use this provider's Authentication-Results instead of checking here. */
  trustAuthservId?: string;
};

export type GatherAuthOutcome = {
  /** `Authentication-Results: ...\r\n`, ready to put on top. */
  header: string;
  /** The message without Authentication-Results fields that claim our authserv-id. */
  message: Buffer;
  /** DMARC failed under a reject/quarantine policy: deliver to Junk. */
  junk: boolean;
  /** 'checked' here, or taken from the trusted 'provider' header. */
  source: 'checked' | 'provider';
  dkim: string[];
  arc: string;
  dmarc: string;
  /** The From domain's DMARC policy when DMARC failed. */
  policy: string | undefined;
  /** The From domain, when there was exactly one. */
  fromDomain: string | undefined;
  /** A DNS lookup that mattered failed temporarily. */
  temp: string | undefined;
  lookups: number;
  ms: number;
};

/** What the gather service needs: the checker, the default for accounts, and the age limit. */
export type GatherAuthSetup = { checker: GatherAuthChecker; enabled: boolean; maxAgeMs: number };

/** The checker as the config says: [dns] servers, the DNS limits of [inbound], [gather] auth_*. */
export function gatherAuthFromConfig(config: HearthConfig): GatherAuthSetup {
  const { inbound, dns, gather } = config;
  return {
    checker: new GatherAuthChecker({
      hostname: config.hostname,
      // A first pull checks thousands of messages from the same few domains: cache the answers.
      resolver: dns.cache_size > 0
        ? new DnsCache(makeResolver(dns.servers, inbound.dns_timeout), { maxEntries: dns.cache_size, maxTtlMs: dns.cache_max_ttl, negativeTtlMs: dns.cache_negative_ttl })
        : makeResolver(dns.servers, inbound.dns_timeout),
      deadlineMs: inbound.dns_deadline,
      maxLookups: inbound.dns_max_lookups,
    }),
    enabled: gather.auth_checks,
    maxAgeMs: gather.auth_max_age,
  };
}

const CARRIED = new Set(['spf', 'dkim', 'dmarc', 'arc']);

export class GatherAuthChecker {
  readonly hostname: string;
  readonly #opts: GatherAuthOptions;

  constructor(opts: GatherAuthOptions) {
    this.#opts = opts;
    this.hostname = opts.hostname;
  }

  /** Never throws: a check that cannot run yields a `none` header and the message as is. */
  async check(input: GatherAuthInput): Promise<GatherAuthOutcome> {
    const started = performance.now();
    const o = this.#opts;
    const end = headerEnd(input.message);
    const headLen = end < 0 ? input.message.length : end;
    const head = input.message.subarray(0, headLen);
    const stripped = stripOwnAuthResults(head, o.hostname);
    const message = stripped.removed ? Buffer.concat([stripped.head, input.message.subarray(headLen)]) : input.message;
    const fields = headerFields(head.toString('latin1'));
    const budget = new DnsBudget(o.resolver, o.deadlineMs, o.maxLookups);
    const outcome: GatherAuthOutcome = { header: '', message, junk: false, source: 'checked', dkim: [], arc: 'none', dmarc: 'none', policy: undefined, fromDomain: undefined, temp: undefined, lookups: 0, ms: 0 };
    const trusted = input.trustAuthservId?.toLowerCase();
    // A field naming us was forged (and is gone from `message`): never trust our own id.
    const provider = trusted && trusted !== o.hostname.toLowerCase() ? topmostAuthResults(fields, trusted) : undefined;
    let rows: string[];
    let lead: string;
    try {
      if (provider) {
        lead = `gathered over ${input.via}; results of ${trusted}`;
        rows = await this.#fromProvider(provider, fields, budget, outcome);
      } else {
        lead = `gathered over ${input.via}; SPF not evaluated: no connecting IP here${trusted ? `; no Authentication-Results from ${trusted}` : ''}`;
        rows = await this.#checkHere(message, budget, outcome);
      }
    } catch (err) {
      lead = `gathered over ${input.via}; checks failed: ${(err as Error)?.message ?? String(err)}`;
      rows = ['none'];
      outcome.junk = false;
    }
    outcome.header = `Authentication-Results: ${o.hostname} ${foldResultRow(comment(lead))};\r\n ${rows.map(foldResultRow).join(';\r\n ')}\r\n`;
    outcome.lookups = budget.lookups;
    outcome.ms = Math.round(performance.now() - started);
    return outcome;
  }

  async #checkHere(message: Buffer, budget: DnsBudget, outcome: GatherAuthOutcome): Promise<string[]> {
    const o = this.#opts;
    const resolver = budget.resolver(true);
    const dkimResult: DKIMVerifyResult = await dkimVerify(message, { resolver, minBitLength: o.minKeyBits ?? 1024 });
    const arcResult: ARCResult = await arc(dkimResult.arc as unknown as ARCData, { resolver: budget.resolver(false), minBitLength: o.minKeyBits ?? 1024 });
    let dmarcResult: DMARCResult | false = false;
    if (dkimResult.headerFrom?.length) {
      dmarcResult = await dmarc({
        headerFrom: dkimResult.headerFrom,
        // No SPF identity: DMARC passes only through an aligned DKIM signature.
        spfDomains: [],
        dkimDomains: dkimResult.results
          .filter((r) => r.status.result === 'pass')
          .map((r) => ({ id: r.id, domain: r.signingDomain, aligned: r.status.aligned, underSized: r.status.underSized })),
        arcResult,
        resolver,
      });
    }
    const rows: string[] = [];
    rows.push(...dkimRows(dkimResult.results)); // as on port 25
    rows.push(arcResult?.info || 'arc=none');
    outcome.dkim = dkimResult.results.map((r) => `${r.status.result}${r.signingDomain ? `:${r.signingDomain}` : ''}`);
    outcome.arc = arcResult?.status?.result ?? 'none';
    outcome.fromDomain = dkimResult.headerFrom?.length === 1 ? domainOf(dkimResult.headerFrom[0]) : undefined;
    let dmarcRow = dmarcResult ? dmarcResult.info : 'dmarc=none';
    outcome.dmarc = dmarcResult ? dmarcResult.status.result : 'none';
    outcome.temp = budget.tempFailure ?? (outcome.dmarc === 'temperror' ? 'DMARC temperror' : undefined);
    if (outcome.temp && outcome.dmarc !== 'pass') {
      // A failure caused by a lookup that did not answer is not a failure: say temperror.
      outcome.dmarc = 'temperror';
      dmarcRow = dmarcRow.replace(/^dmarc=\S+/, `dmarc=temperror ${comment(outcome.temp)}`);
    } else if (dmarcResult) {
      this.#policy(dmarcResult, outcome);
    }
    rows.push(dmarcRow.replace(/^dmarc=\S+/, (m) => `${m} (DKIM alignment only)`));
    return rows;
  }

  async #fromProvider(provider: ProviderResults, fields: HeaderField[], budget: DnsBudget, outcome: GatherAuthOutcome): Promise<string[]> {
    outcome.source = 'provider';
    const rows: string[] = [];
    const spfDomains: string[] = [];
    const dkimDomains: Array<{ domain: string }> = [];
    let reported: ResInfo | undefined;
    for (const r of provider.results) {
      if (!CARRIED.has(r.method)) continue;
      // Carried over under our authserv-id, marked as the provider's finding.
      rows.push(r.text.replace(/^([^=\s]+\s*=\s*[^\s;(]+)/, `$1 (reported by ${provider.id})`));
      if (r.method === 'spf' && r.result === 'pass') {
        const d = domainOf(r.props['smtp.mailfrom'] ?? r.props['smtp.helo'] ?? '');
        if (d) spfDomains.push(d);
      } else if (r.method === 'dkim') {
        outcome.dkim.push(`${r.result}${r.props['header.d'] ? `:${r.props['header.d']}` : ''}`);
        const d = r.props['header.d'] ?? domainOf(r.props['header.i'] ?? '');
        if (r.result === 'pass' && d) dkimDomains.push({ domain: d.toLowerCase() });
      } else if (r.method === 'arc') {
        outcome.arc = r.result;
      } else if (r.method === 'dmarc') {
        reported ??= r;
      }
    }
    const from = fromAddresses(fields);
    outcome.fromDomain = from.length === 1 ? domainOf(from[0]) : undefined;
    // Our own lookup gives the policy (and a verdict when the provider reported none).
    const ours = from.length === 1 ? await dmarc({ headerFrom: from, spfDomains, dkimDomains, resolver: budget.resolver(true) }) : false;
    if (reported) {
      outcome.dmarc = reported.result;
    } else if (ours) {
      outcome.dmarc = ours.status.result;
      rows.push(ours.info.replace(/^dmarc=\S+/, (m) => `${m} (from the results of ${provider.id})`));
    } else {
      rows.push('dmarc=none');
    }
    if (outcome.dmarc === 'fail') {
      if (ours && ours.status.result !== 'temperror' && !budget.tempFailure) this.#policy(ours, outcome);
      else outcome.temp = budget.tempFailure ?? 'DMARC policy lookup failed';
    }
    return rows;
  }

  /** DMARC failed: does the domain's policy send the message to Junk? */
  #policy(result: DMARCResult, outcome: GatherAuthOutcome): void {
    if (result.status.result !== 'fail' && outcome.dmarc !== 'fail') return;
    outcome.policy = result.policy;
    // RFC 7489 6.6.4: pct= applies the policy to that share of failing mail only.
    const sampled = result.pct === undefined || result.pct >= 100 || (this.#opts.random ?? Math.random)() * 100 < result.pct;
    if (sampled && (result.policy === 'reject' || result.policy === 'quarantine')) outcome.junk = true;
  }
}

// --- header parsing -----------------------------------------------------------------------

type HeaderField = { name: string; value: string };

/** Header fields in order, names lower-cased, values unfolded. */
export function headerFields(head: string): HeaderField[] {
  const out: HeaderField[] = [];
  for (const line of head.split(/\r?\n/)) {
    if (line === '') break;
    if ((line[0] === ' ' || line[0] === '\t') && out.length) out[out.length - 1].value += ` ${line.trim()}`;
    else {
      const colon = line.indexOf(':');
      if (colon > 0) out.push({ name: line.slice(0, colon).trim().toLowerCase(), value: line.slice(colon + 1).trim() });
    }
  }
  return out;
}

type ResInfo = { method: string; result: string; props: Record<string, string>; text: string };
type ProviderResults = { id: string; results: ResInfo[] };

/** The first (topmost) Authentication-Results field whose authserv-id is `id`, parsed. */
export function topmostAuthResults(fields: HeaderField[], id: string): ProviderResults | undefined {
  const want = id.toLowerCase();
  const field = fields.find((f) => f.name === 'authentication-results' && authservId(f.value) === want);
  if (!field) return undefined;
  // RFC 8601 2.2: authserv-id [version] ; resinfo ; resinfo ...
  const [, ...resinfos] = splitOutside(field.value, ';');
  const results: ResInfo[] = [];
  for (const raw of resinfos) {
    const text = raw.trim();
    const bare = stripComments(text).trim();
    const m = /^([A-Za-z0-9_-]+)(?:\/\d+)?\s*=\s*([A-Za-z0-9_-]+)/.exec(bare);
    if (!m) continue; // "none", or something we cannot read
    const props: Record<string, string> = {};
    // A value is a token, or a quoted string (a quoted local-part may be followed by @domain).
    for (const p of bare.matchAll(/("(?:[^"\\]|\\.)*")|\b((?:smtp|header|body|policy)\.[A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"(@[^\s;"]*)?|([^\s;"]+))/g)) {
      if (p[2]) props[p[2].toLowerCase()] ??= p[5] ?? `${p[3].replace(/\\(.)/g, '$1')}${p[4] ?? ''}`;
    }
    results.push({ method: m[1].toLowerCase(), result: m[2].toLowerCase(), props, text });
  }
  return { id: want, results };
}

/** Split at `sep` outside comments and quoted strings. */
function splitOutside(value: string, sep: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '\\') i++;
    else if (quoted) quoted = c !== '"';
    else if (c === '"' && depth === 0) quoted = true;
    else if (c === '(') depth++;
    else if (c === ')' && depth > 0) depth--;
    else if (c === sep && depth === 0) {
      parts.push(value.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(value.slice(start));
  return parts;
}

function stripComments(value: string): string {
  let out = '';
  let depth = 0;
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '\\' && (depth > 0 || quoted)) {
      if (depth === 0) out += value.slice(i, i + 2);
      i++;
    } else if (depth === 0 && (quoted || c === '"')) {
      // A quoted string is not a comment, whatever it holds.
      if (c === '"') quoted = !quoted;
      out += c;
    } else if (c === '(') depth++;
    else if (c === ')' && depth > 0) depth--;
    else if (depth === 0) out += c;
  }
  return out;
}

function fromAddresses(fields: HeaderField[]): string[] {
  const from = fields.filter((f) => f.name === 'from');
  if (from.length !== 1) return [];
  const flat = (list: ReturnType<typeof addressparser>): string[] => list.flatMap((a) => ('group' in a && a.group ? flat(a.group) : 'address' in a && a.address ? [a.address] : []));
  return flat(addressparser(from[0].value));
}

function domainOf(address: string): string | undefined {
  const at = address.lastIndexOf('@');
  const d = (at < 0 ? address : address.slice(at + 1)).trim().toLowerCase().replace(/^<|>$/g, '');
  return d || undefined;
}

/** The date of the topmost Received field (the provider's own), when it has one. */
export function topReceivedDate(message: Buffer): Date | undefined {
  const end = headerEnd(message);
  const field = headerFields(message.subarray(0, end < 0 ? Math.min(message.length, 64 * 1024) : end).toString('latin1')).find((f) => f.name === 'received');
  const semi = field?.value.lastIndexOf(';') ?? -1;
  if (!field || semi < 0) return undefined;
  const date = new Date(field.value.slice(semi + 1).trim());
  return Number.isNaN(date.getTime()) ? undefined : date;
}

/** A comment (RFC 5322 3.2.2) with its specials escaped. */
function comment(text: string): string {
  return `(${text.replace(/[\r\n]+/g, ' ').replace(/([()\\])/g, '\\$1')})`;
}

