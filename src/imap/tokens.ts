// The tokenizer under the IMAP command parser: a cursor over an AssembledCommand's lines and
// literals, with one method per RFC 3501 9 production the grammar needs. Failures throw
// ParseFail, which parseCommand turns into a ParseError value; nothing else is thrown.
import type { AssembledCommand } from './assembler.ts';
import { decodeMailboxName, normaliseInbox } from './mailbox-name.ts';
import { parseSequenceSet } from './sequence.ts';
import type { SequenceSet } from './sequence.ts';

export class ParseFail {
  readonly text: string;
  constructor(text: string) {
    this.text = text;
  }
}

const SP = 0x20;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const LPAREN = 0x28;
const RPAREN = 0x29;
const LBRACE = 0x7b;

// RFC 3501 9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
const ATOM_CHAR = new Uint8Array(256);
for (let c = 0x21; c < 0x7f; c++) ATOM_CHAR[c] = 1;
for (const ch of '(){%*"\\]') ATOM_CHAR[ch.charCodeAt(0)] = 0;
const ASTRING_CHAR = ATOM_CHAR.slice();
ASTRING_CHAR[0x5d] = 1; // "]"
const LIST_CHAR = ASTRING_CHAR.slice();
LIST_CHAR[0x25] = 1; // "%"
LIST_CHAR[0x2a] = 1; // "*"

const SEQ_CHAR = new Uint8Array(256);
for (const ch of '0123456789:,*') SEQ_CHAR[ch.charCodeAt(0)] = 1;

export function isAtomChar(c: number): boolean {
  return ATOM_CHAR[c] === 1;
}

/** Text of a few bytes at a position, for error messages. */
function show(buf: Buffer, pos: number): string {
  if (pos >= buf.length) return 'end of line';
  const s = buf.subarray(pos, pos + 24).toString('latin1').replace(/[^\x20-\x7e]/g, '?');
  return JSON.stringify(pos + 24 < buf.length ? `${s}…` : s);
}

export interface CursorOptions {
  /** UTF8=ACCEPT (RFC 6855) is enabled: mailbox names are UTF-8, not modified UTF-7. */
  utf8: boolean;
}

export class Cursor {
  readonly #lines: readonly Buffer[];
  readonly #literals: readonly Buffer[];
  readonly opts: CursorOptions;
  seg = 0;
  pos = 0;
  /** Prefix for error texts, e.g. "FETCH". */
  context = '';
  depth = 0;

  constructor(raw: AssembledCommand, opts: CursorOptions) {
    this.#lines = raw.lines;
    this.#literals = raw.literals;
    this.opts = opts;
  }

  get line(): Buffer {
    return this.#lines[this.seg];
  }

  fail(text: string): never {
    throw new ParseFail(this.context ? `${this.context}: ${text}` : text);
  }

  /** "expected X, got …" */
  expected(what: string): never {
    this.fail(`expected ${what}, got ${this.got()}`);
  }

  got(): string {
    return show(this.line, this.pos);
  }

  peek(): number {
    return this.pos < this.line.length ? this.line[this.pos] : -1;
  }

  /** Nothing left at all (the last line is consumed). */
  atEnd(): boolean {
    return this.seg === this.#lines.length - 1 && this.pos >= this.line.length;
  }

  end(): void {
    if (this.atEnd()) return;
    const at = this.peek() === SP && this.pos + 1 < this.line.length ? this.pos + 1 : this.pos;
    this.fail(`unexpected ${show(this.line, at)} at end of command`);
  }

  sp(): void {
    if (this.peek() !== SP) this.expected('a space');
    this.pos++;
  }

  /** Consume a space if there is one. */
  maybeSp(): boolean {
    if (this.peek() !== SP) return false;
    this.pos++;
    return true;
  }

  /** Consume `ch` (one ASCII character) if it is next. */
  take(ch: string): boolean {
    if (this.peek() !== ch.charCodeAt(0)) return false;
    this.pos++;
    return true;
  }

  expect(ch: string, what = `"${ch}"`): void {
    if (!this.take(ch)) this.expected(what);
  }

