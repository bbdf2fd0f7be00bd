// Messages that change folders while a backup runs: moved (IMAP MOVE, webmail) from a folder not
// copied yet into one already copied, or their folder renamed. Each must be in the archive once,
// where it is now, and come back on restore (hearth's reconcile on sync adds a file its folder's
// index snapshot does not list). Flag renames are still found; nothing is archived twice, even
// when the folder listing itself raced with a move and saw the message in two folders. A message
// that moves while the folders are being listed, from one not listed yet into one already listed
// (so in no listing), is found by the final sweep, which adds nothing already archived.
import fsp from 'node:fs/promises';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createBackup, restoreBackup, verifyBackup } from '../../src/transfer/backup.ts';
import type { BackupProgress } from '../../src/transfer/backup.ts';
import { MailStore } from '../../src/store/mailboxes.ts';
import { MaildirStore } from '../../src/store/maildir.ts';

const alice = { user: 'alice', domain: 'example.test' };
const TOML = 'hostname = "mx.test.example"\ndomains = ["example.test"]\ndata_dir = "../maildir"\n';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'hearth-backup-moves-'));
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});
afterEach(() => {
  vi.restoreAllMocks();
});

const storeOn = (dataDir: string): MailStore => new MailStore({ maildir: new MaildirStore({ root: join(dataDir), hostname: 'mx.test.example', fsync: false }) });

/**
 * A hearth with alice's messages put in through the store: `Subject: <folder>-<i>` each, read
 * (\Seen, in cur/) unless `unread` (in new/).
 */
async function makeHearth(name: string, folders: Record<string, { count: number; unread?: boolean }>): Promise<{ configDir: string; dataDir: string; user: string }> {
  const configDir = join(work, name, 'config');
  const dataDir = join(work, name, 'maildir');
  await mkdir(configDir, { recursive: true });
  await writeFile(join(configDir, 'hearth.toml'), TOML);
  await writeFile(join(configDir, 'users'), 'alice@example.test $argon2id$fake\n', { mode: 0o600 });
  const mail = storeOn(dataDir);
  try {
    const m = await mail.open(alice);
    for (const [folder, { count, unread }] of Object.entries(folders)) {
      for (let i = 0; i < count; i++) await m.append(folder, Buffer.from(`Subject: ${folder}-${i}\r\n\r\nbody of ${folder} ${i}\r\n`), { flags: unread ? [] : ['\\Seen'] });
    }
  } finally {
    await mail.close();
  }
  return { configDir, dataDir, user: join(dataDir, 'example.test', 'alice') };
}

/** As hearth's store moves a message (#transfer): a rename into the other folder's same cur/ or new/ under a fresh base name, keeping the size fields and flags. */
function storeStyleMove(fromFile: string, toFolderDir: string): string {
  const parts = fromFile.split('/');
  const name = parts.at(-1)!;
  const sub = parts.at(-2)!;
  const colon = name.indexOf(':');
  const base = colon < 0 ? name : name.slice(0, colon);
  const info = colon < 0 ? '' : name.slice(colon);
  const fresh = `${new MaildirStore({ root: work, hostname: 'mx.test.example' }).newBaseName()}${base.slice(base.indexOf(','))}${info}`;
  const dest = join(toFolderDir, sub, fresh);
  renameSync(fromFile, dest);
  return dest;
}

/** Calls `fn` once, on the first progress report past every file under `prefix` (so that folder is copied). */
function once(prefix: string, fn: () => void): (p: BackupProgress) => void {
  let seen = false;
  let done = false;
  return (p) => {
    if (done) return;
    if (p.file.startsWith(prefix)) seen = true;
    else if (seen) {
      done = true;
      fn();
    }
  };
}

