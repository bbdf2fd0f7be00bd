// rspamd as a second opinion on port 25 (config [rspamd]).
//
// Two servers play rspamd here:
//   - a stand-in: a loopback HTTP server that answers POST /checkv2 as rspamd does (JSON with
//     action, score, required_score, symbols), with the answer chosen by a marker in the
//     Subject. It runs everywhere and can give every action, a slow answer and nonsense, which
//     real rspamd cannot be made to give on demand;
//   - real rspamd (Debian's package), started unprivileged-style from a temporary config on a
//     loopback port, without redis: GTUBE must be refused and ordinary mail scored. It takes
//     10-20 s to start cold (its regexp cache is kept between runs in the temp folder), so it is
//     skipped where rspamd is not installed, except on CI, which installs it (.ci/run).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createLogger, silentLogger } from '../../src/core/log.ts';
import { startHearth } from '../../src/main.ts';
import { RspamdClient, withoutFields } from '../../src/smtp/rspamd.ts';
import { MessageSpool } from '../../src/smtp/spool.ts';
import type { RspamdOptions } from '../../src/smtp/rspamd.ts';
import { makeSetup } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';

type Seen = { rawHeaders: string[]; body: Buffer };
type Answer = { action: string; score: number; required_score?: number; symbols?: Record<string, { score: number }> } | 'slow' | 'garbage' | 'http500';

/** The stand-in for rspamd's /checkv2: `[answer:NAME]` in the Subject picks the answer. */
async function startStandIn(answers: Record<string, Answer>): Promise<{ url: string; seen: Seen[]; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer(async (req, res) => {
    const parts: Buffer[] = [];
    for await (const c of req) parts.push(c as Buffer);
    const body = Buffer.concat(parts);
    seen.push({ rawHeaders: req.rawHeaders, body });
    if (req.method !== 'POST' || req.url !== '/checkv2') return void res.writeHead(404).end();
    const name = /\[answer:([\w-]+)\]/.exec(body.toString('latin1'))?.[1] ?? 'ham';
    const a = answers[name];
    if (a === 'slow') return; // never answers; the client's timeout must end it
    if (a === 'garbage') return void res.writeHead(200, { 'Content-Type': 'text/plain' }).end('<html>not rspamd</html>');
    if (a === 'http500') return void res.writeHead(500).end('Internal error');
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ is_skipped: false, required_score: 15, symbols: {}, ...a }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, seen, close: () => new Promise<void>((resolve) => server.close(() => resolve()).closeAllConnections()) };
}

const ANSWERS: Record<string, Answer> = {
  ham: { action: 'no action', score: 1.5, symbols: { MIME_GOOD: { score: -0.1 }, ONCE_RECEIVED: { score: 0.1 } } },
  spammy: { action: 'add header', score: 8.25, symbols: { BAYES_SPAM: { score: 5 } } },
  subject: { action: 'rewrite subject', score: 9 },
  scored: { action: 'no action', score: 6.5 },
  reject: { action: 'reject', score: 20.5 },
  soft: { action: 'soft reject', score: 5 },
  greylist: { action: 'greylist', score: 4.2 },
  slow: 'slow',
  garbage: 'garbage',
  http500: 'http500',
};

function message(subject: string, extra = ''): string {
  return `From: <sender@remote.test>\r\nTo: <alice@example.test>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@remote.test>\r\n${extra}\r\nHello from the test.\r\n`;
}

/** One SMTP transaction; the final reply. */
async function send(port: number, subject: string, opts: { extra?: string; rcpts?: string[] } = {}): Promise<string> {
  const c = await RawSmtp.connect(port);
  try {
    expect(await c.reply()).toMatch(/^220 /);
    expect(await c.command('EHLO client.remote.test')).toMatch(/^250/);
    expect(await c.command('MAIL FROM:<sender@remote.test>')).toMatch(/^250/);
    for (const r of opts.rcpts ?? ['alice@example.test']) expect(await c.command(`RCPT TO:<${r}>`)).toMatch(/^250/);
    expect(await c.command('DATA')).toMatch(/^354/);
    c.send(message(subject, opts.extra) + '.\r\n');
    return await c.reply();
  } finally {
    c.close();
  }
}

