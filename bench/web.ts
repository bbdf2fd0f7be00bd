// Webmail benchmark (issue 8): on a Maildir of 100,000 messages, the server side of the JSON
// API, measured in process with app.request() (routing, session, store, summaries, JSON; no
// socket): the first message-list page cold (index built from the Maildir, no summary cached),
// after a restart (answered from the index file while the folder loads behind it) and warm; list
// pages p50/p99 (pages never seen, whose 50 summaries are parsed, and pages seen before); search
// p50/p99 over the full-text index; and the JS+CSS the browser downloads, gzip. Figures are
// printed with the targets beside them.
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { silentLogger } from '../src/core/log.ts';
import { LoginLimiter } from '../src/core/login-limiter.ts';
import { SummaryProvider } from '../src/imap/message-info.ts';
import { MaildirStore } from '../src/store/maildir.ts';
import { MailStore } from '../src/store/mailboxes.ts';
import { userSearch } from '../src/store/user-search.ts';
import { buildAssets } from '../src/webmail/assets.ts';
import { createWebmailApp } from '../src/webmail/server.ts';
import type { WebmailApp } from '../src/webmail/server.ts';
import type { MessageList } from '../src/webmail/api-types.ts';
import { RARE_WORD, bodyText, commonHeaders, fillInbox } from './mailbox-fill.ts';

const HELP = `npm run bench -- web [options]
  --messages N   messages in the INBOX (default 100000; filling takes 10 s to a few minutes)
  --runs K       samples per measured operation (default 200)
  --keep         leave the temporary Maildir in place
  --reuse DIR    use a Maildir kept by --keep (no fill; the "cold" figures are then not cold)`;


const out = (s: string): void => void process.stdout.write(s + '\n');
const ms = (v: number): string => `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms`;
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length - 1) * p))];
};

function row(label: string, value: string, target?: { limit: number; unit: 'ms' | 'KB'; measured: number }): void {
  let line = `  ${label.padEnd(58)} ${value}`;
  if (target) line += `   target < ${target.limit} ${target.unit}: ${target.measured <= target.limit ? 'met' : 'MISSED'}`;
  out(line);
}

