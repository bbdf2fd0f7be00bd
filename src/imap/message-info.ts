// What FETCH says about a message's content without sending it (RFC 3501 6.4.5, 7.4.2): ENVELOPE,
// BODY and BODYSTRUCTURE, RFC822.SIZE, plus the decoded header text SEARCH and the webmail need.
// A small MIME walker over the raw bytes (no decoding of bodies) builds the part tree, shared with
// fetch-body.ts for BODY[section]. Output follows Dovecot's, so clients that were tested against
// it (Thunderbird, imapflow, mutt) read it the same way: lower-case types as written, the default
// ("charset" "us-ascii") on text parts, "7bit" when the encoding is missing or not a token, and
// sizes and line counts as if every line ended in CRLF (what the client receives).
// A summary is computed once per message and kept in the user's index (SummaryProvider).
import libmime from 'libmime';
import type { Logger } from '../core/log.ts';
import type { WorkerPool } from '../core/workers.ts';
import type { MessageRecord, UserMailboxes } from '../store/mailboxes.ts';
import { formatList, nstring, quoteString } from './format.ts';

export type MessageSummary = {
  /** The ENVELOPE list, ready to write: `("date" "subject" ((from…)) … "in-reply-to" "message-id")`. */
  envelope: string;
  /** BODYSTRUCTURE, extensible form (MD5, disposition, language, location). */
  bodyStructure: string;
  /** BODY, the non-extensible form. */
  body: string;
  /** Octets with every line ending as CRLF (a bare LF counts two). */
  rfc822Size: number;
  /** The stored file has bare LF line ends: convert (toCrlf) whenever sending its bytes. */
  bareLf: boolean;
  /** Bytes of the header block including the blank line, in the stored file. */
  headerBytes: number;
  /** Date: in ms since the epoch, for SEARCH SENT*; null when missing or unreadable. */
  sentDate: number | null;
  /** Header text with RFC 2047 words decoded, unfolded; '' when absent. */
  fields: { from: string; to: string; cc: string; bcc: string; subject: string; messageId: string; inReplyTo: string; references: string };
  hasAttachments: boolean;
};

// --- the MIME tree ---

export type MimeHeader = { name: string; value: string };
export type MimeParams = Array<[string, string]>;

/** One entity: offsets into the stored bytes, so BODY[section] can cut without re-parsing headers. */
export type MimePart = {
  /** First byte of the header block. */
  start: number;
  /** First byte after the blank line that ends the header (== end when there is no body). */
  bodyStart: number;
  /** End of the body: excludes the line break before the next boundary (RFC 2046 5.1.1). */
  end: number;
  headers: MimeHeader[];
  /** Lower case; `text`/`plain` when missing or broken (RFC 2045 5.2). */
  type: string;
  subtype: string;
  params: MimeParams;
  /** Parts of a multipart (may be empty when no boundary was found). */
  children: MimePart[];
  /** The encapsulated message of a message/rfc822 (or message/global) part. */
  message?: MimePart;
};

const LF = 0x0a;
const CR = 0x0d;
/** Deeper nesting is shown as a leaf: a hostile message must not blow the stack or the reply. */
const MAX_DEPTH = 40;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Header bytes as text: UTF-8 when valid (RFC 6532), else Latin-1 so no byte is lost. */
function headerText(bytes: Buffer): string {
  try {
    return utf8.decode(bytes);
  } catch {
    return bytes.toString('latin1');
  }
}

/** End of the header block starting at `start` (after its blank line), bounded by `end`. */
function headerEnd(buf: Buffer, start: number, end: number): number {
  let pos = start;
  while (pos < end) {
    // An empty line (LF or CRLF) at `pos` ends the header.
    if (buf[pos] === LF) return pos + 1;
    if (buf[pos] === CR && pos + 1 < end && buf[pos + 1] === LF) return pos + 2;
    const nl = buf.indexOf(LF, pos);
    if (nl < 0 || nl >= end) return end;
    pos = nl + 1;
  }
  return end;
}

