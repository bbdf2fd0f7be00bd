// An IMAP server built from its parts in the test's process (as main.ts builds it), for tests
// that need the store itself at hand: to wait for the full-text index, to spy on reads.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../src/core/log.ts';
import { LoginLimiter } from '../../src/core/login-limiter.ts';
import { ImapServer } from '../../src/imap/server.ts';
import { SummaryProvider } from '../../src/imap/message-info.ts';
import { MailStore } from '../../src/store/mailboxes.ts';
import type { UserMailboxes } from '../../src/store/mailboxes.ts';
import { MaildirStore } from '../../src/store/maildir.ts';
import { userSearch } from '../../src/store/user-search.ts';

export const BOX = { user: 'al', domain: 'example.org' };

export type InProcessImap = {
  port: number;
  root: string;
  maildir: MaildirStore;
  mail: MailStore;
  summaries: SummaryProvider;
  /** The user's mailboxes (the same object the sessions use). */
  user(): Promise<UserMailboxes>;
  /** Wait until the user's full-text index has caught up with everything it was told about. */
  indexed(): Promise<void>;
  close(): Promise<void>;
};

export async function startInProcessImap(opts: { fullText?: boolean } = {}): Promise<InProcessImap> {
  const root = await mkdtemp(join(tmpdir(), 'hearth-imap-inproc-'));
  const log = silentLogger();
  const maildir = new MaildirStore({ root, hostname: 'mx.test', fsync: false, log });
  const mail = new MailStore({ maildir, log, fullText: opts.fullText });
  const summaries = new SummaryProvider({ log });
  const server = new ImapServer({
    hostname: 'mx.test',
    log,
    backend: { authenticate: async () => BOX, open: (box) => mail.open(box) },
    limiter: new LoginLimiter(),
    plaintext: 'always',
    tls: 'plain',
    timeouts: { login: 60_000, idle: 600_000 },
    maxMessage: 10 << 20,
    maxLine: 65_536,
    connectionsPerIp: 20,
    maxConnections: 20,
    summaries,
  });
  const { port } = await server.listen(0, '127.0.0.1');
  const user = (): Promise<UserMailboxes> => mail.open(BOX);
  return {
    port,
    root,
    maildir,
    mail,
    summaries,
    user,
    indexed: async () => {
      await userSearch(await user())?.idle();
    },
    close: async () => {
      await server.close();
      await mail.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}
