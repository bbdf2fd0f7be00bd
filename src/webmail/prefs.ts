// "Always load images from this sender": a small JSON file per user beside their mailbox index
// (`hearth-webmail.json` in the user's maildir, which Maildir readers ignore: it is not a
// folder), owned by the webmail, written whole to a temporary file and renamed into place.
import fsp from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../core/log.ts';
import type { UserMailboxes } from '../store/mailboxes.ts';

const FILE = 'hearth-webmail.json';
const MAX_SENDERS = 10_000;

type Prefs = { remoteSenders: string[] };

export class RemotePrefs {
  readonly #log: Logger;
  readonly #cache = new WeakMap<UserMailboxes, Promise<Set<string>>>();
  #writes: Promise<unknown> = Promise.resolve();

  constructor(log: Logger) {
    this.#log = log;
  }

  #load(mb: UserMailboxes): Promise<Set<string>> {
    let p = this.#cache.get(mb);
    if (!p) {
      p = fsp
        .readFile(path.join(mb.dir, FILE), 'utf8')
        .then((text) => {
          const data = JSON.parse(text) as Partial<Prefs>;
          return new Set(Array.isArray(data.remoteSenders) ? data.remoteSenders.filter((s) => typeof s === 'string') : []);
        })
        .catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') this.#log.warn({ user: mb.box.user, err: err.message }, 'webmail preferences unreadable; starting empty');
          return new Set<string>();
        });
      this.#cache.set(mb, p);
    }
    return p;
  }

  async allowed(mb: UserMailboxes, sender: string): Promise<boolean> {
    return (await this.#load(mb)).has(sender.toLowerCase());
  }

  async set(mb: UserMailboxes, sender: string, allow: boolean): Promise<void> {
    const set = await this.#load(mb);
    const key = sender.toLowerCase();
    if (allow) {
      if (set.size >= MAX_SENDERS) throw Object.assign(new Error(`at most ${MAX_SENDERS} senders`), { status: 400 });
      set.add(key);
    } else set.delete(key);
    const body = JSON.stringify({ remoteSenders: [...set].sort() } satisfies Prefs, null, 1);
    const file = path.join(mb.dir, FILE);
    const write = this.#writes.then(async () => {
      const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
      await fsp.writeFile(tmp, body, { mode: 0o600 });
      await fsp.rename(tmp, file);
    });
    this.#writes = write.catch(() => undefined);
    await write;
  }
}
