// Exactly once under crashes, and bounded memory on a large first pull:
//  - a gathering hearth killed with SIGKILL mid-pull, restarted, collects every message exactly once;
//  - an interrupted batch (intent recorded, some messages delivered) is recovered without duplicates;
//  - `hearth gather run` (no server running) pulls 5,000 messages with a progress line and a peak
//    RSS far below the size of the mail.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { controlRequest } from '../../src/core/control.ts';
import { GatherLedger, LEDGER_FILE } from '../../src/gather/ledger.ts';
import { makeSetup, spawnHearth, startTestHearth, ALL_LISTENERS } from '../helpers/hearth.ts';
import { LOCAL_USER, REMOTE_PASS, REMOTE_USER, duplicates, eventually, localMessages, message, runCli, seedRemote, startRemote } from './helpers.ts';
import type { Outcome, Remote } from './helpers.ts';

const RSS_REPORTER = new URL('./report-rss.ts', import.meta.url).pathname;

describe('gathering durability', () => {
  let remote: Remote;
  beforeAll(async () => {
    remote = await startRemote();
  });
  afterAll(async () => {
    await remote?.hearth.close();
    await remote?.setup.cleanup();
  });

  it('kill -9 mid-pull, twice, then a restart: every message collected exactly once', async () => {
    const N = 1200;
    const sent = Array.from({ length: N }, (_, i) => message(`crash ${i}`, { bodyBytes: 3000 }));
    await seedRemote(remote, sent);
    // DNS-based sender checks are not what these tests measure (test/gather/auth.test.ts is).
    const setup = await makeSetup({ fsync: true, toml: `[gather]\nbatch = 40\nparallel = 4\nauth_checks = false\n` });
    const socket = join(setup.dataDir, 'hearth.sock');
    try {
      const account = { name: 'crashy', owner: LOCAL_USER, protocol: 'imap', host: '127.0.0.1', port: remote.imap, tls: 'none', user: REMOTE_USER, mode: 'move', intervalMs: 3_600_000, idle: false };
      let added = false;
      for (const killAt of [250, 700]) {
        const child = await spawnHearth(setup.configDir);
        try {
          if (!added) {
            await controlRequest(socket, 'gather.add', { account, password: REMOTE_PASS });
            added = true;
          }
          void controlRequest(socket, 'gather.run', { id: 'crashy' }, 120_000).catch(() => undefined);
          await eventually(async () => ((await localMessages(setup.dataDir)).length >= killAt ? true : undefined), 60_000);
        } finally {
          child.child.kill('SIGKILL');
          await child.exited;
        }
      }
      const partial = await localMessages(setup.dataDir);
      expect(partial.length).toBeGreaterThanOrEqual(700);
      expect(partial.length).toBeLessThan(N);
      expect(duplicates(partial)).toEqual([]);

      const hearth = await startTestHearth(setup);
      try {
        const [o] = (await controlRequest(hearth.controlPath, 'gather.run', { id: 'crashy' }, 120_000)) as Outcome[];
        expect(o.ok).toBe(true);
        // Resumed: only what was not collected before the kills.
        expect(o.result!.collected).toBeLessThanOrEqual(N - partial.length);
      } finally {
        await hearth.close();
      }
      const all = await localMessages(setup.dataDir);
      expect(duplicates(all)).toEqual([]);
      const ids = all.map((m) => m.messageId).sort();
      expect(new Set(ids).size).toBe(N);
      expect(ids).toEqual(sent.map((m) => /^Message-ID: (.*)$/m.exec(m.toString())![1].trim()).sort());
      // Move mode: nothing deleted remotely that is not here; in the end the remote is empty.
      const { ImapFlow } = await import('imapflow');
      const c = new ImapFlow({ host: '127.0.0.1', port: remote.imap, secure: false, doSTARTTLS: false, auth: { user: REMOTE_USER, pass: REMOTE_PASS }, logger: false });
      await c.connect();
      expect((await c.mailboxOpen('INBOX')).exists).toBe(0);
      await c.logout();
    } finally {
      await setup.cleanup();
    }
  }, 180_000);

  it('an interrupted batch is recovered from the tags in the mailbox, not fetched again', async () => {
    await seedRemote(remote, [message('r1'), message('r2'), message('r3')]);
    const setup = await makeSetup({ fsync: false, toml: `${ALL_LISTENERS}\n[gather]\nenabled = false\n` });
    try {
      let hearth = await startTestHearth(setup);
      await controlRequest(hearth.controlPath, 'gather.add', { account: { name: 'rec', owner: LOCAL_USER, protocol: 'imap', host: '127.0.0.1', port: remote.imap, tls: 'none', user: REMOTE_USER, mode: 'copy' }, password: REMOTE_PASS });
      const [first] = (await controlRequest(hearth.controlPath, 'gather.run', { id: 'rec' })) as Outcome[];
      expect(first.result!.collected).toBeGreaterThanOrEqual(3);
      await hearth.close();
      // Forge the state a crash after delivery but before the ledger commit leaves: the rows for
      // the last two messages gone, an intent naming them still open.
      const ledger = new GatherLedger(join(setup.dataDir, 'gather', LEDGER_FILE), { durable: false });
      const folder = ledger.folder('rec', 'INBOX')!;
      const rids = ledger.rids('rec', 'INBOX', folder.uidvalidity).sort((a, b) => Number(a) - Number(b)).slice(-2);
      ledger.forget('rec', 'INBOX', folder.uidvalidity, rids);
      ledger.setFolder('rec', 'INBOX', { ...folder, synced_uid: 0 });
      ledger.beginIntent('rec', 'INBOX', folder.uidvalidity, 'INBOX', rids, Date.now() - 60_000);
      ledger.close();
      const before = (await localMessages(setup.dataDir)).length;
      hearth = await startTestHearth(setup);
      const [again] = (await controlRequest(hearth.controlPath, 'gather.run', { id: 'rec' })) as Outcome[];
      await hearth.close();
      expect(again).toMatchObject({ ok: true, result: { collected: 0 } });
      const after = await localMessages(setup.dataDir);
      expect(after.length).toBe(before);
      expect(duplicates(after)).toEqual([]);
    } finally {
      await setup.cleanup();
    }
  });

  it('`hearth gather run` without a server: 5,000 messages, a progress line, bounded memory', async () => {
    const N = 5000;
    const SIZE = 20 * 1024;
    const [user, domain] = REMOTE_USER.split('@');
    // A fresh remote folder of its own, filled straight into the Maildir.
    const folder = 'Big';
    for (let i = 0; i < N; i += 500) {
      await Promise.all(Array.from({ length: Math.min(500, N - i) }, (_, j) => remote.hearth.store.deliver([{ user, domain, folder }], message(`big ${i + j}`, { bodyBytes: SIZE }))));
    }
    const setup = await makeSetup({ fsync: false, toml: `[gather]\nbatch = 200\nparallel = 8\nauth_checks = false\n` });
    try {
      const add = await runCli(
        ['gather', 'add', '--config', setup.configDir, '--to', LOCAL_USER, '--host', '127.0.0.1', '--port', String(remote.imap), '--tls', 'none', '--user', REMOTE_USER, '--folder', folder, '--name', 'big', '--password-stdin'],
        { input: REMOTE_PASS },
      );
      expect(add.stderr).toBe('');
      expect(add.stdout).toContain('added big');
      // The same command on an empty folder gives the baseline of the process.
      const { ImapFlow } = await import('imapflow');
      const c = new ImapFlow({ host: '127.0.0.1', port: remote.imap, secure: false, doSTARTTLS: false, auth: { user: REMOTE_USER, pass: REMOTE_PASS }, logger: false });
      await c.connect();
      await c.mailboxCreate('Empty');
      await c.logout();
      await runCli(
        ['gather', 'add', '--config', setup.configDir, '--to', LOCAL_USER, '--host', '127.0.0.1', '--port', String(remote.imap), '--tls', 'none', '--user', REMOTE_USER, '--folder', 'Empty', '--name', 'empty', '--password-stdin'],
        { input: REMOTE_PASS },
      );
      const idle = await runCli(['gather', 'run', 'empty', '--config', setup.configDir], { preload: RSS_REPORTER });
      expect(idle.stdout).toContain('empty: 0 new messages');
      const baseMb = Number(/MAXRSS_KB (\d+)/.exec(idle.stderr)![1]) / 1024;

      const run = await runCli(['gather', 'run', 'big', '--config', setup.configDir], { preload: RSS_REPORTER });
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toContain(`big: ${N} new messages`);
      expect(run.stderr).toMatch(/big Big: \d+\/5000 \(\d+%\)/);
      expect(run.stderr).toContain('big Big: 5000/5000 (100%)');
      const peakMb = Number(/MAXRSS_KB (\d+)/.exec(run.stderr)![1]) / 1024;
      const mailMb = (N * SIZE) / 1024 / 1024;
      // Holding the mail would add ~100 MB to the baseline; streaming adds a few batches' worth.
      expect(mailMb).toBeGreaterThan(95);
      expect(peakMb - baseMb).toBeLessThan(70);
      process.stdout.write(`gather 5000 x 20 KB: peak RSS ${peakMb.toFixed(0)} MB (baseline ${baseMb.toFixed(0)} MB) for ${mailMb.toFixed(0)} MB of mail\n`);
      const got = await localMessages(setup.dataDir);
      expect(got.length).toBe(N);
      expect(duplicates(got)).toEqual([]);
      const status = await runCli(['gather', 'status', 'big', '--config', setup.configDir]);
      expect(status.stdout).toContain('5000 messages collected in all');
    } finally {
      await setup.cleanup();
    }
  }, 240_000);
});
