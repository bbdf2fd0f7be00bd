// Message lists for the webmail: a page of a folder, newest (highest UID) first, built from the
// mailbox index's records and the summary cache, so a page of 50 reads 50 cached summaries and
// no message file, however big the folder; conversations grouped by Message-ID, In-Reply-To and
// References (kept per folder in memory and updated as UIDs come and go); and search over the
// user's full-text index (store/user-search.ts), checking with summaries only what the index
// cannot decide.
import { createHash } from 'node:crypto';
import type { MessageSummary as ImapSummary, SummaryProvider } from '../imap/message-info.ts';
import type { MessageRecord, SharedFolderState, UserMailboxes } from '../store/mailboxes.ts';
import { foldTextLoose, indexable } from '../store/fulltext.ts';
import type { FullTextField, FullTextIndex } from '../store/fulltext.ts';
import { userSearch } from '../store/user-search.ts';
import type { MessageList, MessageSummary } from './api-types.ts';
import { messageIds, parseAddresses } from './mime-view.ts';

export const MAX_PAGE = 500;

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

export async function listPage(summaries: SummaryProvider, mb: UserMailboxes, folder: string, state: SharedFolderState, offset: number, limit: number): Promise<MessageList> {
  const recs = pageOf(state.messages, offset, limit);
  return { folder, total: state.messages.length, offset, messages: await summarize(summaries, mb, folder, recs) };
}

/**
 * A page of the plain list. While the folder is still loading after a restart the store answers
 * from its index file (peekNewest), when it knows that to be current; otherwise from the synced state.
 */
export async function listNewest(summaries: SummaryProvider, mb: UserMailboxes, folder: string, offset: number, limit: number): Promise<MessageList> {
  const peek = await mb.peekNewest(folder, offset, limit);
  if (peek) return { folder, total: peek.total, offset, messages: await summarize(summaries, mb, folder, peek.messages) };
  return listPage(summaries, mb, folder, await mb.syncShared(folder), offset, limit);
}

// --- conversations ---

type ThreadKeys = { id: string; refs: string[]; hasAttachments: boolean };
type Grouping = { version: string; groups: Array<{ id: string; uids: number[] }>; byId: Map<string, number[]> };
type FolderThreads = { keys: Map<number, ThreadKeys>; grouping?: Grouping };

const threadCache = new WeakMap<UserMailboxes, Map<string, FolderThreads>>();

async function threadKeys(summaries: SummaryProvider, mb: UserMailboxes, folder: string, state: SharedFolderState): Promise<FolderThreads> {
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
export async function threads(summaries: SummaryProvider, mb: UserMailboxes, folder: string, state: SharedFolderState): Promise<Grouping> {
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

export async function threadPage(summaries: SummaryProvider, mb: UserMailboxes, folder: string, state: SharedFolderState, offset: number, limit: number): Promise<MessageList> {
  const g = await threads(summaries, mb, folder, state);
  const page = g.groups.slice(offset, offset + limit);
  const recs = page.map((t) => findRecord(state, t.uids[0])!);
  const rows = await summarize(summaries, mb, folder, recs);
  rows.forEach((row, i) => (row.thread = { id: page[i].id, count: page[i].uids.length }));
  return { folder, total: g.groups.length, offset, messages: rows };
}

/** Members of a conversation that get a snippet (each costs a read of its file). */
const SNIPPET_MEMBERS = 200;
const SNIPPET_CHARS = 160;

/**
 * The line a collapsed message in a conversation shows: the start of what the sender wrote, not
 * the quote of earlier messages (`> ` lines and the "On …, X wrote:" line above them) nor the
 * signature.
 */
export function snippetOf(text: string): string {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  const own: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line.startsWith('>')) continue;
    // The attribution above a quote ("On Mon, Ann wrote:", "Am … schrieb …:"): a line ending in ':' just before '>' lines.
    if (line.endsWith(':') && (lines.slice(i + 1).find((l) => l.trim() !== '') ?? '').trim().startsWith('>')) continue;
    if (line === '--') break; // the signature separator ("-- ", its space often lost on the way)
    own.push(line);
    if (own.join(' ').length > SNIPPET_CHARS * 2) break;
  }
  const flat = own.join(' ').replace(/\s+/g, ' ').trim();
  return flat.length > SNIPPET_CHARS ? `${flat.slice(0, SNIPPET_CHARS - 1).trimEnd()}…` : flat;
}

