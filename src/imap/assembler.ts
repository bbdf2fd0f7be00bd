// The framing↔parser seam: collects one IMAP command from its lines and literals (RFC 3501
// 4.3, 7.5; LITERAL+/LITERAL- RFC 7888) and tells the session when a literal is announced,
// so the session can refuse it, send "+ Ready", or read it with LineReader.readLiteral.
// Pure: no sockets, no timers.
import { HearthError } from '../core/errors.ts';

/**
 * One command as received: `lines[i]` (without CRLF) ends with a literal marker `{n}` /
 * `{n+}` whose bytes are `literals[i]`; the last line has no marker. So
 * `lines.length === literals.length + 1`.
 */
export interface AssembledCommand {
  readonly lines: readonly Buffer[];
  readonly literals: readonly Buffer[];
  /** Total bytes of lines and literals. */
  readonly bytes: number;
}

export type ImapResponseKind = 'BAD' | 'NO' | 'BYE';

export type AssemblerResult =
  /** The session sends `+ Ready` unless nonSync, then feeds `size` bytes to addLiteral(). */
  | { kind: 'need-literal'; tag: string | undefined; verb: string; size: number; nonSync: boolean }
  | { kind: 'command'; raw: AssembledCommand }
  /**
   * Refused. With `close: false` answer `${tag ?? '*'} ${response} ${text}` and carry on: the
   * announced literal (if any) was synchronizing and the client will not send it. With
   * `close: true` (response 'BYE') the client is already sending a non-synchronizing literal
   * we will not read: its bytes must not be taken for commands (RFC 7888 4), so answer
   * `* BYE ${text}` and close the connection.
   */
  | { kind: 'error'; tag: string | undefined; response: ImapResponseKind; text: string; close: boolean };

export interface AssemblerOptions {
  /** Largest literal accepted in any command (a LOGIN password, a SEARCH string). */
  maxLiteral: number;
  /**
   * A larger limit for some verbs (APPEND: the largest message). Its literal may be that big,
   * and the command's byte budget grows by the same amount. The verb is upper-case, and
   * `UID FETCH` style for UID commands.
   */
  maxLiteralFor?(verb: string): number | undefined;
  /** Bytes of lines plus literals in one command. */
  maxCommandBytes: number;
  /** Literals in one command (default 64). */
  maxLiterals?: number;
}

// RFC 3501 9: literal = "{" number "}" CRLF; RFC 7888: "{" number64 ["+"] "}". Also matches a
// literal8 (`~{n}`, RFC 3516) marker: its bytes still follow and must be read or refused.
const MARKER = /\{([0-9]+)(\+?)\}$/;
const MAX_LITERAL_DIGITS = 10; // 4294967295: RFC 3501 number is 32-bit
const TAG = /^[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c\x7e]+$/; // ASTRING-CHAR minus "+"

/** The tag and verb at the start of a command's first line, if they look valid. */
export function peekTagAndVerb(line: Buffer): { tag: string | undefined; verb: string } {
  const text = line.subarray(0, 200).toString('latin1');
  const sp = text.indexOf(' ');
  const rawTag = sp < 0 ? text : text.slice(0, sp);
  const tag = TAG.test(rawTag) ? rawTag : undefined;
  if (sp < 0) return { tag, verb: '' };
  const words = text.slice(sp + 1).split(' ', 2);
  let verb = /^[A-Za-z]{1,16}$/.test(words[0]) ? words[0].toUpperCase() : '';
  if (verb === 'UID' && words[1] && /^[A-Za-z]{1,16}$/.test(words[1])) verb = `UID ${words[1].toUpperCase()}`;
  return { tag, verb };
}

type Phase = 'idle' | 'literal' | 'line';

/**
 * Feed it every line (without CRLF) and every literal's bytes. One instance per connection.
 * Lines read outside command assembly (IDLE's DONE, AUTHENTICATE's SASL responses) must not
 * go through it.
 */
export class CommandAssembler {
  readonly #opts: AssemblerOptions;
  #phase: Phase = 'idle';
  #lines: Buffer[] = [];
  #literals: Buffer[] = [];
  #chunks: Buffer[] = [];
  #remaining = 0;
  #bytes = 0;
  #tag: string | undefined;
  #verb = '';

