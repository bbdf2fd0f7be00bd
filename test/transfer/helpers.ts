// Shared by the transfer tests: run the `hearth` command as a child process, open a MailStore
// on a test setup's data directory (what the command does when no server runs), and write a
// backup archive by hand (for hostile or odd archives).
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { pack as tarPack } from 'tar-stream';
import { MailStore } from '../../src/store/mailboxes.ts';
import { MaildirStore } from '../../src/store/maildir.ts';
import type { TestSetup } from '../helpers/hearth.ts';

export const FIXTURES = new URL('../fixtures/mbox/', import.meta.url).pathname;

export { runCli } from '../helpers/cli.ts';

/** `fullText: false` is what the command does: the import then indexes in batches itself. */
export function openStore(setup: TestSetup, opts: { fullText?: boolean } = {}): MailStore {
  return new MailStore({ maildir: new MaildirStore({ root: setup.dataDir, hostname: 'mx.test.example', fsync: false }), fullText: opts.fullText });
}

export const alice = { user: 'alice', domain: 'example.test' };
export const bob = { user: 'bob', domain: 'example.test' };

/** Every message of a folder: bytes, flags (sorted) and internal date, in UID order. */
export async function folderContents(mail: MailStore, box: { user: string; domain: string }, folder: string): Promise<Array<{ content: Buffer; flags: string[]; internalDate: number }>> {
  const m = await mail.open(box);
  const state = await m.sync(folder);
  const out = [];
  for (const rec of state.messages) out.push({ content: (await m.readMessage(folder, rec.uid))!, flags: [...rec.flags].sort(), internalDate: rec.internalDate });
  return out;
}

export type CraftedEntry = { name: string; body?: string | Buffer; type?: 'file' | 'directory'; pax?: Record<string, string> };

/**
 * A tar made by hand whose manifest lists every file entry correctly, plus `extra`: folders,
 * modes, and more fields for a file's manifest record (`fields`, by path).
 */
export async function craftedArchive(file: string, entries: CraftedEntry[], extra: { dirs?: Array<{ path: string; mode: number }>; mode?: Record<string, number>; fields?: Record<string, object> } = {}): Promise<void> {
  const p = tarPack();
  const files = [];
  for (const e of entries) {
    if (e.type === 'directory') {
      p.entry({ name: e.name, type: 'directory' });
      continue;
    }
    const body = Buffer.from(e.body ?? '');
    p.entry({ name: e.name, pax: e.pax }, body);
    const path = e.pax?.path ?? e.name;
    files.push({ path, size: body.length, sha256: createHash('sha256').update(body).digest('hex'), mode: extra.mode?.[path] ?? 0o600, mtimeMs: 1_700_000_000_000, ...extra.fields?.[path] });
  }
  const counts = { users: 0, dkimKeys: 0, queueFiles: 0, mailboxes: 0, messages: 0, files: files.length, bytes: files.reduce((n, f) => n + f.size, 0) };
  const manifest = { format: 'hearth-backup', version: 2, createdAt: '2026-01-01T00:00:00.000Z', counts, vanished: 0, files, dirs: extra.dirs ?? [] };
  p.entry({ name: 'manifest.json' }, JSON.stringify(manifest));
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p as unknown as AsyncIterable<Buffer>) chunks.push(Buffer.from(c));
  await writeFile(file, Buffer.concat(chunks));
}
