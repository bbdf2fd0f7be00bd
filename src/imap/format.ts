// Response formatting (RFC 3501 9: string, nstring, flag-list, date-time), so the session
// and the FETCH code never invent their own quoting.
import { isAtomChar } from './tokens.ts';

export interface QuoteOptions {
  /** UTF8=ACCEPT (RFC 6855) is enabled: 8-bit UTF-8 may go in a quoted string. */
  utf8?: boolean;
  /** Strings longer than this (in bytes) are sent as literals. Default 1024. */
  maxQuoted?: number;
}

/**
 * A string as `"quoted"` when that is allowed (no CR, LF or NUL; no 8-bit unless UTF-8
 * is enabled; not too long), else as a literal `{n}\r\n…` where n counts UTF-8 bytes.
 * The result is meant to be written as UTF-8.
 */
export function quoteString(value: string, opts: QuoteOptions = {}): string {
  const bytes = Buffer.byteLength(value, 'utf8');
  const ascii = bytes === value.length;
  const quotable = bytes <= (opts.maxQuoted ?? 1024) && (ascii || opts.utf8 === true) && !/[\0\r\n]/.test(value);
  if (quotable) return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
  return `{${bytes}}\r\n${value}`;
}

/** An atom when every character is an ATOM-CHAR (and it is not "NIL"), else quoteString. */
export function formatAtomOrQuoted(value: string, opts: QuoteOptions = {}): string {
  if (value.length > 0 && value.toUpperCase() !== 'NIL') {
    let atom = true;
    for (let i = 0; i < value.length && atom; i++) atom = isAtomChar(value.charCodeAt(i));
    if (atom) return value;
  }
  return quoteString(value, opts);
}

/** nstring: NIL for null/undefined, else quoteString. */
export function nstring(value: string | null | undefined, opts: QuoteOptions = {}): string {
  return value === null || value === undefined ? 'NIL' : quoteString(value, opts);
}

/** `(a b c)` from already formatted items; `()` when empty. */
export function formatList(items: readonly string[]): string {
  return `(${items.join(' ')})`;
}

/** flag-list: `(\Seen $Forwarded)`. Flags are atoms (or `\`+atom) by construction. */
export function formatFlags(flags: readonly string[]): string {
  return formatList(flags);
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n: number): string => String(n).padStart(2, '0');

/**
 * RFC 3501 9 date-time contents (without the quotes), e.g. `17-Jul-1996 02:44:25 -0700`.
 * `offsetMinutes` is east of UTC (-420 for -0700); default the server's local zone at `ms`.
 */
export function imapDate(ms: number, offsetMinutes?: number): string {
  const offset = offsetMinutes ?? -new Date(ms).getTimezoneOffset();
  const d = new Date(ms + offset * 60_000);
  const sign = offset < 0 ? '-' : '+';
  const abs = Math.abs(offset);
  // date-day-fixed = (SP DIGIT) / 2DIGIT
  const day = String(d.getUTCDate()).padStart(2, ' ');
  return `${day}-${MONTHS[d.getUTCMonth()]}-${d.getUTCFullYear()} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} ${sign}${pad(Math.floor(abs / 60))}${pad(abs % 60)}`;
}
