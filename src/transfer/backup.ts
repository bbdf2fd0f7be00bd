// Backup is in charge of one self-checking copy of everything hearth needs to come back: the
// config folder (hearth.toml, users, aliases, DKIM keys, TLS files) and the data folder (Maildirs
// with their mailbox indexes, the outbound queue, gather/vacation/greylist state), written as ONE
// tar archive (gzipped when its name ends in .tar.gz or .tgz). Entries are `config/…`, `data/…`
// and, last, `manifest.json` with every file's size and SHA-256 plus counts: the sums are taken
// as the bytes go into the archive, so the manifest can only be written once they all have.
//
// Everything streams: one file's bytes at a time pass through a hash into the tar, never a whole
// Maildir; verify and restore read the archive the same way, entry by entry.
//
// Consistent while the server runs: Maildir files never change once in new/ or cur/ (only their
// names do, when flags change), so each is copied as it is; a message renamed between listing
// and copying (flags changed, moved to another folder of its user, its folder renamed) is looked
// for again where it is now and archived there, once; after the copy each user's folders are
// listed once more, so a message that moved while they were being listed (in no listing) and
// mail that arrived meanwhile are archived too, each once; a file gone meanwhile (an expunged
// message, a delivered queue entry, a deleted folder's index) is left out and counted. SQLite
// databases (mailbox indexes, junk tokens, the gather ledger) are copied with SQLite's online
// backup, so each is a consistent snapshot (their -wal/-shm files are left out); on start the
// server reconciles an index with the Maildir files, which stay the truth.
// Files hearth.toml names by a path outside the config and data folders (a TLS certificate in
// /etc/letsencrypt, an SRS secret or smarthost password kept elsewhere: CONFIG_FILE_KEYS) are
// archived as `external/<their absolute path>`, the file a link points to, with their config keys
// and original path in the manifest; one that is missing, a folder or not a plain file is left out
// with a warning (the backup still completes). Restore puts them under
// `<config>/restored-external/<that path>`, never at the original path, and leaves hearth.toml be.
// Left out: the full-text indexes (as big as the mail, rebuilt by `hearth reindex` or in the
// background), tmp/ files (deliveries in progress), `*.tmp` files (atomic writes in progress),
// the control socket and the inbound spool.
//
// Restore never trusts the archive: an entry with an absolute path, `..`, or of any type but a
// plain file or folder (links could point outside the target) refuses the whole archive, and
// files are first written to a staging folder inside each target, moved into place only once
// every entry matched the manifest. The manifest's folders answer to the same rules; modes lose
// setuid/setgid/sticky bits; with --force a link already in a target is refused, not followed.
// Backups from before the archive (a directory with manifest.json) are still read by verify and
// restore.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { backup as sqliteBackup, DatabaseSync } from 'node:sqlite';
import { extract as tarExtract, pack as tarPack } from 'tar-stream';
import type { Pack } from 'tar-stream';
import { firstOf } from '../core/lines.ts';
import type { HearthConfig } from '../config/schema.ts';
import { TransferError } from './mbox.ts';

export const MANIFEST_FILE = 'manifest.json';

/** `keys` and `original`: only for `external/…` files, the config keys naming them and their absolute path. */
export type ManifestFile = { path: string; size: number; sha256: string; mode: number; mtimeMs: number; keys?: string[]; original?: string };
/** A file the config names outside its folders that could not be archived, and why. */
export type MissingExternal = { keys: string[]; original: string; reason: string };
export type ManifestDir = { path: string; mode: number };
export type BackupCounts = { users: number; dkimKeys: number; queueFiles: number; mailboxes: number; messages: number; files: number; bytes: number };
/** Version 1: the old directory backups (no `dirs`). Version 2: the tar archive. */
export type Manifest = { format: 'hearth-backup'; version: 1 | 2; createdAt: string; counts: BackupCounts; vanished: number; files: ManifestFile[]; dirs?: ManifestDir[]; externalMissing?: MissingExternal[] };

/**
 * Every key of hearth.toml whose value is a file, relative to the config folder unless absolute
 * (as src/config/load.ts and the services resolve them). DKIM keys have no key: always config/dkim/.
 */
export const CONFIG_FILE_KEYS = ['tls.cert', 'tls.key', 'relay.smarthost_password_file', 'routing.srs_secret_file', 'acme.account_key_file', 'acme.ca_file'] as const;
export type ConfigFileKey = (typeof CONFIG_FILE_KEYS)[number];
const CONFIG_FILE_VALUE: Record<ConfigFileKey, (c: HearthConfig) => string | undefined> = {
  'tls.cert': (c) => c.tls.cert,
  'tls.key': (c) => c.tls.key,
  'relay.smarthost_password_file': (c) => c.relay.smarthost_password_file,
  'routing.srs_secret_file': (c) => c.routing.srs_secret_file,
  'acme.account_key_file': (c) => c.acme.account_key_file,
  'acme.ca_file': (c) => c.acme.ca_file,
};
/** A file named by the config: its key and absolute path. */
export type ConfigFileReference = { key: string; path: string };

/** The files `config` names, resolved against its folder; backup archives those outside the config and data folders. */
export function configFileReferences(config: HearthConfig, configDir: string): ConfigFileReference[] {
  const refs: ConfigFileReference[] = [];
  for (const key of CONFIG_FILE_KEYS) {
    const value = CONFIG_FILE_VALUE[key](config);
    if (value) refs.push({ key, path: path.resolve(configDir, value) });
  }
  return refs;
}

/** Where restore puts external files, inside the config folder. */
export const RESTORED_EXTERNAL = 'restored-external';
/** A key whose file must stay private: restored 0600, whatever mode it had. */
const SECRET_KEY = /(^|[._])(key|secret|password)([._]|$)/;
/** What a config key looks like (a manifest is not trusted to hold terminal escapes). */
const CONFIG_KEY = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$/;
const CONTROL_CHAR = /[\u0000-\u001f\u007f]/;

/** An external file's entry name: external/ and its absolute path (normalised, so no "." or ".."). */
const externalEntryName = (abs: string): string => `external/${path.resolve(abs).split(path.sep).filter(Boolean).join('/')}`;

/** Why a manifest's record of an external file cannot be trusted, or undefined. */
function badExternalRecord(f: ManifestFile): string | undefined {
  if (typeof f.original !== 'string' || !path.posix.isAbsolute(f.original) || CONTROL_CHAR.test(f.original) || `external${f.original}` !== f.path) return 'its original path in the manifest is not valid (it must be the absolute path the entry is named after)';
  if (!Array.isArray(f.keys) || f.keys.length === 0 || !f.keys.every((k) => typeof k === 'string' && CONFIG_KEY.test(k))) return 'its config keys in the manifest are not valid';
  return undefined;
}

