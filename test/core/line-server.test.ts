// LineServer shutdown must not wait forever on a connection the peer abandoned.
import { once } from 'node:events';
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import tls from 'node:tls';
import { makeSetup, startTestHearth } from '../helpers/hearth.ts';

describe('LineServer close', () => {
  it('finishes even when a TLS client rejected our certificate and went away after the handshake', async () => {
    const setup = await makeSetup({ toml: '[listeners.pop3s]\nlisten = "127.0.0.1:0"\ntls = "implicit"\n' });
    const hearth = await startTestHearth(setup);
    try {
      // A strict client: the self-signed certificate fails its check after the handshake.
      const failed = await new Promise<string>((resolve) => {
        const s = tls.connect({ port: hearth.port('pop3s'), host: '127.0.0.1' });
        s.once('error', (err) => resolve((err as NodeJS.ErrnoException).code ?? err.message));
        s.once('secureConnect', () => resolve('connected'));
      });
      expect(failed).not.toBe('connected');
      const started = Date.now();
      await hearth.close();
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      await hearth.close();
      await setup.cleanup();
    }
  }, 30_000);
});

/** Reads CRLF lines from a socket, one at a time. */
function lineReader(socket: net.Socket): () => Promise<string> {
  let buffered = '';
  const waiting: Array<(line: string) => void> = [];
  const lines: string[] = [];
  socket.on('data', (d: Buffer) => {
    buffered += d.toString('latin1');
    for (let i = buffered.indexOf('\r\n'); i >= 0; i = buffered.indexOf('\r\n')) {
      lines.push(buffered.slice(0, i));
      buffered = buffered.slice(i + 2);
    }
    while (lines.length && waiting.length) waiting.shift()!(lines.shift()!);
  });
  return () => (lines.length ? Promise.resolve(lines.shift()!) : new Promise((resolve) => waiting.push(resolve)));
}

/** Send an IMAP command and return its tagged line (untagged ones skipped). */
async function tagged(socket: net.Socket, next: () => Promise<string>, tag: string, command: string): Promise<string> {
  socket.write(`${tag} ${command}\r\n`);
  for (;;) {
    const line = await next();
    if (line.startsWith(`${tag} `)) return line;
  }
}

describe('LineServer TLS contexts (issue 4: memory per connection)', () => {
  afterEach(() => vi.restoreAllMocks());

  it('makes no SecureContext per connection, for STARTTLS or implicit TLS, with or without SNI', async () => {
    const setup = await makeSetup({ toml: '[listeners.imap]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n[listeners.imaps]\nlisten = "127.0.0.1:0"\ntls = "implicit"\n' });
    const hearth = await startTestHearth(setup);
    // The clients' own context is made up front, so every call counted is the server's.
    const clientContext = tls.createSecureContext();
    const created = vi.spyOn(tls, 'createSecureContext');
    const open: net.Socket[] = [];
    try {
      for (const servername of [undefined, 'mx.test.example', 'other.example']) {
        // STARTTLS on 143-style IMAP: the listener's context (or the SNI one) is handed over.
        const plain = net.connect(hearth.port('imap'), '127.0.0.1');
        open.push(plain);
        const plainNext = lineReader(plain);
        expect(await plainNext()).toMatch(/^\* OK .*STARTTLS/);
        expect(await tagged(plain, plainNext, 'a', 'STARTTLS')).toMatch(/^a OK/);
        plain.removeAllListeners('data');
        const upgraded = tls.connect({ socket: plain, servername, secureContext: clientContext, rejectUnauthorized: false });
        open.push(upgraded);
        await once(upgraded, 'secureConnect');
        expect(await tagged(upgraded, lineReader(upgraded), 'b', 'CAPABILITY')).toBe('b OK CAPABILITY completed');

        // Implicit TLS on 993-style IMAPS.
        const implicit = tls.connect({ port: hearth.port('imaps'), host: '127.0.0.1', servername, secureContext: clientContext, rejectUnauthorized: false });
        open.push(implicit);
        const next = lineReader(implicit);
        expect(await next()).toMatch(/^\* OK /);
        expect(await tagged(implicit, next, 'c', 'CAPABILITY')).toBe('c OK CAPABILITY completed');
      }
      expect(created).not.toHaveBeenCalled();
    } finally {
      for (const s of open) s.destroy();
      await hearth.close();
      await setup.cleanup();
    }
  }, 30_000);
});
