import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MaildirStore, StoreError } from '../../src/store/maildir.ts';
import { MailStore } from '../../src/store/mailboxes.ts';
import { compareDeliveryOrder } from '../../src/store/flags.ts';
import type { ChangeEvent, UserMailboxes } from '../../src/store/mailboxes.ts';

let parent: string;
let root: string;
let maildir: MaildirStore;
let stores: MailStore[];

const al = { user: 'al', domain: 'example.org' };

beforeEach(async () => {
  parent = await fs.mkdtemp(path.join(os.tmpdir(), 'hearth-index-'));
  root = path.join(parent, 'maildir');
  // A clock that moves 1 ms per name, so delivery order is the name order.
  let now = Date.UTC(2025, 0, 1);
  maildir = new MaildirStore({ root, hostname: 'mx.test', fsync: false, clock: () => (now += 1) });
  stores = [];
});
afterEach(async () => {
  for (const s of stores) await s.close();
  await fs.rm(parent, { recursive: true, force: true });
});

function mailStore(): MailStore {
  const s = new MailStore({ maildir });
  stores.push(s);
  return s;
}

async function openAl(): Promise<UserMailboxes> {
  return mailStore().open(al);
}

function events(u: UserMailboxes): ChangeEvent[] {
  const out: ChangeEvent[] = [];
  u.on('change', (ev) => out.push(ev));
  return out;
}

async function deliver(body: string, folder?: string): Promise<string> {
  const [d] = await maildir.deliver([{ ...al, folder }], `Subject: ${body}\r\n\r\n${body}\r\n`);
  return d.path;
}

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StoreError);
  expect((err as StoreError).code).toBe(code);
}

