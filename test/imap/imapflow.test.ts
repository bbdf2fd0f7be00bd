// hearth's IMAP against imapflow, a real and widely used client: list, status, open, fetch
// (envelope, bodyStructure, source, partial), search, flags, copy, move, append, expunge, and
// IDLE woken by a message delivered through hearth's own SMTP listener.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImapFlow } from 'imapflow';
import type { TestSetup } from '../helpers/hearth.ts';
import { deliver, eventually, startImapHearth } from './imap-helpers.ts';
import type { Running } from './imap-helpers.ts';

const MULTIPART = [
  'From: Carol Example <carol@remote.example>',
  'To: alice@example.test',
  'Subject: =?UTF-8?Q?Caf=C3=A9_report?=',
  'Date: Tue, 3 Feb 2026 09:30:00 +0100',
  'Message-ID: <multi-1@remote.example>',
  'MIME-Version: 1.0',
  'Content-Type: multipart/mixed; boundary="b1"',
  '',
  '--b1',
  'Content-Type: text/plain; charset=utf-8',
  '',
  'The quarterly numbers are attached. Searchable-word-zebra.',
  '--b1',
  'Content-Type: application/octet-stream; name="data.bin"',
  'Content-Disposition: attachment; filename="data.bin"',
  'Content-Transfer-Encoding: base64',
  '',
  'AAECAwQFBgcICQ==',
  '--b1--',
  '',
].join('\r\n');

