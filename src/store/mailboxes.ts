// The mailbox index is in charge of what POP3, IMAP and the webmail see of a user's mail: folders,
// UIDs (stable per UIDVALIDITY, never reused), MODSEQs (RFC 7162 CONDSTORE), flags and keywords,
// and change events so an IDLE session learns of new mail at once. The Maildir stays the source
// of truth (mutt and Dovecot may work on it too): `sync` reconciles the index with the files, keyed
// by each file's Maildir base name, so a flag rename by another program keeps the message's UID.
// The index (index-db.ts, node:sqlite) can always be rebuilt from the Maildir, at the cost of new
// UIDVALIDITYs. All changes for one user run one at a time (an in-process lock), so a UID is
// handed out once. No protocol text here: IMAP names for flags, numbers for the rest.
import { errText } from '../core/errors.ts';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { named, silentLogger } from '../core/log.ts';
import type { Logger } from '../core/log.ts';
import { applyKeywords, applyLetters, compareDeliveryOrder, imapFlags, parseMaildirName, splitFlags, visibleLetters, withVisibleLetters } from './flags.ts';
import { INDEX_FILE, IndexDb } from './index-db.ts';
import type { MessageRow, MessageTuple } from './index-db.ts';
import { crlfSizeOfFile, sizeFields, sizesFromName } from './maildir.ts';
import type { MailboxRef, MaildirStore } from './maildir.ts';
import { StoreError, assertSafeName, isInbox } from './names.ts';
import { UserSearch } from './user-search.ts';

/** Messages up to this size are read with one synchronous burst (see #readSmallSync). */
const SYNC_READ_MAX = 128 * 1024;

export type SpecialUse = '\\Sent' | '\\Drafts' | '\\Trash' | '\\Junk' | '\\Archive';
export type FolderInfo = { name: string; specialUse?: SpecialUse; subscribed: boolean };
export type MessageRecord = {
  uid: number;
  modseq: number;
  /** Bytes of the file as stored (line endings as delivered). */
  size: number;
  /**
   * Bytes with every line ending as CRLF (IMAP RFC822.SIZE, POP3 LIST), from the file name's
   * Dovecot-style `,W=`; null for files written without one (another program): parse to know.
   */
  vsize: number | null;
  /** IMAP names: \Seen \Answered \Flagged \Deleted \Draft, then keywords. Never \Recent. */
  flags: string[];
  /** ms since the epoch: the file's mtime (APPEND's date, or delivery time). */
  internalDate: number;
  /** Maildir base name (before `:2,`), unique in the folder; the UID's key. */
  key: string;
  path: string;
};
export type FolderState = { uidValidity: number; uidNext: number; highestModseq: number; messages: MessageRecord[] };
/** A FolderState whose `messages` is the index's own snapshot, shared by its readers: never mutate it. */
export type SharedFolderState = { uidValidity: number; uidNext: number; highestModseq: number; messages: readonly MessageRecord[] };
/** A page of a folder, newest first, with the folder's counts (see UserMailboxes.peekNewest). */
export type FolderPage = {
  uidValidity: number;
  uidNext: number;
  highestModseq: number;
  /** Messages in the folder. */
  total: number;
  /** Messages without \Seen, when asked for (it costs a walk of the folder's names). */
  unseen?: number;
  /** Records [offset, offset + limit) of the folder in descending UID order. */
  messages: MessageRecord[];
};
export type FolderStatus = { messages: number; recent: number; unseen: number; uidNext: number; uidValidity: number; highestModseq: number };
export type ChangeEvent =
  /** `from`: these arrived by COPY/MOVE from that folder (the junk filter learns from moves). */
  | { kind: 'added'; folder: string; records: MessageRecord[]; from?: { folder: string; how: 'copy' | 'move' } }
  | { kind: 'flags'; folder: string; records: MessageRecord[] }
  | { kind: 'expunged'; folder: string; uids: number[] }
  /** The folder list changed; a delete or rename says which folders (a rename lists its subfolders too). */
  | { kind: 'folders'; deleted?: string[]; renamed?: Array<{ from: string; to: string }> };
export type FlagMode = 'add' | 'remove' | 'replace';
export type UidMap = Array<{ from: number; to: number }>;

/** Side file with the last UIDVALIDITY handed out, so a rebuilt index never repeats one. */
const UIDVALIDITY_FILE = 'hearth-uidvalidity';
const SPECIAL_USE: Record<string, SpecialUse> = { Sent: '\\Sent', Drafts: '\\Drafts', Trash: '\\Trash', Junk: '\\Junk', Archive: '\\Archive' };
/** A directory mtime this close to the scan's start may hide a later change in the same tick. */
const MTIME_TRUST_MS = 1000;
const STAT_BATCH = 256;
/** Files without W= read at once to count their bare LFs (each streams, so memory stays small). */
const VSIZE_BATCH = 16;
const LOAD_SLICE = 5000;
const NO_KEYWORDS: string[] = [];

type Entry = { rec: MessageRecord; name: string; inNew: boolean; letters: string; keywords: string[] };
type Folder = {
  id: number;
  name: string;
  dir: string;
  uidValidity: number;
  uidNext: number;
  highestModseq: number;
  /** In UID order: UIDs only grow, and a Map keeps insertion order (replacing keeps the place). */
  byUid: Map<number, Entry>;
  /** Built on first need (a scan that finds the directories changed, an APPEND): see #keys. */
  byKey: Map<string, Entry> | undefined;
  newMtime: number;
  curMtime: number;
  snapshot: MessageRecord[] | undefined;
};
type Listed = { name: string; inNew: boolean };

const noop = (): void => {};
const errCode = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;
const ioError = (what: string, err: unknown): StoreError =>
  err instanceof StoreError ? err : new StoreError('STORE_IO', `${what}: ${errText(err)}`, { cause: err });
const sameKeywords = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((k, i) => k === b[i]);
const uniqueSorted = (uids: readonly number[]): number[] => [...new Set(uids)].sort((a, b) => a - b);

/**
 * A message record as the index keeps it: the file's path is built only when asked for (most
 * records of a big folder never are), and records with the same flags share one frozen array.
 */
class StoredRecord implements MessageRecord {
  uid: number;
  modseq: number;
  size: number;
  vsize: number | null;
  flags: string[];
  internalDate: number;
  key: string;
  readonly #dir: string;
  readonly #name: string;
  readonly #inNew: boolean;
  #path: string | undefined;

  constructor(dir: string, name: string, inNew: boolean, uid: number, modseq: number, size: number, vsize: number | null, flags: string[], internalDate: number, key: string) {
    this.uid = uid;
    this.modseq = modseq;
    this.size = size;
    this.vsize = vsize;
    this.flags = flags;
    this.internalDate = internalDate;
    this.key = key;
    this.#dir = dir;
    this.#name = name;
    this.#inNew = inNew;
  }