/** Restore `archive` somewhere new and list, per folder, the subjects hearth serves there (after its reconcile). */
async function restoredSubjects(archive: string, name: string): Promise<Record<string, string[]>> {
  const target = join(work, `${name}-restored`);
  await restoreBackup({ archive, configDir: join(target, 'config'), dataDir: join(target, 'maildir') });
  const mail = storeOn(join(target, 'maildir'));
  try {
    const m = await mail.open(alice);
    const out: Record<string, string[]> = {};
    for (const { name: folder } of await m.listFolders()) {
      const subjects: string[] = [];
      for (const rec of (await m.sync(folder)).messages) subjects.push(/^Subject: (.*)\r$/m.exec((await m.readMessage(folder, rec.uid))!.toString())![1]!);
      if (subjects.length) out[folder] = subjects.sort();
    }
    return out;
  } finally {
    await mail.close();
  }
}

const messagePaths = (paths: string[]): string[] => paths.filter((p) => /\/(cur|new)\/[^/]+$/.test(p));
const range = (prefix: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${prefix}-${i}`).sort();

describe('a message moved to another folder while the backup runs', () => {
  it('moved (as the store does: new base name) from a folder not copied yet into one already copied: archived once, at its new path, and restored', async () => {
    const { configDir, dataDir, user } = await makeHearth('moved', { Archive: { count: 2 }, Trash: { count: 3 } });
    const trashFiles = (await readdir(join(user, '.Trash', 'cur'))).sort();
    let movedTo = '';
    const r = await createBackup({
      configDir,
      dataDir,
      out: join(work, 'moved.tar'),
      onProgress: once('data/example.test/alice/.Archive/', () => {
        movedTo = storeStyleMove(join(user, '.Trash', 'cur', trashFiles[1]!), join(user, '.Archive'));
      }),
    });
    expect(movedTo).not.toBe('');
    const paths = r.manifest.files.map((f) => f.path);
    expect(paths).toContain(`data/example.test/alice/.Archive/cur/${movedTo.split('/').at(-1)}`);
    expect(paths).not.toContain(`data/example.test/alice/.Trash/cur/${trashFiles[1]}`);
    expect(messagePaths(paths)).toHaveLength(5);
    expect(new Set(paths).size).toBe(paths.length);
    expect(r.manifest.vanished).toBe(0);
    expect(r.manifest.counts.messages).toBe(5);
    expect((await verifyBackup(r.archive)).problems).toEqual([]);
    // The index snapshot still has it in Trash (the move happened behind the store's back, as
    // another program's would): on sync, Archive adds it and Trash expunges it.
    const restored = await restoredSubjects(r.archive, 'moved');
    expect(restored.Archive).toHaveLength(3);
    expect(restored.Trash).toHaveLength(2);
    expect(Object.values(restored).flat().sort()).toEqual([...range('Archive', 2), ...range('Trash', 3)].sort());
  });

  it('moved by the store itself (its MOVE, index updated) while the backup waits on that very file', async () => {
    const { configDir, dataDir, user } = await makeHearth('store-move', { Archive: { count: 1 }, Trash: { count: 2 } });
    const trashFile = join(user, '.Trash', 'cur', (await readdir(join(user, '.Trash', 'cur'))).sort()[0]!);
    const mail = storeOn(dataDir);
    try {
      const m = await mail.open(alice);
      const uid = (await m.sync('Trash')).messages.find((rec) => rec.path === trashFile)?.uid;
      expect(uid).toBeDefined();
      // The backup is about to open the Trash message: hearth moves it to Archive first.
      const realOpen = fsp.open.bind(fsp);
      let moved = false;
      vi.spyOn(fsp, 'open').mockImplementation(async (...args: Parameters<typeof fsp.open>) => {
        if (!moved && args[0] === trashFile) {
          moved = true;
          await m.move('Trash', [uid!], 'Archive');
        }
        return realOpen(...args);
      });
      const r = await createBackup({ configDir, dataDir, out: join(work, 'store-move.tar') });
      vi.restoreAllMocks();
      expect(moved).toBe(true);
      const paths = r.manifest.files.map((f) => f.path);
      expect(messagePaths(paths).filter((p) => p.includes('/.Archive/'))).toHaveLength(2);
      expect(messagePaths(paths).filter((p) => p.includes('/.Trash/'))).toHaveLength(1);
      expect(r.manifest.vanished).toBe(0);
      expect((await verifyBackup(r.archive)).problems).toEqual([]);
      expect(await restoredSubjects(r.archive, 'store-move')).toEqual({ Archive: ['Archive-0', 'Trash-0'].sort(), Trash: ['Trash-1'] });
    } finally {
      await mail.close();
    }
  });

  it('moved keeping its base name (another program), into INBOX new/: found there too', async () => {
    const { configDir, dataDir, user } = await makeHearth('kept-name', { INBOX: { count: 1 }, Trash: { count: 1 } });
    const [name] = await readdir(join(user, '.Trash', 'cur'));
    const r = await createBackup({
      configDir,
      dataDir,
      out: join(work, 'kept-name.tar'),
      // INBOX (the user's own cur/new) is copied after the .Folders: move as the first file is done.
      onProgress: once('config/', () => renameSync(join(user, '.Trash', 'cur', name!), join(user, 'new', name!.slice(0, name!.indexOf(':'))))),
    });
    const paths = r.manifest.files.map((f) => f.path);
    expect(paths).toContain(`data/example.test/alice/new/${name!.slice(0, name!.indexOf(':'))}`);
    expect(messagePaths(paths)).toHaveLength(2);
    expect(r.manifest.vanished).toBe(0);
    expect((await verifyBackup(r.archive)).problems).toEqual([]);
  });

  it('many moved and many marked read at once: all found, each folder listed once a round, not once a message', async () => {
    const { configDir, dataDir, user } = await makeHearth('many', { INBOX: { count: 60, unread: true }, Archive: { count: 1 }, Trash: { count: 60 } });
    const trashFiles = await readdir(join(user, '.Trash', 'cur'));
    const unread = await readdir(join(user, 'new'));
    expect(unread).toHaveLength(60);
    const readdirs = vi.spyOn(fsp, 'readdir');
    const r = await createBackup({
      configDir,
      dataDir,
      out: join(work, 'many.tar'),
      onProgress: once('data/example.test/alice/.Archive/', () => {
        for (const f of trashFiles) storeStyleMove(join(user, '.Trash', 'cur', f), join(user, '.Archive'));
        for (const n of unread) renameSync(join(user, 'new', n), join(user, 'cur', `${n}:2,S`));
      }),
    });
    const paths = r.manifest.files.map((f) => f.path);
    for (const n of unread) expect(paths).toContain(`data/example.test/alice/cur/${n}:2,S`);
    expect(messagePaths(paths).filter((p) => p.includes('/.Archive/cur/'))).toHaveLength(61);
    expect(messagePaths(paths)).toHaveLength(121);
    expect(new Set(paths).size).toBe(paths.length);
    expect(r.manifest.vanished).toBe(0);
    // Once by the walk, once by the one retry round.
    const calls = (dir: string) => readdirs.mock.calls.filter(([d]) => d === dir).length;
    for (const dir of ['cur', 'new', '.Archive/cur', '.Archive/new', '.Trash/cur', '.Trash/new']) expect(calls(join(user, dir)), dir).toBeLessThanOrEqual(2);
    readdirs.mockRestore();
    expect((await verifyBackup(r.archive)).problems).toEqual([]);
    const restored = await restoredSubjects(r.archive, 'many');
    expect(restored.Archive).toEqual([...range('Archive', 1), ...range('Trash', 60)].sort());
    expect(restored.INBOX).toEqual(range('INBOX', 60));
    expect(restored.Trash).toBeUndefined();
  });
});

describe('a flag rename', () => {
  it('is still found in its own folder, under its new name', async () => {
    const { configDir, dataDir, user } = await makeHearth('flags', { INBOX: { count: 2, unread: true }, Archive: { count: 1 } });
    const [first] = (await readdir(join(user, 'new'))).sort();
    const r = await createBackup({
      configDir,
      dataDir,
      out: join(work, 'flags.tar'),
      onProgress: once('config/', () => renameSync(join(user, 'new', first!), join(user, 'cur', `${first}:2,FS`))),
    });
    const paths = r.manifest.files.map((f) => f.path);
    expect(paths).toContain(`data/example.test/alice/cur/${first}:2,FS`);
    expect(paths).not.toContain(`data/example.test/alice/new/${first}`);
    expect(messagePaths(paths)).toHaveLength(3);
    expect(r.manifest.vanished).toBe(0);
    expect((await verifyBackup(r.archive)).problems).toEqual([]);
  });
});

describe('never archived twice', () => {
  it('a message moved while the folders were being listed, seen in both: archived once, not counted as vanished', async () => {
    const { configDir, dataDir, user } = await makeHearth('listed-twice', { Archive: { count: 2 }, Trash: { count: 1 } });
    const [renamed, kept] = (await readdir(join(user, '.Archive', 'cur'))).sort();
    const trashDir = join(user, '.Trash');
    const realReaddir = fsp.readdir.bind(fsp) as (...a: unknown[]) => Promise<unknown>;
    let moved = false;
    // .Archive is listed before .Trash: just before the walk lists .Trash, one Archive message
    // moves into it as the store does (a new name) and another as other programs do (same name).
    vi.spyOn(fsp, 'readdir').mockImplementation((async (...args: unknown[]) => {
      if (!moved && args[0] === trashDir) {
        moved = true;
        storeStyleMove(join(user, '.Archive', 'cur', renamed!), trashDir);
        renameSync(join(user, '.Archive', 'cur', kept!), join(trashDir, 'cur', kept!));
      }
      return realReaddir(...args);
    }) as typeof fsp.readdir);
    const r = await createBackup({ configDir, dataDir, out: join(work, 'listed-twice.tar') });
    vi.restoreAllMocks();
    expect(moved).toBe(true);
    const paths = r.manifest.files.map((f) => f.path);
    expect(new Set(paths).size).toBe(paths.length);
    expect(messagePaths(paths)).toHaveLength(3);
    expect(messagePaths(paths).filter((p) => p.includes('/.Trash/cur/'))).toHaveLength(3);
    expect(r.manifest.vanished).toBe(0);
    expect((await verifyBackup(r.archive)).problems).toEqual([]);
    expect(Object.values(await restoredSubjects(r.archive, 'listed-twice')).flat().sort()).toEqual(['Archive-0', 'Archive-1', 'Trash-0']);
  });

  it('a message moved into a folder not copied yet is archived there only, with the ordinary copy', async () => {
    const { configDir, dataDir, user } = await makeHearth('forward', { Archive: { count: 2 }, Trash: { count: 1 } });
    const archiveFiles = (await readdir(join(user, '.Archive', 'cur'))).sort();
    let movedTo = '';
    // After the first Archive message is copied, the second moves to Trash (not copied yet),
    // after the listing: it vanishes from Archive and is not in Trash's listing either.
    const r = await createBackup({
      configDir,
      dataDir,
      out: join(work, 'forward.tar'),
      onProgress: (p) => {
        if (!movedTo && p.file.endsWith(archiveFiles[0]!)) movedTo = storeStyleMove(join(user, '.Archive', 'cur', archiveFiles[1]!), join(user, '.Trash'));
      },
    });
    expect(movedTo).not.toBe('');
    const paths = r.manifest.files.map((f) => f.path);
    expect(new Set(paths).size).toBe(paths.length);
    expect(paths).toContain(`data/example.test/alice/.Trash/cur/${movedTo.split('/').at(-1)}`);
    expect(messagePaths(paths)).toHaveLength(3);
    expect(r.manifest.vanished).toBe(0);
    expect((await verifyBackup(r.archive)).problems).toEqual([]);
  });
});

describe('a message moved while the folders are being listed', () => {
  it('from a folder not listed yet into one already listed: in no listing, archived once by the final sweep, and restored', async () => {
    const { configDir, dataDir, user } = await makeHearth('walk-move', { INBOX: { count: 2 }, Archive: { count: 1 }, Trash: { count: 2 } });
    const [trashFile] = (await readdir(join(user, '.Trash', 'cur'))).sort();
    const [inboxFile] = (await readdir(join(user, 'cur'))).sort();
    const archiveDir = join(user, '.Archive');
    const realReaddir = fsp.readdir.bind(fsp) as (...a: unknown[]) => Promise<unknown>;
    let movedTo = '';
    // The walk lists .Archive, then .Trash, then INBOX (the user's own cur/ new/): just before it
    // lists .Trash, a Trash message moves to Archive as the store does (a new name) and an INBOX
    // message as other programs do (same name). Neither is in any listing.
    vi.spyOn(fsp, 'readdir').mockImplementation((async (...args: unknown[]) => {
      if (!movedTo && args[0] === join(user, '.Trash')) {
        movedTo = storeStyleMove(join(user, '.Trash', 'cur', trashFile!), archiveDir);
        renameSync(join(user, 'cur', inboxFile!), join(archiveDir, 'cur', inboxFile!));
      }
      return realReaddir(...args);
    }) as typeof fsp.readdir);
    const r = await createBackup({ configDir, dataDir, out: join(work, 'walk-move.tar') });
    vi.restoreAllMocks();
    expect(movedTo).not.toBe('');
    const paths = r.manifest.files.map((f) => f.path);
    expect(new Set(paths).size).toBe(paths.length);
    expect(paths).toContain(`data/example.test/alice/.Archive/cur/${movedTo.split('/').at(-1)}`);
    expect(paths).toContain(`data/example.test/alice/.Archive/cur/${inboxFile}`);
    expect(messagePaths(paths)).toHaveLength(5);
    expect(r.manifest.counts.messages).toBe(5);
    expect(r.manifest.vanished).toBe(0);
    expect((await verifyBackup(r.archive)).problems).toEqual([]);
    const restored = await restoredSubjects(r.archive, 'walk-move');
    expect(Object.values(restored).flat().sort()).toEqual([...range('INBOX', 2), ...range('Archive', 1), ...range('Trash', 2)].sort());
    expect(restored.Archive).toHaveLength(3);
  });

  it('into a folder the walk never saw (made during the walk): archived with its folder made whole', async () => {
    const { configDir, dataDir, user } = await makeHearth('walk-new-folder', { INBOX: { count: 1 }, Trash: { count: 2 } });
    const [trashFile] = (await readdir(join(user, '.Trash', 'cur'))).sort();
    const realReaddir = fsp.readdir.bind(fsp) as (...a: unknown[]) => Promise<unknown>;
    let movedTo = '';
    // .Trash is about to be listed: a folder .Archive (sorted before it, so never listed) is made
    // as the store makes one, and a Trash message moves into it.
    vi.spyOn(fsp, 'readdir').mockImplementation((async (...args: unknown[]) => {
      if (!movedTo && args[0] === join(user, '.Trash')) {
        for (const sub of ['cur', 'new', 'tmp']) mkdirSync(join(user, '.Archive', sub), { recursive: true });
        writeFileSync(join(user, '.Archive', 'maildirfolder'), '');
        movedTo = storeStyleMove(join(user, '.Trash', 'cur', trashFile!), join(user, '.Archive'));
      }
      return realReaddir(...args);
    }) as typeof fsp.readdir);
    const r = await createBackup({ configDir, dataDir, out: join(work, 'walk-new-folder.tar') });
    vi.restoreAllMocks();
    expect(movedTo).not.toBe('');
    const paths = r.manifest.files.map((f) => f.path);
    expect(new Set(paths).size).toBe(paths.length);
    expect(paths).toContain(`data/example.test/alice/.Archive/cur/${movedTo.split('/').at(-1)}`);
    expect(paths).toContain('data/example.test/alice/.Archive/maildirfolder');
    expect(r.manifest.dirs!.map((d) => d.path)).toEqual(expect.arrayContaining(['.Archive', '.Archive/cur', '.Archive/new', '.Archive/tmp'].map((d) => `data/example.test/alice/${d}`)));
    expect(messagePaths(paths)).toHaveLength(3);
    expect(r.manifest.vanished).toBe(0);
    expect((await verifyBackup(r.archive)).problems).toEqual([]);
    expect(Object.values(await restoredSubjects(r.archive, 'walk-new-folder')).flat().sort()).toEqual(['INBOX-0', 'Trash-0', 'Trash-1']);
  });
});

/** A read message's name (`…:2,S`) once flagged too. */
const flagged = (name: string): string => name.replace(/:2,S$/, ':2,FS');

describe('the final sweep adds nothing twice', () => {
  it('messages renamed after being copied (flags) are not added again; mail that arrived meanwhile is added once; each folder listed once more', async () => {
    const { configDir, dataDir, user } = await makeHearth('sweep-twice', { INBOX: { count: 20 }, Archive: { count: 2 } });
    const inboxFiles = await readdir(join(user, 'cur'));
    const readdirs = vi.spyOn(fsp, 'readdir');
    const arrived = Buffer.from('Subject: arrived\r\n\r\nnew mail\r\n');
    let arrivedName = '';
    const r = await createBackup({
      configDir,
      dataDir,
      out: join(work, 'sweep-twice.tar'),
      // INBOX's cur/ is copied: every message in it is flagged (a new name, the same file), and a
      // message is delivered to its new/.
      onProgress: once('data/example.test/alice/cur/', () => {
        for (const n of inboxFiles) renameSync(join(user, 'cur', n), join(user, 'cur', flagged(n)));
        arrivedName = `${new MaildirStore({ root: work, hostname: 'mx.test.example' }).newBaseName()},S=${arrived.length}`;
        writeFileSync(join(user, 'new', arrivedName), arrived);
      }),
    });
    expect(arrivedName).not.toBe('');
    const paths = r.manifest.files.map((f) => f.path);
    expect(new Set(paths).size).toBe(paths.length);
    for (const n of inboxFiles) expect(paths).toContain(`data/example.test/alice/cur/${n}`);
    for (const n of inboxFiles) expect(paths).not.toContain(`data/example.test/alice/cur/${flagged(n)}`);
    expect(paths).toContain(`data/example.test/alice/new/${arrivedName}`);
    expect(messagePaths(paths)).toHaveLength(23);
    expect(r.manifest.vanished).toBe(0);
    // Once by the walk, once by the final sweep (nothing vanished: no retry round).
    const calls = (dir: string) => readdirs.mock.calls.filter(([d]) => d === dir).length;
    for (const dir of ['cur', 'new', '.Archive/cur', '.Archive/new']) expect(calls(join(user, dir)), dir).toBe(2);
    readdirs.mockRestore();
    expect((await verifyBackup(r.archive)).problems).toEqual([]);
    const restored = await restoredSubjects(r.archive, 'sweep-twice');
    expect(restored.INBOX).toEqual([...range('INBOX', 20), 'arrived'].sort());
    expect(restored.Archive).toEqual(range('Archive', 2));
  });
});

describe('a folder renamed while the backup runs', () => {
  it('its messages are archived under the new name, with the folder made whole (cur/ new/ tmp/, marker)', async () => {
    const { configDir, dataDir, user } = await makeHearth('folder-rename', { Archive: { count: 1 }, Trash: { count: 3 } });
    const r = await createBackup({
      configDir,
      dataDir,
      out: join(work, 'folder-rename.tar'),
      // What the store's renameFolder does on disk: one rename of the folder's directory.
      onProgress: once('data/example.test/alice/.Archive/', () => renameSync(join(user, '.Trash'), join(user, '.Old'))),
    });
    const paths = r.manifest.files.map((f) => f.path);
    expect(messagePaths(paths).filter((p) => p.startsWith('data/example.test/alice/.Old/cur/'))).toHaveLength(3);
    expect(paths).toContain('data/example.test/alice/.Old/maildirfolder');
    expect(r.manifest.dirs!.map((d) => d.path)).toEqual(expect.arrayContaining(['.Old', '.Old/cur', '.Old/new', '.Old/tmp'].map((d) => `data/example.test/alice/${d}`)));
    // Only the old name's marker is gone.
    expect(r.manifest.vanished).toBe(1);
    expect((await verifyBackup(r.archive)).problems).toEqual([]);
    expect(await restoredSubjects(r.archive, 'folder-rename')).toEqual({ Archive: ['Archive-0'], Old: range('Trash', 3) });
  });
});
