// The index as IMAP sessions read it: syncShared hands out its own snapshot (replaced, never
// changed, when the folder changes); records loaded back after a restart carry the right path,
// flags and new/ state without the path being built up front.
import fs from 'node:fs/promises';
import { expect, it } from 'vitest';
import { isInNew } from '../../src/store/mailboxes.ts';
import { al, useStoreFixture } from './store-fixture.ts';

const fx = useStoreFixture('hearth-index-shared-');
const mailStore = () => fx.mailStore();

it('syncShared: the same array while nothing changes, a new one after a change, the old one untouched', async () => {
  const u = await mailStore().open(al);
  for (let i = 0; i < 3; i++) await u.append('INBOX', Buffer.from(`Subject: ${i}\r\n\r\nx\r\n`), { flags: i === 0 ? ['\\Seen'] : [] });
  const a = await u.syncShared('INBOX');
  const b = await u.syncShared('INBOX');
  expect(b.messages).toBe(a.messages);
  const copy = (await u.sync('INBOX')).messages;
  expect(copy).not.toBe(a.messages);
  expect(copy).toEqual(a.messages);
  await u.setFlags('INBOX', [2], 'add', ['\\Flagged']);
  const c = await u.syncShared('INBOX');
  expect(c.messages).not.toBe(a.messages);
  expect(a.messages[1].flags).toEqual([]);
  expect(c.messages[1].flags).toEqual(['\\Flagged']);
  // Records with the same flags share one frozen array.
  expect(c.messages[2].flags).toBe(a.messages[2].flags);
  expect(Object.isFrozen(c.messages[1].flags)).toBe(true);
});

it('records read back after a restart: paths, flags, keywords and new/ as before', async () => {
  const u = await mailStore().open(al);
  await u.append('INBOX', Buffer.from('Subject: a\r\n\r\nx\r\n'), { flags: ['\\Seen', '$Work'] });
  await u.append('INBOX', Buffer.from('Subject: b\r\n\r\ny\r\n'));
  await fx.maildir.deliver([al], 'Subject: c\r\n\r\nz\r\n');
  const before = (await u.sync('INBOX')).messages;
  const fields = (r: (typeof before)[number]) => ({ uid: r.uid, key: r.key, flags: [...r.flags], size: r.size, vsize: r.vsize, internalDate: r.internalDate, modseq: r.modseq, path: r.path, inNew: isInNew(r) });
  const expected = before.map(fields);
  await fx.closeStores();
  const again = await mailStore().open(al);
  const after = (await again.syncShared('INBOX')).messages;
  expect(after.map(fields)).toEqual(expected);
  expect(expected.map((e) => e.inNew)).toEqual([false, true, true]);
  for (const r of after) await expect(fs.stat(r.path)).resolves.toBeTruthy();
  expect(expected[0].flags).toEqual(['\\Seen', '$Work']);
});