/** A plausible message of 1.5 to 5.5 KB; every 100th has RARE_WORD in its body, every 50th an attachment. */
function message(i: number, date: Date): string {
  const attach = i % 50 === 0;
  const head =
    commonHeaders(i, date) +
    (i % 5 === 1 ? `In-Reply-To: <${i - 1}.bench@remote.example>\r\nReferences: <${i - 1}.bench@remote.example>\r\n` : '') +
    `MIME-Version: 1.0\r\n` +
    (attach ? 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n' : 'Content-Type: text/plain; charset=utf-8\r\n\r\n');
  const tail = attach ? '\r\n--b\r\nContent-Type: application/pdf; name="a.pdf"\r\nContent-Disposition: attachment; filename="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n' : '';
  return head + bodyText(i, head.length) + '\r\n' + tail;
}

type Client = { app: WebmailApp; mail: MailStore; cookie: string; get(path: string): Promise<{ ms: number; body: unknown }> };

async function start(root: string): Promise<Client> {
  const log = silentLogger();
  const maildir = new MaildirStore({ root, fsync: false, log });
  const mail = new MailStore({ maildir, log });
  const app = createWebmailApp({
    log,
    hostname: 'bench.example',
    authenticate: async (address, password) => (address === 'bench@example.test' && password === 'bench' ? { user: 'bench', domain: 'example.test' } : null),
    limiter: new LoginLimiter(),
    mail,
    summaries: new SummaryProvider({ log }),
    pipeline: { submit: async () => ({ local: 0, remote: 0 }) },
    secureCookies: false,
    maxMessageBytes: 25 << 20,
  });
  const login = await app.request('http://bench/api/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ address: 'bench@example.test', password: 'bench' }) });
  if (login.status !== 200) throw new Error(`login: ${login.status}`);
  const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0];
  return {
    app,
    mail,
    cookie,
    async get(path) {
      const t0 = performance.now();
      const res = await app.request(`http://bench${path}`, { headers: { cookie } });
      const body = (await res.json()) as unknown;
      const t = performance.now() - t0;
      if (res.status !== 200) throw new Error(`${path}: ${res.status} ${JSON.stringify(body)}`);
      return { ms: t, body };
    },
  };
}

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { messages: { type: 'string', default: '100000' }, runs: { type: 'string', default: '200' }, keep: { type: 'boolean', default: false }, reuse: { type: 'string' }, help: { type: 'boolean', default: false } } });
  if (values.help) return void out(HELP);
  const count = Number(values.messages);
  const runs = Number(values.runs);
  const root = values.reuse ?? (await mkdtemp(join(tmpdir(), 'hearth-bench-web-')));
  const dataRoot = join(root, 'maildir');
  await mkdir(dataRoot, { recursive: true });
  await writeFile(join(root, 'README'), 'hearth webmail benchmark data\n');
  const keep = values.keep || values.reuse !== undefined;
  try {
    out(`webmail benchmark: ${count.toLocaleString('en')} messages, ${runs} samples per figure (server side, in process)`);
    if (values.reuse) out(`  reusing ${dataRoot}`);
    else await fillInbox(new MaildirStore({ root: dataRoot, fsync: false, log: silentLogger() }), 'bench', count, 'INBOX', message);

    // --- message lists ---
    let c = await start(dataRoot);
    const first = await c.get('/api/folders/INBOX/messages?offset=0&limit=50');
    const total = (first.body as MessageList).total;
    if (total !== count) throw new Error(`expected ${count} messages, the list says ${total}`);
    row('first list page, cold (index built from the Maildir)', ms(first.ms));
    // Opening the folder queued its full-text indexing in the background; let it finish so the
    // figures below are the steady state (a fresh install pays this once).
    const search0 = userSearch(await c.mail.open({ user: 'bench', domain: 'example.test' }));
    if (search0) {
      const t0 = performance.now();
      await search0.idle();
      row('full-text index built in the background (once)', `${((performance.now() - t0) / 1000).toFixed(1)} s more`);
    }
    const second = await c.get('/api/folders/INBOX/messages?offset=0&limit=50');
    row('first list page, 2nd request (one more scan of new/ and cur/)', ms(second.ms));
    const firstWarm: number[] = [];
    for (let i = 0; i < 20; i++) firstWarm.push((await c.get('/api/folders/INBOX/messages?offset=0&limit=50')).ms);
    row('first list page, warm p50', ms(pct(firstWarm, 0.5)), { limit: 50, unit: 'ms', measured: pct(firstWarm, 0.5) });

    const offsets = Array.from({ length: runs }, (_, i) => (Math.floor((i * 7919) % Math.max(1, count / 50 - 1)) + 1) * 50);
    const fresh: number[] = [];
    for (const o of offsets) fresh.push((await c.get(`/api/folders/INBOX/messages?offset=${o}&limit=50`)).ms);
    row('list page of 50, never seen (summaries parsed) p50', ms(pct(fresh, 0.5)), { limit: 50, unit: 'ms', measured: pct(fresh, 0.5) });
    row('list page of 50, never seen (summaries parsed) p99', ms(pct(fresh, 0.99)));
    const seen: number[] = [];
    for (const o of offsets) seen.push((await c.get(`/api/folders/INBOX/messages?offset=${o}&limit=50`)).ms);
    row('list page of 50, seen before (summaries cached) p50', ms(pct(seen, 0.5)), { limit: 50, unit: 'ms', measured: pct(seen, 0.5) });
    row('list page of 50, seen before (summaries cached) p99', ms(pct(seen, 0.99)), { limit: 50, unit: 'ms', measured: pct(seen, 0.99) });

    await c.mail.close();
    // The store alone, for comparison (no webmail code runs): reading the folder's index back,
    // and the newest page straight from the index file, as the first list after a restart does.
    const bareStore = (): MailStore => new MailStore({ maildir: new MaildirStore({ root: dataRoot, fsync: false, log: silentLogger() }), log: silentLogger(), fullText: false });
    let bare = bareStore();
    let bareBox = await bare.open({ user: 'bench', domain: 'example.test' });
    const tLoad = performance.now();
    await bareBox.syncShared('INBOX');
    const storeLoad = performance.now() - tLoad;
    await bare.close();
    bare = bareStore();
    bareBox = await bare.open({ user: 'bench', domain: 'example.test' });
    const tPeek = performance.now();
    const peeked = await bareBox.peekNewest('INBOX', 0, 50);
    const storePeek = performance.now() - tPeek;
    await bare.close();
    c = await start(dataRoot); // the login starts reading the INBOX back, without waiting for it
    const restart = await c.get('/api/folders/INBOX/messages?offset=0&limit=50');
    row('first list page after a restart (index read back)', ms(restart.ms), { limit: 50, unit: 'ms', measured: restart.ms });
    const again = await c.get('/api/folders/INBOX/messages?offset=0&limit=50');
    row('  the same page again at once (the INBOX may still be loading)', ms(again.ms));
    row('  the store alone reading the INBOX index back (no webmail)', ms(storeLoad));
    row('  the store alone, newest 50 from the index file (peekNewest)', peeked ? ms(storePeek) : 'n/a: the index was not known current');

    // --- conversations (first grouping reads every summary: a one-off per folder and process) ---
    const threadsCold = await c.get('/api/folders/INBOX/messages?offset=0&limit=50&threads=1');
    row('conversation list, first (all summaries read)', ms(threadsCold.ms));
    const threadsWarm: number[] = [];
    for (let i = 0; i < Math.min(runs, 50); i++) threadsWarm.push((await c.get(`/api/folders/INBOX/messages?offset=${i * 50}&limit=50&threads=1`)).ms);
    row('conversation list page, warm p50', ms(pct(threadsWarm, 0.5)), { limit: 50, unit: 'ms', measured: pct(threadsWarm, 0.5) });

    // --- search ---
    const mb = await c.mail.open({ user: 'bench', domain: 'example.test' });
    const search = userSearch(mb);
    if (search) {
      search.schedule('INBOX'); // a catch-up after the restart: nothing to add
      await search.idle();
    }
    const queries = [RARE_WORD, 'budget', 'from:sender42', 'subject:weekly', `${RARE_WORD} review`, 'number 4242', 'invoice travel'];
    const times: number[] = [];
    const perQuery = new Map<string, number[]>();
    // "51+": the search stopped one past the page (the UI finds more as the list scrolls).
    const hits = new Map<string, string>();
    const rounds = Math.max(1, Math.ceil(runs / queries.length));
    for (let r = 0; r < rounds; r++) {
      for (const q of queries) {
        const res = await c.get(`/api/search?folder=INBOX&q=${encodeURIComponent(q)}&offset=0&limit=50`);
        times.push(res.ms);
        const found = res.body as MessageList;
        hits.set(q, `${found.total.toLocaleString('en')}${found.more ? '+' : ''}`);
        const list = perQuery.get(q) ?? [];
        list.push(res.ms);
        perQuery.set(q, list);
      }
    }
    row('search p50 (mixed queries, none repeated back to back)', ms(pct(times, 0.5)), { limit: 300, unit: 'ms', measured: pct(times, 0.5) });
    row('search p99', ms(pct(times, 0.99)), { limit: 300, unit: 'ms', measured: pct(times, 0.99) });
    for (const q of queries) row(`  "${q}" (${hits.get(q) ?? 0} hits) p50`, ms(pct(perQuery.get(q)!, 0.5)));
    // A page deep into a long result, searched afresh (another query came in between).
    const deep: number[] = [];
    for (let r = 0; r < Math.min(20, runs); r++) {
      await c.get(`/api/search?folder=INBOX&q=${RARE_WORD}&offset=0&limit=50`);
      deep.push((await c.get('/api/search?folder=INBOX&q=invoice&offset=2000&limit=50')).ms);
    }
    row('  "invoice", the page at 2,000, searched afresh p50', ms(pct(deep, 0.5)));
    const attach = await c.get('/api/search?folder=INBOX&q=has:attachment');
    row(`  "has:attachment" (${(attach.body as MessageList).total.toLocaleString('en')}${(attach.body as MessageList).more ? '+' : ''} hits), summaries cached`, ms(attach.ms));
    await c.mail.close();

    // --- what the browser downloads ---
    const assets = await buildAssets();
    if (assets.js) {
      const gz = assets.js.gzip.length + (assets.css?.gzip.length ?? 0);
      row('JS + CSS shipped, gzip', `${(gz / 1024).toFixed(1)} KB (js ${(assets.js.gzip.length / 1024).toFixed(1)} KB, css ${((assets.css?.gzip.length ?? 0) / 1024).toFixed(1)} KB; raw ${((assets.js.body.length + (assets.css?.body.length ?? 0)) / 1024).toFixed(1)} KB)`, { limit: 150, unit: 'KB', measured: gz / 1024 });
    } else {
      row('JS + CSS shipped, gzip', `n/a: ${assets.error}`);
    }
  } finally {
    if (keep) out(`  data kept in ${root}`);
    else await rm(root, { recursive: true, force: true });
  }
}
