// hearth webmail: the single-page app. The server bundles this file with esbuild and serves it
// as /assets/app.js into a page with <div id="app">. Layout: folders | list | message on a wide
// screen; one column with back navigation under 700px.
import { render } from 'preact';
import type { JSX } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { useSignal, useSignalEffect } from '@preact/signals';
import type { PhoneSetup as PhoneSetupInfo, Session } from '../api-types.ts';
import { api, session, unreachable } from './api.ts';
import { Compose } from './Compose.tsx';
import { Icon } from './icons.tsx';
import { MessageList, toggleSelected } from './MessageList.tsx';
import { Reader, startReply } from './Reader.tsx';
import { Sidebar } from './Sidebar.tsx';
import {
  applyRoute,
  archive,
  checkSession,
  compose,
  currentFolder,
  deleteMessages,
  endSession,
  helpOpen,
  indexOfUid,
  logout,
  navigate,
  openUid,
  openView,
  phoneOpen,
  runSearch,
  searchQuery,
  selected,
  setFlags,
  showFolders,
  sourceText,
  startSession,
  step,
  toast,
  toggleFlag,
} from './state.ts';

function Login(): JSX.Element {
  const [address, setAddress] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  return (
    <main class="login">
      <form
        class="login-card"
        onSubmit={(e) => {
          e.preventDefault();
          setBusy(true);
          setError('');
          api<Session>('login', { address: address.trim(), password })
            .then((s) => {
              session.value = s;
            })
            .catch((err: unknown) => {
              setError(err instanceof Error ? err.message : String(err));
              setBusy(false);
            });
        }}
      >
        <h1>
          <Icon name="mail" size={28} /> hearth
        </h1>
        <label>
          Email address
          <input name="address" type="email" autoComplete="username" required autoFocus value={address} onInput={(e) => setAddress(e.currentTarget.value)} />
        </label>
        <label>
          Password
          <input name="password" type="password" autoComplete="current-password" required value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
        </label>
        {error ? (
          <p class="error" role="alert">
            {error}
          </p>
        ) : null}
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}

let searchInput: HTMLInputElement | null = null;

function TopBar(props: { narrow: boolean }): JSX.Element {
  const draft = useSignal(searchQuery.value);
  useSignalEffect(() => {
    draft.value = searchQuery.value;
  });
  return (
    <header class="topbar">
      {props.narrow ? (
        <button class="icon-btn" aria-label="Folders" title="Folders" onClick={() => (showFolders.value = !showFolders.value)}>
          <Icon name="menu" />
        </button>
      ) : null}
      <span class="brand">
        <Icon name="mail" size={20} /> <span class="lbl">hearth</span>
      </span>
      <form
        class="search"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          if (openUid.value != null) navigate(currentFolder.value, null);
          runSearch(draft.value);
          searchInput?.blur();
        }}
      >
        <Icon name="search" size={16} />
        <input
          ref={(el) => {
            searchInput = el;
          }}
          type="search"
          name="q"
          placeholder="Search mail (/)"
          aria-label="Search mail"
          value={draft.value}
          onInput={(e) => (draft.value = e.currentTarget.value)}
          onKeyDown={(e) => {
            if (e.key === 'Escape') {
              draft.value = '';
              if (searchQuery.value) runSearch('');
              e.currentTarget.blur();
            }
          }}
        />
      </form>
      <button class="icon-btn" title="Keyboard shortcuts (?)" aria-label="Keyboard shortcuts" onClick={() => (helpOpen.value = true)}>
        ?
      </button>
      <span class="user lbl" title={session.value?.user}>
        {session.value?.user}
      </span>
      <button class="link" onClick={() => void logout()}>
        Sign out
      </button>
    </header>
  );
}

const SHORTCUTS: Array<[string, string]> = [
  ['j / k', 'Next / previous message'],
  ['Enter / o', 'Open the selected message'],
  ['u', 'Back to the list'],
  ['r', 'Reply'],
  ['a', 'Reply all'],
  ['f', 'Forward'],
  ['c', 'Compose'],
  ['/', 'Search'],
  ['e', 'Archive'],
  ['#', 'Delete'],
  ['s', 'Flag / unflag'],
  ['x', 'Select / unselect'],
  ['Shift+I / Shift+U', 'Mark read / unread'],
  ['?', 'This help'],
  ['Esc', 'Close'],
];

