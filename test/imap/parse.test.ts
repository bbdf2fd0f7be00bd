import { describe, expect, it } from 'vitest';
import { CommandAssembler, peekTagAndVerb } from '../../src/imap/assembler.ts';
import { describeForLog, isDone, parseCommand, parseDateTime } from '../../src/imap/parse.ts';
import type { SearchKey } from '../../src/imap/parse.ts';
import { decodeMailboxName, encodeMailboxName } from '../../src/imap/mailbox-name.ts';
import { filterBySequence, formatSequence, highestExplicit, parseSequenceSet, resolveSequence, sequenceHas } from '../../src/imap/sequence.ts';
import { formatAtomOrQuoted, formatFlags, formatList, imapDate, nstring, quoteString } from '../../src/imap/format.ts';
import { assemble, err, feed, ok, parse } from './helpers.ts';

describe('simple commands', () => {
  it.each(['CAPABILITY', 'NOOP', 'LOGOUT', 'STARTTLS', 'NAMESPACE', 'CHECK', 'CLOSE', 'UNSELECT', 'IDLE'] as const)('%s', (verb) => {
    const c = ok(`a001 ${verb.toLowerCase()}`, verb);
    expect(c).toEqual({ ok: true, tag: 'a001', verb, uid: false, sensitive: false, args: {} });
  });

  it('rejects arguments to argument-less commands, with the tag', () => {
    expect(err('A1 NOOP now')).toEqual({ ok: false, tag: 'A1', verb: 'NOOP', text: 'NOOP: unexpected "now" at end of command' });
  });

  it('EXPUNGE and UID EXPUNGE', () => {
    expect(ok('A2 EXPUNGE', 'EXPUNGE').args).toEqual({});
    const u = ok('A3 UID EXPUNGE 3000:3002,3005', 'EXPUNGE');
    expect(u.uid).toBe(true);
    expect(u.args.set).toEqual([{ from: 3000, to: 3002 }, { from: 3005, to: 3005 }]);
    expect(err('A4 UID EXPUNGE').text).toMatch(/UID EXPUNGE: expected a space/);
  });

  it('isDone matches DONE in any case and nothing else', () => {
    expect(isDone(Buffer.from('DONE'))).toBe(true);
    expect(isDone('done')).toBe(true);
    expect(isDone('DONE ')).toBe(false);
    expect(isDone('A1 DONE')).toBe(false);
  });
});

describe('tags and verbs', () => {
  it('missing or bad tag gives an untagged error', () => {
    expect(err('')).toEqual({ ok: false, text: 'missing tag' });
    expect(err(' NOOP').tag).toBeUndefined();
    expect(err('A+1 NOOP')).toEqual({ ok: false, text: 'bad tag' });
    expect(err('A"1 NOOP').tag).toBeUndefined();
    expect(err('A{1 NOOP').tag).toBeUndefined();
    expect(err('A*1 NOOP').tag).toBeUndefined();
  });

  it('accepts unusual but legal tags', () => {
    expect(ok('a]1.x NOOP', 'NOOP').tag).toBe('a]1.x');
    expect(ok('0000 NOOP', 'NOOP').tag).toBe('0000');
  });

  it('unknown verb is tagged "unknown command"', () => {
    expect(err('X1 FROB 1 2')).toEqual({ ok: false, tag: 'X1', text: 'unknown command FROB' });
    expect(err('X2').text).toBe('missing command');
    expect(err('X3 UID LOGIN a b')).toEqual({ ok: false, tag: 'X3', text: 'UID LOGIN: not a UID command' });
  });
});

describe('LOGIN / AUTHENTICATE / ENABLE / ID', () => {
  it('LOGIN with atoms, quoted strings and escapes, marked sensitive', () => {
    const c = ok('a1 LOGIN alice "p\\"a\\\\ss word"', 'LOGIN');
    expect(c.args).toEqual({ user: 'alice', password: 'p"a\\ss word' });
    expect(c.sensitive).toBe(true);
  });

  it('LOGIN with synchronising literals (as imapflow sends non-ASCII passwords)', () => {
    const c = ok('a1 LOGIN {5}\r\nalice {6}\r\npässw\r\n', 'LOGIN');
    expect(c.args).toEqual({ user: 'alice', password: 'pässw' });
  });

  it('LOGIN rejects bad escapes and missing password', () => {
    expect(err('a1 LOGIN alice "a\\b"').text).toMatch(/bad escape/);
    expect(err('a1 LOGIN alice').text).toBe('LOGIN: expected a space, got end of line');
  });

  it('rejects bare CR and NUL inside quoted strings', () => {
    const withCr = Buffer.concat([Buffer.from('a1 LOGIN alice "x'), Buffer.from([0x0d]), Buffer.from('y"')]);
    expect(parseCommand({ lines: [withCr], literals: [], bytes: withCr.length })).toMatchObject({ ok: false, tag: 'a1', text: expect.stringMatching(/NUL, CR or LF/) });
    const withNul = Buffer.from('a1 LOGIN alice "x\0y"', 'latin1');
    expect(parseCommand({ lines: [withNul], literals: [], bytes: withNul.length })).toMatchObject({ ok: false, text: expect.stringMatching(/NUL/) });
  });

  it('AUTHENTICATE PLAIN with and without SASL-IR', () => {
    const ir = Buffer.from('\0alice\0secret').toString('base64');
    const c = ok(`A01 AUTHENTICATE PLAIN ${ir}`, 'AUTHENTICATE');
    expect(c.args.mechanism).toBe('PLAIN');
    expect(c.args.initialResponse?.toString()).toBe('\0alice\0secret');
    expect(c.sensitive).toBe(true);
    expect(ok('A02 authenticate plain', 'AUTHENTICATE').args).toEqual({ mechanism: 'PLAIN' });
    expect(ok('A03 AUTHENTICATE PLAIN =', 'AUTHENTICATE').args.initialResponse).toEqual(Buffer.alloc(0));
    expect(err('A04 AUTHENTICATE PLAIN ab$c').text).toMatch(/base64/);
  });

  it('ENABLE collects capabilities upper-cased', () => {
    expect(ok('e1 ENABLE CONDSTORE utf8=accept', 'ENABLE').args.capabilities).toEqual(['CONDSTORE', 'UTF8=ACCEPT']);
    expect(err('e2 ENABLE').text).toMatch(/ENABLE: expected a space/);
  });

  it('ID with a list (as Thunderbird sends) and with NIL', () => {
    const c = ok('3 ID ("name" "Thunderbird" "version" "115.3.1" "vendor" NIL)', 'ID');
    expect(c.args.params).toEqual([['name', 'Thunderbird'], ['version', '115.3.1'], ['vendor', null]]);
    expect(ok('4 ID NIL', 'ID').args.params).toBeNull();
    expect(ok('5 ID ()', 'ID').args.params).toEqual([]);
    expect(err('6 ID ("name")').text).toMatch(/ID: expected a space/);
  });
});

