// The `hearth` command line, run as a real child process on the pinned Node.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { CLI, makeSetup, spawnHearth } from './helpers/hearth.ts';
import type { TestSetup } from './helpers/hearth.ts';

type Run = { code: number; stdout: string; stderr: string };

function hearth(args: string[], input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { timeout: 30_000, env: { ...process.env, HEARTH_LOG: 'json' } }, (err, stdout, stderr) => {
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

describe('hearth serve --log-format', () => {
  it('refuses an unknown format with a usage error', async () => {
    const r = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(process.execPath, [CLI, 'serve', '--log-format', 'xml', '--config', '/nonexistent'], { timeout: 30_000 }, (err, _o, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr })),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('--log-format must be pretty or json');
  });
});
