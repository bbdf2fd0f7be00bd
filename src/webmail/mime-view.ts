// What the webmail shows of one message: its headers as addresses, the plain text and HTML
// bodies chosen from the MIME tree, and the rest as attachments numbered as IMAP numbers parts
// (RFC 3501 6.4.5), so `parts/2.1` means the same part as BODY[2.1]. The tree comes from the
// IMAP layer's MIME walker (message-info.ts, pure and offset-based); decoding of transfer
// encodings and charsets happens here, only for the parts actually shown or downloaded.
import libmime from 'libmime';
import { decode as decodeCharset } from 'libmime/lib/charset.js';
import { decode as decodeQp } from 'libqp';
import { decode as decodeBase64 } from 'libbase64';
import addressparser from 'nodemailer/lib/addressparser';
import { parseMime } from '../store/mime.ts';
import type { MimeHeader, MimePart } from '../store/mime.ts';
import { htmlToText } from '../store/fulltext.ts';
import type { Address, Attachment } from './api-types.ts';

/** A part number as the API accepts it: `1`, `2.1`, … (no zero, no sign, bounded depth). */
export const PART_NUMBER = /^[1-9]\d{0,3}(?:\.[1-9]\d{0,3}){0,15}$/;

const utf8Strict = new TextDecoder('utf-8', { fatal: true });
const utf8Loose = new TextDecoder('utf-8');

export function header(headers: readonly MimeHeader[], name: string): string | undefined {
  for (const h of headers) if (h.name === name) return h.value;
  return undefined;
}

export function decodeWords(value: string): string {
  try {
    return libmime.decodeWords(value);
  } catch {
    return value;
  }
}

type Parsed = { name?: string; address?: string; group?: Parsed[] };

/** An address header into `{ name, address }` items (groups flattened), names RFC 2047-decoded. */
export function parseAddresses(value: string | undefined): Address[] {
  if (!value) return [];
  let list: Parsed[];
  try {
    list = addressparser(value) as Parsed[];
  } catch {
    return [];
  }
  const out: Address[] = [];
  const walk = (items: Parsed[]): void => {
    for (const a of items) {
      if (a.group) walk(a.group);
      else if (a.address || a.name) out.push({ name: decodeWords(a.name ?? ''), address: a.address ?? '' });
    }
  };
  walk(list);
  return out.slice(0, 500);
}

/** `<a@b> <c@d>` into ['<a@b>', '<c@d>']. */
export function messageIds(value: string | undefined): string[] {
  if (!value) return [];
  return value.match(/<[^<>\s]+>/g)?.slice(0, 200) ?? [];
}

function param(part: MimePart, name: string): string | undefined {
  return part.params.find(([k]) => k === name)?.[1];
}

