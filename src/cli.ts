// The `hearth` command: serve, check, and user management. Every command has --help, says
// what went wrong and how to fix it, and exits non-zero on failure. Passwords come from a
// prompt or standard input, never from the command line (it would land in shell history
// and in `ps`).
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { controlRequest } from './core/control.ts';
import { HearthError } from './core/errors.ts';
import { loadConfig } from './config/load.ts';
import { ensureDefaultConfig } from './config/defaults.ts';
import { UsersFile } from './config/users.ts';
import { registerGatherCommands } from './gather/cli.ts';
import { registerSetupCommands } from './cli/setup.ts';
import { registerTransferCommands } from './cli/transfer.ts';
import { configDirOf, formatOpsStatus, registerOpsCommands } from './cli/ops.ts'; // ops (issue 9): tls, doctor, status lines
import { registerServiceCommands } from './cli/service.ts';

const EXIT_USAGE = 2;

async function readPassword(opts: { passwordStdin?: boolean }, prompt: string): Promise<string> {
  if (opts.passwordStdin) {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    const password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
    if (!password) throw new HearthError('CLI_NO_PASSWORD', 'standard input was empty: pipe the password in, e.g. `printf %s "$PW" | hearth user add me@example.org --password-stdin`');
    return password;
  }
  if (!process.stdin.isTTY) {
    throw new HearthError('CLI_NO_TTY', 'no terminal to ask for the password: pass it on standard input with --password-stdin');
  }
  const { password, isCancel } = await import('@clack/prompts');
  const first = await password({ message: prompt, validate: (v) => (v && v.length >= 8 ? undefined : 'use at least 8 characters') });
  if (isCancel(first)) throw new HearthError('CLI_CANCELLED', 'cancelled');
  const again = await password({ message: 'Repeat it' });
  if (isCancel(again) || again !== first) throw new HearthError('CLI_MISMATCH', 'the two passwords differ; nothing changed');
  return first;
}

/**
 * `sudo npm start` on a setup that belongs to the service's account would leave root-owned
 * folders and files that the service cannot use afterwards: say so before it happens.
 */
async function warnRootOverOthersFiles(configDir: string): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const { stat } = await import('node:fs/promises');
  const st = await stat(configDir).catch(() => undefined);
  if (!st || st.uid === 0) return;
  process.stderr.write(
    `warning: hearth runs as root, but ${configDir} belongs to user id ${st.uid}: mail folders and files made now will belong to root, and a service running as that account cannot use them. Run it as that account, or through its systemd unit (\`hearth service systemd\`).\n`,
  );
}

/** Tell a running server that users changed, so it does not wait for the file watcher. */
async function nudgeServer(configDir: string): Promise<void> {
  try {
    const { dataDir } = await loadConfig(configDir);
    await controlRequest(join(dataDir, 'hearth.sock'), 'users-changed', {}, 3_000);
  } catch {
    // Not running, or config unreadable: the file watcher (or the next start) picks it up.
  }
}