  get path(): string {
    return (this.#path ??= path.join(this.#dir, this.#inNew ? 'new' : 'cur', this.#name));
  }

  get inNew(): boolean {
    return this.#inNew;
  }
}

/** Is the message's file in new/ (delivered, and no mail client has looked at it yet)? */
export function isInNew(rec: MessageRecord): boolean {
  return rec instanceof StoredRecord ? rec.inNew : /[\\/]new[\\/][^\\/]+$/.test(rec.path);
}

/** Shared, frozen flag arrays by letters and keywords: a folder has few distinct flag sets. */
const sharedFlags = new Map<string, string[]>();
const SHARED_FLAGS_MAX = 4096;
function flagsFor(letters: string, keywords: readonly string[]): string[] {
  const id = keywords.length === 0 ? letters : `${letters}\0${keywords.join(' ')}`;
  let flags = sharedFlags.get(id);
  if (flags === undefined) {
    flags = Object.freeze(imapFlags(letters, keywords)) as string[];
    if (sharedFlags.size >= SHARED_FLAGS_MAX) sharedFlags.clear();
    sharedFlags.set(id, flags);
  }
  return flags;
}

/**
 * The name's W= when the file is what the name says: a name whose S= disagrees with the file
 * (rewritten by another program without renaming) is not trusted, nor a W= below the file size.
 */
function vsizeFromName(name: string, fileSize: number): number | null {
  const { size, vsize } = sizesFromName(name);
  if (vsize === null || vsize < fileSize || (size !== null && size !== fileSize)) return null;
  return vsize;
}

function statFile(file: string): Promise<fs.Stats | undefined> {
  return new Promise((resolve, reject) =>
    fs.stat(file, (err, st) => {
      if (err) return err.code === 'ENOENT' ? resolve(undefined) : reject(err);
      resolve(st);
    }),
  );
}

export type MailStoreOptions = {
  /** Per-user junk filters, attached to each user's mailboxes so folder moves train them. */
  junk?: { attach(user: UserMailboxes): () => void };
  maildir: MaildirStore;
  log?: Logger;
  /**
   * Keep a full-text index per user beside the mailbox index (user-search.ts), kept up to date
   * in the background, so SEARCH BODY/SUBJECT/FROM… read only the messages that may match.
   * Default true.
   */
  fullText?: boolean;
};

/**
 * One process's view of all mailboxes: one UserMailboxes (one open index) per user, and beside
 * it the user's full-text index (UserSearch), opened and closed with it.
 */
export class MailStore {
  readonly maildir: MaildirStore;
  readonly #log: Logger;
  readonly #fullText: boolean;
  readonly #users = new Map<string, Promise<UserMailboxes>>();
  readonly #searches = new Map<string, UserSearch>();
  readonly #junk: MailStoreOptions['junk'];
  readonly #detach: Array<() => void> = [];
  #closed = false;

  constructor(opts: MailStoreOptions) {
    this.maildir = opts.maildir;
    this.#log = named(opts.log ?? silentLogger(), 'index');
    this.#fullText = opts.fullText ?? true;
    this.#junk = opts.junk;
  }

