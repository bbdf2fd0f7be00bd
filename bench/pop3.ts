// POP3 benchmark: LIST + UIDL + RETR of a whole maildrop (default 10,000 messages of 10 KB)
// in one session. Prints messages/second, MB/s and peak RSS.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { silentLogger } from '../src/core/log.ts';
import { ensureDefaultConfig } from '../src/config/defaults.ts';
import { UsersFile } from '../src/config/users.ts';
import { MaildirStore } from '../src/store/maildir.ts';
import { startHearth } from '../src/main.ts';

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { messages: { type: 'string', default: '10000' }, size: { type: 'string', default: '10240' }, help: { type: 'boolean', default: false } } });
  if (values.help) {
    process.stdout.write('npm run bench -- pop3 [--messages N] [--size BYTES]\n');
    return;
  }
  const count = Number(values.messages);
  const size = Number(values.size);
  const root = await mkdtemp(join(tmpdir(), 'hearth-bench-pop3-'));
  const configDir = join(root, 'config');
  await ensureDefaultConfig(configDir, { log: silentLogger() });
  await writeFile(join(configDir, 'hearth.toml'), `hostname = "bench.example"\ndomains = ["example.test"]\nlog_level = "warn"\n[listeners.pop3]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n`);
  await new UsersFile(join(configDir, 'users')).add('bench@example.test', 'bench-password-123');

  process.stdout.write(`filling a maildrop with ${count} messages of ${size} B...\n`);
  const store = new MaildirStore({ root: join(root, 'maildir'), fsync: false, log: silentLogger() });
  const line = 'The quick brown fox jumps over the lazy dog, again and again and again.\r\n';
  for (let i = 0; i < count; i++) {
    const head = `From: a@remote.example\r\nSubject: message ${i}\r\nMessage-ID: <${i}@bench>\r\n\r\n`;
    const body = line.repeat(Math.max(1, Math.floor((size - head.length) / line.length)));
    await store.deliver([{ user: 'bench', domain: 'example.test' }], head + body);
  }

  const hearth = await startHearth({ configDir, log: silentLogger() });
  const port = hearth.endpoints.find((e) => e.service === 'pop3')!.port;
  let peakRss = process.memoryUsage.rss();
  const rssTimer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage.rss())), 50);
  const result = await new Promise<{ messages: number; bytes: number; seconds: number }>((resolve, reject) => {
    const w = new Worker(new URL('./pop3-client.ts', import.meta.url), { workerData: { port, user: 'bench@example.test', password: 'bench-password-123' } });
    w.once('message', resolve);
    w.once('error', reject);
  });
  clearInterval(rssTimer);
  await hearth.close();
  await rm(root, { recursive: true, force: true });
  process.stdout.write(
    `pop3: LIST + UIDL + RETR of ${result.messages} messages (${(result.bytes / 1e6).toFixed(1)} MB) in ${result.seconds.toFixed(2)} s\n` +
      `  ${(result.messages / result.seconds).toFixed(0)} messages/s, ${(result.bytes / 1e6 / result.seconds).toFixed(1)} MB/s\n` +
      `  peak RSS ${(peakRss / 1024 / 1024).toFixed(0)} MiB (server and client thread)\n`,
  );
}