const SKIP_NAMES = new Set(['hearth.sock', '.inbound-spool', 'hearth-fulltext.sqlite']);
/** A live database's side files: its online backup already holds what they add. */
const SQLITE_SIDE_FILE = /\.sqlite-(wal|shm|journal)$/;
/** Mailbox indexes, junk tokens, the gather ledger: each copied with SQLite's online backup. */
const SQLITE_FILE = /\.sqlite$/;
const INDEX_NAME = 'hearth-index.sqlite';
/** Files up to this size are read whole, so the size in the tar header is exactly what is written. */
const SMALL_FILE = 1 << 20;
/** A manifest is JSON in memory; far more than a million files' worth. */
const MANIFEST_MAX = 512 << 20;
const STAGING_PREFIX = '.hearth-restore-';
/** Certificates, keys, secrets and CA bundles are KiB: a file named by the config above this is a mistake (a link to a disk image, /proc/kcore), not archived. */
const EXTERNAL_MAX = 16 << 20;

/** `id`: the file's device, inode and size when listed, which a rename (flags, MOVE, folder RENAME) keeps. */
type Walked = { abs: string; rel: string; size: number; id?: string };

const fileId = (st: fs.Stats): string => `${st.dev}:${st.ino}:${st.size}`;

/** Files and folders under `root` (relative paths with /), skipping what a backup leaves out. */
async function walk(root: string, skipDir?: string): Promise<{ files: Walked[]; dirs: ManifestDir[] }> {
  const files: Walked[] = [];
  const dirs: ManifestDir[] = [];
  const visit = async (dir: string, rel: string): Promise<void> => {
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (SKIP_NAMES.has(e.name) || SQLITE_SIDE_FILE.test(e.name) || e.name.startsWith(STAGING_PREFIX)) continue;
      // An atomic write in progress (queue state, greylist, users, gather files: `….tmp`, renamed
      // into place when complete); Maildir messages are never named so.
      if (!e.isDirectory() && e.name.endsWith('.tmp') && !/(^|\/)(cur|new)$/.test(rel)) continue;
      const abs = path.join(dir, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        if (abs === skipDir) continue;
        const st = await fsp.stat(abs).catch(() => undefined);
        if (!st) continue;
        dirs.push({ path: r, mode: st.mode & 0o777 });
        // tmp/ is kept as an empty folder: Maildir readers expect it, its files are half-written.
        if (e.name === 'tmp' && (await isMaildirTmp(dir))) continue;
        await visit(abs, r);
      } else if (e.isFile() || e.isSymbolicLink()) {
        // A link to a file (certbot's live/ certificates) is backed up as the file it points to;
        // links to folders are not followed (they could loop or leave the tree).
        const st = await fsp.stat(abs).catch(() => undefined);
        if (e.isFile() || st?.isFile()) files.push({ abs, rel: r, size: st?.size ?? 0, id: st ? fileId(st) : undefined });
      }
    }
  };
  await visit(root, '');
  return { files, dirs };
}

async function isMaildirTmp(parent: string): Promise<boolean> {
  return (await fsp.stat(path.join(parent, 'cur')).catch(() => undefined))?.isDirectory() ?? false;
}

const baseName = (name: string): string => (name.includes(':') ? name.slice(0, name.indexOf(':')) : name);

/**
 * The listings of one retry round, shared by every message looked for in it: each folder's cur/
 * and new/ is read at most once a round, however many messages are looked for (marking a 100k
 * folder read renames every file in it; moving it to Trash, or renaming the folder, moves them all).
 */
class RoundListings {
  readonly #lists = new Map<string, string[]>();
  readonly #dirs = new Map<string, Map<string, string>>();
  readonly #folders = new Map<string, string[]>();
  readonly #ids = new Map<string, Map<string, string>>();

  /** The file names in `dir` (none when it is gone). */
  async files(dir: string): Promise<string[]> {
    let list = this.#lists.get(dir);
    if (!list) {
      list = await fsp.readdir(dir).catch(() => [] as string[]);
      this.#lists.set(dir, list);
    }
    return list;
  }

  /** Base name -> file name in `dir`. */
  async names(dir: string): Promise<Map<string, string>> {
    let names = this.#dirs.get(dir);
    if (!names) {
      names = new Map((await this.files(dir)).map((n) => [baseName(n), n]));
      this.#dirs.set(dir, names);
    }
    return names;
  }

  /** A user's Maildir folders: the user's own folder (INBOX) and its Maildir++ `.Name` folders. */
  async folders(userDir: string): Promise<string[]> {
    let dirs = this.#folders.get(userDir);
    if (!dirs) {
      const entries = await fsp.readdir(userDir, { withFileTypes: true }).catch(() => [] as fs.Dirent[]);
      const subs = entries.filter((e) => e.isDirectory() && e.name.startsWith('.') && e.name !== '.' && e.name !== '..' && !e.name.startsWith(STAGING_PREFIX));
      dirs = [userDir, ...subs.map((e) => path.join(userDir, e.name)).sort()];
      this.#folders.set(userDir, dirs);
    }
    return dirs;
  }

  /**
   * File id -> path of the files in a user's folders that are not in the archive: only those can
   * be a message that got a new base name (hearth's MOVE names the moved file afresh). Files
   * already archived were listed before, so they are skipped without a stat.
   */
  async ids(userDir: string, archived: (abs: string) => boolean): Promise<Map<string, string>> {
    let ids = this.#ids.get(userDir);
    if (!ids) {
      ids = new Map();
      for (const folder of await this.folders(userDir)) {
        for (const sub of ['cur', 'new']) {
          for (const name of (await this.names(path.join(folder, sub))).values()) {
            const abs = path.join(folder, sub, name);
            if (archived(abs)) continue;
            const st = await fsp.stat(abs).catch(() => undefined);
            if (st?.isFile()) ids.set(fileId(st), abs);
          }
        }
      }
      this.#ids.set(userDir, ids);
    }
    return ids;
  }
}

/**
 * Where a Maildir message that vanished from its listed path is now, or undefined when it is gone
 * (expunged). In order: renamed in its folder (flags changed: the same base name in cur/); already
 * archived under another path (`archivedIds`: moved while the folders were being listed, or a
 * COPY's hard link whose original was expunged since); moved to another folder of the same user
 * (IMAP MOVE, webmail, a folder RENAME): the same base name in that folder's cur/ or new/, or,
 * since hearth's MOVE gives the moved file a new base name, the same file (device, inode, size)
 * among the files not archived yet. The caller checks the answer is not archived already.
 */
async function findMessage(s: Walked, dataDir: string, round: RoundListings, archivedIds: Map<string, string>, archived: (abs: string) => boolean): Promise<string | undefined> {
  const folder = path.dirname(path.dirname(s.abs));
  const base = baseName(path.basename(s.abs));
  const inPlace = (await round.names(path.join(folder, 'cur'))).get(base);
  if (inPlace) return path.join(folder, 'cur', inPlace);
  const already = s.id ? archivedIds.get(s.id) : undefined;
  if (already) return already;
  // INBOX is the user's folder itself; any other folder is a `.Name` inside it.
  const userDir = path.basename(folder).startsWith('.') ? path.dirname(folder) : folder;
  // Only a user's folders inside the data folder (hearth's <domain>/<user>), never a Maildir at its root or above it.
  if (!strictlyInside(userDir, dataDir)) return undefined;
  for (const other of await round.folders(userDir)) {
    for (const sub of ['cur', 'new']) {
      if (other === folder && sub === 'cur') continue;
      const name = (await round.names(path.join(other, sub))).get(base);
      if (name) return path.join(other, sub, name);
    }
  }
  return s.id ? (await round.ids(userDir, archived)).get(s.id) : undefined;
}

