// Sender authentication on port 25: SPF, DKIM, DMARC and ARC by mailauth against a real DNS
// server on loopback, the policy taken from them, and the Authentication-Results header.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import { inboxFiles, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import type { DnsServer } from '../helpers/dns-server.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { SenderAuthenticator, authservId, stripOwnAuthResults, withoutOwnAuthResults } from '../../src/smtp/auth-checks.ts';

type Running = Awaited<ReturnType<typeof startTestHearth>>;

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const PRIVATE_PEM = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const PUBLIC_B64 = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
/** A DKIM key record, split into <=255-byte strings as DNS TXT requires. */
const DKIM_TXT = (() => {
  const text = `v=DKIM1; k=rsa; p=${PUBLIC_B64}`;
  const parts: string[] = [];
  for (let i = 0; i < text.length; i += 250) parts.push(text.slice(i, i + 250));
  return parts;
})();

const ZONE = {
  // Signs its mail, sends from loopback, rejects what fails.
  'signed.test': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
  's1._domainkey.signed.test': { TXT: [DKIM_TXT] },
  '_dmarc.signed.test': { TXT: [['v=DMARC1; p=reject']] },
  // A bank-like domain: never sends from here, p=reject.
  'reject.test': { TXT: [['v=spf1 ip4:192.0.2.1 -all']] },
  '_dmarc.reject.test': { TXT: [['v=DMARC1; p=reject']] },
  // p=quarantine: failures go to Junk.
  'quarantine.test': { TXT: [['v=spf1 ip4:192.0.2.1 -all']] },
  '_dmarc.quarantine.test': { TXT: [['v=DMARC1; p=quarantine']] },
  // SPF -all but no DMARC: failures are only marked (unless reject_spf_fail).
  'nodmarc.test': { TXT: [['v=spf1 ip4:192.0.2.1 -all']] },
  // Its DNS times out (dropped) or fails (SERVFAIL).
  'slow.test': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
  'broken.test': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
  // p=reject with pct=0: the policy applies to no message.
  'sampled.test': { TXT: [['v=spf1 ip4:192.0.2.1 -all']] },
  '_dmarc.sampled.test': { TXT: [['v=DMARC1; p=reject; pct=0']] },
  // Passes DMARC by SPF alone while its DKIM key lookup times out.
  'mixed.test': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
  '_dmarc.mixed.test': { TXT: [['v=DMARC1; p=reject']] },
};

function message(from: string, subject: string, body = 'Hello there.\r\n', extraHeaders = ''): Buffer {
  return Buffer.from(
    `From: <${from}>\r\nTo: <alice@example.test>\r\nSubject: ${subject}\r\nDate: Fri, 02 Jan 2026 03:04:05 +0000\r\nMessage-ID: <${subject.replace(/\W/g, '')}@test>\r\n${extraHeaders}\r\n${body}`,
  );
}

async function sign(raw: Buffer, domain = 'signed.test', selector = 's1'): Promise<Buffer> {
  const r = await dkimSign(raw, { signatureData: [{ signingDomain: domain, selector, privateKey: PRIVATE_PEM }] } as never);
  // DESIGN.md: a wrong option shape silently yields no signature, so insist on it.
  expect(r.signatures).toMatch(/^DKIM-Signature: /);
  return Buffer.concat([Buffer.from(r.signatures), raw]);
}

function transport(port: number) {
  return nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true, name: 'client.signed.test' });
}

/** The stored file split into our headers (Return-Path .. Authentication-Results) and the rest. */
function splitStored(stored: Buffer): { ours: string; ar: string; rest: Buffer } {
  const text = stored.toString('latin1');
  const m = /^Return-Path: <[^>]*>\r\n(?:Delivered-To: [^\r]*\r\n)?Received: from [^\r]*(?:\r\n\t[^\r]*)*\r\n(Authentication-Results: [^\r]*(?:\r\n[ \t][^\r]*)*)\r\n/.exec(text);
  expect(m, 'trace headers and Authentication-Results at the top').not.toBeNull();
  return { ours: m![0], ar: m![1].replace(/\r\n[ \t]+/g, ' '), rest: stored.subarray(m![0].length) };
}

