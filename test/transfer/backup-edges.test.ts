// Backup and restore at their edges, through the module's API (no server): files that go away
// or are renamed en masse while a backup runs, tmp files, the archive's own file (mode, a file or
// link already at OUT.partial), a hostile manifest (folders that climb out, setuid modes), names
// that collide once written, unknown entry types, and --force over a target that holds links or
// a stale SQLite WAL.
import { renameSync, rmSync } from 'node:fs';
import fsp from 'node:fs/promises';
import { chmod, copyFile, lstat, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createBackup, restoreBackup, unsafeEntry, verifyBackup } from '../../src/transfer/backup.ts';
import { craftedArchive } from './helpers.ts';
import type { CraftedEntry as Entry } from './helpers.ts';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'hearth-backup-edges-'));
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

const TOML = 'hostname = "mx.test.example"\ndomains = ["example.test"]\ndata_dir = "../maildir"\n';

/** A small hearth: config (hearth.toml, users), a queue entry, a message, a mailbox index. */
async function makeHearth(name: string): Promise<{ configDir: string; dataDir: string }> {
  const configDir = join(work, name, 'config');
  const dataDir = join(work, name, 'maildir');
  await mkdir(configDir, { recursive: true });
  await writeFile(join(configDir, 'hearth.toml'), TOML);
  await writeFile(join(configDir, 'users'), 'alice@example.test $argon2id$fake\n', { mode: 0o600 });
  await mkdir(join(dataDir, 'queue'), { recursive: true });
  await writeFile(join(dataDir, 'queue', 'q1.eml'), 'Subject: queued\r\n\r\nx\r\n');
  await writeFile(join(dataDir, 'queue', 'q1.json'), '{"version":1}\n');
  const box = join(dataDir, 'example.test', 'alice');
  for (const d of ['cur', 'new', 'tmp']) await mkdir(join(box, d), { recursive: true });
  await writeFile(join(box, 'cur', '1700000000.M1P1.mx:2,S'), 'Subject: hi\r\n\r\nhello\r\n');
  const db = new DatabaseSync(join(box, 'hearth-index.sqlite'));
  db.exec('CREATE TABLE t (v TEXT); INSERT INTO t VALUES (\'backed up\')');
  db.close();
  return { configDir, dataDir };
}

describe('files that go away while the backup runs', () => {
  it('leaves out a queue entry delivered meanwhile and a mailbox index whose folder was deleted, instead of failing', async () => {
    const { configDir, dataDir } = await makeHearth('vanishing');
    const box = join(dataDir, 'example.test', 'alice');
    let gone = false;
    const r = await createBackup({
      configDir,
      dataDir,
      out: join(work, 'vanishing.tar'),
      onProgress: () => {
        if (gone) return;
        gone = true;
        // After the first file is copied: the queue delivers q1, a folder is deleted.
        rmSync(join(dataDir, 'queue', 'q1.json'));
        rmSync(join(box, 'hearth-index.sqlite'));
      },
    });
    expect(r.manifest.files.map((f) => f.path)).not.toContain('data/queue/q1.json');
    expect(r.manifest.files.map((f) => f.path)).not.toContain('data/example.test/alice/hearth-index.sqlite');
    expect(r.manifest.vanished).toBe(2);
    expect((await verifyBackup(r.archive)).problems).toEqual([]);
  });

  it('finds many messages renamed at once (all marked read) with one listing of cur/, not one per message', async () => {
    const { configDir, dataDir } = await makeHearth('renamed');
    const box = join(dataDir, 'example.test', 'alice');
    const names = Array.from({ length: 300 }, (_, i) => `17000001${String(i).padStart(2, '0')}.M${i}P1.mx`);
    for (const n of names) await writeFile(join(box, 'new', n), `Subject: ${n}\r\n\r\nx\r\n`);
    let renamed = false;
    const readdirs = vi.spyOn(fsp, 'readdir');
    try {
      const r = await createBackup({
        configDir,
        dataDir,
        out: join(work, 'renamed.tar'),
        onProgress: () => {
          if (renamed) return;
          renamed = true;
          for (const n of names) renameSync(join(box, 'new', n), join(box, 'cur', `${n}:2,S`));
        },
      });
      const paths = r.manifest.files.map((f) => f.path);
      for (const n of names) expect(paths).toContain(`data/example.test/alice/cur/${n}:2,S`);
      expect(r.manifest.vanished).toBe(0);
      expect(readdirs.mock.calls.filter(([dir]) => dir === join(box, 'cur')).length).toBeLessThan(5);
    } finally {
      readdirs.mockRestore();
    }
  });

  it('leaves out half-written temporary files (atomic writes in progress)', async () => {
    const { configDir, dataDir } = await makeHearth('tmpfiles');
    await writeFile(join(dataDir, 'queue', '.q2.json.1a2b3c4d.tmp'), '{"vers');
    await writeFile(join(dataDir, 'greylist.json.4242.tmp'), '{');
    await writeFile(join(configDir, '.users.4242.1a2b3c4d.tmp'), 'half');
    const r = await createBackup({ configDir, dataDir, out: join(work, 'tmpfiles.tar') });
    expect(r.manifest.files.map((f) => f.path).filter((p) => p.endsWith('.tmp'))).toEqual([]);
    expect(r.manifest.files.map((f) => f.path)).toContain('data/queue/q1.json');
  });
});

