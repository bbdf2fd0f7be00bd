// Import is in charge of bringing old mail into a user's mailboxes: an mbox file (streamed, one
// message in memory at a time) or a Maildir tree (Maildir++ subfolders, flags from file names,
// keywords from dovecot-keywords). Every message goes through UserMailboxes.append, so it gets
// its UID and index entry at once and the full-text index follows in the background. Broken
// messages are counted and reported, never fatal. A ledger beside the user's index remembers
// what was imported (folder + SHA-256 of the stored bytes), so a second run adds nothing.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { MailStore, UserMailboxes } from '../store/mailboxes.ts';
import type { MailboxRef } from '../store/maildir.ts';
import { silentLogger } from '../core/log.ts';
import { FullTextIndex } from '../store/fulltext.ts';
import { userSearch } from '../store/user-search.ts';
import { TransferError, parseMboxMessage, splitMbox } from './mbox.ts';
import type { MboxQuoting } from './mbox.ts';

/** The ledger file, beside the mailbox index. */
export const IMPORT_LEDGER_FILE = 'hearth-import.ledger';

export type TransferProgress = {
  /** Units of work done and expected: bytes for an mbox, files for a Maildir. */
  done: number;
  total: number;
  unit: 'bytes' | 'messages';
  imported: number;
  duplicates: number;
  broken: number;
  folder: string;
};

export type BrokenMessage = { where: string; reason: string };

export type ImportResult = {
  imported: number;
  duplicates: number;
  broken: BrokenMessage[];
  /** Folders written to, in the order first met. */
  folders: string[];
  bytes: number;
  ms: number;
};

/** Larger messages are skipped as broken: one message is held in memory while it is stored. */
export const IMPORT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

const HEADER_FIELD = /^[\x21-\x39\x3b-\x7e]+[ \t]*:/;

/** What was imported into which folder: `folder<TAB>hash` lines, appended as messages land. */
export class ImportLedger {
  readonly file: string;
  readonly #seen = new Set<string>();
  #out: fs.WriteStream | undefined;

  constructor(file: string) {
    this.file = file;
  }