async function folderFiles(dataDir: string, address: string, folder: string): Promise<Buffer[]> {
  const [user, domain] = address.split('@');
  const dir = join(dataDir, domain, user, `.${folder}`, 'new');
  const names = await readdir(dir).catch(() => [] as string[]);
  return Promise.all(names.map((n) => readFile(join(dir, n))));
}

async function storedWith(dataDir: string, marker: string): Promise<Buffer[]> {
  return (await inboxFiles(dataDir, 'alice@example.test')).filter((f) => f.content.includes(marker)).map((f) => f.content);
}

describe('sender authentication on port 25', () => {
  let dns: DnsServer;
  let setup: TestSetup;
  let hearth: Running;

  beforeAll(async () => {
    dns = await startDnsServer(ZONE, { drop: ['slow.test', 's1._domainkey.mixed.test'], servfail: ['broken.test'] });
    setup = await makeSetup({
      toml: `[inbound]
check_loopback = true
dns_timeout = "150ms"
dns_deadline = "3s"
spool_memory = "16KB"
connections_per_minute = 0
messages_per_minute = 0
max_failed_rcpts = 0

[dns]
servers = ["127.0.0.1:${dns.port}"]
`,
    });
    hearth = await startTestHearth(setup);
  });
  afterAll(async () => {
    await hearth?.close();
    await setup?.cleanup();
    await dns?.close();
  });

  it('passes a message signed for its domain, with SPF, DKIM and DMARC in Authentication-Results', async () => {
    const raw = await sign(message('news@signed.test', 'Signed hello'));
    const info = await transport(hearth.smtpPort).sendMail({ envelope: { from: 'bounces@signed.test', to: ['alice@example.test'] }, raw });
    expect(info.response).toMatch(/^250 2\.6\.0 /);
    const [stored] = await storedWith(setup.dataDir, 'Subject: Signed hello');
    const { ar, rest } = splitStored(stored);
    expect(ar).toMatch(/^Authentication-Results: mx\.test\.example; spf=pass .*smtp\.mailfrom=bounces@signed\.test/);
    expect(ar).toMatch(/; spf=none smtp\.helo=client\.signed\.test; /);
    expect(ar).toMatch(/; dkim=pass header\.i=@signed\.test header\.s=s1 header\.a=rsa-sha256/);
    expect(ar).toMatch(/; arc=none; dmarc=pass \(p=REJECT arc=none\) header\.from=signed\.test header\.d=signed\.test$/);
    // Otherwise byte-identical to what was sent.
    expect(rest.equals(raw)).toBe(true);
    // Real lookups reached the DNS server: the key, SPF, the DMARC record.
    expect(dns.queries.map((q) => `${q.type} ${q.name}`)).toEqual(expect.arrayContaining(['TXT s1._domainkey.signed.test', 'TXT signed.test', 'TXT _dmarc.signed.test']));
  });

  it('records dkim=fail for an altered body; DMARC still passes on aligned SPF', async () => {
    const good = await sign(message('news@signed.test', 'Altered body', 'The amount is 10 EUR.\r\n'));
    const altered = Buffer.from(good.toString('latin1').replace('10 EUR', '99 EUR'), 'latin1');
    await transport(hearth.smtpPort).sendMail({ envelope: { from: 'bounces@signed.test', to: ['alice@example.test'] }, raw: altered });
    const [stored] = await storedWith(setup.dataDir, 'Subject: Altered body');
    const { ar, rest } = splitStored(stored);
    expect(ar).toMatch(/dkim=fail \(body hash did not verify\) header\.i=@signed\.test/);
    expect(ar).toMatch(/spf=pass /);
    expect(ar).toMatch(/dmarc=pass /);
    expect(rest.equals(altered)).toBe(true);
  });

  it('refuses an altered body from elsewhere: DKIM fails, SPF does not align, p=reject -> 550 5.7.1', async () => {
    const good = await sign(message('news@signed.test', 'Altered elsewhere', 'Pay 10 EUR.\r\n'));
    const altered = Buffer.from(good.toString('latin1').replace('10 EUR', '99 EUR'), 'latin1');
    const err = await transport(hearth.smtpPort).sendMail({ envelope: { from: 'x@forwarder.test', to: ['alice@example.test'] }, raw: altered }).catch((e: unknown) => e as { responseCode: number; response: string });
    expect(err).toMatchObject({ responseCode: 550 });
    expect((err as { response: string }).response).toMatch(/^550 5\.7\.1 .*DMARC.*signed\.test/);
    expect(await storedWith(setup.dataDir, 'Subject: Altered elsewhere')).toHaveLength(0);
  });

  it('refuses a spoofed From: of a p=reject domain with 550 5.7.1 and stores nothing', async () => {
    const c = await RawSmtp.connect(hearth.smtpPort);
    expect(await c.reply()).toMatch(/^220 /);
    await c.command('EHLO spoofer.example');
    expect(await c.command('MAIL FROM:<anything@spoofer.example>')).toMatch(/^250/);
    expect(await c.command('RCPT TO:<alice@example.test>')).toMatch(/^250/);
    expect(await c.command('DATA')).toMatch(/^354/);
    c.send(message('security@reject.test', 'Your account is locked').toString() + '.\r\n');
    expect(await c.reply()).toMatch(/^550 5\.7\.1 Message refused: it fails DMARC for reject\.test/);
    // The session goes on: the next transaction is not affected.
    expect(await c.command('RSET')).toMatch(/^250/);
    c.close();
    expect(await storedWith(setup.dataDir, 'Your account is locked')).toHaveLength(0);
    expect(await folderFiles(setup.dataDir, 'alice@example.test', 'Junk').then((f) => f.filter((b) => b.includes('Your account is locked')))).toHaveLength(0);
  });

  it('delivers a p=quarantine failure into Junk, with dmarc=fail recorded', async () => {
    const raw = message('offers@quarantine.test', 'Quarantined offer');
    await transport(hearth.smtpPort).sendMail({ envelope: { from: 'offers@quarantine.test', to: ['alice@example.test'] }, raw });
    expect(await storedWith(setup.dataDir, 'Quarantined offer')).toHaveLength(0);
    const junk = (await folderFiles(setup.dataDir, 'alice@example.test', 'Junk')).filter((b) => b.includes('Quarantined offer'));
    expect(junk).toHaveLength(1);
    const { ar, rest } = splitStored(junk[0]);
    expect(ar).toMatch(/spf=fail /);
    expect(ar).toMatch(/dkim=none \(message not signed\)/);
    expect(ar).toMatch(/dmarc=fail \(p=QUARANTINE arc=none\) header\.from=quarantine\.test/);
    expect(rest.equals(raw)).toBe(true);
  });

  it('marks an SPF fail without DMARC but delivers it (reject_spf_fail is off by default)', async () => {
    const raw = message('someone@nodmarc.test', 'SPF fail only');
    const info = await transport(hearth.smtpPort).sendMail({ envelope: { from: 'someone@nodmarc.test', to: ['alice@example.test'] }, raw });
    expect(info.response).toMatch(/^250 /);
    const [stored] = await storedWith(setup.dataDir, 'SPF fail only');
    const { ar } = splitStored(stored);
    expect(ar).toMatch(/spf=fail \(mx\.test\.example: domain of someone@nodmarc\.test does not designate 127\.0\.0\.1 as permitted sender\)/);
    expect(ar).toMatch(/dmarc=none/);
  });

  it('defers with 451 4.4.3 when DNS times out or fails, and stores nothing', async () => {
    for (const domain of ['slow.test', 'broken.test']) {
      const raw = message(`news@${domain}`, `DNS trouble ${domain}`);
      const started = performance.now();
      const err = await transport(hearth.smtpPort).sendMail({ envelope: { from: `news@${domain}`, to: ['alice@example.test'] }, raw }).catch((e: unknown) => e as { responseCode: number; response: string });
      expect(err, domain).toMatchObject({ responseCode: 451 });
      expect((err as { response: string }).response).toMatch(/^451 4\.4\.3 Temporary DNS failure/);
      expect((err as { response: string }).response).toContain(domain === 'slow.test' ? 'ETIMEOUT' : 'ESERVFAIL');
      // Bounded by the resolver timeout, far below the per-message deadline.
      expect(performance.now() - started).toBeLessThan(2500);
      expect(await storedWith(setup.dataDir, `DNS trouble ${domain}`)).toHaveLength(0);
    }
  });

  it('removes forged Authentication-Results for our authserv-id and keeps everyone else’s', async () => {
    const forged =
      'Authentication-Results: mx.test.example; dkim=pass header.d=paypal.example\r\n' +
      'Authentication-Results: (comment) MX.TEST.EXAMPLE;\r\n spf=pass smtp.mailfrom=paypal.example\r\n' +
      'Authentication-Results:\r\n mx.test.example; dmarc=pass\r\n' +
      'Authentication-Results: other.example; spf=pass smtp.mailfrom=signed.test\r\n' +
      'Authentication-Results: mx.test.example.evil; none\r\n';
    const raw = await sign(message('news@signed.test', 'Forged results', 'body\r\n', forged));
    await transport(hearth.smtpPort).sendMail({ envelope: { from: 'bounces@signed.test', to: ['alice@example.test'] }, raw });
    const [stored] = await storedWith(setup.dataDir, 'Subject: Forged results');
    const { ar, rest } = splitStored(stored);
    const expected = raw
      .toString('latin1')
      .replace('Authentication-Results: mx.test.example; dkim=pass header.d=paypal.example\r\n', '')
      .replace('Authentication-Results: (comment) MX.TEST.EXAMPLE;\r\n spf=pass smtp.mailfrom=paypal.example\r\n', '')
      .replace('Authentication-Results:\r\n mx.test.example; dmarc=pass\r\n', '');
    expect(rest.toString('latin1')).toBe(expected);
    expect(rest.toString('latin1')).toContain('Authentication-Results: other.example; spf=pass');
    expect(rest.toString('latin1')).toContain('Authentication-Results: mx.test.example.evil; none');
    // Verified as received (the forged fields were not signed, so DKIM still passes).
    expect(ar).toMatch(/dkim=pass /);
    expect(stored.toString('latin1').match(/^Authentication-Results: mx\.test\.example;/gim)).toHaveLength(1);
  });

  it('checks a message bigger than spool_memory through a temp file, stored byte for byte, spool emptied', async () => {
    const line = 'The quick brown fox jumps over the lazy dog, again and again and again.\r\n';
    const raw = await sign(message('news@signed.test', 'Big signed', line.repeat(4000)));
    expect(raw.length).toBeGreaterThan(250_000);
    await transport(hearth.smtpPort).sendMail({ envelope: { from: 'bounces@signed.test', to: ['alice@example.test'] }, raw });
    const [stored] = await storedWith(setup.dataDir, 'Subject: Big signed');
    const { ar, rest } = splitStored(stored);
    expect(ar).toMatch(/dkim=pass /);
    expect(ar).toMatch(/dmarc=pass /);
    expect(rest.equals(raw)).toBe(true);
    expect(await readdir(join(setup.dataDir, '.inbound-spool'))).toEqual([]);
  });

  it('still enforces the size limit and the smuggling guard on checked mail (nothing stored)', async () => {
    const c = await RawSmtp.connect(hearth.smtpPort);
    await c.reply();
    await c.command('EHLO client.signed.test');
    await c.command('MAIL FROM:<bounces@signed.test>');
    await c.command('RCPT TO:<alice@example.test>');
    expect(await c.command('DATA')).toMatch(/^354/);
    c.send('Subject: bare LF\r\n\r\nline one\nline two\r\n.\r\n');
    expect(await c.reply()).toMatch(/^554 5\.6\.0 /);
    c.close();
    expect(await storedWith(setup.dataDir, 'Subject: bare LF')).toHaveLength(0);
    expect(await readdir(join(setup.dataDir, '.inbound-spool')).catch(() => [])).toEqual([]);
  });
});

