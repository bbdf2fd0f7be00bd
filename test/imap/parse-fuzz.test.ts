// 20,000 random and mutated inputs through the assembler and the parser: nothing may throw,
// every result is a well-formed command, error or assembler result, and it stays fast.
import { describe, expect, it } from 'vitest';
import { CommandAssembler } from '../../src/imap/assembler.ts';
import type { AssemblerResult } from '../../src/imap/assembler.ts';
import { isDone, parseCommand } from '../../src/imap/parse.ts';
import { decodeMailboxName, encodeMailboxName } from '../../src/imap/mailbox-name.ts';
import { parseSequenceSet, resolveSequence } from '../../src/imap/sequence.ts';
import { prng } from '../helpers/prng.ts';
import { feed } from './helpers.ts';

const SEEDS = [
  'A1 UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])',
  'A2 FETCH 1,3:5,* (BODY[1.2.MIME] BODY.PEEK[TEXT]<0.100> BODY[3.HEADER.FIELDS.NOT (Received)]) (CHANGEDSINCE 5)',
  'A3 LOGIN {5}\r\nalice "p\\"w"',
  'A4 SEARCH CHARSET UTF-8 OR (FROM alice SINCE 1-Feb-1994) NOT (UID 1:5 LARGER 100) HEADER X-Y {3}\r\nabc',
  'A5 APPEND INBOX (\\Seen) " 7-Feb-1994 21:52:25 -0800" {11}\r\nHello World',
  'A6 STORE 1:* (UNCHANGEDSINCE 3) +FLAGS.SILENT (\\Deleted $Junk)',
  'A7 LIST (SUBSCRIBED) "" ("INBOX" "&ZeVnLIqe-/*") RETURN (CHILDREN STATUS (MESSAGES))',
  'A8 STATUS "Sent Items" (MESSAGES UIDNEXT HIGHESTMODSEQ)',
  'A9 ID ("name" "imapflow" "version" NIL)',
  'B1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==',
  'B2 UID MOVE 4:2 "Archive"',
  'B3 SELECT inbox (CONDSTORE)',
  'B4 UID SEARCH RETURN (MIN COUNT) MODSEQ "/flags/\\\\draft" all 5',
  'B5 RENAME a b',
  'B6 ENABLE CONDSTORE UTF8=ACCEPT',
];
const ALPHABET = ' ()[]<>{}+-*:,."\\%&~=0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\r\n\0\xff';
const WORDS = ['(', ')', ' ', '{3}\r\n', '{0+}\r\n', '{99999999999}\r\n', '"', '\\', '*', '1:*', 'NOT ', 'OR ', 'BODY[', ']', '<0.1>', 'NIL', 'UID ', '&', '&-', '\r\n', 'HEADER.FIELDS ', '(('];

function randomInput(rand: () => number): Buffer {
  const pick = <T>(xs: ArrayLike<T>): T => xs[Math.floor(rand() * xs.length)];
  const mode = rand();
  if (mode < 0.25) {
    // Pure noise, biased to IMAP's special characters.
    const n = Math.floor(rand() * 120);
    let s = '';
    for (let i = 0; i < n; i++) s += pick(ALPHABET);
    return Buffer.from(s, 'latin1');
  }
  // A real command, mutated: byte flips, insertions of tokens, deletions, truncation.
  let s = pick(SEEDS);
  const edits = 1 + Math.floor(rand() * 6);
  for (let e = 0; e < edits; e++) {
    const at = Math.floor(rand() * (s.length + 1));
    const op = rand();
    if (op < 0.3) s = s.slice(0, at) + pick(WORDS) + s.slice(at);
    else if (op < 0.55) s = s.slice(0, at) + s.slice(at + 1 + Math.floor(rand() * 8));
    else if (op < 0.8) s = s.slice(0, at) + pick(ALPHABET) + s.slice(at + 1);
    else if (op < 0.9) s = s.slice(0, at);
    else s = s.slice(0, at) + pick(WORDS).repeat(1 + Math.floor(rand() * 40)) + s.slice(at);
  }
  return Buffer.from(`${s}\r\n`, 'latin1');
}

