// Vacation auto-replies (RFC 3834): set with `hearth vacation` (through the control socket
// while the server runs, on disk when it does not), answered once per sender, never to the
// null sender, lists, bulk or auto-submitted mail, machines, or Bcc; remembered across restarts.
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CLI, inboxFiles, startTestHearth } from '../helpers/hearth.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { headerFields } from '../../src/smtp/forwarding.ts';
import { validateVacation, vacationActive, whyNoAutoReply } from '../../src/smtp/vacation.ts';
import { relaySuite, waitFor } from '../helpers/remote-mx.ts';

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

async function send(port: number, from: string, rcpt: string, message: string): Promise<void> {
  const c = await RawSmtp.connect(port);
  try {
    await c.reply();
    await c.command('EHLO client.test');
    expect(await c.command(`MAIL FROM:<${from}>`)).toMatch(/^250/);
    expect(await c.command(`RCPT TO:<${rcpt}>`)).toMatch(/^250/);
    expect(await c.command('DATA')).toMatch(/^354/);
    c.send(message.replace(/\r?\n/g, '\r\n') + '.\r\n');
    expect(await c.reply()).toMatch(/^250/);
    await c.command('QUIT');
  } finally {
    c.close();
  }
}

const mail = (o: { from: string; to?: string; subject: string; extra?: string }) =>
  `${o.extra ?? ''}From: <${o.from}>\nTo: ${o.to ?? '<bob@example.test>'}\nSubject: ${o.subject}\nMessage-ID: <${o.subject.replace(/\W/g, '')}@sender.example>\n\nHi Bob.\n`;

describe('vacation auto-replies', () => {
  const env = relaySuite({
    zone: {
      'sender.example': { MX: [{ preference: 10, exchange: 'mx.remote.example' }] },
      'other.example': { MX: [{ preference: 10, exchange: 'mx.remote.example' }] },
      'mx.remote.example': { A: ['127.0.0.1'] },
    },
    aliases: 'team@example.test: bob@example.test\n',
    toml: `[queue]\nfirst_retry = "200ms"\n`,
  });

  const replies = () => env.remote.received.filter((m) => m.from === '' && m.raw.includes('Auto-Submitted: auto-replied'));
  const queueEmpty = async () => {
    const r = await cli(['queue', 'list', '--json', '--config', env.setup.configDir]);
    return (JSON.parse(r.stdout) as unknown[]).length === 0 ? true : undefined;
  };

  it('answers each sender once, only people writing to the user, and remembers it across a restart', async () => {
    const c = ['--config', env.setup.configDir];
    const set = await cli(['vacation', 'set', 'Bob@example.test', '--body', 'I am away until Monday.\nBob', ...c]);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toMatch(/^vacation for bob@example\.test: on, replying now; 0 senders answered\nSubject: Re: \{subject\}/);
    const notUser = await cli(['vacation', 'set', 'team@example.test', '--body', 'x', ...c]);
    expect(notUser.code).toBe(1);
    expect(notUser.stderr).toMatch(/not a user here/);

    const port = env.hearth.smtpPort;
    await send(port, 'friend@sender.example', 'bob@example.test', mail({ from: 'friend@sender.example', subject: 'Lunch?' }));
    await send(port, 'friend@sender.example', 'bob@example.test', mail({ from: 'friend@sender.example', subject: 'Lunch again?' }));
    await send(port, '', 'bob@example.test', mail({ from: 'MAILER-DAEMON@sender.example', subject: 'null sender' }));
    await send(port, 'robot@sender.example', 'bob@example.test', mail({ from: 'robot@sender.example', subject: 'auto', extra: 'Auto-Submitted: auto-generated\n' }));
    await send(port, 'list@sender.example', 'bob@example.test', mail({ from: 'list@sender.example', subject: 'list', extra: 'List-Id: <news.sender.example>\n' }));
    await send(port, 'news@sender.example', 'bob@example.test', mail({ from: 'news@sender.example', subject: 'bulk', extra: 'Precedence: bulk\n' }));
    await send(port, 'unsub@sender.example', 'bob@example.test', mail({ from: 'unsub@sender.example', subject: 'unsub', extra: 'List-Unsubscribe: <mailto:u@sender.example>\n' }));
    await send(port, 'no-reply@sender.example', 'bob@example.test', mail({ from: 'no-reply@sender.example', subject: 'machine' }));
    await send(port, 'bcc@sender.example', 'bob@example.test', mail({ from: 'bcc@sender.example', to: '<someone@sender.example>', subject: 'bcc only' }));
    await send(port, 'human@sender.example', 'bob@example.test', mail({ from: 'human@sender.example', subject: 'explicitly not auto', extra: 'Auto-Submitted: no\n', to: 'Someone <someone@sender.example>, Bob <BOB@example.test>' }));
    // A local sender gets the reply in their own mailbox.
    await send(port, 'alice@example.test', 'bob@example.test', mail({ from: 'alice@example.test', subject: 'from a colleague' }));
    // Through an alias in To:, answered from that alias; sent last, so when its reply is out, every decision above was made.
    await send(port, 'last@other.example', 'team@example.test', mail({ from: 'last@other.example', to: '<team@example.test>', subject: 'to the team' }));
    await waitFor(() => replies().find((m) => m.to.includes('last@other.example')));
    await waitFor(queueEmpty);

    expect(replies().map((m) => m.to.join()).sort()).toEqual(['friend@sender.example', 'human@sender.example', 'last@other.example']);
    const first = replies().find((m) => m.to.includes('friend@sender.example'))!.raw.toString();
    const fields = headerFields(first);
    const get = (n: string) => fields.find((f) => f.name === n)?.value;
    expect(get('from')).toBe('<bob@example.test>');
    expect(get('to')).toBe('<friend@sender.example>');
    expect(get('subject')).toBe('Re: Lunch?');
    expect(get('auto-submitted')).toBe('auto-replied');
    expect(get('in-reply-to')).toBe('<Lunch@sender.example>');
    expect(get('references')).toBe('<Lunch@sender.example>');
    expect(first).toContain('\r\n\r\nI am away until Monday.\r\nBob\r\n');
    expect(headerFields(replies().find((m) => m.to.includes('last@other.example'))!.raw).find((f) => f.name === 'from')?.value).toBe('<team@example.test>');
    const alices = (await inboxFiles(env.setup.dataDir, 'alice@example.test')).filter((f) => f.content.includes('Subject: Re: from a colleague'));
    expect(alices).toHaveLength(1);
    expect(alices[0].content.toString()).toMatch(/^Return-Path: <>\r\n/);

    const state = JSON.parse(await readFile(join(env.setup.dataDir, 'vacation', 'bob@example.test.json'), 'utf8')) as { replied: Record<string, number> };
    expect(Object.keys(state.replied).sort()).toEqual(['alice@example.test', 'friend@sender.example', 'human@sender.example', 'last@other.example']);
    const shown = await cli(['vacation', 'show', 'bob@example.test', '--json', ...c]);
    expect(JSON.parse(shown.stdout)).toMatchObject({ active: true, answered: 4, settings: { subject: 'Re: {subject}' } });

    // Restart: the state is on disk, so friend is still not answered again; the CLI reads it offline meanwhile.
    await env.hearth.close();
    const offline = await cli(['vacation', 'show', 'bob@example.test', ...c]);
    expect(offline.stdout).toMatch(/^vacation for bob@example\.test: on, replying now; 4 senders answered/);
    env.hearth = await startTestHearth(env.setup);
    const before = replies().length;
    await send(env.hearth.smtpPort, 'friend@sender.example', 'bob@example.test', mail({ from: 'friend@sender.example', subject: 'After restart' }));
    await send(env.hearth.smtpPort, 'new@other.example', 'bob@example.test', mail({ from: 'new@other.example', subject: 'newcomer' }));
    await waitFor(() => replies().find((m) => m.to.includes('new@other.example')));
    await waitFor(queueEmpty);
    expect(replies().slice(before).map((m) => m.to.join())).toEqual(['new@other.example']);

    const off = await cli(['vacation', 'off', 'bob@example.test', ...c]);
    expect(off.stdout).toBe('vacation for bob@example.test: off\n');
  });
});

