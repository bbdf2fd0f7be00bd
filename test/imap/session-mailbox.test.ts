// Selected-state semantics over raw sockets: \Seen from BODY[], RFC 3501 7.4.1 (no EXPUNGE
// under FETCH/STORE/SEARCH by number), CONDSTORE (CHANGEDSINCE, UNCHANGEDSINCE → MODIFIED),
// EXAMINE, CLOSE, UID EXPUNGE, MOVE's untagged COPYUID, LIST patterns and selection options,
// bare-LF files, changes made directly in the Maildir, and IDLE over a raw socket.
import { readdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestSetup } from '../helpers/hearth.ts';
import { RawImap, deliver, startImapHearth } from './imap-helpers.ts';
import type { Running } from './imap-helpers.ts';

describe('IMAP mailbox semantics (raw socket)', () => {
  let setup: TestSetup;
  let hearth: Running;
  let port: number;
  const carolDir = (): string => join(setup.dataDir, 'example.test', 'carol');

  beforeAll(async () => {
    ({ setup, hearth } = await startImapHearth());
    port = hearth.port('imap');
  });
  afterAll(async () => {
    await hearth?.close();
    await setup?.cleanup();
  });

  async function fresh(user: string, count: number): Promise<RawImap> {
    for (let i = 1; i <= count; i++) await deliver(hearth.smtpPort, `${user}@example.test`, `msg ${i}`, `Body ${i}.`);
    const c = await RawImap.connect(port);
    await c.login(`${user}@example.test`, `${user}-password`);
    return c;
  }

  beforeAll(async () => {
    const { UsersFile } = await import('../../src/config/users.ts');
    const users = new UsersFile(join(setup.configDir, 'users'));
    for (const u of ['carol', 'dave', 'erin', 'frank', 'gina']) await users.add(`${u}@example.test`, `${u}-password`);
    await hearth.directory.reload();
  });

  it('BODY[] without PEEK sets \\Seen and reports FLAGS; EXAMINE never does', async () => {
    const c = await fresh('carol', 2);
    await c.ok('EXAMINE INBOX');
    const peekRo = await c.ok('FETCH 1 BODY[TEXT]');
    expect(peekRo[0]).toMatch(/^\* 1 FETCH \(BODY\[TEXT\] \{\d+\}$/);
    expect(peekRo.join('\n')).not.toContain('\\Seen');
    expect((await c.run('STORE 1 +FLAGS (\\Flagged)'))[0]).toMatch(/^t\d+ NO \[READ-ONLY\]/);
    const sel = await c.ok('SELECT INBOX');
    expect(sel[sel.length - 1]).toMatch(/OK \[READ-WRITE\]/);
    const f = await c.ok('FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])');
    expect(f[0]).toMatch(/^\* 1 FETCH \(BODY\[HEADER\.FIELDS \(SUBJECT\)\] \{\d+\}$/);
    expect(f[1]).toBe('Subject: msg 1');
    expect(f.find((l) => l.includes('FLAGS'))).toMatch(/FLAGS \(\\Seen/);
    const again = await c.ok('FETCH 1:2 FLAGS');
    expect(again[0]).toContain('\\Seen');
    expect(again[1]).not.toContain('\\Seen');
    c.close();
  });

  it('another session’s EXPUNGE waits while FETCH/STORE/SEARCH use sequence numbers (RFC 3501 7.4.1)', async () => {
    const a = await fresh('dave', 3);
    const b = await RawImap.connect(port);
    await b.login('dave@example.test', 'dave-password');
    await a.ok('SELECT INBOX');
    await b.ok('SELECT INBOX');
    await b.ok('STORE 2 +FLAGS.SILENT (\\Deleted)');
    const exp = await b.ok('EXPUNGE');
    expect(exp[0]).toBe('* 2 EXPUNGE');
    // A still numbers 1..3: FETCH by number gets flags but no EXPUNGE.
    const f = await a.ok('FETCH 1:3 (UID)');
    expect(f.filter((l) => l.includes('EXPUNGE'))).toHaveLength(0);
    expect(f.filter((l) => /^\* \d FETCH/.test(l)).length).toBeGreaterThanOrEqual(2);
    const s = await a.ok('SEARCH ALL');
    expect(s.some((l) => l.includes('EXPUNGE'))).toBe(false);
    // UID FETCH may report it, and NOOP does.
    const n = await a.ok('NOOP');
    expect(n).toContain('* 2 EXPUNGE');
    expect((await a.ok('SEARCH ALL'))[0]).toBe('* SEARCH 1 2');
    // New mail arriving is reported as EXISTS at the next command.
    await deliver(hearth.smtpPort, 'dave@example.test', 'late', 'x');
    const after = await a.ok('NOOP');
    expect(after).toContain('* 3 EXISTS');
    a.close();
    b.close();
  });

  it('CONDSTORE: MODSEQ, CHANGEDSINCE, UNCHANGEDSINCE with [MODIFIED]', async () => {
    const c = await fresh('erin', 3);
    const sel = await c.ok('SELECT INBOX (CONDSTORE)');
    const hms = Number(/HIGHESTMODSEQ (\d+)/.exec(sel.join('\n'))![1]);
    const stored = await c.ok('STORE 1 +FLAGS (\\Flagged)');
    const ms = Number(/MODSEQ \((\d+)\)/.exec(stored[0])![1]);
    expect(ms).toBeGreaterThan(hms);
    const changed = await c.ok(`FETCH 1:* (FLAGS) (CHANGEDSINCE ${hms})`);
    expect(changed.filter((l) => l.startsWith('* '))).toEqual([`* 1 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (${ms}))`]);
    const cond = await c.run(`STORE 1:2 (UNCHANGEDSINCE ${hms}) +FLAGS (\\Seen)`);
    expect(cond[cond.length - 1]).toMatch(/^t\d+ OK \[MODIFIED 1\] /);
    expect(cond.some((l) => l.startsWith('* 2 FETCH') && l.includes('\\Seen'))).toBe(true);
    const uidCond = await c.run(`UID STORE 1:* (UNCHANGEDSINCE 1) FLAGS.SILENT (\\Draft)`);
    expect(uidCond[uidCond.length - 1]).toMatch(/^t\d+ OK \[MODIFIED [\d:,]+\] /);
    expect((await c.ok(`SEARCH MODSEQ ${ms}`))[0]).toMatch(/^\* SEARCH [\d ]+ \(MODSEQ \d+\)$/);
    const st = await c.ok('STATUS INBOX (HIGHESTMODSEQ MESSAGES UNSEEN)');
    expect(st[0]).toMatch(/^\* STATUS "INBOX" \(HIGHESTMODSEQ \d+ MESSAGES 3 UNSEEN 2\)$/);
    c.close();
  });

  it('UID EXPUNGE removes only the named messages; CLOSE expunges silently; MOVE sends COPYUID first', async () => {
    const c = await fresh('frank', 4);
    await c.ok('SELECT INBOX');
    const uids = (await c.ok('UID SEARCH ALL'))[0].split(' ').slice(2).map(Number);
    await c.ok('STORE 1:2 +FLAGS.SILENT (\\Deleted)');
    const ue = await c.ok(`UID EXPUNGE ${uids[1]}`);
    expect(ue.filter((l) => l.includes('EXPUNGE') && l.startsWith('*'))).toEqual(['* 2 EXPUNGE']);
    const mv = await c.ok('MOVE 2 Trash');
    expect(mv[0]).toMatch(/^\* OK \[COPYUID \d+ \d+ \d+\]/);
    expect(mv[1]).toBe('* 2 EXPUNGE');
    const cp = await c.ok(`UID COPY ${uids[0]} Archive`);
    expect(cp[cp.length - 1]).toMatch(/OK \[COPYUID \d+ \d+ \d+\] /);
    expect((await c.run('COPY 1 Nowhere'))[0]).toMatch(/NO \[TRYCREATE\]/);
    const close = await c.ok('CLOSE');
    expect(close).toHaveLength(1);
    const st = await c.ok('STATUS INBOX (MESSAGES)');
    expect(st[0]).toContain('MESSAGES 1');
    expect((await c.run('FETCH 1 FLAGS'))[0]).toMatch(/BAD .*needs a selected mailbox/);
    await c.ok('EXAMINE INBOX');
    await c.ok('UNSELECT');
    c.close();
  });

  it('LIST patterns, reference names and selection/return options', async () => {
    const c = await fresh('gina', 0);
    await c.ok('CREATE Lists/alpha');
    await c.ok('CREATE Lists/beta/');
    await c.ok('CREATE Lists/beta/deep');
    expect((await c.run('CREATE INBOX'))[0]).toMatch(/NO \[ALREADYEXISTS\]/);
    expect((await c.run('CREATE Lists/alpha'))[0]).toMatch(/NO \[ALREADYEXISTS\]/);
    expect((await c.run('CREATE ../escape'))[0]).toMatch(/NO \[CANNOT\]/);
    expect((await c.run('DELETE Lists'))[0]).toMatch(/^t\d+ NO /);
    expect((await c.run('SELECT Nowhere'))[0]).toMatch(/NO \[NONEXISTENT\]/);
    const root = await c.ok('LIST "" ""');
    expect(root[0]).toBe('* LIST (\\Noselect) "/" ""');
    const top = (await c.ok('LIST "" %')).filter((l) => l.startsWith('*'));
    expect(top).toContain('* LIST (\\HasChildren) "/" "Lists"');
    expect(top).toContain('* LIST (\\HasNoChildren) "/" "INBOX"');
    expect(top.some((l) => l.includes('Lists/'))).toBe(false);
    const children = (await c.ok('LIST Lists/ %')).filter((l) => l.startsWith('*'));
    expect(children).toEqual(['* LIST (\\HasNoChildren) "/" "Lists/alpha"', '* LIST (\\HasChildren) "/" "Lists/beta"']);
    const deep = (await c.ok('LIST "" Lists/*')).filter((l) => l.startsWith('*'));
    expect(deep).toHaveLength(3);
    expect((await c.ok('LIST "" inbox'))[0]).toContain('"INBOX"');
    const special = (await c.ok('LIST (SPECIAL-USE) "" *')).filter((l) => l.startsWith('*'));
    expect(special.map((l) => /\\(Sent|Drafts|Trash|Junk|Archive)\b/.exec(l)?.[0]).sort()).toEqual(['\\Archive', '\\Drafts', '\\Junk', '\\Sent', '\\Trash']);
    await c.ok('UNSUBSCRIBE Lists/alpha');
    const subs = (await c.ok('LIST "" * RETURN (SUBSCRIBED)')).filter((l) => l.startsWith('*'));
    expect(subs.find((l) => l.endsWith('"Lists/alpha"'))).not.toContain('\\Subscribed');
    expect(subs.find((l) => l.endsWith('"Lists/beta"'))).toContain('\\Subscribed');
    const lsub = (await c.ok('LSUB "" Lists/*')).filter((l) => l.startsWith('*'));
    expect(lsub).not.toContain('* LSUB () "/" "Lists/alpha"');
    expect(lsub).toContain('* LSUB () "/" "Lists/beta"');
    await c.ok('CREATE "Entw&APw-rfe"');
    expect((await c.ok('LIST "" Entw*'))[0]).toBe('* LIST (\\HasNoChildren) "/" "Entw&APw-rfe"');
    await c.ok('RENAME Lists Old');
    expect((await c.ok('LIST "" Old/*')).filter((l) => l.startsWith('*'))).toHaveLength(3);
    c.close();
  });

  it('serves bare-LF files with CRLF and a matching RFC822.SIZE, and sees changes made directly in the Maildir', async () => {
    const c = await RawImap.connect(port);
    await c.login('carol@example.test', 'carol-password');
    await c.ok('SELECT INBOX');
    const before = (await c.ok('SEARCH ALL'))[0].split(' ').length - 2;
    // mutt/procmail style: bare LF, written straight into new/.
    const text = 'Subject: from procmail\nFrom: x@y\n\nline one\nline two\n';
    await writeFile(join(carolDir(), 'new', `1700000000.M1P1.test,S=${text.length}`), text);
    const noop = await c.ok('NOOP');
    expect(noop).toContain(`* ${before + 1} EXISTS`);
    const f = await c.ok(`FETCH ${before + 1} (RFC822.SIZE BODY.PEEK[])`);
    const crlf = text.replace(/\n/g, '\r\n');
    expect(f[0]).toBe(`* ${before + 1} FETCH (RFC822.SIZE ${crlf.length} BODY[] {${crlf.length}}`);
    expect(f.slice(1, 5)).toEqual(['Subject: from procmail', 'From: x@y', '', 'line one']);
    // Another program sets \Flagged by renaming the file: reported as a FETCH FLAGS at NOOP.
    const name = (await readdir(join(carolDir(), 'new'))).find((n) => n.startsWith('1700000000'))!;
    await rename(join(carolDir(), 'new', name), join(carolDir(), 'cur', `${name}:2,F`));
    const flags = await c.ok('NOOP');
    expect(flags.find((l) => l.startsWith(`* ${before + 1} FETCH`))).toMatch(/FLAGS \(\\Flagged/);
    c.close();
  });

  it('IDLE over a raw socket: EXISTS at once on delivery, DONE ends it, anything else is BAD', async () => {
    const c = await RawImap.connect(port);
    await c.login('carol@example.test', 'carol-password');
    const sel = await c.ok('SELECT INBOX');
    const exists = Number(/\* (\d+) EXISTS/.exec(sel.join('\n'))![1]);
    c.c.send('i1 IDLE\r\n');
    expect(await c.c.line()).toBe('+ idling');
    await deliver(hearth.smtpPort, 'carol@example.test', 'idle wake', 'x');
    expect(await c.c.line()).toBe(`* ${exists + 1} EXISTS`);
    expect(await c.c.line()).toMatch(/^\* \d+ RECENT$/);
    c.c.send('DONE\r\n');
    expect(await c.c.line()).toMatch(/^i1 OK IDLE terminated/);
    c.c.send('i2 IDLE\r\n');
    expect(await c.c.line()).toBe('+ idling');
    c.c.send('i3 NOOP\r\n');
    expect(await c.c.line()).toMatch(/^i2 BAD /);
    await c.ok('NOOP');
    c.close();
  });
});
