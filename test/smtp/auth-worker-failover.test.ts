// A sender-checks thread that fails reports 'error' and then 'exit'. Its checks move to the
// event loop once; checks already given to the next thread stay with that thread.
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import type { Worker as WorkerType } from 'node:worker_threads';
import { silentLogger } from '../../src/core/log.ts';
import { SenderAuthenticator } from '../../src/smtp/auth-checks.ts';
import { AuthCheckWorker } from '../../src/smtp/auth-worker.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import type { DnsServer } from '../helpers/dns-server.ts';

// Keep every thread AuthCheckWorker starts, to make it fail from here.
const threads = vi.hoisted(() => [] as WorkerType[]);
vi.mock('node:worker_threads', async (importOriginal) => {
  const original = await importOriginal<typeof import('node:worker_threads')>();
  class KeptWorker extends original.Worker {
    constructor(...args: ConstructorParameters<typeof original.Worker>) {
      super(...args);
      threads.push(this);
    }
  }
  return { ...original, Worker: KeptWorker };
});

let dns: DnsServer;
beforeAll(async () => {
  // slow.test never answers: a check of it stays in its thread until the DNS deadline.
  dns = await startDnsServer({ 'slow.test': { TXT: [['v=spf1 -all']] }, 'fast.test': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] } }, { drop: ['slow.test'] });
});
afterAll(() => dns?.close());

const input = (domain: string) => ({ message: Buffer.from(`From: <a@${domain}>\r\nSubject: x\r\n\r\nHello.\r\n`), ip: '127.0.0.1', helo: 'client.test', sender: `a@${domain}` });

it('moves a failed thread\'s checks to the loop once, and leaves the next thread\'s alone', async () => {
  const worker = new AuthCheckWorker(
    { hostname: 'mx.test.example', resolver: dns.resolver({ timeout: 400, tries: 1 }), deadlineMs: 3000, maxLookups: 50, dmarcReject: true, dmarcQuarantine: true, rejectSpfFail: false },
    silentLogger(),
  );
  const onLoop = vi.spyOn(SenderAuthenticator.prototype, 'check');
  try {
    const first = worker.check(input('fast.test'));
    await vi.waitFor(() => expect(threads).toHaveLength(1));
    const [a] = threads;
    // Thread A fails: 'error' first. Its check moves to the loop.
    a.emit('error', new Error('thread crashed'));
    expect(onLoop).toHaveBeenCalledTimes(1);
    // The next check starts thread B, and is slow there.
    const second = worker.check(input('slow.test'));
    expect(threads).toHaveLength(2);
    // Then A's 'exit' arrives: B's check must not move (it would run twice).
    await a.terminate();
    expect(onLoop).toHaveBeenCalledTimes(1);
    expect((await first).spf).toBe('pass');
    expect((await second).spf).toBe('temperror');
    expect(onLoop).toHaveBeenCalledTimes(1);
  } finally {
    await worker.close();
  }
});
