// Sender authentication for inbound SMTP: SPF (RFC 7208) for the MAIL FROM and HELO identities,
// DKIM (RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489, organizational domain from the Public
// Suffix List bundled with mailauth's tldts), all by mailauth, and the verdict our policy takes
// from them. The results become one Authentication-Results header field (RFC 8601) with our
// hostname as authserv-id; fields that already claim our authserv-id are removed from the
// stored copy (RFC 8601 5), since only we may speak for ourselves.
//
// DNS is bounded per message: every lookup goes through a DnsBudget that caps the number of
// lookups and the total time. A lookup that times out or gets SERVFAIL is a temporary failure,
// never a pass: the message is deferred with 451 4.4.3 unless DMARC passed anyway (then no
// further answer could change the verdict).
import type { promises as dnsPromises } from 'node:dns';
import { Resolver } from 'node:dns/promises';
import { Readable } from 'node:stream';
import { arc, dkimVerify, dmarc, spf } from 'mailauth';
import type { ARCData, ARCResult, DKIMVerifyResult, DMARCResult, SPFResult } from 'mailauth';
import { HearthError } from '../core/errors.ts';
import { plainIp } from './client-address.ts';
import type { DnsResolver } from './dns-cache.ts';

/** Answers that mean "this does not exist": mailauth turns them into none/neutral/void. */
const NONEXISTENT = new Set(['ENOTFOUND', 'ENODATA', 'EBADNAME', 'ENONAME']);

export class DnsBudgetError extends HearthError {}

/** A node:dns Resolver aimed at `servers` ("1.2.3.4", "127.0.0.1:5353", "[::1]:53"), or the system's. */
export function makeResolver(servers: string[], timeoutMs: number, tries = 2): dnsPromises.Resolver {
  const r = new Resolver({ timeout: timeoutMs, tries });
  if (servers.length) r.setServers(servers);
  return r;
}

/**
 * The DNS a single message's checks may use: at most `maxLookups` queries, all finished by the
 * deadline. Remembers whether a lookup that matters for the verdict failed temporarily.
 */
export class DnsBudget {
  lookups = 0;
  /** Set when a lookup for SPF (MAIL FROM), DKIM or DMARC failed temporarily. */
  tempFailure: string | undefined;
  readonly #resolver: DnsResolver;
  readonly #deadline: number;
  readonly #maxLookups: number;

  constructor(resolver: DnsResolver, deadlineMs: number, maxLookups: number) {
    this.#resolver = resolver;
    this.#deadline = performance.now() + deadlineMs;
    this.#maxLookups = maxLookups;
  }

