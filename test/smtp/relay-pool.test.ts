// Connection reuse (relay-pool.ts) against real servers on loopback: an smtp-server sink with
// STARTTLS and AUTH that counts connections, and a scripted raw server for what smtp-server
// will not do (close an idle connection, refuse RSET, stall).
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import dns from 'node:dns';
import { silentLogger } from '../../src/core/log.ts';
import { RelayPool } from '../../src/smtp/relay-pool.ts';
import type { RelayMessage, RelayOptions, RelayTarget } from '../../src/smtp/relay-client.ts';
import { makeDeliver } from '../../src/smtp/outbound.ts';
import { DEFAULT_RELAY_POOL } from '../../src/smtp/relay-pool.ts';
import { parseConfigText } from '../../src/config/load.ts';
import nodemailer from 'nodemailer';
import { makeQueue, removeDir } from '../queue/helpers.ts';
import { makeSetup, startTestHearth } from '../helpers/hearth.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { relayToml, startRemoteMx, stopAll, waitFor } from '../helpers/remote-mx.ts';
import { HELO, replyAndClose, script, short, useRelayServers } from '../helpers/relay-servers.ts';
import type { Received } from '../helpers/relay-servers.ts';

const log = silentLogger();
const { cleanups, startSmtp, rawServer } = useRelayServers({ beforeAll, afterEach });

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

