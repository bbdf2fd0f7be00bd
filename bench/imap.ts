// IMAP benchmark (issue 4): on Maildirs of 10,000 and 100,000 messages, SELECT (first: the
// index built from a fresh Maildir; warm: a second session; after a restart: the index read
// back from sqlite), UID FETCH 1:* of flags (and sizes), header fields of the newest 100 and
// last 500 messages, SEARCH BODY, the APPEND rate, and the server's memory per idle connection
// (1,000 plaintext and 200 TLS connections logged in, INBOX selected, in IDLE), next to the
// same figure for a bare Node server (--baseline) so hearth's own share is visible.
//
// The server runs in a child process of its own (bench/imap-server.ts, started with
// --expose-gc): the client in this process does not share its event loop, and RSS and heap
// figures are the server's alone, measured after two full GCs. The idle connections are opened
// in steps; the figure per connection is the least-squares slope of memory against the count,
// with V8's young generation held small (--semi-space) so its pages do not pass for sessions. The client (imap-client.ts)
// pipelines and only counts bytes and terminators. Figures are printed with the issue's
// targets beside them, never asserted.
import { fork } from 'node:child_process';
import { scryptSync } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { silentLogger } from '../src/core/log.ts';
import { ensureDefaultConfig } from '../src/config/defaults.ts';
import { shaCrypt } from '../src/config/sha-crypt.ts';
import { hashPassword } from '../src/config/users.ts';
import { MaildirStore } from '../src/store/maildir.ts';
import { ImapConn } from './imap-client.ts';
import { RARE_WORD, bodyText, commonHeaders, fillInbox } from './mailbox-fill.ts';

const HELP = `npm run bench -- imap [options]
  --sizes N,M          mailbox sizes to measure (default 10000,100000; --sizes 10000 for a quick run:
                       filling 100,000 messages takes 10 s to a few minutes, by the disk)
  --runs K             repetitions of each warm measurement; the median is printed (default 5)
  --search-max N       SEARCH BODY only on mailboxes up to this size (default 10000)
  --appends N          APPENDs of --append-size bytes over one connection, one at a time (default 1000)
  --append-size BYTES  (default 10240)
  --idle N             plaintext connections in IDLE for the memory figure (default 1000; 0 skips)
  --idle-tls N         implicit-TLS connections in IDLE (default 200; 0 skips)
  --idle-messages N    messages in the idle user's INBOX (default 100)
  --idle-steps K       open the idle connections in K equal steps; the per-connection figure is the
                       least-squares slope of memory against connections over steps 1..K (default 5)
  --idle-churn R       then R rounds of opening as many sessions again and closing them, with the
                       memory after each (a leak check; default 0)
  --baseline           also measure a bare Node net/tls server (same certificate, a fixed answer
                       per command) holding the same idle connections
  --baseline-login M   what the baseline does at LOGIN: none (default), crypt (the SHA512-CRYPT check
                       hearth does, on the event loop) or crypt-worker (the same in a worker thread)
  --malloc-arena-max N run the server with MALLOC_ARENA_MAX=N (glibc; fewer per-thread arenas)
  --semi-space MB      the idle-memory servers run with --max-semi-space-size=MB (default 1; 0 keeps
                       Node's own, up to 32 MiB: V8's young generation, up to twice that, is a
                       per-process cost whose pages are written bit by bit as sessions are opened,
                       which drowns the per-connection figure)
  --server-flags=F..   extra node flags for the server process, e.g. --server-flags=--max-old-space-size=512
  --malloc-trim BYTES  run the server with MALLOC_TRIM_THRESHOLD_=BYTES (glibc returns free heap top
                       above this; setting it also stops glibc's dynamic mmap threshold)
  --password-scheme S  the users' password hash: sha512-crypt (default; hashed on the event loop),
                       scrypt (a toy cost, on libuv's threads) or argon2id (hearth's default, slow)
  --no-fsync           run the server with fsync = false (APPEND rate without disk flushes)
  --heap-snapshot DIR  write a heap snapshot of the server into DIR with all idle sessions open
  --cpu-prof DIR       write the server's CPU profile (.cpuprofile) into DIR
  --keep               leave the temporary data directories in place`;

