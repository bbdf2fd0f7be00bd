// peekNewest: after a restart, a page of a folder straight from the index file, before the folder
// is loaded. It must equal what the full load gives, and must not answer when the Maildir changed
// behind the index's back (the directory mtimes recorded at the last scan no longer match).
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect, it } from 'vitest';
import { isInNew } from '../../src/store/mailboxes.ts';
import { al, useStoreFixture } from './store-fixture.ts';
import type { MessageRecord, UserMailboxes } from '../../src/store/mailboxes.ts';

const fx = useStoreFixture('hearth-index-peek-');

async function open(): Promise<UserMailboxes> {
  return fx.mailStore().open(al);
}

async function restart(): Promise<UserMailboxes> {
  await fx.closeStores();
  return open();
}

const fields = (r: MessageRecord) => ({
  uid: r.uid,
  key: r.key,
  flags: [...r.flags],
  size: r.size,
  vsize: r.vsize,
  internalDate: r.internalDate,
  modseq: r.modseq,
  path: r.path,
  inNew: isInNew(r),
});

/** Put new/ and cur/ a minute back, then sync: the scan records mtimes it can trust. */
async function settle(u: UserMailboxes, folder = 'INBOX'): Promise<void> {
  const dir = fx.maildir.maildirPath(al, folder);
  const old = new Date(Date.now() - 60_000);
  for (const sub of ['new', 'cur']) await fs.utimes(path.join(dir, sub), old, old);
  await u.sync(folder);
}

/** A folder with every kind of record: seen or not, flagged, answered, keywords, in new/, no W=, an expunged UID. */
async function fill(u: UserMailboxes, folder = 'INBOX'): Promise<void> {
  for (let i = 0; i < 23; i++) {
    const flags = [i % 3 === 0 ? '\\Seen' : '', i % 5 === 0 ? '\\Flagged' : '', i % 7 === 0 ? '\\Answered' : ''].filter((f) => f !== '');
    await u.append(folder, Buffer.from(`Subject: ${i}\r\n\r\nbody ${i}\r\n`), { flags });
  }
  await fx.maildir.deliver([{ ...al, folder }], 'Subject: delivered\r\n\r\nnew\r\n');
  // Another program's file: no S= or W= in its name, flags in it.
  await fs.writeFile(path.join(fx.maildir.maildirPath(al, folder), 'cur', '1735000000.M1P1.other:2,RS'), 'Subject: other\n\nbare LF\n');
  await u.sync(folder);
  await u.setFlags(folder, [2, 4], 'add', ['$Work', 'Junk-ish']);
  await u.setFlags(folder, [6], 'add', ['\\Deleted']);
  await u.expunge(folder, [6]);
  await u.setFlags(folder, [8], 'add', ['$Later']);
}

it('answers from the index file with the same records, order, counts and unseen as the full load', async () => {
  let u = await open();
  await fill(u);
  await settle(u);
  const before = await u.syncShared('INBOX');
  const status = await u.folderStatus('INBOX');
  u = await restart();
  const pages: Array<[number, number]> = [
    [0, 10],
    [10, 10],
    [20, 10],
    [0, 500],
    [24, 3],
    [100, 10],
  ];
  // One peek per restart: the first one starts loading the folder, and a loaded folder is read from memory.
  const peeked = [];
  for (const [offset, limit] of pages) {
    peeked.push(await u.peekNewest('INBOX', offset, limit, { unseen: true }));
    u = await restart();
  }
  const full = await u.syncShared('INBOX');
  expect(full.messages.map(fields)).toEqual(before.messages.map(fields));
  const newestFirst = [...full.messages].reverse();
  for (let i = 0; i < pages.length; i++) {
    const [offset, limit] = pages[i];
    const p = peeked[i];
    expect(p, `page ${offset}+${limit}`).toBeDefined();
    expect(p!.messages.map(fields)).toEqual(newestFirst.slice(offset, offset + limit).map(fields));
    expect(p!.total).toBe(full.messages.length);
    expect(p!.unseen).toBe(status.unseen);
    expect({ uidValidity: p!.uidValidity, uidNext: p!.uidNext, highestModseq: p!.highestModseq }).toEqual({
      uidValidity: full.uidValidity,
      uidNext: full.uidNext,
      highestModseq: full.highestModseq,
    });
  }
  // The folder really has what the comparison is about.
  expect(full.messages).toHaveLength(24);
  expect(status.unseen).toBe(15);
  const flagsOf = (uid: number) => full.messages.find((m) => m.uid === uid)?.flags;
  expect(flagsOf(2)).toEqual(['$Work', 'Junk-ish']);
  expect(flagsOf(4)).toEqual(['\\Seen', '$Work', 'Junk-ish']);
  expect(flagsOf(6)).toBeUndefined();
  // A file another program wrote without W= gets its CRLF size counted when first indexed.
  expect(full.messages.some((m) => m.vsize === 'Subject: other\r\n\r\nbare LF\r\n'.length)).toBe(true);
  expect(full.messages.some((m) => isInNew(m))).toBe(true);
  // Read back and unseen without being asked: only asked for, as it walks every name.
  expect((await (await restart()).peekNewest('INBOX', 0, 5))?.unseen).toBeUndefined();
});

