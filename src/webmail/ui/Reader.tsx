// The reading pane. HTML mail is never put into this page: it is loaded from its own URL
// (sanitised server-side, with a sandboxing CSP) into an <iframe sandbox> without allow-scripts
// or allow-same-origin. Plain text is rendered as text nodes, with http(s)/mailto links only.
import { useEffect, useState } from 'preact/hooks';
import type { JSX } from 'preact';
import type { Address, MessageSummary, MessageView } from '../api-types.ts';
import { api, apiUrl, folderPath } from './api.ts';
import { Icon } from './icons.tsx';
import { MoveMenu } from './MessageList.tsx';
import {
  archive,
  compose,
  currentFolder,
  deleteMessages,
  folders,
  markJunk,
  navigate,
  notify,
  openError,
  openThread,
  openUid,
  openView,
  setFlags,
  toggleFlag,
  viewSource,
} from './state.ts';
import { displayName, formatAddress, forwardDraft, humanSize, linkify, longDate, replyDraft, shortDate } from './text.ts';
import { me } from './state.ts';

function Addresses(props: { label: string; list: Address[] }): JSX.Element | null {
  if (props.list.length === 0) return null;
  return (
    <div class="hdr">
      <span class="hdr-label">{props.label}</span>
      <span class="hdr-value">{props.list.map(formatAddress).join(', ')}</span>
    </div>
  );
}

export function PlainText(props: { text: string }): JSX.Element {
  return (
    <div class="plain">
      {linkify(props.text).map((t, i) =>
        t.kind === 'link' ? (
          <a key={i} href={t.href} target="_blank" rel="noopener noreferrer nofollow">
            {t.text}
          </a>
        ) : (
          t.text
        ),
      )}
    </div>
  );
}

export function startReply(kind: 'reply' | 'all' | 'forward' | 'forward-attachment'): void {
  const m = openView.value;
  if (!m) return;
  const folder = currentFolder.value;
  const draft = kind === 'reply' || kind === 'all' ? replyDraft(m, folder, me.value, kind === 'all') : forwardDraft(m, folder, kind === 'forward-attachment');
  compose.value = { ...draft, key: Date.now() };
}

/** Continue editing a message from Drafts. */
function editDraft(m: MessageView): void {
  compose.value = {
    to: m.to.map(formatAddress).join(', '),
    cc: m.cc.map(formatAddress).join(', '),
    bcc: '',
    subject: m.subject,
    text: m.text,
    inReplyTo: m.inReplyTo || undefined,
    references: m.references.length ? m.references : undefined,
    draftUid: m.uid,
    key: Date.now(),
  };
}

function Body(props: { m: MessageView; folder: string }): JSX.Element {
  const { m } = props;
  const [remote, setRemote] = useState(false);
  const [showText, setShowText] = useState(false);
  useEffect(() => {
    setRemote(false);
    setShowText(false);
  }, [m.uid, props.folder]);
  const base = `${folderPath(props.folder)}/messages/${m.uid}`;
  const sender = m.from[0]?.address;
  return (
    <>
      {m.hasHtml && m.hasRemoteContent && !m.remoteAllowed && !remote && !showText ? (
        <div class="notice remote-bar">
          <span>Remote images are blocked to protect your privacy.</span>
          <button onClick={() => setRemote(true)}>Load images</button>
          {sender ? (
            <button
              onClick={() => {
                void api('senders/remote-content', { address: sender, allow: true })
                  .then(() => {
                    setRemote(true);
                    notify(`Images from ${sender} will always load`);
                  })
                  .catch((err: unknown) => notify(err instanceof Error ? err.message : String(err), true));
              }}
            >
              Always from {sender}
            </button>
          ) : null}
        </div>
      ) : null}
      {m.hasHtml ? (
        <div class="body-switch">
          <button class="link" onClick={() => setShowText(!showText)}>
            {showText ? 'Show formatted' : 'Show plain text'}
          </button>
        </div>
      ) : null}
      {m.hasHtml && !showText ? (
        <iframe
          key={`${m.uid}-${remote}`}
          class="html-body"
          title="Message content"
          sandbox="allow-popups allow-popups-to-escape-sandbox"
          referrerpolicy="no-referrer"
          src={`${apiUrl(`${base}/html`)}?remote=${remote ? 1 : 0}`}
        />
      ) : (
        <PlainText text={m.text} />
      )}
    </>
  );
}

