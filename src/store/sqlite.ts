// The store's SQLite side files (mailbox index, full-text index, junk filter) open the same
// way: WAL, a busy timeout, a schema stamped with a version; and they batch writes in nested
// transactions. One place for both, so the three files cannot drift apart.
import type { DatabaseSync } from 'node:sqlite';

/**
 * Pragmas for a per-user file that can be rebuilt or re-learned (synchronous NORMAL in WAL mode
 * may lose the last commits on power loss, never corrupt), then the schema: created in a fresh
 * file, refused (throws) when the file carries another version.
 */
export function prepareSideFile(db: DatabaseSync, opts: { what: string; schema: string; version: number }): void {
  db.exec('PRAGMA busy_timeout = 5000');
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('PRAGMA synchronous = NORMAL');
  const version = (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version;
  if (version !== 0 && version !== opts.version) throw new Error(`${opts.what} schema version ${version}, expected ${opts.version}`);
  if (version === 0) {
    db.exec('BEGIN');
    db.exec(opts.schema);
    db.exec(`PRAGMA user_version = ${opts.version}`);
    db.exec('COMMIT');
  }
}

/**
 * `prepare(db)` on a side file just opened (pragmas, schema, statements); when it throws (a
 * foreign or damaged file, another schema version) the file is closed before the error goes on,
 * so a constructor that fails keeps no handle open.
 */
export function prepareOrClose<T>(db: DatabaseSync, prepare: (db: DatabaseSync) => T): T {
  try {
    return prepare(db);
  } catch (err) {
    db.close();
    throw err;
  }
}

/** `run(fn)` runs fn in one IMMEDIATE transaction; nested calls join the outer one. */
export class Transactions {
  readonly #db: DatabaseSync;
  #depth = 0;

  constructor(db: DatabaseSync) {
    this.#db = db;
  }

  run<T>(fn: () => T): T {
    if (this.#depth > 0) return fn();
    this.#db.exec('BEGIN IMMEDIATE');
    this.#depth++;
    try {
      const out = fn();
      this.#db.exec('COMMIT');
      return out;
    } catch (err) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw err;
    } finally {
      this.#depth--;
    }
  }
}