describe('UIDs', () => {
  it('are assigned in delivery order (the name time) and stay the same after re-opening', async () => {
    const inboxDir = await maildir.ensureMaildir(al);
    // Written out of order, with names whose string order is not their time order.
    for (const name of ['1700000000.M40P1.host', '1699999999.M9P1.host', '1700000000.M5P1.host']) {
      await fs.writeFile(path.join(inboxDir, 'new', name), `Subject: ${name}\r\n\r\nx\r\n`);
    }
    const u = await openAl();
    const st = await u.sync('INBOX');
    expect(st.messages.map((m) => [m.uid, m.key])).toEqual([
      [1, '1699999999.M9P1.host'],
      [2, '1700000000.M5P1.host'],
      [3, '1700000000.M40P1.host'],
    ]);
    expect(st.uidNext).toBe(4);
    await deliver('later');
    const st2 = await u.sync('inbox');
    expect(st2.messages.map((m) => m.uid)).toEqual([1, 2, 3, 4]);
    expect(st2.uidValidity).toBe(st.uidValidity);

    // A new process: the index on disk gives the same UIDs and UIDVALIDITY.
    const again = await mailStore().open(al);
    const st3 = await again.sync('INBOX');
    expect(st3.uidValidity).toBe(st.uidValidity);
    expect(st3.messages.map((m) => [m.uid, m.key])).toEqual(st2.messages.map((m) => [m.uid, m.key]));
    expect(st3.highestModseq).toBe(st2.highestModseq);
  });

  it('picks up a flag change made by another program (mutt) with the same UID and a new MODSEQ', async () => {
    const file = await deliver('one');
    await deliver('two');
    const u = await openAl();
    const seen = events(u);
    const before = await u.sync('INBOX');
    const m1 = before.messages[0];
    expect(m1.flags).toEqual([]);
    // mutt reads the message: new/ -> cur/ with :2,S, then flags it.
    const name = path.basename(file);
    const inboxDir = maildir.maildirPath(al);
    await fs.rename(file, path.join(inboxDir, 'cur', `${name}:2,FS`));
    const after = await u.sync('INBOX');
    const r = after.messages.find((m) => m.uid === m1.uid)!;
    expect(r.key).toBe(m1.key);
    expect(r.flags).toEqual(['\\Seen', '\\Flagged']);
    expect(r.modseq).toBeGreaterThan(m1.modseq);
    expect(after.highestModseq).toBe(r.modseq);
    expect(r.path).toBe(path.join(inboxDir, 'cur', `${name}:2,FS`));
    expect(after.messages.map((m) => m.uid)).toEqual([1, 2]);
    expect(seen.filter((e) => e.kind === 'flags')).toEqual([{ kind: 'flags', folder: 'INBOX', records: [r] }]);
    // The file still reads, at its new name.
    expect((await u.readMessage('INBOX', r.uid))!.toString()).toContain('Subject: one');
  });

  it('reports a file removed by another program as expunged', async () => {
    await deliver('one');
    const two = await deliver('two');
    await deliver('three');
    const u = await openAl();
    const st = await u.sync('INBOX');
    const seen = events(u);
    await fs.unlink(two);
    const after = await u.sync('INBOX');
    expect(after.messages.map((m) => m.uid)).toEqual([1, 3]);
    expect(after.highestModseq).toBeGreaterThan(st.highestModseq);
    expect(seen).toEqual([{ kind: 'expunged', folder: 'INBOX', uids: [2] }]);
    expect(await u.readMessage('INBOX', 2)).toBeNull();
    expect(await u.openMessage('INBOX', 2)).toBeNull();
    expect((await u.folderStatus('INBOX')).messages).toBe(2);
    // The UID is not handed out again.
    await deliver('four');
    expect((await u.sync('INBOX')).messages.map((m) => m.uid)).toEqual([1, 3, 4]);
  });

  it('concurrent appends and deliveries get distinct, ascending UIDs', async () => {
    const u = await openAl();
    await u.sync('INBOX');
    const recs = await Promise.all(Array.from({ length: 20 }, (_, i) => u.append('INBOX', Buffer.from(`Subject: ${i}\r\n\r\nx\r\n`))));
    await Promise.all([deliver('d1'), u.sync('INBOX'), deliver('d2'), u.sync('INBOX')]);
    const st = await u.sync('INBOX');
    const uids = st.messages.map((m) => m.uid);
    expect(uids).toEqual(Array.from({ length: 22 }, (_, i) => i + 1));
    expect(new Set(recs.map((r) => r.uid)).size).toBe(20);
    expect(new Set(st.messages.map((m) => m.key)).size).toBe(22);
  });

  it('reads a message renamed by another program without an explicit sync', async () => {
    const file = await deliver('moved');
    const u = await openAl();
    const [m] = (await u.sync('INBOX')).messages;
    await fs.rename(file, path.join(maildir.maildirPath(al), 'cur', `${path.basename(file)}:2,S`));
    expect((await u.readMessage('INBOX', m.uid))!.toString()).toContain('Subject: moved');
    expect(u.state('INBOX')!.messages[0].flags).toEqual(['\\Seen']);
  });

  it('skips the scan when neither new/ nor cur/ changed, and rescans when one did', async () => {
    await deliver('one');
    const u = await openAl();
    const inboxDir = maildir.maildirPath(al);
    const old = new Date(Date.now() - 60_000);
    for (const sub of ['new', 'cur']) await fs.utimes(path.join(inboxDir, sub), old, old);
    expect((await u.sync('INBOX')).messages).toHaveLength(1); // scans, and trusts the old mtimes
    // Sneak a file in and put the directory mtime back: a skipped scan cannot see it.
    await fs.writeFile(path.join(inboxDir, 'new', '1700000000.M1P1.sneaky'), 'x');
    await fs.utimes(path.join(inboxDir, 'new'), old, old);
    expect((await u.sync('INBOX')).messages).toHaveLength(1);
    // Any real change to the directory makes the next sync scan again.
    await fs.utimes(path.join(inboxDir, 'new'), new Date(), new Date());
    expect((await u.sync('INBOX')).messages).toHaveLength(2);
  });
});

