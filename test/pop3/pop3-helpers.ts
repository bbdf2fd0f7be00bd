// Shared bits of the POP3 tests: a hearth with a POP3 listener (optionally with its log kept),
// a logged-in raw client, messages put straight into a Maildir, and a POP3 server on a fake
// backend for faults a real store will not produce on demand.
import { expect } from 'vitest';
import { Readable } from 'node:stream';
import { LoginLimiter } from '../../src/core/login-limiter.ts';
import { createLogger, silentLogger } from '../../src/core/log.ts';
import { startHearth } from '../../src/main.ts';
import { Pop3Server } from '../../src/pop3/server.ts';
import type { Pop3Backend, Pop3Maildrop } from '../../src/pop3/session.ts';
import { MaildirStore } from '../../src/store/maildir.ts';
import { makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { RawLines } from '../helpers/raw-lines.ts';

export const POP_LISTENERS = '[listeners.pop3]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n';

export type Running = Awaited<ReturnType<typeof startTestHearth>>;

/** A raw POP3 client past the greeting, logged in with USER/PASS. */
export async function popLogin(port: number, user = 'alice@example.test', pw = 'alice-password', opts: { tls?: boolean } = {}): Promise<RawLines> {
  const c = await RawLines.connect(port, opts);
  expect(await c.line()).toMatch(/^\+OK /);
  expect(await c.command(`USER ${user}`)).toMatch(/^\+OK/);
  expect(await c.command(`PASS ${pw}`)).toMatch(/^\+OK/);
  return c;
}

/** A multi-line command: its status line and (on +OK) the body, still dot-stuffed. */
export async function popMulti(c: RawLines, command: string): Promise<{ status: string; body: string }> {
  const status = await c.command(command);
  return { status, body: status.startsWith('+OK') ? await c.dotBody() : '' };
}

/** Run `fn` against a fresh hearth (setup made from `toml`), cleaning up afterwards. */
export async function withHearth<T>(toml: string, fn: (hearth: Running, setup: TestSetup) => Promise<T>): Promise<T> {
  const setup = await makeSetup({ fsync: false, toml });
  const hearth = await startTestHearth(setup);
  try {
    return await fn(hearth, setup);
  } finally {
    await hearth.close();
    await setup.cleanup();
  }
}

/** Like withHearth, keeping every log line (JSON objects) for assertions. */
export async function withLoggedHearth<T>(toml: string, fn: (hearth: Running, logs: Array<Record<string, unknown>>, setup: TestSetup) => Promise<T>): Promise<T> {
  const setup = await makeSetup({ fsync: false, toml });
  const logs: Array<Record<string, unknown>> = [];
  const log = createLogger('info', { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const running = await startHearth({ configDir: setup.configDir, log });
  const port = (service: string): number => running.endpoints.find((x) => x.service === service)!.port;
  const hearth = Object.assign(running, { smtpPort: port('smtp'), port });
  try {
    return await fn(hearth, logs, setup);
  } finally {
    await hearth.close();
    await setup.cleanup();
  }
}

/** Put a message into a user's Maildir as hearth's store writes it (with S= and W=). */
export async function storeMessage(setup: TestSetup, address: string, content: string | Buffer): Promise<void> {
  const [user, domain] = address.split('@');
  await new MaildirStore({ root: setup.dataDir, fsync: false }).deliver([{ user, domain }], content);
}

/** A maildrop whose messages and faults a test decides. Sizes are what LIST reports. */
export function fakeMaildrop(messages: Array<{ uid: number; size: number }>, parts: Partial<Pop3Maildrop> = {}): Pop3Maildrop {
  return {
    lockMaildrop: () => true,
    unlockMaildrop: () => undefined,
    sync: async () => ({ uidValidity: 1, messages }),
    openMessage: async () => Readable.from([Buffer.from('Subject: x\r\n\r\nbody\r\n')]),
    readMessage: async () => Buffer.from('Subject: x\r\n\r\nbody\r\n'),
    setFlags: async () => undefined,
    expunge: async () => [],
    ...parts,
  };
}

/** A Pop3Server on 127.0.0.1 whose every login (any password) opens `openMaildrop`'s maildrop. */
export async function startFakePop3(openMaildrop: Pop3Backend['openMaildrop']): Promise<{ port: number; close(): Promise<void> }> {
  const server = new Pop3Server({
    hostname: 'pop.test',
    log: silentLogger(),
    backend: { authenticate: async (user) => ({ user, domain: 'example.test' }), openMaildrop },
    limiter: new LoginLimiter(),
    plaintext: 'always',
    tls: 'plain',
    idleMs: { authorization: 60_000, transaction: 60_000 },
    maxLine: 4096,
    connectionsPerIp: 50,
    maxConnections: 50,
  });
  const { port } = await server.listen(0, '127.0.0.1');
  return { port, close: () => server.close() };
}

/** An Error with an errno-style code inside a store error, as the store throws them. */
export function ioFault(code: string): Error {
  return Object.assign(new Error('store failed', { cause: Object.assign(new Error(`${code}: simulated`), { code }) }), { code: 'STORE_IO' });
}