/** Unfolded fields in order. Lines that are neither a field nor a continuation are skipped. */
export function parseHeaders(block: Buffer): MimeHeader[] {
  const out: MimeHeader[] = [];
  const lines = headerText(block).split(/\r?\n/);
  let cur: { name: string; parts: string[] } | undefined;
  const flush = (): void => {
    if (cur) out.push({ name: cur.name, value: cur.parts.join('').replace(/[\0\r\n]/g, '').trim() });
    cur = undefined;
  };
  for (const line of lines) {
    if (line === '') continue;
    const c = line.charCodeAt(0);
    if (c === 0x20 || c === 0x09) {
      cur?.parts.push(line);
      continue;
    }
    flush();
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    if (name === '' || /[\s]/.test(name)) continue;
    cur = { name, parts: [line.slice(colon + 1)] };
  }
  flush();
  return out;
}

function first(headers: readonly MimeHeader[], name: string): string | undefined {
  for (const h of headers) if (h.name === name) return h.value;
  return undefined;
}

/** Remove RFC 5322 comments (nesting, quoted strings respected). */
function stripComments(s: string): string {
  if (!s.includes('(')) return s;
  let out = '';
  let depth = 0;
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (ch === '\\' && (quoted || depth > 0)) {
      if (depth === 0) out += ch + (s[i + 1] ?? '');
      i++;
    } else if (quoted) {
      out += ch;
      if (ch === '"') quoted = false;
    } else if (ch === '(') depth++;
    else if (ch === ')' && depth > 0) depth--;
    else if (depth === 0) {
      if (ch === '"') quoted = true;
      out += ch;
    }
  }
  return out;
}

const TOKEN = /^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$/;

/**
 * `value; a=b; c="d e"` (RFC 2045 5.1) into the leading value (lower case) and parameters (names
 * lower case). RFC 2231 continuations (`name*0`, `name*1*`) are joined; an extended value stays
 * in its `charset'lang'%xx` form under `name*`, as Dovecot leaves it for the client to decode.
 */
export function parseStructured(raw: string): { value: string; params: MimeParams } {
  const s = stripComments(raw);
  const items: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (quoted) {
      if (ch === '\\' && i + 1 < s.length) {
        cur += '\\' + s[++i];
        continue;
      }
      if (ch === '"') quoted = false;
      cur += ch;
    } else if (ch === '"') {
      quoted = true;
      cur += ch;
    } else if (ch === ';') {
      items.push(cur);
      cur = '';
    } else cur += ch;
  }
  items.push(cur);
  const value = items[0].trim().toLowerCase();
  const plain: MimeParams = [];
  const continued = new Map<string, Array<{ n: number; ext: boolean; v: string }>>();
  for (const item of items.slice(1)) {
    const eq = item.indexOf('=');
    if (eq <= 0) continue;
    const name = item.slice(0, eq).trim().toLowerCase();
    let v = item.slice(eq + 1).trim();
    if (v.startsWith('"')) {
      const close = v.lastIndexOf('"');
      v = (close > 0 ? v.slice(1, close) : v.slice(1)).replace(/\\(.)/g, '$1');
    }
    if (name === '') continue;
    const m = /^(.+?)\*(\d+)(\*?)$/.exec(name);
    if (m) {
      let list = continued.get(m[1]);
      if (!list) {
        list = [];
        continued.set(m[1], list);
        plain.push([m[1], '']); // keeps its place; filled below
      }
      list.push({ n: Number(m[2]), ext: m[3] === '*', v });
    } else if (!plain.some(([k]) => k === name)) {
      plain.push([name, v]);
    }
  }
  const params: MimeParams = plain.map(([k, v]) => {
    const list = continued.get(k);
    if (!list) return [k, v];
    list.sort((a, b) => a.n - b.n);
    const ext = list[0].ext;
    // Plain segments after an extended first one must not be percent-decoded by the client.
    const joined = list.map((p) => (ext && !p.ext ? p.v.replace(/%/g, '%25') : p.v)).join('');
    return [ext ? `${k}*` : k, joined];
  });
  return { value, params };
}

