// The CRLF size of a file without W= is counted at sync by reading the file; another program
// (mutt marking it read) may rename it between the directory listing and that read.
import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { al, useStoreFixture } from './store-fixture.ts';

const renameBeforeRead = vi.hoisted(() => ({ from: '', to: '' }));

vi.mock('../../src/store/maildir.ts', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/store/maildir.ts')>();
  return {
    ...real,
    crlfSizeOfFile: async (file: string) => {
      if (file === renameBeforeRead.from) {
        renameBeforeRead.from = '';
        await fs.rename(file, renameBeforeRead.to);
      }
      return real.crlfSizeOfFile(file);
    },
  };
});

const fx = useStoreFixture('hearth-vsize-race-');

describe('vsize of a file renamed while its size is counted', () => {
  it('is counted under its new name at the next sync, not left unknown for good', async () => {
    const inboxDir = await fx.maildir.ensureMaildir(al);
    const body = 'Subject: x\n\nx\n';
    const name = '1700000000.M1P1.foreign';
    await fs.writeFile(path.join(inboxDir, 'new', name), body);
    renameBeforeRead.from = path.join(inboxDir, 'new', name);
    renameBeforeRead.to = path.join(inboxDir, 'cur', `${name}:2,S`);
    const u = await fx.mailStore().open(al);
    await u.sync('INBOX');
    const st = await u.sync('INBOX');
    expect(st.messages.map((m) => [m.size, m.vsize])).toEqual([[14, 17]]);
    expect((await u.readMessage('INBOX', st.messages[0].uid))!.toString()).toBe(body);
  });
});
