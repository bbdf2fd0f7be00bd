// BODY[section]<partial> contents (RFC 3501 6.4.5): cut from the stored bytes along the MIME tree
// of message-info.ts, always with CRLF line ends. A part that does not exist is empty, as Dovecot
// and most servers answer, rather than an error that would fail the whole FETCH.
import type { FetchSection } from './fetch-parse.ts';
import { parseMime } from '../store/mime.ts';
import type { MimePart } from '../store/mime.ts';

const LF = 0x0a;
const CR = 0x0d;
const EMPTY = Buffer.alloc(0);
const CRLF = Buffer.from('\r\n');

/** Bare LF -> CRLF (files written by mutt, procmail); returns `data` itself when nothing changes. */
export function toCrlf(data: Buffer): Buffer {
  let bare = 0;
  for (let i = data.indexOf(LF); i >= 0; i = data.indexOf(LF, i + 1)) if (i === 0 || data[i - 1] !== CR) bare++;
  if (bare === 0) return data;
  const out = Buffer.allocUnsafe(data.length + bare);
  let o = 0;
  let from = 0;
  for (let i = data.indexOf(LF); i >= 0; i = data.indexOf(LF, i + 1)) {
    if (i > 0 && data[i - 1] === CR) continue;
    o += data.copy(out, o, from, i);
    out[o++] = CR;
    out[o++] = LF;
    from = i + 1;
  }
  o += data.copy(out, o, from);
  return out;
}

/** `<start.length>`: octets from start, at most length; empty when start is past the end. */
export function applyPartial(data: Buffer, partial?: { start: number; length: number }): Buffer {
  if (!partial) return data;
  if (partial.start >= data.length) return EMPTY;
  return data.subarray(partial.start, Math.min(data.length, partial.start + partial.length));
}

/**
 * The part a section's numbers name (RFC 3501 6.4.5): in a multipart, its n-th child; in a
 * message (the top one, or a message/rfc822 part), the parts of its body, where a body that is
 * not multipart is part 1. Null if there is no such part.
 */
function resolvePart(root: MimePart, path: readonly number[]): MimePart | null {
  let node: MimePart | null = null;
  for (const n of path) {
    const container: MimePart = node === null ? root : (node.message ?? node);
    const isMessage = node === null || node.message !== undefined;
    if (container.type === 'multipart') node = container.children[n - 1] ?? null;
    else if (isMessage && n === 1) node = container;
    else return null;
    if (node === null) return null;
  }
  return node;
}

/** Header lines (with their continuation lines) whose names are (or, with `not`, are not) listed. */
function filterHeader(block: Buffer, names: readonly string[], not: boolean): Buffer {
  const wanted = new Set(names.map((n) => n.toLowerCase()));
  const keep: Buffer[] = [];
  let pos = 0;
  let keeping = false;
  while (pos < block.length) {
    const nl = block.indexOf(LF, pos);
    const lineEnd = nl < 0 ? block.length : nl + 1;
    const line = block.subarray(pos, lineEnd);
    const blank = line.length === 0 || line[0] === LF || (line[0] === CR && line[1] === LF);
    if (blank) break;
    if (line[0] === 0x20 || line[0] === 0x09) {
      if (keeping) keep.push(line);
    } else {
      const colon = line.indexOf(0x3a);
      const name = colon > 0 ? line.subarray(0, colon).toString('latin1').trim().toLowerCase() : '';
      keeping = name !== '' && wanted.has(name) !== not;
      if (keeping) keep.push(line);
    }
    pos = lineEnd;
  }
  // The last kept field may lack its line end (a header without a body); the blank line follows.
  const out = toCrlf(Buffer.concat(keep));
  const ended = out.length === 0 || out[out.length - 1] === LF;
  return Buffer.concat(ended ? [out, CRLF] : [out, CRLF, CRLF]);
}

/** A header block as sent (CRLF), with its blank line when the stored one has one. */
function headerBlock(raw: Buffer, part: MimePart): Buffer {
  return toCrlf(raw.subarray(part.start, part.bodyStart));
}

/** BODY[section] contents, CRLF line ends; empty for a part that does not exist. */
export function extractSection(raw: Buffer, section: FetchSection, tree?: MimePart): Buffer {
  const root = tree ?? parseMime(raw);
  if (section.part.length === 0) {
    switch (section.text) {
      case undefined:
        return toCrlf(raw);
      case 'HEADER':
        return headerBlock(raw, root);
      case 'HEADER.FIELDS':
      case 'HEADER.FIELDS.NOT':
        return filterHeader(raw.subarray(root.start, root.bodyStart), section.fields ?? [], section.text === 'HEADER.FIELDS.NOT');
      case 'TEXT':
        return toCrlf(raw.subarray(root.bodyStart, root.end));
      default:
        return EMPTY; // MIME needs a part number (the parser refuses it anyway)
    }
  }
  const part = resolvePart(root, section.part);
  if (part === null) return EMPTY;
  switch (section.text) {
    case undefined:
      return toCrlf(raw.subarray(part.bodyStart, part.end));
    case 'MIME':
      return headerBlock(raw, part);
    default: {
      // HEADER/TEXT after part numbers: only of an encapsulated message (RFC 3501 6.4.5).
      const msg = part.message;
      if (!msg) return EMPTY;
      if (section.text === 'HEADER') return headerBlock(raw, msg);
      if (section.text === 'TEXT') return toCrlf(raw.subarray(msg.bodyStart, msg.end));
      return filterHeader(raw.subarray(msg.start, msg.bodyStart), section.fields ?? [], section.text === 'HEADER.FIELDS.NOT');
    }
  }
}
