// Gather benchmark (issue 7): the first pull of a large remote mailbox (default 10,000 messages
// of 10 KB) over IMAP from a loopback hearth, into a local mailbox, in copy mode. Prints
// messages/second and the gathering process's peak RSS beside the target (>= 500/s).
//
// The remote hearth runs in a child process (`hearth serve`), so the RSS figure is the
// gatherer's alone: ledger, imapflow, the local store and its index, nothing of the server.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { silentLogger } from '../src/core/log.ts';
import { Scheduler } from '../src/core/scheduler.ts';
import { ensureDefaultConfig } from '../src/config/defaults.ts';
import { UsersFile } from '../src/config/users.ts';
import { GatherService } from '../src/gather/service.ts';
import { StoreSink } from '../src/gather/sink.ts';
import { MailStore } from '../src/store/mailboxes.ts';
import { MaildirStore } from '../src/store/maildir.ts';

const HELP = `npm run bench -- gather [options]
  --messages N     messages in the remote INBOX (default 10000)
  --size BYTES     size of each (default 10240)
  --fsync          fsync locally as a real server does (default: on; --no-fsync to turn off)
  --parallel N     local deliveries in flight (default 8)
  --batch N        messages per ledger commit (default 100)
  --no-full-text   do not keep the local full-text index up to date while pulling
  --keep           leave the temporary directories in place`;

const CLI = new URL('../src/cli.ts', import.meta.url).pathname;
const PASSWORD = 'bench-password-123';

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      messages: { type: 'string', default: '10000' },
      size: { type: 'string', default: '10240' },
      fsync: { type: 'boolean', default: true },
      'no-fsync': { type: 'boolean', default: false },
      parallel: { type: 'string', default: '8' },
      batch: { type: 'string', default: '100' },
      'no-full-text': { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return void process.stdout.write(HELP + '\n');
  const count = Number(values.messages);
  const size = Number(values.size);
  const fsync = values.fsync && !values['no-fsync'];
  const root = await mkdtemp(join(tmpdir(), 'hearth-bench-gather-'));
  const out = (s: string): void => void process.stdout.write(s + '\n');

  // ---- the remote: a hearth in a child process, its maildrop filled directly --------------------
  const remoteConfig = join(root, 'remote', 'config');
  await ensureDefaultConfig(remoteConfig, { log: silentLogger() });
  await writeFile(
    join(remoteConfig, 'hearth.toml'),
    `hostname = "remote.example"\ndomains = ["remote.test"]\nlog_level = "info"\nfsync = false\n[listeners.imap]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n[junk]\nenabled = false\n[gather]\nenabled = false\n`,
  );
  await writeFile(join(remoteConfig, 'users'), '');
  await new UsersFile(join(remoteConfig, 'users')).add('far@remote.test', PASSWORD);
  out(`filling the remote INBOX with ${count} messages of ${size} B...`);
  const remoteStore = new MaildirStore({ root: join(root, 'remote', 'maildir'), fsync: false, log: silentLogger() });
  const line = 'The quick brown fox jumps over the lazy dog, again and again and again.\r\n';
  for (let i = 0; i < count; i += 200) {
    await Promise.all(
      Array.from({ length: Math.min(200, count - i) }, (_, j) => {
        const n = i + j;
        const head = `From: someone@remote.test\r\nTo: far@remote.test\r\nSubject: message ${n}\r\nDate: Mon, 2 Feb 2026 10:00:00 +0000\r\nMessage-ID: <${n}@bench.remote.test>\r\n\r\n`;
        const body = line.repeat(Math.max(1, Math.floor((size - head.length) / line.length)));
        return remoteStore.deliver([{ user: 'far', domain: 'remote.test' }], head + body);
      }),
    );
  }
  const child = spawn(process.execPath, [CLI, 'serve', '--config', remoteConfig], { stdio: ['ignore', 'pipe', 'pipe'] });
  const port = await new Promise<number>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error('remote hearth did not start')), 30_000);
    rl.on('line', (l) => {
      try {
        const e = JSON.parse(l) as { service?: string; port?: number };
        if (e.service === 'imap' && e.port) {
          clearTimeout(timer);
          resolve(e.port);
        }
      } catch {
        // not JSON
      }
    });
    child.once('exit', (code) => reject(new Error(`remote hearth exited with ${code}`)));
  });

  // ---- the gatherer: this process --------------------------------------------------------------
  const localRoot = join(root, 'local');
  await mkdir(localRoot, { recursive: true });
  const log = silentLogger();
  const maildir = new MaildirStore({ root: localRoot, hostname: 'home.example', fsync, log });
  const mail = new MailStore({ maildir, log, fullText: !values['no-full-text'] });
  const scheduler = new Scheduler({ log });
  const service = new GatherService({
    dataDir: localRoot,
    scheduler,
    sink: new StoreSink({ mail }),
    log,
    hostname: 'home.example',
    fsync,
    settings: { parallel: Number(values.parallel), batchSize: Number(values.batch), idle: false },
  });
  await service.add({ id: 'bench', owner: 'me@home.test', protocol: 'imap', host: '127.0.0.1', port, tls: 'none', user: 'far@remote.test', folders: ['INBOX'], target: 'INBOX', mode: 'copy' }, PASSWORD);

  const rssBefore = process.memoryUsage.rss();
  let peakRss = rssBefore;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage.rss())), 25);
  const started = performance.now();
  const [outcome] = await service.run('bench');
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  peakRss = Math.max(peakRss, process.resourceUsage().maxRSS * 1024);

  await service.stop();
  await mail.close();
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  if (!values.keep) await rm(root, { recursive: true, force: true });
  else out(`kept ${root}`);

  if (!outcome.ok) throw new Error(`pull failed: ${outcome.error}`);
  const collected = outcome.result!.collected;
  const rate = collected / seconds;
  const mib = (b: number): string => `${(b / 1024 / 1024).toFixed(0)} MiB`;
  out(`gather: first pull of ${collected} messages of ${size} B over IMAP (loopback, copy mode, fsync ${fsync ? 'on' : 'off'}, parallel ${values.parallel}, batch ${values.batch}${values['no-full-text'] ? ', no full-text index' : ''})`);
  out(`  ${seconds.toFixed(2)} s, ${rate.toFixed(0)} messages/s, ${((collected * size) / 1e6 / seconds).toFixed(1)} MB/s   [target >= 500 messages/s: ${rate >= 500 ? 'met' : 'NOT met'}]`);
  out(`  peak RSS ${mib(peakRss)} (at start ${mib(rssBefore)}); mail pulled ${mib(collected * size)}`);
}
