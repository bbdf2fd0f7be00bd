// Small file helpers for the config folder: atomic replace, so a reader (the running server's
// watcher) sees either the old file or the new one, never half of it.
import { open, rename, stat, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

/**
 * Write tmp, fsync, rename over `path`, fsync the folder. Run as root (`sudo hearth user add`),
 * the new file keeps the owner of the file it replaces, or takes the folder's: a root-owned
 * 0600 users file would lock out the server running as its own account.
 */
export async function writeFileAtomic(path: string, data: string | Buffer, mode = 0o600): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const owner = process.getuid?.() === 0 ? await ownerFor(path) : undefined;
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    if (owner) await fh.chown(owner.uid, owner.gid);
    await fh.chmod(mode); // the umask may have narrowed or the caller wants exactly this mode
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await syncDir(dirname(path));
}

/** Who should own `path`: the owner of the file there now, else of its folder. */
async function ownerFor(path: string): Promise<{ uid: number; gid: number } | undefined> {
  const st = (await stat(path).catch(() => undefined)) ?? (await stat(dirname(path)).catch(() => undefined));
  return st ? { uid: st.uid, gid: st.gid } : undefined;
}

/** Create `path` with `data` only if it does not exist yet; false when it already did. */
export async function writeFileExclusive(path: string, data: string | Buffer, mode = 0o644): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'wx', mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    await fh.writeFile(data);
    await fh.chmod(mode);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await syncDir(dirname(path));
  return true;
}

export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } catch {
    // some filesystems refuse fsync on a directory; the rename is still atomic
  } finally {
    await fh.close();
  }
}
