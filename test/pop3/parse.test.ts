import { describe, expect, it } from 'vitest';
import { decodeSaslPlain, parseLineCount, parseMessageNumber, parsePop3Command } from '../../src/pop3/parse.ts';
import { headersAndLines } from '../../src/pop3/top.ts';

describe('POP3 parser', () => {
  it('splits verbs and arguments, case-insensitively, leniently with spaces', () => {
    expect(parsePop3Command('list')).toEqual({ ok: true, verb: 'LIST', args: [] });
    expect(parsePop3Command('LIST ')).toEqual({ ok: true, verb: 'LIST', args: [] });
    expect(parsePop3Command('top 1  10')).toEqual({ ok: true, verb: 'TOP', args: ['1', '10'] });
    expect(parsePop3Command('PASS a b c')).toEqual({ ok: true, verb: 'PASS', args: ['a', 'b', 'c'] });
  });
  it('refuses empty lines, bad verbs, control characters and huge arguments', () => {
    for (const bad of ['', 'X', 'TOOLONG', 'L1ST', 'USER a\x00b', 'USER ' + 'a'.repeat(300), '__proto__']) {
      expect(parsePop3Command(bad).ok, JSON.stringify(bad)).toBe(false);
    }
  });
  it('parses message numbers and line counts strictly', () => {
    expect(parseMessageNumber('1')).toBe(1);
    expect(parseMessageNumber('0')).toBeNull();
    expect(parseMessageNumber('-1')).toBeNull();
    expect(parseMessageNumber('1e3')).toBeNull();
    expect(parseMessageNumber(undefined)).toBeNull();
    expect(parseLineCount('0')).toBe(0);
    expect(parseLineCount('x')).toBeNull();
  });
  it('decodes SASL PLAIN and refuses malformed tokens', () => {
    expect(decodeSaslPlain(Buffer.from('\0me@x\0pw').toString('base64'))).toEqual({ authzid: '', authcid: 'me@x', password: 'pw' });
    expect(decodeSaslPlain('not base64!')).toBeNull();
    expect(decodeSaslPlain(Buffer.from('me@x\0pw').toString('base64'))).toBeNull();
  });
});

async function top(message: string, lines: number, chunk: number): Promise<string> {
  const buf = Buffer.from(message);
  async function* source() {
    for (let i = 0; i < buf.length; i += chunk) yield buf.subarray(i, i + chunk);
  }
  const out: Buffer[] = [];
  for await (const c of headersAndLines(source(), lines)) out.push(c);
  return Buffer.concat(out).toString();
}

describe('TOP cut', () => {
  const msg = 'Subject: a\r\nFrom: b\r\n\r\nline1\r\nline2\r\nline3\r\n';
  for (const chunk of [1, 2, 5, 1000]) {
    it(`headers plus N body lines at chunk size ${chunk}`, async () => {
      expect(await top(msg, 0, chunk)).toBe('Subject: a\r\nFrom: b\r\n\r\n');
      expect(await top(msg, 2, chunk)).toBe('Subject: a\r\nFrom: b\r\n\r\nline1\r\nline2\r\n');
      expect(await top(msg, 10, chunk)).toBe(msg);
      expect(await top('Subject: x\n\nbody\nmore\n', 1, chunk)).toBe('Subject: x\n\nbody\n');
    });
  }
});
