// One session's view of its selected folder: sequence numbers to UIDs, the flags this session
// has been told about, \Recent for this session, and the changes (from any session, SMTP
// delivery or another program on the Maildir) it has not reported yet. The store's change
// events are noted here as they happen and reported as untagged EXISTS / EXPUNGE / FETCH only
// when the session says a command allows it (RFC 3501 5.2, 7.4.1): sequence numbers never
// shift under a command in flight.
import type { ChangeEvent, MessageRecord, SharedFolderState } from '../store/mailboxes.ts';
import { isInNew } from '../store/mailboxes.ts';
import { highestExplicit, intervals, resolveSequence } from './sequence.ts';
import type { SequenceSet } from './sequence.ts';

/** The highest UID any session of this process has seen per folder: \Recent is given once. */
const claimedRecent = new WeakMap<object, Map<string, number>>();

export type ViewMessage = { seq: number; rec: MessageRecord };

export class SelectedView {
  readonly folder: string;
  readonly readOnly: boolean;
  readonly uidValidity: number;
  /**
   * seq - 1 → record, ascending by UID. At first the store's own snapshot, shared with every
   * session that selected the folder at the same state (the store replaces it rather than
   * change it); copied here on this view's first change of its own.
   */
  #messages: readonly MessageRecord[];
  #owned = false;
  readonly recent = new Set<number>();
  uidNext: number;
  highestModseq: number;
  #pendingAdded: MessageRecord[] = [];
  #pendingExpunged = new Set<number>();
  #pendingFlags = new Map<number, MessageRecord>();
  readonly #owner: object;

  constructor(owner: object, folder: string, state: SharedFolderState, readOnly: boolean) {
    this.#owner = owner;
    this.folder = folder;
    this.readOnly = readOnly;
    this.uidValidity = state.uidValidity;
    this.uidNext = state.uidNext;
    this.highestModseq = state.highestModseq;
    this.#messages = state.messages;
    // \Recent (RFC 3501 2.3.2.1): this is the first session to see the message. After a restart
    // nothing has been claimed: messages still in new/ are the ones no client has looked at.
    let claims = claimedRecent.get(owner);
    if (!claims) claimedRecent.set(owner, (claims = new Map()));
    const claimed = claims.get(folder);
    if (!readOnly) {
      const msgs = state.messages;
      if (claimed === undefined) {
        for (let i = 0; i < msgs.length; i++) if (isInNew(msgs[i])) this.recent.add(msgs[i].uid);
      } else {
        // Ascending UIDs: the unclaimed ones are at the end.
        for (let i = msgs.length - 1; i >= 0 && msgs[i].uid > claimed; i--) this.recent.add(msgs[i].uid);
      }
      claims.set(folder, Math.max(claimed ?? 0, this.maxUid));
    }
  }

  /** The messages in sequence order (seq - 1 → record). Read-only: the view changes it only through takeUpdates/forgetFlags. */
  get messages(): readonly MessageRecord[] {
    return this.#messages;
  }

  get exists(): number {
    return this.#messages.length;
  }

  get maxUid(): number {
    const m = this.#messages;
    return m.length ? m[m.length - 1].uid : 0;
  }

  /** The record this view shows for a UID, or undefined. */
  record(uid: number): MessageRecord | undefined {
    const seq = this.seqOf(uid);
    return seq === 0 ? undefined : this.#messages[seq - 1];
  }

  /** 1-based sequence number of a UID in this view, or 0. */
  seqOf(uid: number): number {
    const m = this.#messages;
    let a = 0;
    let b = m.length - 1;
    while (a <= b) {
      const mid = (a + b) >> 1;
      const v = m[mid].uid;
      if (v === uid) return mid + 1;
      if (v < uid) a = mid + 1;
      else b = mid - 1;
    }
    return 0;
  }

