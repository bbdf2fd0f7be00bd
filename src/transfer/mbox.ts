// The mbox format, both ways, as pure functions over bytes: splitting a stream into messages at
// `From ` separator lines, undoing `>From ` quoting (mboxrd and mboxo), reading flags from the
// Status/X-Status/X-Mozilla-Status/X-Keywords headers mail programs keep in mbox files, and the
// reverse for export (mboxrd quoting, Status headers, a ctime date on the separator line).
// No files and no store here: import.ts and export.ts do the I/O.
//
// References: RFC 4155 (application/mbox), the mboxrd/mboxo write-ups by Rahul Dhesi and in
// qmail's mbox(5), Mozilla's nsMsgMessageFlags.h for X-Mozilla-Status.
import { HearthError } from '../core/errors.ts';
import { splitFlags } from '../store/flags.ts';

export type MboxQuoting = 'mboxrd' | 'mboxo';

/** One message as found in the file: its separator line, where it started, and its lines. */
export type RawMboxMessage = {
  /** 1-based position in the file. */
  index: number;
  /** Byte offset of the separator line. */
  offset: number;
  /** The `From ` line, without its line ending. */
  fromLine: string;
  /** Lines after the separator, without line endings, `>From ` quoting still in place. Null when too large. */
  lines: Buffer[] | null;
  /** Bytes of the lines (with one terminator each), counted even when `lines` was dropped. */
  bytes: number;
};

export type ParsedMboxMessage =
  | { ok: true; content: Buffer; flags: string[]; internalDate: Date | undefined; messageId: string | undefined }
  | { ok: false; reason: string };

const FROM = Buffer.from('From ');
const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
// asctime/ctime as mbox writers put it, with the variants seen in the wild: an optional weekday,
// a zone before or after the year (Gmail Takeout: `Mon Jan 01 00:00:00 +0000 2019`), no seconds.
const FROM_DATE =
  /(?:(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*,?\s+)?(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\s+(\d{1,2})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s+(?:([+-]\d{4}|[a-z]{1,5})\s+)?(\d{4})(?:\s+([+-]\d{4}))?/i;

/** The date of a `From ` separator line (UTC unless it carries an offset), or undefined. */
export function parseFromLineDate(line: string): Date | undefined {
  const m = FROM_DATE.exec(line);
  if (!m) return undefined;
  const [, mon, day, hh, mm, ss, zone1, year, zone2] = m;
  const zone = [zone1, zone2].find((z) => z !== undefined && /^[+-]\d{4}$/.test(z));
  let ms = Date.UTC(Number(year), MONTHS.indexOf(mon.toLowerCase()), Number(day), Number(hh), Number(mm), Number(ss ?? 0));
  if (zone) {
    const sign = zone[0] === '-' ? -1 : 1;
    ms -= sign * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(3, 5))) * 60_000;
  }
  return Number.isFinite(ms) ? new Date(ms) : undefined;
}

/**
 * Whether a line is a message separator. RFC 4155 says only that it starts with `From `; since
 * mboxo writers leave body lines like "From here on…" unquoted, hearth also wants a date on it,
 * and (checked by the caller) a blank line or the start of the file before it.
 */
export function isSeparatorLine(line: Buffer): boolean {
  if (line.length < 10 || line.compare(FROM, 0, 5, 0, 5) !== 0) return false;
  return parseFromLineDate(line.toString('latin1')) !== undefined;
}

/**
 * Split an mbox byte stream into messages, holding one message at a time (never the file).
 * A message over `maxBytes` is still consumed but handed out with `lines: null`. Throws
 * MBOX_NOT_MBOX if the first non-blank line is not a separator.
 */