/** Count LFs and bare LFs (no CR before) in [start, end). */
function countLines(buf: Buffer, start: number, end: number): { lines: number; bare: number } {
  let lines = 0;
  let bare = 0;
  let pos = buf.indexOf(LF, start);
  while (pos >= 0 && pos < end) {
    lines++;
    if (pos === start ? pos === 0 || buf[pos - 1] !== CR : buf[pos - 1] !== CR) bare++;
    pos = buf.indexOf(LF, pos + 1);
  }
  return { lines, bare };
}

/**
 * Split a multipart body into its parts by `--boundary` lines (RFC 2046 5.1.1). The line break
 * before a delimiter belongs to the delimiter. A part left open at the end runs to the end.
 */
function splitMultipart(buf: Buffer, start: number, end: number, boundary: string): Array<[number, number]> {
  const delim = Buffer.from(`--${boundary}`, 'latin1');
  const parts: Array<[number, number]> = [];
  let partStart = -1;
  let pos = start;
  while (pos < end) {
    const idx = buf.indexOf(delim, pos);
    if (idx < 0 || idx + delim.length > end) break;
    if (idx !== start && buf[idx - 1] !== LF) {
      pos = idx + 1;
      continue;
    }
    let after = idx + delim.length;
    const close = after + 1 < end && buf[after] === 0x2d && buf[after + 1] === 0x2d;
    if (close) after += 2;
    // Only transport padding may follow the delimiter; "--foo2" is not a "--foo" line.
    let eol = after;
    while (eol < end && (buf[eol] === 0x20 || buf[eol] === 0x09 || buf[eol] === CR)) eol++;
    if (eol < end && buf[eol] !== LF) {
      pos = idx + 1;
      continue;
    }
    if (partStart >= 0) {
      let partEnd = idx;
      if (partEnd > partStart && buf[partEnd - 1] === LF) partEnd--;
      if (partEnd > partStart && buf[partEnd - 1] === CR) partEnd--;
      parts.push([partStart, partEnd]);
    }
    if (close) return parts;
    partStart = eol < end ? eol + 1 : end;
    pos = partStart;
  }
  if (partStart >= 0) parts.push([partStart, end]);
  return parts;
}

/** Parse the entity in [start, end) and, below it, its parts and encapsulated messages. */
export function parseMime(buf: Buffer, start = 0, end = buf.length, defaultType: 'text/plain' | 'message/rfc822' = 'text/plain', depth = 0): MimePart {
  const bodyStart = headerEnd(buf, start, end);
  const headers = parseHeaders(buf.subarray(start, bodyStart));
  let type = defaultType.split('/')[0];
  let subtype = defaultType.split('/')[1];
  let params: MimeParams = [];
  const ct = first(headers, 'content-type');
  if (ct !== undefined) {
    const parsed = parseStructured(ct);
    const slash = parsed.value.indexOf('/');
    const t = slash > 0 ? parsed.value.slice(0, slash).trim() : '';
    const st = slash > 0 ? parsed.value.slice(slash + 1).trim() : '';
    if (TOKEN.test(t) && TOKEN.test(st)) {
      type = t;
      subtype = st;
      params = parsed.params;
    } else {
      // RFC 2045 5.2: an unreadable Content-Type means text/plain; us-ascii.
      type = 'text';
      subtype = 'plain';
    }
  }
  const part: MimePart = { start, bodyStart, end, headers, type, subtype, params, children: [] };
  if (depth >= MAX_DEPTH) {
    if (type === 'multipart' || type === 'message') {
      part.type = 'application';
      part.subtype = 'octet-stream';
      part.params = [];
    }
    return part;
  }
  if (type === 'multipart') {
    const boundary = params.find(([k]) => k === 'boundary')?.[1];
    if (boundary) {
      const childDefault = subtype === 'digest' ? 'message/rfc822' : 'text/plain';
      for (const [s, e] of splitMultipart(buf, bodyStart, end, boundary)) part.children.push(parseMime(buf, s, e, childDefault, depth + 1));
    }
  } else if (type === 'message' && (subtype === 'rfc822' || subtype === 'global')) {
    part.message = parseMime(buf, bodyStart, end, 'text/plain', depth + 1);
  }
  return part;
}

