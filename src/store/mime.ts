// The MIME tree of a stored message, read from its raw bytes without decoding any body: each
// entity's header fields (unfolded, RFC 2047 words left as they are), its content type and
// parameters (RFC 2045, RFC 2231 continuations), and byte offsets of its header, body and
// children, so callers can cut a part without parsing again. IMAP (FETCH BODY[section],
// BODYSTRUCTURE, SEARCH) and the webmail's reader share it.
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

export function firstHeader(headers: readonly MimeHeader[], name: string): string | undefined {
  for (const h of headers) if (h.name === name) return h.value;
  return undefined;
}

/** Remove RFC 5322 comments (nesting, quoted strings respected). */
export function stripComments(s: string): string {
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

export const TOKEN = /^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$/;

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
export function countLines(buf: Buffer, start: number, end: number): { lines: number; bare: number } {
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
  const ct = firstHeader(headers, 'content-type');
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