export async function* splitMbox(source: AsyncIterable<Uint8Array>, opts: { maxBytes?: number; onBytes?: (n: number) => void } = {}): AsyncGenerator<RawMboxMessage> {
  const maxBytes = opts.maxBytes ?? Number.POSITIVE_INFINITY;
  let current: RawMboxMessage | undefined;
  let heldBlank = false; // a blank line that may be the separator's (not the message's)
  let lastWasBlank = true; // start of file counts as "after a blank line"
  let offset = 0;
  let index = 0;
  let carry: Buffer | undefined;

  const addLine = (msg: RawMboxMessage, line: Buffer): void => {
    msg.bytes += line.length + 1;
    if (msg.lines === null) return;
    if (msg.bytes > maxBytes) {
      msg.lines = null;
      return;
    }
    msg.lines.push(line);
  };
  // Returns a finished message when `line` starts the next one.
  const onLine = (line: Buffer, lineOffset: number): RawMboxMessage | undefined => {
    if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
    if (lastWasBlank && line[0] === 0x46 /* F */ && isSeparatorLine(line)) {
      const done = current;
      index += 1;
      current = { index, offset: lineOffset, fromLine: line.toString('latin1'), lines: [], bytes: 0 };
      heldBlank = false;
      lastWasBlank = false;
      return done;
    }
    if (!current) {
      if (line.length === 0) return undefined;
      throw new TransferError('MBOX_NOT_MBOX', `not an mbox file: the first line does not start with "From " and a date (it starts ${JSON.stringify(line.subarray(0, 40).toString('latin1'))})`);
    }
    if (heldBlank) addLine(current, Buffer.alloc(0));
    heldBlank = line.length === 0;
    lastWasBlank = heldBlank;
    if (!heldBlank) addLine(current, Buffer.from(line)); // copy: a slice would pin the 64 KiB chunk
    return undefined;
  };

  for await (const chunk of source) {
    let buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    opts.onBytes?.(buf.length);
    const base = offset - (carry?.length ?? 0);
    if (carry) buf = Buffer.concat([carry, buf]);
    carry = undefined;
    let start = 0;
    for (let nl = buf.indexOf(0x0a); nl >= 0; nl = buf.indexOf(0x0a, start)) {
      const done = onLine(buf.subarray(start, nl), base + start);
      if (done) yield done;
      start = nl + 1;
    }
    offset += chunk.byteLength;
    if (start < buf.length) carry = Buffer.from(buf.subarray(start));
  }
  if (carry && carry.length > 0) {
    const done = onLine(carry, offset - carry.length);
    if (done) yield done;
  }
  // A trailing blank line is the separator's, as between messages.
  if (current) yield current;
}

/** Header fields mail programs keep in mbox files for their own use; dropped on import, as Dovecot hides them. */
const MBOX_METADATA = new Set(['status', 'x-status', 'x-keywords', 'x-mozilla-status', 'x-mozilla-status2', 'x-mozilla-keys', 'x-uid', 'x-imap', 'x-imapbase']);
const HEADER_FIELD = /^([\x21-\x39\x3b-\x7e]+)[ \t]*:/;
const GT_FROM = /^>+From /;
const CRLF = Buffer.from('\r\n');

/** Mozilla's nsMsgMessageFlags: Read, Replied, Marked, Expunged, Forwarded. */
const MOZILLA_FLAGS: Array<[number, string]> = [
  [0x0001, '\\Seen'],
  [0x0002, '\\Answered'],
  [0x0004, '\\Flagged'],
  [0x0008, '\\Deleted'],
  [0x1000, '$Forwarded'],
];

/**
 * Turn a raw message into what the store keeps: quoting undone, mbox metadata headers removed
 * (their flags returned instead), every line ending CRLF. A message that is empty, too large or
 * does not start with a header field is broken: `{ ok: false, reason }`.
 */
export function parseMboxMessage(raw: RawMboxMessage, quoting: MboxQuoting): ParsedMboxMessage {
  if (raw.lines === null) return { ok: false, reason: `too large (${raw.bytes} bytes)` };
  const lines = raw.lines;
  if (lines.length === 0 || (lines.length === 1 && lines[0].length === 0)) return { ok: false, reason: 'empty message' };
  const first = lines[0].toString('latin1');
  if (!HEADER_FIELD.test(first)) return { ok: false, reason: `does not start with a header field (${JSON.stringify(first.slice(0, 40))})` };

  const flags = new Set<string>();
  let messageId: string | undefined;
  const out: Buffer[] = [];
  let inHeader = true;
  // A metadata header being dropped, gathered with its folded lines before its flags are read.
  let dropping: { name: string; value: string } | undefined;
  const flushDropped = () => {
    if (dropping) flagsFromHeader(dropping.name, dropping.value.trim(), flags);
    dropping = undefined;
  };
  for (const lineIn of lines) {
    let line = lineIn;
    if (inHeader) {
      if (line.length === 0) {
        flushDropped();
        inHeader = false;
      } else if (line[0] === 0x20 || line[0] === 0x09) {
        if (dropping) {
          dropping.value += ' ' + line.toString('latin1').trim();
          continue;
        }
      } else {
        flushDropped();
        const text = line.toString('latin1');
        const m = HEADER_FIELD.exec(text);
        const name = m?.[1].toLowerCase();
        if (name !== undefined && MBOX_METADATA.has(name)) {
          dropping = { name, value: text.slice(text.indexOf(':') + 1) };
          continue;
        }
        if (name === 'message-id' && messageId === undefined) messageId = text.slice(text.indexOf(':') + 1).trim();
      }
    }
    if (line[0] === 0x3e /* > */ && unquote(line, quoting)) line = line.subarray(1);
    out.push(line, CRLF);
  }
  flushDropped();
  let valid: string[];
  try {
    valid = [...flags];
    splitFlags(valid);
  } catch {
    valid = [...flags].filter((f) => {
      try {
        splitFlags([f]);
        return true;
      } catch {
        return false;
      }
    });
  }
  return { ok: true, content: Buffer.concat(out), flags: valid, internalDate: parseFromLineDate(raw.fromLine), messageId };
}