/** Headers, attachments and body of one message (the reader's, or one in a conversation). */
function MessageCard(props: { m: MessageView; folder: string }): JSX.Element {
  const { m, folder } = props;
  const base = `${folderPath(folder)}/messages/${m.uid}`;
  return (
    <>
      <div class="headers">
        <Addresses label="From" list={m.from} />
        <Addresses label="To" list={m.to} />
        <Addresses label="Cc" list={m.cc} />
        {m.replyTo.length > 0 && m.replyTo[0].address !== m.from[0]?.address ? <Addresses label="Reply-To" list={m.replyTo} /> : null}
        <div class="hdr">
          <span class="hdr-label">Date</span>
          <span class="hdr-value">{longDate(m.date)}</span>
        </div>
      </div>
      {m.attachments.filter((a) => !a.inline).length > 0 ? (
        <ul class="attachments" aria-label="Attachments">
          {m.attachments
            .filter((a) => !a.inline)
            .map((a) => (
              <li key={a.part}>
                <a class="attachment" href={apiUrl(`${base}/parts/${encodeURIComponent(a.part)}`)} download={a.filename || 'attachment'}>
                  <Icon name="clip" size={15} />
                  <span class="att-name">{a.filename || 'attachment'}</span>
                  <span class="att-meta">
                    {a.contentType} · {humanSize(a.size)}
                  </span>
                </a>
                {/^(image\/|text\/plain$|application\/pdf$)/.test(a.contentType) ? (
                  <a class="att-open" href={`${apiUrl(`${base}/parts/${encodeURIComponent(a.part)}`)}?inline=1`} target="_blank" rel="noopener noreferrer">
                    Open
                  </a>
                ) : null}
              </li>
            ))}
        </ul>
      ) : null}
      <Body m={m} folder={folder} />
    </>
  );
}

/**
 * One message of a conversation: collapsed to a line (sender, snippet, date) that opens on a
 * click, or open with its headers and body (fetched when first opened). The open message of the
 * reader passes its view in, so flag changes show at once.
 */
function ConversationItem(props: { s: MessageSummary; folder: string; view?: MessageView; startOpen: boolean }): JSX.Element {
  const { s, folder } = props;
  const [open, setOpen] = useState(props.startOpen);
  const [loaded, setLoaded] = useState<MessageView | null>(null);
  const [error, setError] = useState('');
  const view = props.view ?? loaded;
  useEffect(() => {
    if (!open || view) return;
    api<MessageView>(`${folderPath(folder)}/messages/${s.uid}`)
      .then((v) => {
        setLoaded(v);
        if (!v.flags.includes('\\Seen')) void setFlags([v.uid], ['\\Seen'], [], true);
      })
      .catch((err: unknown) => setError(err instanceof Error ? err.message : String(err)));
  }, [open]);
  const unread = !s.flags.includes('\\Seen');
  if (!open) {
    return (
      <button class={`conv-item collapsed${unread ? ' unread' : ''}`} data-uid={s.uid} aria-expanded="false" onClick={() => setOpen(true)}>
        <span class="conv-from">{displayName(s.from)}</span>
        <span class="conv-snippet">{s.snippet ?? ''}</span>
        <time class="conv-date" dateTime={new Date(s.date).toISOString()}>
          {shortDate(s.date)}
        </time>
      </button>
    );
  }
  return (
    <article class="conv-item expanded" data-uid={s.uid} aria-label={`Message from ${displayName(s.from)}`}>
      <button class="conv-head" aria-expanded="true" title="Collapse" onClick={() => setOpen(false)}>
        <span class="conv-from">{displayName(s.from)}</span>
        <time class="conv-date" dateTime={new Date(s.date).toISOString()}>
          {longDate(s.date)}
        </time>
      </button>
      {view ? <MessageCard m={view} folder={folder} /> : <p class="empty">{error || 'Loading…'}</p>}
    </article>
  );
}

