// The state machine every hearth protocol session stands on (POP3, IMAP, the SMTP relay
// client). It is in charge of three things and nothing else:
//  - the current `state`, changed only through `transition()`, which logs and re-arms the
//    state's idle timer (every state that waits on the network has a timer);
//  - reflective dispatch, as Twisted does: `do_${state}_${code}`, then the reply class
//    `do_${state}_5xx` (3-digit codes only), then `do_${state}_default`, then `do_default`,
//    so every (state, code) pair has an answer;
//  - containment: a handler that throws is a bug, not a protocol error; it is logged with its
//    stack, handed to `onHandlerError` (which answers `-ERR`, `NO [SERVERBUG]`, `451`) and the
//    machine stays usable.
import { HearthError } from './errors.ts';
import type { Logger } from './log.ts';

/** Default pattern for command verbs; reply-code clients pass `/^\d{3}$/`. */
export const VERB_PATTERN = /^[A-Z]{1,16}$/;
/** Pattern for SMTP reply codes, for the relay client. */
export const REPLY_CODE_PATTERN = /^\d{3}$/;

export type ReplyClass = '1xx' | '2xx' | '3xx' | '4xx' | '5xx';

/**
 * Every handler name a machine with states `S` and codes `C` may define. Use it to make tsc
 * catch a misspelt handler (see `StrayHandlers` and test/core/state-machine.test.ts).
 */
export type HandlerName<S extends string, C extends string> = 'do_default' | `do_${S}_${C | 'default'}`;

/**
 * The `do_*` members of `T` that are not valid handler names. Assert it is `never` in the
 * session's file, so a misspelling fails `tsc`:
 *
 *   const noStrayHandlers: NoStrayHandlers<Pop3Session, State, Verb> = true;
 */
export type StrayHandlers<T, S extends string, C extends string> = Exclude<Extract<keyof T, `do_${string}`>, HandlerName<S, C>>;
export type NoStrayHandlers<T, S extends string, C extends string> = [StrayHandlers<T, S, C>] extends [never] ? true : { strayHandlers: StrayHandlers<T, S, C> };

type AnyHandler = (...args: unknown[]) => unknown;

export interface StateMachineOptions {
  /** Codes must match this before a method name is built from them. */
  codePattern?: RegExp;
}

export abstract class StateMachine<S extends string> {
  #state: S;
  readonly log: Logger;
  readonly #idleMs: Readonly<Record<S, number>>;
  readonly #codePattern: RegExp;
  #timer: NodeJS.Timeout | undefined;
  #pauseDepth = 0;

  /** Arms the initial state's timer at once: the connection is already waiting on the peer. */
  constructor(initial: S, log: Logger, idleMs: Readonly<Record<S, number>>, opts?: StateMachineOptions) {
    this.#state = initial;
    this.log = log;
    this.#idleMs = idleMs;
    this.#codePattern = opts?.codePattern ?? VERB_PATTERN;
    this.rearm();
  }

  /** Called when the current state's idle timer expires (answer `421`/`* BYE`/`-ERR`, close). */
  abstract onTimeout(): void | Promise<void>;
  /** Called with the error when a handler throws or rejects; answer a generic server error. */
  abstract onHandlerError(err: unknown): void | Promise<void>;
  /** The answer of last resort; also receives invalid codes (never used to build a name). */
  abstract do_default(code: string, ...args: unknown[]): void | Promise<void>;

  /** The current state; read-only, since `transition()` is the only way to change it. */
  get state(): S {
    return this.#state;
  }