describe('mailbox commands', () => {
  it('SELECT / EXAMINE, INBOX in any case, (CONDSTORE)', () => {
    expect(ok('A142 SELECT inbox', 'SELECT').args).toEqual({ mailbox: 'INBOX', condstore: false });
    expect(ok('A143 EXAMINE "Sent Items" (CONDSTORE)', 'EXAMINE').args).toEqual({ mailbox: 'Sent Items', condstore: true });
    expect(ok('A144 SELECT "INBOX.Inbox"', 'SELECT').args.mailbox).toBe('INBOX.Inbox');
    expect(err('A145 SELECT INBOX (QRESYNC (1 2))').text).toMatch(/SELECT: expected CONDSTORE/);
  });

  it('decodes modified UTF-7 names and rejects broken ones', () => {
    expect(ok('A1 CREATE &ZeVnLIqe-', 'CREATE').args.mailbox).toBe('日本語');
    expect(ok('A1 CREATE "Tom &- Jerry"', 'CREATE').args.mailbox).toBe('Tom & Jerry');
    expect(err('A1 CREATE "Tom & Jerry"').text).toMatch(/invalid modified UTF-7/);
    // With UTF8=ACCEPT names are raw UTF-8 and "&" is just a character.
    expect(ok('A1 CREATE "Tom & Jerry"', 'CREATE', { utf8: true }).args.mailbox).toBe('Tom & Jerry');
    expect(ok('A1 CREATE "Entwürfe"', 'CREATE', { utf8: true }).args.mailbox).toBe('Entwürfe');
  });

  it('CREATE / DELETE / SUBSCRIBE / UNSUBSCRIBE / RENAME', () => {
    expect(ok('A1 DELETE Archive/2019', 'DELETE').args.mailbox).toBe('Archive/2019');
    expect(ok('A1 SUBSCRIBE "Lists/node"', 'SUBSCRIBE').args.mailbox).toBe('Lists/node');
    expect(ok('A1 UNSUBSCRIBE Junk', 'UNSUBSCRIBE').args.mailbox).toBe('Junk');
    expect(ok('A683 RENAME blurdybloop sarasoop', 'RENAME').args).toEqual({ from: 'blurdybloop', to: 'sarasoop' });
    expect(err('A1 RENAME onlyone').text).toMatch(/RENAME: expected a space/);
  });

  it('LIST classic, as Thunderbird and mbsync send it', () => {
    expect(ok('5 list "" "*"', 'LIST').args).toEqual({ reference: '', patterns: ['*'], selection: [], returnOptions: [], extended: false });
    expect(ok('A1 LIST "" %', 'LIST').args.patterns).toEqual(['%']);
    expect(ok('A1 LIST ~/Mail/ foo/%', 'LIST').args).toMatchObject({ reference: '~/Mail/', patterns: ['foo/%'] });
  });

  it('LIST extended: selection, pattern list, RETURN (SPECIAL-USE CHILDREN SUBSCRIBED STATUS)', () => {
    const c = ok('7 LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "Lists/*") RETURN (CHILDREN SPECIAL-USE SUBSCRIBED STATUS (MESSAGES UNSEEN))', 'LIST');
    expect(c.args).toEqual({
      reference: '',
      patterns: ['INBOX', 'Lists/*'],
      selection: ['SUBSCRIBED', 'RECURSIVEMATCH'],
      returnOptions: ['CHILDREN', 'SPECIAL-USE', 'SUBSCRIBED'],
      returnStatus: ['MESSAGES', 'UNSEEN'],
      extended: true,
    });
    // imapflow: LIST "" "*" RETURN (SPECIAL-USE)
    expect(ok('4 LIST "" "*" RETURN (SPECIAL-USE)', 'LIST').args.returnOptions).toEqual(['SPECIAL-USE']);
    expect(err('8 LIST (RECURSIVEMATCH) "" *').text).toMatch(/RECURSIVEMATCH/);
    expect(err('9 LIST (BOGUS) "" *').text).toMatch(/LIST: expected SUBSCRIBED/);
  });

  it('LSUB', () => {
    expect(ok('A002 LSUB "#news." "comp.mail.*"', 'LSUB').args).toEqual({ reference: '#news.', pattern: 'comp.mail.*' });
  });

  it('STATUS with every item', () => {
    const c = ok('A042 STATUS blurdybloop (UIDNEXT MESSAGES RECENT UIDVALIDITY UNSEEN HIGHESTMODSEQ)', 'STATUS');
    expect(c.args).toEqual({ mailbox: 'blurdybloop', items: ['UIDNEXT', 'MESSAGES', 'RECENT', 'UIDVALIDITY', 'UNSEEN', 'HIGHESTMODSEQ'] });
    expect(err('A043 STATUS INBOX (MESSAGES FOO)').text).toMatch(/STATUS: expected a status item/);
    expect(err('A044 STATUS INBOX ()').text).toMatch(/empty status items/);
  });
});

