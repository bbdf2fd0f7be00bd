// `hearth import mbox|maildir` end to end: the command imports a tricky mbox (mboxrd and mboxo
// quoting, an attachment, a broken message it reports and skips) and a Maildir with flags and
// keywords; a second run adds nothing; then imapflow against the started server sees it all.
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALL_LISTENERS, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { FIXTURES, runCli } from './helpers.ts';

type Fetched = { messageId: string; flags: string[]; source: string; internalDate: Date; hasAttachment: boolean };

async function fetchAll(client: ImapFlow, folder: string): Promise<Fetched[]> {
  const lock = await client.getMailboxLock(folder);
  try {
    const out: Fetched[] = [];
    for await (const m of client.fetch('1:*', { envelope: true, flags: true, source: true, internalDate: true, bodyStructure: true })) {
      out.push({
        messageId: m.envelope?.messageId ?? '',
        // \Recent is the session's (unseen imported mail lands in new/, as delivered mail does).
        flags: [...(m.flags ?? [])].filter((f) => f !== '\\Recent').sort(),
        source: m.source!.toString('latin1'),
        internalDate: new Date(m.internalDate!),
        hasAttachment: JSON.stringify(m.bodyStructure).includes('"disposition":"attachment"'),
      });
    }
    return out;
  } finally {
    lock.release();
  }
}