  /** The user's mailboxes, opened (and the INBOX created) on first use, then shared. */
  open(box: MailboxRef): Promise<UserMailboxes> {
    if (this.#closed) return Promise.reject(new StoreError('STORE_CLOSED', 'mail store is closed'));
    const key = userKey(box);
    let p = this.#users.get(key);
    if (p === undefined) {
      p = UserMailboxes.open(this.maildir, box, this.#log).then((user) => {
        if (this.#fullText && !this.#closed) {
          // Search is an optimisation: a user whose index cannot be opened still gets their mail.
          const search = UserSearch.open(user, this.#log);
          if (search) this.#searches.set(key, search);
        }
        if (this.#junk && !this.#closed) this.#detach.push(this.#junk.attach(user));
        return user;
      });
      this.#users.set(key, p);
      p.catch(() => this.#users.delete(key));
    }
    return p;
  }

  /**
   * The delivery path's poke after it put mail into a folder: if that user's index is open, sync
   * the folder now so listeners (IDLE) get 'added' without polling. Never throws.
   */
  async notifyDelivered(box: MailboxRef, folder = 'INBOX'): Promise<void> {
    const p = this.#users.get(userKey(box));
    if (p === undefined) return;
    try {
      const user = await p;
      if (!user.closed) await user.sync(folder);
    } catch (err) {
      this.#log.warn({ user: box.user, domain: box.domain, folder, err: errText(err) }, 'sync after delivery failed');
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    const users = [...this.#users.values()];
    const searches = [...this.#searches.values()];
    this.#users.clear();
    this.#searches.clear();
    for (const detach of this.#detach.splice(0)) detach();
    // Searches first: their background indexing reads through the mailboxes.
    await Promise.all(searches.map((s) => s.close()));
    await Promise.all(users.map(async (p) => (await p.catch(() => undefined))?.close()));
  }
}

function userKey(box: MailboxRef): string {
  return `${String(box.domain).toLowerCase()}/${String(box.user).toLowerCase()}`;
}

export class UserMailboxes extends EventEmitter<{ change: [ChangeEvent] }> {
  readonly box: MailboxRef;
  /** The user's maildir (the INBOX). */
  readonly dir: string;
  readonly #maildir: MaildirStore;
  readonly #db: IndexDb;
  readonly #log: Logger;
  readonly #folders = new Map<string, Folder>();
  /** Folders being loaded behind a peek (peekNewest). */
  readonly #loading = new Set<string>();
  #tail: Promise<unknown> = Promise.resolve();
  #closed = false;
  #maildropOwner: object | undefined;

  /** Use MailStore.open (or this) rather than the constructor: it creates the maildir first. */
  static async open(maildir: MaildirStore, box: MailboxRef, log: Logger): Promise<UserMailboxes> {
    const dir = await maildir.ensureMaildir(box);
    const ulog = log.child({ user: box.user, domain: box.domain });
    const file = path.join(dir, INDEX_FILE);
    let db: IndexDb;
    try {
      db = new IndexDb(file, { durable: maildir.fsyncEnabled });
    } catch (err) {
      // The index is a cache of the Maildir: an unreadable one is set aside and rebuilt.
      ulog.warn({ file, err: errText(err) }, 'mailbox index unusable, rebuilding');
      const aside = `${file}.broken-${Date.now()}`;
      await fsp.rename(file, aside).catch(noop);
      await Promise.all(['-wal', '-shm'].map((s) => fsp.rm(file + s, { force: true })));
      try {
        db = new IndexDb(file, { durable: maildir.fsyncEnabled });
      } catch (err2) {
        throw ioError(`cannot open mailbox index ${file}`, err2);
      }
    }
    const user = new UserMailboxes(maildir, { user: box.user.toLowerCase(), domain: box.domain.toLowerCase() }, dir, db, ulog);
    if (db.fresh) {
      // A new (or rebuilt) index: everything already there is subscribed, as a fresh mailbox shows it.
      const names = await user.#diskFolders();
      db.transaction(() => {
        db.subscribe('INBOX');
        for (const n of names) db.subscribe(n);
        db.setMeta('created', String(Date.now()));
      });
      ulog.info({ folders: names.length + 1 }, 'mailbox index created');
    }
    return user;
  }

  constructor(maildir: MaildirStore, box: MailboxRef, dir: string, db: IndexDb, log: Logger) {
    super();
    this.setMaxListeners(0); // one listener per IMAP/POP3/webmail session
    this.#maildir = maildir;
    this.box = box;
    this.dir = dir;
    this.#db = db;
    this.#log = log;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Wait for running work, then close the index. Later calls throw STORE_CLOSED. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#locked(async () => {
      this.#closed = true;
      this.#db.close();
      this.#folders.clear();
    });
  }

  // --- folders ---

  /** INBOX first, then the other folders by name; Maildir++ `.A.B` shows as `A/B`. */
  async listFolders(): Promise<FolderInfo[]> {
    this.#checkOpen();
    const names = (await this.#diskFolders()).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const subscribed = new Set(this.#db.subscriptions());
    return ['INBOX', ...names].map((name) => {
      const info: FolderInfo = { name, subscribed: subscribed.has(name) };
      const special = SPECIAL_USE[name];
      if (special !== undefined) info.specialUse = special;
      return info;
    });
  }

  /** Create a folder (and any missing superiors, RFC 3501 6.3.3), subscribed. */
  createFolder(name: string): Promise<void> {
    return this.#locked(async () => {
      const folder = canonical(name);
      if (folder === 'INBOX' || (await this.#folderExists(folder))) throw new StoreError('STORE_FOLDER_EXISTS', `folder ${JSON.stringify(folder)} exists`);
      await this.#createLocked(folder);
      this.#emit({ kind: 'folders' });
    });
  }

  /** Delete a folder and its messages. The INBOX and folders with subfolders cannot be deleted. */
  deleteFolder(name: string): Promise<void> {
    return this.#locked(async () => {
      const folder = canonical(name);
      if (folder === 'INBOX') throw new StoreError('STORE_INBOX', 'the INBOX cannot be deleted');
      if (!(await this.#folderExists(folder))) throw new StoreError('STORE_NO_FOLDER', `no folder ${JSON.stringify(folder)}`);
      if ((await this.#diskFolders()).some((n) => n.startsWith(folder + '/'))) {
        throw new StoreError('STORE_HAS_CHILDREN', `folder ${JSON.stringify(folder)} has subfolders`);
      }
      const dir = this.#folderDir(folder);
      // Rename first, so the folder vanishes at once for every reader; then remove at leisure.
      const trash = path.join(this.dir, 'tmp', `.deleted-${randomBytes(6).toString('hex')}`);
      try {
        await fsp.rename(dir, trash);
        await this.#maildir.syncDirectory(this.dir);
      } catch (err) {
        throw ioError(`cannot delete folder ${folder}`, err);
      }
      this.#forget(folder);
      const row = this.#db.folder(folder);
      this.#db.transaction(() => {
        if (row) this.#db.deleteFolder(row.id);
        this.#db.unsubscribe(folder);
      });
      await fsp.rm(trash, { recursive: true, force: true }).catch((err: unknown) => this.#log.warn({ trash, err: errText(err) }, 'deleted folder not removed'));
      this.#log.info({ folder }, 'folder deleted');
      this.#emit({ kind: 'folders', deleted: [folder] });
    });
  }

  /**
   * Rename a folder with its subfolders, keeping UIDVALIDITY and UIDs. Renaming the INBOX moves
   * all its messages into a new folder and leaves the INBOX empty (RFC 3501 6.3.5).
   */
  renameFolder(from: string, to: string): Promise<void> {
    return this.#locked(async () => {
      const src = canonical(from);
      const dst = canonical(to);
      if (dst === 'INBOX' || (await this.#folderExists(dst))) throw new StoreError('STORE_FOLDER_EXISTS', `folder ${JSON.stringify(dst)} exists`);
      if (src === 'INBOX') {
        await this.#createLocked(dst);
        const inbox = await this.#open('INBOX');
        await this.#scan(inbox);
        await this.#moveLocked(inbox, [...inbox.byUid.keys()], await this.#open(dst));
        this.#emit({ kind: 'folders' });
        return;
      }
      if (!(await this.#folderExists(src))) throw new StoreError('STORE_NO_FOLDER', `no folder ${JSON.stringify(src)}`);
      if (dst.startsWith(src + '/')) throw new StoreError('STORE_BAD_NAME', `cannot rename ${JSON.stringify(src)} into itself`);
      const disk = await this.#diskFolders();
      const moves = [src, ...disk.filter((n) => n.startsWith(src + '/'))].map((n) => ({ from: n, to: dst + n.slice(src.length) }));
      const existing = new Set(disk);
      const clash = moves.find((m) => existing.has(m.to));
      if (clash) throw new StoreError('STORE_FOLDER_EXISTS', `folder ${JSON.stringify(clash.to)} exists`);
      await this.#createSuperiors(dst);
      try {
        for (const m of moves) await fsp.rename(this.#folderDir(m.from), this.#folderDir(m.to));
        await this.#maildir.syncDirectory(this.dir);
      } catch (err) {
        throw ioError(`cannot rename folder ${src}`, err);
      }
      const subscribed = new Set(this.#db.subscriptions());
      this.#db.transaction(() => {
        for (const m of moves) {
          this.#forget(m.from);
          this.#forget(m.to);
          const row = this.#db.folder(m.from);
          if (row) this.#db.renameFolder(row.id, m.to);
          if (subscribed.has(m.from)) {
            this.#db.unsubscribe(m.from);
            this.#db.subscribe(m.to);
          }
        }
      });
      this.#log.info({ from: src, to: dst, folders: moves.length }, 'folder renamed');
      this.#emit({ kind: 'folders', renamed: moves });
    });
  }

  /** Subscriptions are names (RFC 3501 6.3.6: the folder need not exist) and persist in the index. */
  setSubscribed(name: string, on: boolean): Promise<void> {
    return this.#locked(async () => {
      const folder = canonical(name);
      if (on) this.#db.subscribe(folder);
      else this.#db.unsubscribe(folder);
      this.#emit({ kind: 'folders' });
    });
  }

  // --- syncing and reading ---

  /**
   * Reconcile the index with the folder's files: new files get UIDs in delivery order, vanished
   * files become expunged, renamed ones (flags changed by mutt) keep their UID with a new MODSEQ.
   * Skips the directory scan when neither new/ nor cur/ changed since the last one.
   * Throws STORE_NO_FOLDER if the folder does not exist.
   */
  sync(folder: string): Promise<FolderState> {
    return this.#locked(async () => {
      const f = await this.#open(canonical(folder));
      await this.#scan(f);
      return this.#state(f);
    });
  }

  /**
   * `sync`, but `messages` is the index's snapshot itself rather than a copy, for readers that
   * keep it (an IMAP session's view of its folder) and never change it: a change to the folder
   * makes a new snapshot, so the array handed out stays as it was.
   */
  syncShared(folder: string): Promise<SharedFolderState> {
    return this.#locked(async () => {
      const f = await this.#open(canonical(folder));
      await this.#scan(f);
      return { uidValidity: f.uidValidity, uidNext: f.uidNext, highestModseq: f.highestModseq, messages: this.#snapshot(f) };
    });
  }

  /**
   * A page of the folder, newest (highest UID) first, read straight from the index file while the
   * folder is not in memory yet: after a restart the first list of a 100,000-message folder need
   * not wait for all of it to load, which this starts in the background. Answered only when the
   * index is known current for the folder, by the test that lets a sync skip its scan: new/ and
   * cur/ still have the mtimes recorded (and trusted) at the folder's last scan, so a file added,
   * renamed or removed by another program since makes it undefined. Undefined too when the folder
   * is in memory already or anything is unusual: then ask `syncShared`, which is as quick, or
   * reconciles. The records equal what `syncShared` gives for the same positions.
   */
  async peekNewest(folder: string, offset: number, limit: number, opts: { unseen?: boolean } = {}): Promise<FolderPage | undefined> {
    if (this.#closed) return undefined;
    let name: string;
    try {
      name = canonical(folder);
    } catch {
      return undefined;
    }
    if (this.#folders.has(name)) return undefined;
    this.#loadBehind(name);
    const dir = this.#folderDir(name);
    let stNew: fs.Stats | undefined;
    let stCur: fs.Stats | undefined;
    try {
      [stNew, stCur] = await Promise.all([statFile(path.join(dir, 'new')), statFile(path.join(dir, 'cur'))]);
    } catch {
      return undefined;
    }
    if (this.#closed || !stNew?.isDirectory() || !stCur?.isDirectory()) return undefined;
    // Loaded meanwhile or not, the index rows equal the in-memory state between any two awaits:
    // every change here writes both in one synchronous step. One read snapshot, so a row and its
    // mtimes come from the same commit, even one by another process (`hearth reindex`).
    return this.#db.snapshot(() => {
      const row = this.#db.folder(name);
      if (row === undefined || row.new_mtime < 0 || row.cur_mtime < 0) return undefined;
      if (row.new_mtime !== stNew.mtimeMs || row.cur_mtime !== stCur.mtimeMs) return undefined;
      const messages = this.#db.newestMessageTuples(row.id, Math.max(0, offset), Math.max(0, limit)).map((t) => entryOfRow(dir, t).rec);
      const page: FolderPage = { uidValidity: row.uidvalidity, uidNext: row.uidnext, highestModseq: row.highestmodseq, total: this.#db.messageCount(row.id), messages };
      if (opts.unseen) page.unseen = this.#db.unseenCount(row.id);
      return page;
    });
  }

  /** Load a folder into memory in the background (once at a time), so later reads find it there. */
  #loadBehind(name: string): void {
    if (this.#loading.has(name)) return;
    this.#loading.add(name);
    void this.#locked(async () => {
      await this.#scan(await this.#open(name));
    })
      .catch(noop) // the next sync of the folder meets the same fault and reports it
      .finally(() => this.#loading.delete(name));
  }

  /**
   * `hearth reindex`: read the folder's Maildir again even if its directories look unchanged,
   * and drop its cached summaries. UIDs and UIDVALIDITY stay as they are.
   */
  rescan(folder: string): Promise<FolderState> {
    return this.#locked(async () => {
      const f = await this.#open(canonical(folder));
      f.newMtime = -1;
      f.curMtime = -1;
      this.#db.clearSummaries(f.id);
      await this.#scan(f);
      return this.#state(f);
    });
  }

  /** The folder's UIDVALIDITY if it is open in this index (no I/O, no copy of its messages). */
  uidValidity(folder: string): number | undefined {
    if (this.#closed) return undefined;
    return this.#folders.get(isInbox(folder) ? 'INBOX' : folder)?.uidValidity;
  }

  /** The last synced state of a folder, without I/O; undefined if it has not been opened. */
  state(folder: string): FolderState | undefined {
    if (this.#closed) return undefined;
    const f = this.#folders.get(isInbox(folder) ? 'INBOX' : folder);
    return f ? this.#state(f) : undefined;
  }

  /** MESSAGES, RECENT (files in new/), UNSEEN, UIDNEXT, UIDVALIDITY, HIGHESTMODSEQ, after a sync. */
  folderStatus(folder: string): Promise<FolderStatus> {
    return this.#locked(async () => {
      const f = await this.#open(canonical(folder));
      await this.#scan(f);
      let recent = 0;
      let unseen = 0;
      for (const e of f.byUid.values()) {
        if (e.inNew) recent++;
        if (!e.letters.includes('S')) unseen++;
      }
      return { messages: f.byUid.size, recent, unseen, uidNext: f.uidNext, uidValidity: f.uidValidity, highestModseq: f.highestModseq };
    });
  }

  /** UIDs expunged after `modseq` (RFC 7162 QRESYNC VANISHED (EARLIER)). */
  expungedSince(folder: string, modseq: number): Promise<number[]> {
    return this.#locked(async () => {
      const f = await this.#open(canonical(folder));
      return this.#db.expungedSince(f.id, modseq);
    });
  }