describe('APPEND', () => {
  const message = 'Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nFrom: Fred Foobar <foobar@Blurdybloop.COM>\r\nSubject: afternoon meeting\r\n\r\nHello Joe\r\n';

  it('with flags, date-time and a synchronising literal (Thunderbird saving a draft)', () => {
    const n = Buffer.byteLength(message);
    const c = ok(`A003 APPEND Drafts (\\seen \\Draft $MDNSent) " 7-Feb-1994 21:52:25 -0800" {${n}}\r\n${message}\r\n`, 'APPEND');
    expect(c.args.mailbox).toBe('Drafts');
    expect(c.args.flags).toEqual(['\\Seen', '\\Draft', '$MDNSent']);
    expect(c.args.date).toBe(Date.UTC(1994, 1, 8, 5, 52, 25));
    expect(Buffer.isBuffer(c.args.message)).toBe(true);
    expect(c.args.message.toString()).toBe(message);
  });

  it('minimal, with a LITERAL+ literal and 8-bit content kept byte for byte', () => {
    const body = Buffer.from([0x53, 0x75, 0x62, 0x6a, 0x3a, 0x20, 0xff, 0xfe, 0x0d, 0x0a]);
    const wire = Buffer.concat([Buffer.from(`A4 APPEND INBOX {${body.length}+}\r\n`), body, Buffer.from('\r\n')]);
    const c = ok(wire, 'APPEND');
    expect(c.args).toEqual({ mailbox: 'INBOX', flags: [], message: body });
  });

  it('rejects a quoted message, a bad date, and a second message', () => {
    expect(err('A5 APPEND INBOX "hello"').text).toMatch(/APPEND: expected a date-time/);
    expect(err('A6 APPEND INBOX hello').text).toMatch(/APPEND: expected the message as a literal/);
    expect(err('A7 APPEND INBOX "31-Feb-2020 00:00:00 +0000" {1}\r\nx\r\n').text).toMatch(/date-time/);
    expect(err('A8 APPEND INBOX {1}\r\nx {1}\r\ny\r\n').text).toMatch(/unexpected/);
  });

  it('parseDateTime handles zones and the fixed-width day', () => {
    expect(parseDateTime('17-Jul-1996 02:44:25 -0700')).toBe(Date.UTC(1996, 6, 17, 9, 44, 25));
    expect(parseDateTime(' 1-Jan-2024 00:00:00 +0100')).toBe(Date.UTC(2023, 11, 31, 23, 0, 0));
    expect(parseDateTime('1-Jan-2024 24:00:00 +0000')).toBeNull();
  });
});

