// `hearth import mbox|maildir`, `hearth export mbox|maildir`, `hearth backup`, `hearth restore`:
// the command line of src/transfer/. Import and export open the user's index themselves, so
// they refuse while the server runs (it holds the indexes), as `hearth reindex` does. On a
// terminal a progress bar shows counts, rate and ETA; otherwise a plain line every 10 % or 5 s.
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { controlRequest } from '../core/control.ts';
import { HearthError } from '../core/errors.ts';
import { loadConfig } from '../config/load.ts';
import type { LoadedConfig } from '../config/load.ts';
import { UsersFile } from '../config/users.ts';
import type { BrokenMessage, TransferProgress } from '../transfer/import.ts';
import type { MboxQuoting } from '../transfer/mbox.ts';
import type { BackupProgress } from '../transfer/backup.ts';

type CommonOpts = { config?: string; user: string };

function configDirOf(opts: { config?: string }): string {
  return resolve(opts.config ?? process.env.HEARTH_CONFIG ?? 'config');
}

async function refuseIfRunning(loaded: LoadedConfig, what: string): Promise<void> {
  try {
    await controlRequest(join(loaded.dataDir, 'hearth.sock'), 'status', {}, 2_000);
  } catch (err) {
    if ((err as HearthError).code === 'CONTROL_NOT_RUNNING') return;
    throw err;
  }
  throw new HearthError('CLI_SERVER_RUNNING', `hearth is running; stop hearth first (the running server holds the mail indexes open), then run \`hearth ${what}\` again`);
}

/** Config, the user's mailbox reference, and a MailStore on the data directory (no server). */
async function openUserStore(opts: CommonOpts, what: string) {
  const loaded = await loadConfig(configDirOf(opts));
  await refuseIfRunning(loaded, what);
  const address = opts.user.toLowerCase();
  const record = (await new UsersFile(join(loaded.dir, 'users')).list()).find((u) => u.address === address);
  if (!record) throw new HearthError('CLI_NO_USER', `no user ${opts.user}; see \`hearth user list\``);
  const [{ MaildirStore }, { MailStore }, { silentLogger, createLogger }] = await Promise.all([import('../store/maildir.ts'), import('../store/mailboxes.ts'), import('../core/log.ts')]);
  const log = process.env.HEARTH_LOG ? createLogger('warn') : silentLogger();
  const maildir = new MaildirStore({ root: loaded.dataDir, hostname: loaded.config.hostname, fsync: loaded.config.fsync, log });
  // No background search indexer: the import catches the index up in batches itself (cheaper).
  const mail = new MailStore({ maildir, log, fullText: false });
  return { loaded, mail, box: { user: record.user, domain: record.domain }, address };
}

const seconds = (ms: number): string => {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 90 ? `${s}s` : s < 5400 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
};
const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;
/** Backup sizes run from a few KiB (a fresh server) to many GiB. */
const plural = (n: number, one: string, many: string): string => `${n} ${n === 1 ? one : many}`;
const human = (n: number): string => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : n < 1073741824 ? mib(n) : `${(n / 1073741824).toFixed(2)} GiB`);