describe('flags and expunge', () => {
  it('setFlags adds, removes and replaces, renames the file, and honours UNCHANGEDSINCE', async () => {
    for (const b of ['a', 'b', 'c']) await deliver(b);
    const u = await openAl();
    const st = await u.sync('INBOX');
    const seen = events(u);
    const inboxDir = maildir.maildirPath(al);

    const r1 = await u.setFlags('INBOX', [1, 2], 'add', ['\\seen', '$Forwarded']);
    expect(r1.failedModified).toEqual([]);
    expect(r1.changed.map((m) => [m.uid, m.flags])).toEqual([
      [1, ['\\Seen', '$Forwarded']],
      [2, ['\\Seen', '$Forwarded']],
    ]);
    const modseqAfterAdd = r1.changed[0].modseq;
    expect(modseqAfterAdd).toBeGreaterThan(st.highestModseq);
    // The file moved from new/ to cur/ with the Maildir letter; the keyword is in the index only.
    expect(r1.changed[0].path).toBe(path.join(inboxDir, 'cur', `${r1.changed[0].key}:2,S`));
    await fs.access(r1.changed[0].path);
    expect(seen.at(-1)).toEqual({ kind: 'flags', folder: 'INBOX', records: r1.changed });

    // Adding what is already there changes nothing.
    expect((await u.setFlags('INBOX', [1], 'add', ['\\Seen'])).changed).toEqual([]);

    const r2 = await u.setFlags('INBOX', [1], 'remove', ['\\Seen']);
    expect(r2.changed.map((m) => m.flags)).toEqual([['$Forwarded']]);
    expect(r2.changed[0].path).toBe(path.join(inboxDir, 'cur', `${r2.changed[0].key}:2,`));

    const r3 = await u.setFlags('INBOX', [2], 'replace', ['\\Flagged', '\\Answered']);
    expect(r3.changed[0].flags).toEqual(['\\Answered', '\\Flagged']);
    expect(path.basename(r3.changed[0].path)).toBe(`${r3.changed[0].key}:2,FR`);

    // UNCHANGEDSINCE: message 2 changed after modseqAfterAdd, message 3 did not change at all.
    const r4 = await u.setFlags('INBOX', [2, 3], 'add', ['\\Deleted'], { unchangedSince: modseqAfterAdd });
    expect(r4.failedModified).toEqual([2]);
    expect(r4.changed.map((m) => m.uid)).toEqual([3]);
    const state = u.state('INBOX')!;
    expect(state.messages.find((m) => m.uid === 2)!.flags).toEqual(['\\Answered', '\\Flagged']);
    expect(state.highestModseq).toBe(r4.changed[0].modseq);

    // Survives a restart: flags from the file names, keywords from the index.
    const again = await mailStore().open(al);
    const reread = await again.sync('INBOX');
    expect(reread.messages.map((m) => m.flags)).toEqual([['$Forwarded'], ['\\Answered', '\\Flagged'], ['\\Deleted']]);

    await expectCode(u.setFlags('INBOX', [1], 'add', ['\\Bogus']), 'STORE_BAD_FLAG');
    await expectCode(u.setFlags('INBOX', [1], 'add', ['bad word']), 'STORE_BAD_FLAG');
  });

  it('expunge removes only messages flagged \\Deleted, and only the given UIDs', async () => {
    for (const b of ['a', 'b', 'c', 'd']) await deliver(b);
    const u = await openAl();
    await u.sync('INBOX');
    await u.setFlags('INBOX', [1, 2, 4], 'add', ['\\Deleted']);
    const paths = u.state('INBOX')!.messages.map((m) => m.path);
    const seen = events(u);
    expect(await u.expunge('INBOX', [2, 3])).toEqual([2]);
    expect(seen).toEqual([{ kind: 'expunged', folder: 'INBOX', uids: [2] }]);
    expect(await u.expunge('INBOX')).toEqual([1, 4]);
    expect(u.state('INBOX')!.messages.map((m) => m.uid)).toEqual([3]);
    await expect(fs.access(paths[0])).rejects.toThrow();
    await fs.access(paths[2]);
    expect(await u.expunge('INBOX')).toEqual([]);
    // The expunged UIDs are remembered with their MODSEQ (for QRESYNC).
    expect(await u.expungedSince('INBOX', 0)).toEqual([1, 2, 4]);
    expect((await u.sync('INBOX')).messages.map((m) => m.uid)).toEqual([3]);
  });
});

