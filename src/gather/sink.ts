// Where gathered mail goes: the local mailbox, through the same path as SMTP delivery: the
// message is made durable in the Maildir (MaildirStore.deliver: tmp/, fsync, link, directory
// fsync), then `notifyDelivered` brings the index up to date (UIDs, IMAP IDLE and webmail
// change events, the full-text index) once per batch rather than once per message. A trace
// header on top says where a message came from and lets crash recovery find what was delivered.
// Gathering never reads Maildir paths itself.
import { HearthError } from '../core/errors.ts';
import { parseMaildirName, splitFlags } from '../store/flags.ts';
import type { MailStore, UserMailboxes } from '../store/mailboxes.ts';
import type { MailboxRef } from '../store/maildir.ts';

export type DeliverOptions = {
  flags?: string[];
  internalDate?: Date;
  /** Straight to Junk (a sender-authentication verdict); the junk filter is not asked. */
  junk?: boolean;
};
export type Delivered = { key: string; folder: string };
export type TaggedFind = { tag: string; key: string; folder: string };

/** What the pull needs of the local side; tests may fake it. */
export interface GatherSink {
  /** Store one message durably in `folder` (created if missing) or, if the junk filter says so, Junk. */
  deliver(owner: MailboxRef, folder: string, raw: Buffer, opts: DeliverOptions): Promise<Delivered>;
  /** After a batch: index what was delivered (UIDs, IDLE, full text) and apply pending keywords. */
  flush(owner: MailboxRef): Promise<void>;
  /** Messages in `folders` delivered since `sinceMs` whose first header line is one of `tags`. */
  findTagged(owner: MailboxRef, folders: string[], sinceMs: number, tags: ReadonlySet<string>): Promise<TaggedFind[]>;
  /** The folder's messages by Maildir key, with their IMAP flags. */
  flagsByKey(owner: MailboxRef, folder: string): Promise<Map<string, string[]>>;
  setFlags(owner: MailboxRef, folder: string, key: string, flags: string[]): Promise<void>;
}

export const TAG_HEADER = 'X-Hearth-Gathered';
const TAG_PREFIX = Buffer.from(`${TAG_HEADER}: `);
const HEAD_BYTES = 2048;

export type StoreSinkOptions = {
  mail: MailStore;
  /** Score with the owner's junk filter; junk goes to `junkFolder` instead of the target. */
  junk?: { classify(box: MailboxRef, raw: Buffer): { junk: boolean } | undefined };
  junkFolder?: string;
};

export class StoreSink implements GatherSink {
  readonly #opts: StoreSinkOptions;

  constructor(opts: StoreSinkOptions) {
    this.#opts = opts;
  }

  /** Folders known to exist, per owner (created on first use). */
  readonly #folders = new Set<string>();
  /** Per owner: folders delivered to since the last flush, and keywords to set then. */
  readonly #pending = new Map<string, { box: MailboxRef; folders: Set<string>; keywords: Array<{ folder: string; key: string; keywords: string[] }> }>();

  async deliver(owner: MailboxRef, folder: string, raw: Buffer, opts: DeliverOptions): Promise<Delivered> {
    let dest = opts.junk ? (this.#opts.junkFolder ?? 'Junk') : folder;
    // Mail the person already filed (mirror) is not second-guessed; new mail is scored.
    if (!opts.junk && this.#opts.junk && !opts.flags?.length && folder.toUpperCase() === 'INBOX' && this.#opts.junk.classify(owner, raw)?.junk) dest = this.#opts.junkFolder ?? 'Junk';
    if (dest.toUpperCase() === 'INBOX') dest = 'INBOX';
    else await this.#ensureFolder(owner, dest);
    // Maildir holds system flags in the name; keywords live in the index and are set at flush.
    const { letters, keywords } = splitFlags((opts.flags ?? []).filter(storable));
    const [file] = await this.#opts.mail.maildir.deliver([{ ...owner, folder: dest === 'INBOX' ? undefined : dest }], raw, {
      flags: opts.flags?.length ? letters : undefined,
      mtime: opts.internalDate,
    });
    const key = parseMaildirName(file.name).key;
    const p = this.#pendingFor(owner);
    p.folders.add(dest);
    if (keywords.length) p.keywords.push({ folder: dest, key, keywords });
    return { key, folder: dest };
  }

