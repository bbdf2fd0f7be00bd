// ImapSession without sockets: a fake connection records what is written. Handler faults become
// NO [SERVERBUG] and the session stays usable; a table of hostile inputs gets an answer in every
// state; every do_* handler names a real state.
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { LoginLimiter } from '../../src/core/login-limiter.ts';
import { silentLogger } from '../../src/core/log.ts';
import { StateMachine } from '../../src/core/state-machine.ts';
import { ImapSession, STATES } from '../../src/imap/session.ts';
import type { LineConnection } from '../../src/core/connection.ts';
import type { UserMailboxes } from '../../src/store/mailboxes.ts';

function fakeSession(mailboxes: EventEmitter): { s: ImapSession; out: string[] } {
  const out: string[] = [];
  const conn = {
    secure: false,
    isLoopback: true,
    closed: false,
    remoteAddress: '127.0.0.1',
    socket: new EventEmitter(),
    writer: { write: async (d: string | Buffer) => void out.push(d.toString()) },
    reader: { readLiteral: async () => undefined },
    close: async (last?: string) => void out.push(last ?? ''),
  } as unknown as LineConnection;
  const s = new ImapSession(conn, {
    hostname: 'test',
    log: silentLogger(),
    backend: { authenticate: async () => ({ user: 'al', domain: 'example.org' }), open: async () => mailboxes as unknown as UserMailboxes },
    limiter: new LoginLimiter(),
    plaintext: 'always',
    timeouts: { login: 60_000, idle: 60_000 },
    maxMessage: 1 << 20,
    maxBadCommands: 10_000,
  });
  return { s, out };
}

const line = (text: string): Buffer => Buffer.from(text, 'latin1');

describe('ImapSession (no sockets)', () => {
  it('every do_* handler names a real state and verb', () => {
    expect(StateMachine.checkHandlers(ImapSession.prototype, STATES)).toEqual([]);
    expect(typeof (ImapSession.prototype as unknown as Record<string, unknown>).do_SELECTED_FETCH).toBe('function');
    expect(typeof (ImapSession.prototype as unknown as Record<string, unknown>).do_AUTHENTICATED_LIST).toBe('function');
  });

  it('a handler that throws gets NO [SERVERBUG], and the session carries on', async () => {
    const mailboxes = Object.assign(new EventEmitter(), {
      listFolders: async () => {
        throw new Error('disk on fire');
      },
    });
    const { s, out } = fakeSession(mailboxes);
    await s.onLine(line('a LOGIN al secret'));
    expect(out.pop()).toMatch(/^a OK \[CAPABILITY /);
    await s.onLine(line('b LIST "" *'));
    expect(out.pop()).toBe('b NO [SERVERBUG] internal error; please try again\r\n');
    await s.onLine(line('c NOOP'));
    expect(out.pop()).toBe('c OK NOOP completed\r\n');
    s.onClosed();
  });

  it('answers a table of hostile inputs in every state, never throwing', async () => {
    const hostile = [
      '', ' ', '*', 'a', 'a ', '+ x', 'a UID', 'a UID NOOP', 'a FETCH', 'a FETCH 1:* (BODY[1.2.3.MIME]<0.0>)', 'a SELECT "..', 'a CREATE "../x"',
      'a SELECT \xff\xfe', 'a LIST "" "\x00"', 'a STORE 1 +FLAGS (\\Nope)', 'a SEARCH NOT NOT NOT', 'a SEARCH CHARSET KOI8-R ALL', `a ${'A'.repeat(300)}`,
      'a APPEND INBOX {0}', 'a ID (', 'a ENABLE', 'a AUTHENTICATE', 'a LOGIN', 'a COPY 1', 'a EXPUNGE 1',
    ];
    const mailboxes = Object.assign(new EventEmitter(), {
      sync: async () => ({ uidValidity: 1, uidNext: 1, highestModseq: 1, messages: [] }),
      syncShared: async () => ({ uidValidity: 1, uidNext: 1, highestModseq: 1, messages: [] }),
      listFolders: async () => [{ name: 'INBOX', subscribed: true }],
      state: () => undefined,
    });
    const { s, out } = fakeSession(mailboxes);
    const states: string[] = [];
    for (const setup of [[], ['x LOGIN al secret'], ['y SELECT INBOX']]) {
      for (const l of setup) await s.onLine(line(l));
      states.push(s.state);
      for (const h of hostile) {
        const before = out.length;
        await s.onLine(line(h));
        // A literal marker waits for bytes; everything else is answered at once.
        if (!/\{\d+\}$/.test(h)) expect(out.length, `${s.state}: ${JSON.stringify(h)}`).toBeGreaterThan(before);
        expect(out[out.length - 1]).toMatch(/^(\S+ (OK|NO|BAD) |\+ )/);
      }
    }
    expect(states).toEqual(['NOT_AUTHENTICATED', 'AUTHENTICATED', 'SELECTED']);
    s.onClosed();
  });
});
