import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bodyTextFromRaw, evaluateSearch, fullTextCandidates, headersFromRaw, searchCharsetSupported, sentDay } from '../../src/imap/search-eval.ts';
import type { SearchContext, SearchMessage } from '../../src/imap/search-eval.ts';
import type { SearchKey } from '../../src/imap/search-parse.ts';
import { FullTextIndex, documentFromRaw } from '../../src/store/fulltext.ts';
import { silentLogger } from '../../src/core/log.ts';
import { ok } from './helpers.ts';

const crlf = (lines: string[]): Buffer => Buffer.from(lines.join('\r\n'), 'utf8');
const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

// 1: plain ASCII, seen.
const PLAIN = crlf([
  'From: Alice Example <alice@example.org>',
  'To: Bob <bob@example.net>',
  'Subject: Quarterly report',
  'Date: Tue, 3 Feb 2026 10:00:00 +0000',
  'Message-ID: <q1@example.org>',
  '',
  'Hello Bob,',
  'the quarterly numbers',
  'are attached.',
  '',
]);
// 2: RFC 2047 subject and sender, base64 UTF-8 body, Date in -0800 late in the evening.
const UTF8 = crlf([
  'From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <jorg@example.com>',
  'To: alice@example.org,',
  '  Zoë <zoe@example.net>',
  'Cc: Carol <carol@example.com>',
  `Subject: =?UTF-8?B?${b64('Résumé de réunion')}?=`,
  'Date: Mon, 2 Feb 2026 23:30:00 -0800',
  'MIME-Version: 1.0',
  'Content-Type: text/plain; charset=UTF-8',
  'Content-Transfer-Encoding: base64',
  '',
  b64('Bonjour, voilà le résumé\r\ndu café de la réunion.\r\n'),
  '',
]);
// 3: HTML only, quoted-printable Latin-1.
const HTML = crlf([
  'From: Shop <news@shop.example>',
  'To: list@shop.example',
  'Bcc: dave@example.org',
  'Subject: Newsletter',
  'Date: Tue, 10 Feb 2026 08:00:00 +0100',
  'MIME-Version: 1.0',
  'Content-Type: text/html; charset=ISO-8859-1',
  'Content-Transfer-Encoding: quoted-printable',
  '',
  '<html><head><style>.color-secret{}</style></head><body><p>Spring &amp; Summer <b>sale</b> =E0 moiti=',
  '=E9 prix</p><script>var hidden = "scriptword";</script></body></html>',
  '',
]);
// 4: text plus a base64 attachment whose encoded and decoded bytes must never match; no Date.
const ATTACHMENT_PAYLOAD = 'ZZSECRET payload inside the attachment';
const ATTACH = crlf([
  'From: billing@vendor.example',
  'To: alice@example.org',
  'Subject: Invoice',
  'X-Mailer: hearth-test',
  'MIME-Version: 1.0',
  'Content-Type: multipart/mixed; boundary="b1"',
  '',
  '--b1',
  'Content-Type: text/plain; charset=us-ascii',
  '',
  'please see attached',
  '--b1',
  'Content-Type: application/pdf; name="invoice.pdf"',
  'Content-Disposition: attachment; filename="invoice.pdf"',
  'Content-Transfer-Encoding: base64',
  '',
  b64(ATTACHMENT_PAYLOAD),
  '--b1--',
  '',
]);
const ATTACHMENT_BASE64 = b64(ATTACHMENT_PAYLOAD).slice(0, 16);

type Fixture = SearchMessage & { raw: Buffer };
const at = (iso: string): number => Date.parse(iso);
const NOW = at('2026-02-10T12:00:00Z');

const FIXTURES: Fixture[] = [
  { seq: 1, uid: 10, modseq: 5, flags: ['\\Seen'], internalDate: at('2026-02-03T10:00:05Z'), recent: false, raw: PLAIN, size: PLAIN.length },
  { seq: 2, uid: 11, modseq: 9, flags: ['\\Flagged', '$Important'], internalDate: at('2026-02-05T00:30:00Z'), recent: true, raw: UTF8, size: UTF8.length },
  { seq: 3, uid: 20, modseq: 12, flags: ['\\Answered', '\\Seen', '\\Deleted'], internalDate: at('2026-02-10T07:00:00Z'), recent: true, raw: HTML, size: HTML.length },
  { seq: 4, uid: 25, modseq: 3, flags: ['\\Draft'], internalDate: at('2026-01-31T23:59:59Z'), recent: false, raw: ATTACH, size: ATTACH.length },
];

