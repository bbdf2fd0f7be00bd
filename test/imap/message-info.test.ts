import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parser } from 'imapflow/lib/handler/imap-handler.js';
import type { ImapAttributeList } from 'imapflow/lib/handler/types.js';
import { parseBodystructure, parseEnvelope } from 'imapflow/lib/tools.js';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../../src/core/log.ts';
import { WorkerPool } from '../../src/core/workers.ts';
import { extractSection, toCrlf } from '../../src/imap/fetch-body.ts';
import { SUMMARY_TASK_MODULE, SummaryProvider, WORKER_THRESHOLD, parseAddressList, summarizeMessage } from '../../src/imap/message-info.ts';
import { MaildirStore } from '../../src/store/maildir.ts';
import { MailStore } from '../../src/store/mailboxes.ts';
import type { UserMailboxes } from '../../src/store/mailboxes.ts';

const fixture = (name: string): Buffer => readFileSync(new URL(`../fixtures/${name}`, import.meta.url));

type FlowNode = {
  part?: string;
  type: string;
  parameters?: Record<string, string>;
  encoding?: string;
  size?: number;
  lineCount?: number;
  id?: string;
  description?: string;
  disposition?: string;
  dispositionParameters?: Record<string, string>;
  language?: string[];
  envelope?: Record<string, unknown>;
  childNodes?: FlowNode[];
};

/** Read our strings with imapflow's own parser, as a client does. */
async function clientView(envelope: string, bodyStructure: string): Promise<{ envelope: Record<string, unknown>; structure: FlowNode }> {
  const p = (await parser(Buffer.from(`* 1 FETCH (ENVELOPE ${envelope} BODYSTRUCTURE ${bodyStructure})`))) as { attributes: ImapAttributeList[] };
  const list = p.attributes[1];
  return {
    envelope: parseEnvelope(list[1] as ImapAttributeList) as unknown as Record<string, unknown>,
    structure: parseBodystructure(list[3] as ImapAttributeList) as unknown as FlowNode,
  };
}

function leaves(node: FlowNode, out: FlowNode[] = []): FlowNode[] {
  if (node.type.startsWith('multipart/')) for (const c of node.childNodes ?? []) leaves(c, out);
  else out.push(node);
  return out;
}

