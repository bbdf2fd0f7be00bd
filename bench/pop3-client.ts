// Load generator for bench/pop3.ts (worker thread): one POP3 session that lists and
// retrieves the whole maildrop, pipelining RETRs as fetchmail and getmail do. It only counts
// bytes and response terminators, so the client costs little next to the server.
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';

const { port, user, password } = workerData as { port: number; user: string; password: string };
const socket = net.connect(port, '127.0.0.1');
socket.setNoDelay(true);

const END = Buffer.from('\r\n.\r\n');
let mode: 'line' | 'multi' = 'line';
let text = ''; // collected text of the current short response (lines, LIST)
let tail = Buffer.alloc(0); // last bytes of the previous chunk, for a terminator split across chunks
let bytes = 0;
let waiting: { count: number; keepText: boolean; resolve: (text: string) => void } | undefined;

socket.on('data', (d: Buffer) => {
  bytes += d.length;
  if (!waiting) return;
  if (waiting.keepText) text += d.toString('latin1');
  if (mode === 'line') {
    const nl = text.indexOf('\r\n');
    if (nl >= 0) finish(text.slice(0, nl));
    return;
  }
  const joined = Buffer.concat([tail, d]);
  let from = 0;
  for (;;) {
    const i = joined.indexOf(END, from);
    if (i < 0) break;
    from = i + END.length;
    if (--waiting.count === 0) return finish(text);
  }
  tail = joined.subarray(Math.max(from, joined.length - (END.length - 1)));
});

function finish(result: string): void {
  const w = waiting!;
  waiting = undefined;
  text = '';
  tail = Buffer.alloc(0);
  w.resolve(result);
}

function expect(m: 'line' | 'multi', count = 1, keepText = true): Promise<string> {
  mode = m;
  return new Promise((resolve) => (waiting = { count, keepText, resolve }));
}

let next = expect('line');
await next;
next = expect('line');
socket.write(`USER ${user}\r\n`);
await next;
next = expect('line');
socket.write(`PASS ${password}\r\n`);
const login = await next;
if (!login.startsWith('+OK')) throw new Error(login);

const started = performance.now();
bytes = 0;
next = expect('multi');
socket.write('LIST\r\n');
const listing = (await next).split('\r\n').slice(1, -2);
next = expect('multi', 1, false);
socket.write('UIDL\r\n');
await next;
const BATCH = 100;
for (let i = 1; i <= listing.length; i += BATCH) {
  const last = Math.min(listing.length, i + BATCH - 1);
  let batch = '';
  for (let n = i; n <= last; n++) batch += `RETR ${n}\r\n`;
  next = expect('multi', last - i + 1, false);
  socket.write(batch);
  await next;
}
const seconds = (performance.now() - started) / 1000;
socket.write('QUIT\r\n');
socket.destroy();
parentPort!.postMessage({ messages: listing.length, bytes, seconds });