describe('the archive file', () => {
  it('is created 0600 and never written through a file or link already at OUT.partial (a shared folder like /tmp)', async () => {
    const { configDir, dataDir } = await makeHearth('partial');
    const shared = join(work, 'shared');
    await mkdir(shared);
    const fine = await createBackup({ configDir, dataDir, out: join(shared, 'fine.tar.gz') });
    expect((await stat(fine.archive)).mode & 0o777).toBe(0o600);
    // Someone else made OUT.partial first: a link to a file of theirs, or a file readable by all.
    const victim = join(work, 'partial-victim');
    await writeFile(victim, 'not yours\n');
    await symlink(victim, join(shared, 'linked.tar.partial'));
    await expect(createBackup({ configDir, dataDir, out: join(shared, 'linked.tar') })).rejects.toThrow(/linked\.tar\.partial exists.*remove it/);
    expect(await readFile(victim, 'utf8')).toBe('not yours\n');
    await writeFile(join(shared, 'open.tar.partial'), '', { mode: 0o666 });
    await chmod(join(shared, 'open.tar.partial'), 0o666);
    await expect(createBackup({ configDir, dataDir, out: join(shared, 'open.tar') })).rejects.toThrow(/open\.tar\.partial exists/);
    expect((await stat(join(shared, 'open.tar.partial'))).size).toBe(0);
    await expect(stat(join(shared, 'open.tar'))).rejects.toThrow();
  });
});

describe('a hostile manifest', () => {
  it('refuses folders in the manifest that climb out of the target, making and changing nothing outside', async () => {
    const victim = join(work, 'victim');
    await mkdir(victim, { mode: 0o700 });
    await chmod(victim, 0o700);
    const file = join(work, 'climbing-dirs.tar');
    await craftedArchive(file, [{ name: 'config/hearth.toml', body: TOML }, { name: 'data/example.test/x', body: 'x' }], {
      dirs: [
        { path: 'data/../../victim', mode: 0o777 },
        { path: 'data/../../made-outside', mode: 0o777 },
      ],
    });
    const target = join(work, 'climbing-target');
    await expect(restoreBackup({ archive: file, configDir: join(target, 'config'), dataDir: join(target, 'maildir') })).rejects.toThrow(/refusing this archive/);
    expect((await stat(victim)).mode & 0o777).toBe(0o700);
    await expect(stat(join(work, 'made-outside'))).rejects.toThrow();
    await expect(stat(target)).rejects.toThrow();
    await expect(verifyBackup(file)).rejects.toThrow(/climbs out/);
  });

  it('restores no setuid, setgid or sticky bits a manifest asks for', async () => {
    const file = join(work, 'setuid.tar');
    await craftedArchive(file, [{ name: 'config/hearth.toml', body: TOML }, { name: 'data/bin/tool', body: '#!/bin/sh\n' }], { mode: { 'data/bin/tool': 0o6755 }, dirs: [{ path: 'data/bin', mode: 0o1777 }] });
    const target = join(work, 'setuid-target');
    await restoreBackup({ archive: file, configDir: join(target, 'config'), dataDir: join(target, 'maildir') });
    expect((await stat(join(target, 'maildir', 'bin', 'tool'))).mode & 0o7777).toBe(0o755);
    expect((await stat(join(target, 'maildir', 'bin'))).mode & 0o7777).toBe(0o777);
  });

  it('refuses two names that are one file once written ("x" and "x/"), before anything is moved into place', async () => {
    const file = join(work, 'collide.tar');
    await craftedArchive(file, [
      { name: 'config/hearth.toml', body: TOML },
      { name: 'data/a/x', body: 'first' },
      { name: 'data/a/y', body: 'second', pax: { path: 'data/a/x/' } },
    ]);
    const target = join(work, 'collide-target');
    await expect(restoreBackup({ archive: file, configDir: join(target, 'config'), dataDir: join(target, 'maildir') })).rejects.toThrow(/refusing this archive/);
    await expect(stat(target)).rejects.toThrow();
    expect(unsafeEntry('data/a/x/', 'file')).toBeDefined();
  });

  it('refuses a path that is both a file and a folder, in entries or in the manifest, moving nothing', async () => {
    const cases: Array<{ entries: Entry[]; dirs?: Array<{ path: string; mode: number }> }> = [
      { entries: [{ name: 'config/hearth.toml', body: TOML }, { name: 'data/a', body: 'file' }, { name: 'data/a/b', body: 'under it' }] },
      { entries: [{ name: 'config/hearth.toml', body: TOML }, { name: 'data/a/b', body: 'under it' }, { name: 'data/a', body: 'file' }] },
      { entries: [{ name: 'config/hearth.toml', body: TOML }, { name: 'data/a', body: 'file' }], dirs: [{ path: 'data/a', mode: 0o700 }] },
    ];
    for (const [i, c] of cases.entries()) {
      const file = join(work, `both-${i}.tar`);
      await craftedArchive(file, c.entries, { dirs: c.dirs });
      const target = join(work, `both-target-${i}`);
      await expect(restoreBackup({ archive: file, configDir: join(target, 'config'), dataDir: join(target, 'maildir') })).rejects.toThrow(/both a file and a folder/);
      await expect(stat(target)).rejects.toThrow();
      expect((await verifyBackup(file)).problems).toEqual([expect.stringMatching(/^data\/a: both a file and a folder/)]);
    }
  });

  it('refuses an entry whose type tar-stream does not know (it is not a plain file)', async () => {
    const file = join(work, 'sparse.tar');
    await craftedArchive(file, [{ name: 'config/hearth.toml', body: TOML }, { name: 'data/a/sparse', body: 'sparse map and data' }]);
    const bytes = await readFile(file);
    // The second header: type flag 'S' (GNU sparse), checksum redone.
    const at = 512 + Math.ceil(TOML.length / 512) * 512;
    expect(bytes.subarray(at, at + 13).toString('latin1')).toBe('data/a/sparse');
    bytes[at + 156] = 'S'.charCodeAt(0);
    bytes.fill(0x20, at + 148, at + 156);
    let sum = 0;
    for (let i = at; i < at + 512; i++) sum += bytes[i]!;
    bytes.write(sum.toString(8).padStart(6, '0') + '\0 ', at + 148, 'latin1');
    await writeFile(file, bytes);
    const target = join(work, 'sparse-target');
    await expect(restoreBackup({ archive: file, configDir: join(target, 'config'), dataDir: join(target, 'maildir') })).rejects.toThrow(/not a file or folder/);
    await expect(stat(target)).rejects.toThrow();
  });
});