const PASSWORD = 'bench-password-123';
const USERS = ['bench', 'append', 'idle'] as const;

type Mem = { rss: number; rssAnon: number; threads: number; heapUsed: number; heapTotal: number; external: number; arrayBuffers: number; newSpace: number };
type Options = {
  sizes: number[];
  runs: number;
  searchMax: number;
  appends: number;
  appendSize: number;
  idle: number;
  idleTls: number;
  idleMessages: number;
  idleSteps: number;
  idleChurn: number;
  baseline: boolean;
  baselineLogin: string;
  serverEnv: Record<string, string>;
  serverFlags: string[];
  semiSpace: number;
  scheme: 'sha512-crypt' | 'scrypt' | 'argon2id';
  fsync: boolean;
  cpuProf: string | undefined;
  heapSnapshot: string | undefined;
  keep: boolean;
};

// ---- output -------------------------------------------------------------------------------

const out = (s: string): void => void process.stdout.write(s + '\n');
const ms = (v: number): string => `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms`;
const kib = (bytes: number): string => `${(bytes / 1024).toFixed(1)} KB`;
const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function spread(xs: number[]): string {
  if (xs.length < 2) return '';
  return ` (min ${ms(Math.min(...xs))}, max ${ms(Math.max(...xs))}, ${xs.length} runs)`;
}

/** `label  value  [target ...]`, the target only where the issue sets one for this size. */
function row(label: string, value: string, target?: { limit: number; unit: 'ms' | 'KB'; measured: number; note?: string }): void {
  let line = `  ${label.padEnd(56)} ${value}`;
  if (target) {
    const met = target.measured <= target.limit;
    line += `   target < ${target.limit} ${target.unit}${target.note ? ' ' + target.note : ''}: ${met ? 'met' : 'MISSED'}`;
  }
  out(line);
}

// ---- the server process -------------------------------------------------------------------

class ServerProcess {
  readonly child: ChildProcess;
  readonly ports: Record<string, number>;
  #seq = 0;
  readonly #waiting = new Map<number, (msg: Record<string, unknown>) => void>();

  private constructor(child: ChildProcess, ports: Record<string, number>) {
    this.child = child;
    this.ports = ports;
    child.on('message', (msg: { id?: number }) => {
      if (msg.id !== undefined) {
        this.#waiting.get(msg.id)?.(msg as Record<string, unknown>);
        this.#waiting.delete(msg.id);
      }
    });
  }

