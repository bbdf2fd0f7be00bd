// POP3 over time and size: big messages, restarts, messages that vanish under a session.
import { describe, expect, it } from 'vitest';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import nodemailer from 'nodemailer';
import { makeSetup, startTestHearth } from '../helpers/hearth.ts';
import { RawLines } from '../helpers/raw-lines.ts';
import { runPython } from '../helpers/python.ts';
import { POP_LISTENERS, popLogin as login } from './pop3-helpers.ts';

describe('POP3 with big messages, restarts and concurrent changes', () => {
  it('retrieves a 10 MB attachment byte for byte (poplib), streaming', async () => {
    const setup = await makeSetup({ toml: `${POP_LISTENERS}[limits]\nmessage_size = "30MB"\n` });
    const hearth = await startTestHearth(setup);
    try {
      const attachment = randomBytes(10 * 1024 * 1024);
      await nodemailer.createTransport({ host: '127.0.0.1', port: hearth.smtpPort, secure: false, ignoreTLS: true }).sendMail({
        from: 'big@remote.example', to: 'alice@example.test', subject: 'big one', text: 'see attachment',
        attachments: [{ filename: 'blob.bin', content: attachment }],
      });
      const script = `
import poplib, sys, hashlib
p = poplib.POP3("127.0.0.1", int(sys.argv[1]), timeout=30)
p.user("alice@example.test"); p.pass_("alice-password")
resp, lines, octets = p.retr(1)
data = b"\\r\\n".join(lines) + b"\\r\\n"
print(len(data), hashlib.sha256(data).hexdigest())
p.quit()`;
      const { stdout } = await runPython(script, [String(hearth.port('pop3'))], 60_000);
      const { createHash } = await import('node:crypto');
      const { readFile } = await import('node:fs/promises');
      // RETR marked it \Seen, so it now lives in cur/.
      const [name] = await readdir(join(setup.dataDir, 'example.test/alice/cur'));
      const stored = await readFile(join(setup.dataDir, 'example.test/alice/cur', name));
      expect(stdout.trim()).toBe(`${stored.length} ${createHash('sha256').update(stored).digest('hex')}`);
      expect(stored.length).toBeGreaterThan(13_000_000);
    } finally {
      await hearth.close();
      await setup.cleanup();
    }
  }, 60_000);

  it('keeps UIDLs across a restart, and answers -ERR for a message removed under the session', async () => {
    const setup = await makeSetup({ toml: POP_LISTENERS });
    let hearth = await startTestHearth(setup);
    try {
      for (const subject of ['a', 'b', 'c']) {
        await nodemailer.createTransport({ host: '127.0.0.1', port: hearth.smtpPort, secure: false, ignoreTLS: true }).sendMail({ from: 'x@remote.example', to: 'bob@example.test', subject, text: subject });
      }
      const uidl = async () => {
        const c = await login(hearth.port('pop3'), 'bob@example.test', 'bob-password');
        c.send('UIDL\r\n');
        await c.line();
        const body = await c.dotBody();
        await c.command('QUIT');
        return body;
      };
      const before = await uidl();
      expect(before.trim().split('\r\n')).toHaveLength(3);
      await hearth.close();
      hearth = await startTestHearth(setup);
      expect(await uidl()).toBe(before);

      // Another program (or an IMAP client) deletes message 2 while a POP3 session is open.
      const c = await login(hearth.port('pop3'), 'bob@example.test', 'bob-password');
      const dir = join(setup.dataDir, 'example.test/bob/new');
      const { readFile } = await import('node:fs/promises');
      const names = await readdir(dir);
      const second = [];
      for (const n of names) if ((await readFile(join(dir, n), 'utf8')).includes('Subject: b')) second.push(n);
      expect(second).toHaveLength(1);
      await rm(join(dir, second[0]));
      expect(await c.command('RETR 2')).toBe('-ERR message 2 no longer exists (removed by another session)');
      expect(await c.command('LIST 2')).toMatch(/^\+OK 2 /); // the session keeps its numbering
      expect(await c.command('RETR 3')).toMatch(/^\+OK/);
      await c.dotBody();
      expect(await c.command('DELE 2')).toMatch(/^\+OK/);
      expect(await c.command('QUIT')).toMatch(/^\+OK/);
    } finally {
      await hearth.close();
      await setup.cleanup();
    }
  });

  it('LIST and STAT give the size RETR sends (CRLF) for a bare-LF message, from its W=', async () => {
    const setup = await makeSetup({ toml: POP_LISTENERS });
    const hearth = await startTestHearth(setup);
    try {
      const { MaildirStore } = await import('../../src/store/maildir.ts');
      const bare = 'Subject: local\n\nwritten\nwith bare\nline feeds\n';
      const crlf = 'Subject: crlf\r\n\r\nfine\r\n';
      const store = new MaildirStore({ root: setup.dataDir, fsync: false });
      await store.deliver([{ user: 'alice', domain: 'example.test' }], bare);
      await store.deliver([{ user: 'alice', domain: 'example.test' }], crlf);
      const sent = bare.replaceAll('\n', '\r\n');
      const c = await login(hearth.port('pop3'));
      expect(await c.command('LIST 1')).toBe(`+OK 1 ${sent.length}`);
      expect(await c.command('LIST 2')).toBe(`+OK 2 ${crlf.length}`);
      expect(await c.command('STAT')).toBe(`+OK 2 ${sent.length + crlf.length}`);
      expect(await c.command('RETR 1')).toMatch(/^\+OK/);
      expect(await c.dotBody()).toBe(sent);
      c.close();
    } finally {
      await hearth.close();
      await setup.cleanup();
    }
  });

  it('answers a pipelined burst of many commands in order (paced, not refused)', async () => {
    const setup = await makeSetup({ toml: POP_LISTENERS });
    const hearth = await startTestHearth(setup);
    try {
      const c = await login(hearth.port('pop3'));
      c.send('NOOP\r\n'.repeat(150));
      for (let i = 0; i < 150; i++) expect(await c.line()).toBe('+OK ');
      c.close();
    } finally {
      await hearth.close();
      await setup.cleanup();
    }
  });

  it('closes a connection that does not log in before the login deadline', async () => {
    const setup = await makeSetup({ toml: `${POP_LISTENERS}[timeouts]\npop3_idle = "300ms"\n` });
    const hearth = await startTestHearth(setup);
    try {
      const c = await RawLines.connect(hearth.port('pop3'));
      expect(await c.line()).toMatch(/^\+OK/);
      expect(await c.waitClosed(5_000)).toBe(true);
    } finally {
      await hearth.close();
      await setup.cleanup();
    }
  });
});
