// The search side of one user's mail: it owns the user's FullTextIndex (the file beside the
// mailbox index, FullTextIndex.pathFor) and keeps it in step with the UserMailboxes it is opened
// with, by listening to its change events: new messages are indexed in the background (one
// coalesced catch-up per folder at a time), expunged ones are forgotten at once, a deleted
// folder is dropped and a renamed one keeps its documents. MailStore opens one per user next to
// the UserMailboxes and closes it first. The protocols only call the functions exported here:
// `userSearch` for IMAP SEARCH's prefilter, `indexFolderSoon` when a folder is selected, and
// `searchFolder` (for the webmail) to find messages by text.
//
// The index is a prefilter and may lag: a message it does not hold yet is always a candidate,
// so an answer is never missing a message because indexing is behind.
import { errText } from '../core/errors.ts';
import { named } from '../core/log.ts';
import type { Logger } from '../core/log.ts';
import { FullTextIndex, bodyTextFromRawSync, foldText, headersFromRaw } from './fulltext.ts';
import type { FullTextField } from './fulltext.ts';
import type { ChangeEvent, UserMailboxes } from './mailboxes.ts';
import { StoreError } from './names.ts';

/** Messages indexed per transaction (and between yields to the event loop) while catching up. */
const CATCH_UP_BATCH = 20;


/** Set while a UserSearch is open, so callers holding only the UserMailboxes can find it. */
const registry = new WeakMap<UserMailboxes, UserSearch>();

/** The user's search index, if MailStore opened one for these mailboxes. */
export function userSearch(mailboxes: UserMailboxes): UserSearch | undefined {
  return registry.get(mailboxes);
}

/**
 * Make sure `folder` gets (re)indexed soon, in the background (IMAP SELECT calls this: a folder
 * someone looks at is one they may search). A no-op without a search index. Never throws.
 */
export function indexFolderSoon(mailboxes: UserMailboxes, folder: string): void {
  registry.get(mailboxes)?.schedule(folder);
}

/** An 'added' event this big is a folder seen for the first time, not a delivery. */
const FIRST_SYNC_BATCH = 500;

export class UserSearch {
  readonly index: FullTextIndex;
  readonly #mailboxes: UserMailboxes;
  readonly #log: Logger;
  readonly #closing = new AbortController();
  /** Folders waiting for a catch-up, oldest request first; a folder is in here at most once. */
  readonly #dirty = new Set<string>();
  /** The catch-up running now, and whether its folder was renamed or deleted meanwhile. */
  #current: { folder: string; abort: AbortController; invalidated: boolean } | undefined;
  #worker: Promise<void> | undefined;
  #closed = false;
  readonly #onChange = (ev: ChangeEvent): void => this.#changed(ev);

  /** Open the index beside `mailboxes` and start following it; undefined (logged) if it cannot be opened. */
  static open(mailboxes: UserMailboxes, log: Logger): UserSearch | undefined {
    const file = FullTextIndex.pathFor(mailboxes.dir);
    const ulog = named(log, 'fulltext', { user: mailboxes.box.user, domain: mailboxes.box.domain });
    let index: FullTextIndex;
    try {
      index = FullTextIndex.open(file, ulog);
    } catch (err) {
      ulog.warn({ file, err: errText(err) }, 'full-text index cannot be opened: searching without it');
      return undefined;
    }
    return new UserSearch(mailboxes, index, ulog);
  }

