// SEARCH evaluation (RFC 3501 6.4.4; RFC 7162 3.1.5 MODSEQ; RFC 5032 OLDER/YOUNGER) over the
// session's view of a mailbox. Two passes: first every message is judged on what the session
// already holds (flags, size, dates, UID, MODSEQ) with three-valued logic, so most messages are
// decided without touching their files; then, for the messages still undecided, an optional
// full-text prefilter removes those that cannot contain a string, and only the rest have their
// headers and body loaded, a few at a time, and are checked exactly.
//
// Matching is a case-insensitive substring test on decoded text (RFC 3501 6.4.4: "contains the
// specified string"): both sides are NFC-normalised, lower-cased and have white space runs
// collapsed (foldText), so a folded header or a wrapped line does not hide a phrase.
//
// Dates (RFC 3501 6.4.4: "disregarding time and timezone"):
// - BEFORE/ON/SINCE use the calendar date of the internal date in `timezoneOffsetMinutes` (by
//   default the server's local zone, as `imapDate` shows INTERNALDATE);
// - SENT* use the calendar date written in the Date: header, i.e. in the sender's own zone
//   (`Mon, 2 Feb 2026 23:30 -0800` is 2 Feb), falling back to the UTC date of `sentDate` when the
//   header cannot be read that way. A message without a usable Date: matches no SENT* key.
import type { SearchKey } from './search-parse.ts';
import { sequenceHas } from './sequence.ts';
import { bodyTextFromRaw, foldText, headersFromRaw } from '../store/fulltext.ts';
import type { FullTextIndex } from '../store/fulltext.ts';

export { bodyTextFromRaw, headersFromRaw };

export type SearchMessage = { seq: number; uid: number; modseq: number; size: number; flags: readonly string[]; internalDate: number; recent: boolean };
export type SearchHeaders = { fields: Map<string, string[]>; sentDate: number | null };
export type PrefilterKey = 'BODY' | 'TEXT' | 'SUBJECT' | 'FROM' | 'TO' | 'CC' | 'BCC';

export type SearchContext = {
  /** The session's view, in sequence order. */
  messages: readonly SearchMessage[];
  /** What `*` means in a UID set. */
  maxUid: number;
  now?: () => number;
  /** Offset of the zone whose calendar BEFORE/ON/SINCE use; default the server's local zone. */
  timezoneOffsetMinutes?: number;
  /**
   * The message's bytes; null if it is gone. When given, headers and body text are derived from
   * one read per message (TEXT needs both), and `headers`/`bodyText` are not used.
   */
  raw?(m: SearchMessage): Promise<Buffer | null>;
  /** Decoded header values for HEADER/FROM/TO/CC/BCC/SUBJECT/SENT*, lower-cased field names; null if the message is gone. */
  headers?(m: SearchMessage): Promise<SearchHeaders | null>;
  /** Decoded text of the body (all text parts, HTML as text), for BODY/TEXT; null if gone. */
  bodyText?(m: SearchMessage): Promise<string | null>;
  /** Optional prefilter: UIDs that may match (a superset), or undefined when it cannot help. */
  candidates?(key: PrefilterKey, value: string): Promise<Set<number> | undefined>;
  /** Messages whose headers/body load at once (default 8). */
  concurrency?: number;
  /** Abort a long search (connection closed, timeout): evaluateSearch rejects with the reason. */
  signal?: AbortSignal;
};

// RFC 3501 6.4.4: US-ASCII must be supported. The parser (tokens.ts) already insists that
// strings are UTF-8, so ISO-8859-1 with 8-bit bytes could not arrive intact: refuse it rather
// than search for mangled text.
const CHARSETS = new Set(['US-ASCII', 'UTF-8']);

/** Whether SEARCH CHARSET `charset` is accepted (absent = US-ASCII); else NO [BADCHARSET (US-ASCII UTF-8)]. */
export function searchCharsetSupported(charset: string | undefined): boolean {
  return charset === undefined || CHARSETS.has(charset.trim().toUpperCase());
}

