// Message lists for the webmail: a page of a folder, newest (highest UID) first, built from the
// mailbox index's records and the summary cache, so a page of 50 reads 50 cached summaries and
// no message file, however big the folder; conversations grouped by Message-ID, In-Reply-To and
// References (kept per folder in memory and updated as UIDs come and go); and search over the
// user's full-text index (store/user-search.ts), checking with summaries only what the index
// cannot decide.
import { createHash } from 'node:crypto';
import type { MessageSummary as ImapSummary, SummaryProvider } from '../imap/message-info.ts';
import type { FolderState, MessageRecord, UserMailboxes } from '../store/mailboxes.ts';
import { foldText } from '../store/fulltext.ts';
import type { FullTextField } from '../store/fulltext.ts';
import { userSearch } from '../store/user-search.ts';
import type { MessageList, MessageSummary } from './api-types.ts';
import { messageIds, parseAddresses } from './mime-view.ts';

export const MAX_PAGE = 500;
/** Bodies longer than this are indexed only in part (fulltext.ts): check those by reading. */
const PARTIAL_BODY_BYTES = 4 << 20;

export function toSummary(rec: MessageRecord, s: ImapSummary | null): MessageSummary {
  return {
    uid: rec.uid,
    from: parseAddresses(s?.fields.from),
    to: parseAddresses(s?.fields.to),
    subject: s?.fields.subject ?? '',
    date: s?.sentDate ?? rec.internalDate,
    flags: rec.flags,
    size: rec.size,
    hasAttachments: s?.hasAttachments ?? false,
  };
}

/** Summaries for records, in their order (parsed and cached on first use). */
export async function summarize(summaries: SummaryProvider, mb: UserMailboxes, folder: string, records: MessageRecord[]): Promise<MessageSummary[]> {
  const got = await Promise.all(records.map((r) => summaries.get(mb, folder, r).catch(() => null)));
  return records.map((r, i) => toSummary(r, got[i]));
}

/** Records newest first: [offset, offset+limit) of the folder in descending UID order. */
function pageOf(records: readonly MessageRecord[], offset: number, limit: number): MessageRecord[] {
  const out: MessageRecord[] = [];
  for (let i = records.length - 1 - offset; i >= 0 && out.length < limit; i--) out.push(records[i]);
  return out;
}

export async function listPage(summaries: SummaryProvider, mb: UserMailboxes, folder: string, state: FolderState, offset: number, limit: number): Promise<MessageList> {
  const recs = pageOf(state.messages, offset, limit);
  return { folder, total: state.messages.length, offset, messages: await summarize(summaries, mb, folder, recs) };
}

// --- conversations ---

type ThreadKeys = { id: string; refs: string[]; hasAttachments: boolean };
type Grouping = { version: string; groups: Array<{ id: string; uids: number[] }>; byId: Map<string, number[]> };
type FolderThreads = { keys: Map<number, ThreadKeys>; grouping?: Grouping };

const threadCache = new WeakMap<UserMailboxes, Map<string, FolderThreads>>();

async function threadKeys(summaries: SummaryProvider, mb: UserMailboxes, folder: string, state: FolderState): Promise<FolderThreads> {
  let perUser = threadCache.get(mb);
  if (!perUser) {
    perUser = new Map();
    threadCache.set(mb, perUser);
  }
  let ft = perUser.get(folder);
  if (!ft) {
    ft = { keys: new Map() };
    perUser.set(folder, ft);
  }
  const present = new Set<number>();
  const missing: MessageRecord[] = [];
  for (const r of state.messages) {
    present.add(r.uid);
    if (!ft.keys.has(r.uid)) missing.push(r);
  }
  for (const uid of ft.keys.keys()) if (!present.has(uid)) ft.keys.delete(uid);
  for (let i = 0; i < missing.length; i += 64) {
    const batch = missing.slice(i, i + 64);
    const got = await Promise.all(batch.map((r) => summaries.get(mb, folder, r).catch(() => null)));
    batch.forEach((r, j) => {
      const f = got[j]?.fields;
      const own = messageIds(f?.messageId)[0] ?? `<uid-${r.uid}@hearth>`;
      const refs = [...messageIds(f?.references), ...messageIds(f?.inReplyTo)];
      ft.keys.set(r.uid, { id: own, refs, hasAttachments: got[j]?.hasAttachments ?? false });
    });
  }
  return ft;
}

