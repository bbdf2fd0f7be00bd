// IMAP SEARCH with the user's full-text index as its prefilter: the answer is the same whether
// the index is empty, behind or caught up; once it has caught up, a SEARCH BODY reads only the
// messages that may match. New, expunged and renamed-folder messages are handled.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { UserMailboxes } from '../../src/store/mailboxes.ts';
import { userSearch } from '../../src/store/user-search.ts';
import { BOX, startInProcessImap } from './inprocess-server.ts';
import type { InProcessImap } from './inprocess-server.ts';
import { RawImap } from './imap-helpers.ts';

const COUNT = 2000;
const RARE = 'zanzibar';
/** UIDs (delivery order) of the messages whose body has RARE. */
const RARE_UIDS = Array.from({ length: COUNT / 100 }, (_, k) => k * 100 + 1);

function message(i: number): string {
  const body = i % 100 === 0 ? `Meet me in ${RARE.toUpperCase()} on Tuesday.\r\n` : `Ordinary message number ${i}.\r\n`;
  return `From: sender${i % 13}@example.net\r\nTo: al@example.org\r\nSubject: note ${i}\r\n\r\n${body}`;
}

const searched = (lines: string[]): number[] => {
  const line = lines.find((l) => l.startsWith('* SEARCH')) ?? '';
  return line.split(' ').slice(2).filter(Boolean).map(Number);
};

describe('SEARCH with the full-text index', () => {
  let imap: InProcessImap;
  let c: RawImap;

  beforeAll(async () => {
    imap = await startInProcessImap();
    for (let i = 0; i < COUNT; i++) await imap.maildir.deliver([BOX], message(i));
    c = await RawImap.connect(imap.port);
    await c.login();
  }, 60_000);
  afterAll(async () => {
    vi.restoreAllMocks();
    c?.close();
    await imap?.close();
  });

  it(`answers SEARCH BODY on ${COUNT} messages while indexing runs, and reads far fewer files once it is done`, async () => {
    const reads = vi.spyOn(UserMailboxes.prototype, 'readMessage');
    // SELECT starts indexing in the background; the first search does not wait for it.
    await c.ok('SELECT INBOX');
    expect(searched(await c.ok(`UID SEARCH BODY ${RARE}`))).toEqual(RARE_UIDS);
    await imap.indexed();
    const u = await imap.user();
    expect(userSearch(u)!.index.indexedUids('INBOX', u.uidValidity('INBOX')!).size).toBe(COUNT);

    reads.mockClear();
    expect(searched(await c.ok(`UID SEARCH BODY ${RARE}`))).toEqual(RARE_UIDS);
    expect(reads.mock.calls.length).toBe(RARE_UIDS.length);
    // Case and a phrase: still exact (the index only narrows), still few reads.
    reads.mockClear();
    expect(searched(await c.ok('UID SEARCH BODY "number 1234."'))).toEqual([1235]);
    expect(reads.mock.calls.length).toBeLessThanOrEqual(2);
    // Keys the index holds too: SUBJECT and FROM; and NOT, where it cannot narrow.
    expect(searched(await c.ok('UID SEARCH SUBJECT "note 1999"'))).toEqual([2000]);
    expect(searched(await c.ok('UID SEARCH FROM sender12@ BODY zanzibar'))).toEqual(RARE_UIDS.filter((uid) => (uid - 1) % 13 === 12));
    expect(searched(await c.ok(`UID SEARCH NOT BODY ${RARE}`))).toHaveLength(COUNT - RARE_UIDS.length);
    // TEXT reads each message once (headers and body from one read), not twice.
    reads.mockClear();
    expect(searched(await c.ok('UID SEARCH 1:100 TEXT tuesday'))).toEqual([1]);
    expect(reads.mock.calls.length).toBe(100);
    reads.mockRestore();
  }, 60_000);

  it('finds a message delivered after indexing, before and after the index catches up with it', async () => {
    await imap.maildir.deliver([BOX], `Subject: late\r\n\r\nA late ${RARE} postcard.\r\n`);
    await imap.mail.notifyDelivered(BOX);
    await c.ok('NOOP');
    // Maybe not indexed yet: unindexed messages are always candidates.
    expect(searched(await c.ok(`UID SEARCH BODY "late ${RARE}"`))).toEqual([COUNT + 1]);
    await imap.indexed();
    const reads = vi.spyOn(UserMailboxes.prototype, 'readMessage');
    expect(searched(await c.ok(`UID SEARCH BODY "late ${RARE}"`))).toEqual([COUNT + 1]);
    expect(reads.mock.calls.length).toBe(1);
    reads.mockRestore();
  });

  it('forgets expunged messages: gone from the index and from the answers', async () => {
    await c.ok('UID STORE 101,201 +FLAGS.SILENT (\\Deleted)');
    await c.ok('EXPUNGE');
    const u = await imap.user();
    const indexed = userSearch(u)!.index.indexedUids('INBOX', u.uidValidity('INBOX')!);
    expect(indexed.has(101)).toBe(false);
    expect(indexed.has(201)).toBe(false);
    expect(indexed.has(301)).toBe(true);
    expect(searched(await c.ok(`UID SEARCH BODY ${RARE}`))).toEqual([...RARE_UIDS.filter((uid) => uid !== 101 && uid !== 201), COUNT + 1]);
  });

  it('a renamed folder is searchable under its new name without reading it all again', async () => {
    await c.ok('CREATE Projects');
    await c.ok(`UID COPY 1:500 Projects`);
    await imap.indexed();
    const reads = vi.spyOn(UserMailboxes.prototype, 'readMessage');
    await c.ok('RENAME Projects Work');
    await c.ok('SELECT Work');
    await imap.indexed();
    // Copied with new UIDs in order; 101 and 201 were expunged before the copy.
    expect(searched(await c.ok(`UID SEARCH BODY ${RARE}`))).toEqual([1, 299, 399]);
    expect(reads.mock.calls.length).toBe(3);
    await c.ok('SELECT INBOX');
    reads.mockRestore();
  });
});
