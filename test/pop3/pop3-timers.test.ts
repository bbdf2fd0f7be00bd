// POP3 timers and rate limits over real sockets: the login deadline, the bad-command limit
// before login, the write-stall autologout, the configured commands-per-second pacing and the
// growing delay after failed logins.
import { describe, expect, it } from 'vitest';
import { performance } from 'node:perf_hooks';
import { LoginLimiter } from '../../src/core/login-limiter.ts';
import { createLogger } from '../../src/core/log.ts';
import { Pop3Server } from '../../src/pop3/server.ts';
import { RawLines } from '../helpers/raw-lines.ts';
import { POP_LISTENERS, fakeMaildrop, popLogin, storeMessage, withHearth, withLoggedHearth } from './pop3-helpers.ts';

describe('POP3 login deadline', () => {
  it('closes a client that keeps sending CAPA but never logs in, at the deadline, with -ERR', async () => {
    await withHearth(`${POP_LISTENERS}[timeouts]\npop3_login = "1500ms"\npop3_idle = "10m"\n`, async (hearth) => {
      const c = await RawLines.connect(hearth.port('pop3'));
      await c.line();
      const started = performance.now();
      let last = '';
      // The deadline's -ERR may arrive while we wait between commands: read whatever comes next.
      while (performance.now() - started < 6_000) {
        if (!c.closed) c.send('CAPA\r\n');
        const status = await c.line().catch(() => '');
        if (!status.startsWith('+OK')) {
          last = status;
          break;
        }
        await c.dotBody();
        await new Promise((r) => setTimeout(r, 200));
      }
      const elapsed = performance.now() - started;
      expect(last).toBe('-ERR authentication deadline passed; closing the connection');
      expect(await c.waitClosed(2_000)).toBe(true);
      expect(elapsed).toBeGreaterThan(1_300);
      expect(elapsed).toBeLessThan(3_500);
    });
  });

  it('a login in time clears the deadline; the session lives on', async () => {
    await withHearth(`${POP_LISTENERS}[timeouts]\npop3_login = "600ms"\n`, async (hearth) => {
      const c = await popLogin(hearth.port('pop3'));
      await new Promise((r) => setTimeout(r, 1_000));
      expect(await c.command('NOOP')).toMatch(/^\+OK/);
      c.close();
    });
  });

  it('counts wrong-state commands before login towards the bad-command limit', async () => {
    await withHearth(POP_LISTENERS, async (hearth) => {
      const c = await RawLines.connect(hearth.port('pop3'));
      await c.line();
      for (let i = 0; i < 10; i++) expect(await c.command(i % 2 ? 'STAT' : 'RETR 1')).toMatch(/^-ERR .*needs a login first/);
      expect(await c.command('LIST')).toBe('-ERR too many bad commands; closing the connection');
      expect(await c.waitClosed()).toBe(true);
    });
  });
});

describe('POP3 write-stall autologout', () => {
  it('drops a client that stops reading mid-RETR of a big message, without buffering the message', async () => {
    const toml = `${POP_LISTENERS}[limits]\nmessage_size = "64MB"\n[timeouts]\npop3_idle = "1s"\n`;
    await withLoggedHearth(toml, async (hearth, logs, setup) => {
      expect(logs.some((l) => String(l.msg).includes('timeouts.pop3_idle is below the 10 minutes'))).toBe(true);
      // ~32 MB with CRLF lines, written into the Maildir as a delivery would.
      const line = `${'0123456789'.repeat(10)}\r\n`;
      const size = 32 * 1024 * 1024;
      await storeMessage(setup, 'alice@example.test', `Subject: huge\r\n\r\n${line.repeat(Math.ceil(size / line.length))}`);
      const c = await popLogin(hearth.port('pop3'));
      let received = 0;
      let stalling = true;
      c.socket.removeAllListeners('data');
      c.socket.on('data', (d: string) => {
        received += d.length;
        if (stalling && received > 256 * 1024) c.socket.pause(); // stop reading, keep the connection open
      });
      c.send('RETR 1\r\n');
      const started = performance.now();
      const isStall = (l: Record<string, unknown>) => l.msg === 'client stopped reading (no write progress): closing';
      while (!logs.some(isStall) && performance.now() - started < 10_000) await new Promise((r) => setTimeout(r, 50));
      const elapsed = performance.now() - started;
      const stall = logs.find(isStall);
      expect(stall).toBeDefined();
      expect(elapsed).toBeGreaterThan(900);
      // Backpressure held: the server had only a little of the message queued when it gave up.
      expect(Number(stall!.unsent)).toBeLessThan(4 * 1024 * 1024);
      // Read on: what the kernel buffers held arrives, then the end (no terminating dot).
      stalling = false;
      c.socket.resume();
      expect(await c.waitClosed(5_000)).toBe(true);
      expect(received).toBeLessThan(size / 2);
    });
  }, 30_000);
});

