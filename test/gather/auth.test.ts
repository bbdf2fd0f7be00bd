// Sender authentication of gathered mail, end to end: a real remote hearth (IMAP and POP3 on
// loopback) holds the mail, a local GatherService collects it with DKIM/ARC/DMARC checks whose
// DNS goes to a loopback DNS server. SPF is not evaluated (no connecting IP), nothing is refused
// or lost, DMARC reject failures land in Junk, and a trusted provider's results can stand in.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { ImapFlow } from 'imapflow';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import { createLogger } from '../../src/core/log.ts';
import { Scheduler } from '../../src/core/scheduler.ts';
import { GatherAuthChecker, headerFields, topReceivedDate, topmostAuthResults } from '../../src/gather/auth.ts';
import type { GatherAccount } from '../../src/gather/accounts.ts';
import { GatherService } from '../../src/gather/service.ts';
import { StoreSink } from '../../src/gather/sink.ts';
import { MailStore } from '../../src/store/mailboxes.ts';
import { MaildirStore } from '../../src/store/maildir.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import type { DnsServer } from '../helpers/dns-server.ts';
import { makeSetup } from '../helpers/hearth.ts';
import { LOCAL_USER, REMOTE_PASS, REMOTE_USER, localMessages, resetRemote, runCli, seedRemote, startRemote } from './helpers.ts';
import type { LocalMessage, Remote } from './helpers.ts';

