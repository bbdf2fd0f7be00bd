// SEARCH arguments (RFC 3501 6.4.4 and 9: search-key; RFC 7162 MODSEQ; RFC 5032 OLDER/YOUNGER;
// RFC 4731 RETURN options).
import type { Cursor } from './tokens.ts';
import { parseFlag } from './tokens.ts';
import type { SequenceSet } from './sequence.ts';

export type SearchFlagKey =
  | 'ALL'
  | 'ANSWERED'
  | 'DELETED'
  | 'DRAFT'
  | 'FLAGGED'
  | 'NEW'
  | 'OLD'
  | 'RECENT'
  | 'SEEN'
  | 'UNANSWERED'
  | 'UNDELETED'
  | 'UNDRAFT'
  | 'UNFLAGGED'
  | 'UNSEEN';
export type SearchTextKey = 'BCC' | 'BODY' | 'CC' | 'FROM' | 'SUBJECT' | 'TEXT' | 'TO';
/** BEFORE/ON/SINCE compare the internal date, SENT* the Date: header (dates only, RFC 3501 6.4.4). */
export type SearchDateKey = 'BEFORE' | 'ON' | 'SINCE' | 'SENTBEFORE' | 'SENTON' | 'SENTSINCE';

export type SearchKey =
  | { readonly key: SearchFlagKey }
  | { readonly key: SearchTextKey; readonly value: string }
  /** date as `YYYY-MM-DD` (validated), so plain string comparison orders it. */
  | { readonly key: SearchDateKey; readonly date: string }
  | { readonly key: 'KEYWORD' | 'UNKEYWORD'; readonly flag: string }
  | { readonly key: 'LARGER' | 'SMALLER'; readonly size: number }
  /** field as written; an empty value matches every message that has the field. */
  | { readonly key: 'HEADER'; readonly field: string; readonly value: string }
  | { readonly key: 'UID'; readonly set: SequenceSet }
  /** A bare sequence set: message sequence numbers. */
  | { readonly key: 'SEQ'; readonly set: SequenceSet }
  | { readonly key: 'NOT'; readonly inner: SearchKey }
  | { readonly key: 'OR'; readonly left: SearchKey; readonly right: SearchKey }
  /** A parenthesised group (and the top level): all must match. */
  | { readonly key: 'AND'; readonly keys: readonly SearchKey[] }
  /** RFC 5032 WITHIN: internal date older/younger than `seconds`. */
  | { readonly key: 'OLDER' | 'YOUNGER'; readonly seconds: number }
  /** RFC 7162 3.1.5: entry (`/flags/\Seen`, type priv/shared/all) is accepted and may be ignored. */
  | { readonly key: 'MODSEQ'; readonly modseq: number; readonly entry?: { readonly name: string; readonly type: 'priv' | 'shared' | 'all' } };

export type SearchReturnOption = 'MIN' | 'MAX' | 'ALL' | 'COUNT' | 'SAVE';

export interface SearchArgs {
  /** Upper-case; absent means US-ASCII (RFC 3501 6.4.4). Answer NO [BADCHARSET] for unknown ones. */
  readonly charset?: string;
  /** All top-level keys must match (an implicit AND). */
  readonly criteria: SearchKey;
  /** RFC 4731 ESEARCH: present when the client wrote `RETURN (...)`; `[]` means `(ALL)`. */
  readonly returnOptions?: readonly SearchReturnOption[];
}

const FLAG_KEYS = new Set<string>(['ALL', 'ANSWERED', 'DELETED', 'DRAFT', 'FLAGGED', 'NEW', 'OLD', 'RECENT', 'SEEN', 'UNANSWERED', 'UNDELETED', 'UNDRAFT', 'UNFLAGGED', 'UNSEEN']);
const TEXT_KEYS = new Set<string>(['BCC', 'BODY', 'CC', 'FROM', 'SUBJECT', 'TEXT', 'TO']);
const DATE_KEYS = new Set<string>(['BEFORE', 'ON', 'SINCE', 'SENTBEFORE', 'SENTON', 'SENTSINCE']);
const MONTHS = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'];
/** NOT NOT NOT … and ((((…)))) are recursion: bound it so hostile input cannot blow the stack. */
const MAX_DEPTH = 64;

/** RFC 3501 9: date = date-text / DQUOTE date-text DQUOTE; date-text = date-day "-" date-month "-" date-year */
export function parseSearchDate(text: string): string | null {
  const m = /^([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})$/.exec(text);
  if (!m) return null;
  const month = MONTHS.indexOf(m[2].toUpperCase());
  const day = Number(m[1]);
  const year = Number(m[3]);
  if (month < 0 || day < 1) return null;
  const daysInMonth = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
  if (day > daysInMonth) return null;
  return `${m[3]}-${String(month + 1).padStart(2, '0')}-${String(day).padStart(2, '0')}`;
}