describe('IMAP with imapflow', () => {
  let setup: TestSetup;
  let hearth: Running;
  let client: ImapFlow;

  const connect = async (user = 'alice@example.test', pass = 'alice-password', opts: { secure?: boolean } = {}): Promise<ImapFlow> => {
    const c = new ImapFlow({
      host: '127.0.0.1',
      port: opts.secure ? hearth.port('imaps') : hearth.port('imap'),
      secure: opts.secure ?? false,
      auth: { user, pass },
      logger: false,
      tls: { rejectUnauthorized: false },
      disableAutoIdle: true,
    });
    await c.connect();
    return c;
  };

  beforeAll(async () => {
    ({ setup, hearth } = await startImapHearth());
    await deliver(hearth.smtpPort, 'alice@example.test', 'hello one', 'First body.');
    await deliver(hearth.smtpPort, 'alice@example.test', 'hello two', 'Second body.');
    client = await connect();
  });
  afterAll(async () => {
    await client?.logout().catch(() => undefined);
    await hearth?.close();
    await setup?.cleanup();
  });

  it('logs in over STARTTLS and lists the special-use folders', async () => {
    expect(client.secureConnection).toBe(true); // upgraded with STARTTLS on the plain port
    expect(client.capabilities.has('IDLE')).toBe(true);
    const list = await client.list();
    const byPath = new Map(list.map((m) => [m.path, m]));
    expect(byPath.get('INBOX')).toBeDefined();
    for (const [name, use] of [['Sent', '\\Sent'], ['Drafts', '\\Drafts'], ['Trash', '\\Trash'], ['Junk', '\\Junk']]) {
      expect(byPath.get(name)?.specialUse, name).toBe(use);
    }
    expect(list.every((m) => m.delimiter === '/')).toBe(true);
  });

  it('creates nested folders with \\HasChildren and renames and deletes them', async () => {
    await client.mailboxCreate('Work/Projects');
    let list = await client.list();
    const work = list.find((m) => m.path === 'Work');
    expect(work?.flags.has('\\HasChildren')).toBe(true);
    expect(list.find((m) => m.path === 'Work/Projects')?.flags.has('\\HasNoChildren')).toBe(true);
    await client.mailboxRename('Work/Projects', 'Work/Done');
    list = await client.list();
    expect(list.map((m) => m.path)).toContain('Work/Done');
    expect(list.map((m) => m.path)).not.toContain('Work/Projects');
    await client.mailboxDelete('Work/Done');
    const r = await client.mailboxCreate('Ünïcödé');
    expect(r.created).toBe(true);
    list = await client.list();
    expect(list.map((m) => m.path)).toContain('Ünïcödé');
  });

  it('STATUS and mailboxOpen agree on counts, UIDVALIDITY and UIDNEXT', async () => {
    const st = (await client.status('INBOX', { messages: true, unseen: true, uidNext: true, uidValidity: true, highestModseq: true, recent: true })) as { messages: number; unseen: number; uidValidity: bigint; uidNext: number };
    expect(st.messages).toBe(2);
    expect(st.unseen).toBe(2);
    const box = await client.mailboxOpen('INBOX');
    expect(box.exists).toBe(2);
    expect(box.uidValidity).toBe(BigInt(st.uidValidity));
    expect(box.uidNext).toBe(st.uidNext);
    expect(box.readOnly).toBe(false);
    expect(box.permanentFlags?.has('\\*')).toBe(true);
  });

  it('appends with flags and a date (APPENDUID), and fetches envelope, bodyStructure and source', async () => {
    const res = await client.append('INBOX', MULTIPART, ['\\Flagged', '$Forwarded'], new Date('2026-01-15T12:00:00Z'));
    expect(res).toBeTruthy();
    const appended = res as { uid: number; uidValidity: bigint };
    expect(appended.uid).toBeGreaterThan(0);
    const msg = await client.fetchOne(String(appended.uid), { uid: true, envelope: true, bodyStructure: true, source: true, flags: true, internalDate: true, size: true }, { uid: true });
    expect(msg).toBeTruthy();
    const m = msg as Exclude<typeof msg, false>;
    expect(m.envelope?.subject).toBe('Café report');
    expect(m.envelope?.from?.[0]).toMatchObject({ name: 'Carol Example', address: 'carol@remote.example' });
    expect(m.envelope?.messageId).toBe('<multi-1@remote.example>');
    expect(m.bodyStructure?.type).toBe('multipart/mixed');
    expect(m.bodyStructure?.childNodes?.map((c) => c.type)).toEqual(['text/plain', 'application/octet-stream']);
    expect(m.source?.toString('latin1')).toBe(MULTIPART);
    expect(m.size).toBe(Buffer.byteLength(MULTIPART));
    expect([...(m.flags ?? [])]).toEqual(expect.arrayContaining(['\\Flagged', '$Forwarded']));
    expect((m.internalDate as Date).toISOString()).toBe('2026-01-15T12:00:00.000Z');
    // A part, and a partial fetch of the whole message.
    const part = await client.download(String(appended.uid), '1', { uid: true });
    const chunks: Buffer[] = [];
    for await (const c of part.content!) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).toString()).toContain('Searchable-word-zebra');
    const partial = await client.fetchOne(String(appended.uid), { source: { start: 6, maxLength: 5 } }, { uid: true });
    expect((partial as { source: Buffer }).source.toString()).toBe('Carol');
  });

  it('BODY.PEEK leaves \\Seen alone; search finds by flags, header and body text', async () => {
    const before = await client.search({ seen: false });
    expect(before).toEqual([1, 2, 3]); // delivered and appended without \Seen
    const all = await client.search({ all: true });
    expect(all).toEqual([1, 2, 3]);
    // imapflow always fetches with BODY.PEEK: a peek leaves the message unseen.
    const body = await client.fetchOne('1', { bodyParts: ['TEXT'] });
    expect((body as { bodyParts: Map<string, Buffer> }).bodyParts.get('text')?.toString()).toContain('First body.');
    expect(await client.search({ seen: false })).toEqual([1, 2, 3]);
    await client.messageFlagsAdd('1', ['\\Seen']);
    const lines: string[] = [];
    for await (const m of client.fetch('1', { flags: true })) lines.push([...(m.flags ?? [])].join(' '));
    expect(lines[0]).toContain('\\Seen');
    expect(await client.search({ seen: true })).toEqual([1]);
    expect(await client.search({ subject: 'hello two' })).toEqual([2]);
    expect(await client.search({ subject: 'café' })).toEqual([3]);
    expect(await client.search({ body: 'searchable-word-zebra' })).toEqual([3]);
    expect(await client.search({ from: 'carol' }, { uid: true })).toHaveLength(1);
    expect(await client.search({ flagged: true, keyword: '$Forwarded' })).toEqual([3]);
    expect(await client.search({ or: [{ subject: 'hello one' }, { subject: 'hello two' }] })).toEqual([1, 2]);
    const sizes: number[] = [];
    for await (const m of client.fetch('1:3', { size: true })) sizes[m.seq] = m.size!;
    const cut = sizes[3] - 1;
    expect(await client.search({ larger: cut })).toEqual([1, 2, 3].filter((n) => sizes[n] > cut));
    expect(await client.search({ smaller: sizes[3] })).toEqual([1, 2, 3].filter((n) => sizes[n] < sizes[3]));
  });

  it('adds and removes flags, copies and moves (COPYUID), and expunges', async () => {
    expect(await client.messageFlagsAdd('2', ['\\Answered', 'Custom1'])).toBe(true);
    let m = await client.fetchOne('2', { flags: true });
    expect([...((m as { flags: Set<string> }).flags)]).toEqual(expect.arrayContaining(['\\Answered', 'Custom1']));
    expect(await client.messageFlagsRemove('2', ['Custom1'])).toBe(true);
    m = await client.fetchOne('2', { flags: true });
    expect([...((m as { flags: Set<string> }).flags)]).not.toContain('Custom1');

    const copied = await client.messageCopy('1:2', 'Trash');
    expect(copied).toBeTruthy();
    expect((copied as { uidMap: Map<number, number> }).uidMap.size).toBe(2);
    const moved = await client.messageMove('3', 'Archive');
    expect(moved).toBeTruthy();
    expect((moved as { uidMap: Map<number, number> }).uidMap.size).toBe(1);
    expect(client.mailbox && (client.mailbox as { exists: number }).exists).toBe(2);
    expect(((await client.status('Trash', { messages: true })) as { messages: number }).messages).toBe(2);
    expect(((await client.status('Archive', { messages: true })) as { messages: number }).messages).toBe(1);

    expect(await client.messageDelete('1')).toBe(true);
    expect((client.mailbox as { exists: number }).exists).toBe(1);
    const left = await client.search({ all: true }, { uid: true });
    expect(left).toHaveLength(1);
  });

  it('IDLE is told at once about a message delivered through SMTP', async () => {
    const watcher = await connect();
    await watcher.mailboxOpen('INBOX');
    const start = (watcher.mailbox as { exists: number }).exists;
    const exists = new Promise<number>((resolve) => watcher.on('exists', (ev: { count: number }) => resolve(ev.count)));
    const idling = watcher.idle();
    // Wait until the server has said "+ idling" (imapflow sets idling), then deliver.
    await eventually(() => ((watcher as unknown as { idling: boolean }).idling ? true : undefined));
    await deliver(hearth.smtpPort, 'alice@example.test', 'during idle', 'Wake up.');
    expect(await exists).toBe(start + 1);
    await watcher.logout();
    await idling.catch(() => undefined);
  });

  it('two sessions on one mailbox see each other’s flag changes and expunges', async () => {
    const other = await connect();
    await other.mailboxOpen('INBOX');
    const flagsSeen = new Promise<{ uid?: number; flags: Set<string> }>((resolve) => client.on('flags', (ev) => resolve(ev as { uid?: number; flags: Set<string> })));
    await other.messageFlagsAdd('1', ['\\Flagged']);
    await client.noop();
    const ev = await flagsSeen;
    expect(ev.flags.has('\\Flagged')).toBe(true);
    const expunged = new Promise<number>((resolve) => other.on('expunge', (e: { seq: number }) => resolve(e.seq)));
    const before = (client.mailbox as { exists: number }).exists;
    await client.messageDelete(`${before}`);
    await other.noop();
    expect(await expunged).toBe(before);
    await other.logout();
  });

  it('works over implicit TLS (993)', async () => {
    const c = await connect('bob@example.test', 'bob-password', { secure: true });
    expect(c.secureConnection).toBe(true);
    const box = await c.mailboxOpen('INBOX');
    expect(box.exists).toBe(0);
    await c.logout();
  });
});
