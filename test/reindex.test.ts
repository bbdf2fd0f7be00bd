// `hearth reindex`: rebuilds the caches from the Maildir and keeps UIDs, so clients keep theirs.
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { readdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import { deliver, startImapHearth } from './imap/imap-helpers.ts';
import { CLI, startTestHearth } from './helpers/hearth.ts';

function hearthCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, [CLI, ...args], { timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr })),
  );
}

async function uidsAndFlags(port: number): Promise<Array<{ uid: number; flags: string[]; subject: string }>> {
  const c = new ImapFlow({ host: '127.0.0.1', port, secure: false, tls: { rejectUnauthorized: false }, auth: { user: 'alice@example.test', pass: 'alice-password' }, logger: false });
  await c.connect();
  try {
    await c.mailboxOpen('INBOX');
    const out = [];
    for await (const m of c.fetch('1:*', { uid: true, flags: true, envelope: true })) out.push({ uid: m.uid, flags: [...(m.flags ?? [])].sort(), subject: m.envelope?.subject ?? '' });
    return out;
  } finally {
    await c.logout();
  }
}

describe('hearth reindex', () => {
  it('refuses while the server runs; afterwards rebuilds, keeps UIDs and picks up a flag changed behind its back', async () => {
    let { setup, hearth } = await startImapHearth();
    try {
      for (const s of ['one', 'two', 'three']) await deliver(hearth.smtpPort, 'alice@example.test', s);
      const before = await uidsAndFlags(hearth.port('imap'));
      expect(before.map((m) => m.subject)).toEqual(['one', 'two', 'three']);
      const busy = await hearthCli(['reindex', '--config', setup.configDir]);
      expect(busy.code).toBe(1);
      expect(busy.stderr).toContain('stop it first');
      await hearth.close();

      // mutt marks "two" read while hearth is down: the file moves to cur/ with :2,S.
      const box = join(setup.dataDir, 'example.test/alice');
      for (const name of await readdir(join(box, 'new'))) {
        if ((await readFile(join(box, 'new', name), 'utf8')).includes('Subject: two')) await rename(join(box, 'new', name), join(box, 'cur', `${name}:2,S`));
      }
      const run = await hearthCli(['reindex', 'alice@example.test', '--config', setup.configDir]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toMatch(/alice@example\.test: 3 messages in \d+ folders reindexed/);

      hearth = await startTestHearth(setup);
      const after = await uidsAndFlags(hearth.port('imap'));
      expect(after.map((m) => m.uid)).toEqual(before.map((m) => m.uid));
      expect(after.find((m) => m.subject === 'two')?.flags).toContain('\\Seen');
    } finally {
      await hearth.close();
      await setup.cleanup();
    }
  }, 60_000);
});