// --- ENVELOPE ---

export type ImapAddress = { name: string | null; adl: string | null; mailbox: string | null; host: string | null };

type Tok = { kind: 'word' | 'quoted' | 'comment' | 'special'; text: string };

function tokenizeAddresses(s: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < s.length) {
    const ch = s[i];
    if (ch === ' ' || ch === '\t' || ch === '\r' || ch === '\n') {
      i++;
    } else if (ch === '"') {
      let text = '';
      i++;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === '\\' && i + 1 < s.length) i++;
        text += s[i++];
      }
      i++;
      out.push({ kind: 'quoted', text });
    } else if (ch === '(') {
      let depth = 1;
      let text = '';
      i++;
      while (i < s.length && depth > 0) {
        const c = s[i];
        if (c === '\\' && i + 1 < s.length) {
          text += s[i + 1];
          i += 2;
          continue;
        }
        if (c === '(') depth++;
        else if (c === ')' && --depth === 0) break;
        text += c;
        i++;
      }
      i++;
      out.push({ kind: 'comment', text: text.trim() });
    } else if ('<>,:;@'.includes(ch)) {
      out.push({ kind: 'special', text: ch });
      i++;
    } else {
      let text = '';
      while (i < s.length && !' \t\r\n"(<>,:;@'.includes(s[i])) text += s[i++];
      out.push({ kind: 'word', text });
    }
  }
  return out;
}

/**
 * An address header as IMAP address structures (RFC 3501 7.4.2): display names stay as on the
 * wire (RFC 2047 words undecoded), a comment stands in for a missing name, a group is framed by
 * (NIL NIL "name" NIL) and (NIL NIL NIL NIL). A mailbox without a domain gets "MISSING_DOMAIN"
 * (and an empty local part "MISSING_MAILBOX"), as Dovecot does: a NIL host would read as a group.
 */
export function parseAddressList(value: string): ImapAddress[] {
  const toks = tokenizeAddresses(value);
  const out: ImapAddress[] = [];
  let phrase: Tok[] = [];
  let angle: Tok[] | undefined;
  let comments: Tok[] = [];
  let inGroup = false;

  const flushMailbox = (): void => {
    const words = phrase.filter((t) => t.kind !== 'comment');
    const comment = [...phrase, ...comments].find((t) => t.kind === 'comment' && t.text !== '');
    let name: string | null = null;
    let spec: Tok[];
    if (angle !== undefined) {
      name = words.length > 0 ? words.map((t) => t.text).join(' ') : null;
      spec = angle.filter((t) => t.kind !== 'comment');
    } else {
      spec = words;
    }
    if (name === null && comment) name = comment.text;
    phrase = [];
    angle = undefined;
    comments = [];
    if (spec.length === 0) return;
    // Source route: <@a,@b:user@host>
    let adl: string | null = null;
    const colon = spec.findIndex((t) => t.kind === 'special' && t.text === ':');
    if (colon >= 0 && spec[0].text === '@') {
      adl = spec.slice(0, colon).map((t) => t.text).join('');
      spec = spec.slice(colon + 1);
    }
    let at = -1;
    for (let k = spec.length - 1; k >= 0 && at < 0; k--) if (spec[k].kind === 'special' && spec[k].text === '@') at = k;
    const local = (at >= 0 ? spec.slice(0, at) : spec).map((t) => t.text).join('');
    const domain = at >= 0 ? spec.slice(at + 1).map((t) => t.text).join('') : '';
    out.push({ name, adl, mailbox: local === '' ? 'MISSING_MAILBOX' : local, host: domain === '' ? 'MISSING_DOMAIN' : domain });
  };

  let angleClosed = false;
  for (const t of toks) {
    if (angle !== undefined) {
      // Inside <…> everything is the address; after ">" only comments until the separator.
      if (!angleClosed) {
        if (t.kind === 'special' && t.text === '>') angleClosed = true;
        else angle.push(t);
        continue;
      }
      if (t.kind === 'comment') {
        comments.push(t);
        continue;
      }
    }
    if (t.kind !== 'special') {
      phrase.push(t);
      continue;
    }
    switch (t.text) {
      case '<':
        angle = [];
        angleClosed = false;
        break;
      case ':':
        if (!inGroup) {
          const name = phrase.filter((p) => p.kind !== 'comment').map((p) => p.text).join(' ');
          phrase = [];
          out.push({ name: null, adl: null, mailbox: name, host: null });
          inGroup = true;
        }
        break;
      case ',':
        flushMailbox();
        break;
      case ';':
        flushMailbox();
        if (inGroup) {
          out.push({ name: null, adl: null, mailbox: null, host: null });
          inGroup = false;
        }
        break;
      default: // '@' and a stray '>'
        phrase.push(t);
    }
  }
  flushMailbox();
  if (inGroup) out.push({ name: null, adl: null, mailbox: null, host: null });
  return out;
}

