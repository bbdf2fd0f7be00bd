import { readFileSync } from 'node:fs';
import { parser } from 'imapflow/lib/handler/imap-handler.js';
import type { ImapAttributeList } from 'imapflow/lib/handler/types.js';
import { parseBodystructure } from 'imapflow/lib/tools.js';
import { describe, expect, it } from 'vitest';
import { applyPartial, extractSection, toCrlf } from '../../src/imap/fetch-body.ts';
import type { FetchSection } from '../../src/imap/fetch-parse.ts';
import { summarizeMessage } from '../../src/imap/message-info.ts';
import { parseCommand } from '../../src/imap/parse.ts';
import { assemble } from './helpers.ts';

const fixture = (name: string): Buffer => readFileSync(new URL(`../fixtures/${name}`, import.meta.url));
const text = (b: Buffer): string => b.toString('utf8');

/** A section as the real parser makes it from `BODY[...]`. */
function section(spec: string): FetchSection {
  const cmd = parseCommand(assemble(`a FETCH 1 (BODY.PEEK[${spec}])`)) as unknown as { args: { attributes: Array<{ kind: string; section: FetchSection }> } };
  const att = cmd.args.attributes[0];
  if (att.kind !== 'section') throw new Error(`not a section: ${spec}`);
  return att.section;
}
const cut = (raw: Buffer, spec: string): string => text(extractSection(raw, section(spec)));

type FlowNode = { part?: string; type: string; size?: number; childNodes?: FlowNode[] };
async function leafSizes(bodyStructure: string): Promise<Array<[string, number]>> {
  const p = (await parser(Buffer.from(`* 1 FETCH (BODYSTRUCTURE ${bodyStructure})`))) as { attributes: ImapAttributeList[] };
  const root = parseBodystructure(p.attributes[1][1] as ImapAttributeList) as unknown as FlowNode;
  const out: Array<[string, number]> = [];
  const walk = (n: FlowNode): void => {
    if (n.type.startsWith('multipart/')) n.childNodes?.forEach(walk);
    else out.push([n.part ?? '1', n.size ?? -1]);
  };
  walk(root);
  return out;
}

describe('section forms on a single-part message (simple.eml)', () => {
  const raw = fixture('simple.eml');
  const s = summarizeMessage(raw);
  const header = text(raw.subarray(0, s.headerBytes));
  const body = text(raw.subarray(s.headerBytes));

  it('[] is the whole message, HEADER the header with its blank line, TEXT the body', () => {
    expect(extractSection(raw, section(''))).toEqual(raw);
    expect(cut(raw, 'HEADER')).toBe(header);
    expect(cut(raw, 'HEADER').endsWith('\r\n\r\n')).toBe(true);
    expect(cut(raw, 'TEXT')).toBe(body);
  });

  it('HEADER.FIELDS: case-insensitive names, continuation lines kept, blank line at the end', () => {
    expect(cut(raw, 'HEADER.FIELDS (subject FROM)')).toBe('From: Alice Example <alice@example.org>\r\nSubject: Lunch on\r\n Friday?\r\n\r\n');
    expect(cut(raw, 'HEADER.FIELDS (X-Nothing)')).toBe('\r\n');
    expect(cut(raw, 'HEADER.FIELDS ("Message-ID")')).toBe('Message-ID: <simple-1@example.org>\r\n\r\n');
  });

  it('HEADER.FIELDS.NOT drops the named fields only', () => {
    const out = cut(raw, 'HEADER.FIELDS.NOT (Received Return-Path SUBJECT)');
    expect(out.startsWith('Date: Tue, 1 Jul 2025')).toBe(true);
    expect(out).not.toMatch(/^(Received|Return-Path|Subject):/im);
    expect(out).not.toContain(' Friday?'); // the continuation went with its field
    expect(out).toContain('Content-Transfer-Encoding: 7bit\r\n\r\n');
    expect(out.length).toBe(header.length - 'Return-Path: <alice@example.org>\r\n'.length - 'Received: from mx.example.org by hearth.test; Tue, 1 Jul 2025 10:00:01 +0200\r\n'.length - 'Subject: Lunch on\r\n Friday?\r\n'.length);
  });

  it('part 1 of a non-multipart message is its body; 1.MIME its header; other parts are empty', () => {
    expect(cut(raw, '1')).toBe(body);
    expect(cut(raw, '1.MIME')).toBe(header);
    expect(cut(raw, '2')).toBe('');
    expect(cut(raw, '1.1')).toBe('');
    expect(cut(raw, '1.HEADER')).toBe(''); // HEADER after a number needs a message/rfc822 part
  });
});

