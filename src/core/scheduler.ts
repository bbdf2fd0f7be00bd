// The delivery scheduler is in charge of everything that must happen later: retries,
// bounces, delay warnings, housekeeping. It knows nothing of mail: a job is an id, a
// wall-clock due time, a deadline and a function (src/main.ts hands the queue's deliver in).
//
// The mox way: one timer aimed at the earliest due job, but never sleeping longer than
// `maxSleepMs`, so a wall-clock jump or a suspended laptop is noticed within that time and
// everything overdue then runs once, oldest first. Due times are wall-clock (they are stored
// on disk and must survive restarts); deadlines are monotonic (setTimeout), so a clock jump
// cannot kill or extend a running attempt.
import { HearthError } from './errors.ts';
import type { Logger } from './log.ts';

export interface ScheduledJob {
  id: string;
  /** Wall-clock ms (Date.now() scale) at which the job becomes due. */
  dueAt: number;
  /** Monotonic ms the run may take before its signal is aborted and it counts as timed out. */
  deadlineMs: number;
  run(signal: AbortSignal): Promise<void>;
}

/** How a run ended, for the owner (queue bookkeeping, metrics). */
export type JobOutcome = { id: string; ok: true } | { id: string; ok: false; error: unknown };

export interface SchedulerOptions {
  log: Logger;
  /** Wall clock in ms; injected in tests. */
  now?: () => number;
  /** Longest the timer sleeps before re-reading the wall clock. Default 60 s. */
  maxSleepMs?: number;
  /** Jobs running at once. Default 4. */
  concurrency?: number;
  /** Called once per run: success, failure, or `SCHEDULER_DEADLINE` at the deadline. */
  onSettled?(outcome: JobOutcome): void;
}

interface Running {
  job: ScheduledJob;
  controller: AbortController;
  deadline: NodeJS.Timeout;
  settled: Promise<void>;
}

interface Periodic {
  intervalMs: number;
  fn: (signal: AbortSignal) => Promise<void> | void;
}

const EVERY_PREFIX = 'every:';

export class Scheduler {
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #maxSleepMs: number;
  readonly #concurrency: number;
  readonly #onSettled: ((o: JobOutcome) => void) | undefined;
  readonly #pending = new Map<string, ScheduledJob>();
  readonly #running = new Map<string, Running>();
  readonly #periodic = new Map<string, Periodic>();
  #timer: NodeJS.Timeout | undefined;
  #kickTimer: NodeJS.Timeout | undefined;
  #started = false;
  #stopped = false;

  constructor(opts: SchedulerOptions) {
    this.#log = opts.log;
    this.#now = opts.now ?? Date.now;
    this.#maxSleepMs = opts.maxSleepMs ?? 60_000;
    this.#concurrency = Math.max(1, opts.concurrency ?? 4);
    this.#onSettled = opts.onSettled;
  }

  /** Jobs waiting (not running). */
  pending(): number {
    return this.#pending.size;
  }

  /** Jobs running now. */
  running(): number {
    return this.#running.size;
  }

