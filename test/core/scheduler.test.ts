import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger, silentLogger } from '../../src/core/log.ts';
import { Scheduler } from '../../src/core/scheduler.ts';
import type { JobOutcome, ScheduledJob } from '../../src/core/scheduler.ts';

/** The wall clock the scheduler sees: fake time plus a jump we control (suspend/NTP step). */
let jump = 0;
const now = (): number => Date.now() + jump;

function deferred(): { promise: Promise<void>; resolve(): void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

function job(id: string, dueAt: number, run: (signal: AbortSignal) => Promise<void>, deadlineMs = 60_000): ScheduledJob {
  return { id, dueAt, deadlineMs, run };
}

let sched: Scheduler | undefined;
beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(new Date('2025-01-01T00:00:00Z'));
  jump = 0;
});
afterEach(async () => {
  await sched?.stop({ graceMs: 0 });
  sched = undefined;
  vi.useRealTimers();
});

function make(opts: { concurrency?: number; onSettled?: (o: JobOutcome) => void; log?: ReturnType<typeof silentLogger> } = {}): Scheduler {
  sched = new Scheduler({ log: opts.log ?? silentLogger(), now, maxSleepMs: 60_000, concurrency: opts.concurrency ?? 4, onSettled: opts.onSettled });
  sched.start();
  return sched;
}