describe('summarizeMessage: Dovecot reference output (its test-imap-bodystructure.c / test-imap-envelope.c)', () => {
  it('multipart with a nested message, comments, MD5, disposition, language, location, bad encoding', () => {
    const msg =
      'From: user@domain.org\nDate: Sat, 24 Mar 2007 23:00:00 +0200\nMime-Version: 1.0\nContent-Type: multipart/mixed; boundary="foo\n bar"\n\n' +
      'Root MIME prologue\n\n--foo bar\nContent-Type: text/x-myown; charset=us-ascii; foo="quoted\\"string"\nContent-ID: <foo@example.com>\n' +
      'Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\nContent-Disposition: inline; foo=bar\nContent-Description: hellodescription\n' +
      'Content-Language: en, fi, se\nContent-Location: http://example.com/test.txt\n\nhello\n\n--foo bar\nContent-Type: message/rfc822\n\n' +
      'From: sub@domain.org\nTo: sub-to1@domain.org, sub-to2@domain.org\nDate: Sun, 12 Aug 2012 12:34:56 +0300\nSubject: submsg\n' +
      'Content-Type: multipart/alternative; boundary="sub1"\n\nSub MIME prologue\n--sub1\nContent-Type: text/html\nContent-Transfer-Encoding: 8bit\n\n' +
      '<p>Hello world</p>\n\n--sub1\nContent-Type: text/plain\nContent-Transfer-Encoding: ?invalid\n\nHello another world\n\n--sub1--\n' +
      'Sub MIME epilogue\n\n--foo bar--\nRoot MIME epilogue\n';
    const s = summarizeMessage(Buffer.from(msg));
    expect(s.bodyStructure).toBe(
      '(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<foo@example.com>" "hellodescription" "7bit" 7 1 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("inline" ("foo" "bar")) ("en" "fi" "se") "http://example.com/test.txt")' +
        '("message" "rfc822" NIL NIL NIL "7bit" 412 ("Sun, 12 Aug 2012 12:34:56 +0300" "submsg" ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub-to1" "domain.org")(NIL NIL "sub-to2" "domain.org")) NIL NIL NIL NIL) ' +
        '(("text" "html" ("charset" "us-ascii") NIL NIL "8bit" 20 1 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 21 1 NIL NIL NIL NIL) "alternative" ("boundary" "sub1") NIL NIL NIL) 21 NIL NIL NIL NIL) ' +
        '"mixed" ("boundary" "foo bar") NIL NIL NIL)',
    );
    expect(s.body).toBe(
      '(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<foo@example.com>" "hellodescription" "7bit" 7 1)' +
        '("message" "rfc822" NIL NIL NIL "7bit" 412 ("Sun, 12 Aug 2012 12:34:56 +0300" "submsg" ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub-to1" "domain.org")(NIL NIL "sub-to2" "domain.org")) NIL NIL NIL NIL) ' +
        '(("text" "html" ("charset" "us-ascii") NIL NIL "8bit" 20 1)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 21 1) "alternative") 21) "mixed")',
    );
  });

  it('a multipart without any part gets one empty text/plain part', () => {
    const s = summarizeMessage(Buffer.from('Content-Type: multipart/mixed; boundary="foo"\n\n'));
    expect(s.bodyStructure).toBe('(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" ("boundary" "foo") NIL NIL NIL)');
    expect(s.body).toBe('(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")');
  });

  it('8-bit text: size and lines count CRLF', () => {
    const s = summarizeMessage(Buffer.from('From: user@domain.org\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nbody\n\n'));
    expect(s.bodyStructure).toBe('("text" "plain" ("charset" "utf-8") NIL NIL "8bit" 8 2 NIL NIL NIL NIL)');
  });

  it('envelopes: all fields; groups; empty Sender/Reply-To fall back to From; comment as name; source route', () => {
    const all = summarizeMessage(
      Buffer.from(
        'Message-ID: <msg@id>\nIn-Reply-To: <reply@to.id>\nDate: Thu, 15 Feb 2007 01:02:03 +0200\nSubject: subject header\n' +
          'From: From Real <fromuser@fromdomain.org>\nTo: To Real <touser@todomain.org>\nCc: Cc Real <ccuser@ccdomain.org>\n' +
          'Bcc: Bcc Real <bccuser@bccdomain.org>\nSender: Sender Real <senderuser@senderdomain.org>\nReply-To: ReplyTo Real <replytouser@replytodomain.org>\n\nbody\n',
      ),
    );
    expect(all.envelope).toBe(
      '("Thu, 15 Feb 2007 01:02:03 +0200" "subject header" (("From Real" NIL "fromuser" "fromdomain.org")) (("Sender Real" NIL "senderuser" "senderdomain.org")) ' +
        '(("ReplyTo Real" NIL "replytouser" "replytodomain.org")) (("To Real" NIL "touser" "todomain.org")) (("Cc Real" NIL "ccuser" "ccdomain.org")) ' +
        '(("Bcc Real" NIL "bccuser" "bccdomain.org")) "<reply@to.id>" "<msg@id>")',
    );
    const groups = summarizeMessage(
      Buffer.from('Date: Thu, 15 Feb 2007 01:02:03 +0200\nFrom: user@domain (Real Name)\nTo: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\nCc: group:;, group2: (foo) ;\n\nbody\n'),
    );
    expect(groups.envelope).toBe(
      '("Thu, 15 Feb 2007 01:02:03 +0200" NIL (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) ' +
        '((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL "g3" "d3.org")(NIL NIL NIL NIL)) ' +
        '((NIL NIL "group" NIL)(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL NIL NIL)) NIL NIL NIL)',
    );
    const empty = summarizeMessage(Buffer.from('Date: Thu, 15 Feb 2007 01:02:03 +0200\nFrom: user@domain (Real Name)\nSender: \nReply-To: \n\nbody\n'));
    expect(empty.envelope).toBe(
      '("Thu, 15 Feb 2007 01:02:03 +0200" NIL (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) NIL NIL NIL NIL NIL)',
    );
    const route = summarizeMessage(Buffer.from('Date: Thu, 15 Feb 2007 01:02:03 +0200\nFrom: <@route:user@domain>\n\nbody\n'));
    expect(route.envelope).toBe(
      '("Thu, 15 Feb 2007 01:02:03 +0200" NIL ((NIL "@route" "user" "domain")) ((NIL "@route" "user" "domain")) ((NIL "@route" "user" "domain")) NIL NIL NIL NIL NIL)',
    );
  });
});

