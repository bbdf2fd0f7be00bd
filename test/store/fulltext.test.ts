import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/core/log.ts';
import { MailStore } from '../../src/store/mailboxes.ts';
import { MaildirStore } from '../../src/store/maildir.ts';
import { FULLTEXT_FILE, FullTextIndex, bodyTextFromRaw, documentFromRaw, headersFromRaw, htmlToText } from '../../src/store/fulltext.ts';

let dir: string;
let open: FullTextIndex[];

beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'hearth-fulltext-'));
  open = [];
});
afterEach(async () => {
  for (const ix of open) ix.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

function openIndex(file = path.join(dir, FULLTEXT_FILE)): FullTextIndex {
  const ix = FullTextIndex.open(file, silentLogger());
  open.push(ix);
  return ix;
}

const sorted = (s: Set<number> | undefined): number[] | undefined => (s === undefined ? undefined : [...s].sort((a, b) => a - b));

function seed(ix: FullTextIndex): void {
  ix.add('INBOX', 1, 1, { subject: 'Mon Résumé', addresses: 'Jörg Müller <jorg@example.com>\nalice@example.org', body: 'A great opportunity\r\nfor   you.' });
  ix.add('INBOX', 1, 2, { subject: 'Lunch', addresses: 'bob@example.net', body: 'Say "NEAR" * or AND (x) - {body}: done' });
  ix.add('INBOX', 1, 3, { subject: 'résumé attached', addresses: 'carol@example.com', body: 'see the file' });
  ix.add('Archive', 1, 1, { subject: 'resume old', addresses: 'x@y.z', body: 'opportunity elsewhere' });
  ix.add('INBOX', 2, 9, { subject: 'resume under another uidvalidity', addresses: '', body: 'opportunity' });
}

describe('FullTextIndex', () => {
  it('opens a WAL sqlite file with an FTS5 trigram table', () => {
    const ix = openIndex();
    seed(ix);
    expect(fs.existsSync(path.join(dir, FULLTEXT_FILE))).toBe(true);
    expect(fs.existsSync(path.join(dir, `${FULLTEXT_FILE}-wal`))).toBe(true);
    expect(FullTextIndex.pathFor('/m/al')).toBe(`/m/al/${FULLTEXT_FILE}`);
  });

  it('ignores case and diacritics: "resume" finds "Résumé", and "RÉSUMÉ" finds it too', () => {
    const ix = openIndex();
    seed(ix);
    expect(sorted(ix.candidates('INBOX', 1, 'subject', 'resume'))).toEqual([1, 3]);
    expect(sorted(ix.candidates('INBOX', 1, 'subject', 'RÉSUMÉ'))).toEqual([1, 3]);
    expect(sorted(ix.candidates('INBOX', 1, 'addresses', 'muller'))).toEqual([1]);
  });

  it('matches substrings in the middle of a word, and only in the field asked', () => {
    const ix = openIndex();
    seed(ix);
    expect(sorted(ix.candidates('INBOX', 1, 'body', 'ortun'))).toEqual([1]);
    expect(sorted(ix.candidates('INBOX', 1, 'subject', 'ortun'))).toEqual([]);
    expect(sorted(ix.candidates('INBOX', 1, 'addresses', 'example.com'))).toEqual([1, 3]);
    expect(sorted(ix.candidates('INBOX', 1, 'body', 'example.com'))).toEqual([]);
  });

  it('collapses white space, so a phrase across a line break or double space is found', () => {
    const ix = openIndex();
    seed(ix);
    expect(sorted(ix.candidates('INBOX', 1, 'body', 'opportunity for you'))).toEqual([1]);
    expect(sorted(ix.candidates('INBOX', 1, 'body', 'opportunity\nfor  you'))).toEqual([1]);
  });

  it('keeps folders and UIDVALIDITYs apart', () => {
    const ix = openIndex();
    seed(ix);
    expect(sorted(ix.candidates('Archive', 1, 'body', 'opportunity'))).toEqual([1]);
    expect(sorted(ix.candidates('INBOX', 2, 'body', 'opportunity'))).toEqual([9]);
    expect(sorted(ix.candidates('Nope', 1, 'body', 'opportunity'))).toEqual([]);
    expect(sorted(ix.indexedUids('INBOX', 1))).toEqual([1, 2, 3]);
    expect(sorted(ix.indexedUids('INBOX', 2))).toEqual([9]);
  });

  it('treats odd input as literal text, never as FTS5 syntax', () => {
    const ix = openIndex();
    seed(ix);
    expect(sorted(ix.candidates('INBOX', 1, 'body', '"NEAR"'))).toEqual([2]);
    expect(sorted(ix.candidates('INBOX', 1, 'body', 'NEAR'))).toEqual([2]);
    expect(sorted(ix.candidates('INBOX', 1, 'body', '* or AND'))).toEqual([2]);
    expect(sorted(ix.candidates('INBOX', 1, 'body', '(x) - {body}:'))).toEqual([2]);
    expect(sorted(ix.candidates('INBOX', 1, 'body', 'say "'))).toEqual([2]);
    expect(sorted(ix.candidates('INBOX', 1, 'body', '"""'))).toEqual([]);
    expect(sorted(ix.candidates('INBOX', 1, 'body', 'NEAR(a b)'))).toEqual([]);
    expect(sorted(ix.candidates('INBOX', 1, 'subject', 'a\0bc'))).toEqual([]);
  });

  it('cannot help with fewer than 3 characters: undefined, not an empty set', () => {
    const ix = openIndex();
    seed(ix);
    expect(ix.candidates('INBOX', 1, 'body', 'fo')).toBeUndefined();
    expect(ix.candidates('INBOX', 1, 'body', 'é')).toBeUndefined();
    expect(ix.candidates('INBOX', 1, 'body', '')).toBeUndefined();
    expect(ix.candidates('INBOX', 1, 'body', 'a \r\n')).toBeUndefined(); // "a " once white space is collapsed
    expect(ix.candidates('INBOX', 1, 'body', ' a ')).toBeInstanceOf(Set); // spaces count: IMAP matches them too
    expect(sorted(ix.candidates('INBOX', 1, 'body', 'for'))).toEqual([1]);
    expect(sorted(ix.candidates('INBOX', 1, 'body', 'ééé'))).toEqual([]);
  });

  it('removes messages, and re-adding replaces the old text', () => {
    const ix = openIndex();
    seed(ix);
    ix.remove('INBOX', 1, [1, 42]);
    expect(sorted(ix.candidates('INBOX', 1, 'subject', 'resume'))).toEqual([3]);
    expect(sorted(ix.indexedUids('INBOX', 1))).toEqual([2, 3]);
    ix.add('INBOX', 1, 3, { subject: 'changed', addresses: '', body: 'new text' });
    expect(sorted(ix.candidates('INBOX', 1, 'subject', 'resume'))).toEqual([]);
    expect(sorted(ix.candidates('INBOX', 1, 'body', 'new text'))).toEqual([3]);
    expect(sorted(ix.indexedUids('INBOX', 1))).toEqual([2, 3]);
  });

  it('removeFolder forgets other UIDVALIDITYs (or all of them)', () => {
    const ix = openIndex();
    seed(ix);
    expect(ix.removeFolder('INBOX', 2)).toBe(3);
    expect(sorted(ix.indexedUids('INBOX', 1))).toEqual([]);
    expect(sorted(ix.indexedUids('INBOX', 2))).toEqual([9]);
    expect(sorted(ix.candidates('INBOX', 2, 'body', 'opportunity'))).toEqual([9]);
    expect(ix.removeFolder('Archive')).toBe(1);
    expect(sorted(ix.candidates('Archive', 1, 'body', 'opportunity'))).toEqual([]);
  });

  it('persists across close and re-open', () => {
    const ix = openIndex();
    seed(ix);
    ix.remove('INBOX', 1, [2]);
    ix.close();
    const again = openIndex();
    expect(sorted(again.candidates('INBOX', 1, 'subject', 'resume'))).toEqual([1, 3]);
    expect(sorted(again.indexedUids('INBOX', 1))).toEqual([1, 3]);
  });

  it('a transaction that throws leaves nothing behind', () => {
    const ix = openIndex();
    expect(() =>
      ix.transaction(() => {
        ix.add('INBOX', 1, 1, { subject: 'lost', addresses: '', body: '' });
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(ix.indexedUids('INBOX', 1).size).toBe(0);
  });

  it('newestMatches: the newest N matches of all terms, highest UID first, and further down from a UID', () => {
    const ix = openIndex();
    for (let uid = 1; uid <= 30; uid++) {
      ix.add('INBOX', 1, uid, { subject: `note ${uid}`, addresses: uid % 2 ? 'odd@example.org' : 'even@example.org', body: uid % 3 ? 'plain text' : 'the zanzibar plan' });
    }
    // Other folders and UIDVALIDITYs around it in the id space must not leak in.
    ix.add('Archive', 1, 31, { subject: 'note', addresses: 'odd@example.org', body: 'zanzibar' });
    ix.add('INBOX', 2, 7, { subject: 'note', addresses: 'odd@example.org', body: 'zanzibar' });
    const body = [{ fields: ['body'] as const, text: 'zanzibar' }];
    expect(ix.newestMatches('INBOX', 1, body, 4)).toEqual([30, 27, 24, 21]);
    expect(ix.newestMatches('INBOX', 1, body, 4, 21)).toEqual([18, 15, 12, 9]);
    expect(ix.newestMatches('INBOX', 1, body, 100, 9)).toEqual([6, 3]);
    expect(ix.newestMatches('INBOX', 1, body, -1)).toEqual([30, 27, 24, 21, 18, 15, 12, 9, 6, 3]);
    // Terms are ANDed; a term's fields are ORed (the phrase within one field).
    const both = [
      { fields: ['body'] as const, text: 'ZANZIBAR' },
      { fields: ['addresses'] as const, text: 'odd@' },
    ];
    expect(ix.newestMatches('INBOX', 1, both, 10)).toEqual([27, 21, 15, 9, 3]);
    expect(ix.newestMatches('INBOX', 1, [{ fields: ['subject', 'body'], text: 'note 1' }], 3)).toEqual([19, 18, 17]);
    expect(ix.newestMatches('INBOX', 1, [{ fields: ['subject'], text: 'zanzibar' }], 10)).toEqual([]);
    expect(ix.newestMatches('INBOX', 2, body, 10)).toEqual([7]);
    expect(ix.newestMatches('Nope', 1, body, 10)).toEqual([]);
    // Odd input is literal text here too.
    expect(ix.newestMatches('INBOX', 1, [{ fields: ['body'], text: '"plan" OR *' }], 10)).toEqual([]);
  });

  it('indexedBetween: the UIDs held in a range, and which are indexed only in part', () => {
    const ix = openIndex();
    ix.add('INBOX', 1, 5, { subject: 'a', addresses: '', body: 'short' });
    ix.add('INBOX', 1, 6, { subject: 'b', addresses: '', body: 'x'.repeat((4 << 20) + 10) });
    ix.add('INBOX', 1, 9, { subject: 'c', addresses: '', body: 'short' });
    ix.add('INBOX', 1, 0xffffffff, { subject: 'last', addresses: '', body: 'the highest UID there is' });
    const between = (from: number, to: number, uidValidity = 1) => {
      const got = ix.indexedBetween('INBOX', uidValidity, from, to);
      return { uids: [...got.uids], partial: [...got.partial] };
    };
    expect(between(5, 9)).toEqual({ uids: [9, 6, 5], partial: [6] });
    expect(between(6, 8)).toEqual({ uids: [6], partial: [6] });
    expect(between(7, 8)).toEqual({ uids: [], partial: [] });
    expect(between(10, 0xffffffff)).toEqual({ uids: [0xffffffff], partial: [] });
    expect(between(9, 5)).toEqual({ uids: [], partial: [] });
    expect(between(1, 100, 7)).toEqual({ uids: [], partial: [] });
    // Every write moves the generation on (callers cache what they read against it).
    const before = ix.generation;
    ix.remove('INBOX', 1, [9]);
    expect(ix.generation).toBeGreaterThan(before);
    expect(between(5, 9)).toEqual({ uids: [6, 5], partial: [6] });
    // A long body is always a candidate for body searches (the index saw only its start).
    expect(sorted(ix.candidates('INBOX', 1, 'body', 'short'))).toEqual([5, 6]);
    expect(ix.newestMatches('INBOX', 1, [{ fields: ['body'], text: 'highest uid' }], 5)).toEqual([0xffffffff]);
  });

  it('renaming keeps the documents under the new name; a failed transaction leaves no folder behind', () => {
    const ix = openIndex();
    seed(ix);
    expect(ix.renameFolder('Archive', 'Old')).toBe(1);
    expect(sorted(ix.candidates('Old', 1, 'body', 'opportunity'))).toEqual([1]);
    expect(sorted(ix.candidates('Archive', 1, 'body', 'opportunity'))).toEqual([]);
    expect(() =>
      ix.transaction(() => {
        ix.add('New', 1, 1, { subject: 'lost', addresses: '', body: '' });
        throw new Error('boom');
      }),
    ).toThrow('boom');
    // The folder made inside the failed transaction is not remembered: the next add makes it again.
    ix.add('New', 1, 2, { subject: 'kept', addresses: '', body: '' });
    ix.add('Other', 1, 3, { subject: 'other', addresses: '', body: '' });
    expect(sorted(ix.indexedUids('New', 1))).toEqual([2]);
    expect(sorted(ix.indexedUids('Other', 1))).toEqual([3]);
    expect(sorted(ix.candidates('New', 1, 'subject', 'kept'))).toEqual([2]);
  });

  it('replaces an index of the older layout (version 1) with a new, empty one', () => {
    const file = path.join(dir, FULLTEXT_FILE);
    const old = new DatabaseSync(file);
    old.exec('CREATE TABLE docs (id INTEGER PRIMARY KEY, folder TEXT, uidvalidity INTEGER, uid INTEGER, partial INTEGER); PRAGMA user_version = 1;');
    old.close();
    const ix = openIndex(file);
    expect(ix.indexedUids('INBOX', 1).size).toBe(0);
    ix.add('INBOX', 1, 1, { subject: 'new layout', addresses: '', body: '' });
    expect(sorted(ix.candidates('INBOX', 1, 'subject', 'layout'))).toEqual([1]);
    // Nothing kept aside: the old one was a cache.
    expect(fs.readdirSync(dir).some((n) => n.includes('.broken-'))).toBe(false);
  });

  it('sets an unreadable file aside and starts afresh', () => {
    const file = path.join(dir, FULLTEXT_FILE);
    fs.writeFileSync(file, 'this is not a database, just some bytes long enough to be read as a header '.repeat(20));
    const ix = openIndex(file);
    ix.add('INBOX', 1, 1, { subject: 'fresh start', addresses: '', body: '' });
    expect(sorted(ix.candidates('INBOX', 1, 'subject', 'fresh'))).toEqual([1]);
    expect(fs.readdirSync(dir).some((n) => n.startsWith(`${FULLTEXT_FILE}.broken-`))).toBe(true);
  });
});

describe('message text', () => {
  const raw = Buffer.from(
    [
      'From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.fr>',
      'To: a@example.org',
      'Subject: =?UTF-8?B?w4AgYmllbnTDtHQ=?=',
      ' =?UTF-8?Q?_encore?=',
      'Date: Wed, 4 Feb 2026 09:15:00 +0100',
      'Content-Type: multipart/alternative; boundary=ALT',
      '',
      '--ALT',
      'Content-Type: text/plain; charset=windows-1252; format=flowed',
      'Content-Transfer-Encoding: quoted-printable',
      '',
      'Une ligne coup=E9e=20',
      'en deux =80',
      '--ALT',
      'Content-Type: text/html; charset=utf-8',
      '',
      '<p>Caf&eacute; &#x263A; &#233;t&eacute;</p>',
      '--ALT--',
      '',
    ].join('\r\n'),
    'latin1',
  );

  it('headers are unfolded and RFC 2047-decoded, whatever the charset', () => {
    const h = headersFromRaw(raw);
    expect(h.fields.get('from')).toEqual(['André <andre@example.fr>']);
    expect(h.fields.get('subject')).toEqual(['À bientôt encore']);
    expect(h.sentDate).toBe(Date.UTC(2026, 1, 4, 8, 15));
    expect(headersFromRaw(Buffer.from('Subject: x\r\nDate: garbage\r\n\r\n')).sentDate).toBeNull();
  });

  it('body text decodes QP, charsets and format=flowed, and turns HTML into text', async () => {
    const text = await bodyTextFromRaw(raw);
    expect(text).toContain('Une ligne coupée en deux €');
    expect(text).toContain('Café ☺ été');
    expect(text).not.toContain('<p>');
    expect(text).not.toContain('Subject');
  });

  it('bare-LF mail, a body without headers, and an unterminated multipart still give text', async () => {
    expect(await bodyTextFromRaw(Buffer.from('Subject: lf\n\nline one\nline two\n'))).toBe('line one\nline two\n');
    expect(await bodyTextFromRaw(Buffer.from('\r\njust a body'))).toBe('just a body');
    const cut = Buffer.from('Content-Type: multipart/mixed; boundary=Q\r\n\r\n--Q\r\nContent-Type: text/plain\r\n\r\ntruncated part');
    expect(await bodyTextFromRaw(cut)).toBe('truncated part');
  });

  it('an embedded message is searchable; a text attachment is not', async () => {
    const mail = Buffer.from(
      [
        'Content-Type: multipart/mixed; boundary=M',
        '',
        '--M',
        'Content-Type: text/plain',
        '',
        'forwarding this',
        '--M',
        'Content-Type: message/rfc822',
        '',
        'Subject: inner subject',
        'From: inner@example.org',
        '',
        'inner body',
        '--M',
        'Content-Type: text/plain; name=notes.txt',
        'Content-Disposition: attachment; filename=notes.txt',
        '',
        'attached notes',
        '--M--',
      ].join('\r\n'),
    );
    const text = await bodyTextFromRaw(mail);
    expect(text).toContain('forwarding this');
    expect(text).toContain('inner subject');
    expect(text).toContain('inner body');
    expect(text).not.toContain('attached notes');
  });

  it('htmlToText drops comments, scripts and styles and decodes entities', () => {
    expect(htmlToText('<!-- hid --><style>x{}</style>a&nbsp;b<br>c&unknown;&#0;<script>s()</script>').trim()).toBe('a\u00a0b\nc&unknown;&#0;');
  });

  it('documentFromRaw feeds subject, all address fields and the body', async () => {
    const doc = await documentFromRaw(Buffer.from('From: a@x.org\r\nTo: b@x.org\r\nCc: c@x.org\r\nBcc: d@x.org\r\nSubject: S\r\n\r\nB\r\n'));
    expect(doc).toEqual({ subject: 'S', addresses: 'a@x.org\nb@x.org\nc@x.org\nd@x.org', body: 'B\r\n' });
  });
});

describe('catchUp', () => {
  it('indexes what the mailbox has, then only what changed', async () => {
    const maildir = new MaildirStore({ root: path.join(dir, 'maildir'), hostname: 'mx.test', fsync: false });
    // This test drives catchUp by hand: no UserSearch indexing the same file behind its back.
    const store = new MailStore({ maildir, fullText: false });
    try {
      const al = { user: 'al', domain: 'example.org' };
      for (const s of ['first résumé', 'second', 'third']) await maildir.deliver([al], `Subject: ${s}\r\n\r\nbody of ${s}\r\n`);
      const user = await store.open(al);
      const state = await user.sync('INBOX');
      const ix = openIndex(FullTextIndex.pathFor(user.dir));
      expect(await ix.catchUp(user, 'INBOX')).toEqual({ added: 3, removed: 0 });
      const [u1, u2, u3] = state.messages.map((m) => m.uid);
      expect(sorted(ix.candidates('INBOX', state.uidValidity, 'subject', 'resume'))).toEqual([u1]);
      expect(sorted(ix.candidates('INBOX', state.uidValidity, 'body', 'of third'))).toEqual([u3]);

      await user.setFlags('INBOX', [u2], 'add', ['\\Deleted']);
      await user.expunge('INBOX', [u2]);
      await maildir.deliver([al], 'Subject: fourth\r\n\r\nfourth body\r\n');
      await user.sync('INBOX');
      expect(await ix.catchUp(user, 'INBOX')).toEqual({ added: 1, removed: 1 });
      expect(ix.indexedUids('INBOX', state.uidValidity).size).toBe(3);
      expect(await ix.catchUp(user, 'INBOX')).toEqual({ added: 0, removed: 0 });
    } finally {
      await store.close();
    }
  });
});
