// `hearth gather list | add | remove | passwd | run [ACCOUNT] | status`: the command line of
// gathering. Like `hearth queue`, each command goes to the running server through the control
// socket, or, when no server runs, works on the data directory itself (a `run` then pulls in
// this process). Passwords come from a prompt or standard input, never from the command line.
import { join } from 'node:path';
import type { Command } from 'commander';
import { controlRequest } from '../core/control.ts';
import { HearthError } from '../core/errors.ts';
import { loadConfig } from '../config/load.ts';
import type { LoadedConfig } from '../config/load.ts';
import type { AddRequest } from './commands.ts';
import type { PullProgress, PullResult } from './pull.ts';
import type { AccountView, RunOutcome } from './service.ts';

export type GatherCliDeps = {
  configDirOf(opts: { config?: string }): string;
  readPassword(opts: { passwordStdin?: boolean }, prompt: string): Promise<string>;
};

type Offline = { commands: Record<string, (args: Record<string, unknown>) => Promise<unknown>>; close(): Promise<void>; run(id: string | undefined, onProgress: (id: string, p: PullProgress) => void): Promise<RunOutcome[]> };

/** A GatherService on the data directory, for when no server runs. Its scheduler never starts. */
async function openOffline(loaded: LoadedConfig): Promise<Offline> {
  const [{ GatherService }, { StoreSink }, { gatherCommands }, { Scheduler }, { silentLogger, createLogger }, { MaildirStore }, { MailStore }, { JunkFilters }, { Directory }, { gatherAuthFromConfig }] = await Promise.all([
    import('./service.ts'),
    import('./sink.ts'),
    import('./commands.ts'),
    import('../core/scheduler.ts'),
    import('../core/log.ts'),
    import('../store/maildir.ts'),
    import('../store/mailboxes.ts'),
    import('../store/junk-filters.ts'),
    import('../config/directory.ts'),
    import('./auth.ts'),
  ]);
  const { config } = loaded;
  const log = process.env.HEARTH_LOG ? createLogger('warn') : silentLogger();
  const maildir = new MaildirStore({ root: loaded.dataDir, hostname: config.hostname, fsync: config.fsync, log });
  const junk = config.junk.enabled && config.gather.junk_filter ? new JunkFilters({ maildir, log, threshold: config.junk.threshold }) : undefined;
  const mail = new MailStore({ maildir, log, junk });
  const directory = await Directory.open({ configDir: loaded.dir, domains: config.domains, log, watch: false });
  const g = config.gather;
  const service = new GatherService({
    dataDir: loaded.dataDir,
    scheduler: new Scheduler({ log }),
    sink: new StoreSink({ mail, junk, junkFolder: config.inbound.junk_folder }),
    log,
    hostname: config.hostname,
    fsync: config.fsync,
    junkFolder: config.inbound.junk_folder,
    auth: gatherAuthFromConfig(config),
    settings: { intervalMs: g.interval, idle: false, timeoutMs: g.timeout, parallel: g.parallel, batchSize: g.batch },
    isLocalAddress: (address) => (directory.resolve(address)?.local ?? []).some((b) => `${b.user}@${b.domain}` === address.toLowerCase()),
  });
  return {
    commands: gatherCommands(service),
    run: (id, onProgress) => service.run(id, { onProgress }),
    async close() {
      await service.stop();
      await mail.close();
      junk?.close();
      directory.close();
    },
  };
}

const ago = (ms: number): string => (ms < 90_000 ? `${Math.round(ms / 1000)}s` : ms < 5_400_000 ? `${Math.round(ms / 60_000)}m` : ms < 172_800_000 ? `${Math.round(ms / 3_600_000)}h` : `${Math.round(ms / 86_400_000)}d`);
const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