/** Conversations of a folder, newest conversation first, each with its UIDs newest first. */
export async function threads(summaries: SummaryProvider, mb: UserMailboxes, folder: string, state: FolderState): Promise<Grouping> {
  const last = state.messages[state.messages.length - 1];
  // UIDs only grow: the same count and last UID means the same set of messages.
  const version = `${state.uidValidity}:${state.messages.length}:${last?.uid ?? 0}`;
  const known = threadCache.get(mb)?.get(folder)?.grouping;
  if (known?.version === version) return known;
  const ft = await threadKeys(summaries, mb, folder, state);
  // Union-find over message ids: a message joins the conversation of everything it refers to.
  const parent = new Map<string, string>();
  const find = (x: string): string => {
    let r = x;
    while (parent.get(r) !== r && parent.has(r)) r = parent.get(r)!;
    let c = x;
    while (c !== r) {
      const next = parent.get(c)!;
      parent.set(c, r);
      c = next;
    }
    return r;
  };
  const add = (x: string): void => {
    if (!parent.has(x)) parent.set(x, x);
  };
  const union = (a: string, b: string): void => {
    const ra = find(a);
    const rb = find(b);
    if (ra !== rb) parent.set(rb, ra);
  };
  for (const r of state.messages) {
    const k = ft.keys.get(r.uid);
    if (!k) continue;
    add(k.id);
    for (const ref of k.refs) {
      add(ref);
      union(k.id, ref);
    }
  }
  const byRoot = new Map<string, number[]>();
  for (let i = state.messages.length - 1; i >= 0; i--) {
    const uid = state.messages[i].uid;
    const k = ft.keys.get(uid);
    const root = k ? find(k.id) : `<uid-${uid}@hearth>`;
    const list = byRoot.get(root);
    if (list) list.push(uid);
    else byRoot.set(root, [uid]);
  }
  // Insertion order is newest-first by each conversation's newest message.
  const groups: Grouping['groups'] = [];
  const byId = new Map<string, number[]>();
  for (const uids of byRoot.values()) {
    // Named after its oldest message, so the id stays while replies arrive.
    const oldest = ft.keys.get(uids[uids.length - 1]);
    const id = createHash('sha256').update(oldest ? (oldest.refs[0] ?? oldest.id) : String(uids[0])).update(folder).digest('base64url').slice(0, 16);
    groups.push({ id, uids });
    byId.set(id, uids);
  }
  ft.grouping = { version, groups, byId };
  return ft.grouping;
}

export async function threadPage(summaries: SummaryProvider, mb: UserMailboxes, folder: string, state: FolderState, offset: number, limit: number): Promise<MessageList> {
  const g = await threads(summaries, mb, folder, state);
  const page = g.groups.slice(offset, offset + limit);
  const recs = page.map((t) => findRecord(state, t.uids[0])!);
  const rows = await summarize(summaries, mb, folder, recs);
  rows.forEach((row, i) => (row.thread = { id: page[i].id, count: page[i].uids.length }));
  return { folder, total: g.groups.length, offset, messages: rows };
}

/** The messages of one conversation, newest first (each row carries the thread). */
export async function threadMembers(summaries: SummaryProvider, mb: UserMailboxes, folder: string, state: FolderState, id: string): Promise<MessageList | undefined> {
  const g = await threads(summaries, mb, folder, state);
  const uids = g.byId.get(id);
  if (!uids) return undefined;
  const rows = await summarize(summaries, mb, folder, uids.map((u) => findRecord(state, u)!));
  for (const row of rows) row.thread = { id, count: uids.length };
  return { folder, total: rows.length, offset: 0, messages: rows };
}