  /** The array to change: a copy of the shared snapshot the first time. */
  #own(): MessageRecord[] {
    if (!this.#owned) {
      this.#messages = this.#messages.slice();
      this.#owned = true;
    }
    return this.#messages as MessageRecord[];
  }

  /**
   * The messages a sequence set names: UIDs (`uid`) or sequence numbers. Null when a sequence
   * number beyond the message count is named (RFC 3501 9: an error, answered BAD).
   */
  resolve(set: SequenceSet, uid: boolean): ViewMessage[] | null {
    const msgs = this.#messages;
    if (uid) {
      // Both ascending: one pass over the messages and the merged UID intervals.
      const ivs = intervals(set, this.maxUid);
      const out: ViewMessage[] = [];
      let k = 0;
      for (let i = 0; i < msgs.length && k < ivs.length; i++) {
        const u = msgs[i].uid;
        while (k < ivs.length && u > ivs[k][1]) k++;
        if (k < ivs.length && u >= ivs[k][0]) out.push({ seq: i + 1, rec: msgs[i] });
      }
      return out;
    }
    if (highestExplicit(set) > msgs.length) return null;
    return resolveSequence(set, msgs.length).map((seq) => ({ seq, rec: msgs[seq - 1] }));
  }

  /** Note a store change; reported at the next `takeUpdates`. */
  note(ev: ChangeEvent): boolean {
    if (ev.kind === 'folders' || ev.folder !== this.folder) return false;
    if (ev.kind === 'added') {
      for (const rec of ev.records) if (rec.uid > this.maxUid && !this.#pendingExpunged.has(rec.uid)) this.#pendingAdded.push(rec);
    } else if (ev.kind === 'expunged') {
      for (const uid of ev.uids) {
        this.#pendingExpunged.add(uid);
        this.#pendingFlags.delete(uid);
      }
      if (this.#pendingAdded.length) this.#pendingAdded = this.#pendingAdded.filter((r) => !this.#pendingExpunged.has(r.uid));
    } else {
      for (const rec of ev.records) {
        const prev = this.#pendingFlags.get(rec.uid);
        if (!prev || prev.modseq <= rec.modseq) this.#pendingFlags.set(rec.uid, rec);
      }
    }
    return true;
  }

  get hasPending(): boolean {
    return this.#pendingAdded.length > 0 || this.#pendingExpunged.size > 0 || this.#pendingFlags.size > 0;
  }

  /** Our own STORE reported these already (or was .SILENT): do not report them again. */
  forgetFlags(records: readonly MessageRecord[]): void {
    for (const rec of records) {
      const seq = this.seqOf(rec.uid);
      if (seq > 0 && this.#messages[seq - 1].modseq <= rec.modseq) this.#own()[seq - 1] = rec;
      const p = this.#pendingFlags.get(rec.uid);
      if (p && p.modseq <= rec.modseq) this.#pendingFlags.delete(rec.uid);
    }
    for (const rec of records) if (rec.modseq > this.highestModseq) this.highestModseq = rec.modseq;
  }

  /**
   * Apply what happened since the last call and return the untagged responses that say so.
   * With `allowExpunge` false (FETCH, STORE, SEARCH by sequence number) expunges stay pending
   * and only flags and new messages are reported.
   */
  takeUpdates(allowExpunge: boolean, opts: { condstore: boolean }): string[] {
    const out: string[] = [];
    if (allowExpunge && this.#pendingExpunged.size > 0) {
      const gone = this.#pendingExpunged;
      this.#pendingExpunged = new Set();
      const seqs: number[] = [];
      for (const uid of gone) {
        const seq = this.seqOf(uid);
        if (seq > 0) seqs.push(seq);
      }
      // Highest first: removing a later message does not renumber the earlier ones.
      seqs.sort((a, b) => b - a);
      for (const seq of seqs) {
        out.push(`* ${seq} EXPUNGE`);
        this.recent.delete(this.#messages[seq - 1].uid);
      }
      if (seqs.length) {
        this.#messages = this.#messages.filter((r) => !gone.has(r.uid));
        this.#owned = true;
      }
    }
    for (const [uid, rec] of this.#pendingFlags) {
      const seq = this.seqOf(uid);
      if (seq === 0) {
        // Not yet reported as added: the added record will be replaced when it is.
        continue;
      }
      this.#pendingFlags.delete(uid);
      if (this.#messages[seq - 1].modseq > rec.modseq) continue;
      this.#own()[seq - 1] = rec;
      if (rec.modseq > this.highestModseq) this.highestModseq = rec.modseq;
      out.push(`* ${seq} FETCH (UID ${uid} FLAGS (${this.flagsOf(rec).join(' ')})${opts.condstore ? ` MODSEQ (${rec.modseq})` : ''})`);
    }
    if (this.#pendingAdded.length > 0) {
      const added = this.#pendingAdded.filter((r) => r.uid > this.maxUid).sort((a, b) => a.uid - b.uid);
      this.#pendingAdded = [];
      const claims = claimedRecent.get(this.#owner)!;
      for (const rec of added) {
        if (rec.uid <= this.maxUid) continue;
        const newer = this.#pendingFlags.get(rec.uid);
        const r = newer && newer.modseq >= rec.modseq ? newer : rec;
        this.#pendingFlags.delete(rec.uid);
        this.#own().push(r);
        if (r.modseq > this.highestModseq) this.highestModseq = r.modseq;
        if (r.uid >= this.uidNext) this.uidNext = r.uid + 1;
        if (!this.readOnly && r.uid > (claims.get(this.folder) ?? 0)) {
          claims.set(this.folder, r.uid);
          this.recent.add(r.uid);
        }
      }
      if (added.length > 0) {
        out.push(`* ${this.#messages.length} EXISTS`);
        out.push(`* ${this.recent.size} RECENT`);
      }
    }
    return out;
  }

  /** The flags to show for a message: its stored flags plus \Recent for this session. */
  flagsOf(rec: MessageRecord): string[] {
    return this.recent.has(rec.uid) ? [...rec.flags, '\\Recent'] : rec.flags;
  }

  /** Keywords used in the folder, for the FLAGS response of SELECT. */
  keywords(): string[] {
    const seen = new Map<string, string>();
    // The store shares one flags array between messages with the same flags: look at each once.
    const looked = new Set<readonly string[]>();
    for (const rec of this.#messages) {
      if (looked.has(rec.flags)) continue;
      looked.add(rec.flags);
      for (const f of rec.flags) if (!f.startsWith('\\') && !seen.has(f.toLowerCase())) seen.set(f.toLowerCase(), f);
    }
    return [...seen.values()];
  }
}
