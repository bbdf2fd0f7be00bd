// The webmail is in charge of hearth's HTTP side: a JSON API (api-types.ts) over the same
// mailbox index, summary cache and full-text index the IMAP server uses (no IMAP round trip),
// sending through the same submission pipeline as SMTP clients, live updates over Server-Sent
// Events from the store's change events, and the browser UI (ui/, bundled at start-up).
//
// Security, in the order a request meets it: secure headers on every response and no caching
// of the API; a server-side session behind an HttpOnly SameSite=Strict cookie; every POST needs
// the session's CSRF token in X-CSRF-Token and, when the browser says where it comes from
// (Origin, Sec-Fetch-Site), to come from here; every message lookup goes through the logged-in
// user's own UserMailboxes, so a UID of someone else's is simply not found; HTML mail is
// rewritten (sanitize.ts) and served under its own sandboxing CSP for an <iframe sandbox>.
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { Hono } from 'hono';
import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { secureHeaders } from 'hono/secure-headers';
import { streamSSE } from 'hono/streaming';
import { serve } from '@hono/node-server';
import { named } from '../core/log.ts';
import type { Logger } from '../core/log.ts';
import type { LoginLimiter } from '../core/login-limiter.ts';
import type { SummaryProvider } from '../imap/message-info.ts';
import type { SubmissionPipeline } from '../smtp/submission.ts';
import { bodyTextFromRawSync } from '../store/fulltext.ts';
import type { ChangeEvent, FolderState, MailStore, MessageRecord, UserMailboxes } from '../store/mailboxes.ts';
import { StoreError } from '../store/names.ts';
import { indexFolderSoon } from '../store/user-search.ts';
import type { ComposeRequest, Folder, LoginRequest, MessageList, MessageView, PhoneSetup, ServerEvent, Session } from './api-types.ts';
import { buildAssets, shellHtml } from './assets.ts';
import { autoconfigRoutes, defaultClientSettings } from './autoconfig.ts';
import type { ClientSettings } from './autoconfig.ts';
import type { Asset, Assets } from './assets.ts';
import { ComposeError, compose } from './compose.ts';
import { MAX_PAGE, findRecord, listNewest, parseQuery, searchUids, summarize, threadMembers, threadPage, toSummary } from './listing.ts';
import { PART_NUMBER, contentDisposition, decodeWords, header, messageIds, parseAddresses, parseMessage, partContent } from './mime-view.ts';
import { RemotePrefs } from './prefs.ts';
import { qrSvg } from './qr.ts';
import { HTML_MAIL_CSP, HTML_MAIL_CSP_REMOTE, mailDocument, sanitizeMailHtml } from './sanitize.ts';
import { SessionStore, sameToken } from './sessions.ts';
import type { WebSession } from './sessions.ts';

export type WebmailDeps = {
  log: Logger;
  /** Our host name: Message-IDs of mail written here. */
  hostname: string;
  /** The directory's password check (a bare name qualified as the other logins do). */
  authenticate(address: string, password: string): Promise<{ user: string; domain: string } | null>;
  /** The login limiter shared with POP3, IMAP and submission. */
  limiter: LoginLimiter;
  mail: MailStore;
  summaries: SummaryProvider;
  pipeline: Pick<SubmissionPipeline, 'submit'>;
  /** Mark the session cookie Secure (and __Host-): true whenever users reach us over HTTPS. */
  secureCookies: boolean;
  sessionIdleMs?: number;
  sessionMaxMs?: number;
  /** The largest message that may be sent or saved (config limits.message_size). */
  maxMessageBytes: number;
  /** Where the UI's entry and stylesheet are (tests); defaults to src/webmail/ui/. */
  ui?: { entry?: string; css?: string };
  now?: () => number;
  /** SSE heartbeat interval (tests); 25 s by default. */
  heartbeatMs?: number;
  /** Operations endpoints (/metrics, /healthz; issue 9), mounted before the webmail's own routes. */
  ops?: Hono;
  /** ACME HTTP-01 answers (/.well-known/acme-challenge/:token; issue 9). */
  acme?: Hono;
  /** What autoconfig, Autodiscover, MTA-STS and .mobileconfig advertise (default: standard ports on hostname). */
  client?: ClientSettings;
};

export type WebmailApp = Hono & { sessions: SessionStore; assets(): Promise<Assets>; shutdown(): void };

const SHELL_CSP = "default-src 'self'; frame-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'";
const PART_CSP = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'";
const SPECIAL_FOLDERS = ['Drafts', 'Sent', 'Archive', 'Junk', 'Trash'] as const;
const SPECIAL_USE: Record<string, Folder['specialUse']> = { Sent: '\\Sent', Drafts: '\\Drafts', Trash: '\\Trash', Junk: '\\Junk', Archive: '\\Archive' };
/** Types a browser may show inline without running anything. */
const INLINE_SAFE = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/bmp', 'image/avif', 'text/plain', 'application/pdf']);
const PART_URL_LIFETIME_MS = 12 * 3_600_000;
const SEARCH_BUDGET_MS = 5_000;
/** How long a phone set-up link (the QR code) works: long enough to find the phone. */
const SETUP_LINK_LIFETIME_MS = 15 * 60_000;

