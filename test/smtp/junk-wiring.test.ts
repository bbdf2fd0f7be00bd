// The junk filter in the running server: it learns from the user's IMAP moves (into Junk =
// spam, back out of Junk = ham) and then files new inbound mail by itself.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImapFlow } from 'imapflow';
import { deliver, startImapHearth } from '../imap/imap-helpers.ts';
import type { Running } from '../imap/imap-helpers.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import type { DnsServer } from '../helpers/dns-server.ts';
import { stopAll } from '../helpers/remote-mx.ts';

const SPAM_WORDS = ['cheap', 'pills', 'casino', 'bonus', 'winner', 'crypto', 'investment', 'guaranteed', 'unsubscribe', 'exclusive', 'offer', 'limited', 'viagra', 'lottery', 'prize', 'click', 'urgent', 'million'];
const HAM_WORDS = ['dinner', 'sunday', 'garden', 'school', 'grandma', 'recipe', 'holiday', 'photos', 'birthday', 'football', 'homework', 'library', 'weekend', 'kitchen', 'bicycle', 'concert', 'picnic', 'neighbours'];

/** A deterministic pseudo-random message body from a vocabulary. */
function body(words: string[], seed: number, extra: string): string {
  const out: string[] = [];
  let x = seed * 7919 + 13;
  for (let i = 0; i < 60; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out.push(words[x % words.length]);
  }
  return `${out.join(' ')}\r\n${extra}`;
}
const spam = (i: number) => body(SPAM_WORDS, i, 'Visit https://deals.spam.example/win now');
const ham = (i: number) => body(HAM_WORDS, i, 'Love, Mum');

describe('junk filter in the running server', () => {
  let setup: TestSetup;
  let hearth: Running;
  let dns: DnsServer;

  beforeAll(async () => {
    dns = await startDnsServer({});
    // check_loopback: our test client is on loopback, and only checked mail is scored.
    ({ setup, hearth } = await startImapHearth(`[inbound]\ncheck_loopback = true\n[dns]\nservers = ["127.0.0.1:${dns.port}"]\ntimeout = "2s"\n`));
  });
  afterAll(() => stopAll(hearth, dns, setup));

  it('learns from moves into and out of Junk, then files new spam into Junk and ham into INBOX', async () => {
    for (let i = 0; i < 12; i++) await deliver(hearth.smtpPort, 'alice@example.test', `spam ${i}`, spam(i));
    for (let i = 0; i < 12; i++) await deliver(hearth.smtpPort, 'alice@example.test', `family ${i}`, ham(i));
    const client = new ImapFlow({ host: '127.0.0.1', port: hearth.port('imap'), secure: false, tls: { rejectUnauthorized: false }, auth: { user: 'alice@example.test', pass: 'alice-password' }, logger: false });
    await client.connect();
    try {
      await client.mailboxOpen('INBOX');
      const spamUids = (await client.search({ subject: 'spam' }, { uid: true })) || [];
      const hamUids = (await client.search({ subject: 'family' }, { uid: true })) || [];
      expect(spamUids).toHaveLength(12);
      expect(hamUids).toHaveLength(12);
      // The user marks spam by moving it to Junk…
      await client.messageMove(spamUids, 'Junk', { uid: true });
      // …and rescues ham that had been filed in Junk by moving it back out.
      await client.messageMove(hamUids, 'Junk', { uid: true });
      await client.mailboxOpen('Junk');
      const inJunk = (await client.search({ subject: 'family' }, { uid: true })) || [];
      await client.messageMove(inJunk, 'INBOX', { uid: true });
    } finally {
      await client.logout();
    }

    // Training runs in the background after each move: wait (bounded) until a new spam lands in Junk.
    const where = async (subject: string): Promise<string | undefined> => {
      const c = new ImapFlow({ host: '127.0.0.1', port: hearth.port('imap'), secure: false, tls: { rejectUnauthorized: false }, auth: { user: 'alice@example.test', pass: 'alice-password' }, logger: false });
      await c.connect();
      try {
        for (const folder of ['INBOX', 'Junk']) {
          await c.mailboxOpen(folder);
          if (((await c.search({ subject }, { uid: true })) || []).length > 0) return folder;
        }
        return undefined;
      } finally {
        await c.logout();
      }
    };
    let folder: string | undefined;
    for (let attempt = 0; attempt < 20 && folder !== 'Junk'; attempt++) {
      await deliver(hearth.smtpPort, 'alice@example.test', `fresh spam ${attempt}`, spam(100 + attempt));
      folder = await where(`fresh spam ${attempt}`);
      if (folder !== 'Junk') await new Promise((r) => setTimeout(r, 100));
    }
    expect(folder).toBe('Junk');
    await deliver(hearth.smtpPort, 'alice@example.test', 'fresh family news', ham(200));
    expect(await where('fresh family news')).toBe('INBOX');
  }, 60_000);
});
