// Gathering over IMAP from a real remote (a second hearth on loopback), end to end: copy, move
// and mirror modes, exactly once across runs, a refused password, UIDVALIDITY changes.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import { startTestHearth } from '../helpers/hearth.ts';
import { LOCAL_USER, REMOTE_PASS, REMOTE_USER, addAccount, control, duplicates, localMessages, mine, message, runAccount, seedRemote, useGatherPair } from './helpers.ts';
import type { Remote } from './helpers.ts';

function imapClient(port: number, user: string, pass: string): ImapFlow {
  return new ImapFlow({ host: '127.0.0.1', port, secure: false, doSTARTTLS: false, auth: { user, pass }, logger: false, disableAutoIdle: true });
}

/** The remote user's INBOX UIDs with their flags. */
async function remoteState(remote: Remote, folder = 'INBOX'): Promise<Map<number, string[]>> {
  const c = imapClient(remote.imap, REMOTE_USER, REMOTE_PASS);
  await c.connect();
  try {
    const mb = await c.mailboxOpen(folder);
    const out = new Map<number, string[]>();
    if (mb.exists > 0) for await (const m of c.fetch('1:*', { uid: true, flags: true })) out.set(m.uid, [...(m.flags ?? [])].sort());
    return out;
  } finally {
    await c.logout();
  }
}