const strictlyInside = (p: string, root: string): boolean => {
  const rel = path.relative(root, p);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
};

const isMessage = (rel: string): boolean => /(^|\/)(cur|new)\/[^/]+$/.test(rel) && !rel.startsWith('config/');

/**
 * A user's mailbox is data/<domain>/<user>: its INBOX Maildir (cur/, new/, tmp/) and its index
 * live right there. A mailbox is known by any of them, so one that only had mail delivered (no
 * index yet) or holds no message (folders only) counts too; `me` in two domains is two.
 */
const MAILBOX_PART = new RegExp(`^data/([^/.][^/]*)/([^/.][^/]*)/(cur|new|tmp|${INDEX_NAME.replace(/\./g, '\\.')})(/|$)`);

function countMailboxes(paths: Iterable<string>): number {
  const mailboxes = new Set<string>();
  for (const p of paths) {
    const m = MAILBOX_PART.exec(p);
    if (m) mailboxes.add(`${m[1]}/${m[2]}`);
  }
  return mailboxes.size;
}

/** How backups before the domain/user count counted mailboxes (index files); their manifests carry that number. */
const legacyMailboxCount = (files: ManifestFile[]): number => files.filter((f) => f.path.startsWith('data/') && f.path.endsWith('/' + INDEX_NAME)).length;

function countsOf(files: ManifestFile[], dirs: ManifestDir[], usersText: string): BackupCounts {
  let messages = 0;
  for (const f of files) if (f.path.startsWith('data/') && isMessage(f.path)) messages++;
  return {
    users: usersText.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#')).length,
    dkimKeys: files.filter((f) => /^config\/dkim\/.+\.pem$/.test(f.path)).length,
    queueFiles: files.filter((f) => f.path.startsWith('data/queue/')).length,
    mailboxes: countMailboxes([...files.map((f) => f.path), ...dirs.map((d) => d.path)]),
    messages,
    files: files.length,
    bytes: files.reduce((n, f) => n + f.size, 0),
  };
}

export type BackupProgress = { done: number; total: number; file: string; unit: 'bytes' | 'files' };

/** gzip or plain tar, from the name; anything else is refused with the names that work. */
export function archiveKind(file: string): 'tar' | 'tar.gz' {
  const lower = file.toLowerCase();
  if (lower.endsWith('.tar.gz') || lower.endsWith('.tgz')) return 'tar.gz';
  if (lower.endsWith('.tar')) return 'tar';
  throw new TransferError('BACKUP_NAME', `${file}: name the backup file …​.tar.gz (compressed) or …​.tar, or give an existing directory to write a dated one into`);
}

/** Where `hearth backup OUT` writes: OUT itself, or a dated .tar.gz inside OUT when it is a directory. */
export async function backupTarget(out: string, now = new Date()): Promise<string> {
  const abs = path.resolve(out);
  const st = await fsp.stat(abs).catch(() => undefined);
  if (st?.isDirectory()) return path.join(abs, `hearth-backup-${now.toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-')}.tar.gz`);
  archiveKind(abs);
  if (st) throw new TransferError('BACKUP_EXISTS', `${abs} already exists; give a new file name (backups are never overwritten)`);
  return abs;
}

/** Write `data` as one tar entry, hashing it on the way; waits while the archive's reader is behind. */
async function addEntry(pack: Pack, header: { name: string; size: number; mode: number; mtime: Date }, data: Buffer | AsyncIterable<Buffer>): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  let size = 0;
  await new Promise<void>((resolve, reject) => {
    if (Buffer.isBuffer(data)) {
      hash.update(data);
      size = data.length;
      pack.entry({ ...header, type: 'file' }, data, (err) => (err ? reject(err) : resolve()));
      return;
    }
    const sink = pack.entry({ ...header, type: 'file' }, (err) => (err ? reject(err) : resolve()));
    void (async () => {
      for await (const chunk of data) {
        hash.update(chunk);
        size += chunk.length;
        if (!sink.write(chunk)) await firstOf(sink, ['drain', 'close']);
      }
      sink.end(null);
    })().catch((err: unknown) => {
      sink.destroy(err as Error);
      reject(err as Error);
    });
  });
  return { size, sha256: hash.digest('hex') };
}

/**
 * Add one live file. Opening it pins the inode, so a rename (Maildir flag change) after the open
 * does not matter; small files are read whole so their size is exact, big ones are read up to the
 * size seen at open (Maildir messages never change; anything that shrinks aborts the backup).
 */
async function addLiveFile(pack: Pack, abs: string, rel: string, mode?: number, maxSize = Infinity): Promise<ManifestFile> {
  // Non-blocking: opening a FIFO must not wait for a writer (it is refused just below).
  const fh = await fsp.open(abs, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new TransferError('BACKUP_NOT_FILE', st.isDirectory() ? `${abs} is a folder, not a file` : `${abs} is not a plain file`);
    if (st.size > maxSize) throw new TransferError('BACKUP_TOO_BIG', `is ${(st.size / 1048576).toFixed(1)} MiB, far more than a certificate, key or secret (over ${maxSize >> 20} MiB are not archived)`);
    const header = { name: rel, size: st.size, mode: mode ?? st.mode & 0o777, mtime: st.mtime };
    let data: Buffer | AsyncIterable<Buffer>;
    if (st.size <= SMALL_FILE) {
      data = await fh.readFile();
      header.size = data.length;
    } else {
      data = fh.createReadStream({ start: 0, end: st.size - 1, autoClose: false }) as AsyncIterable<Buffer>;
    }
    try {
      const got = await addEntry(pack, header, data);
      return { path: rel, ...got, mode: header.mode, mtimeMs: Math.floor(st.mtimeMs) };
    } catch (err) {
      // tar-stream's word for fewer bytes than the header promised: the file shrank meanwhile.
      if ((err as Error).message !== 'Size mismatch') throw err;
      throw new TransferError('BACKUP_CHANGED', `${abs} got shorter while being read; run the backup again`, { cause: err });
    }
  } finally {
    await fh.close();
  }
}

/** An external file in the archive: its config keys, absolute path, entry name and size. */
export type IncludedExternal = { keys: string[]; original: string; path: string; size: number };
export type BackupResult = { manifest: Manifest; archive: string; archiveBytes: number; external: { included: IncludedExternal[]; missing: MissingExternal[] } };

/** Why an external file could not be read, for a warning; undefined for faults that must stop the backup. */
function unreadableReason(err: unknown): string | undefined {
  if (err instanceof TransferError && err.code === 'BACKUP_TOO_BIG') return err.message;
  if (err instanceof TransferError && err.code === 'BACKUP_NOT_FILE') return /is a folder/.test(err.message) ? 'is a folder, not a file' : 'is not a plain file';
  switch ((err as NodeJS.ErrnoException).code) {
    case 'ENOENT':
      return 'does not exist';
    case 'ENOTDIR':
      return 'does not exist (a part of its path is not a folder)';
    case 'EACCES':
    case 'EPERM':
      return 'cannot be read (permission denied)';
    case 'ELOOP':
      return 'is a link that loops';
    case 'ENXIO':
    case 'EISDIR':
      return 'is not a plain file';
    default:
      return undefined;
  }
}