function unquote(line: Buffer, quoting: MboxQuoting): boolean {
  const head = line.subarray(0, Math.min(line.length, 80)).toString('latin1');
  if (quoting === 'mboxo') return head.startsWith('>From ');
  return GT_FROM.test(head);
}

function flagsFromHeader(name: string, value: string, flags: Set<string>): void {
  if (name === 'status') {
    if (value.includes('R')) flags.add('\\Seen');
  } else if (name === 'x-status') {
    if (value.includes('A')) flags.add('\\Answered');
    if (value.includes('F')) flags.add('\\Flagged');
    if (value.includes('T')) flags.add('\\Draft');
    if (value.includes('D')) flags.add('\\Deleted');
  } else if (name === 'x-mozilla-status') {
    const bits = Number.parseInt(value, 16);
    if (Number.isFinite(bits)) for (const [bit, flag] of MOZILLA_FLAGS) if (bits & bit) flags.add(flag);
  } else if (name === 'x-keywords' || name === 'x-mozilla-keys') {
    for (const word of value.split(/[\s,]+/)) if (word && !word.startsWith('\\')) flags.add(word);
  }
}

// --- export ---

/** `Thu Jan  1 00:00:00 1970`: ctime(3) in UTC, as the separator line carries it. */
export function ctimeUtc(date: Date): string {
  const d = date;
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[d.getUTCDay()]} ${MONTHS[d.getUTCMonth()].replace(/^./, (c) => c.toUpperCase())} ${String(d.getUTCDate()).padStart(2, ' ')} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} ${d.getUTCFullYear()}`;
}

/** The envelope sender for the separator line: Return-Path's address, else MAILER-DAEMON. */
function envelopeSender(header: string): string {
  const m = /^return-path:[ \t]*<?([^\s<>]*)>?/im.exec(header);
  const addr = m?.[1];
  return addr && /^[^\s"]+$/.test(addr) ? addr : 'MAILER-DAEMON';
}

/**
 * One message as mboxrd: separator line, headers with Status/X-Status/X-Keywords for its flags
 * (replacing any it had), body with `>*From ` lines quoted once more, LF line endings, and the
 * blank line that ends it.
 */
export function formatMboxMessage(content: Buffer, flags: readonly string[], internalDate: Date): Buffer {
  const text = content.toString('latin1');
  const bodyAt = findBodyStart(text);
  const header = text.slice(0, bodyAt.headerEnd);
  const headerLines = header.split(/\r?\n/).filter((l, i, all) => !(i === all.length - 1 && l === ''));
  const kept: string[] = [];
  let dropping = false;
  for (const l of headerLines) {
    if (l.startsWith(' ') || l.startsWith('\t')) {
      if (!dropping) kept.push(l);
      continue;
    }
    const name = HEADER_FIELD.exec(l)?.[1].toLowerCase();
    dropping = name !== undefined && MBOX_METADATA.has(name);
    if (!dropping) kept.push(l);
  }
  const status = flags.includes('\\Seen') ? 'RO' : 'O';
  let xStatus = '';
  if (flags.includes('\\Answered')) xStatus += 'A';
  if (flags.includes('\\Flagged')) xStatus += 'F';
  if (flags.includes('\\Draft')) xStatus += 'T';
  if (flags.includes('\\Deleted')) xStatus += 'D';
  const keywords = flags.filter((f) => !f.startsWith('\\'));
  kept.push(`Status: ${status}`);
  if (xStatus) kept.push(`X-Status: ${xStatus}`);
  if (keywords.length) kept.push(`X-Keywords: ${keywords.join(' ')}`);
  const parts: string[] = [`From ${envelopeSender(header)} ${ctimeUtc(internalDate)}`, ...kept];
  const body = bodyAt.hasBody ? text.slice(bodyAt.bodyStart) : undefined;
  let out = parts.join('\n') + '\n';
  if (body !== undefined) {
    out += '\n';
    const lines = body.split(/\r?\n/);
    // A final line ending leaves an empty last element: it is the ending, not a line.
    if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    for (const l of lines) out += (GT_FROM.test(l) || l.startsWith('From ') ? '>' + l : l) + '\n';
  }
  return Buffer.from(out + '\n', 'latin1');
}

/** Where the header ends (before its blank line) and the body starts (after it). */
function findBodyStart(text: string): { headerEnd: number; bodyStart: number; hasBody: boolean } {
  if (text.startsWith('\r\n')) return { headerEnd: 0, bodyStart: 2, hasBody: true };
  if (text.startsWith('\n')) return { headerEnd: 0, bodyStart: 1, hasBody: true };
  const m = /\r?\n\r?\n/.exec(text);
  if (!m) return { headerEnd: text.length, bodyStart: text.length, hasBody: false };
  return { headerEnd: m.index + m[0].indexOf('\n') + 1, bodyStart: m.index + m[0].length, hasBody: true };
}

/** Import, export, backup and restore failures; codes start with MBOX_, IMPORT_, EXPORT_, BACKUP_. */
export class TransferError extends HearthError {}