it('counts unseen as the load parses names, also for odd names from other programs', async () => {
  let u = await open();
  const cur = path.join(fx.maildir.maildirPath(al), 'cur');
  // Seen only when the first ':' starts ':2,' and an S follows it.
  for (const name of ['1735000001.a:2,S', '1735000002.b:2,FS', '1735000003.c:2,F', '1735000004.d:1,S', '1735000005.e', '1735000006.f:2,', '1735000007.g:1,x:2,S']) {
    await fs.writeFile(path.join(cur, name), 'Subject: x\n\nx\n');
  }
  await settle(u);
  const status = await u.folderStatus('INBOX');
  expect(status.unseen).toBe(5);
  u = await restart();
  expect((await u.peekNewest('INBOX', 0, 10, { unseen: true }))?.unseen).toBe(5);
});

it('does not answer when another program changed the Maildir behind the index; the full load catches up', async () => {
  let u = await open();
  await fill(u);
  await settle(u);
  const inbox = fx.maildir.maildirPath(al);
  const count = (await u.syncShared('INBOX')).messages.length;

  // A file added to new/ by another program (a delivery agent).
  u = await restart();
  await fs.writeFile(path.join(inbox, 'new', '1736000000.M1P1.mda'), 'Subject: late\r\n\r\nx\r\n');
  expect(await u.peekNewest('INBOX', 0, 10)).toBeUndefined();
  let full = await u.syncShared('INBOX');
  expect(full.messages).toHaveLength(count + 1);
  expect(full.messages.at(-1)!.key).toBe('1736000000.M1P1.mda');
  await settle(u);

  // A flag change by mutt: a rename inside cur/.
  u = await restart();
  const target = (await fs.readdir(path.join(inbox, 'cur'))).find((n) => n.endsWith(':2,F'))!;
  await fs.rename(path.join(inbox, 'cur', target), path.join(inbox, 'cur', `${target}S`));
  expect(await u.peekNewest('INBOX', 0, 10)).toBeUndefined();
  full = await u.syncShared('INBOX');
  expect(full.messages.find((m) => m.path.endsWith(`${target}S`))?.flags).toEqual(['\\Seen', '\\Flagged']);
  await settle(u);

  // A file removed by another program.
  u = await restart();
  const doomed = (await u.peekNewest('INBOX', 0, 1))!.messages[0];
  expect(doomed).toBeDefined();
  u = await restart();
  await fs.unlink(doomed.path);
  expect(await u.peekNewest('INBOX', 0, 10)).toBeUndefined();
  full = await u.syncShared('INBOX');
  expect(full.messages.some((m) => m.uid === doomed.uid)).toBe(false);
  expect(full.messages).toHaveLength(count);
});

it('does not answer without trusted mtimes, for a loaded folder, a missing folder or a closed index', async () => {
  let u = await open();
  await fill(u);
  // Changed and scanned just now: the mtimes are too recent to trust, so no peek.
  const now = new Date();
  for (const sub of ['new', 'cur']) await fs.utimes(path.join(fx.maildir.maildirPath(al), sub), now, now);
  await u.sync('INBOX');
  u = await restart();
  expect(await u.peekNewest('INBOX', 0, 10)).toBeUndefined();
  await settle(u);
  u = await restart();
  expect(await u.peekNewest('INBOX', 0, 10)).toBeDefined();
  // In memory now (the peek started the load behind it, the sync waits for it): read that.
  await u.syncShared('INBOX');
  expect(await u.peekNewest('INBOX', 0, 10)).toBeUndefined();
  expect(await u.peekNewest('Nope', 0, 10)).toBeUndefined();
  expect(await u.peekNewest('../x', 0, 10)).toBeUndefined();
  await u.close();
  expect(await u.peekNewest('INBOX', 0, 10)).toBeUndefined();
});

it('works for other folders, and a folder deleted and created again under its name is not peeked', async () => {
  let u = await open();
  await u.createFolder('Lists/hearth');
  await fill(u, 'Lists/hearth');
  await settle(u, 'Lists/hearth');
  const before = (await u.syncShared('Lists/hearth')).messages;
  u = await restart();
  const p = await u.peekNewest('Lists/hearth', 0, 5);
  expect(p?.messages.map(fields)).toEqual([...before].reverse().slice(0, 5).map(fields));
  await u.deleteFolder('Lists/hearth');
  await u.createFolder('Lists/hearth');
  u = await restart();
  expect(await u.peekNewest('Lists/hearth', 0, 5)).toBeUndefined();
  expect((await u.syncShared('Lists/hearth')).messages).toHaveLength(0);
});

it('later reads use the folder loaded behind the peek, with changes made meanwhile', async () => {
  let u = await open();
  await fill(u);
  await settle(u);
  u = await restart();
  const p = await u.peekNewest('INBOX', 0, 3);
  expect(p).toBeDefined();
  const rec = await u.append('INBOX', Buffer.from('Subject: after\r\n\r\nx\r\n'), { flags: ['\\Seen'] });
  expect(rec.uid).toBe(p!.uidNext);
  const full = await u.syncShared('INBOX');
  expect(full.messages.at(-1)!.uid).toBe(rec.uid);
  expect(full.messages).toHaveLength(p!.total + 1);
  expect(await u.peekNewest('INBOX', 0, 3)).toBeUndefined();
});