function formatAddresses(list: readonly ImapAddress[] | undefined): string {
  if (!list || list.length === 0) return 'NIL';
  // RFC 3501 9: env-from = "(" 1*address ")": no spaces between addresses.
  return `(${list.map((a) => formatList([nstring(a.name), nstring(a.adl), nstring(a.mailbox), nstring(a.host)])).join('')})`;
}

export function formatEnvelope(headers: readonly MimeHeader[]): string {
  const addrs = (name: string): ImapAddress[] | undefined => {
    const v = first(headers, name);
    if (v === undefined) return undefined;
    const list = parseAddressList(v);
    return list.length > 0 ? list : undefined;
  };
  const from = addrs('from');
  // RFC 3501 7.4.2: a missing or empty Sender/Reply-To is the From.
  const sender = addrs('sender') ?? from;
  const replyTo = addrs('reply-to') ?? from;
  return formatList([
    nstring(first(headers, 'date')),
    nstring(first(headers, 'subject')),
    formatAddresses(from),
    formatAddresses(sender),
    formatAddresses(replyTo),
    formatAddresses(addrs('to')),
    formatAddresses(addrs('cc')),
    formatAddresses(addrs('bcc')),
    nstring(first(headers, 'in-reply-to')),
    nstring(first(headers, 'message-id')),
  ]);
}

// --- BODY / BODYSTRUCTURE ---

function formatParams(params: MimeParams): string {
  if (params.length === 0) return 'NIL';
  return formatList(params.flatMap(([k, v]) => [quoteString(k), quoteString(v)]));
}

function formatDisposition(part: MimePart): string {
  const raw = first(part.headers, 'content-disposition');
  if (raw === undefined) return 'NIL';
  const d = parseStructured(raw);
  if (!TOKEN.test(d.value)) return 'NIL';
  return formatList([quoteString(d.value), formatParams(d.params)]);
}

function formatLanguage(part: MimePart): string {
  const raw = first(part.headers, 'content-language');
  if (raw === undefined) return 'NIL';
  const langs = stripComments(raw)
    .split(/[\s,]+/)
    .filter((l) => l !== '');
  return langs.length === 0 ? 'NIL' : formatList(langs.map((l) => quoteString(l)));
}

function encodingOf(part: MimePart): string {
  const raw = first(part.headers, 'content-transfer-encoding');
  const v = raw === undefined ? '' : stripComments(raw).trim().toLowerCase();
  return TOKEN.test(v) ? v : '7bit';
}

