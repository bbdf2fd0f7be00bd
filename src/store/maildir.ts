// The Maildir++ store is in charge of mail at rest: where each mailbox and folder lives on disk,
// delivering a message into one or more of them durably (the qmail tmp/ -> new/ protocol, DESIGN
// invariant 1), listing what a folder holds, and sweeping stale tmp/ files. It knows nothing of
// SMTP, IMAP or POP3: it deals in mailboxes, folders, flags and files, and it is the only code
// that touches paths under the data root.
//
// Layout (readable by mutt and Dovecot):
//   <root>/<domain>/<user>/{cur,new,tmp}            INBOX
//   <root>/<domain>/<user>/.Sent/{cur,new,tmp}      folder "Sent" (+ empty `maildirfolder` file)
//   <root>/<domain>/<user>/.Lists.foo/...           folder "Lists/foo"
// File names: <secs>.M<usec>P<pid>Q<counter>R<random hex>.<host>,S=<size>,W=<crlf size>[:2,<flags>]
// S= is the file's size; W= is Dovecot's "virtual size", the size with every line ending as CRLF
// (what IMAP RFC822.SIZE and POP3 LIST report, RFC 3501 2.3.4, RFC 1939 5), counted while the
// file is written so no reader ever has to parse a message just to know its size.
import { errText } from '../core/errors.ts';
import { GroupCommit } from '../core/group-commit.ts';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { named, silentLogger } from '../core/log.ts';
import type { Logger } from '../core/log.ts';
import { nodeStoreIo } from './io.ts';
import type { StoreIo } from './io.ts';
import { StoreError, assertSafeName, escapeHostname, folderDirName, isInbox, normalizeFlags } from './names.ts';

export { StoreError, assertSafeName } from './names.ts';
export type { StoreErrorCode } from './names.ts';
export { nodeStoreIo } from './io.ts';
export type { StoreIo } from './io.ts';

export type MailboxRef = { user: string; domain: string };
export type DeliveryTarget = MailboxRef & { folder?: string };
/** `size`: bytes of the file; `vsize`: bytes with every bare LF counted as CRLF (the name's W=). */
export type DeliveredFile = { target: DeliveryTarget; path: string; name: string; size: number; vsize: number };
/** `vsize` is the name's W= (null for files other programs wrote without one). */
export type MessageEntry = { name: string; path: string; dir: 'new' | 'cur'; size: number; vsize: number | null; flags: string };
export type DeliverOptions = { flags?: string; signal?: AbortSignal; mtime?: Date };
export type StoreOptions = { root: string; hostname?: string; fsync?: boolean; log?: Logger; io?: Partial<StoreIo>; clock?: () => number };

/** Created with the INBOX, as most clients expect them (RFC 6154 roles). */
export const SPECIAL_FOLDERS = ['Sent', 'Drafts', 'Trash', 'Junk', 'Archive'] as const;

/** The Maildir spec's rule: a tmp/ file untouched for 36 hours is debris from a failed delivery. */
export const TMP_MAX_AGE_MS = 36 * 3600 * 1000;

// Small chunks from a socket are gathered up to this size before one write(2).
const WRITE_BATCH_BYTES = 64 * 1024;

// Per process, not per store, so two stores in one process never share a Q number.
let deliveryCounter = 0;

type Resolved = { target: Required<DeliveryTarget>; dir: string; inboxDir: string; isSub: boolean };

const noop = (): void => {};
const errCode = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;

/** `,S=<size>,W=<vsize>`, the size fields of a Maildir name as Dovecot writes them. */
export function sizeFields(size: number, vsize: number | null): string {
  return vsize === null ? `,S=${size}` : `,S=${size},W=${vsize}`;
}

/**
 * S= and W= from a Maildir name (or base name), each null when absent. Fields follow the host
 * part, comma-separated (Dovecot's maildir-filename.c); the info after `:` is not looked at.
 */
