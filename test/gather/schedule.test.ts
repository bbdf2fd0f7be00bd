// Gathering on its own: IMAP IDLE picks new mail up within seconds, polling within the interval,
// and network errors back off instead of hammering the provider.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestSetup } from '../helpers/hearth.ts';
import { deliver } from '../imap/imap-helpers.ts';
import { REMOTE_USER, addAccount, runAccount, control, eventually, localMessages, startLocal, startRemote } from './helpers.ts';
import type { Remote, Running } from './helpers.ts';

type View = { id: string; status: { idle?: string; lastRunAt?: number; nextRunAt?: number; consecutiveFailures?: number; lastError?: string; lastErrorCode?: string; stopped?: boolean } };

describe('scheduled gathering', () => {
  let remote: Remote;
  let local: { setup: TestSetup; hearth: Running };

  beforeAll(async () => {
    remote = await startRemote();
    local = await startLocal('[gather]\nfirst_backoff = "400ms"\nmax_backoff = "2s"\n');
  });
  afterAll(async () => {
    await local?.hearth.close();
    await remote?.hearth.close();
    await local?.setup.cleanup();
    await remote?.setup.cleanup();
  });

  const status = async (id: string): Promise<View['status']> => ((await control(local.hearth, 'gather.status', { id })) as View[])[0].status;

  it('IDLE: mail arriving remotely is collected within seconds, long before the interval', async () => {
    const id = await addAccount(local.hearth, remote, { idle: true, intervalMs: 3_600_000 });
    await eventually(async () => ((await status(id)).idle === 'watching' ? true : undefined));
    // A run now replaces the first scheduled one: the next is an hour away, so only IDLE can collect.
    expect(await runAccount(local.hearth, id)).toMatchObject({ ok: true, result: { collected: 0 } });
    expect((await status(id)).nextRunAt! - Date.now()).toBeGreaterThan(3_000_000);
    const sent = Date.now();
    await deliver(remote.hearth.smtpPort, REMOTE_USER, 'idle pickup');
    await eventually(async () => ((await localMessages(local.setup.dataDir)).some((m) => m.subject === 'idle pickup') ? true : undefined), 5_000);
    expect(Date.now() - sent).toBeLessThan(5_000);
    await control(local.hearth, 'gather.remove', { id });
  });

  it('polling: without IDLE, new mail is collected within the interval', async () => {
    const id = await addAccount(local.hearth, remote, { idle: false, intervalMs: 1_000 });
    await deliver(remote.hearth.smtpPort, REMOTE_USER, 'polled');
    await eventually(async () => ((await localMessages(local.setup.dataDir)).some((m) => m.subject === 'polled') ? true : undefined), 5_000);
    expect((await status(id)).idle).toBe('off');
    await control(local.hearth, 'gather.remove', { id });
  });

  it('network errors: retried with growing backoff, reported in words, not stopped', async () => {
    const id = await addAccount(local.hearth, remote, { port: 1, intervalMs: 1_000 });
    const s = await eventually(async () => {
      const st = await status(id);
      return (st.consecutiveFailures ?? 0) >= 3 ? st : undefined;
    }, 10_000);
    expect(s.lastErrorCode).toBe('GATHER_NETWORK');
    expect(s.lastError).toMatch(/cannot reach 127\.0\.0\.1:1/);
    expect(s.stopped).toBe(false);
    // Third failure: 400 ms * 2^2 = 1.6 s (±10 %), more than the 1 s interval.
    expect(s.nextRunAt! - s.lastRunAt!).toBeGreaterThan(1_400);
    await control(local.hearth, 'gather.remove', { id });
  });
});
