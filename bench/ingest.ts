// Ingest benchmark: N messages of S bytes over C concurrent SMTP sessions into Maildir with
// fsync on, in two modes: sessions reused for many messages, and one message per connection
// (how MX traffic arrives). Prints messages/second, p50/p99 latency from the end of DATA to
// the 250, peak RSS, and event-loop delay p99 of the server's loop.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { writeFile, mkdir } from 'node:fs/promises';
import { silentLogger } from '../src/core/log.ts';
import { ensureDefaultConfig } from '../src/config/defaults.ts';
import { UsersFile } from '../src/config/users.ts';
import { startHearth } from '../src/main.ts';

const HELP = `npm run bench -- ingest [--messages N] [--size BYTES] [--concurrency C] [--mode reused|per-connection|both] [--no-fsync]
  defaults: 5000 messages x 10240 bytes over 20 sessions, both modes, fsync on`;

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

  for (const mode of modes) {
    const root = await mkdtemp(join(tmpdir(), 'hearth-bench-'));
    const configDir = join(root, 'config');
    await ensureDefaultConfig(configDir, { log: silentLogger() });
    await writeFile(
      join(configDir, 'hearth.toml'),
      `hostname = "bench.example"\ndomains = ["example.test"]\nfsync = ${!values['no-fsync']}\nlog_level = "warn"\n[listeners.smtp]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n[limits]\nconnections_per_ip = ${concurrency + 10}\n`,
    );
    await new UsersFile(join(configDir, 'users')).add('bench@example.test', 'bench-password-123');
    await mkdir(join(root, 'maildir'), { recursive: true });
    const hearth = await startHearth({ configDir, log: silentLogger() });
    const port = hearth.endpoints.find((e) => e.service === 'smtp')!.port;

    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    let peakRss = process.memoryUsage.rss();
    const rssTimer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage.rss())), 100);
    const result = await new Promise<{ sent: number; failed: number; seconds: number; latencies: number[] }>((resolve, reject) => {
      const w = new Worker(new URL('./ingest-client.ts', import.meta.url), {
        workerData: { port, messages, size, concurrency, perConnection: mode === 'per-connection' },
      });
      w.once('message', resolve);
      w.once('error', reject);
    });
    clearInterval(rssTimer);
    delay.disable();
    await hearth.close();
    await rm(root, { recursive: true, force: true });

    const lat = result.latencies.sort((a, b) => a - b);
    process.stdout.write(
      `ingest ${mode}: ${result.sent} sent, ${result.failed} failed, ${messages} x ${size} B over ${concurrency} sessions, fsync ${values['no-fsync'] ? 'off' : 'on'}\n` +
        `  ${(result.sent / result.seconds).toFixed(0)} messages/s in ${result.seconds.toFixed(1)} s\n` +
        `  latency DATA end -> 250: p50 ${percentile(lat, 50).toFixed(1)} ms, p99 ${percentile(lat, 99).toFixed(1)} ms\n` +
        `  event-loop delay p99 ${(delay.percentile(99) / 1e6).toFixed(1)} ms, max ${(delay.max / 1e6).toFixed(1)} ms\n` +
        `  peak RSS ${(peakRss / 1024 / 1024).toFixed(0)} MiB (server and load-generator thread)\n`,
    );
  }
}
