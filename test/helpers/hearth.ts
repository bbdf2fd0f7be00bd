// Test harness: a hearth in a temp folder, configured for loopback and ephemeral ports,
// either in this process (startHearth) or as a child process (for kill -9 tests).
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile, readdir, readFile, cp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ensureDefaultConfig } from '../../src/config/defaults.ts';
import { UsersFile } from '../../src/config/users.ts';
import { silentLogger } from '../../src/core/log.ts';
import { startHearth } from '../../src/main.ts';
import type { RunningHearth } from '../../src/main.ts';

export const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;

let template: Promise<string> | undefined;

/**
 * A default config (with its TLS certificate), copied per test: made once per run by
 * test/global-setup.ts, or once per process (and removed at its exit) without it.
 */
function defaultTemplate(): Promise<string> {
  const shared = process.env.HEARTH_TEST_TEMPLATE;
  template ??= shared
    ? Promise.resolve(shared)
    : (async () => {
        const dir = await mkdtemp(join(tmpdir(), 'hearth-template-'));
        process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
        await ensureDefaultConfig(join(dir, 'config'), { log: silentLogger() });
        return dir;
      })();
  return template;
}

export type TestSetup = { root: string; configDir: string; dataDir: string; cleanup(): Promise<void> };

export async function makeSetup(opts: { users?: Record<string, string>; aliases?: string; toml?: string; fsync?: boolean } = {}): Promise<TestSetup> {
  const root = await mkdtemp(join(tmpdir(), 'hearth-test-'));
  const configDir = join(root, 'config');
  await cp(join(await defaultTemplate(), 'config', 'tls'), join(configDir, 'tls'), { recursive: true });
  await writeFile(
    join(configDir, 'hearth.toml'),
    `hostname = "mx.test.example"
domains = ["example.test", "family.test"]
data_dir = "../maildir"
log_level = "info"
fsync = ${opts.fsync ?? true}

[listeners.smtp]
listen = "127.0.0.1:0"
tls = "starttls"

${opts.toml ?? ''}
`,
  );
  await writeFile(join(configDir, 'users'), '');
  const users = new UsersFile(join(configDir, 'users'));
  for (const [address, password] of Object.entries(opts.users ?? { 'alice@example.test': 'alice-password', 'bob@example.test': 'bob-password' })) {
    await users.add(address, password);
  }
  await writeFile(join(configDir, 'aliases'), opts.aliases ?? 'postmaster@example.test: alice@example.test\nfamily@family.test: alice@example.test, bob@example.test\n');
  return { root, configDir, dataDir: join(root, 'maildir'), cleanup: () => rm(root, { recursive: true, force: true }) };
}

export async function startTestHearth(setup: TestSetup): Promise<RunningHearth & { smtpPort: number; port(service: string): number }> {
  const running = await startHearth({ configDir: setup.configDir, log: silentLogger() });
  const port = (service: string): number => {
    const e = running.endpoints.find((x) => x.service === service);
    if (!e) throw new Error(`no ${service} endpoint`);
    return e.port;
  };
  return Object.assign(running, { smtpPort: port('smtp'), port });
}

/** Listener blocks for every service built so far, on ephemeral loopback ports. */
export const ALL_LISTENERS = ['pop3 = "starttls"', 'pop3s = "implicit"', 'imap = "starttls"', 'imaps = "implicit"']
  .map((line) => {
    const [name, mode] = line.split(' = ');
    return `[listeners.${name}]\nlisten = "127.0.0.1:0"\ntls = ${mode}\n`;
  })
  .join('\n');

/**
 * A hearth.toml for mail.example.test serving example.test on the usual public ports (SMTP,
 * submission, submissions, IMAPS; webmail on 127.0.0.1:8080), telling clients `addresses`; for
 * tests that read a config, not run it. `moreListeners` adds [listeners.*] blocks.
 */
export function publicConfigToml(addresses: string[], moreListeners = ''): string {
  return `
hostname = "mail.example.test"
domains = ["example.test"]
[listeners.smtp]
listen = ":25"
tls = "starttls"
[listeners.submission]
listen = ":587"
tls = "starttls"
[listeners.submissions]
listen = ":465"
tls = "implicit"
[listeners.imaps]
listen = ":993"
tls = "implicit"
${moreListeners}[listeners.http]
listen = "127.0.0.1:8080"
tls = "plain"
[client]
addresses = [${addresses.map((a) => `"${a}"`).join(', ')}]
`;
}

/** Files in a user's new/ (INBOX) folder. */
export async function inboxFiles(dataDir: string, address: string): Promise<Array<{ name: string; content: Buffer }>> {
  const [user, domain] = address.split('@');
  const dir = join(dataDir, domain, user, 'new');
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  return Promise.all(names.sort().map(async (name) => ({ name, content: await readFile(join(dir, name)) })));
}

export type ChildHearth = { child: ChildProcess; smtpPort: number; exited: Promise<number | null>; logs: string[] };

/**
 * Start `hearth serve` as a child process and wait until it says where it listens. Without
 * `configDir` no --config is passed (the child finds its folder by HEARTH_CONFIG in `env`).
 */
export async function spawnHearth(configDir: string | undefined, opts: { env?: Record<string, string>; cwd?: string } = {}): Promise<ChildHearth> {
  const args = configDir === undefined ? [CLI, 'serve'] : [CLI, 'serve', '--config', configDir];
  const env = opts.env ? { ...process.env, ...opts.env } : undefined;
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env, cwd: opts.cwd });
  const logs: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const port = await new Promise<number>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error(`hearth did not start: ${logs.join('\n')}`)), 20_000);
    rl.on('line', (line) => {
      logs.push(line);
      try {
        const entry = JSON.parse(line) as { service?: string; port?: number };
        if (entry.service === 'smtp' && entry.port) {
          clearTimeout(timer);
          resolve(entry.port);
        }
      } catch {
        // not JSON: ignore
      }
    });
    child.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`hearth exited with ${code}: ${logs.join('\n')}`));
    });
  });
  return { child, smtpPort: port, exited, logs };
}