  constructor(mailboxes: UserMailboxes, index: FullTextIndex, log: Logger) {
    this.#mailboxes = mailboxes;
    this.index = index;
    this.#log = log;
    mailboxes.on('change', this.#onChange);
    registry.set(mailboxes, this);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Queue a background catch-up of `folder` (coalesced with one already queued). */
  schedule(folder: string): void {
    if (this.#closed) return;
    this.#dirty.add(canonical(folder));
    this.#worker ??= this.#run();
  }

  /** Resolves once nothing is queued or running (tests, benchmarks, a graceful shutdown). */
  async idle(): Promise<void> {
    while (this.#worker !== undefined) await this.#worker;
  }

  /** Stop indexing (the running catch-up stops after its current message), then close the index. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing.abort();
    this.#mailboxes.off('change', this.#onChange);
    if (registry.get(this.#mailboxes) === this) registry.delete(this.#mailboxes);
    this.#dirty.clear();
    await this.#worker?.catch(() => undefined);
    this.index.close();
  }

  /**
   * UIDs of messages in `folder` whose subject, addresses or body text (those in `fields`)
   * contain `query`, with IMAP SEARCH's substring rules (case-insensitive, decoded text, runs
   * of white space as one). For the webmail; IMAP SEARCH uses its own evaluator with this index.
   */
  searchFolder(folder: string, query: string, opts: { fields?: readonly FullTextField[]; signal?: AbortSignal } = {}): Promise<number[]> {
    return searchFolder(this.#mailboxes, folder, query, opts);
  }

  async #run(): Promise<void> {
    try {
      // Started on a later turn: events arrive from inside the mailbox's lock, and a burst of
      // deliveries in one turn becomes one catch-up.
      await new Promise<void>((resolve) => setImmediate(resolve));
      await this.#work();
    } finally {
      this.#worker = undefined;
      // A request that came in as the loop was ending.
      if (this.#dirty.size > 0 && !this.#closed) this.#worker = this.#run();
    }
  }

  async #work(): Promise<void> {
    while (!this.#closed) {
      const [folder] = this.#dirty;
      if (folder === undefined) return;
      this.#dirty.delete(folder);
      const run = { folder, abort: new AbortController(), invalidated: false };
      this.#current = run;
      try {
        // Small batches: between them other connections get the event loop (decoding a batch of
        // typical messages takes a few milliseconds).
        await this.index.catchUp(this.#mailboxes, folder, { signal: AbortSignal.any([this.#closing.signal, run.abort.signal]), batch: CATCH_UP_BATCH });
      } catch (err) {
        const gone = err instanceof StoreError && (err.code === 'STORE_NO_FOLDER' || err.code === 'STORE_CLOSED');
        if (!gone && !this.#closed) this.#log.warn({ folder, err: errText(err) }, 'full-text indexing failed');
      } finally {
        this.#current = undefined;
      }
      // Renamed or deleted while we read it: whatever was written under the old name is stale.
      if (run.invalidated && !this.#closed) this.#guard(() => this.index.removeFolder(folder));
    }
  }

  #changed(ev: ChangeEvent): void {
    if (this.#closed) return;
    switch (ev.kind) {
      case 'added':
        // A first look at a big existing folder (a POP3 login, an index rebuilt) is not new
        // mail: indexing it all now would compete with the download that caused the sync.
        // IMAP SELECT and webmail searches index such a folder when someone will search it.
        if (ev.records.length >= FIRST_SYNC_BATCH && !ev.from) return;
        this.schedule(ev.folder);
        return;
      case 'expunged': {
        const uidValidity = this.#mailboxes.uidValidity(ev.folder);
        if (uidValidity !== undefined) this.#guard(() => this.index.remove(ev.folder, uidValidity, ev.uids));
        return;
      }
      case 'folders':
        for (const name of ev.deleted ?? []) {
          this.#invalidate(name);
          this.#guard(() => this.index.removeFolder(name));
        }
        for (const { from, to } of ev.renamed ?? []) {
          this.#invalidate(from);
          // UIDVALIDITY and UIDs survive a rename: move the documents rather than read it all again.
          this.#guard(() => this.index.renameFolder(from, to));
          this.schedule(to);
        }
        return;
      case 'flags':
        return;
    }
  }

  /** A folder that no longer exists under this name: stop reading it and drop its queued catch-up. */
  #invalidate(folder: string): void {
    this.#dirty.delete(folder);
    if (this.#current?.folder === folder) {
      this.#current.invalidated = true;
      this.#current.abort.abort();
    }
  }

  /** Index writes from event listeners: a failure costs only search speed, never the change itself. */
  #guard(fn: () => unknown): void {
    try {
      fn();
    } catch (err) {
      this.#log.warn({ err: errText(err) }, 'full-text index update failed');
    }
  }
}

function canonical(folder: string): string {
  return folder.toUpperCase() === 'INBOX' ? 'INBOX' : folder;
}

const FIELDS: readonly FullTextField[] = ['subject', 'addresses', 'body'];

/**
 * The webmail's search: UIDs (ascending) of messages in `folder` whose `fields` (default: all)
 * contain `query`. With a search index only the candidates are read; without one, or for a
 * query under 3 characters, every message is. Throws STORE_NO_FOLDER for a missing folder.
 */
export async function searchFolder(
  mailboxes: UserMailboxes,
  folder: string,
  query: string,
  opts: { fields?: readonly FullTextField[]; signal?: AbortSignal } = {},
): Promise<number[]> {
  const fields = opts.fields ?? FIELDS;
  const state = await mailboxes.sync(folder);
  const name = canonical(folder);
  const all = state.messages.map((m) => m.uid);
  const needle = foldText(query);
  if (needle === '') return all;
  const index = registry.get(mailboxes)?.index;
  let todo = all;
  if (index !== undefined) {
    const union = new Set<number>();
    let usable = true;
    for (const field of fields) {
      const set = index.candidates(name, state.uidValidity, field, query);
      if (set === undefined) {
        usable = false;
        break;
      }
      for (const uid of set) union.add(uid);
    }
    if (usable) {
      const indexed = index.indexedUids(name, state.uidValidity);
      todo = all.filter((uid) => union.has(uid) || !indexed.has(uid));
    }
  }
  const out: number[] = [];
  for (const uid of todo) {
    opts.signal?.throwIfAborted();
    const raw = await mailboxes.readMessage(name, uid);
    if (raw === null) continue;
    const { fields: headers } = headersFromRaw(raw);
    const has = (text: string): boolean => foldText(text).includes(needle);
    const hit = fields.some((f) => {
      if (f === 'subject') return (headers.get('subject') ?? []).some(has);
      if (f === 'addresses') return ['from', 'to', 'cc', 'bcc'].some((h) => (headers.get(h) ?? []).some(has));
      return has(bodyTextFromRawSync(raw));
    });
    if (hit) out.push(uid);
  }
  return out;
}