describe('--force over an existing hearth', () => {
  it('does not write through a link already in the target folder', async () => {
    const { configDir, dataDir } = await makeHearth('linked-src');
    const archive = join(work, 'linked.tar');
    await createBackup({ configDir, dataDir, out: archive });
    const target = join(work, 'linked-target');
    const outside = join(work, 'linked-outside');
    await mkdir(join(target, 'maildir'), { recursive: true });
    await mkdir(join(target, 'config'));
    await mkdir(outside, { mode: 0o755 });
    await chmod(outside, 0o755);
    await symlink(outside, join(target, 'maildir', 'example.test'));
    await expect(restoreBackup({ archive, configDir: join(target, 'config'), dataDir: join(target, 'maildir'), force: true })).rejects.toThrow(/symbolic link/);
    expect(await readdir(outside)).toEqual([]);
    expect((await stat(outside)).mode & 0o777).toBe(0o755);
    expect((await lstat(join(target, 'maildir', 'example.test'))).isSymbolicLink()).toBe(true);
    // Nothing was moved into place: the refusal came before.
    await expect(stat(join(target, 'config', 'hearth.toml'))).rejects.toThrow();
  });

  it('removes a stale -wal/-shm beside a restored SQLite database, so the old WAL is not replayed onto it', async () => {
    const { configDir, dataDir } = await makeHearth('wal-src');
    const archive = join(work, 'wal.tar');
    await createBackup({ configDir, dataDir, out: archive });
    // The target's own index, with uncheckpointed changes in its WAL, copied while open.
    const target = join(work, 'wal-target');
    const box = join(target, 'maildir', 'example.test', 'alice');
    await mkdir(box, { recursive: true });
    await mkdir(join(target, 'config'));
    const live = join(work, 'wal-live.sqlite');
    const db = new DatabaseSync(live);
    db.exec("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('old'); PRAGMA wal_checkpoint(TRUNCATE);");
    db.exec("INSERT INTO t VALUES ('stale, from the WAL')");
    await copyFile(live, join(box, 'hearth-index.sqlite'));
    await copyFile(`${live}-wal`, join(box, 'hearth-index.sqlite-wal'));
    await copyFile(`${live}-shm`, join(box, 'hearth-index.sqlite-shm'));
    db.close();
    await restoreBackup({ archive, configDir: join(target, 'config'), dataDir: join(target, 'maildir'), force: true });
    const names = await readdir(box);
    expect(names.filter((n) => n.startsWith('hearth-index.sqlite-'))).toEqual([]);
    const restored = new DatabaseSync(join(box, 'hearth-index.sqlite'));
    try {
      expect(restored.prepare('SELECT v FROM t').all()).toEqual([{ v: 'backed up' }]);
    } finally {
      restored.close();
    }
  });
});