/** RFC 2231 `charset'lang'%xx` into text. */
function decode2231(value: string): string {
  const m = /^([^']*)'[^']*'(.*)$/.exec(value);
  if (!m) return value;
  const bytes = Buffer.from(m[2].replace(/%([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
  return decodeText(bytes, m[1] || 'utf-8');
}

function disposition(part: MimePart): { value: string; filename?: string } {
  const raw = header(part.headers, 'content-disposition');
  if (raw === undefined) return { value: '' };
  let parsed: { value: string; params: Record<string, string> };
  try {
    parsed = libmime.parseHeaderValue(raw) as { value: string; params: Record<string, string> };
  } catch {
    return { value: '' };
  }
  // libmime joins RFC 2231 continuations and decodes the charset for us.
  const filename = parsed.params?.filename;
  return { value: String(parsed.value ?? '').trim().toLowerCase(), filename: filename ? decodeWords(String(filename)) : undefined };
}

/** The name a part asks to be saved as (Content-Disposition filename, else Content-Type name), decoded. */
function partFilename(part: MimePart): string | undefined {
  const d = disposition(part).filename;
  if (d) return d;
  const ext = param(part, 'name*');
  if (ext !== undefined) return decode2231(ext);
  const name = param(part, 'name');
  return name ? decodeWords(name) : undefined;
}

export function decodeText(buf: Uint8Array, charset: string | undefined): string {
  const cs = (charset ?? '').trim().toLowerCase();
  if (cs === 'utf-8' || cs === 'utf8') return utf8Loose.decode(buf);
  if (cs === '' || cs === 'us-ascii' || cs === 'ascii') {
    try {
      return utf8Strict.decode(buf);
    } catch {
      return Buffer.from(buf).toString('latin1');
    }
  }
  try {
    return decodeCharset(Buffer.from(buf), cs);
  } catch {
    return utf8Loose.decode(buf);
  }
}

/** The part's body with its Content-Transfer-Encoding undone. */
export function decodedBody(raw: Buffer, part: MimePart): Buffer {
  const body = raw.subarray(part.bodyStart, part.end);
  const cte = (header(part.headers, 'content-transfer-encoding') ?? '').trim().toLowerCase();
  if (cte === 'base64') return decodeBase64(body.toString('latin1'));
  if (cte === 'quoted-printable') return decodeQp(body);
  return Buffer.from(body);
}

function partText(raw: Buffer, part: MimePart): string {
  let text = decodeText(decodedBody(raw, part), param(part, 'charset'));
  if (part.subtype === 'plain' && (param(part, 'format') ?? '').toLowerCase() === 'flowed') {
    text = libmime.decodeFlowed(text, (param(part, 'delsp') ?? '').toLowerCase() === 'yes');
  }
  return text;
}

type Leaf = { number: string; part: MimePart };

/** Leaves (and message/rfc822 parts, not descended into) with their IMAP part numbers. */
function leaves(root: MimePart): Leaf[] {
  const out: Leaf[] = [];
  const walk = (p: MimePart, num: string): void => {
    if (p.type === 'multipart') {
      p.children.forEach((c, i) => walk(c, num ? `${num}.${i + 1}` : `${i + 1}`));
      return;
    }
    out.push({ number: num || '1', part: p });
  };
  walk(root, '');
  return out;
}

/** The part with this number, or undefined. */
export function findPart(root: MimePart, number: string): MimePart | undefined {
  if (!PART_NUMBER.test(number)) return undefined;
  let cur: MimePart = root;
  const steps = number.split('.').map(Number);
  for (let i = 0; i < steps.length; i++) {
    const n = steps[i];
    if (cur.type === 'multipart') {
      cur = cur.children[n - 1];
      if (cur === undefined) return undefined;
    } else if (cur.message && i > 0) {
      // Inside an encapsulated message: its body is numbered like a top-level one.
      const inner: MimePart = cur.message;
      if (inner.type === 'multipart') {
        cur = inner.children[n - 1];
        if (cur === undefined) return undefined;
      } else if (n === 1) cur = inner;
      else return undefined;
    } else if (i === 0 && n === 1 && cur.type !== 'multipart') {
      // A single-part message: its body is part 1.
    } else return undefined;
  }
  return cur;
}

function isAttachmentLike(part: MimePart): boolean {
  const d = disposition(part);
  if (d.value === 'attachment') return true;
  if (part.type === 'message') return true;
  if (part.type === 'text' && (part.subtype === 'plain' || part.subtype === 'html')) return d.filename !== undefined && d.value !== 'inline';
  return true;
}

/** Body parts chosen for one mode: text/plain or text/html (multipart/alternative picks one child). */
function bodyParts(root: MimePart, want: 'plain' | 'html'): Array<{ number: string; part: MimePart }> {
  const out: Array<{ number: string; part: MimePart }> = [];
  const has = (p: MimePart, sub: string): boolean =>
    p.type === 'multipart' ? p.children.some((c) => has(c, sub)) : p.type === 'text' && p.subtype === sub && !isAttachmentLike(p);
  const walk = (p: MimePart, num: string): void => {
    if (p.type === 'multipart') {
      const number = (i: number): string => (num ? `${num}.${i + 1}` : `${i + 1}`);
      if (p.subtype === 'alternative') {
        // The last alternative is the richest (RFC 2046 5.1.4); take the last one of the wanted kind.
        for (let i = p.children.length - 1; i >= 0; i--) {
          if (has(p.children[i], want)) return walk(p.children[i], number(i));
        }
        return;
      }
      if (p.subtype === 'related') {
        // The root (first part by default) is the body; the others are what it refers to.
        if (p.children.length > 0) walk(p.children[0], number(0));
        return;
      }
      p.children.forEach((c, i) => walk(c, number(i)));
      return;
    }
    if (p.type === 'text' && p.subtype === want && !isAttachmentLike(p)) out.push({ number: num || '1', part: p });
  };
  walk(root, '');
  return out;
}

export type ParsedMessage = {
  root: MimePart;
  headers: MimeHeader[];
  text: string;
  html: string;
  attachments: Attachment[];
  /** Content-ID (without <>) → part number, for cid: URLs. */
  cids: Map<string, string>;
};

export function parseMessage(raw: Buffer): ParsedMessage {
  const root = parseMime(raw);
  const plain = bodyParts(root, 'plain');
  const html = bodyParts(root, 'html');
  const used = new Set([...plain, ...html].map((p) => p.number));
  const htmlText = html.map((p) => partText(raw, p.part)).join('\n');
  let text = plain.map((p) => partText(raw, p.part)).join('\n\n');
  if (text === '' && htmlText !== '') text = htmlToText(htmlText).replace(/\n{3,}/g, '\n\n').trim();
  const attachments: Attachment[] = [];
  const cids = new Map<string, string>();
  for (const leaf of leaves(root)) {
    if (used.has(leaf.number)) continue;
    const p = leaf.part;
    const contentType = `${p.type}/${p.subtype}`;
    const cidRaw = header(p.headers, 'content-id');
    const contentId = cidRaw ? cidRaw.trim().replace(/^<|>$/g, '') : undefined;
    if (contentId) cids.set(contentId, leaf.number);
    const encoded = p.end - p.bodyStart;
    const cte = (header(p.headers, 'content-transfer-encoding') ?? '').trim().toLowerCase();
    const size = cte === 'base64' ? Math.floor((encoded * 3) / 4 * 0.987) : encoded;
    const d = disposition(p);
    const a: Attachment = {
      part: leaf.number,
      filename: safeFilename(partFilename(p) ?? defaultName(p, leaf.number)),
      contentType,
      size,
      inline: d.value === 'inline' || (d.value === '' && contentId !== undefined && p.type === 'image'),
    };
    if (contentId) a.contentId = contentId;
    attachments.push(a);
  }
  return { root, headers: root.headers, text, html: htmlText, attachments, cids };
}

function defaultName(part: MimePart, number: string): string {
  if (part.type === 'message') {
    const subject = part.message ? decodeWords(header(part.message.headers, 'subject') ?? '') : '';
    return `${subject || 'message'}.eml`;
  }
  const ext: Record<string, string> = { 'image/png': 'png', 'image/jpeg': 'jpg', 'image/gif': 'gif', 'text/plain': 'txt', 'text/html': 'html', 'application/pdf': 'pdf', 'text/calendar': 'ics' };
  return `part-${number}.${ext[`${part.type}/${part.subtype}`] ?? 'bin'}`;
}

/**
 * A file name that is only a name: the last path component, no control characters, no leading
 * dots, at most 200 characters. Never used as a path here; the browser gets it as a suggestion.
 */
export function safeFilename(name: string): string {
  let n = name.normalize('NFC').replace(/[\u0000-\u001f\u007f-\u009f]/g, '');
  n = n.split(/[/\\]/).pop() ?? '';
  n = n.replace(/^[.\s]+/, '').replace(/[\s.]+$/, '').replace(/[<>:"|?*]/g, '_');
  if (n.length > 200) n = n.slice(0, 200);
  return n || 'attachment';
}

/** Content-Disposition per RFC 6266 with an ASCII fallback and the RFC 5987 UTF-8 form. */
export function contentDisposition(kind: 'attachment' | 'inline', filename: string): string {
  const name = safeFilename(filename);
  const ascii = name.replace(/[^\x20-\x7e]/g, '_').replace(/["\\%]/g, '_');
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `${kind}; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

export type PartContent = { body: Buffer; contentType: string; charset?: string; filename: string };

/** A part's decoded bytes and what it says it is; undefined for a number that is not a part. */
export function partContent(raw: Buffer, root: MimePart, number: string): PartContent | undefined {
  const part = findPart(root, number);
  if (!part || part.type === 'multipart') return undefined;
  const body = decodedBody(raw, part);
  return {
    body,
    contentType: `${part.type}/${part.subtype}`,
    charset: param(part, 'charset'),
    filename: safeFilename(partFilename(part) ?? defaultName(part, number)),
  };
}