describe('FETCH', () => {
  it('Thunderbird header fetch', () => {
    const c = ok('A1 UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])', 'FETCH');
    expect(c.uid).toBe(true);
    expect(c.args.set).toEqual([{ from: 1, to: '*' }]);
    expect(c.args.attributes).toHaveLength(4);
    expect(c.args.attributes.slice(0, 3)).toEqual([
      { kind: 'simple', name: 'UID' },
      { kind: 'simple', name: 'RFC822.SIZE' },
      { kind: 'simple', name: 'FLAGS' },
    ]);
    const sec = c.args.attributes[3];
    expect(sec.kind === 'section' && sec.peek).toBe(true);
    expect(sec.kind === 'section' && sec.section.text).toBe('HEADER.FIELDS');
    expect(sec.kind === 'section' && sec.section.fields?.length).toBe(14);
    expect(sec.kind === 'section' && sec.label).toBe('BODY[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)]');
  });

  it('macros expand (RFC 3501 6.4.5)', () => {
    expect(ok('A1 FETCH 1:3 FAST', 'FETCH').args).toMatchObject({ macro: 'FAST', attributes: [{ name: 'FLAGS' }, { name: 'INTERNALDATE' }, { name: 'RFC822.SIZE' }] });
    expect(ok('A1 FETCH 2 all', 'FETCH').args.attributes.map((a) => (a.kind === 'simple' ? a.name : a.label))).toEqual(['FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE']);
    expect(ok('A1 FETCH 2 FULL', 'FETCH').args.attributes).toHaveLength(5);
    expect(err('A1 FETCH 2 (ALL)').text).toMatch(/FETCH: expected a fetch attribute/);
  });

  it('UID FETCH adds UID first when the client left it out', () => {
    const c = ok('A1 UID FETCH 4827313:4828442 FLAGS', 'FETCH');
    expect(c.args.attributes).toEqual([{ kind: 'simple', name: 'UID' }, { kind: 'simple', name: 'FLAGS' }]);
  });

  it('every simple attribute', () => {
    const c = ok('A1 FETCH 1 (FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.TEXT RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE UID MODSEQ)', 'FETCH');
    expect(c.args.attributes.map((a) => (a.kind === 'simple' ? a.name : ''))).toEqual(['FLAGS', 'INTERNALDATE', 'RFC822', 'RFC822.HEADER', 'RFC822.TEXT', 'RFC822.SIZE', 'ENVELOPE', 'BODY', 'BODYSTRUCTURE', 'UID', 'MODSEQ']);
  });

  it('sections, partials and labels', () => {
    const c = ok('A1 FETCH 1 (BODY[] BODY.PEEK[1.2.MIME] BODY[TEXT]<0.100> BODY[3.HEADER.FIELDS.NOT (Received "X-Spam")] body.peek[2]<1024.2048> BODY[1.HEADER])', 'FETCH');
    const secs = c.args.attributes.map((a) => (a.kind === 'section' ? { peek: a.peek, section: a.section, partial: a.partial, label: a.label } : null));
    expect(secs).toEqual([
      { peek: false, section: { part: [] }, partial: undefined, label: 'BODY[]' },
      { peek: true, section: { part: [1, 2], text: 'MIME' }, partial: undefined, label: 'BODY[1.2.MIME]' },
      { peek: false, section: { part: [], text: 'TEXT' }, partial: { start: 0, length: 100 }, label: 'BODY[TEXT]<0>' },
      { peek: false, section: { part: [3], text: 'HEADER.FIELDS.NOT', fields: ['Received', 'X-Spam'] }, partial: undefined, label: 'BODY[3.HEADER.FIELDS.NOT (Received X-Spam)]' },
      { peek: true, section: { part: [2] }, partial: { start: 1024, length: 2048 }, label: 'BODY[2]<1024>' },
      { peek: false, section: { part: [1], text: 'HEADER' }, partial: undefined, label: 'BODY[1.HEADER]' },
    ]);
  });

  it('Apple Mail style single section without parentheses, and imapflow BODY.PEEK[]', () => {
    expect(ok('8 UID FETCH 12 BODY.PEEK[]', 'FETCH').args.attributes[1]).toMatchObject({ kind: 'section', peek: true, label: 'BODY[]' });
    expect(ok('9 FETCH 3 BODY[HEADER]', 'FETCH').args.attributes[0]).toMatchObject({ kind: 'section', section: { text: 'HEADER' } });
  });

  it('CHANGEDSINCE modifier (CONDSTORE) and VANISHED', () => {
    const c = ok('s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)', 'FETCH');
    expect(c.args.changedSince).toBe(12345);
    expect(ok('s101 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)', 'FETCH').args.vanished).toBe(true);
    expect(err('s102 FETCH 1:* (FLAGS) (VANISHED)').text).toMatch(/VANISHED/);
    expect(err('s103 FETCH 1 FLAGS (CHANGEDSINCE x)').text).toMatch(/mod-sequence/);
  });

  it('wrong shapes say what was expected', () => {
    expect(err('A1 FETCH foo FLAGS')).toEqual({ ok: false, tag: 'A1', verb: 'FETCH', text: 'FETCH: expected a sequence set, got "foo FLAGS"' });
    expect(err('A1 FETCH 0 FLAGS').text).toMatch(/expected a sequence set/);
    expect(err('A1 FETCH 1 (FLAGS').text).toMatch(/expected a space/);
    expect(err('A1 FETCH 1 BODY[1.MIME').text).toMatch(/"]" to end the section/);
    expect(err('A1 FETCH 1 BODY[MIME]').text).toMatch(/bad section "MIME"/);
    expect(err('A1 FETCH 1 BODY[0]').text).toMatch(/section part number/);
    expect(err('A1 FETCH 1 BODY[]<0.0>').text).toMatch(/partial length/);
    expect(err('A1 FETCH 1 ()').text).toMatch(/empty a fetch attribute list/);
    expect(err('A1 FETCH 1 BINARY[1]').text).toMatch(/expected a fetch attribute/);
  });
});

describe('STORE / COPY / MOVE', () => {
  it('STORE forms', () => {
    expect(ok('A003 STORE 2:4 +FLAGS (\\Deleted)', 'STORE').args).toEqual({ set: [{ from: 2, to: 4 }], action: 'add', silent: false, flags: ['\\Deleted'] });
    expect(ok('A1 UID STORE 5 -FLAGS.SILENT (\\seen $Junk)', 'STORE').args).toEqual({ set: [{ from: 5, to: 5 }], action: 'remove', silent: true, flags: ['\\Seen', '$Junk'] });
    expect(ok('A1 STORE 1 FLAGS ()', 'STORE').args).toMatchObject({ action: 'set', flags: [] });
    expect(ok('A1 STORE 1 +FLAGS \\Flagged \\Answered', 'STORE').args.flags).toEqual(['\\Flagged', '\\Answered']);
    expect(ok('A1 STORE 1:* (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)', 'STORE').args).toMatchObject({ unchangedSince: 320162338, silent: true });
    expect(err('A1 STORE 1 FLAGZ (\\Seen)').text).toBe('STORE: expected FLAGS, +FLAGS or -FLAGS, got "FLAGZ (\\\\Seen)"');
    expect(err('A1 STORE 1 +FLAGS (\\Seen').text).toMatch(/STORE: expected a space/);
  });

  it('COPY and MOVE, UID and not', () => {
    expect(ok('A003 COPY 2:4 MEETING', 'COPY').args).toEqual({ set: [{ from: 2, to: 4 }], mailbox: 'MEETING' });
    const m = ok('a UID MOVE 42:69 "Archive/2024"', 'MOVE');
    expect(m.uid).toBe(true);
    expect(m.args).toEqual({ set: [{ from: 42, to: 69 }], mailbox: 'Archive/2024' });
    expect(err('a COPY 1').text).toMatch(/COPY: expected a space/);
  });
});

