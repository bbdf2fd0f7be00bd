// `hearth service systemd`: a systemd unit that runs this hearth as a service: started at boot,
// restarted after a crash, stopped with SIGTERM and given the time its graceful shutdown needs,
// SIGHUP to reload certificates, and locked down to the two folders it writes.
import { realpathSync } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import { dirname, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Command } from 'commander';
import { loadConfig } from '../config/load.ts';
import type { LoadedConfig } from '../config/load.ts';
import { HearthError } from '../core/errors.ts';
import { configDirOf } from './ops.ts';

/** Ports below this need root or CAP_NET_BIND_SERVICE. */
const FIRST_UNPRIVILEGED_PORT = 1024;
/** How long systemd waits past hearth's own shutdown grace before it kills the process. */
const STOP_MARGIN_SECONDS = 15;

export type UnitSettings = {
  /** The Node binary (absolute) and hearth's cli.ts (absolute). */
  node: string;
  cli: string;
  configDir: string;
  dataDir: string;
  /** Run as this account; undefined runs as root (not advised). */
  user: string | undefined;
  /** Listener ports, to decide whether the unit must grant the low-port capability. */
  ports: number[];
  shutdownGraceMs: number;
  /** Folders outside the config and data folders that hearth writes: where ACME renewal puts the certificate. */
  alsoWritable?: string[];
};

/** `%` starts a specifier (%h, %n, …) in every line used here: `%%` is a literal one. */
const noSpecifiers = (s: string): string => s.replace(/%/g, '%%');

/**
 * One word of an Exec line: besides specifiers, `$NAME` and `${NAME}` are environment variables
 * (`$$` is a literal `$`), and a word with spaces or quotes is double-quoted with C escapes.
 */
function execArg(arg: string): string {
  const literal = noSpecifiers(arg).replace(/\$/g, '$$$$');
  return /^[\w@%+=:,./$-]+$/.test(literal) ? literal : `"${literal.replace(/(["\\])/g, '\\$1')}"`;
}

/**
 * A path in ReadWritePaths= (a list of words): double-quoted when it has a space, a quote or a
 * backslash, with `\\` and `\"` inside; specifiers too. No C escapes there: `\x20` is read as `x20`.
 */
function pathListItem(p: string): string {
  const literal = noSpecifiers(p);
  return /^[\w@%+=:,./$-]+$/.test(literal) ? literal : `"${literal.replace(/(["\\])/g, '\\$1')}"`;
}

/** A unit line ends at a newline: a path with one (or another control character) cannot be written. */
const CONTROL_CHAR = /[\u0000-\u001f\u007f]/;

