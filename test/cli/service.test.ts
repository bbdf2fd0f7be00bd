// `hearth service systemd`: the unit it writes runs this hearth, stops it gracefully, grants the
// low-port capability only when needed, and writes nowhere but the config and data folders.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renewalFolders, systemdUnit, unitProblems } from '../../src/cli/service.ts';
import { loadedFromText } from '../../src/config/load.ts';
import type { UnitSettings } from '../../src/cli/service.ts';
import { CLI, makeSetup } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { runCli } from '../helpers/cli.ts';

const base: UnitSettings = {
  node: '/opt/hearth/node_modules/node/bin/node',
  cli: '/opt/hearth/src/cli.ts',
  configDir: '/opt/hearth/config',
  dataDir: '/var/lib/hearth',
  user: 'hearth',
  ports: [25, 587, 465, 993, 8080],
  shutdownGraceMs: 10_000,
};

/** The value of every `Key=` line (repeated keys in order). */
function keys(unit: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of unit.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) out.set(m[1], [...(out.get(m[1]) ?? []), m[2]]);
  }
  return out;
}

describe('systemdUnit', () => {
  it('runs serve on the given config as the given user, stops with SIGTERM after the grace, reloads with SIGHUP', () => {
    const k = keys(systemdUnit(base));
    expect(k.get('ExecStart')).toEqual(['/opt/hearth/node_modules/node/bin/node /opt/hearth/src/cli.ts serve --config /opt/hearth/config --log-format json']);
    expect(k.get('User')).toEqual(['hearth']);
    expect(k.get('KillSignal')).toEqual(['SIGTERM']);
    expect(k.get('TimeoutStopSec')).toEqual(['25']); // 10 s grace + 15 s margin
    expect(k.get('ExecReload')).toEqual(['/bin/kill -HUP $MAINPID']);
    expect(k.get('Restart')).toEqual(['on-failure']);
    expect(k.get('ReadWritePaths')).toEqual(['/opt/hearth/config /var/lib/hearth']);
    expect(k.get('ProtectSystem')).toEqual(['strict']);
    expect(k.get('PrivateTmp')).toEqual(['yes']);
    expect(k.get('Environment')).toEqual(['MALLOC_TRIM_THRESHOLD_=131072']);
    expect(k.get('WantedBy')).toEqual(['multi-user.target']);
    // V8 compiles code at run time: W^X protection would kill it.
    expect(k.has('MemoryDenyWriteExecute')).toBe(false);
  });

  it('grants CAP_NET_BIND_SERVICE only to a non-root user with a port below 1024', () => {
    expect(keys(systemdUnit(base)).get('AmbientCapabilities')).toEqual(['CAP_NET_BIND_SERVICE']);
    expect(keys(systemdUnit({ ...base, ports: [2525, 1993, 8080] })).has('AmbientCapabilities')).toBe(false);
    const asRoot = keys(systemdUnit({ ...base, user: undefined }));
    expect(asRoot.has('AmbientCapabilities')).toBe(false);
    expect(asRoot.has('User')).toBe(false);
  });

  it('quotes paths with spaces, and keeps /tmp shared when a folder lives there', () => {
    const k = keys(systemdUnit({ ...base, configDir: '/srv/my mail/config', dataDir: '/tmp/hearth data' }));
    expect(k.get('ExecStart')![0]).toContain('--config "/srv/my mail/config"');
    expect(k.get('ReadWritePaths')).toEqual(['"/srv/my mail/config" "/tmp/hearth data"']);
    expect(k.has('PrivateTmp')).toBe(false);
    expect(k.get('WorkingDirectory')).toEqual(['/srv/my mail/config']);
  });

  it('escapes %, $, quotes and backslashes the way systemd reads each line (specifiers, variables, quoting)', () => {
    const configDir = '/srv/100%/my "mail" $HOME\\x';
    const dataDir = '/srv/data %h';
    const k = keys(systemdUnit({ ...base, configDir, dataDir, cli: '/opt/my hearth%/src/cli.ts' }));
    // Exec lines: specifiers in every word, $ variables substituted, C escapes in quotes.
    expect(k.get('ExecStart')![0]).toBe('/opt/hearth/node_modules/node/bin/node "/opt/my hearth%%/src/cli.ts" serve --config "/srv/100%%/my \\"mail\\" $$HOME\\\\x" --log-format json');
    // WorkingDirectory= is taken literally but for specifiers.
    expect(k.get('WorkingDirectory')).toEqual(['/srv/100%%/my "mail" $HOME\\x']);
    // ReadWritePaths= is a list of words: quoted, with \\ and \" inside, specifiers too; \x20 is not understood there.
    expect(k.get('ReadWritePaths')).toEqual(['"/srv/100%%/my \\"mail\\" $HOME\\\\x" "/srv/data %%h"']);
    expect(k.get('Documentation')).toEqual(['file:///opt/my%%20hearth%%25/README.md']);
  });

  it('refuses a path with a control character (a newline would start a new line of the unit)', () => {
    expect(() => systemdUnit({ ...base, dataDir: '/srv/x\nExecStartPre=/bin/sh' })).toThrow(/control character/);
  });

  it('gives systemd enough time for a long shutdown grace', () => {
    expect(keys(systemdUnit({ ...base, shutdownGraceMs: 60_500 })).get('TimeoutStopSec')).toEqual(['76']);
  });
});