describe('append, copy, move', () => {
  it('append stores flags and the internal date; without flags it lands in new/ as recent', async () => {
    const u = await openAl();
    const seen = events(u);
    const date = new Date('2024-02-03T04:05:06Z');
    const rec = await u.append('Sent', Buffer.from('Subject: sent\r\n\r\nhi\r\n'), { flags: ['\\Seen', 'Work'], internalDate: date });
    expect(rec.uid).toBe(1);
    expect(rec.flags).toEqual(['\\Seen', 'Work']);
    expect(rec.internalDate).toBe(date.getTime());
    expect(rec.size).toBe(Buffer.byteLength('Subject: sent\r\n\r\nhi\r\n'));
    expect(rec.path).toBe(path.join(maildir.maildirPath(al, 'Sent'), 'cur', `${rec.key}:2,S`));
    expect((await fs.stat(rec.path)).mtimeMs).toBe(date.getTime());
    expect(seen).toEqual([{ kind: 'added', folder: 'Sent', records: [rec] }]);

    async function* chunks(): AsyncIterable<Uint8Array> {
      yield Buffer.from('Subject: streamed\r\n');
      yield Buffer.from('\r\nbody\r\n');
    }
    const rec2 = await u.append('Sent', chunks());
    expect(rec2.uid).toBe(2);
    expect(rec2.modseq).toBeGreaterThan(rec.modseq);
    expect(path.basename(path.dirname(rec2.path))).toBe('new');
    expect(await u.folderStatus('Sent')).toMatchObject({ messages: 2, recent: 1, unseen: 1, uidNext: 3, highestModseq: rec2.modseq });
    expect(await text((await u.openMessage('Sent', 2))!)).toBe('Subject: streamed\r\n\r\nbody\r\n');
    // A sync finds nothing new: the appended files are already known by their base names.
    expect((await u.sync('Sent')).messages.map((m) => m.uid)).toEqual([1, 2]);
    await expectCode(u.append('Nope', Buffer.from('x')), 'STORE_NO_FOLDER');
  });

  it('copy hard-links with new UIDs (COPYUID), move also removes the source', async () => {
    for (const b of ['a', 'b', 'c']) await deliver(b);
    const u = await openAl();
    await u.sync('INBOX');
    await u.setFlags('INBOX', [2], 'add', ['\\Flagged', 'Important']);
    await u.append('Archive', Buffer.from('Subject: old\r\n\r\nx\r\n'));

    const copied = await u.copy('INBOX', [3, 2, 99], 'Archive');
    expect(copied).toEqual([
      { from: 2, to: 2 },
      { from: 3, to: 3 },
    ]);
    const archive = u.state('Archive')!;
    expect(archive.messages.map((m) => m.uid)).toEqual([1, 2, 3]);
    expect(archive.messages[1].flags).toEqual(['\\Flagged', 'Important']);
    const inbox = u.state('INBOX')!;
    expect((await fs.stat(archive.messages[1].path)).ino).toBe((await fs.stat(inbox.messages[1].path)).ino);
    expect(inbox.messages.map((m) => m.uid)).toEqual([1, 2, 3]);

    // Copy into the same folder gets new UIDs too.
    expect(await u.copy('INBOX', [1], 'INBOX')).toEqual([{ from: 1, to: 4 }]);

    const seen = events(u);
    const moved = await u.move('INBOX', [1, 2], 'Trash');
    expect(moved).toEqual([
      { from: 1, to: 1 },
      { from: 2, to: 2 },
    ]);
    expect(u.state('INBOX')!.messages.map((m) => m.uid)).toEqual([3, 4]);
    const trash = u.state('Trash')!;
    expect(trash.messages.map((m) => m.flags)).toEqual([[], ['\\Flagged', 'Important']]);
    expect((await u.readMessage('Trash', 2))!.toString()).toContain('Subject: b');
    expect(seen.map((e) => e.kind)).toEqual(['expunged', 'added']);
    expect(seen[0]).toEqual({ kind: 'expunged', folder: 'INBOX', uids: [1, 2] });
    // The Maildir agrees after a fresh rebuild of the view.
    expect((await mailStore().open(al).then((x) => x.sync('INBOX'))).messages).toHaveLength(2);
    expect((await maildir.listMessages(al)).length).toBe(2);
    expect((await maildir.listMessages(al, 'Trash')).length).toBe(2);
    await expectCode(u.copy('INBOX', [3], 'Nope'), 'STORE_NO_FOLDER');
  });
});

