// RFC 2920 PIPELINING in the relay client: with a server that offers it, MAIL FROM, every
// RCPT TO and DATA go out in one write and the replies are matched to them in order; without
// it, one command per reply as before. Raw scripted remotes show what arrived before which
// reply; smtp-server remotes show it against a real implementation.
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import net from 'node:net';
import { Readable } from 'node:stream';
import { silentLogger } from '../../src/core/log.ts';
import { relay, RelayClient } from '../../src/smtp/relay-client.ts';
import type { RelayMessage, RelaySession, RelayTarget } from '../../src/smtp/relay-client.ts';
import { RelayPool } from '../../src/smtp/relay-pool.ts';
import { HELO, script, short, useRelayServers } from '../helpers/relay-servers.ts';
import type { RawConn } from '../helpers/relay-servers.ts';

const log = silentLogger();
const { cleanups, startSmtp, rawServer } = useRelayServers({ beforeAll, afterEach });

const BODY = 'From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: pipelined\r\n\r\n.a line with a dot\r\nHello.\r\n';

function message(id: string, recipients: string[], over: Partial<RelayMessage> = {}): RelayMessage {
  const buf = Buffer.from(BODY);
  return {
    id,
    from: 'alice@example.test',
    recipients: recipients.map((address) => ({ address })),
    size: buf.length,
    open: () => Readable.from([buf.subarray(0, 9), buf.subarray(9)]),
    needsSmtpUtf8: false,
    eightBit: false,
    ...over,
  };
}

const plain = (port: number): RelayTarget => ({ host: '127.0.0.1', port, tls: 'none' });
const verb = (line: string): string => line.split(/[ :]/)[0];

/**
 * A pipelining remote that answers nothing of a transaction until DATA has arrived, then every
 * reply at once (`rcpt` decides each RCPT's). A client that waits for the MAIL reply before
 * sending RCPT never gets one: with a 1 s MAIL timer it fails instead of hanging the test.
 */
function holdUntilData(rcpt: (line: string) => string = () => '250 2.1.5 ok', data = '354 go ahead') {
  const held = new Map<RawConn, string[]>();
  return script(
    (conn, line) => {
      const v = verb(line).toUpperCase();
      if (v === 'MAIL' || v === 'RCPT') {
        held.set(conn, [...(held.get(conn) ?? []), v === 'MAIL' ? '250 2.1.0 sender ok' : rcpt(line)]);
        return true;
      }
      if (v === 'DATA') {
        for (const reply of held.get(conn) ?? []) conn.send(reply);
        held.delete(conn);
        conn.send(data);
        return true;
      }
      return false;
    },
    { pipelining: true },
  );
}