/** The whole conversation, oldest first; the open (newest) message and unread ones start open. */
function Conversation(props: { m: MessageView; members: MessageSummary[]; folder: string }): JSX.Element {
  const { m, members, folder } = props;
  return (
    <div class="message conversation">
      <h1 class="subject">{m.subject || '(no subject)'}</h1>
      <p class="muted conv-count">{members.length} messages in this conversation</p>
      {members.map((s) => (
        <ConversationItem key={s.uid} s={s} folder={folder} view={s.uid === m.uid ? m : undefined} startOpen={s.uid === m.uid || !s.flags.includes('\\Seen')} />
      ))}
    </div>
  );
}

export function Reader(props: { narrow: boolean }): JSX.Element {
  const m = openView.value;
  const folder = currentFolder.value;
  const special = folders.value.find((f) => f.name === folder)?.specialUse;
  const back = (
    <button class="icon-btn back" title="Back to the list" aria-label="Back" onClick={() => navigate(folder, null)}>
      <Icon name="back" />
    </button>
  );
  if (openUid.value == null) {
    return (
      <section class="reader empty-reader" aria-label="Message">
        <p>Select a message to read it. Press ? for keyboard shortcuts.</p>
      </section>
    );
  }
  if (!m) {
    return (
      <section class="reader" aria-label="Message">
        <div class="toolbar">{props.narrow ? back : null}</div>
        <p class="empty">{openError.value || 'Loading…'}</p>
      </section>
    );
  }
  const seen = m.flags.includes('\\Seen');
  const flagged = m.flags.includes('\\Flagged');
  const t = openThread.value;
  const thread = t && t.uid === m.uid && t.members.length > 1 ? t : null;
  return (
    <section class="reader" aria-label="Message">
      <div class="toolbar" role="toolbar" aria-label="Message actions">
        {props.narrow ? back : null}
        {special === '\\Drafts' ? (
          <button class="primary" onClick={() => editDraft(m)}>
            <Icon name="pen" /> Edit draft
          </button>
        ) : null}
        <button onClick={() => startReply('reply')} title="Reply (r)">
          <Icon name="reply" /> <span class="lbl">Reply</span>
        </button>
        <button onClick={() => startReply('all')} title="Reply all (a)">
          <Icon name="replyAll" /> <span class="lbl">Reply all</span>
        </button>
        <button onClick={() => startReply('forward')} title="Forward (f)">
          <Icon name="forward" /> <span class="lbl">Forward</span>
        </button>
        <button onClick={() => startReply('forward-attachment')} title="Forward as attachment">
          <Icon name="clip" /> <span class="lbl">As attachment</span>
        </button>
        <span class="sep" />
        <button onClick={() => void archive()} title="Archive (e)">
          <Icon name="archive" /> <span class="lbl">Archive</span>
        </button>
        <button onClick={() => void deleteMessages()} title="Delete (#)">
          <Icon name="trash" /> <span class="lbl">Delete</span>
        </button>
        <button onClick={() => void markJunk()} title="Mark as junk">
          <Icon name="junk" /> <span class="lbl">Junk</span>
        </button>
        <MoveMenu />
        <button onClick={() => void setFlags([m.uid], seen ? [] : ['\\Seen'], seen ? ['\\Seen'] : [])} title={seen ? 'Mark unread (u)' : 'Mark read'}>
          <Icon name={seen ? 'mail' : 'mailOpen'} /> <span class="lbl">{seen ? 'Mark unread' : 'Mark read'}</span>
        </button>
        <button class={flagged ? 'on' : ''} aria-pressed={flagged} onClick={() => toggleFlag('\\Flagged', [m.uid])} title="Flag (s)">
          <Icon name="star" /> <span class="lbl">{flagged ? 'Unflag' : 'Flag'}</span>
        </button>
        <button onClick={() => void viewSource()} title="View source">
          <Icon name="code" /> <span class="lbl">Source</span>
        </button>
      </div>
      {thread ? (
        <Conversation m={m} members={thread.members} folder={folder} />
      ) : (
        <div class="message">
          <h1 class="subject">{m.subject || '(no subject)'}</h1>
          <MessageCard m={m} folder={folder} />
        </div>
      )}
    </section>
  );
}