describe('Scheduler', () => {
  it('runs jobs when due, in dueAt order', async () => {
    const s = make({ concurrency: 1 });
    const ran: Array<[string, number]> = [];
    const t0 = now();
    for (const [id, at] of [['c', 300], ['a', 100], ['b', 200]] as const) {
      s.schedule(job(id, t0 + at, async () => void ran.push([id, now() - t0])));
    }
    await vi.advanceTimersByTimeAsync(99);
    expect(ran).toEqual([]);
    expect(s.pending()).toBe(3);
    await vi.advanceTimersByTimeAsync(300);
    expect(ran).toEqual([['a', 100], ['b', 200], ['c', 300]]);
    expect(s.pending()).toBe(0);
  });

  it('replaces a pending job with the same id', async () => {
    const s = make();
    const ran: string[] = [];
    s.schedule(job('msg-1', now() + 1000, async () => void ran.push('old')));
    s.schedule(job('msg-1', now() + 50, async () => void ran.push('new')));
    expect(s.pending()).toBe(1);
    await vi.advanceTimersByTimeAsync(2000);
    expect(ran).toEqual(['new']);
  });

  it('cancel drops a pending job and aborts a running one', async () => {
    const s = make();
    const ran: string[] = [];
    s.schedule(job('later', now() + 1000, async () => void ran.push('later')));
    let reason: unknown;
    s.schedule(
      job('now', now(), (signal) => {
        ran.push('now');
        return new Promise<void>((_, reject) => signal.addEventListener('abort', () => reject((reason = signal.reason))));
      }),
    );
    await vi.advanceTimersByTimeAsync(1);
    expect(s.running()).toBe(1);
    expect(s.cancel('later')).toBe(true);
    expect(s.cancel('now')).toBe(true);
    expect(s.cancel('nothing')).toBe(false);
    await vi.advanceTimersByTimeAsync(5000);
    expect(ran).toEqual(['now']);
    expect(reason).toMatchObject({ code: 'SCHEDULER_CANCELLED' });
    expect(s.running()).toBe(0);
    expect(s.pending()).toBe(0);
  });

  it('runs at most `concurrency` jobs at once', async () => {
    const s = make({ concurrency: 2 });
    const gates = new Map<string, ReturnType<typeof deferred>>();
    const started: string[] = [];
    for (const id of ['j1', 'j2', 'j3', 'j4', 'j5']) {
      const d = deferred();
      gates.set(id, d);
      s.schedule(job(id, now(), async () => {
        started.push(id);
        await d.promise;
      }));
    }
    await vi.advanceTimersByTimeAsync(1);
    expect(started).toEqual(['j1', 'j2']);
    expect([s.running(), s.pending()]).toEqual([2, 3]);
    gates.get('j2')!.resolve();
    await vi.advanceTimersByTimeAsync(1);
    expect(started).toEqual(['j1', 'j2', 'j3']);
    expect([s.running(), s.pending()]).toEqual([2, 2]);
    for (const d of gates.values()) d.resolve();
    await vi.advanceTimersByTimeAsync(10);
    expect(started).toEqual(['j1', 'j2', 'j3', 'j4', 'j5']);
    expect([s.running(), s.pending()]).toEqual([0, 0]);
  });

  it('aborts a run at its deadline and reports SCHEDULER_DEADLINE, freeing the slot', async () => {
    const outcomes: JobOutcome[] = [];
    const s = make({ concurrency: 1, onSettled: (o) => outcomes.push(o) });
    let signal: AbortSignal | undefined;
    // A run that ignores its signal entirely: the scheduler must not stall behind it.
    s.schedule(job('stuck', now(), (sig) => {
      signal = sig;
      return new Promise<void>(() => {});
    }, 30_000));
    const after = vi.fn(async () => {});
    s.schedule(job('next', now() + 1, after));
    await vi.advanceTimersByTimeAsync(29_999);
    expect(signal?.aborted).toBe(false);
    expect(after).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(signal?.aborted).toBe(true);
    expect(signal?.reason).toMatchObject({ code: 'SCHEDULER_DEADLINE' });
    expect(outcomes[0]).toMatchObject({ id: 'stuck', ok: false, error: { code: 'SCHEDULER_DEADLINE' } });
    await vi.advanceTimersByTimeAsync(1);
    expect(after).toHaveBeenCalledTimes(1);
    expect(outcomes[1]).toEqual({ id: 'next', ok: true });
  });

  it('the deadline is monotonic: a wall-clock jump does not cut a run short', async () => {
    const s = make();
    let signal: AbortSignal | undefined;
    const d = deferred();
    s.schedule(job('run', now(), async (sig) => {
      signal = sig;
      await d.promise;
    }, 10_000));
    await vi.advanceTimersByTimeAsync(1);
    jump += 24 * 3600_000;
    await vi.advanceTimersByTimeAsync(5_000);
    expect(signal?.aborted).toBe(false);
    d.resolve();
  });

  it('notices a wall-clock jump within maxSleepMs and runs everything overdue once, in order', async () => {
    const s = make({ concurrency: 1 });
    const ran: string[] = [];
    const t0 = now();
    s.schedule(job('retry-3h', t0 + 3 * 3600_000, async () => void ran.push('retry-3h')));
    s.schedule(job('retry-1h', t0 + 3600_000, async () => void ran.push('retry-1h')));
    s.schedule(job('retry-2h', t0 + 2 * 3600_000, async () => void ran.push('retry-2h')));
    s.schedule(job('retry-5h', t0 + 5 * 3600_000, async () => void ran.push('retry-5h')));
    await vi.advanceTimersByTimeAsync(1000);
    expect(ran).toEqual([]);
    // The laptop slept for 4 hours: the wall clock moved, the monotonic timers did not.
    jump += 4 * 3600_000;
    await vi.advanceTimersByTimeAsync(60_000);
    expect(ran).toEqual(['retry-1h', 'retry-2h', 'retry-3h']);
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(ran).toEqual(['retry-1h', 'retry-2h', 'retry-3h']);
    expect(s.pending()).toBe(1);
  });

  it('logs a throwing job and keeps going', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger('info', { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const outcomes: JobOutcome[] = [];
    const s = make({ log, onSettled: (o) => outcomes.push(o) });
    s.schedule(job('bad', now(), async () => {
      throw new Error('relay exploded');
    }));
    s.schedule(job('sync-bad', now(), (() => {
      throw new Error('sync throw');
    }) as () => Promise<void>));
    const good = vi.fn(async () => {});
    s.schedule(job('good', now() + 10, good));
    await vi.advanceTimersByTimeAsync(20);
    expect(good).toHaveBeenCalledTimes(1);
    // The two failures settle in microtask order; only the set matters.
    expect(outcomes.map((o) => `${o.id}:${o.ok}`).sort()).toEqual(['bad:false', 'good:true', 'sync-bad:false']);
    const failed = lines.filter((l) => l.msg === 'job failed') as Array<{ job: string; err: { stack: string } }>;
    expect(failed.map((l) => l.job).sort()).toEqual(['bad', 'sync-bad']);
    expect(failed.find((l) => l.job === 'bad')!.err.stack).toContain('relay exploded');
    expect(s.running()).toBe(0);
  });

  it('coalesces kicks: many schedules in one tick arm a single evaluation', async () => {
    const s = make();
    for (let i = 0; i < 100; i++) s.schedule(job(`j${i}`, now() + 1000 + i, async () => {}));
    expect(vi.getTimerCount()).toBe(1);
    s.kick();
    s.kick();
    expect(vi.getTimerCount()).toBe(1);
    await vi.advanceTimersByTimeAsync(0);
    expect(vi.getTimerCount()).toBe(1); // now: the one timer aimed at the earliest job
  });

  it('every(): runs periodic housekeeping on the same machinery until stopped', async () => {
    const s = make();
    const ticks: number[] = [];
    const t0 = now();
    const stopCleanup = s.every('maildir-tmp-cleanup', 1000, async () => {
      ticks.push(now() - t0);
    });
    await vi.advanceTimersByTimeAsync(3500);
    expect(ticks).toEqual([1000, 2000, 3000]);
    stopCleanup();
    await vi.advanceTimersByTimeAsync(5000);
    expect(ticks).toEqual([1000, 2000, 3000]);
    expect(s.pending()).toBe(0);
  });

  it('every(): a failing or hanging run does not end the series', async () => {
    const s = make();
    let n = 0;
    s.every('flaky', 1000, () => {
      n++;
      if (n === 1) throw new Error('first fails');
      if (n === 2) return new Promise<void>(() => {}); // hangs: cut off at its deadline (the interval)
      return Promise.resolve();
    });
    await vi.advanceTimersByTimeAsync(1000); // run 1 fails
    await vi.advanceTimersByTimeAsync(1000); // run 2 starts and hangs
    await vi.advanceTimersByTimeAsync(1000); // run 2 deadline
    await vi.advanceTimersByTimeAsync(1000); // run 3
    expect(n).toBe(3);
  });

  it('stop(): aborts in-flight runs and waits for them within the grace period', async () => {
    const s = make();
    let cleanedUp = false;
    s.schedule(job('inflight', now(), (signal) => new Promise<void>((resolve) => {
      signal.addEventListener('abort', () => {
        cleanedUp = true;
        resolve();
      });
    })));
    s.schedule(job('future', now() + 1000, async () => {
      throw new Error('must not run');
    }));
    await vi.advanceTimersByTimeAsync(1);
    expect(s.running()).toBe(1);
    await s.stop({ graceMs: 1000 });
    expect(cleanedUp).toBe(true);
    expect([s.running(), s.pending()]).toEqual([0, 0]);
    expect(() => s.schedule(job('x', now(), async () => {}))).toThrow(/stopped/);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('stop(): gives up on a run that ignores its signal after graceMs', async () => {
    const s = make();
    s.schedule(job('deaf', now(), () => new Promise<void>(() => {})));
    await vi.advanceTimersByTimeAsync(1);
    const stopped = s.stop({ graceMs: 2000 });
    let done = false;
    void stopped.then(() => {
      done = true;
    });
    await vi.advanceTimersByTimeAsync(1999);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(done).toBe(true);
  });
});