describe('summarizeMessage: fixtures', () => {
  it('simple.eml: exact ENVELOPE, BODYSTRUCTURE, BODY, sizes and fields', () => {
    const raw = fixture('simple.eml');
    const s = summarizeMessage(raw);
    expect(s.envelope).toBe(
      '("Tue, 1 Jul 2025 10:00:00 +0200" "Lunch on Friday?" (("Alice Example" NIL "alice" "example.org")) (("Alice Example" NIL "alice" "example.org")) ' +
        '(("Alice Example" NIL "alice" "example.org")) (("Bob" NIL "bob" "example.net")(NIL NIL "carol" "example.net")) (("Doe, John" NIL "john.doe" "example.com")) ' +
        'NIL "<earlier@example.net>" "<simple-1@example.org>")',
    );
    expect(s.bodyStructure).toBe('("text" "plain" ("charset" "utf-8" "format" "flowed") NIL NIL "7bit" 52 5 NIL NIL NIL NIL)');
    expect(s.body).toBe('("text" "plain" ("charset" "utf-8" "format" "flowed") NIL NIL "7bit" 52 5)');
    expect(s.rfc822Size).toBe(raw.length);
    expect(s.bareLf).toBe(false);
    expect(raw.subarray(0, s.headerBytes).toString().endsWith('Content-Transfer-Encoding: 7bit\r\n\r\n')).toBe(true);
    expect(raw.length - s.headerBytes).toBe(52);
    expect(s.sentDate).toBe(Date.UTC(2025, 6, 1, 8, 0, 0));
    expect(s.fields).toEqual({
      from: 'Alice Example <alice@example.org>',
      to: 'Bob <bob@example.net>, carol@example.net',
      cc: '"Doe, John" <john.doe@example.com>',
      bcc: '',
      subject: 'Lunch on Friday?',
      messageId: '<simple-1@example.org>',
      inReplyTo: '<earlier@example.net>',
      references: '<first@example.net> <earlier@example.net>',
    });
    expect(s.hasAttachments).toBe(false);
  });

  it('missing-headers.eml: NIL everywhere, text/plain us-ascii by default, no sent date', () => {
    const s = summarizeMessage(fixture('missing-headers.eml'));
    expect(s.envelope).toBe('(NIL "no date, no sender" NIL NIL NIL NIL NIL NIL NIL NIL)');
    expect(s.bodyStructure).toBe('("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 1 NIL NIL NIL NIL)');
    expect(s.sentDate).toBeNull();
    expect(s.fields.from).toBe('');
  });

  it('encoded-words.eml: ENVELOPE keeps RFC 2047 words as sent; fields are decoded; groups framed', async () => {
    const s = summarizeMessage(fixture('encoded-words.eml'));
    expect(s.envelope).toContain('"=?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4=?="');
    expect(s.envelope).toContain('(("=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?=" NIL "juergen" "example.de"))');
    expect(s.envelope).toContain(' ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) ');
    expect(s.envelope).toContain(
      ' ((NIL NIL "Friends" NIL)("=?ISO-8859-1?Q?Andr=E9?=" NIL "andre" "example.fr")("Zoe Q. Public" NIL "zoe" "example.com")(NIL NIL NIL NIL)("Eve the Eavesdropper" NIL "eve" "example.com")) ',
    );
    expect(s.fields.subject).toBe('Grüße aus München');
    expect(s.fields.from).toBe('Jürgen Müller <juergen@example.de>');
    expect(s.fields.cc).toContain('André <andre@example.fr>');
    // imapflow decodes the words itself and reads the groups.
    const view = await clientView(s.envelope, s.bodyStructure);
    expect(view.envelope.subject).toBe('Grüße aus München');
    expect(view.envelope.from).toEqual([{ name: 'Jürgen Müller', address: 'juergen@example.de' }]);
  });

  it('alternative.eml: two text parts with charset and encoding', async () => {
    const s = summarizeMessage(fixture('alternative.eml'));
    const { structure } = await clientView(s.envelope, s.bodyStructure);
    expect(structure.type).toBe('multipart/alternative');
    expect(structure.parameters).toEqual({ boundary: '=_alt_boundary' });
    expect(structure.childNodes?.map((c) => [c.part, c.type, c.parameters?.charset, c.encoding, c.lineCount])).toEqual([
      ['1', 'text/plain', 'iso-8859-1', 'quoted-printable', 2],
      ['2', 'text/html', 'iso-8859-1', 'quoted-printable', 1],
    ]);
    expect(s.hasAttachments).toBe(false);
  });

  it('mixed-attachment.eml: related html + inline image, base64 attachment with description and language', async () => {
    const s = summarizeMessage(fixture('mixed-attachment.eml'));
    const { structure } = await clientView(s.envelope, s.bodyStructure);
    const all = leaves(structure);
    expect(all.map((n) => [n.part, n.type])).toEqual([
      ['1.1', 'text/html'],
      ['1.2', 'image/png'],
      ['2', 'application/pdf'],
    ]);
    expect(all[1]).toMatchObject({ id: '<chart@example.net>', encoding: 'base64', disposition: 'inline', dispositionParameters: { filename: 'chart.png' } });
    expect(all[2]).toMatchObject({ description: 'Quarterly report', disposition: 'attachment', dispositionParameters: { filename: 'report.pdf' }, language: ['en'] });
    expect(structure.childNodes?.[0].parameters).toEqual({ boundary: 'inner', type: 'text/html' });
    expect(s.hasAttachments).toBe(true);
    // BODY has no extension data at all.
    expect(s.body).not.toContain('attachment');
    expect(s.body).not.toContain('boundary');
  });

  it('nested-rfc822.eml: message/rfc822 with its own envelope, structure and line count', async () => {
    const raw = fixture('nested-rfc822.eml');
    const s = summarizeMessage(raw);
    const { structure } = await clientView(s.envelope, s.bodyStructure);
    const fwd = structure.childNodes?.[1];
    expect(fwd?.type).toBe('message/rfc822');
    expect(fwd?.description).toBe('Forwarded message');
    expect(fwd?.envelope).toMatchObject({ subject: 'Newsletter', messageId: '<alt-1@example.org>' });
    expect(fwd?.childNodes?.[0].childNodes?.map((c) => [c.part, c.type])).toEqual([
      ['2.1', 'text/plain'],
      ['2.2', 'text/html'],
    ]);
    const inner = raw.toString().split('Content-Description: Forwarded message\r\n\r\n')[1].split('\r\n--fwd--')[0];
    expect(fwd?.size).toBe(Buffer.byteLength(inner));
    expect(fwd?.lineCount).toBe(inner.split('\n').length - 1);
  });

  it('bare-lf.eml: sizes as if CRLF, and the same structure as the converted file', () => {
    const raw = fixture('bare-lf.eml');
    expect(raw.includes('\r')).toBe(false);
    const s = summarizeMessage(raw);
    const lfs = raw.toString().split('\n').length - 1;
    expect(s.bareLf).toBe(true);
    expect(s.rfc822Size).toBe(raw.length + lfs);
    const crlf = summarizeMessage(toCrlf(raw));
    expect(crlf.bareLf).toBe(false);
    expect(s.bodyStructure).toBe(crlf.bodyStructure);
    expect(s.envelope).toBe(crlf.envelope);
    expect(s.rfc822Size).toBe(crlf.rfc822Size);
    expect(s.headerBytes).toBe(raw.indexOf('\n\n') + 2); // in the stored file's bytes
  });

  it('utf8-body.eml: 8-bit header text goes out as literals with UTF-8 byte counts', () => {
    const s = summarizeMessage(fixture('utf8-body.eml'));
    expect(s.envelope).toContain(`{${Buffer.byteLength('Привет, Bob')}}\r\nПривет, Bob `);
    expect(s.envelope).toContain(`(({${Buffer.byteLength('Дмитрий')}}\r\nДмитрий NIL "dmitry" "example.ru"))`);
    expect(s.bodyStructure).toBe(`("text" "plain" ("charset" "utf-8") NIL NIL "8bit" ${Buffer.byteLength('Привет! Как дела?\r\nÇa va très bien — 日本語も.\r\n')} 2 NIL NIL NIL NIL)`);
    expect(s.fields.subject).toBe('Привет, Bob');
  });
});