// --- the cheap pass ---

type Tri = boolean | undefined;
/** 0: decided from the record; 1: needs headers; 2: needs the body. */
type Cost = 0 | 1 | 2;

type Env = {
  count: number;
  maxUid: number;
  now: number;
  offsetMs: number | undefined;
  /** Prefilter results per text key node: UIDs outside the set cannot match. */
  prefilter: Map<SearchKey, Set<number>>;
  costs: WeakMap<SearchKey, Cost>;
  /** Folded search strings, computed once per key rather than once per message. */
  needles: Map<SearchKey, string>;
};

function needle(k: SearchKey & { value: string }, env: Env): string {
  let n = env.needles.get(k);
  if (n === undefined) env.needles.set(k, (n = foldText(k.value)));
  return n;
}

const DAY_MS = 86_400_000;

function hasFlag(m: SearchMessage, flag: string): boolean {
  const want = flag.toLowerCase();
  return m.flags.some((f) => f.toLowerCase() === want);
}

/** `YYYY-MM-DD` of the internal date in the search's zone. */
function internalDay(ms: number, env: Env): string {
  const offset = env.offsetMs ?? -new Date(ms).getTimezoneOffset() * 60_000;
  return new Date(ms + offset).toISOString().slice(0, 10);
}

function compareDay(day: string, key: 'BEFORE' | 'ON' | 'SINCE', date: string): boolean {
  if (key === 'BEFORE') return day < date;
  if (key === 'ON') return day === date;
  return day >= date;
}

function cost(k: SearchKey, env: Env): Cost {
  const known = env.costs.get(k);
  if (known !== undefined) return known;
  let c: Cost;
  switch (k.key) {
    case 'BODY':
    case 'TEXT':
      c = 2;
      break;
    case 'FROM':
    case 'TO':
    case 'CC':
    case 'BCC':
    case 'SUBJECT':
    case 'HEADER':
    case 'SENTBEFORE':
    case 'SENTON':
    case 'SENTSINCE':
      c = 1;
      break;
    case 'NOT':
      c = cost(k.inner, env);
      break;
    case 'OR':
      c = Math.max(cost(k.left, env), cost(k.right, env)) as Cost;
      break;
    case 'AND':
      c = k.keys.reduce<Cost>((a, x) => Math.max(a, cost(x, env)) as Cost, 0);
      break;
    default:
      c = 0;
  }
  env.costs.set(k, c);
  return c;
}