/**
 * Write one archive of `configDir` and `dataDir` to `out` (a new .tar/.tar.gz/.tgz file). It is
 * written as `out.partial` and renamed at the end, so a file with the final name is complete.
 * `references` (configFileReferences): files the config names; those outside both folders are
 * archived under external/, or listed as missing when they cannot be.
 */
export async function createBackup(opts: { configDir: string; dataDir: string; out: string; references?: ConfigFileReference[]; onProgress?: (p: BackupProgress) => void }): Promise<BackupResult> {
  const out = path.resolve(opts.out);
  const kind = archiveKind(out);
  if (await fsp.stat(out).catch(() => undefined)) throw new TransferError('BACKUP_EXISTS', `${out} already exists; give a new file name (backups are never overwritten)`);
  const inside = (p: string) => path.resolve(p) + path.sep;
  if (inside(out).startsWith(inside(opts.dataDir)) || inside(out).startsWith(inside(opts.configDir))) {
    throw new TransferError('BACKUP_INSIDE', `${out} is inside the folders being backed up; choose a place outside ${opts.configDir} and ${opts.dataDir}`);
  }
  const outDir = path.dirname(out);
  if (!(await fsp.stat(outDir).catch(() => undefined))?.isDirectory()) throw new TransferError('BACKUP_NO_DIR', `${outDir} does not exist; create it first (mkdir -p ${outDir})`);

  const config = await walk(opts.configDir, path.resolve(opts.dataDir));
  const data = await walk(opts.dataDir);
  const sources = [...config.files.map((w) => ({ ...w, rel: `config/${w.rel}` })), ...data.files.map((w) => ({ ...w, rel: `data/${w.rel}` }))];
  const dirs = [...config.dirs.map((d) => ({ ...d, path: `config/${d.path}` })), ...data.dirs.map((d) => ({ ...d, path: `data/${d.path}` }))];
  const totalBytes = sources.reduce((n, s) => n + s.size, 0);

  const partial = `${out}.partial`;
  // Made here, exclusively: a file or link someone else put at that name (the folder may be
  // shared, like /tmp) is neither written through nor handed the backup with its wider mode.
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(partial, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    throw new TransferError('BACKUP_PARTIAL_EXISTS', `${partial} exists: an interrupted backup left it, or someone else made it; check it, remove it and run the backup again`, { cause: err });
  }
  const scratch = await fsp.mkdtemp(path.join(outDir, '.hearth-backup-')).catch(async (err: unknown) => {
    await fh.close();
    await fsp.rm(partial, { force: true });
    throw err;
  });
  const pack = tarPack();
  const tarBytes = pack as unknown as AsyncIterable<Buffer>;
  const file = fh.createWriteStream();
  const written = kind === 'tar.gz' ? pipeline(tarBytes, createGzip({ level: 6 }), file) : pipeline(tarBytes, file);
  // Surfaces a write error (disk full) while entries are still being added, instead of hanging.
  let writeFailed: unknown;
  written.catch((err: unknown) => {
    writeFailed = err;
  });
  try {
    const now = new Date();
    for (const d of dirs) await addDirEntry(pack, d.path, d.mode, now);
    const files: ManifestFile[] = [];
    let vanished = 0;
    let renamedLater: Walked[] = [];
    let doneBytes = 0;
    for (const s of sources) {
      if (writeFailed) throw writeFailed;
      if (SQLITE_FILE.test(s.abs)) {
        // A live SQLite database: its online backup is a consistent snapshot, a file copy may not be.
        const snapshot = path.join(scratch, `${files.length}.sqlite`);
        let db: DatabaseSync;
        try {
          db = new DatabaseSync(s.abs, { readOnly: true });
        } catch (err) {
          // Its folder was deleted meanwhile (IMAP DELETE): left out, like an expunged message.
          if (await exists(s.abs)) throw err;
          vanished++;
          continue;
        }
        try {
          await sqliteBackup(db, snapshot);
        } finally {
          db.close();
        }
        const mode = ((await fsp.stat(s.abs).catch(() => undefined))?.mode ?? 0o600) & 0o777;
        files.push(await addLiveFile(pack, snapshot, s.rel, mode));
        await fsp.rm(snapshot, { force: true });
      } else {
        try {
          files.push(await addLiveFile(pack, s.abs, s.rel));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          // Gone since the listing: a queue entry delivered or a file replaced (left out), a
          // message expunged or renamed by a flag change (looked for again below).
          if (isMessage(s.rel)) renamedLater.push(s);
          else vanished++;
          continue;
        }
      }
      doneBytes += s.size;
      opts.onProgress?.({ done: Math.min(doneBytes, totalBytes), total: totalBytes, file: s.rel, unit: 'bytes' });
    }
    const dataDir = path.resolve(opts.dataDir);
    const relOf = (abs: string): string => `data/${path.relative(dataDir, abs).split(path.sep).join('/')}`;
    // Never the same file twice: what is archived, by path and by file id (listed before).
    const archivedPaths = new Set(files.map((f) => f.path));
    const archivedIds = new Map<string, string>();
    for (const w of sources) if (w.id && isMessage(w.rel) && archivedPaths.has(w.rel)) archivedIds.set(w.id, w.abs);
    const dirPaths = new Set(dirs.map((d) => d.path));
    const archived = (abs: string): boolean => archivedPaths.has(relOf(abs));
    /** A folder made since the listing (a renamed folder's new name, a new folder): its Maildir folders and marker too, so it restores whole. */
    const makeWhole = async (folder: string): Promise<void> => {
      if (!strictlyInside(folder, dataDir) || dirPaths.has(relOf(folder))) return;
      for (const d of [folder, ...['cur', 'new', 'tmp'].map((sub) => path.join(folder, sub))]) {
        const st = await fsp.stat(d).catch(() => undefined);
        const dRel = relOf(d);
        if (!st?.isDirectory() || dirPaths.has(dRel)) continue;
        dirs.push({ path: dRel, mode: st.mode & 0o777 });
        dirPaths.add(dRel);
        await addDirEntry(pack, dRel, st.mode & 0o777, now);
      }
      const marker = path.join(folder, 'maildirfolder');
      if (!archived(marker)) {
        const added = await addLiveFile(pack, marker, relOf(marker)).catch((err: unknown) => {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
          throw err;
        });
        if (added) {
          files.push(added);
          archivedPaths.add(added.path);
        }
      }
    };
    // The final sweep. A message that moved, while the walk was listing, from a folder not listed
    // yet into one already listed is in no listing: never copied, never missed. So each user's
    // folders (listed afresh: a folder made meanwhile too) have their cur/ and new/ listed once
    // more, and every message file not archived yet, by path or by file id (a message renamed
    // after its copy, by a flag change or a move, is the same file: not added again), is archived
    // where it is now. This also finds most messages that vanished from their listed path, so
    // the first retry round below shares these listings. Mail that arrived (or was copied with a
    // hard link) during the backup is archived too, when not the same file as one archived
    // already: its folder's index snapshot may not list it, and on restore the reconcile on
    // SELECT (sync) adds it, as for any file another program put there.
    const sweep = new RoundListings();
    const userDirs = new Set<string>();
    for (const d of dirs) {
      // A Maildir folder: cur/ with tmp/ beside it.
      if (!d.path.startsWith('data/') || !d.path.endsWith('/cur') || !dirPaths.has(`${d.path.slice(0, -'cur'.length)}tmp`)) continue;
      const folder = path.join(dataDir, ...d.path.slice('data/'.length).split('/').slice(0, -1));
      const userDir = path.basename(folder).startsWith('.') ? path.dirname(folder) : folder;
      if (strictlyInside(userDir, dataDir)) userDirs.add(userDir);
    }
    for (const userDir of [...userDirs].sort()) {
      for (const folder of await sweep.folders(userDir)) {
        for (const sub of ['cur', 'new']) {
          for (const name of await sweep.files(path.join(folder, sub))) {
            if (writeFailed) throw writeFailed;
            const abs = path.join(folder, sub, name);
            const rel = relOf(abs);
            if (archivedPaths.has(rel)) continue;
            const st = await fsp.stat(abs).catch(() => undefined);
            if (!st?.isFile() || archivedIds.has(fileId(st))) continue;
            await makeWhole(folder);
            try {
              files.push(await addLiveFile(pack, abs, rel));
            } catch (err) {
              // Moved again (a message that vanished is then looked for by the retry rounds).
              if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
              continue;
            }
            archivedPaths.add(rel);
            archivedIds.set(fileId(st), abs);
          }
        }
      }
    }
    // Messages renamed or moved since the listing and not found by the sweep, archived once
    // under the path where they are now (see findMessage); each folder is listed once a round,
    // not once a message, and the first round uses the sweep's listings. A message moved into a
    // folder whose index was snapshotted before the move is in the archive but not in that
    // index: on restore, the reconcile on SELECT (sync) adds it, as for a file another program
    // put there; the index of the folder it left still lists it, and the same reconcile
    // expunges that entry, the Maildir files being the truth.
    for (let round = 0; round < 3 && renamedLater.length; round++) {
      const listings = round === 0 ? sweep : new RoundListings();
      const again: Walked[] = [];
      for (const s of renamedLater) {
        if (writeFailed) throw writeFailed;
        const found = await findMessage(s, dataDir, listings, archivedIds, archived);
        if (!found) {
          vanished++;
          continue;
        }
        const rel = relOf(found);
        if (archivedPaths.has(rel)) continue;
        await makeWhole(path.dirname(path.dirname(found)));
        try {
          files.push(await addLiveFile(pack, found, rel));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          again.push({ ...s, abs: found, rel });
          continue;
        }
        archivedPaths.add(rel);
        if (s.id) archivedIds.set(s.id, found);
      }
      renamedLater = again;
    }
    vanished += renamedLater.length;
    // Files the config names outside its folders, one entry per file (tls.cert and tls.key may be one PEM).
    const external: BackupResult['external'] = { included: [], missing: [] };
    const byPath = new Map<string, string[]>();
    const configDir = path.resolve(opts.configDir);
    // Decided by the file, not its name: a folder reached through a link, or a file named by
    // another path (a link, the real path of a linked config folder), is in config/ once; a file
    // under a linked folder the walk did not follow (config/tls -> /etc/letsencrypt/live/…) is not.
    const inode = (st: fs.Stats): string => `${st.dev}:${st.ino}`;
    const walkedFiles = new Set<string>();
    for (const w of sources) if (w.id && archivedPaths.has(w.rel)) walkedFiles.add(w.id.split(':').slice(0, 2).join(':'));
    for (const ref of opts.references ?? []) {
      const abs = path.resolve(ref.path);
      const st = await fsp.stat(abs).catch(() => undefined);
      if (st?.isFile() && walkedFiles.has(inode(st))) continue;
      if (!st && (abs === configDir || abs === dataDir || strictlyInside(abs, configDir) || strictlyInside(abs, dataDir))) continue;
      byPath.set(abs, [...(byPath.get(abs) ?? []), ref.key]);
    }
    for (const [abs, keys] of [...byPath].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (writeFailed) throw writeFailed;
      // Restore prints these paths, so it refuses control characters in them: left out here too.
      if (CONTROL_CHAR.test(abs)) {
        external.missing.push({ keys, original: JSON.stringify(abs), reason: 'has a control character in its name (not archived)' });
        continue;
      }
      try {
        // Looked at before it is opened: opening a device can have effects (a tape rewinds).
        const st = await fsp.stat(abs);
        if (!st.isFile()) throw new TransferError('BACKUP_NOT_FILE', st.isDirectory() ? `${abs} is a folder, not a file` : `${abs} is not a plain file`);
        const added = await addLiveFile(pack, abs, externalEntryName(abs), undefined, EXTERNAL_MAX);
        files.push({ ...added, keys, original: abs });
        external.included.push({ keys, original: abs, path: added.path, size: added.size });
      } catch (err) {
        const reason = unreadableReason(err);
        if (!reason) throw err;
        external.missing.push({ keys, original: abs, reason });
      }
    }
    const usersText = await fsp.readFile(path.join(opts.configDir, 'users'), 'utf8').catch(() => '');
    const manifest: Manifest = { format: 'hearth-backup', version: 2, createdAt: new Date().toISOString(), counts: countsOf(files, dirs, usersText), vanished, files, dirs, ...(external.missing.length ? { externalMissing: external.missing } : {}) };
    await addEntry(pack, { name: MANIFEST_FILE, size: 0, mode: 0o600, mtime: new Date() }, Buffer.from(JSON.stringify(manifest, null, 1) + '\n'));
    pack.finalize();
    await written;
    const fh = await fsp.open(partial, 'r');
    await fh.sync();
    await fh.close();
    await fsp.rename(partial, out);
    return { manifest, archive: out, archiveBytes: (await fsp.stat(out)).size, external };
  } catch (err) {
    pack.destroy(err as Error);
    await written.catch(() => undefined);
    await fsp.rm(partial, { force: true });
    throw err;
  } finally {
    await fsp.rm(scratch, { recursive: true, force: true });
  }
}