describe('summarizeMessage: odd input', () => {
  it('RFC 2231 continuations are joined; an extended value stays encoded under name*', () => {
    const s = summarizeMessage(
      Buffer.from(
        'Content-Type: application/octet-stream;\r\n name*0="very long ";\r\n name*1="name.bin"\r\n' +
          "Content-Disposition: attachment; filename*=utf-8''%C3%A4.txt\r\n\r\nx\r\n",
      ),
    );
    expect(s.bodyStructure).toBe('("application" "octet-stream" ("name" "very long name.bin") NIL NIL "7bit" 3 NIL ("attachment" ("filename*" "utf-8\'\'%C3%A4.txt")) NIL NIL)');
    expect(s.hasAttachments).toBe(true);
  });

  it('header-only message, no blank line: empty body', () => {
    const s = summarizeMessage(Buffer.from('Subject: only a header\r\n'));
    expect(s.headerBytes).toBe(24);
    expect(s.bodyStructure).toBe('("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)');
  });

  it('a broken Content-Type is text/plain; quotes, backslashes and a bare address are escaped/filled', () => {
    const s = summarizeMessage(Buffer.from('From: "A \\"quoted\\" name" <a@b>, localonly\r\nSubject: back\\slash "q"\r\nContent-Type: garbage\r\n\r\nx'));
    expect(s.envelope).toBe('(NIL "back\\\\slash \\"q\\"" (("A \\"quoted\\" name" NIL "a" "b")(NIL NIL "localonly" "MISSING_DOMAIN")) (("A \\"quoted\\" name" NIL "a" "b")(NIL NIL "localonly" "MISSING_DOMAIN")) (("A \\"quoted\\" name" NIL "a" "b")(NIL NIL "localonly" "MISSING_DOMAIN")) NIL NIL NIL NIL NIL)');
    expect(s.bodyStructure).toBe('("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL NIL NIL NIL)');
  });

  it('deep nesting stops at a limit and still gives a structure a client can parse', async () => {
    let msg = 'Subject: deep\r\n';
    for (let i = 0; i < 200; i++) msg += `Content-Type: multipart/mixed; boundary="b${i}"\r\n\r\n--b${i}\r\n`;
    msg += 'Content-Type: text/plain\r\n\r\nbottom\r\n';
    const s = summarizeMessage(Buffer.from(msg));
    const { structure } = await clientView(s.envelope, s.bodyStructure);
    expect(structure.type).toBe('multipart/mixed');
    expect(s.bodyStructure.length).toBeLessThan(20_000);
  });

  it('mangled fixtures never throw, and every section can still be cut', () => {
    let seed = 42;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const specials = Buffer.from('\r\n-:;"<>()=\\ \t\0\xff');
    for (const name of ['mixed-attachment.eml', 'nested-rfc822.eml', 'encoded-words.eml', 'bare-lf.eml']) {
      const base = fixture(name);
      for (let round = 0; round < 150; round++) {
        const buf = Buffer.from(base.subarray(0, rand(base.length + 1)));
        for (let k = 0; k < 8 && buf.length > 0; k++) buf[rand(buf.length)] = specials[rand(specials.length)];
        const s = summarizeMessage(buf);
        expect(s.rfc822Size).toBeGreaterThanOrEqual(buf.length);
        expect(s.bodyStructure.startsWith('(')).toBe(true);
        for (const part of [[], [1], [2], [2, 1], [1, 2, 1]]) {
          for (const text of [undefined, 'HEADER', 'TEXT', 'MIME'] as const) {
            if (text === 'MIME' && part.length === 0) continue;
            expect(() => extractSection(buf, text ? { part, text } : { part })).not.toThrow();
          }
        }
      }
    }
    expect(summarizeMessage(Buffer.alloc(0)).envelope).toBe('(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)');
  });

  it('parseAddressList: a phrase with dots, an empty group, junk', () => {
    expect(parseAddressList('John Q. Public <jqp@example.com>')).toEqual([{ name: 'John Q. Public', adl: null, mailbox: 'jqp', host: 'example.com' }]);
    expect(parseAddressList('')).toEqual([]);
    expect(parseAddressList(',,,')).toEqual([]);
    expect(parseAddressList('list:;')).toEqual([
      { name: null, adl: null, mailbox: 'list', host: null },
      { name: null, adl: null, mailbox: null, host: null },
    ]);
  });
});