  /** mailauth's resolver(name, rrtype); `counts` = false for checks whose failure we only record. */
  resolver(counts = true): (name: string, rrtype: string) => Promise<never> {
    return async (name, rrtype) => {
      try {
        return (await this.#lookup(name, rrtype)) as never;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'EDNS';
        if (counts && !NONEXISTENT.has(code)) this.tempFailure ??= `${code} looking up ${rrtype} ${name}`;
        throw err;
      }
    };
  }

  async #lookup(name: string, rrtype: string): Promise<unknown> {
    if (++this.lookups > this.#maxLookups) throw budgetError('ELIMIT', `more than ${this.#maxLookups} DNS lookups for one message`);
    const remaining = this.#deadline - performance.now();
    if (remaining <= 0) throw budgetError('ETIMEOUT', 'per-message DNS deadline passed');
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(budgetError('ETIMEOUT', 'per-message DNS deadline passed')), remaining);
    });
    try {
      return await Promise.race([this.#resolver.resolve(name, rrtype), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }
}

function budgetError(code: string, message: string): DnsBudgetError {
  const err = new DnsBudgetError(code, message);
  return err;
}

export type SenderAuthOptions = {
  /** Our authserv-id (RFC 8601 2.5): the configured hostname. */
  hostname: string;
  /** node:dns's Resolver, or a DnsCache in front of one. */
  resolver: DnsResolver;
  deadlineMs: number;
  maxLookups: number;
  /** Refuse DMARC p=reject failures (550 5.7.1). */
  dmarcReject: boolean;
  /** Deliver DMARC p=quarantine failures (and p=reject ones when not refused) into Junk. */
  dmarcQuarantine: boolean;
  /** Refuse SPF "fail" when the From domain publishes no DMARC policy. */
  rejectSpfFail: boolean;
  minKeyBits?: number;
  /** For DMARC pct= sampling; injectable for tests. */
  random?: () => number;
};

export type AuthInput = {
  /** The message as received (without our trace headers): a Buffer, or a way to read it again. */
  message: Buffer | (() => AsyncIterable<Buffer>);
  /** Client address as the socket reports it. */
  ip: string;
  /** HELO/EHLO argument as given. */
  helo: string;
  /** MAIL FROM address, '' for the null sender. */
  sender: string;
};

export type AuthAction = 'accept' | 'junk' | 'reject' | 'defer';

export type AuthOutcome = {
  action: AuthAction;
  /** The reply text (with its enhanced code) for reject and defer. */
  reply?: string;
  /** `Authentication-Results: ...\r\n`, ready to prepend. */
  header: string;
  spf: string;
  helo: string | undefined;
  dkim: string[];
  arc: string;
  dmarc: string;
  /** The From domain's DMARC policy when DMARC failed. */
  policy: string | undefined;
  lookups: number;
  ms: number;
};

const DOMAIN = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/i;

export class SenderAuthenticator {
  readonly #opts: SenderAuthOptions;

  constructor(opts: SenderAuthOptions) {
    this.#opts = opts;
  }

  async check(input: AuthInput): Promise<AuthOutcome> {
    const o = this.#opts;
    const started = performance.now();
    const budget = new DnsBudget(o.resolver, o.deadlineMs, o.maxLookups);
    const resolver = budget.resolver(true);
    const ip = plainIp(input.ip);
    // mailauth wants an address literal as HELO in brackets (as authenticate() does).
    const helo = input.helo && /^[\d.]+$|:/.test(input.helo) && !input.helo.startsWith('[') ? `[${input.helo}]` : input.helo;
    const message = Buffer.isBuffer(input.message) ? input.message : Readable.from(input.message());

    // DKIM first: it also parses the header (From: for DMARC, the ARC chain).
    const dkimResult: DKIMVerifyResult = await dkimVerify(message, { resolver, sender: input.sender || undefined, minBitLength: o.minKeyBits ?? 1024 });
    const mailFrom = await spf({ sender: input.sender, ip, helo, mta: o.hostname, resolver });
    // RFC 7208 2.3: check HELO too when it is a domain of its own; recorded, not acted on.
    let heloResult: SPFResult | undefined;
    const senderDomain = input.sender.slice(input.sender.lastIndexOf('@') + 1).toLowerCase();
    if (input.sender && DOMAIN.test(input.helo) && input.helo.toLowerCase() !== senderDomain) {
      heloResult = await spf({ sender: `postmaster@${input.helo}`, ip, helo: input.helo, mta: o.hostname, resolver: budget.resolver(false) });
    }
    // ARC is recorded for the reader (and later a forwarder's seal); our policy does not trust it.
    const arcResult: ARCResult = await arc(dkimResult.arc as unknown as ARCData, { resolver: budget.resolver(false), minBitLength: o.minKeyBits ?? 1024 });
    let dmarcResult: DMARCResult | false = false;
    if (dkimResult.headerFrom?.length) {
      dmarcResult = await dmarc({
        headerFrom: dkimResult.headerFrom,
        spfDomains: mailFrom.status.result === 'pass' && mailFrom.domain ? [mailFrom.domain] : [],
        dkimDomains: dkimResult.results
          .filter((r) => r.status.result === 'pass')
          .map((r) => ({ id: r.id, domain: r.signingDomain, aligned: r.status.aligned, underSized: r.status.underSized })),
        arcResult,
        resolver,
      });
    }

    const rows = [mailFrom.info];
    if (heloResult) rows.push(`spf=${heloResult.status.result} smtp.helo=${input.helo}`);
    rows.push(...dkimRows(dkimResult.results));
    rows.push(arcResult?.info || 'arc=none');
    rows.push(dmarcResult ? dmarcResult.info : 'dmarc=none');
    const header = `Authentication-Results: ${o.hostname};\r\n ${rows.map(foldResultRow).join(';\r\n ')}\r\n`;

    const outcome: AuthOutcome = {
      action: 'accept',
      header,
      spf: mailFrom.status.result,
      helo: heloResult?.status.result,
      dkim: dkimResult.results.map((r) => `${r.status.result}${r.signingDomain ? `:${r.signingDomain}` : ''}`),
      arc: arcResult?.status?.result ?? 'none',
      dmarc: dmarcResult ? dmarcResult.status.result : 'none',
      policy: undefined,
      lookups: budget.lookups,
      ms: 0,
    };
    const dmarcStatus = outcome.dmarc;
    const temp = budget.tempFailure ?? (mailFrom.status.result === 'temperror' ? 'SPF temperror' : undefined) ?? (dmarcStatus === 'temperror' ? 'DMARC temperror' : undefined);
    if (temp && dmarcStatus !== 'pass') {
      outcome.action = 'defer';
      outcome.reply = `4.4.3 Temporary DNS failure while checking the sender (${temp}); please try again later`;
    } else if (dmarcResult && dmarcStatus === 'fail') {
      outcome.policy = dmarcResult.policy;
      // RFC 7489 6.6.4: pct= applies the policy to that share of failing mail only.
      const sampled = dmarcResult.pct === undefined || dmarcResult.pct >= 100 || (o.random ?? Math.random)() * 100 < dmarcResult.pct;
      if (sampled && dmarcResult.policy === 'reject' && o.dmarcReject) {
        outcome.action = 'reject';
        outcome.reply = `5.7.1 Message refused: it fails DMARC for ${dmarcResult.domain}, whose policy is to reject such mail`;
      } else if (sampled && (dmarcResult.policy === 'reject' || dmarcResult.policy === 'quarantine') && o.dmarcQuarantine) {
        outcome.action = 'junk';
      }
    } else if (dmarcStatus === 'none' && mailFrom.status.result === 'fail' && o.rejectSpfFail) {
      outcome.action = 'reject';
      outcome.reply = `5.7.1 Message refused: SPF says ${mailFrom.domain} does not send mail from [${ip}]`;
    }
    outcome.ms = Math.round(performance.now() - started);
    return outcome;
  }
}

/**
 * The dkim= rows of Authentication-Results, `dkim=none` without signatures. mailauth calls a body
 * hash mismatch "neutral"; RFC 6376 6.1.3 makes it PERMFAIL, which RFC 8601 2.7.1 reports as
 * "fail" (the signature was there and did not verify): corrected here, in the results too.
 */
export function dkimRows(results: DKIMVerifyResult['results']): string[] {
  for (const r of results) {
    if (r.status.result === 'neutral' && r.status.comment === 'body hash did not verify') {
      r.status.result = 'fail';
      r.info = r.info.replace(/^dkim=neutral\b/, 'dkim=fail');
    }
  }
  return results.length ? results.map((r) => r.info) : ['dkim=none'];
}

/** Keep result rows readable: break long ones at spaces (RFC 5322 2.2.3 folding). */
export function foldResultRow(row: string): string {
  const words = row.replace(/\r?\n\s*/g, ' ').split(' ');
  const lines: string[] = [];
  let line = '';
  for (const w of words) {
    if (line && line.length + 1 + w.length > 76) {
      lines.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) lines.push(line);
  return lines.join('\r\n\t');
}

// --- Authentication-Results already in the message ---------------------------------------

const CRLF2 = Buffer.from('\r\n\r\n');

/** Offset just past the blank line that ends the header, or -1 if `buf` holds none. */
export function headerEnd(buf: Buffer): number {
  if (buf.length >= 2 && buf[0] === 0x0d && buf[1] === 0x0a) return 2;
  const i = buf.indexOf(CRLF2);
  return i < 0 ? -1 : i + 4;
}

/** The authserv-id of an Authentication-Results field value (RFC 8601 2.2), lower-cased. */
export function authservId(value: string): string {
  let s = value;
  // Skip CFWS: folding white space and (possibly nested) comments.
  for (;;) {
    s = s.replace(/^[ \t\r\n]+/, '');
    if (!s.startsWith('(')) break;
    let depth = 0;
    let i = 0;
    for (; i < s.length; i++) {
      if (s[i] === '\\') i++;
      else if (s[i] === '(') depth++;
      else if (s[i] === ')' && --depth === 0) break;
    }
    s = s.slice(i + 1);
  }
  const quoted = /^"((?:[^"\\]|\\.)*)"/.exec(s);
  if (quoted) return quoted[1].replace(/\\(.)/g, '$1').toLowerCase();
  return (/^[^\s;()]*/.exec(s)?.[0] ?? '').toLowerCase();
}

