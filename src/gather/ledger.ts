// The gather ledger is in charge of remembering what was collected from remote accounts, so a
// message is delivered here exactly once whatever happens: one node:sqlite file
// (`<data>/gather/ledger.sqlite`, WAL, synchronous=FULL when fsync is on) shared by every account.
//
// Exactly-once works in three steps per batch (see pull.ts):
//   1. `beginIntent` records, durably, the remote ids about to be delivered and when;
//   2. each message is delivered locally with an `X-Hearth-Gathered` tag naming its remote id;
//   3. `complete` records what was delivered (and removes the intent) in one transaction.
// A crash between 1 and 3 leaves an intent behind; before the next pull, recovery looks in the
// target folder for tagged messages delivered since the intent began and records them, so they
// are not fetched again. Remote deletes (move mode) only ever concern rows recorded by step 3.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { StatementSync } from 'node:sqlite';

export const LEDGER_FILE = 'ledger.sqlite';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS folders (
  account TEXT NOT NULL,
  folder TEXT NOT NULL,
  uidvalidity INTEGER NOT NULL,
  /** Every remote UID at or below this that existed when last listed has a row in collected. */
  synced_uid INTEGER NOT NULL DEFAULT 0,
  /** CONDSTORE HIGHESTMODSEQ at the last flag mirror (text: it is a 63-bit number). */
  modseq TEXT NOT NULL DEFAULT '0',
  PRIMARY KEY (account, folder)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS collected (
  account TEXT NOT NULL,
  folder TEXT NOT NULL,
  uidvalidity INTEGER NOT NULL,
  /** IMAP: the UID as text; POP3: the UIDL. */
  rid TEXT NOT NULL,
  msgid TEXT,
  local_folder TEXT,
  /** The local Maildir key; NULL when the message was skipped (see note). */
  local_key TEXT,
  /** Flags both sides agreed on at the last mirror (space-separated IMAP names). */
  flags TEXT NOT NULL DEFAULT '',
  /** 1 once the remote copy was deleted (move mode). */
  deleted INTEGER NOT NULL DEFAULT 0,
  note TEXT,
  at INTEGER NOT NULL,
  PRIMARY KEY (account, folder, uidvalidity, rid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS collected_msgid ON collected (account, folder, msgid);
CREATE TABLE IF NOT EXISTS intents (
  id INTEGER PRIMARY KEY,
  account TEXT NOT NULL,
  folder TEXT NOT NULL,
  uidvalidity INTEGER NOT NULL,
  local_folder TEXT NOT NULL,
  rids TEXT NOT NULL,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS status (account TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
`;

export type FolderRow = { uidvalidity: number; synced_uid: number; modseq: string };
export type Intent = { id: number; account: string; folder: string; uidvalidity: number; localFolder: string; rids: string[]; at: number };
export type CollectedItem = { rid: string; msgid?: string | null; localKey: string | null; localFolder?: string; flags?: string[]; note?: string };
export type CollectedRow = { rid: string; msgid: string | null; local_folder: string | null; local_key: string | null; flags: string; deleted: number };

/** What `gather status` shows; kept in the ledger so it is there after a restart and offline. */
export type AccountStatus = {
  lastRunAt?: number;
  lastOkAt?: number;
  lastCollected?: number;
  totalCollected?: number;
  lastError?: string;
  lastErrorCode?: string;
  /** Set after a refused password: no more runs until the password changes or `gather run`. */
  stopped?: boolean;
  consecutiveFailures?: number;
  nextRunAt?: number;
  running?: boolean;
  progress?: { folder: string; done: number; total: number };
};

export class GatherLedger {
  readonly file: string;
  readonly #db: DatabaseSync;
  readonly #s: Record<string, StatementSync>;
  #closed = false;

  constructor(file: string, opts: { durable: boolean }) {
    this.file = file;
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const db = new DatabaseSync(file);
    this.#db = db;
    db.exec('PRAGMA busy_timeout = 5000');
    db.exec('PRAGMA journal_mode = WAL');
    // The ledger is what stops a second delivery: a committed row must survive a power cut.
    db.exec(`PRAGMA synchronous = ${opts.durable ? 'FULL' : 'NORMAL'}`);
    db.exec(SCHEMA);
    const p = (sql: string): StatementSync => db.prepare(sql);
    this.#s = {
      folderGet: p('SELECT uidvalidity, synced_uid, modseq FROM folders WHERE account = ? AND folder = ?'),
      folderPut: p(
        'INSERT INTO folders (account, folder, uidvalidity, synced_uid, modseq) VALUES (?, ?, ?, ?, ?) ON CONFLICT (account, folder) DO UPDATE SET uidvalidity = excluded.uidvalidity, synced_uid = excluded.synced_uid, modseq = excluded.modseq',
      ),
      folderSynced: p('UPDATE folders SET synced_uid = max(synced_uid, ?) WHERE account = ? AND folder = ?'),
      folderModseq: p('UPDATE folders SET modseq = ? WHERE account = ? AND folder = ?'),
      has: p('SELECT 1 AS x FROM collected WHERE account = ? AND folder = ? AND uidvalidity = ? AND rid = ?'),
      get: p('SELECT rid, msgid, local_folder, local_key, flags, deleted FROM collected WHERE account = ? AND folder = ? AND uidvalidity = ? AND rid = ?'),
      insert: p(
        'INSERT OR IGNORE INTO collected (account, folder, uidvalidity, rid, msgid, local_folder, local_key, flags, note, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      byMsgid: p('SELECT rid, msgid, local_folder, local_key, flags, deleted FROM collected WHERE account = ? AND folder = ? AND msgid = ? AND uidvalidity <> ? LIMIT 1'),
      dropOtherEpochs: p('DELETE FROM collected WHERE account = ? AND folder = ? AND uidvalidity <> ?'),
      undeleted: p('SELECT rid FROM collected WHERE account = ? AND folder = ? AND uidvalidity = ? AND deleted = 0'),
      rids: p('SELECT rid FROM collected WHERE account = ? AND folder = ? AND uidvalidity = ?'),
      markDeleted: p('UPDATE collected SET deleted = 1 WHERE account = ? AND folder = ? AND uidvalidity = ? AND rid = ?'),
      forget: p('DELETE FROM collected WHERE account = ? AND folder = ? AND uidvalidity = ? AND rid = ?'),
      setFlags: p('UPDATE collected SET flags = ? WHERE account = ? AND folder = ? AND uidvalidity = ? AND rid = ?'),
      mirrored: p('SELECT rid, msgid, local_folder, local_key, flags, deleted FROM collected WHERE account = ? AND folder = ? AND uidvalidity = ? AND local_key IS NOT NULL AND deleted = 0'),
      count: p('SELECT count(*) AS n FROM collected WHERE account = ?'),
      intentInsert: p('INSERT INTO intents (account, folder, uidvalidity, local_folder, rids, at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id'),
      intentDelete: p('DELETE FROM intents WHERE id = ?'),
      intents: p('SELECT id, account, folder, uidvalidity, local_folder, rids, at FROM intents WHERE account = ? ORDER BY id'),
      statusGet: p('SELECT data FROM status WHERE account = ?'),
      statusPut: p('INSERT INTO status (account, data) VALUES (?, ?) ON CONFLICT (account) DO UPDATE SET data = excluded.data'),
      forgetAccount1: p('DELETE FROM collected WHERE account = ?'),
      forgetAccount2: p('DELETE FROM folders WHERE account = ?'),
      forgetAccount3: p('DELETE FROM intents WHERE account = ?'),
      forgetAccount4: p('DELETE FROM status WHERE account = ?'),
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#db.close();
  }

  transaction<T>(fn: () => T): T {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const result = fn();
      this.#db.exec('COMMIT');
      return result;
    } catch (err) {
      this.#db.exec('ROLLBACK');
      throw err;
    }
  }

  folder(account: string, folder: string): FolderRow | undefined {
    return this.#s.folderGet.get(account, folder) as FolderRow | undefined;
  }

  /** Start (or restart, after a UIDVALIDITY change) the record of one remote folder. */
  setFolder(account: string, folder: string, row: FolderRow): void {
    this.#s.folderPut.run(account, folder, row.uidvalidity, row.synced_uid, row.modseq);
  }

  advanceSynced(account: string, folder: string, uid: number): void {
    this.#s.folderSynced.run(uid, account, folder);
  }

  setModseq(account: string, folder: string, modseq: string): void {
    this.#s.folderModseq.run(modseq, account, folder);
  }

  has(account: string, folder: string, uidvalidity: number, rid: string): boolean {
    return this.#s.has.get(account, folder, uidvalidity, rid) !== undefined;
  }

  get(account: string, folder: string, uidvalidity: number, rid: string): CollectedRow | undefined {
    return this.#s.get.get(account, folder, uidvalidity, rid) as CollectedRow | undefined;
  }

  /** A row collected under an earlier UIDVALIDITY with this Message-ID (re-sync without duplicates). */
  findByMsgid(account: string, folder: string, msgid: string, notUidvalidity: number): CollectedRow | undefined {
    return this.#s.byMsgid.get(account, folder, msgid, notUidvalidity) as CollectedRow | undefined;
  }

  dropOtherEpochs(account: string, folder: string, uidvalidity: number): void {
    this.#s.dropOtherEpochs.run(account, folder, uidvalidity);
  }

  /** Record delivered (or deliberately skipped) messages. Idempotent per remote id. */
  record(account: string, folder: string, uidvalidity: number, localFolder: string, items: readonly CollectedItem[], at = Date.now()): void {
    for (const it of items) {
      this.#s.insert.run(account, folder, uidvalidity, it.rid, it.msgid ?? null, it.localKey === null ? null : (it.localFolder ?? localFolder), it.localKey, (it.flags ?? []).join(' '), it.note ?? null, at);
    }
  }

  /** Remote ids collected but not yet deleted remotely (move mode). */
  undeleted(account: string, folder: string, uidvalidity: number): string[] {
    return (this.#s.undeleted.all(account, folder, uidvalidity) as Array<{ rid: string }>).map((r) => r.rid);
  }

  /** Every remote id recorded for the folder. */
  rids(account: string, folder: string, uidvalidity: number): string[] {
    return (this.#s.rids.all(account, folder, uidvalidity) as Array<{ rid: string }>).map((r) => r.rid);
  }

  markDeleted(account: string, folder: string, uidvalidity: number, rids: readonly string[]): void {
    this.transaction(() => {
      for (const rid of rids) this.#s.markDeleted.run(account, folder, uidvalidity, rid);
    });
  }

  /** Rows no longer on the server (POP3 UIDLs that disappeared): the set must not grow forever. */
  forget(account: string, folder: string, uidvalidity: number, rids: readonly string[]): void {
    this.transaction(() => {
      for (const rid of rids) this.#s.forget.run(account, folder, uidvalidity, rid);
    });
  }

  setFlags(account: string, folder: string, uidvalidity: number, rid: string, flags: readonly string[]): void {
    this.#s.setFlags.run([...flags].sort().join(' '), account, folder, uidvalidity, rid);
  }

  /** Rows whose flags are mirrored, streamed (a large folder is not loaded at once). */
  *mirrored(account: string, folder: string, uidvalidity: number): Generator<CollectedRow> {
    for (const row of this.#s.mirrored.iterate(account, folder, uidvalidity)) yield row as CollectedRow;
  }

  count(account: string): number {
    return (this.#s.count.get(account) as { n: number }).n;
  }

  beginIntent(account: string, folder: string, uidvalidity: number, localFolder: string, rids: readonly string[], at = Date.now()): number {
    const row = this.#s.intentInsert.get(account, folder, uidvalidity, localFolder, JSON.stringify(rids), at) as { id: number };
    return row.id;
  }

  /** Record the batch and close its intent in one commit. */
  complete(intentId: number, account: string, folder: string, uidvalidity: number, localFolder: string, items: readonly CollectedItem[]): void {
    this.transaction(() => {
      this.record(account, folder, uidvalidity, localFolder, items);
      this.#s.intentDelete.run(intentId);
    });
  }

  dropIntent(id: number): void {
    this.#s.intentDelete.run(id);
  }

  intents(account: string): Intent[] {
    return (this.#s.intents.all(account) as Array<{ id: number; account: string; folder: string; uidvalidity: number; local_folder: string; rids: string; at: number }>).map((r) => ({
      id: r.id,
      account: r.account,
      folder: r.folder,
      uidvalidity: r.uidvalidity,
      localFolder: r.local_folder,
      rids: JSON.parse(r.rids) as string[],
      at: r.at,
    }));
  }

  status(account: string): AccountStatus {
    const row = this.#s.statusGet.get(account) as { data: string } | undefined;
    return row ? (JSON.parse(row.data) as AccountStatus) : {};
  }

  setStatus(account: string, status: AccountStatus): void {
    const { running: _r, progress: _p, ...kept } = status;
    this.#s.statusPut.run(account, JSON.stringify(kept));
  }

  forgetAccount(account: string): void {
    this.transaction(() => {
      this.#s.forgetAccount1.run(account);
      this.#s.forgetAccount2.run(account);
      this.#s.forgetAccount3.run(account);
      this.#s.forgetAccount4.run(account);
    });
  }
}
