// A webmail over real parts on a temp directory: MaildirStore, MailStore (with its full-text
// index), the Directory with alice and bob, the submission pipeline (remote mail goes to a
// recording queue), and optionally an inbound SMTP listener that tells the store about
// deliveries, as src/main.ts wires them. Tests talk to it with app.request().
import { join } from 'node:path';
import { silentLogger } from '../../src/core/log.ts';
import { LoginLimiter } from '../../src/core/login-limiter.ts';
import type { LoginLimiterOptions } from '../../src/core/login-limiter.ts';
import { Directory } from '../../src/config/directory.ts';
import { SummaryProvider } from '../../src/imap/message-info.ts';
import { InboundSmtp } from '../../src/smtp/inbound.ts';
import { SubmissionPipeline } from '../../src/smtp/submission.ts';
import { MaildirStore } from '../../src/store/maildir.ts';
import { MailStore } from '../../src/store/mailboxes.ts';
import { createWebmailApp } from '../../src/webmail/server.ts';
import type { WebmailApp, WebmailDeps } from '../../src/webmail/server.ts';
import { makeSetup } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';

export type Queued = { from: string; recipients: string[]; content: Buffer };

export type Harness = {
  setup: TestSetup;
  maildir: MaildirStore;
  mail: MailStore;
  directory: Directory;
  summaries: SummaryProvider;
  pipeline: SubmissionPipeline;
  limiter: LoginLimiter;
  queued: Queued[];
  app: WebmailApp;
  deps: WebmailDeps;
  /** Deliver a raw message to a local user's folder through the store (as SMTP would). */
  deliver(address: string, raw: string | Buffer, folder?: string): Promise<void>;
  smtp?: { port: number; close(): Promise<void> };
  close(): Promise<void>;
};

export async function makeHarness(opts: { limiter?: LoginLimiterOptions; smtp?: boolean; deps?: Partial<WebmailDeps> } = {}): Promise<Harness> {
  const setup = await makeSetup({ fsync: false });
  const log = silentLogger();
  const maildir = new MaildirStore({ root: setup.dataDir, hostname: 'mx.test.example', fsync: false, log });
  const mail = new MailStore({ maildir, log });
  const directory = await Directory.open({ configDir: setup.configDir, domains: ['example.test', 'family.test'], log, watch: false });
  const summaries = new SummaryProvider({ log });
  const queued: Queued[] = [];
  let n = 0;
  const pipeline = new SubmissionPipeline({
    hostname: 'mx.test.example',
    log,
    directory,
    store: maildir,
    queue: {
      async enqueue(envelope, content) {
        queued.push({ from: envelope.from, recipients: envelope.recipients.map((r) => r.address), content: Buffer.from(content) });
        return `Q${++n}`;
      },
    },
    onDelivered: (boxes) => {
      for (const box of boxes) void mail.notifyDelivered(box);
    },
  });
  const limiter = new LoginLimiter({ baseDelayMs: 0, maxDelayMs: 0, ...opts.limiter });
  const deps: WebmailDeps = {
    log,
    hostname: 'mx.test.example',
    authenticate: async (address, password) => {
      const r = await directory.authenticate(address, password);
      return r ? { user: r.user, domain: r.domain } : null;
    },
    limiter,
    mail,
    summaries,
    pipeline,
    secureCookies: false,
    maxMessageBytes: 10 << 20,
    ...opts.deps,
  };
  const app = createWebmailApp(deps);
  let smtp: Harness['smtp'];
  if (opts.smtp) {
    const inbound = new InboundSmtp({
      hostname: 'mx.test.example',
      log,
      directory,
      store: maildir,
      tls: 'plain',
      maxMessageBytes: 10 << 20,
      maxRecipients: 100,
      connectionsPerIp: 10,
      maxConnections: 10,
      idleTimeoutMs: 30_000,
      closeTimeoutMs: 1000,
      onDelivered: (boxes) => {
        for (const box of boxes) void mail.notifyDelivered(box, box.folder);
      },
    });
    const bound = await inbound.listen(0, '127.0.0.1');
    smtp = { port: bound.port, close: () => inbound.close() };
  }
  return {
    setup,
    maildir,
    mail,
    directory,
    summaries,
    pipeline,
    limiter,
    queued,
    app,
    deps,
    smtp,
    async deliver(address, raw, folder) {
      const [user, domain] = address.split('@');
      await maildir.deliver([{ user, domain, folder }], typeof raw === 'string' ? Buffer.from(raw.replace(/\r?\n/g, '\r\n')) : raw);
      await mail.notifyDelivered({ user, domain }, folder ?? 'INBOX');
    },
    async close() {
      app.shutdown();
      await smtp?.close();
      await mail.close();
      await directory.close();
      await setup.cleanup();
    },
  };
}

export type Login = { cookie: string; csrf: string; user: string };

/** A client of the app: JSON in and out, with the session cookie and CSRF token when given. */
export function client(app: WebmailApp) {
  const request = async (method: string, path: string, opts: { body?: unknown; login?: Login; csrf?: string | null; headers?: Record<string, string> } = {}): Promise<Response> => {
    const headers: Record<string, string> = { host: 'mail.test.example', ...opts.headers };
    if (opts.login) headers.cookie = opts.login.cookie;
    const csrf = opts.csrf === undefined ? opts.login?.csrf : opts.csrf;
    if (method !== 'GET' && csrf) headers['x-csrf-token'] = csrf;
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['content-type'] ??= 'application/json';
    }
    return app.request(`http://mail.test.example${path}`, { method, headers, body });
  };
  return {
    request,
    async login(address: string, password: string): Promise<Login> {
      const res = await request('POST', '/api/login', { body: { address, password } });
      if (res.status !== 200) throw new Error(`login failed: ${res.status} ${await res.text()}`);
      const set = res.headers.get('set-cookie') ?? '';
      const s = (await res.json()) as { user: string; csrf: string };
      return { cookie: set.split(';')[0], csrf: s.csrf, user: s.user };
    },
    async json<T>(method: string, path: string, login: Login, body?: unknown): Promise<{ status: number; body: T }> {
      const res = await request(method, path, { login, body });
      return { status: res.status, body: (await res.json()) as T };
    },
  };
}

export const fixture = (name: string): string => join(import.meta.dirname, '..', 'fixtures', name);

/** A small message in CRLF form. */
export function message(opts: { from?: string; to?: string; subject?: string; body?: string; id?: string; inReplyTo?: string; references?: string; date?: string; headers?: string } = {}): string {
  const lines = [
    `From: ${opts.from ?? 'Carol Sender <carol@remote.example>'}`,
    `To: ${opts.to ?? 'alice@example.test'}`,
    `Subject: ${opts.subject ?? 'Hello'}`,
    `Date: ${opts.date ?? 'Mon, 02 Mar 2026 10:00:00 +0000'}`,
    `Message-ID: ${opts.id ?? `<${Math.random().toString(36).slice(2)}@remote.example>`}`,
  ];
  if (opts.inReplyTo) lines.push(`In-Reply-To: ${opts.inReplyTo}`);
  if (opts.references) lines.push(`References: ${opts.references}`);
  if (opts.headers) lines.push(opts.headers.trimEnd());
  return `${lines.join('\r\n')}\r\n\r\n${(opts.body ?? 'Hi Alice,\nhow are you?\n').replace(/\r?\n/g, '\r\n')}`;
}
