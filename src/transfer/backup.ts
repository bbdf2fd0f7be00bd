// Backup is in charge of one self-checking copy of everything hearth needs to come back: the
// config folder (hearth.toml, users, aliases, DKIM keys, TLS files) and the data folder (Maildirs
// with their mailbox indexes, the outbound queue, gather/vacation/greylist state). The archive is
// a directory tree — `config/`, `data/` and `manifest.json` with every file's size and SHA-256
// plus counts — so it can be read, rsynced or tarred with ordinary tools.
//
// Consistent while the server runs: Maildir files never change once in new/ or cur/ (only their
// names do, when flags change), so each is copied as it is; a file renamed between listing and
// copying is looked for again under its new name, and one expunged meanwhile is left out and
// counted. Mailbox indexes are copied with SQLite's online backup, so each is a consistent
// snapshot; on start the server reconciles it with the Maildir files, which stay the truth.
// Left out: the full-text indexes (as big as the mail, rebuilt by `hearth reindex` or in the
// background), tmp/ files (deliveries in progress), the control socket and the inbound spool.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { backup as sqliteBackup, DatabaseSync } from 'node:sqlite';
import { TransferError } from './mbox.ts';

export const MANIFEST_FILE = 'manifest.json';

export type ManifestFile = { path: string; size: number; sha256: string; mode: number; mtimeMs: number };
export type BackupCounts = { users: number; dkimKeys: number; queueFiles: number; mailboxes: number; messages: number; files: number; bytes: number };
export type Manifest = { format: 'hearth-backup'; version: 1; createdAt: string; counts: BackupCounts; vanished: number; files: ManifestFile[] };

const SKIP_NAMES = new Set(['hearth.sock', '.inbound-spool', 'hearth-fulltext.sqlite', 'hearth-fulltext.sqlite-wal', 'hearth-fulltext.sqlite-shm', 'hearth-index.sqlite-wal', 'hearth-index.sqlite-shm']);
const INDEX_NAME = 'hearth-index.sqlite';

type Walked = { abs: string; rel: string };

/** Files under `root` (relative paths with /), skipping what a backup leaves out. */
async function walk(root: string, skipDir?: string): Promise<Walked[]> {
  const out: Walked[] = [];
  const visit = async (dir: string, rel: string): Promise<void> => {
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (SKIP_NAMES.has(e.name)) continue;
      const abs = path.join(dir, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        if (abs === skipDir) continue;
        if (e.name === 'tmp' && (await isMaildirTmp(dir))) continue;
        await visit(abs, r);
      } else if (e.isFile()) {
        out.push({ abs, rel: r });
      }
    }
  };
  await visit(root, '');
  return out;
}

async function isMaildirTmp(parent: string): Promise<boolean> {
  return (await fsp.stat(path.join(parent, 'cur')).catch(() => undefined))?.isDirectory() ?? false;
}

/** Copy one file, hashing it on the way; keeps its mode and mtime (a Maildir file's mtime is its date). */
async function copyHashed(src: string, dest: string): Promise<{ size: number; sha256: string; mode: number; mtimeMs: number }> {
  const st = await fsp.stat(src);
  await fsp.mkdir(path.dirname(dest), { recursive: true, mode: 0o700 });
  const hash = createHash('sha256');
  let size = 0;
  await pipeline(
    fs.createReadStream(src),
    new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        size += chunk.length;
        cb(null, chunk);
      },
    }),
    fs.createWriteStream(dest, { mode: st.mode & 0o777 }),
  );
  await fsp.utimes(dest, st.atime, st.mtime);
  return { size, sha256: hash.digest('hex'), mode: st.mode & 0o777, mtimeMs: Math.floor(st.mtimeMs) };
}

async function hashFile(file: string): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of fs.createReadStream(file)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { size, sha256: hash.digest('hex') };
}

/** A Maildir message renamed since it was listed (flags changed): the same base name in cur/ now. */
async function findRenamed(abs: string): Promise<string | undefined> {
  const name = path.basename(abs);
  const base = name.includes(':') ? name.slice(0, name.indexOf(':')) : name;
  const cur = path.join(path.dirname(path.dirname(abs)), 'cur');
  const found = (await fsp.readdir(cur).catch(() => [] as string[])).find((n) => n === base || n.startsWith(base + ':'));
  return found ? path.join(cur, found) : undefined;
}

