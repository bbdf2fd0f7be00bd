// Connection reuse (relay-pool.ts) against real servers on loopback: an smtp-server sink with
// STARTTLS and AUTH that counts connections, and a scripted raw server for what smtp-server
// will not do (close an idle connection, refuse RSET, stall).
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import net from 'node:net';
import { Readable } from 'node:stream';
import dns from 'node:dns';
import { SMTPServer } from 'smtp-server';
import type { SMTPServerEnvelope } from 'smtp-server';
import { generate } from 'selfsigned';
import { silentLogger } from '../../src/core/log.ts';
import { RelayPool } from '../../src/smtp/relay-pool.ts';
import type { RelayMessage, RelayTarget, RelayTimeouts } from '../../src/smtp/relay-client.ts';
import { makeDeliver } from '../../src/smtp/outbound.ts';
import { makeQueue, removeDir } from '../queue/helpers.ts';

const log = silentLogger();
const HELO = 'hearth.test.example';
let cert: { key: string; cert: string };
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(async () => {
  const pems = await generate([{ name: 'commonName', value: 'localhost' }], { keySize: 2048, algorithm: 'sha256' });
  cert = { key: pems.private, cert: pems.cert };
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function body(i: number): Buffer {
  // A line starting with a dot and odd chunking check that reuse keeps the bytes exact.
  return Buffer.from(`From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: pooled ${i}\r\n\r\n.dot line ${i}\r\n${'x'.repeat(900 + i)}\r\nend ${i}\r\n`);
}

function message(i: number, over: Partial<RelayMessage> = {}): RelayMessage {
  const buf = body(i);
  return {
    id: `m${i}`,
    from: 'alice@example.test',
    recipients: [{ address: `bob${i}@remote.test` }],
    size: buf.length,
    open: () => Readable.from([buf.subarray(0, 5), buf.subarray(5)]),
    needsSmtpUtf8: false,
    eightBit: false,
    ...over,
  };
}

function short(over: Partial<RelayTimeouts> = {}): Partial<RelayTimeouts> {
  return { connect: 2000, greeting: 2000, ehlo: 2000, mail: 2000, rcpt: 2000, data: 2000, dataBlock: 2000, finalDot: 2000, quit: 2000, ...over };
}

type Received = { envelope: SMTPServerEnvelope; data: Buffer; secure: boolean; user: unknown };

/** smtp-server with STARTTLS and AUTH PLAIN required; counts connections and QUITs. */
async function startSink() {
  const received: Received[] = [];
  let connections = 0;
  let closed = 0;
  const closedWaiters: Array<() => void> = [];
  const server = new SMTPServer({
    logger: false,
    key: cert.key,
    cert: cert.cert,
    authMethods: ['PLAIN'],
    onConnect(_session, callback) {
      connections++;
      callback();
    },
    onClose() {
      closed++;
      for (const w of closedWaiters.splice(0)) w();
    },
    onAuth(auth, _session, callback) {
      if (auth.username === 'relay' && auth.password === 'secret') callback(null, { user: 'relay' });
      else callback(new Error('bad credentials'));
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        received.push({ envelope: structuredClone(session.envelope), data: Buffer.concat(chunks), secure: session.secure, user: session.user });
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as net.AddressInfo).port;
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return {
    port,
    received,
    connections: () => connections,
    closed: () => closed,
    /** Resolves once `n` connections in all have closed. */
    async closedCount(n: number): Promise<void> {
      while (closed < n) await new Promise<void>((r) => closedWaiters.push(r));
    },
  };
}

type RawConn = { socket: net.Socket; id: number; send(line: string): void };

/** A scripted server: `onLine` gets each command, and `.` once a DATA body is complete. */
async function rawServer(onLine: (conn: RawConn, line: string) => void) {
  const commands: Array<{ conn: number; line: string }> = [];
  const bodies: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const byId = new Map<number, net.Socket>();
  let connections = 0;
  const lineWaiters: Array<{ match: (l: string) => boolean; resolve: () => void }> = [];
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    const conn: RawConn = { socket, id: ++connections, send: (line) => void (!socket.destroyed && socket.write(`${line}\r\n`)) };
    byId.set(conn.id, socket);
    conn.send('220 raw.test ESMTP');
    let buf = Buffer.alloc(0);
    let inData = false;
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        let line: string;
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          if (end < 0) break;
          bodies.push(buf.subarray(0, end + 2));
          buf = buf.subarray(end + 5);
          inData = false;
          line = '.';
        } else {
          const nl = buf.indexOf('\r\n');
          if (nl < 0) break;
          line = buf.subarray(0, nl).toString('utf8');
          buf = buf.subarray(nl + 2);
          if (line === 'DATA') inData = true;
        }
        commands.push({ conn: conn.id, line });
        for (const w of [...lineWaiters]) {
          if (w.match(line)) {
            lineWaiters.splice(lineWaiters.indexOf(w), 1);
            w.resolve();
          }
        }
        onLine(conn, line);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return {
    port,
    commands,
    bodies,
    connections: () => connections,
    /** The server side of connection number `id` (1 = the first). */
    socketOf: (id: number) => byId.get(id)!,
    /** Resolves when a command line matching `match` arrives. */
    nextLine: (match: (l: string) => boolean) => new Promise<void>((resolve) => lineWaiters.push({ match, resolve })),
  };
}

/** A well-behaved script; `override` answers first when it returns true. */
function script(override?: (conn: RawConn, line: string) => boolean) {
  return (conn: RawConn, line: string): void => {
    if (override?.(conn, line)) return;
    const verb = line.split(/[ :]/)[0].toUpperCase();
    if (verb === 'EHLO') conn.send('250-raw.test\r\n250 8BITMIME');
    else if (verb === 'DATA') conn.send('354 go ahead');
    else if (line === '.') conn.send('250 2.0.0 queued');
    else if (verb === 'QUIT') {
      conn.send('221 bye');
      conn.socket.end();
    } else conn.send('250 2.0.0 ok');
  };
}

function pool(over: Partial<ConstructorParameters<typeof RelayPool>[0]> = {}): RelayPool {
  const p = new RelayPool({ log, idleMs: 5_000, ...over });
  cleanups.push(() => p.close());
  return p;
}

/** Resolves once `done()` holds, checked after each turn of the event loop (no fixed sleeps). */
async function until(done: () => boolean): Promise<void> {
  while (!done()) await new Promise<void>((resolve) => setImmediate(resolve));
}

const plain = (port: number): RelayTarget => ({ host: '127.0.0.1', port, tls: 'none' });

describe('relay pool: reuse', () => {
  it('sends several messages over one TLS, authenticated connection, each once and byte-exact', async () => {
    const sink = await startSink();
    const p = pool();
    const target: RelayTarget = { host: '127.0.0.1', port: sink.port, tls: 'required', rejectUnauthorized: false, auth: { user: 'relay', pass: 'secret' } };
    const n = 6;
    for (let i = 0; i < n; i++) {
      const session = await p.relay(target, [message(i)], { heloName: HELO, log, timeouts: short() });
      expect(session.results[0].recipients).toMatchObject([{ address: `bob${i}@remote.test`, status: 'delivered', state: 'BODY' }]);
      if (i > 0) expect(session.transcript[0]).toMatch(/^-- reusing the connection/);
    }
    expect(sink.connections()).toBe(1);
    expect(p.connectionsOpened).toBe(1);
    expect(sink.received).toHaveLength(n);
    for (let i = 0; i < n; i++) {
      const got = sink.received.filter((r) => r.envelope.rcptTo[0].address === `bob${i}@remote.test`);
      expect(got).toHaveLength(1);
      expect(got[0].data.equals(body(i))).toBe(true);
      expect(got[0].secure).toBe(true);
      expect(got[0].user).toBe('relay');
    }
    expect(p.idleConnections).toBe(1);
    await p.close();
    await sink.closedCount(1);
    expect(p.idleConnections).toBe(0);
  });

  it('probes with RSET before each reused transaction and greets only once', async () => {
    const raw = await rawServer(script());
    const p = pool();
    for (let i = 0; i < 3; i++) await p.relay(plain(raw.port), [message(i)], { heloName: HELO, log, timeouts: short() });
    expect(raw.connections()).toBe(1);
    const verbs = raw.commands.map((c) => c.line.split(/[ :]/)[0]);
    expect(verbs).toEqual(['EHLO', 'MAIL', 'RCPT', 'DATA', '.', 'RSET', 'MAIL', 'RCPT', 'DATA', '.', 'RSET', 'MAIL', 'RCPT', 'DATA', '.']);
    expect(raw.bodies.map((b) => b.toString())).toEqual([0, 1, 2].map((i) => body(i).toString().replace(/^\./m, '..')));
  });

  it('keeps separate connections per destination (credentials, TLS mode) and respects the caps', async () => {
    const raw = await rawServer(script());
    const p = pool({ maxMessagesPerConnection: 2 });
    // Five messages, two per connection at most: three connections.
    for (let i = 0; i < 5; i++) await p.relay(plain(raw.port), [message(i)], { heloName: HELO, log, timeouts: short() });
    expect(raw.connections()).toBe(3);
    // Another HELO name is another destination: no reuse across.
    await p.relay(plain(raw.port), [message(9)], { heloName: 'other.test.example', log, timeouts: short() });
    expect(raw.connections()).toBe(4);
    expect(raw.commands.filter((c) => c.line === '.')).toHaveLength(6);
  });

  it('uses fewer connections than messages when deliveries to one destination run side by side', async () => {
    const sink = await startSink();
    const p = pool();
    const target: RelayTarget = { host: '127.0.0.1', port: sink.port, tls: 'required', rejectUnauthorized: false, auth: { user: 'relay', pass: 'secret' } };
    const wave = async (from: number) =>
      Promise.all([0, 1, 2, 3].map((k) => p.relay(target, [message(from + k)], { heloName: HELO, log, timeouts: short() })));
    await wave(0);
    const afterFirst = sink.connections();
    expect(afterFirst).toBeLessThanOrEqual(4);
    await wave(4);
    await wave(8);
    expect(sink.connections()).toBe(afterFirst);
    expect(sink.received).toHaveLength(12);
    for (let i = 0; i < 12; i++) {
      const got = sink.received.filter((r) => r.envelope.rcptTo[0].address === `bob${i}@remote.test`);
      expect(got).toHaveLength(1);
      expect(got[0].data.equals(body(i))).toBe(true);
    }
  });
});

describe('relay pool: never reuse what went wrong', () => {
  it('a connection the remote closed while idle is not used: the message goes over a new one, once', async () => {
    let closeAfterFirst = true;
    const raw = await rawServer(
      script((conn, line) => {
        if (line === '.' && closeAfterFirst) {
          closeAfterFirst = false;
          conn.send('250 2.0.0 queued');
          conn.socket.end();
          return true;
        }
        return false;
      }),
    );
    const p = pool();
    await p.relay(plain(raw.port), [message(0)], { heloName: HELO, log, timeouts: short() });
    const second = await p.relay(plain(raw.port), [message(1)], { heloName: HELO, log, timeouts: short() });
    expect(second.results[0].recipients[0].status).toBe('delivered');
    expect(raw.connections()).toBe(2);
    expect(raw.bodies).toHaveLength(2);
  });

  it('an RSET refused with 421 sends the message over a new connection instead of deferring it', async () => {
    const raw = await rawServer(
      script((conn, line) => {
        if (line === 'RSET' && conn.id === 1) {
          conn.send('421 4.4.2 idle too long');
          conn.socket.end();
          return true;
        }
        return false;
      }),
    );
    const p = pool();
    await p.relay(plain(raw.port), [message(0)], { heloName: HELO, log, timeouts: short() });
    const second = await p.relay(plain(raw.port), [message(1)], { heloName: HELO, log, timeouts: short() });
    expect(second.staleConnection).toBeUndefined();
    expect(second.results[0].recipients[0]).toMatchObject({ status: 'delivered', state: 'BODY' });
    expect(raw.connections()).toBe(2);
    // Nothing of message 1 went over the first connection.
    expect(raw.commands.filter((c) => c.conn === 1).map((c) => c.line.split(/[ :]/)[0])).toEqual(['EHLO', 'MAIL', 'RCPT', 'DATA', '.', 'RSET']);
    expect(raw.bodies).toHaveLength(2);
  });

  it('an unexpected reply on an idle connection closes it', async () => {
    const raw = await rawServer(script());
    const p = pool();
    await p.relay(plain(raw.port), [message(0)], { heloName: HELO, log, timeouts: short() });
    expect(p.idleConnections).toBe(1);
    // The server speaks out of turn on the idle connection.
    const first = raw.socketOf(1);
    const dropped = once(first, 'close');
    first.write('250 stray\r\n');
    await dropped;
    await until(() => p.idleConnections === 0);
    await p.relay(plain(raw.port), [message(1)], { heloName: HELO, log, timeouts: short() });
    expect(raw.connections()).toBe(2);
    expect(raw.commands.filter((c) => c.conn === 1).map((c) => c.line)).not.toContain('RSET');
  });

  it('after a connection-level failure (timeout in DATA) the next message gets a new connection', async () => {
    const raw = await rawServer(
      script((conn, line) => {
        // The first connection never answers the final dot.
        return line === '.' && conn.id === 1;
      }),
    );
    const p = pool();
    const first = await p.relay(plain(raw.port), [message(0)], { heloName: HELO, log, timeouts: short({ finalDot: 200 }) });
    expect(first.results[0].recipients[0]).toMatchObject({ status: 'deferred', text: expect.stringContaining('RELAY_FINAL_DOT_TIMEOUT') });
    expect(p.idleConnections).toBe(0);
    const second = await p.relay(plain(raw.port), [message(1)], { heloName: HELO, log, timeouts: short() });
    expect(second.results[0].recipients[0].status).toBe('delivered');
    expect(raw.connections()).toBe(2);
  });

  it('an aborted delivery does not leave its connection for reuse', async () => {
    const raw = await rawServer(script((_conn, line) => line === '.'));
    const p = pool();
    const ac = new AbortController();
    const dotSeen = raw.nextLine((l) => l === '.');
    const pending = p.relay(plain(raw.port), [message(0)], { heloName: HELO, log, timeouts: short(), signal: ac.signal });
    await dotSeen;
    ac.abort(new Error('deadline'));
    const session = await pending;
    expect(session.results[0].recipients[0]).toMatchObject({ status: 'deferred', text: expect.stringContaining('RELAY_ABORTED') });
    expect(p.idleConnections).toBe(0);
  });

  it('an idle connection QUITs after idleMs', async () => {
    const raw = await rawServer(script());
    const p = pool({ idleMs: 50 });
    const quit = raw.nextLine((l) => l === 'QUIT');
    await p.relay(plain(raw.port), [message(0)], { heloName: HELO, log, timeouts: short() });
    await quit;
    await until(() => p.idleConnections === 0);
    await p.relay(plain(raw.port), [message(1)], { heloName: HELO, log, timeouts: short() });
    expect(raw.connections()).toBe(2);
  });
});

describe('outbound queue over the pool', () => {
  it('relays N queued messages to one domain over fewer than N connections, each once and byte-exact', async () => {
    const sink = await startSink();
    const deliver = makeDeliver({
      heloName: HELO,
      log,
      resolver: new dns.promises.Resolver(),
      dnsTimeoutMs: 1000,
      mxPort: 25,
      requireTls: false,
      smarthost: { host: '127.0.0.1', port: sink.port, tls: 'required', rejectUnauthorized: false, auth: { user: 'relay', pass: 'secret' } },
      timeouts: short(),
    });
    cleanups.push(() => deliver.close());
    const h = await makeQueue({ deliver });
    cleanups.push(async () => {
      await h.shutdown();
      await removeDir(h.dir);
    });
    const n = 12;
    for (let i = 0; i < n; i++) await h.queue.enqueue({ from: 'alice@example.test', recipients: [{ address: `bob${i}@remote.test` }] }, body(i));
    expect(await h.queue.flush({ timeoutMs: 10_000 })).toEqual({ remaining: 0 });
    expect(sink.connections()).toBeLessThan(n);
    expect(sink.received).toHaveLength(n);
    for (let i = 0; i < n; i++) {
      const got = sink.received.filter((r) => r.envelope.rcptTo[0].address === `bob${i}@remote.test`);
      expect(got).toHaveLength(1);
      expect(got[0].data.equals(body(i))).toBe(true);
    }
  });
});
