// Package queue is in charge of outbound mail at rest and its delivery schedule: the spool
// folder (one message file and one state file per queued message), per-recipient status and
// retries with backoff, concurrency limits in total and per destination domain, the delay
// notice and the final bounce (RFC 3464 DSNs, built in dsn.ts), and what `hearth queue` shows
// and changes. It knows nothing of SMTP: src/main.ts hands it `deliver(job)` (routing plus the
// relay client) and `bounce(message)` (local delivery or enqueue of the DSN).
//
// On disk, in `dir` (the queue owns it; nobody else reads it):
//   <id>.eml    the message, exactly as received (written and fsync'd under its own name)
//   <id>.json   the state: { "version": 1, "entry": QueueEntry } (tmp -> fsync -> rename -> dir fsync)
//   .<id>.*.tmp a write in progress; a leftover one is a torn write and is removed at start
// A message counts as queued once its state file is renamed into place (after both files are
// fsync'd) and the folder is synced: only then does enqueue() resolve. An .eml without its
// .json is an enqueue that never returned and is removed at start.
//
// Crash safety: an attempt (attempts + 1, lastAttemptAt, nextAttemptAt) is on disk before
// deliver() is called, so a crash mid-attempt retries at the backoff time, not in a storm; the
// first attempt is recorded by the state written at enqueue. Each outcome is on disk as soon as
// it is known, so a recipient recorded as delivered is never sent again: written into the state,
// or, when every recipient is delivered, by removing the state file (and syncing the folder).
// Directory syncs of concurrent writers are shared (group commit). Times on disk are wall-clock
// ms; the attempt deadline is the Scheduler's (monotonic).
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { GroupCommit } from '../core/group-commit.ts';
import { errText, HearthError } from '../core/errors.ts';
import { named } from '../core/log.ts';
import type { Logger } from '../core/log.ts';
import type { Scheduler } from '../core/scheduler.ts';
import { buildDsn, headerBlock } from './dsn.ts';

export type QueuedRecipient = {
  address: string;
  status: 'pending' | 'delivered' | 'deferred' | 'failed';
  attempts: number;
  lastReply?: string;
  lastAttemptAt?: number;
  nextAttemptAt?: number;
  /** RFC 3461 NOTIFY values as given (NEVER, SUCCESS, FAILURE, DELAY); absent = FAILURE,DELAY. */
  notify?: string[];
  /** RFC 3461 ORCPT as given (`rfc822;addr`). */
  orcpt?: string;
  /** A failure DSN for this recipient was sent (or is not wanted); until then the entry stays. */
  reported?: boolean;
};
export type QueueEntry = {
  id: string;
  from: string;
  recipients: QueuedRecipient[];
  size: number;
  createdAt: number;
  held: boolean;
  dsn?: { ret?: 'FULL' | 'HDRS'; envid?: string };
  needsSmtpUtf8: boolean;
  eightBit: boolean;
  delayWarned?: boolean;
};
export type DeliveryJob = {
  entry: QueueEntry;
  domain: string;
  recipients: QueuedRecipient[];
  open(): NodeJS.ReadableStream;
  signal: AbortSignal;
};
export type DeliveryOutcome = {
  recipients: Array<{ address: string; status: 'delivered' | 'deferred' | 'failed'; reply: string }>;
  transcript?: string[];
};
export type QueuePolicy = {
  firstRetryMs: number;
  maxRetryMs: number;
  lifetimeMs: number;
  delayWarningMs: number;
  maxConcurrent: number;
  maxPerDomain: number;
  attemptDeadlineMs: number;
};
export type EnqueueEnvelope = {
  from: string;
  recipients: Array<{ address: string; notify?: string[]; orcpt?: string }>;
  dsn?: { ret?: 'FULL' | 'HDRS'; envid?: string };
  needsSmtpUtf8?: boolean;
  eightBit?: boolean;
};
export type BounceMessage = { from: ''; to: string; raw: Buffer };
export type OutboundQueueOptions = {
  dir: string;
  scheduler: Scheduler;
  deliver: (job: DeliveryJob) => Promise<DeliveryOutcome>;
  bounce: (message: BounceMessage) => Promise<void>;
  hostname: string;
  policy?: Partial<QueuePolicy>;
  log: Logger;
  now?: () => number;
  fsync?: boolean;
};

export const DEFAULT_QUEUE_POLICY: QueuePolicy = {
  firstRetryMs: 5 * 60_000, // Postfix minimal_backoff_time
  maxRetryMs: 4 * 3_600_000, // Postfix maximal_backoff_time
  lifetimeMs: 5 * 86_400_000, // Postfix maximal_queue_lifetime
  delayWarningMs: 4 * 3_600_000,
  maxConcurrent: 20,
  maxPerDomain: 4,
  attemptDeadlineMs: 15 * 60_000,
};

export type QueueErrorCode = 'QUEUE_IO' | 'QUEUE_STOPPED' | 'QUEUE_BAD_ENVELOPE' | 'QUEUE_NOT_STARTED';
export class QueueError extends HearthError {
  declare readonly code: QueueErrorCode;
}

