// Entry point of the sender-checks thread (auth-worker.ts): runs SenderAuthenticator.check
// for many messages at once, asking the main thread for every DNS answer, so one cache
// (dns-cache.ts) serves this thread's checks and the DNSBL lookups alike. Answers are also kept
// here for as long as that cache still keeps them (never longer), which saves the round trip.
import { parentPort, workerData } from 'node:worker_threads';
import { SenderAuthenticator } from './auth-checks.ts';
import type { AuthInput, SenderAuthOptions } from './auth-checks.ts';
import { notFound } from './dns-cache.ts';
import type { DnsResolver } from './dns-cache.ts';
import type { ToWorker } from './auth-worker.ts';

const port = parentPort;
if (!port) throw new Error('auth-worker-main.ts must run in a worker thread');

type Answer = { value?: unknown; code?: string; expiresInMs: number };
const pending = new Map<number, { resolve(v: Answer): void; reject(e: unknown): void }>();
let nextDns = 1;
const KEEP_LIMIT = 2_000;
const kept = new Map<string, { expires: number; value?: unknown; code?: string }>();

async function ask(name: string, rrtype: string): Promise<unknown> {
  const key = `${rrtype.toUpperCase()} ${name.toLowerCase()}`;
  let entry = kept.get(key);
  if (!entry || entry.expires <= performance.now()) {
    const id = nextDns++;
    const a = await new Promise<Answer>((resolve, reject) => {
      pending.set(id, { resolve, reject });
      port!.postMessage({ type: 'dns', id, name, rrtype });
    });
    entry = { expires: performance.now() + a.expiresInMs, value: a.value, code: a.code };
    if (a.expiresInMs > 0) {
      if (kept.size >= KEEP_LIMIT) kept.clear();
      kept.set(key, entry);
    } else kept.delete(key);
  }
  if (entry.code) throw notFound(entry.code, name, rrtype.toUpperCase());
  // mailauth gets its own arrays, as from the main cache.
  return Array.isArray(entry.value) ? entry.value.map((v: unknown) => (Array.isArray(v) ? [...v] : v && typeof v === 'object' ? { ...v } : v)) : entry.value;
}

const resolver: DnsResolver = {
  resolve: (name, rrtype) => ask(name, rrtype),
  resolve4: ((name: string) => ask(name, 'A')) as DnsResolver['resolve4'],
};
const auth = new SenderAuthenticator({ ...(workerData as Omit<SenderAuthOptions, 'resolver'>), resolver });

port.on('message', (msg: ToWorker) => {
  if (msg.type === 'dns') {
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    if (!p) return;
    if (msg.ok) p.resolve({ value: msg.value, code: msg.code, expiresInMs: msg.expiresInMs });
    else p.reject(Object.assign(new Error(msg.message), { code: msg.code }));
    return;
  }
  const input: AuthInput = { ...msg.input, message: Buffer.from(msg.input.message.buffer, msg.input.message.byteOffset, msg.input.message.byteLength) };
  auth.check(input).then(
    (outcome) => port.postMessage({ type: 'done', id: msg.id, outcome }),
    (err: unknown) => port.postMessage({ type: 'failed', id: msg.id, message: (err as Error)?.stack ?? String(err) }),
  );
});