/** The record with this UID (binary search: records are in UID order). */
export function findRecord(state: FolderState, uid: number): MessageRecord | undefined {
  const m = state.messages;
  let lo = 0;
  let hi = m.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (m[mid].uid === uid) return m[mid];
    if (m[mid].uid < uid) lo = mid + 1;
    else hi = mid - 1;
  }
  return undefined;
}

// --- search ---

export type SearchTerm = { field: 'any' | 'from' | 'to' | 'subject' | 'body'; text: string };
export type SearchQuery = { terms: SearchTerm[]; hasAttachment: boolean; before?: number; after?: number };

/** `words "quoted phrase" from:x to:x subject:x body:x has:attachment before:YYYY-MM-DD after:YYYY-MM-DD`. */
export function parseQuery(q: string): SearchQuery | { error: string } {
  const query: SearchQuery = { terms: [], hasAttachment: false };
  const re = /(-?)(?:(\w+):)?(?:"([^"]*)"|(\S+))/g;
  for (const m of q.slice(0, 1000).matchAll(re)) {
    const key = m[2]?.toLowerCase();
    const value = m[3] ?? m[4] ?? '';
    if (key === 'has') {
      if (/^attachments?$/i.test(value)) query.hasAttachment = true;
      else return { error: `has:${value} is not known; has:attachment is` };
      continue;
    }
    if (key === 'before' || key === 'after') {
      const t = /^\d{4}-\d{2}-\d{2}$/.test(value) ? Date.parse(`${value}T00:00:00Z`) : NaN;
      if (!Number.isFinite(t)) return { error: `${key}: needs a date as YYYY-MM-DD` };
      if (key === 'before') query.before = t;
      else query.after = t + 86_400_000;
      continue;
    }
    if (key === 'from' || key === 'to' || key === 'subject' || key === 'body') {
      if (value) query.terms.push({ field: key, text: value });
      continue;
    }
    // An unknown "key:" is just text (a URL, a time of day).
    const text = m[2] !== undefined && m[3] === undefined ? `${m[2]}:${value}` : value;
    if (text) query.terms.push({ field: 'any', text });
  }
  return query;
}

/**
 * Which UIDs the full-text index holds, cached for a while: reading 100,000 of them costs tens of
 * milliseconds, and a stale answer is still right: a UID it does not list is read and checked
 * (slower, never wrong), and the index drops a UID only when the message goes.
 */
const INDEXED_TTL_MS = 30_000;
const indexedCache = new WeakMap<UserMailboxes, Map<string, { uidValidity: number; at: number; uids: Set<number> }>>();

function indexedUids(mb: UserMailboxes, folder: string, uidValidity: number, load: () => Set<number>): Set<number> {
  let perUser = indexedCache.get(mb);
  if (!perUser) {
    perUser = new Map();
    indexedCache.set(mb, perUser);
  }
  const hit = perUser.get(folder);
  const now = Date.now();
  if (hit && hit.uidValidity === uidValidity && now - hit.at < INDEXED_TTL_MS) return hit.uids;
  const uids = load();
  perUser.set(folder, { uidValidity, at: now, uids });
  return uids;
}

function forgetIndexed(mb: UserMailboxes, folder: string): void {
  indexedCache.get(mb)?.delete(folder);
}

const FIELDS_FOR: Record<SearchTerm['field'], FullTextField[]> = {
  any: ['subject', 'addresses', 'body'],
  from: ['addresses'],
  to: ['addresses'],
  subject: ['subject'],
  body: ['body'],
};

/**
 * UIDs (newest first) of messages in the folder that match. The index answers each term of
 * 3+ characters (a trigram match, case and diacritics folded, is taken as the answer); what it
 * cannot answer (messages not indexed yet, bodies indexed only in part, short terms, from:/to:
 * which the index keeps together, dates and has:attachment) is checked with the summaries.
 */