  static start(configDir: string, cpuProf: string | undefined, bare = false, flags: string[] = []): Promise<ServerProcess> {
    const execArgv = ['--expose-gc', ...flags, ...options.serverFlags, ...(cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`] : [])];
    const env = { ...process.env, ...options.serverEnv, BENCH_IDLE_MESSAGES: String(options.idleMessages), BENCH_BARE_LOGIN: options.baselineLogin, BENCH_PASSWORD: PASSWORD };
    const args = bare ? [configDir, '--bare'] : [configDir];
    const child = fork(fileURLToPath(new URL('./imap-server.ts', import.meta.url)), args, { execArgv, env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    return new Promise((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`server exited with code ${code} before listening`)));
      child.once('message', (msg: { ports: Record<string, number> }) => {
        child.removeAllListeners('exit');
        resolve(new ServerProcess(child, msg.ports));
      });
    });
  }

  #request(op: 'mem' | 'stop' | 'snapshot', extra: { dir?: string } = {}): Promise<Record<string, unknown>> {
    const id = ++this.#seq;
    return new Promise((resolve) => {
      this.#waiting.set(id, resolve);
      this.child.send({ id, op, ...extra });
    });
  }

  async mem(): Promise<Mem> {
    return (await this.#request('mem')).mem as Mem;
  }

  /** Write a heap snapshot of the server into `dir`; resolves with its file name. */
  async snapshot(dir: string): Promise<string> {
    return (await this.#request('snapshot', { dir })).file as string;
  }

  async stop(): Promise<void> {
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    await this.#request('stop');
    await exited;
  }
}

// ---- set-up -------------------------------------------------------------------------------

async function makeRoot(): Promise<{ root: string; configDir: string; store: MaildirStore }> {
  const root = await mkdtemp(join(tmpdir(), 'hearth-bench-imap-'));
  const configDir = join(root, 'config');
  await ensureDefaultConfig(configDir, { log: silentLogger() });
  await writeFile(
    join(configDir, 'hearth.toml'),
    `hostname = "bench.example"\ndomains = ["example.test"]\nlog_level = "warn"\nfsync = ${options.fsync}\n` +
      `[listeners.imap]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n` +
      `[listeners.imaps]\nlisten = "127.0.0.1:0"\ntls = "implicit"\n` +
      `[limits]\nconnections_per_ip = 5000\nconnections = 5000\n`,
  );
  // Cheap hashes instead of argon2id: 1,000 logins must not be the benchmark, and argon2's
  // 19 MiB per hash would blur the server's RSS. SHA512-CRYPT runs on the event loop; scrypt
  // (at a toy cost) runs on libuv's threads, which changes what the logins leave in malloc;
  // argon2id is what `hearth user add` writes (19 MiB and a few ms per login, on libuv's threads).
  const hash =
    options.scheme === 'scrypt' ? `{SCRYPT}${toyScrypt(PASSWORD)}` : options.scheme === 'argon2id' ? await hashPassword(PASSWORD) : `{SHA512-CRYPT}${await shaCrypt(PASSWORD, '$6$rounds=1000$benchsaltbench')}`;
  await writeFile(join(configDir, 'users'), USERS.map((u) => `${u}@example.test:${hash}\n`).join(''), { mode: 0o600 });
  await mkdir(join(root, 'maildir'), { recursive: true });
  return { root, configDir, store: new MaildirStore({ root: join(root, 'maildir'), fsync: false, log: silentLogger() }) };
}

function toyScrypt(password: string): string {
  const salt = Buffer.from('benchsaltbench');
  const key = scryptSync(password, salt, 32, { N: 16, r: 8, p: 1 });
  return `$scrypt$ln=4,r=8,p=1$${salt.toString('base64')}$${key.toString('base64')}`;
}

/** A plausible message of 1.5 to 5.5 KB; every 100th has RARE_WORD in its body. */
function message(i: number, date: Date): string {
  const head = commonHeaders(i, date) + 'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n';
  return head + bodyText(i, head.length) + '\r\n';
}

/** Fill a user's INBOX straight through the Maildir store (no index, no fsync): 2/3 \Seen, 1/7 \Flagged, the newest 1% in new/. */
function fill(store: MaildirStore, user: string, count: number, label: string): Promise<number> {
  return fillInbox(store, user, count, label, message);
}

async function login(port: number, user: string, tls = false): Promise<ImapConn> {
  const c = await ImapConn.connect(port, { tls });
  await c.ok(`LOGIN ${user}@example.test ${PASSWORD}`);
  return c;
}

function check(cond: boolean, what: string): void {
  if (!cond) out(`  !! unexpected: ${what}`);
}

async function repeat(runs: number, fn: () => Promise<number>): Promise<number[]> {
  const xs: number[] = [];
  for (let i = 0; i < runs; i++) xs.push(await fn());
  return xs;
}

// ---- the measurements ---------------------------------------------------------------------

async function mailboxSize(n: number): Promise<void> {
  out(`\nmailbox of ${n.toLocaleString('en')} messages`);
  const { root, configDir, store } = await makeRoot();
  await fill(store, 'bench', n, 'INBOX');
  // The index trusts a directory mtime only once it is over a second old; a real mailbox's is.
  await new Promise((r) => setTimeout(r, 1100));
  const big = n >= 100_000;
  const target = (limit: number, measured: number, unit: 'ms' | 'KB' = 'ms') => (big ? { limit, unit, measured } : { limit, unit, measured, note: '(set for 100,000)' });

  let server = await ServerProcess.start(configDir, options.cpuProf);
  const port = server.ports.imap;
  const a = await login(port, 'bench');
  const first = await a.ok('SELECT INBOX', { capture: true });
  check(first.lines.some((l) => l === `* ${n} EXISTS`), `SELECT: ${first.lines.find((l) => l.endsWith('EXISTS'))}`);
  row('SELECT INBOX, first (index built from the Maildir)', ms(first.ms));

  const flags = await repeat(options.runs, async () => {
    const r = await a.ok('UID FETCH 1:* (UID FLAGS)');
    check(r.untagged === n, `UID FETCH (UID FLAGS): ${r.untagged} responses`);
    return r.ms;
  });
  row('UID FETCH 1:* (UID FLAGS)', ms(median(flags)) + spread(flags), target(150, median(flags)));
  const sizes = await repeat(options.runs, async () => (await a.ok('UID FETCH 1:* (UID RFC822.SIZE FLAGS)')).ms);
  row('UID FETCH 1:* (UID RFC822.SIZE FLAGS)', ms(median(sizes)) + spread(sizes));

  const HF = 'BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)]';
  const newest = `${Math.max(1, n - 99)}:${n}`;
  const last500 = `${Math.max(1, n - 499)}:${n}`;
  const h100first = await a.ok(`FETCH ${newest} ${HF}`);
  check(h100first.untagged === Math.min(n, 100), `newest 100: ${h100first.untagged} responses`);
  const h500first = await a.ok(`FETCH ${last500} ${HF}`);
  check(h500first.untagged === Math.min(n, 500), `last 500: ${h500first.untagged} responses`);
  const h100 = await repeat(options.runs, async () => (await a.ok(`FETCH ${newest} ${HF}`)).ms);
  const h500 = await repeat(options.runs, async () => (await a.ok(`FETCH ${last500} ${HF}`)).ms);
  row('newest 100: FETCH BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)], first', ms(h100first.ms), target(20, h100first.ms));
  row('newest 100: the same, again', ms(median(h100)) + spread(h100), target(20, median(h100)));
  row('last 500: FETCH BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)], first', ms(h500first.ms) + ' (400 not fetched before)');
  row('last 500: the same, again', ms(median(h500)) + spread(h500));
  const envFirst = await a.ok(`FETCH ${newest} (UID FLAGS ENVELOPE)`);
  const env = await repeat(options.runs, async () => (await a.ok(`FETCH ${newest} (UID FLAGS ENVELOPE)`)).ms);
  row('newest 100: FETCH (UID FLAGS ENVELOPE), first / again', `${ms(envFirst.ms)} / ${ms(median(env))}`);

  if (n <= options.searchMax) {
    const s1 = await a.ok(`SEARCH BODY ${RARE_WORD}`, { capture: true });
    const s2 = await a.ok(`SEARCH BODY ${RARE_WORD}`, { capture: true });
    const hits = (s1.lines.find((l) => l.startsWith('* SEARCH')) ?? '').split(' ').length - 2;
    check(hits === Math.ceil(n / 100), `SEARCH BODY found ${hits}`);
    row(`SEARCH BODY ${RARE_WORD} (${hits} hits), first / second`, `${ms(s1.ms)} / ${ms(s2.ms)}`);
  }
  await a.ok('LOGOUT').catch(() => {});
  a.close();

  // A second session on the same server: the folder's index is in memory.
  const warm = await repeat(options.runs, async () => {
    const b = await login(port, 'bench');
    const r = await b.ok('SELECT INBOX');
    b.close();
    return r.ms;
  });
  row('SELECT INBOX, warm (another session, same server)', ms(median(warm)) + spread(warm), target(150, median(warm)));

  // A restart: the index is read back from sqlite, the Maildir's directories are stat()ed only.
  await server.stop();
  server = await ServerProcess.start(configDir, options.cpuProf);
  const c = await login(server.ports.imap, 'bench');
  const restarted = await c.ok('SELECT INBOX');
  const flagsAfter = await c.ok('UID FETCH 1:* (UID FLAGS)');
  c.close();
  row('SELECT INBOX, first after a restart (index from sqlite)', ms(restarted.ms), target(150, restarted.ms));
  row('UID FETCH 1:* (UID FLAGS), first after a restart', ms(flagsAfter.ms));
  await server.stop();
  if (!options.keep) await rm(root, { recursive: true, force: true });
  else out(`  kept ${root}`);
}

async function appendRate(port: number): Promise<void> {
  const c = await login(port, 'append');
  await c.ok('SELECT INBOX');
  const body = Buffer.from(message(1, new Date()).padEnd(options.appendSize - 2, 'x') + '\r\n');
  const started = performance.now();
  const lat: number[] = [];
  for (let i = 0; i < options.appends; i++) {
    const r = await c.ok(`APPEND INBOX (\\Seen) {${body.length}+}`, { literal: body });
    lat.push(r.ms);
  }
  const seconds = (performance.now() - started) / 1000;
  c.close();
  lat.sort((x, y) => x - y);
  row(
    `APPEND ${options.appends} x ${options.appendSize} B, one connection, sequential`,
    `${(options.appends / seconds).toFixed(0)} messages/s (p50 ${ms(lat[Math.floor(lat.length / 2)])}, p99 ${ms(lat[Math.floor(lat.length * 0.99)])}; fsync ${options.fsync ? 'on' : 'off'})`,
  );
}

/** Open `count` sessions of one user; each logs in, selects INBOX and IDLEs (pipelined, 50 connections at a time). */
async function openIdle(port: number, count: number, tls: boolean, into: ImapConn[]): Promise<void> {
  for (let i = 0; i < count; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, count - i) }, async () => {
        const c = await ImapConn.connect(port, { tls });
        const loggedIn = c.ok(`LOGIN idle@example.test ${PASSWORD}`);
        const selected = c.ok('SELECT INBOX', { capture: true });
        const idling = c.idle();
        const [, sel] = await Promise.all([loggedIn, selected, idling]);
        check(sel.lines.includes(`* ${options.idleMessages} EXISTS`), 'idle session SELECT');
        return c;
      }),
    );
    into.push(...batch);
  }
}

/** Least-squares fit y = a + b x: the slope b and R² (how straight the line is). */
function fitLine(xs: number[], ys: number[]): { slope: number; r2: number } {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
    syy += (ys[i] - my) ** 2;
  }
  const slope = sxx === 0 ? 0 : sxy / sxx;
  return { slope, r2: syy === 0 ? 1 : (sxy * sxy) / (sxx * syy) };
}

/**
 * The server's memory per idle session: `count` sessions opened in `idleSteps` equal steps, the
 * server's memory taken (after full GCs) before and after each step. The per-connection figure
 * is the least-squares slope over steps 1..K: the first step also carries one-time growth
 * (heap spaces, JIT code, allocator arenas, the user's index) that later connections do not
 * repeat, so it is left out of the fit and shown separately as the average from 0. Each
 * measurement runs in a fresh server process, since memory freed by earlier sessions would
 * be reused and hide the cost. (So would memory freed by the set-up: after argon2id logins the
 * RSS slope can come out below the JS heap's.)
 */
async function idleMemory(server: ServerProcess, count: number, tls: boolean, label: string): Promise<void> {
  const port = tls ? server.ports.imaps : server.ports.imap;
  const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 300));
  const conns: ImapConn[] = [];
  const steps = Math.max(2, Math.min(options.idleSteps, count));
  const at: number[] = [0];
  const mems: Mem[] = [await server.mem()];
  const started = performance.now();
  for (let k = 1; k <= steps; k++) {
    const target = Math.round((count * k) / steps);
    await openIdle(port, target - conns.length, tls, conns);
    await settle();
    at.push(conns.length);
    mems.push(await server.mem());
  }
  const setupSeconds = (performance.now() - started) / 1000;
  const series = (f: (m: Mem) => number): number[] => mems.map(f);
  const fit = (f: (m: Mem) => number) => fitLine(at.slice(1), series(f).slice(1));
  const avg = (f: (m: Mem) => number): number => (f(mems[steps]) - f(mems[0])) / count;
  const kind = tls ? 'implicit TLS' : 'plaintext';
  const limit = tls ? 64 : 32;
  const rss = fit((m) => m.rss);
  const anon = fit((m) => m.rssAnon);
  const jsAndExternal = (m: Mem): number => m.heapUsed + m.external;
  out(`  ${label}: ${count} ${kind} sessions logged in, INBOX (${options.idleMessages} messages) selected, in IDLE, in ${steps} steps (set up in ${setupSeconds.toFixed(1)} s)`);
  const measured = label === 'hearth' ? { limit, unit: 'KB' as const, measured: rss.slope / 1024 } : undefined;
  row(`  RSS per connection (slope over steps 1..${steps}, R² ${rss.r2.toFixed(3)})`, kib(rss.slope), measured);
  row(`  anonymous RSS per connection (slope, R² ${anon.r2.toFixed(3)})`, kib(anon.slope));
  row(`  JS heapUsed + external per connection (slope)`, kib(fit(jsAndExternal).slope));
  row(`  JS heapUsed / heapTotal / external per connection (slope)`, `${kib(fit((m) => m.heapUsed).slope)} / ${kib(fit((m) => m.heapTotal).slope)} / ${kib(fit((m) => m.external).slope)}`);
  row(`  averages from before the first (one-time growth included): RSS / heap+external`, `${kib(avg((m) => m.rss))} / ${kib(avg(jsAndExternal))}`);
  row(`  server RSS (threads) at each step`, mems.map((m) => `${mib(m.rss)} (${m.threads})`).join(' / '));
  row(`  JS heapUsed, heapTotal (young generation) at each step`, mems.map((m) => `${mib(m.heapUsed)}, ${mib(m.heapTotal)} (${mib(m.newSpace)})`).join(' / '));
  // A leak check: memory that grows with sessions served rather than sessions open would show
  // here as growth from round to round; the allocator keeping its high-water mark shows as a
  // step up on the first round only.
  for (let r = 1; r <= options.idleChurn; r++) {
    const extra: ImapConn[] = [];
    await openIdle(port, count, tls, extra);
    for (const c of extra) c.close();
    await new Promise((res) => setTimeout(res, 1000));
    const m = await server.mem();
    row(`  round ${r}: ${count} more sessions opened, then closed: RSS / heapUsed`, `${mib(m.rss)} / ${mib(m.heapUsed)}`);
  }
  if (options.heapSnapshot) out(`    heap snapshot with every session open: ${await server.snapshot(options.heapSnapshot)}`);
  for (const c of conns) c.close();
  await new Promise((r) => setTimeout(r, 1000));
}

async function appendAndIdle(): Promise<void> {
  out(`\nAPPEND rate and memory per idle connection (server in its own process, a fresh one for each; memory after two full GCs)`);
  out(`  idle-memory servers: ${options.semiSpace > 0 ? `--max-semi-space-size=${options.semiSpace} (young generation at most ${2 * options.semiSpace} MiB; --semi-space 0 for Node's default)` : "Node's default young generation (up to 64 MiB, written as sessions open: expect noise)"}; password hashes: ${options.scheme}`);
  const env = Object.entries(options.serverEnv).map(([k, v]) => `${k}=${v}`).join(' ');
  if (env || options.serverFlags.length) out(`  server environment: ${env} node ${options.serverFlags.join(' ')}`);
  const { root, configDir, store } = await makeRoot();
  await fill(store, 'idle', options.idleMessages, '');
  if (options.appends > 0) {
    const server = await ServerProcess.start(configDir, options.cpuProf);
    await appendRate(server.ports.imap);
    await server.stop();
  }
  for (const [count, tls] of [[options.idle, false], [options.idleTls, true]] as const) {
    if (count <= 0) continue;
    for (const bare of options.baseline ? [false, true] : [false]) {
      const server = await ServerProcess.start(configDir, options.cpuProf, bare, options.semiSpace > 0 ? [`--max-semi-space-size=${options.semiSpace}`] : []);
      if (!bare) {
        // Open the idle user's index once, so the per-connection figure leaves the per-user one out.
        const c = await login(server.ports.imap, 'idle');
        await c.ok('SELECT INBOX');
        await c.ok('LOGOUT').catch(() => {});
        c.close();
      }
      await idleMemory(server, count, tls, bare ? `bare Node baseline (LOGIN: ${options.baselineLogin})` : 'hearth');
      await server.stop();
    }
  }
  if (!options.keep) await rm(root, { recursive: true, force: true });
  else out(`  kept ${root}`);
}

let options: Options;

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      sizes: { type: 'string', default: '10000,100000' },
      runs: { type: 'string', default: '5' },
      'search-max': { type: 'string', default: '10000' },
      appends: { type: 'string', default: '1000' },
      'append-size': { type: 'string', default: '10240' },
      idle: { type: 'string', default: '1000' },
      'idle-tls': { type: 'string', default: '200' },
      'idle-messages': { type: 'string', default: '100' },
      'idle-steps': { type: 'string', default: '5' },
      'idle-churn': { type: 'string', default: '0' },
      baseline: { type: 'boolean', default: false },
      'baseline-login': { type: 'string', default: 'none' },
      'malloc-arena-max': { type: 'string' },
      'malloc-trim': { type: 'string' },
      'server-flags': { type: 'string', default: '' },
      'semi-space': { type: 'string', default: '1' },
      'password-scheme': { type: 'string', default: 'sha512-crypt' },
      'no-fsync': { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
      'heap-snapshot': { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    out(HELP);
    return;
  }
  options = {
    sizes: values.sizes.split(',').map(Number).filter((x) => x > 0),
    runs: Math.max(1, Number(values.runs)),
    searchMax: Number(values['search-max']),
    appends: Number(values.appends),
    appendSize: Number(values['append-size']),
    idle: Number(values.idle),
    idleTls: Number(values['idle-tls']),
    idleMessages: Number(values['idle-messages']),
    idleSteps: Number(values['idle-steps']),
    idleChurn: Number(values['idle-churn']),
    baseline: values.baseline,
    baselineLogin: values['baseline-login'],
    scheme: (['scrypt', 'argon2id'] as const).find((x) => x === values['password-scheme']) ?? 'sha512-crypt',
    semiSpace: Number(values['semi-space']),
    serverFlags: values['server-flags'].split(' ').filter(Boolean),
    serverEnv: {
      ...(values['malloc-arena-max'] ? { MALLOC_ARENA_MAX: values['malloc-arena-max'] } : {}),
      ...(values['malloc-trim'] ? { MALLOC_TRIM_THRESHOLD_: values['malloc-trim'] } : {}),
    },
    fsync: !values['no-fsync'],
    cpuProf: values['cpu-prof'],
    heapSnapshot: values['heap-snapshot'],
    keep: values.keep,
  };
  out(`imap benchmark: Node ${process.version}; server in a child process, client in this one; times are client-side, write to tagged OK`);
  for (const n of options.sizes) await mailboxSize(n);
  if (options.appends > 0 || options.idle > 0 || options.idleTls > 0) await appendAndIdle();
  if (options.cpuProf) out(`\nserver CPU profiles in ${options.cpuProf}`);
}
