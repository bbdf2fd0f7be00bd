// Issue 2 (core, graceful shutdown; DESIGN invariant 1): when the grace period ends, a
// transaction whose message is already in full may be past the point of no return (the store
// linking into new/, the outbound queue writing its entry). Its reply must then be what
// really happened: 250 if the message was kept, 421 only if nothing was. A 421 for a message
// that is stored makes the client send it again: a duplicate.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../src/core/log.ts';
import { LoginLimiter } from '../../src/core/login-limiter.ts';
import { MaildirStore } from '../../src/store/maildir.ts';
import { nodeStoreIo } from '../../src/store/io.ts';
import { InboundSmtp } from '../../src/smtp/inbound.ts';
import type { RecipientDirectory } from '../../src/smtp/inbound.ts';
import { SubmissionPipeline, SubmissionSmtp } from '../../src/smtp/submission.ts';
import type { OutboundEnqueue } from '../../src/smtp/submission.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';

const directory: RecipientDirectory & { authenticate(a: string, p: string): Promise<{ user: string; domain: string } | null> } = {
  isLocalDomain: (d) => d === 'example.test',
  resolve: (a) => (a.toLowerCase() === 'alice@example.test' ? { local: [{ user: 'alice', domain: 'example.test' }], remote: [] } : null),
  authenticate: async (a, p) => (a === 'alice@example.test' && p === 'pw' ? { user: 'alice', domain: 'example.test' } : null),
};

const limits = { maxMessageBytes: 1 << 20, maxRecipients: 10, connectionsPerIp: 10, maxConnections: 10, idleTimeoutMs: 10_000 };

function gate(): { opened: Promise<void>; open: () => void; reached: Promise<void>; reach: () => void } {
  let open!: () => void;
  let reach!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  const reached = new Promise<void>((r) => (reach = r));
  return { opened, open, reached, reach };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('shutdown when the grace period ends while a message is being committed', () => {
  let root: string | undefined;
  let closeServer: (() => Promise<void>) | undefined;
  afterEach(async () => {
    await closeServer?.();
    closeServer = undefined;
    if (root) await rm(root, { recursive: true, force: true });
    root = undefined;
  });

  it('MX: the store is linking into new/ when the grace ends; the client gets 250 (then 421), not 421 for a stored message', async () => {
    root = await mkdtemp(join(tmpdir(), 'hearth-shutdown-race-'));
    const linking = gate();
    const store = new MaildirStore({
      root, hostname: 'mx.test', log: silentLogger(),
      io: {
        link: async (from, to) => {
          linking.reach();
          await linking.opened;
          return nodeStoreIo.link(from, to);
        },
      },
    });
    const server = new InboundSmtp({ hostname: 'mx.test', log: silentLogger(), directory, store, tls: 'plain', ...limits, closeTimeoutMs: 200 });
    closeServer = () => server.close();
    const { port } = await server.listen(0, '127.0.0.1');
    const c = await RawSmtp.connect(port);
    expect(await c.reply()).toMatch(/^220 /);
    await c.command('EHLO client.test');
    expect(await c.command('MAIL FROM:<a@remote.example>')).toMatch(/^250 /);
    expect(await c.command('RCPT TO:<alice@example.test>')).toMatch(/^250 /);
    expect(await c.command('DATA')).toMatch(/^354 /);
    c.send('Subject: committed\r\n\r\nbody\r\n.\r\n');
    await linking.reached; // written and fsync'd in tmp/; the links into new/ are under way
    const closing = server.close();
    await sleep(500); // the grace period (200 ms) is over
    linking.open();
    const reply = await c.reply();
    const inNew = await readdir(join(root, 'example.test', 'alice', 'new'));
    expect({ reply: reply.slice(0, 3), inNew: inNew.length }).toEqual({ reply: '250', inNew: 1 });
    expect(await c.reply()).toMatch(/^421 4\.3\.2 /);
    await closing;
  });

  it('submission: the outbound queue is writing its entry when the grace ends; the client gets 250 (then 421), and it is queued once', async () => {
    root = await mkdtemp(join(tmpdir(), 'hearth-shutdown-race-'));
    const enqueuing = gate();
    const queued: string[] = [];
    const queue: OutboundEnqueue = {
      enqueue: async () => {
        enqueuing.reach();
        await enqueuing.opened;
        queued.push('q1');
        return 'q1';
      },
    };
    const store = new MaildirStore({ root, hostname: 'mx.test', log: silentLogger() });
    const pipeline = new SubmissionPipeline({ hostname: 'mx.test', log: silentLogger(), directory, store, queue });
    const server = new SubmissionSmtp({
      hostname: 'mx.test', log: silentLogger(), tls: 'plain', plaintextAuth: 'always', ...limits, closeTimeoutMs: 200,
      directory, pipeline, limiter: new LoginLimiter({ baseDelayMs: 0, maxDelayMs: 0 }), domains: () => ['example.test'],
    });
    closeServer = () => server.close();
    const { port } = await server.listen(0, '127.0.0.1');
    const c = await RawSmtp.connect(port);
    expect(await c.reply()).toMatch(/^220 /);
    await c.command('EHLO client.test');
    expect(await c.command(`AUTH PLAIN ${Buffer.from('\0alice@example.test\0pw').toString('base64')}`)).toMatch(/^235 /);
    expect(await c.command('MAIL FROM:<alice@example.test>')).toMatch(/^250 /);
    expect(await c.command('RCPT TO:<bob@remote.example>')).toMatch(/^250 /);
    expect(await c.command('DATA')).toMatch(/^354 /);
    c.send('From: alice@example.test\r\nTo: bob@remote.example\r\nSubject: queued\r\n\r\nbody\r\n.\r\n');
    await enqueuing.reached;
    const closing = server.close();
    await sleep(500);
    enqueuing.open();
    const reply = await c.reply();
    expect({ reply: reply.slice(0, 3), queued }).toEqual({ reply: '250', queued: ['q1'] });
    expect(await c.reply()).toMatch(/^421 4\.3\.2 /);
    await closing;
  });
});
