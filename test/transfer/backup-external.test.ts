// Files hearth.toml names outside the config and data folders (a TLS certificate and key under
// /etc/letsencrypt, an SRS secret elsewhere): backup archives them under external/ with their
// config key and original path, warns about one it cannot read, and verify checks them; restore
// puts them under <config>/restored-external/ (0600 for keys and secrets), never at their old
// place, and says how to put each back. Every path key of the schema is known to backup.
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeSetup } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { knownKeysAt } from '../../src/config/load.ts';
import { CONFIG_FILE_KEYS, createBackup, readArchiveFile, restoreBackup, unsafeEntry, verifyBackup } from '../../src/transfer/backup.ts';
import type { Manifest } from '../../src/transfer/backup.ts';
import { craftedArchive, runCli } from './helpers.ts';

const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');
/** The archive name backup gives a file outside: external/ and its absolute path. */
const externalName = (abs: string): string => `external${abs}`;

let setup: TestSetup;
let work: string;
/** Where the "system" keeps its files: outside config/ and the data folder. */
let etc: string;
let certFile: string;
let keyFile: string;
let srsFile: string;
let archive: string;
let backupRun: { code: number; stdout: string; stderr: string };

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'hearth-backup-external-'));
  etc = join(work, 'etc');
  // As certbot leaves them: live/ holds links to the real files in archive/.
  await mkdir(join(etc, 'letsencrypt', 'archive', 'mx'), { recursive: true });
  await mkdir(join(etc, 'letsencrypt', 'live', 'mx'), { recursive: true });
  await writeFile(join(etc, 'letsencrypt', 'archive', 'mx', 'cert1.pem'), '-----BEGIN CERTIFICATE-----\nthe certificate\n');
  await chmod(join(etc, 'letsencrypt', 'archive', 'mx', 'cert1.pem'), 0o644);
  await writeFile(join(etc, 'letsencrypt', 'archive', 'mx', 'privkey1.pem'), '-----BEGIN PRIVATE KEY-----\nthe key\n');
  await chmod(join(etc, 'letsencrypt', 'archive', 'mx', 'privkey1.pem'), 0o640);
  certFile = join(etc, 'letsencrypt', 'live', 'mx', 'cert.pem');
  keyFile = join(etc, 'letsencrypt', 'live', 'mx', 'privkey.pem');
  await symlink('../../archive/mx/cert1.pem', certFile);
  await symlink('../../archive/mx/privkey1.pem', keyFile);
  srsFile = join(etc, 'hearth', 'srs.secret');
  await mkdir(join(etc, 'hearth'));
  await writeFile(join(etc, 'hearth', 'srs.secret'), 'srs-secret-one\n', { mode: 0o644 });
  await chmod(srsFile, 0o4644);
  setup = await makeSetup({ toml: `[tls]\ncert = ${JSON.stringify(certFile)}\nkey = ${JSON.stringify(keyFile)}\n\n[routing]\nsrs_secret_file = ${JSON.stringify(srsFile)}\n` });
  archive = join(work, 'with-external.tar');
  backupRun = await runCli(['backup', archive, '-c', setup.configDir]);
});
afterAll(async () => {
  await setup?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

async function manifestOf(file: string): Promise<Manifest> {
  return JSON.parse((await readArchiveFile(file, 'manifest.json'))!) as Manifest;
}

describe('backup of files outside the config folder', () => {
  it('archives each under external/, following links, with its key, original path, size, SHA-256 and mode, and says so', async () => {
    expect(backupRun.code, backupRun.stderr).toBe(0);
    const manifest = await manifestOf(archive);
    const cases = [
      { abs: certFile, key: 'tls.cert', mode: 0o644, body: await readFile(certFile) },
      { abs: keyFile, key: 'tls.key', mode: 0o640, body: await readFile(keyFile) },
      { abs: srsFile, key: 'routing.srs_secret_file', mode: 0o644, body: await readFile(srsFile) },
    ];
    for (const c of cases) {
      const entry = manifest.files.find((f) => f.path === externalName(c.abs));
      expect(entry, c.abs).toMatchObject({ keys: [c.key], original: c.abs, size: c.body.length, sha256: sha256(c.body), mode: c.mode });
      // The file's bytes, not a link.
      expect(await readArchiveFile(archive, externalName(c.abs))).toBe(c.body.toString('utf8'));
      expect(backupRun.stdout).toContain(`included ${c.abs} (${c.key}) as ${externalName(c.abs)}`);
    }
    expect(manifest.files.filter((f) => f.path.startsWith('external/'))).toHaveLength(3);
    expect(backupRun.stderr).not.toMatch(/warning/);
    const v = await runCli(['backup', '--verify', archive]);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout).toContain(`${archive}: verified`);
  });

  it('a changed byte in an external file fails verify, naming it', async () => {
    const tampered = join(work, 'tampered.tar');
    const bytes = await readFile(archive);
    const at = bytes.indexOf('srs-secret-one');
    expect(at).toBeGreaterThan(0);
    bytes[at] ^= 0x20;
    await writeFile(tampered, bytes);
    const v = await runCli(['backup', '--verify', tampered]);
    expect(v.code).toBe(1);
    expect(v.stderr).toContain(`${externalName(srsFile)}: checksum differs`);
    await expect(restoreBackup({ archive: tampered, configDir: join(work, 'tampered-target', 'config'), dataDir: join(work, 'tampered-target', 'maildir') })).rejects.toThrow(/does not verify/);
    await expect(stat(join(work, 'tampered-target'))).rejects.toThrow();
  });

  it('restores them under restored-external/ (0600 for keys and secrets, no setuid), never at the old place, and prints the fix', async () => {
    // A new machine: the files are not where hearth.toml says.
    const moved = join(work, 'etc-moved-away');
    const { rename } = await import('node:fs/promises');
    await rename(etc, moved);
    try {
      const target = join(work, 'restored');
      const config = join(target, 'config');
      const r = await runCli(['restore', archive, '-c', config]);
      expect(r.code, r.stderr).toBe(0);
      const restored = (abs: string) => join(config, 'restored-external', ...abs.split('/').filter(Boolean));
      expect(await readFile(restored(keyFile), 'utf8')).toBe('-----BEGIN PRIVATE KEY-----\nthe key\n');
      expect((await stat(restored(keyFile))).mode & 0o7777).toBe(0o600);
      expect((await stat(restored(srsFile))).mode & 0o7777).toBe(0o600);
      expect((await stat(restored(certFile))).mode & 0o7777).toBe(0o644);
      expect(await readFile(restored(srsFile), 'utf8')).toBe('srs-secret-one\n');
      // Nothing written at the original paths; hearth.toml as it was.
      await expect(stat(etc)).rejects.toThrow();
      expect(await readFile(join(config, 'hearth.toml'), 'utf8')).toBe(await readFile(join(setup.configDir, 'hearth.toml'), 'utf8'));
      for (const [abs, key] of [[keyFile, 'tls.key'], [certFile, 'tls.cert'], [srsFile, 'routing.srs_secret_file']] as const) {
        expect(r.stdout).toContain(`${abs} (${key}) -> ${restored(abs)}`);
        expect(r.stdout).toContain(`copy it back to ${abs}, or set ${key} = "restored-external${abs}" in hearth.toml`);
      }
    } finally {
      await rename(moved, etc);
    }
  });

  it('warns about a referenced file that is missing, a folder or not a plain file, and still completes', async () => {
    const other = await makeSetup({
      toml: `[tls]\ncert = ${JSON.stringify(certFile)}\nkey = ${JSON.stringify(join(etc, 'nope', 'privkey.pem'))}\n\n[relay]\nsmarthost_password_file = ${JSON.stringify(join(etc, 'hearth'))}\n\n[acme]\nca_file = "/dev/null"\n`,
    });
    try {
      const out = join(work, 'with-missing.tar.gz');
      const r = await runCli(['backup', out, '-c', other.configDir]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain(`warning: tls.key names ${join(etc, 'nope', 'privkey.pem')}, which does not exist: it is NOT in this backup`);
      expect(r.stderr).toContain(`warning: relay.smarthost_password_file names ${join(etc, 'hearth')}, which is a folder, not a file: it is NOT in this backup`);
      expect(r.stderr).toContain('warning: acme.ca_file names /dev/null, which is not a plain file: it is NOT in this backup');
      expect(r.stdout).toContain(`included ${certFile} (tls.cert)`);
      expect(r.stdout).toMatch(/verified/);
      const manifest = await manifestOf(out);
      expect(manifest.files.map((f) => f.path).filter((p) => p.startsWith('external/'))).toEqual([externalName(certFile)]);
      expect(manifest.externalMissing).toEqual(expect.arrayContaining([{ keys: ['tls.key'], original: join(etc, 'nope', 'privkey.pem'), reason: 'does not exist' }]));
      const restoredAt = join(work, 'restored-missing', 'config');
      const restored = await runCli(['restore', out, '-c', restoredAt]);
      expect(restored.code, restored.stderr).toBe(0);
      expect(restored.stderr).toContain(`tls.key: ${join(etc, 'nope', 'privkey.pem')} is not in this backup (when it was made, the file does not exist)`);
    } finally {
      await other.cleanup();
    }
  });
});

describe('what backup does not take from outside', () => {
  it('leaves out a file far bigger than a certificate or key (a link to a disk image, /proc/kcore), with a warning', async () => {
    const root = await mkdtemp(join(work, 'huge-'));
    const configDir = join(root, 'config');
    await mkdir(configDir);
    await writeFile(join(configDir, 'hearth.toml'), 'hostname = "mx.test.example"\ndomains = ["example.test"]\n');
    const huge = join(root, 'outside', 'disk.img');
    await mkdir(join(root, 'outside'));
    await writeFile(huge, '');
    await truncate(huge, 64 << 20); // sparse: costs nothing on disk
    await symlink(huge, join(root, 'outside', 'key.pem'));
    const made = await createBackup({ configDir, dataDir: join(root, 'maildir'), out: join(root, 'b.tar'), references: [{ key: 'tls.key', path: join(root, 'outside', 'key.pem') }] });
    expect(made.external.included).toEqual([]);
    expect(made.external.missing).toEqual([{ keys: ['tls.key'], original: join(root, 'outside', 'key.pem'), reason: expect.stringMatching(/^is 64\.0 MiB, far more than/) }]);
    expect(made.archiveBytes).toBeLessThan(1 << 20);
  });

  it('does not archive a file of the config folder twice when hearth.toml names it by another path (the folder reached through a link)', async () => {
    const root = await mkdtemp(join(work, 'twice-'));
    const real = join(root, 'real-config');
    await mkdir(join(real, 'tls'), { recursive: true });
    await writeFile(join(real, 'hearth.toml'), 'hostname = "mx.test.example"\ndomains = ["example.test"]\n');
    await writeFile(join(real, 'tls', 'key.pem'), 'the key\n');
    await symlink(real, join(root, 'config'));
    // hearth runs with -c ROOT/config; hearth.toml names the key by its real path.
    const made = await createBackup({ configDir: join(root, 'config'), dataDir: join(root, 'maildir'), out: join(root, 'b.tar'), references: [{ key: 'tls.key', path: join(real, 'tls', 'key.pem') }] });
    expect(made.external).toEqual({ included: [], missing: [] });
    expect(made.manifest.files.map((f) => f.path)).toEqual(['config/hearth.toml', 'config/tls/key.pem']);
  });

  it('archives a file hearth.toml names inside the config folder when a linked folder kept it out of the walk (config/tls -> /etc/letsencrypt/live/…)', async () => {
    const root = await mkdtemp(join(work, 'linked-dir-'));
    const configDir = join(root, 'config');
    await mkdir(configDir);
    await writeFile(join(configDir, 'hearth.toml'), 'hostname = "mx.test.example"\ndomains = ["example.test"]\n');
    await mkdir(join(root, 'live'));
    await writeFile(join(root, 'live', 'cert.pem'), 'the certificate\n');
    await symlink(join(root, 'live'), join(configDir, 'tls'));
    const cert = join(configDir, 'tls', 'cert.pem');
    const made = await createBackup({ configDir, dataDir: join(root, 'maildir'), out: join(root, 'b.tar'), references: [{ key: 'tls.cert', path: cert }] });
    expect(made.external.included).toEqual([expect.objectContaining({ keys: ['tls.cert'], original: cert })]);
    expect(await readArchiveFile(made.archive, externalName(cert))).toBe('the certificate\n');
  });
});

describe('a config folder restored before', () => {
  it('keeps its own restored-external/ copy where an external file would go, and says whether they differ', async () => {
    for (const differs of [false, true]) {
      const root = join(work, `again-${differs}`);
      const outside = join(root, 'outside', 'key.pem');
      await mkdir(join(root, 'outside'), { recursive: true });
      await writeFile(outside, 'the key\n');
      const configDir = join(root, 'config');
      const copy = join(configDir, 'restored-external', ...outside.split('/').filter(Boolean));
      await mkdir(join(copy, '..'), { recursive: true });
      await writeFile(join(configDir, 'hearth.toml'), 'hostname = "mx.test.example"\ndomains = ["example.test"]\n');
      await writeFile(copy, differs ? 'an older key\n' : 'the key\n');
      const made = await createBackup({ configDir, dataDir: join(root, 'maildir'), out: join(root, 'b.tar'), references: [{ key: 'tls.key', path: outside }] });
      expect(made.external.included.map((e) => e.original)).toEqual([outside]);
      const target = join(root, 'target');
      const r = await restoreBackup({ archive: made.archive, configDir: join(target, 'config'), dataDir: join(target, 'maildir') });
      expect(r.externalFiles).toEqual([expect.objectContaining({ keys: ['tls.key'], original: outside, kept: differs ? 'different' : 'same' })]);
      expect(await readFile(join(target, 'config', 'restored-external', ...outside.split('/').filter(Boolean)), 'utf8')).toBe(differs ? 'an older key\n' : 'the key\n');
    }
  });
});

describe('hostile external entries', () => {
  const TOML = 'hostname = "mx.test.example"\ndomains = ["example.test"]\ndata_dir = "../maildir"\n';

  it('refuses an external entry that climbs out with ".." or has an absolute path, writing nothing', async () => {
    const cases = [
      { name: 'external/../../escaped.pem', why: /climbs out with "\.\."/ },
      { name: 'external/etc/../../../escaped.pem', why: /climbs out with "\.\."/ },
      { name: '/external/etc/escaped.pem', why: /absolute path/ },
    ];
    for (const [i, c] of cases.entries()) {
      const file = join(work, `hostile-external-${i}.tar`);
      await craftedArchive(file, [{ name: 'config/hearth.toml', body: TOML }, { name: c.name, body: 'gotcha' }], { fields: { [c.name]: { keys: ['tls.key'], original: '/etc/escaped.pem' } } });
      const target = join(work, `hostile-external-target-${i}`);
      await expect(restoreBackup({ archive: file, configDir: join(target, 'config'), dataDir: join(target, 'maildir') })).rejects.toThrow(c.why);
      await expect(stat(target)).rejects.toThrow();
      await expect(stat(join(work, 'escaped.pem'))).rejects.toThrow();
      await expect(verifyBackup(file)).rejects.toThrow(c.why);
    }
    expect(unsafeEntry('external/etc/ssl/key.pem', 'file')).toBeUndefined();
    expect(unsafeEntry('external', 'file')).toMatch(/top folder/);
  });

  it('does not trust a manifest whose original path does not match the entry, or whose keys are not config keys', async () => {
    const cases = [
      { keys: ['tls.key'], original: '/etc/other.pem' },
      { keys: ['tls.key'], original: 'etc/key.pem' },
      { keys: ['tls.key\u001b[2J'], original: '/etc/key.pem' },
      { keys: [], original: '/etc/key.pem' },
    ];
    for (const [i, fields] of cases.entries()) {
      const file = join(work, `lying-external-${i}.tar`);
      await craftedArchive(file, [{ name: 'config/hearth.toml', body: TOML }, { name: 'external/etc/key.pem', body: 'k' }], { fields: { 'external/etc/key.pem': fields } });
      expect((await verifyBackup(file)).problems).toEqual([expect.stringMatching(/^external\/etc\/key\.pem: .*not valid/)]);
      const target = join(work, `lying-external-target-${i}`);
      await expect(restoreBackup({ archive: file, configDir: join(target, 'config'), dataDir: join(target, 'maildir') })).rejects.toThrow(/does not verify/);
      await expect(stat(target)).rejects.toThrow();
    }
  });

  it('refuses an external file whose place is a file or a folder of the archive\'s config folder, before anything is moved', async () => {
    const ext = { 'external/etc/key.pem': { keys: ['tls.key'], original: '/etc/key.pem' } };
    const cases = [
      // config/restored-external is a file: restored-external/etc/key.pem cannot be made.
      { entries: [{ name: 'config/restored-external', body: 'x' }], dirs: [] },
      { entries: [{ name: 'config/restored-external/etc', body: 'x' }], dirs: [] },
      // restored-external/etc/key.pem is a folder in the manifest.
      { entries: [], dirs: [{ path: 'config/restored-external/etc/key.pem', mode: 0o755 }] },
    ];
    for (const [i, c] of cases.entries()) {
      const file = join(work, `colliding-external-${i}.tar`);
      await craftedArchive(file, [{ name: 'config/hearth.toml', body: TOML }, ...c.entries, { name: 'external/etc/key.pem', body: 'k' }], { fields: ext, dirs: c.dirs });
      const target = join(work, `colliding-external-target-${i}`);
      await expect(restoreBackup({ archive: file, configDir: join(target, 'config'), dataDir: join(target, 'maildir') })).rejects.toThrow(/both a file and a folder.*nothing was restored/);
      await expect(stat(target)).rejects.toThrow();
    }
  });

  it('restores an external file with setuid bits asked for as plain permissions', async () => {
    const file = join(work, 'setuid-external.tar');
    await craftedArchive(file, [{ name: 'config/hearth.toml', body: TOML }, { name: 'external/etc/ca.pem', body: 'ca' }], { mode: { 'external/etc/ca.pem': 0o6755 }, fields: { 'external/etc/ca.pem': { keys: ['acme.ca_file'], original: '/etc/ca.pem' } } });
    const target = join(work, 'setuid-external-target');
    const r = await restoreBackup({ archive: file, configDir: join(target, 'config'), dataDir: join(target, 'maildir') });
    expect((await stat(join(target, 'config', 'restored-external', 'etc', 'ca.pem'))).mode & 0o7777).toBe(0o755);
    expect(r.externalFiles).toEqual([expect.objectContaining({ keys: ['acme.ca_file'], original: '/etc/ca.pem', configPath: 'restored-external/etc/ca.pem' })]);
  });
});

describe('the config keys that name files', () => {
  it('are all known to backup (a new path key in the schema must be added to CONFIG_FILE_KEYS)', () => {
    const pathKeys: string[] = [];
    const visit = (at: string[]): void => {
      for (const key of knownKeysAt(at)) {
        const sub = [...at, key];
        if (/_file$|_path$|_dir$/.test(key) || (at.join('.') === 'tls' && (key === 'cert' || key === 'key'))) pathKeys.push(sub.join('.'));
        visit(sub);
      }
    };
    visit([]);
    // data_dir is the data folder itself, archived as data/.
    expect(pathKeys.filter((k) => k !== 'data_dir').sort()).toEqual([...CONFIG_FILE_KEYS].sort());
  });
});
