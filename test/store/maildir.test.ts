import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isStorageFault } from '../../src/core/errors.ts';
import { BareLfCounter, MaildirStore, StoreError, assertSafeName, nodeStoreIo, sizesFromName } from '../../src/store/maildir.ts';
import type { StoreIo, StoreOptions } from '../../src/store/maildir.ts';

let parent: string;
let root: string;

beforeEach(async () => {
  parent = await fs.mkdtemp(path.join(os.tmpdir(), 'hearth-store-'));
  root = path.join(parent, 'maildir');
});
afterEach(async () => {
  await fs.rm(parent, { recursive: true, force: true });
});

const al = { user: 'al', domain: 'example.org' };
const bo = { user: 'bo', domain: 'example.org' };
const cy = { user: 'cy', domain: 'other.test' };

function store(opts: Partial<StoreOptions> = {}): MaildirStore {
  return new MaildirStore({ root, hostname: 'mx.test', ...opts });
}

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected`), { code });
}

async function ls(dir: string): Promise<string[]> {
  try {
    return (await fs.readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Every file (not directory) under `dir`, relative paths. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
}

/** new/, cur/ and tmp/ of a maildir, for "nothing half-delivered stays" checks. */
async function contents(s: MaildirStore, box: { user: string; domain: string }, folder?: string) {
  const dir = s.maildirPath(box, folder);
  return { new: await ls(path.join(dir, 'new')), cur: await ls(path.join(dir, 'cur')), tmp: await ls(path.join(dir, 'tmp')) };
}
const EMPTY = { new: [], cur: [], tmp: [] };

async function expectStoreError(p: Promise<unknown>, code: string): Promise<StoreError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StoreError);
  expect((err as StoreError).code).toBe(code);
  return err as StoreError;
}

const NAME = /^(\d+)\.M(\d+)P(\d+)Q(\d+)R([0-9a-f]{16})\.(.+),S=(\d+),W=(\d+)$/;

describe('deliver', () => {
  it('delivers to one target: new/ holds the exact bytes, tmp/ is empty', async () => {
    const s = store();
    const body = 'From: a@b\r\nSubject: hi\r\n\r\nhello\r\n';
    const [d] = await s.deliver([al], body);
    expect(d.path).toBe(path.join(root, 'example.org', 'al', 'new', d.name));
    expect(await fs.readFile(d.path, 'utf8')).toBe(body);
    expect(d.size).toBe(Buffer.byteLength(body));
    expect(d.target).toEqual({ user: 'al', domain: 'example.org', folder: 'INBOX' });
    expect(await contents(s, al)).toEqual({ new: [d.name], cur: [], tmp: [] });
  });

  it('delivers to three targets with one write: same inode everywhere, identical bytes', async () => {
    let writes = 0;
    let creates = 0;
    const io: Partial<StoreIo> = {
      write: (fd, data, off, len) => {
        writes++;
        return nodeStoreIo.write(fd, data, off, len);
      },
      open: (p, flags, mode) => {
        if (flags === 'wx') creates++;
        return nodeStoreIo.open(p, flags, mode);
      },
    };
    const s = store({ io });
    const body = randomBytes(10_000);
    const out = await s.deliver([al, { ...bo, folder: 'Archive' }, cy], body);
    expect(out).toHaveLength(3);
    expect(writes).toBe(1);
    expect(creates).toBe(1);
    const stats = await Promise.all(out.map((d) => fs.stat(d.path)));
    expect(new Set(stats.map((st) => st.ino)).size).toBe(1);
    expect(stats[0].nlink).toBe(3); // tmp/ link is gone, the three deliveries remain
    for (const d of out) expect(Buffer.compare(await fs.readFile(d.path), body)).toBe(0);
    expect(out[1].path).toBe(path.join(root, 'example.org', 'bo', '.Archive', 'new', out[0].name));
    expect(await contents(s, al)).toEqual({ new: [out[0].name], cur: [], tmp: [] });
  });

  it('gives duplicate targets one file and one entry each', async () => {
    const s = store();
    const out = await s.deliver([al, { user: 'AL', domain: 'Example.ORG', folder: 'inbox' }], 'x');
    expect(out).toHaveLength(2);
    expect(out[0].path).toBe(out[1].path);
    expect((await contents(s, al)).new).toHaveLength(1);
  });

  it('names files <secs>.M<usec>P<pid>Q<n>R<hex>.<host>,S=<bytes>,W=<crlf bytes>, hostname escaped', async () => {
    const s = store({ hostname: 'mx/1:2', clock: () => 1_700_000_000_123 });
    const body = 'héllo wörld\r\n'; // multi-byte: S= counts bytes, not characters
    const [a] = await s.deliver([al], body);
    const [b] = await s.deliver([al], body);
    const m = NAME.exec(a.name);
    expect(m).not.toBeNull();
    const [, secs, usec, pid, q, , host, size, vsize] = m as RegExpExecArray;
    expect(secs).toBe('1700000000');
    expect(usec).toBe('123000');
    expect(Number(pid)).toBe(process.pid);
    expect(host).toBe('mx\\0571\\0722');
    expect(Number(size)).toBe(Buffer.byteLength(body));
    expect(Number(vsize)).toBe(Buffer.byteLength(body)); // CRLF already
    expect((await fs.stat(a.path)).size).toBe(Number(size));
    expect(Number(NAME.exec(b.name)?.[4])).toBe(Number(q) + 1);
    expect(a.name).not.toBe(b.name);
  });

  it('puts a message with flags into cur/ with :2,<sorted flags>', async () => {
    const s = store();
    const [d] = await s.deliver([{ ...al, folder: 'Sent' }], 'sent mail', { flags: 'SFS' });
    expect(d.name).toMatch(/,S=9,W=9:2,FS$/);
    expect(path.basename(path.dirname(d.path))).toBe('cur');
    expect(await contents(s, al, 'Sent')).toEqual({ new: [], cur: [d.name], tmp: [] });
    const [listed] = await s.listMessages(al, 'Sent');
    expect(listed).toEqual({ name: d.name, path: d.path, dir: 'cur', size: 9, vsize: 9, flags: 'FS' });
    const [unseen] = await s.deliver([al], 'x', { flags: '' });
    expect(unseen.name).toMatch(/:2,$/);
    await expectStoreError(s.deliver([al], 'x', { flags: 'S/' }), 'STORE_BAD_NAME');
  });

  it('sets mtime when asked (an import or APPEND date)', async () => {
    const s = store();
    const when = new Date('2001-02-03T04:05:06Z');
    const [d] = await s.deliver([al], 'old mail', { mtime: when });
    expect((await fs.stat(d.path)).mtime.getTime()).toBe(when.getTime());
  });

  it('streams an AsyncIterable chunk by chunk, in batched writes, bytes intact', async () => {
    const writes: number[] = [];
    const s = store({ io: { write: (fd, d, o, l) => (writes.push(l), nodeStoreIo.write(fd, d, o, l)) } });
    const chunks = Array.from({ length: 300 }, () => randomBytes(1000 + Math.floor(Math.random() * 9000)));
    async function* source() {
      for (const c of chunks) {
        yield c;
        await new Promise((r) => setImmediate(r));
      }
    }
    const [d] = await s.deliver([al, bo], source());
    const expected = Buffer.concat(chunks);
    expect(d.size).toBe(expected.length);
    expect(d.name.endsWith(`,S=${expected.length},W=${d.vsize}`)).toBe(true);
    expect(d.vsize).toBe(expected.length + new BareLfCounter().push(expected));
    expect(Buffer.compare(await fs.readFile(d.path), expected)).toBe(0);
    // Streamed, not buffered whole: many writes, each far smaller than the message, fewer than the chunks.
    expect(writes.length).toBeGreaterThan(10);
    expect(writes.length).toBeLessThan(chunks.length);
    expect(Math.max(...writes)).toBeLessThan(expected.length / 4);
  });

  it('creates missing maildirs on delivery, and again if one vanished behind its back', async () => {
    const s = store();
    await s.deliver([{ ...cy, folder: 'Lists/foo' }], 'one');
    const dir = s.maildirPath(cy, 'Lists/foo');
    expect(dir).toBe(path.join(root, 'other.test', 'cy', '.Lists.foo'));
    await fs.rm(path.join(root, 'other.test'), { recursive: true });
    const [d] = await s.deliver([{ ...cy, folder: 'Lists/foo' }], 'two');
    expect(await fs.readFile(d.path, 'utf8')).toBe('two');
  });

  it('skips every fsync with fsync: false, and group-commits directory fsyncs with it on', async () => {
    let fsyncs = 0;
    const counting: Partial<StoreIo> = { fsync: (fd) => (fsyncs++, nodeStoreIo.fsync(fd)) };
    await store({ fsync: false, io: counting }).deliver([al], 'x');
    expect(fsyncs).toBe(0);

    const s = store({ io: counting });
    await s.ensureMaildir(bo);
    fsyncs = 0;
    const n = 50;
    const out = await Promise.all(Array.from({ length: n }, (_, i) => s.deliver([bo], `m${i}`)));
    expect(out).toHaveLength(n);
    // n file fsyncs, plus fewer than n directory fsyncs shared by concurrent deliveries.
    expect(fsyncs).toBeGreaterThan(n);
    expect(fsyncs).toBeLessThan(2 * n);
  });

  it('gives 2,000 concurrent deliveries 2,000 distinct names', async () => {
    const s = store();
    const n = 2000;
    const out = (await Promise.all(Array.from({ length: n }, (_, i) => s.deliver([al], `message ${i}\r\n`)))).flat();
    const names = new Set(out.map((d) => d.name));
    expect(names.size).toBe(n);
    const c = await contents(s, al);
    expect(c.new).toHaveLength(n);
    expect(c.tmp).toEqual([]);
    const listed = await s.listMessages(al);
    expect(listed).toHaveLength(n);
    expect(listed.every((m) => m.dir === 'new' && m.flags === '')).toBe(true);
    const expectedBytes = out.reduce((sum, d) => sum + d.size, 0);
    expect(listed.reduce((sum, m) => sum + m.size, 0)).toBe(expectedBytes);
    expect(expectedBytes).toBe(Array.from({ length: n }, (_, i) => Buffer.byteLength(`message ${i}\r\n`)).reduce((a, b) => a + b, 0));
  });
});

describe('delivery failures leave nothing visible', () => {
  it('ENOSPC at write: STORE_IO with the errno cause, tmp/ empty', async () => {
    const s = store({ io: { write: async () => { throw errno('ENOSPC'); } } });
    const err = await expectStoreError(s.deliver([al, bo], 'x'.repeat(1000)), 'STORE_IO');
    expect((err.cause as NodeJS.ErrnoException).code).toBe('ENOSPC');
    expect(isStorageFault(err.cause)).toBe(true);
    expect(await contents(s, al)).toEqual(EMPTY);
    expect(await contents(s, bo)).toEqual(EMPTY);
  });

  it('ENOSPC in the middle of a stream: tmp file removed', async () => {
    let calls = 0;
    const s = store({ io: { write: (fd, d, o, l) => (++calls === 3 ? Promise.reject(errno('ENOSPC')) : nodeStoreIo.write(fd, d, o, l)) } });
    async function* big() {
      for (let i = 0; i < 20; i++) yield randomBytes(64 * 1024);
    }
    const err = await expectStoreError(s.deliver([al], big()), 'STORE_IO');
    expect(isStorageFault(err.cause)).toBe(true);
    expect(calls).toBe(3);
    expect(await contents(s, al)).toEqual(EMPTY);
  });

  it('EIO while syncing a new maildir: STORE_IO before any message file exists', async () => {
    const s = store({ io: { fsync: async () => { throw errno('EIO'); } } });
    const err = await expectStoreError(s.deliver([al, { ...bo, folder: 'Junk' }], 'x'), 'STORE_IO');
    expect((err.cause as NodeJS.ErrnoException).code).toBe('EIO');
    expect(isStorageFault(err.cause)).toBe(true);
    expect((await filesUnder(root)).filter((f) => !f.endsWith('maildirfolder'))).toEqual([]);
  });

  it('EIO at the file fsync after the maildirs exist: nothing in new/, cur/ or tmp/', async () => {
    let failFsync = false;
    const s = store({ io: { fsync: (fd) => (failFsync ? Promise.reject(errno('EIO')) : nodeStoreIo.fsync(fd)) } });
    await s.ensureMaildir(al);
    await s.ensureMaildir(bo, 'Junk');
    failFsync = true;
    const err = await expectStoreError(s.deliver([al, { ...bo, folder: 'Junk' }], 'x'), 'STORE_IO');
    expect(isStorageFault(err.cause)).toBe(true);
    expect(await contents(s, al)).toEqual(EMPTY);
    expect(await contents(s, bo, 'Junk')).toEqual(EMPTY);
  });

  it('EIO at the directory fsync after linking: the links are taken back', async () => {
    let fileSynced = 0;
    let failDirSync = false;
    const s = store({
      io: {
        fsync: (fd) => {
          if (!failDirSync) return nodeStoreIo.fsync(fd);
          // first fsync is the message file, the next ones are new/ directories
          return ++fileSynced === 1 ? nodeStoreIo.fsync(fd) : Promise.reject(errno('EIO'));
        },
      },
    });
    await s.ensureMaildir(al);
    await s.ensureMaildir(bo);
    failDirSync = true;
    await expectStoreError(s.deliver([al, bo], 'x'), 'STORE_IO');
    expect(fileSynced).toBeGreaterThan(1);
    expect(await contents(s, al)).toEqual(EMPTY);
    expect(await contents(s, bo)).toEqual(EMPTY);
  });

  it('failure at the second link of three: first link removed, tmp/ empty everywhere', async () => {
    let links = 0;
    const s = store({ io: { link: (a, b) => (++links === 2 ? Promise.reject(errno('EIO')) : nodeStoreIo.link(a, b)) } });
    const err = await expectStoreError(s.deliver([al, bo, cy], 'x', { flags: 'S' }), 'STORE_IO');
    expect((err.cause as NodeJS.ErrnoException).code).toBe('EIO');
    expect(links).toBe(2);
    for (const box of [al, bo, cy]) expect(await contents(s, box)).toEqual(EMPTY);
    // and the store still works afterwards
    const [d] = await s.deliver([al, bo, cy], 'y');
    expect(await fs.readFile(d.path, 'utf8')).toBe('y');
  });

  it('falls back to a copy when a hard link crosses filesystems (EXDEV)', async () => {
    let links = 0;
    const s = store({ io: { link: (a, b) => (++links === 2 ? Promise.reject(errno('EXDEV')) : nodeStoreIo.link(a, b)) } });
    const body = randomBytes(5000);
    const out = await s.deliver([al, cy], body);
    const [a, c] = await Promise.all(out.map((d) => fs.stat(d.path)));
    expect(a.ino).not.toBe(c.ino);
    for (const d of out) expect(Buffer.compare(await fs.readFile(d.path), body)).toBe(0);
    expect((await contents(s, al)).tmp).toEqual([]);
    expect((await contents(s, cy)).tmp).toEqual([]);
  });

  it('abort mid-stream: STORE_ABORTED with the reason, even while the source is stalled', async () => {
    const s = store();
    const ac = new AbortController();
    let sent = 0;
    async function* stalls() {
      yield Buffer.from('Subject: part\r\n\r\n');
      sent++;
      ac.abort(new Error('client went away'));
      await new Promise(() => {}); // never yields again
    }
    const err = await expectStoreError(s.deliver([al], stalls(), { signal: ac.signal }), 'STORE_ABORTED');
    expect((err.cause as Error).message).toBe('client went away');
    expect(sent).toBe(1);
    expect(await contents(s, al)).toEqual(EMPTY);
  });

  it('an already-aborted signal creates no file at all', async () => {
    const s = store();
    await expectStoreError(s.deliver([bo], 'x', { signal: AbortSignal.abort() }), 'STORE_ABORTED');
    expect(await filesUnder(root)).toEqual([]);
  });

  it('a content error becomes STORE_ABORTED keeping the caller error as cause', async () => {
    const s = store();
    class SmugglingError extends Error {
      code = 'SMTP_BARE_LF';
    }
    const thrown = new SmugglingError('bare LF in DATA');
    async function* source() {
      yield Buffer.alloc(100_000, 0x61);
      throw thrown;
    }
    const err = await expectStoreError(s.deliver([al, bo], source()), 'STORE_ABORTED');
    expect(err.cause).toBe(thrown);
    expect(await contents(s, al)).toEqual(EMPTY);
    expect(await contents(s, bo)).toEqual(EMPTY);
  });
});

describe('names', () => {
  const hostileUsers = ['..', '.', '.hidden', 'a/b', 'a\\b', 'a\0b', 'a\nb', 'a\x7fb', '', 'x'.repeat(256), '../../etc', 'é'.repeat(128)];
  const hostileDomains = ['..', '../x', 'ex/ample', '.example.org', 'ex\0', 'a\tb', ''];
  const hostileFolders = ['..', '../x', 'a/../b', '.hidden', 'a/.b', 'a//b', '/abs', 'a/', 'x.y', 'a\\b', 'a\0b', 'a\rb', '', 'ß'.repeat(128)];

  it('refuses hostile names everywhere and creates nothing, inside or outside the root', async () => {
    const s = store();
    await fs.mkdir(root);
    for (const user of hostileUsers) {
      expect(() => assertSafeName('user', user)).toThrow(StoreError);
      await expectStoreError(s.deliver([{ user, domain: 'example.org' }], 'x'), 'STORE_BAD_NAME');
      await expectStoreError(s.ensureMaildir({ user, domain: 'example.org' }), 'STORE_BAD_NAME');
    }
    for (const domain of hostileDomains) {
      expect(() => assertSafeName('domain', domain)).toThrow(StoreError);
      await expectStoreError(s.deliver([{ user: 'al', domain }], 'x'), 'STORE_BAD_NAME');
      expect(() => s.maildirPath({ user: 'al', domain })).toThrow(StoreError);
    }
    for (const folder of hostileFolders) {
      expect(() => assertSafeName('folder', folder)).toThrow(StoreError);
      await expectStoreError(s.deliver([{ ...al, folder }], 'x'), 'STORE_BAD_NAME');
      await expectStoreError(s.ensureMaildir(al, folder), 'STORE_BAD_NAME');
      await expectStoreError(s.listMessages(al, folder), 'STORE_BAD_NAME');
    }
    // a good target next to a bad one: the whole delivery is refused before any file is written
    await expectStoreError(s.deliver([al, { ...bo, folder: '../../escape' }], 'x'), 'STORE_BAD_NAME');
    expect(await ls(root)).toEqual([]);
    expect(await ls(parent)).toEqual(['maildir']);
  });

  it('accepts ordinary and Unicode names, lower-cases user and domain, keeps folder case', async () => {
    const s = store();
    expect(s.maildirPath({ user: 'Jean.Dupont', domain: 'Example.ORG' })).toBe(path.join(root, 'example.org', 'jean.dupont'));
    expect(s.maildirPath(al, 'INBOX')).toBe(path.join(root, 'example.org', 'al'));
    expect(s.maildirPath(al, 'Inbox')).toBe(path.join(root, 'example.org', 'al'));
    expect(s.maildirPath(al, 'Lists/Node')).toBe(path.join(root, 'example.org', 'al', '.Lists.Node'));
    const [d] = await s.deliver([{ ...al, folder: 'Entwürfe/日本' }], 'x');
    expect(d.path.startsWith(path.join(root, 'example.org', 'al', '.Entwürfe.日本', 'new'))).toBe(true);
    expect(() => assertSafeName('user', 'x'.repeat(255))).not.toThrow();
  });
});

describe('ensureMaildir', () => {
  it('creates INBOX with the special folders; subfolders get maildirfolder', async () => {
    const s = store();
    const inbox = await s.ensureMaildir(al);
    expect(inbox).toBe(path.join(root, 'example.org', 'al'));
    expect(await ls(inbox)).toEqual(['.Archive', '.Drafts', '.Junk', '.Sent', '.Trash', 'cur', 'new', 'tmp']);
    expect(await ls(path.join(inbox, '.Sent'))).toEqual(['cur', 'maildirfolder', 'new', 'tmp']);
    const lists = await s.ensureMaildir(al, 'Lists/foo');
    expect(lists).toBe(path.join(inbox, '.Lists.foo'));
    expect(await ls(lists)).toEqual(['cur', 'maildirfolder', 'new', 'tmp']);
    expect(await s.ensureMaildir(al)).toBe(inbox); // idempotent
  });

  it('a first use through a subfolder also creates the INBOX', async () => {
    const s = store();
    await s.ensureMaildir(bo, 'Receipts');
    const inbox = s.maildirPath(bo);
    expect(await ls(inbox)).toEqual(['.Archive', '.Drafts', '.Junk', '.Receipts', '.Sent', '.Trash', 'cur', 'new', 'tmp']);
  });

  it('reports a failing mkdir as STORE_IO', async () => {
    const s = store({ io: { mkdir: async () => { throw errno('EROFS'); } } });
    const err = await expectStoreError(s.ensureMaildir(al), 'STORE_IO');
    expect(isStorageFault(err.cause)).toBe(true);
  });
});

describe('W= (the size with CRLF line ends, as Dovecot names it)', () => {
  const crlfSize = (b: Buffer): number => Buffer.from(b.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1').length;

  it('equals S= for CRLF content and counts each bare LF once more, from a buffer or a string', async () => {
    const s = store();
    const crlf = 'Subject: a\r\n\r\nline one\r\nline two\r\n';
    const [a] = await s.deliver([al], crlf);
    expect(sizesFromName(a.name)).toEqual({ size: crlf.length, vsize: crlf.length });
    expect(a.vsize).toBe(crlf.length);
    const bare = Buffer.from('Subject: b\n\nline one\nline two\r\nno newline at the end');
    const [b] = await s.deliver([al], bare);
    expect(sizesFromName(b.name)).toEqual({ size: bare.length, vsize: bare.length + 3 });
    expect(b.vsize).toBe(crlfSize(bare));
    // A leading LF is bare; a lone CR is not a line end IMAP converts (toCrlf leaves it).
    const [c] = await s.deliver([al], Buffer.from('\nx\ry\r\n'), { flags: 'S' });
    expect(sizesFromName(c.name)).toEqual({ size: 6, vsize: 7 });
  });

  it('counts right when a CRLF is split between streamed chunks', async () => {
    const s = store();
    const pieces = ['Subject: c\r', '\n\r', '\nbody\n', '\n', 'x\r', '\r\n', 'end\n'];
    async function* source() {
      for (const p of pieces) yield Buffer.from(p);
    }
    const whole = Buffer.from(pieces.join(''));
    const [d] = await s.deliver([al], source());
    expect(d.size).toBe(whole.length);
    expect(d.vsize).toBe(crlfSize(whole));
    expect(sizesFromName(d.name)).toEqual({ size: whole.length, vsize: crlfSize(whole) });
    // Random content in random chunks: the streamed count is the whole-buffer count.
    const random = randomBytes(200_000);
    let counted = 0;
    const counter = new BareLfCounter();
    for (let i = 0; i < random.length; i += 777) counted += counter.push(random.subarray(i, i + 777));
    expect(counted).toBe(new BareLfCounter().push(random));
  });

  it('reads S= and W= from names in any order, ignoring the flags and junk', () => {
    expect(sizesFromName('1.M2P3.host,S=10,W=12:2,S')).toEqual({ size: 10, vsize: 12 });
    expect(sizesFromName('1.M2P3.host,W=12,S=10')).toEqual({ size: 10, vsize: 12 });
    expect(sizesFromName('1.M2P3.host,S=10')).toEqual({ size: 10, vsize: null });
    expect(sizesFromName('1.M2P3.host:2,S=1,W=2')).toEqual({ size: null, vsize: null });
    expect(sizesFromName('1.M2P3.host,W=x,S=,Z=4')).toEqual({ size: null, vsize: null });
    expect(sizesFromName('123.foreign.host')).toEqual({ size: null, vsize: null });
  });
});

describe('listMessages', () => {
  it('lists new/ and cur/ with sizes and flags; a missing folder is empty', async () => {
    const s = store();
    expect(await s.listMessages(al, 'Nope')).toEqual([]);
    const [a] = await s.deliver([al], 'aaaa');
    const [b] = await s.deliver([al], 'bb', { flags: 'RS' });
    // a file written by another agent without ,S=: size comes from stat
    await fs.writeFile(path.join(s.maildirPath(al), 'cur', '123.foreign.host:2,S'), 'xyz');
    const list = await s.listMessages(al);
    expect(list.map((m) => [m.dir, m.size, m.vsize, m.flags])).toEqual(
      expect.arrayContaining([
        ['new', 4, 4, ''],
        ['cur', 2, 2, 'RS'],
        ['cur', 3, null, 'S'],
      ]),
    );
    expect(list).toHaveLength(3);
    expect(list.find((m) => m.name === a.name)?.path).toBe(a.path);
    expect(list.find((m) => m.name === b.name)?.path).toBe(b.path);
  });
});

describe('cleanTmp', () => {
  it('removes only tmp/ files older than 36 h, judged by an injected clock', async () => {
    let now = Date.now();
    const s = store({ clock: () => now });
    const [kept] = await s.deliver([al], 'delivered');
    await s.ensureMaildir(bo, 'Lists/foo');
    const stale = [path.join(s.maildirPath(al), 'tmp', 'crashed.1'), path.join(s.maildirPath(bo, 'Lists/foo'), 'tmp', 'crashed.2')];
    for (const f of stale) await fs.writeFile(f, 'half a message');

    expect(await s.cleanTmp()).toBe(0);
    now += 35 * 3600_000;
    expect(await s.cleanTmp()).toBe(0);
    expect(await s.cleanTmp(30 * 3600_000)).toBe(2); // a shorter age on request
    for (const f of stale) await fs.writeFile(f, 'again');
    now += 2 * 3600_000; // 37 h after the files were written
    expect(await s.cleanTmp()).toBe(2);
    for (const f of stale) await expect(fs.access(f)).rejects.toThrow();
    expect(await fs.readFile(kept.path, 'utf8')).toBe('delivered');
    expect(await s.cleanTmp()).toBe(0);
  });

  it('keeps a tmp file whose mtime is old but which was touched recently (ctime)', async () => {
    const s = store();
    await s.ensureMaildir(al);
    const f = path.join(s.maildirPath(al), 'tmp', 'import-in-progress');
    await fs.writeFile(f, 'x');
    await fs.utimes(f, new Date('2001-01-01'), new Date('2001-01-01'));
    expect(await s.cleanTmp()).toBe(0);
    await fs.access(f);
  });

  it('returns 0 when the root does not exist yet', async () => {
    expect(await store().cleanTmp()).toBe(0);
  });
});