export function buildCli(): Command {
  const program = new Command('hearth')
    .description('hearth: a personal mail server (SMTP, Maildir, IMAP, POP3, webmail) on one event loop')
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ showGlobalOptions: true });

  program
    .command('serve')
    .description('run the mail server; with no config, writes an embedded default for domain localhost first')
    .option('-c, --config <dir>', 'config folder (default: $HEARTH_CONFIG or ./config)')
    .option('--catch', "test mode: every outbound message goes to the sender's Caught folder instead of leaving")
    .option('--log-format <format>', 'pretty (lines for a person) or json (one JSON object per line); default: pretty on a terminal, json otherwise')
    .action(async (opts: { config?: string; catch?: boolean; logFormat?: string }) => {
      if (opts.logFormat !== undefined) {
        if (opts.logFormat !== 'pretty' && opts.logFormat !== 'json') throw new HearthError('CLI_USAGE', '--log-format must be pretty or json');
        process.env.HEARTH_LOG = opts.logFormat;
      }
      const configDir = configDirOf(opts);
      const setup = await ensureDefaultConfig(configDir);
      if (setup.created) {
        process.stderr.write(
          `\nhearth wrote a default configuration to ${configDir}\n` +
            (setup.address ? `First user: ${setup.address}\nPassword:   ${setup.password}\n(shown once; change it with \`hearth user passwd ${setup.address}\`)\n\n` : '\n'),
        );
      }
      await warnRootOverOthersFiles(configDir);
      const { startHearth } = await import('./main.ts');
      // Handlers go in before start-up, so a signal that arrives while hearth starts is not lost.
      let signals = 0;
      let running: Awaited<ReturnType<typeof startHearth>> | undefined;
      let stopRequested: string | undefined;
      const stop = (signal: string) => {
        signals += 1;
        if (signals > 1) {
          running?.log.warn({ signal }, 'second signal: exiting now');
          process.exit(1);
        }
        if (!running) {
          stopRequested = signal;
          return;
        }
        running.log.info({ signal }, 'signal received');
        void running.close().then(() => process.exit(0));
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      running = await startHearth({ configDir, catchMail: opts.catch });
      if (stopRequested) {
        signals = 0;
        stop(stopRequested);
      }
    });

  program
    .command('check')
    .description('validate the configuration, users and aliases; exit 1 with the problems if any')
    .option('-c, --config <dir>', 'config folder (default: $HEARTH_CONFIG or ./config)')
    .action(async (opts: { config?: string }) => {
      const configDir = configDirOf(opts);
      const loaded = await loadConfig(configDir);
      const { Directory } = await import('./config/directory.ts');
      const problems: string[] = [];
      const { silentLogger } = await import('./core/log.ts');
      const dir = await Directory.open({ configDir, domains: loaded.config.domains, log: silentLogger(), watch: false });
      problems.push(...dir.problems());
      dir.close();
      if (problems.length) {
        process.stderr.write(`${problems.join('\n')}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`${loaded.file}, users and aliases: OK (domains: ${loaded.config.domains.join(', ')})\n`);
    });

  const user = program.command('user').description('manage mail users (config/users, Dovecot passwd-file format)');
  const usersFile = async (opts: { config?: string }) => new UsersFile(join(configDirOf(opts), 'users'));

  user
    .command('add')
    .description('add a user; asks for the password, or reads it from standard input')
    .argument('<address>', 'the mail address, e.g. me@example.org')
    .option('-c, --config <dir>', 'config folder')
    .option('--password-stdin', 'read the password from standard input')
    .action(async (address: string, opts: { config?: string; passwordStdin?: boolean }) => {
      const file = await usersFile(opts);
      const password = await readPassword(opts, `Password for ${address}`);
      await file.add(address, password);
      await nudgeServer(configDirOf(opts));
      process.stdout.write(`added ${address.toLowerCase()}\n`);
    });

  user
    .command('passwd')
    .description("change a user's password")
    .argument('<address>', 'the mail address')
    .option('-c, --config <dir>', 'config folder')
    .option('--password-stdin', 'read the password from standard input')
    .action(async (address: string, opts: { config?: string; passwordStdin?: boolean }) => {
      const file = await usersFile(opts);
      const password = await readPassword(opts, `New password for ${address}`);
      await file.setPassword(address, password);
      await nudgeServer(configDirOf(opts));
      process.stdout.write(`password changed for ${address.toLowerCase()}\n`);
    });

  user
    .command('del')
    .alias('remove')
    .description('remove a user (their mail stays on disk)')
    .argument('<address>', 'the mail address')
    .option('-c, --config <dir>', 'config folder')
    .action(async (address: string, opts: { config?: string }) => {
      const file = await usersFile(opts);
      await file.remove(address);
      await nudgeServer(configDirOf(opts));
      process.stdout.write(`removed ${address.toLowerCase()} (mail stays on disk)\n`);
    });

  user
    .command('list')
    .description('list users')
    .option('-c, --config <dir>', 'config folder')
    .option('--json', 'print JSON')
    .action(async (opts: { config?: string; json?: boolean }) => {
      const file = await usersFile(opts);
      const users = await file.list();
      if (opts.json) process.stdout.write(JSON.stringify(users.map((u) => ({ address: u.address, scheme: /^\{([^}]+)\}/.exec(u.hash)?.[1] ?? 'unknown' })), null, 2) + '\n');
      else process.stdout.write(users.length ? users.map((u) => u.address).join('\n') + '\n' : 'no users yet: add one with `hearth user add ADDRESS`\n');
    });

  program
    .command('reindex')
    .description('rebuild the mail indexes (message list, summaries, full-text search) from the Maildir; UIDs are kept')
    .argument('[address]', 'one user (default: every user)')
    .option('-c, --config <dir>', 'config folder')
    .action(async (address: string | undefined, opts: { config?: string }) => {
      const loaded = await loadConfig(configDirOf(opts));
      try {
        await controlRequest(join(loaded.dataDir, 'hearth.sock'), 'status', {}, 2_000);
        throw new HearthError('CLI_SERVER_RUNNING', 'hearth is running; stop it first (the running server holds the indexes open), then run `hearth reindex` again');
      } catch (err) {
        if ((err as HearthError).code === 'CLI_SERVER_RUNNING') throw err;
      }
      const users = (await new UsersFile(join(loaded.dir, 'users')).list())
        .filter((u) => !address || u.address === address.toLowerCase())
        .map((u) => ({ user: u.user, domain: u.domain }));
      if (users.length === 0) throw new HearthError('CLI_NO_USER', address ? `no user ${address}; see \`hearth user list\`` : 'there are no users to reindex');
      const [{ reindexUsers }, { MaildirStore }] = await Promise.all([import('./reindex.ts'), import('./store/maildir.ts')]);
      const maildir = new MaildirStore({ root: loaded.dataDir, hostname: loaded.config.hostname, fsync: loaded.config.fsync });
      const phases = { scan: 'reading folders', summaries: 'summarising messages', search: 'building the search index' } as const;
      const tty = Boolean(process.stdout.isTTY);
      const { progress } = await import('@clack/prompts');
      let bar: ReturnType<typeof progress> | undefined;
      let barDone = 0;
      let current = '';
      let lastPrinted = -1;
      const results = await reindexUsers({
        maildir,
        users,
        onProgress: ({ user, phase, done, total }) => {
          const label = `${user}: ${phases[phase]}`;
          if (tty) {
            if (current !== label) {
              bar?.stop(`${current} done`);
              bar = progress({ max: Math.max(1, total) });
              bar.start(label);
              barDone = 0;
              current = label;
            }
            bar!.advance(done - barDone, `${label} ${done}/${total}`);
            barDone = done;
          } else {
            // Not a terminal: a line per 10 % so logs stay short.
            const pct = total ? Math.floor((done / total) * 10) : 10;
            if (current !== label || pct !== lastPrinted) process.stdout.write(`${label}: ${done}/${total}\n`);
            current = label;
            lastPrinted = pct;
          }
        },
      });
      bar?.stop(`${current} done`);
      for (const r of results) process.stdout.write(`${r.user}: ${r.messages} messages in ${r.folders} folders reindexed in ${(r.ms / 1000).toFixed(1)} s\n`);
    });

  const queue = program.command('queue').description('the outbound queue: list, inspect, retry, hold, release, delete, flush');
  /** Run a queue command on the running server, or on the spool directly when none runs. */
  const runQueue = async (opts: { config?: string }, cmd: string, args: Record<string, unknown> = {}): Promise<unknown> => {
    const loaded = await loadConfig(configDirOf(opts));
    try {
      return await controlRequest(join(loaded.dataDir, 'hearth.sock'), cmd, args, 120_000);
    } catch (err) {
      if ((err as HearthError).code !== 'CONTROL_NOT_RUNNING') throw err;
    }
    const [{ OutboundQueue }, { queueCommands }, { Scheduler }, { silentLogger }] = await Promise.all([
      import('./queue/queue.ts'),
      import('./queue/commands.ts'),
      import('./core/scheduler.ts'),
      import('./core/log.ts'),
    ]);
    // No server: open the spool with a scheduler that never runs, so nothing is delivered from here.
    const offline = new OutboundQueue({
      dir: join(loaded.dataDir, 'queue'),
      scheduler: new Scheduler({ log: silentLogger() }),
      deliver: () => Promise.reject(new HearthError('CLI_OFFLINE', 'the server is not running')),
      bounce: () => Promise.reject(new HearthError('CLI_OFFLINE', 'the server is not running')),
      hostname: loaded.config.hostname,
      log: silentLogger(),
    });
    await offline.start();
    try {
      if (cmd === 'queue.flush') throw new HearthError('CLI_OFFLINE', 'flush needs the running server (it delivers); start hearth, or use `hearth queue retry --all` to mark everything due');
      return await queueCommands(offline)[cmd](args);
    } finally {
      await offline.stop();
    }
  };
  type Entry = { id: string; from: string; createdAt: number; held: boolean; size: number; recipients: Array<{ address: string; status: string; attempts: number; lastReply?: string; nextAttemptAt?: number }> };
  const age = (ms: number) => (ms < 3_600_000 ? `${Math.round(ms / 60_000)}m` : ms < 172_800_000 ? `${Math.round(ms / 3_600_000)}h` : `${Math.round(ms / 86_400_000)}d`);
  const printEntry = (e: Entry) => {
    process.stdout.write(`${e.id}  ${age(Date.now() - e.createdAt)} old  ${e.size} bytes  from <${e.from}>${e.held ? '  [held]' : ''}\n`);
    for (const r of e.recipients) {
      const next = r.nextAttemptAt && r.status !== 'delivered' && r.status !== 'failed' ? `, next try in ${age(Math.max(0, r.nextAttemptAt - Date.now()))}` : '';
      process.stdout.write(`    ${r.address}  ${r.status}, ${r.attempts} attempt${r.attempts === 1 ? '' : 's'}${next}${r.lastReply ? `\n      last reply: ${r.lastReply}` : ''}\n`);
    }
  };
  queue
    .command('list')
    .description('every queued message: id, age, sender, recipients with state and last reply')
    .option('-c, --config <dir>', 'config folder')
    .option('--json', 'print JSON')
    .action(async (opts: { config?: string; json?: boolean }) => {
      const entries = (await runQueue(opts, 'queue.list')) as Entry[];
      if (opts.json) return void process.stdout.write(JSON.stringify(entries, null, 2) + '\n');
      if (entries.length === 0) return void process.stdout.write('the queue is empty\n');
      for (const e of entries) printEntry(e);
    });
  queue
    .command('show')
    .description('one queued message in detail, with the path of its file')
    .argument('<id>', 'queue id')
    .option('-c, --config <dir>', 'config folder')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { config?: string; json?: boolean }) => {
      const shown = (await runQueue(opts, 'queue.show', { id })) as { entry: Entry; path: string };
      if (opts.json) return void process.stdout.write(JSON.stringify(shown, null, 2) + '\n');
      printEntry(shown.entry);
      process.stdout.write(`  message file: ${shown.path}\n`);
    });
  queue
    .command('retry')
    .description('try a message (or, with --all, every message) again now')
    .argument('[id]', 'queue id')
    .option('--all', 'every queued message')
    .option('-c, --config <dir>', 'config folder')
    .option('--json', 'print JSON')
    .action(async (id: string | undefined, opts: { config?: string; all?: boolean; json?: boolean }) => {
      if (!id && !opts.all) throw new HearthError('CLI_USAGE', 'give a queue id, or --all');
      const result = (await runQueue(opts, 'queue.retry', id ? { id } : {})) as { retried: number };
      process.stdout.write(opts.json ? JSON.stringify(result) + '\n' : `${result.retried} message${result.retried === 1 ? '' : 's'} due now\n`);
    });
  for (const [name, description, cmd] of [
    ['hold', 'keep a message in the queue without trying it until released', 'queue.hold'],
    ['release', 'let a held message be tried again', 'queue.release'],
    ['delete', 'remove a message from the queue without bouncing it', 'queue.delete'],
  ] as const) {
    queue
      .command(name)
      .description(description)
      .argument('<id>', 'queue id')
      .option('-c, --config <dir>', 'config folder')
      .option('--json', 'print JSON')
      .action(async (id: string, opts: { config?: string; json?: boolean }) => {
        const result = await runQueue(opts, cmd, { id });
        process.stdout.write(opts.json ? JSON.stringify(result) + '\n' : `${name}: ${id} done\n`);
      });
  }
  queue
    .command('flush')
    .description('try everything now and wait until the queue is empty or only deferred mail remains')
    .option('-c, --config <dir>', 'config folder')
    .option('--timeout <seconds>', 'give up waiting after this long', '120')
    .option('--json', 'print JSON')
    .action(async (opts: { config?: string; timeout: string; json?: boolean }) => {
      const result = (await runQueue(opts, 'queue.flush', { timeoutMs: Number(opts.timeout) * 1000 })) as { remaining: number };
      process.stdout.write(opts.json ? JSON.stringify(result) + '\n' : result.remaining ? `${result.remaining} message(s) still waiting (deferred); see \`hearth queue list\`\n` : 'the queue is empty\n');
    });

  // --- gather (issue 7): `hearth gather list|add|remove|passwd|run|status`, in src/gather/cli.ts ---
  registerGatherCommands(program, { configDirOf, readPassword });
  // --- end of gather ---
  registerTransferCommands(program);

  const dkim = program.command('dkim').description('DKIM signing keys (config/dkim/DOMAIN/SELECTOR.pem)');
  dkim
    .command('generate')
    .description('make a signing key for DOMAIN and print the DNS TXT record to publish')
    .argument('<domain>', 'the domain that signs, e.g. example.org')
    .option('-c, --config <dir>', 'config folder')
    .option('-s, --selector <name>', 'selector: the key name in DNS (default: hearth + the year and month, e.g. hearth202611)')
    .option('-a, --algorithm <rsa|ed25519>', 'rsa (2048 bits, works everywhere) or ed25519 (RFC 8463, short; pair it with an RSA key)', 'rsa')
    .action(async (domain: string, opts: { config?: string; selector?: string; algorithm: string }) => {
      if (opts.algorithm !== 'rsa' && opts.algorithm !== 'ed25519') throw new HearthError('CLI_BAD_ALGORITHM', '--algorithm must be rsa or ed25519');
      const now = new Date();
      const selector = opts.selector ?? `hearth${now.getFullYear()}${String(now.getMonth() + 1).padStart(2, '0')}${opts.algorithm === 'ed25519' ? 'e' : ''}`;
      const { generateDkimKey } = await import('./smtp/dkim.ts');
      const made = await generateDkimKey(configDirOf(opts), domain, selector, opts.algorithm);
      // A TXT string is at most 255 characters; long RSA records are split into several strings.
      const chunks = made.record.match(/.{1,250}/g) ?? [made.record];
      process.stdout.write(
        `wrote ${made.path}\n\nPublish this DNS record, then restart hearth (mail from ${domain} is signed from then on):\n\n` +
          `${made.name}. IN TXT ${chunks.map((c) => `"${c}"`).join(' ')}\n`,
      );
    });

  const vacation = program.command('vacation').description('auto-replies while a user is away (RFC 3834): once per sender per [routing] vacation_interval');
  type VacationView = { settings: { subject: string; body: string; start?: string; end?: string } | null; active: boolean; answered: number };
  /** Through the running server (it holds the state), or on disk when none runs. */
  const runVacation = async (opts: { config?: string }, cmd: 'vacation.show' | 'vacation.set' | 'vacation.off', args: Record<string, unknown>): Promise<VacationView> => {
    const loaded = await loadConfig(configDirOf(opts));
    try {
      return (await controlRequest(join(loaded.dataDir, 'hearth.sock'), cmd, args, 10_000)) as VacationView;
    } catch (err) {
      if ((err as HearthError).code === 'CONTROL_FAILED') throw new HearthError('CLI_VACATION', (err as Error).message);
      if ((err as HearthError).code !== 'CONTROL_NOT_RUNNING') throw err;
    }
    const { VacationStore, validateVacation, vacationActive } = await import('./smtp/vacation.ts');
    const address = String(args.address).toLowerCase();
    const users = await new UsersFile(join(loaded.dir, 'users')).list();
    if (!users.some((u) => u.address === address)) throw new HearthError('CLI_NO_USER', `${address} is not a user here; see \`hearth user list\``);
    const store = new VacationStore(join(loaded.dataDir, 'vacation'));
    if (cmd !== 'vacation.show') {
      const settings = cmd === 'vacation.off' ? null : validateVacation(args);
      if (typeof settings === 'string') throw new HearthError('CLI_VACATION', settings);
      await store.write(address, { version: 1, settings, replied: {} });
    }
    const file = await store.read(address);
    return { settings: file.settings, active: vacationActive(file.settings, Date.now()), answered: Object.keys(file.replied).length };
  };
  const printVacation = (address: string, v: VacationView, json?: boolean) => {
    if (json) return void process.stdout.write(JSON.stringify(v, null, 2) + '\n');
    if (!v.settings) return void process.stdout.write(`vacation for ${address}: off\n`);
    const when = [v.settings.start ? `from ${v.settings.start}` : '', v.settings.end ? `until ${v.settings.end}` : ''].filter(Boolean).join(' ');
    process.stdout.write(
      `vacation for ${address}: on${when ? ` (${when})` : ''}, ${v.active ? 'replying now' : 'not replying now'}; ${v.answered} sender${v.answered === 1 ? '' : 's'} answered\n` +
        `Subject: ${v.settings.subject}\n\n${v.settings.body.replace(/\n?$/, '\n')}`,
    );
  };
  vacation
    .command('set')
    .description('turn the auto-reply on (again), with its text; who was answered before is forgotten')
    .argument('<address>', "the user's address")
    .option('-c, --config <dir>', 'config folder')
    .option('--subject <text>', 'subject of the reply; {subject} stands for the subject answered', 'Re: {subject}')
    .option('--body <text>', 'the reply text')
    .option('--body-file <file>', 'read the reply text from a file (- for standard input)')
    .option('--start <date>', 'first day it replies (2026-07-01) or an ISO 8601 time')
    .option('--end <date>', 'last day it replies (inclusive) or an ISO 8601 time')
    .option('--json', 'print JSON')
    .action(async (address: string, opts: { config?: string; subject: string; body?: string; bodyFile?: string; start?: string; end?: string; json?: boolean }) => {
      let body = opts.body;
      if (opts.bodyFile !== undefined) {
        if (body !== undefined) throw new HearthError('CLI_USAGE', 'give --body or --body-file, not both');
        if (opts.bodyFile === '-') {
          const chunks: Buffer[] = [];
          for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
          body = Buffer.concat(chunks).toString('utf8');
        } else {
          const { readFile } = await import('node:fs/promises');
          body = await readFile(opts.bodyFile, 'utf8').catch((err: Error) => {
            throw new HearthError('CLI_VACATION', `cannot read ${opts.bodyFile}: ${err.message}`);
          });
        }
      }
      const v = await runVacation(opts, 'vacation.set', { address, subject: opts.subject, body, start: opts.start, end: opts.end });
      printVacation(address.toLowerCase(), v, opts.json);
    });
  vacation
    .command('off')
    .description('turn the auto-reply off')
    .argument('<address>', "the user's address")
    .option('-c, --config <dir>', 'config folder')
    .option('--json', 'print JSON')
    .action(async (address: string, opts: { config?: string; json?: boolean }) => printVacation(address.toLowerCase(), await runVacation(opts, 'vacation.off', { address }), opts.json));
  vacation
    .command('show')
    .description('the auto-reply settings and whether it replies now')
    .argument('<address>', "the user's address")
    .option('-c, --config <dir>', 'config folder')
    .option('--json', 'print JSON')
    .action(async (address: string, opts: { config?: string; json?: boolean }) => printVacation(address.toLowerCase(), await runVacation(opts, 'vacation.show', { address }), opts.json));

  program
    .command('status')
    .description('ask the running server how it is')
    .option('-c, --config <dir>', 'config folder')
    .option('--json', 'print JSON')
    .action(async (opts: { config?: string; json?: boolean }) => {
      const { dataDir } = await loadConfig(configDirOf(opts));
      const status = (await controlRequest(join(dataDir, 'hearth.sock'), 'status')) as { pid: number; uptime: number; endpoints: Array<{ service: string; host: string; port: number; tls: string }> };
      if (opts.json) {
        process.stdout.write(JSON.stringify(status, null, 2) + '\n');
        return;
      }
      process.stdout.write(`running, pid ${status.pid}, up ${status.uptime}s\n`);
      for (const e of status.endpoints) process.stdout.write(`  ${e.service.padEnd(12)} ${e.host}:${e.port} (${e.tls})\n`);
      process.stdout.write(formatOpsStatus(status)); // ops (issue 9)
    });

  registerSetupCommands(program);
  registerOpsCommands(program); // ops (issue 9)
  registerServiceCommands(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  // `hearth status | head -3`: a reader that stops early is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(process.exitCode ?? 0);
  });
  const program = buildCli();
  program.exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : EXIT_USAGE;
      return;
    }
    if (err instanceof HearthError) {
      process.stderr.write(`hearth: ${err.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw err;
  }
}

if (import.meta.main) await main(process.argv);
