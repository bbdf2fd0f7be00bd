// RFC822.SIZE (RFC 3501 6.4.5: the size as the client receives it, CRLF line ends) of messages
// hearth wrote comes from the `,W=` in their file names: no message is read or parsed for it.
// Files other programs wrote without W= still get the right size, from the summary.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SummaryProvider } from '../../src/imap/message-info.ts';
import { UserMailboxes } from '../../src/store/mailboxes.ts';
import { BOX, startInProcessImap } from './inprocess-server.ts';
import type { InProcessImap } from './inprocess-server.ts';
import { RawImap } from './imap-helpers.ts';

const crlfSize = (s: string | Buffer): number => Buffer.from(s.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1').length;

let imap: InProcessImap;
afterEach(async () => {
  vi.restoreAllMocks();
  await imap.close();
});

describe('FETCH RFC822.SIZE without parsing', () => {
  it('a fresh folder of hearth-written messages: right sizes, the summary parser never called, no file read', async () => {
    // No full-text index: its background reads would hide the FETCH's (there must be none).
    imap = await startInProcessImap({ fullText: false });
    const bodies: string[] = [];
    for (let i = 0; i < 300; i++) {
      const text = `Subject: m${i}\r\nFrom: a@b\r\n\r\n${'line of text\r\n'.repeat(1 + (i % 40))}`;
      // Every third message with bare LF line ends, as some local tools write them.
      bodies.push(i % 3 === 1 ? text.replaceAll('\r\n', '\n') : text);
    }
    for (const b of bodies) await imap.maildir.deliver([BOX], b, { flags: 'S' });
    const get = vi.spyOn(SummaryProvider.prototype, 'get');
    const reads = vi.spyOn(UserMailboxes.prototype, 'readMessage');
    const opens = vi.spyOn(UserMailboxes.prototype, 'openMessage');

    const c = await RawImap.connect(imap.port);
    await c.login();
    await c.ok('SELECT INBOX');
    const lines = await c.ok('UID FETCH 1:* (UID RFC822.SIZE FLAGS)');
    expect(lines).toHaveLength(301);
    const sizes = lines.slice(0, -1).map((l) => Number(/RFC822\.SIZE (\d+)/.exec(l)![1]));
    expect(sizes).toEqual(bodies.map(crlfSize));
    expect(get).not.toHaveBeenCalled();
    expect(reads).not.toHaveBeenCalled();
    expect(opens).not.toHaveBeenCalled();
    c.close();
  });

  it('a file without W= (written by another program) gets its CRLF size, counted when indexed', async () => {
    imap = await startInProcessImap();
    const dir = imap.maildir.maildirPath(BOX);
    await imap.maildir.ensureMaildir(BOX);
    const foreign = 'Subject: from mutt\n\nbare\nline\nends\n';
    await writeFile(join(dir, 'cur', '1700000000.M1P1.mutt,S=35:2,S'), foreign);
    await imap.maildir.deliver([BOX], 'Subject: ours\n\nalso bare\n', { flags: 'S' });
    const get = vi.spyOn(SummaryProvider.prototype, 'get');
    const c = await RawImap.connect(imap.port);
    await c.login();
    await c.ok('SELECT INBOX');
    const lines = await c.ok('FETCH 1:* (RFC822.SIZE)');
    expect(lines[0]).toBe(`* 1 FETCH (RFC822.SIZE ${crlfSize(foreign)})`);
    expect(lines[1]).toBe(`* 2 FETCH (RFC822.SIZE ${crlfSize('Subject: ours\n\nalso bare\n')})`);
    expect(get).toHaveBeenCalledTimes(0);
    c.close();
  });

  it('a big bare-LF message streams as CRLF with the W= size as its literal, without a summary', async () => {
    imap = await startInProcessImap();
    const line = 'x'.repeat(99) + '\n';
    const big = `Subject: big\n\n${line.repeat(5000)}`; // 500 KB: above the streaming threshold
    await imap.maildir.deliver([BOX], big, { flags: 'S' });
    const get = vi.spyOn(SummaryProvider.prototype, 'get');
    const c = await RawImap.connect(imap.port);
    await c.login();
    await c.ok('SELECT INBOX');
    c.c.send('f UID FETCH 1 (RFC822.SIZE BODY.PEEK[])\r\n');
    const head = await c.c.line();
    const m = /^\* 1 FETCH \(UID 1 RFC822\.SIZE (\d+) BODY\[\] \{(\d+)\}$/.exec(head);
    expect(m, head).not.toBeNull();
    expect(Number(m![1])).toBe(crlfSize(big));
    expect(Number(m![2])).toBe(crlfSize(big));
    // The literal is whole lines here (the message ends with a line end): read it line by line.
    const got: string[] = [];
    let octets = 0;
    while (octets < Number(m![2])) {
      const l = await c.c.line();
      got.push(l);
      octets += l.length + 2;
    }
    expect(octets).toBe(Number(m![2]));
    expect(got.join('\r\n') + '\r\n').toBe(big.replaceAll('\n', '\r\n'));
    expect(await c.c.line()).toBe(')');
    expect(await c.c.line()).toMatch(/^f OK/);
    expect(get).not.toHaveBeenCalled();
    c.close();
  });
});