  /** Case-insensitive keyword (followed by a non-atom character or the end), consumed if there. */
  takeWord(word: string): boolean {
    const n = word.length;
    if (this.pos + n > this.line.length) return false;
    if (this.line.subarray(this.pos, this.pos + n).toString('latin1').toUpperCase() !== word) return false;
    const after = this.pos + n < this.line.length ? this.line[this.pos + n] : -1;
    if (after !== -1 && ASTRING_CHAR[after] === 1) return false;
    this.pos += n;
    return true;
  }

  #run(table: Uint8Array): string {
    const start = this.pos;
    const line = this.line;
    while (this.pos < line.length && table[line[this.pos]] === 1) this.pos++;
    return line.subarray(start, this.pos).toString('latin1');
  }

  atom(what = 'an atom'): string {
    const s = this.#run(ATOM_CHAR);
    if (s === '') this.expected(what);
    return s;
  }

  /** A run of ATOM-CHARs, possibly empty (for peeking at keywords). */
  atomOrEmpty(): string {
    return this.#run(ATOM_CHAR);
  }

  number(what = 'a number'): number {
    const start = this.pos;
    const line = this.line;
    while (this.pos < line.length && line[this.pos] >= 0x30 && line[this.pos] <= 0x39) this.pos++;
    const s = line.subarray(start, this.pos).toString('latin1');
    if (s === '' || s.length > 10) {
      this.pos = start;
      this.expected(what);
    }
    const n = Number(s);
    if (n > 4294967295) {
      this.pos = start;
      this.expected(what);
    }
    return n;
  }

  nzNumber(what = 'a non-zero number'): number {
    const start = this.pos;
    const n = this.number(what);
    if (n === 0) {
      this.pos = start;
      this.expected(what);
    }
    return n;
  }

  /** RFC 7162 mod-sequence-value (up to 2^63-1); limited here to safe integers. */
  modSeq(allowZero: boolean): number {
    const start = this.pos;
    const line = this.line;
    while (this.pos < line.length && line[this.pos] >= 0x30 && line[this.pos] <= 0x39) this.pos++;
    const s = line.subarray(start, this.pos).toString('latin1');
    const n = s.length > 0 && s.length <= 16 ? Number(s) : NaN;
    if (!Number.isSafeInteger(n) || (!allowZero && n === 0)) {
      this.pos = start;
      this.expected('a mod-sequence value');
    }
    return n;
  }

  /** quoted = DQUOTE *QUOTED-CHAR DQUOTE, as bytes (8-bit allowed: UTF-8, RFC 6855/9051). */
  #quotedBytes(): Buffer {
    const line = this.line;
    this.pos++; // opening quote
    const out: number[] = [];
    for (;;) {
      if (this.pos >= line.length) this.fail('unterminated quoted string');
      const c = line[this.pos++];
      if (c === DQUOTE) break;
      if (c === BACKSLASH) {
        const e = this.pos < line.length ? line[this.pos] : -1;
        if (e !== DQUOTE && e !== BACKSLASH) this.fail('bad escape in quoted string (only \\" and \\\\)');
        out.push(e);
        this.pos++;
        continue;
      }
      // TEXT-CHAR excludes CR and LF; CHAR excludes NUL.
      if (c === 0 || c === 0x0a || c === 0x0d) this.fail('NUL, CR or LF in quoted string');
      out.push(c);
    }
    return Buffer.from(out);
  }

  /** literal: `{n}` or `{n+}` ending this line; its bytes are the next literal. */
  #literalBytes(): Buffer {
    const line = this.line;
    const close = line.indexOf(0x7d, this.pos);
    const marker = close < 0 ? '' : line.subarray(this.pos, close + 1).toString('latin1');
    if (!/^\{[0-9]{1,10}\+?\}$/.test(marker)) this.expected('a literal');
    if (close !== line.length - 1 || this.seg >= this.#literals.length) this.fail('literal marker must end the line');
    const data = this.#literals[this.seg];
    if (data.length !== Number(marker.slice(1).replace(/[+}]/g, ''))) this.fail('literal size mismatch');
    this.seg++;
    this.pos = 0;
    return data;
  }

  isLiteralNext(): boolean {
    return this.peek() === LBRACE;
  }

  literal(): Buffer {
    if (!this.isLiteralNext()) this.expected('a literal');
    return this.#literalBytes();
  }

  /** string = quoted / literal, as bytes. */
  stringBytes(what = 'a string'): Buffer {
    const c = this.peek();
    if (c === DQUOTE) return this.#quotedBytes();
    if (c === LBRACE) return this.#literalBytes();
    this.expected(what);
  }

  string(what = 'a string'): string {
    return decodeUtf8(this, this.stringBytes(what));
  }

  /** astring = 1*ASTRING-CHAR / string */
  astring(what = 'a string'): string {
    const c = this.peek();
    if (c === DQUOTE || c === LBRACE) return this.string(what);
    const s = this.#run(ASTRING_CHAR);
    if (s === '') this.expected(what);
    return s;
  }

  /** nstring = string / nil */
  nstring(what = 'a string or NIL'): string | null {
    if (this.takeWord('NIL')) return null;
    return this.string(what);
  }

  /** mailbox = "INBOX" / astring, decoded from modified UTF-7 unless UTF8=ACCEPT. */
  mailbox(): string {
    return this.#decodeName(this.astring('a mailbox name'), true);
  }

  /** list-mailbox = 1*list-char / string (LIST patterns: "%" and "*" allowed). */
  listMailbox(): string {
    const c = this.peek();
    if (c === DQUOTE || c === LBRACE) return this.#decodeName(this.string('a mailbox pattern'), false);
    const s = this.#run(LIST_CHAR);
    if (s === '') this.expected('a mailbox pattern');
    return this.#decodeName(s, false);
  }

  #decodeName(wire: string, inbox: boolean): string {
    let name = wire;
    if (!this.opts.utf8) {
      const decoded = decodeMailboxName(wire);
      if (decoded === null) this.fail(`invalid modified UTF-7 in mailbox name ${JSON.stringify(wire)}`);
      name = decoded;
    }
    return inbox ? normaliseInbox(name) : name;
  }

  /** A sequence set (RFC 3501 9: sequence-set). */
  sequenceSet(): SequenceSet {
    const start = this.pos;
    const line = this.line;
    while (this.pos < line.length && SEQ_CHAR[line[this.pos]] === 1) this.pos++;
    const set = parseSequenceSet(line.subarray(start, this.pos).toString('latin1'));
    if (set === null || (this.pos < line.length && ATOM_CHAR[line[this.pos]] === 1)) {
      this.pos = start;
      this.expected('a sequence set');
    }
    return set;
  }

  /** "(" item *(SP item) ")" — or "()" when allowEmpty. */
  list<T>(item: () => T, allowEmpty: boolean, what: string): T[] {
    this.expect('(', `"(" to start ${what}`);
    const out: T[] = [];
    if (this.take(')')) {
      if (!allowEmpty) this.fail(`empty ${what}`);
      return out;
    }
    for (;;) {
      out.push(item());
      if (out.length > 1000) this.fail(`too many items in ${what}`);
      if (this.take(')')) return out;
      this.sp();
    }
  }

  isListNext(): boolean {
    return this.peek() === LPAREN;
  }

  isCloseNext(): boolean {
    return this.peek() === RPAREN;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeUtf8(cur: Cursor, bytes: Buffer): string {
  try {
    return utf8.decode(bytes);
  } catch {
    cur.fail('string is not valid UTF-8');
  }
}

// RFC 3501 2.3.2: system flags, matched case-insensitively and kept in this spelling.
const SYSTEM_FLAGS = new Map(['\\Seen', '\\Answered', '\\Flagged', '\\Deleted', '\\Draft', '\\Recent'].map((f) => [f.toUpperCase(), f]));

/** flag = "\Answered" / … / keyword (atom) / flag-extension ("\" atom). */
export function parseFlag(cur: Cursor): string {
  if (cur.take('\\')) {
    const name = cur.atom('a flag name after "\\"');
    const flag = `\\${name}`;
    return SYSTEM_FLAGS.get(flag.toUpperCase()) ?? flag;
  }
  return cur.atom('a flag');
}

/** flag-list = "(" [flag *(SP flag)] ")" */
export function parseFlagList(cur: Cursor): string[] {
  return cur.list(() => parseFlag(cur), true, 'a flag list');
}