function describeRun(o: RunOutcome): string {
  if (!o.ok) return `${o.id}: failed: ${o.error ?? 'unknown error'}`;
  const r = o.result as PullResult | undefined;
  if (!r) return `${o.id}: nothing to do (disabled)`;
  const parts = [`${plural(r.collected, 'new message')}`];
  if (r.deleted) parts.push(`${r.deleted} deleted on the server`);
  if (r.flagsToLocal || r.flagsToRemote) parts.push(`flags: ${r.flagsToLocal} here, ${r.flagsToRemote} there`);
  if (r.remapped) parts.push(`${r.remapped} matched by Message-ID after a UIDVALIDITY change`);
  return `${o.id}: ${parts.join(', ')}`;
}

/** A progress line: rewritten in place on a terminal, every 10 % (or 5 s) otherwise. */
function progressPrinter(): { update(id: string, p: PullProgress): void; done(): void } {
  const tty = process.stderr.isTTY;
  let lastText = '';
  let lastAt = 0;
  let lastPct = -1;
  return {
    update(id, p) {
      if (p.total === 0) return;
      const pct = Math.floor((100 * p.done) / p.total);
      const text = `${id} ${p.folder}: ${p.done}/${p.total} (${pct}%)`;
      if (text === lastText) return;
      if (tty) {
        process.stderr.write(`\r${text}\x1b[K`);
      } else if (pct >= lastPct + 10 || Date.now() - lastAt > 5000 || p.done === p.total) {
        process.stderr.write(`${text}\n`);
        lastPct = pct;
        lastAt = Date.now();
      }
      lastText = text;
    },
    done() {
      if (tty && lastText) process.stderr.write('\n');
    },
  };
}

