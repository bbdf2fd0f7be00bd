// Export round trips: a user's folder exported as mbox and imported into another user is the
// same, byte for byte per message, with the same flags and internal dates; likewise through a
// Maildir export. Also: export of every folder into a directory, and the refusals.
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeSetup } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { exportMaildir, exportMbox } from '../../src/transfer/export.ts';
import { importMaildir, importMbox } from '../../src/transfer/import.ts';
import type { MailStore } from '../../src/store/mailboxes.ts';
import { FIXTURES, alice, bob, folderContents, openStore, runCli } from './helpers.ts';

describe('export', () => {
  let setup: TestSetup;
  let out: string;
  let mail: MailStore;

  beforeAll(async () => {
    setup = await makeSetup({ fsync: false, users: { 'alice@example.test': 'alice-password', 'bob@example.test': 'bob-password', 'carol@example.test': 'carol-password' } });
    out = await mkdtemp(join(tmpdir(), 'hearth-export-'));
    mail = openStore(setup);
    await importMbox({ mail, box: alice, file: join(FIXTURES, 'tricky.mbox'), folder: 'Old' });
    // Messages the way SMTP delivers them (CRLF), with a keyword set over IMAP, and one with a
    // `From ` body line and no final line ending.
    const m = await mail.open(alice);
    await m.append('INBOX', Buffer.from('From: a@x.example\r\nSubject: kw\r\n\r\nFrom the body\r\n>From quoted\r\n'), { flags: ['\\Seen', '$Forwarded', 'Project'], internalDate: new Date('2023-04-05T06:07:08Z') });
    await m.append('INBOX', Buffer.from('From: a@x.example\r\nSubject: new\r\n\r\nunseen\r\n'));
  });
  afterAll(async () => {
    await mail?.close();
    await setup?.cleanup();
    await rm(out, { recursive: true, force: true });
  });

  it('mbox: export then import into another user is byte-exact per message, with flags and dates', async () => {
    const file = join(out, 'old.mbox');
    const r = await exportMbox({ mail, box: alice, folder: 'Old', out: file });
    expect(r.messages).toBe(4);
    const text = await readFile(file, 'latin1');
    expect(text).toContain('\n>From the start of a line');
    expect(text).toContain('\n>>From a line that was already quoted once.');
    expect(text).toContain('\n>From here on, an unquoted line');
    expect(text).not.toContain('\r\n');
    expect(text).toMatch(/^From alice@example\.org Mon Jan 15 10:30:00 2024\n/);

    const back = await importMbox({ mail, box: bob, file, folder: 'Old' });
    expect(back).toMatchObject({ imported: 4, duplicates: 0, broken: [] });
    const original = await folderContents(mail, alice, 'Old');
    const copy = await folderContents(mail, bob, 'Old');
    expect(copy.length).toBe(original.length);
    for (let i = 0; i < original.length; i++) {
      expect(copy[i].content.equals(original[i].content), `message ${i + 1} differs`).toBe(true);
      expect(copy[i].flags).toEqual(original[i].flags);
      expect(Math.floor(copy[i].internalDate / 1000)).toBe(Math.floor(original[i].internalDate / 1000));
    }
  });

  it('mbox: without --folder, one FOLDER.mbox per folder; the INBOX round-trips too', async () => {
    const dir = join(out, 'all');
    const r = await exportMbox({ mail, box: alice, out: dir });
    expect(r.folders.map((f) => f.folder)).toEqual(expect.arrayContaining(['INBOX', 'Old', 'Sent', 'Trash']));
    expect((await readdir(dir)).sort()).toEqual(expect.arrayContaining(['INBOX.mbox', 'Old.mbox']));
    await importMbox({ mail, box: bob, file: join(dir, 'INBOX.mbox') });
    const original = await folderContents(mail, alice, 'INBOX');
    const copy = await folderContents(mail, bob, 'INBOX');
    expect(copy.map((c) => c.content.toString('latin1'))).toEqual(original.map((c) => c.content.toString('latin1')));
    expect(copy.map((c) => c.flags)).toEqual(original.map((c) => c.flags));
  });

  it('maildir: export then import keeps bytes, flags, keywords and dates', async () => {
    const dir = join(out, 'maildir');
    const r = await exportMaildir({ mail, box: alice, out: dir });
    expect(r.messages).toBe(6);
    expect(await readFile(join(dir, 'dovecot-keywords'), 'utf8')).toMatch(/^0 \$Forwarded\n1 Project\n$/);
    const carol = { user: 'carol', domain: 'example.test' };
    const back = await importMaildir({ mail, box: carol, dir });
    expect(back).toMatchObject({ imported: 6, broken: [] });
    for (const folder of ['INBOX', 'Old']) {
      const original = await folderContents(mail, alice, folder);
      const copy = await folderContents(mail, carol, folder);
      expect(copy.map((c) => c.content.toString('latin1')).sort()).toEqual(original.map((c) => c.content.toString('latin1')).sort());
      const key = (c: { flags: string[]; internalDate: number }) => `${c.flags.join(' ')}@${Math.floor(c.internalDate / 1000)}`;
      expect(copy.map(key).sort()).toEqual(original.map(key).sort());
    }
    await expect(exportMaildir({ mail, box: alice, out: dir })).rejects.toMatchObject({ code: 'EXPORT_NOT_EMPTY' });
  });

  it('refuses an unknown folder and an unknown user', async () => {
    await expect(exportMbox({ mail, box: alice, folder: 'Nope', out: join(out, 'x.mbox') })).rejects.toMatchObject({ code: 'EXPORT_NO_FOLDER' });
    const r = await runCli(['export', 'mbox', join(out, 'y.mbox'), '--user', 'nobody@example.test', '-c', setup.configDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no user nobody@example\.test/);
  });

  it('import refuses a file that is not an mbox, and reports bad input files clearly', async () => {
    const notMbox = join(out, 'not.mbox');
    await writeFile(notMbox, 'Subject: hi\n\nno separator\n');
    await expect(importMbox({ mail, box: bob, file: notMbox })).rejects.toMatchObject({ code: 'MBOX_NOT_MBOX' });
    await expect(importMbox({ mail, box: bob, file: join(out, 'missing.mbox') })).rejects.toMatchObject({ code: 'IMPORT_NO_FILE' });
    await expect(importMaildir({ mail, box: bob, dir: out })).rejects.toMatchObject({ code: 'IMPORT_NOT_MAILDIR' });
  });
});
