// kill -9 a queue process while deliveries are in flight, restart it on the same spool, and
// check with a counting fake remote that every enqueued recipient was delivered exactly once.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { QueueEntry } from '../../src/queue/queue.ts';
import { removeDir, tempDir, waitFor } from './helpers.ts';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'queue-child.ts');

type Remote = {
  url: string;
  /** Acknowledged deliveries per recipient address. */
  acked: Map<string, number>;
  ackedRequests: number;
  stalled: Array<{ rcpts: string[]; res: http.ServerResponse }>;
  /** Acknowledge at most this many requests; later ones hang (in flight at the kill). */
  ackLimit: number;
  close(): Promise<void>;
};

async function startRemote(ackLimit: number): Promise<Remote> {
  const remote: Remote = { url: '', acked: new Map(), ackedRequests: 0, stalled: [], ackLimit, close: async () => {} };
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      const job = JSON.parse(body) as { rcpts: string[] };
      if (remote.ackedRequests >= remote.ackLimit) {
        remote.stalled.push({ rcpts: job.rcpts, res });
        return;
      }
      remote.ackedRequests++;
      for (const r of job.rcpts) remote.acked.set(r, (remote.acked.get(r) ?? 0) + 1);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ recipients: job.rcpts.map((address) => ({ address, status: 'delivered', reply: '250 2.0.0 ok (from fake.remote)' })) }));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  remote.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  remote.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return remote;
}

function runChild(env: Record<string, string>): { child: ChildProcess; lines: string[]; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [CHILD], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let buf = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (c: string) => {
    buf += c;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (c: string) => (stderr += c));
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      if (code !== 0 && code !== null) console.error(stderr);
      resolve(code);
    }),
  );
  return { child, lines, exited };
}

async function spoolStates(dir: string): Promise<QueueEntry[]> {
  const out: QueueEntry[] = [];
  for (const name of await readdir(dir)) {
    if (!name.endsWith('.json') || name.startsWith('.')) continue;
    try {
      out.push((JSON.parse(await readFile(path.join(dir, name), 'utf8')) as { entry: QueueEntry }).entry);
    } catch {
      // removed between readdir and read
    }
  }
  return out;
}

let cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn();
  cleanup = [];
});

describe('crash', () => {
  it('kill -9 mid-delivery, restart: every recipient delivered exactly once', async () => {
    const dir = await tempDir();
    const remote = await startRemote(6);
    cleanup.push(() => remote.close(), () => removeDir(dir));
    const firstRetryMs = 400;

    const a = runChild({ QUEUE_DIR: dir, REMOTE_URL: remote.url, ENQUEUE: '10', FIRST_RETRY_MS: String(firstRetryMs) });
    cleanup.push(() => void a.child.kill('SIGKILL'));
    const enqueued = (): string[][] => a.lines.filter((l) => l.startsWith('enqueued ')).map((l) => l.split(' ')[2].split(','));
    // Every acknowledged recipient is recorded, more attempts hang at the remote: crash now.
    await waitFor(async () => {
      if (enqueued().length < 10 || remote.ackedRequests < 6 || remote.stalled.length < 2) return false;
      const delivered = new Set((await spoolStates(dir)).flatMap((e) => e.recipients.filter((r) => r.status === 'delivered').map((r) => r.address)));
      const queued = new Set((await spoolStates(dir)).flatMap((e) => e.recipients.map((r) => r.address)));
      // Recorded: marked delivered, or its whole entry finished and removed.
      return [...remote.acked.keys()].every((addr) => delivered.has(addr) || !queued.has(addr));
    }, 'acknowledged deliveries recorded and more in flight', 15_000);
    const killedAt = Date.now();
    a.child.kill('SIGKILL');
    expect(await a.exited).toBeNull();
    const inFlight = remote.stalled.flatMap((s) => s.rcpts);
    for (const s of remote.stalled.splice(0)) s.res.destroy();

    // What the crash left: in-flight recipients carry their recorded attempt, due only after the backoff.
    const states = await spoolStates(dir);
    const byAddress = new Map(states.flatMap((e) => e.recipients.map((r) => [r.address, r] as const)));
    for (const addr of inFlight) {
      const r = byAddress.get(addr);
      expect(r, addr).toBeDefined();
      expect(r!.status).not.toBe('delivered');
      expect(r!.attempts).toBeGreaterThanOrEqual(1);
      expect(r!.nextAttemptAt).toBe(r!.lastAttemptAt! + firstRetryMs);
      expect(r!.lastAttemptAt!).toBeLessThanOrEqual(killedAt);
    }

    remote.ackLimit = Infinity;
    const b = runChild({ QUEUE_DIR: dir, REMOTE_URL: remote.url, ENQUEUE: '0', FIRST_RETRY_MS: String(firstRetryMs) });
    cleanup.push(() => void b.child.kill('SIGKILL'));
    await waitFor(() => b.lines.includes('empty'), 'restarted queue drained', 20_000);
    expect(await b.exited).toBe(0);

    const all = enqueued().flat();
    expect(all).toHaveLength(30);
    for (const addr of all) expect(remote.acked.get(addr), addr).toBe(1);
    expect([...remote.acked.keys()].sort()).toEqual([...all].sort());
    expect(a.lines.concat(b.lines)).not.toContain('bounce');
    expect(await readdir(dir)).toEqual([]);
  });
});
