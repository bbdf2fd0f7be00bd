// Routing on the MX, end to end on loopback (issue 6): plus-addressing (INBOX and folder),
// postmaster@/abuse@ defaults, catch-all, forwarding (mixed aliases, null sender) through the
// queue to a loopback "external" MX found through a loopback DNS server, and loop protection.
// Loopback clients are trusted here (no sender checks): the unchecked delivery path.
import { describe, expect, it } from 'vitest';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inboxFiles } from '../helpers/hearth.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { relaySuite, waitFor } from '../helpers/remote-mx.ts';

/** One SMTP transaction; returns every reply (MAIL, each RCPT, and DATA's final reply if reached). */
async function transaction(port: number, from: string, rcpts: string[], message: string): Promise<{ mail: string; rcpts: string[]; data?: string }> {
  const c = await RawSmtp.connect(port);
  try {
    await c.reply();
    await c.command('EHLO client.test');
    const mail = await c.command(`MAIL FROM:<${from}>`);
    const replies: string[] = [];
    for (const r of rcpts) replies.push(await c.command(`RCPT TO:<${r}>`));
    if (!replies.some((r) => r.startsWith('250'))) return { mail, rcpts: replies };
    const go = await c.command('DATA');
    expect(go).toMatch(/^354/);
    const wire = message.replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..');
    c.send((wire.endsWith('\r\n') ? wire : `${wire}\r\n`) + '.\r\n');
    const data = await c.reply();
    await c.command('QUIT');
    return { mail, rcpts: replies, data };
  } finally {
    c.close();
  }
}

const message = (subject: string, extra = '', to = 'someone@example.test') =>
  `${extra}From: Friend <friend@sender.example>\nTo: ${to}\nSubject: ${subject}\nMessage-ID: <${subject.replace(/\W/g, '')}@sender.example>\n\nHello.\n.\nBye.\n`;

async function folderFiles(dataDir: string, address: string, folder: string): Promise<Buffer[]> {
  const [user, domain] = address.split('@');
  const dir = join(dataDir, domain, user, `.${folder}`, 'new');
  const names = await readdir(dir).catch(() => [] as string[]);
  return Promise.all(names.map((n) => readFile(join(dir, n))));
}