  /** The only way to change state. */
  transition(next: S, why: string): void {
    this.log.debug({ from: this.#state, to: next, why }, 'transition');
    this.#state = next;
    this.rearm();
  }

  /** Restart the current state's idle timer (0 ms = no timer). No-op while paused. */
  rearm(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#pauseDepth > 0) return;
    const ms = this.#idleMs[this.state];
    if (ms > 0) this.#timer = setTimeout(() => void this.#fireTimeout(), ms);
  }

  stopTimer(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Is an idle timer armed now? For tests and diagnostics. */
  get timerArmed(): boolean {
    return this.#timer !== undefined;
  }

  /**
   * Run our own slow work (store, index, DNS) without the client's idle timer running, as
   * Twisted's POP3 `_longOperation` does: a client must not time out because we are busy.
   * The timer of whatever state we are in afterwards is armed when `fn` settles. Nests.
   */
  async withTimerPaused<T>(fn: () => Promise<T>): Promise<T> {
    this.#pauseDepth++;
    this.stopTimer();
    try {
      return await fn();
    } finally {
      this.#pauseDepth--;
      this.rearm();
    }
  }

  /**
   * Route one input (a verb or a reply code) to its handler. Exact handlers get `...args`;
   * fallbacks (`_5xx`, `_default`, `do_default`) get `(code, ...args)` so they can say what
   * they did not understand. Never rejects.
   */
  async dispatch(code: string, ...args: unknown[]): Promise<void> {
    this.rearm();
    try {
      const self = this as unknown as Record<string, unknown>;
      let exact: unknown;
      let fallback: unknown;
      if (this.#codePattern.test(code)) {
        exact = self[`do_${this.state}_${code}`];
        if (typeof exact !== 'function' && REPLY_CODE_PATTERN.test(code)) fallback = self[`do_${this.state}_${code[0]}xx`];
        if (typeof exact !== 'function' && typeof fallback !== 'function') fallback = self[`do_${this.state}_default`];
      }
      if (typeof exact === 'function') await (exact as AnyHandler).apply(this, args);
      else if (typeof fallback === 'function') await (fallback as AnyHandler).call(this, code, ...args);
      else await this.do_default(code, ...args);
    } catch (err) {
      this.log.error({ err, state: this.state, code: safeCode(code) }, 'handler failed');
      try {
        await this.onHandlerError(err);
      } catch (err2) {
        this.log.error({ err: err2 }, 'onHandlerError failed');
      }
    }
  }

  async #fireTimeout(): Promise<void> {
    this.#timer = undefined;
    this.log.debug({ state: this.state }, 'idle timeout');
    try {
      await this.onTimeout();
    } catch (err) {
      this.log.error({ err }, 'onTimeout failed');
    }
  }

  /**
   * Every `do_*` method on `proto`'s chain whose name is not `do_default` or
   * `do_<state>_<code>` with a known state and a code that is `default`, a reply class
   * (`5xx`) or matches `codePattern`. Call it once at start-up (see `assertHandlers`).
   */
  static checkHandlers(proto: object, states: readonly string[], codePattern: RegExp = VERB_PATTERN): string[] {
    const bad: string[] = [];
    const seen = new Set<string>();
    for (let p: object | null = proto; p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
      for (const name of Object.getOwnPropertyNames(p)) {
        if (!name.startsWith('do_') || seen.has(name)) continue;
        seen.add(name);
        if (name === 'do_default') continue;
        const desc = Object.getOwnPropertyDescriptor(p, name);
        if (typeof desc?.value !== 'function') continue;
        const ok = states.some((s) => {
          const prefix = `do_${s}_`;
          if (!name.startsWith(prefix)) return false;
          const code = name.slice(prefix.length);
          return code === 'default' || /^[1-5]xx$/.test(code) || codePattern.test(code);
        });
        if (!ok) bad.push(name);
      }
    }
    return bad.sort();
  }

  /** `checkHandlers`, throwing `HearthError('STATE_MACHINE_BAD_HANDLER')` if any are found. */
  static assertHandlers(proto: object, states: readonly string[], codePattern?: RegExp): void {
    const bad = StateMachine.checkHandlers(proto, states, codePattern);
    if (bad.length > 0) throw new HearthError('STATE_MACHINE_BAD_HANDLER', `handlers for unknown states or codes: ${bad.join(', ')}`);
  }
}

/** A code as it may appear in logs: bounded, so a hostile 1 MB "verb" is not logged whole. */
function safeCode(code: string): string {
  return code.length > 32 ? `${code.slice(0, 32)}…` : code;
}