async function stored(dataDir: string, folder: string, marker: string, user = 'alice'): Promise<string[]> {
  const dir = folder === 'INBOX' ? join(dataDir, 'example.test', user, 'new') : join(dataDir, 'example.test', user, `.${folder}`, 'new');
  const names = await readdir(dir).catch(() => [] as string[]);
  const all = await Promise.all(names.map((n) => readFile(join(dir, n), 'latin1')));
  return all.filter((m) => m.includes(marker));
}

/** A pino logger whose lines the test can read. */
function capturingLogger(): { log: ReturnType<typeof createLogger>; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: createLogger('info', sink), lines };
}

const INBOUND = `[inbound]
check_loopback = true
authentication = false
connections_per_minute = 0
messages_per_minute = 0
max_failed_rcpts = 0
`;

describe('rspamd verdicts (stand-in rspamd)', () => {
  let standIn: Awaited<ReturnType<typeof startStandIn>>;
  let setup: TestSetup;
  let hearth: Awaited<ReturnType<typeof startHearth>>;
  let port: number;
  const captured = capturingLogger();

  beforeAll(async () => {
    standIn = await startStandIn(ANSWERS);
    setup = await makeSetup({ toml: `${INBOUND}\n[rspamd]\nurl = "${standIn.url}"\ntimeout = "400ms"\npassword = "rspamd-secret"\njunk_score = 6\n` });
    hearth = await startHearth({ configDir: setup.configDir, log: captured.log });
    port = hearth.endpoints.find((e) => e.service === 'smtp')!.port;
  });
  afterAll(async () => {
    await hearth?.close();
    await setup?.cleanup();
    await standIn?.close();
  });

  it('sends the message and the envelope (IP, Helo, From, one Rcpt per recipient, Password); accepted mail gets its score', async () => {
    const reply = await send(port, 'Ham [answer:ham]', { rcpts: ['alice@example.test', 'bob@example.test'], extra: 'X-Spam: No\r\nX-Spam-Score: -100\r\n' });
    expect(reply).toMatch(/^250 2\.6\.0 /);
    const req = standIn.seen.find((s) => s.body.includes('Subject: Ham [answer:ham]'))!;
    const headers: Array<[string, string]> = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i].toLowerCase(), req.rawHeaders[i + 1]]);
    const get = (name: string) => headers.filter(([n]) => n === name).map(([, v]) => v);
    expect(get('ip')).toEqual(['127.0.0.1']);
    expect(get('helo')).toEqual(['client.remote.test']);
    expect(get('from')).toEqual(['sender@remote.test']);
    expect(get('rcpt')).toEqual(['alice@example.test', 'bob@example.test']);
    expect(get('password')).toEqual(['rspamd-secret']);
    expect(get('mta-name')).toEqual(['mx.test.example']);
    expect(get('queue-id')).toHaveLength(1);
    // The message as received, without our trace header.
    expect(req.body.toString('latin1')).toBe(message('Ham [answer:ham]', 'X-Spam: No\r\nX-Spam-Score: -100\r\n'));

    const [copy] = await stored(setup.dataDir, 'INBOX', 'Subject: Ham [answer:ham]');
    expect(copy).toMatch(/\r\nX-Spam-Score: 1\.50 \/ 15\.00 \(rspamd: no action\)\r\n/);
    // The sender's own verdict is dropped: only ours speaks.
    expect(copy).not.toMatch(/X-Spam: No|X-Spam-Score: -100/);
    expect(copy).not.toMatch(/\r\nX-Spam: Yes/);
    expect(await stored(setup.dataDir, 'INBOX', 'Subject: Ham [answer:ham]', 'bob')).toHaveLength(1);
  });

  it('delivers "add header" and "rewrite subject" into Junk, marked X-Spam: Yes', async () => {
    expect(await send(port, 'Spammy [answer:spammy]')).toMatch(/^250 /);
    expect(await send(port, 'Subject rewrite [answer:subject]')).toMatch(/^250 /);
    const [spammy] = await stored(setup.dataDir, 'Junk', 'Subject: Spammy');
    expect(spammy).toMatch(/X-Spam-Score: 8\.25 \/ 15\.00 \(rspamd: add header\)\r\nX-Spam: Yes\r\n/);
    expect(await stored(setup.dataDir, 'Junk', 'Subject: Subject rewrite')).toHaveLength(1);
    expect(await stored(setup.dataDir, 'INBOX', 'Subject: Spammy')).toHaveLength(0);
    const line = captured.lines.find((l) => l.msg === 'rspamd: spam, delivering into Junk' && l.score === 8.25);
    expect(line?.symbols).toEqual(['BAYES_SPAM']);
  });

  it('delivers into Junk what scores at least junk_score, whatever the action', async () => {
    expect(await send(port, 'Scored [answer:scored]')).toMatch(/^250 /);
    expect(await stored(setup.dataDir, 'Junk', 'Subject: Scored')).toHaveLength(1);
  });

  it('refuses "reject" with 550 5.7.1 and defers "soft reject" with 451 4.7.1; nothing is stored', async () => {
    expect(await send(port, 'Rejected [answer:reject]')).toMatch(/^550 5\.7\.1 Message refused as spam \(score 20\.50\)/);
    expect(await send(port, 'Soft [answer:soft]')).toMatch(/^451 4\.7\.1 /);
    for (const folder of ['INBOX', 'Junk']) {
      expect(await stored(setup.dataDir, folder, 'Subject: Rejected')).toHaveLength(0);
      expect(await stored(setup.dataDir, folder, 'Subject: Soft')).toHaveLength(0);
    }
  });

  it('scores mail whose envelope is not Latin-1 (SMTPUTF8 sender): no header error lets it past rspamd', async () => {
    const c = await RawSmtp.connect(port);
    let reply: string;
    try {
      expect(await c.reply()).toMatch(/^220 /);
      expect(await c.command('EHLO client.remote.test')).toMatch(/^250/);
      expect(await c.command('MAIL FROM:<日本@remote.test> SMTPUTF8')).toMatch(/^250/);
      expect(await c.command('RCPT TO:<alice@example.test>')).toMatch(/^250/);
      expect(await c.command('DATA')).toMatch(/^354/);
      c.send(Buffer.from(message('Utf8 rejected [answer:reject]') + '.\r\n', 'utf8'));
      reply = await c.reply();
    } finally {
      c.close();
    }
    expect(reply).toMatch(/^550 5\.7\.1 Message refused as spam/);
    const req = standIn.seen.find((s) => s.body.includes('Subject: Utf8 rejected'))!;
    const from = req.rawHeaders.findIndex((h, i) => i % 2 === 0 && h.toLowerCase() === 'from');
    // rspamd reads header values as UTF-8.
    expect(Buffer.from(req.rawHeaders[from + 1], 'latin1').toString('utf8')).toBe('日本@remote.test');
  });

  it('accepts "greylist" (hearth greylists by itself)', async () => {
    expect(await send(port, 'Grey [answer:greylist]')).toMatch(/^250 /);
    const [copy] = await stored(setup.dataDir, 'INBOX', 'Subject: Grey');
    expect(copy).toMatch(/X-Spam-Score: 4\.20 \/ 15\.00 \(rspamd: greylist\)/);
  });

  it('fails open: no answer in time, an HTTP error or nonsense deliver the mail unscored, with a readable log line', async () => {
    const t0 = performance.now();
    expect(await send(port, 'Slow [answer:slow]')).toMatch(/^250 /);
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(await send(port, 'Broken [answer:http500]')).toMatch(/^250 /);
    expect(await send(port, 'Garbage [answer:garbage]')).toMatch(/^250 /);
    for (const subject of ['Slow', 'Broken', 'Garbage']) {
      const [copy] = await stored(setup.dataDir, 'INBOX', `Subject: ${subject} [`);
      expect(copy).toBeDefined();
      expect(copy).not.toMatch(/X-Spam/);
    }
    const warnings = captured.lines.filter((l) => l.msg === 'rspamd gave no verdict; message accepted without it').map((l) => l.err);
    expect(warnings).toEqual(expect.arrayContaining(['no answer within 400 ms', 'HTTP 500: Internal error', expect.stringMatching(/^answer is not JSON: <html>/)]));
  });
});