type Env = { Variables: { session: WebSession; mb: UserMailboxes }; Bindings: { incoming?: { socket?: { remoteAddress?: string } } } };

class ApiError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

const STORE_STATUS: Record<string, number> = {
  STORE_NO_FOLDER: 404,
  STORE_BAD_NAME: 400,
  STORE_FOLDER_EXISTS: 409,
  STORE_HAS_CHILDREN: 409,
  STORE_INBOX: 400,
  STORE_BAD_FLAG: 400,
  STORE_CLOSED: 503,
};

function peerOf(c: Context<Env>): string {
  return c.env?.incoming?.socket?.remoteAddress ?? 'unknown';
}

/**
 * Where this browser reached us, for links another device opens: the Host it used (the phone is
 * likely to reach the same name), https when the cookies are Secure or the request came that way.
 */
function publicOrigin(c: Context<Env>, secure: boolean): string {
  const url = new URL(c.req.url);
  const host = c.req.header('host') ?? url.host;
  const safeHost = /^[A-Za-z0-9.[\]:-]{1,300}$/.test(host) ? host : url.host;
  return `${secure || url.protocol === 'https:' ? 'https' : 'http'}://${safeHost}`;
}

function uidParam(c: Context<Env>): number {
  const raw = c.req.param('uid') ?? '';
  const uid = /^\d{1,10}$/.test(raw) ? Number(raw) : NaN;
  if (!(uid >= 1 && uid <= 0xffffffff)) throw new ApiError(404, 'no such message');
  return uid;
}

function folderParam(c: Context<Env>): string {
  const raw = c.req.param('folder');
  if (raw === undefined || raw === '') throw new ApiError(400, 'a folder name is needed');
  return raw.toUpperCase() === 'INBOX' ? 'INBOX' : raw;
}

function intQuery(c: Context<Env>, name: string, dflt: number, max: number): number {
  const raw = c.req.query(name);
  if (raw === undefined || raw === '') return dflt;
  if (!/^\d{1,9}$/.test(raw)) throw new ApiError(400, `${name} must be a whole number`);
  return Math.min(Number(raw), max);
}

async function jsonBody<T>(c: Context<Env>): Promise<T> {
  const type = c.req.header('content-type') ?? '';
  if (!/^application\/json\b/i.test(type)) throw new ApiError(415, 'send JSON (Content-Type: application/json)');
  try {
    const body = (await c.req.json()) as unknown;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Error('not an object');
    return body as T;
  } catch {
    throw new ApiError(400, 'the request body is not a JSON object');
  }
}

function uidList(value: unknown): number[] {
  if (!Array.isArray(value) || value.length === 0) throw new ApiError(400, 'uids must be a non-empty list of message numbers');
  if (value.length > 200_000) throw new ApiError(400, 'too many uids at once');
  for (const u of value) if (!Number.isInteger(u) || (u as number) < 1 || (u as number) > 0xffffffff) throw new ApiError(400, 'uids must be message numbers');
  return [...new Set(value as number[])];
}

function flagList(value: unknown, what: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.some((f) => typeof f !== 'string' || f.length > 128)) throw new ApiError(400, `${what} must be a list of flags`);
  const flags = value as string[];
  if (flags.some((f) => f.toLowerCase() === '\\recent')) throw new ApiError(400, '\\Recent cannot be set');
  return flags;
}

function toServerEvent(ev: ChangeEvent): ServerEvent {
  switch (ev.kind) {
    case 'added':
      return { kind: 'added', folder: ev.folder, uids: ev.records.map((r) => r.uid) };
    case 'flags':
      return { kind: 'flags', folder: ev.folder, changes: ev.records.map((r) => ({ uid: r.uid, flags: r.flags })) };
    case 'expunged':
      return { kind: 'expunged', folder: ev.folder, uids: ev.uids };
    case 'folders':
      return { kind: 'folders' };
  }
}

function serveAsset(c: Context<Env>, a: Asset | undefined): Response {
  if (!a) return c.text('not found', 404);
  const gz = /\bgzip\b/.test(c.req.header('accept-encoding') ?? '');
  const headers: Record<string, string> = {
    'Content-Type': a.type,
    'Cache-Control': c.req.query('v') === a.hash ? 'public, max-age=31536000, immutable' : 'no-cache',
    ETag: `"${a.hash}"`,
    Vary: 'Accept-Encoding',
  };
  if (c.req.header('if-none-match') === `"${a.hash}"`) return c.body(null, 304, headers);
  if (gz) headers['Content-Encoding'] = 'gzip';
  return c.body(new Uint8Array(gz ? a.gzip : a.body), 200, headers);
}