const isMessage = (rel: string): boolean => /(^|\/)(cur|new)\/[^/]+$/.test(rel) && !rel.startsWith('config/');

function countsOf(files: ManifestFile[], usersText: string): BackupCounts {
  const mailboxes = new Set<string>();
  let messages = 0;
  for (const f of files) {
    if (!f.path.startsWith('data/')) continue;
    if (isMessage(f.path)) messages++;
    if (f.path.endsWith('/' + INDEX_NAME)) mailboxes.add(f.path);
  }
  return {
    users: usersText.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#')).length,
    dkimKeys: files.filter((f) => /^config\/dkim\/.+\.pem$/.test(f.path)).length,
    queueFiles: files.filter((f) => f.path.startsWith('data/queue/')).length,
    mailboxes: mailboxes.size,
    messages,
    files: files.length,
    bytes: files.reduce((n, f) => n + f.size, 0),
  };
}

export type BackupProgress = { done: number; total: number; file: string };

/** Write a backup of `configDir` and `dataDir` into `out` (which must be missing or empty). */
export async function createBackup(opts: { configDir: string; dataDir: string; out: string; onProgress?: (p: BackupProgress) => void }): Promise<Manifest> {
  const existing = await fsp.readdir(opts.out).catch(() => [] as string[]);
  if (existing.length > 0) throw new TransferError('BACKUP_NOT_EMPTY', `${opts.out} is not empty; back up into a new directory`);
  const inside = (p: string) => path.resolve(p) + path.sep;
  if (inside(opts.out).startsWith(inside(opts.dataDir)) || inside(opts.out).startsWith(inside(opts.configDir))) {
    throw new TransferError('BACKUP_INSIDE', `${opts.out} is inside the folders being backed up; choose a place outside ${opts.configDir} and ${opts.dataDir}`);
  }
  await fsp.mkdir(opts.out, { recursive: true, mode: 0o700 });
  const sources = [
    ...(await walk(opts.configDir, path.resolve(opts.dataDir))).map((w) => ({ ...w, rel: `config/${w.rel}` })),
    ...(await walk(opts.dataDir)).map((w) => ({ ...w, rel: `data/${w.rel}` })),
  ];
  const files: ManifestFile[] = [];
  let vanished = 0;
  let done = 0;
  for (const s of sources) {
    done++;
    const dest = path.join(opts.out, ...s.rel.split('/'));
    if (path.basename(s.abs) === INDEX_NAME) {
      // A live SQLite database: its online backup is a consistent snapshot, a file copy may not be.
      await fsp.mkdir(path.dirname(dest), { recursive: true, mode: 0o700 });
      const db = new DatabaseSync(s.abs, { readOnly: true });
      try {
        await sqliteBackup(db, dest);
      } finally {
        db.close();
      }
      const st = await fsp.stat(dest);
      files.push({ path: s.rel, ...(await hashFile(dest)), mode: 0o600, mtimeMs: Math.floor(st.mtimeMs) });
      continue;
    }
    let src = s.abs;
    let rel = s.rel;
    let copied: Awaited<ReturnType<typeof copyHashed>> | undefined;
    for (let attempt = 0; attempt < 3 && !copied; attempt++) {
      try {
        copied = await copyHashed(src, path.join(opts.out, ...rel.split('/')));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !isMessage(rel)) throw err;
        const renamed = await findRenamed(src);
        if (!renamed) break;
        src = renamed;
        rel = rel.replace(/(cur|new)\/[^/]+$/, `cur/${path.basename(renamed)}`);
      }
    }
    if (!copied) {
      vanished++;
      continue;
    }
    files.push({ path: rel, ...copied });
    opts.onProgress?.({ done, total: sources.length, file: rel });
  }
  const usersText = await fsp.readFile(path.join(opts.configDir, 'users'), 'utf8').catch(() => '');
  const manifest: Manifest = { format: 'hearth-backup', version: 1, createdAt: new Date().toISOString(), counts: countsOf(files, usersText), vanished, files };
  await fsp.writeFile(path.join(opts.out, MANIFEST_FILE), JSON.stringify(manifest, null, 1) + '\n', { mode: 0o600 });
  return manifest;
}