// --- the cache ---

let parent: string;
let maildir: MaildirStore;
let stores: MailStore[];
let pool: WorkerPool | undefined;
const al = { user: 'al', domain: 'example.org' };

beforeEach(async () => {
  parent = await fs.mkdtemp(path.join(os.tmpdir(), 'hearth-summary-'));
  let now = Date.UTC(2025, 0, 1);
  maildir = new MaildirStore({ root: path.join(parent, 'maildir'), hostname: 'mx.test', fsync: false, clock: () => (now += 1) });
  stores = [];
});
afterEach(async () => {
  for (const s of stores) await s.close();
  await pool?.close();
  pool = undefined;
  vi.restoreAllMocks();
  await fs.rm(parent, { recursive: true, force: true });
});

async function openAl(): Promise<UserMailboxes> {
  const s = new MailStore({ maildir });
  stores.push(s);
  return s.open(al);
}

async function deliverFixtures(names: string[]): Promise<void> {
  for (const n of names) await maildir.deliver([{ ...al }], fixture(n));
}

describe('SummaryProvider', () => {
  it('computes once, then answers from the index without reading the file', async () => {
    await deliverFixtures(['simple.eml', 'nested-rfc822.eml']);
    const u = await openAl();
    const [rec] = (await u.sync('INBOX')).messages;
    const provider = new SummaryProvider({ log: silentLogger() });
    const reads = vi.spyOn(u, 'readMessage');

    const first = await provider.get(u, 'INBOX', rec);
    expect(first).toEqual(summarizeMessage(fixture('simple.eml')));
    expect(reads).toHaveBeenCalledTimes(1);

    const second = await provider.get(u, 'INBOX', rec);
    expect(second).toEqual(first);
    expect(reads).toHaveBeenCalledTimes(1); // no second read: it came from the cache
    expect(u.cachedSummary('INBOX', rec.uid, rec.key)).toMatch(/^v1:/);
    expect(u.cachedSummary('INBOX', rec.uid, 'another-file')).toBeUndefined();
  });

  it('concurrent gets of one message read it once', async () => {
    await deliverFixtures(['alternative.eml']);
    const u = await openAl();
    const [rec] = (await u.sync('INBOX')).messages;
    const provider = new SummaryProvider({ log: silentLogger() });
    const reads = vi.spyOn(u, 'readMessage');
    const [a, b] = await Promise.all([provider.get(u, 'INBOX', rec), provider.get(u, 'INBOX', rec)]);
    expect(a).toEqual(b);
    expect(reads).toHaveBeenCalledTimes(1);
  });

  it('survives closing and re-opening the index', async () => {
    await deliverFixtures(['mixed-attachment.eml']);
    const u1 = await openAl();
    const [rec] = (await u1.sync('INBOX')).messages;
    const want = await new SummaryProvider({ log: silentLogger() }).get(u1, 'INBOX', rec);
    await stores[0].close();

    const u2 = await openAl(); // a new process: a new MailStore on the same files
    const [again] = (await u2.sync('INBOX')).messages;
    expect(again.uid).toBe(rec.uid);
    const reads = vi.spyOn(u2, 'readMessage');
    const got = await new SummaryProvider({ log: silentLogger() }).get(u2, 'INBOX', again);
    expect(got).toEqual(want);
    expect(reads).not.toHaveBeenCalled();
  });

  it('warm() fills the cache for many messages; later gets read nothing', async () => {
    const names = ['simple.eml', 'alternative.eml', 'mixed-attachment.eml', 'nested-rfc822.eml', 'encoded-words.eml', 'bare-lf.eml', 'utf8-body.eml'];
    await deliverFixtures(names);
    const u = await openAl();
    const recs = (await u.sync('INBOX')).messages;
    const provider = new SummaryProvider({ log: silentLogger() });
    await provider.warm(u, 'INBOX', recs);
    const reads = vi.spyOn(u, 'readMessage');
    const got = await Promise.all(recs.map((r) => provider.get(u, 'INBOX', r)));
    expect(reads).not.toHaveBeenCalled();
    expect(got.map((s) => s?.envelope)).toEqual(names.map((n) => summarizeMessage(fixture(n)).envelope));
  });

  it('warm() never rejects, even on a closed index (it may run unawaited)', async () => {
    await deliverFixtures(['simple.eml']);
    const u = await openAl();
    const recs = (await u.sync('INBOX')).messages;
    await u.close();
    const provider = new SummaryProvider({ log: silentLogger() });
    await expect(provider.warm(u, 'INBOX', recs)).resolves.toBeUndefined();
    await expect(provider.get(u, 'INBOX', recs[0])).rejects.toMatchObject({ code: 'STORE_CLOSED' });
  });

  it('null for a message whose file vanished; the cache row goes with an expunge', async () => {
    await deliverFixtures(['simple.eml', 'alternative.eml']);
    const u = await openAl();
    const [one, two] = (await u.sync('INBOX')).messages;
    const provider = new SummaryProvider({ log: silentLogger() });
    await provider.get(u, 'INBOX', one);
    expect(u.cachedSummary('INBOX', one.uid, one.key)).toBeDefined();
    await u.setFlags('INBOX', [one.uid], 'add', ['\\Deleted']);
    await u.expunge('INBOX');
    expect(u.cachedSummary('INBOX', one.uid, one.key)).toBeUndefined();
    // storeSummaries skips UIDs the index no longer has
    u.storeSummaries('INBOX', [{ uid: one.uid, key: one.key, data: 'v1:{}' }]);
    expect(u.cachedSummary('INBOX', one.uid, one.key)).toBeUndefined();

    await fs.unlink(two.path);
    await expect(provider.get(u, 'INBOX', two)).resolves.toBeNull();
  });

  it('parses a big message in the worker pool, not on the event loop', async () => {
    pool = new WorkerPool({ size: 1, log: silentLogger(), taskModules: [SUMMARY_TASK_MODULE] });
    const line = 'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n';
    const big = Buffer.concat([
      fixture('mixed-attachment.eml').subarray(0, fixture('mixed-attachment.eml').indexOf('--outer--')),
      Buffer.from('--outer\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="big.zip"\r\n\r\n'),
      Buffer.from(line.repeat(Math.ceil((WORKER_THRESHOLD * 2) / line.length))),
      Buffer.from('--outer--\r\n'),
    ]);
    await maildir.deliver([{ ...al }], big);
    await deliverFixtures(['simple.eml']);
    const u = await openAl();
    const [bigRec, smallRec] = (await u.sync('INBOX')).messages;
    expect(bigRec.size).toBeGreaterThan(WORKER_THRESHOLD);
    const provider = new SummaryProvider({ log: silentLogger(), pool });
    const runs = vi.spyOn(pool, 'run');

    const got = await provider.get(u, 'INBOX', bigRec);
    expect(runs).toHaveBeenCalledTimes(1);
    expect(runs.mock.calls[0][0]).toBe('summarize');
    expect(pool.threads).toBe(1); // a thread was started for it
    expect(got).toEqual(summarizeMessage(big));
    expect(got?.hasAttachments).toBe(true);

    await provider.get(u, 'INBOX', smallRec); // small: parsed here
    expect(runs).toHaveBeenCalledTimes(1);
  });
});
