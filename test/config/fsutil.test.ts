// writeFileAtomic replaces a config file whole; run as root (`sudo hearth user add` next to a
// service running as its own account), the new file keeps the old one's owner, or the folder's.
import { afterEach, beforeEach, expect, it } from 'vitest';
import { chown, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../../src/config/fsutil.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hearth-fsutil-'));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

const asRoot = process.getuid?.() === 0;
// Root can give files away; anyone else writes files of their own (and must not fail trying).
const SERVICE = asRoot ? { uid: 4242, gid: 4343 } : { uid: process.getuid!(), gid: process.getgid!() };

it('keeps the owner of the file it replaces', async () => {
  const file = join(dir, 'users');
  await writeFile(file, 'old\n', { mode: 0o600 });
  if (asRoot) await chown(file, SERVICE.uid, SERVICE.gid);
  await writeFileAtomic(file, 'new\n');
  const st = await stat(file);
  expect({ uid: st.uid, gid: st.gid, mode: st.mode & 0o777 }).toEqual({ ...SERVICE, mode: 0o600 });
  expect(await readFile(file, 'utf8')).toBe('new\n');
});

it('gives a new file its folder\'s owner', async () => {
  const folder = join(dir, 'config');
  await mkdir(folder);
  if (asRoot) await chown(folder, SERVICE.uid, SERVICE.gid);
  await writeFileAtomic(join(folder, 'aliases'), 'a: b\n', 0o644);
  const st = await stat(join(folder, 'aliases'));
  expect({ uid: st.uid, gid: st.gid, mode: st.mode & 0o777 }).toEqual({ ...SERVICE, mode: 0o644 });
});