describe('folders', () => {
  it('lists INBOX first with special-use, creates, renames (with subfolders) and deletes', async () => {
    const u = await openAl();
    const seen = events(u);
    expect(await u.listFolders()).toEqual([
      { name: 'INBOX', subscribed: true },
      { name: 'Archive', specialUse: '\\Archive', subscribed: true },
      { name: 'Drafts', specialUse: '\\Drafts', subscribed: true },
      { name: 'Junk', specialUse: '\\Junk', subscribed: true },
      { name: 'Sent', specialUse: '\\Sent', subscribed: true },
      { name: 'Trash', specialUse: '\\Trash', subscribed: true },
    ]);
    await u.createFolder('Lists/hearth');
    await fs.access(path.join(maildir.maildirPath(al), '.Lists.hearth', 'cur'));
    await fs.access(path.join(maildir.maildirPath(al), '.Lists', 'cur')); // the superior, RFC 3501 6.3.3
    expect(seen).toEqual([{ kind: 'folders' }]);
    await expectCode(u.createFolder('Lists/hearth'), 'STORE_FOLDER_EXISTS');
    await expectCode(u.createFolder('inbox'), 'STORE_FOLDER_EXISTS');
    await expectCode(u.createFolder('../etc'), 'STORE_BAD_NAME');
    await expectCode(u.createFolder('a.b'), 'STORE_BAD_NAME');

    await u.append('Lists/hearth', Buffer.from('Subject: l\r\n\r\nx\r\n'));
    const before = await u.sync('Lists/hearth');
    await expectCode(u.deleteFolder('Lists'), 'STORE_HAS_CHILDREN');
    await u.renameFolder('Lists', 'Groups');
    const names = (await u.listFolders()).map((f) => f.name);
    expect(names).toContain('Groups/hearth');
    expect(names).not.toContain('Lists/hearth');
    const after = await u.sync('Groups/hearth');
    expect(after.uidValidity).toBe(before.uidValidity);
    expect(after.messages.map((m) => m.key)).toEqual(before.messages.map((m) => m.key));
    await expectCode(u.sync('Lists/hearth'), 'STORE_NO_FOLDER');
    await expectCode(u.renameFolder('Groups', 'Sent'), 'STORE_FOLDER_EXISTS');
    await expectCode(u.renameFolder('Nope', 'Other'), 'STORE_NO_FOLDER');

    await u.deleteFolder('Groups/hearth');
    await u.deleteFolder('Groups');
    expect((await u.listFolders()).map((f) => f.name)).toEqual(['INBOX', 'Archive', 'Drafts', 'Junk', 'Sent', 'Trash']);
    await expectCode(u.deleteFolder('INBOX'), 'STORE_INBOX');
    await expectCode(u.deleteFolder('Groups'), 'STORE_NO_FOLDER');

    // Deleted and recreated: a new UIDVALIDITY, UIDs start over.
    await u.createFolder('Groups/hearth');
    const recreated = await u.sync('Groups/hearth');
    expect(recreated.uidValidity).toBeGreaterThan(before.uidValidity);
    expect(recreated.messages).toEqual([]);
    expect(recreated.uidNext).toBe(1);
  });

  it('renaming INBOX moves its messages into the new folder and leaves INBOX empty', async () => {
    for (const b of ['a', 'b']) await deliver(b);
    const u = await openAl();
    await u.sync('INBOX');
    await u.setFlags('INBOX', [2], 'add', ['\\Seen']);
    await u.renameFolder('INBOX', 'Old');
    expect((await u.sync('INBOX')).messages).toEqual([]);
    const old = await u.sync('Old');
    expect(old.messages.map((m) => [m.uid, m.flags])).toEqual([
      [1, []],
      [2, ['\\Seen']],
    ]);
    expect((await maildir.listMessages(al)).length).toBe(0);
    expect((await maildir.listMessages(al, 'Old')).length).toBe(2);
    // New mail still goes to INBOX, with UIDs after the old ones.
    await deliver('c');
    expect((await u.sync('INBOX')).messages.map((m) => m.uid)).toEqual([3]);
  });

  it('subscriptions persist across re-opening', async () => {
    const u = await openAl();
    await u.setSubscribed('Junk', false);
    await u.createFolder('Work');
    await u.setSubscribed('Work', false);
    await u.setSubscribed('Work', true);
    await u.setSubscribed('Drafts', false);
    const again = await mailStore().open(al);
    const subs = Object.fromEntries((await again.listFolders()).map((f) => [f.name, f.subscribed]));
    expect(subs).toMatchObject({ INBOX: true, Junk: false, Drafts: false, Work: true, Sent: true });
  });
});