describe('hearth import', () => {
  let setup: TestSetup;
  let maildirSource: string;
  const outputs: Record<string, { code: number; stdout: string; stderr: string }> = {};

  beforeAll(async () => {
    setup = await makeSetup({ toml: ALL_LISTENERS, fsync: false });
    const c = ['-c', setup.configDir];
    outputs.mbox = await runCli(['import', 'mbox', join(FIXTURES, 'tricky.mbox'), '--user', 'bob@example.test', '--folder', 'Archive/Old', ...c]);
    outputs.again = await runCli(['import', 'mbox', join(FIXTURES, 'tricky.mbox'), '--user', 'bob@example.test', '--folder', 'Archive/Old', ...c]);
    outputs.mboxo = await runCli(['import', 'mbox', join(FIXTURES, 'tricky-mboxo.mbox'), '--user', 'bob@example.test', '--quoting', 'mboxo', ...c]);

    // A Maildir as mutt or Dovecot leaves it: flags in names, keywords in dovecot-keywords, a subfolder.
    maildirSource = await mkdtemp(join(tmpdir(), 'hearth-maildir-src-'));
    for (const d of ['cur', 'new', 'tmp', '.Lists.Rust/cur', '.Lists.Rust/new', '.Lists.Rust/tmp']) await mkdir(join(maildirSource, d), { recursive: true });
    const msg = (id: string) => `From: x@example.org\nSubject: ${id}\nMessage-ID: <${id}@example.org>\n\nbody ${id}\n`;
    await writeFile(join(maildirSource, 'new', '1700000000.M1P1.old'), msg('md-new'));
    await writeFile(join(maildirSource, 'cur', '1700000001.M1P1.old:2,RS'), msg('md-answered'));
    await writeFile(join(maildirSource, 'cur', '1700000002.M1P1.old:2,FSab'), msg('md-flagged-kw'));
    await writeFile(join(maildirSource, 'cur', '1700000003.M1P1.old:2,S'), 'garbage without any header\n');
    await writeFile(join(maildirSource, 'dovecot-keywords'), '0 $Important\n1 Project\n');
    await writeFile(join(maildirSource, '.Lists.Rust', 'cur', '1700000004.M1P1.old:2,ST'), msg('md-sub'));
    await utimes(join(maildirSource, 'cur', '1700000001.M1P1.old:2,RS'), new Date('2020-05-01T12:00:00Z'), new Date('2020-05-01T12:00:00Z'));
    outputs.maildir = await runCli(['import', 'maildir', maildirSource, '--user', 'alice@example.test', ...c]);
    outputs.maildirAgain = await runCli(['import', 'maildir', maildirSource, '--user', 'alice@example.test', ...c]);
  }, 60_000);
  afterAll(async () => {
    await setup?.cleanup();
    if (maildirSource) await rm(maildirSource, { recursive: true, force: true });
  });

  it('imports the mbox, reports the broken message, and a second run adds nothing', () => {
    expect(outputs.mbox.code, outputs.mbox.stderr).toBe(0);
    const all = outputs.mbox.stdout + outputs.mbox.stderr;
    expect(all).toMatch(/bob@example\.test\/Archive\/Old: 4 imported, 0 already there, 1 broken/);
    expect(all).toMatch(/message 3 \(byte \d+\): does not start with a header field/);
    // Not a terminal: plain progress lines with counts, rate and ETA.
    expect(all).toMatch(/importing Archive\/Old: .*MiB.*msg\/s, ETA/);
    expect(outputs.again.stdout + outputs.again.stderr).toMatch(/0 imported, 4 already there, 1 broken/);
    expect(outputs.mboxo.stdout + outputs.mboxo.stderr).toMatch(/INBOX: 1 imported/);
  });

  it('imports the Maildir with its subfolder, and a second run adds nothing', () => {
    expect(outputs.maildir.code, outputs.maildir.stderr).toBe(0);
    const all = outputs.maildir.stdout + outputs.maildir.stderr;
    expect(all).toMatch(/4 imported into 2 folders \(INBOX, Lists\/Rust\), 0 already there, 1 broken/);
    expect(all).toMatch(/1700000003\.M1P1\.old:2,S: does not start with a header field/);
    expect(outputs.maildirAgain.stdout + outputs.maildirAgain.stderr).toMatch(/0 imported into 2 folders.*4 already there/);
  });

  describe('then over IMAP', () => {
    let hearth: Awaited<ReturnType<typeof startTestHearth>>;
    let client: ImapFlow;
    const connect = async (user: string, pass: string) => {
      const c = new ImapFlow({ host: '127.0.0.1', port: hearth.port('imap'), secure: false, auth: { user, pass }, logger: false, tls: { rejectUnauthorized: false }, disableAutoIdle: true });
      await c.connect();
      return c;
    };
    beforeAll(async () => {
      hearth = await startTestHearth(setup);
    });
    afterAll(async () => {
      await client?.logout().catch(() => undefined);
      await hearth?.close();
    });

    it('refuses to import while the server runs', async () => {
      const r = await runCli(['import', 'mbox', join(FIXTURES, 'tricky.mbox'), '--user', 'bob@example.test', '-c', setup.configDir]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/stop hearth first/);
    });

    it('shows the mbox messages with their flags, dates, unquoted bodies and the attachment', async () => {
      client = await connect('bob@example.test', 'bob-password');
      const msgs = await fetchAll(client, 'Archive/Old');
      const byId = Object.fromEntries(msgs.map((m) => [m.messageId, m]));
      expect(Object.keys(byId).sort()).toEqual(['<attach-2@example.org>', '<draft-5@example.org>', '<plain-4@example.org>', '<tricky-1@example.org>']);

      const tricky = byId['<tricky-1@example.org>'];
      expect(tricky.flags).toEqual(['\\Answered', '\\Seen']);
      expect(tricky.internalDate.toISOString()).toBe('2024-01-15T10:30:00.000Z');
      expect(tricky.source).toContain('\r\nFrom the start of a line (mboxrd quoted once).\r\n>From a line that was already quoted once.\r\n\r\nFrom here on, an unquoted line');
      expect(tricky.source).toContain('\r\n>>From three levels.\r\nLast line.\r\n');
      expect(tricky.source).not.toMatch(/^Status:|^X-Status:/m);
      expect(tricky.source.endsWith('Last line.\r\n')).toBe(true);

      const attach = byId['<attach-2@example.org>'];
      expect(attach.flags).toEqual(expect.arrayContaining(['\\Seen', '\\Flagged', 'Work']));
      expect(attach.flags.map((f) => f.toLowerCase())).toContain('$label1');
      expect(attach.hasAttachment).toBe(true);
      expect(attach.internalDate.toISOString()).toBe('2024-02-20T07:00:00.000Z');

      expect(byId['<plain-4@example.org>'].flags).toEqual([]);
      expect(byId['<plain-4@example.org>'].source).toContain('\r\nFrom: not a separator either');
      expect(byId['<draft-5@example.org>'].flags).toEqual(['\\Draft', '\\Flagged', '\\Seen']);
      expect(msgs.every((m) => !/[^\r]\n/.test(m.source))).toBe(true); // CRLF throughout

      const inbox = await fetchAll(client, 'INBOX');
      expect(inbox.find((m) => m.messageId === '<mboxo-1@example.org>')!.source).toContain('\r\nFrom quoted by an mboxo writer.\r\n>>From stays as it is in mboxo.\r\n');
    });

    it('shows the Maildir messages with their flags and keywords', async () => {
      const a = await connect('alice@example.test', 'alice-password');
      try {
        const inbox = Object.fromEntries((await fetchAll(a, 'INBOX')).map((m) => [m.messageId, m]));
        expect(inbox['<md-new@example.org>'].flags).toEqual([]);
        expect(inbox['<md-answered@example.org>'].flags).toEqual(['\\Answered', '\\Seen']);
        expect(inbox['<md-answered@example.org>'].internalDate.toISOString()).toBe('2020-05-01T12:00:00.000Z');
        expect(inbox['<md-flagged-kw@example.org>'].flags).toEqual(['$Important', 'Project', '\\Flagged', '\\Seen'].sort());
        expect(inbox['<md-new@example.org>'].source).toBe('From: x@example.org\r\nSubject: md-new\r\nMessage-ID: <md-new@example.org>\r\n\r\nbody md-new\r\n');
        const sub = await fetchAll(a, 'Lists/Rust');
        expect(sub.map((m) => [m.messageId, m.flags])).toEqual([['<md-sub@example.org>', ['\\Deleted', '\\Seen']]]);
      } finally {
        await a.logout();
      }
    });
  });
});
