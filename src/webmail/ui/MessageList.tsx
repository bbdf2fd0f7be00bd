// The message list: a virtual scroller over `total` rows of fixed height. Only the rows on
// screen (plus a margin) exist in the DOM, and pages of 100 are fetched as they come into view,
// so a 100,000-message folder costs the same as a small one.
import { useEffect, useRef, useState } from 'preact/hooks';
import type { JSX } from 'preact';
import type { MessageSummary } from '../api-types.ts';
import { Icon } from './icons.tsx';
import { DRAG_TYPE } from './Sidebar.tsx';
import {
  archive,
  currentFolder,
  deleteMessages,
  ensureRows,
  folders,
  listError,
  listLoading,
  listMore,
  listPartial,
  listRevision,
  listTotal,
  markJunk,
  moveTo,
  navigate,
  openUid,
  rowAt,
  searchQuery,
  selected,
  setFlags,
  setThreads,
  threads,
  toggleFlag,
} from './state.ts';
import { displayName, shortDate } from './text.ts';

export const ROW_HEIGHT = 64;
const OVERSCAN = 10;

let anchor = -1;

function select(index: number, uid: number, e: MouseEvent): boolean {
  if (e.shiftKey && anchor >= 0) {
    const next = new Set(selected.value);
    const [a, b] = anchor < index ? [anchor, index] : [index, anchor];
    for (let i = a; i <= b; i++) {
      const r = rowAt(i);
      if (r) next.add(r.uid);
    }
    selected.value = next;
    return true;
  }
  if (e.ctrlKey || e.metaKey) {
    toggleSelected(index, uid);
    return true;
  }
  return false;
}

export function toggleSelected(index: number, uid: number): void {
  const next = new Set(selected.value);
  if (next.has(uid)) next.delete(uid);
  else next.add(uid);
  anchor = index;
  selected.value = next;
}

function Row(props: { index: number; m: MessageSummary | undefined; open: boolean; checked: boolean; inSent: boolean }): JSX.Element {
  const { index, m } = props;
  const style = { transform: `translateY(${index * ROW_HEIGHT}px)`, height: `${ROW_HEIGHT}px` };
  if (!m) {
    return (
      <div class="row placeholder" style={style} aria-hidden="true">
        <span class="skeleton" />
      </div>
    );
  }
  const unread = !m.flags.includes('\\Seen');
  const flagged = m.flags.includes('\\Flagged');
  const who = props.inSent ? `To: ${displayName(m.to)}` : displayName(m.from);
  return (
    <div
      class={`row${unread ? ' unread' : ''}${props.open ? ' open' : ''}${props.checked ? ' checked' : ''}`}
      style={style}
      role="option"
      aria-selected={props.open}
      data-uid={m.uid}
      draggable
      onDragStart={(e) => {
        const uids = selected.value.has(m.uid) ? [...selected.value] : [m.uid];
        e.dataTransfer?.setData(DRAG_TYPE, JSON.stringify(uids));
        e.dataTransfer?.setData('text/plain', `${uids.length} message(s)`);
        if (e.dataTransfer) e.dataTransfer.effectAllowed = 'move';
      }}
      onClick={(e) => {
        if (select(index, m.uid, e)) return;
        anchor = index;
        selected.value = new Set();
        navigate(currentFolder.value, m.uid);
      }}
    >
      <input
        type="checkbox"
        class="pick"
        aria-label="Select"
        checked={props.checked}
        onClick={(e) => {
          e.stopPropagation();
          if (!select(index, m.uid, e)) toggleSelected(index, m.uid);
        }}
      />
      <div class="row-main">
        <div class="row-top">
          {unread ? <span class="dot" title="Unread" /> : null}
          <span class="from">{who}</span>
          {m.thread && m.thread.count > 1 ? <span class="thread-count" title="Messages in this conversation">{m.thread.count}</span> : null}
          <span class="marks">
            {m.flags.includes('\\Answered') ? <Icon name="reply" size={14} title="Answered" /> : null}
            {m.hasAttachments ? <Icon name="clip" size={14} title="Has attachments" class="attach-mark" /> : null}
          </span>
          <time class="date" dateTime={new Date(m.date).toISOString()}>
            {shortDate(m.date)}
          </time>
        </div>
        <div class="row-bottom">
          <span class="subject">{m.subject || '(no subject)'}</span>
          <button
            class={`star${flagged ? ' on' : ''}`}
            title={flagged ? 'Unflag' : 'Flag'}
            aria-pressed={flagged}
            onClick={(e) => {
              e.stopPropagation();
              toggleFlag('\\Flagged', [m.uid]);
            }}
          >
            <Icon name="star" size={15} />
          </button>
        </div>
      </div>
    </div>
  );
}

