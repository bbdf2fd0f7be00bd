// Load generator for bench/pop3.ts (worker thread): one POP3 session that lists and
// retrieves the whole maildrop, pipelining RETRs as fetchmail and getmail do.
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';

const { port, user, password } = workerData as { port: number; user: string; password: string };
const socket = net.connect(port, '127.0.0.1');

// Bytes received and not yet consumed. A search resumes where the last one stopped, so a
// long response costs one pass, not one pass per arriving chunk.
let chunks: Buffer[] = [];
let buffered: Buffer = Buffer.alloc(0);
let waiter: (() => void) | undefined;
socket.on('data', (d: Buffer) => {
  chunks.push(d);
  waiter?.();
});

/** Consume up to and including `marker`; returns what was consumed. */
async function readUntil(marker: string): Promise<Buffer> {
  let from = 0;
  for (;;) {
    if (chunks.length) {
      buffered = Buffer.concat([buffered, ...chunks]);
      chunks = [];
    }
    const i = buffered.indexOf(marker, from);
    if (i >= 0) {
      const out = buffered.subarray(0, i + marker.length);
      buffered = buffered.subarray(i + marker.length);
      return out;
    }
    from = Math.max(0, buffered.length - marker.length);
    await new Promise<void>((r) => (waiter = r));
  }
}
const line = async () => (await readUntil('\r\n')).toString();
const multi = () => readUntil('\r\n.\r\n');

await line();
socket.write(`USER ${user}\r\nPASS ${password}\r\n`);
await line();
const login = await line();
if (!login.startsWith('+OK')) throw new Error(login);
const started = performance.now();
socket.write('LIST\r\nUIDL\r\n');
const listing = (await multi()).toString().split('\r\n').slice(1, -2);
await multi();
let bytes = 0;
for (let i = 1; i <= listing.length; i += 50) {
  const last = Math.min(listing.length, i + 49);
  let batch = '';
  for (let n = i; n <= last; n++) batch += `RETR ${n}\r\n`;
  socket.write(batch);
  for (let n = i; n <= last; n++) bytes += (await multi()).length;
}
const seconds = (performance.now() - started) / 1000;
socket.write('QUIT\r\n');
await line();
socket.destroy();
parentPort!.postMessage({ messages: listing.length, bytes, seconds });
