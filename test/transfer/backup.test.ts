// `hearth backup` writes one tar(.gz) archive while the server runs and mail arrives; `--verify`
// streams it against its manifest; `hearth restore` brings it back into a fresh place, where a
// started hearth serves the same messages under the same UIDs over IMAP. A flipped byte fails
// verify and restore; a hostile archive (`..`, absolute paths, links) is refused with nothing
// written; a non-empty target needs --force; old directory backups still restore.
import { createHash } from 'node:crypto';
import { lstat, mkdtemp, readFile, rm, writeFile, mkdir, readdir, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import { pack as tarPack } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALL_LISTENERS, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { importMbox } from '../../src/transfer/import.ts';
import { unsafeEntry } from '../../src/transfer/backup.ts';
import { FIXTURES, bob, folderContents, openStore, runCli } from './helpers.ts';

type Listed = { uid: number; messageId: string; flags: string[] };

async function imapClient(port: number): Promise<ImapFlow> {
  const c = new ImapFlow({ host: '127.0.0.1', port, secure: false, auth: { user: 'alice@example.test', pass: 'alice-password' }, logger: false, tls: { rejectUnauthorized: false } });
  await c.connect();
  return c;
}

/** INBOX as the server shows it: UIDVALIDITY, and per UID the Message-ID and flags (less \\Recent, which is per session). */
async function listInbox(port: number): Promise<{ uidValidity: bigint; messages: Listed[] }> {
  const c = await imapClient(port);
  try {
    const box = await c.mailboxOpen('INBOX');
    const messages: Listed[] = [];
    if (box.exists > 0) {
      for await (const m of c.fetch('1:*', { uid: true, envelope: true, flags: true })) {
        messages.push({ uid: m.uid, messageId: m.envelope?.messageId ?? '', flags: [...(m.flags ?? [])].filter((f) => f !== '\\Recent').sort() });
      }
    }
    return { uidValidity: box.uidValidity, messages: messages.sort((a, b) => a.uid - b.uid) };
  } finally {
    await c.logout();
  }
}

/** A tar archive made by hand, for the hostile cases. */
function handTar(entries: Array<{ name: string; type?: 'file' | 'symlink' | 'directory'; linkname?: string; body?: string }>): Promise<Buffer> {
  const p = tarPack();
  for (const e of entries) {
    if (e.type === 'symlink' || e.type === 'directory') p.entry({ name: e.name, type: e.type, linkname: e.linkname });
    else p.entry({ name: e.name }, e.body ?? '');
  }
  p.finalize();
  return (async () => {
    const chunks: Buffer[] = [];
    for await (const c of p as unknown as AsyncIterable<Buffer>) chunks.push(Buffer.from(c));
    return Buffer.concat(chunks);
  })();
}

describe('backup and restore', () => {
  let setup: TestSetup;
  let work: string;
  let archive: string;
  let backupRun: { code: number; stdout: string; stderr: string };
  let before: string[];
  let original: { uidValidity: bigint; messages: Listed[] };
  let seenBeforeBackup: Listed[];
  let sentDuring = 0;

  beforeAll(async () => {
    setup = await makeSetup({ toml: ALL_LISTENERS, fsync: false });
    work = await mkdtemp(join(tmpdir(), 'hearth-backup-'));
    archive = join(work, 'hearth.tar.gz');
    const mail = openStore(setup);
    await importMbox({ mail, box: bob, file: join(FIXTURES, 'tricky.mbox'), folder: 'Old' });
    await mail.close();
    await mkdir(join(setup.configDir, 'dkim', 'example.test'), { recursive: true });
    await writeFile(join(setup.configDir, 'dkim', 'example.test', 'hearth.pem'), 'not really a key\n', { mode: 0o600 });
    // As certbot leaves it: the certificate is a link to a file elsewhere.
    await writeFile(join(work, 'outside-cert.pem'), 'cert via a link\n');
    await symlink(join(work, 'outside-cert.pem'), join(setup.configDir, 'tls', 'live.pem'));
    const hearth = await startTestHearth(setup);
    try {
      const smtp = nodemailer.createTransport({ host: '127.0.0.1', port: hearth.smtpPort, secure: false, ignoreTLS: true });
      const send = (tag: string) => smtp.sendMail({ from: 'someone@elsewhere.test', to: 'alice@example.test', subject: tag, messageId: `<${tag}@elsewhere.test>`, text: `body of ${tag}\n`.repeat(50) });
      before = [];
      for (let i = 0; i < 12; i++) {
        await send(`before-${i}`);
        before.push(`<before-${i}@elsewhere.test>`);
      }
      // Flags make some files move from new/ to cur/ under new names before the backup.
      const c = await imapClient(hearth.port('imap'));
      await c.mailboxOpen('INBOX');
      await c.messageFlagsAdd('1:4', ['\\Seen']);
      await c.messageFlagsAdd('2', ['\\Flagged']);
      await c.logout();
      seenBeforeBackup = (await listInbox(hearth.port('imap'))).messages;
      // The backup runs as its own process while mail keeps arriving.
      let backupDone = false;
      const running = runCli(['backup', archive, '-c', setup.configDir]).then((r) => {
        backupDone = true;
        return r;
      });
      let n = 0;
      while (!backupDone && n < 200) await send(`during-${n++}`);
      sentDuring = n;
      backupRun = await running;
      original = await listInbox(hearth.port('imap'));
    } finally {
      await hearth.close();
    }
  }, 120_000);
  afterAll(async () => {
    await setup?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it('writes one archive while the server runs, says where, and verifies it', async () => {
    expect(backupRun.code, backupRun.stderr).toBe(0);
    expect(sentDuring).toBeGreaterThan(0);
    expect(backupRun.stdout).toContain(`wrote ${archive}`);
    expect(backupRun.stdout).toContain(`config/        <- ${setup.configDir}`);
    expect(backupRun.stdout).toContain(`data/          <- ${setup.dataDir}`);
    expect(backupRun.stdout).toMatch(/2 users, \d+ mailboxes, \d+ messages, \d+ queue files, 1 DKIM keys/);
    expect(backupRun.stdout).toMatch(/verified, \d+ files match their sizes and SHA-256 sums/);
    // One gzipped tar whose last entry is the manifest; no full-text index, no socket.
    const tar = gunzipSync(await readFile(archive));
    const names: string[] = [];
    for (let off = 0; off + 512 <= tar.length; ) {
      const name = tar.subarray(off, off + 100).toString('latin1').replace(/\0.*$/s, '');
      if (!name) break;
      const prefix = tar.subarray(off + 345, off + 500).toString('latin1').replace(/\0.*$/s, '');
      const size = parseInt(tar.subarray(off + 124, off + 136).toString('latin1').trim() || '0', 8);
      names.push(prefix ? `${prefix}/${name}` : name);
      off += 512 + Math.ceil(size / 512) * 512;
    }
    expect(names.at(-1)).toBe('manifest.json');
    expect(names).toContain('config/hearth.toml');
    expect(names.some((n) => n.endsWith('hearth-index.sqlite'))).toBe(true);
    expect(names.some((n) => n.includes('fulltext') || n.endsWith('hearth.sock'))).toBe(false);
    expect((await readdir(work)).filter((n) => n.includes('partial') || n.startsWith('.hearth-backup-'))).toEqual([]);
    const again = await runCli(['backup', '--verify', archive]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`${archive}: verified`);
  });

  it('restores into a fresh place, where hearth serves the same mail under the same UIDs', async () => {
    const target = join(work, 'restored');
    // As in a fresh clone of hearth: these do not make the folders "not empty".
    await mkdir(join(target, 'config'), { recursive: true });
    await writeFile(join(target, 'config', 'hearth.example.toml'), '# shipped\n');
    await mkdir(join(target, 'maildir'));
    await writeFile(join(target, 'maildir', '.gitkeep'), '');
    const r = await runCli(['restore', archive, '-c', join(target, 'config')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/restored \d+ files \(\d+ messages, 2 users\)/);
    expect(r.stdout).toContain(`config/ -> ${join(target, 'config')}`);
    expect(r.stdout).toContain(`data/   -> ${join(target, 'maildir')}`);
    expect(await readFile(join(target, 'config', 'dkim', 'example.test', 'hearth.pem'), 'utf8')).toBe('not really a key\n');
    expect(await readFile(join(target, 'config', 'tls', 'live.pem'), 'utf8')).toBe('cert via a link\n');
    expect((await lstat(join(target, 'config', 'tls', 'live.pem'))).isFile()).toBe(true);
    expect((await stat(join(target, 'config', 'users'))).mode & 0o777).toBe((await stat(join(setup.configDir, 'users'))).mode & 0o777);
    expect((await readdir(join(target, 'maildir'))).some((n) => n.startsWith('.hearth-restore-'))).toBe(false);

    const restoredSetup = { ...setup, configDir: join(target, 'config'), dataDir: join(target, 'maildir') };
    const hearth = await startTestHearth(restoredSetup);
    let restored: { uidValidity: bigint; messages: Listed[] };
    try {
      restored = await listInbox(hearth.port('imap'));
    } finally {
      await hearth.close();
    }
    expect(restored.uidValidity).toBe(original.uidValidity);
    const originalByUid = new Map(original.messages.map((m) => [m.uid, m]));
    // Everything that was there when the backup started is back, same UID, same flags.
    for (const m of seenBeforeBackup) expect(restored.messages.find((x) => x.uid === m.uid)).toEqual(m);
    expect(restored.messages.map((m) => m.messageId)).toEqual(expect.arrayContaining(before));
    expect(seenBeforeBackup.find((m) => m.uid === 2)?.flags).toEqual(['\\Flagged', '\\Seen']);
    // Mail that arrived during the backup is either in it, under its original UID, or not at all.
    for (const m of restored.messages) expect(originalByUid.get(m.uid)?.messageId).toBe(m.messageId);

    // The imported folder: same bytes, flags and dates.
    const a = openStore(setup);
    const b = openStore(restoredSetup);
    try {
      const src = await folderContents(a, bob, 'Old');
      const copy = await folderContents(b, bob, 'Old');
      expect(copy.map((m) => m.content.toString('latin1'))).toEqual(src.map((m) => m.content.toString('latin1')));
      expect(copy.map((m) => m.flags)).toEqual(src.map((m) => m.flags));
      expect(copy.map((m) => m.internalDate)).toEqual(src.map((m) => m.internalDate));
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
  }, 60_000);

  it('a flipped byte in a message fails verify naming the file, and restore writes nothing', async () => {
    const plain = join(work, 'plain.tar');
    const made = await runCli(['backup', plain, '-c', setup.configDir]);
    expect(made.code, made.stderr).toBe(0);
    const bytes = await readFile(plain);
    const at = bytes.indexOf('body of before-7');
    expect(at).toBeGreaterThan(0);
    bytes[at] ^= 0x20;
    await writeFile(plain, bytes);
    const v = await runCli(['backup', '--verify', plain]);
    expect(v.code).toBe(1);
    expect(v.stderr).toMatch(/DAMAGED/);
    expect(v.stderr).toMatch(/data\/example\.test\/alice\/(new|cur)\/[^:\n]+(:2,[A-Z]*)?: checksum differs/);
    const target = join(work, 'from-damaged');
    const r = await runCli(['restore', plain, '-c', join(target, 'config')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/does not verify, nothing restored/);
    await expect(stat(target)).rejects.toThrow();
  });

  it('a flipped byte in a .tar.gz fails verify', async () => {
    const bytes = await readFile(archive);
    const damaged = join(work, 'damaged.tar.gz');
    bytes[Math.floor(bytes.length / 2)] ^= 0xff;
    await writeFile(damaged, bytes);
    const v = await runCli(['backup', '--verify', damaged]);
    expect(v.code).toBe(1);
    expect(v.stderr).toMatch(/DAMAGED, do not rely on it\n {2}(the archive is damaged or cut short after |.+: checksum differs|.+: missing)/);
  });

  it('refuses hostile entries: "..", absolute paths and links, writing nothing', async () => {
    const toml = await readFile(join(setup.configDir, 'hearth.toml'), 'utf8');
    const cases = [
      { entry: { name: 'data/../../escaped.txt', body: 'gotcha' }, why: /climbs out with "\.\."/ },
      { entry: { name: '/tmp/hearth-absolute.txt', body: 'gotcha' }, why: /absolute path/ },
      { entry: { name: 'data/example.test/link', type: 'symlink' as const, linkname: '/etc' }, why: /symbolic link to "\/etc"/ },
    ];
    for (const [i, c] of cases.entries()) {
      const file = join(work, `hostile-${i}.tar`);
      await writeFile(file, await handTar([{ name: 'config/hearth.toml', body: toml }, c.entry, { name: 'data/example.test/after.txt', body: 'after' }]));
      const target = join(work, `hostile-target-${i}`);
      const r = await runCli(['restore', file, '-c', join(target, 'config')]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(c.why);
      expect(r.stderr).toMatch(/refusing this archive, nothing was restored/);
      await expect(stat(target)).rejects.toThrow();
      await expect(stat(join(work, 'escaped.txt'))).rejects.toThrow();
      const v = await runCli(['backup', '--verify', file]);
      expect(v.code).toBe(1);
      expect(v.stderr).toMatch(c.why);
    }
    await expect(stat('/tmp/hearth-absolute.txt')).rejects.toThrow();
    expect(unsafeEntry('data/a/../../b', 'file')).toMatch(/\.\./);
    expect(unsafeEntry('data/x', 'link', '../../etc/passwd')).toMatch(/hard link/);
    expect(unsafeEntry('etc/passwd', 'file')).toMatch(/outside config\/, data\/ and external\//);
    expect(unsafeEntry('data/dev', 'character-device')).toMatch(/not a file or folder/);
    expect(unsafeEntry('data/example.test/alice/cur/1.M2:2,S', 'file')).toBeUndefined();
  });

  it('says how to name the archive, writes a dated one into a directory, and never overwrites', async () => {
    const bad = await runCli(['backup', join(work, 'backup.zip'), '-c', setup.configDir]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/\.tar\.gz.*\.tar/);
    const dir = join(work, 'dated');
    await mkdir(dir);
    const r = await runCli(['backup', dir, '-c', setup.configDir]);
    expect(r.code, r.stderr).toBe(0);
    const [made] = await readdir(dir);
    expect(made).toMatch(/^hearth-backup-\d{8}-\d{6}\.tar\.gz$/);
    const again = await runCli(['backup', join(dir, made!), '-c', setup.configDir]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already exists; give a new file name/);
  });

  it('still restores a backup directory made by older versions', async () => {
    const old = join(work, 'old-style');
    const toml = await readFile(join(setup.configDir, 'hearth.toml'));
    const users = await readFile(join(setup.configDir, 'users'));
    const msg = Buffer.from('Subject: old\r\n\r\nfrom an old backup\r\n');
    const files = [
      { path: 'config/hearth.toml', body: toml },
      { path: 'config/users', body: users },
      { path: 'data/example.test/alice/cur/1700000000.M1P1.mx:2,S', body: msg },
    ];
    for (const f of files) {
      await mkdir(join(old, ...f.path.split('/').slice(0, -1)), { recursive: true });
      await writeFile(join(old, ...f.path.split('/')), f.body);
    }
    const manifest = {
      format: 'hearth-backup',
      version: 1,
      createdAt: '2026-01-01T00:00:00.000Z',
      counts: { users: 2, dkimKeys: 0, queueFiles: 0, mailboxes: 0, messages: 1, files: 3, bytes: files.reduce((n, f) => n + f.body.length, 0) },
      vanished: 0,
      files: files.map((f) => ({ path: f.path, size: f.body.length, sha256: createHash('sha256').update(f.body).digest('hex'), mode: 0o600, mtimeMs: 1_700_000_000_000 })),
    };
    await writeFile(join(old, 'manifest.json'), JSON.stringify(manifest));
    const target = join(work, 'from-old');
    const r = await runCli(['restore', old, '-c', join(target, 'config')]);
    expect(r.code, r.stderr).toBe(0);
    expect(await readFile(join(target, 'maildir', 'example.test', 'alice', 'cur', '1700000000.M1P1.mx:2,S'))).toEqual(msg);
    expect((await stat(join(target, 'maildir', 'example.test', 'alice', 'cur', '1700000000.M1P1.mx:2,S'))).mtimeMs).toBe(1_700_000_000_000);
  });
});