describe('SenderAuthenticator verdicts', () => {
  let dns: DnsServer;
  beforeAll(async () => {
    dns = await startDnsServer(ZONE, { drop: ['slow.test', 's1._domainkey.mixed.test'] });
  });
  afterAll(() => dns?.close());

  const make = (over: Partial<ConstructorParameters<typeof SenderAuthenticator>[0]> = {}) =>
    new SenderAuthenticator({ hostname: 'mx.test.example', resolver: dns.resolver({ timeout: 150, tries: 1 }), deadlineMs: 3000, maxLookups: 50, dmarcReject: true, dmarcQuarantine: true, rejectSpfFail: false, ...over });

  it('reject_spf_fail refuses an SPF fail when there is no DMARC policy', async () => {
    const input = { message: message('a@nodmarc.test', 'x'), ip: '127.0.0.1', helo: 'client.test', sender: 'a@nodmarc.test' };
    expect((await make().check(input)).action).toBe('accept');
    const strict = await make({ rejectSpfFail: true }).check(input);
    expect(strict.action).toBe('reject');
    expect(strict.reply).toMatch(/^5\.7\.1 .*nodmarc\.test does not send mail from \[127\.0\.0\.1\]/);
  });

  it('p=reject with pct=0 is sampled out (RFC 7489 6.6.4); dmarc_reject=false quarantines instead', async () => {
    const sampled = await make().check({ message: message('a@sampled.test', 'x'), ip: '127.0.0.1', helo: 'client.test', sender: 'a@sampled.test' });
    expect(sampled.dmarc).toBe('fail');
    expect(sampled.action).toBe('accept');
    const soft = await make({ dmarcReject: false }).check({ message: message('a@reject.test', 'x'), ip: '127.0.0.1', helo: 'client.test', sender: 'b@spoofer.example' });
    expect(soft.dmarc).toBe('fail');
    expect(soft.action).toBe('junk');
  });

  it('a DNS timeout that cannot change the verdict (DMARC passed on SPF) does not defer, and is recorded', async () => {
    const raw = await sign(message('a@mixed.test', 'mixed'), 'mixed.test', 's1');
    const out = await make().check({ message: raw, ip: '127.0.0.1', helo: 'client.test', sender: 'a@mixed.test' });
    expect(out.dmarc).toBe('pass');
    expect(out.action).toBe('accept');
    expect(out.header).toMatch(/dkim=temperror/);
  });

  it('the per-message deadline and the lookup cap turn into a deferral, never a pass', async () => {
    const slowResolver = dns.resolver({ timeout: 5000, tries: 1 });
    const t0 = performance.now();
    const late = await make({ resolver: slowResolver, deadlineMs: 300 }).check({ message: message('a@slow.test', 'x'), ip: '127.0.0.1', helo: 'client.test', sender: 'a@slow.test' });
    expect(late.action).toBe('defer');
    expect(late.reply).toMatch(/^4\.4\.3 .*ETIMEOUT/);
    expect(performance.now() - t0).toBeLessThan(2000);
    const capped = await make({ maxLookups: 1 }).check({ message: await sign(message('a@signed.test', 'x')), ip: '127.0.0.1', helo: 'client.test', sender: 'a@signed.test' });
    expect(capped.action).toBe('defer');
    expect(capped.reply).toMatch(/ELIMIT/);
    expect(capped.header).not.toMatch(/dmarc=pass/);
  });
});

