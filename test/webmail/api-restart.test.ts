// The first message list after a restart: while the INBOX is still loading, the store answers
// from its index file (peekNewest); the list must be the one the loaded folder gives, and a
// Maildir changed behind the index's back must still show as it is.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { silentLogger } from '../../src/core/log.ts';
import { SummaryProvider } from '../../src/imap/message-info.ts';
import { MailStore, UserMailboxes } from '../../src/store/mailboxes.ts';
import type { FolderPage } from '../../src/store/mailboxes.ts';
import { createWebmailApp } from '../../src/webmail/server.ts';
import type { WebmailApp } from '../../src/webmail/server.ts';
import type { MessageList } from '../../src/webmail/api-types.ts';
import { client, makeHarness, message } from './api-harness.ts';
import type { Harness } from './api-harness.ts';

const aliceBox = { user: 'alice', domain: 'example.test' };
let h: Harness;
let running: Array<{ app: WebmailApp; mail: MailStore }>;

beforeEach(async () => {
  h = await makeHarness();
  running = [];
});
afterEach(async () => {
  vi.restoreAllMocks();
  for (const r of running) {
    r.app.shutdown();
    await r.mail.close();
  }
  await h.close();
});

/** A new store and webmail on the same Maildir, as after a restart of hearth. */
async function restart(): Promise<{ app: WebmailApp; mail: MailStore }> {
  await h.mail.close();
  for (const r of running.splice(0)) {
    r.app.shutdown();
    await r.mail.close();
  }
  const log = silentLogger();
  const mail = new MailStore({ maildir: h.maildir, log });
  const app = createWebmailApp({ ...h.deps, mail, summaries: new SummaryProvider({ log }) });
  running.push({ app, mail });
  return { app, mail };
}

/**
 * Hold back the INBOX warm-up that login starts, as a 100,000-message folder's load is still
 * running when the browser's first list arrives; returns the gate's opener.
 */
function slowWarmUp(): () => void {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const original = UserMailboxes.prototype.syncShared;
  vi.spyOn(UserMailboxes.prototype, 'syncShared').mockImplementationOnce(async function (this: UserMailboxes, folder: string) {
    await gate;
    return original.call(this, folder);
  });
  return open;
}

async function list(app: WebmailApp, query: string): Promise<MessageList> {
  const api = client(app);
  const login = await api.login('alice@example.test', 'alice-password');
  const r = await api.json<MessageList>('GET', `/api/folders/INBOX/messages?${query}`, login);
  expect(r.status).toBe(200);
  return r.body;
}

/** Age new/ and cur/ and sync, so the index records mtimes it can trust. */
async function settle(mail: MailStore): Promise<void> {
  const dir = h.maildir.maildirPath(aliceBox);
  const old = new Date(Date.now() - 60_000);
  for (const sub of ['new', 'cur']) await fs.utimes(path.join(dir, sub), old, old);
  await (await mail.open(aliceBox)).sync('INBOX');
}

it('the first list after a restart comes from the index file and equals the loaded list', async () => {
  for (let i = 1; i <= 9; i++) await h.deliver('alice@example.test', message({ subject: `message ${i}`, date: `Mon, 0${i} Mar 2026 10:00:00 +0000` }));
  const mb = await h.mail.open(aliceBox);
  await mb.sync('INBOX'); // the deliveries above found no open index to tell
  await mb.setFlags('INBOX', [2, 5, 9], 'add', ['\\Seen']);
  await mb.setFlags('INBOX', [5], 'add', ['$Work', '\\Flagged']);
  await settle(h.mail);
  // Only the newest three have summaries cached: three more are parsed on the first list.
  const before = await list(h.app, 'offset=0&limit=3');
  expect(before.messages.map((m) => m.subject)).toEqual(['message 9', 'message 8', 'message 7']);

  const { app } = await restart();
  const warmed = slowWarmUp();
  const peek = vi.spyOn(UserMailboxes.prototype, 'peekNewest');
  const first = await list(app, 'offset=0&limit=6');
  // It was the index file that answered, not the loaded folder.
  expect(peek).toHaveBeenCalledTimes(1);
  const answered = (await peek.mock.results[0].value) as FolderPage | undefined;
  expect(answered?.messages.map((m) => m.uid)).toEqual([9, 8, 7, 6, 5, 4]);
  expect(first.total).toBe(9);
  expect(first.messages.slice(0, 3)).toEqual(before.messages);
  expect(first.messages.map((m) => m.subject)).toEqual(['message 9', 'message 8', 'message 7', 'message 6', 'message 5', 'message 4']);
  expect(first.messages.map((m) => m.flags)).toEqual([['\\Seen'], [], [], [], ['\\Seen', '\\Flagged', '$Work'], []]);
  // The same list once the folder is in memory (the peek started loading it).
  warmed();
  expect(await list(app, 'offset=0&limit=6')).toEqual(first);
  expect(peek.mock.results.length).toBe(2);
  expect(await peek.mock.results[1].value).toBeUndefined();
  expect((await list(app, 'offset=6&limit=6')).messages.map((m) => m.subject)).toEqual(['message 3', 'message 2', 'message 1']);
});

