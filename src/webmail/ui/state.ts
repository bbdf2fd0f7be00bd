// The webmail UI's state (signals) and the actions that change it. Components read signals and
// call these functions; only this file and api.ts talk to the server.
import { batch, computed, signal } from '@preact/signals';
import type { Folder, MessageList, MessageSummary, MessageView, ServerEvent } from '../api-types.ts';
import { api, ApiError, connectEvents, disconnectEvents, folderPath, onServerRecovered, session } from './api.ts';
import type { Draft } from './text.ts';

export const PAGE = 100;

export const folders = signal<Folder[]>([]);
export const currentFolder = signal('INBOX');
/** The active search (empty: the folder's list). */
export const searchQuery = signal('');
export const threads = signal(localStorage.getItem('hearth.threads') === '1');

// The list is a sparse window over `total` rows, filled a page at a time as it scrolls.
export const listTotal = signal(0);
export const listRevision = signal(0);
export const listLoading = signal(false);
export const listError = signal('');
/** The search ran out of time: the list holds the matches found so far. */
export const listPartial = signal(false);
/** The search stopped a page ahead: there may be more matches than listTotal (scrolling finds them). */
export const listMore = signal(false);
let rows = new Map<number, MessageSummary>();
let pagesLoaded = new Set<number>();
let pagesLoading = new Set<number>();
let generation = 0;
let visible = { first: 0, last: 50 };

export const selected = signal<ReadonlySet<number>>(new Set());
export const openUid = signal<number | null>(null);
export const openView = signal<MessageView | null>(null);
export const openError = signal('');
/** The open message's conversation (threads on, 2+ messages), oldest first; null: just the message. */
export const openThread = signal<{ id: string; uid: number; members: MessageSummary[] } | null>(null);
export const showFolders = signal(false);
export const helpOpen = signal(false);
/** The "Set up your phone" panel (QR code of a .mobileconfig link). */
export const phoneOpen = signal(false);
export const sourceText = signal<string | null>(null);
export const compose = signal<(Draft & { draftUid?: number; key: number }) | null>(null);
export const toast = signal<{ text: string; error: boolean } | null>(null);

export const me = computed(() => session.value?.user ?? '');

let toastTimer: ReturnType<typeof setTimeout> | undefined;
export function notify(text: string, error = false): void {
  toast.value = { text, error };
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (toast.value = null), error ? 8000 : 4000);
}

function fail(err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof ApiError && (err.status === 0 || err.status === 401)) return; // the banner / login screen says it
  notify(message, true);
}

export function rowAt(index: number): MessageSummary | undefined {
  return rows.get(index);
}

export function indexOfUid(uid: number): number {
  for (const [i, m] of rows) if (m.uid === uid) return i;
  return -1;
}

// ---- folders ----

export function specialFolder(use: NonNullable<Folder['specialUse']>, fallback: string): string {
  return folders.value.find((f) => f.specialUse === use)?.name ?? fallback;
}

export async function loadFolders(): Promise<void> {
  try {
    folders.value = await api<Folder[]>('folders');
  } catch (err) {
    fail(err);
  }
}

export async function createFolder(name: string): Promise<boolean> {
  try {
    await api('folders', { name });
    await loadFolders();
    return true;
  } catch (err) {
    fail(err);
    return false;
  }
}

// ---- the message list ----

function listPath(offset: number): string {
  const q = searchQuery.value;
  if (q) return `search?folder=${encodeURIComponent(currentFolder.value)}&q=${encodeURIComponent(q)}&offset=${offset}&limit=${PAGE}`;
  return `${folderPath(currentFolder.value)}/messages?offset=${offset}&limit=${PAGE}&threads=${threads.value ? 1 : 0}`;
}