describe('Authentication-Results removal', () => {
  it('reads the authserv-id past comments and folding, quoted or not', () => {
    expect(authservId(' mx.test.example; spf=pass')).toBe('mx.test.example');
    expect(authservId(' (a (nested) comment)\r\n\tMX.Test.Example 1; none')).toBe('mx.test.example');
    expect(authservId(' "mx.test.example"; none')).toBe('mx.test.example');
    expect(authservId(' mx.test.example.evil; none')).toBe('mx.test.example.evil');
  });

  it('leaves the header untouched (same buffer) when there is nothing of ours', () => {
    const head = Buffer.from('Subject: x\r\nAuthentication-Results: other.example; none\r\n\r\n');
    expect(stripOwnAuthResults(head, 'mx.test.example').head).toBe(head);
  });

  it('strips in the streaming path too, whatever the chunking, and leaves the body alone', async () => {
    const text = 'Subject: s\r\nAuthentication-Results: mx.test.example;\r\n dkim=pass\r\nFrom: a@b.example\r\n\r\nAuthentication-Results: mx.test.example; in the body\r\n';
    const bytes = Buffer.from(text);
    for (const size of [1, 3, 7, 64, bytes.length]) {
      async function* chunks() {
        for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
      }
      const out: Buffer[] = [];
      for await (const c of withoutOwnAuthResults(chunks(), 'mx.test.example')) out.push(Buffer.from(c));
      expect(Buffer.concat(out).toString(), `chunk size ${size}`).toBe('Subject: s\r\nFrom: a@b.example\r\n\r\nAuthentication-Results: mx.test.example; in the body\r\n');
    }
  });
});
