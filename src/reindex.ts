// `hearth reindex`: rebuild what the indexes cache from the Maildir, which stays the source of
// truth. Every folder is read again (new, vanished and re-flagged files), ENVELOPE/
// BODYSTRUCTURE summaries are computed afresh, and the full-text index is built from scratch.
// UIDs and UIDVALIDITY are kept, so mail clients do not download everything again.
import { rm } from 'node:fs/promises';
import { silentLogger } from './core/log.ts';
import type { Logger } from './core/log.ts';
import { WorkerPool } from './core/workers.ts';
import { SUMMARY_TASK_MODULE, SummaryProvider } from './imap/message-info.ts';
import { FullTextIndex } from './store/fulltext.ts';
import { MailStore } from './store/mailboxes.ts';
import type { MaildirStore, MailboxRef } from './store/maildir.ts';

export type ReindexProgress = { user: string; phase: 'scan' | 'summaries' | 'search'; done: number; total: number };
export type ReindexResult = { user: string; folders: number; messages: number; ms: number };

const BATCH = 200;

export async function reindexUsers(opts: { maildir: MaildirStore; users: MailboxRef[]; log?: Logger; onProgress?: (p: ReindexProgress) => void }): Promise<ReindexResult[]> {
  const log = opts.log ?? silentLogger();
  const pool = new WorkerPool({ log: log.child({ svc: 'workers' }), taskModules: [SUMMARY_TASK_MODULE] });
  // Search is rebuilt explicitly below, so the store must not start its own background indexing.
  const mail = new MailStore({ maildir: opts.maildir, log, fullText: false });
  const summaries = new SummaryProvider({ log, pool });
  const results: ReindexResult[] = [];
  try {
    for (const box of opts.users) {
      const started = Date.now();
      const user = `${box.user}@${box.domain}`;
      const mailboxes = await mail.open(box);
      const folders = (await mailboxes.listFolders()).map((f) => f.name);
      const states = [];
      for (let i = 0; i < folders.length; i++) {
        states.push({ folder: folders[i], state: await mailboxes.rescan(folders[i]) });
        opts.onProgress?.({ user, phase: 'scan', done: i + 1, total: folders.length });
      }
      const total = states.reduce((n, s) => n + s.state.messages.length, 0);
      let done = 0;
      for (const { folder, state } of states) {
        for (let i = 0; i < state.messages.length; i += BATCH) {
          const batch = state.messages.slice(i, i + BATCH);
          await summaries.warm(mailboxes, folder, batch);
          done += batch.length;
          opts.onProgress?.({ user, phase: 'summaries', done, total });
        }
      }
      const ftPath = FullTextIndex.pathFor(mailboxes.dir);
      for (const suffix of ['', '-wal', '-shm']) await rm(ftPath + suffix, { force: true });
      const ft = FullTextIndex.open(ftPath, log);
      try {
        done = 0;
        for (const { folder, state } of states) {
          await ft.catchUp(mailboxes, folder);
          done += state.messages.length;
          opts.onProgress?.({ user, phase: 'search', done, total });
        }
      } finally {
        ft.close();
      }
      results.push({ user, folders: folders.length, messages: total, ms: Date.now() - started });
      log.info({ user, folders: folders.length, messages: total }, 'reindexed');
    }
  } finally {
    await mail.close();
    await pool.close();
  }
  return results;
}