describe('RspamdClient', () => {
  const base: RspamdOptions = { url: 'http://127.0.0.1:1', timeoutMs: 300, reject: true, softReject: true, log: silentLogger() };
  const env = { ip: '::ffff:192.0.2.1', helo: 'h', sender: '', rcpts: ['a@example.test'], queueId: 'q1', hostname: 'mx.test' };

  it('maps actions to decisions as configured', () => {
    const on = new RspamdClient(base);
    expect(['no action', 'greylist', 'add header', 'rewrite subject', 'soft reject', 'reject'].map((a) => on.decide(a, 3, 15, []).decision)).toEqual(['accept', 'accept', 'junk', 'junk', 'defer', 'reject']);
    const off = new RspamdClient({ ...base, reject: false, softReject: false, junkScore: 2 });
    expect(['no action', 'soft reject', 'reject'].map((a) => off.decide(a, 3, 15, []).decision)).toEqual(['junk', 'junk', 'junk']);
    expect(off.decide('no action', 1.9, 15, []).decision).toBe('accept');
    expect(off.decide('reject', 30, 15, []).header).toBe('X-Spam-Score: 30.00 / 15.00 (rspamd: reject)\r\nX-Spam: Yes\r\n');
  });

  it('gives no verdict, and says why, when rspamd is not listening', async () => {
    const probe = net.createServer().listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const closedPort = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const captured = capturingLogger();
    const client = new RspamdClient({ ...base, url: `http://127.0.0.1:${closedPort}/`, log: captured.log });
    expect(await client.check(Buffer.from('Subject: x\r\n\r\nbody\r\n'), 21, env)).toBeUndefined();
    expect(captured.lines[0]).toMatchObject({ level: 40, msg: 'rspamd gave no verdict; message accepted without it', url: `http://127.0.0.1:${closedPort}/checkv2` });
    expect(String(captured.lines[0].err)).toMatch(/ECONNREFUSED/);
  });

  it('closes the spooled file it was reading when the upload fails (rspamd not reading, timeout)', async () => {
    // rspamd that takes the connection and never reads the body nor answers.
    const sockets: net.Socket[] = [];
    const stall = net.createServer((s) => {
      s.pause();
      sockets.push(s);
    });
    stall.listen(0, '127.0.0.1');
    await once(stall, 'listening');
    const dir = await mkdtemp(join(tmpdir(), 'hearth-rspamd-spool-'));
    const big = Buffer.alloc(8 * 1024 * 1024, 'a');
    const spool = await MessageSpool.collect((async function* () {
      yield Buffer.from('Subject: big\r\n\r\n');
      yield big;
    })(), { memoryBytes: 1024, dir });
    expect(spool.onDisk).toBe(true);
    const openOnSpool = async () => {
      const fds = await readdir('/proc/self/fd');
      const targets = await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
      return targets.filter((t) => t.startsWith(dir)).length;
    };
    try {
      const client = new RspamdClient({ ...base, url: `http://127.0.0.1:${(stall.address() as AddressInfo).port}`, timeoutMs: 300 });
      expect(await client.check(() => spool.read(), spool.size, env)).toBeUndefined();
      await new Promise((r) => setTimeout(r, 100));
      expect(await openOnSpool()).toBe(0);
    } finally {
      await spool.dispose();
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => stall.close(resolve));
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a url that is not http(s)', () => {
    expect(() => new RspamdClient({ ...base, url: 'ftp://127.0.0.1/' })).toThrow(/http or https/);
  });

  it('withoutFields drops named fields with their continuation lines, and nothing else', () => {
    const head = Buffer.from('X-Spam: yes\r\nSubject: x-spam: in a value\r\nX-Spam-Score:\r\n 12\r\nX-Spammer: kept\r\nFrom: a@b\r\n\r\n', 'latin1');
    expect(withoutFields(head, ['x-spam', 'x-spam-score']).toString('latin1')).toBe('Subject: x-spam: in a value\r\nX-Spammer: kept\r\nFrom: a@b\r\n\r\n');
    const clean = Buffer.from('Subject: hi\r\n\r\n');
    expect(withoutFields(clean, ['x-spam'])).toBe(clean);
  });
});

