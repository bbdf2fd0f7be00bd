// Shared by the transfer tests: run the `hearth` command as a child process, and open a
// MailStore on a test setup's data directory (what the command does when no server runs).
import { execFile } from 'node:child_process';
import { MailStore } from '../../src/store/mailboxes.ts';
import { MaildirStore } from '../../src/store/maildir.ts';
import { CLI } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';

export const FIXTURES = new URL('../fixtures/mbox/', import.meta.url).pathname;

export function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, NO_COLOR: '1' }, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

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