describe('POP3 command pacing', () => {
  it('slows a client past limits.pop3_commands_per_second, answering every command in order', async () => {
    await withHearth(`${POP_LISTENERS}[limits]\npop3_commands_per_second = 50\n`, async (hearth, setup) => {
      await storeMessage(setup, 'alice@example.test', 'Subject: one\r\n\r\nbody\r\n');
      const c = await popLogin(hearth.port('pop3'));
      const commands = Array.from({ length: 150 }, (_, i) => (i % 3 === 2 ? `LIST 1` : 'NOOP'));
      const started = performance.now();
      c.send(commands.map((x) => `${x}\r\n`).join(''));
      for (const command of commands) expect(await c.line()).toMatch(command === 'NOOP' ? /^\+OK $/ : /^\+OK 1 \d+$/);
      expect(performance.now() - started).toBeGreaterThan(1_900);
      c.close();
    });
  });
});

describe('POP3 failed logins', () => {
  it('makes each failed login wait longer than the one before; AUTH PLAIN without an initial response works', async () => {
    await withHearth(`${POP_LISTENERS}[auth]\nfailure_delay = "300ms"\nmax_failure_delay = "5s"\nmax_failures = 10\n`, async (hearth) => {
      const c = await RawLines.connect(hearth.port('pop3'));
      await c.line();
      const timeFailure = async (): Promise<number> => {
        await c.command('USER alice@example.test');
        const started = performance.now();
        expect(await c.command('PASS wrong')).toMatch(/^-ERR \[AUTH\] /);
        return performance.now() - started;
      };
      const first = await timeFailure();
      const second = await timeFailure();
      expect(first).toBeGreaterThan(250);
      expect(second).toBeGreaterThan(first + 150);
      expect(await c.command('AUTH PLAIN')).toBe('+ ');
      expect(await c.command(Buffer.from('\0alice@example.test\0alice-password').toString('base64'))).toMatch(/^\+OK maildrop has 0 messages/);
      expect(await c.command('STAT')).toBe('+OK 0 0');
      c.close();
    });
  });
});

describe('POP3 login deadline against a login in flight', () => {
  /** A Pop3Server whose authenticate and sync wait on gates the test opens; one shared maildrop lock. */
  async function gatedServer(opts: { loginMs: number; gate: 'authenticate' | 'sync' }) {
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const lock = { owner: null as object | null };
    const logs: Array<Record<string, unknown>> = [];
    let calls = 0;
    const maildrop = fakeMaildrop([{ uid: 1, size: 20 }], {
      lockMaildrop: (owner) => {
        if (lock.owner && lock.owner !== owner) return false;
        lock.owner = owner;
        return true;
      },
      unlockMaildrop: (owner) => {
        if (lock.owner === owner) lock.owner = null;
      },
      sync: async () => {
        if (opts.gate === 'sync' && calls === 1) await gate;
        return { uidValidity: 1, messages: [{ uid: 1, size: 20 }] };
      },
    });
    const server = new Pop3Server({
      hostname: 'pop.test',
      log: createLogger('debug', { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) }),
      backend: {
        authenticate: async (user) => {
          calls += 1;
          if (opts.gate === 'authenticate' && calls === 1) await gate;
          return { user, domain: 'example.test' };
        },
        openMaildrop: async () => maildrop,
      },
      limiter: new LoginLimiter(),
      plaintext: 'always',
      tls: 'plain',
      idleMs: { authorization: 60_000, transaction: 60_000 },
      loginMs: opts.loginMs,
      commandsPerSecond: 1_000_000,
      maxLine: 4096,
      connectionsPerIp: 50,
      maxConnections: 50,
    });
    const { port } = await server.listen(0, '127.0.0.1');
    return { server, port, lock, logs, open };
  }

  for (const where of ['authenticate', 'sync'] as const) {
    it(`a deadline passing during ${where} ends that login: no TRANSACTION after CLOSED, the maildrop lock is free`, async () => {
      const { server, port, lock, logs, open } = await gatedServer({ loginMs: 300, gate: where });
      try {
        const a = await RawLines.connect(port);
        await a.line();
        expect(await a.command('USER alice')).toMatch(/^\+OK/);
        a.send('PASS secret\r\n');
        expect(await a.line(3_000)).toBe('-ERR authentication deadline passed; closing the connection');
        expect(await a.waitClosed(2_000)).toBe(true);
        open(); // the password check (or the sync) finishes after the connection is gone
        await new Promise((r) => setTimeout(r, 100));
        expect(lock.owner).toBeNull();
        expect(logs.some((l) => l.msg === 'transition' && l.from === 'CLOSED' && l.to === 'TRANSACTION')).toBe(false);
        expect(logs.some((l) => l.msg === 'logged in')).toBe(false);
        // The user can log in again at once: no [IN-USE] left behind by the abandoned session.
        const b = await popLogin(port, 'alice', 'secret');
        expect(await b.command('STAT')).toBe('+OK 1 20');
        b.close();
      } finally {
        await server.close();
      }
    });
  }

  it('a client that never reads its replies is still disconnected at the deadline', async () => {
    const { server, port } = await gatedServer({ loginMs: 1_500, gate: 'sync' });
    try {
      const c = await RawLines.connect(port);
      c.socket.pause(); // never read: the server's replies pile up until its writes block
      const flood = 'CAPA\r\n'.repeat(50_000);
      for (let i = 0; i < 8; i++) c.socket.write(flood);
      // The deadline (1.5 s) plus the farewell's grace (2 s), and a margin.
      await new Promise((r) => setTimeout(r, 5_000));
      expect(server.sessions).toBe(0);
      c.socket.destroy();
    } finally {
      await server.close();
    }
  }, 20_000);
});