describe('SEARCH', () => {
  const crit = (line: string): SearchKey => ok(line, 'SEARCH').args.criteria;

  it('RFC 3501 examples', () => {
    expect(crit('A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"')).toEqual({
      key: 'AND',
      keys: [{ key: 'FLAGGED' }, { key: 'SINCE', date: '1994-02-01' }, { key: 'NOT', inner: { key: 'FROM', value: 'Smith' } }],
    });
    expect(crit('A283 SEARCH TEXT "string not in mailbox"')).toEqual({ key: 'TEXT', value: 'string not in mailbox' });
  });

  it('CHARSET with a literal argument', () => {
    const c = ok('A284 SEARCH CHARSET UTF-8 TEXT {6}\r\nXXXXXX\r\n', 'SEARCH');
    expect(c.args).toEqual({ charset: 'UTF-8', criteria: { key: 'TEXT', value: 'XXXXXX' } });
    expect(ok('A285 SEARCH CHARSET utf-8 SUBJECT {6}\r\nnaïve\r\n', 'SEARCH').args.criteria).toEqual({ key: 'SUBJECT', value: 'naïve' });
  });

  it('OR / NOT / parenthesised groups nest', () => {
    expect(crit('t UID SEARCH OR (FROM alice SUBJECT "re: x") NOT (OR SEEN DELETED)')).toEqual({
      key: 'OR',
      left: { key: 'AND', keys: [{ key: 'FROM', value: 'alice' }, { key: 'SUBJECT', value: 're: x' }] },
      right: { key: 'NOT', inner: { key: 'OR', left: { key: 'SEEN' }, right: { key: 'DELETED' } } },
    });
    expect(crit('t SEARCH OR OR ANSWERED FLAGGED DRAFT')).toEqual({ key: 'OR', left: { key: 'OR', left: { key: 'ANSWERED' }, right: { key: 'FLAGGED' } }, right: { key: 'DRAFT' } });
    expect(crit('t SEARCH ((((SEEN))))')).toEqual({ key: 'SEEN' });
    expect(err('t SEARCH OR SEEN').text).toMatch(/SEARCH: expected a space/);
    expect(err('t SEARCH (SEEN').text).toMatch(/expected a space/);
  });

  it('sequence sets, UID sets, sizes, dates, HEADER, KEYWORD, MODSEQ, YOUNGER', () => {
    expect(crit('t SEARCH 1:5,*')).toEqual({ key: 'SEQ', set: [{ from: 1, to: 5 }, { from: '*', to: '*' }] });
    expect(crit('t SEARCH UID 100:* UNDELETED')).toEqual({ key: 'AND', keys: [{ key: 'UID', set: [{ from: 100, to: '*' }] }, { key: 'UNDELETED' }] });
    expect(crit('t SEARCH LARGER 1024 SMALLER 65536')).toEqual({ key: 'AND', keys: [{ key: 'LARGER', size: 1024 }, { key: 'SMALLER', size: 65536 }] });
    expect(crit('t SEARCH SENTBEFORE "31-Dec-2023" ON 29-feb-2024 BEFORE 9-Jan-2024')).toEqual({
      key: 'AND',
      keys: [{ key: 'SENTBEFORE', date: '2023-12-31' }, { key: 'ON', date: '2024-02-29' }, { key: 'BEFORE', date: '2024-01-09' }],
    });
    expect(crit('t SEARCH HEADER Message-ID "<abc@example.com>"')).toEqual({ key: 'HEADER', field: 'Message-ID', value: '<abc@example.com>' });
    expect(crit('t SEARCH HEADER List-Id ""')).toEqual({ key: 'HEADER', field: 'List-Id', value: '' });
    expect(crit('t SEARCH KEYWORD $Forwarded UNKEYWORD $Junk')).toEqual({ key: 'AND', keys: [{ key: 'KEYWORD', flag: '$Forwarded' }, { key: 'UNKEYWORD', flag: '$Junk' }] });
    expect(crit('t SEARCH MODSEQ 620162338')).toEqual({ key: 'MODSEQ', modseq: 620162338 });
    expect(crit('t SEARCH MODSEQ "/flags/\\\\draft" all 620162338')).toEqual({ key: 'MODSEQ', modseq: 620162338, entry: { name: '/flags/\\draft', type: 'all' } });
    expect(crit('t SEARCH YOUNGER 3600')).toEqual({ key: 'YOUNGER', seconds: 3600 });
    const all = 'ALL ANSWERED DELETED DRAFT FLAGGED NEW OLD RECENT SEEN UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNSEEN';
    expect(crit(`t SEARCH ${all}`)).toEqual({ key: 'AND', keys: all.split(' ').map((key) => ({ key })) });
  });

  it('RETURN options (ESEARCH)', () => {
    expect(ok('t UID SEARCH RETURN (MIN MAX COUNT) UNSEEN', 'SEARCH').args).toEqual({ returnOptions: ['MIN', 'MAX', 'COUNT'], criteria: { key: 'UNSEEN' } });
    expect(ok('t SEARCH RETURN () ALL', 'SEARCH').args.returnOptions).toEqual([]);
  });

  it('bad keys, dates and depth are errors with a tag', () => {
    expect(err('t SEARCH FOO')).toEqual({ ok: false, tag: 't', verb: 'SEARCH', text: 'SEARCH: unknown search key "FOO"' });
    expect(err('t SEARCH SINCE 30-Feb-2024').text).toMatch(/expected a date like 1-Feb-1994/);
    expect(err('t SEARCH SINCE 1-Foo-2024').text).toMatch(/date/);
    expect(err('t SEARCH').text).toMatch(/expected a space/);
    expect(err(`t SEARCH ${'NOT '.repeat(100)}SEEN`).text).toMatch(/nested too deeply/);
    expect(err(`t SEARCH ${'('.repeat(100)}SEEN${')'.repeat(100)}`).text).toMatch(/nested too deeply/);
    expect(crit(`t SEARCH ${'NOT '.repeat(50)}SEEN`).key).toBe('NOT');
  });
});