describe('multipart sections (mixed-attachment.eml)', () => {
  const raw = fixture('mixed-attachment.eml');

  it('numbers walk into nested multiparts; MIME is the part header', () => {
    expect(cut(raw, '1.1')).toBe('<p>See the chart: <img src="cid:chart@example.net"></p>\r\n');
    expect(cut(raw, '1.2.MIME')).toBe(
      'Content-Type: image/png; name="chart.png"\r\nContent-Transfer-Encoding: base64\r\nContent-ID: <chart@example.net>\r\nContent-Disposition: inline; filename="chart.png"\r\n\r\n',
    );
    const pdf = extractSection(raw, section('2'));
    const decoded = Buffer.from(text(pdf), 'base64');
    expect(decoded.subarray(0, 8).toString()).toBe('%PDF-1.4');
    expect(decoded.subarray(-6).toString()).toBe('%%EOF\n');
    expect(cut(raw, '1')).toContain('--inner\r\n');
    expect(cut(raw, '1').endsWith('--inner--\r\n')).toBe(true);
  });

  it('parts that do not exist are empty', () => {
    expect(cut(raw, '3')).toBe('');
    expect(cut(raw, '1.3')).toBe('');
    expect(cut(raw, '2.1')).toBe('');
    expect(cut(raw, '1.1.1')).toBe('');
    expect(cut(raw, '2.TEXT')).toBe('');
  });

  it('every part is exactly as long as BODYSTRUCTURE says', async () => {
    for (const name of ['mixed-attachment.eml', 'alternative.eml', 'nested-rfc822.eml', 'bare-lf.eml', 'utf8-body.eml', 'simple.eml']) {
      const file = fixture(name);
      const sizes = await leafSizes(summarizeMessage(file).bodyStructure);
      expect(sizes.length).toBeGreaterThan(0);
      for (const [part, size] of sizes) expect([name, part, extractSection(file, section(part)).length]).toEqual([name, part, size]);
    }
  });
});

describe('an encapsulated message (nested-rfc822.eml)', () => {
  const raw = fixture('nested-rfc822.eml');

  it('2 is the whole inner message; 2.HEADER, 2.TEXT, 2.HEADER.FIELDS address it', () => {
    const inner = cut(raw, '2');
    expect(inner.startsWith('Date: Wed, 2 Jul 2025 09:30:00 +0000\r\n')).toBe(true);
    expect(inner.endsWith('--in--\r\n')).toBe(true);
    const innerHeader = cut(raw, '2.HEADER');
    expect(innerHeader.endsWith('boundary="in"\r\n\r\n')).toBe(true);
    expect(cut(raw, '2.TEXT')).toBe(inner.slice(innerHeader.length));
    expect(cut(raw, '2.HEADER.FIELDS (SUBJECT)')).toBe('Subject: Newsletter\r\n\r\n');
    expect(cut(raw, '2.HEADER.FIELDS.NOT (Date From To Subject Message-ID MIME-Version)')).toBe('Content-Type: multipart/alternative; boundary="in"\r\n\r\n');
    expect(cut(raw, '2.MIME')).toBe('Content-Type: message/rfc822\r\nContent-Description: Forwarded message\r\n\r\n');
  });

  it('2.1 and 2.2 are the inner parts, 2.2.MIME their header', () => {
    expect(cut(raw, '2.1')).toBe('Inner plain.\r\n');
    expect(cut(raw, '2.2')).toBe('<p>Inner html.</p>\r\n');
    expect(cut(raw, '2.2.MIME')).toBe('Content-Type: text/html; charset=us-ascii\r\n\r\n');
    expect(cut(raw, '2.3')).toBe('');
    expect(cut(raw, '1.HEADER')).toBe('');
  });

  it('the top-level TEXT holds both parts', () => {
    const body = cut(raw, 'TEXT');
    expect(body.startsWith('--fwd\r\n')).toBe(true);
    expect(body.endsWith('--fwd--\r\n')).toBe(true);
  });

  it('a single-part inner message: 2.1 is its body', () => {
    const msg = Buffer.from('Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nouter\r\n--x\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--x--\r\n');
    expect(cut(msg, '2.1')).toBe('inner body');
    expect(cut(msg, '2.1.MIME')).toBe('Subject: inner\r\n\r\n');
    expect(cut(msg, '2.2')).toBe('');
  });
});