describe('routing on the MX (trusted loopback client)', () => {
  const env = relaySuite({
    zone: {
      'remote.example': { MX: [{ preference: 10, exchange: 'mx.remote.example' }] },
      'mx.remote.example': { A: ['127.0.0.1'] },
    },
    users: { 'alice@example.test': 'alice-password', 'bob@example.test': 'bob-password', 'carol@family.test': 'carol-password' },
    aliases: [
      'mixed@example.test: bob@example.test, pal@remote.example',
      'fwd@example.test: friend@remote.example',
      'shop+literal@example.test: bob@example.test',
      'abuse@family.test: bob@example.test',
      '@family.test: carol@family.test',
    ].join('\n'),
    toml: `[queue]\nfirst_retry = "200ms"\n[routing]\nplus_to_folder = true\nmax_received = 20\n`,
    // alice has a folder "Shopping"; plus-addresses with that tag (any case) go there.
    ready: ({ hearth }) => hearth.store.ensureMaildir({ user: 'alice', domain: 'example.test' }, 'Shopping'),
  });

  const inboxWith = async (address: string, text: string) => (await inboxFiles(env.setup.dataDir, address)).filter((f) => f.content.includes(text));

  it('delivers user+tag@ to the user: into folder "tag" when it exists, else INBOX; a literal "+" alias wins', async () => {
    const r = await transaction(env.hearth.smtpPort, 'friend@sender.example', ['alice+SHOPPING@example.test'], message('plus into folder'));
    expect(r.data).toMatch(/^250 /);
    const inFolder = (await folderFiles(env.setup.dataDir, 'alice@example.test', 'Shopping')).filter((f) => f.includes('plus into folder'));
    expect(inFolder).toHaveLength(1);
    expect(inFolder[0].toString()).toMatch(/^Return-Path: <friend@sender\.example>\r\nDelivered-To: alice@example\.test\r\n/);
    expect(await inboxWith('alice@example.test', 'plus into folder')).toHaveLength(0);

    expect((await transaction(env.hearth.smtpPort, 'friend@sender.example', ['alice+nosuchfolder@example.test'], message('plus no folder'))).data).toMatch(/^250 /);
    expect(await inboxWith('alice@example.test', 'plus no folder')).toHaveLength(1);

    expect((await transaction(env.hearth.smtpPort, 'friend@sender.example', ['shop+literal@example.test'], message('literal plus alias'))).data).toMatch(/^250 /);
    expect(await inboxWith('bob@example.test', 'literal plus alias')).toHaveLength(1);
    expect(await inboxWith('alice@example.test', 'literal plus alias')).toHaveLength(0);

    // A tag does not make an unknown user known.
    const unknown = await transaction(env.hearth.smtpPort, 'friend@sender.example', ['nobody+tag@example.test'], message('x'));
    expect(unknown.rcpts[0]).toMatch(/^550 5\.1\.1 /);
  });

  it('always has postmaster@ and abuse@ (first user of the domain unless an alias says otherwise); the catch-all still works', async () => {
    expect((await transaction(env.hearth.smtpPort, 'friend@sender.example', ['postmaster@example.test', 'Abuse@example.test'], message('to the postmaster'))).data).toMatch(/^250 /);
    expect(await inboxWith('alice@example.test', 'to the postmaster')).toHaveLength(1);
    // RFC 5321 4.5.1: the bare `RCPT TO:<Postmaster>` (no domain) is the first local domain's.
    expect((await transaction(env.hearth.smtpPort, 'friend@sender.example', ['Postmaster'], message('bare postmaster'))).data).toMatch(/^250 /);
    expect(await inboxWith('alice@example.test', 'bare postmaster')).toHaveLength(1);
    // family.test: postmaster -> its first user (carol); abuse -> the alias (bob); the rest -> the catch-all (carol).
    expect((await transaction(env.hearth.smtpPort, 'friend@sender.example', ['postmaster@family.test'], message('family postmaster'))).data).toMatch(/^250 /);
    expect(await inboxWith('carol@family.test', 'family postmaster')).toHaveLength(1);
    expect((await transaction(env.hearth.smtpPort, 'friend@sender.example', ['abuse@family.test'], message('family abuse'))).data).toMatch(/^250 /);
    expect(await inboxWith('bob@example.test', 'family abuse')).toHaveLength(1);
    expect((await transaction(env.hearth.smtpPort, 'friend@sender.example', ['whoever@family.test'], message('catch all'))).data).toMatch(/^250 /);
    expect(await inboxWith('carol@family.test', 'catch all')).toHaveLength(1);
  });

  it('delivers a mixed alias locally and forwards it; 250 only after both, sender rewritten with SRS', async () => {
    const r = await transaction(env.hearth.smtpPort, 'friend@sender.example', ['mixed@example.test'], message('mixed alias', '', 'mixed@example.test'));
    expect(r.data).toMatch(/^250 2\.6\.0 .*1 mailbox, 1 forward queued/);
    // The local copy is on disk at the 250 (no waiting).
    expect(await inboxWith('bob@example.test', 'mixed alias')).toHaveLength(1);
    const got = await waitFor(() => env.remote.received.find((m) => m.raw.includes('Subject: mixed alias')));
    expect(got.to).toEqual(['pal@remote.example']);
    expect(got.from).toMatch(/^SRS0=[A-Za-z0-9+/]{4}=[A-Z2-7]{2}=sender\.example=friend@example\.test$/);
    const text = got.raw.toString();
    // Our trace on top, then the message exactly as sent (no Return-Path in a relayed copy).
    expect(text).toMatch(/^Delivered-To: mixed@example\.test\r\nReceived: from client\.test \(\[127\.0\.0\.1\]\)\r\n\tby mx\.test\.example \(hearth\)/);
    expect(text).not.toContain('Return-Path');
    expect(text.endsWith(message('mixed alias', '', 'mixed@example.test').replace(/\n/g, '\r\n'))).toBe(true);
  });

  it('forwards mail from the null sender with the null sender', async () => {
    const r = await transaction(env.hearth.smtpPort, '', ['fwd@example.test'], message('null sender forward'));
    expect(r.data).toMatch(/^250 2\.6\.0 .*0 mailboxes, 1 forward queued/);
    const got = await waitFor(() => env.remote.received.find((m) => m.raw.includes('null sender forward')));
    expect(got.from).toBe('');
    expect(got.to).toEqual(['friend@remote.example']);
  });

  it('refuses a loop: too many Received: fields, or our own Delivered-To for the recipient (554 5.4.6), storing nothing', async () => {
    const hops = Array.from({ length: 21 }, (_, i) => `Received: from hop${i}.example by hop${i + 1}.example; Thu, 1 Jan 2026 00:00:00 +0000\n`).join('');
    const many = await transaction(env.hearth.smtpPort, 'friend@sender.example', ['alice@example.test'], message('too many hops', hops));
    expect(many.data).toMatch(/^554 5\.4\.6 Routing loop detected/);
    expect(await inboxWith('alice@example.test', 'too many hops')).toHaveLength(0);
    // 20 hops is still fine (the limit is "more than max_received").
    const ok = await transaction(env.hearth.smtpPort, 'friend@sender.example', ['alice@example.test'], message('twenty hops', hops.split('\n').slice(1).join('\n')));
    expect(ok.data).toMatch(/^250 /);

    // A forwarded copy coming back (remote forwards it to us again): refused.
    const r = await transaction(env.hearth.smtpPort, 'friend@sender.example', ['fwd@example.test'], message('round trip'));
    expect(r.data).toMatch(/^250 /);
    const out = await waitFor(() => env.remote.received.find((m) => m.raw.includes('Subject: round trip')));
    const back = await transaction(env.hearth.smtpPort, out.from, ['fwd@example.test'], out.raw.toString('latin1'));
    expect(back.data).toMatch(/^554 5\.4\.6 Routing loop detected: .*fwd@example\.test/);
    // Our Delivered-To of a local delivery counts too (folded, in a different case).
    const dt = await transaction(env.hearth.smtpPort, 'friend@sender.example', ['alice+x@example.test'], message('seen before', 'Delivered-To:\n <Alice@Example.test>\n'));
    expect(dt.data).toMatch(/^554 5\.4\.6 /);
    expect(await inboxWith('alice@example.test', 'seen before')).toHaveLength(0);
    // Someone else's Delivered-To is no loop.
    const other = await transaction(env.hearth.smtpPort, 'friend@sender.example', ['alice@example.test'], message('other delivered-to', 'Delivered-To: someone@elsewhere.example\n'));
    expect(other.data).toMatch(/^250 /);
  });
});
