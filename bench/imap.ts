// IMAP benchmark (issue 4): on Maildirs of 10,000 and 100,000 messages, SELECT (first: the
// index built from a fresh Maildir; warm: a second session; after a restart: the index read
// back from sqlite), UID FETCH 1:* of flags (and sizes), header fields of the newest 100 and
// last 500 messages, SEARCH BODY, the APPEND rate, and the server's memory per idle connection
// (1,000 plaintext and 200 TLS connections logged in, INBOX selected, in IDLE).
//
// The server runs in a child process of its own (bench/imap-server.ts, started with
// --expose-gc): the client in this process does not share its event loop, and RSS and heap
// figures are the server's alone, measured after two full GCs. The client (imap-client.ts)
// pipelines and only counts bytes and terminators. Figures are printed with the issue's
// targets beside them, never asserted.
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { silentLogger } from '../src/core/log.ts';
import { ensureDefaultConfig } from '../src/config/defaults.ts';
import { shaCrypt } from '../src/config/sha-crypt.ts';
import { MaildirStore } from '../src/store/maildir.ts';
import { ImapConn } from './imap-client.ts';

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
  --no-fsync           run the server with fsync = false (APPEND rate without disk flushes)
  --cpu-prof DIR       write the server's CPU profile (.cpuprofile) into DIR
  --keep               leave the temporary data directories in place`;

const PASSWORD = 'bench-password-123';
const USERS = ['bench', 'append', 'idle'] as const;
const RARE_WORD = 'zanzibar';
const DAY = 86_400_000;

type Mem = { rss: number; heapUsed: number; heapTotal: number; external: number; arrayBuffers: number; newSpace: number };
type Options = {
  sizes: number[];
  runs: number;
  searchMax: number;
  appends: number;
  appendSize: number;
  idle: number;
  idleTls: number;
  idleMessages: number;
  fsync: boolean;
  cpuProf: string | undefined;
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

  static start(configDir: string, cpuProf: string | undefined): Promise<ServerProcess> {
    const execArgv = ['--expose-gc', ...(cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`] : [])];
    const child = fork(fileURLToPath(new URL('./imap-server.ts', import.meta.url)), [configDir], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    return new Promise((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`server exited with code ${code} before listening`)));
      child.once('message', (msg: { ports: Record<string, number> }) => {
        child.removeAllListeners('exit');
        resolve(new ServerProcess(child, msg.ports));
      });
    });
  }

  #request(op: 'mem' | 'stop'): Promise<Record<string, unknown>> {
    const id = ++this.#seq;
    return new Promise((resolve) => {
      this.#waiting.set(id, resolve);
      this.child.send({ id, op });
    });
  }

  async mem(): Promise<Mem> {
    return (await this.#request('mem')).mem as Mem;
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
  // SHA512-CRYPT at the minimum rounds instead of argon2id: 1,000 logins must not be the
  // benchmark, and argon2's 19 MiB per hash would blur the server's RSS.
  const hash = await shaCrypt(PASSWORD, '$6$rounds=1000$benchsaltbench');
  await writeFile(join(configDir, 'users'), USERS.map((u) => `${u}@example.test:{SHA512-CRYPT}${hash}\n`).join(''), { mode: 0o600 });
  await mkdir(join(root, 'maildir'), { recursive: true });
  return { root, configDir, store: new MaildirStore({ root: join(root, 'maildir'), fsync: false, log: silentLogger() }) };
}

const WORDS = 'the quick brown fox jumps over lazy dog mail server index folder message report weekly meeting notes budget review draft invoice travel plans'.split(' ');

/** A plausible message of 1.5 to 5.5 KB; every 100th has RARE_WORD in its body. */
function message(i: number, date: Date): string {
  const from = i % 97;
  const head =
    `From: Sender ${from} <sender${from}@remote.example>\r\nTo: Bench <bench@example.test>\r\n` +
    `Subject: ${WORDS[i % WORDS.length]} ${WORDS[(i * 7) % WORDS.length]} number ${i}\r\nDate: ${date.toUTCString().replace('GMT', '+0000')}\r\n` +
    `Message-ID: <${i}.bench@remote.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n`;
  const size = 1500 + ((i * 7919) % 4000);
  let body = '';
  for (let w = i; body.length < size - head.length; w += 3) {
    body += WORDS[w % WORDS.length] + (w % 11 === 0 ? '\r\n' : ' ');
    if (i % 100 === 0 && body.length > 400 && !body.includes(RARE_WORD)) body += `${RARE_WORD} `;
  }
  return head + body + '\r\n';
}

/** Fill a user's INBOX straight through the Maildir store (no index, no fsync): 2/3 \Seen, 1/7 \Flagged, the newest 1% in new/. */
async function fill(store: MaildirStore, user: string, count: number, label: string): Promise<number> {
  const started = performance.now();
  const now = Date.now();
  let next = 0;
  let reported = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) {
      const date = new Date(now - (count - i) * (DAY / 100));
      const flags = i >= count * 0.99 ? undefined : `${i % 7 === 0 ? 'F' : ''}${i % 3 !== 0 ? 'S' : ''}`;
      await store.deliver([{ user, domain: 'example.test' }], message(i, date), { flags, mtime: date });
      if (label && i - reported >= count / 10) {
        reported = i;
        process.stdout.write(`\r  filling ${label}: ${Math.round((i / count) * 100)}%`);
      }
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  const seconds = (performance.now() - started) / 1000;
  if (label) process.stdout.write(`\r  filled ${label}: ${count} messages in ${seconds.toFixed(1)} s (${(count / seconds).toFixed(0)}/s)\n`);
  return seconds;
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

/**
 * The server's memory per idle session: `count` sessions opened in two halves, the server's
 * memory taken (after full GCs) before, between and after. The second half's growth per
 * session is the marginal cost, free of one-time growth (heap spaces, allocator arenas) that
 * the first connections bring about. Each measurement runs in a fresh server process, since
 * memory freed by earlier sessions would be reused and hide the cost.
 */
async function idleMemory(server: ServerProcess, count: number, tls: boolean): Promise<void> {
  const port = tls ? server.ports.imaps : server.ports.imap;
  const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 500));
  const conns: ImapConn[] = [];
  const half = Math.floor(count / 2);
  const before = await server.mem();
  const started = performance.now();
  await openIdle(port, half, tls, conns);
  await settle();
  const middle = await server.mem();
  await openIdle(port, count - half, tls, conns);
  const setupSeconds = (performance.now() - started) / 1000;
  await settle();
  const after = await server.mem();
  const avg = (k: keyof Mem): number => (after[k] - before[k]) / count;
  const marginal = (k: keyof Mem): number => (after[k] - middle[k]) / (count - half);
  const kind = tls ? 'implicit TLS' : 'plaintext';
  const limit = tls ? 64 : 32;
  out(`  ${count} ${kind} sessions logged in, INBOX (${options.idleMessages} messages) selected, in IDLE (set up in ${setupSeconds.toFixed(1)} s)`);
  row(`  RSS per connection, second ${count - half} (marginal)`, kib(marginal('rss')), { limit, unit: 'KB', measured: marginal('rss') / 1024 });
  row(`  RSS per connection, all ${count} (average from before)`, kib(avg('rss')), { limit, unit: 'KB', measured: avg('rss') / 1024 });
  row(`  JS heapUsed per connection, marginal / average`, `${kib(marginal('heapUsed'))} / ${kib(avg('heapUsed'))}`);
  row(`  JS heapTotal per connection, marginal / average`, `${kib(marginal('heapTotal'))} / ${kib(avg('heapTotal'))}`);
  row(`  of which young generation (new space), marginal / average`, `${kib(marginal('newSpace'))} / ${kib(avg('newSpace'))}`);
  row(`  RSS per connection without young-generation growth, average`, kib(avg('rss') - avg('newSpace')));
  row(`  external + array buffers per connection, marginal / average`, `${kib(marginal('external') + marginal('arrayBuffers'))} / ${kib(avg('external') + avg('arrayBuffers'))}`);
  row(`  server RSS before / half / all sessions`, `${mib(before.rss)} / ${mib(middle.rss)} / ${mib(after.rss)}`);
  for (const c of conns) c.close();
  await new Promise((r) => setTimeout(r, 1000));
}