/** The key's value from the record alone, or undefined when headers or body are needed. */
function cheap(k: SearchKey, m: SearchMessage, env: Env): Tri {
  switch (k.key) {
    case 'ALL':
      return true;
    case 'ANSWERED':
      return hasFlag(m, '\\Answered');
    case 'DELETED':
      return hasFlag(m, '\\Deleted');
    case 'DRAFT':
      return hasFlag(m, '\\Draft');
    case 'FLAGGED':
      return hasFlag(m, '\\Flagged');
    case 'SEEN':
      return hasFlag(m, '\\Seen');
    case 'UNANSWERED':
      return !hasFlag(m, '\\Answered');
    case 'UNDELETED':
      return !hasFlag(m, '\\Deleted');
    case 'UNDRAFT':
      return !hasFlag(m, '\\Draft');
    case 'UNFLAGGED':
      return !hasFlag(m, '\\Flagged');
    case 'UNSEEN':
      return !hasFlag(m, '\\Seen');
    case 'RECENT':
      return m.recent;
    // RFC 3501 6.4.4: NEW is "(RECENT UNSEEN)", OLD is "NOT RECENT".
    case 'NEW':
      return m.recent && !hasFlag(m, '\\Seen');
    case 'OLD':
      return !m.recent;
    case 'KEYWORD':
      return hasFlag(m, k.flag);
    case 'UNKEYWORD':
      return !hasFlag(m, k.flag);
    case 'LARGER':
      return m.size > k.size;
    case 'SMALLER':
      return m.size < k.size;
    case 'BEFORE':
    case 'ON':
    case 'SINCE':
      return compareDay(internalDay(m.internalDate, env), k.key, k.date);
    // RFC 5032 3: OLDER is "older than" the interval, YOUNGER "younger than or equal to" it.
    case 'OLDER':
      return env.now - m.internalDate > k.seconds * 1000;
    case 'YOUNGER':
      return env.now - m.internalDate <= k.seconds * 1000;
    case 'UID':
      return sequenceHas(k.set, m.uid, env.maxUid);
    case 'SEQ':
      return sequenceHas(k.set, m.seq, env.count);
    // RFC 7162 3.1.5: "equal to or greater than". The entry name (per-flag MODSEQ) may be ignored.
    case 'MODSEQ':
      return m.modseq >= k.modseq;
    case 'NOT': {
      const v = cheap(k.inner, m, env);
      return v === undefined ? undefined : !v;
    }
    case 'OR': {
      const a = cheap(k.left, m, env);
      if (a === true) return true;
      const b = cheap(k.right, m, env);
      if (b === true) return true;
      return a === false && b === false ? false : undefined;
    }
    case 'AND': {
      let unknown = false;
      for (const x of k.keys) {
        const v = cheap(x, m, env);
        if (v === false) return false;
        if (v === undefined) unknown = true;
      }
      return unknown ? undefined : true;
    }
    case 'BODY':
    case 'TEXT':
    case 'SUBJECT':
    case 'FROM':
    case 'TO':
    case 'CC':
    case 'BCC': {
      if (k.value === '') return true; // every message contains the empty string
      const set = env.prefilter.get(k);
      return set !== undefined && !set.has(m.uid) ? false : undefined;
    }
    case 'HEADER':
    case 'SENTBEFORE':
    case 'SENTON':
    case 'SENTSINCE':
      return undefined;
  }
}

// --- the exact pass ---

/**
 * Per-message loads, each done at most once. Lives only while its message is checked, so the
 * raw bytes it keeps are bounded by the evaluation's concurrency.
 */
