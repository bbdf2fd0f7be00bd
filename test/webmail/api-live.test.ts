// Live updates over Server-Sent Events (mail arriving over SMTP, changes made over the API),
// and the webmail on a real socket, plain and HTTPS.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request as httpsRequest } from 'node:https';
import nodemailer from 'nodemailer';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { MessageList, ServerEvent } from '../../src/webmail/api-types.ts';
import { startWebmail } from '../../src/webmail/server.ts';
import { client, makeHarness, message } from './api-harness.ts';
import type { Harness, Login } from './api-harness.ts';

let h: Harness;
let api: ReturnType<typeof client>;
let alice: Login;

/** Reads `event: change` frames from an SSE body, one at a time. */
function sseReader(body: ReadableStream<Uint8Array>) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  const frames: string[] = [];
  return {
    async next(): Promise<{ event?: string; data?: string; comment?: string }> {
      while (frames.length === 0) {
        const { value, done } = await reader.read();
        if (done) throw new Error('stream ended');
        buf += decoder.decode(value, { stream: true });
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          frames.push(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
      const frame = frames.shift()!;
      const out: { event?: string; data?: string; comment?: string } = {};
      for (const line of frame.split('\n')) {
        if (line.startsWith(':')) out.comment = line.slice(1).trim();
        else if (line.startsWith('event:')) out.event = line.slice(6).trim();
        else if (line.startsWith('data:')) out.data = (out.data ?? '') + line.slice(5).trim();
      }
      return out;
    },
    async nextChange(): Promise<ServerEvent> {
      for (;;) {
        const f = await this.next();
        if (f.event === 'change' && f.data) return JSON.parse(f.data) as ServerEvent;
      }
    },
    cancel: () => reader.cancel().catch(() => undefined),
  };
}

describe('webmail live updates', () => {
  beforeEach(async () => {
    h = await makeHarness({ smtp: true, deps: { heartbeatMs: 50 } });
    api = client(h.app);
    alice = await api.login('alice@example.test', 'alice-password');
  });
  afterEach(() => h.close());

  it('sends an added event when mail is delivered over SMTP, and flag and expunge events for changes', async () => {
    const res = await api.request('GET', '/api/events', { login: alice });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = sseReader(res.body!);
    expect((await events.next()).comment).toBe('hearth events');

    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: h.smtp!.port, secure: false, ignoreTLS: true });
    await transport.sendMail({ envelope: { from: 'carol@remote.example', to: ['alice@example.test'] }, raw: message({ subject: 'over smtp' }) });
    transport.close();
    const added = await events.nextChange();
    expect(added).toEqual({ kind: 'added', folder: 'INBOX', uids: [expect.any(Number)] });
    const uid = (added as { uids: number[] }).uids[0];
    const list = (await api.json<MessageList>('GET', '/api/folders/INBOX/messages', alice)).body;
    expect(list.messages.map((m) => [m.uid, m.subject])).toEqual([[uid, 'over smtp']]);

    // A change made here goes through the store, so every listener (IMAP sessions too) hears it.
    await api.request('POST', '/api/folders/INBOX/flags', { login: alice, body: { uids: [uid], add: ['\\Seen'] } });
    expect(await events.nextChange()).toEqual({ kind: 'flags', folder: 'INBOX', changes: [{ uid, flags: ['\\Seen'] }] });
    await api.request('POST', '/api/folders/INBOX/delete', { login: alice, body: { uids: [uid] } });
    const after = [await events.nextChange(), await events.nextChange()];
    expect(after).toContainEqual({ kind: 'expunged', folder: 'INBOX', uids: [uid] });
    expect(after).toContainEqual({ kind: 'added', folder: 'Trash', uids: [expect.any(Number)] });
    await api.request('POST', '/api/folders', { login: alice, body: { name: 'New' } });
    expect(await events.nextChange()).toEqual({ kind: 'folders' });

    // Heartbeats keep the stream open.
    let sawBeat = false;
    for (let i = 0; i < 5 && !sawBeat; i++) sawBeat = (await events.next()).comment === 'keep-alive';
    expect(sawBeat).toBe(true);
    await events.cancel();
  });

  it('changes made by another client of the store (an IMAP session) reach the stream', async () => {
    await h.deliver('alice@example.test', message({ subject: 'x' }));
    const res = await api.request('GET', '/api/events', { login: alice });
    const events = sseReader(res.body!);
    const mb = await h.mail.open({ user: 'alice', domain: 'example.test' });
    const uid = (await mb.sync('INBOX')).messages[0].uid;
    await mb.setFlags('INBOX', [uid], 'add', ['\\Flagged']);
    expect(await events.nextChange()).toEqual({ kind: 'flags', folder: 'INBOX', changes: [{ uid, flags: ['\\Flagged'] }] });
    await events.cancel();
    // After the stream is gone, nobody listens on behalf of it.
    await new Promise((r) => setTimeout(r, 20));
    expect(mb.listenerCount('change')).toBeLessThanOrEqual(1); // the full-text index's own listener
  });

  it('serves over a real socket with startWebmail, and over HTTPS', async () => {
    const running = await startWebmail({ ...h.deps, listen: { host: '127.0.0.1', port: 0 } });
    try {
      const base = `http://127.0.0.1:${running.port}`;
      const login = await fetch(`${base}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json', origin: base }, body: JSON.stringify({ address: 'alice@example.test', password: 'alice-password' }) });
      expect(login.status).toBe(200);
      const cookie = login.headers.get('set-cookie')!.split(';')[0];
      const { csrf } = (await login.json()) as { csrf: string };
      const folders = await fetch(`${base}/api/folders`, { headers: { cookie } });
      expect(folders.status).toBe(200);
      const refused = await fetch(`${base}/api/folders`, { method: 'POST', headers: { cookie, 'content-type': 'application/json' }, body: '{"name":"A"}' });
      expect(refused.status).toBe(403);
      const created = await fetch(`${base}/api/folders`, { method: 'POST', headers: { cookie, 'content-type': 'application/json', 'x-csrf-token': csrf }, body: '{"name":"A"}' });
      expect(created.status).toBe(200);
      // An event stream open at close() does not keep the server up.
      const es = await fetch(`${base}/api/events`, { headers: { cookie } });
      expect(es.status).toBe(200);
      const shell = await fetch(`${base}/`);
      expect(shell.headers.get('content-security-policy')).toContain("default-src 'self'");
      void es.body?.cancel().catch(() => undefined);
    } finally {
      await running.close();
    }

    const tlsDir = join(h.setup.configDir, 'tls');
    const tls = { key: await readFile(join(tlsDir, 'key.pem')), cert: await readFile(join(tlsDir, 'cert.pem')) };
    const secure = await startWebmail({ ...h.deps, secureCookies: true, listen: { host: '127.0.0.1', port: 0 }, tls });
    try {
      const res = await new Promise<{ status: number; cookie: string }>((resolve, reject) => {
        const req = httpsRequest({ host: '127.0.0.1', port: secure.port, path: '/api/login', method: 'POST', rejectUnauthorized: false, headers: { 'content-type': 'application/json' } }, (r) => {
          r.resume();
          r.on('end', () => resolve({ status: r.statusCode ?? 0, cookie: String(r.headers['set-cookie']?.[0] ?? '') }));
        });
        req.on('error', reject);
        req.end(JSON.stringify({ address: 'alice@example.test', password: 'alice-password' }));
      });
      expect(res.status).toBe(200);
      expect(res.cookie).toMatch(/^__Host-hearth=[^;]+;.*Secure/);
    } finally {
      await secure.close();
    }
  });
});