function addDirEntry(pack: Pack, name: string, mode: number, mtime: Date): Promise<void> {
  return new Promise((resolve, reject) => {
    pack.entry({ name: name + '/', type: 'directory', mode, mtime }, (err) => (err ? reject(err) : resolve()));
  });
}

// ---- reading archives (verify and restore share this) ----

type ArchiveEntry = { name: string; type: string; linkname?: string; size: number; data: () => AsyncIterable<Buffer> };

/** Why an entry may not be restored, or undefined when it is a plain file or folder under config/, data/ or external/. */
export function unsafeEntry(name: string, type: string, linkname?: string): string | undefined {
  if (name.startsWith('/')) return 'has an absolute path';
  const parts = name.replace(/\/$/, '').split('/');
  if (parts.some((p) => p === '..')) return 'climbs out with ".."';
  if (parts.some((p) => p === '' || p === '.' || p.includes('\0'))) return 'has an empty or "." path part';
  if (type === 'symlink' || type === 'link') return `is a ${type === 'link' ? 'hard ' : 'symbolic '}link to ${JSON.stringify(linkname ?? '')} (hearth backups hold no links; one could point outside the target)`;
  if (type !== 'file' && type !== 'directory') return type === 'unknown' ? 'has an entry type hearth does not know, not a file or folder' : `is a ${type}, not a file or folder`;
  // "x/" as a file would be written over "x": two entries, one file on disk.
  if (type === 'file' && name.endsWith('/')) return 'is a file whose name ends in "/"';
  if (name !== MANIFEST_FILE && parts[0] !== 'config' && parts[0] !== 'data' && parts[0] !== 'external') return 'is outside config/, data/ and external/';
  if (parts.length < 2 && name !== MANIFEST_FILE) return 'is a top folder, not a file';
  return undefined;
}

