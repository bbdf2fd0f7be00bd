// The load generator for bench/ingest.ts, run in a worker thread so it does not share the
// server's event loop. A minimal pipelining SMTP client: the point is to load the server.
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';

type Job = {
  port: number;
  messages: number;
  size: number;
  concurrency: number;
  perConnection: boolean;
  /** Log in first (submission). */
  auth?: { user: string; pass: string };
  /** Recipient of message i: `{i}` and `{d}` (i modulo `domains`) are replaced. */
  rcpt?: string;
  from?: string;
  domains?: number;
  /** DKIM-sign every message (before the clock starts), for the sender-checks benchmark. */
  dkim?: { signingDomain: string; selector: string; privateKey: string };
};
const job = workerData as Job;

const FROM = job.from ?? 'load@remote.example';
const rcptOf = (i: number) => (job.rcpt ?? 'bench@example.test').replace('{i}', String(i)).replace('{d}', String(i % (job.domains ?? 1)));

function makeMessage(i: number, size: number): Buffer {
  const head = `From: ${FROM}\r\nTo: ${rcptOf(i)}\r\nSubject: bench ${i}\r\nMessage-ID: <bench${i}@load>\r\n\r\n`;
  const line = 'abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789\r\n';
  const body = line.repeat(Math.max(1, Math.ceil((size - head.length) / line.length)));
  return Buffer.from(head + body + '.\r\n');
}

class Conn {
  socket: net.Socket;
  buffer = '';
  waiters: Array<(line: string) => void> = [];
  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buffer += d;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        if (/^\d{3} /.test(line)) this.waiters.shift()?.(line);
      }
    });
  }
  static open(port: number): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new Conn(s)));
      s.once('error', reject);
    });
  }
  reply(): Promise<string> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

const latencies: number[] = [];
let sent = 0;
let failed = 0;

async function transaction(c: Conn, i: number, message: Buffer): Promise<void> {
  c.socket.write(`MAIL FROM:<${FROM}>\r\nRCPT TO:<${rcptOf(i)}>\r\nDATA\r\n`);
  const replies = await Promise.all([c.reply(), c.reply(), c.reply()]);
  if (!replies[2].startsWith('354')) {
    failed++;
    return;
  }
  const start = performance.now();
  c.socket.write(message);
  const final = await c.reply();
  latencies.push(performance.now() - start);
  if (final.startsWith('250')) sent++;
  else failed++;
}

async function hello(c: Conn): Promise<void> {
  await c.reply();
  c.socket.write('EHLO load.example\r\n');
  await c.reply();
  if (job.auth) {
    c.socket.write(`AUTH PLAIN ${Buffer.from(`\0${job.auth.user}\0${job.auth.pass}`).toString('base64')}\r\n`);
    const r = await c.reply();
    if (!r.startsWith('235')) throw new Error(`login failed: ${r}`);
  }
}

async function session(ids: number[]): Promise<void> {
  if (job.perConnection) {
    for (const i of ids) {
      const c = await Conn.open(job.port);
      await hello(c);
      await transaction(c, i, messageFor(i));
      c.socket.write('QUIT\r\n');
      await c.reply();
      c.socket.destroy();
    }
    return;
  }
  const c = await Conn.open(job.port);
  await hello(c);
  for (const i of ids) await transaction(c, i, messageFor(i));
  c.socket.write('QUIT\r\n');
  await c.reply();
  c.socket.destroy();
}

// Signed messages are made before the clock starts: signing is the sender's cost, not ours.
const presigned = new Map<number, Buffer>();
if (job.dkim) {
  const { dkimSign } = await import('mailauth/lib/dkim/sign.js');
  for (let i = 0; i < job.messages; i++) {
    const raw = makeMessage(i, job.size);
    const body = raw.subarray(0, raw.length - 3); // without the final ".\r\n"
    const r = await dkimSign(body, { signatureData: [job.dkim] } as never);
    if (!r.signatures) throw new Error('DKIM signing produced no signature');
    presigned.set(i, Buffer.concat([Buffer.from(r.signatures), raw]));
  }
}
const messageFor = (i: number): Buffer => presigned.get(i) ?? makeMessage(i, job.size);

const started = performance.now();
const buckets: number[][] = Array.from({ length: job.concurrency }, () => []);
for (let i = 0; i < job.messages; i++) buckets[i % job.concurrency].push(i);
await Promise.all(buckets.map((ids) => session(ids)));
const seconds = (performance.now() - started) / 1000;
parentPort!.postMessage({ sent, failed, seconds, latencies });
