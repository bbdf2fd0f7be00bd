// A worker_threads pool for CPU-heavy work (hashing, parsing very large messages, index
// rebuilds), so no handler blocks the one event loop for long (DESIGN invariant 6).
// Tasks are named functions in task modules the workers import: core's own
// `worker-tasks.ts`, plus any module another folder passes by URL in `taskModules`.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { HearthError } from './errors.ts';
import type { Logger } from './log.ts';

const WORKER_MAIN = new URL('./worker-main.ts', import.meta.url);
const CORE_TASKS = new URL('./worker-tasks.ts', import.meta.url).href;

/** A task threw in the worker; `remoteName`/`remoteCode`/`stack` come from there. */
export class WorkerTaskError extends HearthError {
  readonly remoteName: string;
  readonly remoteCode: unknown;
  constructor(remote: { name: string; message: string; stack?: string; code?: unknown }) {
    super(typeof remote.code === 'string' && remote.code.startsWith('WORKER_') ? remote.code : 'WORKER_TASK_FAILED', remote.message);
    this.remoteName = remote.name;
    this.remoteCode = remote.code;
    if (remote.stack) this.stack = `${this.name}: ${remote.message}\n    [in worker] ${remote.stack}`;
  }
}

export interface WorkerPoolOptions {
  /** Threads. Default max(1, cpus - 1), leaving one for the event loop. */
  size?: number;
  log: Logger;
  /** Extra task modules (file URLs, e.g. `new URL('../store/tasks.ts', import.meta.url).href`). */
  taskModules?: readonly (string | URL)[];
}

export interface RunOptions {
  /** Aborting rejects with the signal's reason; a running task's worker is terminated. */
  signal?: AbortSignal;
  /** ArrayBuffers moved (not copied) to the worker; unusable here afterwards. */
  transfer?: ArrayBuffer[];
}

interface Job {
  id: number;
  task: string;
  payload: unknown;
  transfer: ArrayBuffer[];
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

interface Slot {
  worker: Worker;
  job: Job | undefined;
  /** Set once the worker is being replaced: its late events are ignored. */
  dead: boolean;
}

type Reply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: { name: string; message: string; stack?: string; code?: unknown } };

export class WorkerPool {
  readonly #size: number;
  readonly #log: Logger;
  readonly #modules: string[];
  readonly #slots = new Set<Slot>();
  readonly #queue: Job[] = [];
  #nextId = 1;
  #closed = false;

  constructor(opts: WorkerPoolOptions) {
    this.#size = Math.max(1, opts.size ?? availableParallelism() - 1);
    this.#log = opts.log;
    this.#modules = [CORE_TASKS, ...(opts.taskModules ?? []).map((m) => String(m))];
  }

  /** Threads alive now (they start on demand, up to `size`). */
  get threads(): number {
    return this.#slots.size;
  }

  /** Jobs waiting for a free thread. */
  get queued(): number {
    return this.#queue.length;
  }

  run<T>(task: string, payload: unknown, opts?: RunOptions): Promise<T> {
    if (this.#closed) return Promise.reject(new HearthError('WORKER_POOL_CLOSED', 'worker pool is closed'));
    const signal = opts?.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<T>((resolve, reject) => {
      const job: Job = {
        id: this.#nextId++,
        task,
        payload,
        transfer: opts?.transfer ?? [],
        signal,
        onAbort: undefined,
        resolve: resolve as (v: unknown) => void,
        reject,
      };
      if (signal) {
        job.onAbort = () => this.#abort(job);
        signal.addEventListener('abort', job.onAbort, { once: true });
      }
      this.#queue.push(job);
      this.#pump();
    });
  }

  /** Terminate every thread; queued and running jobs reject with `WORKER_POOL_CLOSED`. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const err = new HearthError('WORKER_POOL_CLOSED', 'worker pool is closed');
    for (const job of this.#queue.splice(0)) this.#settle(job, err);
    const exits: Promise<number>[] = [];
    for (const slot of this.#slots) {
      slot.dead = true;
      if (slot.job) this.#settle(slot.job, err);
      slot.job = undefined;
      exits.push(slot.worker.terminate());
    }
    this.#slots.clear();
    await Promise.all(exits);
  }

  #pump(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      let slot: Slot | undefined;
      for (const s of this.#slots) {
        if (!s.job) {
          slot = s;
          break;
        }
      }
      if (!slot) {
        if (this.#slots.size >= this.#size) return;
        slot = this.#spawn();
      }
      const job = this.#queue.shift()!;
      slot.job = job;
      try {
        slot.worker.postMessage({ id: job.id, task: job.task, payload: job.payload }, job.transfer);
      } catch (err) {
        // e.g. a payload that cannot be cloned: the job's fault, not the worker's.
        slot.job = undefined;
        this.#settle(job, err);
      }
    }
  }

  #spawn(): Slot {
    const worker = new Worker(WORKER_MAIN, { workerData: { taskModules: this.#modules } });
    const slot: Slot = { worker, job: undefined, dead: false };
    worker.on('message', (reply: Reply) => {
      if (slot.dead) return;
      const job = slot.job;
      if (!job || job.id !== reply.id) return;
      slot.job = undefined;
      if (reply.ok) this.#settle(job, undefined, reply.result);
      else this.#settle(job, new WorkerTaskError(reply.error));
      this.#pump();
    });
    worker.on('error', (err) => this.#crashed(slot, err));
    worker.on('exit', (code) => this.#crashed(slot, new HearthError('WORKER_CRASHED', `worker exited with code ${code}`)));
    this.#slots.add(slot);
    return slot;
  }

  /** A worker died (uncaught error, process.exit, OOM): reject its job, replace it on demand. */
  #crashed(slot: Slot, cause: unknown): void {
    if (slot.dead) return;
    slot.dead = true;
    this.#slots.delete(slot);
    void slot.worker.terminate();
    const job = slot.job;
    slot.job = undefined;
    this.#log.error({ err: cause, task: job?.task }, 'worker crashed');
    if (job) this.#settle(job, new HearthError('WORKER_CRASHED', `worker crashed running "${job.task}"`, { cause }));
    this.#pump();
  }

  #abort(job: Job): void {
    const reason: unknown = job.signal?.reason;
    const queued = this.#queue.indexOf(job);
    if (queued >= 0) {
      this.#queue.splice(queued, 1);
      this.#settle(job, reason);
      return;
    }
    for (const slot of this.#slots) {
      if (slot.job === job) {
        // The only way to stop CPU-bound JavaScript is to end its thread.
        slot.dead = true;
        slot.job = undefined;
        this.#slots.delete(slot);
        void slot.worker.terminate();
        this.#settle(job, reason);
        this.#pump();
        return;
      }
    }
  }

  #settle(job: Job, err: unknown, result?: unknown): void {
    if (job.onAbort) job.signal?.removeEventListener('abort', job.onAbort);
    if (err !== undefined) job.reject(err);
    else job.resolve(result);
  }
}