/** A full DSN returns at most this much of the original; bigger messages get their headers only. */
const MAX_RETURNED_BYTES = 10 * 1024 * 1024;
/** Messages up to this size stay in memory from enqueue to their first attempt's end... */
const MAX_CACHED_BODY = 1024 * 1024;
/** ...as long as all such messages together stay under this. */
const MAX_CACHED_BYTES = 32 * 1024 * 1024;
const ID_PATTERN = /^[0-9a-z]{8,40}$/;
const STATE_VERSION = 1;
let idCounter = 0;

const isFinal = (r: QueuedRecipient): boolean => r.status === 'delivered' || r.status === 'failed';
const noop = (): void => {};

/** The domain part, lower-cased: the unit of routing and of per-domain concurrency. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}

function wants(r: QueuedRecipient, what: 'FAILURE' | 'DELAY'): boolean {
  // RFC 3461 4.1: no NOTIFY means the MTA may send FAILURE and DELAY notices.
  if (!r.notify || r.notify.length === 0) return true;
  const n = r.notify.map((v) => v.toUpperCase());
  return !n.includes('NEVER') && n.includes(what);
}

function isDirSyncRefused(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'EINVAL' || code === 'ENOTSUP' || code === 'EPERM' || code === 'EISDIR';
}

function jobKey(id: string, domain: string): string {
  return `queue:${id}:${domain}`;
}
function dsnKey(id: string): string {
  return `queue-dsn:${id}`;
}


export class OutboundQueue {
  readonly dir: string;
  readonly policy: QueuePolicy;
  readonly #scheduler: Scheduler;
  readonly #deliver: OutboundQueueOptions['deliver'];
  /** Each recipient's result after an attempt (ops metrics, issue 9). */ onRecipientOutcome: ((status: 'delivered' | 'deferred' | 'failed') => void) | undefined;
  readonly #bounce: OutboundQueueOptions['bounce'];
  readonly #hostname: string;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #fsync: boolean;
  /** Directory fsyncs of concurrent writers share one (group commit). */
  readonly #dirSync = new GroupCommit(() => this.#syncDir());
  /** The spool folder, kept open for its syncs (an open and a close fewer each time). */
  #dirHandle: Promise<fsp.FileHandle> | undefined;
  readonly #entries = new Map<string, QueueEntry>();
  /** Per entry: the chain of state writes, so they land in order. */
  readonly #writes = new Map<string, Promise<void>>();
  /** Attempts running, by job key. */
  readonly #running = new Map<string, Promise<void>>();
  /** Jobs that were due but found no free slot: rescheduled when one frees. */
  readonly #waiting = new Map<string, { id: string; domain: string }>();
  readonly #activeByDomain = new Map<string, number>();
  #activeTotal = 0;
  /**
   * Entries whose state on disk already records a first attempt for these recipients (written
   * at enqueue), valid until `until`: that attempt needs no write of its own. Any later write
   * of the entry replaces it.
   */
  readonly #reserved = new Map<string, { until: number; recipients: Set<QueuedRecipient> }>();
  /** Message bodies kept from enqueue for the first attempt, so it does not read the file back. */
  readonly #bodies = new Map<string, Buffer>();
  #cachedBytes = 0;
  readonly #changed = new Set<() => void>();
  readonly #stopping = new AbortController();
  #started = false;
  #stopped = false;

  constructor(opts: OutboundQueueOptions) {
    this.dir = path.resolve(opts.dir);
    this.policy = { ...DEFAULT_QUEUE_POLICY, ...opts.policy };
    this.#scheduler = opts.scheduler;
    this.#deliver = opts.deliver;
    this.#bounce = opts.bounce;
    this.#hostname = opts.hostname;
    this.#log = named(opts.log, 'queue');
    this.#now = opts.now ?? Date.now;
    this.#fsync = opts.fsync ?? true;
  }

  // --- lifecycle ---

  /** Load the spool and schedule every recipient still to be delivered (after a crash too). */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const names = await fsp.readdir(this.dir);
    const have = new Set(names);
    let loaded = 0;
    for (const name of names) {
      const full = path.join(this.dir, name);
      if (name.startsWith('.') && name.endsWith('.tmp')) {
        // A write that never reached its rename: the previous state file (if any) is intact.
        this.#log.warn({ file: name }, 'removing a torn write left by a crash');
        await fsp.unlink(full).catch(noop);
        continue;
      }
      const m = /^([0-9a-z]+)\.(eml|json)$/.exec(name);
      if (!m || !ID_PATTERN.test(m[1])) continue;
      const id = m[1];
      if (m[2] === 'eml') {
        if (!have.has(`${id}.json`)) {
          this.#log.warn({ queueId: id }, 'removing a message whose enqueue never completed');
          await fsp.unlink(full).catch(noop);
        }
        continue;
      }
      if (!have.has(`${id}.eml`)) {
        this.#log.error({ queueId: id }, 'queue state without its message file; left in place, not delivered');
        continue;
      }
      try {
        const parsed = JSON.parse(await fsp.readFile(full, 'utf8')) as { version?: number; entry?: QueueEntry };
        const entry = parsed.entry;
        if (parsed.version !== STATE_VERSION || !entry || entry.id !== id || !Array.isArray(entry.recipients)) throw new Error('unexpected shape');
        this.#entries.set(id, entry);
        loaded++;
      } catch (err) {
        this.#log.error({ queueId: id, err: errText(err) }, 'unreadable queue state; left in place, not delivered');
      }
    }
    this.#log.info({ entries: loaded }, 'queue loaded');
    for (const entry of this.#entries.values()) {
      this.#scheduleEntry(entry);
      if (entry.recipients.some((r) => isFinal(r))) void this.#finish(entry);
    }
  }

  /**
   * Stop scheduling, abort running attempts (recorded as interrupted: due again at the next
   * start) and wait for them and for every state write. Call before the Scheduler's stop().
   */
  async stop(opts?: { graceMs?: number }): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#stopping.abort(new QueueError('QUEUE_STOPPED', 'queue stopping'));
    for (const entry of this.#entries.values()) this.#unschedule(entry, false);
    this.#waiting.clear();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.#running.values()]),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, opts?.graceMs ?? 5_000);
      }),
    ]);
    clearTimeout(timer);
    await Promise.allSettled([...this.#writes.values()]);
    const dirHandle = this.#dirHandle;
    this.#dirHandle = undefined;
    await dirHandle?.then((fh) => fh.close()).catch(noop);
  }

  // --- enqueue ---

  /**
   * Spool a message. Resolves with its queue id only once the message file and its state are
   * durably on disk (the caller may then answer 250); delivery is scheduled at once.
   */
  async enqueue(envelope: EnqueueEnvelope, content: AsyncIterable<Uint8Array | string> | Uint8Array): Promise<string> {
    if (this.#stopped) throw new QueueError('QUEUE_STOPPED', 'the queue is stopped');
    if (!this.#started) throw new QueueError('QUEUE_NOT_STARTED', 'call start() before enqueue()');
    const seen = new Set<string>();
    const recipients: QueuedRecipient[] = [];
    for (const r of envelope.recipients) {
      const key = r.address.slice(0, r.address.lastIndexOf('@') + 1) + domainOf(r.address);
      if (seen.has(key)) continue;
      seen.add(key);
      const q: QueuedRecipient = { address: r.address, status: 'pending', attempts: 0 };
      if (r.notify?.length) q.notify = [...r.notify];
      if (r.orcpt) q.orcpt = r.orcpt;
      recipients.push(q);
    }
    if (recipients.length === 0) throw new QueueError('QUEUE_BAD_ENVELOPE', 'a queued message needs at least one recipient');
    const now = this.#now();
    // Time, then a counter (ids of one millisecond sort in enqueue order), then randomness.
    const id = now.toString(36).padStart(9, '0') + (idCounter++ % 1296).toString(36).padStart(2, '0') + randomBytes(5).toString('hex');
    const msgPath = this.#msgPath(id);
    let stateTmp: string | undefined;
    let msgCreated = false;
    try {
      const entry: QueueEntry = {
        id,
        from: envelope.from,
        recipients,
        size: 0,
        createdAt: now,
        held: false,
        needsSmtpUtf8: envelope.needsSmtpUtf8 ?? false,
        eightBit: envelope.eightBit ?? false,
      };
      if (envelope.dsn && (envelope.dsn.ret || envelope.dsn.envid)) entry.dsn = { ...envelope.dsn };
      // The message goes straight to its final name: until its state file is renamed into place
      // it is not queued (start() removes an .eml without its .json), so no tmp/rename is needed.
      // Its fsync and the state's run side by side; the state's rename, the commit point, waits
      // for both, and one directory sync (shared with concurrent writers) makes both names durable.
      let syncMessage: Promise<void>;
      if (content instanceof Uint8Array) {
        entry.size = content.byteLength;
        msgCreated = true;
        syncMessage = fsp.writeFile(msgPath, content, { flag: 'wx', mode: 0o600, flush: this.#fsync });
      } else {
        const fh = await fsp.open(msgPath, 'wx', 0o600);
        msgCreated = true;
        try {
          for await (const chunk of content) {
            const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
            await fh.write(buf);
            entry.size += buf.byteLength;
          }
        } catch (err) {
          await fh.close().catch(noop);
          throw err;
        }
        syncMessage = (this.#fsync ? fh.sync() : Promise.resolve()).finally(() => fh.close());
      }
      // The state records the first attempt already (attempts 1, next attempt after the first
      // backoff): delivery starts at once, and this spares a second state write before it. A
      // crash before that attempt only delays it by the first backoff.
      const onDisk = structuredClone(entry);
      for (const r of onDisk.recipients) this.#recordAttempt(r, now, now + this.policy.lifetimeMs);
      const writeTmp = this.#writeTmp(onDisk).then((t) => (stateTmp = t));
      const [msgResult, tmpResult] = await Promise.allSettled([syncMessage, writeTmp]);
      if (msgResult.status === 'rejected') throw msgResult.reason;
      if (tmpResult.status === 'rejected') throw tmpResult.reason;
      await this.#commit(stateTmp!, id);
      stateTmp = undefined;
      this.#entries.set(id, entry);
      this.#reserved.set(id, { until: onDisk.recipients[0].nextAttemptAt ?? now, recipients: new Set(recipients) });
      // Kept for the first attempt (the usual case: it is delivered at once and never read back).
      if (content instanceof Uint8Array && entry.size <= MAX_CACHED_BODY && this.#cachedBytes + entry.size <= MAX_CACHED_BYTES) {
        this.#bodies.set(id, Buffer.from(content.buffer, content.byteOffset, content.byteLength));
        this.#cachedBytes += entry.size;
      }
      this.#log.info({ queueId: id, from: entry.from, rcpts: recipients.length, size: entry.size }, 'queued');
      this.#scheduleEntry(entry);
      return id;
    } catch (err) {
      if (stateTmp) await fsp.unlink(stateTmp).catch(noop);
      if (msgCreated) await fsp.unlink(msgPath).catch(noop);
      if (err instanceof QueueError) throw err;
      throw new QueueError('QUEUE_IO', `cannot queue the message: ${errText(err)}`, { cause: err });
    }
  }

  // --- inspection and control (the CLI's `hearth queue ...`) ---

  /** Every queued message, oldest first (copies: changing them changes nothing). */
  list(): QueueEntry[] {
    return [...this.#entries.values()].sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1)).map((e) => structuredClone(e));
  }

  get(id: string): QueueEntry | undefined {
    const e = this.#entries.get(id);
    return e ? structuredClone(e) : undefined;
  }

  /** The message file's path, for `queue show` (read-only). */
  messagePath(id: string): string | undefined {
    return this.#entries.has(id) ? this.#msgPath(id) : undefined;
  }

  /** Make one message (or all) due now; held ones are left alone. Returns how many were rescheduled. */
  retry(id?: string): number {
    const now = this.#now();
    let n = 0;
    for (const entry of id === undefined ? this.#entries.values() : [this.#entries.get(id)].filter((e) => e !== undefined)) {
      if (entry.held) continue;
      const todo = entry.recipients.filter((r) => !isFinal(r));
      if (todo.length === 0) continue;
      for (const r of todo) r.nextAttemptAt = now;
      // Written too, so `hearth queue retry` on a stopped server's spool lasts (await stop()).
      this.#save(entry).catch((err: unknown) => this.#log.error({ queueId: entry.id, err: errText(err) }, 'cannot record retry'));
      this.#scheduleEntry(entry);
      n++;
    }
    return n;
  }

  /** Stop delivering a message until release(); an attempt already running finishes. */
  hold(id: string): boolean {
    const entry = this.#entries.get(id);
    if (!entry) return false;
    if (!entry.held) {
      entry.held = true;
      this.#dropBody(id);
      this.#unschedule(entry, false);
      this.#save(entry).catch((err: unknown) => this.#log.error({ queueId: id, err: errText(err) }, 'cannot record hold'));
      this.#log.info({ queueId: id }, 'held');
    }
    return true;
  }

  release(id: string): boolean {
    const entry = this.#entries.get(id);
    if (!entry) return false;
    if (entry.held) {
      entry.held = false;
      this.#save(entry).catch((err: unknown) => this.#log.error({ queueId: id, err: errText(err) }, 'cannot record release'));
      this.#log.info({ queueId: id }, 'released');
      this.#scheduleEntry(entry);
    }
    return true;
  }

  /** Remove a message and its files without any bounce; a running attempt is aborted. */
  async delete(id: string): Promise<boolean> {
    const entry = this.#entries.get(id);
    if (!entry) return false;
    this.#log.info({ queueId: id }, 'deleted by request');
    await this.#remove(entry, true);
    return true;
  }

  /**
   * Retry everything now and wait until every message is delivered, bounced, held, or deferred
   * again by an attempt made since the flush started (or until `timeoutMs`).
   */
  async flush(opts?: { timeoutMs?: number }): Promise<{ remaining: number }> {
    // Attempts counted, not times compared: the clock may not move between two attempts.
    const attemptsBefore = new Map<QueuedRecipient, number>();
    for (const e of this.#entries.values()) for (const r of e.recipients) attemptsBefore.set(r, r.attempts);
    this.retry();
    const settled = (): boolean =>
      this.#running.size === 0 &&
      this.#waiting.size === 0 &&
      [...this.#entries.values()].every((e) => e.held || e.recipients.every((r) => isFinal(r) || (r.status === 'deferred' && r.attempts > (attemptsBefore.get(r) ?? 0))));
    if (!settled()) {
      await new Promise<void>((resolve) => {
        const check = (): void => {
          if (!settled() && !this.#stopped) return;
          finish();
        };
        const finish = (): void => {
          clearTimeout(timer);
          this.#changed.delete(check);
          resolve();
        };
        const timer = setTimeout(finish, opts?.timeoutMs ?? 10 * 60_000);
        this.#changed.add(check);
      });
    }
    return { remaining: this.#entries.size };
  }

  // --- scheduling ---

  /** One Scheduler job per (entry, domain) with work, due at its earliest recipient. */
  #scheduleEntry(entry: QueueEntry): void {
    if (this.#stopped || entry.held || !this.#entries.has(entry.id)) return;
    const dueByDomain = new Map<string, number>();
    for (const r of entry.recipients) {
      if (isFinal(r)) continue;
      const d = domainOf(r.address);
      const due = r.nextAttemptAt ?? entry.createdAt;
      dueByDomain.set(d, Math.min(dueByDomain.get(d) ?? Infinity, due));
    }
    for (const [domain, dueAt] of dueByDomain) {
      const key = jobKey(entry.id, domain);
      // A running attempt reschedules its own key when it ends.
      if (this.#running.has(key)) continue;
      this.#schedule(key, dueAt, (signal) => this.#attempt(entry.id, domain, signal));
    }
  }

  /** Drop the entry's pending jobs; with `abortRunning` also abort its running attempts. */
  #unschedule(entry: QueueEntry, abortRunning: boolean): void {
    const domains = new Set(entry.recipients.map((r) => domainOf(r.address)));
    for (const d of domains) {
      const key = jobKey(entry.id, d);
      this.#waiting.delete(key);
      if (abortRunning || !this.#running.has(key)) this.#scheduler.cancel(key);
    }
    this.#scheduler.cancel(dsnKey(entry.id));
  }

  /** Schedule a job unless the queue or the Scheduler has stopped (a stopped Scheduler throws). */
  #schedule(id: string, dueAt: number, run: (signal: AbortSignal) => Promise<void>): void {
    if (this.#stopped) return;
    try {
      this.#scheduler.schedule({ id, dueAt, deadlineMs: this.policy.attemptDeadlineMs, run });
    } catch (err) {
      this.#log.warn({ job: id, err: errText(err) }, 'not scheduled');
    }
  }

  #acquire(domain: string): boolean {
    const active = this.#activeByDomain.get(domain) ?? 0;
    if (this.#activeTotal >= this.policy.maxConcurrent || active >= this.policy.maxPerDomain) return false;
    this.#activeByDomain.set(domain, active + 1);
    this.#activeTotal++;
    return true;
  }

  #release(domain: string): void {
    const active = (this.#activeByDomain.get(domain) ?? 1) - 1;
    if (active <= 0) this.#activeByDomain.delete(domain);
    else this.#activeByDomain.set(domain, active);
    this.#activeTotal--;
    if (this.#stopped) return;
    // Wake the jobs that were turned away for lack of a slot; they check again when they run.
    let free = this.policy.maxConcurrent - this.#activeTotal;
    const now = this.#now();
    for (const [key, w] of this.#waiting) {
      if (free <= 0) break;
      if ((this.#activeByDomain.get(w.domain) ?? 0) >= this.policy.maxPerDomain) continue;
      this.#waiting.delete(key);
      free--;
      this.#schedule(key, now, (signal) => this.#attempt(w.id, w.domain, signal));
    }
  }

  #notifyChanged(): void {
    for (const fn of [...this.#changed]) fn();
  }

  /** An attempt starting at `startedAt`: counted, and the retry time set should it not finish. */
  #recordAttempt(r: QueuedRecipient, startedAt: number, expiresAt: number): void {
    r.attempts++;
    r.lastAttemptAt = startedAt;
    const next = startedAt + this.#backoff(r.attempts);
    // One last attempt exactly at the end of the lifetime, then the bounce.
    r.nextAttemptAt = startedAt < expiresAt ? Math.min(next, expiresAt) : next;
  }

  #dropBody(id: string): void {
    const body = this.#bodies.get(id);
    if (!body) return;
    this.#bodies.delete(id);
    this.#cachedBytes -= body.byteLength;
  }

  #backoff(attempts: number): number {
    // Postfix: minimal_backoff_time doubling per attempt, capped at maximal_backoff_time.
    const exp = Math.min(attempts - 1, 40);
    return Math.min(this.policy.firstRetryMs * 2 ** exp, this.policy.maxRetryMs);
  }

  // --- one delivery attempt: (entry, domain) with all its due recipients ---

  async #attempt(id: string, domain: string, schedulerSignal: AbortSignal): Promise<void> {
    const entry = this.#entries.get(id);
    if (!entry || entry.held || this.#stopped) return;
    const key = jobKey(id, domain);
    const now = this.#now();
    const todo = entry.recipients.filter((r) => !isFinal(r) && domainOf(r.address) === domain);
    const due = todo.filter((r) => (r.nextAttemptAt ?? entry.createdAt) <= now);
    if (due.length === 0) {
      this.#scheduleEntry(entry);
      return;
    }
    if (this.#running.has(key)) return;
    if (!this.#acquire(domain)) {
      this.#waiting.set(key, { id, domain });
      return;
    }
    let settle!: () => void;
    this.#running.set(key, new Promise<void>((resolve) => (settle = resolve)));
    try {
      await this.#runAttempt(entry, domain, due, schedulerSignal);
    } finally {
      this.#running.delete(key);
      this.#release(domain);
      settle();
      if (this.#entries.get(id) === entry) this.#scheduleEntry(entry);
      this.#notifyChanged();
    }
  }

  async #runAttempt(entry: QueueEntry, domain: string, due: QueuedRecipient[], schedulerSignal: AbortSignal): Promise<void> {
    const log = this.#log.child({ queueId: entry.id, domain });
    const startedAt = this.#now();
    const expiresAt = entry.createdAt + this.policy.lifetimeMs;
    // Record the attempt before making it: a crash from here on retries at nextAttemptAt. The
    // first attempt was written at enqueue; it still holds while its retry time is ahead.
    const reservation = this.#reserved.get(entry.id);
    const recorded = reservation !== undefined && startedAt < reservation.until && due.every((r) => reservation.recipients.has(r));
    for (const r of due) {
      reservation?.recipients.delete(r);
      this.#recordAttempt(r, startedAt, expiresAt);
    }
    if (!recorded) {
      try {
        await this.#save(entry);
      } catch (err) {
        log.error({ err: errText(err) }, 'cannot record the delivery attempt; not attempting');
        return;
      }
    }

    const signal = AbortSignal.any([schedulerSignal, this.#stopping.signal]);
    const msgPath = this.#msgPath(entry.id);
    const job: DeliveryJob = {
      entry: structuredClone(entry),
      domain,
      recipients: due.map((r) => structuredClone(r)),
      open: () => {
        const body = this.#bodies.get(entry.id);
        return body ? Readable.from([body]) : createReadStream(msgPath);
      },
      signal,
    };
    let outcome: DeliveryOutcome | undefined;
    let failure: string | undefined;
    let interrupted = false;
    const delivering = Promise.resolve().then(() => this.#deliver(job));
    try {
      outcome = await raceAbort(delivering, signal);
    } catch (err) {
      const reason: unknown = signal.aborted ? signal.reason : err;
      const code = (reason as { code?: string } | undefined)?.code;
      if (code === 'SCHEDULER_DEADLINE') failure = `451 4.4.2 delivery attempt to ${domain} timed out after ${Math.round(this.policy.attemptDeadlineMs / 1000)} s`;
      else if (code === 'QUEUE_STOPPED' || code === 'SCHEDULER_STOPPED') {
        failure = '451 4.3.2 delivery attempt interrupted: the server was shutting down';
        interrupted = true;
      } else if (code === 'SCHEDULER_CANCELLED') failure = '451 4.3.0 delivery attempt cancelled';
      else failure = `451 4.3.0 delivery attempt failed inside hearth: ${errText(reason)}`;
      log.warn({ err: errText(reason), code }, 'delivery attempt did not complete');
      if (signal.aborted) {
        // A late answer still counts for recipients it delivered: they must not be sent twice.
        delivering.then((late) => this.#applyLate(entry, late), noop);
      }
    }
    if (this.#entries.get(entry.id) !== entry) return; // deleted meanwhile

    const endedAt = this.#now();
    const newlyFailed: QueuedRecipient[] = [];
    const counts = { delivered: 0, deferred: 0, failed: 0 };
    for (const r of due) {
      const res = outcome && (outcome.recipients.find((x) => x.address === r.address) ?? outcome.recipients.find((x) => x.address.toLowerCase() === r.address.toLowerCase()));
      if (r.status === 'delivered') continue; // applied late by an earlier attempt's answer
      if (!res) {
        r.lastReply = failure ?? '451 4.3.0 the delivery attempt gave no result for this recipient';
        r.status = 'deferred';
        if (interrupted) r.nextAttemptAt = endedAt; // not the remote's doing: try again at the next start
      } else {
        r.lastReply = res.reply;
        r.status = res.status;
      }
      if (r.status === 'deferred' && endedAt >= expiresAt) r.status = 'failed';
      if (r.status !== 'deferred') delete r.nextAttemptAt;
      if (r.status === 'failed') newlyFailed.push(r);
      counts[r.status as 'delivered' | 'deferred' | 'failed']++;
      this.onRecipientOutcome?.(r.status as 'delivered' | 'deferred' | 'failed');
    }
    const level = counts.deferred + counts.failed > 0 ? 'warn' : 'info';
    log[level]({ ...counts, attempt: Math.max(...due.map((r) => r.attempts)), ms: endedAt - startedAt, replies: due.filter((r) => r.status !== 'delivered').map((r) => `${r.address}: ${r.lastReply}`) }, 'delivery attempt');
    if (outcome?.transcript?.length && counts.delivered < due.length) log.info({ transcript: outcome.transcript.slice(-20) }, 'delivery transcript');
    // A retry is minutes away: it reads the file then. With nothing left to deliver the body is
    // not needed again (a notice reads the file), however long the entry waits for its notice.
    if (counts.deferred > 0 || entry.recipients.every(isFinal)) this.#dropBody(entry.id);
    // All delivered: removing the state file (#finish, then a directory sync) is the durable
    // record of the outcome, so the state is not written once more just before it goes.
    if (!entry.recipients.every((r) => r.status === 'delivered')) {
      try {
        await this.#save(entry);
      } catch (err) {
        log.error({ err: errText(err) }, 'cannot record the delivery outcome');
      }
    }
    await this.#maybeWarnDelay(entry);
    await this.#finish(entry);
  }

  #applyLate(entry: QueueEntry, late: DeliveryOutcome): void {
    if (this.#entries.get(entry.id) !== entry) return;
    let changed = false;
    for (const res of late.recipients) {
      if (res.status !== 'delivered') continue;
      const r = entry.recipients.find((x) => x.address.toLowerCase() === res.address.toLowerCase());
      if (r && !isFinal(r)) {
        r.status = 'delivered';
        r.lastReply = res.reply;
        delete r.nextAttemptAt;
        changed = true;
      }
    }
    if (changed) {
      this.#log.warn({ queueId: entry.id }, 'a delivery finished after its attempt was abandoned; recorded as delivered');
      this.#save(entry).then(() => this.#finish(entry), noop);
    }
  }

  // --- DSNs and removal ---

  async #maybeWarnDelay(entry: QueueEntry): Promise<void> {
    const now = this.#now();
    if (this.policy.delayWarningMs <= 0 || entry.delayWarned || entry.from === '' || now - entry.createdAt < this.policy.delayWarningMs) return;
    const late = entry.recipients.filter((r) => r.status === 'deferred' && wants(r, 'DELAY'));
    if (late.length === 0) return;
    // Recorded first: a delay notice is advisory, and one too few beats one too many.
    entry.delayWarned = true;
    try {
      await this.#save(entry);
      const raw = await buildDsn({ hostname: this.#hostname, entry, recipients: late, action: 'delayed', original: await this.#readOriginal(entry, true), now, retryUntil: entry.createdAt + this.policy.lifetimeMs });
      await this.#bounce({ from: '', to: entry.from, raw });
      this.#log.info({ queueId: entry.id, to: entry.from, rcpts: late.length }, 'delay notice sent');
    } catch (err) {
      this.#log.error({ queueId: entry.id, err: errText(err) }, 'delay notice not sent');
    }
  }

  /** Send the failure DSN for failed recipients not yet reported; remove the entry once all are final. */
  async #finish(entry: QueueEntry): Promise<void> {
    if (this.#entries.get(entry.id) !== entry) return;
    const unreported = entry.recipients.filter((r) => r.status === 'failed' && !r.reported);
    if (unreported.length > 0) {
      // Marked at once so two attempts finishing together send one DSN; written after the send.
      for (const r of unreported) r.reported = true;
      const toReport = entry.from === '' ? [] : unreported.filter((r) => wants(r, 'FAILURE'));
      if (toReport.length > 0) {
        try {
          const raw = await buildDsn({ hostname: this.#hostname, entry, recipients: toReport, action: 'failed', original: await this.#readOriginal(entry, entry.dsn?.ret === 'HDRS'), now: this.#now() });
          await this.#bounce({ from: '', to: entry.from, raw });
          this.#log.info({ queueId: entry.id, to: entry.from, rcpts: toReport.map((r) => r.address) }, 'failure notice sent');
        } catch (err) {
          for (const r of unreported) r.reported = false;
          const retryAt = this.#now() + this.policy.firstRetryMs;
          this.#log.error({ queueId: entry.id, err: errText(err), retryAt: new Date(retryAt).toISOString() }, 'failure notice not sent; will retry');
          this.#schedule(dsnKey(entry.id), retryAt, () => this.#finish(entry));
          return;
        }
      } else if (entry.from === '') {
        this.#log.info({ queueId: entry.id, rcpts: unreported.map((r) => r.address) }, 'delivery failed for a message with a null sender: no notice (RFC 3464 no bounce loops)');
      }
      if (!entry.recipients.every(isFinal)) {
        try {
          await this.#save(entry);
        } catch (err) {
          this.#log.error({ queueId: entry.id, err: errText(err) }, 'cannot record the notice');
        }
      }
    }
    if (this.#entries.get(entry.id) === entry && entry.recipients.every((r) => isFinal(r) && (r.status === 'delivered' || r.reported))) {
      await this.#remove(entry, false);
      this.#log.info({ queueId: entry.id, delivered: entry.recipients.filter((r) => r.status === 'delivered').length, failed: entry.recipients.filter((r) => r.status === 'failed').length }, 'done, removed from the queue');
    }
  }

  async #readOriginal(entry: QueueEntry, headersOnly: boolean): Promise<Buffer | null> {
    try {
      if (headersOnly || entry.size > MAX_RETURNED_BYTES) {
        const fh = await fsp.open(this.#msgPath(entry.id), 'r');
        try {
          const buf = Buffer.alloc(Math.min(entry.size, 1024 * 1024));
          const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
          return Buffer.from(headerBlock(buf.subarray(0, bytesRead)));
        } finally {
          await fh.close();
        }
      }
      return await fsp.readFile(this.#msgPath(entry.id));
    } catch (err) {
      this.#log.warn({ queueId: entry.id, err: errText(err) }, 'original message unreadable; DSN without it');
      return null;
    }
  }

  // --- files ---

  #msgPath(id: string): string {
    if (!ID_PATTERN.test(id)) throw new QueueError('QUEUE_BAD_ENVELOPE', `not a queue id: ${JSON.stringify(id)}`);
    return path.join(this.dir, `${id}.eml`);
  }

  #statePath(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }

  /** Write the entry's current state after any write already under way for it. */
  #save(entry: QueueEntry): Promise<void> {
    // What is written now is the in-memory state, which replaces the enqueue-time record.
    this.#reserved.delete(entry.id);
    const prev = this.#writes.get(entry.id) ?? Promise.resolve();
    const next = prev.catch(noop).then(() => (this.#entries.get(entry.id) === entry ? this.#writeState(entry) : undefined));
    this.#writes.set(entry.id, next);
    void next.finally(() => {
      if (this.#writes.get(entry.id) === next) this.#writes.delete(entry.id);
    }).catch(noop);
    return next;
  }

  /** tmp -> fsync -> rename -> directory fsync: a reader sees the old state or the new, never half. */
  async #writeState(entry: QueueEntry): Promise<void> {
    await this.#commit(await this.#writeTmp(entry), entry.id);
  }

  /** The state in a new temporary file, synced; returns its path. */
  async #writeTmp(entry: QueueEntry): Promise<string> {
    const tmp = path.join(this.dir, `.${entry.id}.json.${randomBytes(4).toString('hex')}.tmp`);
    const data = JSON.stringify({ version: STATE_VERSION, entry }, null, 1) + '\n';
    try {
      await fsp.writeFile(tmp, data, { flag: 'wx', mode: 0o600, flush: this.#fsync });
    } catch (err) {
      await fsp.unlink(tmp).catch(noop);
      throw err;
    }
    return tmp;
  }

  async #syncDir(): Promise<void> {
    const opening = (this.#dirHandle ??= fsp.open(this.dir, 'r'));
    let fh: fsp.FileHandle;
    try {
      fh = await opening;
    } catch (err) {
      if (this.#dirHandle === opening) this.#dirHandle = undefined;
      throw err;
    }
    try {
      await fh.sync();
    } catch (err) {
      // Some file systems refuse fsync on a directory (the rename is still atomic). A handle
      // closed under us (stop()) gets a fresh one: never a silent skip. Any other error fails the
      // write: after a failed fsync a second one can succeed with nothing made safe.
      if (isDirSyncRefused(err)) return;
      if ((err as NodeJS.ErrnoException | undefined)?.code !== 'EBADF') throw err;
      if (this.#dirHandle === opening) this.#dirHandle = undefined;
      const fresh = await fsp.open(this.dir, 'r');
      try {
        await fresh.sync().catch((e: unknown) => {
          if (!isDirSyncRefused(e)) throw e;
        });
      } finally {
        await fresh.close();
      }
    }
  }

  /** Rename a synced temporary state file into place and make the rename durable. */
  async #commit(tmp: string, id: string): Promise<void> {
    try {
      await fsp.rename(tmp, this.#statePath(id));
    } catch (err) {
      await fsp.unlink(tmp).catch(noop);
      throw err;
    }
    if (this.#fsync) await this.#dirSync.sync(this.dir);
  }

  /** Forget the entry and remove its files: state first, so a crash leaves an orphan .eml (swept at start). */
  async #remove(entry: QueueEntry, abortRunning: boolean): Promise<void> {
    if (this.#entries.get(entry.id) !== entry) return;
    this.#entries.delete(entry.id);
    this.#reserved.delete(entry.id);
    this.#dropBody(entry.id);
    this.#unschedule(entry, abortRunning);
    const prev = this.#writes.get(entry.id) ?? Promise.resolve();
    const removal = prev.catch(noop).then(async () => {
      try {
        await fsp.unlink(this.#statePath(entry.id));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
          // The state stays, so it must say how things ended (the outcome may not be written
          // yet): the next start then finishes the entry instead of sending it again.
          this.#log.error({ queueId: entry.id, err: errText(err) }, 'cannot remove the queue state; recording the final state instead');
          await this.#writeState(entry).catch((e: unknown) => this.#log.error({ queueId: entry.id, err: errText(e) }, 'cannot record the final state'));
          return;
        }
      }
      await fsp.unlink(this.#msgPath(entry.id)).catch(noop);
      // Callers do not all await this (start(), a late answer): a failed sync is logged, not thrown.
      if (this.#fsync) await this.#dirSync.sync(this.dir).catch((err: unknown) => this.#log.error({ queueId: entry.id, err: errText(err) }, 'cannot sync the queue folder after a removal'));
    });
    this.#writes.set(entry.id, removal);
    await removal.finally(() => {
      if (this.#writes.get(entry.id) === removal) this.#writes.delete(entry.id);
    });
    this.#notifyChanged();
  }
}

/** Resolve with `p`, or reject with the signal's reason as soon as it aborts. */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}