export function createWebmailApp(deps: WebmailDeps): WebmailApp {
  const log = named(deps.log, 'webmail');
  const now = deps.now ?? Date.now;
  const sessions = new SessionStore({ idleMs: deps.sessionIdleMs ?? 4 * 3_600_000, maxMs: deps.sessionMaxMs ?? 7 * 86_400_000, now });
  const cookieName = deps.secureCookies ? '__Host-hearth' : 'hearth';
  const prefs = new RemotePrefs(log);
  const streams = new Set<() => void>();
  /** The last search per session, so paging through results does not search again. */
  const lastSearch = new Map<string, { key: string; uids: number[]; partial: boolean; more: boolean }>();
  let assets: Promise<Assets> | undefined;
  const getAssets = (): Promise<Assets> => (assets ??= buildAssets(deps.ui));

  const app = new Hono<Env>() as unknown as Hono<Env> & WebmailApp;

  app.use(
    '*',
    secureHeaders({
      overwrite: false,
      strictTransportSecurity: deps.secureCookies ? 'max-age=31536000' : false,
      crossOriginEmbedderPolicy: false,
      xFrameOptions: 'SAMEORIGIN',
      referrerPolicy: 'no-referrer',
    }),
  );

  app.onError((err, c) => {
    if (err instanceof ApiError) return c.json({ error: err.message }, err.status as 400);
    if (err instanceof ComposeError) return c.json({ error: err.message }, err.status);
    if (err instanceof StoreError) {
      const status = STORE_STATUS[err.code] ?? 500;
      if (status === 500) log.error({ err: err.message, code: err.code }, 'store error');
      return c.json({ error: status === 500 ? 'the mail store failed; try again' : err.message }, status as 400);
    }
    const status = (err as { status?: number }).status;
    if (typeof status === 'number' && status >= 400 && status < 500) return c.json({ error: err.message || 'bad request' }, status as 400);
    log.error({ err: err instanceof Error ? err.stack : String(err), path: c.req.path }, 'webmail request failed');
    return c.json({ error: 'the server failed on this request; try again' }, 500);
  });
  if (deps.ops) app.route('/', deps.ops); // ops (issue 9): /metrics, /healthz
  if (deps.acme) app.route('/', deps.acme); // ops (issue 9): ACME HTTP-01 challenges
  app.notFound((c) => (c.req.path.startsWith('/api/') ? c.json({ error: 'no such endpoint' }, 404) : c.text('not found', 404)));

  // --- the API: no caching, sized bodies, origin and CSRF checks, sessions ---

  app.use('/api/*', async (c, next) => {
    await next();
    c.header('Cache-Control', 'no-store');
    c.header('Pragma', 'no-cache');
  });

  const small = bodyLimit({ maxSize: 1 << 20, onError: (c) => c.json({ error: 'request too large' }, 413) });
  // base64 grows attachments by 4/3; JSON and the text fields add a little more.
  const large = bodyLimit({ maxSize: Math.ceil(deps.maxMessageBytes * 1.4) + (256 << 10), onError: (c) => c.json({ error: `the message is larger than this server accepts (${Math.round(deps.maxMessageBytes / 1048576)} MB)` }, 413) });
  app.use('/api/*', (c, next) => (c.req.method === 'POST' ? (c.req.path === '/api/send' || c.req.path === '/api/drafts' ? large : small)(c, next) : next()));

  /** State changes only from our own pages: Origin (when sent) is this host, never a cross-site fetch. */
  const sameOrigin: MiddlewareHandler<Env> = async (c, next) => {
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
      const origin = c.req.header('origin');
      const host = c.req.header('host');
      if (origin !== undefined) {
        let ok = false;
        try {
          ok = origin !== 'null' && host !== undefined && new URL(origin).host === host;
        } catch {
          ok = false;
        }
        if (!ok) return c.json({ error: 'cross-origin request refused' }, 403);
      }
      const site = c.req.header('sec-fetch-site');
      if (site !== undefined && site !== 'same-origin' && site !== 'none') return c.json({ error: 'cross-site request refused' }, 403);
    }
    await next();
  };
  app.use('/api/*', sameOrigin);

  const currentSession = (c: Context<Env>): WebSession | undefined => sessions.get(getCookie(c, cookieName));

  /** Everything but login and session needs a session; POSTs also its CSRF token. */
  const requireSession: MiddlewareHandler<Env> = async (c, next) => {
    const s = currentSession(c);
    if (!s) return c.json({ error: 'not logged in' }, 401);
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD' && !sameToken(c.req.header('x-csrf-token'), s.csrf)) {
      return c.json({ error: 'missing or wrong CSRF token; reload the page' }, 403);
    }
    c.set('session', s);
    c.set('mb', await deps.mail.open({ user: s.user, domain: s.domain }));
    await next();
  };

  app.route(
    '/',
    autoconfigRoutes({
      settings: deps.client ?? defaultClientSettings(deps.hostname),
      sessionOf: (c) => currentSession(c as Context<Env>),
      setupLinkOwner: (token) => sessions.checkSetupLink(token),
    }),
  );

  app.post('/api/login', async (c) => {
    const body = await jsonBody<Partial<LoginRequest>>(c);
    if (typeof body.address !== 'string' || typeof body.password !== 'string' || body.address.length > 320 || body.password.length > 1024 || body.address.trim() === '') {
      throw new ApiError(400, 'address and password are needed');
    }
    const address = body.address.trim().toLowerCase();
    const peer = peerOf(c);
    const verdict = deps.limiter.check(peer, address);
    if (!verdict.allowed) {
      log.warn({ peer, user: address, reason: verdict.reason }, 'login refused: locked out after repeated failures');
      c.header('Retry-After', String(Math.ceil(verdict.retryAfterMs / 1000)));
      return c.json({ error: `too many failed logins; try again in ${Math.ceil(verdict.retryAfterMs / 60_000)} minutes` }, 429);
    }
    const box = await deps.authenticate(address, body.password);
    if (!box) {
      const delay = deps.limiter.failure(peer, address);
      log.info({ peer, user: address, delayMs: delay }, 'login failed');
      await sleep(delay);
      return c.json({ error: 'wrong address or password' }, 401);
    }
    deps.limiter.success(peer);
    const old = getCookie(c, cookieName);
    if (old) sessions.delete(old);
    const s = sessions.create(box);
    setCookie(c, cookieName, s.id, { httpOnly: true, sameSite: 'Strict', secure: deps.secureCookies, path: '/', maxAge: Math.floor((deps.sessionMaxMs ?? 7 * 86_400_000) / 1000) });
    log.info({ peer, user: s.address }, 'logged in');
    const mb = await deps.mail.open(box);
    await ensureSpecialFolders(mb).catch((err: unknown) => log.warn({ user: s.address, err: String(err) }, 'special folders not created'));
    warmInbox(mb);
    return c.json({ user: s.address, csrf: s.csrf } satisfies Session);
  });

  app.get('/api/session', (c) => {
    const s = currentSession(c);
    if (!s) return c.json({ error: 'not logged in' }, 401);
    // A page (re)loaded with a live session asks this first, then for the list: warm it (in
    // the background: this answer never waits for the store, nor fails with it).
    deps.mail.open({ user: s.user, domain: s.domain }).then(warmInbox, () => undefined);
    return c.json({ user: s.address, csrf: s.csrf } satisfies Session);
  });

  // Parts are also fetched by the sandboxed mail iframe, which sends no cookie: a signed URL does.
  app.get('/api/folders/:folder/messages/:uid/parts/:part', async (c) => {
    const folder = folderParam(c);
    const uid = uidParam(c);
    let box: { user: string; domain: string } | undefined;
    const s = currentSession(c);
    if (s) box = s;
    else {
      const address = sessions.checkPartUrl(c.req.query('t') ?? '', folder, uid);
      const at = address?.lastIndexOf('@') ?? -1;
      if (address && at > 0) box = { user: address.slice(0, at), domain: address.slice(at + 1) };
    }
    if (!box) return c.json({ error: 'not logged in' }, 401);
    const number = c.req.param('part');
    if (!PART_NUMBER.test(number)) throw new ApiError(400, 'a part number looks like 2 or 1.2');
    const mb = await deps.mail.open(box);
    const raw = await mb.readMessage(folder, uid);
    if (!raw) throw new ApiError(404, 'no such message');
    const parsed = parseMessage(raw);
    const part = partContent(raw, parsed.root, number);
    if (!part) throw new ApiError(404, 'no such part in this message');
    const safe = INLINE_SAFE.has(part.contentType);
    const inline = safe && (c.req.query('inline') === '1' || (!s && part.contentType.startsWith('image/')));
    let type = safe ? part.contentType : 'application/octet-stream';
    if (type === 'text/plain') type += `; charset=${/^[\w.:-]{1,40}$/.test(part.charset ?? '') ? part.charset : 'utf-8'}`;
    const headers: Record<string, string> = {
      'Content-Type': type,
      'Content-Disposition': contentDisposition(inline ? 'inline' : 'attachment', part.filename),
      'X-Content-Type-Options': 'nosniff',
      // The mail iframe has an opaque origin: let it load its own message's images.
      'Cross-Origin-Resource-Policy': 'cross-origin',
      'Cache-Control': 'no-store',
    };
    if (part.contentType !== 'application/pdf' || !inline) headers['Content-Security-Policy'] = PART_CSP;
    return c.body(new Uint8Array(part.body), 200, headers);
  });

  app.use('/api/*', async (c, next) => {
    if (c.req.path === '/api/login' || c.req.path === '/api/session') return next();
    return requireSession(c, next);
  });

  app.post('/api/logout', (c) => {
    const s = c.get('session');
    sessions.delete(s.id);
    lastSearch.delete(s.id);
    deleteCookie(c, cookieName, { path: '/', secure: deps.secureCookies });
    log.info({ user: s.address }, 'logged out');
    return c.json({ ok: true as const });
  });

  // --- setting up a phone (issue 9): a QR code of a link that works without the cookie ---

  app.get('/api/client/phone-setup', async (c) => {
    const s = c.get('session');
    const expiresAt = now() + SETUP_LINK_LIFETIME_MS;
    const url = `${publicOrigin(c, deps.secureCookies)}/api/client/mobileconfig?t=${sessions.signSetupLink(s.address, expiresAt)}`;
    const setup: PhoneSetup = { url, expiresAt, svg: await qrSvg(url) };
    return c.json(setup);
  });

  // --- folders ---

  app.get('/api/folders', async (c) => {
    const mb = c.get('mb');
    const infos = await mb.listFolders();
    const folders: Folder[] = [];
    for (const info of infos) {
      try {
        // After a restart the index file has the counts while the folder still loads (peekNewest).
        const peek = await mb.peekNewest(info.name, 0, 0, { unseen: true });
        const st = peek ? { messages: peek.total, unseen: peek.unseen ?? 0 } : await mb.folderStatus(info.name);
        const f: Folder = { name: info.name, total: st.messages, unseen: st.unseen };
        const special = SPECIAL_USE[info.name];
        if (special) f.specialUse = special;
        folders.push(f);
      } catch (err) {
        if (!(err instanceof StoreError && err.code === 'STORE_NO_FOLDER')) throw err;
      }
    }
    const rank = (n: string): number => (n === 'INBOX' ? 0 : SPECIAL_FOLDERS.includes(n as (typeof SPECIAL_FOLDERS)[number]) ? 1 + SPECIAL_FOLDERS.indexOf(n as (typeof SPECIAL_FOLDERS)[number]) : 10);
    folders.sort((a, b) => rank(a.name) - rank(b.name) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return c.json(folders);
  });

  app.post('/api/folders', async (c) => {
    const body = await jsonBody<{ name?: unknown }>(c);
    if (typeof body.name !== 'string' || body.name.trim() === '') throw new ApiError(400, 'a folder name is needed');
    await c.get('mb').createFolder(body.name.trim());
    return c.json({ ok: true as const });
  });

  app.post('/api/folders/:folder/rename', async (c) => {
    const body = await jsonBody<{ to?: unknown }>(c);
    if (typeof body.to !== 'string' || body.to.trim() === '') throw new ApiError(400, 'the new name is needed');
    await c.get('mb').renameFolder(folderParam(c), body.to.trim());
    return c.json({ ok: true as const });
  });

  app.post('/api/folders/:folder/remove', async (c) => {
    await c.get('mb').deleteFolder(folderParam(c));
    return c.json({ ok: true as const });
  });

  // --- lists and messages ---

  app.get('/api/folders/:folder/messages', async (c) => {
    const folder = folderParam(c);
    const mb = c.get('mb');
    const thread = c.req.query('thread');
    if (thread !== undefined) {
      const list = await threadMembers(deps.summaries, mb, folder, await mb.syncShared(folder), thread, (raw) => parseMessage(raw).text);
      if (!list) throw new ApiError(404, 'no such conversation in this folder');
      return c.json(list);
    }
    const offset = intQuery(c, 'offset', 0, 1e9);
    const limit = intQuery(c, 'limit', 50, MAX_PAGE);
    if (c.req.query('threads') === '1') return c.json(await threadPage(deps.summaries, mb, folder, await mb.syncShared(folder), offset, limit));
    return c.json(await listNewest(deps.summaries, mb, folder, offset, limit));
  });

  /** The message's bytes and index record, through the user's own mailboxes only. */
  const loadMessage = async (c: Context<Env>): Promise<{ folder: string; uid: number; rec: MessageRecord; raw: Buffer; mb: UserMailboxes }> => {
    const folder = folderParam(c);
    const uid = uidParam(c);
    const mb = c.get('mb');
    const state = await mb.syncShared(folder);
    const rec = findRecord(state, uid);
    const raw = rec ? await mb.readMessage(folder, uid) : null;
    if (!rec || !raw) throw new ApiError(404, 'no such message in this folder');
    return { folder, uid, rec, raw, mb };
  };

  const partUrl = (s: WebSession, folder: string, uid: number) => (part: string): string =>
    `/api/folders/${encodeURIComponent(folder)}/messages/${uid}/parts/${part}?t=${sessions.signPartUrl(s.address, folder, uid, now() + PART_URL_LIFETIME_MS)}`;

  app.get('/api/folders/:folder/messages/:uid', async (c) => {
    const { folder, uid, rec, raw, mb } = await loadMessage(c);
    const parsed = parseMessage(raw);
    const summary = toSummary(rec, await deps.summaries.get(mb, folder, rec).catch(() => null));
    const h = parsed.headers;
    let hasRemoteContent = false;
    if (parsed.html) {
      const probe = sanitizeMailHtml(parsed.html, { remote: false, cidUrl: () => undefined });
      hasRemoteContent = probe.remoteFound > 0;
    }
    const sender = summary.from[0]?.address ?? '';
    const view: MessageView = {
      ...summary,
      from: parseAddresses(header(h, 'from')),
      to: parseAddresses(header(h, 'to')),
      cc: parseAddresses(header(h, 'cc')),
      replyTo: parseAddresses(header(h, 'reply-to')),
      subject: decodeWords(header(h, 'subject') ?? ''),
      messageId: messageIds(header(h, 'message-id'))[0] ?? '',
      inReplyTo: messageIds(header(h, 'in-reply-to'))[0] ?? '',
      references: messageIds(header(h, 'references')),
      text: parsed.text,
      hasHtml: parsed.html !== '',
      hasRemoteContent,
      remoteAllowed: sender !== '' && (await prefs.allowed(mb, sender)),
      attachments: parsed.attachments,
    };
    return c.json(view);
  });

  app.get('/api/folders/:folder/messages/:uid/html', async (c) => {
    const { folder, uid, raw, mb } = await loadMessage(c);
    const parsed = parseMessage(raw);
    if (!parsed.html) throw new ApiError(404, 'this message has no HTML part');
    const sender = parseAddresses(header(parsed.headers, 'from'))[0]?.address ?? '';
    const remote = c.req.query('remote') === '1' || (sender !== '' && (await prefs.allowed(mb, sender)));
    const url = partUrl(c.get('session'), folder, uid);
    const out = sanitizeMailHtml(parsed.html, { remote, cidUrl: (cid) => (parsed.cids.has(cid) ? url(parsed.cids.get(cid)!) : undefined) });
    return c.body(mailDocument(out.html), 200, {
      'Content-Type': 'text/html; charset=utf-8',
      'Content-Security-Policy': remote ? HTML_MAIL_CSP_REMOTE : HTML_MAIL_CSP,
      'X-Content-Type-Options': 'nosniff',
    });
  });

  app.get('/api/folders/:folder/messages/:uid/source', async (c) => {
    const { raw } = await loadMessage(c);
    return c.body(new Uint8Array(raw), 200, {
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Disposition': 'inline; filename="message.eml"',
      'X-Content-Type-Options': 'nosniff',
      'Content-Security-Policy': PART_CSP,
    });
  });

  // --- acting on messages ---

  /** Refuse a request none of whose UIDs is in the folder (someone else's, or gone). */
  const knownUids = async (mb: UserMailboxes, folder: string, uids: number[]): Promise<number[]> => {
    const state = await mb.syncShared(folder);
    const known = uids.filter((u) => findRecord(state, u) !== undefined);
    if (known.length === 0) throw new ApiError(404, 'none of these messages is in this folder');
    return known;
  };

  app.post('/api/folders/:folder/flags', async (c) => {
    const folder = folderParam(c);
    const body = await jsonBody<{ uids?: unknown; add?: unknown; remove?: unknown }>(c);
    const uids = uidList(body.uids);
    const add = flagList(body.add, 'add');
    const remove = flagList(body.remove, 'remove');
    const mb = c.get('mb');
    const known = await knownUids(mb, folder, uids);
    if (add.length) await mb.setFlags(folder, known, 'add', add);
    if (remove.length) await mb.setFlags(folder, known, 'remove', remove);
    return c.json({ ok: true as const });
  });

  app.post('/api/folders/:folder/move', async (c) => {
    const folder = folderParam(c);
    const body = await jsonBody<{ uids?: unknown; to?: unknown }>(c);
    const uids = uidList(body.uids);
    if (typeof body.to !== 'string' || body.to === '') throw new ApiError(400, 'to: the folder to move to');
    const to = body.to.toUpperCase() === 'INBOX' ? 'INBOX' : body.to;
    if (to === folder) throw new ApiError(400, 'the messages are already in that folder');
    const mb = c.get('mb');
    const known = await knownUids(mb, folder, uids);
    await mb.folderStatus(to); // a missing target is a 404, before anything moves
    await mb.move(folder, known, to);
    return c.json({ ok: true as const });
  });

  app.post('/api/folders/:folder/delete', async (c) => {
    const folder = folderParam(c);
    const body = await jsonBody<{ uids?: unknown }>(c);
    const uids = uidList(body.uids);
    const mb = c.get('mb');
    const known = await knownUids(mb, folder, uids);
    if (folder === 'Trash') {
      await mb.setFlags(folder, known, 'add', ['\\Deleted']);
      await mb.expunge(folder, known);
    } else {
      await ensureFolder(mb, 'Trash');
      await mb.move(folder, known, 'Trash');
    }
    return c.json({ ok: true as const });
  });

  // --- search ---

  app.get('/api/search', async (c) => {
    const folder = (c.req.query('folder') ?? 'INBOX').toUpperCase() === 'INBOX' ? 'INBOX' : (c.req.query('folder') as string);
    const q = c.req.query('q') ?? '';
    const offset = intQuery(c, 'offset', 0, 1e9);
    const limit = intQuery(c, 'limit', 50, MAX_PAGE);
    const query = parseQuery(q);
    if ('error' in query) throw new ApiError(400, query.error);
    const mb = c.get('mb');
    const s = c.get('session');
    const state = await mb.syncShared(folder);
    const last = state.messages[state.messages.length - 1];
    const key = `${folder}\0${q}\0${state.uidValidity}\0${state.messages.length}\0${last?.uid ?? 0}\0${state.highestModseq}`;
    // Matches up to one past the page: enough to show it and to know whether more follow.
    const want = offset + limit + 1;
    let hit = lastSearch.get(s.id);
    if (hit?.key !== key || (hit.more && !hit.partial && hit.uids.length < want)) {
      const signal = AbortSignal.timeout(SEARCH_BUDGET_MS);
      const readBody = async (rec: MessageRecord): Promise<string> => {
        const raw = await mb.readMessage(folder, rec.uid);
        return raw ? bodyTextFromRawSync(raw) : '';
      };
      // Further pages of the same search: ask for at least twice as many as last time, so
      // scrolling a long result searches again only a few times. They go on below the last
      // match found rather than start again: the pages shown stay as they were, even when the
      // index has learned meanwhile about messages that were checked without it.
      const before = hit?.key === key ? hit.uids : [];
      const ask = before.length > 0 ? Math.max(want, before.length * 2) : want;
      const found = await searchUids(deps.summaries, mb, folder, state, query, readBody, { signal, want: ask - before.length, belowUid: before.at(-1) });
      // Messages the index does not hold yet (a folder never searched): have them indexed soon.
      if (found.unindexed > 0) indexFolderSoon(mb, folder);
      hit = { key, uids: before.length > 0 ? [...before, ...found.uids] : found.uids, partial: found.partial, more: found.more };
      lastSearch.set(s.id, hit);
    }
    const page = hit.uids.slice(offset, offset + limit).map((u) => findRecord(state, u)).filter((r): r is MessageRecord => r !== undefined);
    const list: MessageList = { folder, total: hit.uids.length, offset, messages: await summarize(deps.summaries, mb, folder, page) };
    if (hit.partial) list.partial = true;
    if (hit.more) list.more = true;
    return c.json(list);
  });

  // --- writing ---

  const composeFor = async (c: Context<Env>, req: ComposeRequest) => {
    const s = c.get('session');
    const mb = c.get('mb');
    let forwarded: { raw: Buffer; subject: string } | undefined;
    if (req.forwardOf !== undefined) {
      const f = req.forwardOf;
      if (typeof f !== 'object' || f === null || typeof f.folder !== 'string' || !Number.isInteger(f.uid)) throw new ApiError(400, 'forwardOf needs folder and uid');
      const raw = await mb.readMessage(f.folder.toUpperCase() === 'INBOX' ? 'INBOX' : f.folder, f.uid);
      if (!raw) throw new ApiError(404, 'the message to forward is not there');
      forwarded = { raw, subject: decodeWords(header(parseMessage(raw).headers, 'subject') ?? '') };
    }
    const built = await compose(req, { address: s.address }, deps.hostname, forwarded);
    if (built.message.length > deps.maxMessageBytes) throw new ComposeError(`the message is larger than this server accepts (${Math.round(deps.maxMessageBytes / 1048576)} MB)`, 413);
    return built;
  };

  const dropDraft = async (mb: UserMailboxes, uid: unknown): Promise<void> => {
    if (uid === undefined) return;
    if (!Number.isInteger(uid) || (uid as number) < 1) throw new ApiError(400, 'replaceUid must be a message number');
    try {
      await mb.setFlags('Drafts', [uid as number], 'add', ['\\Deleted']);
      await mb.expunge('Drafts', [uid as number]);
    } catch (err) {
      if (!(err instanceof StoreError && err.code === 'STORE_NO_FOLDER')) throw err;
    }
  };

  app.post('/api/send', async (c) => {
    const req = await jsonBody<ComposeRequest & { replaceUid?: number }>(c);
    const s = c.get('session');
    const mb = c.get('mb');
    const built = await composeFor(c, req);
    if (built.recipients.length === 0) throw new ApiError(400, 'add at least one recipient');
    let result: { queueId?: string };
    try {
      result = await deps.pipeline.submit({ user: { user: s.user, domain: s.domain, address: s.address }, sender: s.address, recipients: built.recipients.map((address) => ({ address })), message: built.message });
    } catch (err) {
      const code = (err as { responseCode?: number }).responseCode;
      if (typeof code === 'number') {
        const text = (err as Error).message.replace(/^\d\.\d{1,3}\.\d{1,3} /, '');
        return c.json({ error: text }, code >= 500 ? 400 : 503);
      }
      throw err;
    }
    await ensureFolder(mb, 'Sent');
    await mb.append('Sent', built.copy, { flags: ['\\Seen'] });
    await dropDraft(mb, req.replaceUid);
    log.info({ user: s.address, recipients: built.recipients.length, queueId: result.queueId }, 'sent from webmail');
    return c.json(result.queueId ? { ok: true as const, queueId: result.queueId } : { ok: true as const });
  });

  app.post('/api/drafts', async (c) => {
    const req = await jsonBody<ComposeRequest & { replaceUid?: number }>(c);
    const mb = c.get('mb');
    const built = await composeFor(c, req);
    await ensureFolder(mb, 'Drafts');
    const rec = await mb.append('Drafts', built.copy, { flags: ['\\Draft', '\\Seen'] });
    if (req.replaceUid !== rec.uid) await dropDraft(mb, req.replaceUid);
    return c.json({ uid: rec.uid });
  });

  app.post('/api/senders/remote-content', async (c) => {
    const body = await jsonBody<{ address?: unknown; allow?: unknown }>(c);
    if (typeof body.address !== 'string' || !/^[^\s@]{1,64}@[^\s@]{1,255}$/.test(body.address) || typeof body.allow !== 'boolean') {
      throw new ApiError(400, 'address (an e-mail address) and allow (true or false) are needed');
    }
    await prefs.set(c.get('mb'), body.address, body.allow);
    return c.json({ ok: true as const });
  });

  // --- live updates ---

  app.get('/api/events', (c) => {
    const s = c.get('session');
    const mb = c.get('mb');
    return streamSSE(c, async (stream) => {
      let id = 0;
      const onChange = (ev: ChangeEvent): void => {
        void stream.writeSSE({ event: 'change', id: String(++id), data: JSON.stringify(toServerEvent(ev)) }).catch(() => undefined);
      };
      let finish!: () => void;
      const done = new Promise<void>((resolve) => (finish = resolve));
      mb.on('change', onChange);
      streams.add(finish);
      const beat = setInterval(() => {
        if (!sessions.alive(s.id)) return finish();
        void stream.write(': keep-alive\n\n').catch(() => finish());
      }, deps.heartbeatMs ?? 25_000);
      stream.onAbort(() => finish());
      // A first comment so proxies and the browser see the stream open at once.
      await stream.write(': hearth events\n\n');
      await done;
      clearInterval(beat);
      mb.off('change', onChange);
      streams.delete(finish);
    });
  });

  // --- the UI ---

  app.get('/', async (c) => {
    const html = shellHtml(await getAssets());
    return c.html(html, 200, { 'Content-Security-Policy': SHELL_CSP, 'Cache-Control': 'no-cache' });
  });
  app.get('/assets/app.js', async (c) => serveAsset(c, (await getAssets()).js));
  app.get('/assets/app.css', async (c) => serveAsset(c, (await getAssets()).css));

  app.sessions = sessions;
  app.assets = getAssets;
  app.shutdown = () => {
    for (const end of [...streams]) end();
  };
  return app;
}

