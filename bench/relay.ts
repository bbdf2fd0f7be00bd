// Relay benchmark: N messages of S bytes submitted to hearth and relayed through the durable
// queue to D remote domains whose MXes (found through a DNS server on loopback) are sinks on
// loopback. Prints messages/second end to end, peak RSS and the server loop's delay p99.
// `--rtt MS` makes the sinks answer each command MS late (a round trip to a distant MX), where
// PIPELINING (RFC 2920) pays off; `--no-pipelining` hides it from the sinks' EHLO to compare.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import net from 'node:net';
import { silentLogger } from '../src/core/log.ts';
import { ensureDefaultConfig } from '../src/config/defaults.ts';
import { UsersFile } from '../src/config/users.ts';
import { startHearth } from '../src/main.ts';
import { startDnsServer } from '../test/helpers/dns-server.ts';
import type { DnsZone } from '../test/helpers/dns-server.ts';

function pct(values: number[], p: number): string {
  const sorted = [...values].sort((a, b) => a - b);
  return (sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0).toFixed(1);
}

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { messages: { type: 'string', default: '2000' }, size: { type: 'string', default: '10240' }, domains: { type: 'string', default: '20' }, 'no-fsync': { type: 'boolean', default: false }, rtt: { type: 'string', default: '0' }, 'no-pipelining': { type: 'boolean', default: false }, help: { type: 'boolean', default: false } },
  });
  if (values.help) {
    process.stdout.write('npm run bench -- relay [--messages N] [--size BYTES] [--domains D] [--rtt MS (sinks answer MS late)] [--no-pipelining (sinks do not offer it)] [--no-fsync (diagnosis only: shows what fsync costs)]\n');
    return;
  }
  const messages = Number(values.messages);
  const domains = Number(values.domains);
  const rtt = Number(values.rtt);
  if (!Number.isFinite(rtt) || rtt < 0) throw new Error(`--rtt ${values.rtt}: give milliseconds`);
  const ehlo = values['no-pipelining'] ? '250-sink\r\n250 8BITMIME\r\n' : '250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n';

  let received = 0;
  let allReceived: () => void = () => undefined;
  const done = new Promise<void>((r) => (allReceived = r));
  // A minimal sink MX that greets at once (smtp-server waits 100 ms before its greeting, which
  // would measure smtp-server, not hearth): just enough SMTP to accept and count messages.
  let connections = 0;
  const sink = net.createServer((socket) => {
    connections++;
    let inData = false;
    let buffered = '';
    // The replies to one read leave together (RFC 2920 3.2: a pipelining server sends a group's
    // replies as a unit; with Nagle on, replies written one by one would wait for the client's
    // delayed ACK), `rtt` ms after the commands came in; equal timeouts fire in order.
    let pending = '';
    let ending = false;
    const reply = (text: string, end = false): void => {
      pending += text;
      ending ||= end;
    };
    const flush = (): void => {
      const text = pending;
      const end = ending;
      pending = '';
      if (text === '') return;
      const go = (): void => void (socket.destroyed ? undefined : end ? socket.end(text) : socket.write(text));
      if (rtt > 0) setTimeout(go, rtt);
      else go();
    };
    reply('220 sink ESMTP\r\n');
    flush();
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      answer();
      flush();
    });
    const answer = (): void => {
      for (;;) {
        if (inData) {
          const end = buffered.indexOf('\r\n.\r\n');
          if (end < 0) {
            buffered = buffered.slice(-4);
            return;
          }
          buffered = buffered.slice(end + 5);
          inData = false;
          reply('250 2.0.0 ok\r\n');
          if (++received === messages) allReceived();
          continue;
        }
        const nl = buffered.indexOf('\r\n');
        if (nl < 0) return;
        const verb = buffered.slice(0, 4).toUpperCase();
        buffered = buffered.slice(nl + 2);
        if (verb === 'EHLO') reply(ehlo);
        else if (verb === 'DATA') {
          inData = true;
          reply('354 go ahead\r\n');
        } else if (verb === 'QUIT') reply('221 bye\r\n', true);
        else reply('250 ok\r\n');
      }
    };
  });
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', () => r()));
  const sinkPort = (sink.address() as net.AddressInfo).port;
  const zone: DnsZone = {};
  for (let d = 0; d < domains; d++) {
    zone[`d${d}.remote.example`] = { MX: [{ preference: 10, exchange: `mx.d${d}.remote.example` }] };
    zone[`mx.d${d}.remote.example`] = { A: ['127.0.0.1'] };
  }
  const dns = await startDnsServer(zone);

  const root = await mkdtemp(join(tmpdir(), 'hearth-bench-relay-'));
  const configDir = join(root, 'config');
  await ensureDefaultConfig(configDir, { log: silentLogger() });
  await writeFile(
    join(configDir, 'hearth.toml'),
    `hostname = "bench.example"\ndomains = ["example.test"]\nlog_level = "warn"\n${values['no-fsync'] ? 'fsync = false\n' : ''}[listeners.submission]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n` +
      `[relay]\nmx_port = ${sinkPort}\n[dns]\nservers = ["127.0.0.1:${dns.port}"]\n[queue]\nmax_concurrent = 40\nmax_per_domain = 4\n[limits]\nconnections_per_ip = 50\n`,
  );
  await new UsersFile(join(configDir, 'users')).add('bench@example.test', 'bench-password-123');
  const hearth = await startHearth({ configDir, log: silentLogger() });
  const port = hearth.endpoints.find((e) => e.service === 'submission')!.port;

  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  let peakRss = process.memoryUsage.rss();
  const rssTimer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage.rss())), 100);
  const started = performance.now();
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const thread0 = process.threadCpuUsage();
  // The ingest benchmark's pipelining client, logged in, as 10 mail clients submitting at once.
  const submitted = await new Promise<{ seconds: number; sent: number; failed: number; latencies: number[] }>((resolve, reject) => {
    const w = new Worker(new URL('./ingest-client.ts', import.meta.url), {
      workerData: { port, messages, size: Number(values.size), concurrency: 10, perConnection: false, auth: { user: 'bench@example.test', pass: 'bench-password-123' }, from: 'bench@example.test', rcpt: 'user{i}@d{d}.remote.example', domains },
    });
    w.once('message', resolve);
    w.once('error', reject);
  });
  if (submitted.failed) throw new Error(`${submitted.failed} submissions failed`);
  await done;
  const seconds = (performance.now() - started) / 1000;
  // Less noisy than the wall clock on a shared machine: how busy the main loop was, and the CPU
  // the whole process (all threads, the client's included) used per message.
  const elu = performance.eventLoopUtilization(elu0);
  const cpu = process.cpuUsage(cpu0);
  const thread = process.threadCpuUsage(thread0);
  const threadMs = (thread.user + thread.system) / 1000;
  clearInterval(rssTimer);
  delay.disable();
  await hearth.close();
  await dns.close();
  sink.close();
  await rm(root, { recursive: true, force: true });
  process.stdout.write(
    `relay: ${messages} messages of ${values.size} B to ${domains} domains${rtt > 0 ? `, sinks answering ${rtt} ms late` : ''}${values['no-pipelining'] ? ', no PIPELINING' : ''}, submitted in ${submitted.seconds.toFixed(1)} s, all relayed in ${seconds.toFixed(1)} s over ${connections} connections\n` +
      `  ${(messages / seconds).toFixed(0)} messages/s end to end (target 500)\n` +
      `  submission latency (end of DATA to 250) p50 ${pct(submitted.latencies, 50)} ms, p99 ${pct(submitted.latencies, 99)} ms\n` +
      `  main loop busy ${(elu.active / 1000).toFixed(1)} s, main thread CPU ${(threadMs / 1000).toFixed(1)} s (${((threadMs / messages) * 1000).toFixed(0)} µs per message); process CPU user ${(cpu.user / 1e6).toFixed(1)} s, system ${(cpu.system / 1e6).toFixed(1)} s\n` +
      `  event-loop delay p99 ${(delay.percentile(99) / 1e6).toFixed(1)} ms, max ${(delay.max / 1e6).toFixed(1)} ms\n` +
      `  peak RSS ${(peakRss / 1024 / 1024).toFixed(0)} MiB (server, sinks and client thread)\n`,
  );
}
