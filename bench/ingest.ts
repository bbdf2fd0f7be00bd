// Ingest benchmark: N messages of S bytes over C concurrent SMTP sessions into Maildir with
// fsync on, in two modes: sessions reused for many messages, and one message per connection
// (how MX traffic arrives). Prints messages/second, p50/p99 latency from the end of DATA to
// the 250, peak RSS, event-loop delay p99 of the server's loop, and the CPU time the server's
// thread spent per message (steadier than messages/second on a shared machine).
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { writeFile, mkdir } from 'node:fs/promises';
import { silentLogger } from '../src/core/log.ts';
import { ensureDefaultConfig } from '../src/config/defaults.ts';
import { UsersFile } from '../src/config/users.ts';
import { startHearth } from '../src/main.ts';

const HELP = `npm run bench -- ingest [--messages N] [--size BYTES] [--concurrency C] [--mode reused|per-connection|both] [--no-fsync] [--checks] [--compare]
  defaults: 5000 messages x 10240 bytes over 20 sessions, both modes, fsync on
  --checks: sender checks on (SPF, DKIM-signed messages, DMARC, ARC) against a DNS server on loopback
  --compare: each mode without and then with the checks, and what the checks cost`;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      messages: { type: 'string', default: '5000' },
      size: { type: 'string', default: '10240' },
      concurrency: { type: 'string', default: '20' },
      mode: { type: 'string', default: 'both' },
      'no-fsync': { type: 'boolean', default: false },
      checks: { type: 'boolean', default: false },
      compare: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return;
  }
  const messages = Number(values.messages);
  const size = Number(values.size);
  const concurrency = Number(values.concurrency);
  const modes = values.mode === 'both' ? ['reused', 'per-connection'] : [values.mode];

  // Sender checks: the load generator's domain publishes SPF, a DKIM key and DMARC p=reject on a
  // loopback DNS server; every message is signed, so each one costs SPF (MAIL FROM and HELO),
  // a DKIM key lookup and verification, ARC and DMARC, as real mail does.
  const checksDns = values.checks || values.compare ? await startChecksDns() : undefined;
  const runs = modes.flatMap((mode) => (values.compare ? [false, true] : [values.checks]).map((on) => ({ mode, checks: on ? checksDns : undefined })));
  const summary: string[] = [];
  let without: { rate: number; p99: number } | undefined;

  for (const { mode, checks } of runs) {
    const root = await mkdtemp(join(tmpdir(), 'hearth-bench-'));
    const configDir = join(root, 'config');
    await ensureDefaultConfig(configDir, { log: silentLogger() });
    await writeFile(
      join(configDir, 'hearth.toml'),
      `hostname = "bench.example"\ndomains = ["example.test"]\nfsync = ${!values['no-fsync']}\nlog_level = "warn"\n[listeners.smtp]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n[limits]\nconnections_per_ip = ${concurrency + 10}\n${checks?.toml ?? ''}`,
    );
    await new UsersFile(join(configDir, 'users')).add('bench@example.test', 'bench-password-123');
    await mkdir(join(root, 'maildir'), { recursive: true });
    // What this disk allows with no SMTP at all, measured in the same folder just before: the
    // file work of a delivery varies severalfold between runs on a shared VM's disk.
    const disk = await diskBaseline(join(root, 'baseline'), Math.min(messages, 2000), size, concurrency, !values['no-fsync']);
    const hearth = await startHearth({ configDir, log: silentLogger() });
    const port = hearth.endpoints.find((e) => e.service === 'smtp')!.port;

    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const cpuBefore = process.threadCpuUsage();
    const processCpuBefore = process.cpuUsage();
    let peakRss = process.memoryUsage.rss();
    const rssTimer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage.rss())), 100);
    const result = await new Promise<{ sent: number; failed: number; seconds: number; latencies: number[] }>((resolve, reject) => {
      const w = new Worker(new URL('./ingest-client.ts', import.meta.url), {
        workerData: { port, messages, size, concurrency, perConnection: mode === 'per-connection', dkim: checks?.dkim },
      });
      w.once('message', resolve);
      w.once('error', reject);
    });
    const cpu = process.threadCpuUsage(cpuBefore);
    // Every thread of the process: the server, the load generator, libuv's file-system threads,
    // and the kernel's work on their behalf (system time). On a small machine this is the ceiling.
    const processCpu = process.cpuUsage(processCpuBefore);
    clearInterval(rssTimer);
    delay.disable();
    await hearth.close();
    await rm(root, { recursive: true, force: true });

    const lat = result.latencies.sort((a, b) => a - b);
    process.stdout.write(
      `ingest ${mode}: ${result.sent} sent, ${result.failed} failed, ${messages} x ${size} B over ${concurrency} sessions, fsync ${values['no-fsync'] ? 'off' : 'on'}, sender checks ${checks ? 'on' : 'off'}\n` +
        `  ${(result.sent / result.seconds).toFixed(0)} messages/s in ${result.seconds.toFixed(1)} s\n` +
        `  latency DATA end -> 250: p50 ${percentile(lat, 50).toFixed(1)} ms, p99 ${percentile(lat, 99).toFixed(1)} ms\n` +
        `  event-loop delay p99 ${(delay.percentile(99) / 1e6).toFixed(1)} ms, max ${(delay.max / 1e6).toFixed(1)} ms\n` +
        `  server thread CPU ${((cpu.user + cpu.system) / 1000 / Math.max(1, result.sent)).toFixed(3)} ms/message (user ${(cpu.user / 1e6).toFixed(1)} s, system ${(cpu.system / 1e6).toFixed(1)} s)\n` +
        `  whole process CPU ${((processCpu.user + processCpu.system) / 1000 / Math.max(1, result.sent)).toFixed(3)} ms/message (user ${(processCpu.user / 1e6).toFixed(1)} s, system ${(processCpu.system / 1e6).toFixed(1)} s, load generator included): at most ${Math.round((availableParallelism() * 1000 * Math.max(1, result.sent)) / Math.max(1, (processCpu.user + processCpu.system) / 1000))} messages/s on ${availableParallelism()} cores\n` +
        `  peak RSS ${(peakRss / 1024 / 1024).toFixed(0)} MiB (server and load-generator thread)\n` +
        `  disk baseline ${disk.toFixed(0)} deliveries/s (the same file steps with no SMTP, ${concurrency} at a time): hearth ran at ${((100 * result.sent) / result.seconds / disk).toFixed(0)}% of it\n`,
    );
    const rate = result.sent / result.seconds;
    const p99 = delay.percentile(99) / 1e6;
    if (!checks) without = { rate, p99 };
    else if (values.compare && without) {
      summary.push(
        `  ${mode}: ${without.rate.toFixed(0)} msg/s, loop p99 ${without.p99.toFixed(1)} ms without checks; ${rate.toFixed(0)} msg/s, loop p99 ${p99.toFixed(1)} ms with them: checks cost ${(100 * (1 - rate / without.rate)).toFixed(0)}% of the throughput\n`,
      );
    }
  }
  if (summary.length) process.stdout.write(`sender checks (target: they cost less than half of the throughput)\n${summary.join('')}`);
  await checksDns?.close();
}

