// Writing mail: compose, reply, forward. Files come from the picker or are dropped on the
// form; the draft is saved to Drafts a few seconds after each change, replacing the last copy.
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { JSX, TargetedEvent } from 'preact';
import type { ComposeRequest } from '../api-types.ts';
import { api, ApiError, fileToBase64, folderPath } from './api.ts';
import { Icon } from './icons.tsx';
import { compose, notify, setFlags, specialFolder, currentFolder, scheduleRefresh } from './state.ts';
import type { Draft } from './text.ts';
import { humanSize } from './text.ts';

const AUTOSAVE_MS = 3000;
/** Keep the total under what servers usually accept once base64 grows it by a third. */
const MAX_ATTACH_BYTES = 25 * 1024 * 1024;

type Picked = { filename: string; contentType: string; base64: string; size: number };

export function Compose(props: { draft: Draft & { draftUid?: number } }): JSX.Element {
  const d = props.draft;
  const [to, setTo] = useState(d.to);
  const [cc, setCc] = useState(d.cc);
  const [bcc, setBcc] = useState(d.bcc);
  const [showCc, setShowCc] = useState(Boolean(d.cc || d.bcc));
  const [subject, setSubject] = useState(d.subject);
  const [text, setText] = useState(d.text);
  const [files, setFiles] = useState<Picked[]>([]);
  const [sending, setSending] = useState(false);
  const [error, setError] = useState('');
  const [status, setStatus] = useState('');
  const [dropping, setDropping] = useState(false);
  const draftUid = useRef<number | undefined>(d.draftUid);
  const dirty = useRef(false);
  const saving = useRef<Promise<void> | null>(null);
  const body = useRef<HTMLTextAreaElement>(null);
  const toField = useRef<HTMLInputElement>(null);

  const request = (): ComposeRequest => ({
    to,
    cc: cc || undefined,
    bcc: bcc || undefined,
    subject,
    text,
    inReplyTo: d.inReplyTo,
    references: d.references,
    attachments: files.length ? files.map(({ filename, contentType, base64 }) => ({ filename, contentType, base64 })) : undefined,
    forwardOf: d.forwardOf,
  });
  // The autosave timer reads the latest fields through this ref.
  const latest = useRef(request);
  latest.current = request;

  const saveDraft = async (): Promise<void> => {
    if (saving.current) await saving.current;
    if (!dirty.current) return;
    dirty.current = false;
    const run = (async () => {
      try {
        const res = await api<{ uid: number }>('drafts', { ...latest.current(), replaceUid: draftUid.current });
        draftUid.current = res.uid;
        setStatus(`Draft saved at ${new Date().toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit' })}`);
        if (currentFolder.value === specialFolder('\\Drafts', 'Drafts')) scheduleRefresh();
      } catch (err) {
        dirty.current = true;
        setStatus(err instanceof ApiError && err.status === 0 ? 'Offline: draft not saved yet' : `Draft not saved: ${err instanceof Error ? err.message : String(err)}`);
      }
    })();
    saving.current = run;
    await run;
    saving.current = null;
  };

  useEffect(() => {
    const timer = setInterval(() => void saveDraft(), AUTOSAVE_MS);
    return () => clearInterval(timer);
  }, []);

  // A layout effect, so the caret is placed before the first keystroke can arrive
  // (a plain effect runs after paint, and moved the caret under a fast typist).
  useLayoutEffect(() => {
    // Replies start in the body, above the quote; new messages in To.
    if (d.to && body.current) {
      body.current.focus();
      body.current.setSelectionRange(0, 0);
    } else toField.current?.focus();
  }, []);

  const change =
    (set: (v: string) => void) =>
    (e: TargetedEvent<HTMLInputElement | HTMLTextAreaElement>): void => {
      set(e.currentTarget.value);
      dirty.current = true;
    };

  const addFiles = async (list: FileList | File[]): Promise<void> => {
    const picked: Picked[] = [];
    let total = files.reduce((n, f) => n + f.size, 0);
    for (const file of Array.from(list)) {
      total += file.size;
      if (total > MAX_ATTACH_BYTES) {
        setError(`Attachments are limited to ${humanSize(MAX_ATTACH_BYTES)} in all; ${file.name} was not added.`);
        break;
      }
      picked.push({ filename: file.name, contentType: file.type || 'application/octet-stream', base64: await fileToBase64(file), size: file.size });
    }
    if (picked.length) {
      setFiles((old) => [...old, ...picked]);
      dirty.current = true;
    }
  };

  const close = async (keepDraft: boolean): Promise<void> => {
    if (keepDraft) {
      await saveDraft();
    } else if (draftUid.current != null) {
      try {
        await api(`${folderPath(specialFolder('\\Drafts', 'Drafts'))}/delete`, { uids: [draftUid.current] });
      } catch {
        // a leftover draft is harmless
      }
    }
    compose.value = null;
  };

  const send = async (e: Event): Promise<void> => {
    e.preventDefault();
    if (!to.trim() && !cc.trim() && !bcc.trim()) {
      setError('Add at least one recipient.');
      return;
    }
    setSending(true);
    setError('');
    try {
      if (saving.current) await saving.current;
      dirty.current = false;
      // The server removes the autosaved draft (replaceUid) once the message is on its way.
      await api('send', { ...request(), replaceUid: draftUid.current });
      draftUid.current = undefined;
      if (d.answers) {
        const { folder, uid } = d.answers;
        if (folder === currentFolder.value) void setFlags([uid], ['\\Answered'], [], true);
        else void api(`${folderPath(folder)}/flags`, { uids: [uid], add: ['\\Answered'] }).catch(() => undefined);
      }
      notify('Message sent');
      await close(false);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
      setSending(false);
    }
  };

  return (
    <div class="compose-wrap" role="dialog" aria-label="Compose message">
      <form
        class={`compose${dropping ? ' dropping' : ''}`}
        onSubmit={(e) => void send(e)}
        onKeyDown={(e) => {
          if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) void send(e);
          if (e.key === 'Escape') void close(true);
        }}
        onDragOver={(e) => {
          if (!e.dataTransfer?.types.includes('Files')) return;
          e.preventDefault();
          setDropping(true);
        }}
        onDragLeave={(e) => {
          if (e.currentTarget === e.target) setDropping(false);
        }}
        onDrop={(e) => {
          if (!e.dataTransfer?.files.length) return;
          e.preventDefault();
          setDropping(false);
          void addFiles(e.dataTransfer.files);
        }}
      >
        <header class="compose-head">
          <h2>{subject || 'New message'}</h2>
          <button type="button" class="icon-btn" aria-label="Close (keeps the draft)" title="Close (keeps the draft)" onClick={() => void close(true)}>
            <Icon name="close" />
          </button>
        </header>
        <label class="field">
          <span>To</span>
          <input ref={toField} name="to" type="text" autoComplete="email" multiple value={to} onInput={change(setTo)} />
          {!showCc ? (
            <button type="button" class="link" onClick={() => setShowCc(true)}>
              Cc/Bcc
            </button>
          ) : null}
        </label>
        {showCc ? (
          <>
            <label class="field">
              <span>Cc</span>
              <input name="cc" type="text" value={cc} onInput={change(setCc)} />
            </label>
            <label class="field">
              <span>Bcc</span>
              <input name="bcc" type="text" value={bcc} onInput={change(setBcc)} />
            </label>
          </>
        ) : null}
        <label class="field">
          <span>Subject</span>
          <input name="subject" type="text" value={subject} onInput={change(setSubject)} />
        </label>
        <textarea ref={body} name="body" aria-label="Message" value={text} onInput={change(setText)} />
        {d.forwardOf ? <p class="notice">The original message is attached.</p> : null}
        {files.length ? (
          <ul class="attachments compose-files">
            {files.map((f, i) => (
              <li key={`${f.filename}-${i}`} class="attachment">
                <Icon name="clip" size={15} />
                <span class="att-name">{f.filename}</span>
                <span class="att-meta">{humanSize(f.size)}</span>
                <button
                  type="button"
                  class="icon-btn"
                  aria-label={`Remove ${f.filename}`}
                  onClick={() => {
                    setFiles(files.filter((_, j) => j !== i));
                    dirty.current = true;
                  }}
                >
                  <Icon name="close" size={14} />
                </button>
              </li>
            ))}
          </ul>
        ) : null}
        {error ? (
          <p class="error" role="alert">
            {error}
          </p>
        ) : null}
        <footer class="compose-foot">
          <button type="submit" class="primary" disabled={sending}>
            {sending ? 'Sending…' : 'Send'}
          </button>
          <label class="button file-btn">
            <Icon name="clip" /> Attach
            <input
              type="file"
              multiple
              hidden
              onChange={(e) => {
                const input = e.currentTarget;
                if (input.files) void addFiles(input.files).then(() => (input.value = ''));
              }}
            />
          </label>
          <span class="draft-status" aria-live="polite">
            {status}
          </span>
          <button type="button" class="link danger" onClick={() => void close(false)}>
            Discard
          </button>
        </footer>
        {dropping ? <div class="drop-hint">Drop files to attach them</div> : null}
      </form>
    </div>
  );
}