/** A progress display: a @clack/prompts bar on a terminal, plain lines otherwise. */
export async function progressReporter(verb: string, out: NodeJS.WriteStream = process.stderr, describeWith?: (p: TransferProgress, elapsedMs: number) => string): Promise<{ update(p: TransferProgress): void; stop(summary: string): void }> {
  const tty = Boolean(out.isTTY);
  const started = Date.now();
  let bar: { advance(step?: number, msg?: string): void; stop(msg?: string): void; start(msg?: string): void } | undefined;
  if (tty) {
    const { progress } = await import('@clack/prompts');
    bar = progress({ max: 1000, output: out });
    bar.start(`${verb}…`);
  }
  let shownPermille = 0;
  let lastAt = 0;
  let lastTenth = -1;
  const describe = (p: TransferProgress): string => {
    const elapsed = Date.now() - started;
    if (describeWith) return describeWith(p, elapsed);
    const rate = elapsed > 0 ? p.imported / (elapsed / 1000) : 0;
    const eta = p.done > 0 && p.total > p.done ? seconds((elapsed * (p.total - p.done)) / p.done) : '-';
    const amount = p.unit === 'bytes' ? `${mib(p.done)}/${mib(p.total)}` : `${p.done}/${p.total}`;
    const extra = [p.duplicates ? `${p.duplicates} already there` : '', p.broken ? `${p.broken} broken` : ''].filter(Boolean).join(', ');
    return `${verb} ${p.folder}: ${amount}, ${p.imported} messages${extra ? ` (${extra})` : ''}, ${rate.toFixed(0)} msg/s, ETA ${eta}`;
  };
  return {
    update(p) {
      const now = Date.now();
      const permille = p.total > 0 ? Math.min(1000, Math.floor((1000 * p.done) / p.total)) : 1000;
      if (bar) {
        if (now - lastAt < 100 && permille < 1000) return;
        lastAt = now;
        bar.advance(permille - shownPermille, describe(p));
        shownPermille = permille;
        return;
      }
      const tenth = Math.floor(permille / 100);
      if (tenth > lastTenth || now - lastAt > 5000) {
        out.write(describe(p) + '\n');
        lastTenth = tenth;
        lastAt = now;
      }
    },
    stop(summary) {
      if (bar) bar.stop(summary);
      else out.write(summary + '\n');
    },
  };
}

/** Backup, verify and restore count bytes (of the files, or of the archive read), not messages. */
function describeBytes(verb: string): (p: TransferProgress, elapsedMs: number) => string {
  return (p, elapsed) => {
    const rate = elapsed > 0 ? p.done / (elapsed / 1000) : 0;
    const eta = p.done > 0 && p.total > p.done ? seconds((elapsed * (p.total - p.done)) / p.done) : '-';
    const amount = p.unit === 'bytes' ? `${human(p.done)}/${human(p.total)}` : `${p.done} files`;
    return `${verb}: ${amount}${p.unit === 'bytes' ? `, ${human(rate)}/s, ETA ${eta}` : ''} (${p.folder})`;
  };
}

function asProgress(p: BackupProgress): TransferProgress {
  return { done: p.done, total: p.total, unit: p.unit === 'bytes' ? 'bytes' : 'messages', imported: 0, duplicates: 0, broken: 0, folder: p.file };
}

function printBroken(broken: BrokenMessage[]): void {
  if (broken.length === 0) return;
  process.stderr.write(`skipped ${broken.length} broken message${broken.length === 1 ? '' : 's'}:\n`);
  for (const b of broken.slice(0, 50)) process.stderr.write(`  ${b.where}: ${b.reason}\n`);
  if (broken.length > 50) process.stderr.write(`  … and ${broken.length - 50} more\n`);
}