  async flush(owner: MailboxRef): Promise<void> {
    const id = `${owner.user}@${owner.domain}`;
    const p = this.#pending.get(id);
    if (!p) return;
    this.#pending.delete(id);
    for (const folder of p.folders) await this.#opts.mail.notifyDelivered(owner, folder);
    if (p.keywords.length) {
      const user = await this.#opts.mail.open(owner);
      for (const k of p.keywords) {
        const rec = (await user.sync(k.folder)).messages.find((m) => m.key === k.key);
        if (rec) await user.setFlags(k.folder, [rec.uid], 'add', k.keywords);
      }
    }
  }

  #pendingFor(owner: MailboxRef) {
    const id = `${owner.user}@${owner.domain}`;
    let p = this.#pending.get(id);
    if (!p) this.#pending.set(id, (p = { box: owner, folders: new Set(), keywords: [] }));
    return p;
  }

  async #ensureFolder(owner: MailboxRef, folder: string): Promise<void> {
    const id = `${owner.user}@${owner.domain}/${folder}`;
    if (this.#folders.has(id)) return;
    const user = await this.#opts.mail.open(owner);
    await user.createFolder(folder).catch((e: HearthError) => {
      if (e.code !== 'STORE_FOLDER_EXISTS') throw e;
    });
    this.#folders.add(id);
  }

  async findTagged(owner: MailboxRef, folders: string[], sinceMs: number, tags: ReadonlySet<string>): Promise<TaggedFind[]> {
    const user = await this.#opts.mail.open(owner);
    const found: TaggedFind[] = [];
    // Maildir keys begin with the delivery second; a little slack for clock granularity.
    const since = Math.floor(sinceMs / 1000) - 2;
    for (const folder of new Set(folders)) {
      let state;
      try {
        state = await user.sync(folder);
      } catch (err) {
        if ((err as HearthError).code === 'STORE_NO_FOLDER') continue;
        throw err;
      }
      for (const rec of state.messages) {
        const secs = Number.parseInt(rec.key, 10);
        if (Number.isFinite(secs) && secs < since) continue;
        const head = await readHead(user, folder, rec.uid);
        if (!head || !head.subarray(0, TAG_PREFIX.length).equals(TAG_PREFIX)) continue;
        const eol = head.indexOf('\r\n');
        const tag = head.subarray(TAG_PREFIX.length, eol < 0 ? head.length : eol).toString('utf8');
        if (tags.has(tag)) found.push({ tag, key: rec.key, folder });
      }
    }
    return found;
  }

  async flagsByKey(owner: MailboxRef, folder: string): Promise<Map<string, string[]>> {
    const user = await this.#opts.mail.open(owner);
    const state = await user.sync(folder);
    return new Map(state.messages.map((m) => [m.key, m.flags]));
  }

  async setFlags(owner: MailboxRef, folder: string, key: string, flags: string[]): Promise<void> {
    const user = await this.#opts.mail.open(owner);
    const rec = (await user.sync(folder)).messages.find((m) => m.key === key);
    if (rec) await user.setFlags(folder, [rec.uid], 'replace', flags);
  }
}

/** A flag the store accepts (a remote may have keywords we cannot keep: they are dropped). */
function storable(flag: string): boolean {
  try {
    splitFlags([flag]);
    return true;
  } catch {
    return false;
  }
}

async function readHead(user: UserMailboxes, folder: string, uid: number): Promise<Buffer | undefined> {
  const stream = await user.openMessage(folder, uid);
  if (!stream) return undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= HEAD_BYTES) break;
    }
  } finally {
    stream.destroy();
  }
  return Buffer.concat(chunks).subarray(0, HEAD_BYTES);
}

/**
 * The lines put on top of a gathered message: the tag (first, so recovery reads one line) and a
 * Received header (RFC 5321 4.4 style) naming the source, so the message's path stays visible.
 */
export function traceHeaders(tag: string, opts: { protocol: 'IMAP' | 'POP3'; remoteHost: string; hostname: string; accountId: string; now?: Date }): Buffer {
  const date = (opts.now ?? new Date()).toUTCString().replace(/GMT$/, '+0000');
  const host = opts.remoteHost.replace(/[^A-Za-z0-9.:[\]-]/g, '');
  return Buffer.from(`${TAG_HEADER}: ${tag}\r\nReceived: from ${host} by ${opts.hostname} with ${opts.protocol} (hearth gather ${opts.accountId}); ${date}\r\n`, 'utf8');
}

export class SinkError extends HearthError {}