/** Counts the compressed bytes read, for progress on a multi-GB archive. */
function byteCounter(onBytes: (n: number) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      onBytes(chunk.length);
      cb(null, chunk);
    },
  });
}

/** Entries of a tar(.gz) archive, one at a time; gzip is recognised by its magic bytes. */
async function* tarEntries(file: string, onBytes: (n: number) => void): AsyncGenerator<ArchiveEntry> {
  const fh = await fsp.open(file, 'r');
  const magic = Buffer.alloc(2);
  await fh.read(magic, 0, 2, 0);
  await fh.close();
  const gz = magic[0] === 0x1f && magic[1] === 0x8b;
  const extract = tarExtract();
  const source: Readable = fs.createReadStream(file).pipe(byteCounter(onBytes));
  const input: Readable = gz ? source.pipe(createGunzip()) : source;
  const feeding = (async () => {
    for await (const chunk of input) {
      if (extract.destroyed) break;
      if (!extract.write(chunk as Buffer)) await firstOf(extract, ['drain', 'close']);
    }
    if (!extract.destroyed) extract.end(null);
  })().catch((err: unknown) => extract.destroy(err as Error));
  try {
    for await (const entry of extract) {
      const h = entry.header;
      let consumed = false;
      yield {
        name: h.name,
        // tar-stream names the types it knows; any other (GNU sparse, vendor types) is refused.
        type: h.type ?? 'unknown',
        linkname: h.linkname ?? undefined,
        size: h.size ?? 0,
        data: () => {
          consumed = true;
          return entry as unknown as AsyncIterable<Buffer>;
        },
      };
      if (!consumed) for await (const _ of entry as unknown as AsyncIterable<Buffer>) void _;
    }
  } finally {
    // Stopping early (a reader that found its file) must end the whole chain, or it waits forever.
    extract.destroy();
    input.destroy();
    source.destroy();
    await feeding;
  }
}

/** Entries of an old directory backup: the manifest first says what is there. */
async function* directoryEntries(dir: string): AsyncGenerator<ArchiveEntry> {
  let text: Buffer;
  try {
    text = await fsp.readFile(path.join(dir, MANIFEST_FILE));
  } catch (err) {
    throw new TransferError('BACKUP_NO_MANIFEST', `${dir} is not a hearth backup (no readable ${MANIFEST_FILE})`, { cause: err });
  }
  const manifest = parseManifest(text, dir);
  for (const f of manifest.files) {
    const abs = path.join(dir, ...f.path.split('/'));
    const st = await fsp.stat(abs).catch(() => undefined);
    if (!st) continue;
    yield { name: f.path, type: st.isFile() ? 'file' : 'other', size: st.size, data: () => fs.createReadStream(abs) as AsyncIterable<Buffer> };
  }
  yield { name: MANIFEST_FILE, type: 'file', size: text.length, data: async function* () { yield text; } };
}

function parseManifest(text: Buffer, where: string): Manifest {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(text.toString('utf8')) as Manifest;
  } catch (err) {
    throw new TransferError('BACKUP_NO_MANIFEST', `${where}: its ${MANIFEST_FILE} is not readable JSON`, { cause: err });
  }
  if (manifest?.format !== 'hearth-backup' || (manifest.version !== 1 && manifest.version !== 2) || !Array.isArray(manifest.files) || (manifest.dirs !== undefined && !Array.isArray(manifest.dirs))) throw new TransferError('BACKUP_NO_MANIFEST', `${where}: unknown backup format`);
  return manifest;
}

export type VerifyResult = { manifest: Manifest | undefined; problems: string[]; entries: number };

/** Where a checked file's bytes go: restore writes them to staging, verify just drains them. */
type FileSink = (rel: string, data: AsyncIterable<Buffer>) => Promise<void>;

/**
 * Read the whole archive once: refuse unsafe entries (throws BACKUP_UNSAFE), hash every file, and
 * compare with the manifest and its counts. Damage (bad gzip, cut short) is a problem, not a throw.
 */
