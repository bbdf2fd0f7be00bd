// The FETCH fast path (items the index record holds: UID, FLAGS, RFC822.SIZE, INTERNALDATE,
// MODSEQ) writes byte for byte what the general path writes for the same messages: each
// command here runs twice, once with the fast path turned off, and the answers are compared.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { fetchTuning } from '../../src/imap/commands/fetch.ts';
import { SummaryProvider } from '../../src/imap/message-info.ts';
import { BOX, startInProcessImap } from './inprocess-server.ts';
import type { InProcessImap } from './inprocess-server.ts';
import { RawImap } from './imap-helpers.ts';

let imap: InProcessImap;
afterEach(async () => {
  fetchTuning.fastPath = true;
  vi.restoreAllMocks();
  await imap.close();
});

/** The answer without its tag, with the fast path on and off. */
async function both(c: RawImap, command: string): Promise<{ fast: string[]; general: string[] }> {
  const untag = (lines: string[]): string[] => lines.map((l) => l.replace(/^t\d+ /, 'TAG '));
  fetchTuning.fastPath = true;
  const fast = untag(await c.run(command));
  fetchTuning.fastPath = false;
  const general = untag(await c.run(command));
  fetchTuning.fastPath = true;
  return { fast, general };
}

describe('FETCH fast path', () => {
  it('gives the same bytes as the general path: flags, keywords, \\Recent, sizes, dates, MODSEQ, CHANGEDSINCE, repeated items', async () => {
    imap = await startInProcessImap({ fullText: false });
    // Enough messages to fill several of the fast path's 64 KB buffers.
    const letters = ['', 'S', 'FS', 'RS', 'T', 'DS'];
    for (let i = 0; i < 3000; i++) {
      const body = `Subject: m${i}\r\nFrom: a@b\r\n\r\n${'text\r\n'.repeat(1 + (i % 7))}`;
      await imap.maildir.deliver([BOX], i % 5 === 1 ? body.replaceAll('\r\n', '\n') : body, { flags: i >= 2990 ? undefined : letters[i % letters.length] });
    }
    // A file another program wrote, without W=: its RFC822.SIZE needs the summary.
    await writeFile(join(imap.maildir.maildirPath(BOX), 'cur', '1.M1P1.mutt,S=30:2,S'), 'Subject: mutt\n\nbare\nline\nends\n');
    const c = await RawImap.connect(imap.port);
    await c.login();
    await c.ok('SELECT INBOX'); // the last ten (in new/) are \Recent here
    await c.ok('STORE 5:9 +FLAGS ($Forwarded Junk)');
    await c.ok('UID STORE 20 FLAGS (\\Answered $label1)');

    const commands = [
      'UID FETCH 1:* (UID FLAGS)',
      'FETCH 1:* (FLAGS RFC822.SIZE INTERNALDATE UID MODSEQ)',
      'FETCH 1:* FAST',
      'UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)',
      'FETCH 2,4:10,2995:* (UID UID FLAGS RFC822.SIZE)',
      `FETCH 1:3 (${Array.from({ length: 400 }, () => 'FLAGS INTERNALDATE').join(' ')})`,
      'UID FETCH 2999:* (FLAGS)',
      'UID FETCH 999999 (FLAGS)',
    ];
    for (const command of commands) {
      const { fast, general } = await both(c, command);
      expect(fast.at(-1), command).toMatch(/^TAG OK /);
      expect(fast, command).toEqual(general);
    }
    const all = (await both(c, 'UID FETCH 1:* (UID FLAGS)')).fast;
    expect(all).toHaveLength(3002);
    // The file without W= sorts first and takes UID 1.
    expect(all[4]).toBe('* 5 FETCH (UID 5 FLAGS (\\Seen \\Answered $Forwarded Junk))');
    expect(all[19]).toBe('* 20 FETCH (UID 20 FLAGS (\\Answered $label1))');
    expect(all[2999]).toBe('* 3000 FETCH (UID 3000 FLAGS (\\Recent))');
    c.close();
  });

  it('asks no summary, even for a file without W= (its CRLF size was counted when indexed)', async () => {
    imap = await startInProcessImap({ fullText: false });
    for (let i = 0; i < 50; i++) await imap.maildir.deliver([BOX], `Subject: ${i}\r\n\r\nbody\r\n`, { flags: 'S' });
    await writeFile(join(imap.maildir.maildirPath(BOX), 'cur', '1.M1P1.mutt,S=30:2,S'), 'Subject: mutt\n\nbare\nline\nends\n');
    const get = vi.spyOn(SummaryProvider.prototype, 'get');
    const c = await RawImap.connect(imap.port);
    await c.login();
    await c.ok('SELECT INBOX');
    const lines = await c.ok('UID FETCH 1:* (UID RFC822.SIZE)');
    expect(lines).toHaveLength(52);
    expect(lines[0]).toBe(`* 1 FETCH (UID 1 RFC822.SIZE ${'Subject: mutt\r\n\r\nbare\r\nline\r\nends\r\n'.length})`);
    expect(get).toHaveBeenCalledTimes(0);
    c.close();
  });
});
