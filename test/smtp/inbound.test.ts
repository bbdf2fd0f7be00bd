import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { stat } from 'node:fs/promises';
import nodemailer from 'nodemailer';
import MailComposer from 'nodemailer/lib/mail-composer/index.js';
import { simpleParser } from 'mailparser';
import { inboxFiles, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { runPython } from '../helpers/python.ts';

type Running = Awaited<ReturnType<typeof startTestHearth>>;

function compose(opts: { from: string; to: string | string[]; subject: string; text: string }): Promise<Buffer> {
  return new MailComposer({ ...opts, messageId: `<${opts.subject.replace(/\W/g, '')}@test>`, date: new Date('2026-01-02T03:04:05Z') }).compile().build();
}

function transport(port: number) {
  return nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, tls: { rejectUnauthorized: false } });
}

/** The stored file is our trace headers followed by exactly the bytes the client sent. */
function bodyAfterTrace(stored: Buffer): Buffer {
  const text = stored.toString('latin1');
  const m = /^Return-Path: <[^>]*>\r\n(?:Delivered-To: [^\r]*\r\n)?Received: from [^\r]*\r\n\tby [^\r]*\r\n\tid [^\r;]*(?:\r\n\tfor <[^>]*>)?; [^\r]*\r\n/.exec(text);
  expect(m, 'trace headers at the top').not.toBeNull();
  return stored.subarray(m![0].length);
}