async function scanArchive(archive: string, sink: FileSink | undefined, onProgress?: (p: BackupProgress) => void): Promise<VerifyResult> {
  const st = await fsp.stat(archive).catch(() => undefined);
  if (!st) throw new TransferError('BACKUP_MISSING', `${archive} does not exist`);
  let read = 0;
  const total = st.isDirectory() ? 0 : st.size;
  const entries = st.isDirectory() ? directoryEntries(archive) : tarEntries(archive, (n) => (read += n));
  const seen = new Map<string, { size: number; sha256: string }>();
  const problems: string[] = [];
  let manifest: Manifest | undefined;
  let usersText = '';
  let last = '(the start)';
  let count = 0;
  try {
    for await (const e of entries) {
      count++;
      const why = unsafeEntry(e.name, e.type, e.linkname);
      if (why) throw new TransferError('BACKUP_UNSAFE', `${archive}: entry ${JSON.stringify(e.name)} ${why}; refusing this archive, nothing was restored`);
      last = e.name;
      if (e.type === 'directory') continue;
      if (seen.has(e.name) || (e.name === MANIFEST_FILE && manifest)) {
        problems.push(`${e.name}: in the archive twice`);
        continue;
      }
      if (e.name === MANIFEST_FILE) {
        if (e.size > MANIFEST_MAX) throw new TransferError('BACKUP_NO_MANIFEST', `${archive}: ${MANIFEST_FILE} is ${e.size} bytes, not a hearth manifest`);
        const chunks: Buffer[] = [];
        for await (const c of e.data()) chunks.push(c);
        manifest = parseManifest(Buffer.concat(chunks), archive);
        continue;
      }
      const hash = createHash('sha256');
      let size = 0;
      const keepUsers = e.name === 'config/users';
      const usersChunks: Buffer[] = [];
      async function* hashed(): AsyncGenerator<Buffer> {
        for await (const c of e.data()) {
          hash.update(c);
          size += c.length;
          if (keepUsers) usersChunks.push(c);
          yield c;
        }
      }
      if (sink) await sink(e.name, hashed());
      else for await (const _ of hashed()) void _;
      seen.set(e.name, { size, sha256: hash.digest('hex') });
      if (keepUsers) usersText = Buffer.concat(usersChunks).toString('utf8');
      onProgress?.(total ? { done: read, total, file: e.name, unit: 'bytes' } : { done: count, total: count, file: e.name, unit: 'files' });
    }
  } catch (err) {
    if (err instanceof TransferError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code && !/^Z_/.test(code) && code !== 'ERR_STREAM_PREMATURE_CLOSE') throw err;
    problems.push(`the archive is damaged or cut short after ${last}: ${(err as Error).message}`);
  }
  if (!manifest) {
    problems.push(`no ${MANIFEST_FILE} in the archive: not a hearth backup, or cut short before its end`);
    return { manifest, problems, entries: count };
  }
  // Restore makes (and chmods) the manifest's folders: they answer to the same rules as entries.
  for (const d of manifest.dirs ?? []) {
    const why = unsafeEntry(String(d?.path), 'directory');
    if (why) throw new TransferError('BACKUP_UNSAFE', `${archive}: folder ${JSON.stringify(d?.path)} in ${MANIFEST_FILE} ${why}; refusing this archive, nothing was restored`);
  }
  const listed = new Set<string>();
  for (const f of manifest.files) {
    if (listed.has(f.path)) {
      problems.push(`${f.path}: listed twice in the manifest`);
      continue;
    }
    listed.add(f.path);
    const badExternal = f.path.startsWith('external/') ? badExternalRecord(f) : undefined;
    if (badExternal) problems.push(`${f.path}: ${badExternal}`);
    const got = seen.get(f.path);
    if (!got) problems.push(`${f.path}: missing from the archive`);
    else if (got.size !== f.size) problems.push(`${f.path}: ${got.size} bytes, the manifest says ${f.size}`);
    else if (got.sha256 !== f.sha256) problems.push(`${f.path}: checksum differs (changed or damaged)`);
  }
  for (const p of seen.keys()) if (!listed.has(p)) problems.push(`${p}: in the archive but not in its manifest`);
  // A path cannot be restored as a file and a folder at once.
  for (const p of listed) for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) if (listed.has(p.slice(0, i))) problems.push(`${p.slice(0, i)}: both a file and a folder in the archive`);
  for (const d of manifest.dirs ?? []) if (listed.has(d.path)) problems.push(`${d.path}: both a file and a folder in the archive`);
  const counts = countsOf(manifest.files, manifest.dirs ?? [], usersText);
  // An archive made before mailboxes were counted by domain/user carries the old number: not
  // damage. Report the right one from here on (restore prints it).
  if (manifest.counts.mailboxes !== counts.mailboxes && manifest.counts.mailboxes === legacyMailboxCount(manifest.files)) manifest.counts.mailboxes = counts.mailboxes;
  for (const k of Object.keys(counts) as Array<keyof BackupCounts>) {
    if (counts[k] !== manifest.counts[k]) problems.push(`count of ${k}: ${counts[k]} in the archive, the manifest says ${manifest.counts[k]}`);
  }
  return { manifest, problems, entries: count };
}

/** Stream through the archive and check every file against the manifest (size, SHA-256) and its counts. */
export async function verifyBackup(archive: string, onProgress?: (p: BackupProgress) => void): Promise<VerifyResult> {
  return scanArchive(path.resolve(archive), undefined, onProgress);
}

/** Reads entries up to one file and returns its text (the config comes first, so this is quick). */
export async function readArchiveFile(archive: string, name: string): Promise<string | undefined> {
  const abs = path.resolve(archive);
  const st = await fsp.stat(abs).catch(() => undefined);
  if (!st) throw new TransferError('BACKUP_MISSING', `${abs} does not exist`);
  if (st.isDirectory()) return fsp.readFile(path.join(abs, ...name.split('/')), 'utf8').catch(() => undefined);
  try {
    for await (const e of tarEntries(abs, () => undefined)) {
      if (e.name !== name || e.type !== 'file') continue;
      const chunks: Buffer[] = [];
      for await (const c of e.data()) chunks.push(c);
      return Buffer.concat(chunks).toString('utf8');
    }
  } catch (err) {
    if (err instanceof TransferError) throw err;
    throw new TransferError('BACKUP_DAMAGED', `${abs} is not a readable tar archive: ${(err as Error).message}`, { cause: err });
  }
  return undefined;
}

const exists = async (p: string): Promise<boolean> => (await fsp.stat(p).catch(() => undefined)) !== undefined;

/** Files a fresh clone of hearth already has in config/ and maildir/: restoring over them is fine. */
const SHIPPED = new Set(['hearth.example.toml', '.gitkeep']);

async function isEmptyDir(dir: string, ignoreShipped = false): Promise<boolean> {
  return (await fsp.readdir(dir).catch(() => [] as string[])).filter((n) => !ignoreShipped || !SHIPPED.has(n)).length === 0;
}

/**
 * An external file restored into the config folder: `configPath` is its path there as hearth.toml
 * would name it (relative), `restoredTo` the absolute one. `kept`: the archive's
 * config/restored-external/ held a file at the same place (left by an earlier restore), which was
 * restored instead; `same` when its bytes are those of the external file.
 */
export type RestoredExternal = { keys: string[]; original: string; restoredTo: string; configPath: string; mode: number; kept?: 'same' | 'different' };
export type RestoreResult = { manifest: Manifest; configFiles: number; dataFiles: number; externalFiles: RestoredExternal[]; externalMissing: MissingExternal[] };

/**
 * Restore `config/` into `configDir`, `data/` into `dataDir` and `external/` into
 * `configDir/restored-external/` (never at the original paths), verifying while extracting: files
 * go to a staging folder in each target and are moved into place only when the whole archive
 * matched its manifest, so a damaged or hostile archive leaves the targets as they were. Refuses
 * non-empty targets unless `force` (then the archive's files overwrite, other files stay); what a
 * fresh clone ships there (hearth.example.toml, .gitkeep) does not count.
 */