const HOST = 'mx.test.example';
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const PRIVATE_PEM = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const DKIM_TXT = (() => {
  const text = `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;
  const parts: string[] = [];
  for (let i = 0; i < text.length; i += 250) parts.push(text.slice(i, i + 250));
  return parts;
})();

const ZONE = {
  // Signs its mail; p=reject.
  's1._domainkey.signed.test': { TXT: [DKIM_TXT] },
  '_dmarc.signed.test': { TXT: [['v=DMARC1; p=reject']] },
  // A bank-like domain that rejects whatever fails.
  '_dmarc.reject.test': { TXT: [['v=DMARC1; p=reject']] },
  // Its key lookup is never answered (see `drop` below).
  '_dmarc.slow.test': { TXT: [['v=DMARC1; p=reject']] },
};

let seq = 0;
function mail(from: string, subject: string, extraHeaders = ''): Buffer {
  return Buffer.from(`${extraHeaders}From: <${from}>\r\nTo: <${REMOTE_USER}>\r\nSubject: ${subject}\r\nDate: Mon, 2 Feb 2026 10:00:00 +0000\r\nMessage-ID: <auth.${++seq}.${process.pid}@remote.test>\r\n\r\nHello from ${from}.\r\n`);
}

async function sign(raw: Buffer, domain: string): Promise<Buffer> {
  const r = await dkimSign(raw, { signatureData: [{ signingDomain: domain, selector: 's1', privateKey: PRIVATE_PEM }] } as never);
  expect(r.signatures).toMatch(/^DKIM-Signature: /); // a wrong option shape silently signs nothing
  return Buffer.concat([Buffer.from(r.signatures), raw]);
}

/** Our Authentication-Results fields (unfolded), in order. */
function ourAuthResults(m: LocalMessage): string[] {
  const head = m.content.subarray(0, m.content.indexOf('\r\n\r\n')).toString('latin1').replace(/\r\n[ \t]+/g, ' ');
  return head.split('\r\n').filter((l) => /^Authentication-Results:/i.test(l) && l.slice(l.indexOf(':') + 1).trim().toLowerCase().startsWith(HOST));
}

type Local = { dataDir: string; service: GatherService; logs: string[]; close(): Promise<void> };

async function startLocalGather(dns: DnsServer, opts: { enabled?: boolean; maxAgeMs?: number; deadlineMs?: number } = {}): Promise<Local> {
  const dataDir = await mkdtemp(join(tmpdir(), 'hearth-gather-auth-'));
  const logs: string[] = [];
  const sinkStream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(chunk.toString());
      cb();
    },
  });
  const log = createLogger('info', sinkStream as never);
  const maildir = new MaildirStore({ root: dataDir, hostname: HOST, fsync: false, log });
  const mail = new MailStore({ maildir, log });
  const checker = new GatherAuthChecker({ hostname: HOST, resolver: dns.resolver({ timeout: 300, tries: 1 }), deadlineMs: opts.deadlineMs ?? 5_000, maxLookups: 50 });
  const service = new GatherService({
    dataDir,
    scheduler: new Scheduler({ log }),
    sink: new StoreSink({ mail, junkFolder: 'Junk' }),
    log,
    hostname: HOST,
    fsync: false,
    junkFolder: 'Junk',
    auth: { checker, enabled: opts.enabled ?? true, maxAgeMs: opts.maxAgeMs ?? 7 * 86_400_000 },
  });
  return {
    dataDir,
    service,
    logs,
    async close() {
      await service.stop();
      await mail.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

function account(remote: Remote, over: Partial<GatherAccount> = {}): GatherAccount {
  const protocol = over.protocol ?? 'imap';
  return { id: `auth-${++seq}`, owner: LOCAL_USER, protocol, host: '127.0.0.1', port: protocol === 'imap' ? remote.imap : remote.pop3, tls: 'none', user: REMOTE_USER, folders: ['INBOX'], target: 'INBOX', mode: 'copy', idle: false, ...over };
}

async function collect(local: Local, acct: GatherAccount): Promise<void> {
  await local.service.add(acct, REMOTE_PASS);
  const [o] = await local.service.run(acct.id);
  expect(o).toMatchObject({ ok: true });
}

const bySubject = (list: LocalMessage[], subject: string): LocalMessage | undefined => list.find((m) => m.subject === subject);

describe('sender authentication of gathered mail', () => {
  let remote: Remote;
  let dns: DnsServer;
  let local: Local | undefined;
  beforeAll(async () => {
    dns = await startDnsServer(ZONE, { drop: ['s1._domainkey.slow.test'] });
    remote = await startRemote();
  });
  afterAll(async () => {
    await remote?.hearth.close();
    await remote?.setup.cleanup();
    await dns?.close();
  });
  afterEach(async () => {
    await local?.close();
    local = undefined;
    await resetRemote(remote);
  });

  it('DKIM-signed mail gets dkim=pass and dmarc=pass (DKIM alignment, no SPF) under our authserv-id; forged results claiming us are removed', async () => {
    // A spammer's field claiming our authserv-id, and the provider's own field (kept).
    const forged = `Authentication-Results: ${HOST}; dkim=pass header.d=paypal.test; dmarc=pass\r\nAuthentication-Results: mx.provider.test; spf=pass smtp.mailfrom=signed.test\r\n`;
    const original = await sign(mail('news@signed.test', 'signed', forged), 'signed.test');
    await seedRemote(remote, [original]);
    local = await startLocalGather(dns);
    await collect(local, account(remote));
    const got = bySubject(await localMessages(local.dataDir), 'signed')!;
    expect(got).toBeDefined();
    const ours = ourAuthResults(got);
    expect(ours).toHaveLength(1); // ours only: the forged one is gone
    const ar = ours[0];
    expect(ar).toMatch(/dkim=pass [^;]*header\.i=@signed\.test header\.s=s1/);
    expect(ar).toMatch(/dmarc=pass \(DKIM alignment only\)[^;]*header\.from=signed\.test/);
    expect(ar).not.toMatch(/spf=/);
    expect(ar).toContain('SPF not evaluated');
    expect(ar).not.toContain('paypal.test');
    // Trace first (tag, Received), then our field, then the message without the forged field.
    const text = got.content.toString('latin1');
    expect(text).toMatch(/^X-Hearth-Gathered: [^\r]*\r\nReceived: from 127\.0\.0\.1 by mx\.test\.example with IMAP [^\r]*\r\nAuthentication-Results: mx\.test\.example /);
    expect(text).toContain('Authentication-Results: mx.provider.test; spf=pass smtp.mailfrom=signed.test\r\n');
    expect(got.content.subarray(got.content.length - 200).equals(original.subarray(original.length - 200))).toBe(true);
    // The key came from the loopback DNS server.
    expect(dns.queries.some((q) => q.name === 's1._domainkey.signed.test' && q.type === 'TXT')).toBe(true);
  });

  it('a spoofed From: of a p=reject domain lands in Junk (logged), never lost, even in move mode over POP3', async () => {
    await seedRemote(remote, [mail('security@reject.test', 'spoofed'), await sign(mail('news@signed.test', 'genuine'), 'signed.test')]);
    local = await startLocalGather(dns);
    const acct = account(remote, { protocol: 'pop3', mode: 'move' });
    await local.service.add(acct, REMOTE_PASS);
    const [o] = await local.service.run(acct.id);
    expect(o).toMatchObject({ ok: true, result: { collected: 2, deleted: 2 } });
    const inbox = await localMessages(local.dataDir);
    const junk = await localMessages(local.dataDir, LOCAL_USER, 'Junk');
    expect(inbox.map((m) => m.subject)).toEqual(['genuine']);
    expect(junk.map((m) => m.subject)).toEqual(['spoofed']);
    const [ar] = ourAuthResults(junk[0]);
    expect(ar).toMatch(/dkim=none/);
    expect(ar).toMatch(/dmarc=fail [^;]*header\.from=reject\.test/);
    expect(junk[0].content.toString('latin1')).toMatch(/^X-Hearth-Gathered: [^\r]*\r\nReceived: from 127\.0\.0\.1 by mx\.test\.example with POP3 /);
    const warned = local.logs.map((l) => JSON.parse(l) as { msg: string; from?: string; policy?: string }).find((l) => /fails DMARC/.test(l.msg));
    expect(warned).toMatchObject({ from: 'reject.test', policy: 'reject' });
    expect(warned!.msg).toContain('delivered to Junk');
    // The recorded location is Junk, so a later run neither collects nor loses it again.
    expect(await local.service.run(acct.id)).toMatchObject([{ ok: true, result: { collected: 0 } }]);
  });

  it("trusts the provider's topmost Authentication-Results with its authserv-id instead of checking here", async () => {
    // The provider saw SPF pass for reject.test (something we cannot check): it passes DMARC.
    const passed = mail('billing@reject.test', 'provider-pass', 'Authentication-Results: mx.provider.test;\r\n spf=pass (provider: 192.0.2.7 is allowed) smtp.mailfrom=reject.test;\r\n dkim=none;\r\n dmarc=pass header.from=reject.test\r\n');
    // The provider's own field is on top; a forged one below says pass: the topmost wins.
    const failed = mail('billing@reject.test', 'provider-fail', 'Authentication-Results: mx.provider.test; spf=fail smtp.mailfrom=reject.test; dmarc=fail header.from=reject.test\r\nAuthentication-Results: mx.provider.test; spf=pass smtp.mailfrom=reject.test; dmarc=pass header.from=reject.test\r\n');
    // No field from the provider: checked here as usual (and fails).
    const unchecked = mail('billing@reject.test', 'provider-none');
    await seedRemote(remote, [passed, failed, unchecked]);
    local = await startLocalGather(dns);
    await collect(local, account(remote, { trustAuthResults: 'mx.provider.test' }));
    const inbox = await localMessages(local.dataDir);
    const junk = await localMessages(local.dataDir, LOCAL_USER, 'Junk');
    expect(inbox.map((m) => m.subject)).toEqual(['provider-pass']);
    expect(junk.map((m) => m.subject).sort()).toEqual(['provider-fail', 'provider-none']);
    const [pass] = ourAuthResults(bySubject(inbox, 'provider-pass')!);
    expect(pass).toContain('results of mx.provider.test');
    expect(pass).toMatch(/spf=pass \(reported by mx\.provider\.test\) \(provider: 192\.0\.2\.7 is allowed\) smtp\.mailfrom=reject\.test/);
    expect(pass).toMatch(/dmarc=pass \(reported by mx\.provider\.test\) header\.from=reject\.test/);
    const [fail] = ourAuthResults(bySubject(junk, 'provider-fail')!);
    expect(fail).toMatch(/spf=fail \(reported by mx\.provider\.test\)/);
    expect(fail).toMatch(/dmarc=fail \(reported by mx\.provider\.test\)/);
    const [none] = ourAuthResults(bySubject(junk, 'provider-none')!);
    expect(none).toContain('no Authentication-Results from mx.provider.test');
    expect(none).toMatch(/dmarc=fail \(DKIM alignment only\)/);
  });

  it('checks off (per account, or by default) or mail older than the age limit: no header added, the message kept as it came', async () => {
    const original = await sign(mail('news@signed.test', 'plain'), 'signed.test');
    await seedRemote(remote, [original]);
    const c = new ImapFlow({ host: '127.0.0.1', port: remote.imap, secure: false, doSTARTTLS: false, auth: { user: REMOTE_USER, pass: REMOTE_PASS }, logger: false, disableAutoIdle: true });
    await c.connect();
    await c.append('INBOX', mail('security@reject.test', 'old spoof'), [], new Date('2020-05-06T07:08:09Z'));
    await c.logout();
    const check = async (l: Local, over: Partial<GatherAccount>): Promise<void> => {
      const acct = account(remote, over);
      await collect(l, acct);
      const got = (await localMessages(l.dataDir)).filter((m) => m.tag?.startsWith(`${acct.id} `));
      expect(got.map((m) => m.subject).sort()).toEqual(['old spoof', 'plain']); // nothing in Junk
      for (const m of got) expect(m.content.toString('latin1')).not.toMatch(/^Authentication-Results:/im);
      const plain = bySubject(got, 'plain')!;
      expect(plain.content.subarray(plain.content.length - original.length).equals(original)).toBe(true);
    };
    local = await startLocalGather(dns);
    await check(local, { authChecks: false });
    await local.close();
    local = await startLocalGather(dns, { enabled: false });
    await check(local, {});
    // Default on again: the old message (internal date 2020) is past the age limit, the new one checked.
    await local.close();
    local = await startLocalGather(dns);
    const acct = account(remote);
    await collect(local, acct);
    const got = await localMessages(local.dataDir);
    expect(got.map((m) => m.subject).sort()).toEqual(['old spoof', 'plain']);
    expect(ourAuthResults(bySubject(got, 'old spoof')!)).toEqual([]);
    expect(ourAuthResults(bySubject(got, 'plain')!)[0]).toMatch(/dmarc=pass/);
  });

  it('mirror mode: a failing message the person already read at the provider stays where it is; an unread one goes to Junk and its flags still mirror', async () => {
    await seedRemote(remote, [mail('security@reject.test', 'read spoof'), mail('security@reject.test', 'unread spoof')]);
    const c = new ImapFlow({ host: '127.0.0.1', port: remote.imap, secure: false, doSTARTTLS: false, auth: { user: REMOTE_USER, pass: REMOTE_PASS }, logger: false, disableAutoIdle: true });
    await c.connect();
    await c.mailboxOpen('INBOX');
    const uids = new Map<string, number>();
    for await (const m of c.fetch('1:*', { uid: true, envelope: true })) uids.set(m.envelope!.subject!, m.uid);
    await c.messageFlagsAdd(String(uids.get('read spoof')), ['\\Seen'], { uid: true });
    await c.logout();
    local = await startLocalGather(dns);
    const acct = account(remote, { mode: 'mirror' });
    await collect(local, acct);
    const inbox = await localMessages(local.dataDir);
    const junk = await localMessages(local.dataDir, LOCAL_USER, 'Junk');
    expect(inbox.map((m) => m.subject)).toEqual(['read spoof']);
    expect(ourAuthResults(inbox[0])[0]).toMatch(/dmarc=fail/);
    expect(junk.map((m) => m.subject)).toEqual(['unread spoof']);
    // Read there later: the flag reaches the copy in Junk.
    const c2 = new ImapFlow({ host: '127.0.0.1', port: remote.imap, secure: false, doSTARTTLS: false, auth: { user: REMOTE_USER, pass: REMOTE_PASS }, logger: false, disableAutoIdle: true });
    await c2.connect();
    await c2.mailboxOpen('INBOX');
    await c2.messageFlagsAdd(String(uids.get('unread spoof')), ['\\Seen'], { uid: true });
    await c2.logout();
    expect(await local.service.run(acct.id)).toMatchObject([{ ok: true, result: { collected: 0, flagsToLocal: 1 } }]);
    expect((await localMessages(local.dataDir, LOCAL_USER, 'Junk'))[0].flags).toBe('S');
  });

  it('a DNS lookup that never answers: delivered to the inbox with temperror, the pull goes on', async () => {
    await seedRemote(remote, [await sign(mail('news@slow.test', 'slow key'), 'slow.test'), await sign(mail('news@signed.test', 'after'), 'signed.test')]);
    local = await startLocalGather(dns, { deadlineMs: 1_000 });
    const acct = account(remote, { mode: 'move' });
    await local.service.add(acct, REMOTE_PASS);
    const [o] = await local.service.run(acct.id);
    expect(o).toMatchObject({ ok: true, result: { collected: 2, deleted: 2 } });
    const inbox = await localMessages(local.dataDir);
    expect(inbox.map((m) => m.subject).sort()).toEqual(['after', 'slow key']);
    const [slow] = ourAuthResults(bySubject(inbox, 'slow key')!);
    expect(slow).toMatch(/dkim=temperror/);
    expect(slow).toMatch(/dmarc=temperror/);
    expect(ourAuthResults(bySubject(inbox, 'after')!)[0]).toMatch(/dmarc=pass/);
    expect(await localMessages(local.dataDir, LOCAL_USER, 'Junk')).toEqual([]);
  });

  it('a message of header fields only (no blank line): a forged field claiming us is removed, checks on or off', async () => {
    const headOnly = Buffer.from(`From: <a@reject.test>\r\nAuthentication-Results: ${HOST}; dkim=pass header.d=reject.test; dmarc=pass\r\nSubject: no body`);
    await seedRemote(remote, [headOnly]);
    for (const authChecks of [true, false]) {
      local = await startLocalGather(dns);
      const acct = account(remote, { authChecks });
      await collect(local, acct);
      // (localMessages reads the tag from a header that ends in a blank line: look at the text)
      const all = [...(await localMessages(local.dataDir)), ...(await localMessages(local.dataDir, LOCAL_USER, 'Junk'))].map((m) => m.content.toString('latin1')).filter((t) => t.startsWith(`X-Hearth-Gathered: ${acct.id} `));
      expect(all).toHaveLength(1);
      expect(all[0].endsWith('\r\nFrom: <a@reject.test>\r\nSubject: no body')).toBe(true);
      expect(all[0].match(/^Authentication-Results:[ \t\r\n]*mx\.test\.example/gim) ?? []).toHaveLength(authChecks ? 1 : 0);
      expect(all[0]).not.toContain('dkim=pass header.d=reject.test');
      await local.close();
      local = undefined;
    }
  });

  it('a trusted provider that reports SPF for a quoted local-part, and no DMARC: the domain after the quotes aligns', async () => {
    const quoted = mail('billing@reject.test', 'quoted mailfrom', 'Authentication-Results: mx.provider.test; spf=pass smtp.mailfrom="billing dept"@reject.test; dkim=none\r\n');
    await seedRemote(remote, [quoted]);
    local = await startLocalGather(dns);
    await collect(local, account(remote, { trustAuthResults: 'mx.provider.test' }));
    expect((await localMessages(local.dataDir)).map((m) => m.subject)).toEqual(['quoted mailfrom']);
    expect(await localMessages(local.dataDir, LOCAL_USER, 'Junk')).toEqual([]);
  });

  it('`hearth gather run` takes its DNS servers and checks from the config', async () => {
    await seedRemote(remote, [await sign(mail('news@signed.test', 'via cli'), 'signed.test'), mail('security@reject.test', 'cli spoof')]);
    const setup = await makeSetup({ fsync: false, toml: `[dns]\nservers = ["127.0.0.1:${dns.port}"]\n[inbound]\ndns_timeout = "500ms"\n` });
    try {
      const run = (args: string[], input = '') => runCli([...args, '-c', setup.configDir], { input });
      const added = await run(['gather', 'add', '--to', LOCAL_USER, '--host', '127.0.0.1', '--port', String(remote.imap), '--tls', 'none', '--user', REMOTE_USER, '--name', 'cli', '--no-idle', '--password-stdin'], `${REMOTE_PASS}\n`);
      expect(added.code, added.stderr).toBe(0);
      const ran = await run(['gather', 'run', 'cli', '--json']);
      expect(ran.code, ran.stderr).toBe(0);
      const inbox = await localMessages(setup.dataDir);
      expect(inbox.map((m) => m.subject)).toEqual(['via cli']);
      expect(ourAuthResults(inbox[0])[0]).toMatch(/dkim=pass [^;]*header\.i=@signed\.test.*dmarc=pass/);
      expect((await localMessages(setup.dataDir, LOCAL_USER, 'Junk')).map((m) => m.subject)).toEqual(['cli spoof']);
    } finally {
      await setup.cleanup();
    }
  });
});

describe('reading a provider\'s Authentication-Results', () => {
  it('takes the topmost field with the authserv-id (quoted or with comments), results and properties, skipping comments', () => {
    const head = [
      'Received: from mx.provider.test by inbox.provider.test; Tue, 24 Nov 2026 10:00:00 +0000',
      'Authentication-Results: other.test; dmarc=fail header.from=x.test',
      'Authentication-Results: (the border MX) "MX.Provider.Test" 1;',
      ' spf=pass (provider.test: 192.0.2.7 is allowed; see "x") smtp.mailfrom="a;b@reject.test";',
      ' dkim=pass header.i=@reject.test header.s=k1; dmarc=fail (p=REJECT) header.from=reject.test',
      'Authentication-Results: mx.provider.test; dmarc=pass header.from=reject.test',
      '',
      '',
    ].join('\r\n');
    const parsed = topmostAuthResults(headerFields(head), 'mx.provider.test')!;
    expect(parsed.id).toBe('mx.provider.test');
    expect(parsed.results.map((r) => `${r.method}=${r.result}`)).toEqual(['spf=pass', 'dkim=pass', 'dmarc=fail']);
    expect(parsed.results[0].props['smtp.mailfrom']).toBe('a;b@reject.test');
    expect(parsed.results[1].props).toMatchObject({ 'header.i': '@reject.test', 'header.s': 'k1' });
    expect(topmostAuthResults(headerFields(head), 'absent.test')).toBeUndefined();
    expect(topReceivedDate(Buffer.from(head))?.toISOString()).toBe('2026-11-24T10:00:00.000Z');
    expect(topReceivedDate(Buffer.from('Subject: x\r\n\r\n'))).toBeUndefined();
  });

  it('quoted strings are not comments, and a property inside one is not a property', () => {
    const head = 'Authentication-Results: mx.p.test; spf=pass smtp.mailfrom="a(b"@reject.test; dkim=pass reason="x (y" header.d=reject.test; dkim=fail reason="header.d=paypal.test" header.d=evil.test\r\n\r\n';
    const parsed = topmostAuthResults(headerFields(head), 'mx.p.test')!;
    expect(parsed.results.map((r) => r.props)).toEqual([{ 'smtp.mailfrom': 'a(b@reject.test' }, { 'header.d': 'reject.test' }, { 'header.d': 'evil.test' }]);
  });
});
