// The gather service is in charge of collecting mail from the remote accounts people added with
// `hearth gather add`: it runs each account on its interval (jittered) through the delivery
// scheduler, watches IMAP folders with IDLE for near-instant pickup, backs off after network
// errors, stops an account whose password the server refuses (instead of hammering the
// provider), and keeps the status `hearth gather status` shows. The protocol work is in
// pull.ts, the memory of what was collected in ledger.ts, local delivery in sink.ts.
import { join } from 'node:path';
import type { ImapFlow } from 'imapflow';
import type { Logger } from '../core/log.ts';
import type { Scheduler } from '../core/scheduler.ts';
import { GatherAccounts, GatherError, validateAccount } from './accounts.ts';
import type { GatherAuthSetup } from './auth.ts';
import type { GatherAccount } from './accounts.ts';
import { GatherLedger, LEDGER_FILE } from './ledger.ts';
import type { AccountStatus } from './ledger.ts';
import { PullError, imapClientFor, pullAccount } from './pull.ts';
import type { PullProgress, PullResult } from './pull.ts';
import type { GatherSink } from './sink.ts';

export type GatherSettings = {
  /** Default interval between pulls of an account. */
  intervalMs: number;
  /** Watch IMAP accounts with IDLE (per account `idle: false` turns it off). */
  idle: boolean;
  /** Longest wait between retries after errors. */
  maxBackoffMs: number;
  /** First wait after an error; doubles per consecutive failure. */
  firstBackoffMs: number;
  batchSize: number;
  parallel: number;
  /** Network timeout per wait. */
  timeoutMs: number;
  /** A scheduled run is aborted after this long (the next one resumes). */
  runDeadlineMs: number;
};

export const DEFAULT_GATHER_SETTINGS: GatherSettings = Object.freeze({
  intervalMs: 5 * 60_000,
  idle: true,
  maxBackoffMs: 60 * 60_000,
  firstBackoffMs: 60_000,
  batchSize: 100,
  parallel: 8,
  timeoutMs: 60_000,
  runDeadlineMs: 60 * 60_000,
});

export type GatherServiceOptions = {
  dataDir: string;
  scheduler: Scheduler;
  sink: GatherSink;
  log: Logger;
  hostname: string;
  fsync: boolean;
  settings?: Partial<GatherSettings>;
  junkFolder?: string;
  /** DKIM/ARC/DMARC checks of collected mail (gatherAuthFromConfig); none when absent. */
  auth?: GatherAuthSetup;
  /** Refuse accounts whose owner is not a local user (the CLI and control commands check). */
  isLocalAddress?: (address: string) => boolean;
  now?: () => number;
  random?: () => number;
};

export type AccountView = GatherAccount & { intervalMs: number; status: AccountStatus & { idle?: IdleState } };
export type RunOutcome = { id: string; ok: boolean; result?: PullResult; error?: string; code?: string };
type IdleState = 'watching' | 'connecting' | 'unsupported' | 'off';

type Live = {
  account: GatherAccount;
  /** Runs of one account never overlap: each waits for the previous one. */
  chain: Promise<unknown>;
  /** A run is queued behind the current one (IDLE kicks coalesce into it). */
  queued: Promise<RunOutcome> | undefined;
  running: boolean;
  progress: PullProgress | undefined;
  idle: IdleWatcher | undefined;
  controller: AbortController | undefined;
};

const JOB_PREFIX = 'gather:';

export class GatherService {
  readonly accounts: GatherAccounts;
  readonly ledger: GatherLedger;
  readonly settings: GatherSettings;
  readonly #opts: GatherServiceOptions;
  readonly #log: Logger;
  readonly #live = new Map<string, Live>();
  readonly #now: () => number;
  readonly #random: () => number;
  #started = false;
  #stopped = false;

  constructor(opts: GatherServiceOptions) {
    this.#opts = opts;
    this.#log = opts.log;
    this.settings = { ...DEFAULT_GATHER_SETTINGS, ...opts.settings };
    const dir = join(opts.dataDir, 'gather');
    this.accounts = new GatherAccounts(dir);
    this.ledger = new GatherLedger(join(dir, LEDGER_FILE), { durable: opts.fsync });
    this.#now = opts.now ?? Date.now;
    this.#random = opts.random ?? Math.random;
  }

  /** Load the accounts, schedule each (first run soon, spread out) and start IDLE watchers. */
  async start(): Promise<void> {
    this.#started = true;
    await this.reload();
  }