/** Drive the assembler exactly as a session would, with random chunking of literals. */
function drive(asm: CommandAssembler, wire: Buffer, rand: () => number): AssemblerResult[] {
  return feed(asm, wire, {
    stopOnClose: true,
    literal(size, rest) {
      // The session may refuse: it then resets. Otherwise it reads what is there.
      if (rand() < 0.05) {
        asm.reset();
        return rest;
      }
      let need = size;
      let buf = rest;
      while (need > 0 && buf.length > 0) {
        const take = Math.min(need, buf.length, 1 + Math.floor(rand() * 5));
        asm.addLiteral(buf.subarray(0, take));
        buf = buf.subarray(take);
        need -= take;
      }
      return need > 0 ? undefined : buf; // undefined: the peer ended mid-literal
    },
  });
}

describe('parser fuzz', () => {
  it('20,000 random and mutated inputs never throw and finish in bounded time', () => {
    const rand = prng(0x1ea57);
    const asm = new CommandAssembler({ maxLiteral: 4096, maxCommandBytes: 16384, maxLiteralFor: (v) => (v === 'APPEND' ? 65536 : undefined) });
    const counts = { ok: 0, parseError: 0, untagged: 0, assemblerError: 0 };
    const started = performance.now();
    let slowest = 0;
    for (let i = 0; i < 20_000; i++) {
      const wire = randomInput(rand);
      const t0 = performance.now();
      asm.reset();
      for (const r of drive(asm, wire, rand)) {
        if (r.kind === 'error') {
          counts.assemblerError++;
          expect(['BAD', 'NO', 'BYE']).toContain(r.response);
          expect(r.close).toBe(r.response === 'BYE');
          continue;
        }
        if (r.kind !== 'command') continue;
        const c = parseCommand(r.raw, { utf8: rand() < 0.5 });
        if (c.ok) {
          counts.ok++;
          expect(c.verb).toMatch(/^[A-Z]+$/);
          expect(c.tag.length).toBeGreaterThan(0);
        } else {
          counts.parseError++;
          if (c.tag === undefined) counts.untagged++;
          expect(typeof c.text).toBe('string');
          expect(c.text.length).toBeGreaterThan(0);
          // Error texts go on the wire: one line, printable.
          expect(c.text).toMatch(/^[\x20-\x7e]+$/);
        }
      }
      isDone(wire);
      slowest = Math.max(slowest, performance.now() - t0);
    }
    const elapsed = performance.now() - started;
    // Every class of outcome occurs, so the fuzzer reaches past the tag check.
    expect(counts.ok).toBeGreaterThan(500);
    expect(counts.parseError).toBeGreaterThan(2000);
    expect(counts.untagged).toBeGreaterThan(100);
    expect(counts.assemblerError).toBeGreaterThan(50);
    expect(elapsed).toBeLessThan(15_000);
    expect(slowest).toBeLessThan(250);
  });

  it('the same seed gives the same inputs (repeatable)', () => {
    const a = prng(7);
    const b = prng(7);
    for (let i = 0; i < 50; i++) expect(randomInput(a).equals(randomInput(b))).toBe(true);
  });

  it('mailbox names and sequence sets: random strings never throw, and encode/decode round-trips', () => {
    const rand = prng(99);
    for (let i = 0; i < 5000; i++) {
      const n = Math.floor(rand() * 12);
      let s = '';
      for (let j = 0; j < n; j++) {
        const r = rand();
        s += r < 0.5 ? String.fromCharCode(0x20 + Math.floor(rand() * 95)) : r < 0.9 ? String.fromCharCode(0xa0 + Math.floor(rand() * 0x5000)) : String.fromCodePoint(0x1f600 + Math.floor(rand() * 50));
      }
      expect(decodeMailboxName(encodeMailboxName(s))).toBe(s);
      const wire = s.replace(/[^\x20-\x7e]/g, '&');
      const d = decodeMailboxName(wire);
      expect(d === null || typeof d === 'string').toBe(true);
      const set = parseSequenceSet(wire.replace(/[^0-9:,*]/g, ''));
      if (set) {
        const nums = resolveSequence(set, 50);
        expect(nums.every((x, k) => x >= 1 && x <= 50 && (k === 0 || x > nums[k - 1]))).toBe(true);
      }
    }
  });
});