// --- real rspamd -------------------------------------------------------------------------

const haveRspamd = spawnSync('rspamd', ['--version'], { stdio: 'ignore' }).status === 0;

/** rspamd on a loopback port from a temporary config: no redis, no controller, DNS going nowhere. */
async function startRealRspamd(): Promise<{ url: string; child: ChildProcess; stop(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'hearth-rspamd-'));
  // Its compiled regexp cache survives between runs: a warm start takes under a second.
  const db = join(tmpdir(), 'hearth-rspamd-db');
  await mkdir(join(dir, 'local', 'local.d'), { recursive: true });
  await mkdir(db, { recursive: true });
  const probe = net.createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));
  await writeFile(
    join(dir, 'rspamd.conf'),
    `.include "$CONFDIR/common.conf"
options {
  pidfile = "${dir}/rspamd.pid";
  .include "$CONFDIR/options.inc"
  control_socket = "${dir}/rspamd.sock mode=0600";
  # Nothing resolves offline: a closed loopback port fails each query at once.
  dns { nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }
}
logging { type = "console"; level = "error"; }
worker "normal" {
  bind_socket = "127.0.0.1:${port}";
  count = 1;
  .include "$CONFDIR/worker-normal.inc"
}
`,
  );
  // Offline, a bare test message collects DNS-failure points: keep ordinary mail below every action.
  await writeFile(join(dir, 'local', 'local.d', 'actions.conf'), 'add_header = 40;\ngreylist = 35;\nrewrite_subject = 45;\n');
  const args = ['-f', '-c', join(dir, 'rspamd.conf'), `--var=LOCAL_CONFDIR=${join(dir, 'local')}`, `--var=DBDIR=${db}`, `--var=RUNDIR=${dir}`, `--var=LOGDIR=${dir}`];
  // rspamd refuses to run its workers as root unless told to (-i); CI containers run as root.
  if (process.getuid?.() === 0) args.unshift('-i');
  const child = spawn('rspamd', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()).length > 20_000 && (stderr = stderr.slice(-10_000)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = performance.now() + 60_000;
  for (;;) {
    const up = await fetch(`${url}/ping`).then((r) => r.ok, () => false);
    if (up) break;
    if (child.exitCode !== null || performance.now() > deadline) {
      child.kill();
      throw new Error(`rspamd did not start: ${stderr.slice(-2000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200)); // polling a child process start-up: no event to await
  }
  return {
    url,
    child,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

describe.skipIf(!haveRspamd && !process.env.CI)('rspamd verdicts (real rspamd)', () => {
  let rspamd: Awaited<ReturnType<typeof startRealRspamd>>;
  let setup: TestSetup;
  let hearth: Awaited<ReturnType<typeof startHearth>>;
  let port: number;

  beforeAll(async () => {
    rspamd = await startRealRspamd();
    setup = await makeSetup({ toml: `${INBOUND}\n[rspamd]\nurl = "${rspamd.url}"\ntimeout = "10s"\n` });
    hearth = await startHearth({ configDir: setup.configDir, log: silentLogger() });
    port = hearth.endpoints.find((e) => e.service === 'smtp')!.port;
  }, 90_000);
  afterAll(async () => {
    await hearth?.close();
    await setup?.cleanup();
    await rspamd?.stop();
  });

  it('refuses GTUBE with 550 5.7.1', async () => {
    const c = await RawSmtp.connect(port);
    expect(await c.reply()).toMatch(/^220 /);
    await c.command('EHLO client.remote.test');
    await c.command('MAIL FROM:<sender@remote.test>');
    await c.command('RCPT TO:<alice@example.test>');
    expect(await c.command('DATA')).toMatch(/^354/);
    c.send(`From: <sender@remote.test>\r\nTo: <alice@example.test>\r\nSubject: GTUBE\r\nMessage-ID: <gtube@remote.test>\r\n\r\n${GTUBE}\r\n.\r\n`);
    expect(await c.reply()).toMatch(/^550 5\.7\.1 Message refused as spam/);
    c.close();
    expect(await stored(setup.dataDir, 'INBOX', 'Subject: GTUBE')).toHaveLength(0);
  });

  it('scores ordinary mail and delivers it with rspamd\'s score', async () => {
    expect(await send(port, 'Real ham')).toMatch(/^250 2\.6\.0 /);
    const [copy] = await stored(setup.dataDir, 'INBOX', 'Subject: Real ham');
    expect(copy).toMatch(/\r\nX-Spam-Score: -?\d+\.\d\d \/ \d+\.\d\d \(rspamd: no action\)\r\n/);
  });

  it('reads the envelope from our request headers', async () => {
    const client = new RspamdClient({ url: rspamd.url, timeoutMs: 10_000, reject: true, softReject: true, log: silentLogger() });
    const raw = Buffer.from(message('Envelope'));
    const v = await client.check(raw, raw.length, { ip: '192.0.2.1', helo: 'client.remote.test', sender: 'sender@remote.test', rcpts: ['alice@example.test'], queueId: 'q1', hostname: 'mx.test.example' });
    expect(v?.action).toBe('no action');
    // Symbols that compare the header with the envelope exist only when rspamd got the envelope.
    expect(v?.symbols).toEqual(expect.arrayContaining(['FROM_EQ_ENVFROM', 'TO_MATCH_ENVRCPT_ALL']));
  });
});
