// The hearth under test for bench/imap.ts, in a child process of its own: the benchmark's
// client does not share its event loop, and its memory figures are the server's alone.
// argv: <configDir> [--bare]. With --bare it is not hearth but the least a Node server can be
// for the same traffic (net/tls servers with the same certificate, a greeting, and a fixed
// answer per command), the baseline that hearth's per-connection memory is compared with;
// BENCH_BARE_LOGIN adds hearth's password hashing to it (see passwordCheck).
// Sends { ports } once listening; answers { mem } (after full GCs when started with
// --expose-gc), { snapshot } (a heap snapshot's file) and { stop } over the IPC channel.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import v8 from 'node:v8';
import { Worker } from 'node:worker_threads';
import { silentLogger } from '../src/core/log.ts';

type Request = { id: number; op: 'mem' | 'stop' | 'snapshot'; dir?: string };

const configDir = process.argv[2];
const bare = process.argv.includes('--bare');
// Hearth's modules are loaded only when hearth is what is measured.
const server = bare ? await startBare(configDir) : await (await import('../src/main.ts')).startHearth({ configDir, log: silentLogger() }).then((h) => ({ ports: Object.fromEntries(h.endpoints.map((e) => [e.service, e.port])), close: () => h.close() }));
const gc = (globalThis as { gc?: () => void }).gc;
process.on('message', (msg: Request) => {
  void (async () => {
    if (msg.op === 'mem') {
      if (gc) {
        // Twice, a turn apart: objects freed by the first (and their finalizers) go in the second.
        gc();
        await new Promise((r) => setImmediate(r));
        gc();
      }
      const m = process.memoryUsage();
      process.send!({ id: msg.id, mem: { rss: m.rss, rssAnon: rssAnon(), threads: threads(), heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, newSpace: newSpace() } });
    } else if (msg.op === 'snapshot') {
      process.send!({ id: msg.id, file: v8.writeHeapSnapshot(join(msg.dir!, `imap-server-${process.pid}-${Date.now()}.heapsnapshot`)) });
    } else if (msg.op === 'stop') {
      await server.close();
      process.send!({ id: msg.id, stopped: true }, () => process.exit(0));
    }
  })();
});
function newSpace(): number {
  return v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
}
/** Threads in the process (worker threads and allocator arenas show up as RSS). */
function threads(): number {
  try {
    return Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'latin1'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}
/** Anonymous resident memory (heap, malloc, stacks), without the mapped binary and libraries. */
function rssAnon(): number {
  try {
    const kb = /^RssAnon:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'latin1'))?.[1];
    return kb ? Number(kb) * 1024 : 0;
  } catch {
    return 0; // not Linux
  }
}

/** The baseline: plain and implicit-TLS listeners that speak just enough IMAP for the bench client. */
async function startBare(dir: string): Promise<{ ports: Record<string, number>; close(): Promise<void> }> {
  const key = readFileSync(join(dir, 'tls', 'key.pem'));
  const cert = readFileSync(join(dir, 'tls', 'cert.pem'));
  const sockets = new Set<net.Socket>();
  const checkPassword = await passwordCheck(process.env.BENCH_BARE_LOGIN ?? 'none');
  const serve = (s: net.Socket): void => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.write('* OK bare\r\n');
    let partial = '';
    s.on('data', (d: Buffer) => {
      const lines = (partial + d.toString('latin1')).split('\r\n');
      partial = lines.pop()!;
      for (const line of lines) {
        const [tag, verb] = line.split(' ', 2);
        if (verb === 'LOGIN' && checkPassword) {
          // As hearth checks a SHA512-CRYPT password: the allocator sees the same work.
          void checkPassword().then(() => s.write(`${tag} OK done\r\n`));
          continue;
        }
        if (verb === 'IDLE') s.write('+ idling\r\n');
        else if (verb === 'SELECT') s.write(`* ${process.env.BENCH_IDLE_MESSAGES ?? 100} EXISTS\r\n${tag} OK done\r\n`);
        else s.write(`${tag} OK done\r\n`);
      }
    });
  };
  const plain = net.createServer(serve);
  const secure = tls.createServer({ key, cert, minVersion: 'TLSv1.2' }, serve);
  const listen = (srv: net.Server): Promise<number> => new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve((srv.address() as net.AddressInfo).port)));
  const ports = { imap: await listen(plain), imaps: await listen(secure) };
  return {
    ports,
    close: async () => {
      for (const s of sockets) s.destroy();
      await Promise.all([plain, secure].map((srv) => new Promise((r) => srv.close(r))));
    },
  };
}
/**
 * BENCH_BARE_LOGIN: 'crypt' hashes the bench password with SHA512-CRYPT on the event loop at
 * each LOGIN, as hearth does; 'crypt-worker' does it in a worker thread; 'none' not at all.
 */
async function passwordCheck(mode: string): Promise<(() => Promise<unknown>) | undefined> {
  const password = process.env.BENCH_PASSWORD ?? '';
  const setting = '$6$rounds=1000$benchsaltbench';
  const module = new URL('../src/config/sha-crypt.ts', import.meta.url).href;
  if (mode === 'crypt') {
    const { shaCrypt } = await import(module);
    return () => shaCrypt(password, setting);
  }
  if (mode !== 'crypt-worker') return undefined;
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     import(workerData.module).then(({ shaCrypt }) => parentPort.on('message', async (id) => { await shaCrypt(workerData.password, workerData.setting); parentPort.postMessage(id); }));`,
    { eval: true, workerData: { module, password, setting } },
  );
  worker.unref();
  const waiting = new Map<number, () => void>();
  let seq = 0;
  worker.on('message', (id: number) => {
    waiting.get(id)?.();
    waiting.delete(id);
  });
  return () =>
    new Promise<void>((resolve) => {
      waiting.set(++seq, resolve);
      worker.postMessage(seq);
    });
}

process.send!({ ports: server.ports });
