// POP3 against real clients (Python's poplib) and raw sockets, on a real hearth.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ALL_LISTENERS, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { RawLines } from '../helpers/raw-lines.ts';
import { runPython } from '../helpers/python.ts';
import { deliverRaw } from '../imap/imap-helpers.ts';
import type { Running } from '../imap/imap-helpers.ts';

/** Deliver over SMTP, like mail arriving from outside: a message of just Subject and Message-ID. */
function deliver(port: number, to: string, subject: string, body: string): Promise<void> {
  return deliverRaw(port, to, `Subject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@t>\r\n`, body);
}

const POPLIB_SESSION = `
import poplib, ssl, sys, json
port, mode, user, pw, action = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
if mode == "ssl":
    p = poplib.POP3_SSL("127.0.0.1", int(port), context=ctx, timeout=10)
else:
    p = poplib.POP3("127.0.0.1", int(port), timeout=10)
    if mode == "stls":
        p.stls(context=ctx)
out = {"welcome": p.getwelcome().decode(), "capa": sorted(p.capa().keys())}
p.user(user); p.pass_(pw)
out["stat"] = list(p.stat())
out["list"] = [x.decode() for x in p.list()[1]]
out["uidl"] = [x.decode() for x in p.uidl()[1]]
if action.startswith("retr"):
    n = int(action[4:])
    out["retr"] = b"\\r\\n".join(p.retr(n)[1]).decode("latin1")
    out["top"] = b"\\r\\n".join(p.top(n, 1)[1]).decode("latin1")
if action.startswith("dele"):
    p.dele(int(action[4:]))
print(json.dumps(out))
p.quit()
`;

async function poplib(port: number, mode: 'plain' | 'stls' | 'ssl', user: string, pw: string, action = 'none') {
  const { stdout } = await runPython(POPLIB_SESSION, [String(port), mode, user, pw, action]);
  return JSON.parse(stdout) as { welcome: string; capa: string[]; stat: [number, number]; list: string[]; uidl: string[]; retr?: string; top?: string };
}