class Loaded {
  readonly #m: SearchMessage;
  readonly #ctx: SearchContext;
  #raw: Promise<Buffer | null> | undefined;
  #headers: Promise<SearchHeaders | null> | undefined;
  #body: Promise<string | null> | undefined;
  #headerText: string | undefined;
  readonly #folded = new Map<string, string>();
  constructor(m: SearchMessage, ctx: SearchContext) {
    this.#m = m;
    this.#ctx = ctx;
  }
  #bytes(): Promise<Buffer | null> {
    return (this.#raw ??= this.#ctx.raw!(this.#m));
  }
  headers(): Promise<SearchHeaders | null> {
    if (this.#headers) return this.#headers;
    if (this.#ctx.raw) return (this.#headers = this.#bytes().then((raw) => (raw === null ? null : headersFromRaw(raw))));
    if (!this.#ctx.headers) throw new Error('SearchContext needs raw or headers');
    return (this.#headers = this.#ctx.headers(this.#m));
  }
  body(): Promise<string | null> {
    if (this.#body) return this.#body;
    if (this.#ctx.raw) return (this.#body = this.#bytes().then((raw) => (raw === null ? null : bodyTextFromRaw(raw))));
    if (!this.#ctx.bodyText) throw new Error('SearchContext needs raw or bodyText');
    return (this.#body = this.#ctx.bodyText(this.#m));
  }
  /** Folded values of one field, joined (each occurrence on its own line). */
  async field(name: string): Promise<string | null> {
    const h = await this.headers();
    if (h === null) return null;
    const values = h.fields.get(name);
    if (values === undefined) return null;
    let folded = this.#folded.get(name);
    if (folded === undefined) {
      folded = values.map(foldText).join('\n');
      this.#folded.set(name, folded);
    }
    return folded;
  }
  /** All header fields as `name: value` lines, folded: the header half of TEXT. */
  async headerText(): Promise<string | null> {
    if (this.#headerText !== undefined) return this.#headerText;
    const h = await this.headers();
    if (h === null) return null;
    const lines: string[] = [];
    for (const [name, values] of h.fields) for (const v of values) lines.push(foldText(`${name}: ${v}`));
    return (this.#headerText = lines.join('\n'));
  }
  async foldedBody(): Promise<string | null> {
    const cached = this.#folded.get('\0body');
    if (cached !== undefined) return cached;
    const b = await this.body();
    if (b === null) return null;
    const folded = foldText(b);
    this.#folded.set('\0body', folded);
    return folded;
  }
}

const MONTHS: Record<string, string> = { jan: '01', feb: '02', mar: '03', apr: '04', may: '05', jun: '06', jul: '07', aug: '08', sep: '09', oct: '10', nov: '11', dec: '12' };

/**
 * RFC 5322 3.3 date as written (the sender's own calendar day), `YYYY-MM-DD`, else null.
 * Obsolete two- and three-digit years per RFC 5322 4.3.
 */
export function sentDay(dateHeader: string): string | null {
  const m = /(?:^|[\s,])(\d{1,2})\s+([A-Za-z]{3})[A-Za-z]*\.?\s+(\d{2,4})\b/.exec(dateHeader);
  if (!m) return null;
  const month = MONTHS[m[2].toLowerCase()];
  if (month === undefined) return null;
  let year = Number(m[3]);
  if (m[3].length === 2) year += year < 50 ? 2000 : 1900;
  else if (m[3].length === 3) year += 1900;
  const day = Number(m[1]);
  if (day < 1 || day > 31) return null;
  return `${String(year).padStart(4, '0')}-${month}-${String(day).padStart(2, '0')}`;
}

async function exact(k: SearchKey, m: SearchMessage, env: Env, data: Loaded): Promise<boolean> {
  const quick = cheap(k, m, env);
  if (quick !== undefined) return quick;
  switch (k.key) {
    case 'NOT':
      return !(await exact(k.inner, m, env, data));
    case 'OR': {
      // Cheaper side first: the expensive one may never be needed.
      const [first, second] = cost(k.left, env) <= cost(k.right, env) ? [k.left, k.right] : [k.right, k.left];
      return (await exact(first, m, env, data)) || exact(second, m, env, data);
    }
    case 'AND': {
      const undecided = k.keys.filter((x) => cheap(x, m, env) === undefined).sort((a, b) => cost(a, env) - cost(b, env));
      for (const x of undecided) if (!(await exact(x, m, env, data))) return false;
      return true;
    }
    case 'SUBJECT':
    case 'FROM':
    case 'TO':
    case 'CC':
    case 'BCC': {
      const text = await data.field(k.key.toLowerCase());
      return text !== null && text.includes(needle(k, env));
    }
    case 'HEADER': {
      const name = k.field.toLowerCase();
      if (k.value === '') {
        const h = await data.headers();
        return h !== null && h.fields.has(name);
      }
      const text = await data.field(name);
      return text !== null && text.includes(needle(k, env));
    }
    case 'BODY': {
      const body = await data.foldedBody();
      return body !== null && body.includes(needle(k, env));
    }
    case 'TEXT': {
      const head = await data.headerText();
      if (head !== null && head.includes(needle(k, env))) return true;
      const body = await data.foldedBody();
      return body !== null && body.includes(needle(k, env));
    }
    case 'SENTBEFORE':
    case 'SENTON':
    case 'SENTSINCE': {
      const h = await data.headers();
      if (h === null) return false;
      const written = h.fields.get('date')?.[0];
      let day = written === undefined ? null : sentDay(written);
      if (day === null && h.sentDate !== null) day = new Date(h.sentDate).toISOString().slice(0, 10);
      if (day === null) return false;
      return compareDay(day, k.key === 'SENTBEFORE' ? 'BEFORE' : k.key === 'SENTON' ? 'ON' : 'SINCE', k.date);
    }
  }
  throw new Error(`search key ${k.key} has no exact evaluation`);
}

/** Text keys worth asking the prefilter about (values of 3+ characters). */
function textKeys(k: SearchKey, out: Array<Extract<SearchKey, { key: PrefilterKey }>>): void {
  switch (k.key) {
    case 'BODY':
    case 'TEXT':
    case 'SUBJECT':
    case 'FROM':
    case 'TO':
    case 'CC':
    case 'BCC':
      if ([...k.value].length >= 3) out.push(k);
      return;
    case 'NOT':
      textKeys(k.inner, out);
      return;
    case 'OR':
      textKeys(k.left, out);
      textKeys(k.right, out);
      return;
    case 'AND':
      for (const x of k.keys) textKeys(x, out);
      return;
  }
}

/** Below this many undecided messages the prefilter's query costs more than it saves. */
const PREFILTER_MIN = 8;

/** The messages matching `criteria`, in sequence order. */
export async function evaluateSearch(criteria: SearchKey, ctx: SearchContext): Promise<SearchMessage[]> {
  const env: Env = {
    count: ctx.messages.length,
    maxUid: ctx.maxUid,
    now: (ctx.now ?? Date.now)(),
    offsetMs: ctx.timezoneOffsetMinutes === undefined ? undefined : ctx.timezoneOffsetMinutes * 60_000,
    prefilter: new Map(),
    costs: new WeakMap(),
    needles: new Map(),
  };
  const matched = new Uint8Array(ctx.messages.length);
  let pending: number[] = [];
  ctx.messages.forEach((m, i) => {
    const v = cheap(criteria, m, env);
    if (v === undefined) pending.push(i);
    else if (v) matched[i] = 1;
  });

  if (pending.length >= PREFILTER_MIN && ctx.candidates) {
    const keys: Array<Extract<SearchKey, { key: PrefilterKey }>> = [];
    textKeys(criteria, keys);
    for (const k of keys) {
      ctx.signal?.throwIfAborted();
      const set = await ctx.candidates(k.key, k.value);
      if (set !== undefined) env.prefilter.set(k, set);
    }
    if (env.prefilter.size > 0) {
      const still: number[] = [];
      for (const i of pending) {
        const v = cheap(criteria, ctx.messages[i], env);
        if (v === undefined) still.push(i);
        else if (v) matched[i] = 1;
      }
      pending = still;
    }
  }

  // Load and check the rest, a few at a time: bounded memory and file handles, however big the
  // mailbox (a 10,000-message SEARCH BODY holds at most `concurrency` bodies at once).
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < pending.length) {
      ctx.signal?.throwIfAborted();
      const i = pending[next++];
      const m = ctx.messages[i];
      if (await exact(criteria, m, env, new Loaded(m, ctx))) matched[i] = 1;
    }
  };
  const lanes = Math.max(1, Math.min(ctx.concurrency ?? 8, pending.length));
  await Promise.all(Array.from({ length: lanes }, worker));

  return ctx.messages.filter((_, i) => matched[i] === 1);
}

/**
 * A `candidates` function for SearchContext backed by the user's full-text index. Messages the
 * index does not hold yet (new mail not indexed) are always candidates, so the set stays a
 * superset. TEXT also matches any header field, which the index does not hold: no prefilter.
 */
export function fullTextCandidates(index: FullTextIndex, folder: string, uidValidity: number, messages: readonly SearchMessage[]): NonNullable<SearchContext['candidates']> {
  let unindexed: number[] | undefined;
  return async (key, value) => {
    const field = key === 'BODY' ? 'body' : key === 'SUBJECT' ? 'subject' : key === 'TEXT' ? undefined : 'addresses';
    if (field === undefined) return undefined;
    const set = index.candidates(folder, uidValidity, field, value);
    if (set === undefined) return undefined;
    if (unindexed === undefined) {
      const indexed = index.indexedUids(folder, uidValidity);
      unindexed = messages.filter((m) => !indexed.has(m.uid)).map((m) => m.uid);
    }
    for (const uid of unindexed) set.add(uid);
    return set;
  };
}