describe('the index', () => {
  it('is rebuilt from the Maildir, with a new UIDVALIDITY, when the sqlite file is deleted', async () => {
    for (const b of ['a', 'b', 'c']) await deliver(b);
    const first = mailStore();
    const u = await first.open(al);
    await u.sync('INBOX');
    await u.setFlags('INBOX', [2], 'add', ['\\Answered']);
    await u.expunge('INBOX'); // nothing \Deleted
    const before = u.state('INBOX')!;
    await first.close();
    const dir = maildir.maildirPath(al);
    for (const f of ['hearth-index.sqlite', 'hearth-index.sqlite-wal', 'hearth-index.sqlite-shm']) await fs.rm(path.join(dir, f), { force: true });

    const rebuilt = await mailStore().open(al);
    const after = await rebuilt.sync('INBOX');
    expect(after.uidValidity).not.toBe(before.uidValidity);
    expect(after.uidValidity).toBeGreaterThan(before.uidValidity);
    expect(after.messages.map((m) => [m.uid, m.key, m.flags])).toEqual(before.messages.map((m) => [m.uid, m.key, m.flags]));
    await fs.access(path.join(dir, 'hearth-index.sqlite'));
  });

  it('replaces an unreadable index file', async () => {
    await deliver('a');
    const dir = await maildir.ensureMaildir(al);
    await fs.writeFile(path.join(dir, 'hearth-index.sqlite'), 'this is not a database, not at all, no'.repeat(200));
    const u = await openAl();
    expect((await u.sync('INBOX')).messages).toHaveLength(1);
  });

  it('notifyDelivered syncs an open mailbox and emits added', async () => {
    const store = mailStore();
    await store.notifyDelivered(al); // not open: nothing to do, no error
    const u = await store.open(al);
    await u.sync('INBOX');
    const seen = events(u);
    const file = await deliver('fresh');
    await store.notifyDelivered(al, 'INBOX');
    expect(seen).toHaveLength(1);
    const ev = seen[0];
    expect(ev.kind).toBe('added');
    if (ev.kind !== 'added') return;
    expect(ev.records.map((r) => [r.uid, r.path])).toEqual([[1, file]]);
    await store.notifyDelivered(al, 'NoSuchFolder'); // logged, not thrown
  });

  it('lockMaildrop is exclusive until its owner unlocks', async () => {
    const u = await openAl();
    const a = {};
    const b = {};
    expect(u.lockMaildrop(a)).toBe(true);
    expect(u.lockMaildrop(a)).toBe(true);
    expect(u.lockMaildrop(b)).toBe(false);
    u.unlockMaildrop(b); // not the owner: no effect
    expect(u.lockMaildrop(b)).toBe(false);
    u.unlockMaildrop(a);
    expect(u.lockMaildrop(b)).toBe(true);
  });

  it('one UserMailboxes per user; operations after close fail with STORE_CLOSED', async () => {
    const store = mailStore();
    const [x, y] = await Promise.all([store.open(al), store.open({ user: 'AL', domain: 'Example.ORG' })]);
    expect(x).toBe(y);
    await store.close();
    await expectCode(x.sync('INBOX'), 'STORE_CLOSED');
    await expectCode(store.open(al), 'STORE_CLOSED');
  });

  it('works with fsync on', async () => {
    const durable = new MaildirStore({ root, hostname: 'mx.test', fsync: true });
    const s = new MailStore({ maildir: durable });
    stores.push(s);
    const u = await s.open(al);
    const rec = await u.append('INBOX', Buffer.from('Subject: d\r\n\r\nx\r\n'));
    const r = await u.setFlags('INBOX', [rec.uid], 'add', ['\\Seen']);
    expect(r.changed[0].flags).toEqual(['\\Seen']);
    expect(await u.move('INBOX', [rec.uid], 'Trash')).toEqual([{ from: 1, to: 1 }]);
  });
});

