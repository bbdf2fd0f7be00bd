// UserSearch: the full-text index MailStore keeps beside each user's mailboxes, fed by their
// change events; and searchFolder, the webmail's entry point.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FullTextIndex } from '../../src/store/fulltext.ts';
import { MailStore, UserMailboxes } from '../../src/store/mailboxes.ts';
import { MaildirStore } from '../../src/store/maildir.ts';
import { indexFolderSoon, searchFolder, userSearch } from '../../src/store/user-search.ts';
import type { UserSearch } from '../../src/store/user-search.ts';

let parent: string;
let maildir: MaildirStore;
let store: MailStore;
const al = { user: 'al', domain: 'example.org' };

beforeEach(async () => {
  parent = await fs.mkdtemp(path.join(os.tmpdir(), 'hearth-user-search-'));
  maildir = new MaildirStore({ root: path.join(parent, 'maildir'), hostname: 'mx.test', fsync: false });
  store = new MailStore({ maildir });
});
afterEach(async () => {
  vi.restoreAllMocks();
  await store.close();
  await fs.rm(parent, { recursive: true, force: true });
});

const mail = (subject: string, body: string, from = 'someone@example.net'): string => `From: ${from}\r\nSubject: ${subject}\r\n\r\n${body}\r\n`;

async function openAl(): Promise<{ u: UserMailboxes; search: UserSearch }> {
  const u = await store.open(al);
  const search = userSearch(u);
  expect(search).toBeDefined();
  return { u, search: search! };
}

const sorted = (s: Set<number> | undefined): number[] => [...(s ?? [])].sort((a, b) => a - b);