/**
 * The header block without Authentication-Results fields whose authserv-id is `ours`.
 * `head` is the header including its terminating blank line. Returns `head` itself (no copy)
 * when there is nothing to remove.
 */
export function stripOwnAuthResults(head: Buffer, ours: string): { head: Buffer; removed: number } {
  const text = head.toString('latin1');
  if (!/authentication-results/i.test(text)) return { head, removed: 0 };
  const id = ours.toLowerCase();
  const lines = text.split('\r\n');
  const kept: string[] = [];
  let removed = 0;
  for (let i = 0; i < lines.length; ) {
    // One field: its first line and the continuation lines (starting with WSP) after it.
    let j = i + 1;
    while (j < lines.length && lines[j].length > 0 && (lines[j][0] === ' ' || lines[j][0] === '\t')) j++;
    const field = lines.slice(i, j);
    const m = /^authentication-results[ \t]*:/i.exec(field[0]);
    if (m && authservId(field.join('\r\n').slice(m[0].length)) === id) removed++;
    else kept.push(...field);
    i = j;
  }
  return removed ? { head: Buffer.from(kept.join('\r\n'), 'latin1'), removed } : { head, removed: 0 };
}

/**
 * Streaming form for mail that skips the checks: gather the header (up to `limit` bytes), drop
 * our authserv-id's fields, then pass the rest through untouched.
 */
export async function* withoutOwnAuthResults(source: AsyncIterable<Uint8Array>, ours: string, limit = 256 * 1024): AsyncGenerator<Uint8Array> {
  const it = source[Symbol.asyncIterator]();
  const parts: Buffer[] = [];
  let size = 0;
  let end = -1;
  let done = false;
  while (end < 0 && size <= limit) {
    const next = await it.next();
    if (next.done) {
      done = true;
      break;
    }
    parts.push(Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength));
    size += next.value.byteLength;
    const all = parts.length === 1 ? parts[0] : Buffer.concat(parts, size);
    parts.splice(0, parts.length, all);
    end = headerEnd(all);
  }
  const gathered = parts[0] ?? Buffer.alloc(0);
  const cut = end >= 0 ? end : done ? gathered.length : -1;
  if (cut >= 0) {
    yield stripOwnAuthResults(gathered.subarray(0, cut), ours).head;
    if (cut < gathered.length) yield gathered.subarray(cut);
  } else if (gathered.length) {
    yield gathered; // a header longer than `limit`: left alone
  }
  if (done) return;
  for (;;) {
    const next = await it.next();
    if (next.done) return;
    yield next.value;
  }
}
