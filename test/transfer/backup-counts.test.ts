// The counts `hearth backup` and `hearth restore` print: every mailbox (domain/user pair) is
// counted, including the same user name in two domains, with singular and plural right.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { makeSetup } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { MaildirStore } from '../../src/store/maildir.ts';
import { importMbox } from '../../src/transfer/import.ts';
import { FIXTURES, craftedArchive, openStore, runCli } from './helpers.ts';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/**
 * `opened`: mailboxes a MailStore has opened (they have an index); `delivered`: mail only
 * delivered, never read (no index yet); `empty`: created with no message in them.
 */
async function setupWith(opened: Array<{ user: string; domain: string }>, delivered: Array<{ user: string; domain: string }> = [], empty: Array<{ user: string; domain: string }> = []): Promise<{ setup: TestSetup; work: string }> {
  const setup = await makeSetup({ fsync: false });
  cleanups.push(() => setup.cleanup());
  const work = await mkdtemp(join(tmpdir(), 'hearth-backup-counts-'));
  cleanups.push(() => rm(work, { recursive: true, force: true }));
  const mail = openStore(setup);
  for (const box of opened) await importMbox({ mail, box, file: join(FIXTURES, 'tricky.mbox'), folder: 'INBOX' });
  await mail.close();
  const maildir = new MaildirStore({ root: setup.dataDir, hostname: 'mx.test.example', fsync: false });
  for (const box of delivered) await maildir.deliver([box], 'Subject: hi\r\n\r\nhello\r\n');
  for (const box of empty) await maildir.ensureMaildir(box);
  return { setup, work };
}

describe('backup and restore counts', () => {
  it('counts the same user name in two domains as two mailboxes', async () => {
    const { setup, work } = await setupWith([{ user: 'me', domain: 'localhost' }], [{ user: 'me', domain: 'example.org' }]);
    const archive = join(work, 'two.tar.gz');
    const made = await runCli(['backup', archive, '-c', setup.configDir]);
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toMatch(/ 2 mailboxes, /);

    const restored = await runCli(['restore', archive, '-c', join(work, 'restored', 'config')]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stdout).toMatch(/files: 2 mailboxes, /);
  }, 60_000);

  it('counts a mailbox with no index and one with no message', async () => {
    const { setup, work } = await setupWith([], [{ user: 'me', domain: 'localhost' }, { user: 'me', domain: 'example.org' }], [{ user: 'new', domain: 'example.org' }]);
    const archive = join(work, 'three.tar');
    const made = await runCli(['backup', archive, '-c', setup.configDir]);
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toMatch(/ 3 mailboxes, 2 messages, /);
    const restored = await runCli(['restore', archive, '-c', join(work, 'restored', 'config')]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stdout).toMatch(/files: 3 mailboxes, /);
  }, 60_000);

  it('says "1 mailbox" for one', async () => {
    const { setup, work } = await setupWith([{ user: 'me', domain: 'localhost' }]);
    const archive = join(work, 'one.tar.gz');
    const made = await runCli(['backup', archive, '-c', setup.configDir]);
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toMatch(/ 1 mailbox, /);
    const restored = await runCli(['restore', archive, '-c', join(work, 'restored', 'config')]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stdout).toMatch(/files: 1 mailbox, /);
  }, 60_000);

  it('accepts an older archive whose manifest counted mailboxes by index file, and prints the right count', async () => {
    const work = await mkdtemp(join(tmpdir(), 'hearth-backup-counts-'));
    cleanups.push(() => rm(work, { recursive: true, force: true }));
    const archive = join(work, 'old.tar');
    const dirs = ['localhost', 'example.org'].flatMap((d) => ['', '/cur', '/new', '/tmp'].map((sub) => `data/${d}/me${sub}`));
    // Manifest counts as the old code made them: no index file, so 0 mailboxes.
    await craftedArchive(archive, [{ name: 'config/hearth.toml', body: 'hostname = "mx.test.example"\ndomains = ["localhost", "example.org"]\n' }, ...dirs.map((name) => ({ name, type: 'directory' as const }))], { dirs: dirs.map((path) => ({ path, mode: 0o700 })) });
    const v = await runCli(['backup', '--verify', archive]);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    const restored = await runCli(['restore', archive, '-c', join(work, 'restored', 'config')]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stdout).toMatch(/files: 2 mailboxes, /);
  }, 60_000);
});