export function MoveMenu(props: { label?: string }): JSX.Element {
  return (
    <select
      class="move-menu"
      aria-label="Move to folder"
      value=""
      onChange={(e) => {
        const to = e.currentTarget.value;
        e.currentTarget.value = '';
        if (to) void moveTo(to);
      }}
    >
      <option value="">{props.label ?? 'Move to…'}</option>
      {folders.value
        .filter((f) => f.name !== currentFolder.value)
        .map((f) => (
          <option key={f.name} value={f.name}>
            {f.name === 'INBOX' ? 'Inbox' : f.name}
          </option>
        ))}
    </select>
  );
}

function SelectionBar(): JSX.Element {
  const n = selected.value.size;
  const uids = (): number[] => [...selected.value];
  return (
    <div class="selection-bar" role="toolbar" aria-label="Selected messages">
      <span class="sel-count">{n} selected</span>
      <button onClick={() => void setFlags(uids(), ['\\Seen'], [])}>Read</button>
      <button onClick={() => void setFlags(uids(), [], ['\\Seen'])}>Unread</button>
      <button onClick={() => toggleFlag('\\Flagged', uids())}>Flag</button>
      <button onClick={() => void archive(uids())}>Archive</button>
      <button onClick={() => void markJunk(uids())}>Junk</button>
      <button onClick={() => void deleteMessages(uids())}>Delete</button>
      <MoveMenu />
      <button class="link" onClick={() => (selected.value = new Set())}>
        Clear
      </button>
    </div>
  );
}

export function MessageList(): JSX.Element {
  const scroller = useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const [height, setHeight] = useState(800);
  void listRevision.value; // re-render when rows arrive
  const total = listTotal.value;
  const first = Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(Math.max(total - 1, 0), Math.ceil((scrollTop + height) / ROW_HEIGHT) + OVERSCAN);

  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const ro = new ResizeObserver(() => setHeight(el.clientHeight || 800));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  useEffect(() => {
    if (total > 0) ensureRows(first, last);
  }, [first, last, total]);

  // Back to the top when the list is replaced (another folder or search).
  const key = `${currentFolder.value}\n${searchQuery.value}\n${threads.value}`;
  useEffect(() => {
    if (scroller.current) scroller.current.scrollTop = 0;
    setScrollTop(0);
  }, [key]);

  // Keep the open message on screen as j/k move through the list.
  const open = openUid.value;
  useEffect(() => {
    const el = scroller.current;
    if (!el || open == null) return;
    for (let i = first; i <= last; i++) {
      if (rowAt(i)?.uid !== open) continue;
      const top = i * ROW_HEIGHT;
      if (top < el.scrollTop) el.scrollTop = top;
      else if (top + ROW_HEIGHT > el.scrollTop + el.clientHeight) el.scrollTop = top + ROW_HEIGHT - el.clientHeight;
      return;
    }
  }, [open]);

  const rows: JSX.Element[] = [];
  const sent = folders.value.find((f) => f.name === currentFolder.value)?.specialUse;
  const inSent = sent === '\\Sent' || sent === '\\Drafts';
  if (total > 0) {
    for (let i = first; i <= last; i++) {
      const m = rowAt(i);
      rows.push(<Row key={i} index={i} m={m} open={m != null && m.uid === open} checked={m != null && selected.value.has(m.uid)} inSent={inSent} />);
    }
  }
  const folderLabel = currentFolder.value === 'INBOX' ? 'Inbox' : currentFolder.value;
  return (
    <section class="list" aria-label="Messages">
      <header class="list-head">
        <h2>{searchQuery.value ? `Search: ${searchQuery.value}` : folderLabel}</h2>
        <span class="total" title={listMore.value && searchQuery.value ? 'More matches are found as you scroll' : undefined}>
          {total.toLocaleString('en')}
          {listMore.value && searchQuery.value ? '+' : ''}
        </span>
        <label class="toggle" title="Group messages by conversation">
          <input type="checkbox" checked={threads.value} onChange={(e) => setThreads(e.currentTarget.checked)} /> Conversations
        </label>
      </header>
      {listPartial.value && searchQuery.value ? <p class="notice partial">The search took too long; these are the matches found so far. Narrow it down with from:, subject: or a date.</p> : null}
      {selected.value.size > 0 ? <SelectionBar /> : null}
      <div class="list-scroll" ref={scroller} role="listbox" aria-label="Message list" aria-multiselectable="true" onScroll={(e) => setScrollTop(e.currentTarget.scrollTop)}>
        <div class="list-inner" style={{ height: `${total * ROW_HEIGHT}px` }}>
          {rows}
        </div>
        {total === 0 && !listLoading.value ? <p class="empty">{listError.value || (searchQuery.value ? 'No messages match.' : 'No messages here.')}</p> : null}
      </div>
    </section>
  );
}