  /** A stream of the message's file, or null if it is gone (even after a re-sync). */
  async openMessage(folder: string, uid: number): Promise<fs.ReadStream | null> {
    const fd = await this.#openFile(folder, uid);
    return fd === null ? null : fs.createReadStream('', { fd, autoClose: true });
  }

  async readMessage(folder: string, uid: number): Promise<Buffer | null> {
    const small = this.#readSmallSync(folder, uid);
    if (small) return small;
    const fd = await this.#openFile(folder, uid);
    if (fd === null) return null;
    try {
      return await new Promise<Buffer>((resolve, reject) => fs.readFile(fd, (err, data) => (err ? reject(err) : resolve(data))));
    } catch (err) {
      throw ioError(`cannot read message ${uid}`, err);
    } finally {
      fs.close(fd, noop);
    }
  }

  /**
   * Small messages are read synchronously: open/read/close of a cached 10 KB file takes a few
   * tens of microseconds, far less than four thread-pool round trips, and POP3/IMAP download
   * thousands of them in a row. Anything bigger, or any trouble, takes the careful async path.
   */
  #readSmallSync(folder: string, uid: number): Buffer | undefined {
    if (this.closed) return undefined;
    const e = this.#folders.get(canonical(folder))?.byUid.get(uid);
    if (!e || e.rec.size > SYNC_READ_MAX) return undefined;
    try {
      return fs.readFileSync(e.rec.path);
    } catch {
      return undefined;
    }
  }

  // --- the summary cache: text a protocol derives once from a message's file, opaque here ---

  /** The text stored for this message by storeSummaries, or undefined (none, or another file). */
  cachedSummary(folder: string, uid: number, key: string): string | undefined {
    this.#checkOpen();
    const id = this.#folderId(canonical(folder));
    return id === undefined ? undefined : this.#db.summary(id, uid, key);
  }

  /**
   * Keep derived text per message in the index, keyed by UID and checked against the Maildir key.
   * It goes when the message is expunged or its folder deleted; messages already gone are skipped.
   */
  storeSummaries(folder: string, items: ReadonlyArray<{ uid: number; key: string; data: string }>): void {
    this.#checkOpen();
    const id = this.#folderId(canonical(folder));
    if (id !== undefined && items.length > 0) this.#db.putSummaries(id, items);
  }

  // --- changing messages ---

