// Message flags between their two homes: the Maildir file name (`:2,FRS`, what mutt and Dovecot
// read) and the IMAP names the protocols speak (`\Seen`). Keywords ($Forwarded, $Junk, user
// words) have no standard letter, so they live in the index only.
import { StoreError } from './names.ts';

/** Maildir info letters for the IMAP system flags (the Maildir spec's meanings). */
export const SYSTEM_FLAG_LETTERS = {
  '\\Draft': 'D',
  '\\Flagged': 'F',
  '\\Answered': 'R',
  '\\Seen': 'S',
  '\\Deleted': 'T',
} as const;
export type SystemFlag = keyof typeof SYSTEM_FLAG_LETTERS;

const LETTER_TO_FLAG = new Map<string, SystemFlag>(Object.entries(SYSTEM_FLAG_LETTERS).map(([f, l]) => [l, f as SystemFlag]));
const LOWER_TO_FLAG = new Map<string, SystemFlag>(Object.keys(SYSTEM_FLAG_LETTERS).map((f) => [f.toLowerCase(), f as SystemFlag]));
// Order in which system flags are reported: the RFC 3501 listing order.
const REPORT_ORDER: SystemFlag[] = ['\\Seen', '\\Answered', '\\Flagged', '\\Deleted', '\\Draft'];

// RFC 3501 flag-keyword = atom: no controls, space, ( ) { % * " \ ]
const KEYWORD = /^[\x21\x23-\x24\x26-\x27\x2b-\x5b\x5e-\x7a\x7c\x7e]+$/;

/** A Maildir file name's parts: the base (the UID key) and the info letters after `:2,`. */
export function parseMaildirName(name: string): { key: string; letters: string } {
  const colon = name.indexOf(':');
  if (colon < 0) return { key: name, letters: '' };
  const letters = name.startsWith('2,', colon + 1) ? name.slice(colon + 3) : '';
  return { key: name.slice(0, colon), letters };
}

/**
 * Delivery order from a Maildir name: `<secs>.M<usec>P...` sorts by seconds, then microseconds,
 * then the name itself (names from other programs without an M part still sort by time).
 */
export function compareDeliveryOrder(a: string, b: string): number {
  const ta = deliveryTime(a);
  const tb = deliveryTime(b);
  if (ta.secs !== tb.secs) return ta.secs - tb.secs;
  if (ta.usec !== tb.usec) return ta.usec - tb.usec;
  // Same microsecond (the clock may tick in milliseconds): the delivering process's counter
  // Q<n> orders its own files; compared as a number, since Q10 must follow Q9.
  if (ta.pid === tb.pid && ta.seq !== tb.seq) return ta.seq - tb.seq;
  return a < b ? -1 : a > b ? 1 : 0;
}

const TIME = /^(\d+)\.(?:M(\d+))?(?:P(\d+))?(?:Q(\d+))?/;
function deliveryTime(name: string): { secs: number; usec: number; pid: number; seq: number } {
  const m = TIME.exec(name);
  if (!m) return { secs: Number.MAX_SAFE_INTEGER, usec: 0, pid: -1, seq: -1 };
  return { secs: Number(m[1]), usec: m[2] === undefined ? 0 : Number(m[2]), pid: m[3] === undefined ? -1 : Number(m[3]), seq: m[4] === undefined ? -1 : Number(m[4]) };
}

/**
 * Split IMAP flag names into Maildir letters and keywords. System flags are matched without
 * regard to case (`\seen`), keywords keep the first spelling seen and are de-duplicated without
 * regard to case. `\Recent` is the session's business and is ignored; any other `\Name`, or a
 * keyword that is not an IMAP atom, throws STORE_BAD_FLAG.
 */
export function splitFlags(flags: readonly string[]): { letters: string; keywords: string[] } {
  const letters = new Set<string>();
  const keywords = new Map<string, string>();
  for (const flag of flags) {
    if (flag.startsWith('\\')) {
      const lower = flag.toLowerCase();
      if (lower === '\\recent') continue;
      const sys = LOWER_TO_FLAG.get(lower);
      if (sys === undefined) throw new StoreError('STORE_BAD_FLAG', `unknown system flag ${JSON.stringify(flag)}`);
      letters.add(SYSTEM_FLAG_LETTERS[sys]);
    } else {
      if (!KEYWORD.test(flag)) throw new StoreError('STORE_BAD_FLAG', `bad keyword ${JSON.stringify(flag)}`);
      const lower = flag.toLowerCase();
      if (!keywords.has(lower)) keywords.set(lower, flag);
    }
  }
  return { letters: [...letters].sort().join(''), keywords: [...keywords.values()] };
}

/** IMAP flags of a message: system flags from its Maildir letters, then its keywords. */
export function imapFlags(letters: string, keywords: readonly string[]): string[] {
  const out: string[] = [];
  for (const f of REPORT_ORDER) if (letters.includes(SYSTEM_FLAG_LETTERS[f])) out.push(f);
  for (const k of keywords) out.push(k);
  return out;
}

/** The letters that carry IMAP meaning (S R F T D), sorted: what a flag change compares. */
export function visibleLetters(letters: string): string {
  let out = '';
  for (const ch of [...letters].sort()) if (LETTER_TO_FLAG.has(ch) && !out.includes(ch)) out += ch;
  return out;
}

/**
 * New letters after an IMAP change: letters with no IMAP meaning (P, Dovecot's lower-case keyword
 * slots) are kept as they were; the S R F T D letters become `visible`. Sorted, as the spec asks.
 */
export function withVisibleLetters(letters: string, visible: string): string {
  const kept = [...letters].filter((ch) => !LETTER_TO_FLAG.has(ch));
  return [...new Set([...kept, ...visible])].sort().join('');
}

/** Apply an add / remove / replace of keywords, comparing without regard to case. */
export function applyKeywords(current: readonly string[], mode: 'add' | 'remove' | 'replace', given: readonly string[]): string[] {
  if (mode === 'replace') return [...given];
  const lower = new Set(given.map((k) => k.toLowerCase()));
  if (mode === 'remove') return current.filter((k) => !lower.has(k.toLowerCase()));
  const have = new Set(current.map((k) => k.toLowerCase()));
  return [...current, ...given.filter((k) => !have.has(k.toLowerCase()))];
}

/** Apply an add / remove / replace of S R F T D letters. */
export function applyLetters(current: string, mode: 'add' | 'remove' | 'replace', given: string): string {
  const cur = visibleLetters(current);
  if (mode === 'replace') return given;
  if (mode === 'add') return visibleLetters(cur + given);
  return [...cur].filter((ch) => !given.includes(ch)).join('');
}
