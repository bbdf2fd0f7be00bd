// Folders, lists, reading, parts, acting on messages and search, over the user's own store;
// someone else's UIDs and path tricks find nothing.
import { readFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Folder, MessageList, MessageView } from '../../src/webmail/api-types.ts';
import { userSearch } from '../../src/store/user-search.ts';
import { client, fixture, makeHarness, message } from './api-harness.ts';
import type { Harness, Login } from './api-harness.ts';

let h: Harness;
let api: ReturnType<typeof client>;
let alice: Login;

async function list(path: string, login = alice): Promise<MessageList> {
  const r = await api.json<MessageList>('GET', path, login);
  expect(r.status, path).toBe(200);
  return r.body;
}

describe('webmail folders and messages', () => {
  beforeEach(async () => {
    h = await makeHarness();
    api = client(h.app);
    alice = await api.login('alice@example.test', 'alice-password');
  });
  afterEach(() => h.close());

  it('lists folders: INBOX, the special folders created at first login, then the rest, with counts', async () => {
    await h.deliver('alice@example.test', message({ subject: 'one' }));
    await h.deliver('alice@example.test', message({ subject: 'two' }));
    await api.request('POST', '/api/folders', { login: alice, body: { name: 'Lists/hearth' } });
    const folders = (await api.json<Folder[]>('GET', '/api/folders', alice)).body;
    expect(folders.map((f) => f.name)).toEqual(['INBOX', 'Drafts', 'Sent', 'Archive', 'Junk', 'Trash', 'Lists', 'Lists/hearth']);
    expect(folders[0]).toEqual({ name: 'INBOX', total: 2, unseen: 2 });
    expect(folders.find((f) => f.name === 'Sent')?.specialUse).toBe('\\Sent');
    expect(folders.find((f) => f.name === 'Trash')?.specialUse).toBe('\\Trash');
  });

  it('creates, renames and removes folders; names are checked by the store', async () => {
    expect((await api.request('POST', '/api/folders', { login: alice, body: { name: 'Work' } })).status).toBe(200);
    expect((await api.request('POST', '/api/folders', { login: alice, body: { name: 'Work' } })).status).toBe(409);
    expect((await api.request('POST', '/api/folders/Work/rename', { login: alice, body: { to: 'Jobs' } })).status).toBe(200);
    expect((await api.request('POST', '/api/folders/Jobs/remove', { login: alice })).status).toBe(200);
    expect((await api.request('POST', '/api/folders/Jobs/remove', { login: alice })).status).toBe(404);
    expect((await api.request('POST', '/api/folders/INBOX/remove', { login: alice })).status).toBe(400);
    for (const bad of ['../bob', '..', '.hidden', 'a/../../b', 'x\u0000y', '/etc']) {
      const res = await api.request('POST', '/api/folders', { login: alice, body: { name: bad } });
      expect(res.status, JSON.stringify(bad)).toBe(400);
    }
  });

  it('lists newest first with paging, and the summary fields', async () => {
    for (let i = 1; i <= 7; i++) await h.deliver('alice@example.test', message({ subject: `message ${i}`, date: `Mon, 0${i} Mar 2026 10:00:00 +0000` }));
    await h.deliver('alice@example.test', await readFile(fixture('mixed-attachment.eml')));
    const first = await list('/api/folders/INBOX/messages?offset=0&limit=3');
    expect(first.total).toBe(8);
    expect(first.folder).toBe('INBOX');
    expect(first.messages.map((m) => m.subject)).toEqual(['The report', 'message 7', 'message 6']);
    const m = first.messages[0];
    expect(m.from).toEqual([{ name: 'Carol', address: 'carol@example.net' }]);
    expect(m.to).toEqual([{ name: 'Bob', address: 'bob@example.net' }]);
    expect(m.hasAttachments).toBe(true);
    expect(m.flags).toEqual([]);
    expect(m.date).toBe(Date.parse('Thu, 3 Jul 2025 14:15:16 -0700'));
    expect(m.size).toBeGreaterThan(1000);
    const second = await list('/api/folders/INBOX/messages?offset=6&limit=3');
    expect(second.messages.map((x) => x.subject)).toEqual(['message 2', 'message 1']);
    expect((await api.request('GET', '/api/folders/INBOX/messages?limit=-1', { login: alice })).status).toBe(400);
    expect((await api.request('GET', '/api/folders/Nope/messages', { login: alice })).status).toBe(404);
  });

  it('URL-decodes folder names (Lists/hearth) and refuses traversal in them', async () => {
    await api.request('POST', '/api/folders', { login: alice, body: { name: 'Lists/hearth' } });
    await h.deliver('alice@example.test', message({ subject: 'in a subfolder' }), 'Lists/hearth');
    const l = await list(`/api/folders/${encodeURIComponent('Lists/hearth')}/messages`);
    expect(l.messages.map((m) => m.subject)).toEqual(['in a subfolder']);
    await h.deliver('bob@example.test', message({ to: 'bob@example.test', subject: 'bob private' }));
    for (const bad of ['..%2F..%2Fexample.test%2Fbob', '%2E%2E', '..%2Fbob', '.%2E%2Fbob', '%2Fetc%2Fpasswd', 'INBOX%00', '..%5Cbob']) {
      const res = await api.request('GET', `/api/folders/${bad}/messages`, { login: alice });
      expect([400, 404], bad).toContain(res.status);
      expect(await res.text()).not.toContain('bob private');
    }
  });

  it('another user\'s message id is not found, for every endpoint', async () => {
    await h.deliver('bob@example.test', message({ to: 'bob@example.test', subject: 'for bob only' }));
    const bob = await api.login('bob@example.test', 'bob-password');
    const bobs = await list('/api/folders/INBOX/messages', bob);
    const uid = bobs.messages[0].uid;
    for (const path of [`/api/folders/INBOX/messages/${uid}`, `/api/folders/INBOX/messages/${uid}/html`, `/api/folders/INBOX/messages/${uid}/parts/1`, `/api/folders/INBOX/messages/${uid}/source`]) {
      const res = await api.request('GET', path, { login: alice });
      expect(res.status, path).toBe(404);
      expect(await res.text()).not.toContain('for bob only');
    }
    for (const action of ['flags', 'move', 'delete']) {
      const res = await api.request('POST', `/api/folders/INBOX/${action}`, { login: alice, body: { uids: [uid], add: ['\\Seen'], to: 'Trash' } });
      expect(res.status, action).toBe(404);
    }
    const fwd = await api.request('POST', '/api/send', { login: alice, body: { to: 'carol@remote.example', subject: 'x', text: 'x', forwardOf: { folder: 'INBOX', uid } } });
    expect(fwd.status).toBe(404);
    // Bob's message is untouched.
    expect((await list('/api/folders/INBOX/messages', bob)).messages[0].flags).toEqual([]);
    expect((await api.request('GET', '/api/folders/INBOX/messages/0', { login: alice })).status).toBe(404);
    expect((await api.request('GET', '/api/folders/INBOX/messages/abc', { login: alice })).status).toBe(404);
  });

  it('shows a message: headers, text, html flag, attachments; reading does not mark it read', async () => {
    await h.deliver('alice@example.test', await readFile(fixture('mixed-attachment.eml')));
    const uid = (await list('/api/folders/INBOX/messages')).messages[0].uid;
    const v = (await api.json<MessageView>('GET', `/api/folders/INBOX/messages/${uid}`, alice)).body;
    expect(v.subject).toBe('The report');
    expect(v.messageId).toBe('<mixed-1@example.net>');
    expect(v.hasHtml).toBe(true);
    expect(v.text).toContain('See the chart');
    expect(v.hasRemoteContent).toBe(false);
    expect(v.attachments).toEqual([
      { part: '1.2', filename: 'chart.png', contentType: 'image/png', size: expect.any(Number), inline: true, contentId: 'chart@example.net' },
      { part: '2', filename: 'report.pdf', contentType: 'application/pdf', size: expect.any(Number), inline: false },
    ]);
    expect(v.flags).toEqual([]);
    expect((await list('/api/folders/INBOX/messages')).messages[0].flags).toEqual([]);
  });

  it('shows headers of encoded words and alternatives', async () => {
    await h.deliver('alice@example.test', await readFile(fixture('alternative.eml')));
    await h.deliver('alice@example.test', await readFile(fixture('encoded-words.eml')));
    const [enc, alt] = (await list('/api/folders/INBOX/messages')).messages;
    const va = (await api.json<MessageView>('GET', `/api/folders/INBOX/messages/${alt.uid}`, alice)).body;
    expect(va.hasHtml).toBe(true);
    expect(va.attachments).toEqual([]);
    expect(va.text.length).toBeGreaterThan(0);
    const ve = (await api.json<MessageView>('GET', `/api/folders/INBOX/messages/${enc.uid}`, alice)).body;
    expect(ve.subject).not.toMatch(/=\?/);
  });

  it('serves parts with their names (RFC 6266), safe types and nosniff; refuses bad part numbers', async () => {
    const raw = (await readFile(fixture('mixed-attachment.eml'), 'utf8'))
      .replace('filename="report.pdf"', 'filename="../../etc/report.pdf"')
      .replace('Content-Type: application/pdf; name="report.pdf"', 'Content-Type: text/html; name="report.html"');
    await h.deliver('alice@example.test', raw);
    const uid = (await list('/api/folders/INBOX/messages')).messages[0].uid;
    const png = await api.request('GET', `/api/folders/INBOX/messages/${uid}/parts/1.2`, { login: alice });
    expect(png.status).toBe(200);
    expect(png.headers.get('content-type')).toBe('image/png');
    expect(png.headers.get('content-disposition')).toBe(`attachment; filename="chart.png"; filename*=UTF-8''chart.png`);
    expect(png.headers.get('x-content-type-options')).toBe('nosniff');
    expect(Buffer.from(await png.arrayBuffer()).subarray(0, 4).toString('latin1')).toBe('\x89PNG');
    const inline = await api.request('GET', `/api/folders/INBOX/messages/${uid}/parts/1.2?inline=1`, { login: alice });
    expect(inline.headers.get('content-disposition')).toMatch(/^inline; /);

    const html = await api.request('GET', `/api/folders/INBOX/messages/${uid}/parts/2`, { login: alice });
    expect(html.status).toBe(200);
    expect(html.headers.get('content-type')).toBe('application/octet-stream');
    expect(html.headers.get('content-security-policy')).toMatch(/^sandbox;/);
    const cd = html.headers.get('content-disposition')!;
    expect(cd).toMatch(/^attachment; filename="report.pdf"; filename\*=UTF-8''report.pdf$/);
    expect(cd).not.toContain('..');
    expect(cd).not.toContain('/');

    for (const bad of ['0', '1.0', '..%2F..%2Fetc%2Fpasswd', '1..2', '-1', '1e3', '%2E%2E', '1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17']) {
      const res = await api.request('GET', `/api/folders/INBOX/messages/${uid}/parts/${bad}`, { login: alice });
      expect([400, 404], bad).toContain(res.status);
    }
    expect((await api.request('GET', `/api/folders/INBOX/messages/${uid}/parts/9`, { login: alice })).status).toBe(404);
    expect((await api.request('GET', `/api/folders/INBOX/messages/${uid}/parts/2.1`, { login: alice })).status).toBe(404);
  });

  it('encodes non-ASCII attachment names per RFC 5987', async () => {
    const raw = message({
      subject: 'file',
      headers: 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"',
      body: '--b\nContent-Type: text/plain\n\nsee attached\n--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename*=UTF-8\'\'Gr%C3%BC%C3%9Fe%20%22du%22.txt\nContent-Transfer-Encoding: base64\n\naGVsbG8=\n--b--\n',
    });
    await h.deliver('alice@example.test', raw);
    const uid = (await list('/api/folders/INBOX/messages')).messages[0].uid;
    const v = (await api.json<MessageView>('GET', `/api/folders/INBOX/messages/${uid}`, alice)).body;
    expect(v.attachments[0].filename).toBe('Grüße _du_.txt');
    const res = await api.request('GET', `/api/folders/INBOX/messages/${uid}/parts/2`, { login: alice });
    expect(res.headers.get('content-disposition')).toBe(`attachment; filename="Gr__e _du_.txt"; filename*=UTF-8''Gr%C3%BC%C3%9Fe%20_du_.txt`);
    expect(await res.text()).toBe('hello');
  });

  it('serves the source as text/plain', async () => {
    const raw = message({ subject: 'source please' });
    await h.deliver('alice@example.test', raw);
    const uid = (await list('/api/folders/INBOX/messages')).messages[0].uid;
    const res = await api.request('GET', `/api/folders/INBOX/messages/${uid}/source`, { login: alice });
    expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await res.text()).toBe(raw);
  });

  it('sets and clears flags through the store (IMAP sees them), checking flag names', async () => {
    await h.deliver('alice@example.test', message());
    await h.deliver('alice@example.test', message());
    const uids = (await list('/api/folders/INBOX/messages')).messages.map((m) => m.uid);
    expect((await api.request('POST', '/api/folders/INBOX/flags', { login: alice, body: { uids, add: ['\\Seen', '\\Flagged', '$Junk'] } })).status).toBe(200);
    expect((await api.request('POST', '/api/folders/INBOX/flags', { login: alice, body: { uids: [uids[0]], remove: ['\\Flagged'] } })).status).toBe(200);
    const mb = await h.mail.open({ user: 'alice', domain: 'example.test' });
    const state = await mb.sync('INBOX');
    expect(state.messages.find((m) => m.uid === uids[0])!.flags).toEqual(['\\Seen', '$Junk']);
    expect(state.messages.find((m) => m.uid === uids[1])!.flags).toEqual(['\\Seen', '\\Flagged', '$Junk']);
    const folders = (await api.json<Folder[]>('GET', '/api/folders', alice)).body;
    expect(folders[0].unseen).toBe(0);
    expect((await api.request('POST', '/api/folders/INBOX/flags', { login: alice, body: { uids, add: ['\\Recent'] } })).status).toBe(400);
    expect((await api.request('POST', '/api/folders/INBOX/flags', { login: alice, body: { uids, add: ['bad flag'] } })).status).toBe(400);
    expect((await api.request('POST', '/api/folders/INBOX/flags', { login: alice, body: { uids: [] } })).status).toBe(400);
    expect((await api.request('POST', '/api/folders/INBOX/flags', { login: alice, body: { uids: ['1'] } })).status).toBe(400);
  });

  it('moves messages, deletes to Trash, and expunges from Trash', async () => {
    await h.deliver('alice@example.test', message({ subject: 'keep' }));
    await h.deliver('alice@example.test', message({ subject: 'bin' }));
    const [bin, keep] = (await list('/api/folders/INBOX/messages')).messages;
    expect((await api.request('POST', '/api/folders/INBOX/move', { login: alice, body: { uids: [keep.uid], to: 'Archive' } })).status).toBe(200);
    expect((await list('/api/folders/Archive/messages')).messages.map((m) => m.subject)).toEqual(['keep']);
    expect((await api.request('POST', '/api/folders/INBOX/move', { login: alice, body: { uids: [bin.uid], to: 'Nowhere' } })).status).toBe(404);
    expect((await api.request('POST', '/api/folders/INBOX/move', { login: alice, body: { uids: [bin.uid], to: '../../bob' } })).status).toBe(400);
    expect((await api.request('POST', '/api/folders/INBOX/delete', { login: alice, body: { uids: [bin.uid] } })).status).toBe(200);
    expect((await list('/api/folders/INBOX/messages')).total).toBe(0);
    const trash = await list('/api/folders/Trash/messages');
    expect(trash.messages.map((m) => m.subject)).toEqual(['bin']);
    expect((await api.request('POST', '/api/folders/Trash/delete', { login: alice, body: { uids: [trash.messages[0].uid] } })).status).toBe(200);
    expect((await list('/api/folders/Trash/messages')).total).toBe(0);
  });

  it('groups conversations by References/In-Reply-To and lists a conversation', async () => {
    await h.deliver('alice@example.test', message({ subject: 'plan', id: '<a@x>' }));
    await h.deliver('alice@example.test', message({ subject: 'other', id: '<b@x>' }));
    await h.deliver('alice@example.test', message({ subject: 'Re: plan', id: '<c@x>', inReplyTo: '<a@x>', references: '<a@x>' }));
    await h.deliver('alice@example.test', message({ subject: 'Re: Re: plan', id: '<d@x>', inReplyTo: '<c@x>', body: 'Sounds good,\nsee you there.\n\nOn Mon, 2 Mar 2026, Carol wrote:\n> Hi Alice,\n> how are you?\n-- \nDave\n' }));
    const grouped = await list('/api/folders/INBOX/messages?threads=1');
    expect(grouped.total).toBe(2);
    expect(grouped.messages.map((m) => [m.subject, m.thread?.count])).toEqual([
      ['Re: Re: plan', 3],
      ['other', 1],
    ]);
    const members = await list(`/api/folders/INBOX/messages?thread=${grouped.messages[0].thread!.id}`);
    expect(members.messages.map((m) => m.subject)).toEqual(['Re: Re: plan', 'Re: plan', 'plan']);
    // Each member carries the start of its own text (not the quote, not the signature) for the collapsed view.
    expect(members.messages.map((m) => m.snippet)).toEqual(['Sounds good, see you there.', 'Hi Alice, how are you?', 'Hi Alice, how are you?']);
    // The id stays as the conversation grows.
    await h.deliver('alice@example.test', message({ subject: 'Re: plan again', id: '<e@x>', references: '<a@x> <c@x>' }));
    const again = await list('/api/folders/INBOX/messages?threads=1');
    expect(again.messages[0].thread).toEqual({ id: grouped.messages[0].thread!.id, count: 4 });
    expect((await api.request('GET', '/api/folders/INBOX/messages?thread=nope', { login: alice })).status).toBe(404);
  });

  it('searches words, from:, subject:, has:attachment and dates, with and without the index', async () => {
    await h.deliver('alice@example.test', message({ from: 'Dave <dave@remote.example>', subject: 'Budget for spring', body: 'the zanzibar numbers' }));
    await h.deliver('alice@example.test', message({ from: 'Erin <erin@remote.example>', subject: 'Lunch', body: 'pizza on friday, not zanzibar' }));
    await h.deliver('alice@example.test', await readFile(fixture('mixed-attachment.eml')));
    const search = async (q: string): Promise<string[]> => (await list(`/api/search?folder=INBOX&q=${encodeURIComponent(q)}`)).messages.map((m) => m.subject);
    // Before the index caught up: every message is read.
    expect(await search('zanzibar')).toEqual(['Lunch', 'Budget for spring']);
    const mb = await h.mail.open({ user: 'alice', domain: 'example.test' });
    userSearch(mb)!.schedule('INBOX');
    await userSearch(mb)!.idle();
    expect(await search('zanzibar')).toEqual(['Lunch', 'Budget for spring']);
    expect(await search('ZANZIBAR pizza')).toEqual(['Lunch']);
    expect(await search('from:dave')).toEqual(['Budget for spring']);
    expect(await search('from:remote.example subject:lunch')).toEqual(['Lunch']);
    expect(await search('has:attachment')).toEqual(['The report']);
    expect(await search('"the zanzibar"')).toEqual(['Budget for spring']);
    expect(await search('nothing-like-this')).toEqual([]);
    expect(await search(`after:${new Date(Date.now() - 86_400_000 * 2).toISOString().slice(0, 10)} zanzibar`)).toEqual(['Lunch', 'Budget for spring']);
    expect(await search('before:2000-01-01')).toEqual([]);
    const paged = await list('/api/search?folder=INBOX&q=zanzibar&offset=1&limit=1');
    expect(paged.total).toBe(2);
    expect(paged.messages.map((m) => m.subject)).toEqual(['Budget for spring']);
    expect((await api.request('GET', '/api/search?q=has:money', { login: alice })).status).toBe(400);
    expect((await api.request('GET', '/api/search?q=before:yesterday', { login: alice })).status).toBe(400);
    expect((await api.request('GET', '/api/search?folder=..%2Fbob&q=x', { login: alice })).status).toBe(400);
  });

  it('remembers "always load images from this sender"', async () => {
    await h.deliver('alice@example.test', message({ from: 'news@remote.example', headers: 'Content-Type: text/html', body: '<p>hi <img src="https://track.example/p.gif"></p>' }));
    const uid = (await list('/api/folders/INBOX/messages')).messages[0].uid;
    let v = (await api.json<MessageView>('GET', `/api/folders/INBOX/messages/${uid}`, alice)).body;
    expect(v.hasRemoteContent).toBe(true);
    expect(v.remoteAllowed).toBe(false);
    expect((await (await api.request('GET', `/api/folders/INBOX/messages/${uid}/html`, { login: alice })).text())).not.toContain('track.example');
    expect((await api.request('POST', '/api/senders/remote-content', { login: alice, body: { address: 'News@remote.example', allow: true } })).status).toBe(200);
    v = (await api.json<MessageView>('GET', `/api/folders/INBOX/messages/${uid}`, alice)).body;
    expect(v.remoteAllowed).toBe(true);
    const html = await api.request('GET', `/api/folders/INBOX/messages/${uid}/html`, { login: alice });
    expect(await html.text()).toContain('https://track.example/p.gif');
    expect(html.headers.get('content-security-policy')).toContain('img-src data: \'self\' https: http:');
    expect((await api.request('POST', '/api/senders/remote-content', { login: alice, body: { address: 'news@remote.example', allow: false } })).status).toBe(200);
    expect(await (await api.request('GET', `/api/folders/INBOX/messages/${uid}/html`, { login: alice })).text()).not.toContain('track.example');
    expect((await api.request('POST', '/api/senders/remote-content', { login: alice, body: { address: 'not an address', allow: true } })).status).toBe(400);
  });

  it('serves the UI shell with its CSP and the bundled app, gzip when asked', async () => {
    const shell = await api.request('GET', '/');
    expect(shell.status).toBe(200);
    expect(shell.headers.get('content-security-policy')).toBe("default-src 'self'; frame-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'");
    const html = await shell.text();
    const built = await h.app.assets();
    if (built.js) {
      expect(html).toContain(`/assets/app.js?v=${built.js.hash}`);
      const js = await api.request('GET', `/assets/app.js?v=${built.js.hash}`, { headers: { 'accept-encoding': 'gzip' } });
      expect(js.status).toBe(200);
      expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
      expect(js.headers.get('cache-control')).toContain('immutable');
    } else {
      expect(html).toContain('not there yet');
    }
  });

  it('says so when the UI entry does not exist', async () => {
    const t = await makeHarness({ deps: { ui: { entry: '/nonexistent/main.tsx' } } });
    try {
      const res = await client(t.app).request('GET', '/');
      expect(res.status).toBe(200);
      expect(await res.text()).toContain('is not there yet');
      expect((await client(t.app).request('GET', '/assets/app.js')).status).toBe(404);
    } finally {
      await t.close();
    }
  });
});