type Counting = SearchContext & { calls: { headers: number[]; body: number[] }; maxInFlight: number };

function context(fixtures: Fixture[] = FIXTURES, extra: Partial<SearchContext> = {}): Counting {
  const calls = { headers: [] as number[], body: [] as number[] };
  let inFlight = 0;
  const ctx: Counting = {
    messages: fixtures,
    maxUid: Math.max(0, ...fixtures.map((f) => f.uid)),
    now: () => NOW,
    timezoneOffsetMinutes: 0,
    calls,
    maxInFlight: 0,
    async headers(m) {
      calls.headers.push(m.uid);
      return headersFromRaw((m as Fixture).raw);
    },
    async bodyText(m) {
      calls.body.push(m.uid);
      inFlight++;
      ctx.maxInFlight = Math.max(ctx.maxInFlight, inFlight);
      await new Promise((r) => setImmediate(r));
      inFlight--;
      return bodyTextFromRaw((m as Fixture).raw);
    },
    ...extra,
  };
  return ctx;
}

const criteria = (text: string): SearchKey => ok(`t SEARCH ${text}`, 'SEARCH').args.criteria;

async function uids(text: string | SearchKey, ctx: SearchContext = context()): Promise<number[]> {
  const key = typeof text === 'string' ? criteria(text) : text;
  return (await evaluateSearch(key, ctx)).map((m) => m.uid);
}

describe('flag keys', () => {
  it.each([
    ['ALL', [10, 11, 20, 25]],
    ['SEEN', [10, 20]],
    ['UNSEEN', [11, 25]],
    ['ANSWERED', [20]],
    ['UNANSWERED', [10, 11, 25]],
    ['DELETED', [20]],
    ['UNDELETED', [10, 11, 25]],
    ['DRAFT', [25]],
    ['UNDRAFT', [10, 11, 20]],
    ['FLAGGED', [11]],
    ['UNFLAGGED', [10, 20, 25]],
    ['RECENT', [11, 20]],
    // RFC 3501 6.4.4: NEW = RECENT UNSEEN (20 is recent but seen); OLD = NOT RECENT.
    ['NEW', [11]],
    ['OLD', [10, 25]],
    ['KEYWORD $important', [11]],
    ['UNKEYWORD $IMPORTANT', [10, 20, 25]],
    ['KEYWORD \\Seen', [10, 20]],
  ])('%s', async (text, want) => {
    expect(await uids(text)).toEqual(want);
  });
});

describe('size, modseq, uid and sequence keys', () => {
  it('LARGER and SMALLER are strict', async () => {
    const size = FIXTURES[0].size;
    expect(await uids(`LARGER ${size}`)).not.toContain(10);
    expect(await uids(`LARGER ${size - 1}`)).toContain(10);
    expect(await uids(`SMALLER ${size}`)).not.toContain(10);
    expect(await uids(`SMALLER ${size + 1}`)).toContain(10);
    expect(await uids('SMALLER 1')).toEqual([]);
  });

  it('MODSEQ is "equal to or greater than" (RFC 7162 3.1.5), with or without an entry', async () => {
    expect(await uids('MODSEQ 9')).toEqual([11, 20]);
    expect(await uids('MODSEQ "/flags/\\\\Seen" all 12')).toEqual([20]);
    expect(await uids('MODSEQ 13')).toEqual([]);
  });

  it('UID sets with * (the highest UID), reversed and beyond the end', async () => {
    expect(await uids('UID 11:*')).toEqual([11, 20, 25]);
    expect(await uids('UID *')).toEqual([25]);
    expect(await uids('UID 30:*')).toEqual([25]); // RFC 3501 6.4.8: n:* with n > max is max
    expect(await uids('UID 20:11')).toEqual([11, 20]);
    expect(await uids('UID 1:10,21:24')).toEqual([10]);
    expect(await uids('UID 12:19')).toEqual([]);
  });

  it('sequence sets with * (the message count)', async () => {
    expect(await uids('2:*')).toEqual([11, 20, 25]);
    expect(await uids('*')).toEqual([25]);
    expect(await uids('1,3')).toEqual([10, 20]);
    expect(await uids('3:2 SEEN')).toEqual([20]);
  });

  it('an empty mailbox matches nothing, even for * and ALL', async () => {
    expect(await uids('ALL', context([]))).toEqual([]);
    expect(await uids('UID *', context([]))).toEqual([]);
  });
});