function Overlay(props: { title: string; onClose: () => void; children: JSX.Element | JSX.Element[]; wide?: boolean }): JSX.Element {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => ref.current?.focus(), []);
  return (
    <div class="overlay" onClick={(e) => e.target === e.currentTarget && props.onClose()}>
      <div class={`dialog${props.wide ? ' wide' : ''}`} role="dialog" aria-modal="true" aria-label={props.title} tabIndex={-1} ref={ref} onKeyDown={(e) => e.key === 'Escape' && props.onClose()}>
        <header>
          <h2>{props.title}</h2>
          <button class="icon-btn" aria-label="Close" onClick={props.onClose}>
            <Icon name="close" />
          </button>
        </header>
        {props.children}
      </div>
    </div>
  );
}

function Help(): JSX.Element {
  return (
    <Overlay title="Keyboard shortcuts" onClose={() => (helpOpen.value = false)}>
      <dl class="shortcuts">
        {SHORTCUTS.flatMap(([k, v]) => [<dt key={`k${k}`}>{k.split(' / ').map((x, i) => (i ? [' / ', <kbd key={x}>{x}</kbd>] : <kbd key={x}>{x}</kbd>))}</dt>, <dd key={`v${k}`}>{v}</dd>])}
      </dl>
      <p class="muted">
        Search: words, <code>from:</code>, <code>to:</code>, <code>subject:</code>, <code>has:attachment</code>, <code>before:YYYY-MM-DD</code>, <code>after:YYYY-MM-DD</code>.
      </p>
    </Overlay>
  );
}