/**
 * Deliveries per second this disk allows without hearth: `n` files of `size` bytes, `concurrency`
 * at a time, each written to tmp/, fsync'd, hard-linked into new/ (directory fsync shared by
 * the writers waiting, as the store does) and unlinked from tmp/. Removes what it wrote.
 */
async function diskBaseline(dir: string, n: number, size: number, concurrency: number, fsync: boolean): Promise<number> {
  const { open, link, unlink } = await import('node:fs/promises');
  await mkdir(join(dir, 'tmp'), { recursive: true });
  await mkdir(join(dir, 'new'));
  const body = Buffer.alloc(size, 'x');
  let dirSync: Promise<void> | undefined;
  const syncNew = (): Promise<void> =>
    (dirSync ??= (async () => {
      const h = await open(join(dir, 'new'), 'r');
      await h.sync();
      await h.close();
    })().finally(() => (dirSync = undefined)));
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < n; i = next++) {
        const h = await open(join(dir, 'tmp', String(i)), 'wx');
        await h.write(body);
        if (fsync) await h.sync();
        await h.close();
        await link(join(dir, 'tmp', String(i)), join(dir, 'new', String(i)));
        if (fsync) await syncNew();
        await unlink(join(dir, 'tmp', String(i)));
      }
    }),
  );
  const rate = n / ((performance.now() - started) / 1000);
  await rm(dir, { recursive: true, force: true });
  return rate;
}

/**
 * A loopback DNS server publishing SPF, DKIM and DMARC for the load generator's domain. It runs
 * in a worker thread: a real resolver is another process, and its work must not be charged to
 * the server's event loop.
 */
async function startChecksDns(): Promise<{ toml: string; dkim: { signingDomain: string; selector: string; privateKey: string }; close(): Promise<void> }> {
  const { generateKeyPairSync } = await import('node:crypto');
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const record = `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;
  const zone = {
    'remote.example': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
    'load.example': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
    'bench._domainkey.remote.example': { TXT: [[record.slice(0, 250), record.slice(250)]] },
    '_dmarc.remote.example': { TXT: [['v=DMARC1; p=reject']] },
  };
  const fixture = new URL('../test/helpers/dns-server.ts', import.meta.url).href;
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     import(workerData.fixture).then(async (m) => {
       const dns = await m.startDnsServer(workerData.zone);
       parentPort.once('message', () => dns.close().then(() => process.exit(0)));
       parentPort.postMessage(dns.port);
     });`,
    { eval: true, workerData: { fixture, zone } },
  );
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return {
    toml: `[inbound]\ncheck_loopback = true\nconnections_per_minute = 0\nmessages_per_minute = 0\n[dns]\nservers = ["127.0.0.1:${port}"]\n`,
    dkim: { signingDomain: 'remote.example', selector: 'bench', privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() },
    close: async () => {
      worker.postMessage('stop');
      await new Promise((resolve) => worker.once('exit', resolve));
    },
  };
}