describe('inbound SMTP', () => {
  let setup: TestSetup;
  let hearth: Running;

  beforeAll(async () => {
    setup = await makeSetup({ toml: '[limits]\nmessage_size = "64KB"\nrecipients = 3\nconnections_per_ip = 60\n' });
    hearth = await startTestHearth(setup);
  });
  afterAll(async () => {
    await hearth?.close();
    await setup?.cleanup();
  });

  it('delivers a nodemailer message byte for byte, with Received, Return-Path and Delivered-To', async () => {
    const raw = await compose({ from: 'sender@remote.example', to: 'alice@example.test', subject: 'Hello nodemailer', text: 'Hi Alice,\r\n.\r\nA line with a dot.\r\n' });
    expect(raw.includes('\r\n.\r\n')).toBe(true); // the dot line is dot-stuffed on the wire and unstuffed here
    const info = await transport(hearth.smtpPort).sendMail({ envelope: { from: 'sender@remote.example', to: ['alice@example.test'] }, raw });
    expect(info.response).toMatch(/^250 2\.6\.0 /);
    const files = (await inboxFiles(setup.dataDir, 'alice@example.test')).filter((f) => f.content.includes('Hello nodemailer'));
    expect(files).toHaveLength(1);
    expect(bodyAfterTrace(files[0].content).equals(raw)).toBe(true);
    const head = files[0].content.toString('utf8');
    expect(head).toMatch(/^Return-Path: <sender@remote\.example>\r\nDelivered-To: alice@example\.test\r\nReceived: from /);
    expect(head).toMatch(/by mx\.test\.example \(hearth\) with ESMTPS? /);
    expect(head).toContain('for <alice@example.test>');
    expect(files[0].name).toMatch(new RegExp(`,S=${files[0].content.length}(,W=\\d+)?$`));
    const parsed = await simpleParser(files[0].content);
    expect(parsed.subject).toBe('Hello nodemailer');
    expect(parsed.text).toContain('A line with a dot.');
  });

  it('delivers over STARTTLS and records the TLS version in Received', async () => {
    const raw = await compose({ from: 'tls@remote.example', to: 'bob@example.test', subject: 'Over TLS', text: 'secret\n' });
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: hearth.smtpPort, secure: false, requireTLS: true, tls: { rejectUnauthorized: false } });
    await t.sendMail({ envelope: { from: 'tls@remote.example', to: ['bob@example.test'] }, raw });
    const files = (await inboxFiles(setup.dataDir, 'bob@example.test')).filter((f) => f.content.includes('Over TLS'));
    expect(files).toHaveLength(1);
    expect(files[0].content.toString()).toMatch(/with ESMTPS \(TLSv1\.[23] [A-Z0-9_-]+\)/);
  });

  it("delivers from Python's smtplib, plain and with starttls", async () => {
    const script = `
import smtplib, sys
port = int(sys.argv[1])
for n, tls in ((1, False), (2, True)):
    msg = ("From: py@remote.example\\r\\nTo: bob@example.test\\r\\nSubject: smtplib %d\\r\\nMessage-ID: <py%d@test>\\r\\n\\r\\nHello from Python %d\\r\\n" % (n, n, n)).encode()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("python.test")
        if tls:
            import ssl
            ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            s.starttls(context=ctx); s.ehlo("python.test")
        refused = s.sendmail("py@remote.example", ["bob@example.test"], msg)
        print("refused", refused)
        sys.stdout.buffer.write(msg)
        print()
`;
    const { stdout } = await runPython(script, [String(hearth.smtpPort)]);
    expect(stdout).toContain('refused {}');
    for (const n of [1, 2]) {
      const files = (await inboxFiles(setup.dataDir, 'bob@example.test')).filter((f) => f.content.includes(`Subject: smtplib ${n}`));
      expect(files).toHaveLength(1);
      const sent = Buffer.from(`From: py@remote.example\r\nTo: bob@example.test\r\nSubject: smtplib ${n}\r\nMessage-ID: <py${n}@test>\r\n\r\nHello from Python ${n}\r\n`);
      expect(bodyAfterTrace(files[0].content).equals(sent)).toBe(true);
      expect(files[0].content.toString()).toContain('Received: from python.test ([127.0.0.1])');
    }
  });

  it('refuses unknown users (550 5.1.1), other domains (554 5.7.1: no open relay) and bad addresses', async () => {
    const c = await RawSmtp.connect(hearth.smtpPort);
    expect(await c.reply()).toMatch(/^220 /);
    expect(await c.command('EHLO client.test')).toMatch(/^250/);
    expect(await c.command('MAIL FROM:<x@remote.example>')).toMatch(/^250/);
    expect(await c.command('RCPT TO:<nobody@example.test>')).toMatch(/^550 5\.1\.1 No such user/);
    expect(await c.command('RCPT TO:<victim@gmail.example>')).toMatch(/^554 5\.7\.1 Relay access denied/);
    expect(await c.command('RCPT TO:<noat>')).toMatch(/^5\d\d /);
    expect(await c.command('DATA')).toMatch(/^503 /);
    expect(await c.command('QUIT')).toMatch(/^221 /);
    c.close();
  });

  it('delivers to an alias with several mailboxes as one file, hard-linked', async () => {
    const raw = await compose({ from: 'x@remote.example', to: 'family@family.test', subject: 'For the family', text: 'dinner\n' });
    await transport(hearth.smtpPort).sendMail({ envelope: { from: 'x@remote.example', to: ['family@family.test'] }, raw });
    const a = (await inboxFiles(setup.dataDir, 'alice@example.test')).find((f) => f.content.includes('For the family'));
    const b = (await inboxFiles(setup.dataDir, 'bob@example.test')).find((f) => f.content.includes('For the family'));
    expect(a && b).toBeTruthy();
    const [sa, sb] = await Promise.all([
      stat(`${setup.dataDir}/example.test/alice/new/${a!.name}`),
      stat(`${setup.dataDir}/example.test/bob/new/${b!.name}`),
    ]);
    expect(sa.ino).toBe(sb.ino);
    expect(a!.content.toString()).not.toContain('Delivered-To:');
  });

  it('enforces SIZE (552, nothing stored) and advertises it', async () => {
    const c = await RawSmtp.connect(hearth.smtpPort);
    await c.reply();
    expect(await c.command('EHLO client.test')).toMatch(/250[ -]SIZE 65536/);
    expect(await c.command('MAIL FROM:<big@remote.example> SIZE=100000')).toMatch(/^552 /);
    expect(await c.command('MAIL FROM:<big@remote.example>')).toMatch(/^250/);
    expect(await c.command('RCPT TO:<alice@example.test>')).toMatch(/^250/);
    expect(await c.command('DATA')).toMatch(/^354/);
    const line = 'x'.repeat(998) + '\r\n';
    c.send('Subject: too big\r\n\r\n' + line.repeat(100) + '.\r\n');
    expect(await c.reply()).toMatch(/^552 5\.3\.4 /);
    expect(await c.command('NOOP')).toMatch(/^250/);
    c.close();
    const files = (await inboxFiles(setup.dataDir, 'alice@example.test')).filter((f) => f.content.includes('Subject: too big'));
    expect(files).toHaveLength(0);
  });

  it('limits recipients per message (452 4.5.3)', async () => {
    const c = await RawSmtp.connect(hearth.smtpPort);
    await c.reply();
    await c.command('EHLO client.test');
    await c.command('MAIL FROM:<x@remote.example>');
    for (const r of ['alice@example.test', 'bob@example.test', 'postmaster@example.test']) expect(await c.command(`RCPT TO:<${r}>`)).toMatch(/^250/);
    expect(await c.command('RCPT TO:<family@family.test>')).toMatch(/^452 4\.5\.3 /);
    c.close();
  });

  const smuggling: Array<[string, string]> = [
    ['<LF>.<LF>', '\n.\n'],
    ['<CR>.<CR>', '\r.\r'],
    ['<LF>.<CR><LF>', '\n.\r\n'],
    ['<CR><LF>.<LF>', '\r\n.\n'],
    ['<CR>.<CR><LF>', '\r.\r\n'],
    ['<CR><LF>.<CR>', '\r\n.\r'],
  ];
  for (const [name, terminator] of smuggling) {
    it(`refuses a smuggling attempt with ${name} (554 5.6.0), storing nothing`, async () => {
      const marker = `smuggle-${name.replace(/\W/g, '')}`;
      const c = await RawSmtp.connect(hearth.smtpPort);
      await c.reply();
      await c.command('EHLO client.test');
      await c.command('MAIL FROM:<a@remote.example>');
      await c.command('RCPT TO:<alice@example.test>');
      expect(await c.command('DATA')).toMatch(/^354/);
      c.send(
        `Subject: ${marker} first\r\n\r\nfirst${terminator}MAIL FROM:<admin@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: ${marker} second\r\n\r\nsmuggled\r\n.\r\n`,
      );
      expect(await c.reply()).toMatch(/^554 5\.6\.0 .*bare (CR|LF)/);
      // The connection stays in step: the smuggled commands were message text, not commands.
      expect(await c.command('NOOP')).toMatch(/^250/);
      c.close();
      const files = (await inboxFiles(setup.dataDir, 'alice@example.test')).filter((f) => f.content.includes(marker));
      expect(files).toHaveLength(0);
    });
  }

  it('handles pipelined MAIL, RCPT, DATA and the message in one write', async () => {
    const c = await RawSmtp.connect(hearth.smtpPort);
    await c.reply();
    expect(await c.command('EHLO client.test')).toContain('PIPELINING');
    c.send('MAIL FROM:<pipe@remote.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<ghost@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n');
    expect(await c.reply()).toMatch(/^250/);
    expect(await c.reply()).toMatch(/^250/);
    expect(await c.reply()).toMatch(/^550/);
    expect(await c.reply()).toMatch(/^250/);
    expect(await c.reply()).toMatch(/^354/);
    c.send('Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n');
    expect(await c.reply()).toMatch(/^250/);
    expect(await c.reply()).toMatch(/^221/);
    c.close();
    expect((await inboxFiles(setup.dataDir, 'alice@example.test')).filter((f) => f.content.includes('Subject: pipelined'))).toHaveLength(1);
    expect((await inboxFiles(setup.dataDir, 'bob@example.test')).filter((f) => f.content.includes('Subject: pipelined'))).toHaveLength(1);
  });

  it('discards commands pipelined before the STARTTLS handshake', async () => {
    const c = await RawSmtp.connect(hearth.smtpPort);
    await c.reply();
    await c.command('EHLO client.test');
    c.send('STARTTLS\r\nMAIL FROM:<injected@remote.example>\r\n');
    expect(await c.reply()).toMatch(/^220/);
    await c.starttls();
    // After TLS the client must start over; an injected MAIL would make this a 503 or a 250 for MAIL.
    expect(await c.command('EHLO client.test')).toMatch(/^250-/);
    expect(await c.command('RCPT TO:<alice@example.test>')).toMatch(/^503 /);
    c.close();
  });

  it('answers an overlong command line with an error and closes that connection only', async () => {
    const c = await RawSmtp.connect(hearth.smtpPort);
    await c.reply();
    await c.command('EHLO client.test');
    // smtp-server's choice: 421 and close, since the rest of the line cannot be trusted.
    expect(await c.command('NOOP ' + 'a'.repeat(20_000))).toMatch(/^421 .*too long/i);
    c.close();
    const d = await RawSmtp.connect(hearth.smtpPort);
    expect(await d.reply()).toMatch(/^220/);
    d.close();
  });

  it('answers unknown commands and commands in the wrong state with errors', async () => {
    const c = await RawSmtp.connect(hearth.smtpPort);
    await c.reply();
    expect(await c.command('FROB')).toMatch(/^500 /);
    expect(await c.command('EHLO client.test')).toMatch(/^250/);
    expect(await c.command('RCPT TO:<alice@example.test>')).toMatch(/^503 /);
    expect(await c.command('DATA')).toMatch(/^503 /);
    expect(await c.command('AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk')).toMatch(/^50[023] /);
    expect(await c.command('MAIL FROM:<a@remote.example>')).toMatch(/^250/);
    expect(await c.command('MAIL FROM:<b@remote.example>')).toMatch(/^503 /);
    c.close();
  });

  it('takes 50 concurrent senders and stores each message exactly once', async () => {
    const senders = Array.from({ length: 50 }, async (_, i) => {
      const raw = await compose({ from: `s${i}@remote.example`, to: 'bob@example.test', subject: `concurrent ${i}`, text: `message ${i}\n`.repeat(50) });
      const t = transport(hearth.smtpPort);
      await t.sendMail({ envelope: { from: `s${i}@remote.example`, to: ['bob@example.test'] }, raw });
      t.close();
    });
    await Promise.all(senders);
    const files = await inboxFiles(setup.dataDir, 'bob@example.test');
    for (let i = 0; i < 50; i++) {
      expect(files.filter((f) => f.content.includes(`Subject: concurrent ${i}\r\n`))).toHaveLength(1);
    }
  });
});

