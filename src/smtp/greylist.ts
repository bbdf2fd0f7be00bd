// Greylisting for inbound SMTP: the first time a (client network, sender, recipient) triplet is
// seen, RCPT gets a temporary 451 4.7.1; a real MTA retries later and is then accepted, while
// much spam software never retries. Once a message for a triplet is delivered, the triplet is
// whitelisted until it has been unused for `expireMs`. Clients are grouped by /24 (IPv4) and
// /64 (IPv6) because big senders retry from another host of the same pool.
//
// The state is one small JSON file in the data folder, written atomically (temp file, fsync,
// rename) after each change; writes are coalesced so a burst costs one write at a time.
import { readFileSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from '../core/log.ts';
import { networkKey } from './client-address.ts';

export type GreylistOptions = {
  file: string;
  /** How long a new triplet must wait before a retry is accepted. */
  delayMs: number;
  /** A triplet not retried within this time is forgotten (and greylisted again if it comes back). */
  retryWindowMs: number;
  /** A whitelisted triplet unused for this long is forgotten. */
  expireMs: number;
  log: Logger;
  clock?: () => number;
  /** Bound on entries kept, so a spam run cannot grow the file without limit. */
  maxEntries?: number;
};

type Entry = { first: number; last: number; passed: boolean };
export type GreylistVerdict = { ok: true; key: string } | { ok: false; key: string; retryInMs: number };

type FileShape = { version: 1; entries: Array<[key: string, first: number, last: number, passed: 0 | 1]> };

export class Greylist {
  readonly #opts: GreylistOptions;
  readonly #clock: () => number;
  readonly #entries = new Map<string, Entry>();
  #saving: Promise<void> | undefined;
  #dirty = false;

  constructor(opts: GreylistOptions) {
    this.#opts = opts;
    this.#clock = opts.clock ?? Date.now;
    this.#load();
  }

  static key(ip: string, sender: string, recipient: string): string {
    return `${networkKey(ip, 24)} ${sender.toLowerCase()} ${recipient.toLowerCase()}`;
  }

  /** Called at RCPT: may this triplet pass now? */
  check(ip: string, sender: string, recipient: string): GreylistVerdict {
    const key = Greylist.key(ip, sender, recipient);
    const now = this.#clock();
    let e = this.#entries.get(key);
    if (e && !this.#alive(e, now)) {
      this.#entries.delete(key);
      e = undefined;
    }
    if (!e) {
      this.#entries.set(key, { first: now, last: now, passed: false });
      this.#changed();
      return { ok: false, key, retryInMs: this.#opts.delayMs };
    }
    if (e.passed) return { ok: true, key };
    const waited = now - e.first;
    if (waited < this.#opts.delayMs) return { ok: false, key, retryInMs: this.#opts.delayMs - waited };
    return { ok: true, key };
  }

  /** After a delivery: whitelist these triplets (and refresh their expiry). */
  confirm(keys: string[]): void {
    const now = this.#clock();
    let changed = false;
    for (const key of keys) {
      const e = this.#entries.get(key);
      if (!e) continue;
      // Refresh on disk at most once an hour for triplets already passed: a busy correspondent
      // must not cause a write per message.
      if (e.passed && now - e.last < 3_600_000) continue;
      e.passed = true;
      e.last = now;
      changed = true;
    }
    if (changed) this.#changed();
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Wait for pending writes (shutdown). */
  async flush(): Promise<void> {
    while (this.#saving) await this.#saving;
  }

  #alive(e: Entry, now: number): boolean {
    return e.passed ? now - e.last <= this.#opts.expireMs : now - e.first <= this.#opts.retryWindowMs;
  }

  #load(): void {
    let text: string;
    try {
      text = readFileSync(this.#opts.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.#opts.log.warn({ file: this.#opts.file, err: (err as Error).message }, 'cannot read greylist state; starting empty');
      return;
    }
    try {
      const data = JSON.parse(text) as FileShape;
      const now = this.#clock();
      for (const [key, first, last, passed] of data.entries ?? []) {
        const e = { first, last, passed: passed === 1 };
        if (typeof key === 'string' && this.#alive(e, now)) this.#entries.set(key, e);
      }
    } catch (err) {
      this.#opts.log.warn({ file: this.#opts.file, err: (err as Error).message }, 'greylist state is damaged; starting empty');
    }
  }

  #changed(): void {
    this.#dirty = true;
    if (this.#saving) return;
    this.#saving = (async () => {
      while (this.#dirty) {
        this.#dirty = false;
        try {
          await this.#write();
        } catch (err) {
          this.#opts.log.error({ file: this.#opts.file, err: (err as Error).message }, 'cannot save greylist state');
        }
      }
    })().finally(() => (this.#saving = undefined));
  }

  async #write(): Promise<void> {
    const now = this.#clock();
    for (const [key, e] of this.#entries) if (!this.#alive(e, now)) this.#entries.delete(key);
    const max = this.#opts.maxEntries ?? 100_000;
    if (this.#entries.size > max) {
      // Drop the oldest pending triplets first: they are the spam run that never retried.
      const pending = [...this.#entries].filter(([, e]) => !e.passed).sort((a, b) => a[1].first - b[1].first);
      for (const [key] of pending.slice(0, this.#entries.size - max)) this.#entries.delete(key);
    }
    const data: FileShape = { version: 1, entries: [...this.#entries].map(([k, e]) => [k, e.first, e.last, e.passed ? 1 : 0]) };
    const tmp = `${this.#opts.file}.${process.pid}.tmp`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(data));
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await rename(tmp, this.#opts.file);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    await syncDir(this.#opts.file);
  }
}

/** fsync the folder so the rename itself survives a crash. Best effort. */
async function syncDir(file: string): Promise<void> {
  try {
    const fh = await open(dirname(file), 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // Some file systems refuse fsync on a folder; the file itself is already synced.
  }
}