/** smtp-server with STARTTLS and AUTH PLAIN required; counts connections and QUITs. */
function startSink() {
  return startSmtp({
    authOptional: false,
    authMethods: ['PLAIN'],
    onAuth(auth, _session, callback) {
      if (auth.username === 'relay' && auth.password === 'secret') callback(null, { user: 'relay' });
      else callback(new Error('bad credentials'));
    },
  });
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
const smarthost = (port: number): RelayTarget => ({ host: '127.0.0.1', port, tls: 'required', rejectUnauthorized: false, auth: { user: 'relay', pass: 'secret' } });

/** The relay options of these tests: our HELO name and short timeouts. */
function opts(over: Partial<RelayOptions> = {}): RelayOptions {
  return { heloName: HELO, log, timeouts: short(), ...over };
}

/** Checks that each of messages 0..n-1 arrived exactly once and byte-exact; returns what arrived, by message. */
function expectEachOnce(received: Received[], n: number): Received[] {
  expect(received).toHaveLength(n);
  return Array.from({ length: n }, (_, i) => {
    const got = received.filter((r) => r.envelope.rcptTo[0].address === `bob${i}@remote.test`);
    expect(got).toHaveLength(1);
    expect(got[0].data.equals(body(i))).toBe(true);
    return got[0];
  });
}

/** Relays message 0, then message 1, to `port`; returns the second session. */
async function relayTwo(p: RelayPool, port: number) {
  await p.relay(plain(port), [message(0)], opts());
  return p.relay(plain(port), [message(1)], opts());
}

describe('relay pool: reuse', () => {
  it('sends several messages over one TLS, authenticated connection, each once and byte-exact', async () => {
    const sink = await startSink();
    const p = pool();
    const target = smarthost(sink.port);
    const n = 6;
    for (let i = 0; i < n; i++) {
      const session = await p.relay(target, [message(i)], opts());
      expect(session.results[0].recipients).toMatchObject([{ address: `bob${i}@remote.test`, status: 'delivered', state: 'BODY' }]);
      if (i > 0) expect(session.transcript[0]).toMatch(/^-- reusing the connection/);
    }
    expect(sink.connections()).toBe(1);
    expect(p.connectionsOpened).toBe(1);
    for (const got of expectEachOnce(sink.received, n)) {
      expect(got.secure).toBe(true);
      expect(got.user).toBe('relay');
    }
    expect(p.idleConnections).toBe(1);
    await p.close();
    await sink.closedCount(1);
    expect(p.idleConnections).toBe(0);
  });

  it('probes with RSET before each reused transaction and greets only once', async () => {
    const raw = await rawServer(script());
    const p = pool();
    for (let i = 0; i < 3; i++) await p.relay(plain(raw.port), [message(i)], opts());
    expect(raw.connections()).toBe(1);
    const verbs = raw.commands.map((l) => l.split(/[ :]/)[0]);
    expect(verbs).toEqual(['EHLO', 'MAIL', 'RCPT', 'DATA', '.', 'RSET', 'MAIL', 'RCPT', 'DATA', '.', 'RSET', 'MAIL', 'RCPT', 'DATA', '.']);
    expect(raw.bodies.map((b) => b.toString())).toEqual([0, 1, 2].map((i) => body(i).toString().replace(/^\./m, '..')));
  });

  it('keeps separate connections per destination (credentials, TLS mode) and respects the caps', async () => {
    const raw = await rawServer(script());
    const p = pool({ maxMessagesPerConnection: 2 });
    // Five messages, two per connection at most: three connections.
    for (let i = 0; i < 5; i++) await p.relay(plain(raw.port), [message(i)], opts());
    expect(raw.connections()).toBe(3);
    // Another HELO name is another destination: no reuse across.
    await p.relay(plain(raw.port), [message(9)], opts({ heloName: 'other.test.example' }));
    expect(raw.connections()).toBe(4);
    expect(raw.commands.filter((l) => l === '.')).toHaveLength(6);
  });

  it('uses fewer connections than messages when deliveries to one destination run side by side', async () => {
    const sink = await startSink();
    const p = pool();
    const target = smarthost(sink.port);
    const wave = async (from: number) =>
      Promise.all([0, 1, 2, 3].map((k) => p.relay(target, [message(from + k)], opts())));
    await wave(0);
    const afterFirst = sink.connections();
    expect(afterFirst).toBeLessThanOrEqual(4);
    await wave(4);
    await wave(8);
    expect(sink.connections()).toBe(afterFirst);
    expectEachOnce(sink.received, 12);
  });
});

describe('relay pool: never reuse what went wrong', () => {
  it('a connection the remote closed while idle is not used: the message goes over a new one, once', async () => {
    // The first connection closes right after accepting the first message.
    const raw = await rawServer(script(replyAndClose((conn, line) => line === '.' && conn.id === 1, '250 2.0.0 queued')));
    const second = await relayTwo(pool(), raw.port);
    expect(second.results[0].recipients[0].status).toBe('delivered');
    expect(raw.connections()).toBe(2);
    expect(raw.bodies).toHaveLength(2);
  });

  it('an RSET refused with 421 sends the message over a new connection instead of deferring it', async () => {
    const raw = await rawServer(script(replyAndClose((conn, line) => line === 'RSET' && conn.id === 1, '421 4.4.2 idle too long')));
    const second = await relayTwo(pool(), raw.port);
    expect(second.staleConnection).toBeUndefined();
    expect(second.results[0].recipients[0]).toMatchObject({ status: 'delivered', state: 'BODY' });
    expect(raw.connections()).toBe(2);
    // Nothing of message 1 went over the first connection.
    expect(raw.commandsOn(1).map((l) => l.split(/[ :]/)[0])).toEqual(['EHLO', 'MAIL', 'RCPT', 'DATA', '.', 'RSET']);
    expect(raw.bodies).toHaveLength(2);
  });

  it('an unexpected reply on an idle connection closes it', async () => {
    const raw = await rawServer(script());
    const p = pool();
    await p.relay(plain(raw.port), [message(0)], opts());
    expect(p.idleConnections).toBe(1);
    // The server speaks out of turn on the idle connection.
    const first = raw.socketOf(1);
    const dropped = once(first, 'close');
    first.write('250 stray\r\n');
    await dropped;
    await until(() => p.idleConnections === 0);
    await p.relay(plain(raw.port), [message(1)], opts());
    expect(raw.connections()).toBe(2);
    expect(raw.commandsOn(1)).not.toContain('RSET');
  });

  it('after a connection-level failure (timeout in DATA) the next message gets a new connection', async () => {
    const raw = await rawServer(
      script((conn, line) => {
        // The first connection never answers the final dot.
        return line === '.' && conn.id === 1;
      }),
    );
    const p = pool();
    const first = await p.relay(plain(raw.port), [message(0)], opts({ timeouts: short({ finalDot: 200 }) }));
    expect(first.results[0].recipients[0]).toMatchObject({ status: 'deferred', text: expect.stringContaining('RELAY_FINAL_DOT_TIMEOUT') });
    expect(p.idleConnections).toBe(0);
    const second = await p.relay(plain(raw.port), [message(1)], opts());
    expect(second.results[0].recipients[0].status).toBe('delivered');
    expect(raw.connections()).toBe(2);
  });

  it('an aborted delivery does not leave its connection for reuse', async () => {
    const raw = await rawServer(script((_conn, line) => line === '.'));
    const p = pool();
    const ac = new AbortController();
    const dotSeen = raw.nextLine((l) => l === '.');
    const pending = p.relay(plain(raw.port), [message(0)], opts({ signal: ac.signal }));
    await dotSeen;
    ac.abort(new Error('deadline'));
    const session = await pending;
    expect(session.results[0].recipients[0]).toMatchObject({ status: 'deferred', text: expect.stringContaining('RELAY_ABORTED') });
    expect(p.idleConnections).toBe(0);
  });

  it('a delivery aborted during its RSET probe is deferred and costs no other idle connection', async () => {
    // The connection that gets the first RSET never answers it; the other stays healthy and idle.
    let stalled: number | undefined;
    const raw = await rawServer(script((conn, line) => line === 'RSET' && (stalled ??= conn.id) === conn.id));
    const p = pool();
    await Promise.all([p.relay(plain(raw.port), [message(0)], opts()), p.relay(plain(raw.port), [message(1)], opts())]);
    expect(p.idleConnections).toBe(2);
    const ac = new AbortController();
    const rset = raw.nextLine((l) => l === 'RSET');
    const pending = p.relay(plain(raw.port), [message(2)], opts({ signal: ac.signal }));
    await rset;
    ac.abort(new Error('deadline'));
    const session = await pending;
    // Not a dead connection: an abort. The message is deferred, and no other connection is tried.
    expect(session.staleConnection).toBeUndefined();
    expect(session.results[0].recipients[0]).toMatchObject({ status: 'deferred', text: expect.stringContaining('RELAY_ABORTED') });
    expect(p.idleConnections).toBe(1);
    expect(p.connectionsOpened).toBe(2);
    expect(raw.commands.filter((l) => l === 'RSET')).toHaveLength(1);
    // The surviving connection still carries mail.
    expect((await p.relay(plain(raw.port), [message(3)], opts())).results[0].recipients[0].status).toBe('delivered');
    expect(raw.connections()).toBe(2);
  });

  it('closing the pool does not wait the full QUIT timeout on a remote that never answers QUIT', async () => {
    const raw = await rawServer(script((_conn, line) => line === 'QUIT'));
    const p = pool();
    // The production QUIT timeout (60 s): an idle connection has nothing at stake, so closing it must not take that long.
    await p.relay(plain(raw.port), [message(0)], opts({ timeouts: short({ quit: 60_000 }) }));
    const quit = raw.nextLine((l) => l === 'QUIT');
    const started = performance.now();
    await p.close();
    await quit;
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(p.idleConnections).toBe(0);
  }, 15_000);

  it('an idle connection QUITs after idleMs', async () => {
    const raw = await rawServer(script());
    const p = pool({ idleMs: 50 });
    const quit = raw.nextLine((l) => l === 'QUIT');
    await p.relay(plain(raw.port), [message(0)], opts());
    await quit;
    await until(() => p.idleConnections === 0);
    await p.relay(plain(raw.port), [message(1)], opts());
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
      smarthost: smarthost(sink.port),
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
    expectEachOnce(sink.received, n);
  });
});

describe('relay pool: [relay] config keys', () => {
  const base = 'hostname = "mx.test.example"\ndomains = ["example.test"]\n';

  it('default to the pool defaults, and refuse bad values', () => {
    const relay = parseConfigText(base, 'hearth.toml').relay;
    expect({ idleMs: relay.pool_idle_time, maxIdlePerDestination: relay.pool_max_idle_per_destination, maxIdle: relay.pool_max_idle, maxMessagesPerConnection: relay.pool_max_messages_per_connection }).toEqual(
      DEFAULT_RELAY_POOL,
    );
    const set = parseConfigText(`${base}[relay]\npool_idle_time = "2s"\npool_max_idle_per_destination = 1\npool_max_idle = 0\npool_max_messages_per_connection = 7\n`, 'hearth.toml').relay;
    expect(set).toMatchObject({ pool_idle_time: 2000, pool_max_idle_per_destination: 1, pool_max_idle: 0, pool_max_messages_per_connection: 7 });
    expect(() => parseConfigText(`${base}[relay]\npool_max_messages_per_connection = 0\n`, 'hearth.toml')).toThrow(/pool_max_messages_per_connection/);
    expect(() => parseConfigText(`${base}[relay]\npool_idle = "5s"\n`, 'hearth.toml')).toThrow(/pool_idle/);
  });

  it('take effect in a running hearth: at most 2 messages per connection opens a second one for the third', async () => {
    const remote = await startRemoteMx();
    const dnsServer = await startDnsServer({ 'remote.example': { MX: [{ preference: 10, exchange: 'mx.remote.example' }] }, 'mx.remote.example': { A: ['127.0.0.1'] } });
    const setup = await makeSetup({
      toml: `[listeners.submission]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n` + relayToml(remote, dnsServer, 'pool_max_messages_per_connection = 2\npool_idle_time = "30s"\n'),
    });
    const hearth = await startTestHearth(setup);
    cleanups.push(() => stopAll(hearth, remote, dnsServer, setup));
    const submit = nodemailer.createTransport({ host: '127.0.0.1', port: hearth.port('submission'), requireTLS: true, tls: { rejectUnauthorized: false }, auth: { user: 'alice@example.test', pass: 'alice-password' } });
    for (let i = 0; i < 3; i++) {
      await submit.sendMail({ from: 'alice@example.test', to: `friend${i}@remote.example`, subject: `pooled ${i}`, text: `message ${i}\n` });
      await waitFor(() => remote.received.length === i + 1);
    }
    submit.close();
    expect(remote.received.map((m) => m.to)).toEqual([['friend0@remote.example'], ['friend1@remote.example'], ['friend2@remote.example']]);
    expect(remote.connections()).toBe(2);
  });
});