async function loadPage(page: number): Promise<void> {
  if (pagesLoading.has(page)) return;
  const gen = generation;
  pagesLoading.add(page);
  if (pagesLoaded.size === 0) listLoading.value = true;
  try {
    const list = await api<MessageList>(listPath(page * PAGE));
    if (gen !== generation) return;
    batch(() => {
      listTotal.value = list.total;
      // The server says where the rows start; trust it over what we asked for.
      list.messages.forEach((m, i) => rows.set(list.offset + i, m));
      for (const i of [...rows.keys()]) if (i >= list.total) rows.delete(i);
      pagesLoaded.add(page);
      listError.value = '';
      listPartial.value = list.partial === true;
      listMore.value = list.more === true;
      listLoading.value = false;
      listRevision.value++;
    });
    void loadConversation();
  } catch (err) {
    if (gen !== generation) return;
    listLoading.value = false;
    listError.value = err instanceof Error ? err.message : String(err);
  } finally {
    if (gen === generation) pagesLoading.delete(page);
  }
}

/** Called by the list as it scrolls: make sure rows first..last are (being) loaded. */
export function ensureRows(first: number, last: number): void {
  visible = { first, last };
  const end = Math.max(first, Math.min(last, Math.max(listTotal.value - 1, 0)));
  for (let p = Math.floor(first / PAGE); p <= Math.floor(end / PAGE); p++) {
    if (!pagesLoaded.has(p)) void loadPage(p);
  }
}

/** Start the list afresh (another folder, search or grouping). */
export function resetList(): void {
  generation++;
  rows = new Map();
  pagesLoaded = new Set();
  pagesLoading = new Set();
  batch(() => {
    listTotal.value = 0;
    listError.value = '';
    selected.value = new Set();
    listRevision.value++;
  });
  visible = { first: 0, last: 50 };
  void loadPage(0);
}

/** Reload what is on screen, keeping the old rows until the new ones arrive (no flicker). */
export function refreshList(): void {
  generation++;
  pagesLoaded = new Set();
  pagesLoading = new Set();
  ensureRows(visible.first, visible.last);
  if (listTotal.value === 0) void loadPage(0);
}

let refreshTimer: ReturnType<typeof setTimeout> | undefined;
/** Coalesce bursts of server events into one reload. */
export function scheduleRefresh(): void {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    refreshList();
    void loadFolders();
  }, 120);
}

export function setThreads(on: boolean): void {
  threads.value = on;
  localStorage.setItem('hearth.threads', on ? '1' : '0');
  if (!on) openThread.value = null;
  conversationAsked = null;
  resetList();
}

export function runSearch(q: string): void {
  searchQuery.value = q.trim();
  resetList();
}

// ---- navigation (the URL hash is #/<folder>[/<uid>], so Back works on a phone) ----

function parseHash(): { folder: string; uid: number | null } {
  const m = /^#\/([^/]*)(?:\/(\d+))?$/.exec(location.hash);
  if (!m) return { folder: 'INBOX', uid: null };
  let folder = 'INBOX';
  try {
    folder = decodeURIComponent(m[1]) || 'INBOX';
  } catch {
    // a mangled hash: fall back to INBOX
  }
  return { folder, uid: m[2] ? Number(m[2]) : null };
}

export function navigate(folder: string, uid: number | null, replace = false): void {
  const hash = `#/${encodeURIComponent(folder)}${uid != null ? `/${uid}` : ''}`;
  if (location.hash !== hash) {
    if (replace) history.replaceState(null, '', hash);
    else history.pushState(null, '', hash);
  }
  applyRoute();
}

export function applyRoute(): void {
  const { folder, uid } = parseHash();
  if (folder !== currentFolder.value) {
    batch(() => {
      currentFolder.value = folder;
      searchQuery.value = '';
      showFolders.value = false;
    });
    resetList();
  }
  if (uid !== openUid.value) void openMessage(uid);
}

export function openFolder(name: string): void {
  showFolders.value = false;
  if (name === currentFolder.value && searchQuery.value) {
    searchQuery.value = '';
    resetList();
  }
  navigate(name, null);
}

// ---- reading ----

let openSeq = 0;
async function openMessage(uid: number | null): Promise<void> {
  const seq = ++openSeq;
  batch(() => {
    openUid.value = uid;
    openView.value = null;
    openError.value = '';
    openThread.value = null;
  });
  conversationAsked = null;
  if (uid == null) return;
  const folder = currentFolder.value;
  try {
    const view = await api<MessageView>(`${folderPath(folder)}/messages/${uid}`);
    if (seq !== openSeq) return;
    openView.value = view;
    void loadConversation();
    if (!view.flags.includes('\\Seen')) await setFlags([uid], ['\\Seen'], [], true);
  } catch (err) {
    if (seq !== openSeq) return;
    openError.value = err instanceof Error ? err.message : String(err);
  }
}