export async function readManifest(archive: string): Promise<Manifest> {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(await fsp.readFile(path.join(archive, MANIFEST_FILE), 'utf8')) as Manifest;
  } catch (err) {
    throw new TransferError('BACKUP_NO_MANIFEST', `${archive} is not a hearth backup (no readable ${MANIFEST_FILE})`, { cause: err });
  }
  if (manifest.format !== 'hearth-backup' || manifest.version !== 1 || !Array.isArray(manifest.files)) throw new TransferError('BACKUP_NO_MANIFEST', `${archive}: unknown backup format`);
  return manifest;
}

export type VerifyResult = { manifest: Manifest; problems: string[] };

/** Check every file the manifest lists (present, same size and SHA-256), and its counts. */
export async function verifyBackup(archive: string, onProgress?: (p: BackupProgress) => void): Promise<VerifyResult> {
  const manifest = await readManifest(archive);
  const problems: string[] = [];
  let done = 0;
  for (const f of manifest.files) {
    done++;
    if (f.path.split('/').some((p) => p === '..' || p === '') || !/^(config|data)\//.test(f.path)) {
      problems.push(`${f.path}: not a path inside the archive`);
      continue;
    }
    try {
      const got = await hashFile(path.join(archive, ...f.path.split('/')));
      if (got.size !== f.size) problems.push(`${f.path}: ${got.size} bytes, the manifest says ${f.size}`);
      else if (got.sha256 !== f.sha256) problems.push(`${f.path}: checksum differs (changed or damaged)`);
    } catch (err) {
      problems.push(`${f.path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : (err as Error).message}`);
    }
    onProgress?.({ done, total: manifest.files.length, file: f.path });
  }
  const usersFile = manifest.files.find((f) => f.path === 'config/users');
  const usersText = usersFile ? await fsp.readFile(path.join(archive, 'config', 'users'), 'utf8').catch(() => '') : '';
  const counts = countsOf(manifest.files, usersText);
  for (const k of Object.keys(counts) as Array<keyof BackupCounts>) {
    if (counts[k] !== manifest.counts[k]) problems.push(`count of ${k}: ${counts[k]} in the archive, the manifest says ${manifest.counts[k]}`);
  }
  return { manifest, problems };
}

async function isEmptyDir(dir: string): Promise<boolean> {
  return ((await fsp.readdir(dir).catch(() => [] as string[])).length === 0);
}

/**
 * Verify the archive, then copy `config/` into `configDir` and `data/` into `dataDir`. Refuses a
 * non-empty target unless `force` (then archive files overwrite, other files stay).
 */
export async function restoreBackup(opts: { archive: string; configDir: string; dataDir: string; force?: boolean; onProgress?: (p: BackupProgress) => void }): Promise<Manifest> {
  const { manifest, problems } = await verifyBackup(opts.archive);
  if (problems.length) throw new TransferError('BACKUP_DAMAGED', `the backup does not verify, nothing restored:\n  ${problems.slice(0, 20).join('\n  ')}`);
  for (const [what, dir] of [['config', opts.configDir], ['data', opts.dataDir]] as const) {
    if (!opts.force && !(await isEmptyDir(dir))) throw new TransferError('RESTORE_NOT_EMPTY', `the ${what} folder ${dir} is not empty; restore into empty folders, or pass --force to overwrite what the backup holds`);
  }
  let done = 0;
  for (const f of manifest.files) {
    done++;
    const [top, ...rest] = f.path.split('/');
    const dest = path.join(top === 'config' ? opts.configDir : opts.dataDir, ...rest);
    await fsp.mkdir(path.dirname(dest), { recursive: true, mode: 0o700 });
    await fsp.copyFile(path.join(opts.archive, ...f.path.split('/')), dest);
    await fsp.chmod(dest, f.mode);
    const when = new Date(f.mtimeMs);
    await fsp.utimes(dest, when, when);
    opts.onProgress?.({ done, total: manifest.files.length, file: f.path });
  }
  return manifest;
}