describe('relay: PIPELINING offered', () => {
  it('sends MAIL, every RCPT and DATA before the first reply, and the body only after 354', async () => {
    const raw = await rawServer(holdUntilData());
    const m = message('m1', ['a@remote.test', 'b@remote.test', 'c@remote.test']);
    const session = await relay(plain(raw.port), [m], { heloName: HELO, log, timeouts: short({ mail: 1000 }) });
    expect(session.results[0].recipients.map((r) => [r.address, r.status, r.state])).toEqual([
      ['a@remote.test', 'delivered', 'BODY'],
      ['b@remote.test', 'delivered', 'BODY'],
      ['c@remote.test', 'delivered', 'BODY'],
    ]);
    const timeline = raw.timelineOf(1);
    expect(timeline.map((t) => verb(t.line))).toEqual(['EHLO', 'MAIL', 'RCPT', 'RCPT', 'RCPT', 'DATA', '.', 'QUIT']);
    // Greeting and EHLO answered; then the whole group arrived before any reply to it.
    const group = timeline.slice(1, 6);
    expect(group.map((t) => t.repliesBefore)).toEqual([2, 2, 2, 2, 2]);
    expect(new Set(group.map((t) => t.chunk)).size).toBe(1);
    // MAIL, 3 RCPT and 354 replies came before the body (no data before the go-ahead).
    expect(timeline[6].repliesBefore).toBe(2 + 5);
    expect(raw.bodies.map(String)).toEqual([BODY.replace('\r\n.a line', '\r\n..a line')]);
  });

  it('maps mixed RCPT replies (250, 450, 550) to their recipients', async () => {
    const replies: Record<string, string> = {
      'RCPT TO:<ok@remote.test>': '250 2.1.5 ok',
      'RCPT TO:<full@remote.test>': '450 4.2.2 mailbox full',
      'RCPT TO:<gone@remote.test>': '550 5.1.1 no such user',
      'RCPT TO:<ok2@remote.test>': '251 2.1.5 will forward',
    };
    const raw = await rawServer(holdUntilData((line) => replies[line]));
    const m = message('m1', ['ok@remote.test', 'full@remote.test', 'gone@remote.test', 'ok2@remote.test']);
    const session = await relay(plain(raw.port), [m], { heloName: HELO, log, timeouts: short({ mail: 1000 }) });
    expect(session.results[0].recipients).toEqual([
      { address: 'ok@remote.test', status: 'delivered', code: 250, enhanced: '2.0.0', text: 'queued as RAW1', state: 'BODY' },
      { address: 'full@remote.test', status: 'deferred', code: 450, enhanced: '4.2.2', text: 'mailbox full', state: 'RCPT' },
      { address: 'gone@remote.test', status: 'failed', code: 550, enhanced: '5.1.1', text: 'no such user', state: 'RCPT' },
      { address: 'ok2@remote.test', status: 'delivered', code: 250, enhanced: '2.0.0', text: 'queued as RAW1', state: 'BODY' },
    ]);
  });

  it('maps mixed replies from smtp-server, keeping DSN parameters, and delivers to the accepted ones only', async () => {
    const remote = await startSmtp({
      hideDSN: false,
      onRcptTo(address, _s, cb) {
        if (address.address === 'full@remote.test') cb(Object.assign(new Error('4.2.2 Mailbox full'), { responseCode: 450 }));
        else if (address.address === 'gone@remote.test') cb(Object.assign(new Error('5.1.1 No such user'), { responseCode: 550 }));
        else cb();
      },
    });
    const m = message('m1', [], {
      recipients: [{ address: 'full@remote.test' }, { address: 'ok@remote.test', notify: ['FAILURE'], orcpt: 'rfc822;ok@remote.test' }, { address: 'gone@remote.test' }],
      dsn: { ret: 'HDRS', envid: 'ENV1' },
    });
    const session = await relay(plain(remote.port), [m], { heloName: HELO, log, timeouts: short() });
    expect(session.results[0].recipients.map((r) => [r.address, r.status, r.code, r.state])).toEqual([
      ['full@remote.test', 'deferred', 450, 'RCPT'],
      ['ok@remote.test', 'delivered', 250, 'BODY'],
      ['gone@remote.test', 'failed', 550, 'RCPT'],
    ]);
    expect(remote.received).toHaveLength(1);
    expect(remote.received[0].envelope.rcptTo.map((r) => [r.address, r.dsn])).toEqual([['ok@remote.test', { notify: ['FAILURE'], orcpt: 'rfc822;ok@remote.test' }]]);
    expect(remote.received[0].envelope.mailFrom && remote.received[0].envelope.mailFrom.args).toMatchObject({ RET: 'HDRS', ENVID: 'ENV1' });
    // The transcript shows the group: every command before the first reply to it.
    const t = session.transcript;
    const firstReplyAfterMail = t.findIndex((l, i) => i > t.findIndex((x) => x.startsWith('C: MAIL')) && l.startsWith('S: '));
    expect(t.slice(t.findIndex((x) => x.startsWith('C: MAIL')), firstReplyAfterMail).map((l) => verb(l.slice(3)))).toEqual(['MAIL', 'RCPT', 'RCPT', 'RCPT', 'DATA']);
  });

  it('sends only "." when DATA gets 354 although no recipient was accepted, and delivers nothing', async () => {
    const raw = await rawServer(holdUntilData((line) => (line.includes('<a@') ? '550 5.1.1 unknown' : line.includes('<b@') ? '450 4.2.1 try later' : '250 2.1.5 ok')));
    const m = message('m1', ['a@remote.test', 'b@remote.test']);
    const session = await relay(plain(raw.port), [m, message('m2', ['c@remote.test'])], { heloName: HELO, log, timeouts: short({ mail: 1000 }) });
    expect(session.results[0].recipients).toMatchObject([
      { address: 'a@remote.test', status: 'failed', code: 550, state: 'RCPT' },
      { address: 'b@remote.test', status: 'deferred', code: 450, state: 'RCPT' },
    ]);
    // The connection stays usable: the next message goes over it.
    expect(session.results[1].recipients[0]).toMatchObject({ status: 'delivered', state: 'BODY' });
    expect(raw.commandsOn(1).map(verb)).toEqual(['EHLO', 'MAIL', 'RCPT', 'RCPT', 'DATA', '.', 'MAIL', 'RCPT', 'DATA', '.', 'QUIT']);
    // No body bytes for m1: an empty message, then m2's body.
    expect(raw.bodies.map(String)).toEqual(['', BODY.replace('\r\n.a line', '\r\n..a line')]);
    expect(session.transcript).toContain('C: .');
    expect(session.transcript.some((l) => /no recipient accepted/.test(l))).toBe(true);
  });

  it('sends no body when DATA is refused after every RCPT was (554 no valid recipients)', async () => {
    const raw = await rawServer(holdUntilData(() => '550 5.1.1 unknown', '554 5.5.1 no valid recipients'));
    const session = await relay(plain(raw.port), [message('m1', ['a@remote.test']), message('m2', ['b@remote.test'])], { heloName: HELO, log, timeouts: short({ mail: 1000 }) });
    expect(session.results[0].recipients[0]).toMatchObject({ status: 'failed', code: 550, state: 'RCPT' });
    expect(session.results[1].recipients[0]).toMatchObject({ status: 'failed', code: 550, state: 'RCPT' });
    expect(raw.bodies).toEqual([]);
    expect(raw.commandsOn(1).map(verb)).toEqual(['EHLO', 'MAIL', 'RCPT', 'DATA', 'RSET', 'MAIL', 'RCPT', 'DATA', 'QUIT']);
  });

  it('gives every recipient the MAIL FROM refusal and reads past the 503s that follow it', async () => {
    const raw = await rawServer(
      script(
        (conn, line) => {
          const v = verb(line).toUpperCase();
          if (line.startsWith('MAIL FROM:<refused@')) {
            (conn as RawConn & { refused?: boolean }).refused = true;
            conn.send('550 5.7.1 sender refused');
            return true;
          }
          if (v === 'MAIL' || v === 'RSET') (conn as RawConn & { refused?: boolean }).refused = false;
          if ((v === 'RCPT' || v === 'DATA') && (conn as RawConn & { refused?: boolean }).refused) {
            conn.send(v === 'RCPT' ? '503 5.5.1 need MAIL first' : '503 5.5.1 need RCPT first');
            return true;
          }
          return false;
        },
        { pipelining: true },
      ),
    );
    const p = new RelayPool({ log, idleMs: 5_000 });
    cleanups.push(() => p.close());
    const first = await p.relay(plain(raw.port), [message('m1', ['a@remote.test', 'b@remote.test'], { from: 'refused@example.test' })], { heloName: HELO, log, timeouts: short() });
    for (const r of first.results[0].recipients) expect(r).toMatchObject({ status: 'failed', code: 550, enhanced: '5.7.1', text: 'sender refused', state: 'MAIL' });
    const second = await p.relay(plain(raw.port), [message('m2', ['c@remote.test'])], { heloName: HELO, log, timeouts: short() });
    expect(second.results[0].recipients[0]).toMatchObject({ status: 'delivered', state: 'BODY' });
    expect(raw.connections()).toBe(1);
    // The reused connection's RSET goes in the same group as the next MAIL.
    const timeline = raw.timelineOf(1);
    expect(timeline.map((t) => verb(t.line))).toEqual(['EHLO', 'MAIL', 'RCPT', 'RCPT', 'DATA', 'RSET', 'MAIL', 'RCPT', 'DATA', '.']);
    const rset = timeline.findIndex((t) => t.line === 'RSET');
    expect(new Set(timeline.slice(rset, rset + 4).map((t) => t.chunk)).size).toBe(1);
    expect(raw.bodies).toHaveLength(1);
  });

  it('a reused connection whose pipelined RSET gets 421 sends no body there and delivers over a new connection, once', async () => {
    const raw = await rawServer(script((conn, line) => (conn.id === 1 && line === 'RSET' ? (conn.send('421 4.4.2 idle too long'), conn.socket.end(), true) : false), { pipelining: true }));
    const p = new RelayPool({ log, idleMs: 5_000 });
    cleanups.push(() => p.close());
    await p.relay(plain(raw.port), [message('m1', ['a@remote.test'])], { heloName: HELO, log, timeouts: short() });
    const second = await p.relay(plain(raw.port), [message('m2', ['b@remote.test'])], { heloName: HELO, log, timeouts: short() });
    expect(second.results[0].recipients[0]).toMatchObject({ status: 'delivered', state: 'BODY' });
    expect(raw.connections()).toBe(2);
    // The group went out with the RSET; the 421 stopped it before any body.
    expect(raw.commandsOn(1).map(verb)).toEqual(['EHLO', 'MAIL', 'RCPT', 'DATA', '.', 'RSET', 'MAIL', 'RCPT', 'DATA']);
    expect(raw.commandsOn(2).map(verb)).toEqual(['EHLO', 'MAIL', 'RCPT', 'DATA', '.']);
    expect(raw.bodies).toHaveLength(2);
  });

  it('consumes the 503s of smtp-server after a refused MAIL FROM and delivers the next message on the same connection', async () => {
    const remote = await startSmtp({
      onMailFrom(address, _s, cb) {
        if (address.address === 'greylisted@example.test') cb(Object.assign(new Error('4.7.1 Greylisted'), { responseCode: 451 }));
        else cb();
      },
    });
    const session = await relay(plain(remote.port), [message('m1', ['a@remote.test', 'b@remote.test'], { from: 'greylisted@example.test' }), message('m2', ['c@remote.test'])], {
      heloName: HELO,
      log,
      timeouts: short(),
    });
    for (const r of session.results[0].recipients) expect(r).toMatchObject({ status: 'deferred', code: 451, enhanced: '4.7.1', state: 'MAIL' });
    expect(session.results[1].recipients[0]).toMatchObject({ status: 'delivered', state: 'BODY' });
    expect(session.transcript.filter((l) => l.startsWith('S: 503'))).toHaveLength(3);
    expect(remote.received.map((r) => r.envelope.rcptTo.map((x) => x.address))).toEqual([['c@remote.test']]);
    expect(remote.connections()).toBe(1);
  });

  it('sends only "." when a broken server answers DATA with 354 after refusing MAIL FROM', async () => {
    const raw = await rawServer(script((conn, line) => (line.startsWith('MAIL') ? (conn.send('451 4.3.0 later'), true) : line.startsWith('RCPT') ? (conn.send('503 5.5.1 no MAIL'), true) : false), { pipelining: true }));
    const session = await relay(plain(raw.port), [message('m1', ['a@remote.test'])], { heloName: HELO, log, timeouts: short() });
    expect(session.results[0].recipients[0]).toMatchObject({ status: 'deferred', code: 451, state: 'MAIL' });
    expect(raw.bodies.map(String)).toEqual(['']);
  });
});