describe('dates', () => {
  it('BEFORE/ON/SINCE compare the internal date\'s day, not the time', async () => {
    expect(await uids('ON 3-Feb-2026')).toEqual([10]);
    expect(await uids('BEFORE 3-Feb-2026')).toEqual([25]);
    expect(await uids('SINCE 5-Feb-2026')).toEqual([11, 20]);
    expect(await uids('SINCE 3-Feb-2026 BEFORE 5-Feb-2026')).toEqual([10]);
    // 23:59:59 on 31 Jan is still 31 Jan: BEFORE is strict, SINCE inclusive.
    expect(await uids('ON 31-Jan-2026')).toEqual([25]);
    expect(await uids('BEFORE 31-Jan-2026')).toEqual([]);
    expect(await uids('SINCE 31-Jan-2026')).toEqual([10, 11, 20, 25]);
  });

  it('internal dates are read in the configured zone', async () => {
    // One hour east, 23:59:59Z on 31 Jan is already 1 Feb; 00:30Z on 5 Feb stays 5 Feb.
    const east = context(FIXTURES, { timezoneOffsetMinutes: 60 });
    expect(await uids('ON 1-Feb-2026', east)).toEqual([25]);
    expect(await uids('ON 5-Feb-2026', east)).toEqual([11]);
    // Two hours west, 00:30Z on 5 Feb is 4 Feb.
    expect(await uids('ON 4-Feb-2026', context(FIXTURES, { timezoneOffsetMinutes: -120 }))).toEqual([11]);
  });

  it('SENT* use the day written in the Date: header (the sender\'s zone)', async () => {
    // 2 Feb 23:30 -0800 is 3 Feb in UTC, but the sender sent it on 2 Feb.
    expect(await uids('SENTON 2-Feb-2026')).toEqual([11]);
    expect(await uids('SENTON 3-Feb-2026')).toEqual([10]);
    expect(await uids('SENTBEFORE 3-Feb-2026')).toEqual([11]);
    expect(await uids('SENTSINCE 3-Feb-2026')).toEqual([10, 20]);
    // No Date: header: no SENT* key matches, and NOT SENT* does.
    expect(await uids('SENTSINCE 1-Jan-1970')).toEqual([10, 11, 20]);
    expect(await uids('NOT SENTSINCE 1-Jan-1970')).toEqual([25]);
  });

  it('sentDay reads the written date, including obsolete years', () => {
    expect(sentDay('Mon, 2 Feb 2026 23:30:00 -0800')).toBe('2026-02-02');
    expect(sentDay('2 February 2026 01:00 +1400')).toBe('2026-02-02');
    expect(sentDay('Fri, 13 Mar 98 10:00 EST')).toBe('1998-03-13');
    expect(sentDay('Fri, 13 Mar 04 10:00 GMT')).toBe('2004-03-13');
    expect(sentDay('yesterday')).toBeNull();
  });

  it('OLDER is strictly older, YOUNGER younger or equal (RFC 5032)', async () => {
    const age10 = (NOW - FIXTURES[0].internalDate) / 1000; // message 10's exact age in seconds
    expect(await uids(`YOUNGER ${age10}`)).toEqual([10, 11, 20]);
    expect(await uids(`OLDER ${age10}`)).toEqual([25]);
    expect(await uids(`OLDER ${age10 - 1}`)).toEqual([10, 25]);
    expect(await uids('YOUNGER 18000')).toEqual([20]); // within 5 hours
  });
});

