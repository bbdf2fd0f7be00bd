// The per-user mailbox index on disk: one node:sqlite file (WAL) beside the Maildir, holding what
// the protocols need fast and cannot read from file names: UIDVALIDITY, UIDs, MODSEQs, keywords,
// internal dates, expunged UIDs (for QRESYNC) and subscriptions. Every call is synchronous; the
// caller batches writes in `transaction()`. Only mailboxes.ts uses this; the Maildir stays the
// truth, and deleting this file only costs a rebuild (with new UIDVALIDITYs).
import { DatabaseSync } from 'node:sqlite';
import type { StatementSync } from 'node:sqlite';
import { Transactions, prepareOrClose } from './sqlite.ts';

export const INDEX_FILE = 'hearth-index.sqlite';
const SCHEMA_VERSION = 1;

export type FolderRow = {
  id: number;
  name: string;
  uidvalidity: number;
  uidnext: number;
  highestmodseq: number;
  /** Directory mtimes (ms) at the last scan, or -1 when they were too recent to trust. */
  new_mtime: number;
  cur_mtime: number;
};

/** A message row as an array: uid, name, in_new, size, internal_date, modseq, keywords, vsize. */
export type MessageTuple = [uid: number, name: string, inNew: number, size: number, internalDate: number, modseq: number, keywords: string, vsize: number | null];

function tuples(st: StatementSync): StatementSync {
  st.setReturnArrays(true);
  return st;
}

