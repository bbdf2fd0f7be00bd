// Forwarding after the sender checks, end to end on loopback (issue 6): the loopback client is
// checked like an internet one (SPF/DKIM/DMARC against a loopback DNS server). A DKIM-signed
// message forwarded to a loopback "external" MX keeps a signature that verifies there, with an
// ARC seal of ours; its envelope sender is SRS0; bounces to that SRS address (over SMTP, or as
// a DSN of our own queue) reach the original sender; forged SRS addresses are refused; mail
// that DMARC rejects or quarantines is not forwarded.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { authenticate } from 'mailauth';
import { DkimSigner, dkimTxtRecord, generateDkimKey } from '../../src/smtp/dkim.ts';
import { silentLogger } from '../../src/core/log.ts';
import { inboxFiles, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import type { DnsServer } from '../helpers/dns-server.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { relayToml, startRemoteMx, stopAll, waitFor } from '../helpers/remote-mx.ts';

async function transaction(port: number, from: string, rcpts: string[], message: Buffer | string): Promise<{ rcpts: string[]; data?: string }> {
  const c = await RawSmtp.connect(port);
  try {
    await c.reply();
    await c.command('EHLO client.test');
    expect(await c.command(`MAIL FROM:<${from}>`)).toMatch(/^250/);
    const replies: string[] = [];
    for (const r of rcpts) replies.push(await c.command(`RCPT TO:<${r}>`));
    if (!replies.some((r) => r.startsWith('250'))) return { rcpts: replies };
    expect(await c.command('DATA')).toMatch(/^354/);
    const wire = Buffer.from(message).toString('latin1').replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..');
    c.send(Buffer.from((wire.endsWith('\r\n') ? wire : `${wire}\r\n`) + '.\r\n', 'latin1'));
    const data = await c.reply();
    await c.command('QUIT');
    return { rcpts: replies, data };
  } finally {
    c.close();
  }
}

/** A TXT record value as the strings DNS carries (at most 255 characters each). */
const txt = (value: string): string[][] => [value.match(/.{1,250}/g)!];

const plain = (from: string, to: string, subject: string) =>
  Buffer.from(`From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@test>\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n\r\nHello.\r\n`);

describe('forwarding after the sender checks', () => {
  let setup: TestSetup;
  let dns: DnsServer;
  let remote: Awaited<ReturnType<typeof startRemoteMx>>;
  let hearth: Awaited<ReturnType<typeof startTestHearth>>;
  const records = new Map<string, string>();
  let senderKey: string;

  beforeAll(async () => {
    remote = await startRemoteMx('127.0.0.1', (rcpt) => (rcpt.startsWith('nobody@') ? 'reject' : 'accept'));
    senderKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    records.set('s1._domainkey.sender.example', dkimTxtRecord(senderKey));
    setup = await makeSetup({
      users: { 'alice@example.test': 'alice-password', 'bob@example.test': 'bob-password', 'carol@family.test': 'carol-password' },
      aliases: ['fwd@example.test: friend@remote.example', 'mixed@example.test: bob@example.test, pal@remote.example', 'bad-fwd@example.test: nobody@remote.example'].join('\n'),
      toml: '[inbound]\ncheck_loopback = true\n[routing]\nforward_arc_seal = true\n[queue]\nfirst_retry = "200ms"\n',
    });
    const arcKey = await generateDkimKey(setup.configDir, 'example.test', 'arc1', 'rsa');
    records.set(arcKey.name, arcKey.record);
    dns = await startDnsServer({
      'remote.example': { MX: [{ preference: 10, exchange: 'mx.remote.example' }] },
      'mx.remote.example': { A: ['127.0.0.1'] },
      'sender.example': { MX: [{ preference: 10, exchange: 'mx.remote.example' }], TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
      '_dmarc.sender.example': { TXT: [['v=DMARC1; p=reject']] },
      's1._domainkey.sender.example': { TXT: txt(records.get('s1._domainkey.sender.example')!) },
      'strict.example': { TXT: [['v=spf1 -all']] },
      '_dmarc.strict.example': { TXT: [['v=DMARC1; p=reject']] },
      'quar.example': { TXT: [['v=spf1 -all']] },
      '_dmarc.quar.example': { TXT: [['v=DMARC1; p=quarantine']] },
    });
    const { writeFile } = await import('node:fs/promises');
    const toml = await readFile(join(setup.configDir, 'hearth.toml'), 'utf8');
    await writeFile(join(setup.configDir, 'hearth.toml'), `${toml}\n${relayToml(remote, dns)}`);
    hearth = await startTestHearth(setup);
  });
  afterAll(() => stopAll(hearth, remote, dns, setup));

  /** mailauth as the destination would run it, with our records. */
  const resolver = async (name: string, type: string): Promise<string[][]> => {
    const value = type === 'TXT' ? records.get(name.toLowerCase()) : undefined;
    if (value) return [[value]];
    throw Object.assign(new Error(`${name} not found`), { code: 'ENOTFOUND' });
  };

  it('forwards a DKIM-signed message unchanged below our trace: its signature verifies at the destination, with our ARC seal; sender is SRS0', async () => {
    const body = 'Hello,   \r\n\r\n.\r\nA dot line above; trailing spaces here:  \r\n';
    const unsigned = Buffer.from(
      `From: Friend <friend@sender.example>\r\nTo: fwd@example.test\r\nSubject: signed and forwarded\r\nMessage-ID: <signed1@sender.example>\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n\r\n${body}`,
    );
    const signature = await new DkimSigner([{ domain: 'sender.example', selector: 's1', privateKey: senderKey, algorithm: 'rsa-sha256' }], silentLogger()).sign(unsigned, 'sender.example');
    const original = Buffer.concat([Buffer.from(signature), unsigned]);
    const r = await transaction(hearth.smtpPort, 'friend@sender.example', ['fwd@example.test'], original);
    expect(r.data).toMatch(/^250 2\.6\.0 .*1 forward queued/);

    const got = await waitFor(() => remote.received.find((m) => m.raw.includes('signed and forwarded')));
    expect(got.from).toMatch(/^SRS0=[A-Za-z0-9+/]{4}=[A-Z2-7]{2}=sender\.example=friend@example\.test$/);
    expect(got.to).toEqual(['friend@remote.example']);
    // Everything we added is on top; below it, the original bytes, untouched.
    expect(got.raw.subarray(got.raw.length - original.length).equals(original)).toBe(true);
    const added = got.raw.subarray(0, got.raw.length - original.length).toString();
    const names = [...added.matchAll(/^([A-Za-z-]+):/gm)].map((m) => m[1].toLowerCase());
    expect(names).toEqual(['arc-seal', 'arc-message-signature', 'arc-authentication-results', 'delivered-to', 'received', 'authentication-results']);
    expect(added).toMatch(/Authentication-Results: mx\.test\.example;[\s\S]*dkim=pass[\s\S]*dmarc=pass/);

    const result = await authenticate(got.raw, { ip: '127.0.0.1', helo: 'mx.test.example', sender: got.from, mta: 'mx.remote.example', resolver: resolver as never });
    expect(result.dkim.results.find((d) => d.signingDomain === 'sender.example')?.status.result).toBe('pass');
    expect(result.arc && result.arc.status.result).toBe('pass');
    expect(added).toMatch(/^ARC-Seal: i=1; a=rsa-sha256; .*cv=none; d=example\.test; s=arc1;/m);
  });

  it('takes a bounce to the SRS address back to the original sender; refuses forged and tampered SRS addresses with 550 5.1.1', async () => {
    // carol@family.test writes to an alias that forwards: her address becomes SRS0=...=family.test=carol@example.test.
    expect((await transaction(hearth.smtpPort, 'carol@family.test', ['fwd@example.test'], plain('carol@family.test', 'fwd@example.test', 'carol forwards'))).data).toMatch(/^250 /);
    const out = await waitFor(() => remote.received.find((m) => m.raw.includes('carol forwards')));
    expect(out.from).toMatch(/^SRS0=.{4}=..=family\.test=carol@example\.test$/);

    const bounce = `From: Mail Delivery System <MAILER-DAEMON@mx.remote.example>\r\nTo: <${out.from}>\r\nSubject: Undelivered Mail Returned to Sender (smtp bounce)\r\nAuto-Submitted: auto-replied\r\n\r\nfriend@remote.example: mailbox full\r\n`;
    const r = await transaction(hearth.smtpPort, '', [out.from], bounce);
    expect(r.rcpts[0]).toMatch(/^250/);
    expect(r.data).toMatch(/^250 /);
    const carols = await inboxFiles(setup.dataDir, 'carol@family.test');
    expect(carols.filter((f) => f.content.includes('(smtp bounce)'))).toHaveLength(1);

    const hash = out.from.slice(5, 9);
    const forged = [
      'SRS0=AAAA=AA=family.test=carol@example.test', // made up
      out.from.replace('=carol@', '=alice@'), // someone else's address under carol's hash
      out.from.replace(`SRS0=${hash}`, `SRS0=${hash.slice(0, 3)}${hash[3] === 'x' ? 'y' : 'x'}`), // hash changed
      'SRS1=AAAA=other.example==BBBB=AA=family.test=carol@example.test', // never issued here
    ];
    for (const address of forged) {
      const f = await transaction(hearth.smtpPort, '', [address], bounce);
      expect(f.rcpts[0], address).toMatch(/^550 5\.1\.1 /);
    }
  });

  it("turns our own queue's DSN for a forwarded message back to the original sender", async () => {
    // The destination refuses nobody@: the DSN goes to the SRS sender, i.e. to carol.
    expect((await transaction(hearth.smtpPort, 'carol@family.test', ['bad-fwd@example.test'], plain('carol@family.test', 'bad-fwd@example.test', 'doomed forward'))).data).toMatch(/^250 /);
    const dsn = await waitFor(async () => (await inboxFiles(setup.dataDir, 'carol@family.test')).find((f) => f.content.includes('multipart/report') && f.content.includes('nobody@remote.example')));
    expect(dsn.content.toString()).toMatch(/^Return-Path: <>\r\n/);
    expect(dsn.content.toString()).toContain('Action: failed');
  });

  it('sends a bounce for a remote original sender on through the queue', async () => {
    expect((await transaction(hearth.smtpPort, 'friend@sender.example', ['fwd@example.test'], plain('friend@sender.example', 'fwd@example.test', 'remote original'))).data).toMatch(/^250 /);
    const out = await waitFor(() => remote.received.find((m) => m.raw.includes('remote original')));
    const r = await transaction(hearth.smtpPort, '', [out.from], `From: MAILER-DAEMON@mx.remote.example\r\nTo: <${out.from}>\r\nSubject: returned (to remote original)\r\n\r\nsorry\r\n`);
    expect(r.data).toMatch(/^250 2\.6\.0 .*0 mailboxes, 1 forward queued/);
    const back = await waitFor(() => remote.received.find((m) => m.raw.includes('returned (to remote original)')));
    expect(back.to).toEqual(['friend@sender.example']);
    expect(back.from).toBe('');
  });

  it('does not forward what DMARC rejects or quarantines', async () => {
    const rejected = await transaction(hearth.smtpPort, 'boss@strict.example', ['fwd@example.test'], plain('boss@strict.example', 'fwd@example.test', 'spoofed boss'));
    expect(rejected.data).toMatch(/^550 5\.7\.1 /);
    // Quarantine: the local copy goes to Junk, the forward is skipped; a forward-only alias refuses it.
    const mixed = await transaction(hearth.smtpPort, 'x@quar.example', ['mixed@example.test'], plain('x@quar.example', 'mixed@example.test', 'quarantined mixed'));
    expect(mixed.data).toMatch(/^250 2\.6\.0 Message accepted for delivery \(1 mailbox\)/);
    const junkDir = join(setup.dataDir, 'example.test/bob/.Junk/new');
    const junk = await Promise.all((await readdir(junkDir)).map((n) => readFile(join(junkDir, n), 'utf8')));
    expect(junk.filter((m) => m.includes('quarantined mixed'))).toHaveLength(1);
    const only = await transaction(hearth.smtpPort, 'x@quar.example', ['fwd@example.test'], plain('x@quar.example', 'fwd@example.test', 'quarantined forward'));
    expect(only.data).toMatch(/^550 5\.7\.1 .*not forwarded/);
    // A later good forward arrives; none of the three above ever did.
    expect((await transaction(hearth.smtpPort, 'friend@sender.example', ['fwd@example.test'], plain('friend@sender.example', 'fwd@example.test', 'good after bad'))).data).toMatch(/^250 /);
    await waitFor(() => remote.received.find((m) => m.raw.includes('good after bad')));
    expect(remote.received.filter((m) => /spoofed boss|quarantined/.test(m.raw.toString()))).toHaveLength(0);
  });
});