describe('header and text keys on decoded text', () => {
  it('SUBJECT matches the RFC 2047-decoded subject, case-insensitively, accents included', async () => {
    expect(await uids({ key: 'SUBJECT', value: 'RÉSUMÉ' })).toEqual([11]);
    expect(await uids({ key: 'SUBJECT', value: 'de réu' })).toEqual([11]);
    // IMAP asks for the string: "resume" is not "résumé".
    expect(await uids('SUBJECT resume')).toEqual([]);
    expect(await uids('SUBJECT "quarterly REPORT"')).toEqual([10]);
    // Not the encoded form.
    expect(await uids('SUBJECT "?UTF-8?B?"')).toEqual([]);
  });

  it('NFC and NFD spellings of a search string find the same message', async () => {
    expect(await uids({ key: 'SUBJECT', value: 'Re\u0301sume\u0301' })).toEqual([11]);
  });

  it('FROM/TO/CC/BCC match names and addresses of the whole header', async () => {
    expect(await uids({ key: 'FROM', value: 'jörg müller' })).toEqual([11]);
    expect(await uids('FROM jorg@example')).toEqual([11]);
    expect(await uids('FROM alice')).toEqual([10]);
    expect(await uids({ key: 'TO', value: 'zoë' })).toEqual([11]); // on a folded continuation line
    expect(await uids('TO alice@example.org')).toEqual([11, 25]);
    expect(await uids('CC carol')).toEqual([11]);
    expect(await uids('BCC dave@example')).toEqual([20]);
    expect(await uids('BCC alice')).toEqual([]);
  });

  it('HEADER matches a field by name; an empty value means "has the field"', async () => {
    expect(await uids('HEADER X-Mailer ""')).toEqual([25]);
    expect(await uids('HEADER x-mailer HEARTH')).toEqual([25]);
    expect(await uids('HEADER Message-ID "<q1@"')).toEqual([10]);
    expect(await uids('HEADER Date ""')).toEqual([10, 11, 20]);
    expect(await uids('HEADER X-Missing ""')).toEqual([]);
    expect(await uids('NOT HEADER Date ""')).toEqual([25]);
  });

  it('BODY searches the base64 body after decoding, and across line breaks', async () => {
    expect(await uids({ key: 'BODY', value: 'voilà le RÉSUMÉ du café' })).toEqual([11]);
    expect(await uids('BODY "numbers are attached"')).toEqual([10]);
    expect(await uids(`BODY "${b64('Bonjour').slice(0, 8)}"`)).toEqual([]);
    // The body is not the header.
    expect(await uids('BODY Quarterly')).toEqual([10]); // "the quarterly numbers"
    expect(await uids('BODY "Alice Example"')).toEqual([]);
  });

  it('HTML-only mail is searched as text: no tags, styles or scripts; QP and Latin-1 decoded', async () => {
    expect(await uids('BODY "spring & summer sale"')).toEqual([20]);
    expect(await uids({ key: 'BODY', value: 'à moitié prix' })).toEqual([20]);
    expect(await uids('BODY "<b>"')).toEqual([]);
    expect(await uids('BODY color-secret')).toEqual([]);
    expect(await uids('BODY scriptword')).toEqual([]);
    expect(await uids('BODY "&amp;"')).toEqual([]);
  });

  it('attachments are not searched, neither encoded nor decoded', async () => {
    expect(await uids('BODY "see attached"')).toEqual([25]);
    expect(await uids('BODY ZZSECRET')).toEqual([]);
    expect(await uids(`BODY ${ATTACHMENT_BASE64}`)).toEqual([]);
    expect(await uids(`TEXT ${ATTACHMENT_BASE64}`)).toEqual([]);
    expect(await uids('TEXT ZZSECRET')).toEqual([]);
  });

  it('TEXT searches every header field and the body', async () => {
    expect(await uids('TEXT hearth-test')).toEqual([25]); // X-Mailer
    expect(await uids('TEXT quarterly')).toEqual([10]);
    expect(await uids('TEXT "numbers are"')).toEqual([10]);
    expect(await uids({ key: 'TEXT', value: 'réunion' })).toEqual([11]); // subject and body
    expect(await uids('TEXT "x-mailer: hearth"')).toEqual([25]);
  });

  it('an empty string is in every message', async () => {
    const ctx = context();
    expect(await uids('BODY ""', ctx)).toEqual([10, 11, 20, 25]);
    expect(ctx.calls.body).toEqual([]);
  });

  it('a message that vanished (loader returns null) matches no text key and does not throw', async () => {
    const ctx = context(FIXTURES, { headers: async () => null, bodyText: async () => null });
    expect(await uids('OR FROM alice BODY hello', ctx)).toEqual([]);
    expect(await uids('NOT TEXT hello', ctx)).toEqual([10, 11, 20, 25]);
  });
});