describe('CommandAssembler', () => {
  const limits = { maxLiteral: 100, maxCommandBytes: 1000, maxLiteralFor: (v: string) => (v === 'APPEND' ? 10_000 : undefined) };

  it('asks for a sync literal, then completes with the next line', () => {
    const asm = new CommandAssembler(limits);
    const r1 = asm.push(Buffer.from('A1 LOGIN {5}'));
    expect(r1).toEqual({ kind: 'need-literal', tag: 'A1', verb: 'LOGIN', size: 5, nonSync: false });
    expect(asm.inProgress).toBe(true);
    expect(asm.literalRemaining).toBe(5);
    asm.addLiteral(Buffer.from('al'));
    asm.addLiteral(Buffer.from('ice'));
    expect(asm.literalRemaining).toBe(0);
    const r2 = asm.push(Buffer.from(' secret'));
    expect(r2.kind).toBe('command');
    if (r2.kind !== 'command') return;
    expect(r2.raw.lines.map(String)).toEqual(['A1 LOGIN {5}', ' secret']);
    expect(r2.raw.literals.map(String)).toEqual(['alice']);
    expect(r2.raw.bytes).toBe(12 + 5 + 7);
    expect(asm.inProgress).toBe(false);
    expect(parseCommand(r2.raw)).toMatchObject({ ok: true, args: { user: 'alice', password: 'secret' } });
  });

  it('reports LITERAL+ as nonSync and a zero-length literal needs no bytes', () => {
    const asm = new CommandAssembler(limits);
    expect(asm.push(Buffer.from('A2 LOGIN {0+}'))).toMatchObject({ kind: 'need-literal', size: 0, nonSync: true });
    expect(asm.literalRemaining).toBe(0);
    const r = asm.push(Buffer.from(' pw'));
    expect(r.kind === 'command' && parseCommand(r.raw)).toMatchObject({ ok: true, args: { user: '', password: 'pw' } });
  });

  it('refuses an oversized sync literal with a tagged BAD before it is sent', () => {
    const asm = new CommandAssembler(limits);
    expect(asm.push(Buffer.from('A3 LOGIN {101}'))).toEqual({ kind: 'error', tag: 'A3', response: 'BAD', text: 'literal too big', close: false });
    expect(asm.inProgress).toBe(false);
    // The client did not send the literal; the next line is a fresh command.
    const r = asm.push(Buffer.from('A4 NOOP'));
    expect(r.kind === 'command' && parseCommand(r.raw)).toMatchObject({ ok: true, tag: 'A4', verb: 'NOOP' });
  });

  it('APPEND gets its own limit and NO [TOOBIG]', () => {
    const asm = new CommandAssembler(limits);
    expect(asm.push(Buffer.from('A5 APPEND INBOX {5000}'))).toMatchObject({ kind: 'need-literal', verb: 'APPEND', size: 5000 });
    asm.reset();
    expect(asm.push(Buffer.from('A6 APPEND INBOX (\\Seen) {10001}'))).toEqual({ kind: 'error', tag: 'A6', response: 'NO', text: '[TOOBIG] literal too big', close: false });
  });

  it('an oversized non-sync literal cannot be refused: BYE and close', () => {
    const asm = new CommandAssembler(limits);
    const r = asm.push(Buffer.from('A7 LOGIN {500+}'));
    expect(r).toMatchObject({ kind: 'error', tag: 'A7', response: 'BYE', close: true });
  });

  it('an absurd literal size is refused, never parsed as a number', () => {
    const asm = new CommandAssembler(limits);
    expect(asm.push(Buffer.from('A8 LOGIN {99999999999999999999}'))).toMatchObject({ kind: 'error', response: 'BAD', close: false });
    expect(asm.push(Buffer.from('A9 LOGIN {99999999999999999999+}'))).toMatchObject({ kind: 'error', response: 'BYE', close: true });
  });

  it('enforces maxCommandBytes over lines and literals, and the literal count', () => {
    const asm = new CommandAssembler({ maxLiteral: 100, maxCommandBytes: 60, maxLiterals: 2 });
    expect(asm.push(Buffer.from(`A1 SEARCH TEXT ${'x'.repeat(60)}`))).toMatchObject({ kind: 'error', tag: 'A1', response: 'BAD', text: 'command too long' });
    expect(asm.push(Buffer.from('A2 SEARCH TEXT {50}'))).toMatchObject({ kind: 'error', text: 'literal too big' });
    const asm2 = new CommandAssembler({ maxLiteral: 100, maxCommandBytes: 1000, maxLiterals: 2 });
    const results = feed(asm2, 'A3 SEARCH TEXT {1}\r\na TEXT {1}\r\nb TEXT {1}\r\n');
    expect(results.map((r) => r.kind)).toEqual(['need-literal', 'need-literal', 'error']);
    expect(results[2]).toMatchObject({ text: 'too many literals', close: false });
  });

  it('a bad tag on a literal line gives an untagged error', () => {
    const asm = new CommandAssembler(limits);
    expect(asm.push(Buffer.from('+ LOGIN {999}'))).toMatchObject({ kind: 'error', tag: undefined, response: 'BAD' });
  });

  it('misuse is a bug and throws', () => {
    const asm = new CommandAssembler(limits);
    expect(() => asm.addLiteral(Buffer.from('x'))).toThrow(/unexpected 1 literal bytes/);
    asm.push(Buffer.from('A1 LOGIN {2}'));
    expect(() => asm.push(Buffer.from('x'))).toThrow(/literal bytes are expected/);
    expect(() => asm.addLiteral(Buffer.from('xyz'))).toThrow();
  });

  it('peekTagAndVerb names UID commands', () => {
    expect(peekTagAndVerb(Buffer.from('a1 uid fetch 1 FLAGS'))).toEqual({ tag: 'a1', verb: 'UID FETCH' });
    expect(peekTagAndVerb(Buffer.from('a+1 NOOP'))).toEqual({ tag: undefined, verb: 'NOOP' });
  });

  it('the parser rejects a literal marker in the middle of a line and a size mismatch', () => {
    const line = Buffer.from('A1 LOGIN {3} x');
    expect(parseCommand({ lines: [line], literals: [], bytes: line.length })).toMatchObject({ ok: false, text: 'LOGIN: literal marker must end the line' });
    const l1 = Buffer.from('A1 LOGIN {3}');
    expect(parseCommand({ lines: [l1, Buffer.from(' x')], literals: [Buffer.from('ab')], bytes: 0 })).toMatchObject({ ok: false, text: 'LOGIN: literal size mismatch' });
  });

  it('describeForLog redacts credentials and does not show literal bytes', () => {
    expect(describeForLog(assemble('A1 LOGIN alice hunter2'))).toBe('A1 LOGIN [redacted]');
    expect(describeForLog(assemble('A1 AUTHENTICATE PLAIN AGFsaWNlAGh1bnRlcjI='))).toBe('A1 AUTHENTICATE PLAIN [redacted]');
    expect(describeForLog(assemble('A1 SEARCH TEXT {6}\r\nsecret\r\n'))).toBe('A1 SEARCH TEXT {6}<literal>');
  });
});