/** The messages of one conversation, newest first (each row carries the thread and a snippet). */
export async function threadMembers(
  summaries: SummaryProvider,
  mb: UserMailboxes,
  folder: string,
  state: SharedFolderState,
  id: string,
  bodyText: (raw: Buffer) => string,
): Promise<MessageList | undefined> {
  const g = await threads(summaries, mb, folder, state);
  const uids = g.byId.get(id);
  if (!uids) return undefined;
  const rows = await summarize(summaries, mb, folder, uids.map((u) => findRecord(state, u)!));
  for (const row of rows) row.thread = { id, count: uids.length };
  await Promise.all(
    rows.slice(0, SNIPPET_MEMBERS).map(async (row) => {
      const raw = await mb.readMessage(folder, row.uid).catch(() => null);
      if (raw) row.snippet = snippetOf(bodyText(raw));
    }),
  );
  return { folder, total: rows.length, offset: 0, messages: rows };
}

/** The record with this UID (binary search: records are in UID order). */
export function findRecord(state: SharedFolderState, uid: number): MessageRecord | undefined {
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

const FIELDS_FOR: Record<SearchTerm['field'], FullTextField[]> = {
  any: ['subject', 'addresses', 'body'],
  from: ['addresses'],
  to: ['addresses'],
  subject: ['subject'],
  body: ['body'],
};

type IndexedUids = { uids: Uint32Array; partial: Set<number> };

/** A folder's indexed UIDs, read whole, kept while the index has not changed (its generation). */
const indexedCache = new WeakMap<FullTextIndex, Map<string, { uidValidity: number; generation: number; docs: IndexedUids }>>();
/** Up to this many records, ask the index about just the stretch rather than the whole folder. */
const STRETCH_ASK = 4000;

/**
 * Which UIDs in [floor, top] the index holds (`count` records lie there). A short stretch is
 * read as it is; a long one from the whole folder's list, read once per change of the index
 * (100,000 UIDs take some 20 ms to read), so a run of searches pays for it once.
 */
function indexedIn(index: FullTextIndex, folder: string, uidValidity: number, floor: number, top: number, count: number): IndexedUids {
  if (floor > 0 && count <= STRETCH_ASK) return index.indexedBetween(folder, uidValidity, floor, top);
  let perIndex = indexedCache.get(index);
  if (!perIndex) {
    perIndex = new Map();
    indexedCache.set(index, perIndex);
  }
  const hit = perIndex.get(folder);
  if (hit && hit.uidValidity === uidValidity && hit.generation === index.generation) return hit.docs;
  const generation = index.generation;
  const docs = index.indexedBetween(folder, uidValidity, 1, 0xffffffff);
  perIndex.set(folder, { uidValidity, generation, docs });
  return docs;
}

/** The first position in a descending list whose value is at most `uid`. */
function firstAtMost(desc: Uint32Array, uid: number): number {
  let lo = 0;
  let hi = desc.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (desc[mid] > uid) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The first ask of the index for the newest matches, at least; each further ask is 4 times bigger. */
const FIRST_ASK = 200;

export type SearchResult = {
  /** Matches, newest first. */
  uids: number[];
  /** Ran out of time (signal): `uids` are the matches found so far. */
  partial: boolean;
  /** Stopped after `want` matches: there may be more than `uids`. */
  more: boolean;
  /** Messages looked at that the index does not hold yet. */
  unindexed: number;
};

/**
 * Matching UIDs, newest first, stopping once `want` are found (a page needs only the newest).
 * The index answers the terms of 3+ characters in one query, newest first and only as many as
 * asked for (asking again for more further down the folder when those run out); what it cannot
 * decide is checked with the summaries (and the body text): messages not indexed yet or indexed
 * only in part, short terms, from:/to: (the index keeps all addresses together), dates and
 * has:attachment.
 */
export async function searchUids(
  summaries: SummaryProvider,
  mb: UserMailboxes,
  folder: string,
  state: SharedFolderState,
  query: SearchQuery,
  readBody: (rec: MessageRecord) => Promise<string>,
  opts: { signal?: AbortSignal; want?: number; firstAsk?: number; belowUid?: number } = {},
): Promise<SearchResult> {
  const { signal, want = Number.POSITIVE_INFINITY } = opts;
  const index = userSearch(mb)?.index;
  const name = folder.toUpperCase() === 'INBOX' ? 'INBOX' : folder;
  const records = state.messages;
  let indexed = index ? query.terms.filter((t) => indexable(t.text)) : [];
  /** Terms whose index answer is final for a message the index holds whole. */
  let decided = new Set(indexed.filter((t) => t.field !== 'from' && t.field !== 'to'));
  // Attachment facts already gathered for conversations answer has:attachment from memory.
  const facts = query.hasAttachment ? threadCache.get(mb)?.get(folder)?.keys : undefined;
  const out: number[] = [];
  let unindexed = 0;
  // firstAsk: tests make it small, to go through several asks on a small folder.
  let ask = opts.firstAsk ?? Math.max(FIRST_ASK, Number.isFinite(want) ? want * 2 : records.length);
  let i = records.length - 1;
  // belowUid: a further page of the same search goes on where the last one stopped, so what
  // the pages already showed stays as it was (the index may have filled in meanwhile).
  if (opts.belowUid !== undefined) while (i >= 0 && records[i].uid >= opts.belowUid) i--;
  while (i >= 0) {
    // One stretch: records from i down to the oldest index match returned (or to the start).
    let hits: Set<number> | undefined;
    let docs: IndexedUids | undefined;
    let floor = 0;
    if (index && indexed.length > 0) {
      try {
        const top = records[i].uid;
        const list = index.newestMatches(name, state.uidValidity, indexed.map((t) => ({ fields: FIELDS_FOR[t.field], text: t.text })), ask, top + 1);
        floor = list.length < ask ? 0 : list[list.length - 1];
        hits = new Set(list);
        docs = indexedIn(index, name, state.uidValidity, floor, top, i + 1);
        ask *= 4;
      } catch {
        // The index failed (a broken file): check everything from here on.
        indexed = [];
        decided = new Set();
        continue;
      }
    }
    // Both lists go down: a pointer into the indexed UIDs follows the records.
    let j = docs ? firstAtMost(docs.uids, records[i].uid) : 0;
    for (; i >= 0 && records[i].uid >= floor; i--) {
      // Out of time: what was found so far, newest first, marked as partial.
      if (signal?.aborted) return { uids: out, partial: true, more: false, unindexed };
      const rec = records[i];
      let trusted = false;
      if (hits && docs) {
        while (j < docs.uids.length && docs.uids[j] > rec.uid) j++;
        const held = j < docs.uids.length && docs.uids[j] === rec.uid;
        if (!held) unindexed++;
        trusted = held && !docs.partial.has(rec.uid);
        if (trusted && !hits.has(rec.uid)) continue;
      }
      if (query.after !== undefined && rec.internalDate < query.after) continue;
      if (query.before !== undefined && rec.internalDate >= query.before) continue;
      if (facts?.get(rec.uid)?.hasAttachments === false) continue;
      if (await matches(summaries, mb, folder, rec, query, trusted ? decided : undefined, readBody)) {
        out.push(rec.uid);
        if (out.length >= want) return { uids: out, partial: false, more: i > 0, unindexed };
      }
    }
  }
  return { uids: out, partial: false, more: false, unindexed };
}

/** Whether `rec` matches the terms not `decided` by the index, and has:attachment, by its summary (and body). */
async function matches(
  summaries: SummaryProvider,
  mb: UserMailboxes,
  folder: string,
  rec: MessageRecord,
  query: SearchQuery,
  decided: Set<SearchTerm> | undefined,
  readBody: (rec: MessageRecord) => Promise<string>,
): Promise<boolean> {
  const open = decided ? query.terms.filter((t) => !decided.has(t)) : query.terms;
  if (open.length === 0 && !query.hasAttachment) return true;
  const s = await summaries.get(mb, folder, rec).catch(() => null);
  if (!s) return false;
  if (query.hasAttachment && !s.hasAttachments) return false;
  let body: string | undefined;
  for (const t of open) {
    const needle = foldTextLoose(t.text);
    const has = (text: string): boolean => foldTextLoose(text).includes(needle);
    const f = s.fields;
    let hit = false;
    if (t.field === 'from') hit = has(f.from);
    else if (t.field === 'to') hit = has(f.to) || has(f.cc) || has(f.bcc);
    else if (t.field === 'subject') hit = has(f.subject);
    else {
      // As the index's `any`: the subject, every address field (Bcc too, on mail you sent), the body.
      if (t.field === 'any') hit = has(f.subject) || has(f.from) || has(f.to) || has(f.cc) || has(f.bcc);
      if (!hit) {
        body ??= await readBody(rec);
        hit = has(body);
      }
    }
    if (!hit) return false;
  }
  return true;
}
