// The relay client against real servers on loopback: smtp-server instances play the remote
// MX or smarthost; a raw scripted server covers what smtp-server will not do (502 to EHLO,
// a 554 greeting, stalling in a chosen phase, dropping the connection mid-DATA).
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { Readable } from 'node:stream';
import type { SMTPServerOptions } from 'smtp-server';
import { silentLogger } from '../../src/core/log.ts';
import { DEFAULT_RELAY_TIMEOUTS, relay, RelayError } from '../../src/smtp/relay-client.ts';
import type { RecipientResult, RelayMessage, RelayTarget, RelayTimeouts } from '../../src/smtp/relay-client.ts';
import { HELO, script, short, useRelayServers } from '../helpers/relay-servers.ts';

const log = silentLogger();
const { startSmtp, rawServer } = useRelayServers({ beforeAll, afterEach });

// ---- fixtures ------------------------------------------------------------------------------

function message(id: string, body: Buffer | string, over: Partial<RelayMessage> = {}): RelayMessage {
  const buf = Buffer.from(body);
  return {
    id,
    from: 'alice@example.test',
    recipients: [{ address: 'bob@remote.test' }],
    size: buf.length,
    // Odd-sized chunks, so dot-stuffing and CRLF pairs straddle chunk boundaries.
    open: () => Readable.from(chunked(buf, 7)),
    needsSmtpUtf8: false,
    eightBit: false,
    ...over,
  };
}

function chunked(buf: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size));
  return out;
}

const SIMPLE = 'From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: hi\r\n\r\nHello Bob.\r\n';

function target(port: number, over: Partial<RelayTarget> = {}): RelayTarget {
  return { host: '127.0.0.1', port, tls: 'opportunistic', ...over };
}

function allResults(session: { results: Array<{ recipients: RecipientResult[] }> }): RecipientResult[] {
  return session.results.flatMap((r) => r.recipients);
}

// ---- delivery ------------------------------------------------------------------------------