export type MessageRow = {
  uid: number;
  name: string;
  in_new: number;
  size: number;
  internal_date: number;
  modseq: number;
  /** Space-separated (keywords are IMAP atoms and have no spaces). */
  keywords: string;
  /** Size with CRLF line ends (the name's W=), or null when unknown. */
  vsize: number | null;
};

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS folders (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  uidvalidity INTEGER NOT NULL,
  uidnext INTEGER NOT NULL,
  highestmodseq INTEGER NOT NULL,
  new_mtime REAL NOT NULL DEFAULT -1,
  cur_mtime REAL NOT NULL DEFAULT -1
);
CREATE TABLE IF NOT EXISTS messages (
  folder_id INTEGER NOT NULL,
  uid INTEGER NOT NULL,
  name TEXT NOT NULL,
  in_new INTEGER NOT NULL,
  size INTEGER NOT NULL,
  internal_date INTEGER NOT NULL,
  modseq INTEGER NOT NULL,
  keywords TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (folder_id, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS expunged (
  folder_id INTEGER NOT NULL,
  uid INTEGER NOT NULL,
  modseq INTEGER NOT NULL,
  PRIMARY KEY (folder_id, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions (name TEXT PRIMARY KEY) WITHOUT ROWID;
`;

/**
 * Added after version 1 without a version bump, so it is created on every open: an older index
 * simply gains the table. Opaque text per message that a protocol derives from the file once
 * (a parsed summary); `msg_key` is the Maildir base name it was computed from, checked on read.
 */
const SUMMARY_SCHEMA = `
CREATE TABLE IF NOT EXISTS summaries (
  folder_id INTEGER NOT NULL,
  uid INTEGER NOT NULL,
  msg_key TEXT NOT NULL,
  data TEXT NOT NULL,
  PRIMARY KEY (folder_id, uid)
) WITHOUT ROWID;
`;

/**
 * Columns added after version 1 without a version bump: an older index gains them on open (each
 * nullable, so an older hearth reading or writing the same file is unaffected).
 */
const ADDED_COLUMNS: ReadonlyArray<{ table: string; column: string; decl: string }> = [{ table: 'messages', column: 'vsize', decl: 'INTEGER' }];

export class IndexDb {
  readonly file: string;
  readonly #db: DatabaseSync;
  readonly #s: Record<string, StatementSync>;
  /** True when this open created the schema: the caller is rebuilding from the Maildir. */
  readonly fresh: boolean;
  readonly #tx: Transactions;

  constructor(file: string, opts: { durable: boolean }) {
    this.file = file;
    this.#db = new DatabaseSync(file);
    this.#tx = new Transactions(this.#db);
    const prepared = prepareOrClose(this.#db, (db) => {
      db.exec('PRAGMA busy_timeout = 5000');
      db.exec('PRAGMA journal_mode = WAL');
      // With fsync on, a committed UID map survives a power cut: losing it could hand out a UID twice.
      db.exec(`PRAGMA synchronous = ${opts.durable ? 'FULL' : 'NORMAL'}`);
      const version = (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version;
      if (version !== 0 && version !== SCHEMA_VERSION) throw new Error(`index schema version ${version}, expected ${SCHEMA_VERSION}`);
      const fresh = version === 0;
      if (fresh) {
        db.exec('BEGIN');
        db.exec(SCHEMA);
        db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
        db.exec('COMMIT');
      }
      db.exec(SUMMARY_SCHEMA);
      for (const c of ADDED_COLUMNS) {
        const have = (db.prepare(`PRAGMA table_info(${c.table})`).all() as Array<{ name: string }>).some((r) => r.name === c.column);
        if (!have) db.exec(`ALTER TABLE ${c.table} ADD COLUMN ${c.column} ${c.decl}`);
      }
      const p = (sql: string): StatementSync => db.prepare(sql);
      const statements: Record<string, StatementSync> = {
        metaGet: p('SELECT value FROM meta WHERE key = ?'),
        metaSet: p('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
        folderGet: p('SELECT * FROM folders WHERE name = ?'),
        folderAll: p('SELECT * FROM folders'),
        folderInsert: p('INSERT INTO folders (name, uidvalidity, uidnext, highestmodseq) VALUES (?, ?, 1, 1) RETURNING id'),
        folderCounters: p('UPDATE folders SET uidnext = ?, highestmodseq = ? WHERE id = ?'),
        folderMtimes: p('UPDATE folders SET new_mtime = ?, cur_mtime = ? WHERE id = ?'),
        folderRename: p('UPDATE folders SET name = ? WHERE id = ?'),
        folderDelete: p('DELETE FROM folders WHERE id = ?'),
        msgsDelete: p('DELETE FROM messages WHERE folder_id = ?'),
        expsDelete: p('DELETE FROM expunged WHERE folder_id = ?'),
        msgsLoad: p('SELECT uid, name, in_new, size, internal_date, modseq, keywords, vsize FROM messages WHERE folder_id = ? AND uid > ? ORDER BY uid LIMIT ?'),
        msgsLoadTuples: tuples(p('SELECT uid, name, in_new, size, internal_date, modseq, keywords, vsize FROM messages WHERE folder_id = ? AND uid > ? ORDER BY uid LIMIT ?')),
        // Newest first, for a page read without loading the folder (OFFSET walks the key, so deep pages cost more).
        msgsNewestTuples: tuples(p('SELECT uid, name, in_new, size, internal_date, modseq, keywords, vsize FROM messages WHERE folder_id = ? ORDER BY uid DESC LIMIT ? OFFSET ?')),
        msgsCount: p('SELECT count(*) AS total FROM messages WHERE folder_id = ?'),
        // Seen as the load parses a name: the first ':' starts ':2,' and an 'S' follows it. The GLOB
        // first, as instr() is slow (it counts characters).
        msgsUnseen: p("SELECT count(*) - coalesce(sum(name GLOB '*:2,*S*' AND instr(name, ':') = instr(name, ':2,')), 0) AS unseen FROM messages WHERE folder_id = ?"),
        msgInsert: p('INSERT INTO messages (folder_id, uid, name, in_new, size, internal_date, modseq, keywords, vsize) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)'),
        msgUpdate: p('UPDATE messages SET name = ?, in_new = ?, modseq = ?, keywords = ? WHERE folder_id = ? AND uid = ?'),
        msgDelete: p('DELETE FROM messages WHERE folder_id = ? AND uid = ?'),
        expInsert: p('INSERT OR REPLACE INTO expunged (folder_id, uid, modseq) VALUES (?, ?, ?)'),
        expSince: p('SELECT uid FROM expunged WHERE folder_id = ? AND modseq > ? ORDER BY uid'),
        subAll: p('SELECT name FROM subscriptions ORDER BY name'),
        subAdd: p('INSERT OR IGNORE INTO subscriptions (name) VALUES (?)'),
        subDelete: p('DELETE FROM subscriptions WHERE name = ?'),
        sumGet: p('SELECT msg_key, data FROM summaries WHERE folder_id = ? AND uid = ?'),
        // Only for a message the index still has: a summary never outlives its message's row.
        sumPut: p(
          'INSERT INTO summaries (folder_id, uid, msg_key, data) SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM messages WHERE folder_id = ? AND uid = ?) ' +
            'ON CONFLICT (folder_id, uid) DO UPDATE SET msg_key = excluded.msg_key, data = excluded.data',
        ),
        sumDelete: p('DELETE FROM summaries WHERE folder_id = ? AND uid = ?'),
        sumsDelete: p('DELETE FROM summaries WHERE folder_id = ?'),
      };
      return { fresh, statements };
    });
    this.fresh = prepared.fresh;
    this.#s = prepared.statements;
  }

  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }

  /** Run `fn` in one transaction (nested calls join the outer one). */
  transaction<T>(fn: () => T): T {
    return this.#tx.run(fn);
  }

  getMeta(key: string): string | undefined {
    return (this.#s.metaGet.get(key) as { value: string } | undefined)?.value;
  }
  setMeta(key: string, value: string): void {
    this.#s.metaSet.run(key, value);
  }

  folder(name: string): FolderRow | undefined {
    return this.#s.folderGet.get(name) as FolderRow | undefined;
  }
  folders(): FolderRow[] {
    return this.#s.folderAll.all() as FolderRow[];
  }
  insertFolder(name: string, uidValidity: number): number {
    return (this.#s.folderInsert.get(name, uidValidity) as { id: number }).id;
  }
  setCounters(folderId: number, uidNext: number, highestModseq: number): void {
    this.#s.folderCounters.run(uidNext, highestModseq, folderId);
  }
  setMtimes(folderId: number, newMtime: number, curMtime: number): void {
    this.#s.folderMtimes.run(newMtime, curMtime, folderId);
  }
  renameFolder(folderId: number, name: string): void {
    this.#s.folderRename.run(name, folderId);
  }
  /** Forget every cached summary of a folder (they are computed again on demand). */
  clearSummaries(folderId: number): void {
    this.#s.sumsDelete.run(folderId);
  }

  deleteFolder(folderId: number): void {
    this.transaction(() => {
      this.#s.msgsDelete.run(folderId);
      this.#s.expsDelete.run(folderId);
      this.#s.sumsDelete.run(folderId);
      this.#s.folderDelete.run(folderId);
    });
  }

  /** Up to `limit` messages with UIDs above `afterUid`, in UID order (load in slices, yielding between). */
  messages(folderId: number, afterUid = 0, limit = -1): MessageRow[] {
    return this.#s.msgsLoad.all(folderId, afterUid, limit) as MessageRow[];
  }
  /**
   * `messages` as arrays in MessageTuple order: no object per row, which is most of the cost of
   * reading a 100,000-message folder back after a restart.
   */
  messageTuples(folderId: number, afterUid = 0, limit = -1): MessageTuple[] {
    return this.#s.msgsLoadTuples.all(folderId, afterUid, limit) as unknown as MessageTuple[];
  }
  /** Messages newest (highest UID) first: `limit` of them after skipping `offset`, as MessageTuples. */
  newestMessageTuples(folderId: number, offset: number, limit: number): MessageTuple[] {
    return this.#s.msgsNewestTuples.all(folderId, limit, offset) as unknown as MessageTuple[];
  }
  /** How many messages the folder has (a walk of its rows: some 4 ms for 100,000). */
  messageCount(folderId: number): number {
    return (this.#s.msgsCount.get(folderId) as { total: number }).total;
  }
  /** How many of the folder's messages lack the Seen letter in their name (some 20 ms for 100,000). */
  unseenCount(folderId: number): number {
    return (this.#s.msgsUnseen.get(folderId) as { unseen: number }).unseen;
  }
  /**
   * Run `fn` in a read transaction: its reads see one snapshot, even if another process (a
   * `hearth reindex`) commits meanwhile. Joins a write transaction already open.
   */
  snapshot<T>(fn: () => T): T {
    if (this.#db.isTransaction) return fn();
    this.#db.exec('BEGIN');
    try {
      return fn();
    } finally {
      if (this.#db.isTransaction) this.#db.exec('COMMIT');
    }
  }
  insertMessage(folderId: number, m: MessageRow): void {
    this.#s.msgInsert.run(folderId, m.uid, m.name, m.in_new, m.size, m.internal_date, m.modseq, m.keywords, m.vsize);
  }
  updateMessage(folderId: number, uid: number, name: string, inNew: boolean, modseq: number, keywords: string): void {
    this.#s.msgUpdate.run(name, inNew ? 1 : 0, modseq, keywords, folderId, uid);
  }
  /** Remove a message and remember its UID as expunged at `modseq` (RFC 7162 QRESYNC). */
  expungeMessage(folderId: number, uid: number, modseq: number): void {
    this.#s.msgDelete.run(folderId, uid);
    this.#s.sumDelete.run(folderId, uid);
    this.#s.expInsert.run(folderId, uid, modseq);
  }
  expungedSince(folderId: number, modseq: number): number[] {
    return (this.#s.expSince.all(folderId, modseq) as Array<{ uid: number }>).map((r) => r.uid);
  }

  /** The cached summary text of a message, if one was stored for this same file (`key`). */
  summary(folderId: number, uid: number, key: string): string | undefined {
    const row = this.#s.sumGet.get(folderId, uid) as { msg_key: string; data: string } | undefined;
    return row !== undefined && row.msg_key === key ? row.data : undefined;
  }
  /** Store (or replace) summaries; rows for messages no longer in the index are skipped. */
  putSummaries(folderId: number, items: ReadonlyArray<{ uid: number; key: string; data: string }>): void {
    this.transaction(() => {
      for (const it of items) this.#s.sumPut.run(folderId, it.uid, it.key, it.data, folderId, it.uid);
    });
  }

  subscriptions(): string[] {
    return (this.#s.subAll.all() as Array<{ name: string }>).map((r) => r.name);
  }
  subscribe(name: string): void {
    this.#s.subAdd.run(name);
  }
  unsubscribe(name: string): void {
    this.#s.subDelete.run(name);
  }
}