function parseDate(cur: Cursor): string {
  const start = cur.pos;
  const text = cur.peek() === 0x22 ? cur.string('a date') : cur.atomOrEmpty();
  const date = parseSearchDate(text);
  if (date === null) {
    cur.pos = start;
    cur.expected('a date like 1-Feb-1994');
  }
  return date;
}

function parseKey(cur: Cursor): SearchKey {
  if (cur.depth >= MAX_DEPTH) cur.fail('search criteria nested too deeply');
  cur.depth++;
  try {
    return parseKeyInner(cur);
  } finally {
    cur.depth--;
  }
}

function parseKeyInner(cur: Cursor): SearchKey {
  const c = cur.peek();
  if (c === 0x28) {
    const keys = cur.list(() => parseKey(cur), false, 'a search group');
    return keys.length === 1 ? keys[0] : { key: 'AND', keys };
  }
  if ((c >= 0x30 && c <= 0x39) || c === 0x2a) return { key: 'SEQ', set: cur.sequenceSet() };
  const start = cur.pos;
  const word = cur.atomOrEmpty().toUpperCase();
  if (FLAG_KEYS.has(word)) return { key: word as SearchFlagKey };
  if (word === '') cur.expected('a search key');
  if (TEXT_KEYS.has(word)) {
    cur.sp();
    return { key: word as SearchTextKey, value: cur.astring(`a string after ${word}`) };
  }
  if (DATE_KEYS.has(word)) {
    cur.sp();
    return { key: word as SearchDateKey, date: parseDate(cur) };
  }
  switch (word) {
    case 'KEYWORD':
    case 'UNKEYWORD':
      cur.sp();
      return { key: word, flag: parseFlag(cur) };
    case 'LARGER':
    case 'SMALLER':
      cur.sp();
      return { key: word, size: cur.number('a size') };
    case 'OLDER':
    case 'YOUNGER':
      cur.sp();
      return { key: word, seconds: cur.nzNumber('a number of seconds') };
    case 'HEADER': {
      cur.sp();
      const field = cur.astring('a header field name');
      cur.sp();
      return { key: 'HEADER', field, value: cur.astring('a header value') };
    }
    case 'UID':
      cur.sp();
      return { key: 'UID', set: cur.sequenceSet() };
    case 'NOT':
      cur.sp();
      return { key: 'NOT', inner: parseKey(cur) };
    case 'OR': {
      cur.sp();
      const left = parseKey(cur);
      cur.sp();
      return { key: 'OR', left, right: parseKey(cur) };
    }
    case 'MODSEQ': {
      cur.sp();
      // RFC 7162 3.1.5: MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer
      if (cur.peek() === 0x22 || cur.peek() === 0x7b || (cur.peek() !== -1 && !(cur.peek() >= 0x30 && cur.peek() <= 0x39))) {
        const name = cur.string('an entry name');
        cur.sp();
        const type = cur.atom('priv, shared or all').toLowerCase();
        if (type !== 'priv' && type !== 'shared' && type !== 'all') cur.fail(`bad MODSEQ entry type ${JSON.stringify(type)}`);
        cur.sp();
        return { key: 'MODSEQ', modseq: cur.modSeq(true), entry: { name, type } };
      }
      return { key: 'MODSEQ', modseq: cur.modSeq(true) };
    }
  }
  cur.pos = start;
  cur.fail(`unknown search key ${cur.got()}`);
}

export function parseSearchArgs(cur: Cursor): SearchArgs {
  cur.sp();
  let returnOptions: SearchReturnOption[] | undefined;
  let charset: string | undefined;
  if (cur.takeWord('RETURN')) {
    cur.sp();
    returnOptions = cur.list(
      () => {
        const opt = cur.atom('a RETURN option').toUpperCase();
        if (opt !== 'MIN' && opt !== 'MAX' && opt !== 'ALL' && opt !== 'COUNT' && opt !== 'SAVE') cur.fail(`unknown RETURN option ${JSON.stringify(opt)}`);
        return opt;
      },
      true,
      'search return options',
    );
    cur.sp();
  }
  if (cur.takeWord('CHARSET')) {
    cur.sp();
    charset = cur.astring('a charset').toUpperCase();
    cur.sp();
  }
  const keys: SearchKey[] = [];
  for (;;) {
    keys.push(parseKey(cur));
    if (keys.length > 1000) cur.fail('too many search keys');
    if (cur.atEnd()) break;
    cur.sp();
  }
  const criteria: SearchKey = keys.length === 1 ? keys[0] : { key: 'AND', keys };
  const out: { -readonly [K in keyof SearchArgs]: SearchArgs[K] } = { criteria };
  if (charset !== undefined) out.charset = charset;
  if (returnOptions !== undefined) out.returnOptions = returnOptions;
  return out;
}