/** The UID whose conversation was asked for, so list pages arriving later do not ask again. */
let conversationAsked: number | null = null;

/**
 * With conversations on, the open message's whole conversation (its list row says which, once
 * that row is loaded): shown oldest first, the older messages collapsed. Without one, or on
 * failure, the reader just shows the message.
 */
async function loadConversation(): Promise<void> {
  const uid = openUid.value;
  if (uid == null || !threads.value || searchQuery.value || conversationAsked === uid || openView.value?.uid !== uid) return;
  const t = rows.get(indexOfUid(uid))?.thread;
  if (!t) return; // the row is not loaded yet: loadPage calls again
  conversationAsked = uid;
  if (t.count < 2) return;
  const seq = openSeq;
  try {
    const list = await api<MessageList>(`${folderPath(currentFolder.value)}/messages?thread=${encodeURIComponent(t.id)}`);
    if (seq !== openSeq) return;
    openThread.value = { id: t.id, uid, members: list.messages.slice().reverse() };
  } catch {
    // the conversation went away meanwhile: the message alone is still right
  }
}

/** Open the message `delta` rows away from the open one (j/k). */
export function step(delta: number): void {
  const at = openUid.value == null ? -1 : indexOfUid(openUid.value);
  let next = at + delta;
  if (at < 0) next = delta > 0 ? 0 : -1;
  if (next < 0 || next >= listTotal.value) return;
  const row = rows.get(next);
  if (row) navigate(currentFolder.value, row.uid, openUid.value != null);
  else ensureRows(next, next);
}

export async function viewSource(): Promise<void> {
  const uid = openUid.value;
  if (uid == null) return;
  try {
    const res = await fetch(`/api/${folderPath(currentFolder.value)}/messages/${uid}/source`, { credentials: 'same-origin' });
    if (!res.ok) throw new ApiError(res.status, `${res.status} ${res.statusText}`);
    sourceText.value = await res.text();
  } catch (err) {
    fail(err);
  }
}

// ---- acting on messages ----

/** The messages an action applies to: the selection, else the open message. */
export function targets(): number[] {
  if (selected.value.size > 0) return [...selected.value];
  return openUid.value != null ? [openUid.value] : [];
}

function patchFlags(uids: number[], add: string[], remove: string[]): void {
  const set = new Set(uids);
  const apply = (flags: string[]): string[] => [...new Set([...flags.filter((f) => !remove.includes(f)), ...add])];
  for (const [i, m] of rows) if (set.has(m.uid)) rows.set(i, { ...m, flags: apply(m.flags) });
  const v = openView.value;
  if (v && set.has(v.uid)) openView.value = { ...v, flags: apply(v.flags) };
  const t = openThread.value;
  if (t && t.members.some((m) => set.has(m.uid))) openThread.value = { ...t, members: t.members.map((m) => (set.has(m.uid) ? { ...m, flags: apply(m.flags) } : m)) };
  listRevision.value++;
}

export async function setFlags(uids: number[], add: string[], remove: string[], quiet = false): Promise<void> {
  if (uids.length === 0) return;
  patchFlags(uids, add, remove);
  try {
    await api(`${folderPath(currentFolder.value)}/flags`, { uids, add, remove });
    void loadFolders();
  } catch (err) {
    if (!quiet) fail(err);
    scheduleRefresh();
  }
}

export function toggleFlag(flag: string, uids = targets()): void {
  const all = uids.every((u) => {
    const i = indexOfUid(u);
    const flags = i >= 0 ? rows.get(i)!.flags : openView.value?.uid === u ? openView.value.flags : [];
    return flags.includes(flag);
  });
  void (all ? setFlags(uids, [], [flag]) : setFlags(uids, [flag], []));
}

