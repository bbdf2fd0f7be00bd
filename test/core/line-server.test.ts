// LineServer shutdown must not wait forever on a connection the peer abandoned.
import { describe, expect, it } from 'vitest';
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