export function registerGatherCommands(program: Command, deps: GatherCliDeps): void {
  const gather = program.command('gather').description('collect mail from other accounts (IMAP or POP3) into a local mailbox, on a schedule');

  /** Through the running server, or (none running) on the data directory. */
  const call = async (opts: { config?: string }, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<unknown> => {
    const loaded = await loadConfig(deps.configDirOf(opts));
    try {
      return await controlRequest(join(loaded.dataDir, 'hearth.sock'), cmd, args, timeoutMs);
    } catch (err) {
      if ((err as HearthError).code !== 'CONTROL_NOT_RUNNING') throw err;
    }
    const offline = await openOffline(loaded);
    try {
      return await offline.commands[cmd](args);
    } finally {
      await offline.close();
    }
  };

  const printAccount = (a: AccountView): void => {
    const s = a.status;
    const now = Date.now();
    const where = `${a.protocol}${a.tls === 'implicit' ? 's' : ''}://${a.user}@${a.host}:${a.port}${a.protocol === 'imap' ? `/${a.folders.join(',')}` : ''}`;
    process.stdout.write(`${a.id}  ${where} -> ${a.owner}/${a.target}  [${a.mode}, every ${ago(a.intervalMs)}${a.protocol === 'imap' && a.idle !== false ? ', IDLE' : ''}${a.enabled === false ? ', disabled' : ''}${a.authChecks === false ? ', no auth checks' : a.trustAuthResults ? `, trusts ${a.trustAuthResults}` : ''}]\n`);
    const lines: string[] = [];
    if (s.running) lines.push(s.progress && s.progress.total > 0 ? `running: ${s.progress.folder} ${s.progress.done}/${s.progress.total}` : 'running');
    if (s.lastRunAt) lines.push(`last run ${ago(now - s.lastRunAt)} ago${s.lastOkAt === undefined || s.lastError ? '' : `, ${plural(s.lastCollected ?? 0, 'new message')}`}`);
    else lines.push('not run yet');
    lines.push(`${plural(s.totalCollected ?? 0, 'message')} collected in all`);
    if (s.lastError) lines.push(`${s.stopped ? 'STOPPED' : 'last error'}: ${s.lastError}`);
    if (!s.stopped && s.nextRunAt && !s.running) lines.push(s.nextRunAt > now ? `next run in ${ago(s.nextRunAt - now)}` : 'next run due now');
    if (s.idle && s.idle !== 'off') lines.push(`IDLE: ${s.idle}`);
    for (const l of lines) process.stdout.write(`    ${l}\n`);
  };

  gather
    .command('list')
    .description('the accounts mail is gathered from, with where it goes')
    .option('-c, --config <dir>', 'config folder')
    .option('--json', 'print JSON')
    .action(async (opts: { config?: string; json?: boolean }) => {
      const accounts = (await call(opts, 'gather.list')) as AccountView[];
      if (opts.json) return void process.stdout.write(JSON.stringify(accounts, null, 2) + '\n');
      if (accounts.length === 0) return void process.stdout.write('no accounts yet: add one with `hearth gather add --to ME@MYDOMAIN --host imap.provider.example --user ME@PROVIDER`\n');
      for (const a of accounts) process.stdout.write(`${a.id}  ${a.protocol} ${a.user}@${a.host} -> ${a.owner}/${a.target} (${a.mode})\n`);
    });

  gather
    .command('status')
    .description('last run, counts, next run and the last error of each account (or one)')
    .argument('[account]', 'account name')
    .option('-c, --config <dir>', 'config folder')
    .option('--json', 'print JSON')
    .action(async (id: string | undefined, opts: { config?: string; json?: boolean }) => {
      const accounts = (await call(opts, 'gather.status', id ? { id } : {})) as AccountView[];
      if (id && accounts.length === 0) throw new HearthError('CLI_NO_SUCH', `no gather account named ${id}; see \`hearth gather list\``);
      if (opts.json) return void process.stdout.write(JSON.stringify(accounts, null, 2) + '\n');
      if (accounts.length === 0) return void process.stdout.write('no accounts yet: add one with `hearth gather add`\n');
      for (const a of accounts) printAccount(a);
    });

  gather
    .command('add')
    .description('collect mail from a remote account; asks for its password, or reads it from standard input')
    .requiredOption('--to <address>', 'the local user who receives the mail, e.g. me@example.org')
    .requiredOption('--host <host>', 'the remote server, e.g. imap.provider.example')
    .requiredOption('--user <name>', 'the login at the remote server')
    .option('--protocol <imap|pop3>', 'imap or pop3', 'imap')
    .option('--tls <mode>', 'implicit (993/995), starttls (143/110) or none (only for a server on this machine)', 'implicit')
    .option('--port <n>', 'port (default: by protocol and TLS mode)')
    .option('--insecure-tls', 'accept a certificate that cannot be verified (a self-signed server you trust)')
    .option('--folder <name...>', 'remote folder(s) to pull (IMAP; default INBOX)')
    .option('--into <folder>', 'local folder that receives the mail', 'INBOX')
    .option('--mode <mode>', 'copy (leave on the server), move (delete there once stored here), mirror (copy and keep flags in step)', 'copy')
    .option('--interval <duration>', 'time between pulls, e.g. 5m (default: [gather] interval)')
    .option('--no-idle', 'do not watch the folder with IMAP IDLE')
    .option('--auth-checks', 'check DKIM/ARC/DMARC of collected mail (default: [gather] auth_checks)')
    .option('--no-auth-checks', 'do not check DKIM/ARC/DMARC of collected mail')
    .option('--trust-auth-results <authserv-id>', "use the provider's own Authentication-Results with this authserv-id, e.g. mx.google.com")
    .option('--name <name>', 'a short name for the account (default: the remote login)')
    .option('-c, --config <dir>', 'config folder')
    .option('--password-stdin', 'read the password from standard input')
    .option('--json', 'print JSON')
    .action(async (opts: { to: string; host: string; user: string; protocol: string; tls: string; port?: string; insecureTls?: boolean; folder?: string[]; into: string; mode: string; interval?: string; idle: boolean; authChecks?: boolean; trustAuthResults?: string; name?: string; config?: string; passwordStdin?: boolean; json?: boolean }) => {
      let intervalMs: number | undefined;
      if (opts.interval !== undefined) {
        const { duration } = await import('../config/schema.ts');
        const parsed = duration.safeParse(opts.interval);
        if (!parsed.success) throw new HearthError('CLI_USAGE', `--interval: "${opts.interval}" is not a duration; write e.g. 30s, 5m or 1h`);
        intervalMs = parsed.data;
      }
      const port = opts.port === undefined ? undefined : Number(opts.port);
      if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535)) throw new HearthError('CLI_USAGE', `--port: ${opts.port} is not a port number`);
      const request: AddRequest = {
        name: opts.name,
        owner: opts.to,
        protocol: opts.protocol,
        host: opts.host,
        port,
        tls: opts.tls,
        insecureTls: opts.insecureTls,
        user: opts.user,
        folders: opts.folder,
        target: opts.into,
        mode: opts.mode,
        intervalMs,
        idle: opts.idle,
        authChecks: opts.authChecks,
        trustAuthResults: opts.trustAuthResults,
      };
      // Check everything but the password first, so a typo does not cost a password prompt.
      const { accountFromRequest } = await import('./commands.ts');
      const { validateAccount } = await import('./accounts.ts');
      validateAccount(accountFromRequest(request));
      const password = await deps.readPassword(opts, `Password for ${opts.user} at ${opts.host}`);
      const added = (await call(opts, 'gather.add', { account: request, password })) as { id: string; owner: string; target: string };
      process.stdout.write(opts.json ? JSON.stringify(added) + '\n' : `added ${added.id}: mail goes to ${added.owner}/${added.target}; pull now with \`hearth gather run ${added.id}\`\n`);
    });

  gather
    .command('remove')
    .alias('del')
    .description('stop gathering from an account (what was collected stays, and is remembered)')
    .argument('<account>', 'account name')
    .option('-c, --config <dir>', 'config folder')
    .action(async (id: string, opts: { config?: string }) => {
      await call(opts, 'gather.remove', { id });
      process.stdout.write(`removed ${id}\n`);
    });

  gather
    .command('passwd')
    .description("change an account's password (an account stopped by a refused password runs again)")
    .argument('<account>', 'account name')
    .option('-c, --config <dir>', 'config folder')
    .option('--password-stdin', 'read the password from standard input')
    .action(async (id: string, opts: { config?: string; passwordStdin?: boolean }) => {
      const password = await deps.readPassword(opts, `New password for ${id}`);
      await call(opts, 'gather.passwd', { id, password });
      process.stdout.write(`password changed for ${id}\n`);
    });

  gather
    .command('run')
    .description('pull now (one account, or all) and wait; shows progress')
    .argument('[account]', 'account name')
    .option('-c, --config <dir>', 'config folder')
    .option('--timeout <seconds>', 'give up waiting after this long (the pull goes on in the server)', '3600')
    .option('--json', 'print JSON')
    .action(async (id: string | undefined, opts: { config?: string; timeout: string; json?: boolean }) => {
      const loaded = await loadConfig(deps.configDirOf(opts));
      const socket = join(loaded.dataDir, 'hearth.sock');
      const progress = progressPrinter();
      let outcomes: RunOutcome[];
      try {
        const running = controlRequest(socket, 'gather.run', id ? { id } : {}, Number(opts.timeout) * 1000) as Promise<RunOutcome[]>;
        // While the server pulls, ask it how far it got.
        let finished = false;
        const poll = (async () => {
          while (!finished) {
            await new Promise((r) => setTimeout(r, 500));
            if (finished) break;
            const views = (await controlRequest(socket, 'gather.status', id ? { id } : {}, 5_000).catch(() => [])) as AccountView[];
            for (const v of views) if (v.status.progress) progress.update(v.id, v.status.progress);
          }
        })();
        try {
          outcomes = await running;
        } finally {
          finished = true;
          await poll;
        }
      } catch (err) {
        if ((err as HearthError).code !== 'CONTROL_NOT_RUNNING') throw err;
        const offline = await openOffline(loaded);
        try {
          outcomes = await offline.run(id, (aid, p) => progress.update(aid, p));
        } finally {
          await offline.close();
        }
      }
      progress.done();
      if (opts.json) process.stdout.write(JSON.stringify(outcomes, null, 2) + '\n');
      else if (outcomes.length === 0) process.stdout.write('no accounts yet: add one with `hearth gather add`\n');
      else for (const o of outcomes) process.stdout.write(describeRun(o) + '\n');
      if (outcomes.some((o) => !o.ok)) process.exitCode = 1;
    });
}