  /**
   * Add, remove or replace flags on the given UIDs (unknown UIDs are skipped). System flags are
   * renamed into the file name (new/ -> cur/ with `:2,<letters>`); keywords are kept in the index.
   * With `unchangedSince` (RFC 7162 UNCHANGEDSINCE), a message whose MODSEQ is higher is left
   * alone and listed in `failedModified`. `changed` holds only messages whose flags changed.
   */
  setFlags(folder: string, uids: number[], mode: FlagMode, flags: string[], opts: { unchangedSince?: number } = {}): Promise<{ changed: MessageRecord[]; failedModified: number[] }> {
    return this.#locked(async () => {
      const wanted = splitFlags(flags);
      const f = await this.#open(canonical(folder));
      const first = await this.#applyFlags(f, uniqueSorted(uids), mode, wanted, opts.unchangedSince);
      if (first.vanished.length === 0) return { changed: first.changed, failedModified: first.failed };
      // Some files were renamed or removed by another program: catch up, then try those again.
      await this.#scan(f);
      const again = await this.#applyFlags(f, first.vanished, mode, wanted, opts.unchangedSince);
      const changed = [...first.changed, ...again.changed].sort((a, b) => a.uid - b.uid);
      return { changed, failedModified: uniqueSorted([...first.failed, ...again.failed]) };
    });
  }

  /** Remove the messages flagged \Deleted (only those among `uids` when given); returns their UIDs. */
  expunge(folder: string, uids?: number[]): Promise<number[]> {
    return this.#locked(async () => {
      const f = await this.#open(canonical(folder));
      const only = uids === undefined ? undefined : new Set(uids);
      const doomed = [...f.byUid.values()].filter((e) => e.letters.includes('T') && (only === undefined || only.has(e.rec.uid)));
      if (doomed.length === 0) return [];
      const dirs = new Set<string>();
      let failure: unknown;
      const done: Entry[] = [];
      await Promise.all(
        doomed.map(async (e) => {
          try {
            await fsp.unlink(e.rec.path);
          } catch (err) {
            if (errCode(err) !== 'ENOENT') {
              failure ??= err;
              return;
            }
          }
          dirs.add(path.dirname(e.rec.path));
          done.push(e);
        }),
      );
      await Promise.all([...dirs].map((d) => this.#maildir.syncDirectory(d)));
      const gone = this.#commitExpunge(f, done);
      if (failure !== undefined) throw ioError(`cannot expunge from ${f.name}`, failure);
      return gone;
    });
  }

  /**
   * Store a message durably (MaildirStore.deliver) and give it the next UID. With system flags it
   * goes to cur/ with them; without, to new/ (it counts as recent). `internalDate` becomes the
   * file's mtime. Throws STORE_NO_FOLDER (IMAP's [TRYCREATE]) if the folder does not exist.
   */
  async append(folder: string, content: Uint8Array | AsyncIterable<Uint8Array>, opts: { flags?: string[]; internalDate?: Date } = {}): Promise<MessageRecord> {
    this.#checkOpen();
    const name = canonical(folder);
    const wanted = splitFlags(opts.flags ?? []);
    if (name !== 'INBOX' && !(await this.#folderExists(name))) throw new StoreError('STORE_NO_FOLDER', `no folder ${JSON.stringify(name)}`);
    // The upload runs outside the lock: a slow client must not hold up the user's other sessions.
    const [file] = await this.#maildir.deliver([{ ...this.box, folder: name }], content, {
      flags: wanted.letters === '' ? undefined : wanted.letters,
      mtime: opts.internalDate,
    });
    return this.#locked(async () => {
      const f = await this.#open(name);
      const { key, letters } = parseMaildirName(file.name);
      const known = this.#keys(f).get(key); // a sync got to it first
      const modseq = f.highestModseq + 1;
      let entry: Entry;
      if (known) {
        if (wanted.keywords.length === 0) return known.rec;
        entry = this.#entry(f, known.rec.uid, known.name, known.inNew, known.rec.size, known.rec.vsize, known.rec.internalDate, modseq, letters, wanted.keywords);
        this.#db.transaction(() => {
          this.#db.updateMessage(f.id, entry.rec.uid, entry.name, entry.inNew, modseq, entry.keywords.join(' '));
          this.#db.setCounters(f.id, f.uidNext, modseq);
        });
        f.highestModseq = modseq;
        this.#put(f, entry);
        this.#emit({ kind: 'flags', folder: f.name, records: [entry.rec] });
        return entry.rec;
      }
      const st = await statFile(file.path).catch(() => undefined);
      const internalDate = opts.internalDate?.getTime() ?? Math.floor(st?.mtimeMs ?? Date.now());
      entry = this.#entry(f, f.uidNext, file.name, !file.path.includes(`${path.sep}cur${path.sep}`), file.size, file.vsize, internalDate, modseq, letters, wanted.keywords);
      this.#db.transaction(() => {
        this.#db.insertMessage(f.id, rowOf(entry));
        this.#db.setCounters(f.id, entry.rec.uid + 1, modseq);
      });
      f.uidNext = entry.rec.uid + 1;
      f.highestModseq = modseq;
      this.#put(f, entry);
      this.#emit({ kind: 'added', folder: f.name, records: [entry.rec] });
      return entry.rec;
    });
  }

  /** Hard-link messages into another folder (flags and keywords kept); returns the COPYUID map. */
  copy(from: string, uids: number[], to: string): Promise<UidMap> {
    return this.#locked(async () => {
      const src = await this.#open(canonical(from));
      const dst = await this.#open(canonical(to));
      return this.#transfer(src, uniqueSorted(uids), dst, 'copy');
    });
  }

  /** Move messages (rename, so atomic per message): new UIDs in `to`, expunged from `from`. */
  move(from: string, uids: number[], to: string): Promise<UidMap> {
    return this.#locked(async () => {
      const src = await this.#open(canonical(from));
      const dst = await this.#open(canonical(to));
      return this.#moveLocked(src, uniqueSorted(uids), dst);
    });
  }

  // --- POP3 ---

  /** POP3's exclusive maildrop lock (RFC 1939 8), in this process: true if `owner` now holds it. */
  lockMaildrop(owner: object): boolean {
    if (this.#maildropOwner !== undefined && this.#maildropOwner !== owner) return false;
    this.#maildropOwner = owner;
    return true;
  }

  unlockMaildrop(owner: object): void {
    if (this.#maildropOwner === owner) this.#maildropOwner = undefined;
  }

  // --- internals: locking, folders ---

  #checkOpen(): void {
    if (this.#closed) throw new StoreError('STORE_CLOSED', 'mailbox index is closed');
  }

  /** Run `fn` after every earlier change of this user has finished. */
  #locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(() => {
      this.#checkOpen();
      return fn();
    });
    this.#tail = run.catch(noop);
    return run;
  }

  #emit(ev: ChangeEvent): void {
    try {
      this.emit('change', ev);
    } catch (err) {
      // A session's listener bug must not undo a change that is already on disk.
      this.#log.error({ err: errText(err), kind: ev.kind }, 'change listener threw');
    }
  }

  #folderId(folder: string): number | undefined {
    return this.#folders.get(folder)?.id ?? this.#db.folder(folder)?.id;
  }

  #folderDir(folder: string): string {
    return this.#maildir.maildirPath(this.box, folder);
  }

  async #folderExists(folder: string): Promise<boolean> {
    if (folder === 'INBOX') return true;
    try {
      return (await fsp.stat(path.join(this.#folderDir(folder), 'cur'))).isDirectory();
    } catch (err) {
      if (errCode(err) === 'ENOENT' || errCode(err) === 'ENOTDIR') return false;
      throw ioError(`cannot check folder ${folder}`, err);
    }
  }

  /** Folder names found on disk (not INBOX), unsorted; directories with odd names are skipped. */
  async #diskFolders(): Promise<string[]> {
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(this.dir, { withFileTypes: true });
    } catch (err) {
      throw ioError(`cannot list folders of ${this.dir}`, err);
    }
    const out: string[] = [];
    for (const e of entries) {
      if (!e.isDirectory() || !e.name.startsWith('.') || e.name === '.' || e.name === '..') continue;
      const name = e.name.slice(1).split('.').join('/');
      try {
        assertSafeName('folder', name);
      } catch {
        continue;
      }
      if (!isInbox(name)) out.push(name);
    }
    return out;
  }

  async #createLocked(folder: string): Promise<Folder> {
    await this.#createSuperiors(folder);
    this.#maildir.forgetMaildir(this.box, folder);
    await this.#maildir.ensureMaildir(this.box, folder);
    const f = await this.#open(folder, true);
    this.#db.subscribe(folder);
    this.#log.info({ folder, uidValidity: f.uidValidity }, 'folder created');
    return f;
  }

  async #createSuperiors(folder: string): Promise<void> {
    const parts = folder.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      if (isInbox(parent) || (await this.#folderExists(parent))) continue;
      this.#maildir.forgetMaildir(this.box, parent);
      await this.#maildir.ensureMaildir(this.box, parent);
      await this.#open(parent, true);
      this.#db.subscribe(parent);
    }
  }

  #forget(folder: string): void {
    this.#folders.delete(folder);
    if (!isInbox(folder)) this.#maildir.forgetMaildir(this.box, folder);
  }

  /**
   * The folder's in-memory index, loaded from the database, or created there with a fresh
   * UIDVALIDITY when the folder is new to the index. `fresh` forces a new UIDVALIDITY (the folder
   * was just created, so an old row for the same name belongs to a deleted folder).
   */
  async #open(folder: string, fresh = false): Promise<Folder> {
    if (!fresh) {
      const cached = this.#folders.get(folder);
      if (cached) return cached;
    }
    if (!(await this.#folderExists(folder))) {
      const stale = this.#db.folder(folder);
      if (stale) this.#db.deleteFolder(stale.id);
      this.#folders.delete(folder);
      throw new StoreError('STORE_NO_FOLDER', `no folder ${JSON.stringify(folder)}`);
    }
    let row = this.#db.folder(folder);
    if (row && fresh) {
      this.#db.deleteFolder(row.id);
      row = undefined;
    }
    if (!row) {
      const uidValidity = await this.#nextUidValidity();
      this.#db.insertFolder(folder, uidValidity);
      row = this.#db.folder(folder)!;
    }
    const f: Folder = {
      id: row.id,
      name: folder,
      dir: this.#folderDir(folder),
      uidValidity: row.uidvalidity,
      uidNext: row.uidnext,
      highestModseq: row.highestmodseq,
      byUid: new Map(),
      byKey: undefined,
      newMtime: row.new_mtime,
      curMtime: row.cur_mtime,
      snapshot: undefined,
    };
    // In slices, yielding between them: a 100,000-message folder must not stall every other user.
    const byUid = f.byUid;
    const dir = f.dir;
    for (let after = 0; ; ) {
      const rows = this.#db.messageTuples(f.id, after, LOAD_SLICE);
      for (let i = 0; i < rows.length; i++) {
        const e = entryOfRow(dir, rows[i]);
        byUid.set(e.rec.uid, e);
      }
      if (rows.length < LOAD_SLICE) break;
      after = rows[rows.length - 1][0];
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    this.#folders.set(folder, f);
    return f;
  }

  /**
   * Seconds since the epoch, but always above the last one handed out for this user, which is
   * also kept beside the index so a rebuilt index never repeats a UIDVALIDITY a client has seen.
   */
  async #nextUidValidity(): Promise<number> {
    const file = path.join(this.dir, UIDVALIDITY_FILE);
    const fromFile = Number.parseInt(await fsp.readFile(file, 'utf8').catch(() => '0'), 10) || 0;
    const fromDb = Number(this.#db.getMeta('last_uidvalidity') ?? 0);
    let next = Math.max(Math.floor(Date.now() / 1000), Math.max(fromFile, fromDb) + 1);
    if (next > 0xffffffff) next = 1; // RFC 3501 nz-number: 32 bits; good until 2106
    const tmp = `${file}.${randomBytes(4).toString('hex')}`;
    try {
      await fsp.writeFile(tmp, `${next}\n`, { mode: 0o600 });
      await fsp.rename(tmp, file);
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw ioError('cannot record UIDVALIDITY', err);
    }
    this.#db.setMeta('last_uidvalidity', String(next));
    return next;
  }

  // --- internals: entries ---

  #entry(f: Folder, uid: number, name: string, inNew: boolean, size: number, vsize: number | null, internalDate: number, modseq: number, letters: string, keywords: string[]): Entry {
    const key = parseMaildirName(name).key;
    const rec = new StoredRecord(f.dir, name, inNew, uid, modseq, size, vsize, flagsFor(letters, keywords), internalDate, key);
    return { rec, name, inNew, letters, keywords };
  }

  /** The folder's entries by Maildir key, built on first need: a SELECT after a restart whose directories did not change never needs them. */
  #keys(f: Folder): Map<string, Entry> {
    if (f.byKey === undefined) {
      const byKey = new Map<string, Entry>();
      for (const e of f.byUid.values()) byKey.set(e.rec.key, e);
      f.byKey = byKey;
    }
    return f.byKey;
  }

  #put(f: Folder, e: Entry): void {
    f.byUid.set(e.rec.uid, e);
    f.byKey?.set(e.rec.key, e);
    f.snapshot = undefined;
  }

  #drop(f: Folder, e: Entry): void {
    f.byUid.delete(e.rec.uid);
    if (f.byKey !== undefined && f.byKey.get(e.rec.key) === e) f.byKey.delete(e.rec.key);
    f.snapshot = undefined;
  }

  /** The records in UID order; replaced, never changed, when the folder changes. */
  #snapshot(f: Folder): MessageRecord[] {
    f.snapshot ??= Array.from(f.byUid.values(), (e) => e.rec);
    return f.snapshot;
  }

  #state(f: Folder): FolderState {
    // A copy of the array: the caller may change it.
    return { uidValidity: f.uidValidity, uidNext: f.uidNext, highestModseq: f.highestModseq, messages: this.#snapshot(f).slice() };
  }

  async #openFile(folder: string, uid: number): Promise<number | null> {
    this.#checkOpen();
    const name = canonical(folder);
    for (let attempt = 0; attempt < 2; attempt++) {
      const f = this.#folders.get(name);
      const e = f?.byUid.get(uid);
      if (e) {
        try {
          return await new Promise<number>((resolve, reject) => fs.open(e.rec.path, 'r', (err, fd) => (err ? reject(err) : resolve(fd))));
        } catch (err) {
          if (errCode(err) !== 'ENOENT') throw ioError(`cannot open message ${uid}`, err);
        }
      } else if (f && attempt > 0) {
        return null;
      }
      if (attempt === 0) {
        // Renamed by another program (a flag change), or not synced yet: catch up and look again.
        try {
          await this.sync(name);
        } catch (err) {
          if (err instanceof StoreError && err.code === 'STORE_NO_FOLDER') return null;
          throw err;
        }
      }
    }
    return null;
  }

  // --- internals: the scan ---

  async #scan(f: Folder): Promise<void> {
    const started = Date.now();
    const [stNew, stCur] = await Promise.all([statFile(path.join(f.dir, 'new')), statFile(path.join(f.dir, 'cur'))]).catch((err: unknown) => {
      throw ioError(`cannot scan ${f.name}`, err);
    });
    if (stNew === undefined || stCur === undefined) {
      if (f.name !== 'INBOX') {
        this.#forget(f.name);
        throw new StoreError('STORE_NO_FOLDER', `folder ${JSON.stringify(f.name)} vanished`);
      }
      this.#maildir.forgetMaildir(this.box);
      await this.#maildir.ensureMaildir(this.box);
      return this.#scan(f);
    }
    if (f.newMtime >= 0 && stNew.mtimeMs === f.newMtime && stCur.mtimeMs === f.curMtime) return;

    // new/ before cur/: a file moving new/ -> cur/ meanwhile is then seen twice, never missed.
    let listing = await this.#list(f);
    const byKey = this.#keys(f);
    let gone = [...byKey.keys()].filter((k) => !listing.has(k));
    if (gone.length > 0) {
      // readdir is not atomic against renames in the same directory (mutt changing flags): look
      // again before calling anything expunged; present in either listing means present.
      const second = await this.#list(f);
      for (const [k, v] of listing) if (!second.has(k)) second.set(k, v);
      listing = second;
      gone = gone.filter((k) => !listing.has(k));
    }

    const renamed: Array<{ e: Entry; file: Listed; flagsChanged: boolean }> = [];
    const fresh: Listed[] = [];
    for (const [key, file] of listing) {
      const e = byKey.get(key);
      if (e === undefined) fresh.push(file);
      else if (e.name !== file.name || e.inNew !== file.inNew) {
        renamed.push({ e, file, flagsChanged: visibleLetters(parseMaildirName(file.name).letters) !== visibleLetters(e.letters) });
      }
    }

    // New files: size and internal date from stat; one that vanished meanwhile is skipped.
    fresh.sort((a, b) => compareDeliveryOrder(a.name, b.name));
    const stats: Array<fs.Stats | undefined> = new Array(fresh.length);
    for (let i = 0; i < fresh.length; i += STAT_BATCH) {
      const batch = fresh.slice(i, i + STAT_BATCH);
      const got = await Promise.all(batch.map((file) => statFile(path.join(f.dir, file.inNew ? 'new' : 'cur', file.name)))).catch((err: unknown) => {
        throw ioError(`cannot scan ${f.name}`, err);
      });
      for (let j = 0; j < got.length; j++) stats[i + j] = got[j];
    }

    // A file another program wrote without W= (often with bare LF line ends) is read once here,
    // so LIST/STAT and RFC822.SIZE give the octets RETR/FETCH send (CRLF), not the file's size.
    const vsizes: Array<number | null> = fresh.map((file, i) => {
      const st = stats[i];
      return st === undefined ? null : vsizeFromName(file.name, st.size);
    });
    const unsized = fresh.flatMap((file, i) => (stats[i]?.isFile() && vsizes[i] === null ? [i] : []));
    for (let b = 0; b < unsized.length; b += VSIZE_BATCH) {
      await Promise.all(
        unsized.slice(b, b + VSIZE_BATCH).map(async (i) => {
          const counted = await crlfSizeOfFile(path.join(f.dir, fresh[i].inNew ? 'new' : 'cur', fresh[i].name)).catch(() => undefined);
          // Gone since the listing (deleted, or renamed by a flag change): skipped like a file
          // whose stat found nothing, so the next scan sizes it under its new name. An unreadable
          // one is indexed with its size unknown, as before.
          if (counted === null) stats[i] = undefined;
          else vsizes[i] = counted ?? null;
        }),
      );
    }

    const anyChange = gone.length > 0 || fresh.length > 0 || renamed.some((r) => r.flagsChanged);
    const modseq = anyChange ? f.highestModseq + 1 : f.highestModseq;
    let uidNext = f.uidNext;
    const added: Entry[] = [];
    for (let i = 0; i < fresh.length; i++) {
      const st = stats[i];
      if (st === undefined || !st.isFile()) continue;
      const file = fresh[i];
      added.push(this.#entry(f, uidNext++, file.name, file.inNew, st.size, vsizes[i], Math.floor(st.mtimeMs), modseq, parseMaildirName(file.name).letters, []));
    }
    const updated = renamed.map(({ e, file, flagsChanged }) =>
      this.#entry(f, e.rec.uid, file.name, file.inNew, e.rec.size, e.rec.vsize, e.rec.internalDate, flagsChanged ? modseq : e.rec.modseq, parseMaildirName(file.name).letters, e.keywords),
    );
    const goneEntries = gone.map((k) => byKey.get(k)!);
    // Trust the directory mtimes for the next skip only if they are older than this scan's start
    // by more than a timestamp tick; otherwise a change in the same tick could go unseen.
    const trusted = Math.max(stNew.mtimeMs, stCur.mtimeMs) < started - MTIME_TRUST_MS;
    const newMtime = trusted ? stNew.mtimeMs : -1;
    const curMtime = trusted ? stCur.mtimeMs : -1;

    this.#db.transaction(() => {
      for (const e of goneEntries) this.#db.expungeMessage(f.id, e.rec.uid, modseq);
      for (const e of updated) this.#db.updateMessage(f.id, e.rec.uid, e.name, e.inNew, e.rec.modseq, e.keywords.join(' '));
      for (const e of added) this.#db.insertMessage(f.id, rowOf(e));
      if (uidNext !== f.uidNext || modseq !== f.highestModseq) this.#db.setCounters(f.id, uidNext, modseq);
      if (newMtime !== f.newMtime || curMtime !== f.curMtime) this.#db.setMtimes(f.id, newMtime, curMtime);
    });

    for (const e of goneEntries) this.#drop(f, e);
    for (const e of updated) this.#put(f, e);
    for (const e of added) this.#put(f, e);
    f.uidNext = uidNext;
    f.highestModseq = modseq;
    f.newMtime = newMtime;
    f.curMtime = curMtime;

    if (goneEntries.length > 0 || added.length > 0 || updated.length > 0) {
      this.#log.debug({ folder: f.name, added: added.length, expunged: goneEntries.length, renamed: updated.length }, 'folder synced');
    }
    if (goneEntries.length > 0) this.#emit({ kind: 'expunged', folder: f.name, uids: goneEntries.map((e) => e.rec.uid).sort((a, b) => a - b) });
    const flagged = updated.filter((_, i) => renamed[i].flagsChanged).map((e) => e.rec);
    if (flagged.length > 0) this.#emit({ kind: 'flags', folder: f.name, records: flagged });
    if (added.length > 0) this.#emit({ kind: 'added', folder: f.name, records: added.map((e) => e.rec) });
  }

  /** new/ then cur/; a base name found in both counts as the cur/ one. Dot files are not mail. */
  async #list(f: Folder): Promise<Map<string, Listed>> {
    const out = new Map<string, Listed>();
    for (const sub of ['new', 'cur'] as const) {
      let names: string[];
      try {
        names = await fsp.readdir(path.join(f.dir, sub));
      } catch (err) {
        if (errCode(err) === 'ENOENT') continue;
        throw ioError(`cannot scan ${f.name}`, err);
      }
      const inNew = sub === 'new';
      for (const name of names) {
        if (name.charCodeAt(0) === 46 /* . */) continue;
        out.set(parseMaildirName(name).key, { name, inNew });
      }
    }
    return out;
  }

  // --- internals: changes ---

  async #applyFlags(
    f: Folder,
    uids: number[],
    mode: FlagMode,
    wanted: { letters: string; keywords: string[] },
    unchangedSince: number | undefined,
  ): Promise<{ changed: MessageRecord[]; failed: number[]; vanished: number[] }> {
    const failed: number[] = [];
    const plans: Array<{ e: Entry; name: string; letters: string; keywords: string[]; rename: boolean }> = [];
    for (const uid of uids) {
      const e = f.byUid.get(uid);
      if (e === undefined) continue;
      // RFC 7162 3.2: a message changed since the client's MODSEQ is not touched.
      if (unchangedSince !== undefined && e.rec.modseq > unchangedSince) {
        failed.push(uid);
        continue;
      }
      const visible = applyLetters(e.letters, mode, wanted.letters);
      const keywords = applyKeywords(e.keywords, mode, wanted.keywords);
      if (visible === visibleLetters(e.letters) && sameKeywords(keywords, e.keywords)) continue;
      const letters = withVisibleLetters(e.letters, visible);
      const rename = letters !== e.letters || (e.inNew && visible !== visibleLetters(e.letters));
      const name = rename ? `${e.rec.key}:2,${letters}` : e.name;
      plans.push({ e, name, letters, keywords, rename });
    }
    if (plans.length === 0) return { changed: [], failed, vanished: [] };

    const vanished: number[] = [];
    const done: typeof plans = [];
    const dirs = new Set<string>();
    let failure: unknown;
    await Promise.all(
      plans.map(async (p) => {
        if (!p.rename) {
          done.push(p);
          return;
        }
        const dest = path.join(f.dir, 'cur', p.name);
        try {
          await fsp.rename(p.e.rec.path, dest);
        } catch (err) {
          if (errCode(err) === 'ENOENT') vanished.push(p.e.rec.uid);
          else failure ??= err;
          return;
        }
        dirs.add(path.join(f.dir, 'cur'));
        if (p.e.inNew) dirs.add(path.join(f.dir, 'new'));
        done.push(p);
      }),
    );
    // A rename is atomic; syncing the directories makes it durable before we say it happened.
    await Promise.all([...dirs].map((d) => this.#maildir.syncDirectory(d)));
    const changed: Entry[] = [];
    if (done.length > 0) {
      const modseq = f.highestModseq + 1;
      done.sort((a, b) => a.e.rec.uid - b.e.rec.uid);
      for (const p of done) {
        const inNew = p.rename ? false : p.e.inNew;
        changed.push(this.#entry(f, p.e.rec.uid, p.name, inNew, p.e.rec.size, p.e.rec.vsize, p.e.rec.internalDate, modseq, p.letters, p.keywords));
      }
      this.#db.transaction(() => {
        for (const e of changed) this.#db.updateMessage(f.id, e.rec.uid, e.name, e.inNew, modseq, e.keywords.join(' '));
        this.#db.setCounters(f.id, f.uidNext, modseq);
      });
      f.highestModseq = modseq;
      for (const e of changed) this.#put(f, e);
      this.#emit({ kind: 'flags', folder: f.name, records: changed.map((e) => e.rec) });
    }
    if (failure !== undefined) throw ioError(`cannot change flags in ${f.name}`, failure);
    return { changed: changed.map((e) => e.rec), failed, vanished: vanished.sort((a, b) => a - b) };
  }

  /** Record entries as expunged at a new MODSEQ, in the database and in memory; emit. */
  #commitExpunge(f: Folder, entries: Entry[]): number[] {
    if (entries.length === 0) return [];
    const modseq = f.highestModseq + 1;
    this.#db.transaction(() => {
      for (const e of entries) this.#db.expungeMessage(f.id, e.rec.uid, modseq);
      this.#db.setCounters(f.id, f.uidNext, modseq);
    });
    f.highestModseq = modseq;
    for (const e of entries) this.#drop(f, e);
    const uids = entries.map((e) => e.rec.uid).sort((a, b) => a - b);
    this.#emit({ kind: 'expunged', folder: f.name, uids });
    return uids;
  }

  #moveLocked(src: Folder, uids: number[], dst: Folder): Promise<UidMap> {
    return this.#transfer(src, uids, dst, 'move');
  }

  /**
   * Copy (hard link) or move (rename) messages into `dst` under fresh base names, then give them
   * UIDs there in source UID order. A message that vanished meanwhile is skipped. On an I/O fault
   * a copy undoes its links; a move keeps what was moved (each rename is whole) and then throws.
   */
  async #transfer(src: Folder, uids: number[], dst: Folder, how: 'copy' | 'move'): Promise<UidMap> {
    const entries = uids.map((u) => src.byUid.get(u)).filter((e): e is Entry => e !== undefined);
    if (entries.length === 0) return [];
    const planned = entries.map((e) => {
      // The size fields travel with the content, so the copy needs no parse either.
      const base = `${this.#maildir.newBaseName()}${sizeFields(e.rec.size, e.rec.vsize)}`;
      const name = e.inNew ? base : `${base}:2,${e.letters}`;
      return { e, name, dest: path.join(dst.dir, e.inNew ? 'new' : 'cur', name), ok: false };
    });
    let failure: unknown;
    await Promise.all(
      planned.map(async (p) => {
        try {
          if (how === 'copy') await fsp.link(p.e.rec.path, p.dest);
          else await fsp.rename(p.e.rec.path, p.dest);
          p.ok = true;
        } catch (err) {
          if (errCode(err) !== 'ENOENT') failure ??= err;
        }
      }),
    );
    if (failure !== undefined && how === 'copy') {
      await Promise.all(planned.filter((p) => p.ok).map((p) => fsp.unlink(p.dest).catch(noop)));
      throw ioError(`cannot copy into ${dst.name}`, failure);
    }
    const moved = planned.filter((p) => p.ok);
    const dirs = new Set(moved.map((p) => path.dirname(p.dest)));
    if (how === 'move') for (const p of moved) dirs.add(path.dirname(p.e.rec.path));
    await Promise.all([...dirs].map((d) => this.#maildir.syncDirectory(d)));

    if (how === 'move') this.#commitExpunge(src, moved.map((p) => p.e));
    const modseq = dst.highestModseq + 1;
    let uidNext = dst.uidNext;
    const added = moved.map((p) =>
      this.#entry(dst, uidNext++, p.name, p.e.inNew, p.e.rec.size, p.e.rec.vsize, p.e.rec.internalDate, modseq, p.e.letters, p.e.keywords),
    );
    if (added.length > 0) {
      this.#db.transaction(() => {
        for (const e of added) this.#db.insertMessage(dst.id, rowOf(e));
        this.#db.setCounters(dst.id, uidNext, modseq);
      });
      dst.uidNext = uidNext;
      dst.highestModseq = modseq;
      for (const e of added) this.#put(dst, e);
      this.#emit({ kind: 'added', folder: dst.name, records: added.map((e) => e.rec), from: { folder: src.name, how } });
    }
    if (failure !== undefined) throw ioError(`cannot move into ${dst.name}`, failure);
    return moved.map((p, i) => ({ from: p.e.rec.uid, to: added[i].rec.uid }));
  }
}

