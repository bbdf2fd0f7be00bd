// The POP3 client state machine against a real POP3 server (a hearth on loopback) and against
// scripted hostile servers; and gathering over POP3 in copy and move modes.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import tls from 'node:tls';
import net from 'node:net';
import { join } from 'node:path';
import { silentLogger } from '../../src/core/log.ts';
import { StateMachine } from '../../src/core/state-machine.ts';
import { POP3_CODE_PATTERN, POP3_STATES, Pop3Client, Pop3Error } from '../../src/gather/pop3-client.ts';
import { REMOTE_PASS, REMOTE_USER, addAccount, duplicates, localMessages, mine, message, runAccount, seedRemote, startRemote, useGatherPair } from './helpers.ts';
import type { Remote } from './helpers.ts';

const log = silentLogger();

/** A scripted POP3 server: `script(line)` answers each client line. */
async function fakeServer(greeting: string, script: (line: string, sock: net.Socket) => string | undefined): Promise<{ port: number; close(): void }> {
  const server = net.createServer((sock) => {
    sock.write(greeting);
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      let nl: number;
      while ((nl = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        const reply = script(line, sock);
        if (reply !== undefined) sock.write(reply);
      }
    });
    sock.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

describe('POP3 client', () => {
  let remote: Remote;
  beforeAll(async () => {
    remote = await startRemote();
    await seedRemote(remote, [message('first', { body: 'line one\r\n.dotted\r\n..double\r\n' }), message('second')]);
  });
  afterAll(async () => {
    await remote?.hearth.close();
    await remote?.setup.cleanup();
  });

  it('has a handler name for every state and code it uses (checked like the other machines)', () => {
    expect(StateMachine.checkHandlers(Pop3Client.prototype, POP3_STATES, POP3_CODE_PATTERN)).toEqual([]);
  });

  for (const mode of ['none', 'starttls', 'implicit'] as const) {
    it(`logs in (${mode}), lists UIDLs, retrieves byte-exact dot-unstuffed messages`, async () => {
      const port = mode === 'implicit' ? remote.pop3s : remote.pop3;
      const c = new Pop3Client({ host: '127.0.0.1', port, tls: mode, rejectUnauthorized: false, log });
      await c.connect();
      expect(c.secure).toBe(mode !== 'none');
      expect(c.capabilities.has('UIDL')).toBe(true);
      await c.login(REMOTE_USER, REMOTE_PASS);
      expect((await c.stat()).count).toBe(2);
      const list = await c.uidl();
      expect(list.map((e) => e.n)).toEqual([1, 2]);
      const raw = await c.retr(1);
      expect(raw.toString()).toContain('\r\nline one\r\n.dotted\r\n..double\r\n');
      await c.quit();
      expect(c.state).toBe('CLOSED');
    });
  }

  it('refuses an unverifiable certificate unless told to accept it', async () => {
    // Its own TLS server: hearth's line server keeps a session whose client aborted after the
    // TLS handshake until the idle timeout, which would hold up the remote's close().
    const [key, cert] = await Promise.all([readFile(join(remote.setup.configDir, 'tls/key.pem')), readFile(join(remote.setup.configDir, 'tls/cert.pem'))]);
    const server = tls.createServer({ key, cert }, (s) => {
      s.on('error', () => undefined);
      s.end('+OK hi\r\n');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    const c = new Pop3Client({ host: '127.0.0.1', port, tls: 'implicit', log });
    await expect(c.connect()).rejects.toMatchObject({ code: 'POP3_TLS_FAILED' });
    server.close();
  });

  it('a wrong password is POP3_AUTH_FAILED, with the server text and without the password', async () => {
    const c = new Pop3Client({ host: '127.0.0.1', port: remote.pop3, tls: 'none', log });
    await c.connect();
    const err = (await c.login(REMOTE_USER, 'not-the-password').catch((e: unknown) => e)) as Pop3Error;
    expect(err).toBeInstanceOf(Pop3Error);
    expect(err.code).toBe('POP3_AUTH_FAILED');
    expect(err.message).not.toContain('not-the-password');
    expect(c.transcript.join('\n')).toContain('PASS [redacted]');
    expect(c.transcript.join('\n')).not.toContain('not-the-password');
  });

  it('DELE is committed only by QUIT (a dropped connection rolls it back)', async () => {
    const c = new Pop3Client({ host: '127.0.0.1', port: remote.pop3, tls: 'none', log });
    await c.connect();
    await c.login(REMOTE_USER, REMOTE_PASS);
    await c.dele(2);
    c.close(); // no QUIT
    const c2 = new Pop3Client({ host: '127.0.0.1', port: remote.pop3, tls: 'none', log });
    await c2.connect();
    await c2.login(REMOTE_USER, REMOTE_PASS);
    expect((await c2.uidl()).length).toBe(2);
    await c2.quit();
  });

  it('answers garbage, a refused greeting, a missing UIDL and a silent server with typed errors, never a hang', async () => {
    const garbage = await fakeServer('+OK hi\r\n', (line) => (line === 'CAPA' ? 'what is this\r\n' : undefined));
    await expect(new Pop3Client({ host: '127.0.0.1', port: garbage.port, tls: 'none', log }).connect()).rejects.toMatchObject({ code: 'POP3_PROTOCOL' });
    garbage.close();

    const refusing = await fakeServer('-ERR go away\r\n', () => undefined);
    await expect(new Pop3Client({ host: '127.0.0.1', port: refusing.port, tls: 'none', log }).connect()).rejects.toMatchObject({ code: 'POP3_REFUSED' });
    refusing.close();

    const noUidl = await fakeServer('+OK hi\r\n', (line) => {
      if (line === 'CAPA') return '-ERR no CAPA\r\n';
      if (line.startsWith('USER') || line.startsWith('PASS')) return '+OK\r\n';
      if (line === 'UIDL') return '-ERR unknown command\r\n';
      return '+OK\r\n';
    });
    const c = new Pop3Client({ host: '127.0.0.1', port: noUidl.port, tls: 'none', log });
    await c.connect();
    await c.login('u', 'p');
    await expect(c.uidl()).rejects.toMatchObject({ code: 'POP3_NO_UIDL' });
    await c.quit();
    noUidl.close();

    const silent = await fakeServer('+OK hi\r\n', () => undefined);
    const s = new Pop3Client({ host: '127.0.0.1', port: silent.port, tls: 'none', log, timeoutMs: 100 });
    await expect(s.connect()).rejects.toMatchObject({ code: 'POP3_TIMEOUT' });
    silent.close();

    const dropper = await fakeServer('+OK hi\r\n', (_line, sock) => void sock.destroy());
    await expect(new Pop3Client({ host: '127.0.0.1', port: dropper.port, tls: 'none', log }).connect()).rejects.toMatchObject({ code: 'POP3_CONNECTION_LOST' });
    dropper.close();

    await expect(new Pop3Client({ host: '127.0.0.1', port: 1, tls: 'none', log }).connect()).rejects.toMatchObject({ code: 'POP3_CONNECT_FAILED' });
  });
});

describe('gather over POP3', () => {
  const pair = useGatherPair({ beforeAll, afterAll, afterEach });

  it('copy mode: collects by UIDL once, leaves mail on the server', async () => {
    await seedRemote(pair.remote, [message('p1'), message('p2')]);
    const id = await addAccount(pair.local.hearth, pair.remote, { protocol: 'pop3' });
    expect(await runAccount(pair.local.hearth, id)).toMatchObject({ ok: true, result: { collected: 2, deleted: 0 } });
    expect(await runAccount(pair.local.hearth, id)).toMatchObject({ ok: true, result: { collected: 0 } });
    await seedRemote(pair.remote, [message('p3')]);
    expect(await runAccount(pair.local.hearth, id)).toMatchObject({ ok: true, result: { collected: 1 } });
    const got = mine(await localMessages(pair.local.setup.dataDir), id);
    expect(got.map((m) => m.subject).sort()).toEqual(['p1', 'p2', 'p3']);
    expect(duplicates(got)).toEqual([]);
    expect(got[0].content.toString()).toMatch(/^X-Hearth-Gathered: \S+ pop3:UIDL=\S+\r\nReceived: from 127\.0\.0\.1 by mx\.test\.example with POP3/);
  });

  it('move mode over STLS: deletes after the pair.local copy is recorded, commits with QUIT', async () => {
    await seedRemote(pair.remote, [message('q1'), message('q2')]);
    const id = await addAccount(pair.local.hearth, pair.remote, { protocol: 'pop3', mode: 'move', tls: 'starttls', insecureTls: true });
    expect(await runAccount(pair.local.hearth, id)).toMatchObject({ ok: true, result: { collected: 2, deleted: 2 } });
    const c = new Pop3Client({ host: '127.0.0.1', port: pair.remote.pop3, tls: 'none', log });
    await c.connect();
    await c.login(REMOTE_USER, REMOTE_PASS);
    expect(await c.uidl()).toEqual([]);
    await c.quit();
    expect((mine(await localMessages(pair.local.setup.dataDir), id)).map((m) => m.subject).sort()).toEqual(['q1', 'q2']);
  });

  it('a refused password stops and reports', async () => {
    const id = await addAccount(pair.local.hearth, pair.remote, { protocol: 'pop3' }, 'bad-password');
    const r = await runAccount(pair.local.hearth, id);
    expect(r).toMatchObject({ ok: false, code: 'GATHER_AUTH_FAILED' });
    expect(r.error).toContain(`hearth gather passwd ${id}`);
  });

  it('refuses mirror mode and clear text to a non-loopback host when the account is added', async () => {
    await expect(addAccount(pair.local.hearth, pair.remote, { protocol: 'pop3', mode: 'mirror' })).rejects.toThrow(/mirror mode needs IMAP/);
    await expect(addAccount(pair.local.hearth, pair.remote, { host: 'mail.example.net', tls: 'none' })).rejects.toThrow(/only allowed for a server on this machine/);
    await expect(addAccount(pair.local.hearth, pair.remote, { owner: 'nobody@example.test' })).rejects.toThrow(/is not a user here/);
  });
});