describe('NOT, OR and nesting', () => {
  it.each([
    ['NOT SEEN', [11, 25]],
    ['NOT NOT SEEN', [10, 20]],
    ['OR SEEN FLAGGED', [10, 11, 20]],
    ['OR OR ANSWERED FLAGGED DRAFT', [11, 20, 25]],
    ['SEEN NOT DELETED', [10]],
    ['(SEEN UNDELETED) FROM alice', [10]],
    ['OR (FROM alice SUBJECT quarterly) NOT (OR SEEN DELETED)', [10, 11, 25]],
    ['NOT (OR BODY "café" SUBJECT invoice)', [10, 20]],
    ['OR NOT BODY attached KEYWORD $Important', [11, 20]],
    ['UID 10:20 NOT BODY hello', [11, 20]],
  ])('%s', async (text, want) => {
    expect(await uids(text)).toEqual(want);
  });
});

describe('SEARCH CHARSET', () => {
  it('accepts US-ASCII and UTF-8 (any case, or none) and refuses the rest', () => {
    expect(searchCharsetSupported(undefined)).toBe(true);
    expect(searchCharsetSupported('US-ASCII')).toBe(true);
    expect(searchCharsetSupported('utf-8')).toBe(true);
    expect(searchCharsetSupported('ISO-8859-1')).toBe(false);
    expect(searchCharsetSupported('KOI8-R')).toBe(false);
    expect(searchCharsetSupported('')).toBe(false);
  });
});

describe('work done', () => {
  it('does not load headers or bodies when cheap keys decide', async () => {
    const ctx = context();
    expect(await uids('LARGER 1000000 TEXT anything', ctx)).toEqual([]);
    expect(await uids('OR ALL BODY nothing', ctx)).toEqual([10, 11, 20, 25]);
    expect(await uids('NOT (DRAFT SEEN FROM x)', ctx)).toEqual([10, 11, 20, 25]);
    expect(ctx.calls).toEqual({ headers: [], body: [] });
  });

  it('loads only the messages that survive the cheap keys', async () => {
    const ctx = context();
    expect(await uids('SEEN BODY quarterly', ctx)).toEqual([10]);
    expect(ctx.calls.body.sort()).toEqual([10, 20]);
    expect(ctx.calls.headers).toEqual([]);
    const ctx2 = context();
    expect(await uids('UID 10 FROM alice SUBJECT report HEADER Date ""', ctx2)).toEqual([10]);
    expect(ctx2.calls.headers).toEqual([10]); // once, however many header keys
    expect(ctx2.calls.body).toEqual([]);
  });

  it('checks header keys before body keys and stops at the first failing one', async () => {
    const ctx = context();
    expect(await uids('BODY hello FROM nobody', ctx)).toEqual([]);
    expect(ctx.calls.headers.length).toBe(4);
    expect(ctx.calls.body).toEqual([]);
    const ctx2 = context();
    expect(await uids('OR BODY quarterly FROM alice', ctx2)).toEqual([10]);
    expect(ctx2.calls.body.sort()).toEqual([11, 20, 25]); // 10 was decided by FROM alone
  });

  it('uses the prefilter: messages outside the candidate set are never loaded', async () => {
    const asked: string[] = [];
    const ctx = context(FIXTURES, {
      candidates: async (key, value) => {
        asked.push(`${key} ${value}`);
        return key === 'BODY' ? new Set([10, 20]) : undefined;
      },
    });
    // Too few undecided messages for the prefilter to pay: not asked.
    expect(await uids('BODY quarterly', ctx)).toEqual([10]);
    expect(asked).toEqual([]);
    const many = Array.from({ length: 40 }, (_, i) => ({ ...FIXTURES[i % 4], seq: i + 1, uid: i * 4 + 10 + (i % 4) }));
    const ids = new Set(many.filter((m) => m.raw === PLAIN).map((m) => m.uid));
    const ctx2 = context(many, { candidates: async (key) => (key === 'BODY' ? ids : undefined) });
    const hits = await evaluateSearch(criteria('BODY quarterly'), ctx2);
    expect(hits.map((m) => m.uid)).toEqual([...ids]);
    expect(ctx2.calls.body.sort((a, b) => a - b)).toEqual([...ids]);
    // NOT over a prefiltered key: everything outside the set is a sure match, without loading.
    const ctx3 = context(many, { candidates: async (key) => (key === 'BODY' ? ids : undefined) });
    expect((await evaluateSearch(criteria('NOT BODY quarterly'), ctx3)).length).toBe(30);
    expect(ctx3.calls.body.length).toBe(10);
    // Short values (< 3 characters) are not sent to the prefilter at all.
    const short: string[] = [];
    await evaluateSearch(criteria('BODY qu'), context(many, { candidates: async (_k, v) => (short.push(v), undefined) }));
    expect(short).toEqual([]);
  });

  it('with raw(), reads each message once for TEXT (headers and body from the same bytes)', async () => {
    const reads: number[] = [];
    const ctx: SearchContext = {
      messages: FIXTURES,
      maxUid: 25,
      now: () => NOW,
      timezoneOffsetMinutes: 0,
      raw: async (m) => (reads.push(m.uid), (m as Fixture).raw),
    };
    // "zzsecret" is in no header and no readable body part: both halves of TEXT are checked.
    expect((await evaluateSearch(criteria('TEXT zzsecret'), ctx)).map((m) => m.uid)).toEqual([]);
    expect(reads.sort()).toEqual([10, 11, 20, 25]);
    reads.length = 0;
    expect((await evaluateSearch(criteria('OR SUBJECT invoice TEXT bonjour'), ctx)).map((m) => m.uid)).toEqual([11, 25]);
    expect(reads.sort()).toEqual([10, 11, 20, 25]);
  });

  it('loads bodies a few at a time', async () => {
    const many = Array.from({ length: 100 }, (_, i) => ({ ...FIXTURES[i % 4], seq: i + 1, uid: i + 1 }));
    const ctx = context(many, { concurrency: 3 });
    const hits = await evaluateSearch(criteria('BODY attached'), ctx);
    expect(hits.length).toBe(50); // "are attached." and "see attached"
    expect(ctx.calls.body.length).toBe(100);
    expect(ctx.maxInFlight).toBe(3);
  });

  it('stops when the signal aborts', async () => {
    const ac = new AbortController();
    const many = Array.from({ length: 50 }, (_, i) => ({ ...FIXTURES[i % 4], seq: i + 1, uid: i + 1 }));
    const ctx = context(many, { concurrency: 1, signal: ac.signal });
    const inner = ctx.bodyText!.bind(ctx);
    ctx.bodyText = async (m) => {
      if (ctx.calls.body.length === 5) ac.abort(new Error('client gone'));
      return inner(m);
    };
    await expect(evaluateSearch(criteria('BODY x'), ctx)).rejects.toThrow('client gone');
    expect(ctx.calls.body.length).toBeLessThan(10);
  });
});

