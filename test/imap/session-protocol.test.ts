// The IMAP session over raw sockets: greeting and capabilities, states, literals, pipelining,
// limits, STARTTLS injection, abuse, and a client that goes away mid-FETCH.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawLines } from '../helpers/raw-lines.ts';
import { RawImap, deliver, startImapHearth } from './imap-helpers.ts';
import type { Running } from './imap-helpers.ts';
import type { TestSetup } from '../helpers/hearth.ts';

describe('IMAP protocol (raw socket)', () => {
  let setup: TestSetup;
  let hearth: Running;
  let port: number;

  beforeAll(async () => {
    ({ setup, hearth } = await startImapHearth('[limits]\nmessage_size = "1MB"\n'));
    port = hearth.port('imap');
    await deliver(hearth.smtpPort, 'alice@example.test', 'first', 'Body one.');
    await deliver(hearth.smtpPort, 'alice@example.test', 'second', 'Body two.');
  });
  afterAll(async () => {
    await hearth?.close();
    await setup?.cleanup();
  });

  it('greets with capabilities, and lists AUTH=PLAIN/STARTTLS before login only', async () => {
    const c = await RawImap.connect(port);
    expect(c.greeting).toMatch(/^\* OK \[CAPABILITY IMAP4rev1 .*\] /);
    for (const cap of ['LITERAL+', 'SASL-IR', 'ENABLE', 'ID', 'NAMESPACE', 'IDLE', 'UIDPLUS', 'MOVE', 'SPECIAL-USE', 'UNSELECT', 'CHILDREN', 'CONDSTORE', 'STARTTLS', 'AUTH=PLAIN']) {
      expect(c.greeting).toContain(` ${cap}`);
    }
    expect(c.greeting).not.toContain('LOGINDISABLED');
    const login = await c.run('LOGIN alice@example.test alice-password');
    expect(login[0]).toMatch(/^t1 OK \[CAPABILITY IMAP4rev1 .*\] /);
    expect(login[0]).not.toContain('STARTTLS');
    expect(login[0]).not.toContain('AUTH=PLAIN');
    const caps = await c.ok('CAPABILITY');
    expect(caps[0]).toMatch(/^\* CAPABILITY IMAP4rev1 /);
    await c.ok('NOOP');
    const bye = await c.run('LOGOUT');
    expect(bye[0]).toMatch(/^\* BYE /);
    expect(bye[1]).toMatch(/^t\d+ OK LOGOUT/);
    expect(await c.c.waitClosed()).toBe(true);
  });

  it('answers commands in the wrong state with a tagged BAD and a reason, never a crash', async () => {
    const c = await RawImap.connect(port);
    for (const cmd of ['SELECT INBOX', 'LIST "" *', 'FETCH 1 FLAGS', 'STORE 1 +FLAGS (\\Seen)', 'IDLE', 'APPEND INBOX {1+}\r\nx', 'ENABLE CONDSTORE', 'UID FETCH 1 UID', 'EXPUNGE']) {
      const r = await c.run(cmd);
      expect(r[r.length - 1], cmd).toMatch(/^t\d+ BAD .*needs a login first/);
    }
    await c.login();
    for (const cmd of ['FETCH 1 FLAGS', 'UID STORE 1 +FLAGS (\\Seen)', 'EXPUNGE', 'CLOSE', 'SEARCH ALL', 'COPY 1 INBOX']) {
      const r = await c.run(cmd);
      expect(r[r.length - 1], cmd).toMatch(/^t\d+ BAD .*needs a selected mailbox/);
    }
    for (const cmd of ['LOGIN a b', 'AUTHENTICATE PLAIN', 'STARTTLS']) {
      const r = await c.run(cmd);
      expect(r[r.length - 1], cmd).toMatch(/^t\d+ BAD .*not allowed after login/);
    }
    expect((await c.run('XYZZY'))[0]).toMatch(/^t\d+ BAD unknown command/);
    expect((await c.run('FETCH'))[0]).toMatch(/^t\d+ BAD /);
    c.c.send('no-verb\r\n');
    expect(await c.c.line()).toMatch(/^no-verb BAD /);
    c.c.send('\r\n');
    expect(await c.c.line()).toMatch(/^\* BAD /);
    await c.ok('SELECT INBOX');
    for (const cmd of ['FETCH 99 FLAGS', 'FETCH 0 FLAGS', 'STORE 1 FLAGS (\\Bogus)']) {
      const r = await c.run(cmd);
      expect(r[r.length - 1], cmd).toMatch(/^t\d+ BAD /);
    }
    await c.ok('NOOP');
    c.close();
  });

  it('handles synchronizing and non-synchronizing literals', async () => {
    const c = await RawImap.connect(port);
    c.c.send('a1 LOGIN {18}\r\n');
    expect(await c.c.line()).toBe('+ Ready for literal');
    c.c.send('alice@example.test {14+}\r\nalice-password\r\n');
    expect(await c.c.line()).toMatch(/^a1 OK /);
    // APPEND with a synchronizing literal, then read it back.
    const msg = 'Subject: appended\r\n\r\nliteral body\r\n';
    c.c.send(`a2 APPEND INBOX (\\Flagged) {${msg.length}}\r\n`);
    expect(await c.c.line()).toBe('+ Ready for literal');
    c.c.send(`${msg}\r\n`);
    const appended = await c.until('a2');
    expect(appended[appended.length - 1]).toMatch(/^a2 OK \[APPENDUID \d+ \d+\] /);
    const uid = /APPENDUID \d+ (\d+)/.exec(appended[appended.length - 1])![1];
    await c.ok('SELECT INBOX');
    const f = await c.ok(`UID FETCH ${uid} (FLAGS BODY.PEEK[])`);
    expect(f[0]).toMatch(new RegExp(`^\\* \\d+ FETCH \\(UID ${uid} FLAGS \\(\\\\Flagged.*\\) BODY\\[\\] \\{${msg.length}\\}$`));
    expect(f.slice(1, 4).join('\r\n')).toBe(msg.trimEnd().replace(/\r\n$/, '') + '');
    c.close();
  });

  it('processes pipelined commands in order', async () => {
    const c = await RawImap.connect(port);
    c.c.send('p1 LOGIN alice@example.test alice-password\r\np2 SELECT INBOX\r\np3 FETCH 1:2 (UID FLAGS)\r\np4 NOOP\r\np5 LOGOUT\r\n');
    const lines = await c.until('p5');
    const tagged = lines.filter((l) => /^p\d /.test(l)).map((l) => l.slice(0, 5));
    expect(tagged).toEqual(['p1 OK', 'p2 OK', 'p3 OK', 'p4 OK', 'p5 OK']);
    expect(lines.filter((l) => /^\* \d+ FETCH/.test(l))).toHaveLength(2);
  });

  it('refuses oversized literals before they are sent, and says BYE to an oversized LITERAL+', async () => {
    const c = await RawImap.connect(port);
    await c.login();
    c.c.send('o1 APPEND INBOX {5000000}\r\n');
    expect(await c.c.line()).toMatch(/^o1 NO \[TOOBIG\] /);
    c.c.send('o2 LOGIN {999999}\r\n');
    expect(await c.c.line()).toMatch(/^o2 BAD .*literal too big/);
    await c.ok('NOOP');
    c.c.send('o3 APPEND INBOX {5000000+}\r\n');
    expect(await c.c.line()).toMatch(/^\* BYE /);
    expect(await c.c.waitClosed()).toBe(true);
  });

  it('refuses an overlong line, and says BYE after too many bad commands', async () => {
    const c = await RawImap.connect(port);
    c.c.send(`x1 LOGIN ${'a'.repeat(100_000)} b\r\n`);
    expect(await c.c.line()).toMatch(/^\* BAD line too long/);
    for (let i = 0; i < 19; i++) await c.run('BOGUS');
    c.c.send('last BOGUS\r\n');
    expect(await c.c.line()).toMatch(/^last BAD/);
    expect(await c.c.line()).toMatch(/^\* BYE too many bad commands/);
    expect(await c.c.waitClosed()).toBe(true);
  });

  it('discards commands pipelined behind STARTTLS (command injection)', async () => {
    const c = await RawImap.connect(port);
    c.c.send('s1 STARTTLS\r\ns2 LOGIN alice@example.test alice-password\r\n');
    expect(await c.c.line()).toMatch(/^s1 OK /);
    await c.c.starttls();
    c.c.send('s3 CAPABILITY\r\n');
    const lines = await c.until('s3');
    expect(lines.some((l) => l.startsWith('s2'))).toBe(false);
    expect(lines[0]).not.toContain('STARTTLS');
    expect(lines[0]).toContain('AUTH=PLAIN');
    // Not logged in: the injected LOGIN was dropped.
    expect((await c.run('SELECT INBOX'))[0]).toMatch(/BAD .*login first/);
    await c.login();
    await c.ok('SELECT INBOX');
    c.close();
  });

  it('AUTHENTICATE PLAIN with SASL-IR, with a continuation, and cancelled', async () => {
    const good = Buffer.from('\0alice@example.test\0alice-password').toString('base64');
    const bad = Buffer.from('\0alice@example.test\0wrong').toString('base64');
    const c = await RawImap.connect(port);
    expect((await c.run(`AUTHENTICATE PLAIN ${bad}`))[0]).toMatch(/^t1 NO \[AUTHENTICATIONFAILED\] /);
    c.c.send('a2 AUTHENTICATE PLAIN\r\n');
    expect(await c.c.line()).toBe('+ ');
    c.c.send('*\r\n');
    expect(await c.c.line()).toMatch(/^a2 BAD .*cancel/);
    c.c.send('a3 AUTHENTICATE PLAIN\r\n');
    expect(await c.c.line()).toBe('+ ');
    c.c.send(`${good}\r\n`);
    expect(await c.c.line()).toMatch(/^a3 OK \[CAPABILITY /);
    const d = await RawImap.connect(port);
    expect((await d.run(`AUTHENTICATE PLAIN ${good}`))[0]).toMatch(/^t1 OK /);
    expect((await d.run('AUTHENTICATE CRAM-MD5'))[0]).toMatch(/BAD/);
    c.close();
    d.close();
  });

  it('ID, NAMESPACE, ENABLE', async () => {
    const c = await RawImap.connect(port);
    expect((await c.ok('ID ("name" "raw-test")'))[0]).toMatch(/^\* ID \("name" "hearth"/);
    await c.login();
    expect((await c.ok('NAMESPACE'))[0]).toBe('* NAMESPACE (("" "/")) NIL NIL');
    expect((await c.ok('ENABLE CONDSTORE QRESYNC'))[0]).toBe('* ENABLED CONDSTORE');
    const sel = await c.ok('SELECT INBOX');
    expect(sel.some((l) => /^\* OK \[HIGHESTMODSEQ \d+\]/.test(l))).toBe(true);
    const f = await c.ok('FETCH 1 (FLAGS)');
    expect(f[0]).toMatch(/^\* 1 FETCH \(FLAGS \(.*\)\)$/);
    c.close();
  });

  it('survives a client that disconnects in the middle of a large FETCH', async () => {
    const big = `${'x'.repeat(76)}\r\n`.repeat(10_000); // ~780 KB body
    const c = await RawImap.connect(port);
    await c.login('bob@example.test', 'bob-password');
    const message = `Subject: big\r\n\r\n${big}`;
    c.c.send(`b1 APPEND INBOX {${message.length}+}\r\n${message}\r\n`);
    const appended = await c.until('b1');
    expect(appended[appended.length - 1]).toMatch(/^b1 OK/);
    await c.ok('SELECT INBOX');
    // Ask for it many times over and hang up after the first bytes.
    const received = new Promise<void>((resolve) => c.c.socket.once('data', () => resolve()));
    c.c.send('b2 FETCH 1,1,1,1,1,1,1,1 BODY.PEEK[]\r\nb3 FETCH 1:* BODY.PEEK[]\r\n');
    await received;
    c.c.socket.destroy();
    // The server is still fine, and the connection count went back down.
    const d = await RawImap.connect(port);
    await d.login('bob@example.test', 'bob-password');
    await d.ok('SELECT INBOX');
    const f = await d.ok('FETCH 1 RFC822.SIZE');
    expect(f[0]).toMatch(/RFC822.SIZE \d{6}/);
    d.close();
  });

  it('STARTTLS is refused on the implicit-TLS port and works over it', async () => {
    const c = await RawImap.connect(hearth.port('imaps'), { tls: true });
    expect(c.greeting).not.toContain('STARTTLS');
    expect((await c.run('STARTTLS'))[0]).toMatch(/^t1 BAD /);
    await c.login();
    await c.ok('EXAMINE INBOX');
    c.close();
  });

  it('plain RawLines still sees the server after all this', async () => {
    const r = await RawLines.connect(port);
    expect(await r.line()).toMatch(/^\* OK /);
    r.close();
  });
});