/** After the open message leaves the list, open its neighbour (below, else above). */
function neighbourOf(uids: number[]): number | null {
  const open = openUid.value;
  if (open == null || !uids.includes(open)) return open;
  const gone = new Set(uids);
  const at = indexOfUid(open);
  for (let i = at + 1; i < listTotal.value; i++) {
    const r = rows.get(i);
    if (!r) break;
    if (!gone.has(r.uid)) return r.uid;
  }
  for (let i = at - 1; i >= 0; i--) {
    const r = rows.get(i);
    if (!r) break;
    if (!gone.has(r.uid)) return r.uid;
  }
  return null;
}

function afterRemoval(uids: number[], message: string): void {
  const next = neighbourOf(uids);
  // On a phone, go back to the list rather than into the next message.
  const narrow = matchMedia('(max-width: 700px)').matches;
  selected.value = new Set();
  if (openUid.value != null && uids.includes(openUid.value)) navigate(currentFolder.value, narrow ? null : next, true);
  notify(message);
  refreshList();
  void loadFolders();
}

export async function moveTo(dest: string, uids = targets()): Promise<void> {
  if (uids.length === 0 || dest === currentFolder.value) return;
  try {
    await api(`${folderPath(currentFolder.value)}/move`, { uids, to: dest });
    afterRemoval(uids, `Moved ${plural(uids.length)} to ${dest}`);
  } catch (err) {
    fail(err);
  }
}

export async function deleteMessages(uids = targets()): Promise<void> {
  if (uids.length === 0) return;
  try {
    await api(`${folderPath(currentFolder.value)}/delete`, { uids });
    const trash = specialFolder('\\Trash', 'Trash');
    afterRemoval(uids, currentFolder.value === trash ? `Deleted ${plural(uids.length)} for good` : `Moved ${plural(uids.length)} to ${trash}`);
  } catch (err) {
    fail(err);
  }
}

async function specialOrCreate(use: NonNullable<Folder['specialUse']>, name: string): Promise<string | null> {
  const found = folders.value.find((f) => f.specialUse === use) ?? folders.value.find((f) => f.name === name);
  if (found) return found.name;
  return (await createFolder(name)) ? name : null;
}

export async function archive(uids = targets()): Promise<void> {
  if (uids.length === 0) return;
  const dest = await specialOrCreate('\\Archive', 'Archive');
  if (dest) await moveTo(dest, uids);
}

export async function markJunk(uids = targets()): Promise<void> {
  if (uids.length === 0) return;
  const dest = await specialOrCreate('\\Junk', 'Junk');
  if (dest) await moveTo(dest, uids);
}

export function plural(n: number): string {
  return n === 1 ? '1 message' : `${n} messages`;
}

// ---- live updates ----

function onServerEvent(e: ServerEvent): void {
  if (e.kind === 'folders' || e.folder !== currentFolder.value) {
    void loadFolders();
    if (e.kind === 'folders') return;
    // A search spans one folder; other folders only change the counters.
    return;
  }
  if (e.kind === 'flags') {
    for (const c of e.changes) {
      const i = indexOfUid(c.uid);
      if (i >= 0) rows.set(i, { ...rows.get(i)!, flags: c.flags });
      const v = openView.value;
      if (v && v.uid === c.uid) openView.value = { ...v, flags: c.flags };
    }
    listRevision.value++;
    void loadFolders();
    return;
  }
  if (e.kind === 'expunged' && openUid.value != null && e.uids.includes(openUid.value)) {
    openError.value = 'This message was moved or deleted elsewhere.';
  }
  scheduleRefresh();
}

function catchUp(): void {
  void loadFolders();
  refreshList();
}

export async function startSession(): Promise<void> {
  const { folder, uid } = parseHash();
  currentFolder.value = folder;
  searchQuery.value = '';
  resetList();
  void openMessage(uid);
  connectEvents(onServerEvent, catchUp);
  await loadFolders();
}

export function endSession(): void {
  disconnectEvents();
}

onServerRecovered(() => {
  if (session.value) catchUp();
});

export async function checkSession(): Promise<void> {
  try {
    session.value = await api('session');
  } catch {
    session.value = null;
  }
}

export async function logout(): Promise<void> {
  try {
    await api('logout', {});
  } catch {
    // logged out either way
  }
  endSession();
  session.value = null;
}
