// Writing mail: send through the submission pipeline (local recipients get it in their Maildir,
// remote ones are queued), a copy in Sent, replies and forwards, attachments, drafts.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { simpleParser } from 'mailparser';
import type { MessageList } from '../../src/webmail/api-types.ts';
import { client, makeHarness, message } from './api-harness.ts';
import type { Harness, Login } from './api-harness.ts';

let h: Harness;
let api: ReturnType<typeof client>;
let alice: Login;

async function folderMessages(address: string, folder: string): Promise<Array<{ raw: Buffer; flags: string[]; uid: number }>> {
  const [user, domain] = address.split('@');
  const mb = await h.mail.open({ user, domain });
  const state = await mb.sync(folder);
  return Promise.all(state.messages.map(async (m) => ({ raw: (await mb.readMessage(folder, m.uid))!, flags: m.flags, uid: m.uid })));
}

describe('webmail sending and drafts', () => {
  beforeEach(async () => {
    h = await makeHarness();
    api = client(h.app);
    alice = await api.login('alice@example.test', 'alice-password');
  });
  afterEach(() => h.close());

  it('sends to a local and a remote recipient through the pipeline, keeping a copy (with Bcc) in Sent', async () => {
    const res = await api.request('POST', '/api/send', {
      login: alice,
      body: {
        to: 'Bob <bob@example.test>, carol@remote.example',
        bcc: 'dave@remote.example',
        subject: 'Grüße from the webmail',
        text: 'Hello both,\nsee attached.\n',
        attachments: [{ filename: 'notes.txt', contentType: 'text/plain', base64: Buffer.from('the notes').toString('base64') }],
      },
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { ok: boolean; queueId?: string };
    expect(body).toEqual({ ok: true, queueId: 'Q1' });

    const [bobs] = await folderMessages('bob@example.test', 'INBOX');
    const got = await simpleParser(bobs.raw);
    expect(got.from?.value[0].address).toBe('alice@example.test');
    expect(got.subject).toBe('Grüße from the webmail');
    expect(got.text).toContain('see attached.');
    expect(got.attachments.map((a) => [a.filename, a.content.toString()])).toEqual([['notes.txt', 'the notes']]);
    expect(got.headers.has('bcc')).toBe(false);
    expect(bobs.raw.toString()).toMatch(/^Return-Path: <alice@example.test>\r\n/);

    expect(h.queued).toHaveLength(1);
    expect(h.queued[0].from).toBe('alice@example.test');
    expect(h.queued[0].recipients).toEqual(['carol@remote.example', 'dave@remote.example']);
    expect(h.queued[0].content.toString()).not.toMatch(/^Bcc:/im);

    const sent = await folderMessages('alice@example.test', 'Sent');
    expect(sent).toHaveLength(1);
    expect(sent[0].flags).toEqual(['\\Seen']);
    const copy = await simpleParser(sent[0].raw);
    expect(copy.messageId).toBe(got.messageId);
    expect(copy.bcc && !Array.isArray(copy.bcc) ? copy.bcc.value[0].address : '').toBe('dave@remote.example');
  });

  it('replies with In-Reply-To and References, and forwards as a message/rfc822 attachment', async () => {
    await h.deliver('alice@example.test', message({ subject: 'Question', id: '<q1@remote.example>', body: 'the original text' }));
    const uid = (await api.json<MessageList>('GET', '/api/folders/INBOX/messages', alice)).body.messages[0].uid;
    const reply = await api.request('POST', '/api/send', {
      login: alice,
      body: { to: 'bob@example.test', subject: 'Re: Question', text: '> the original text\nAnswer.', inReplyTo: '<q1@remote.example>', references: ['<q0@remote.example>', '<q1@remote.example>', 'junk'] },
    });
    expect(reply.status).toBe(200);
    const fwd = await api.request('POST', '/api/send', { login: alice, body: { to: 'bob@example.test', subject: 'Fwd: Question', text: 'see below', forwardOf: { folder: 'inbox', uid } } });
    expect(fwd.status).toBe(200);
    const [r, f] = await folderMessages('bob@example.test', 'INBOX');
    const pr = await simpleParser(r.raw);
    expect(pr.inReplyTo).toBe('<q1@remote.example>');
    expect(pr.references).toEqual(['<q0@remote.example>', '<q1@remote.example>']);
    const pf = await simpleParser(f.raw);
    expect(f.raw.toString()).toMatch(/Content-Type: message\/rfc822/i);
    expect(pf.attachments[0]?.filename).toBe('Question.eml');
    expect(pf.attachments[0]?.content.toString()).toContain('the original text');
  });

  it('refuses bad recipients, unknown local users, no recipients and oversized messages', async () => {
    const bad = await api.request('POST', '/api/send', { login: alice, body: { to: 'not an address', subject: 's', text: 't' } });
    expect(bad.status).toBe(400);
    const unknown = await api.request('POST', '/api/send', { login: alice, body: { to: 'nobody@example.test', subject: 's', text: 't' } });
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as { error: string }).error).toMatch(/No such user/);
    const none = await api.request('POST', '/api/send', { login: alice, body: { to: '', subject: 's', text: 't' } });
    expect(none.status).toBe(400);
    const small = await makeHarness({ deps: { maxMessageBytes: 2000 } });
    try {
      const c = client(small.app);
      const login = await c.login('alice@example.test', 'alice-password');
      const big = await c.request('POST', '/api/send', { login, body: { to: 'bob@example.test', subject: 's', text: 'x'.repeat(5000) } });
      expect(big.status).toBe(413);
      const huge = await c.request('POST', '/api/send', { login, body: { to: 'bob@example.test', subject: 's', text: 'x'.repeat(1 << 20) } });
      expect(huge.status).toBe(413);
    } finally {
      await small.close();
    }
    expect(await folderMessages('bob@example.test', 'INBOX')).toHaveLength(0);
    expect(h.queued).toHaveLength(0);
    expect(await folderMessages('alice@example.test', 'Sent')).toHaveLength(0);
  });

  it('saves drafts with \\Draft \\Seen, replaces them, and removes the draft when sent', async () => {
    const first = await api.json<{ uid: number }>('POST', '/api/drafts', alice, { to: 'bob@example.test', subject: 'draft', text: 'v1' });
    expect(first.status).toBe(200);
    const second = await api.json<{ uid: number }>('POST', '/api/drafts', alice, { to: 'bob@example.test', subject: 'draft', text: 'v2', replaceUid: first.body.uid });
    expect(second.body.uid).toBeGreaterThan(first.body.uid);
    let drafts = await folderMessages('alice@example.test', 'Drafts');
    expect(drafts.map((d) => d.uid)).toEqual([second.body.uid]);
    expect(drafts[0].flags).toEqual(['\\Seen', '\\Draft']);
    expect(drafts[0].raw.toString()).toContain('v2');
    const sent = await api.request('POST', '/api/send', { login: alice, body: { to: 'bob@example.test', subject: 'draft', text: 'v3', replaceUid: second.body.uid } });
    expect(sent.status).toBe(200);
    drafts = await folderMessages('alice@example.test', 'Drafts');
    expect(drafts).toHaveLength(0);
    const empty = await api.json<{ uid: number }>('POST', '/api/drafts', alice, { to: '', subject: '', text: '' });
    expect(empty.status).toBe(200);
  });
});
