import { mkdtemp, rm } from 'node:fs/promises';
import { afterEach } from 'vitest';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../../src/core/log.ts';
import { Scheduler } from '../../src/core/scheduler.ts';
import { OutboundQueue } from '../../src/queue/queue.ts';
import type { BounceMessage, DeliveryJob, DeliveryOutcome, QueuePolicy } from '../../src/queue/queue.ts';

/** A wall clock the test moves by hand; the scheduler re-reads it every few ms of real time. */
export class TestClock {
  t = Date.UTC(2025, 0, 1, 12, 0, 0);
  now = (): number => this.t;
}

export type Harness = {
  dir: string;
  clock: TestClock;
  scheduler: Scheduler;
  queue: OutboundQueue;
  bounces: BounceMessage[];
  calls: DeliveryJob[];
  /** deliver() calls that have returned (their outcome is applied before the next timer turn). */
  completed: { count: number };
  /** Move the clock and let the scheduler notice at once. */
  advance(ms: number): void;
  /** Stop the queue and scheduler as a clean shutdown would (files stay). */
  shutdown(): Promise<void>;
};

export const FAST_POLICY: Partial<QueuePolicy> = {
  firstRetryMs: 10 * 60_000,
  maxRetryMs: 40 * 60_000,
  lifetimeMs: 5 * 86_400_000,
  delayWarningMs: 0,
  maxConcurrent: 20,
  maxPerDomain: 4,
  attemptDeadlineMs: 10_000,
};

export async function tempDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'hearth-queue-'));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export async function makeQueue(opts: {
  dir?: string;
  clock?: TestClock;
  deliver: (job: DeliveryJob) => Promise<DeliveryOutcome>;
  policy?: Partial<QueuePolicy>;
  bounce?: (m: BounceMessage) => Promise<void>;
  start?: boolean;
}): Promise<Harness> {
  const dir = opts.dir ?? (await tempDir());
  const clock = opts.clock ?? new TestClock();
  const scheduler = new Scheduler({ log: silentLogger(), now: clock.now, maxSleepMs: 10, concurrency: 64 });
  const bounces: BounceMessage[] = [];
  const calls: DeliveryJob[] = [];
  const completed = { count: 0 };
  const queue = new OutboundQueue({
    dir,
    scheduler,
    hostname: 'hearth.example',
    log: silentLogger(),
    now: clock.now,
    policy: { ...FAST_POLICY, ...opts.policy },
    deliver: (job) => {
      calls.push(job);
      return opts.deliver(job).finally(() => {
        completed.count++;
      });
    },
    bounce: async (m) => {
      if (opts.bounce) await opts.bounce(m);
      bounces.push(m);
    },
  });
  scheduler.start();
  if (opts.start ?? true) await queue.start();
  return {
    dir,
    clock,
    scheduler,
    queue,
    bounces,
    calls,
    completed,
    advance(ms) {
      clock.t += ms;
      scheduler.kick();
    },
    async shutdown() {
      await queue.stop({ graceMs: 2_000 });
      await scheduler.stop({ graceMs: 2_000 });
    },
  };
}

/**
 * makeQueue for a test file: call once at its top; every queue it makes is shut down, and its
 * folder removed, after each test.
 */
export function queuesPerTest(): (opts: Parameters<typeof makeQueue>[0]) => Promise<Harness> {
  const harnesses: Harness[] = [];
  afterEach(async () => {
    for (const h of harnesses.splice(0)) {
      await h.shutdown();
      await removeDir(h.dir);
    }
  });
  return async (opts) => {
    const h = await makeQueue(opts);
    harnesses.push(h);
    return h;
  };
}

/** Poll until `cond` holds (bounded); fails the test with `what` otherwise. */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await cond())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Let already-due timers (the scheduler's kick, a 10 ms re-arm) run: a few event-loop turns. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 4; i++) await new Promise((r) => setTimeout(r, 15));
}

/** A deliver that answers every recipient of a job the same way. */
export function answerAll(status: 'delivered' | 'deferred' | 'failed', reply: string): (job: DeliveryJob) => Promise<DeliveryOutcome> {
  return async (job) => ({ recipients: job.recipients.map((r) => ({ address: r.address, status, reply })) });
}

export function message(subject = 'hello', from = 'alice@hearth.example'): Buffer {
  return Buffer.from(`From: ${from}\r\nTo: bob@remote.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@hearth.example>\r\n\r\nHi Bob,\r\nthis is ${subject}.\r\n`);
}

export function deferred<T>(): { promise: Promise<T>; resolve(v: T): void; reject(e: unknown): void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
