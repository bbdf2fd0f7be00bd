// Sending, end to end on loopback: a user's client submits (nodemailer, smtplib) over
// STARTTLS and implicit TLS; hearth signs with DKIM, queues durably, finds the MX through a
// real DNS server and relays to a real SMTP server playing the remote domain; failures come
// back as DSNs in the sender's mailbox.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { simpleParser } from 'mailparser';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { generateDkimKey } from '../../src/smtp/dkim.ts';
import { CLI, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import type { DnsServer } from '../helpers/dns-server.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { runPython } from '../helpers/python.ts';
import { relayToml, startRemoteMx, stopAll, waitFor } from '../helpers/remote-mx.ts';

describe('sending through hearth', () => {
  let setup: TestSetup;
  let dns: DnsServer;
  let hearth: Awaited<ReturnType<typeof startTestHearth>>;
  let remote: Awaited<ReturnType<typeof startRemoteMx>>;
  const dkimRecords = new Map<string, string>();
  let slowDeferrals = 0;

  beforeAll(async () => {
    // The remote domain's MX listens on 127.0.0.1; every remote MX in this test uses that port.
    remote = await startRemoteMx('127.0.0.1', (rcpt) => {
      if (rcpt.startsWith('nobody@')) return 'reject';
      if (rcpt.startsWith('slow@') && slowDeferrals > 0) {
        slowDeferrals -= 1;
        return 'defer';
      }
      return 'accept';
    });
    dns = await startDnsServer({
      'remote.example': { MX: [{ preference: 10, exchange: 'mx-down.remote.example' }, { preference: 20, exchange: 'mx.remote.example' }] },
      // The preferred MX is an address nothing listens on: delivery must fall back to the next.
      'mx-down.remote.example': { A: ['127.0.0.2'] },
      'mx.remote.example': { A: ['127.0.0.1'] },
    });
    setup = await makeSetup({
      aliases: 'postmaster@example.test: alice@example.test\nfamily@family.test: alice@example.test, bob@example.test\nfwd@example.test: bob@example.test, outside@remote.example\n',
      toml: `[listeners.submission]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n[listeners.submissions]\nlisten = "127.0.0.1:0"\ntls = "implicit"\n` +
        relayToml(remote, dns) + `[queue]\nfirst_retry = "200ms"\nmax_retry = "1s"\n[auth]\nplaintext = "never"\n`,
    });
    const made = await generateDkimKey(setup.configDir, 'example.test', 'test1', 'rsa');
    dkimRecords.set(made.name, made.record);
    hearth = await startTestHearth(setup);
  });
  afterAll(() => stopAll(hearth, remote, dns, setup));

  const submit = (port: number, secure: boolean) =>
    nodemailer.createTransport({ host: '127.0.0.1', port, secure, requireTLS: !secure, tls: { rejectUnauthorized: false }, auth: { user: 'alice@example.test', pass: 'alice-password' } });

  it('relays to a remote MX (after the first MX fails) with a DKIM signature that verifies, and delivers locally', async () => {
    const info = await submit(hearth.port('submission'), false).sendMail({
      from: 'Alice <alice@example.test>',
      to: 'friend@remote.example',
      cc: 'bob@example.test',
      subject: 'Hello from hearth',
      text: 'Hi!\n.\nA dot line.\n',
    });
    expect(info.response).toMatch(/^250 /);
    const got = await waitFor(() => remote.received.find((m) => m.raw.includes('Hello from hearth')));
    expect(got.from).toBe('alice@example.test');
    expect(got.to).toEqual(['friend@remote.example']);
    const text = got.raw.toString();
    expect(text).toMatch(/^Received: from [^\r]*\r\n\tby mx\.test\.example \(hearth\) with ESMTPSA \(TLSv1\.[23] /);
    expect(text).toMatch(/\r\nDKIM-Signature: /);
    const resolver = async (name: string) => [[dkimRecords.get(name) ?? '']];
    const verified = await dkimVerify(got.raw, { resolver } as never);
    expect(verified.results.map((r: { status: { result: string } }) => r.status.result)).toEqual(['pass']);
    const parsed = await simpleParser(got.raw);
    expect(parsed.text).toContain('A dot line.');
    // The local Cc got its copy at once, with the same signature.
    const bobs = await readdir(join(setup.dataDir, 'example.test/bob/new'));
    const local = await Promise.all(bobs.map((n) => readFile(join(setup.dataDir, 'example.test/bob/new', n), 'utf8')));
    expect(local.filter((m) => m.includes('Hello from hearth'))).toHaveLength(1);
  });

  it('sends to a local alias with an external target: the local copy at once, the external one through the queue', async () => {
    await submit(hearth.port('submissions'), true).sendMail({ from: 'alice@example.test', to: 'fwd@example.test', subject: 'to the alias', text: 'x' });
    const got = await waitFor(() => remote.received.find((m) => m.raw.includes('to the alias')));
    expect(got.to).toEqual(['outside@remote.example']);
    const bobs = await readdir(join(setup.dataDir, 'example.test/bob/new'));
    const texts = await Promise.all(bobs.map((n) => readFile(join(setup.dataDir, 'example.test/bob/new', n), 'utf8')));
    expect(texts.filter((t) => t.includes('to the alias'))).toHaveLength(1);
  });

  it("submits with Python's smtplib over implicit TLS (465) and STARTTLS (587)", async () => {
    const script = `
import smtplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
msg = "From: alice@example.test\\r\\nTo: pal@remote.example\\r\\nSubject: via smtplib %s\\r\\n\\r\\nhello\\r\\n"
with smtplib.SMTP_SSL("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=10) as s:
    s.login("alice@example.test", "alice-password")
    s.sendmail("alice@example.test", ["pal@remote.example"], msg % "ssl")
with smtplib.SMTP("127.0.0.1", int(sys.argv[2]), timeout=10) as s:
    s.starttls(context=ctx)
    s.login("alice@example.test", "alice-password")
    s.sendmail("alice@example.test", ["pal@remote.example"], msg % "starttls")
print("ok")
`;
    const { stdout } = await runPython(script, [String(hearth.port('submissions')), String(hearth.port('submission'))]);
    expect(stdout.trim()).toBe('ok');
    await waitFor(() => remote.received.find((m) => m.raw.includes('via smtplib ssl')));
    await waitFor(() => remote.received.find((m) => m.raw.includes('via smtplib starttls')));
  });

  it('bounces a remote 5xx as an RFC 3464 DSN into the sender mailbox, delivering the other recipient', async () => {
    await submit(hearth.port('submissions'), true).sendMail({ from: 'alice@example.test', to: ['nobody@remote.example', 'someone@remote.example'], subject: 'partly doomed', text: 'x' });
    await waitFor(() => remote.received.find((m) => m.raw.includes('partly doomed') && m.to.includes('someone@remote.example')));
    const dsn = await waitFor(async () => {
      const dir = join(setup.dataDir, 'example.test/alice/new');
      const names = await readdir(dir).catch(() => [] as string[]);
      for (const n of names) {
        const raw = await readFile(join(dir, n));
        if (raw.includes('multipart/report')) return raw;
      }
      return undefined;
    });
    expect(dsn.toString()).toMatch(/^Return-Path: <>\r\n/);
    const parsed = await simpleParser(dsn);
    expect(parsed.headers.get('content-type')).toMatchObject({ value: 'multipart/report' });
    expect(dsn.toString()).toContain('Final-Recipient: rfc822; nobody@remote.example');
    expect(dsn.toString()).toMatch(/Action: failed/);
    expect(dsn.toString()).toContain('550');
    expect(dsn.toString()).not.toContain('Final-Recipient: rfc822; someone@remote.example');
  });

  it('never relays without AUTH, on any port; refuses a sender or From: that is not the user', async () => {
    // Port 25 (MX): remote recipients are refused.
    const mx = await RawSmtp.connect(hearth.smtpPort);
    await mx.reply();
    await mx.command('EHLO x.test');
    await mx.command('MAIL FROM:<alice@example.test>');
    expect(await mx.command('RCPT TO:<victim@remote.example>')).toMatch(/^554 5\.7\.1 /);
    mx.close();
    // Submission: MAIL before AUTH is refused.
    const sub = await RawSmtp.connect(hearth.port('submission'));
    await sub.reply();
    await sub.command('EHLO x.test');
    expect(await sub.command('MAIL FROM:<alice@example.test>')).toMatch(/^530 /);
    // No AUTH before STARTTLS when plaintext is "never".
    expect(await sub.command('AUTH PLAIN ' + Buffer.from('\0alice@example.test\0alice-password').toString('base64'))).toMatch(/^5\d\d /);
    sub.close();
    const t = submit(hearth.port('submissions'), true);
    await expect(t.sendMail({ envelope: { from: 'bob@example.test', to: ['x@remote.example'] }, from: 'alice@example.test', to: 'x@remote.example', subject: 's', text: 't' })).rejects.toThrow(/553/);
    await expect(t.sendMail({ from: 'Bob <bob@example.test>', sender: 'alice@example.test', envelope: { from: 'alice@example.test', to: ['x@remote.example'] }, to: 'x@remote.example', subject: 's', text: 't' })).rejects.toThrow(/553/);
    await expect(
      nodemailer.createTransport({ host: '127.0.0.1', port: hearth.port('submissions'), secure: true, tls: { rejectUnauthorized: false }, auth: { user: 'alice@example.test', pass: 'wrong' } }).sendMail({ from: 'alice@example.test', to: 'x@remote.example', text: 't' }),
    ).rejects.toThrow(/535|Invalid login/);
  });

  it('defers on a remote 4xx (visible in `hearth queue list`), then delivers on retry', async () => {
    // The remote defers until the listing has shown it: a fixed count raced the CLI's start-up.
    slowDeferrals = Number.POSITIVE_INFINITY;
    await submit(hearth.port('submissions'), true).sendMail({ from: 'alice@example.test', to: 'slow@remote.example', subject: 'patience', text: 'x' });
    const { execFile } = await import('node:child_process');
    const listed = await waitFor(
      () =>
        new Promise<string | undefined>((resolve) =>
          execFile(process.execPath, [CLI, 'queue', 'list', '--config', setup.configDir], (_err, stdout) => resolve(/slow@remote\.example\s+deferred/.test(stdout) ? stdout : undefined)),
        ),
    );
    expect(listed).toMatch(/last reply: 451 /);
    expect(remote.received.some((m) => m.raw.includes('patience'))).toBe(false);
    slowDeferrals = 0;
    await waitFor(() => remote.received.find((m) => m.raw.includes('patience')));
    const json = await new Promise<string>((resolve) => execFile(process.execPath, [CLI, 'queue', 'list', '--json', '--config', setup.configDir], (_e, out) => resolve(out)));
    await waitFor(async () => {
      const out = await new Promise<string>((resolve) => execFile(process.execPath, [CLI, 'queue', 'list', '--json', '--config', setup.configDir], (_e, o) => resolve(o)));
      return (JSON.parse(out) as unknown[]).length === 0 ? true : undefined;
    });
    expect(() => JSON.parse(json)).not.toThrow();
  });
});
