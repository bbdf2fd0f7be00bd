// Holds one incoming message while the sender checks run. DKIM, DMARC and ARC need the whole
// message before we can answer DATA, so it cannot stream straight into the Maildir as unchecked
// mail does. Small messages (the vast majority) stay in memory; the first `memoryBytes` are
// always kept in memory (that is where the header is), and anything beyond goes to a private
// temp file, so memory per transaction stays bounded even with 25 MB messages. The caller's
// DataGuard bounds the total.
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

let spoolCounter = 0;

export class MessageSpool {
  readonly prefix: Buffer;
  readonly size: number;
  readonly #file: string | undefined;

  private constructor(prefix: Buffer, size: number, file: string | undefined) {
    this.prefix = prefix;
    this.size = size;
    this.#file = file;
  }

  /** Read `source` to its end. On error the partial temp file is removed before rethrowing. */
  static async collect(source: AsyncIterable<Uint8Array>, opts: { memoryBytes: number; dir: string }): Promise<MessageSpool> {
    const chunks: Buffer[] = [];
    let inMemory = 0;
    let size = 0;
    let fh: FileHandle | undefined;
    let file: string | undefined;
    try {
      for await (const c of source) {
        let chunk = Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
        size += chunk.length;
        if (inMemory < opts.memoryBytes) {
          const take = Math.min(chunk.length, opts.memoryBytes - inMemory);
          chunks.push(take === chunk.length ? chunk : chunk.subarray(0, take));
          inMemory += take;
          chunk = chunk.subarray(take);
          if (chunk.length === 0) continue;
        }
        if (!fh) {
          await mkdir(opts.dir, { recursive: true, mode: 0o700 });
          file = join(opts.dir, `${Date.now()}.${process.pid}.${++spoolCounter}.eml`);
          fh = await open(file, 'wx', 0o600);
        }
        await fh.write(chunk);
      }
      await fh?.close();
      fh = undefined;
      return new MessageSpool(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, inMemory), size, file);
    } catch (err) {
      await fh?.close().catch(() => undefined);
      if (file) await unlink(file).catch(() => undefined);
      throw err;
    }
  }

  /** Remove spool files left by a crash. */
  static async sweep(dir: string): Promise<number> {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return 0;
    }
    let removed = 0;
    for (const name of names.filter((n) => n.endsWith('.eml'))) {
      await unlink(join(dir, name)).then(() => removed++, () => undefined);
    }
    return removed;
  }

  get onDisk(): boolean {
    return this.#file !== undefined;
  }

  /** The whole message as a Buffer (only when it is all in memory) or a fresh stream of it. */
  async *read(from = 0): AsyncGenerator<Buffer> {
    if (from < this.prefix.length) yield this.prefix.subarray(from);
    if (this.#file) {
      const start = Math.max(0, from - this.prefix.length);
      for await (const chunk of createReadStream(this.#file, { start, highWaterMark: 256 * 1024 })) yield chunk as Buffer;
    }
  }

  async dispose(): Promise<void> {
    if (this.#file) await unlink(this.#file).catch(() => undefined);
  }
}