  static async open(userDir: string): Promise<ImportLedger> {
    const ledger = new ImportLedger(path.join(userDir, IMPORT_LEDGER_FILE));
    let text = '';
    try {
      text = await fsp.readFile(ledger.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    for (const line of text.split('\n')) if (line) ledger.#seen.add(line);
    return ledger;
  }

  static keyOf(content: Uint8Array): string {
    return createHash('sha256').update(content).digest('base64url');
  }

  has(folder: string, hash: string): boolean {
    return this.#seen.has(`${folder}\t${hash}`);
  }

  record(folder: string, hash: string): void {
    const line = `${folder}\t${hash}`;
    this.#seen.add(line);
    this.#out ??= fs.createWriteStream(this.file, { flags: 'a', mode: 0o600 });
    this.#out.write(line + '\n');
  }

  async close(): Promise<void> {
    const out = this.#out;
    this.#out = undefined;
    if (out) await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  }
}

/** Every LF without a CR before it becomes CRLF (the store keeps mail as it arrives by SMTP). */
export function toCrlf(buf: Buffer): Buffer {
  let bare = 0;
  for (let i = buf.indexOf(0x0a); i >= 0; i = buf.indexOf(0x0a, i + 1)) if (i === 0 || buf[i - 1] !== 0x0d) bare++;
  if (bare === 0) return buf;
  const out = Buffer.allocUnsafe(buf.length + bare);
  let o = 0;
  let start = 0;
  for (let i = buf.indexOf(0x0a); i >= 0; i = buf.indexOf(0x0a, i + 1)) {
    if (i > 0 && buf[i - 1] === 0x0d) continue;
    o += buf.copy(out, o, start, i);
    out[o++] = 0x0d;
    out[o++] = 0x0a;
    start = i + 1;
  }
  o += buf.copy(out, o, start);
  return out.subarray(0, o);
}

/** Why a message is not fit to store, or undefined. */
function brokenReason(content: Buffer): string | undefined {
  if (content.length === 0) return 'empty message';
  const firstLine = content.subarray(0, Math.min(content.length, 200)).toString('latin1').split(/\r?\n/)[0];
  if (!HEADER_FIELD.test(firstLine)) return `does not start with a header field (${JSON.stringify(firstLine.slice(0, 40))})`;
  return undefined;
}

async function ensureFolder(mailboxes: UserMailboxes, folder: string): Promise<string> {
  if (folder.toUpperCase() === 'INBOX') return 'INBOX';
  const existing = await mailboxes.listFolders();
  if (!existing.some((f) => f.name === folder)) await mailboxes.createFolder(folder);
  return folder;
}

type Target = { mail: MailStore; box: MailboxRef; onProgress?: (p: TransferProgress) => void };

/** Messages between two full-text catch-ups when the import keeps the search index itself. */
const INDEX_EVERY = 500;

/**
 * Keeps the user's full-text index in step with the import. With a MailStore that runs search
 * (a server, the tests) its background indexer follows the appends; otherwise (the command line)
 * the import catches the index up every INDEX_EVERY messages and at each folder's end, which
 * costs about half as much as indexing one message at a time beside the appends.
 */
class SearchFollower {
  readonly #mailboxes: UserMailboxes;
  readonly #own: FullTextIndex | undefined;
  #since = 0;

  constructor(mailboxes: UserMailboxes) {
    this.#mailboxes = mailboxes;
    if (userSearch(mailboxes)) return;
    try {
      this.#own = FullTextIndex.open(FullTextIndex.pathFor(mailboxes.dir), silentLogger());
    } catch {
      // Search is an optimisation: `hearth reindex` can build it later.
    }
  }

  async added(folder: string): Promise<void> {
    if (this.#own && ++this.#since >= INDEX_EVERY) await this.folderDone(folder);
  }

  async folderDone(folder: string): Promise<void> {
    this.#since = 0;
    await this.#own?.catchUp(this.#mailboxes, folder);
  }

  async close(): Promise<void> {
    this.#own?.close();
    await userSearch(this.#mailboxes)?.idle();
  }
}

/** Open the user's mailboxes, ledger and search follower, run `work`, then close them. */
async function withTarget<T>(t: Target, work: (mailboxes: UserMailboxes, ledger: ImportLedger, search: SearchFollower) => Promise<T>): Promise<T> {
  const mailboxes = await t.mail.open(t.box);
  const ledger = await ImportLedger.open(mailboxes.dir);
  const search = new SearchFollower(mailboxes);
  try {
    return await work(mailboxes, ledger, search);
  } finally {
    await ledger.close();
    await search.close();
  }
}

/** Store one message unless the ledger has it; returns what happened. */
async function importOne(mailboxes: UserMailboxes, ledger: ImportLedger, folder: string, content: Buffer, flags: string[], internalDate: Date | undefined): Promise<'imported' | 'duplicate'> {
  const hash = ImportLedger.keyOf(content);
  if (ledger.has(folder, hash)) return 'duplicate';
  await mailboxes.append(folder, content, { flags, internalDate });
  ledger.record(folder, hash);
  return 'imported';
}

/**
 * Import an mbox file into one folder (created if missing). The file is read as a stream, one
 * message in memory at a time; messages over `maxBytes` count as broken.
 */
export async function importMbox(opts: Target & { file: string; folder?: string; quoting?: MboxQuoting; maxBytes?: number }): Promise<ImportResult> {
  const started = Date.now();
  const st = await fsp.stat(opts.file).catch((err: NodeJS.ErrnoException) => {
    throw new TransferError('IMPORT_NO_FILE', `cannot read ${opts.file}: ${err.code ?? err.message}`, { cause: err });
  });
  if (!st.isFile()) throw new TransferError('IMPORT_NO_FILE', `${opts.file} is not a file (for a Maildir, use \`hearth import maildir\`)`);
  const quoting = opts.quoting ?? 'mboxrd';
  return withTarget(opts, async (mailboxes, ledger, search) => {
    const folder = await ensureFolder(mailboxes, opts.folder ?? 'INBOX');
    const result: ImportResult = { imported: 0, duplicates: 0, broken: [], folders: [folder], bytes: st.size, ms: 0 };
    let done = 0;
    const report = () => opts.onProgress?.({ done, total: st.size, unit: 'bytes', imported: result.imported, duplicates: result.duplicates, broken: result.broken.length, folder });
    const stream = fs.createReadStream(opts.file, { highWaterMark: 256 * 1024 });
    try {
      for await (const raw of splitMbox(stream, { maxBytes: opts.maxBytes ?? IMPORT_MAX_MESSAGE_BYTES, onBytes: (n) => (done += n) })) {
        const where = `message ${raw.index} (byte ${raw.offset})`;
        const parsed = parseMboxMessage(raw, quoting);
        if (!parsed.ok) {
          result.broken.push({ where, reason: parsed.reason });
        } else {
          try {
            const outcome = await importOne(mailboxes, ledger, folder, parsed.content, parsed.flags, parsed.internalDate);
            if (outcome === 'imported') {
              result.imported++;
              await search.added(folder);
            } else result.duplicates++;
          } catch (err) {
            if ((err as { code?: string }).code === 'STORE_IO') throw err; // the disk, not the message
            result.broken.push({ where, reason: (err as Error).message });
          }
        }
        report();
      }
    } finally {
      stream.destroy();
    }
    await search.folderDone(folder);
    done = st.size;
    report();
    result.ms = Date.now() - started;
    return result;
  });
}

/** Maildir++ folders under `dir`: the root (if it is a Maildir) as '', `.A.B` as 'A/B'. */
async function maildirFolders(dir: string): Promise<Array<{ rel: string; path: string }>> {
  const isMaildir = async (p: string) => (await fsp.stat(path.join(p, 'cur')).catch(() => undefined))?.isDirectory() || (await fsp.stat(path.join(p, 'new')).catch(() => undefined))?.isDirectory();
  const out: Array<{ rel: string; path: string }> = [];
  if (await isMaildir(dir)) out.push({ rel: '', path: dir });
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
    if (!e.isDirectory() || !e.name.startsWith('.') || e.name === '.' || e.name === '..') continue;
    const p = path.join(dir, e.name);
    if (await isMaildir(p)) out.push({ rel: e.name.slice(1).split('.').join('/'), path: p });
  }
  return out;
}

/** Dovecot's `dovecot-keywords`: `<index> <keyword>` per line; letter a is index 0. */
async function readDovecotKeywords(dir: string): Promise<Map<string, string>> {
  const map = new Map<string, string>();
  const text = await fsp.readFile(path.join(dir, 'dovecot-keywords'), 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    const m = /^(\d+) (\S+)$/.exec(line.trim());
    if (m && Number(m[1]) < 26) map.set(String.fromCharCode(0x61 + Number(m[1])), m[2]);
  }
  return map;
}

const LETTER_FLAGS: Record<string, string> = { S: '\\Seen', R: '\\Answered', F: '\\Flagged', T: '\\Deleted', D: '\\Draft', P: '$Forwarded' };

/** IMAP flags from a Maildir file name's `:2,` info (and dovecot-keywords letters). */
export function flagsFromMaildirName(name: string, keywords: Map<string, string>): string[] {
  const colon = name.lastIndexOf(':');
  if (colon < 0 || !name.startsWith('2,', colon + 1)) return [];
  const flags: string[] = [];
  for (const ch of name.slice(colon + 3)) {
    const f = LETTER_FLAGS[ch] ?? keywords.get(ch);
    if (f && !flags.includes(f)) flags.push(f);
  }
  return flags;
}

/**
 * Import a Maildir (or a Maildir++ tree): its root into `folder` (default INBOX), each `.A.B`
 * subfolder into `A/B` (under `folder` when one is given), with flags, keywords and dates.
 */
export async function importMaildir(opts: Target & { dir: string; folder?: string; maxBytes?: number }): Promise<ImportResult> {
  const started = Date.now();
  const folders = await maildirFolders(opts.dir).catch((err: NodeJS.ErrnoException) => {
    throw new TransferError('IMPORT_NO_FILE', `cannot read ${opts.dir}: ${err.code ?? err.message}`, { cause: err });
  });
  if (folders.length === 0) throw new TransferError('IMPORT_NOT_MAILDIR', `${opts.dir} is not a Maildir (no cur/ or new/ in it or in any .Folder in it)`);
  const maxBytes = opts.maxBytes ?? IMPORT_MAX_MESSAGE_BYTES;
  const plan: Array<{ folder: string; files: Array<{ path: string; name: string }>; keywords: Map<string, string> }> = [];
  for (const f of folders) {
    const files: Array<{ path: string; name: string }> = [];
    for (const sub of ['cur', 'new']) {
      const names = await fsp.readdir(path.join(f.path, sub)).catch(() => [] as string[]);
      for (const name of names.sort()) if (!name.startsWith('.')) files.push({ path: path.join(f.path, sub, name), name });
    }
    const base = opts.folder && opts.folder.toUpperCase() !== 'INBOX' ? opts.folder : '';
    const folder = f.rel === '' ? (base || 'INBOX') : base ? `${base}/${f.rel}` : f.rel;
    plan.push({ folder, files, keywords: await readDovecotKeywords(f.path) });
  }
  const total = plan.reduce((n, p) => n + p.files.length, 0);
  return withTarget(opts, async (mailboxes, ledger, search) => {
    const result: ImportResult = { imported: 0, duplicates: 0, broken: [], folders: [], bytes: 0, ms: 0 };
    let done = 0;
    for (const p of plan) {
      const folder = await ensureFolder(mailboxes, p.folder);
      result.folders.push(folder);
      for (const file of p.files) {
        done++;
        try {
          const st = await fsp.stat(file.path);
          if (st.size > maxBytes) {
            result.broken.push({ where: file.path, reason: `too large (${st.size} bytes)` });
            continue;
          }
          const content = toCrlf(await fsp.readFile(file.path));
          result.bytes += st.size;
          const why = brokenReason(content);
          if (why) {
            result.broken.push({ where: file.path, reason: why });
            continue;
          }
          const outcome = await importOne(mailboxes, ledger, folder, content, flagsFromMaildirName(file.name, p.keywords), st.mtime);
          if (outcome === 'imported') {
            result.imported++;
            await search.added(folder);
          } else result.duplicates++;
        } catch (err) {
          const code = (err as { code?: string }).code;
          if (code === 'STORE_IO') throw err;
          // ENOENT: moved by its owner between listing and reading (a live Maildir); reported like the rest.
          result.broken.push({ where: file.path, reason: (err as Error).message });
        } finally {
          opts.onProgress?.({ done, total, unit: 'messages', imported: result.imported, duplicates: result.duplicates, broken: result.broken.length, folder });
        }
      }
      await search.folderDone(folder);
    }
    result.ms = Date.now() - started;
    return result;
  });
}