describe('POP3', () => {
  let setup: TestSetup;
  let hearth: Running;
  let pop3: number;

  beforeAll(async () => {
    setup = await makeSetup({ toml: `${ALL_LISTENERS}\n[auth]\nfailure_delay = "1ms"\nmax_failure_delay = "5ms"\nmax_failures = 5\n[timeouts]\npop3_idle = "10m"\n` });
    hearth = await startTestHearth(setup);
    pop3 = hearth.port('pop3');
    await deliver(hearth.smtpPort, 'alice@example.test', 'one', 'First message.\r\n.starts with a dot\r\nend');
    await deliver(hearth.smtpPort, 'alice@example.test', 'two', 'Second message.\r\nline 2\r\nline 3');
  });
  afterAll(async () => {
    await hearth?.close();
    await setup?.cleanup();
  });

  it('serves poplib: STAT, LIST, UIDL, RETR (byte-exact, dot-unstuffed) and TOP', async () => {
    const r = await poplib(pop3, 'plain', 'alice@example.test', 'alice-password', 'retr1');
    expect(r.welcome).toMatch(/^\+OK /);
    expect(r.capa).toEqual(expect.arrayContaining(['TOP', 'UIDL', 'USER', 'SASL', 'STLS', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING', 'EXPIRE', 'IMPLEMENTATION']));
    expect(r.stat[0]).toBe(2);
    const files = await readdir(join(setup.dataDir, 'example.test/alice/new'));
    const cur = await readdir(join(setup.dataDir, 'example.test/alice/cur'));
    const all = [...files.map((f) => join('new', f)), ...cur.map((f) => join('cur', f))];
    const contents = await Promise.all(all.map((f) => readFile(join(setup.dataDir, 'example.test/alice', f), 'latin1')));
    const one = contents.find((c) => c.includes('Subject: one'))!;
    expect(r.stat[1]).toBe(contents.reduce((n, c) => n + Buffer.byteLength(c, 'latin1'), 0));
    expect(r.list).toEqual([`1 ${Buffer.byteLength(one, 'latin1')}`, expect.stringMatching(/^2 \d+$/)]);
    expect(r.uidl).toHaveLength(2);
    expect(r.uidl[0]).toMatch(/^1 [0-9A-F]{16}$/);
    // poplib strips the final CRLF of the last line
    expect(r.retr + '\r\n').toBe(one);
    expect(r.top).toContain('Subject: one');
    expect(r.top).toContain('First message.');
    expect(r.top).not.toContain('starts with a dot');
  });

  it('RETR marks the message \\Seen in the Maildir (new/ -> cur/ with S), so IMAP sees it read', async () => {
    const cur = await readdir(join(setup.dataDir, 'example.test/alice/cur'));
    const seen = await Promise.all(cur.map(async (f) => ({ f, text: await readFile(join(setup.dataDir, 'example.test/alice/cur', f), 'latin1') })));
    const one = seen.find((x) => x.text.includes('Subject: one'));
    expect(one?.f).toMatch(/:2,[A-Z]*S[A-Z]*$/);
  });

  it('keeps UIDL values stable across sessions, over STLS and implicit TLS', async () => {
    const a = await poplib(pop3, 'stls', 'alice@example.test', 'alice-password');
    const b = await poplib(hearth.port('pop3s'), 'ssl', 'alice@example.test', 'alice-password');
    expect(a.uidl).toEqual(b.uidl);
    expect(a.capa).not.toContain('STLS');
  });

  it('DELE removes at QUIT only; a dropped connection removes nothing', async () => {
    await deliver(hearth.smtpPort, 'bob@example.test', 'b1', 'x');
    await deliver(hearth.smtpPort, 'bob@example.test', 'b2', 'y');
    const c = await RawLines.connect(pop3);
    await c.line();
    await c.command('USER bob@example.test');
    expect(await c.command('PASS bob-password')).toMatch(/^\+OK maildrop has 2 messages/);
    expect(await c.command('DELE 1')).toMatch(/^\+OK/);
    expect(await c.command('DELE 1')).toMatch(/^-ERR no such message/);
    expect(await c.command('STAT')).toMatch(/^\+OK 1 /);
    c.close(); // abrupt: no QUIT
    await c.waitClosed();
    const again = await poplib(pop3, 'plain', 'bob@example.test', 'bob-password', 'dele1');
    expect(again.stat[0]).toBe(2);
    const after = await poplib(pop3, 'plain', 'bob@example.test', 'bob-password');
    expect(after.stat[0]).toBe(1);
    expect(after.uidl[0].split(' ')[1]).toBe(again.uidl[1].split(' ')[1]);
  });

  it('AUTH PLAIN with and without an initial response; wrong passwords get -ERR [AUTH]', async () => {
    const plain = Buffer.from('\0alice@example.test\0alice-password').toString('base64');
    const c = await RawLines.connect(pop3);
    await c.line();
    expect(await c.command(`AUTH PLAIN ${plain}`)).toMatch(/^\+OK/);
    await c.command('QUIT');
    const d = await RawLines.connect(pop3);
    await d.line();
    expect(await d.command('AUTH PLAIN')).toBe('+ ');
    expect(await d.command(Buffer.from('\0alice@example.test\0wrong').toString('base64'))).toMatch(/^-ERR \[AUTH\] /);
    expect(await d.command('AUTH PLAIN')).toBe('+ ');
    expect(await d.command('*')).toMatch(/^-ERR .*cancel/);
    expect(await d.command('AUTH CRAM-MD5')).toMatch(/^-ERR .*not supported/);
    expect(await d.command('APOP alice 0123456789abcdef0123456789abcdef')).toMatch(/^-ERR APOP is not supported/);
    d.close();
  });

  it('answers [IN-USE] while another session holds the maildrop', async () => {
    const a = await RawLines.connect(pop3);
    await a.line();
    await a.command('USER alice@example.test');
    expect(await a.command('PASS alice-password')).toMatch(/^\+OK/);
    const b = await RawLines.connect(pop3);
    await b.line();
    await b.command('USER alice@example.test');
    expect(await b.command('PASS alice-password')).toMatch(/^-ERR \[IN-USE\] /);
    expect(await a.command('QUIT')).toMatch(/^\+OK/);
    expect(await b.command('USER alice@example.test')).toMatch(/^\+OK/);
    expect(await b.command('PASS alice-password')).toMatch(/^\+OK/);
    b.close();
  });

  it('answers every command in the wrong state, unknown ones and bad arguments with -ERR', async () => {
    const c = await RawLines.connect(pop3);
    await c.line();
    for (const cmd of ['STAT', 'LIST', 'RETR 1', 'DELE 1', 'NOOP', 'RSET', 'TOP 1 1', 'UIDL', 'PASS x', 'FOO', '']) {
      expect(await c.command(cmd), cmd).toMatch(/^-ERR /);
    }
    await c.command('USER alice@example.test');
    await c.command('PASS alice-password');
    for (const cmd of ['USER x', 'PASS y', 'STLS', 'AUTH PLAIN', 'RETR', 'RETR 0', 'RETR 99', 'RETR x', 'TOP 1', 'TOP 1 -1', 'LIST 99', 'XYZZY']) {
      expect(await c.command(cmd), cmd).toMatch(/^-ERR /);
    }
    expect(await c.command('NOOP')).toMatch(/^\+OK/);
    c.close();
  });

  it('refuses an overlong line, and hangs up after too many bad commands', async () => {
    const c = await RawLines.connect(pop3);
    await c.line();
    expect(await c.command('USER ' + 'a'.repeat(10_000))).toMatch(/^-ERR .*too long/);
    for (let i = 0; i < 9; i++) await c.command('BOGUS');
    expect(await c.command('BOGUS')).toMatch(/too many bad commands/);
    expect(await c.waitClosed()).toBe(true);
  });

  it('handles pipelined commands in order', async () => {
    const c = await RawLines.connect(pop3);
    await c.line();
    c.send('USER alice@example.test\r\nPASS alice-password\r\nSTAT\r\nLIST\r\nNOOP\r\nQUIT\r\n');
    expect(await c.line()).toMatch(/^\+OK send PASS/);
    expect(await c.line()).toMatch(/^\+OK maildrop/);
    expect(await c.line()).toMatch(/^\+OK \d+ \d+$/);
    expect(await c.line()).toMatch(/^\+OK \d+ messages/);
    await c.dotBody();
    expect(await c.line()).toMatch(/^\+OK$|^\+OK /);
    expect(await c.line()).toMatch(/^\+OK .*signing off/);
    expect(await c.waitClosed()).toBe(true);
  });

  it('discards commands pipelined behind STLS', async () => {
    const c = await RawLines.connect(pop3);
    await c.line();
    c.send('STLS\r\nUSER injected@example.test\r\n');
    expect(await c.line()).toMatch(/^\+OK begin TLS/);
    await c.starttls();
    // An injected USER would make this PASS succeed.
    expect(await c.command('PASS alice-password')).toMatch(/^-ERR send USER first/);
    c.close();
  });

  it('locks an address out after repeated failures with [SYS/TEMP]', async () => {
    const c = await RawLines.connect(pop3);
    await c.line();
    for (let i = 0; i < 5; i++) {
      await c.command('USER carol@example.test');
      expect(await c.command('PASS nope')).toMatch(/^-ERR \[AUTH\]/);
    }
    await c.command('USER alice@example.test');
    expect(await c.command('PASS alice-password')).toMatch(/^-ERR \[SYS\/TEMP\] too many failed logins/);
    c.close();
  });
});

describe('POP3 policy and timeouts', () => {
  it('refuses passwords without TLS when plaintext = "never", offers them after STLS; closes idle sessions', async () => {
    const setup = await makeSetup({ toml: `${ALL_LISTENERS}\n[auth]\nplaintext = "never"\n[timeouts]\npop3_idle = "400ms"\n` });
    const hearth = await startTestHearth(setup);
    try {
      const c = await RawLines.connect(hearth.port('pop3'));
      await c.line();
      c.send('CAPA\r\n');
      expect(await c.line()).toMatch(/^\+OK/);
      const caps = await c.dotBody();
      expect(caps).toContain('STLS');
      expect(caps).not.toContain('USER');
      expect(await c.command('USER alice@example.test')).toMatch(/^-ERR \[AUTH\] log in over TLS/);
      expect(await c.command('STLS')).toMatch(/^\+OK/);
      await c.starttls();
      c.send('CAPA\r\n');
      await c.line();
      expect(await c.dotBody()).toContain('USER');
      expect(await c.command('USER alice@example.test')).toMatch(/^\+OK/);
      expect(await c.command('PASS alice-password')).toMatch(/^\+OK/);
      // Idle past pop3_idle: the server closes (RFC 1939: silently in TRANSACTION).
      expect(await c.waitClosed(5_000)).toBe(true);
    } finally {
      await hearth.close();
      await setup.cleanup();
    }
  });
});