export async function searchUids(
  summaries: SummaryProvider,
  mb: UserMailboxes,
  folder: string,
  state: FolderState,
  query: SearchQuery,
  readBody: (rec: MessageRecord) => Promise<string>,
  signal?: AbortSignal,
): Promise<{ uids: number[]; partial: boolean; unindexed: number }> {
  const index = userSearch(mb)?.index;
  const name = folder.toUpperCase() === 'INBOX' ? 'INBOX' : folder;
  let candidates: MessageRecord[] = state.messages.slice();
  let indexed: Set<number> | undefined;
  /** Terms the index decided, per candidate that it holds whole. */
  const decided = new Set<SearchTerm>();
  let unindexedSeen = 0;
  if (index) {
    try {
      indexed = indexedUids(mb, name, state.uidValidity, () => index.indexedUids(name, state.uidValidity));
      for (const term of query.terms) {
        const sets = FIELDS_FOR[term.field].map((f) => index.candidates(name, state.uidValidity, f, term.text));
        if (sets.some((s) => s === undefined)) continue;
        const union = new Set<number>();
        for (const s of sets) for (const uid of s!) union.add(uid);
        let unindexed = 0;
        candidates = candidates.filter((r) => {
          if (union.has(r.uid)) return true;
          if (indexed!.has(r.uid)) return false;
          unindexed++;
          return true;
        });
        // Many messages the cached set does not know: indexing has moved on; ask again next time.
        if (unindexed > 500) forgetIndexed(mb, name);
        unindexedSeen = Math.max(unindexedSeen, unindexed);
        if (term.field !== 'from' && term.field !== 'to') decided.add(term);
      }
    } catch {
      indexed = undefined;
      decided.clear();
    }
  }
  if (query.after !== undefined || query.before !== undefined) {
    // The delivery date, which the index records hold: no summary needed for the range.
    candidates = candidates.filter((r) => (query.after === undefined || r.internalDate >= query.after) && (query.before === undefined || r.internalDate < query.before));
  }
  if (query.hasAttachment && candidates.length > 1000) {
    // Many to check: the per-folder facts kept for conversations answer from memory after the first time.
    const facts = await threadKeys(summaries, mb, folder, state);
    candidates = candidates.filter((r) => facts.keys.get(r.uid)?.hasAttachments !== false);
  }
  const out: number[] = [];
  for (let i = candidates.length - 1; i >= 0; i--) {
    // Out of time: what was found so far, newest first, marked as partial.
    if (signal?.aborted) return { uids: out, partial: true, unindexed: unindexedSeen };
    const rec = candidates[i];
    const trusted = indexed?.has(rec.uid) === true;
    const open = query.terms.filter((t) => !(trusted && decided.has(t) && !(t.field !== 'subject' && rec.size > PARTIAL_BODY_BYTES)));
    if (open.length === 0 && !query.hasAttachment) {
      out.push(rec.uid);
      continue;
    }
    const s = await summaries.get(mb, folder, rec).catch(() => null);
    if (!s) continue;
    if (query.hasAttachment && !s.hasAttachments) continue;
    let ok = true;
    let body: string | undefined;
    for (const t of open) {
      const needle = foldText(t.text);
      const has = (text: string): boolean => foldText(text).includes(needle);
      const f = s.fields;
      let hit = false;
      if (t.field === 'from') hit = has(f.from);
      else if (t.field === 'to') hit = has(f.to) || has(f.cc) || has(f.bcc);
      else if (t.field === 'subject') hit = has(f.subject);
      else {
        if (t.field === 'any') hit = has(f.subject) || has(f.from) || has(f.to) || has(f.cc);
        if (!hit) {
          body ??= await readBody(rec);
          hit = has(body);
        }
      }
      if (!hit) {
        ok = false;
        break;
      }
    }
    if (ok) out.push(rec.uid);
  }
  return { uids: out, partial: false, unindexed: unindexedSeen };
}