const EMPTY_PART = '"text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0';

export function formatBodyStructure(buf: Buffer, part: MimePart, extended: boolean): string {
  if (part.type === 'multipart') {
    const kids = part.children.length > 0 ? part.children.map((c) => `(${formatBodyStructure(buf, c, extended)})`).join('') : `(${EMPTY_PART}${extended ? ' NIL NIL NIL NIL' : ''})`;
    let s = `${kids} ${quoteString(part.subtype)}`;
    if (extended) s += ` ${formatParams(part.params)} ${formatDisposition(part)} ${formatLanguage(part)} ${nstring(first(part.headers, 'content-location'))}`;
    return s;
  }
  const text = part.type === 'text';
  let params = part.params;
  if (text && !params.some(([k]) => k === 'charset')) params = [...params, ['charset', 'us-ascii']];
  const { lines, bare } = countLines(buf, part.bodyStart, part.end);
  const size = part.end - part.bodyStart + bare;
  const fields = [
    quoteString(part.type),
    quoteString(part.subtype),
    formatParams(params),
    nstring(first(part.headers, 'content-id')),
    nstring(first(part.headers, 'content-description')),
    quoteString(encodingOf(part)),
    String(size),
  ];
  if (text) fields.push(String(lines));
  else if (part.message) {
    fields.push(formatEnvelope(part.message.headers), `(${formatBodyStructure(buf, part.message, extended)})`, String(lines));
  }
  if (extended) fields.push(nstring(first(part.headers, 'content-md5')), formatDisposition(part), formatLanguage(part), nstring(first(part.headers, 'content-location')));
  return fields.join(' ');
}

function hasAttachment(part: MimePart): boolean {
  if (part.type === 'multipart') return part.children.some(hasAttachment);
  const disp = first(part.headers, 'content-disposition');
  const d = disp === undefined ? undefined : parseStructured(disp);
  if (d?.value === 'attachment') return true;
  if (d?.value === 'inline') return false;
  const named = d?.params.some(([k]) => k.startsWith('filename')) || part.params.some(([k]) => k.startsWith('name'));
  if (named) return true;
  return part.message !== undefined;
}

const decode = (v: string | undefined): string => {
  if (v === undefined) return '';
  try {
    return libmime.decodeWords(v);
  } catch {
    return v;
  }
};

/** Everything FETCH needs about a message, from its bytes. Pure and synchronous. */
export function summarizeMessage(raw: Buffer): MessageSummary {
  const root = parseMime(raw);
  const h = root.headers;
  const total = countLines(raw, 0, raw.length);
  const dateHeader = first(h, 'date');
  const sent = dateHeader === undefined ? NaN : Date.parse(dateHeader.replace(/\s+\(.*\)\s*$/, ''));
  return {
    envelope: formatEnvelope(h),
    bodyStructure: `(${formatBodyStructure(raw, root, true)})`,
    body: `(${formatBodyStructure(raw, root, false)})`,
    rfc822Size: raw.length + total.bare,
    bareLf: total.bare > 0,
    headerBytes: root.bodyStart,
    sentDate: Number.isFinite(sent) ? sent : null,
    fields: {
      from: decode(first(h, 'from')),
      to: decode(first(h, 'to')),
      cc: decode(first(h, 'cc')),
      bcc: decode(first(h, 'bcc')),
      subject: decode(first(h, 'subject')),
      messageId: first(h, 'message-id') ?? '',
      inReplyTo: first(h, 'in-reply-to') ?? '',
      references: first(h, 'references') ?? '',
    },
    hasAttachments: hasAttachment(root),
  };
}

// --- the cache ---

/** The worker task module to list in `new WorkerPool({ taskModules: [...] })`. */
export const SUMMARY_TASK_MODULE = new URL('./worker-tasks.ts', import.meta.url).href;
/** Messages above this are parsed in a worker thread, so the event loop never stalls on one. */
export const WORKER_THRESHOLD = 256 * 1024;
/** Bump when the summary's content or format changes: older cached rows are recomputed. */
const FORMAT = 'v1:';
/** Messages read (and parsed) at once by warm(). */
const WARM_CONCURRENCY = 4;

