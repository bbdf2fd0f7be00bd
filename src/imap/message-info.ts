// What FETCH says about a message's content without sending it (RFC 3501 6.4.5, 7.4.2): ENVELOPE,
// BODY and BODYSTRUCTURE, RFC822.SIZE, plus the decoded header text SEARCH and the webmail need,
// from the part tree of ../store/mime.ts (also what fetch-body.ts cuts BODY[section] from).
// Output follows Dovecot's, so clients that were tested against
// it (Thunderbird, imapflow, mutt) read it the same way: lower-case types as written, the default
// ("charset" "us-ascii") on text parts, "7bit" when the encoding is missing or not a token, and
// sizes and line counts as if every line ended in CRLF (what the client receives).
// A summary is computed once per message and kept in the user's index (SummaryProvider).
import libmime from 'libmime';
import type { Logger } from '../core/log.ts';
import type { WorkerPool } from '../core/workers.ts';
import type { MessageRecord, UserMailboxes } from '../store/mailboxes.ts';
import { formatList, nstring, quoteString } from './format.ts';
import { countLines, firstHeader, parseMime, parseStructured, stripComments, TOKEN } from '../store/mime.ts';
import type { MimeHeader, MimeParams, MimePart } from '../store/mime.ts';

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
    const v = firstHeader(headers, name);
    if (v === undefined) return undefined;
    const list = parseAddressList(v);
    return list.length > 0 ? list : undefined;
  };
  const from = addrs('from');
  // RFC 3501 7.4.2: a missing or empty Sender/Reply-To is the From.
  const sender = addrs('sender') ?? from;
  const replyTo = addrs('reply-to') ?? from;
  return formatList([
    nstring(firstHeader(headers, 'date')),
    nstring(firstHeader(headers, 'subject')),
    formatAddresses(from),
    formatAddresses(sender),
    formatAddresses(replyTo),
    formatAddresses(addrs('to')),
    formatAddresses(addrs('cc')),
    formatAddresses(addrs('bcc')),
    nstring(firstHeader(headers, 'in-reply-to')),
    nstring(firstHeader(headers, 'message-id')),
  ]);
}

// --- BODY / BODYSTRUCTURE ---

function formatParams(params: MimeParams): string {
  if (params.length === 0) return 'NIL';
  return formatList(params.flatMap(([k, v]) => [quoteString(k), quoteString(v)]));
}

function formatDisposition(part: MimePart): string {
  const raw = firstHeader(part.headers, 'content-disposition');
  if (raw === undefined) return 'NIL';
  const d = parseStructured(raw);
  if (!TOKEN.test(d.value)) return 'NIL';
  return formatList([quoteString(d.value), formatParams(d.params)]);
}

function formatLanguage(part: MimePart): string {
  const raw = firstHeader(part.headers, 'content-language');
  if (raw === undefined) return 'NIL';
  const langs = stripComments(raw)
    .split(/[\s,]+/)
    .filter((l) => l !== '');
  return langs.length === 0 ? 'NIL' : formatList(langs.map((l) => quoteString(l)));
}

function encodingOf(part: MimePart): string {
  const raw = firstHeader(part.headers, 'content-transfer-encoding');
  const v = raw === undefined ? '' : stripComments(raw).trim().toLowerCase();
  return TOKEN.test(v) ? v : '7bit';
}

const EMPTY_PART = '"text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0';

export function formatBodyStructure(buf: Buffer, part: MimePart, extended: boolean): string {
  if (part.type === 'multipart') {
    const kids = part.children.length > 0 ? part.children.map((c) => `(${formatBodyStructure(buf, c, extended)})`).join('') : `(${EMPTY_PART}${extended ? ' NIL NIL NIL NIL' : ''})`;
    let s = `${kids} ${quoteString(part.subtype)}`;
    if (extended) s += ` ${formatParams(part.params)} ${formatDisposition(part)} ${formatLanguage(part)} ${nstring(firstHeader(part.headers, 'content-location'))}`;
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
    nstring(firstHeader(part.headers, 'content-id')),
    nstring(firstHeader(part.headers, 'content-description')),
    quoteString(encodingOf(part)),
    String(size),
  ];
  if (text) fields.push(String(lines));
  else if (part.message) {
    fields.push(formatEnvelope(part.message.headers), `(${formatBodyStructure(buf, part.message, extended)})`, String(lines));
  }
  if (extended) fields.push(nstring(firstHeader(part.headers, 'content-md5')), formatDisposition(part), formatLanguage(part), nstring(firstHeader(part.headers, 'content-location')));
  return fields.join(' ');
}

function hasAttachment(part: MimePart): boolean {
  if (part.type === 'multipart') return part.children.some(hasAttachment);
  const disp = firstHeader(part.headers, 'content-disposition');
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
  const dateHeader = firstHeader(h, 'date');
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
      from: decode(firstHeader(h, 'from')),
      to: decode(firstHeader(h, 'to')),
      cc: decode(firstHeader(h, 'cc')),
      bcc: decode(firstHeader(h, 'bcc')),
      subject: decode(firstHeader(h, 'subject')),
      messageId: firstHeader(h, 'message-id') ?? '',
      inReplyTo: firstHeader(h, 'in-reply-to') ?? '',
      references: firstHeader(h, 'references') ?? '',
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
