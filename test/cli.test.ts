// The `hearth` command line, run as a real child process on the pinned Node.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { chown, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UsersFile, verifyPassword } from '../src/config/users.ts';
import { CLI, makeSetup, spawnHearth } from './helpers/hearth.ts';
import type { TestSetup } from './helpers/hearth.ts';

type Run = { code: number; stdout: string; stderr: string };

function hearth(args: string[], input?: string, opts: { env?: Record<string, string>; cwd?: string } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { timeout: 30_000, cwd: opts.cwd, env: { ...process.env, HEARTH_LOG: 'json', ...opts.env } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin!.end(input);
    else child.stdin!.end();
  });
}

describe('hearth CLI', () => {
  let setup: TestSetup;
  beforeAll(async () => {
    setup = await makeSetup({ users: {} });
  });
  afterAll(async () => setup?.cleanup());

  it('has --help on every command', async () => {
    for (const args of [[], ['serve'], ['check'], ['status'], ['user'], ['user', 'add'], ['user', 'passwd'], ['user', 'del'], ['user', 'list']]) {
      const r = await hearth([...args, '--help']);
      expect(r.code, args.join(' ')).toBe(0);
      expect(r.stdout, args.join(' ')).toMatch(/^Usage: hearth/);
    }
  });

  it('exits 2 with a hint on an unknown command', async () => {
    const r = await hearth(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown command/);
  });

  it('adds, lists, changes and removes users, with passwords from stdin only', async () => {
    const c = ['--config', setup.configDir];
    expect((await hearth(['user', 'add', 'Carol@Example.test', ...c, '--password-stdin'], 'carol-secret-1\n')).stdout).toContain('added carol@example.test');
    const dup = await hearth(['user', 'add', 'carol@example.test', ...c, '--password-stdin'], 'x-secret-123\n');
    expect(dup.code).toBe(1);
    expect(dup.stderr).toMatch(/already/i);
    const noTty = await hearth(['user', 'add', 'dave@example.test', ...c]);
    expect(noTty.code).toBe(1);
    expect(noTty.stderr).toContain('--password-stdin');
    const list = JSON.parse((await hearth(['user', 'list', ...c, '--json'])).stdout) as Array<{ address: string; scheme: string }>;
    expect(list).toEqual([{ address: 'carol@example.test', scheme: 'ARGON2ID' }]);
    const before = await readFile(join(setup.configDir, 'users'), 'utf8');
    expect(before).not.toContain('carol-secret-1');
    expect((await hearth(['user', 'passwd', 'carol@example.test', ...c, '--password-stdin'], 'carol-secret-2')).code).toBe(0);
    expect(await readFile(join(setup.configDir, 'users'), 'utf8')).not.toBe(before);
    const unknown = await hearth(['user', 'passwd', 'nobody@example.test', ...c, '--password-stdin'], 'whatever-123');
    expect(unknown.code).toBe(1);
    expect((await hearth(['user', 'del', 'carol@example.test', ...c])).stdout).toContain('removed carol@example.test');
    expect((await hearth(['user', 'list', ...c])).stdout).toContain('no users yet');
  });

  it('check: OK for a good config, exit 1 naming the key for a bad one', async () => {
    const ok = await hearth(['check', '--config', setup.configDir]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('OK');
    const bad = await makeSetup({ toml: '[limits]\nmessage_size = "lots"\nbogus = 1\n' });
    try {
      const r = await hearth(['check', '--config', bad.configDir]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('limits.message_size');
      expect(r.stderr).toContain('bogus');
      const serve = await hearth(['serve', '--config', bad.configDir]);
      expect(serve.code).toBe(1);
      expect(serve.stderr).toContain('limits.message_size');
    } finally {
      await bad.cleanup();
    }
  });

  it('serve explains a port that is already taken, and status needs a running server', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as net.AddressInfo).port;
    const busy = await makeSetup();
    try {
      const toml = join(busy.configDir, 'hearth.toml');
      await writeFile(toml, (await readFile(toml, 'utf8')).replace('127.0.0.1:0', `127.0.0.1:${port}`));
      const r = await hearth(['serve', '--config', busy.configDir]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`127.0.0.1:${port} is already in use`);
      const status = await hearth(['status', '--config', busy.configDir]);
      expect(status.code).toBe(1);
      expect(status.stderr).toContain('no hearth server is running');
    } finally {
      blocker.close();
      await busy.cleanup();
    }
  });

  it('status talks to the running server; a second server on the same data refuses to start', async () => {
    const running = await spawnHearth(setup.configDir);
    try {
      const status = await hearth(['status', '--config', setup.configDir, '--json']);
      expect(status.code).toBe(0);
      const parsed = JSON.parse(status.stdout) as { pid: number; endpoints: Array<{ service: string; port: number }> };
      expect(parsed.pid).toBe(running.child.pid);
      expect(parsed.endpoints).toContainEqual(expect.objectContaining({ service: 'smtp', port: running.smtpPort }));
      const second = await hearth(['serve', '--config', setup.configDir]);
      expect(second.code).toBe(1);
      expect(second.stderr).toContain('already running');
    } finally {
      running.child.kill('SIGTERM');
      expect(await running.exited).toBe(0);
    }
  });
});

