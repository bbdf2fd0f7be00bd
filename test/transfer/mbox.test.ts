// The mbox format as pure functions: separators, quoting (mboxrd and mboxo), flag headers,
// CRLF, and the export side (mboxrd quoting, Status headers, ctime dates).
import { describe, expect, it } from 'vitest';
import { ctimeUtc, formatMboxMessage, parseFromLineDate, parseMboxMessage, splitMbox } from '../../src/transfer/mbox.ts';
import type { MboxQuoting, RawMboxMessage } from '../../src/transfer/mbox.ts';
import { toCrlf } from '../../src/transfer/import.ts';

async function* chunks(text: string | Buffer, size = 7): AsyncGenerator<Buffer> {
  const buf = Buffer.isBuffer(text) ? text : Buffer.from(text, 'latin1');
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

async function split(text: string, size = 7): Promise<RawMboxMessage[]> {
  const out: RawMboxMessage[] = [];
  for await (const m of splitMbox(chunks(text, size))) out.push(m);
  return out;
}

function parsed(raw: RawMboxMessage, quoting: MboxQuoting = 'mboxrd') {
  const p = parseMboxMessage(raw, quoting);
  if (!p.ok) throw new Error(p.reason);
  return p;
}

describe('mbox separators', () => {
  it('reads the date of ctime, Gmail and zoned From lines', () => {
    expect(parseFromLineDate('From a@b Thu Jan  1 00:00:00 1970')?.toISOString()).toBe('1970-01-01T00:00:00.000Z');
    expect(parseFromLineDate('From 1234@xxx Tue Feb 20 08:00:00 +0100 2024')?.toISOString()).toBe('2024-02-20T07:00:00.000Z');
    expect(parseFromLineDate('From a@b Sat Mar  2 10:00 2024 -0500')?.toISOString()).toBe('2024-03-02T15:00:00.000Z');
    expect(parseFromLineDate('From here on, no date')).toBeUndefined();
  });

  it('splits at dated From lines after a blank line only, whatever the chunking', async () => {
    const text = 'From a@b Mon Jan 15 10:30:00 2024\nSubject: one\n\nbody\nFrom x Mon Jan 15 10:30:00 2024\n\nFrom here on\n\nFrom b@c Mon Jan 15 10:31:00 2024\r\nSubject: two\r\n\r\nbody two\r\n';
    for (const size of [1, 3, 7, 64, 100_000]) {
      const msgs = await split(text, size);
      expect(msgs.map((m) => m.fromLine)).toEqual(['From a@b Mon Jan 15 10:30:00 2024', 'From b@c Mon Jan 15 10:31:00 2024']);
      expect(parsed(msgs[0]).content.toString()).toBe('Subject: one\r\n\r\nbody\r\nFrom x Mon Jan 15 10:30:00 2024\r\n\r\nFrom here on\r\n');
      expect(parsed(msgs[1]).content.toString()).toBe('Subject: two\r\n\r\nbody two\r\n');
      expect(msgs[1].offset).toBe(text.indexOf('From b@c'));
    }
  });

  it('refuses a file that is not an mbox', async () => {
    await expect(split('Subject: hi\n\nbody\n')).rejects.toMatchObject({ code: 'MBOX_NOT_MBOX' });
  });

  it('hands out an over-large message without its lines', async () => {
    const out: RawMboxMessage[] = [];
    for await (const m of splitMbox(chunks('From a Mon Jan 15 10:30:00 2024\nSubject: x\n\n' + 'y'.repeat(500) + '\n'), { maxBytes: 100 })) out.push(m);
    expect(out[0].lines).toBeNull();
    expect(parseMboxMessage(out[0], 'mboxrd')).toMatchObject({ ok: false, reason: expect.stringMatching(/too large/) });
  });
});

describe('mbox quoting and flags', () => {
  const msg = 'From a Mon Jan 15 10:30:00 2024\nSubject: q\nStatus: RO\nX-Status: AF\nX-Keywords: $label1 Work\nX-Mozilla-Status: 1000\n\n>From one\n>>From two\n>>>From three\n>From\n';

  it('mboxrd takes one > off every >+From line', async () => {
    const [raw] = await split(msg);
    const p = parsed(raw, 'mboxrd');
    expect(p.content.toString()).toBe('Subject: q\r\n\r\nFrom one\r\n>From two\r\n>>From three\r\n>From\r\n');
    expect(new Set(p.flags)).toEqual(new Set(['\\Seen', '\\Answered', '\\Flagged', '$label1', 'Work', '$Forwarded']));
  });

  it('mboxo unquotes only >From', async () => {
    const [raw] = await split(msg);
    expect(parsed(raw, 'mboxo').content.toString()).toBe('Subject: q\r\n\r\nFrom one\r\n>>From two\r\n>>>From three\r\n>From\r\n');
  });

  it('drops folded continuation lines of metadata headers only', async () => {
    const [raw] = await split('From a Mon Jan 15 10:30:00 2024\nX-Keywords: one\n two\nSubject: a\n b\n\nx\n');
    const p = parsed(raw);
    expect(p.content.toString()).toBe('Subject: a\r\n b\r\n\r\nx\r\n');
    expect(p.flags).toEqual(['one', 'two']);
  });

  it('reports a message without headers as broken', async () => {
    const [raw] = await split('From a Mon Jan 15 10:30:00 2024\nnot a header\n\nbody\n');
    expect(parseMboxMessage(raw, 'mboxrd')).toMatchObject({ ok: false, reason: expect.stringMatching(/header field/) });
  });
});

describe('mbox export', () => {
  it('writes mboxrd with Status headers that import reads back to the same bytes and flags', async () => {
    const stored = toCrlf(Buffer.from('Return-Path: <s@x.example>\nSubject: t\nStatus: O\n\nFrom me\n>From you\nend'));
    const flags = ['\\Seen', '\\Flagged', '\\Draft', 'Work'];
    const out = formatMboxMessage(stored, flags, new Date(Date.UTC(2024, 0, 5, 1, 2, 3)));
    expect(out.toString()).toBe('From s@x.example Fri Jan  5 01:02:03 2024\nReturn-Path: <s@x.example>\nSubject: t\nStatus: RO\nX-Status: FT\nX-Keywords: Work\n\n>From me\n>>From you\nend\n\n');
    const [raw] = await split(out.toString('latin1'));
    const p = parsed(raw);
    // The last line gains its CRLF; the Status header the message carried is replaced by ours.
    expect(p.content.toString()).toBe('Return-Path: <s@x.example>\r\nSubject: t\r\n\r\nFrom me\r\n>From you\r\nend\r\n');
    expect(new Set(p.flags)).toEqual(new Set(flags));
    expect(p.internalDate?.toISOString()).toBe('2024-01-05T01:02:03.000Z');
  });

  it('formats ctime with a space-padded day', () => {
    expect(ctimeUtc(new Date(0))).toBe('Thu Jan  1 00:00:00 1970');
  });

  it('normalises bare LF to CRLF and leaves CRLF alone', () => {
    expect(toCrlf(Buffer.from('a\nb\r\nc\n\n')).toString()).toBe('a\r\nb\r\nc\r\n\r\n');
    const crlf = Buffer.from('a\r\n');
    expect(toCrlf(crlf)).toBe(crlf);
  });
});
