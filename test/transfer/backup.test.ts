// `hearth backup` while the server runs, `--verify`, and `hearth restore` into empty folders:
// the restored mailboxes hold the same messages with the same flags; a damaged archive and a
// non-empty target are refused.
import { appendFile, mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALL_LISTENERS, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { importMbox } from '../../src/transfer/import.ts';
import { FIXTURES, bob, folderContents, openStore, runCli } from './helpers.ts';

describe('backup and restore', () => {
  let setup: TestSetup;
  let work: string;
  let archive: string;
  let backupRun: { code: number; stdout: string; stderr: string };

  beforeAll(async () => {
    setup = await makeSetup({ toml: ALL_LISTENERS, fsync: false });
    work = await mkdtemp(join(tmpdir(), 'hearth-backup-'));
    archive = join(work, 'backup-1');
    const mail = openStore(setup);
    await importMbox({ mail, box: bob, file: join(FIXTURES, 'tricky.mbox'), folder: 'Old' });
    await mail.close();
    await mkdir(join(setup.configDir, 'dkim', 'example.test'), { recursive: true });
    await writeFile(join(setup.configDir, 'dkim', 'example.test', 'hearth.pem'), 'not really a key\n', { mode: 0o600 });
    // Taken while the server runs: it holds the indexes open.
    const hearth = await startTestHearth(setup);
    try {
      backupRun = await runCli(['backup', archive, '-c', setup.configDir]);
    } finally {
      await hearth.close();
    }
  }, 60_000);
  afterAll(async () => {
    await setup?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it('writes the archive while the server runs, says where, and verifies it', async () => {
    expect(backupRun.code, backupRun.stderr).toBe(0);
    expect(backupRun.stdout).toMatch(/2 users, \d+ mailboxes, 4 messages, \d+ queue files, 1 DKIM keys/);
    expect(backupRun.stdout).toContain(join(archive, 'manifest.json'));
    expect(backupRun.stdout).toMatch(/verified, \d+ files match their checksums/);
    const manifest = JSON.parse(await readFile(join(archive, 'manifest.json'), 'utf8')) as { files: Array<{ path: string }> };
    expect(manifest.files.some((f) => f.path.endsWith('hearth-index.sqlite'))).toBe(true);
    expect(manifest.files.some((f) => f.path.includes('fulltext') || f.path.endsWith('hearth.sock'))).toBe(false);
    const again = await runCli(['backup', '--verify', archive]);
    expect(again.code, again.stderr).toBe(0);
  });

  it('restores into empty folders with the same messages and flags', async () => {
    const target = join(work, 'restored');
    const r = await runCli(['restore', archive, '-c', join(target, 'config')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/restored \d+ files \(4 messages, 2 users\)/);
    expect(await readFile(join(target, 'config', 'dkim', 'example.test', 'hearth.pem'), 'utf8')).toBe('not really a key\n');
    const restored = { ...setup, configDir: join(target, 'config'), dataDir: join(target, 'maildir') };
    const a = openStore(setup);
    const b = openStore(restored);
    try {
      const original = await folderContents(a, bob, 'Old');
      const copy = await folderContents(b, bob, 'Old');
      expect(copy.map((m) => m.content.toString('latin1'))).toEqual(original.map((m) => m.content.toString('latin1')));
      expect(copy.map((m) => m.flags)).toEqual(original.map((m) => m.flags));
      expect(copy.map((m) => m.internalDate)).toEqual(original.map((m) => m.internalDate));
    } finally {
      await a.close();
      await b.close();
    }
    // Again into the same, now non-empty, folders: refused without --force.
    const refused = await runCli(['restore', archive, '-c', join(target, 'config')]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/not empty.*--force/);
    const forced = await runCli(['restore', archive, '--force', '-c', join(target, 'config')]);
    expect(forced.code, forced.stderr).toBe(0);
  });

  it('finds a damaged archive and refuses to restore it', async () => {
    const manifest = JSON.parse(await readFile(join(archive, 'manifest.json'), 'utf8')) as { files: Array<{ path: string }> };
    const victim = manifest.files.find((f) => /\/cur\//.test(f.path))!;
    await appendFile(join(archive, ...victim.path.split('/')), 'tampered');
    const v = await runCli(['backup', '--verify', archive]);
    expect(v.code).toBe(1);
    expect(v.stderr).toContain(`${victim.path}: `);
    const r = await runCli(['restore', archive, '-c', join(work, 'other', 'config')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/does not verify, nothing restored/);
  });
});