  /** Re-read the accounts file: schedule new accounts, drop removed ones. */
  async reload(): Promise<void> {
    const accounts = await this.accounts.list();
    const ids = new Set(accounts.map((a) => a.id));
    for (const [id, live] of this.#live) {
      if (!ids.has(id)) this.#drop(id, live);
    }
    for (const account of accounts) {
      const live = this.#live.get(account.id);
      if (live) {
        const changed = JSON.stringify(live.account) !== JSON.stringify(account);
        live.account = account;
        if (changed && this.#started) {
          live.idle?.stop();
          live.idle = undefined;
          this.#startIdle(live);
        }
        continue;
      }
      const fresh: Live = { account, chain: Promise.resolve(), queued: undefined, running: false, progress: undefined, idle: undefined, controller: undefined };
      this.#live.set(account.id, fresh);
      if (this.#started) {
        // Spread the first runs over a short window so a restart does not hit every provider at once.
        this.#scheduleAt(fresh, this.#now() + Math.floor(this.#random() * Math.min(this.#interval(account), 30_000)));
        this.#startIdle(fresh);
      }
    }
  }

  async add(account: GatherAccount, password: string): Promise<GatherAccount> {
    validateAccount(account);
    if (this.#opts.isLocalAddress && !this.#opts.isLocalAddress(account.owner)) {
      throw new GatherError('GATHER_NOT_LOCAL', `${account.owner} is not a user here; add the user first (hearth user add ${account.owner})`);
    }
    const added = await this.accounts.add(account, password);
    this.#log.info({ account: added.id, owner: added.owner, host: added.host, protocol: added.protocol, mode: added.mode }, 'gather account added');
    await this.reload();
    return added;
  }

  async remove(id: string): Promise<GatherAccount> {
    const removed = await this.accounts.remove(id);
    // The ledger is kept: re-adding the same account must not collect everything again.
    this.#log.info({ account: id }, 'gather account removed');
    await this.reload();
    return removed;
  }

  /** New password: the account runs again (soon) if it was stopped by a refused password. */
  async setPassword(id: string, password: string): Promise<void> {
    await this.accounts.setPassword(id, password);
    const status = this.ledger.status(id);
    if (status.stopped) {
      this.ledger.setStatus(id, { ...status, stopped: false, consecutiveFailures: 0 });
      const live = this.#live.get(id);
      if (live && this.#started) {
        this.#scheduleAt(live, this.#now());
        this.#startIdle(live);
      }
    }
  }

