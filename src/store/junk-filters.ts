// Every user's junk filter in one place: opened lazily beside the user's Maildir, asked by
// the delivery path (INBOX or Junk?), and taught by what the user does: a message moved into
// Junk is spam, one moved out of Junk is ham, and the $Junk/$NotJunk keywords say the same
// (trainingFor decides). The filter never learns from its own verdicts.
import type { Logger } from '../core/log.ts';
import { JunkFilter, trainingFor } from './junk.ts';
import type { JunkVerdict } from './junk.ts';
import type { MaildirStore, MailboxRef } from './maildir.ts';
import type { ChangeEvent, MessageRecord, UserMailboxes } from './mailboxes.ts';

/** How much of a big message the filter reads: headers and the start of the body decide. */
const CLASSIFY_BYTES = 256 * 1024;

export class JunkFilters {
  readonly #maildir: MaildirStore;
  readonly #log: Logger;
  readonly #threshold: number | undefined;
  readonly #filters = new Map<string, JunkFilter>();

  constructor(opts: { maildir: MaildirStore; log: Logger; threshold?: number }) {
    this.#maildir = opts.maildir;
    this.#log = opts.log;
    this.#threshold = opts.threshold;
  }

  #filter(box: MailboxRef): JunkFilter {
    const key = `${box.user}@${box.domain}`;
    let f = this.#filters.get(key);
    if (!f) {
      f = JunkFilter.open(JunkFilter.pathFor(this.#maildir.maildirPath(box)), { log: this.#log.child({ user: key }), threshold: this.#threshold });
      this.#filters.set(key, f);
    }
    return f;
  }

  /** The filter's verdict for a user, or undefined when it cannot say (a bug is logged, mail goes to INBOX). */
  classify(box: MailboxRef, raw: Buffer): JunkVerdict | undefined {
    try {
      return this.#filter(box).classify(raw.length > CLASSIFY_BYTES ? raw.subarray(0, CLASSIFY_BYTES) : raw);
    } catch (err) {
      this.#log.error({ err, user: `${box.user}@${box.domain}` }, 'junk filter failed; delivering to INBOX');
      return undefined;
    }
  }

  /** Learn from this user's moves and keywords. Returns the function that stops listening. */
  attach(user: UserMailboxes): () => void {
    const onChange = (ev: ChangeEvent) => void this.#learn(user, ev);
    user.on('change', onChange);
    return () => user.off('change', onChange);
  }

  async #learn(user: UserMailboxes, ev: ChangeEvent): Promise<void> {
    if (ev.kind === 'added' && ev.from?.how === 'move') {
      const ops = trainingFor({ kind: 'moved', from: ev.from.folder, to: ev.folder });
      if (ops.length > 0) await this.#apply(user, ev.folder, ev.records, () => ops);
    } else if (ev.kind === 'flags') {
      const keyed = ev.records.filter((r) => r.flags.includes('$Junk') || r.flags.includes('$NotJunk'));
      if (keyed.length > 0) {
        await this.#apply(user, ev.folder, keyed, (r) => trainingFor({ kind: 'keyword', added: r.flags.filter((f) => f === '$Junk' || f === '$NotJunk'), removed: [] }));
      }
    }
  }

  async #apply(user: UserMailboxes, folder: string, records: MessageRecord[], opsFor: (r: MessageRecord) => ReturnType<typeof trainingFor>): Promise<void> {
    const filter = this.#filter(user.box);
    for (const r of records) {
      try {
        const raw = await user.readMessage(folder, r.uid);
        if (!raw) continue;
        for (const op of opsFor(r)) {
          if (op.op === 'train') filter.train(raw, op.as);
          else filter.untrain(raw, op.as);
        }
      } catch (err) {
        this.#log.warn({ err, folder, uid: r.uid }, 'junk filter training failed for one message');
      }
    }
    this.#log.debug({ user: `${user.box.user}@${user.box.domain}`, folder, messages: records.length, counts: filter.counts() }, 'junk filter trained');
  }

  close(): void {
    for (const f of this.#filters.values()) f.close();
    this.#filters.clear();
  }
}
