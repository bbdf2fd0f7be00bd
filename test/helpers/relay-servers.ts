// Remote servers on loopback for the relay client and pool tests: an smtp-server instance (the
// remote MX or smarthost, with a self-signed certificate for STARTTLS) and a raw scripted server
// for what smtp-server will not do (502 to EHLO, stalling in a chosen phase, dropping the line).
import net from 'node:net';
import { SMTPServer } from 'smtp-server';
import type { SMTPServerEnvelope, SMTPServerOptions } from 'smtp-server';
import { generate } from 'selfsigned';
import type { RelayTimeouts } from '../../src/smtp/relay-client.ts';

export const HELO = 'hearth.test.example';

/** Every relay timeout at 2 s (a test that stalls fails fast), with `over` on top. */
export function short(over: Partial<RelayTimeouts> = {}): Partial<RelayTimeouts> {
  return { connect: 2000, greeting: 2000, ehlo: 2000, mail: 2000, rcpt: 2000, data: 2000, dataBlock: 2000, finalDot: 2000, quit: 2000, ...over };
}

export type Received = { envelope: SMTPServerEnvelope; data: Buffer; secure: boolean; user: unknown };

export type RawConn = {
  socket: net.Socket;
  /** 1 for the first connection, 2 for the next, … */
  id: number;
  send(line: string): void;
  /** The body of the last complete DATA. */
  data: Buffer;
  inData: boolean;
  /** Replies written on this connection so far (one per `send`, the greeting included). */
  replies: number;
  /** Reads ('data' events) on this connection so far. */
  chunks: number;
};

type Cleanup = () => Promise<void> | void;
type Hooks = { beforeAll(fn: () => Promise<void>): void; afterEach(fn: () => Promise<void>): void };

/** Listens on a free loopback port; `cleanups` stop the server (`stop`, or net's close after destroying `sockets`). */
async function listen(server: net.Server, cleanups: Cleanup[], stop: (done: () => void) => void): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => stop(resolve)));
  return (server.address() as net.AddressInfo).port;
}

/**
 * The servers a relay test file talks to. Registers a beforeAll (a self-signed certificate for
 * localhost) and an afterEach that runs `cleanups` newest first; the servers stop there.
 */