export class SummaryProvider {
  readonly #log: Logger;
  readonly #pool: WorkerPool | undefined;
  readonly #inflight = new WeakMap<UserMailboxes, Map<string, Promise<MessageSummary | null>>>();

  constructor(opts: { log: Logger; pool?: WorkerPool }) {
    this.#log = opts.log;
    this.#pool = opts.pool;
  }

  /** The message's summary, from the index when cached, else parsed and cached; null if it vanished. */
  async get(mailboxes: UserMailboxes, folder: string, record: MessageRecord): Promise<MessageSummary | null> {
    const cached = this.#cached(mailboxes, folder, record);
    if (cached) return cached;
    let perUser = this.#inflight.get(mailboxes);
    if (!perUser) {
      perUser = new Map();
      this.#inflight.set(mailboxes, perUser);
    }
    const k = `${folder}\0${record.uid}`;
    let p = perUser.get(k);
    if (!p) {
      const map = perUser;
      p = this.#compute(mailboxes, folder, record).finally(() => map.delete(k));
      map.set(k, p);
    }
    return p;
  }

  /**
   * Fill the cache for many messages (after delivery or APPEND, before a big FETCH). Never
   * rejects, so it may run unawaited: a message that fails is logged and left for get().
   */
  async warm(mailboxes: UserMailboxes, folder: string, records: MessageRecord[]): Promise<void> {
    let todo: MessageRecord[];
    try {
      todo = records.filter((r) => !this.#cached(mailboxes, folder, r));
    } catch (err) {
      this.#log.warn({ folder, err: err instanceof Error ? err.message : String(err) }, 'summary warm-up skipped');
      return;
    }
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < todo.length) {
        const r = todo[next++];
        try {
          await this.get(mailboxes, folder, r);
        } catch (err) {
          this.#log.warn({ folder, uid: r.uid, err: err instanceof Error ? err.message : String(err) }, 'summary warm-up failed');
        }
        // Small messages parse on this thread: let other connections in between them.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    };
    await Promise.all(Array.from({ length: Math.min(WARM_CONCURRENCY, todo.length) }, lane));
  }

  #cached(mailboxes: UserMailboxes, folder: string, record: MessageRecord): MessageSummary | undefined {
    const data = mailboxes.cachedSummary(folder, record.uid, record.key);
    if (data === undefined || !data.startsWith(FORMAT)) return undefined;
    try {
      return JSON.parse(data.slice(FORMAT.length)) as MessageSummary;
    } catch {
      return undefined;
    }
  }

  async #compute(mailboxes: UserMailboxes, folder: string, record: MessageRecord): Promise<MessageSummary | null> {
    const raw = await mailboxes.readMessage(folder, record.uid);
    if (raw === null) return null;
    let summary: MessageSummary;
    if (this.#pool && raw.length > WORKER_THRESHOLD) {
      // Move the bytes, not copy them: a file of its own ArrayBuffer can be transferred as is.
      const own = raw.byteOffset === 0 && raw.buffer.byteLength === raw.length && raw.buffer instanceof ArrayBuffer;
      const ab = own ? (raw.buffer as ArrayBuffer) : raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length);
      summary = await this.#pool.run<MessageSummary>('summarize', ab, { transfer: [ab as ArrayBuffer] });
    } else {
      summary = summarizeMessage(raw);
    }
    try {
      mailboxes.storeSummaries(folder, [{ uid: record.uid, key: record.key, data: FORMAT + JSON.stringify(summary) }]);
    } catch (err) {
      // The summary is still right; only the cache missed a write (index closed, disk full).
      this.#log.warn({ folder, uid: record.uid, err: err instanceof Error ? err.message : String(err) }, 'summary not cached');
    }
    return summary;
  }
}
