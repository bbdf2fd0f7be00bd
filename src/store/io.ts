// The few filesystem primitives that delivery uses, behind one object so tests can make any
// step fail (ENOSPC at write, EIO at fsync, EXDEV at link) and prove nothing half-delivered stays.
// Callback `fs` on numeric descriptors: cheaper per call than `fs/promises` FileHandles.
import fs from 'node:fs';

export type StoreIo = {
  open(path: string, flags: string | number, mode?: number): Promise<number>;
  /** One write(2); returns the bytes written, which may be fewer than asked. */
  write(fd: number, data: Uint8Array, offset: number, length: number): Promise<number>;
  fsync(fd: number): Promise<void>;
  /** Set atime/mtime on an open file (delivery with `mtime`, e.g. an import or IMAP APPEND date). */
  futimes(fd: number, atime: Date, mtime: Date): Promise<void>;
  close(fd: number): Promise<void>;
  link(existingPath: string, newPath: string): Promise<void>;
  rename(oldPath: string, newPath: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** mkdir -p; resolves to the first directory created, or undefined if it all existed. */
  mkdir(path: string, mode?: number): Promise<string | undefined>;
  /** Only for the EXDEV fallback, when a hard link cannot cross filesystems. */
  copyFile(src: string, dest: string): Promise<void>;
};

type Callback<T> = (err: NodeJS.ErrnoException | null, value?: T) => void;
function call<T>(fn: (cb: Callback<T>) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value as T))));
}

export const nodeStoreIo: StoreIo = {
  open: (path, flags, mode) => call<number>((cb) => fs.open(path, flags, mode, cb)),
  write: (fd, data, offset, length) => call<number>((cb) => fs.write(fd, data, offset, length, null, cb)),
  fsync: (fd) => call<void>((cb) => fs.fsync(fd, cb)),
  futimes: (fd, atime, mtime) => call<void>((cb) => fs.futimes(fd, atime, mtime, cb)),
  close: (fd) => call<void>((cb) => fs.close(fd, cb)),
  link: (existingPath, newPath) => call<void>((cb) => fs.link(existingPath, newPath, cb)),
  rename: (oldPath, newPath) => call<void>((cb) => fs.rename(oldPath, newPath, cb)),
  unlink: (path) => call<void>((cb) => fs.unlink(path, cb)),
  mkdir: (path, mode) => call<string | undefined>((cb) => fs.mkdir(path, { recursive: true, mode: mode ?? 0o700 }, cb)),
  copyFile: (src, dest) => call<void>((cb) => fs.copyFile(src, dest, fs.constants.COPYFILE_EXCL, cb)),
};
