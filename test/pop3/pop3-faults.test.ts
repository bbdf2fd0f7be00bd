// POP3 when the store misbehaves: response codes (RFC 3206) for vanished messages, unreadable
// and briefly unavailable maildrops, a read that fails mid-transfer; and sizes of files
// another program wrote into the Maildir.
import { describe, expect, it } from 'vitest';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { RawLines } from '../helpers/raw-lines.ts';
import { ImapFlow } from 'imapflow';
import { POP_LISTENERS, fakeMaildrop, ioFault, popLogin, popMulti, startFakePop3, storeMessage, withHearth } from './pop3-helpers.ts';

describe('POP3 response codes when the store fails', () => {
  it('a message removed under the session gets a plain -ERR with a reason (small and streamed)', async () => {
    await withHearth(`${POP_LISTENERS}[limits]\nmessage_size = "10MB"\n`, async (hearth, setup) => {
      await storeMessage(setup, 'alice@example.test', 'Subject: small\r\n\r\nsmall\r\n');
      await storeMessage(setup, 'alice@example.test', `Subject: big\r\n\r\n${'x'.repeat(100)}\r\n`.repeat(15_000));
      const c = await popLogin(hearth.port('pop3'));
      const dir = join(setup.dataDir, 'example.test/alice/new');
      for (const name of await readdir(dir)) await rm(join(dir, name));
      expect(await c.command('RETR 1')).toBe('-ERR message 1 no longer exists (removed by another session)');
      expect(await c.command('RETR 2')).toBe('-ERR message 2 no longer exists (removed by another session)');
      expect(await c.command('TOP 1 0')).toBe('-ERR message 1 no longer exists (removed by another session)');
      expect(await c.command('NOOP')).toMatch(/^\+OK/);
      c.close();
    });
  });

  it('[SYS/PERM] when the maildrop cannot be read for good, [SYS/TEMP] when the fault may pass', async () => {
    const perm = await startFakePop3(async () => Promise.reject(ioFault('EACCES')));
    const temp = await startFakePop3(async () => Promise.reject(ioFault('EMFILE')));
    const unreadable = await startFakePop3(async () =>
      fakeMaildrop([{ uid: 1, size: 20 }, { uid: 2, size: 20 }], {
        readMessage: async (_folder, uid) => Promise.reject(ioFault(uid === 1 ? 'EACCES' : 'EAGAIN')),
      }),
    );
    try {
      for (const [server, code] of [[perm, 'SYS/PERM'], [temp, 'SYS/TEMP']] as const) {
        const c = await RawLines.connect(server.port);
        await c.line();
        await c.command('USER u');
        expect(await c.command('PASS p')).toMatch(new RegExp(`^-ERR \\[${code}\\] `));
        c.close();
      }
      const c = await popLogin(unreadable.port, 'u', 'p');
      expect(await c.command('RETR 1')).toMatch(/^-ERR \[SYS\/PERM\] /);
      expect(await c.command('RETR 2')).toMatch(/^-ERR \[SYS\/TEMP\] /);
      c.close();
    } finally {
      await Promise.all([perm.close(), temp.close(), unreadable.close()]);
    }
  });

  it('[SYS/PERM] for a corrupt mailbox index: node:sqlite errors carry the SQLite result code as a number', async () => {
    const { DatabaseSync } = await import('node:sqlite');
    const { mkdtemp } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const file = join(await mkdtemp(join(tmpdir(), 'pop3-notadb-')), 'index.sqlite');
    await writeFile(file, 'not a database, just text '.repeat(200));
    let sqliteError: unknown;
    try {
      new DatabaseSync(file).exec('SELECT * FROM sqlite_master');
    } catch (err) {
      sqliteError = err;
    }
    expect(sqliteError).toBeInstanceOf(Error);
    // As the store reports it: a StoreError whose cause is the driver's error.
    const wrapped = Object.assign(new Error('cannot open mailbox index', { cause: sqliteError }), { code: 'STORE_IO' });
    const server = await startFakePop3(async () => Promise.reject(wrapped));
    try {
      const c = await RawLines.connect(server.port);
      await c.line();
      await c.command('USER u');
      expect(await c.command('PASS p')).toMatch(/^-ERR \[SYS\/PERM\] /);
      c.close();
    } finally {
      await server.close();
      await rm(join(file, '..'), { recursive: true, force: true });
    }
  });

  it('a read failing after +OK of RETR/TOP drops the connection instead of writing -ERR into the body', async () => {
    const failingStream = () =>
      Readable.from(
        (async function* () {
          yield Buffer.from('Subject: doomed\r\n\r\n');
          yield Buffer.from(`${'y'.repeat(70)}\r\n`.repeat(2_000));
          throw Object.assign(new Error('EIO: disk went away'), { code: 'EIO' });
        })(),
      );
    const server = await startFakePop3(async () => fakeMaildrop([{ uid: 1, size: 2_000_000 }], { openMessage: async () => failingStream() }));
    try {
      for (const command of ['RETR 1', 'TOP 1 100000']) {
        const c = await popLogin(server.port, 'u', 'p');
        let received = '';
        c.socket.on('data', (d: string) => (received += d));
        c.send(`${command}\r\n`);
        expect(await c.waitClosed(5_000)).toBe(true);
        expect(received.startsWith('+OK ')).toBe(true);
        expect(received).toContain('Subject: doomed');
        expect(received).not.toContain('-ERR');
        expect(received.endsWith('\r\n.\r\n')).toBe(false);
      }
    } finally {
      await server.close();
    }
  });
});