it('a message added to the Maildir by another program while hearth was down is in the first list', async () => {
  for (let i = 1; i <= 4; i++) await h.deliver('alice@example.test', message({ subject: `message ${i}` }));
  await settle(h.mail);
  const { app } = await restart();
  // Another delivery agent writes straight into new/, and no one tells the index.
  await fs.writeFile(path.join(h.maildir.maildirPath(aliceBox), 'new', `${Math.floor(Date.now() / 1000)}.M1P1.mda`), message({ subject: 'behind your back' }));
  slowWarmUp();
  const peek = vi.spyOn(UserMailboxes.prototype, 'peekNewest');
  const first = await list(app, 'offset=0&limit=10');
  expect(first.total).toBe(5);
  expect(first.messages.map((m) => m.subject)).toEqual(['behind your back', 'message 4', 'message 3', 'message 2', 'message 1']);
  expect(first.messages[0].flags).toEqual([]);
  expect(await peek.mock.results[0].value).toBeUndefined();
});

it('the folder list after a restart answers from the index file while the INBOX is still loading', async () => {
  for (let i = 1; i <= 5; i++) await h.deliver('alice@example.test', message({ subject: `message ${i}` }));
  const mb = await h.mail.open(aliceBox);
  await mb.sync('INBOX');
  await mb.setFlags('INBOX', [1, 2], 'add', ['\\Seen']);
  await mb.createFolder('Lists');
  // Every folder settled, as on a server that has run a while (INBOX last: settle does it).
  const old = new Date(Date.now() - 60_000);
  for (const { name } of (await mb.listFolders()).filter((f) => f.name !== 'INBOX')) {
    for (const sub of ['new', 'cur']) await fs.utimes(path.join(h.maildir.maildirPath(aliceBox, name), sub), old, old);
    await mb.sync(name);
  }
  await settle(h.mail);
  const { app } = await restart();
  const warmed = slowWarmUp();
  const api = client(app);
  const login = await api.login('alice@example.test', 'alice-password');
  type Folder = { name: string; total: number; unseen: number };
  // The counts come from the index file: no folder waits for a load (a 100,000-message INBOX
  // takes a tenth of a second), and none is read whole just to be counted.
  const status = vi.spyOn(UserMailboxes.prototype, 'folderStatus');
  const folders = (await api.json<Folder[]>('GET', '/api/folders', login)).body;
  expect(status.mock.calls.map((c) => c[0])).toEqual([]);
  expect(folders.find((f) => f.name === 'INBOX')).toMatchObject({ total: 5, unseen: 3 });
  expect(folders.find((f) => f.name === 'Lists')).toMatchObject({ total: 0, unseen: 0 });
  // Once loaded, the folders answer from memory, with the same counts.
  warmed();
  const again = (await api.json<Folder[]>('GET', '/api/folders', login)).body;
  expect(again).toEqual(folders);
  // A Maildir changed behind the index's back is counted by a real scan.
  await fs.writeFile(path.join(h.maildir.maildirPath(aliceBox, 'Lists'), 'new', `${Math.floor(Date.now() / 1000)}.M2P2.mda`), message({ subject: 'list mail' }));
  const { app: app2 } = await restart();
  const api2 = client(app2);
  const login2 = await api2.login('alice@example.test', 'alice-password');
  const after = (await api2.json<Folder[]>('GET', '/api/folders', login2)).body;
  expect(after.find((f) => f.name === 'Lists')).toMatchObject({ total: 1, unseen: 1 });
});