describe('UserSearch', () => {
  it('is opened beside the mailbox index and indexes new mail in the background', async () => {
    const { u, search } = await openAl();
    expect(search.index.file).toBe(FullTextIndex.pathFor(u.dir));
    for (const [s, b] of [['hello', 'the cat sat'], ['again', 'on the mat'], ['third', 'a catalogue']]) await u.append('INBOX', Buffer.from(mail(s, b)));
    await search.idle();
    const v = u.uidValidity('INBOX')!;
    expect(search.index.indexedUids('INBOX', v).size).toBe(3);
    expect(sorted(search.index.candidates('INBOX', v, 'body', 'cat'))).toEqual([1, 3]);
    // Delivered by SMTP: the index follows once the delivery is noticed.
    await maildir.deliver([al], mail('late', 'a late cat'));
    await store.notifyDelivered(al);
    await search.idle();
    expect(sorted(search.index.candidates('INBOX', v, 'body', 'late cat'))).toEqual([4]);
  });

  it('coalesces: one catch-up queued per folder, each message read once', async () => {
    const { u, search } = await openAl();
    const catchUp = vi.spyOn(search.index, 'catchUp');
    const reads = vi.spyOn(UserMailboxes.prototype, 'readMessage');
    // Twenty deliveries noticed in one sync: one 'added' event, one catch-up.
    for (let i = 0; i < 20; i++) await maildir.deliver([al], mail(`m${i}`, `body ${i}`));
    await u.sync('INBOX');
    indexFolderSoon(u, 'INBOX'); // asked again before it started: still one
    await search.idle();
    expect(catchUp).toHaveBeenCalledTimes(1);
    expect(reads).toHaveBeenCalledTimes(20);
    // Appends racing the catch-up: however many runs it takes, nothing is read twice.
    await Promise.all(Array.from({ length: 20 }, (_, i) => u.append('INBOX', Buffer.from(mail(`a${i}`, `appended ${i}`)))));
    await search.idle();
    expect(reads).toHaveBeenCalledTimes(40);
    expect(search.index.indexedUids('INBOX', u.uidValidity('INBOX')!).size).toBe(40);
  });

  it('forgets expunged messages at once', async () => {
    const { u, search } = await openAl();
    for (const b of ['keep this', 'drop this', 'keep that']) await u.append('INBOX', Buffer.from(mail('x', b)));
    await search.idle();
    const v = u.uidValidity('INBOX')!;
    await u.setFlags('INBOX', [2], 'add', ['\\Deleted']);
    await u.expunge('INBOX');
    expect(sorted(search.index.indexedUids('INBOX', v))).toEqual([1, 3]);
    expect(sorted(search.index.candidates('INBOX', v, 'body', 'this'))).toEqual([1]);
    // A move is an expunge here and an add there.
    await u.move('INBOX', [3], 'Archive');
    await search.idle();
    expect(sorted(search.index.indexedUids('INBOX', v))).toEqual([1]);
    expect(sorted(search.index.candidates('Archive', u.uidValidity('Archive')!, 'body', 'keep that'))).toEqual([1]);
  });

  it('a renamed folder keeps its documents (nothing read again); a deleted one loses them', async () => {
    const { u, search } = await openAl();
    await u.createFolder('Projects');
    await u.createFolder('Projects/Old');
    await u.append('Projects', Buffer.from(mail('plan', 'the grand plan')));
    await u.append('Projects/Old', Buffer.from(mail('older', 'an older plan')));
    await search.idle();
    const reads = vi.spyOn(UserMailboxes.prototype, 'readMessage');
    await u.renameFolder('Projects', 'Work');
    await search.idle();
    expect(reads).not.toHaveBeenCalled();
    const v = (await u.sync('Work')).uidValidity;
    expect(sorted(search.index.candidates('Work', v, 'body', 'grand plan'))).toEqual([1]);
    expect(sorted(search.index.candidates('Work/Old', (await u.sync('Work/Old')).uidValidity, 'body', 'older plan'))).toEqual([1]);
    expect(search.index.indexedUids('Projects', v).size).toBe(0);
    expect(await searchFolder(u, 'Work', 'GRAND')).toEqual([1]);

    await u.deleteFolder('Work/Old');
    expect(search.index.removeFolder('Work/Old')).toBe(0); // already gone
  });

  it('SELECT-style indexFolderSoon fills an index that lost its file', async () => {
    const { u, search } = await openAl();
    await u.append('INBOX', Buffer.from(mail('a', 'alpha beta')));
    await search.idle();
    const v = u.uidValidity('INBOX')!;
    search.index.removeFolder('INBOX');
    expect(search.index.indexedUids('INBOX', v).size).toBe(0);
    indexFolderSoon(u, 'inbox');
    await search.idle();
    expect(search.index.indexedUids('INBOX', v).size).toBe(1);
  });

  it('searchFolder finds subject, address and body matches, reading only candidates once indexed', async () => {
    const { u, search } = await openAl();
    for (let i = 0; i < 60; i++) {
      const body = i % 20 === 5 ? 'Meet at the Café Flore' : `ordinary note ${i}`;
      await u.append('INBOX', Buffer.from(mail(i === 7 ? 'Budget review' : `note ${i}`, body, i === 9 ? 'Zoë <zoe@example.com>' : undefined)));
    }
    const reads = vi.spyOn(UserMailboxes.prototype, 'readMessage');
    await search.idle();
    reads.mockClear();
    expect(await searchFolder(u, 'INBOX', 'café  flore')).toEqual([6, 26, 46]);
    expect(reads.mock.calls.length).toBe(3);
    expect(await search.searchFolder('INBOX', 'budget', { fields: ['subject'] })).toEqual([8]);
    expect(await searchFolder(u, 'INBOX', 'zoe@example', { fields: ['addresses'] })).toEqual([10]);
    expect(await searchFolder(u, 'INBOX', 'budget', { fields: ['body'] })).toEqual([]);
    // Under three characters the index cannot help: every message is read, the answer is the same.
    reads.mockClear();
    expect(await searchFolder(u, 'INBOX', 'zo', { fields: ['addresses'] })).toEqual([10]);
    expect(reads.mock.calls.length).toBe(60);
  });

  it('closes with the store: indexing stops and the index file is released', async () => {
    const { u, search } = await openAl();
    for (let i = 0; i < 200; i++) await maildir.deliver([al], mail(`m${i}`, `body ${i}`));
    await u.sync('INBOX'); // 'added' for 200: a catch-up starts
    await store.close();
    expect(search.closed).toBe(true);
    expect(userSearch(u)).toBeUndefined();
    await search.idle();
  });

  it('is not opened when the store is asked not to', async () => {
    const plain = new MailStore({ maildir, fullText: false });
    try {
      const u = await plain.open({ user: 'bo', domain: 'example.org' });
      expect(userSearch(u)).toBeUndefined();
      await u.append('INBOX', Buffer.from(mail('x', 'no index here')));
      expect(await searchFolder(u, 'INBOX', 'index')).toEqual([1]);
      await expect(fs.access(FullTextIndex.pathFor(u.dir))).rejects.toThrow();
    } finally {
      await plain.close();
    }
  });
});