export function useRelayServers(hooks: Hooks) {
  const cert = { key: '', cert: '' };
  const cleanups: Cleanup[] = [];
  hooks.beforeAll(async () => {
    const pems = await generate([{ name: 'commonName', value: 'localhost' }], { keySize: 2048, algorithm: 'sha256' });
    Object.assign(cert, { key: pems.private, cert: pems.cert });
  });
  hooks.afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  /** smtp-server with STARTTLS, AUTH optional unless `options` say otherwise; counts connections and closes, records what it receives. */
  async function startSmtp(options: SMTPServerOptions = {}) {
    const received: Received[] = [];
    const mailFroms: string[] = [];
    let connections = 0;
    let closed = 0;
    const closedWaiters: Array<() => void> = [];
    const server = new SMTPServer({
      logger: false,
      authOptional: true,
      key: cert.key,
      cert: cert.cert,
      onConnect(_session, callback) {
        connections++;
        callback();
      },
      onClose() {
        closed++;
        for (const w of closedWaiters.splice(0)) w();
      },
      onMailFrom(address, _session, callback) {
        mailFroms.push(address.address);
        callback();
      },
      onData(stream, session, callback) {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          received.push({ envelope: structuredClone(session.envelope), data: Buffer.concat(chunks), secure: session.secure, user: session.user });
          callback();
        });
      },
      ...options,
    });
    const port = await listen(server.server, cleanups, (done) => server.close(done));
    return {
      port,
      received,
      mailFroms,
      connections: () => connections,
      closed: () => closed,
      /** Resolves once `n` connections in all have closed. */
      async closedCount(n: number): Promise<void> {
        while (closed < n) await new Promise<void>((r) => closedWaiters.push(r));
      },
    };
  }

  /**
   * A scripted SMTP server: `onLine` gets each command (and `.` once a DATA body is complete,
   * with the body in `conn.data` and in `bodies`). Replying 354 switches the connection to data mode.
   */
  async function rawServer(onLine: (conn: RawConn, line: string) => void, opts: { greeting?: string | null; onConnection?(conn: RawConn): void } = {}) {
    const commands: string[] = [];
    const byConn: Array<{ conn: number; line: string; repliesBefore: number; chunk: number }> = [];
    const bodies: Buffer[] = [];
    const sockets = new Set<net.Socket>();
    const byId = new Map<number, net.Socket>();
    let connections = 0;
    const lineWaiters: Array<{ match: (l: string) => boolean; resolve: () => void }> = [];
    const seen = (conn: RawConn, line: string): void => {
      commands.push(line);
      byConn.push({ conn: conn.id, line, repliesBefore: conn.replies, chunk: conn.chunks });
      for (const w of [...lineWaiters]) {
        if (w.match(line)) {
          lineWaiters.splice(lineWaiters.indexOf(w), 1);
          w.resolve();
        }
      }
      onLine(conn, line);
    };
    const server = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
      let buf = Buffer.alloc(0);
      const conn: RawConn = {
        socket,
        id: ++connections,
        data: Buffer.alloc(0),
        inData: false,
        replies: 0,
        chunks: 0,
        send(line) {
          if (line.startsWith('354')) conn.inData = true;
          conn.replies++;
          if (!socket.destroyed) socket.write(`${line}\r\n`);
        },
      };
      byId.set(conn.id, socket);
      opts.onConnection?.(conn);
      if (opts.greeting !== null) conn.send(opts.greeting ?? '220 raw.test ESMTP');
      socket.on('data', (chunk: Buffer) => {
        conn.chunks++;
        buf = Buffer.concat([buf, chunk]);
        for (;;) {
          if (conn.inData) {
            // A lone "." straight after the 354 is an empty message.
            const empty = buf.subarray(0, 3).equals(Buffer.from('.\r\n'));
            const end = empty ? -2 : buf.indexOf('\r\n.\r\n');
            if (end === -1) break;
            conn.data = buf.subarray(0, end + 2);
            bodies.push(conn.data);
            buf = buf.subarray(end + 5);
            conn.inData = false;
            seen(conn, '.');
            continue;
          }
          const nl = buf.indexOf('\r\n');
          if (nl < 0) break;
          const line = buf.subarray(0, nl).toString('utf8');
          buf = buf.subarray(nl + 2);
          seen(conn, line);
        }
      });
    });
    const port = await listen(server, cleanups, (done) => {
      for (const s of sockets) s.destroy();
      server.close(() => done());
    });
    return {
      port,
      /** Every command line, in order, from all connections. */
      commands,
      bodies,
      connections: () => connections,
      /**
       * The command lines of connection number `id`, each with the number of replies the server
       * had written when it was handled and the read it came in (lines of one write on loopback
       * come in one read): a script that holds its replies shows the client did not wait.
       */
      timelineOf: (id: number) => byConn.filter((c) => c.conn === id).map(({ line, repliesBefore, chunk }) => ({ line, repliesBefore, chunk })),
      /** The command lines that came over connection number `id`. */
      commandsOn: (id: number) => byConn.filter((c) => c.conn === id).map((c) => c.line),
      /** The server side of connection number `id` (1 = the first). */
      socketOf: (id: number) => byId.get(id)!,
      /** Resolves when a command line matching `match` arrives. */
      nextLine: (match: (l: string) => boolean) => new Promise<void>((resolve) => lineWaiters.push({ match, resolve })),
    };
  }

  return { cert, cleanups, startSmtp, rawServer };
}

/**
 * A plain, well-behaved script for `rawServer`; `override` answers first when it returns true.
 * With `pipelining` its EHLO reply offers PIPELINING (RFC 2920); it still answers line by line.
 */
export function script(override?: (conn: RawConn, line: string) => boolean, opts: { pipelining?: boolean } = {}) {
  return (conn: RawConn, line: string): void => {
    if (override?.(conn, line)) return;
    const verb = line.split(/[ :]/)[0].toUpperCase();
    if (verb === 'EHLO') conn.send(`250-raw.test\r\n${opts.pipelining ? '250-PIPELINING\r\n' : ''}250-SIZE 2000000000\r\n250 8BITMIME`);
    else if (verb === 'HELO') conn.send('250 raw.test');
    else if (verb === 'DATA') conn.send('354 go ahead');
    else if (line === '.') conn.send('250 2.0.0 queued as RAW1');
    else if (verb === 'QUIT') {
      conn.send('221 bye');
      conn.socket.end();
    } else conn.send('250 2.0.0 ok');
  };
}

/** A `script` override: on the lines `match` accepts, reply `reply` and close the connection. */
export function replyAndClose(match: (conn: RawConn, line: string) => boolean, reply: string) {
  return (conn: RawConn, line: string): boolean => {
    if (!match(conn, line)) return false;
    conn.send(reply);
    conn.socket.end();
    return true;
  };
}
