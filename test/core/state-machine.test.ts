import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/core/log.ts';
import type { Logger } from '../../src/core/log.ts';
import { REPLY_CODE_PATTERN, StateMachine } from '../../src/core/state-machine.ts';
import type { HandlerName, NoStrayHandlers, ReplyClass } from '../../src/core/state-machine.ts';

/** A pino logger whose JSON lines land in an array. */
function capture(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger('debug', { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

const STATES = ['AUTHORIZATION', 'TRANSACTION', 'CLOSED'] as const;
type State = (typeof STATES)[number];
type Verb = 'USER' | 'PASS' | 'STAT' | 'QUIT';
const IDLE_MS: Record<State, number> = { AUTHORIZATION: 60_000, TRANSACTION: 600_000, CLOSED: 0 };

class Pop3Like extends StateMachine<State> {
  calls: string[] = [];
  constructor(log: Logger) {
    super('AUTHORIZATION', log, IDLE_MS);
  }
  do_AUTHORIZATION_USER(args: string): void {
    this.calls.push(`USER ${args}`);
  }
  do_AUTHORIZATION_PASS(): void {
    this.calls.push('PASS');
    this.transition('TRANSACTION', 'logged in');
  }
  do_AUTHORIZATION_default(code: string): void {
    this.calls.push(`auth-default ${code}`);
  }
  async do_TRANSACTION_STAT(): Promise<void> {
    await Promise.resolve();
    throw new Error('store exploded');
  }
  do_TRANSACTION_QUIT(): void {
    this.calls.push('QUIT');
    this.transition('CLOSED', 'QUIT');
  }
  do_default(code: string, ...args: unknown[]): void {
    this.calls.push(args.length > 0 ? `default ${code} ${args.join(' ')}` : `default ${code}`);
  }
  onHandlerError(err: unknown): void {
    this.calls.push(`-ERR server error: ${(err as Error).message}`);
  }
  onTimeout(): void {
    this.calls.push(`timeout in ${this.state}`);
    this.transition('CLOSED', 'timeout');
  }
}

// The compile-time check: every do_* member of Pop3Like is a known (state, verb) pair. If a
// handler is misspelt (do_TRANSACTON_STAT), this line fails tsc.
const pop3NoStray: NoStrayHandlers<Pop3Like, State, Verb> = true;

afterEach(() => {
  vi.useRealTimers();
});

describe('StateMachine dispatch', () => {
  it('calls the exact handler with the arguments', async () => {
    const m = new Pop3Like(capture().log);
    await m.dispatch('USER', 'alice');
    expect(m.calls).toEqual(['USER alice']);
    m.stopTimer();
  });

  it('falls back to the state default, then the global default', async () => {
    const m = new Pop3Like(capture().log);
    await m.dispatch('STAT');
    expect(m.calls).toEqual(['auth-default STAT']);
    m.transition('TRANSACTION', 'test');
    await m.dispatch('NOOP', 'x');
    expect(m.calls).toEqual(['auth-default STAT', 'default NOOP x']);
    m.stopTimer();
  });

  it('never builds a name from an invalid code', async () => {
    const m = new Pop3Like(capture().log);
    const evil = Object.assign(m, { do_AUTHORIZATION_user: () => m.calls.push('lowercase handler ran') });
    for (const code of ['__proto__', 'constructor', 'user', 'USER\r\n', 'USER X', '', 'A'.repeat(17), 'toString', 'do_default']) {
      await evil.dispatch(code);
    }
    expect(m.calls).toEqual([
      'default __proto__',
      'default constructor',
      'default user',
      'default USER\r\n',
      'default USER X',
      'default ',
      `default ${'A'.repeat(17)}`,
      'default toString',
      'default do_default',
    ]);
    m.stopTimer();
  });

  it('hands a handler exception to onHandlerError, logs its stack, and stays usable', async () => {
    const { log, lines } = capture();
    const m = new Pop3Like(log);
    m.transition('TRANSACTION', 'test');
    await expect(m.dispatch('STAT')).resolves.toBeUndefined();
    expect(m.calls).toEqual(['-ERR server error: store exploded']);
    const logged = lines.find((l) => l.msg === 'handler failed') as { err: { stack: string }; state: string; code: string };
    expect(logged.err.stack).toContain('store exploded');
    expect(logged.state).toBe('TRANSACTION');
    expect(logged.code).toBe('STAT');
    await m.dispatch('QUIT');
    expect(m.state).toBe('CLOSED');
  });

  it('contains a synchronous throw and a throwing onHandlerError', async () => {
    const { log, lines } = capture();
    class Fragile extends Pop3Like {
      do_AUTHORIZATION_USER(): void {
        throw new TypeError('sync bug');
      }
      override onHandlerError(): void {
        throw new Error('reply failed too');
      }
    }
    const m = new Fragile(log);
    await expect(m.dispatch('USER')).resolves.toBeUndefined();
    expect(lines.map((l) => l.msg)).toEqual(['handler failed', 'onHandlerError failed']);
    await m.dispatch('PASS');
    expect(m.state).toBe('TRANSACTION');
    m.stopTimer();
  });

  it('logs every transition at debug with from, to and why', async () => {
    const { log, lines } = capture();
    const m = new Pop3Like(log);
    await m.dispatch('PASS');
    await m.dispatch('QUIT');
    const transitions = lines.filter((l) => l.msg === 'transition').map(({ from, to, why, level }) => ({ from, to, why, level }));
    expect(transitions).toEqual([
      { from: 'AUTHORIZATION', to: 'TRANSACTION', why: 'logged in', level: 20 },
      { from: 'TRANSACTION', to: 'CLOSED', why: 'QUIT', level: 20 },
    ]);
  });
});

type RelayState = 'MAIL' | 'RCPT';
type ReplyCode = '250' | '550' | ReplyClass;

class RelayLike extends StateMachine<RelayState> {
  seen: string[] = [];
  constructor(log: Logger) {
    super('RCPT', log, { MAIL: 300_000, RCPT: 300_000 }, { codePattern: REPLY_CODE_PATTERN });
  }
  do_RCPT_250(text: string): void {
    this.seen.push(`ok ${text}`);
  }
  do_RCPT_5xx(code: string, text: string): void {
    this.seen.push(`permanent ${code} ${text}`);
  }
  do_RCPT_default(code: string): void {
    this.seen.push(`rcpt-default ${code}`);
  }
  do_default(code: string): void {
    this.seen.push(`default ${code}`);
  }
  onHandlerError(): void {}
  onTimeout(): void {}
}
const relayNoStray: NoStrayHandlers<RelayLike, RelayState, ReplyCode> = true;

describe('StateMachine reply codes', () => {
  it('tries exact code, then reply class, then state default', async () => {
    const m = new RelayLike(capture().log);
    await m.dispatch('250', 'accepted');
    await m.dispatch('550', 'no such user');
    await m.dispatch('551', 'moved');
    await m.dispatch('451', 'later');
    await m.dispatch('25O', 'letter O');
    m.transition('MAIL', 'test');
    await m.dispatch('250', 'x');
    expect(m.seen).toEqual(['ok accepted', 'permanent 550 no such user', 'permanent 551 moved', 'rcpt-default 451', 'default 25O', 'default 250']);
    m.stopTimer();
  });
});

describe('StateMachine timers', () => {
  it('fires the idle timer of the current state only', async () => {
    vi.useFakeTimers();
    const m = new Pop3Like(capture().log);
    await vi.advanceTimersByTimeAsync(59_999);
    expect(m.calls).toEqual([]);
    await m.dispatch('USER', 'a'); // input re-arms
    await vi.advanceTimersByTimeAsync(59_999);
    expect(m.calls).toEqual(['USER a']);
    await m.dispatch('PASS'); // TRANSACTION: 600 s
    await vi.advanceTimersByTimeAsync(599_999);
    expect(m.calls).toEqual(['USER a', 'PASS']);
    await vi.advanceTimersByTimeAsync(1);
    expect(m.calls).toEqual(['USER a', 'PASS', 'timeout in TRANSACTION']);
    expect(m.state).toBe('CLOSED');
    expect(m.timerArmed).toBe(false); // CLOSED: 0 = no timer
    expect(vi.getTimerCount()).toBe(0);
  });

  it('withTimerPaused: slow store work does not time the client out, and re-arms after', async () => {
    vi.useFakeTimers();
    const m = new Pop3Like(capture().log);
    const work = m.withTimerPaused(async () => {
      await new Promise((r) => setTimeout(r, 10 * 60_000)); // store busy for 10 minutes
      return 42;
    });
    expect(m.timerArmed).toBe(false);
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    await expect(work).resolves.toBe(42);
    expect(m.calls).toEqual([]);
    expect(m.timerArmed).toBe(true);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(m.calls).toEqual(['timeout in AUTHORIZATION']);
  });

  it('withTimerPaused re-arms even when the work throws', async () => {
    vi.useFakeTimers();
    const m = new Pop3Like(capture().log);
    await expect(m.withTimerPaused(() => Promise.reject(new Error('disk')))).rejects.toThrow('disk');
    expect(m.timerArmed).toBe(true);
    m.stopTimer();
  });
});

describe('StateMachine.checkHandlers', () => {
  it('accepts a correct class and finds misspelt states and codes along the prototype chain', () => {
    expect(StateMachine.checkHandlers(Pop3Like.prototype, STATES)).toEqual([]);
    expect(StateMachine.checkHandlers(RelayLike.prototype, ['MAIL', 'RCPT'], REPLY_CODE_PATTERN)).toEqual([]);
    class Misspelt extends Pop3Like {
      do_TRANSACTON_LIST(): void {}
      do_TRANSACTION_list(): void {}
    }
    class Deeper extends Misspelt {
      do_CLOSD_default(): void {}
    }
    expect(StateMachine.checkHandlers(Deeper.prototype, STATES)).toEqual(['do_CLOSD_default', 'do_TRANSACTION_list', 'do_TRANSACTON_LIST']);
    expect(() => StateMachine.assertHandlers(Deeper.prototype, STATES)).toThrow(/do_TRANSACTON_LIST/);
  });

  it('types a handler table so tsc rejects a misspelling', () => {
    // Handlers kept in a table (wildduck style) get an excess-property check from tsc.
    type Table = Partial<Record<HandlerName<State, Verb>, (this: Pop3Like, args: string) => void>>;
    const good: Table = { do_TRANSACTION_STAT() {} };
    const bad: Table = {
      // @ts-expect-error -- misspelt state: tsc reports it (and fails if it stops doing so)
      do_TRANSACTON_STAT() {},
    };
    expect(Object.keys(good)).toEqual(['do_TRANSACTION_STAT']);
    expect(StateMachine.checkHandlers(bad, STATES)).toEqual(['do_TRANSACTON_STAT']);
    // Classes: NoStrayHandlers<Session, State, Verb> must be `true` (see pop3NoStray above).
    class Typo extends Pop3Like {
      do_TRANSACTON_QUIT(): void {}
    }
    // @ts-expect-error -- the misspelt method makes NoStrayHandlers an error object, not `true`
    const typoNoStray: NoStrayHandlers<Typo, State, Verb> = true;
    expect([pop3NoStray, relayNoStray, typoNoStray]).toEqual([true, true, true]);
  });
});

describe('StateMachine state', () => {
  it('can be read but not assigned: transition() is the only way to change it', () => {
    const { log, lines } = capture();
    const m = new Pop3Like(log);
    expect(m.state).toBe('AUTHORIZATION');
    // @ts-expect-error -- `state` has a getter only
    expect(() => (m.state = 'TRANSACTION')).toThrow(TypeError);
    expect(m.state).toBe('AUTHORIZATION');
    expect(Object.keys(m)).not.toContain('state');
    m.transition('TRANSACTION', 'test');
    expect(m.state).toBe('TRANSACTION');
    expect(lines.filter((l) => l.msg === 'transition')).toHaveLength(1);
    m.stopTimer();
  });
});