  constructor(opts: AssemblerOptions) {
    this.#opts = opts;
  }

  /** Is a command partly received (lines or literals waiting for the rest)? */
  get inProgress(): boolean {
    return this.#phase !== 'idle';
  }

  /** Literal bytes still expected (0 unless a literal is being read). */
  get literalRemaining(): number {
    return this.#phase === 'literal' ? this.#remaining : 0;
  }

  /** Forget a partly received command. */
  reset(): void {
    this.#phase = 'idle';
    this.#lines = [];
    this.#literals = [];
    this.#chunks = [];
    this.#remaining = 0;
    this.#bytes = 0;
    this.#tag = undefined;
    this.#verb = '';
  }

  push(line: Buffer): AssemblerResult {
    if (this.#phase === 'literal') {
      throw new HearthError('IMAP_ASSEMBLER_STATE', `line pushed while ${this.#remaining} literal bytes are expected`);
    }
    if (this.#phase === 'idle') {
      const { tag, verb } = peekTagAndVerb(line);
      this.#tag = tag;
      this.#verb = verb;
    }
    this.#lines.push(line);
    this.#bytes += line.length;

    const tail = line.subarray(Math.max(0, line.length - 32)).toString('latin1');
    const m = MARKER.exec(tail);
    const nonSync = m !== null && m[2] === '+';
    const budget = this.#budget();
    if (this.#bytes > budget) return this.#fail(nonSync, 'BAD', 'command too long');
    if (!m) {
      const raw: AssembledCommand = { lines: this.#lines, literals: this.#literals, bytes: this.#bytes };
      this.reset();
      return { kind: 'command', raw };
    }
    // A size that does not fit: refuse it the same way as a too-big one.
    const digits = m[1].replace(/^0+(?=.)/, '');
    const size = digits.length > MAX_LITERAL_DIGITS ? Infinity : Number(digits);
    if (this.#literals.length >= (this.#opts.maxLiterals ?? 64)) return this.#fail(nonSync, 'BAD', 'too many literals');
    const special = this.#opts.maxLiteralFor?.(this.#verb);
    const limit = special ?? this.#opts.maxLiteral;
    if (size > limit || this.#bytes + size > budget) {
      // RFC 7889 / RFC 4469: [TOOBIG] for a message the server will not take.
      return special !== undefined ? this.#fail(nonSync, 'NO', '[TOOBIG] literal too big') : this.#fail(nonSync, 'BAD', 'literal too big');
    }
    this.#bytes += size;
    this.#remaining = size;
    this.#chunks = [];
    if (size === 0) {
      this.#literals.push(Buffer.alloc(0));
      this.#phase = 'line';
    } else {
      this.#phase = 'literal';
    }
    return { kind: 'need-literal', tag: this.#tag, verb: this.#verb, size, nonSync };
  }

  /** Bytes of the announced literal, in as many chunks as they arrive (never beyond its size). */
  addLiteral(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.#phase !== 'literal' || chunk.length > this.#remaining) {
      throw new HearthError('IMAP_ASSEMBLER_STATE', `unexpected ${chunk.length} literal bytes (${this.literalRemaining} expected)`);
    }
    this.#chunks.push(chunk);
    this.#remaining -= chunk.length;
    if (this.#remaining === 0) {
      this.#literals.push(this.#chunks.length === 1 ? this.#chunks[0] : Buffer.concat(this.#chunks));
      this.#chunks = [];
      this.#phase = 'line';
    }
  }

  #budget(): number {
    const special = this.#opts.maxLiteralFor?.(this.#verb);
    return this.#opts.maxCommandBytes + (special ?? 0);
  }

  #fail(nonSync: boolean, response: 'BAD' | 'NO', text: string): AssemblerResult {
    const tag = this.#tag;
    this.reset();
    if (nonSync) return { kind: 'error', tag, response: 'BYE', text: `${text}: non-synchronizing literal refused`, close: true };
    return { kind: 'error', tag, response, text, close: false };
  }
}