describe('relay: PIPELINING not offered', () => {
  it('waits for each reply before the next command', async () => {
    const raw = await rawServer(script());
    const session = await relay(plain(raw.port), [message('m1', ['a@remote.test', 'b@remote.test', 'c@remote.test'])], { heloName: HELO, log, timeouts: short() });
    expect(session.results[0].recipients.every((r) => r.status === 'delivered')).toBe(true);
    const timeline = raw.timelineOf(1);
    expect(timeline.map((t) => verb(t.line))).toEqual(['EHLO', 'MAIL', 'RCPT', 'RCPT', 'RCPT', 'DATA', '.', 'QUIT']);
    // One reply more before each command than before the one ahead of it.
    expect(timeline.map((t) => t.repliesBefore)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(new Set(timeline.map((t) => t.chunk)).size).toBe(timeline.length);
  });

  it('does not pipeline with smtp-server when PIPELINING is hidden', async () => {
    const remote = await startSmtp({ hidePIPELINING: true });
    const session = await relay(plain(remote.port), [message('m1', ['a@remote.test', 'b@remote.test'])], { heloName: HELO, log, timeouts: short() });
    expect(session.results[0].recipients.every((r) => r.status === 'delivered')).toBe(true);
    const t = session.transcript;
    const from = t.findIndex((l) => l.startsWith('C: MAIL'));
    // MAIL, RCPT, RCPT, DATA: each answered before the next is sent.
    expect(t.slice(from, from + 8).map((l) => l.slice(0, 1))).toEqual(['C', 'S', 'C', 'S', 'C', 'S', 'C', 'S']);
  });
});

describe('relay: PIPELINING on a reused connection', () => {
  it('a pipelined reuse RSET whose reply a server holds while it checks the group is not taken for a dead connection', async () => {
    // RFC 2920 3.2: a server may keep the replies to RSET, MAIL and RCPT until it has worked
    // through the group; here the second transaction's replies wait on a slow recipient check.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      let release: () => void = () => undefined;
      const released = new Promise<void>((resolve) => (release = resolve));
      const held: string[] = [];
      const raw = await rawServer(
        script(
          (conn, line) => {
            if (conn.id !== 1 || !conn.replies || raw.commandsOn(1).filter((l) => l === 'RSET').length === 0) return false;
            const v = verb(line).toUpperCase();
            if (v === 'RSET' || v === 'MAIL' || v === 'RCPT') {
              held.push(v === 'RCPT' ? '250 2.1.5 ok' : '250 2.0.0 ok');
              return true;
            }
            if (v === 'DATA') {
              void released.then(() => {
                for (const reply of held.splice(0)) conn.send(reply);
                conn.send('354 go ahead');
              });
              return true;
            }
            return false;
          },
          { pipelining: true },
        ),
      );
      const p = new RelayPool({ log, idleMs: 5_000 });
      const opts = { heloName: HELO, log, timeouts: short({ mail: 60_000, rcpt: 60_000, data: 60_000 }) };
      await p.relay(plain(raw.port), [message('m1', ['a@remote.test'])], opts);
      const dataSeen = raw.nextLine((l) => l === 'DATA');
      const pending = p.relay(plain(raw.port), [message('m2', ['b@remote.test'])], opts);
      await dataSeen;
      // Longer than the 20 s an RSET sent alone may take, shorter than the MAIL timeout.
      await vi.advanceTimersByTimeAsync(25_000);
      release();
      const second = await pending;
      // Not given up as stale (which would open a second connection): delivered over the first.
      expect(raw.connections()).toBe(1);
      expect(second.results[0].recipients[0]).toMatchObject({ status: 'delivered', state: 'BODY' });
      expect(raw.bodies).toHaveLength(2);
      await p.close();
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('relay: a reused connection that closes as it is handed a message', () => {
  it('stays CLOSED with no timer when the remote hangs up just before send()', async () => {
    const raw = await rawServer(script(undefined, { pipelining: true }));
    const sockets: net.Socket[] = [];
    const connect = net.connect;
    const spy = vi.spyOn(net, 'connect').mockImplementation(((...args: Parameters<typeof net.connect>) => {
      const s = connect(...args);
      sockets.push(s);
      return s;
    }) as typeof net.connect);
    try {
      const client = new RelayClient(plain(raw.port), [message('m1', ['a@remote.test'])], { heloName: HELO, log, timeouts: short(), reuse: { idleMs: 5_000 } });
      await client.run();
      expect(client.idle).toBe(true);
      // The client has seen the close (its handler is queued) but not acted on it yet when the
      // pool hands it the next message, as a pool taking it in the same tick would.
      const handed = new Promise<Promise<RelaySession>>((resolve) => sockets[0].once('close', () => resolve(client.send([message('m2', ['b@remote.test'])]))));
      raw.socketOf(1).destroy();
      const session = await (await handed);
      expect(session.staleConnection).toBe(true);
      await new Promise((r) => setTimeout(r, 50));
      expect(client.state).toBe('CLOSED');
      expect(client.timerArmed).toBe(false);
      expect(raw.commandsOn(1)).not.toContain('RSET');
    } finally {
      spy.mockRestore();
    }
  });
});
