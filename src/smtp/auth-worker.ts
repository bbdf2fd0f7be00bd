// Sender checks off the event loop (DESIGN invariant 6): mailauth's DKIM canonicalization, key
// parsing and signature verification are CPU work, about a third of a millisecond per small
// message, which on the loop would delay every other connection. One worker thread runs them
// for many messages at once; its DNS questions come back here, to the shared DnsCache.
// Messages spooled to disk (bigger than [inbound] spool_memory) are checked on the loop, as
// they are streamed in chunks anyway. If the thread dies, the checks it had fall back to the
// loop, and the next message starts a new thread.
import { Worker } from 'node:worker_threads';
import type { Logger } from '../core/log.ts';
import { SenderAuthenticator } from './auth-checks.ts';
import type { AuthInput, AuthOutcome, SenderAuthOptions } from './auth-checks.ts';
import { DnsCache } from './dns-cache.ts';
import type { DnsResolver } from './dns-cache.ts';

export type ToWorker =
  | { type: 'check'; id: number; input: Omit<AuthInput, 'message'> & { message: Uint8Array } }
  /** An answer (or "does not exist": `code`), and how long the thread may keep it. */
  | { type: 'dns'; id: number; ok: true; value?: unknown; code?: string; expiresInMs: number }
  | { type: 'dns'; id: number; ok: false; code: string | undefined; message: string };

type FromWorker =
  | { type: 'done'; id: number; outcome: AuthOutcome }
  | { type: 'failed'; id: number; message: string }
  | { type: 'dns'; id: number; name: string; rrtype: string };

const WORKER_MAIN = new URL('./auth-worker-main.ts', import.meta.url);

/** A check in a thread, and which thread: a dying thread's checks, and only its, move to the loop. */
type Pending = { input: AuthInput; worker: Worker; resolve(o: AuthOutcome): void; reject(e: unknown): void };

export class AuthCheckWorker {
  readonly #opts: SenderAuthOptions;
  readonly #log: Logger;
  /** For messages on disk, and whatever a dying thread leaves behind. */
  readonly #local: SenderAuthenticator;
  readonly #pending = new Map<number, Pending>();
  #worker: Worker | undefined;
  #nextId = 1;
  #closed = false;

  constructor(opts: SenderAuthOptions & { resolver: DnsResolver }, log: Logger) {
    if (opts.random) throw new TypeError('AuthCheckWorker cannot pass a random() to its thread');
    this.#opts = opts;
    this.#log = log;
    this.#local = new SenderAuthenticator(opts);
  }

  check(input: AuthInput): Promise<AuthOutcome> {
    if (!Buffer.isBuffer(input.message) || this.#closed) return this.#local.check(input);
    const worker = this.#worker ?? this.#start();
    const id = this.#nextId++;
    return new Promise<AuthOutcome>((resolve, reject) => {
      this.#pending.set(id, { input, worker, resolve, reject });
      const { message, ...rest } = input as AuthInput & { message: Buffer };
      worker.postMessage({ type: 'check', id, input: { ...rest, message } } satisfies ToWorker);
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    const w = this.#worker;
    this.#worker = undefined;
    this.#failOver('closing', undefined);
    await w?.terminate();
  }

  #start(): Worker {
    const { resolver: _resolver, random: _random, ...data } = this.#opts;
    const w = new Worker(WORKER_MAIN, { workerData: data });
    // Idle, the thread must not keep the process alive.
    w.unref();
    w.on('message', (msg: FromWorker) => this.#onMessage(w, msg));
    w.on('error', (err) => {
      this.#log.error({ err }, 'sender-checks thread failed; checking on the event loop until it restarts');
      this.#lost(w);
    });
    w.on('exit', (code) => {
      if (!this.#closed) this.#log.warn({ code }, 'sender-checks thread exited');
      this.#lost(w);
    });
    this.#worker = w;
    return w;
  }

  #onMessage(w: Worker, msg: FromWorker): void {
    if (msg.type === 'dns') {
      const resolver = this.#opts.resolver;
      const answer = resolver instanceof DnsCache ? resolver.answer(msg.name, msg.rrtype) : resolver.resolve(msg.name, msg.rrtype).then((value) => ({ value, expiresInMs: 0 }));
      answer.then(
        (a) => w.postMessage({ type: 'dns', id: msg.id, ok: true, ...a } satisfies ToWorker),
        (err: unknown) => w.postMessage({ type: 'dns', id: msg.id, ok: false, code: (err as NodeJS.ErrnoException)?.code, message: (err as Error)?.message ?? String(err) } satisfies ToWorker),
      );
      return;
    }
    const p = this.#pending.get(msg.id);
    if (!p) return;
    this.#pending.delete(msg.id);
    if (msg.type === 'done') p.resolve(msg.outcome);
    else p.reject(new Error(`sender checks failed in their thread: ${msg.message}`));
  }

  #lost(w: Worker): void {
    if (this.#worker === w) this.#worker = undefined;
    // A thread that fails reports 'error' and then 'exit': by the second, a new thread may hold
    // checks of its own, which must stay there (run on the loop too, they would run twice).
    this.#failOver('thread lost', w);
  }

  /** Checks that thread `w` (any thread, when undefined) can no longer answer are done here instead. */
  #failOver(why: string, w: Worker | undefined): void {
    const moved = [...this.#pending].filter(([, p]) => w === undefined || p.worker === w);
    if (moved.length === 0) return;
    this.#log.debug({ checks: moved.length, why }, 'sender checks moved to the event loop');
    for (const [id, p] of moved) {
      this.#pending.delete(id);
      this.#local.check(p.input).then(p.resolve, p.reject);
    }
  }
}
