// Export is in charge of taking a user's mail out again: as mboxrd (one file per folder, flags
// in Status/X-Status/X-Keywords, the internal date on the separator line) or as a Maildir++ tree
// (file names with `:2,` flags, keywords as dovecot-keywords letters, mtimes = internal dates),
// which `hearth import` and other programs (mutt, Dovecot, Thunderbird) read back.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { once } from 'node:events';
import { parseMaildirName } from '../store/flags.ts';
import type { MailStore, UserMailboxes } from '../store/mailboxes.ts';
import type { MailboxRef } from '../store/maildir.ts';
import type { TransferProgress } from './import.ts';
import { TransferError, formatMboxMessage } from './mbox.ts';

export type ExportResult = { messages: number; folders: Array<{ folder: string; messages: number; file: string }>; bytes: number; missing: number; ms: number };

type Source = { mail: MailStore; box: MailboxRef; onProgress?: (p: TransferProgress) => void };

async function foldersToExport(mailboxes: UserMailboxes, only: string | undefined): Promise<Array<{ name: string; count: number }>> {
  const all = (await mailboxes.listFolders()).map((f) => f.name);
  const wanted = only === undefined ? all : all.filter((n) => n === only || (only.toUpperCase() === 'INBOX' && n === 'INBOX'));
  if (only !== undefined && wanted.length === 0) throw new TransferError('EXPORT_NO_FOLDER', `no folder ${JSON.stringify(only)}; folders: ${all.join(', ')}`);
  const out = [];
  for (const name of wanted) out.push({ name, count: (await mailboxes.sync(name)).messages.length });
  return out;
}

/** Write to `file.part`, then rename: a reader never sees half an export under the real name. */
async function writeAtomically(file: string, fill: (write: (chunk: Buffer) => Promise<void>) => Promise<void>): Promise<number> {
  await fsp.mkdir(path.dirname(file), { recursive: true });
  const part = `${file}.part`;
  const out = fs.createWriteStream(part, { mode: 0o600 });
  let bytes = 0;
  try {
    await fill(async (chunk) => {
      bytes += chunk.length;
      if (!out.write(chunk)) await once(out, 'drain');
    });
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    await fsp.rename(part, file);
  } catch (err) {
    out.destroy();
    await fsp.rm(part, { force: true });
    throw err;
  }
  return bytes;
}

/**
 * Export as mboxrd. With `folder`, `out` is the mbox file; without, `out` is a directory that
 * gets one `<folder>.mbox` per folder (`A/B` becomes `A/B.mbox`).
 */
export async function exportMbox(opts: Source & { folder?: string; out: string }): Promise<ExportResult> {
  const started = Date.now();
  const mailboxes = await opts.mail.open(opts.box);
  const folders = await foldersToExport(mailboxes, opts.folder);
  const total = folders.reduce((n, f) => n + f.count, 0);
  const result: ExportResult = { messages: 0, folders: [], bytes: 0, missing: 0, ms: 0 };
  let done = 0;
  for (const f of folders) {
    const file = opts.folder !== undefined ? opts.out : path.join(opts.out, ...f.name.split('/')) + '.mbox';
    let count = 0;
    result.bytes += await writeAtomically(file, async (write) => {
      const state = await mailboxes.sync(f.name);
      for (const rec of state.messages) {
        done++;
        const content = await mailboxes.readMessage(f.name, rec.uid);
        if (content === null) {
          result.missing++; // expunged meanwhile
          continue;
        }
        await write(formatMboxMessage(content, rec.flags, new Date(rec.internalDate)));
        count++;
        opts.onProgress?.({ done, total, unit: 'messages', imported: result.messages + count, duplicates: 0, broken: result.missing, folder: f.name });
      }
    });
    result.messages += count;
    result.folders.push({ folder: f.name, messages: count, file });
  }
  result.ms = Date.now() - started;
  return result;
}

/**
 * Export as a Maildir++ tree into `out` (missing or empty): INBOX at its root, `A/B` as `.A.B`.
 * Files are copied byte for byte; keywords become letters a–z listed in each folder's
 * dovecot-keywords (Dovecot's convention; beyond 26 keywords the rest are left out).
 */
export async function exportMaildir(opts: Source & { out: string }): Promise<ExportResult> {
  const started = Date.now();
  const existing = await fsp.readdir(opts.out).catch(() => [] as string[]);
  if (existing.length > 0) throw new TransferError('EXPORT_NOT_EMPTY', `${opts.out} is not empty; export into a new or empty directory`);
  const mailboxes = await opts.mail.open(opts.box);
  const folders = await foldersToExport(mailboxes, undefined);
  const total = folders.reduce((n, f) => n + f.count, 0);
  const result: ExportResult = { messages: 0, folders: [], bytes: 0, missing: 0, ms: 0 };
  let done = 0;
  for (const f of folders) {
    const dir = f.name === 'INBOX' ? opts.out : path.join(opts.out, '.' + f.name.split('/').join('.'));
    for (const sub of ['cur', 'new', 'tmp']) await fsp.mkdir(path.join(dir, sub), { recursive: true, mode: 0o700 });
    if (f.name !== 'INBOX') await fsp.writeFile(path.join(dir, 'maildirfolder'), '');
    const keywordLetters = new Map<string, string>();
    const state = await mailboxes.sync(f.name);
    let count = 0;
    for (const rec of state.messages) {
      done++;
      const content = await mailboxes.readMessage(f.name, rec.uid);
      if (content === null) {
        result.missing++;
        continue;
      }
      const base = path.basename(rec.path);
      const { key, letters } = parseMaildirName(base);
      let extra = '';
      for (const kw of rec.flags.filter((x) => !x.startsWith('\\'))) {
        let letter = keywordLetters.get(kw);
        if (letter === undefined && keywordLetters.size < 26) {
          letter = String.fromCharCode(0x61 + keywordLetters.size);
          keywordLetters.set(kw, letter);
        }
        if (letter) extra += letter;
      }
      const inNew = !base.includes(':') && extra === '';
      const info = [...new Set(letters + extra)].sort().join('');
      const target = path.join(dir, inNew ? 'new' : 'cur', inNew ? key : `${key}:2,${info}`);
      await fsp.writeFile(target, content, { mode: 0o600 });
      const when = new Date(rec.internalDate);
      await fsp.utimes(target, when, when);
      result.bytes += content.length;
      count++;
      opts.onProgress?.({ done, total, unit: 'messages', imported: result.messages + count, duplicates: 0, broken: result.missing, folder: f.name });
    }
    if (keywordLetters.size > 0) {
      await fsp.writeFile(path.join(dir, 'dovecot-keywords'), [...keywordLetters.keys()].map((kw, i) => `${i} ${kw}\n`).join(''));
    }
    result.messages += count;
    result.folders.push({ folder: f.name, messages: count, file: dir });
  }
  result.ms = Date.now() - started;
  return result;
}