/** A QR code a phone's camera opens: it downloads the Apple profile for this account (no password in it). */
function PhoneSetup(): JSX.Element {
  const [info, setInfo] = useState<PhoneSetupInfo | null>(null);
  const [error, setError] = useState('');
  const [now, setNow] = useState(Date.now());
  const load = (): void => {
    setError('');
    api<PhoneSetupInfo>('client/phone-setup')
      .then((i) => {
        setInfo(i);
        setNow(Date.now());
      })
      .catch((err: unknown) => setError(err instanceof Error ? err.message : String(err)));
  };
  useEffect(load, []);
  // Tick so the panel notices when the link has expired.
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 15_000);
    return () => clearInterval(t);
  }, []);
  const expired = info != null && now >= info.expiresAt;
  return (
    <Overlay title="Set up your phone" onClose={() => (phoneOpen.value = false)}>
      <div class="phone-setup">
        <p>
          Scan this code with the camera of your iPhone or iPad. It downloads a profile that adds <b>{session.value?.user}</b> to Mail; install it in Settings, where you are asked
          for your password (it is not in the profile).
        </p>
        {error ? (
          <p class="error" role="alert">
            {error}
          </p>
        ) : null}
        {info && !expired ? (
          <>
            {/* The SVG is drawn by our own server from the link; it carries no markup from mail. */}
            <div class="qr" dangerouslySetInnerHTML={{ __html: info.svg }} />
            <p class="muted">
              Or open this link on the phone (it works until {new Date(info.expiresAt).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' })}):
            </p>
            <a class="setup-link" href={info.url}>
              {info.url}
            </a>
          </>
        ) : null}
        {expired ? (
          <p>
            This code has expired. <button onClick={load}>Make a new one</button>
          </p>
        ) : null}
        {!info && !error ? <p class="muted">Making a code…</p> : null}
        <p class="muted">
          On this device: <a href="/api/client/mobileconfig">download the profile</a>. Other mail apps find the settings by themselves from your address.
        </p>
      </div>
    </Overlay>
  );
}

function Source(props: { text: string }): JSX.Element {
  return (
    <Overlay title="Message source" wide onClose={() => (sourceText.value = null)}>
      <pre class="source">{props.text}</pre>
    </Overlay>
  );
}

function typing(e: KeyboardEvent): boolean {
  const t = e.target as HTMLElement | null;
  if (!t) return false;
  return t.isContentEditable || t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT';
}

function onKey(e: KeyboardEvent): void {
  if (e.ctrlKey || e.metaKey || e.altKey || typing(e)) return;
  if (session.value == null) return;
  if (e.key === 'Escape') {
    if (helpOpen.value) helpOpen.value = false;
    else if (phoneOpen.value) phoneOpen.value = false;
    else if (sourceText.value != null) sourceText.value = null;
    else if (selected.value.size) selected.value = new Set();
    return;
  }
  if (compose.value || helpOpen.value || phoneOpen.value || sourceText.value != null) return;
  const actions: Record<string, () => void> = {
    j: () => step(1),
    k: () => step(-1),
    ArrowDown: () => step(1),
    ArrowUp: () => step(-1),
    u: () => navigate(currentFolder.value, null),
    r: () => startReply('reply'),
    a: () => startReply('all'),
    f: () => startReply('forward'),
    c: () => (compose.value = { to: '', cc: '', bcc: '', subject: '', text: '', key: Date.now() }),
    '/': () => searchInput?.focus(),
    e: () => void archive(),
    '#': () => void deleteMessages(),
    s: () => toggleFlag('\\Flagged'),
    I: () => void setFlags(selectedOrOpen(), ['\\Seen'], []),
    U: () => void setFlags(selectedOrOpen(), [], ['\\Seen']),
    x: () => {
      const uid = openUid.value;
      if (uid != null) toggleSelected(indexOfUid(uid), uid);
    },
    '?': () => (helpOpen.value = true),
  };
  const fn = actions[e.key];
  if (!fn) return;
  e.preventDefault();
  fn();
}

function selectedOrOpen(): number[] {
  if (selected.value.size) return [...selected.value];
  return openUid.value != null ? [openUid.value] : [];
}

function useNarrow(): boolean {
  const query = '(max-width: 700px)';
  const [narrow, setNarrow] = useState(() => matchMedia(query).matches);
  useEffect(() => {
    const mq = matchMedia(query);
    const on = (): void => setNarrow(mq.matches);
    mq.addEventListener('change', on);
    return () => mq.removeEventListener('change', on);
  }, []);
  return narrow;
}

function Mail(): JSX.Element {
  const narrow = useNarrow();
  useEffect(() => {
    void startSession();
    const onPop = (): void => applyRoute();
    addEventListener('popstate', onPop);
    addEventListener('keydown', onKey);
    return () => {
      removeEventListener('popstate', onPop);
      removeEventListener('keydown', onKey);
      endSession();
    };
  }, []);
  const view = openUid.value != null ? 'message' : showFolders.value ? 'folders' : 'list';
  const newMessage = (): void => {
    showFolders.value = false;
    compose.value = { to: '', cc: '', bcc: '', subject: '', text: '', key: Date.now() };
  };
  void openView.value;
  return (
    <div class={`app${narrow ? ' narrow' : ''}`} data-view={view}>
      <TopBar narrow={narrow} />
      <div class="panes">
        <Sidebar onCompose={newMessage} />
        <MessageList />
        <Reader narrow={narrow} />
      </div>
      {narrow && view === 'list' ? (
        <button class="fab primary" aria-label="Compose" onClick={newMessage}>
          <Icon name="pen" size={22} />
        </button>
      ) : null}
      {compose.value ? <Compose key={compose.value.key} draft={compose.value} /> : null}
      {helpOpen.value ? <Help /> : null}
      {phoneOpen.value ? <PhoneSetup /> : null}
      {sourceText.value != null ? <Source text={sourceText.value} /> : null}
    </div>
  );
}

function Banner(): JSX.Element | null {
  if (!unreachable.value) return null;
  return (
    <div class="banner" role="alert">
      The mail server cannot be reached. Retrying… Changes you make now may not be saved.
    </div>
  );
}

function Toast(): JSX.Element | null {
  const t = toast.value;
  if (!t) return null;
  return (
    <div class={`toast${t.error ? ' error' : ''}`} role="status">
      {t.text}
    </div>
  );
}

function App(): JSX.Element {
  const s = session.value;
  return (
    <>
      <Banner />
      {s === undefined ? <p class="splash">Loading…</p> : s === null ? <Login /> : <Mail key={s.csrf} />}
      <Toast />
    </>
  );
}

void checkSession();
render(<App />, document.getElementById('app')!);