describe('vsize: the CRLF size from the file name (Dovecot W=)', () => {
  const crlfSize = (s: string): number => Buffer.byteLength(s.replace(/\r?\n/g, '\r\n'));

  it('comes from W= at sync, is kept in the index, and survives a restart', async () => {
    const crlf = 'Subject: a\r\n\r\nline\r\n';
    const bare = 'Subject: b\n\nline one\nline two\n';
    await maildir.deliver([al], crlf);
    await maildir.deliver([al], bare);
    const u = await openAl();
    const st = await u.sync('INBOX');
    expect(st.messages.map((m) => [m.size, m.vsize])).toEqual([
      [crlf.length, crlf.length],
      [bare.length, crlfSize(bare)],
    ]);
    // A new process reads it back from the index.
    const again = await mailStore().open(al).then((x) => x.sync('INBOX'));
    expect(again.messages.map((m) => m.vsize)).toEqual([crlf.length, crlfSize(bare)]);
  });

  it('is counted from the file (bare LF as CRLF) when it has no W=, or its S= does not match the file', async () => {
    const inboxDir = await maildir.ensureMaildir(al);
    await fs.writeFile(path.join(inboxDir, 'new', '1700000000.M1P1.foreign'), 'Subject: x\n\nx\n');
    await fs.writeFile(path.join(inboxDir, 'new', '1700000001.M1P1.foreign,S=14'), 'Subject: y\n\ny\n');
    // Rewritten by someone after naming: S= says 99, so W= cannot be trusted either.
    await fs.writeFile(path.join(inboxDir, 'new', '1700000002.M1P1.foreign,S=99,W=101'), 'Subject: z\n\nz\n');
    await fs.writeFile(path.join(inboxDir, 'new', '1700000003.M1P1.dovecot,S=14,W=17'), 'Subject: w\n\nw\n');
    const u = await openAl();
    const st = await u.sync('INBOX');
    expect(st.messages.map((m) => [m.size, m.vsize])).toEqual([
      [14, 17],
      [14, 17],
      [14, 17],
      [14, 17],
    ]);
    expect((await u.readMessage('INBOX', 1))!.toString()).toBe('Subject: x\n\nx\n');
  });

  it('append, copy, move and flag changes keep it, and the new names carry W=', async () => {
    const u = await openAl();
    const body = 'Subject: c\n\nbare\nlines\n';
    const rec = await u.append('INBOX', Buffer.from(body), { flags: ['\\Seen'] });
    expect(rec.vsize).toBe(crlfSize(body));
    expect(rec.key).toMatch(new RegExp(`,S=${body.length},W=${crlfSize(body)}$`));
    const [flagged] = (await u.setFlags('INBOX', [rec.uid], 'add', ['\\Flagged'])).changed;
    expect(flagged.vsize).toBe(crlfSize(body));
    await u.copy('INBOX', [rec.uid], 'Archive');
    await u.move('INBOX', [rec.uid], 'Trash');
    for (const folder of ['Archive', 'Trash']) {
      const [m] = u.state(folder)!.messages;
      expect(m.vsize).toBe(crlfSize(body));
      expect(path.basename(m.path)).toMatch(new RegExp(`,S=${body.length},W=${crlfSize(body)}:2,FS$`));
    }
    // And a fresh index built from the Maildir alone finds the same.
    await fs.rm(path.join(u.dir, 'hearth-index.sqlite'));
    const rebuilt = await mailStore().open(al).then((x) => x.sync('Trash'));
    expect(rebuilt.messages.map((m) => m.vsize)).toEqual([crlfSize(body)]);
  });

  it('an index file from before the vsize column gains it, and its rows still get W= from their names', async () => {
    const body = 'Subject: d\n\nold\n';
    await maildir.deliver([al], body);
    const first = mailStore();
    const u = await first.open(al);
    await u.sync('INBOX');
    const file = path.join(u.dir, 'hearth-index.sqlite');
    await first.close();
    // Make it look like an index written by the previous version.
    const { DatabaseSync } = await import('node:sqlite');
    const db = new DatabaseSync(file);
    db.exec('ALTER TABLE messages DROP COLUMN vsize');
    db.close();
    const st = await mailStore().open(al).then((x) => x.sync('INBOX'));
    expect(st.messages.map((m) => m.vsize)).toEqual([crlfSize(body)]);
    const check = new DatabaseSync(file);
    expect((check.prepare('PRAGMA table_info(messages)').all() as Array<{ name: string }>).map((r) => r.name)).toContain('vsize');
    check.close();
  });
});


describe('delivery order of Maildir names', () => {
  it('orders files of one millisecond by their counter as a number (Q9 before Q10)', () => {
    const names = ['1795552435.M615000P16199Q10R1.host,S=1', '1795552435.M615000P16199Q9R2.host,S=1', '1795552435.M615000P16199Q100R0.host,S=1', '1795552434.M999999P1Q1R0.host,S=1'];
    expect([...names].sort(compareDeliveryOrder).map((n) => /Q(\d+)/.exec(n)![1])).toEqual(['1', '9', '10', '100']);
  });
});
