// A Maildir and MailStores in a temporary folder, fresh for each test, closed and removed after
// it: the fixture of the store tests that restart a MailStore over the same files.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import { MaildirStore } from '../../src/store/maildir.ts';
import { MailStore } from '../../src/store/mailboxes.ts';

export const al = { user: 'al', domain: 'example.org' };

export type StoreFixture = {
  /** This test's Maildir (delivery clock ticks 1 ms per message from 2025-01-01). */
  readonly maildir: MaildirStore;
  /** A new MailStore over it, closed after the test. */
  mailStore(): MailStore;
  /** Close every MailStore opened so far (a restart keeps the files). */
  closeStores(): Promise<void>;
};

export function useStoreFixture(prefix: string): StoreFixture {
  let parent = '';
  let maildir: MaildirStore | undefined;
  const stores: MailStore[] = [];
  beforeEach(async () => {
    parent = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
    let now = Date.UTC(2025, 0, 1);
    maildir = new MaildirStore({ root: path.join(parent, 'maildir'), hostname: 'mx.test', fsync: false, clock: () => (now += 1) });
  });
  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close();
    await fs.rm(parent, { recursive: true, force: true });
  });
  return {
    get maildir() {
      return maildir!;
    },
    mailStore() {
      const s = new MailStore({ maildir: maildir!, fullText: false });
      stores.push(s);
      return s;
    },
    async closeStores() {
      for (const s of stores.splice(0)) await s.close();
    },
  };
}