describe('relay: delivery', () => {
  it('delivers byte-exact, dot-stuffing lines that start with a dot, and passes DSN parameters', async () => {
    const remote = await startSmtp({ hideDSN: false, hideENHANCEDSTATUSCODES: false, size: 10 * 1024 * 1024 });
    const body = Buffer.from(
      'From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: dots\r\n\r\n.\r\n..two\r\n.leading dot\r\nmiddle . dot\r\n.\r\n...\r\nlast line\r\n',
    );
    const m = message('m1', body, {
      recipients: [{ address: 'bob@remote.test', notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;bob@remote.test' }],
      dsn: { ret: 'HDRS', envid: 'QQ314159' },
    });
    const session = await relay(target(remote.port, { tls: 'none' }), [m], { heloName: HELO, log });
    expect(session.results).toEqual([{ id: 'm1', recipients: [{ address: 'bob@remote.test', status: 'delivered', code: 250, enhanced: '2.6.0', text: 'OK: message queued', state: 'BODY' }] }]);
    expect(remote.received).toHaveLength(1);
    expect(remote.received[0].data.equals(body)).toBe(true);
    const env = remote.received[0].envelope;
    expect(env.mailFrom && env.mailFrom.address).toBe('alice@example.test');
    expect(env.mailFrom && env.mailFrom.args).toMatchObject({ SIZE: String(body.length), RET: 'HDRS', ENVID: 'QQ314159' });
    expect(env.rcptTo[0].dsn).toEqual({ notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;bob@remote.test' });
    expect(session.transcript.some((l) => l.startsWith('C: [message body, '))).toBe(true);
    expect(session.remote).toEqual({ host: '127.0.0.1', address: '127.0.0.1' });
  });

  it('normalises bare LF and terminates an unterminated last line', async () => {
    const remote = await startSmtp();
    const session = await relay(target(remote.port, { tls: 'none' }), [message('m1', 'Subject: lf\n\nline one\n.dot\nno newline')], { heloName: HELO, log });
    expect(allResults(session)[0].status).toBe('delivered');
    expect(remote.received[0].data.toString()).toBe('Subject: lf\r\n\r\nline one\r\n.dot\r\nno newline\r\n');
  });

  it('uses STARTTLS when offered (opportunistic, self-signed accepted)', async () => {
    const remote = await startSmtp();
    const session = await relay(target(remote.port), [message('m1', SIMPLE, { eightBit: true })], { heloName: HELO, log });
    expect(allResults(session)[0].status).toBe('delivered');
    expect(remote.received[0].secure).toBe(true);
    expect(remote.received[0].envelope.bodyType).toBe('8bitmime');
    expect(session.remote.tls?.protocol).toMatch(/^TLSv1\.[23]$/);
    expect(session.transcript).toContain('C: STARTTLS');
  });

  it('stays in plaintext when STARTTLS is not offered (opportunistic)', async () => {
    const remote = await startSmtp({ hideSTARTTLS: true });
    const session = await relay(target(remote.port), [message('m1', SIMPLE)], { heloName: HELO, log });
    expect(allResults(session)[0].status).toBe('delivered');
    expect(remote.received[0].secure).toBe(false);
    expect(session.remote.tls).toBeUndefined();
  });

  it('defers with RELAY_TLS_REQUIRED when TLS is required and not offered, before any MAIL', async () => {
    const remote = await startSmtp({ hideSTARTTLS: true });
    const session = await relay(target(remote.port, { tls: 'required', rejectUnauthorized: false }), [message('m1', SIMPLE)], { heloName: HELO, log });
    const [r] = allResults(session);
    expect(r).toMatchObject({ status: 'deferred', state: 'EHLO' });
    expect(r.text).toMatch(/^RELAY_TLS_REQUIRED: .*does not offer STARTTLS/);
    expect(remote.mailFroms).toEqual([]);
  });

  it('defers with RELAY_TLS_FAILED when a required certificate does not verify', async () => {
    const remote = await startSmtp();
    const session = await relay(target(remote.port, { tls: 'required' }), [message('m1', SIMPLE)], { heloName: HELO, log });
    const [r] = allResults(session);
    expect(r).toMatchObject({ status: 'deferred', state: 'STARTTLS' });
    expect(r.text).toMatch(/^RELAY_TLS_FAILED: TLS handshake .*failed: .*certificate/);
    expect(remote.received).toEqual([]);
  });

  it('speaks implicit TLS', async () => {
    const remote = await startSmtp({ secure: true });
    const session = await relay(target(remote.port, { tls: 'implicit', rejectUnauthorized: false }), [message('m1', SIMPLE)], { heloName: HELO, log });
    expect(allResults(session)[0].status).toBe('delivered');
    expect(remote.received[0].secure).toBe(true);
    expect(session.remote.tls?.cipher).toBeTruthy();
  });

  it('sends several messages over one connection', async () => {
    const remote = await startSmtp();
    const messages = [1, 2, 3].map((n) => message(`m${n}`, `Subject: ${n}\r\n\r\nbody ${n}\r\n`, { recipients: [{ address: `r${n}@remote.test` }] }));
    const session = await relay(target(remote.port), messages, { heloName: HELO, log });
    expect(session.results.map((r) => [r.id, r.recipients[0].status])).toEqual([
      ['m1', 'delivered'],
      ['m2', 'delivered'],
      ['m3', 'delivered'],
    ]);
    expect(remote.connections()).toBe(1);
    expect(remote.received.map((r) => r.data.toString())).toEqual(['Subject: 1\r\n\r\nbody 1\r\n', 'Subject: 2\r\n\r\nbody 2\r\n', 'Subject: 3\r\n\r\nbody 3\r\n']);
  });

  it('falls back to HELO when EHLO gets 502, and sends no ESMTP parameters', async () => {
    const raw = await rawServer(script((conn, line) => (line.startsWith('EHLO') ? (conn.send('502 5.5.1 EHLO not implemented'), true) : false)));
    const session = await relay(target(raw.port), [message('m1', SIMPLE)], { heloName: HELO, log });
    expect(allResults(session)[0]).toMatchObject({ status: 'delivered', code: 250, text: 'queued as RAW1' });
    expect(raw.commands).toEqual([`EHLO ${HELO}`, `HELO ${HELO}`, 'MAIL FROM:<alice@example.test>', 'RCPT TO:<bob@remote.test>', 'DATA', '.', 'QUIT']);
  });
});

// ---- AUTH ----------------------------------------------------------------------------------

describe('relay: AUTH to a smarthost', () => {
  const smarthost = (methods: SMTPServerOptions['authMethods'] = ['PLAIN', 'LOGIN']) =>
    startSmtp({
      authOptional: false,
      authMethods: methods,
      onAuth(auth, _session, callback) {
        if (auth.username === 'relay-user' && auth.password === 's3cret pass') callback(null, { user: auth.username });
        else callback(Object.assign(new Error('Invalid username or password'), { responseCode: 535 }));
      },
    });

  it('authenticates with PLAIN after STARTTLS and redacts the transcript', async () => {
    const remote = await smarthost();
    const session = await relay(target(remote.port, { tls: 'required', rejectUnauthorized: false, auth: { user: 'relay-user', pass: 's3cret pass' } }), [message('m1', SIMPLE)], { heloName: HELO, log });
    expect(allResults(session)[0].status).toBe('delivered');
    expect(remote.received[0].user).toBe('relay-user');
    expect(session.transcript).toContain('C: AUTH PLAIN [redacted]');
    const secretB64 = Buffer.from('\0relay-user\0s3cret pass').toString('base64');
    expect(session.transcript.join('\n')).not.toContain(secretB64);
    expect(session.transcript.join('\n')).not.toContain('s3cret');
  });

  it('authenticates with LOGIN when PLAIN is not offered', async () => {
    const remote = await smarthost(['LOGIN']);
    const session = await relay(target(remote.port, { tls: 'required', rejectUnauthorized: false, auth: { user: 'relay-user', pass: 's3cret pass' } }), [message('m1', SIMPLE)], { heloName: HELO, log });
    expect(allResults(session)[0].status).toBe('delivered');
    expect(session.transcript.filter((l) => l === 'C: [redacted]')).toHaveLength(2);
    expect(session.transcript.join('\n')).not.toContain(Buffer.from('s3cret pass').toString('base64'));
  });

  it('defers every message with RELAY_AUTH_FAILED on a bad password', async () => {
    const remote = await smarthost();
    const session = await relay(target(remote.port, { tls: 'required', rejectUnauthorized: false, auth: { user: 'relay-user', pass: 'wrong' } }), [message('m1', SIMPLE), message('m2', SIMPLE)], {
      heloName: HELO,
      log,
    });
    const results = allResults(session);
    expect(results).toHaveLength(2);
    for (const r of results) {
      expect(r).toMatchObject({ status: 'deferred', code: 535, state: 'AUTH' });
      expect(r.text).toMatch(/^RELAY_AUTH_FAILED: .*refused AUTH PLAIN: 535/);
    }
    expect(remote.received).toEqual([]);
  });

  it('will not send credentials in plaintext unless tls is none on loopback', async () => {
    const remote = await startSmtp({
      hideSTARTTLS: true,
      allowInsecureAuth: true,
      authOptional: false,
      onAuth: (auth, _s, cb) => cb(null, { user: auth.username }),
    });
    const refused = await relay(target(remote.port, { auth: { user: 'u', pass: 'p' } }), [message('m1', SIMPLE)], { heloName: HELO, log });
    expect(allResults(refused)[0].text).toMatch(/^RELAY_TLS_REQUIRED: will not send credentials/);
    const loopback = await relay(target(remote.port, { tls: 'none', auth: { user: 'u', pass: 'p' } }), [message('m2', SIMPLE)], { heloName: HELO, log });
    expect(allResults(loopback)[0].status).toBe('delivered');
    expect(remote.received.map((r) => r.user)).toEqual(['u']);
  });
});

// ---- refusals --------------------------------------------------------------------------------

describe('relay: refusals', () => {
  it('defers on 4xx at MAIL, then RSETs and delivers the next message on the same connection', async () => {
    const remote = await startSmtp({
      onMailFrom(address, _s, cb) {
        if (address.address === 'greylisted@example.test') cb(Object.assign(new Error('4.7.1 Greylisted, try later'), { responseCode: 451 }));
        else cb();
      },
    });
    const raw: string[] = [];
    const session = await relay(target(remote.port, { tls: 'none' }), [message('m1', SIMPLE, { from: 'greylisted@example.test' }), message('m2', SIMPLE)], { heloName: HELO, log });
    raw.push(...session.transcript);
    expect(session.results[0].recipients[0]).toMatchObject({ status: 'deferred', code: 451, enhanced: '4.7.1', text: 'Greylisted, try later', state: 'MAIL' });
    expect(session.results[1].recipients[0]).toMatchObject({ status: 'delivered', state: 'BODY' });
    expect(raw).toContain('C: RSET');
    expect(remote.connections()).toBe(1);
  });

  it('gives per-recipient results: one accepted, one 550 at RCPT', async () => {
    const remote = await startSmtp({
      onRcptTo(address, _s, cb) {
        if (address.address === 'nobody@remote.test') cb(Object.assign(new Error('5.1.1 No such user'), { responseCode: 550 }));
        else cb();
      },
    });
    const m = message('m1', SIMPLE, { recipients: [{ address: 'bob@remote.test' }, { address: 'nobody@remote.test' }] });
    const session = await relay(target(remote.port, { tls: 'none' }), [m], { heloName: HELO, log });
    expect(session.results[0].recipients).toEqual([
      { address: 'bob@remote.test', status: 'delivered', code: 250, text: expect.any(String), state: 'BODY' },
      { address: 'nobody@remote.test', status: 'failed', code: 550, enhanced: '5.1.1', text: 'No such user', state: 'RCPT' },
    ]);
    expect(remote.received[0].envelope.rcptTo.map((r) => r.address)).toEqual(['bob@remote.test']);
  });

  it('sends no DATA when every recipient is refused (no PIPELINING), and goes on with the next message', async () => {
    const remote = await startSmtp({
      hidePIPELINING: true,
      onRcptTo(address, _s, cb) {
        if (address.address.startsWith('nobody')) cb(Object.assign(new Error('4.2.2 Mailbox full'), { responseCode: 452 }));
        else cb();
      },
    });
    const session = await relay(target(remote.port, { tls: 'none' }), [message('m1', SIMPLE, { recipients: [{ address: 'nobody@remote.test' }] }), message('m2', SIMPLE)], { heloName: HELO, log });
    expect(session.results[0].recipients[0]).toMatchObject({ status: 'deferred', code: 452, state: 'RCPT' });
    expect(session.results[1].recipients[0].status).toBe('delivered');
    expect(session.transcript.filter((l) => l === 'C: DATA')).toHaveLength(1);
  });

  it('fails the accepted recipients on 5xx at the end of DATA', async () => {
    const remote = await startSmtp({
      onData(stream, _s, cb) {
        stream.resume();
        stream.on('end', () => cb(Object.assign(new Error('5.7.1 Message rejected as spam'), { responseCode: 554 })));
      },
    });
    const m = message('m1', SIMPLE, { recipients: [{ address: 'a@remote.test' }, { address: 'b@remote.test' }] });
    const session = await relay(target(remote.port, { tls: 'none' }), [m], { heloName: HELO, log });
    for (const r of session.results[0].recipients) expect(r).toMatchObject({ status: 'failed', code: 554, enhanced: '5.7.1', text: 'Message rejected as spam', state: 'BODY' });
  });

  it('fails everything on a 554 greeting and says QUIT', async () => {
    const raw = await rawServer(script(), { greeting: '554 5.7.1 no SMTP service here' });
    const session = await relay(target(raw.port), [message('m1', SIMPLE), message('m2', SIMPLE)], { heloName: HELO, log });
    for (const r of allResults(session)) {
      expect(r).toMatchObject({ status: 'failed', code: 554, enhanced: '5.7.1', state: 'GREETING' });
      expect(r.text).toMatch(/^RELAY_GREETING_REJECTED: .*554 no SMTP service here/);
    }
    expect(raw.commands).toEqual(['QUIT']);
  });

  it('fails a message bigger than the remote SIZE limit before DATA', async () => {
    const remote = await startSmtp({ size: 1000 });
    const big = message('big', `Subject: big\r\n\r\n${'x'.repeat(5000)}\r\n`);
    const session = await relay(target(remote.port, { tls: 'none' }), [big, message('small', SIMPLE)], { heloName: HELO, log });
    expect(session.results[0].recipients[0]).toMatchObject({ status: 'failed', code: 552, enhanced: '5.3.4', state: 'MAIL' });
    expect(session.results[0].recipients[0].text).toMatch(/^RELAY_SIZE_EXCEEDED: message of 5018 bytes is larger than the 1000 bytes/);
    expect(session.results[1].recipients[0].status).toBe('delivered');
    expect(remote.mailFroms).toHaveLength(1);
  });

  it('fails a message that needs SMTPUTF8 when the remote does not offer it, and declares it when it does', async () => {
    const utf8 = (id: string) => message(id, 'Subject: grüße\r\n\r\nhallo\r\n', { from: 'jörg@example.test', needsSmtpUtf8: true, recipients: [{ address: 'dörte@remote.test' }] });
    const plain = await startSmtp({ hideSMTPUTF8: true });
    const refused = await relay(target(plain.port, { tls: 'none' }), [utf8('u1')], { heloName: HELO, log });
    expect(allResults(refused)[0]).toMatchObject({ status: 'failed', code: 553, enhanced: '5.6.7', state: 'MAIL' });
    expect(allResults(refused)[0].text).toMatch(/^RELAY_SMTPUTF8_REQUIRED: the message needs SMTPUTF8 .* does not offer it/);
    expect(plain.mailFroms).toEqual([]);

    const capable = await startSmtp();
    const ok = await relay(target(capable.port, { tls: 'none' }), [utf8('u2')], { heloName: HELO, log });
    expect(allResults(ok)[0].status).toBe('delivered');
    expect(capable.received[0].envelope.smtpUtf8).toBe(true);
    expect(capable.received[0].envelope.rcptTo[0].address).toBe('dörte@remote.test');
  });

  it('defers everything left on a 421 at RCPT, keeping verdicts already given', async () => {
    const raw = await rawServer(
      script((conn, line) => {
        if (line === 'RCPT TO:<b@remote.test>') {
          conn.send('421 4.3.2 shutting down');
          conn.socket.end();
          return true;
        }
        if (line === 'RCPT TO:<a@remote.test>') return (conn.send('550 5.1.1 unknown'), true);
        return false;
      }),
    );
    const m = message('m1', SIMPLE, { recipients: [{ address: 'a@remote.test' }, { address: 'b@remote.test' }] });
    const session = await relay(target(raw.port), [m, message('m2', SIMPLE)], { heloName: HELO, log });
    expect(session.results[0].recipients[0]).toMatchObject({ status: 'failed', code: 550, state: 'RCPT' });
    expect(session.results[0].recipients[1]).toMatchObject({ status: 'deferred', code: 421, enhanced: '4.3.2', state: 'RCPT' });
    expect(session.results[0].recipients[1].text).toMatch(/^RELAY_CONNECTION_LOST: .*is closing the connection: 421 shutting down/);
    expect(session.results[1].recipients[0]).toMatchObject({ status: 'deferred', code: 421, state: 'RCPT' });
  });

  it('defers with RELAY_CONNECTION_LOST when the remote hangs up after EHLO', async () => {
    const raw = await rawServer(script((conn, line) => (line.startsWith('MAIL') ? (conn.socket.destroy(), true) : false)));
    const session = await relay(target(raw.port), [message('m1', SIMPLE)], { heloName: HELO, log });
    expect(allResults(session)[0]).toMatchObject({ status: 'deferred', code: 421, enhanced: '4.4.2', state: 'MAIL' });
    expect(allResults(session)[0].text).toMatch(/^RELAY_CONNECTION_LOST: 127\.0\.0\.1 closed the connection/);
  });

  it('defers with RELAY_CONNECT_FAILED when nothing listens', async () => {
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const session = await relay(target(port), [message('m1', SIMPLE)], { heloName: HELO, log });
    expect(allResults(session)[0]).toMatchObject({ status: 'deferred', code: 421, enhanced: '4.4.1', state: 'CONNECT' });
    expect(allResults(session)[0].text).toMatch(/^RELAY_CONNECT_FAILED: cannot connect to 127\.0\.0\.1:\d+: .*ECONNREFUSED/);
  });

  it('defers with RELAY_PROTOCOL when the remote does not speak SMTP', async () => {
    const raw = await rawServer(() => undefined, { greeting: 'SSH-2.0-OpenSSH_9.6' });
    const session = await relay(target(raw.port), [message('m1', SIMPLE)], { heloName: HELO, log });
    expect(allResults(session)[0]).toMatchObject({ status: 'deferred', state: 'GREETING' });
    expect(allResults(session)[0].text).toMatch(/^RELAY_PROTOCOL: .*not an SMTP reply/);
  });

  it('throws only for programming errors', async () => {
    await expect(relay(target(25), [message('m1', SIMPLE, { recipients: [] })], { heloName: HELO, log })).rejects.toBeInstanceOf(RelayError);
    await expect(relay(target(25), [message('m1', SIMPLE)], { heloName: 'bad name\r\n', log })).rejects.toMatchObject({ code: 'RELAY_INVALID_INPUT' });
    expect((await relay(target(25), [], { heloName: HELO, log })).results).toEqual([]);
  });
});

// ---- timeouts, drops, aborts ---------------------------------------------------------------

describe('relay: every state under its timer', () => {
  /** A script that answers normally but stays silent on the first command matching `stallOn`. */
  const stallingOn = (stallOn: (line: string) => boolean) => script((_conn, line) => stallOn(line));

  const cases: Array<{
    phase: string;
    code: string;
    state: string;
    server: () => Promise<{ port: number }>;
    timeouts: Partial<RelayTimeouts>;
    messages?: () => RelayMessage[];
    target?: Partial<RelayTarget>;
  }> = [
    { phase: 'greeting', code: 'RELAY_GREETING_TIMEOUT', state: 'GREETING', server: () => rawServer(script(), { greeting: null }), timeouts: { greeting: 200 } },
    { phase: 'EHLO', code: 'RELAY_EHLO_TIMEOUT', state: 'EHLO', server: () => rawServer(stallingOn((l) => l.startsWith('EHLO'))), timeouts: { ehlo: 200 } },
    {
      phase: 'HELO',
      code: 'RELAY_HELO_TIMEOUT',
      state: 'HELO',
      server: () => rawServer(script((conn, l) => (l.startsWith('EHLO') ? (conn.send('500 what?'), true) : l.startsWith('HELO')))),
      timeouts: { ehlo: 200 },
    },
    {
      phase: 'AUTH',
      code: 'RELAY_AUTH_TIMEOUT',
      state: 'AUTH',
      server: () => rawServer(script((conn, l) => (l.startsWith('EHLO') ? (conn.send('250-raw.test\r\n250 AUTH PLAIN'), true) : l.startsWith('AUTH')))),
      timeouts: { ehlo: 200 },
      target: { tls: 'none', auth: { user: 'u', pass: 'p' } },
    },
    { phase: 'MAIL', code: 'RELAY_MAIL_TIMEOUT', state: 'MAIL', server: () => rawServer(stallingOn((l) => l.startsWith('MAIL'))), timeouts: { mail: 200 } },
    { phase: 'RCPT', code: 'RELAY_RCPT_TIMEOUT', state: 'RCPT', server: () => rawServer(stallingOn((l) => l.startsWith('RCPT'))), timeouts: { rcpt: 200 } },
    { phase: 'DATA', code: 'RELAY_DATA_TIMEOUT', state: 'DATA', server: () => rawServer(stallingOn((l) => l === 'DATA')), timeouts: { data: 200 } },
    { phase: 'final dot', code: 'RELAY_FINAL_DOT_TIMEOUT', state: 'BODY', server: () => rawServer(stallingOn((l) => l === '.')), timeouts: { finalDot: 200 } },
    {
      phase: 'STARTTLS',
      code: 'RELAY_STARTTLS_TIMEOUT',
      state: 'STARTTLS',
      server: () => rawServer(script((conn, l) => (l.startsWith('EHLO') ? (conn.send('250-raw.test\r\n250 STARTTLS'), true) : l === 'STARTTLS'))),
      timeouts: { ehlo: 200 },
    },
    {
      phase: 'RSET',
      code: 'RELAY_RSET_TIMEOUT',
      state: 'RSET',
      server: () => rawServer(script((conn, l) => (l.startsWith('MAIL') ? (conn.send('451 4.3.0 not now'), true) : l === 'RSET'))),
      timeouts: { mail: 200 },
      messages: () => [message('m1', SIMPLE), message('m2', SIMPLE)],
    },
    {
      phase: 'connect (implicit TLS handshake)',
      code: 'RELAY_CONNECT_TIMEOUT',
      state: 'CONNECT',
      server: () => rawServer(() => undefined, { greeting: null }),
      timeouts: { connect: 200 },
    },
  ];

  for (const c of cases) {
    it(`defers with ${c.code} when the remote stalls in ${c.phase}`, async () => {
      const { port } = await c.server();
      const started = performance.now();
      const tlsMode = c.code === 'RELAY_CONNECT_TIMEOUT' ? 'implicit' : 'opportunistic';
      const session = await relay(target(port, { tls: tlsMode, rejectUnauthorized: false, ...c.target }), c.messages?.() ?? [message('m1', SIMPLE)], { heloName: HELO, log, timeouts: short(c.timeouts) });
      expect(performance.now() - started).toBeLessThan(1900);
      const results = allResults(session);
      const stalled = results.filter((r) => r.text.startsWith(c.code));
      expect(stalled.length).toBeGreaterThan(0);
      for (const r of stalled) {
        expect(r).toMatchObject({ status: 'deferred', code: 421, state: c.state });
        expect(r.text).toMatch(new RegExp(`^${c.code}: .* within 200 ms \\(state ${c.state}\\)$`));
      }
    });
  }

  it('defers with RELAY_BODY_TIMEOUT when the remote stops reading the message data', async () => {
    const raw = await rawServer(
      script((conn, line) => {
        if (line !== 'DATA') return false;
        conn.send('354 go ahead');
        conn.socket.pause(); // never read another byte: our writes back up
        return true;
      }),
    );
    let produced = 0;
    async function* endless(): AsyncGenerator<Uint8Array> {
      const line = Buffer.from(`${'y'.repeat(998)}\r\n`);
      const block = Buffer.concat(Array.from({ length: 64 }, () => line));
      for (;;) {
        produced += block.length;
        yield block;
      }
    }
    const m = message('m1', '', { size: 1 << 30, open: () => endless() });
    const session = await relay(target(raw.port), [m], { heloName: HELO, log, timeouts: short({ dataBlock: 200 }) });
    const [r] = allResults(session);
    expect(r).toMatchObject({ status: 'deferred', state: 'BODY' });
    expect(r.text).toMatch(/^RELAY_BODY_TIMEOUT: .*took no message data for 200 ms/);
    // Backpressure: we stopped reading the source once the socket stopped draining.
    expect(produced).toBeLessThan(16 * 1024 * 1024);
  });

  it('finishes with the results it has when QUIT gets no answer', async () => {
    const raw = await rawServer(script((_conn, line) => line === 'QUIT'));
    const session = await relay(target(raw.port), [message('m1', SIMPLE)], { heloName: HELO, log, timeouts: short({ quit: 200 }) });
    expect(allResults(session)[0].status).toBe('delivered');
    expect(session.transcript).toContain('-- no reply to QUIT; closing');
  });

  it('defers with RELAY_CONNECTION_LOST when the remote drops the connection mid-DATA', async () => {
    const raw = await rawServer(
      script((conn, line) => {
        if (line !== 'DATA') return false;
        conn.send('354 go ahead');
        conn.socket.once('data', () => conn.socket.destroy());
        return true;
      }),
    );
    const body = `Subject: big\r\n\r\n${'z'.repeat(2_000_000)}\r\n`;
    const session = await relay(target(raw.port), [message('m1', body), message('m2', SIMPLE)], { heloName: HELO, log });
    for (const r of allResults(session)) {
      expect(r).toMatchObject({ status: 'deferred', state: 'BODY' });
      expect(r.text).toMatch(/^RELAY_CONNECTION_LOST: .*closed the connection during DATA/);
    }
  });

  it('defers with RELAY_SOURCE_FAILED and drops the connection when the spool file cannot be read mid-DATA', async () => {
    const raw = await rawServer(script());
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('Subject: half\r\n\r\n');
      throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
    }
    const session = await relay(target(raw.port), [message('m1', '', { open: () => failing() })], { heloName: HELO, log });
    expect(allResults(session)[0]).toMatchObject({ status: 'deferred', enhanced: '4.3.0', state: 'BODY' });
    expect(allResults(session)[0].text).toMatch(/^RELAY_SOURCE_FAILED: cannot read message m1: EIO/);
    // The half-sent message was never terminated, so the remote cannot have accepted it.
    expect(raw.commands).not.toContain('.');
  });

  it('defers with RELAY_ABORTED when the signal fires, and before connecting if already aborted', async () => {
    const controller = new AbortController();
    const raw = await rawServer(script(), { greeting: null, onConnection: () => controller.abort(new Error('shutting down')) });
    const session = await relay(target(raw.port), [message('m1', SIMPLE)], { heloName: HELO, log, signal: controller.signal });
    expect(allResults(session)[0]).toMatchObject({ status: 'deferred' });
    expect(allResults(session)[0].text).toMatch(/^RELAY_ABORTED: delivery aborted in state (CONNECT|GREETING) \(shutting down\)/);

    const again = await relay(target(raw.port), [message('m2', SIMPLE)], { heloName: HELO, log, signal: controller.signal });
    expect(allResults(again)[0].text).toMatch(/^RELAY_ABORTED: delivery aborted before connecting/);
  });

  it('uses the RFC 5321 timeouts by default', () => {
    expect(DEFAULT_RELAY_TIMEOUTS).toEqual({ connect: 30_000, greeting: 300_000, ehlo: 300_000, mail: 300_000, rcpt: 300_000, data: 120_000, dataBlock: 180_000, finalDot: 600_000, quit: 60_000 });
  });
});

// ---- large messages ------------------------------------------------------------------------

describe('relay: streaming', () => {
  it('streams a 20 MB message with backpressure, never holding it in memory', async () => {
    let serverBytes = 0;
    let maxLead = 0;
    let produced = 0;
    const serverHash = createHash('sha256');
    const remote = await startSmtp({
      size: 64 * 1024 * 1024,
      onData(stream, _s, cb) {
        stream.on('data', (c: Buffer) => {
          serverBytes += c.length;
          serverHash.update(c);
        });
        stream.on('end', () => cb());
      },
    });
    const sourceHash = createHash('sha256');
    const line = Buffer.from(`${'0123456789abcdef'.repeat(4)}\r\n`);
    const block = Buffer.concat(Array.from({ length: 1024 }, () => line)); // 66 KB
    const blocks = Math.ceil((20 * 1024 * 1024) / block.length);
    let reads = 0;
    async function* source(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < blocks; i++) {
        reads++;
        produced += block.length;
        maxLead = Math.max(maxLead, produced - serverBytes);
        sourceHash.update(block);
        yield block;
      }
    }
    const rssBefore = process.memoryUsage().rss;
    const m = message('big', '', { size: blocks * block.length, open: () => source() });
    const session = await relay(target(remote.port), [m], { heloName: HELO, log });
    const rssGrowth = process.memoryUsage().rss - rssBefore;
    expect(allResults(session)[0].status).toBe('delivered');
    expect(serverBytes).toBe(blocks * block.length);
    expect(serverHash.digest('hex')).toBe(sourceHash.digest('hex'));
    expect(reads).toBe(blocks);
    // The client never ran more than a few socket buffers ahead of what the server had read.
    expect(maxLead).toBeLessThan(4 * 1024 * 1024);
    expect(rssGrowth).toBeLessThan(150 * 1024 * 1024);
  });
});