/**
 * Start reading the INBOX's index into memory now, without waiting: after a restart, a big
 * folder takes tens of milliseconds to load, and the browser asks for the list right after
 * login (or /api/session), so the load overlaps the browser's round trip and rendering.
 */
function warmInbox(mb: UserMailboxes): void {
  if (mb.uidValidity('INBOX') !== undefined) return; // already in memory
  void mb.syncShared('INBOX').catch(() => undefined);
}

async function ensureFolder(mb: UserMailboxes, name: string): Promise<void> {
  try {
    await mb.createFolder(name);
  } catch (err) {
    if (!(err instanceof StoreError && err.code === 'STORE_FOLDER_EXISTS')) throw err;
  }
}

async function ensureSpecialFolders(mb: UserMailboxes): Promise<void> {
  const have = new Set((await mb.listFolders()).map((f) => f.name));
  for (const name of SPECIAL_FOLDERS) if (!have.has(name)) await ensureFolder(mb, name);
}

export type RunningWebmail = { port: number; close(): Promise<void>; app: WebmailApp; /** ops (issue 9): certificate reload */ server: Server };

/** Listen (HTTPS when `tls` is given); the UI is built before the first request is answered. */
export async function startWebmail(deps: WebmailDeps & { listen: { host: string; port: number }; tls?: { key: Buffer | string; cert: Buffer | string } }): Promise<RunningWebmail> {
  const app = createWebmailApp(deps);
  const built = await app.assets();
  if (built.error) deps.log.warn({ svc: 'webmail' }, built.error);
  const server = await new Promise<Server>((resolve, reject) => {
    const options = deps.tls
      ? { fetch: app.fetch, port: deps.listen.port, hostname: deps.listen.host, createServer: createHttpsServer, serverOptions: { key: deps.tls.key, cert: deps.tls.cert } }
      : { fetch: app.fetch, port: deps.listen.port, hostname: deps.listen.host };
    const s = serve(options, () => resolve(s as Server)) as Server;
    s.once('error', reject);
  });
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    port,
    app,
    server, // ops (issue 9)
    close() {
      closing ??= new Promise<void>((resolve) => {
        app.shutdown();
        server.close(() => resolve());
        server.closeIdleConnections();
        // SSE streams and keep-alive sockets: nothing in flight is worth waiting for here.
        setTimeout(() => server.closeAllConnections(), 1000).unref();
      });
      return closing;
    },
  };
}