describe('renewalFolders', () => {
  const toml = (extra: string) => `hostname = "mail.example.test"\ndomains = ["example.test"]\ndata_dir = "/var/lib/hearth"\n${extra}`;

  it('keeps the folders ACME renewal writes outside the config and data folders writable', () => {
    const loaded = loadedFromText('/opt/hearth/config', toml('[tls]\ncert = "/etc/hearth-tls/fullchain.pem"\nkey = "/etc/hearth-tls/privkey.pem"\n[acme]\nenabled = true\naccount_key_file = "/srv/acme/account.key"\n'));
    expect(renewalFolders(loaded)).toEqual(['/etc/hearth-tls', '/srv/acme']);
    const k = keys(systemdUnit({ ...base, alsoWritable: renewalFolders(loaded) }));
    expect(k.get('ReadWritePaths')).toEqual(['/opt/hearth/config /var/lib/hearth /etc/hearth-tls /srv/acme']);
  });

  it('adds nothing when renewal is off or the files live in the config folder', () => {
    expect(renewalFolders(loadedFromText('/opt/hearth/config', toml('[tls]\ncert = "/etc/hearth-tls/fullchain.pem"\n')))).toEqual([]);
    expect(renewalFolders(loadedFromText('/opt/hearth/config', toml('[acme]\nenabled = true\n')))).toEqual([]);
    // A sibling folder whose name starts like the config folder is still outside it.
    expect(renewalFolders(loadedFromText('/opt/hearth/config', toml('[tls]\ncert = "/opt/hearth/config-tls/c.pem"\nkey = "tls/key.pem"\n[acme]\nenabled = true\n')))).toEqual(['/opt/hearth/config-tls']);
  });
});

describe('unitProblems', () => {
  it('warns when the account cannot reach hearth, when a folder is missing, and when it would run as root', async () => {
    const root = await mkdtemp(join(tmpdir(), 'hearth-unit-'));
    try {
      await chmod(root, 0o755); // mkdtemp makes it 0700
      const closed = join(root, 'home');
      await mkdir(join(closed, 'hearth', 'src'), { recursive: true });
      await writeFile(join(closed, 'hearth', 'src', 'cli.ts'), '');
      await mkdir(join(root, 'config'));
      await chmod(closed, 0o700);
      const settings = { ...base, cli: join(closed, 'hearth', 'src', 'cli.ts'), node: process.execPath, configDir: join(root, 'config'), dataDir: join(root, 'maildir') };
      const problems = await unitProblems(settings);
      expect(problems).toEqual([
        `the data folder ${settings.dataDir} does not exist yet: run \`hearth setup\` (or \`hearth serve\` once) first`,
        `hearth cannot reach ${settings.cli}: ${closed} is closed to other accounts (mode 700); clone hearth under /opt, or \`chmod o+x ${closed}\``,
      ]);
      await chmod(closed, 0o755);
      await mkdir(join(root, 'maildir'));
      expect(await unitProblems(settings)).toEqual([]);
      expect((await unitProblems({ ...settings, user: undefined }))[0]).toMatch(/^no --user: the service would run as root/);
    } finally {
      await chmod(join(root, 'home'), 0o755).catch(() => undefined);
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('hearth service systemd', () => {
  let setup: TestSetup;
  let out: string;
  beforeAll(async () => {
    setup = await makeSetup({ users: {} });
    out = await mkdtemp(join(tmpdir(), 'hearth-unit-'));
  });
  afterAll(async () => {
    await setup?.cleanup();
    await rm(out, { recursive: true, force: true });
  });

  it('writes a unit for this clone and config, and says what to run next', async () => {
    const file = join(out, 'hearth.service');
    const r = await runCli(['service', 'systemd', '--config', setup.configDir, '--user', 'hearth', '--output', file]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`wrote ${file}`);
    // Written outside systemd's folder: the next step copies it there first.
    expect(r.stderr).toContain(`next, as root: cp ${file} /etc/systemd/system/hearth.service && systemctl daemon-reload && systemctl enable --now hearth`);
    const k = keys(await readFile(file, 'utf8'));
    expect(k.get('ExecStart')![0]).toBe(`${k.get('ExecStart')![0].split(' ')[0]} ${CLI} serve --config ${setup.configDir} --log-format json`);
    expect((await stat(k.get('ExecStart')![0].split(' ')[0])).isFile()).toBe(true); // the Node that runs hearth
    expect(k.get('ReadWritePaths')).toEqual([`${setup.configDir} ${setup.dataDir}`]);
    expect((await stat(file)).mode & 0o777).toBe(0o644);
  });

  it('prints to standard output and warns when the service would run as root', async () => {
    const r = await runCli(['service', 'systemd', '--config', setup.configDir]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ExecStart=/m);
    expect(r.stderr).toMatch(/warning: no --user: the service would run as root.*useradd/);
  });

  it('refuses a user name that is not an account name, and a missing config with its fix', async () => {
    const bad = await runCli(['service', 'systemd', '--config', setup.configDir, '--user', 'x y']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('is not an account name');
    const none = await runCli(['service', 'systemd', '--config', join(out, 'nowhere')]);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toContain('hearth serve');
  });

  it('has --help', async () => {
    const r = await runCli(['service', 'systemd', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: hearth service systemd/);
  });
});