export function sizesFromName(name: string): { size: number | null; vsize: number | null } {
  const colon = name.indexOf(':');
  const base = colon < 0 ? name : name.slice(0, colon);
  let size: number | null = null;
  let vsize: number | null = null;
  for (let comma = base.indexOf(','); comma >= 0; comma = base.indexOf(',', comma + 1)) {
    const tag = base.charCodeAt(comma + 1);
    // 0x53 'S', 0x57 'W', 0x3d '='
    if ((tag !== 0x53 && tag !== 0x57) || base.charCodeAt(comma + 2) !== 0x3d) continue;
    const end = base.indexOf(',', comma + 3);
    const digits = base.slice(comma + 3, end < 0 ? base.length : end);
    if (!/^\d{1,15}$/.test(digits)) continue;
    if (tag === 0x53) size = Number(digits);
    else vsize = Number(digits);
  }
  return { size, vsize };
}

/**
 * Counts LFs without a CR before them, chunk by chunk (a CRLF may be split between chunks): each
 * adds one octet to the CRLF form. The same rule as the IMAP summary's `bareLf`.
 */
export class BareLfCounter {
  #lastWasCR = false;
  /** Bare LFs in this chunk. */
  push(chunk: Uint8Array): number {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let bare = 0;
    for (let i = buf.indexOf(0x0a); i >= 0; i = buf.indexOf(0x0a, i + 1)) {
      if (i === 0 ? !this.#lastWasCR : buf[i - 1] !== 0x0d) bare++;
    }
    if (buf.length > 0) this.#lastWasCR = buf[buf.length - 1] === 0x0d;
    return bare;
  }
}

/**
 * The size of a file with every bare LF counted as CRLF (what POP3 RETR and IMAP send), read
 * once in chunks: for files other programs put in the Maildir without a W= in their name.
 * Null if the file is gone.
 */
export async function crlfSizeOfFile(file: string): Promise<number | null> {
  const counter = new BareLfCounter();
  let size = 0;
  let bare = 0;
  try {
    for await (const chunk of fs.createReadStream(file, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>) {
      size += chunk.byteLength;
      bare += counter.push(chunk);
    }
  } catch (err) {
    if (errCode(err) === 'ENOENT') return null;
    throw new StoreError('STORE_IO', `cannot read ${file}: ${errText(err)}`, { cause: err });
  }
  return size + bare;
}

function abortError(signal: AbortSignal): StoreError {
  return new StoreError('STORE_ABORTED', 'delivery aborted', { cause: signal.reason });
}

export class MaildirStore {
  readonly root: string;
  readonly #host: string;
  readonly #fsync: boolean;
  readonly #log: Logger;
  readonly #io: StoreIo;
  readonly #clock: () => number;
  /** Maildirs known to exist with cur/new/tmp: the fast path skips mkdir entirely. */
  readonly #ready = new Set<string>();
  readonly #creating = new Map<string, Promise<void>>();
  readonly #dirSyncs = new GroupCommit((dir) => this.#fsyncDirNow(dir));

  constructor(opts: StoreOptions) {
    this.root = path.resolve(opts.root);
    this.#host = escapeHostname(opts.hostname ?? os.hostname());
    this.#fsync = opts.fsync ?? true;
    this.#log = named(opts.log ?? silentLogger(), 'store');
    this.#io = { ...nodeStoreIo, ...opts.io };
    this.#clock = opts.clock ?? Date.now;
  }

  /** Where a folder lives. Names are lower-cased (user, domain) and checked; throws STORE_BAD_NAME. */
  maildirPath(box: MailboxRef, folder?: string): string {
    return this.#resolve({ ...box, folder }).dir;
  }

  /**
   * Create the folder's maildir if missing (cur/ new/ tmp/, plus `maildirfolder` for a Maildir++
   * subfolder) and return its path. The INBOX is always created first, and with it the special
   * folders, so a new mailbox looks the same to every client.
   */
  async ensureMaildir(box: MailboxRef, folder?: string): Promise<string> {
    const r = this.#resolve({ ...box, folder });
    await this.#ensureResolved(r);
    return r.dir;
  }

  /**
   * Deliver one message to every target: one write to tmp/ of the first target, fsync, a hard link
   * into new/ (or cur/ with `:2,<flags>` when `flags` is given) of each, an fsync of each
   * destination directory, then the tmp/ file is removed. Resolves only once the message is
   * durable everywhere; on any failure no link made by this call stays and the tmp file is gone.
   * Returns one entry per target, in order (duplicate targets share the one file).
   *
   * Throws StoreError: STORE_BAD_NAME (nothing touched), STORE_ABORTED (signal, or `content`
   * threw: that error is the `cause`), STORE_IO (file system fault: the errno error is the `cause`).
   */
  async deliver(targets: DeliveryTarget[], content: Uint8Array | string | AsyncIterable<Uint8Array>, opts: DeliverOptions = {}): Promise<DeliveredFile[]> {
    if (targets.length === 0) throw new TypeError('deliver() needs at least one target');
    const resolved = targets.map((t) => this.#resolve(t));
    const flags = opts.flags === undefined ? undefined : normalizeFlags(opts.flags);
    const sub = flags === undefined ? 'new' : 'cur';
    const info = flags === undefined ? '' : `:2,${flags}`;
    const distinct = [...new Map(resolved.map((r) => [r.dir, r])).values()];
    const { signal, mtime } = opts;

    let tmpPath: string | undefined;
    const links: string[] = [];
    const copies: string[] = [];
    let name = '';
    let size = 0;
    let vsize = 0;
    try {
      if (signal?.aborted) throw abortError(signal);
      for (const r of distinct) if (!this.#ready.has(r.dir)) await this.#ensureResolved(r);

      const base = this.#uniqueName();
      const first = distinct[0];
      const candidate = path.join(first.dir, 'tmp', base);
      const fd = await this.#retryIfVanished(first, () => this.#io.open(candidate, 'wx', 0o600));
      tmpPath = candidate;
      try {
        ({ size, vsize } = await this.#writeContent(fd, content, signal));
        if (mtime) await this.#io.futimes(fd, mtime, mtime);
        if (this.#fsync) await this.#io.fsync(fd);
      } catch (err) {
        await this.#io.close(fd).catch(noop);
        throw err;
      }
      await this.#io.close(fd);
      if (signal?.aborted) throw abortError(signal);

      // Past this point the content is durable in tmp/; only linking and directory syncs remain.
      name = `${base}${sizeFields(size, vsize)}${info}`;
      for (const r of distinct) {
        const dest = path.join(r.dir, sub, name);
        await this.#linkInto(tmpPath, dest, r, mtime, copies);
        links.push(dest);
      }
      if (this.#fsync) await Promise.all(distinct.map((r) => this.#syncDir(path.join(r.dir, sub))));
    } catch (err) {
      await this.#removeAll([...links, ...copies, ...(tmpPath ? [tmpPath] : [])]);
      const failure =
        err instanceof StoreError ? err : new StoreError('STORE_IO', `delivery failed: ${errText(err)}`, { cause: err });
      this.#log.warn({ code: failure.code, cause: errText(failure.cause), targets: resolved.length }, 'delivery rolled back');
      throw failure;
    }

    // Delivered: a tmp/ file left behind is harmless (cleanTmp removes it), so this cannot fail the delivery.
    await this.#io.unlink(tmpPath).catch((err: unknown) => this.#log.warn({ path: tmpPath, err: errText(err) }, 'tmp file not removed'));
    this.#log.debug({ name, size, targets: distinct.length }, 'delivered');
    return resolved.map((r) => ({ target: r.target, path: path.join(r.dir, sub, name), name, size, vsize }));
  }

  /** Whether this store fsyncs files and directories (the `fsync` option, default on). */
  get fsyncEnabled(): boolean {
    return this.#fsync;
  }

  /**
   * fsync a directory under the root (group-committed with concurrent callers), or do nothing when
   * the store runs without fsync. For the mailbox index's renames and links (flag changes, COPY).
   */
  async syncDirectory(dir: string): Promise<void> {
    if (!this.#fsync) return;
    try {
      await this.#syncDir(dir);
    } catch (err) {
      throw new StoreError('STORE_IO', `cannot sync ${dir}: ${errText(err)}`, { cause: err });
    }
  }

  /** A fresh, unique Maildir base name (no `,S=`/`,W=` and no `:2,` info), as `deliver` makes them. */
  newBaseName(): string {
    return this.#uniqueName();
  }

  /**
   * Forget that a folder's maildir exists (after it was deleted or renamed), so the next
   * `ensureMaildir` or `deliver` creates it again instead of trusting the cache.
   */
  forgetMaildir(box: MailboxRef, folder?: string): void {
    const r = this.#resolve({ ...box, folder });
    this.#ready.delete(r.dir);
    if (!r.isSub) this.#ready.delete(r.inboxDir);
  }

  /** Messages in a folder's new/ and cur/, sorted by name (delivery order). Missing folder: []. */
  async listMessages(box: MailboxRef, folder?: string): Promise<MessageEntry[]> {
    const dir = this.maildirPath(box, folder);
    const out: MessageEntry[] = [];
    for (const sub of ['new', 'cur'] as const) {
      const names = await this.#readdir(path.join(dir, sub));
      const entries = await Promise.all(
        names.filter((n) => !n.startsWith('.')).map(async (name): Promise<MessageEntry | undefined> => {
          const file = path.join(dir, sub, name);
          const colon = name.indexOf(':');
          const base = colon < 0 ? name : name.slice(0, colon);
          const flags = colon >= 0 && name.startsWith('2,', colon + 1) ? name.slice(colon + 3) : '';
          const sizes = sizesFromName(base);
          let size = sizes.size ?? -1;
          if (size < 0) {
            try {
              size = (await fsp.stat(file)).size;
            } catch (err) {
              if (errCode(err) === 'ENOENT') return undefined; // moved or expunged while we looked
              throw new StoreError('STORE_IO', `cannot stat ${file}: ${errText(err)}`, { cause: err });
            }
          }
          return { name, path: file, dir: sub, size, vsize: sizes.vsize, flags };
        }),
      );
      for (const e of entries) if (e) out.push(e);
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * Remove tmp/ files older than `olderThanMs` (default 36 h) in every maildir under the root;
   * returns how many. Age is the newer of mtime and ctime, so a delivery in progress that set an
   * old mtime (an import) is not mistaken for debris: setting mtime refreshes ctime.
   */
  async cleanTmp(olderThanMs: number = TMP_MAX_AGE_MS): Promise<number> {
    const cutoff = this.#clock() - olderThanMs;
    let removed = 0;
    for (const domain of await this.#readdir(this.root)) {
      if (domain.startsWith('.')) continue;
      const domainDir = path.join(this.root, domain);
      for (const user of await this.#readdir(domainDir)) {
        if (user.startsWith('.')) continue;
        const userDir = path.join(domainDir, user);
        const folders = (await this.#readdir(userDir)).filter((n) => n.startsWith('.') && n !== '.' && n !== '..');
        for (const maildir of [userDir, ...folders.map((f) => path.join(userDir, f))]) {
          const tmpDir = path.join(maildir, 'tmp');
          for (const file of await this.#readdir(tmpDir)) {
            const full = path.join(tmpDir, file);
            try {
              const st = await fsp.lstat(full);
              if (!st.isFile() || Math.max(st.mtimeMs, st.ctimeMs) >= cutoff) continue;
              await this.#io.unlink(full);
              removed++;
            } catch (err) {
              if (errCode(err) !== 'ENOENT') throw new StoreError('STORE_IO', `cannot clean ${full}: ${errText(err)}`, { cause: err });
            }
          }
        }
      }
    }
    if (removed > 0) this.#log.info({ removed }, 'stale tmp files removed');
    return removed;
  }

  // --- names and paths ---

  #resolve(t: DeliveryTarget): Resolved {
    const user = typeof t.user === 'string' ? t.user.toLowerCase() : t.user;
    const domain = typeof t.domain === 'string' ? t.domain.toLowerCase() : t.domain;
    assertSafeName('user', user);
    assertSafeName('domain', domain);
    const inboxDir = path.join(this.root, domain, user);
    if (isInbox(t.folder)) return { target: { user, domain, folder: 'INBOX' }, dir: inboxDir, inboxDir, isSub: false };
    const folder = t.folder as string;
    assertSafeName('folder', folder);
    const dir = path.join(inboxDir, folderDirName(folder));
    // Belt and braces: the checks above make this impossible, and it must stay impossible.
    if (!dir.startsWith(this.root + path.sep)) throw new StoreError('STORE_BAD_NAME', `path escapes the store: ${JSON.stringify(folder)}`);
    return { target: { user, domain, folder }, dir, inboxDir, isSub: true };
  }

  #uniqueName(): string {
    const now = this.#clock();
    const secs = Math.floor(now / 1000);
    const usec = Math.floor((now - secs * 1000) * 1000);
    deliveryCounter++;
    return `${secs}.M${usec}P${process.pid}Q${deliveryCounter}R${randomBytes(8).toString('hex')}.${this.#host}`;
  }

  // --- creating maildirs ---

  async #ensureResolved(r: Resolved): Promise<void> {
    if (this.#ready.has(r.dir)) return;
    if (!this.#ready.has(r.inboxDir)) {
      await this.#once(r.inboxDir, async () => {
        await this.#createMaildir(r.inboxDir, false);
        await Promise.all(SPECIAL_FOLDERS.map((f) => this.#ensureDir(path.join(r.inboxDir, folderDirName(f)), true)));
      });
    }
    if (r.isSub) await this.#ensureDir(r.dir, true);
  }

  #ensureDir(dir: string, isSub: boolean): Promise<void> {
    if (this.#ready.has(dir)) return Promise.resolve();
    return this.#once(dir, () => this.#createMaildir(dir, isSub));
  }

  /** Concurrent first deliveries to a new mailbox share one creation. */
  #once(key: string, create: () => Promise<void>): Promise<void> {
    const running = this.#creating.get(key);
    if (running) return running;
    const p = create()
      .then(() => {
        this.#ready.add(key);
      })
      .finally(() => this.#creating.delete(key));
    this.#creating.set(key, p);
    return p;
  }

  async #createMaildir(dir: string, isSub: boolean): Promise<void> {
    try {
      const firstCreated = await this.#io.mkdir(dir);
      const subs = await Promise.all(['cur', 'new', 'tmp'].map((s) => this.#io.mkdir(path.join(dir, s))));
      const created = firstCreated !== undefined || subs.some((s) => s !== undefined);
      if (isSub) {
        // Maildir++: marks a folder, so a Courier/Dovecot delivery agent knows it is not a root.
        const fd = await this.#io.open(path.join(dir, 'maildirfolder'), 'a', 0o600);
        await this.#io.close(fd);
      }
      if (!created) return;
      if (this.#fsync) {
        // New directory entries are only durable once their parents are synced, up to the root.
        const toSync = [dir];
        for (let d = path.dirname(dir); d.length >= this.root.length && d !== path.dirname(d); d = path.dirname(d)) toSync.push(d);
        if (firstCreated !== undefined && !firstCreated.startsWith(this.root + path.sep)) toSync.push(path.dirname(this.root));
        await Promise.all(toSync.map((d) => this.#syncDir(d)));
      }
      this.#log.info({ dir }, 'maildir created');
    } catch (err) {
      throw new StoreError('STORE_IO', `cannot create maildir ${dir}: ${errText(err)}`, { cause: err });
    }
  }

  /** Run `op`; if it fails with ENOENT because a cached maildir was removed behind our back, recreate it once. */
  async #retryIfVanished<T>(r: Resolved, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (errCode(err) !== 'ENOENT') throw err;
      this.#ready.delete(r.dir);
      this.#ready.delete(r.inboxDir);
      await this.#ensureResolved(r);
      return op();
    }
  }

  // --- delivery steps ---

  async #writeContent(fd: number, content: Uint8Array | string | AsyncIterable<Uint8Array>, signal: AbortSignal | undefined): Promise<{ size: number; vsize: number }> {
    if (typeof content === 'string') content = Buffer.from(content, 'utf8');
    if (content instanceof Uint8Array) {
      await this.#writeAll(fd, content);
      return { size: content.byteLength, vsize: content.byteLength + new BareLfCounter().push(content) };
    }
    const it = content[Symbol.asyncIterator]();
    let finished = false;
    let onAbort: (() => void) | undefined;
    // A stalled source must not hold the delivery past an abort: race each next() with the signal.
    const aborted = signal
      ? new Promise<never>((_, reject) => {
          onAbort = () => reject(abortError(signal));
          signal.addEventListener('abort', onAbort, { once: true });
        })
      : undefined;
    aborted?.catch(noop);
    const pending: Uint8Array[] = [];
    let pendingBytes = 0;
    let size = 0;
    const bareLf = new BareLfCounter();
    let bare = 0;
    try {
      for (;;) {
        if (signal?.aborted) throw abortError(signal);
        let step: IteratorResult<Uint8Array>;
        try {
          const next = it.next();
          step = aborted ? await Promise.race([next, aborted]) : await next;
        } catch (err) {
          if (err instanceof StoreError) throw err;
          finished = true; // a source that threw is done; return() is not needed
          throw new StoreError('STORE_ABORTED', `message content failed: ${errText(err)}`, { cause: err });
        }
        if (step.done) {
          finished = true;
          break;
        }
        const chunk: Uint8Array = typeof step.value === 'string' ? Buffer.from(step.value, 'utf8') : step.value;
        size += chunk.byteLength;
        bare += bareLf.push(chunk);
        pending.push(chunk);
        pendingBytes += chunk.byteLength;
        if (pendingBytes >= WRITE_BATCH_BYTES) {
          await this.#writeAll(fd, pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes));
          pending.length = 0;
          pendingBytes = 0;
        }
      }
      if (pendingBytes > 0) await this.#writeAll(fd, pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes));
      return { size, vsize: size + bare };
    } finally {
      if (onAbort) signal?.removeEventListener('abort', onAbort);
      // Let the source release its resources; don't wait, it may be stuck in a read.
      if (!finished) Promise.resolve(it.return?.()).catch(noop);
    }
  }

  async #writeAll(fd: number, data: Uint8Array): Promise<void> {
    for (let offset = 0; offset < data.byteLength; ) {
      const n = await this.#io.write(fd, data, offset, data.byteLength - offset);
      if (n <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
      offset += n;
    }
  }

  /** Hard link into place; across filesystems (EXDEV) copy into that maildir's tmp/, sync, rename. */
  async #linkInto(tmpPath: string, dest: string, r: Resolved, mtime: Date | undefined, copies: string[]): Promise<void> {
    try {
      await this.#retryIfVanished(r, () => this.#io.link(tmpPath, dest));
      return;
    } catch (err) {
      if (errCode(err) !== 'EXDEV') throw err;
    }
    const copy = path.join(r.dir, 'tmp', this.#uniqueName());
    copies.push(copy);
    await this.#io.copyFile(tmpPath, copy);
    const fd = await this.#io.open(copy, 'r');
    try {
      if (mtime) await this.#io.futimes(fd, mtime, mtime);
      if (this.#fsync) await this.#io.fsync(fd);
    } finally {
      await this.#io.close(fd);
    }
    await this.#io.rename(copy, dest);
    copies.splice(copies.indexOf(copy), 1);
  }

  /** fsync a directory, group-commit style (see core/group-commit.ts). */
  #syncDir(dir: string): Promise<void> {
    return this.#dirSyncs.sync(dir);
  }

  async #fsyncDirNow(dir: string): Promise<void> {
    const fd = await this.#io.open(dir, 'r');
    try {
      await this.#io.fsync(fd);
    } finally {
      await this.#io.close(fd).catch(noop);
    }
  }

  async #removeAll(paths: string[]): Promise<void> {
    await Promise.all(
      paths.map((p) =>
        this.#io.unlink(p).catch((err: unknown) => {
          if (errCode(err) !== 'ENOENT') this.#log.error({ path: p, err: errText(err) }, 'rollback could not remove file');
        }),
      ),
    );
  }

  async #readdir(dir: string): Promise<string[]> {
    try {
      return await fsp.readdir(dir);
    } catch (err) {
      if (errCode(err) === 'ENOENT' || errCode(err) === 'ENOTDIR') return [];
      throw new StoreError('STORE_IO', `cannot read ${dir}: ${errText(err)}`, { cause: err });
    }
  }
}