describe('bare LF files (bare-lf.eml) come out as CRLF', () => {
  const raw = fixture('bare-lf.eml');
  const crlf = toCrlf(raw);

  it('every section form equals the same section of the converted file', () => {
    for (const spec of ['', 'HEADER', 'TEXT', 'HEADER.FIELDS (Subject To)', 'HEADER.FIELDS.NOT (Subject)', '1', '1.MIME', '2', '2.MIME', '3']) {
      const got = extractSection(raw, section(spec));
      expect([spec, text(got)]).toEqual([spec, text(extractSection(crlf, section(spec)))]);
      expect(/(^|[^\r])\n/.test(text(got))).toBe(false);
    }
    expect(extractSection(raw, section('')).length).toBe(summarizeMessage(raw).rfc822Size);
    expect(cut(raw, '1')).toBe('line one\r\nline two\r\n');
    expect(cut(raw, '2')).toBe('note');
  });
});

describe('8-bit body (utf8-body.eml)', () => {
  it('is sent byte for byte', () => {
    const raw = fixture('utf8-body.eml');
    expect(cut(raw, 'TEXT')).toBe('Привет! Как дела?\r\nÇa va très bien — 日本語も.\r\n');
    expect(cut(raw, '1')).toBe(cut(raw, 'TEXT'));
  });
});

describe('applyPartial', () => {
  const data = Buffer.from('0123456789');
  it('cuts <start.length>; past the end is empty; a long length stops at the end', () => {
    expect(applyPartial(data)).toBe(data);
    expect(text(applyPartial(data, { start: 0, length: 4 }))).toBe('0123');
    expect(text(applyPartial(data, { start: 8, length: 100 }))).toBe('89');
    expect(applyPartial(data, { start: 10, length: 1 }).length).toBe(0);
    expect(applyPartial(data, { start: 99, length: 1 }).length).toBe(0);
  });
  it('works with a section from the parser', () => {
    const raw = fixture('simple.eml');
    const cmd = parseCommand(assemble('a FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)]<9.8>)')) as unknown as {
      args: { attributes: Array<{ section: FetchSection; partial?: { start: number; length: number }; label: string }> };
    };
    const att = cmd.args.attributes[0];
    expect(att.label).toBe('BODY[HEADER.FIELDS (SUBJECT)]<9>');
    expect(text(applyPartial(extractSection(raw, att.section), att.partial))).toBe('Lunch on');
  });
});

describe('toCrlf', () => {
  it('converts bare LFs only, leaves CRLF and lone CR alone', () => {
    expect(text(toCrlf(Buffer.from('a\nb\r\nc\rd\n')))).toBe('a\r\nb\r\nc\rd\r\n');
    expect(text(toCrlf(Buffer.from('\n\n')))).toBe('\r\n\r\n');
  });
  it('returns the same buffer when there is nothing to convert', () => {
    const b = Buffer.from('x\r\ny\r\n');
    expect(toCrlf(b)).toBe(b);
    const empty = Buffer.alloc(0);
    expect(toCrlf(empty)).toBe(empty);
  });
});