export function registerTransferCommands(program: Command): void {
  const imp = program.command('import').description('bring old mail into a user\'s mailboxes (mbox or Maildir); safe to run again: what is already there is skipped');

  imp
    .command('mbox')
    .description('import an mbox file (mboxrd or mboxo) into one folder; flags from Status/X-Status/X-Mozilla-Status, dates from the From lines')
    .argument('<file>', 'the mbox file')
    .requiredOption('-u, --user <address>', 'the user who gets the mail')
    .option('-f, --folder <name>', 'target folder, created if missing', 'INBOX')
    .option('--quoting <style>', 'how the file quotes "From " lines: mboxrd (>From, >>From, … lose one >) or mboxo (only >From)', 'mboxrd')
    .option('-c, --config <dir>', 'config folder')
    .action(async (file: string, opts: CommonOpts & { folder: string; quoting: string }) => {
      if (opts.quoting !== 'mboxrd' && opts.quoting !== 'mboxo') throw new HearthError('CLI_USAGE', `--quoting is mboxrd or mboxo, not ${JSON.stringify(opts.quoting)}`);
      const { mail, box, address } = await openUserStore(opts, 'import mbox');
      const { importMbox } = await import('../transfer/import.ts');
      const bar = await progressReporter('importing');
      try {
        const r = await importMbox({ mail, box, file: resolve(file), folder: opts.folder, quoting: opts.quoting as MboxQuoting, onProgress: (p) => bar.update(p) });
        bar.stop(`${address}/${r.folders[0]}: ${r.imported} imported, ${r.duplicates} already there, ${r.broken.length} broken; ${mib(r.bytes)} in ${(r.ms / 1000).toFixed(1)} s (${Math.round(r.imported / Math.max(0.001, r.ms / 1000))} msg/s)`);
        printBroken(r.broken);
      } finally {
        await mail.close();
      }
    });

  imp
    .command('maildir')
    .description('import a Maildir (with its .Sub.Folders) keeping flags, keywords (dovecot-keywords) and dates')
    .argument('<dir>', 'the Maildir: a folder with cur/ and new/')
    .requiredOption('-u, --user <address>', 'the user who gets the mail')
    .option('-f, --folder <name>', 'put the Maildir\'s INBOX here (and its subfolders under it) instead of INBOX')
    .option('-c, --config <dir>', 'config folder')
    .action(async (dir: string, opts: CommonOpts & { folder?: string }) => {
      const { mail, box, address } = await openUserStore(opts, 'import maildir');
      const { importMaildir } = await import('../transfer/import.ts');
      const bar = await progressReporter('importing');
      try {
        const r = await importMaildir({ mail, box, dir: resolve(dir), folder: opts.folder, onProgress: (p) => bar.update(p) });
        bar.stop(`${address}: ${r.imported} imported into ${r.folders.length} folder${r.folders.length === 1 ? '' : 's'} (${r.folders.join(', ')}), ${r.duplicates} already there, ${r.broken.length} broken; ${(r.ms / 1000).toFixed(1)} s`);
        printBroken(r.broken);
      } finally {
        await mail.close();
      }
    });

  const exp = program.command('export').description('write a user\'s mail out as mbox or Maildir');

  exp
    .command('mbox')
    .description('export as mboxrd: with --folder OUT is the file; without, OUT is a directory with one FOLDER.mbox per folder')
    .argument('<out>', 'output file (with --folder) or directory')
    .requiredOption('-u, --user <address>', 'whose mail')
    .option('-f, --folder <name>', 'only this folder')
    .option('-c, --config <dir>', 'config folder')
    .action(async (out: string, opts: CommonOpts & { folder?: string }) => {
      const { mail, box, address } = await openUserStore(opts, 'export mbox');
      const { exportMbox } = await import('../transfer/export.ts');
      const bar = await progressReporter('exporting');
      try {
        const r = await exportMbox({ mail, box, folder: opts.folder, out: resolve(out), onProgress: (p) => bar.update(p) });
        bar.stop(`${address}: ${r.messages} messages, ${mib(r.bytes)} in ${(r.ms / 1000).toFixed(1)} s`);
        for (const f of r.folders) process.stdout.write(`${f.folder}: ${f.messages} messages -> ${f.file}\n`);
      } finally {
        await mail.close();
      }
    });

  exp
    .command('maildir')
    .description('export as a Maildir++ tree (INBOX at the top, other folders as .Name), flags in file names')
    .argument('<out>', 'a new or empty directory')
    .requiredOption('-u, --user <address>', 'whose mail')
    .option('-c, --config <dir>', 'config folder')
    .action(async (out: string, opts: CommonOpts) => {
      const { mail, box, address } = await openUserStore(opts, 'export maildir');
      const { exportMaildir } = await import('../transfer/export.ts');
      const bar = await progressReporter('exporting');
      try {
        const r = await exportMaildir({ mail, box, out: resolve(out), onProgress: (p) => bar.update(p) });
        bar.stop(`${address}: ${r.messages} messages in ${r.folders.length} folders, ${mib(r.bytes)} in ${(r.ms / 1000).toFixed(1)} s -> ${resolve(out)}`);
      } finally {
        await mail.close();
      }
    });

  program
    .command('backup')
    .description('write one archive (.tar.gz or .tar) of config, users, DKIM keys, queue, Maildirs and the files hearth.toml names elsewhere (TLS, SRS secret, …), with a manifest of counts and SHA-256 sums; safe while the server runs, and checked after writing')
    .argument('<out>', 'a new file ending in .tar.gz, .tgz or .tar, or an existing directory (a dated hearth-backup-….tar.gz goes in it); with --verify: the archive to check')
    .option('--verify', 'check an existing archive (every file against the manifest) instead of writing one')
    .option('-c, --config <dir>', 'config folder')
    .addHelpText('after', '\nExamples:\n  hearth backup /srv/backups                       # /srv/backups/hearth-backup-20261124-221900.tar.gz\n  hearth backup ~/hearth-$(date +%F).tar.gz\n  hearth backup --verify /srv/backups/hearth-backup-20261124-221900.tar.gz\n  hearth restore ARCHIVE -c /new/place/config      # see hearth restore --help\n')
    .action(async (out: string, opts: { config?: string; verify?: boolean }) => {
      const { backupTarget, configFileReferences, createBackup, verifyBackup } = await import('../transfer/backup.ts');
      let archive = resolve(out);
      if (!opts.verify) {
        const loaded = await loadConfig(configDirOf(opts));
        archive = await backupTarget(out);
        const bar = await progressReporter('backing up', process.stderr, describeBytes('backing up'));
        const r = await createBackup({ configDir: loaded.dir, dataDir: loaded.dataDir, out: archive, references: configFileReferences(loaded.config, loaded.dir), onProgress: (p) => bar.update(asProgress(p)) });
        const m = r.manifest;
        bar.stop(`backed up ${m.counts.files} files`);
        process.stdout.write(`wrote ${archive} (${human(r.archiveBytes)}):
  config/        <- ${loaded.dir}
  data/          <- ${loaded.dataDir}
  manifest.json  (last entry) sizes and SHA-256 of all ${m.counts.files} files
`);
        process.stdout.write(`  ${m.counts.users} users, ${plural(m.counts.mailboxes, 'mailbox', 'mailboxes')}, ${m.counts.messages} messages, ${m.counts.queueFiles} queue files, ${m.counts.dkimKeys} DKIM keys; ${m.counts.files} files, ${human(m.counts.bytes)}\n`);
        if (m.vanished) process.stdout.write(`  ${m.vanished} file(s) removed while copying (expunged messages, delivered queue entries, deleted folders) were left out\n`);
        if (r.external.included.length) process.stdout.write(`  external/      <- files hearth.toml names outside ${loaded.dir} and ${loaded.dataDir}:\n`);
        for (const e of r.external.included) process.stdout.write(`    included ${e.original} (${e.keys.join(', ')}) as ${e.path}\n`);
        for (const e of r.external.missing) {
          process.stderr.write(`warning: ${e.keys.join(' and ')} name${e.keys.length === 1 ? 's' : ''} ${e.original}, which ${e.reason}: it is NOT in this backup; fix the path in hearth.toml, or keep a copy of that file yourself\n`);
        }
      }
      const bar = await progressReporter('verifying', process.stderr, describeBytes('verifying'));
      const { manifest, problems } = await verifyBackup(archive, (p) => bar.update(asProgress(p)));
      if (problems.length || !manifest) {
        bar.stop(`${archive}: DAMAGED`);
        process.stderr.write(`${archive}: DAMAGED, do not rely on it\n  ${problems.slice(0, 50).join('\n  ')}\n${problems.length > 50 ? `  … and ${problems.length - 50} more\n` : ''}`);
        process.exitCode = 1;
        return;
      }
      bar.stop(`checked ${manifest.counts.files} files`);
      process.stdout.write(`${archive}: verified, ${manifest.counts.files} files match their sizes and SHA-256 sums (${manifest.counts.messages} messages, ${manifest.counts.users} users; made ${manifest.createdAt})\n`);
    });

  program
    .command('restore')
    .description('restore an archive made by `hearth backup` into the config folder and the data folder its hearth.toml names, verifying every file while extracting; refuses non-empty folders without --force')
    .argument('<archive>', 'the backup: a .tar.gz/.tar archive (or a backup directory from older versions)')
    .option('--force', 'restore into non-empty folders, overwriting the files the backup holds')
    .option('-c, --config <dir>', 'config folder to restore into (the data folder is data_dir of the archived hearth.toml, relative to it)')
    .addHelpText('after', '\nNothing is written unless the whole archive verifies: files are staged inside the target\nfolders and moved into place at the end. Entries with absolute paths, "..", or links are refused.\nFiles hearth.toml named outside its config folder (external/ in the archive) come back under\nCONFIG_DIR/restored-external/, never at their old paths; hearth.toml is not changed.\n\nExample:\n  hearth restore /srv/backups/hearth-backup-20261124-221900.tar.gz -c /srv/hearth/config\n')
    .action(async (archive: string, opts: { config?: string; force?: boolean }) => {
      const [{ readArchiveFile, restoreBackup }, { parseConfigText }] = await Promise.all([import('../transfer/backup.ts'), import('../config/load.ts')]);
      const configDir = configDirOf(opts);
      const abs = resolve(archive);
      const text = await readArchiveFile(abs, 'config/hearth.toml');
      if (text === undefined) throw new HearthError('CLI_NOT_BACKUP', `${archive} holds no config/hearth.toml: not a hearth backup (make one with \`hearth backup OUT\`)`);
      const dataDir = resolve(configDir, parseConfigText(text, `${abs}:config/hearth.toml`).data_dir);
      try {
        await controlRequest(join(dataDir, 'hearth.sock'), 'status', {}, 2_000);
        throw new HearthError('CLI_SERVER_RUNNING', `hearth is running on ${dataDir}; stop hearth first, then restore`);
      } catch (err) {
        if ((err as HearthError).code === 'CLI_SERVER_RUNNING') throw err;
      }
      const bar = await progressReporter('restoring', process.stderr, describeBytes('restoring'));
      let r;
      try {
        r = await restoreBackup({ archive: abs, configDir, dataDir, force: opts.force, onProgress: (p) => bar.update(asProgress(p)) });
      } catch (err) {
        bar.stop('restore failed, nothing restored');
        throw err;
      }
      const m = r.manifest;
      bar.stop(`restored ${abs}`);
      process.stdout.write(`restored ${m.counts.files} files (${m.counts.messages} messages, ${m.counts.users} users), all matching the manifest of ${m.createdAt}:\n  config/ -> ${configDir} (${r.configFiles} files)\n  data/   -> ${dataDir} (${r.dataFiles} files: ${plural(m.counts.mailboxes, 'mailbox', 'mailboxes')}, ${m.counts.queueFiles} queue files)\n`);
      if (r.externalFiles.length) process.stdout.write(`files hearth.toml named outside its config folder were restored under ${join(configDir, 'restored-external')} (hearth.toml was not changed):\n`);
      for (const e of r.externalFiles) {
        const keys = e.keys.join(', ');
        const setKeys = e.keys.map((k) => `${k} = ${JSON.stringify(e.configPath)}`).join(' and ');
        process.stdout.write(`  ${e.original} (${keys}) -> ${e.restoredTo} (mode ${e.mode.toString(8).padStart(4, '0')})\n`);
        if (e.kept) process.stdout.write(`    ${e.kept === 'same' ? 'the same file' : 'a DIFFERENT file'} was in the backup's config folder at that place; that one was restored there\n`);
        process.stdout.write(`    fix: copy it back to ${e.original}, or set ${setKeys} in hearth.toml\n`);
      }
      for (const e of r.externalMissing) process.stderr.write(`warning: ${e.keys.join(', ')}: ${e.original} is not in this backup (when it was made, the file ${e.reason}); put it there yourself, or fix hearth.toml\n`);
      process.stdout.write(`full-text search indexes are not in backups: run \`hearth reindex\` (or let the server rebuild them in the background); then \`hearth serve -c ${configDir}\`\n`);
    });
}