describe('10,000 messages', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hearth-search-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const N = 10_000;
  const raw = (i: number): Buffer =>
    crlf([`From: sender${i}@example.org`, 'To: me@example.org', `Subject: message ${i}`, '', `Body of message ${i}.`, i % 1000 === 7 ? 'The needle-in-haystack is here.' : 'Nothing to see.', '']);
  const messages: Fixture[] = Array.from({ length: N }, (_, i) => {
    const r = raw(i);
    return { seq: i + 1, uid: i + 1, modseq: 1, flags: [], internalDate: NOW, recent: false, raw: r, size: r.length };
  });

  it('SEARCH BODY finishes, with and without the full-text prefilter, with the same answer', async () => {
    const plain = context(messages);
    const hits = await evaluateSearch(criteria('BODY NEEDLE-in'), plain);
    expect(hits.map((m) => m.uid)).toEqual(Array.from({ length: 10 }, (_, k) => k * 1000 + 8));
    expect(plain.calls.body.length).toBe(N);

    const index = FullTextIndex.open(path.join(dir, 'ft.sqlite'), silentLogger());
    try {
      // Index all but the last 100 (new mail not yet indexed must still be searched).
      const docs = await Promise.all(messages.slice(0, N - 100).map(async (m) => ({ uid: m.uid, doc: await documentFromRaw(m.raw) })));
      index.transaction(() => {
        for (const d of docs) index.add('INBOX', 7, d.uid, d.doc);
      });
      const fast = context(messages, { candidates: fullTextCandidates(index, 'INBOX', 7, messages) });
      const hits2 = await evaluateSearch(criteria('BODY NEEDLE-in'), fast);
      expect(hits2.map((m) => m.uid)).toEqual(hits.map((m) => m.uid));
      expect(fast.calls.body.length).toBe(10 + 100); // the 10 indexed candidates + the 100 not yet indexed
    } finally {
      index.close();
    }
  });
});
