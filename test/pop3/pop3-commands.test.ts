// POP3 commands over raw sockets, byte for byte: CAPA in every situation (RFC 2449), RSET,
// QUIT in AUTHORIZATION, commands naming a deleted message, TOP (RFC 1939 7).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALL_LISTENERS, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { RawLines } from '../helpers/raw-lines.ts';
import { popLogin, popMulti, storeMessage, withHearth } from './pop3-helpers.ts';
import type { Running } from './pop3-helpers.ts';

const BASE = ['TOP', 'UIDL', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING', 'EXPIRE NEVER', 'IMPLEMENTATION hearth'];
const PASSWORDS = ['USER', 'SASL PLAIN'];

async function capa(c: RawLines): Promise<string[]> {
  const { status, body } = await popMulti(c, 'CAPA');
  expect(status).toMatch(/^\+OK /);
  return body.split('\r\n').filter((l) => l !== '');
}

describe('POP3 CAPA lists exactly what the connection allows', () => {
  it('plaintext allowed (loopback): passwords and STLS; after STLS: no STLS; on 995: no STLS; in TRANSACTION: no login items', async () => {
    await withHearth(ALL_LISTENERS, async (hearth) => {
      const c = await RawLines.connect(hearth.port('pop3'));
      await c.line();
      expect(await capa(c)).toEqual([...BASE, ...PASSWORDS, 'STLS']);
      expect(await c.command('STLS')).toMatch(/^\+OK/);
      await c.starttls();
      expect(await capa(c)).toEqual([...BASE, ...PASSWORDS]);
      await c.command('USER alice@example.test');
      expect(await c.command('PASS alice-password')).toMatch(/^\+OK/);
      expect(await capa(c)).toEqual(BASE);
      c.close();

      const s = await RawLines.connect(hearth.port('pop3s'), { tls: true });
      await s.line();
      expect(await capa(s)).toEqual([...BASE, ...PASSWORDS]);
      s.close();
    });
  });

  it('plaintext refused (auth.plaintext = "never"): no USER/SASL before TLS, both after STLS and on 995', async () => {
    await withHearth(`${ALL_LISTENERS}\n[auth]\nplaintext = "never"\n`, async (hearth) => {
      const c = await RawLines.connect(hearth.port('pop3'));
      await c.line();
      expect(await capa(c)).toEqual([...BASE, 'STLS']);
      expect(await c.command('AUTH PLAIN')).toMatch(/^-ERR \[AUTH\] log in over TLS/);
      expect(await c.command('STLS')).toMatch(/^\+OK/);
      await c.starttls();
      expect(await capa(c)).toEqual([...BASE, ...PASSWORDS]);
      c.close();
      const s = await RawLines.connect(hearth.port('pop3s'), { tls: true });
      await s.line();
      expect(await capa(s)).toEqual([...BASE, ...PASSWORDS]);
      await s.command('USER alice@example.test');
      expect(await s.command('PASS alice-password')).toMatch(/^\+OK/);
      expect(await capa(s)).toEqual(BASE);
      s.close();
    });
  });
});

describe('POP3 commands on a maildrop', () => {
  let setup: TestSetup;
  let hearth: Running;
  const messages = [
    'Subject: first\r\nFrom: a@example.test\r\n\r\nbody one\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n',
    'Subject: second\r\n\r\nbody two\r\n',
    'Subject: third\r\n\r\nbody three\r\n',
  ];
  const stuff = (s: string) => s.replace(/^\./gm, '..');

  beforeAll(async () => {
    setup = await makeSetup({ fsync: false, toml: '[listeners.pop3]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n' });
    hearth = await startTestHearth(setup);
    for (const m of messages) await storeMessage(setup, 'alice@example.test', m);
  });
  afterAll(async () => {
    await hearth?.close();
    await setup?.cleanup();
  });

  it('QUIT in AUTHORIZATION answers +OK and closes', async () => {
    const c = await RawLines.connect(hearth.port('pop3'));
    await c.line();
    expect(await c.command('QUIT')).toMatch(/^\+OK .*signing off/);
    expect(await c.waitClosed()).toBe(true);
  });

  it('a DELE\'d message is gone for LIST n, UIDL n, TOP n 0, RETR n and DELE n; RSET brings it back', async () => {
    const c = await popLogin(hearth.port('pop3'));
    const uidl2 = await c.command('UIDL 2');
    expect(uidl2).toMatch(/^\+OK 2 [0-9A-F]{16}$/);
    const before = await c.command('STAT');
    expect(await c.command('DELE 2')).toBe('+OK message 2 deleted');
    for (const cmd of ['LIST 2', 'UIDL 2', 'TOP 2 0', 'RETR 2', 'DELE 2']) expect(await c.command(cmd), cmd).toBe('-ERR no such message 2');
    expect((await popMulti(c, 'LIST')).body).not.toMatch(/^2 /m);
    expect(await c.command('STAT')).not.toBe(before);
    expect(await c.command('RSET')).toMatch(/^\+OK maildrop has 3 messages/);
    expect(await c.command('STAT')).toBe(before);
    expect(await c.command('UIDL 2')).toBe(uidl2);
    expect((await popMulti(c, 'RETR 2')).body).toBe(messages[1]);
    // RSET then QUIT: nothing is deleted.
    expect(await c.command('QUIT')).toMatch(/^\+OK .*signing off$/);
    const d = await popLogin(hearth.port('pop3'));
    expect(await d.command('STAT')).toMatch(/^\+OK 3 /);
    d.close();
  });

  it('TOP n 0 sends the header and blank line; TOP n 999 the whole message; both dot-stuffed, byte-exact', async () => {
    const c = await popLogin(hearth.port('pop3'));
    const header = messages[0].slice(0, messages[0].indexOf('\r\n\r\n') + 4);
    expect(await popMulti(c, 'TOP 1 0')).toEqual({ status: '+OK top of message follows', body: stuff(header) });
    expect(await popMulti(c, 'TOP 1 999')).toEqual({ status: '+OK top of message follows', body: stuff(messages[0]) });
    expect(await popMulti(c, 'TOP 1 2')).toEqual({ status: '+OK top of message follows', body: stuff(`${header}body one\r\n.leading dot\r\n`) });
    const retr = await popMulti(c, 'RETR 1');
    expect(retr.body).toBe(stuff(messages[0]));
    c.close();
  });
});