async function appendAndIdle(): Promise<void> {
  out(`\nAPPEND rate and memory per idle connection (server in its own process, a fresh one for each; memory after two full GCs)`);
  const { root, configDir, store } = await makeRoot();
  await fill(store, 'idle', options.idleMessages, '');
  if (options.appends > 0) {
    const server = await ServerProcess.start(configDir, options.cpuProf);
    await appendRate(server.ports.imap);
    await server.stop();
  }
  for (const [count, tls] of [[options.idle, false], [options.idleTls, true]] as const) {
    if (count <= 0) continue;
    const server = await ServerProcess.start(configDir, options.cpuProf);
    // Open the idle user's index once, so the per-connection figure leaves the per-user one out.
    const c = await login(server.ports.imap, 'idle');
    await c.ok('SELECT INBOX');
    await c.ok('LOGOUT').catch(() => {});
    c.close();
    await idleMemory(server, count, tls);
    await server.stop();
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
      'no-fsync': { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
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
    fsync: !values['no-fsync'],
    cpuProf: values['cpu-prof'],
    keep: values.keep,
  };
  out(`imap benchmark: Node ${process.version}; server in a child process, client in this one; times are client-side, write to tagged OK`);
  for (const n of options.sizes) await mailboxSize(n);
  if (options.appends > 0 || options.idle > 0 || options.idleTls > 0) await appendAndIdle();
  if (options.cpuProf) out(`\nserver CPU profiles in ${options.cpuProf}`);
}