  /** Accounts with their status (never passwords). */
  async list(): Promise<AccountView[]> {
    const accounts = await this.accounts.list();
    return accounts.map((account) => {
      const live = this.#live.get(account.id);
      const status: AccountView['status'] = { ...this.ledger.status(account.id) };
      status.totalCollected = this.ledger.count(account.id);
      if (live?.running) {
        status.running = true;
        if (live.progress) status.progress = { ...live.progress };
      }
      if (this.#started) status.idle = live?.idle?.state ?? 'off';
      return { ...account, intervalMs: this.#interval(account), status };
    });
  }

  /**
   * Pull now: one account, or all. Waits for a run already in progress first (runs of an account
   * never overlap). A run clears a stop after a refused password: the person asked for it.
   */
  async run(id?: string, opts: { onProgress?: (id: string, p: PullProgress) => void } = {}): Promise<RunOutcome[]> {
    const accounts = await this.accounts.list();
    const chosen = id === undefined ? accounts : accounts.filter((a) => a.id === id);
    if (id !== undefined && chosen.length === 0) throw new GatherError('GATHER_NO_SUCH', `no gather account named ${id}; see \`hearth gather list\``);
    if (!this.#started || chosen.some((a) => !this.#live.has(a.id))) await this.reload();
    return Promise.all(
      chosen.map((a) => {
        const live = this.#live.get(a.id)!;
        return this.#enqueueRun(live, 'manual', undefined, opts.onProgress);
      }),
    );
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    const chains: Array<Promise<unknown>> = [];
    for (const [id, live] of this.#live) {
      this.#drop(id, live);
      chains.push(live.chain);
    }
    await Promise.allSettled(chains);
    this.ledger.close();
  }

  // ---- runs ------------------------------------------------------------------------------------

  #interval(account: GatherAccount): number {
    return account.intervalMs ?? this.settings.intervalMs;
  }

  #drop(id: string, live: Live): void {
    this.#opts.scheduler.cancel(JOB_PREFIX + id);
    live.idle?.stop();
    live.idle = undefined;
    live.controller?.abort(new GatherError('GATHER_STOPPED', 'gathering stopped'));
    this.#live.delete(id);
  }

  #scheduleAt(live: Live, dueAt: number): void {
    if (this.#stopped || !this.#started) return;
    const id = live.account.id;
    this.#opts.scheduler.schedule({
      id: JOB_PREFIX + id,
      dueAt,
      deadlineMs: this.settings.runDeadlineMs,
      run: async (signal) => {
        await this.#enqueueRun(live, 'scheduled', signal);
      },
    });
    const status = this.ledger.status(id);
    this.ledger.setStatus(id, { ...status, nextRunAt: dueAt });
  }

  /** Queue a run behind the current one; a second kick while one is queued joins it. */
  #enqueueRun(live: Live, why: 'scheduled' | 'manual' | 'idle', signal?: AbortSignal, onProgress?: (id: string, p: PullProgress) => void): Promise<RunOutcome> {
    if (live.queued && why !== 'manual') return live.queued;
    const run = live.chain.then(() => {
      if (live.queued === run) live.queued = undefined;
      return this.#runOnce(live, why, signal, onProgress);
    });
    live.queued = run;
    live.chain = run.catch(() => undefined);
    return run;
  }

  async #runOnce(live: Live, why: string, signal: AbortSignal | undefined, onProgress?: (id: string, p: PullProgress) => void): Promise<RunOutcome> {
    const { account } = live;
    const id = account.id;
    let status = this.ledger.status(id);
    if (this.#stopped || !this.#live.has(id)) return { id, ok: false, error: 'gathering stopped', code: 'GATHER_STOPPED' };
    if (status.stopped && why !== 'manual') return { id, ok: false, error: status.lastError, code: status.lastErrorCode };
    if (account.enabled === false && why !== 'manual') return { id, ok: true };
    const controller = new AbortController();
    live.controller = controller;
    const onOuterAbort = (): void => controller.abort(signal?.reason);
    signal?.addEventListener('abort', onOuterAbort, { once: true });
    live.running = true;
    live.progress = undefined;
    const started = this.#now();
    let outcome: RunOutcome;
    try {
      const password = await this.accounts.password(id);
      if (password === undefined) throw new PullError('GATHER_NO_PASSWORD', 'config', `no password stored for ${id}; set it with \`hearth gather passwd ${id}\``);
      const result = await pullAccount({
        account,
        password,
        ledger: this.ledger,
        sink: this.#opts.sink,
        log: this.#log,
        hostname: this.#opts.hostname,
        signal: controller.signal,
        batchSize: this.settings.batchSize,
        parallel: this.settings.parallel,
        timeoutMs: this.settings.timeoutMs,
        junkFolder: this.#opts.junkFolder,
        auth: this.#opts.auth,
        now: this.#now,
        onProgress: (p) => {
          live.progress = p;
          onProgress?.(id, p);
        },
      });
      status = { ...this.ledger.status(id), lastRunAt: started, lastOkAt: this.#now(), lastCollected: result.collected, lastError: undefined, lastErrorCode: undefined, consecutiveFailures: 0, stopped: false };
      const busy = result.collected + result.deleted + result.flagsToLocal + result.flagsToRemote + result.remapped > 0;
      this.#log[busy ? 'info' : 'debug']({ account: id, why, ...result, ms: this.#now() - started }, 'gather run finished');
      outcome = { id, ok: true, result };
    } catch (err) {
      const pe = err instanceof PullError ? err : new PullError('GATHER_INTERNAL', 'local', (err as Error)?.message ?? String(err), { cause: err });
      const failures = (status.consecutiveFailures ?? 0) + 1;
      status = { ...this.ledger.status(id), lastRunAt: started, lastError: pe.message, lastErrorCode: pe.code, consecutiveFailures: failures, stopped: pe.kind === 'auth' };
      if (pe.kind === 'auth') this.#log.warn({ account: id, code: pe.code }, `${pe.message}; gathering for this account is paused until then`);
      else this.#log.warn({ account: id, code: pe.code, failures }, pe.message);
      if (pe.code === 'GATHER_INTERNAL') this.#log.error({ err }, 'gather run failed unexpectedly');
      outcome = { id, ok: false, error: pe.message, code: pe.code };
    } finally {
      signal?.removeEventListener('abort', onOuterAbort);
      live.running = false;
      live.progress = undefined;
      live.controller = undefined;
    }
    this.ledger.setStatus(id, status);
    if (!this.#stopped && this.#live.has(id)) {
      if (status.stopped) {
        this.#opts.scheduler.cancel(JOB_PREFIX + id);
        live.idle?.stop();
        live.idle = undefined;
      } else {
        this.#scheduleAt(live, this.#now() + this.#nextDelay(account, status));
      }
    }
    return outcome;
  }

  /** The interval ±10 %, or after failures an exponential backoff (jittered) capped at maxBackoff. */
  #nextDelay(account: GatherAccount, status: AccountStatus): number {
    const jitter = (ms: number): number => Math.round(ms * (0.9 + 0.2 * this.#random()));
    const failures = status.consecutiveFailures ?? 0;
    if (failures === 0) return jitter(this.#interval(account));
    return jitter(Math.min(this.settings.maxBackoffMs, this.settings.firstBackoffMs * 2 ** Math.min(failures - 1, 20)));
  }

  // ---- IDLE ------------------------------------------------------------------------------------

  #startIdle(live: Live): void {
    const a = live.account;
    if (this.#stopped || !this.#started || live.idle) return;
    if (a.protocol !== 'imap' || a.idle === false || !this.settings.idle || a.enabled === false) return;
    if (this.ledger.status(a.id).stopped) return;
    live.idle = new IdleWatcher({
      account: a,
      password: () => this.accounts.password(a.id),
      log: this.#log,
      timeoutMs: this.settings.timeoutMs,
      onNewMail: () => void this.#enqueueRun(live, 'idle'),
    });
    live.idle.start();
  }
}

/**
 * One IMAP connection per account that sits in IDLE (RFC 2177) on the first folder and kicks a
 * pull when the server announces new mail. IDLE is restarted every 25 minutes (the RFC's 29
 * minute limit); a dropped connection is re-made with backoff. Servers without IDLE are left
 * to the interval.
 */
type IdleOptions = { account: GatherAccount; password: () => Promise<string | undefined>; log: Logger; timeoutMs: number; onNewMail: () => void };

/** RFC 2177 3: re-issue IDLE at least every 29 minutes. */
const IDLE_RESTART_MS = 25 * 60_000;

class IdleWatcher {
  state: IdleState = 'connecting';
  readonly #opts: IdleOptions;
  #client: ImapFlow | undefined;
  #stopped = false;
  #retryMs = 5_000;
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: IdleOptions) {
    this.#opts = opts;
  }

  start(): void {
    void this.#connect();
  }

  stop(): void {
    this.#stopped = true;
    this.state = 'off';
    clearTimeout(this.#timer);
    this.#client?.close();
    this.#client = undefined;
  }

  async #connect(): Promise<void> {
    if (this.#stopped) return;
    const { account, log } = this.#opts;
    const password = await this.#opts.password();
    if (password === undefined || this.#stopped) return;
    const client = imapClientFor(account, password, this.#opts.timeoutMs, { maxIdleTime: IDLE_RESTART_MS });
    this.#client = client;
    this.state = 'connecting';
    client.on('error', (err: Error) => log.debug({ account: account.id, err: err.message }, 'idle connection error'));
    client.on('exists', (ev: { count: number; prevCount: number }) => {
      if (ev.count > ev.prevCount) this.#opts.onNewMail();
    });
    client.on('close', () => {
      if (this.#stopped || client !== this.#client) return;
      this.state = 'connecting';
      this.#retry();
    });
    try {
      await client.connect();
      if (!client.capabilities.has('IDLE')) {
        this.state = 'unsupported';
        log.info({ account: account.id }, `${account.host} does not offer IMAP IDLE; new mail is picked up on the interval`);
        this.#client = undefined;
        await client.logout().catch(() => undefined);
        return;
      }
      await client.mailboxOpen(account.folders[0], { readOnly: true });
      this.state = 'watching';
      this.#retryMs = 5_000;
      log.debug({ account: account.id, folder: account.folders[0] }, 'watching with IDLE');
      while (!this.#stopped && client === this.#client && client.usable) {
        await client.idle();
      }
    } catch (err) {
      if (this.#stopped || client !== this.#client) return;
      if ((err as { authenticationFailed?: boolean }).authenticationFailed) {
        // The pull reports a refused password; watching stops until it changes.
        this.state = 'off';
        this.#client = undefined;
        client.close();
        return;
      }
      log.debug({ account: account.id, err: (err as Error).message }, 'idle connection failed');
      client.close();
      this.#retry();
    }
  }

  #retry(): void {
    if (this.#stopped || this.#timer) return;
    const wait = this.#retryMs;
    this.#retryMs = Math.min(this.#retryMs * 2, 5 * 60_000);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#connect();
    }, wait);
    this.#timer.unref?.();
  }
}