export function systemdUnit(s: UnitSettings): string {
  for (const p of [s.node, s.cli, s.configDir, s.dataDir]) {
    if (CONTROL_CHAR.test(p)) throw new HearthError('CLI_USAGE', `${JSON.stringify(p)} has a control character: a systemd unit cannot name it; rename that folder`);
  }
  const lowPorts = s.ports.filter((p) => p > 0 && p < FIRST_UNPRIVILEGED_PORT);
  const needsCapability = s.user !== undefined && s.user !== 'root' && lowPorts.length > 0;
  const stopSeconds = Math.ceil(s.shutdownGraceMs / 1000) + STOP_MARGIN_SECONDS;
  const inTmp = [s.configDir, s.dataDir].some((d) => /^\/(var\/)?tmp(\/|$)/.test(d));
  const lines = [
    '# Written by `hearth service systemd`. Install it with:',
    '#   sudo cp hearth.service /etc/systemd/system/ && sudo systemctl daemon-reload && sudo systemctl enable --now hearth',
    '# Logs: journalctl -u hearth -f',
    '[Unit]',
    'Description=hearth personal mail server (SMTP, submission, IMAP, POP3, webmail)',
    `Documentation=${noSpecifiers(pathToFileURL(resolve(s.cli, '../../README.md')).href)}`,
    'After=network-online.target',
    'Wants=network-online.target',
    '',
    '[Service]',
    'Type=simple',
    ...(s.user !== undefined ? [`User=${s.user}`] : []),
    `WorkingDirectory=${noSpecifiers(s.configDir)}`,
    `ExecStart=${[s.node, s.cli, 'serve', '--config', s.configDir, '--log-format', 'json'].map(execArg).join(' ')}`,
    '# SIGHUP makes hearth read its TLS certificate again (as `hearth tls reload` does).',
    'ExecReload=/bin/kill -HUP $MAINPID',
    `# hearth finishes open SMTP transactions for timeouts.shutdown_grace (${Math.ceil(s.shutdownGraceMs / 1000)} s), then answers 421 and exits 0.`,
    'KillSignal=SIGTERM',
    `TimeoutStopSec=${stopSeconds}`,
    'Restart=on-failure',
    'RestartSec=5',
    '# glibc keeps the memory freed after argon2id logins (about 19 MiB each) unless told to give it back.',
    'Environment=MALLOC_TRIM_THRESHOLD_=131072',
    'UMask=0077',
    'LimitNOFILE=65536',
    ...(needsCapability
      ? [
          `# Ports ${lowPorts.join(', ')} are below 1024: allow binding them without root.`,
          'AmbientCapabilities=CAP_NET_BIND_SERVICE',
          'CapabilityBoundingSet=CAP_NET_BIND_SERVICE',
        ]
      : []),
    (s.alsoWritable?.length
      ? '# hearth writes only its config folder (users, keys, certificates), its data folder, and where ACME renewal puts the certificate.'
      : '# hearth writes only its config folder (users, keys, certificates) and its data folder.'),
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ProtectHome=read-only',
    `ReadWritePaths=${[...new Set([s.configDir, s.dataDir, ...(s.alsoWritable ?? [])])].map(pathListItem).join(' ')}`,
    // A private /tmp would hide a config or data folder that lives under /tmp.
    ...(inTmp ? [] : ['PrivateTmp=yes']),
    'PrivateDevices=yes',
    'ProtectKernelTunables=yes',
    'ProtectKernelModules=yes',
    'ProtectControlGroups=yes',
    'RestrictSUIDSGID=yes',
    'LockPersonality=yes',
    'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ];
  return lines.join('\n');
}

/** Problems that would make the unit fail at start, each with its fix. */
export async function unitProblems(s: UnitSettings): Promise<string[]> {
  const problems: string[] = [];
  for (const [what, dir] of [['config folder', s.configDir], ['data folder', s.dataDir]] as const) {
    const st = await stat(dir).catch(() => undefined);
    if (!st?.isDirectory()) problems.push(`the ${what} ${dir} does not exist yet: run \`hearth setup\` (or \`hearth serve\` once) first`);
  }
  if (s.user !== undefined && s.user !== 'root') {
    // The account reads hearth's own files: every folder above them must let others through.
    for (const file of [s.node, s.cli]) {
      for (let dir = dirname(file); dir !== dirname(dir); dir = dirname(dir)) {
        const st = await stat(dir).catch(() => undefined);
        if (st && (st.mode & 0o001) === 0) {
          problems.push(`${s.user} cannot reach ${file}: ${dir} is closed to other accounts (mode ${(st.mode & 0o777).toString(8)}); clone hearth under /opt, or \`chmod o+x ${dir}\``);
          break;
        }
      }
    }
  }
  if (s.user === undefined) problems.push('no --user: the service would run as root. Make an account (`sudo useradd --system --home-dir /nonexistent hearth`), give it the folders (`sudo chown -R hearth: CONFIG DATA`) and pass --user hearth');
  return problems;
}

/**
 * With ACME renewal on, hearth replaces the certificate, its key and the account key by writing
 * beside them: the folders of those outside the config and data folders must stay writable.
 */
export function renewalFolders(loaded: LoadedConfig): string[] {
  if (!loaded.config.acme.enabled) return [];
  const inside = (dir: string) => [loaded.dir, loaded.dataDir].some((root) => dir === root || dir.startsWith(root + sep));
  const files = [loaded.tlsCert, loaded.tlsKey, resolve(loaded.dir, loaded.config.acme.account_key_file)];
  return [...new Set(files.map((f) => dirname(f)))].filter((d) => !inside(d));
}

export function registerServiceCommands(program: Command): void {
  const service = program.command('service').description('run hearth as a system service');
  service
    .command('systemd')
    .description('print (or write) a systemd unit that runs this hearth at boot, restarts it after a crash and stops it gracefully')
    .option('-c, --config <dir>', 'config folder (default: $HEARTH_CONFIG or ./config)')
    .option('--user <name>', 'the account the service runs as (it must own the config and data folders); default: root, which is not advised')
    .option('-o, --output <file>', 'write the unit to this file (e.g. /etc/systemd/system/hearth.service) instead of standard output')
    .action(async (opts: { config?: string; user?: string; output?: string }) => {
      if (opts.user !== undefined && !/^[a-z_][a-z0-9_-]*\$?$/i.test(opts.user)) {
        throw new HearthError('CLI_USAGE', `--user ${JSON.stringify(opts.user)} is not an account name (letters, digits, _ and -)`);
      }
      const loaded = await loadConfig(configDirOf(opts));
      const settings: UnitSettings = {
        node: realpathSync(process.execPath),
        cli: fileURLToPath(new URL('../cli.ts', import.meta.url)),
        configDir: loaded.dir,
        dataDir: loaded.dataDir,
        user: opts.user,
        ports: Object.values(loaded.config.listeners).flatMap((l) => (l?.enabled ? [l.listen.port] : [])),
        shutdownGraceMs: loaded.config.timeouts.shutdown_grace,
        alsoWritable: renewalFolders(loaded),
      };
      for (const problem of await unitProblems(settings)) process.stderr.write(`warning: ${problem}\n`);
      const unit = systemdUnit(settings);
      if (opts.output === undefined || opts.output === '-') {
        process.stdout.write(unit);
        return;
      }
      await writeFile(opts.output, unit, { mode: 0o644 });
      // Written elsewhere (to look at it first), the unit still has to go where systemd reads units.
      const installed = resolve(opts.output).startsWith('/etc/systemd/system/');
      const copy = installed ? '' : `cp ${resolve(opts.output)} /etc/systemd/system/hearth.service && `;
      process.stderr.write(`wrote ${opts.output}\nnext, as root: ${copy}systemctl daemon-reload && systemctl enable --now hearth\nlogs: journalctl -u hearth -f\n`);
    });
}