describe('inbound SMTP limits and lifecycle', () => {
  let setup: TestSetup | undefined;
  let hearth: Running | undefined;
  afterEach(async () => {
    await hearth?.close();
    await setup?.cleanup();
    hearth = undefined;
    setup = undefined;
  });

  it('caps connections per address with 421', async () => {
    setup = await makeSetup({ toml: '[limits]\nconnections_per_ip = 2\n' });
    hearth = await startTestHearth(setup);
    const a = await RawSmtp.connect(hearth.smtpPort);
    const b = await RawSmtp.connect(hearth.smtpPort);
    expect(await a.reply()).toMatch(/^220/);
    expect(await b.reply()).toMatch(/^220/);
    const c = await RawSmtp.connect(hearth.smtpPort);
    expect(await c.reply()).toMatch(/^421 4\.7\.0 Too many connections/);
    a.close();
    b.close();
    c.close();
  });

  it('closes an idle connection with 421 after the idle timeout', async () => {
    setup = await makeSetup({ toml: '[timeouts]\nsmtp_idle = "300ms"\n' });
    hearth = await startTestHearth(setup);
    const c = await RawSmtp.connect(hearth.smtpPort);
    expect(await c.reply()).toMatch(/^220/);
    expect(await c.reply(5_000)).toMatch(/^421 /);
    c.close();
  });

  it('shuts down gracefully: the transaction in flight completes, new connections are refused', async () => {
    setup = await makeSetup();
    hearth = await startTestHearth(setup);
    const port = hearth.smtpPort;
    const c = await RawSmtp.connect(port);
    await c.reply();
    await c.command('EHLO client.test');
    await c.command('MAIL FROM:<late@remote.example>');
    await c.command('RCPT TO:<alice@example.test>');
    expect(await c.command('DATA')).toMatch(/^354/);
    c.send('Subject: in flight\r\n\r\nfirst half\r\n');
    const closing = hearth.close();
    await expect(RawSmtp.connect(port)).rejects.toThrow();
    c.send('second half\r\n.\r\n');
    expect(await c.reply()).toMatch(/^250 /);
    c.close();
    await closing;
    hearth = undefined;
    expect((await inboxFiles(setup.dataDir, 'alice@example.test')).filter((f) => f.content.includes('Subject: in flight'))).toHaveLength(1);
  });

  it('drops the client cleanly when it disconnects in the middle of DATA, storing nothing', async () => {
    setup = await makeSetup();
    hearth = await startTestHearth(setup);
    const c = await RawSmtp.connect(hearth.smtpPort);
    await c.reply();
    await c.command('EHLO client.test');
    await c.command('MAIL FROM:<gone@remote.example>');
    await c.command('RCPT TO:<alice@example.test>');
    await c.command('DATA');
    c.send('Subject: cut off\r\n\r\nhalf a message');
    c.close();
    // The server is still healthy and the partial message is nowhere.
    const d = await RawSmtp.connect(hearth.smtpPort);
    expect(await d.reply()).toMatch(/^220/);
    expect(await d.command('NOOP')).toMatch(/^250/);
    d.close();
    expect((await inboxFiles(setup.dataDir, 'alice@example.test')).filter((f) => f.content.includes('cut off'))).toHaveLength(0);
  });
});

describe('inbound SMTP and live user changes', () => {
  it('accepts mail for a user added while the server runs, without a restart', async () => {
    const setup = await makeSetup();
    const hearth = await startTestHearth(setup);
    try {
      const c = await RawSmtp.connect(hearth.smtpPort);
      await c.reply();
      await c.command('EHLO client.test');
      await c.command('MAIL FROM:<x@remote.example>');
      expect(await c.command('RCPT TO:<newbie@example.test>')).toMatch(/^550 5\.1\.1 /);
      const { UsersFile } = await import('../../src/config/users.ts');
      await new UsersFile(`${setup.configDir}/users`).add('newbie@example.test', 'newbie-password');
      // The file watcher reloads within moments; bounded wait for it.
      let reply = '';
      for (let i = 0; i < 100; i++) {
        reply = await c.command('RCPT TO:<newbie@example.test>');
        if (reply.startsWith('250')) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(reply).toMatch(/^250 /);
      c.close();
    } finally {
      await hearth.close();
      await setup.cleanup();
    }
  });
});
