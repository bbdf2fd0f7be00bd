// POP3 next to a real IMAP client (imapflow) on the same mailbox: UIDL is the IMAP identity
// (UID + UIDVALIDITY) and is never reused; an IMAP expunge during a POP3 session; a delivery
// during a POP3 session.
import { describe, expect, it } from 'vitest';
import { ImapFlow } from 'imapflow';
import { deliver } from '../imap/imap-helpers.ts';
import { startTestHearth } from '../helpers/hearth.ts';
import { POP_LISTENERS, popLogin, popMulti, withHearth } from './pop3-helpers.ts';
import type { Running } from './pop3-helpers.ts';

const LISTENERS = `${POP_LISTENERS}[listeners.imap]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n`;

function imapClient(hearth: Running): ImapFlow {
  return new ImapFlow({ host: '127.0.0.1', port: hearth.port('imap'), secure: false, doSTARTTLS: false, auth: { user: 'alice@example.test', pass: 'alice-password' }, logger: false });
}

/** UIDL strings of a POP3 session, by message number ("1" -> "0000000100000ABC"). */
async function uidls(hearth: Running): Promise<Map<string, string>> {
  const c = await popLogin(hearth.port('pop3'));
  const { body } = await popMulti(c, 'UIDL');
  await c.command('QUIT');
  return new Map(body.split('\r\n').filter(Boolean).map((l) => l.split(' ') as [string, string]));
}

const hex = (n: number | bigint) => n.toString(16).toUpperCase().padStart(8, '0');

describe('POP3 UIDL and IMAP share one identity', () => {
  it('UIDL is the IMAP UID and UIDVALIDITY; a deleted message\'s UIDL is never given to another, even after a restart', async () => {
    await withHearth(LISTENERS, async (first, setup) => {
      let hearth = first;
      for (const subject of ['one', 'two']) await deliver(hearth.smtpPort, 'alice@example.test', subject);
      const imap = imapClient(hearth);
      await imap.connect();
      let uidValidity: bigint;
      const uids: number[] = [];
      try {
        const box = await imap.mailboxOpen('INBOX');
        uidValidity = box.uidValidity;
        for await (const m of imap.fetch('1:*', { uid: true })) uids.push(m.uid);
      } finally {
        await imap.logout();
      }
      const before = await uidls(hearth);
      expect([...before.values()]).toEqual(uids.map((uid) => `${hex(uid)}${hex(uidValidity)}`));

      // DELE message 2 and QUIT; the next delivery gets a new UIDL, not the deleted one.
      const c = await popLogin(hearth.port('pop3'));
      expect(await c.command('DELE 2')).toMatch(/^\+OK/);
      expect(await c.command('QUIT')).toMatch(/1 message deleted/);
      await deliver(hearth.smtpPort, 'alice@example.test', 'three');
      const after = await uidls(hearth);
      expect(after.size).toBe(2);
      expect(after.get('1')).toBe(before.get('1'));
      expect(after.get('2')).not.toBe(before.get('2'));
      const used = new Set([...before.values(), ...after.values()]);

      // After a restart: the same UIDLs, and a new delivery still gets a fresh one.
      await hearth.close();
      hearth = await startTestHearth(setup);
      Object.assign(first, hearth); // withHearth closes `first`
      expect(await uidls(hearth)).toEqual(after);
      await deliver(hearth.smtpPort, 'alice@example.test', 'four');
      const restarted = await uidls(hearth);
      expect(restarted.size).toBe(3);
      expect(used.has(restarted.get('3')!)).toBe(false);
    });
  });
});

describe('POP3 with a concurrent IMAP session', () => {
  it('an IMAP expunge mid-session: RETR gets -ERR, numbering kept, QUIT deletes only what was asked', async () => {
    await withHearth(LISTENERS, async (hearth) => {
      for (const subject of ['m1', 'm2', 'm3']) await deliver(hearth.smtpPort, 'alice@example.test', subject);
      const pop = await popLogin(hearth.port('pop3'));
      const uidl = await popMulti(pop, 'UIDL');
      const imap = imapClient(hearth);
      await imap.connect();
      try {
        await imap.mailboxOpen('INBOX');
        const uids: number[] = [];
        for await (const m of imap.fetch('1:*', { uid: true })) uids.push(m.uid);
        expect(await imap.messageDelete(String(uids[1]), { uid: true })).toBe(true); // STORE \Deleted + EXPUNGE

        expect(await pop.command('RETR 2')).toBe('-ERR message 2 no longer exists (removed by another session)');
        expect(await pop.command('LIST 2')).toMatch(/^\+OK 2 \d+$/); // the snapshot keeps its numbering
        expect((await popMulti(pop, 'UIDL')).body).toBe(uidl.body);
        const retr3 = await popMulti(pop, 'RETR 3');
        expect(retr3.body).toContain('Subject: m3');
        expect(await pop.command('DELE 1')).toMatch(/^\+OK/);
        expect(await pop.command('DELE 2')).toMatch(/^\+OK/); // already gone: harmless
        expect(await pop.command('QUIT')).toMatch(/^\+OK .*signing off/);

        const next = await popLogin(hearth.port('pop3'));
        expect(await next.command('STAT')).toMatch(/^\+OK 1 \d+$/);
        expect((await popMulti(next, 'TOP 1 0')).body).toContain('Subject: m3');
        await next.command('QUIT');
        await imap.noop();
        const left: string[] = [];
        for await (const m of imap.fetch('1:*', { uid: true, envelope: true })) left.push(m.envelope?.subject ?? `uid ${m.uid}`);
        expect(left).toEqual(['m3']);
      } finally {
        await imap.logout();
      }
    });
  });

  it('a message delivered during a POP3 session is not in its snapshot, and is there in the next', async () => {
    await withHearth(LISTENERS, async (hearth) => {
      await deliver(hearth.smtpPort, 'alice@example.test', 'old');
      const pop = await popLogin(hearth.port('pop3'));
      const stat = await pop.command('STAT');
      expect(stat).toMatch(/^\+OK 1 \d+$/);
      await deliver(hearth.smtpPort, 'alice@example.test', 'new');
      expect(await pop.command('STAT')).toBe(stat);
      expect(await pop.command('LIST 2')).toBe('-ERR no such message 2');
      expect(await pop.command('QUIT')).toMatch(/^\+OK/);
      const next = await popLogin(hearth.port('pop3'));
      expect(await next.command('STAT')).toMatch(/^\+OK 2 \d+$/);
      expect((await popMulti(next, 'TOP 2 0')).body).toContain('Subject: new');
      next.close();
    });
  });
});