describe('modified UTF-7 mailbox names', () => {
  it.each([
    ['日本語', '&ZeVnLIqe-'],
    ['&', '&-'],
    ['Tom & Jerry', 'Tom &- Jerry'],
    ['~peter/mail/台北/日本語', '~peter/mail/&U,BTFw-/&ZeVnLIqe-'],
    ['Entwürfe', 'Entw&APw-rfe'],
    ['😀 smile', '&2D3eAA- smile'],
    ['INBOX', 'INBOX'],
    ['', ''],
  ])('%s ↔ %s', (unicode, wire) => {
    expect(encodeMailboxName(unicode)).toBe(wire);
    expect(decodeMailboxName(wire)).toBe(unicode);
  });

  it.each(['&', '&Jjo', '&Jjo!-', '&AGE-', '&2D0-', '&U,BTF-'])('rejects invalid %s', (wire) => {
    expect(decodeMailboxName(wire)).toBeNull();
  });
});

describe('sequence sets', () => {
  it('parses the forms clients send', () => {
    expect(parseSequenceSet('1:*')).toEqual([{ from: 1, to: '*' }]);
    expect(parseSequenceSet('*:4')).toEqual([{ from: '*', to: 4 }]);
    expect(parseSequenceSet('1,3:5,7')).toEqual([{ from: 1, to: 1 }, { from: 3, to: 5 }, { from: 7, to: 7 }]);
    for (const bad of ['', '0', '01', '1,', ',1', '1::2', '1:', '4294967296', 'a', '1 2']) expect(parseSequenceSet(bad)).toBeNull();
    expect(parseSequenceSet('4294967295')).toEqual([{ from: 4294967295, to: 4294967295 }]);
  });

  it('resolves *, reversed ranges, overlaps and clamps to the mailbox', () => {
    expect(resolveSequence(parseSequenceSet('1:*')!, 0)).toEqual([]);
    expect(resolveSequence(parseSequenceSet('*')!, 0)).toEqual([]);
    expect(resolveSequence(parseSequenceSet('*')!, 5)).toEqual([5]);
    expect(resolveSequence(parseSequenceSet('4:2')!, 10)).toEqual([2, 3, 4]);
    expect(resolveSequence(parseSequenceSet('*:3')!, 5)).toEqual([3, 4, 5]);
    expect(resolveSequence(parseSequenceSet('3:5,1,4:7,2')!, 6)).toEqual([1, 2, 3, 4, 5, 6]);
    // RFC 3501 6.4.8: UID n:* with n beyond the highest UID still means the highest.
    expect(resolveSequence(parseSequenceSet('100:*')!, 42)).toEqual([42]);
    expect(resolveSequence(parseSequenceSet('100:200')!, 42)).toEqual([]);
  });

  it('highestExplicit, sequenceHas and filterBySequence', () => {
    const set = parseSequenceSet('2,5:*,9')!;
    expect(highestExplicit(set)).toBe(9);
    expect(sequenceHas(set, 7, 8)).toBe(true);
    expect(sequenceHas(set, 3, 8)).toBe(false);
    expect(filterBySequence(parseSequenceSet('1:*')!, [3, 17, 4000000], 4000000)).toEqual([3, 17, 4000000]);
    expect(filterBySequence(parseSequenceSet('10:20,*')!, [3, 17, 4000000], 4000000)).toEqual([17, 4000000]);
    expect(filterBySequence(parseSequenceSet('1:*')!, [], 0)).toEqual([]);
  });

  it('formatSequence is compact and sorted', () => {
    expect(formatSequence([1, 2, 3, 7])).toBe('1:3,7');
    expect(formatSequence([9, 3, 4, 3, 10, 1])).toBe('1,3:4,9:10');
    expect(formatSequence([])).toBe('');
    expect(formatSequence([42])).toBe('42');
  });
});