describe('HEARTH_CONFIG and the first start', () => {
  let setup: TestSetup;
  let elsewhere: string;
  beforeAll(async () => {
    setup = await makeSetup({ users: { 'erin@example.test': 'erin-password' } });
    // The children run here, so a fallback to ./config would find nothing (or write here).
    elsewhere = await mkdtemp(join(tmpdir(), 'hearth-cwd-'));
  });
  afterAll(async () => {
    await setup?.cleanup();
    await rm(elsewhere, { recursive: true, force: true });
  });

  it('HEARTH_CONFIG selects the config folder when --config is not given', async () => {
    const env = { HEARTH_CONFIG: setup.configDir };
    const list = await hearth(['user', 'list', '--json'], undefined, { env, cwd: elsewhere });
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout)).toEqual([{ address: 'erin@example.test', scheme: 'ARGON2ID' }]);
    const check = await hearth(['check'], undefined, { env, cwd: elsewhere });
    expect(check.code, check.stderr).toBe(0);
    expect(check.stdout).toContain(setup.configDir);
    // --config wins over the variable.
    const other = await makeSetup({ users: { 'frank@example.test': 'frank-password' } });
    try {
      const r = await hearth(['user', 'list', '--json', '--config', other.configDir], undefined, { env, cwd: elsewhere });
      expect(JSON.parse(r.stdout)).toEqual([{ address: 'frank@example.test', scheme: 'ARGON2ID' }]);
    } finally {
      await other.cleanup();
    }
    // serve too: it runs on the folder the variable names.
    const running = await spawnHearth(undefined, { env, cwd: elsewhere });
    try {
      const status = await hearth(['status', '--json'], undefined, { env, cwd: elsewhere });
      expect(status.code, status.stderr).toBe(0);
      expect((JSON.parse(status.stdout) as { pid: number }).pid).toBe(running.child.pid);
    } finally {
      running.child.kill('SIGTERM');
      expect(await running.exited).toBe(0);
    }
  });

  it('serve on an empty folder writes a default config and shows the first user\'s password once', async () => {
    const configDir = join(elsewhere, 'fresh', 'config');
    const env = { HEARTH_CONFIG: configDir };
    const first = await serveUntilSettled(env);
    const shown = [...first.output.matchAll(/^Password: +(\S+)$/gm)].map((m) => m[1]);
    expect(shown, first.output).toHaveLength(1);
    expect(first.output).toContain('First user: me@localhost');
    // The password shown is the one that logs in; the file holds only its hash.
    const users = await readFile(join(configDir, 'users'), 'utf8');
    expect(users).not.toContain(shown[0]);
    const [record] = await new UsersFile(join(configDir, 'users')).list();
    expect(record.address).toBe('me@localhost');
    expect(await verifyPassword(shown[0], record.hash)).toBe(true);
    // The trial config's fixed ports may be taken on this machine: move them before the second start.
    const toml = join(configDir, 'hearth.toml');
    await writeFile(toml, (await readFile(toml, 'utf8')).replace(/127\.0\.0\.1:\d+/g, '127.0.0.1:0'));
    const second = await serveUntilSettled(env);
    expect(second.listening, second.output).toBe(true);
    expect(second.output).not.toMatch(/Password:|First user:/);
    expect(second.output).not.toContain(shown[0]);
  });

  /** `hearth serve` until it listens (then SIGTERM) or exits; everything it wrote. */
  async function serveUntilSettled(env: Record<string, string>): Promise<{ output: string; listening: boolean }> {
    const child = spawn(process.execPath, [CLI, 'serve'], { cwd: elsewhere, env: { ...process.env, HEARTH_LOG: 'json', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let listening = false;
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 25_000);
      const onData = (d: Buffer) => {
        output += d.toString();
        if (/"service":"smtp"/.test(output) && /listening: smtp/.test(output)) {
          listening = true;
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      void exited.then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    if (child.exitCode === null) child.kill('SIGTERM');
    const code = await exited;
    if (listening) expect(code).toBe(0);
    return { output, listening };
  }
});

describe('hearth serve --log-format', () => {
  it('refuses an unknown format with a usage error', async () => {
    const r = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(process.execPath, [CLI, 'serve', '--log-format', 'xml', '--config', '/nonexistent'], { timeout: 30_000 }, (err, _o, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr })),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('--log-format must be pretty or json');
  });
});

describe('hearth serve as root on another account\'s setup', () => {
  // Only root can run into this (and give the folder away to set it up); CI runs as root.
  it.runIf(process.getuid?.() === 0)('warns that what it creates will belong to root', async () => {
    const setup = await makeSetup({ users: {} });
    try {
      await chown(setup.configDir, 4242, 4242);
      const r = await hearth(['check', '--config', setup.configDir]);
      expect(r.code).toBe(0); // check only reads: no warning needed
      expect(r.stderr).not.toContain('runs as root');
      const child = spawn(process.execPath, [CLI, 'serve', '--config', setup.configDir], { env: { ...process.env, HEARTH_LOG: 'json' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 20_000);
        child.stderr.on('data', () => {
          if (stderr.includes('belongs to user id 4242')) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      child.kill('SIGTERM');
      await exited;
      expect(stderr).toContain(`warning: hearth runs as root, but ${setup.configDir} belongs to user id 4242`);
    } finally {
      await setup.cleanup();
    }
  });
});
