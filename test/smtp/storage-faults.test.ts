// A full or failing disk must never cost a message: the client gets 451 4.3.0 (and retries
// later), and nothing half-written is left in new/ or tmp/.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../src/core/log.ts';
import { MaildirStore } from '../../src/store/maildir.ts';
import { nodeStoreIo } from '../../src/store/io.ts';
import type { StoreIo } from '../../src/store/io.ts';
import { InboundSmtp } from '../../src/smtp/inbound.ts';
import type { RecipientDirectory } from '../../src/smtp/inbound.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';

const directory: RecipientDirectory = {
  isLocalDomain: (d) => d === 'example.test',
  resolve: (a) => (a.toLowerCase() === 'alice@example.test' ? { local: [{ user: 'alice', domain: 'example.test' }], remote: [] } : null),
};

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: simulated`), { code });
}

describe('inbound SMTP on a failing disk', () => {
  let root: string | undefined;
  let server: InboundSmtp | undefined;
  afterEach(async () => {
    await server?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  for (const [name, io] of [
    ['ENOSPC while writing', { write: async () => Promise.reject(errno('ENOSPC')) }],
    ['EIO at fsync', { fsync: async () => Promise.reject(errno('EIO')) }],
  ] as Array<[string, Partial<StoreIo>]>) {
    it(`answers 451 4.3.0 on ${name} and leaves nothing behind; the next message goes through once the disk is fine`, async () => {
      root = await mkdtemp(join(tmpdir(), 'hearth-faults-'));
      let failing = true;
      const faulty: Partial<StoreIo> = Object.fromEntries(
        Object.entries(io).map(([k, fn]) => [k, (...args: unknown[]) => (failing ? (fn as (...a: unknown[]) => unknown)(...args) : (nodeStoreIo as unknown as Record<string, (...a: unknown[]) => unknown>)[k](...args))]),
      );
      const store = new MaildirStore({ root, hostname: 'mx.test', io: faulty, log: silentLogger() });
      server = new InboundSmtp({
        hostname: 'mx.test', log: silentLogger(), directory, store, tls: 'plain',
        maxMessageBytes: 1 << 20, maxRecipients: 10, connectionsPerIp: 10, maxConnections: 10, idleTimeoutMs: 10_000, closeTimeoutMs: 1_000,
      });
      const { port } = await server.listen(0, '127.0.0.1');
      const c = await RawSmtp.connect(port);
      await c.reply();
      await c.command('EHLO client.test');
      const send = async (subject: string) => {
        await c.command('MAIL FROM:<a@remote.example>');
        await c.command('RCPT TO:<alice@example.test>');
        await c.command('DATA');
        c.send(`Subject: ${subject}\r\n\r\nbody\r\n.\r\n`);
        return c.reply();
      };
      expect(await send('first')).toMatch(/^451 4\.3\.0 /);
      const box = join(root, 'example.test', 'alice');
      expect(await readdir(join(box, 'new'))).toEqual([]);
      expect(await readdir(join(box, 'tmp'))).toEqual([]);
      failing = false;
      expect(await send('second')).toMatch(/^250 /);
      expect(await readdir(join(box, 'new'))).toHaveLength(1);
      c.close();
    });
  }
});