  /** Add a job; a pending job with the same id is replaced. A running one is not disturbed. */
  schedule(job: ScheduledJob): void {
    if (this.#stopped) throw new HearthError('SCHEDULER_STOPPED', 'scheduler is stopped');
    this.#pending.set(job.id, job);
    this.kick();
  }

  /** Remove a pending job and abort a running one with that id. True if either existed. */
  cancel(id: string): boolean {
    this.#periodic.delete(id);
    const had = this.#pending.delete(id);
    const run = this.#running.get(id);
    if (run) run.controller.abort(new HearthError('SCHEDULER_CANCELLED', `job ${id} cancelled`));
    if (had) this.kick();
    return had || run !== undefined;
  }

  /** Re-evaluate due jobs soon. Many kicks in one tick coalesce into one evaluation. */
  kick(): void {
    if (!this.#started || this.#stopped || this.#kickTimer) return;
    this.#kickTimer = setTimeout(() => {
      this.#kickTimer = undefined;
      this.#runDue();
    }, 0);
  }

  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    this.kick();
  }

  /**
   * Run `fn` every `intervalMs` (measured from the end of one run to the start of the next,
   * so slow runs never pile up), first after `intervalMs`. Its deadline is the interval.
   * Returns a function that stops it.
   */
  every(name: string, intervalMs: number, fn: (signal: AbortSignal) => Promise<void> | void): () => void {
    const id = EVERY_PREFIX + name;
    this.#periodic.set(id, { intervalMs, fn });
    this.#schedulePeriodic(id);
    return () => {
      this.cancel(id);
    };
  }

  /**
   * Stop: no new runs; running jobs are aborted (`SCHEDULER_STOPPED`) unless `abort` is
   * false, then awaited for at most `graceMs`. Pending jobs are dropped (their owner keeps
   * them on disk and reschedules at the next start).
   */
  async stop(opts?: { graceMs?: number; abort?: boolean }): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#kickTimer);
    this.#timer = this.#kickTimer = undefined;
    this.#pending.clear();
    this.#periodic.clear();
    const runs = [...this.#running.values()];
    if (opts?.abort ?? true) {
      for (const r of runs) r.controller.abort(new HearthError('SCHEDULER_STOPPED', 'scheduler stopping'));
    }
    if (runs.length === 0) return;
    let grace: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      grace = setTimeout(() => resolve(true), opts?.graceMs ?? 5_000);
    });
    const all = Promise.all(runs.map((r) => r.settled)).then(() => false);
    const late = await Promise.race([all, timedOut]);
    clearTimeout(grace);
    if (late) this.#log.warn({ running: this.#running.size }, 'scheduler stopped with jobs still running');
  }

  #schedulePeriodic(id: string): void {
    const p = this.#periodic.get(id);
    if (!p || this.#stopped) return;
    this.#pending.set(id, {
      id,
      dueAt: this.#now() + p.intervalMs,
      deadlineMs: p.intervalMs,
      run: async (signal) => {
        await p.fn(signal);
      },
    });
    this.kick();
  }

  #runDue(): void {
    if (!this.#started || this.#stopped) return;
    const now = this.#now();
    const due = [...this.#pending.values()].filter((j) => j.dueAt <= now && !this.#running.has(j.id)).sort((a, b) => a.dueAt - b.dueAt);
    for (const job of due) {
      if (this.#running.size >= this.#concurrency) break;
      this.#start(job);
    }
    this.#arm();
  }

  /** One timer, aimed at the earliest pending job, never longer than maxSleepMs. */
  #arm(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#stopped || this.#pending.size === 0) return;
    // Full: a finishing run calls #runDue, which re-arms. Nothing to wait for on the clock.
    if (this.#running.size >= this.#concurrency) return;
    let earliest = Infinity;
    for (const j of this.#pending.values()) if (!this.#running.has(j.id) && j.dueAt < earliest) earliest = j.dueAt;
    if (earliest === Infinity) return;
    const delay = Math.min(Math.max(0, earliest - this.#now()), this.#maxSleepMs);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#runDue();
    }, delay);
  }

  #start(job: ScheduledJob): void {
    this.#pending.delete(job.id);
    const controller = new AbortController();
    let done = false;
    const finish = (outcome: JobOutcome): void => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      if (this.#running.get(job.id)?.job === job) this.#running.delete(job.id);
      try {
        this.#onSettled?.(outcome);
      } catch (err) {
        this.#log.error({ err, job: job.id }, 'onSettled failed');
      }
      if (this.#periodic.has(job.id) && !this.#pending.has(job.id)) this.#schedulePeriodic(job.id);
      this.kick();
    };
    const deadline = setTimeout(() => {
      const err = new HearthError('SCHEDULER_DEADLINE', `job ${job.id} did not finish within ${job.deadlineMs} ms`);
      controller.abort(err);
      // The slot is freed now: a run that ignores its signal must not stall the queue.
      this.#log.warn({ job: job.id, deadlineMs: job.deadlineMs, code: err.code }, 'job timed out');
      finish({ id: job.id, ok: false, error: err });
    }, job.deadlineMs);
    const entry: Running = { job, controller, deadline, settled: Promise.resolve() };
    // Registered before run() is called: a run that throws synchronously settles at once.
    this.#running.set(job.id, entry);
    entry.settled = (async () => {
      try {
        await job.run(controller.signal);
        finish({ id: job.id, ok: true });
      } catch (err) {
        if (done) {
          this.#log.debug({ job: job.id, err }, 'job settled after its deadline');
          return;
        }
        this.#log.error({ err, job: job.id }, 'job failed');
        finish({ id: job.id, ok: false, error: err });
      }
    })();
  }
}
