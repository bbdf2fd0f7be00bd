// A remote domain's MX for tests: an smtp-server on loopback that records what it accepts,
// and a bounded wait for something to happen (mail to arrive, a queue to drain).
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll } from 'vitest';
import { startDnsServer } from './dns-server.ts';
import type { DnsServer, DnsZone } from './dns-server.ts';
import { makeSetup, startTestHearth } from './hearth.ts';
import type { TestSetup } from './hearth.ts';

export type Received = { from: string; to: string[]; raw: Buffer };
export type RemoteMx = { received: Received[]; port: number; connections(): number; close(): Promise<void> };

/** `policy` decides per recipient; the default accepts everything. */
export async function startRemoteMx(host = '127.0.0.1', policy: (rcpt: string) => 'accept' | 'defer' | 'reject' = () => 'accept'): Promise<RemoteMx> {
  const received: Received[] = [];
  let connections = 0;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    logger: false,
    onConnect(_session, cb) {
      connections++;
      cb();
    },
    onRcptTo(address, _session, cb) {
      const verdict = policy(address.address);
      if (verdict === 'defer') return cb(Object.assign(new Error('try again later'), { responseCode: 451 }));
      if (verdict === 'reject') return cb(Object.assign(new Error('no such user here'), { responseCode: 550 }));
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        received.push({ from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address), raw: Buffer.concat(chunks) });
        cb();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, host, () => resolve()));
  const port = (server.server.address() as { port: number }).port;
  return { received, port, connections: () => connections, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** Poll `check` (every 25 ms, at most `ms`) until it returns something truthy. */
export async function waitFor<T>(check: () => T | undefined | Promise<T | undefined>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The config lines that send a test hearth's remote mail to this MX, found through this DNS server; `relay` adds lines to [relay]. */
export function relayToml(remote: { port: number }, dns: { port: number }, relay = ''): string {
  return `[relay]\nmx_port = ${remote.port}\n${relay}[dns]\nservers = ["127.0.0.1:${dns.port}"]\ntimeout = "2s"\n`;
}

type Stoppable = { close(): Promise<unknown> } | { cleanup(): Promise<unknown> } | undefined;

/** For afterAll: stop a suite's parts in the order given (hearth first); parts never started are skipped. */
export async function stopAll(...parts: Stoppable[]): Promise<void> {
  for (const part of parts) {
    if (!part) continue;
    await ('close' in part ? part.close() : part.cleanup());
  }
}

export type RelaySuite = { remote: RemoteMx; dns: DnsServer; setup: TestSetup; hearth: Awaited<ReturnType<typeof startTestHearth>> };

/**
 * For a describe block: before its tests, a remote MX (accepting everything), a DNS server
 * answering `zone`, and a test hearth relaying through them (makeSetup's options, `toml` after
 * relayToml's lines); `ready` runs last. All are stopped after its tests. The object returned is
 * filled in by that beforeAll.
 */
export function relaySuite(opts: Parameters<typeof makeSetup>[0] & { zone: DnsZone; ready?: (suite: RelaySuite) => Promise<unknown> }): RelaySuite {
  const { zone, ready, toml = '', ...setupOpts } = opts;
  const suite = {} as RelaySuite;
  beforeAll(async () => {
    suite.remote = await startRemoteMx();
    suite.dns = await startDnsServer(zone);
    suite.setup = await makeSetup({ ...setupOpts, toml: relayToml(suite.remote, suite.dns) + toml });
    suite.hearth = await startTestHearth(suite.setup);
    await ready?.(suite);
  });
  afterAll(() => stopAll(suite.hearth, suite.remote, suite.dns, suite.setup));
  return suite;
}