describe('gather over IMAP', () => {
  const pair = useGatherPair({ beforeAll, afterAll, afterEach });

  it('copy mode: collects every message once, byte for byte, keeps them remotely, and only new ones next time', async () => {
    const originals = [message('one'), message('two'), message('three')];
    await seedRemote(pair.remote, originals);
    const id = await addAccount(pair.local.hearth, pair.remote);
    const first = await runAccount(pair.local.hearth, id);
    expect(first).toMatchObject({ ok: true, result: { collected: 3, deleted: 0 } });
    let got = mine(await localMessages(pair.local.setup.dataDir), id);
    expect(got.map((m) => m.subject).sort()).toEqual(['one', 'three', 'two']);
    // The original follows the trace header and the Received line unchanged.
    for (const m of got) {
      const original = originals.find((o) => o.includes(`Subject: ${m.subject}`))!;
      expect(m.content.subarray(m.content.length - original.length).equals(original)).toBe(true);
      expect(m.content.toString()).toMatch(new RegExp(`^X-Hearth-Gathered: ${id} imap:INBOX;UIDVALIDITY=\\d+;UID=\\d+\\r\\nReceived: from 127\\.0\\.0\\.1 by mx\\.test\\.example with IMAP \\(hearth gather ${id}\\); `));
      expect(m.dir).toBe('new'); // copy mode: arrives as new mail
    }
    expect((await remoteState(pair.remote)).size).toBe(3); // still there
    // \Seen was not set remotely: copy mode opens read-only and peeks.
    expect([...(await remoteState(pair.remote)).values()].every((f) => !f.includes('\\Seen'))).toBe(true);

    expect(await runAccount(pair.local.hearth, id)).toMatchObject({ ok: true, result: { collected: 0 } });
    await seedRemote(pair.remote, [message('four')]);
    expect(await runAccount(pair.local.hearth, id)).toMatchObject({ ok: true, result: { collected: 1 } });
    got = mine(await localMessages(pair.local.setup.dataDir), id);
    expect(got).toHaveLength(4);
    expect(duplicates(got)).toEqual([]);

    const [view] = (await control(pair.local.hearth, 'gather.status', { id })) as Array<{ status: { totalCollected: number; lastCollected: number; lastOkAt: number; lastError?: string } }>;
    expect(view.status).toMatchObject({ totalCollected: 4, lastCollected: 1 });
    expect(view.status.lastError).toBeUndefined();
  });

  it('keeps the internal date and delivers into the chosen folder (created if missing), from several pair.remote folders', async () => {
    await seedRemote(pair.remote, [message('in inbox')]);
    const c = imapClient(pair.remote.imap, REMOTE_USER, REMOTE_PASS);
    await c.connect();
    await c.mailboxCreate('Archive');
    await c.append('Archive', message('archived'), [], new Date('2020-05-06T07:08:09Z'));
    await c.logout();
    const id = await addAccount(pair.local.hearth, pair.remote, { folders: ['INBOX', 'Archive'], target: 'Gathered' });
    expect(await runAccount(pair.local.hearth, id)).toMatchObject({ ok: true, result: { collected: 2 } });
    const got = mine(await localMessages(pair.local.setup.dataDir, LOCAL_USER, 'Gathered'), id);
    expect(got.map((m) => m.subject).sort()).toEqual(['archived', 'in inbox']);
    const lc = imapClient(pair.local.hearth.port('imap'), LOCAL_USER, 'alice-password');
    await lc.connect();
    await lc.mailboxOpen('Gathered');
    const dates = new Map<string, string>();
    for await (const m of lc.fetch('1:*', { envelope: true, internalDate: true })) dates.set(m.envelope!.subject!, new Date(m.internalDate!).toISOString());
    await lc.logout();
    expect(dates.get('archived')).toBe('2020-05-06T07:08:09.000Z');
  });

  it('move mode: deletes remotely only what is stored here, and nothing is lost or doubled', async () => {
    await seedRemote(pair.remote, [message('m1'), message('m2')]);
    const id = await addAccount(pair.local.hearth, pair.remote, { mode: 'move' });
    expect(await runAccount(pair.local.hearth, id)).toMatchObject({ ok: true, result: { collected: 2, deleted: 2 } });
    expect((await remoteState(pair.remote)).size).toBe(0);
    expect((mine(await localMessages(pair.local.setup.dataDir), id)).map((m) => m.subject).sort()).toEqual(['m1', 'm2']);
    await seedRemote(pair.remote, [message('m3')]);
    expect(await runAccount(pair.local.hearth, id)).toMatchObject({ ok: true, result: { collected: 1, deleted: 1 } });
    const got = mine(await localMessages(pair.local.setup.dataDir), id);
    expect(got).toHaveLength(3);
    expect(duplicates(got)).toEqual([]);
  });

  it('mirror mode: keeps flags on arrival and mirrors later changes both ways', async () => {
    await seedRemote(pair.remote, [message('seen-there'), message('plain')]);
    // Mark one \Seen and \Flagged remotely before the first pull.
    let rc = imapClient(pair.remote.imap, REMOTE_USER, REMOTE_PASS);
    await rc.connect();
    await rc.mailboxOpen('INBOX');
    const uids = new Map<string, number>();
    for await (const m of rc.fetch('1:*', { uid: true, envelope: true })) uids.set(m.envelope!.subject!, m.uid);
    await rc.messageFlagsAdd(String(uids.get('seen-there')), ['\\Seen', '\\Flagged'], { uid: true });
    await rc.logout();

    const id = await addAccount(pair.local.hearth, pair.remote, { mode: 'mirror' });
    expect(await runAccount(pair.local.hearth, id)).toMatchObject({ ok: true, result: { collected: 2 } });
    let got = mine(await localMessages(pair.local.setup.dataDir), id);
    expect(got.find((m) => m.subject === 'seen-there')!.flags).toBe('FS');

    // Remote change: 'plain' becomes \Answered there. Local change: 'seen-there' loses \Flagged here.
    rc = imapClient(pair.remote.imap, REMOTE_USER, REMOTE_PASS);
    await rc.connect();
    await rc.mailboxOpen('INBOX');
    await rc.messageFlagsAdd(String(uids.get('plain')), ['\\Answered'], { uid: true });
    await rc.logout();
    const lc = imapClient(pair.local.hearth.port('imap'), LOCAL_USER, 'alice-password');
    await lc.connect();
    await lc.mailboxOpen('INBOX');
    const luid = new Map<string, number>();
    for await (const m of lc.fetch('1:*', { uid: true, envelope: true })) luid.set(m.envelope!.subject!, m.uid);
    await lc.messageFlagsRemove(String(luid.get('seen-there')), ['\\Flagged'], { uid: true });
    await lc.logout();

    const r = await runAccount(pair.local.hearth, id);
    expect(r).toMatchObject({ ok: true, result: { collected: 0, flagsToLocal: 1, flagsToRemote: 1 } });
    got = mine(await localMessages(pair.local.setup.dataDir), id);
    expect(got.find((m) => m.subject === 'plain')!.flags).toBe('R');
    expect(got.find((m) => m.subject === 'seen-there')!.flags).toBe('S');
    const remoteFlags = await remoteState(pair.remote);
    expect(remoteFlags.get(uids.get('seen-there')!)).toEqual(['\\Seen']);
    expect(remoteFlags.get(uids.get('plain')!)).toEqual(['\\Answered']);
    // Steady state: nothing more to do.
    expect(await runAccount(pair.local.hearth, id)).toMatchObject({ ok: true, result: { flagsToLocal: 0, flagsToRemote: 0 } });
  });

  it('a refused password stops the account and says what to do; a new password resumes it', async () => {
    await seedRemote(pair.remote, [message('after fix')]);
    const id = await addAccount(pair.local.hearth, pair.remote, { intervalMs: 1000 }, 'wrong-password');
    const r = await runAccount(pair.local.hearth, id);
    expect(r.ok).toBe(false);
    expect(r.code).toBe('GATHER_AUTH_FAILED');
    expect(r.error).toContain(`the server refused the password for ${REMOTE_USER} at 127.0.0.1`);
    expect(r.error).toContain(`hearth gather passwd ${id}`);
    expect(r.error).not.toContain('wrong-password');
    const [view] = (await control(pair.local.hearth, 'gather.status', { id })) as Array<{ status: { stopped: boolean; lastError: string } }>;
    expect(view.status.stopped).toBe(true);
    await control(pair.local.hearth, 'gather.passwd', { id, password: REMOTE_PASS });
    // Resumed by the scheduler (no manual run): the mail arrives.
    const { eventually } = await import('./helpers.ts');
    await eventually(async () => ((mine(await localMessages(pair.local.setup.dataDir), id)).length === 1 ? true : undefined), 15_000);
    const [after] = (await control(pair.local.hearth, 'gather.status', { id })) as Array<{ status: { stopped: boolean; lastError?: string } }>;
    expect(after.status.stopped).toBe(false);
  });

  it('a UIDVALIDITY change re-syncs by Message-ID without duplicates', async () => {
    await seedRemote(pair.remote, [message('a'), message('b')]);
    const id = await addAccount(pair.local.hearth, pair.remote);
    expect(await runAccount(pair.local.hearth, id)).toMatchObject({ ok: true, result: { collected: 2 } });
    // Rebuild the pair.remote index: the server hands out a new UIDVALIDITY for the same messages.
    await pair.remote.hearth.close();
    await rm(join(pair.remote.setup.dataDir, 'example.test', 'bob', 'hearth-index.sqlite'), { force: true });
    await rm(join(pair.remote.setup.dataDir, 'example.test', 'bob', 'hearth-index.sqlite-wal'), { force: true });
    await rm(join(pair.remote.setup.dataDir, 'example.test', 'bob', 'hearth-index.sqlite-shm'), { force: true });
    pair.remote.hearth = await startTestHearth(pair.remote.setup);
    pair.remote.imap = pair.remote.hearth.port('imap');
    pair.remote.pop3 = pair.remote.hearth.port('pop3');
    await seedRemote(pair.remote, [message('c')]);
    // The account points at the old port: re-add it under the same name (the ledger is kept).
    await control(pair.local.hearth, 'gather.remove', { id });
    await addAccount(pair.local.hearth, pair.remote, { name: id });
    const r = await runAccount(pair.local.hearth, id);
    expect(r).toMatchObject({ ok: true, result: { collected: 1, remapped: 2 } });
    const got = mine(await localMessages(pair.local.setup.dataDir), id);
    expect(got.map((m) => m.subject).sort()).toEqual(['a', 'b', 'c']);
  });
});