describe('format helpers', () => {
  it('quoteString quotes safe text and uses literals otherwise', () => {
    expect(quoteString('hello world')).toBe('"hello world"');
    expect(quoteString('say "hi" \\o/')).toBe('"say \\"hi\\" \\\\o/"');
    expect(quoteString('')).toBe('""');
    expect(quoteString('line1\r\nline2')).toBe('{12}\r\nline1\r\nline2');
    expect(quoteString('Grüße')).toBe('{7}\r\nGrüße');
    expect(quoteString('Grüße', { utf8: true })).toBe('"Grüße"');
    expect(quoteString('x'.repeat(2000))).toMatch(/^\{2000\}\r\n/);
  });

  it('round-trips through the parser', () => {
    for (const s of ['plain', 'with space', 'q"uote', 'back\\slash', 'multi\r\nline', 'ünïcödé', '']) {
      const c = parse(`A1 LOGIN user ${quoteString(s)}\r\n`);
      expect(c).toMatchObject({ ok: true, args: { password: s } });
    }
  });

  it('formatAtomOrQuoted, nstring, formatList, formatFlags', () => {
    expect(formatAtomOrQuoted('INBOX')).toBe('INBOX');
    expect(formatAtomOrQuoted('Sent Items')).toBe('"Sent Items"');
    expect(formatAtomOrQuoted('NIL')).toBe('"NIL"');
    expect(formatAtomOrQuoted('a]b')).toBe('"a]b"');
    expect(formatAtomOrQuoted('')).toBe('""');
    expect(nstring(null)).toBe('NIL');
    expect(nstring(undefined)).toBe('NIL');
    expect(nstring('x')).toBe('"x"');
    expect(formatList(['"a"', 'NIL', '1'])).toBe('("a" NIL 1)');
    expect(formatList([])).toBe('()');
    expect(formatFlags(['\\Seen', '$Forwarded'])).toBe('(\\Seen $Forwarded)');
  });

  it('imapDate', () => {
    expect(imapDate(Date.UTC(1996, 6, 17, 9, 44, 25), -420)).toBe('17-Jul-1996 02:44:25 -0700');
    expect(imapDate(Date.UTC(2024, 0, 1, 0, 0, 0), 0)).toBe(' 1-Jan-2024 00:00:00 +0000');
    expect(imapDate(Date.UTC(2024, 0, 1, 0, 0, 0), 330)).toBe(' 1-Jan-2024 05:30:00 +0530');
    expect(parseDateTime(imapDate(1_700_000_000_000))).toBe(1_700_000_000_000);
  });
});

describe('sequence sets at scale', () => {
  it('filterBySequence stays fast with many ranges and many UIDs', () => {
    const set = parseSequenceSet(Array.from({ length: 5000 }, (_, i) => `${i * 20 + 1}:${i * 20 + 5}`).join(','))!;
    const uids = Array.from({ length: 100_000 }, (_, i) => i + 1);
    const t0 = performance.now();
    const hit = filterBySequence(set, uids, 100_000);
    expect(hit).toHaveLength(25_000);
    expect(hit.slice(0, 6)).toEqual([1, 2, 3, 4, 5, 21]);
    expect(performance.now() - t0).toBeLessThan(500);
  });
});

describe('real client transcripts', () => {
  it.each([
    // mbsync
    ['6 UID FETCH 1:1000000000 (UID FLAGS)', 'FETCH', true],
    ['7 UID FETCH 3:5 (UID FLAGS BODY.PEEK[HEADER.FIELDS (X-TUID)])', 'FETCH', true],
    ['8 UID STORE 12 +FLAGS.SILENT (\\Deleted)', 'STORE', true],
    // Thunderbird
    ['5 select "INBOX"', 'SELECT', false],
    ['9 uid store 5 +Flags ($Forwarded)', 'STORE', true],
    ['10 UID MOVE 5 "Trash"', 'MOVE', true],
    ['11 UID fetch 5 (UID RFC822.SIZE BODY.PEEK[])', 'FETCH', true],
    ['12 lsub "" "*"', 'LSUB', false],
    ['13 list (SUBSCRIBED) "" "*" RETURN (SPECIAL-USE)', 'LIST', false],
    // Apple Mail
    ['14 UID FETCH 1:* (FLAGS UID) (CHANGEDSINCE 123)', 'FETCH', true],
    ['15 UID SEARCH 1:* NOT DELETED', 'SEARCH', true],
    ['16 STATUS "INBOX" (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)', 'STATUS', false],
    ['17 UID FETCH 88 (BODYSTRUCTURE BODY.PEEK[HEADER] RFC822.SIZE)', 'FETCH', true],
    // imapflow
    ['1 ID ("name" "imapflow" "version" "1.0.164" "vendor" "Postal Systems" "support-url" "https://github.com/postalsys/imapflow/issues")', 'ID', false],
    ['4 SELECT INBOX', 'SELECT', false],
    ['6 UID SEARCH SEEN', 'SEARCH', true],
    ['7 UID EXPUNGE 12,14', 'EXPUNGE', true],
  ] as const)('%s', (line, verb, uid) => {
    const c = parse(line);
    expect(c).toMatchObject({ ok: true, verb, uid });
  });

  it('a session pipeline: assemble several commands from one buffer', () => {
    const asm = new CommandAssembler({ maxLiteral: 1000, maxCommandBytes: 10_000 });
    const results = feed(asm, 'a1 LOGIN {5+}\r\nalice {3+}\r\npw!\r\na2 SELECT INBOX\r\na3 IDLE\r\n');
    const parsed = results.filter((r) => r.kind === 'command').map((r) => (r.kind === 'command' ? parseCommand(r.raw) : null));
    expect(parsed.map((c) => c?.ok && `${c.tag} ${c.verb}`)).toEqual(['a1 LOGIN', 'a2 SELECT', 'a3 IDLE']);
    expect(parsed[0]).toMatchObject({ args: { user: 'alice', password: 'pw!' } });
  });
});