function canonical(folder: string): string {
  if (typeof folder === 'string' && isInbox(folder)) return 'INBOX';
  assertSafeName('folder', folder);
  return folder;
}

/** An index row as the folder's entry; the one way rows become records (loads and peeks agree). */
function entryOfRow(dir: string, row: MessageTuple): Entry {
  const [uid, name, inNew, size, internalDate, modseq, keywords, storedVsize] = row;
  // The Maildir name parsed once: the key before `:`, the letters after `:2,`.
  const colon = name.indexOf(':');
  const key = colon < 0 ? name : name.slice(0, colon);
  const letters = colon >= 0 && name.startsWith('2,', colon + 1) ? name.slice(colon + 3) : '';
  // Rows from before the vsize column have it null: the name still has it (if anyone wrote it).
  const vsize = storedVsize ?? vsizeFromName(name, size);
  const kw = keywords === '' ? NO_KEYWORDS : keywords.split(' ');
  const rec = new StoredRecord(dir, name, inNew === 1, uid, modseq, size, vsize, flagsFor(letters, kw), internalDate, key);
  return { rec, name, inNew: inNew === 1, letters, keywords: kw };
}

function rowOf(e: Entry): MessageRow {
  return {
    uid: e.rec.uid,
    name: e.name,
    in_new: e.inNew ? 1 : 0,
    size: e.rec.size,
    internal_date: e.rec.internalDate,
    modseq: e.rec.modseq,
    keywords: e.keywords.join(' '),
    vsize: e.rec.vsize,
  };
}