describe('vacation rules', () => {
  const f = (text: string) => headerFields(`${text}\r\n\r\n`);
  it('says why a message gets no reply (RFC 3834 2)', () => {
    expect(whyNoAutoReply('a@x.example', f('Subject: hi'))).toBeUndefined();
    expect(whyNoAutoReply('a@x.example', f('Auto-Submitted: No'))).toBeUndefined();
    expect(whyNoAutoReply('', f('Subject: hi'))).toBe('null sender');
    for (const s of ['MAILER-DAEMON@x.example', 'noreply@x.example', 'no-reply@x.example', 'donotreply@x.example', 'owner-list@x.example', 'list-request@x.example', 'bounces+123@x.example', 'postmaster@x.example']) {
      expect(whyNoAutoReply(s, f('Subject: hi')), s).toBe('machine sender');
    }
    expect(whyNoAutoReply('a@x.example', f('Auto-Submitted: auto-replied; owner-email="x@y"'))).toBe('Auto-Submitted');
    expect(whyNoAutoReply('a@x.example', f('List-Id:\r\n <l.x.example>'))).toBe('mailing list');
    expect(whyNoAutoReply('a@x.example', f('Precedence: JUNK'))).toBe('Precedence: junk');
    expect(whyNoAutoReply('a@x.example', f('Precedence: first-class'))).toBeUndefined();
    expect(whyNoAutoReply('a@x.example', f('X-Auto-Response-Suppress: OOF, AutoReply'))).toBe('X-Auto-Response-Suppress');
  });

  it('validates settings and honours the first and last day', () => {
    expect(validateVacation({ body: '' })).toMatch(/reply text/);
    expect(validateVacation({ body: 'x', subject: 'two\nlines' })).toMatch(/one line/);
    expect(validateVacation({ body: 'x', start: 'next week' })).toMatch(/--start/);
    expect(validateVacation({ body: 'x', start: '2026-07-10', end: '2026-07-01' })).toMatch(/before/);
    const s = validateVacation({ body: 'away', start: '2026-07-01', end: '2026-07-10' });
    expect(s).toEqual({ subject: 'Re: {subject}', body: 'away', start: '2026-07-01', end: '2026-07-10' });
    if (typeof s === 'string') throw new Error(s);
    expect(vacationActive(s, new Date(2026, 5, 30, 23, 59).getTime())).toBe(false);
    expect(vacationActive(s, new Date(2026, 6, 1, 0, 0).getTime())).toBe(true);
    expect(vacationActive(s, new Date(2026, 6, 10, 23, 59).getTime())).toBe(true);
    expect(vacationActive(s, new Date(2026, 6, 11, 0, 0).getTime())).toBe(false);
    expect(vacationActive(null, Date.now())).toBe(false);
  });
});