describe('sizes of files hearth did not write', () => {
  it('a bare-LF file dropped into new/ without W= is listed with the size RETR sends, in POP3 and IMAP', async () => {
    await withHearth(`${POP_LISTENERS}[listeners.imap]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n`, async (hearth, setup) => {
      const dir = join(setup.dataDir, 'example.test/alice');
      await storeMessage(setup, 'alice@example.test', 'Subject: first\r\n\r\nmade by hearth\r\n'); // creates the Maildir
      const bare = `Subject: by hand\nFrom: script@example.test\n\n.a line with a dot\nand a bare LF\r\nmixed with CRLF\n${'z'.repeat(300)}\n`;
      await writeFile(join(dir, 'new', '1900000000.M1P1.otherhost'), bare);
      const sent = bare.replace(/(?<!\r)\n/g, '\r\n');
      expect(sent.length).toBeGreaterThan(bare.length);

      const c = await popLogin(hearth.port('pop3'));
      expect(await c.command('LIST 2')).toBe(`+OK 2 ${sent.length}`);
      const list = await popMulti(c, 'LIST');
      expect(list.body).toContain(`2 ${sent.length}\r\n`);
      const stat = await c.command('STAT');
      const total = Number(stat.split(' ')[2]);
      const retr = await popMulti(c, 'RETR 2');
      expect(retr.status).toBe(`+OK ${sent.length} octets`);
      // RFC 1939: the size counts the message with CRLF line ends, before dot-stuffing.
      const unstuffed = retr.body.replace(/^\./gm, '');
      expect(Buffer.byteLength(unstuffed, 'latin1')).toBe(sent.length);
      expect(unstuffed).toBe(sent);
      const first = await popMulti(c, 'RETR 1');
      expect(total).toBe(sent.length + Buffer.byteLength(first.body, 'latin1'));
      await c.command('QUIT');

      const imap = new ImapFlow({ host: '127.0.0.1', port: hearth.port('imap'), secure: false, doSTARTTLS: false, auth: { user: 'alice@example.test', pass: 'alice-password' }, logger: false });
      await imap.connect();
      try {
        await imap.mailboxOpen('INBOX');
        const sizes: number[] = [];
        for await (const m of imap.fetch('1:*', { size: true })) sizes.push(m.size!);
        expect(sizes[1]).toBe(sent.length);
      } finally {
        await imap.logout();
      }
    });
  });
});