export async function restoreBackup(opts: { archive: string; configDir: string; dataDir: string; force?: boolean; onProgress?: (p: BackupProgress) => void }): Promise<RestoreResult> {
  const archive = path.resolve(opts.archive);
  const targets = { config: path.resolve(opts.configDir), data: path.resolve(opts.dataDir) };
  for (const [what, dir] of Object.entries(targets)) {
    if (!opts.force && !(await isEmptyDir(dir, true))) throw new TransferError('RESTORE_NOT_EMPTY', `the ${what} folder ${dir} is not empty; restore into empty folders, or pass --force to overwrite what the backup holds`);
  }
  const existed = { config: await exists(targets.config), data: await exists(targets.data) };
  const stamp = `${STAGING_PREFIX}${randomBytes(4).toString('hex')}`;
  const made: string[] = [];
  // External files are staged apart: config/restored-external/… may be in the archive too.
  const staging = { config: path.join(targets.config, stamp), data: path.join(targets.data, stamp), external: path.join(targets.config, `${stamp}-external`) };
  /** An entry's target folder, its path there, and where it is staged. */
  const split = (rel: string): { top: 'config' | 'data'; rest: string[]; staged: string } => {
    const [top, ...rest] = rel.split('/');
    if (top === 'external') return { top: 'config', rest: [RESTORED_EXTERNAL, ...rest], staged: path.join(staging.external, ...rest) };
    return { top: top as 'config' | 'data', rest, staged: path.join(staging[top as 'config' | 'data'], ...rest) };
  };
  try {
    for (const dir of Object.values(staging)) {
      const first = await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
      if (first) made.push(first);
    }
    const { manifest, problems } = await scanArchive(
      archive,
      async (rel, data) => {
        const dest = split(rel).staged;
        try {
          await fsp.mkdir(path.dirname(dest), { recursive: true, mode: 0o700 });
          await pipeline(data, fs.createWriteStream(dest, { mode: 0o600 }));
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'ENOTDIR' && code !== 'EISDIR' && code !== 'EEXIST') throw err;
          throw new TransferError('BACKUP_UNSAFE', `${archive}: entry ${JSON.stringify(rel)} is both a file and a folder; refusing this archive, nothing was restored`, { cause: err });
        }
      },
      opts.onProgress,
    );
    if (problems.length || !manifest) throw new TransferError('BACKUP_DAMAGED', `the backup does not verify, nothing restored:\n  ${problems.slice(0, 20).join('\n  ')}${problems.length > 20 ? `\n  … and ${problems.length - 20} more` : ''}`);
    // external/… lands in config/restored-external/, beside the archive's own config files: one
    // place cannot be a file of one and a folder of the other (found before anything moves).
    const destOf = (rel: string): string => {
      const { top, rest } = split(rel);
      return [top, ...rest].join('/');
    };
    const destFiles = new Set(manifest.files.map((f) => destOf(f.path)));
    const destDirs = new Set((manifest.dirs ?? []).map((d) => destOf(d.path)));
    const clash = (p: string): TransferError => new TransferError('BACKUP_UNSAFE', `${archive}: ${p} would be both a file and a folder once restored (external/ goes to config/${RESTORED_EXTERNAL}/); refusing this archive, nothing was restored`);
    for (const d of destDirs) if (destFiles.has(d)) throw clash(d);
    for (const p of [...destFiles, ...destDirs]) {
      for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) if (destFiles.has(p.slice(0, i))) throw clash(p.slice(0, i));
    }
    // With --force the targets hold files already: a link on the way would be followed out of
    // the target (by mkdir, rename and chmod), a file where a folder goes would stop the moves
    // halfway. Both are refused before anything moves.
    const looked = new Set<string>();
    const checkWay = async (top: 'config' | 'data', parts: string[]): Promise<void> => {
      let dir = targets[top];
      for (const part of parts) {
        dir = path.join(dir, part);
        if (looked.has(dir)) continue;
        looked.add(dir);
        const st = await fsp.lstat(dir).catch(() => undefined);
        if (!st) return;
        if (st.isSymbolicLink()) throw new TransferError('RESTORE_LINK', `${dir} is a symbolic link; restore does not write through links (they can lead outside ${targets[top]}): remove it, or restore into empty folders; nothing was restored`);
        if (!st.isDirectory()) throw new TransferError('RESTORE_NOT_FOLDER', `${dir} is a file where the backup has a folder; move it away and restore again; nothing was restored`);
      }
    };
    for (const d of manifest.dirs ?? []) {
      const { top, rest } = split(d.path);
      await checkWay(top, rest);
    }
    for (const f of manifest.files) {
      const { top, rest } = split(f.path);
      await checkWay(top, rest.slice(0, -1));
      const dest = path.join(targets[top], ...rest);
      if ((await fsp.lstat(dest).catch(() => undefined))?.isDirectory()) throw new TransferError('RESTORE_NOT_FILE', `${dest} is a folder where the backup has a file; move it away and restore again; nothing was restored`);
    }
    // Verified: move into place. Folders first (empty Maildir folders and their modes), then files.
    // Modes are permission bits only: no setuid, setgid or sticky bit from an archive.
    for (const d of manifest.dirs ?? []) {
      const { top, rest } = split(d.path);
      const dest = path.join(targets[top], ...rest);
      await fsp.mkdir(dest, { recursive: true, mode: d.mode & 0o777 });
      await fsp.chmod(dest, d.mode & 0o777);
    }
    let configFiles = 0;
    let dataFiles = 0;
    const externalFiles: RestoredExternal[] = [];
    // config/ and data/ files first, so an external file whose place a config/restored-external/
    // file of the archive takes is known (and that one kept).
    const external = (f: ManifestFile): boolean => f.path.startsWith('external/');
    const placed = new Map<string, ManifestFile>();
    for (const f of [...manifest.files.filter((x) => !external(x)), ...manifest.files.filter(external)]) {
      const { top, rest, staged } = split(f.path);
      const dest = path.join(targets[top], ...rest);
      // Permission bits only; a key, secret or password file is private whatever its mode was.
      const mode = external(f) && f.keys?.some((k) => SECRET_KEY.test(k)) ? 0o600 : f.mode & 0o777;
      const record = external(f) ? { keys: f.keys ?? [], original: f.original ?? '', restoredTo: dest, configPath: rest.join('/'), mode } : undefined;
      const there = placed.get(dest);
      if (there && record) {
        externalFiles.push({ ...record, mode: there.mode & 0o777, kept: there.sha256 === f.sha256 ? 'same' : 'different' });
        continue;
      }
      placed.set(dest, f);
      await fsp.mkdir(path.dirname(dest), { recursive: true, mode: 0o700 });
      // A database restored over an older one: the old one's WAL would be replayed onto it.
      if (SQLITE_FILE.test(dest)) for (const side of ['-wal', '-shm', '-journal']) await fsp.rm(dest + side, { force: true });
      await fsp.rename(staged, dest);
      await fsp.chmod(dest, mode);
      const when = new Date(f.mtimeMs);
      await fsp.utimes(dest, when, when);
      if (record) externalFiles.push(record);
      else if (top === 'config') configFiles++;
      else dataFiles++;
    }
    // Only well-formed records: they are printed.
    const externalMissing = (Array.isArray(manifest.externalMissing) ? manifest.externalMissing : []).filter(
      (m) => typeof m?.original === 'string' && !CONTROL_CHAR.test(m.original) && typeof m.reason === 'string' && !CONTROL_CHAR.test(m.reason) && Array.isArray(m.keys) && m.keys.every((k) => typeof k === 'string' && CONFIG_KEY.test(k)),
    );
    return { manifest, configFiles, dataFiles, externalFiles, externalMissing };
  } finally {
    for (const dir of Object.values(staging)) await fsp.rm(dir, { recursive: true, force: true });
    // Folders made here only for staging, and left empty (nothing restored), go too.
    for (const what of ['data', 'config'] as const) {
      if (existed[what]) continue;
      for (let dir = targets[what]; made.some((m) => dir === m || dir.startsWith(m + path.sep)); dir = path.dirname(dir)) {
        if (!(await isEmptyDir(dir)) || !(await fsp.rmdir(dir).then(() => true, () => false))) break;
      }
    }
  }
}
