import { simpleParser } from 'mailparser';
import type { ParsedMail } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { buildDsn } from '../../src/queue/dsn.ts';
import type { DeliveryOutcome, QueueEntry } from '../../src/queue/queue.ts';
import { answerAll, message, queuesPerTest, settle, waitFor } from './helpers.ts';

const queueWith = queuesPerTest();

const MIN = 60_000;
const REJECT = '550 5.1.1 <bob@remote.test>: no such user (in reply to RCPT TO, from mx1.remote.test)';

/**
 * A part's body. mailparser folds message/delivery-status into `text`, so that one is cut from
 * the raw message at the boundary mailparser reported; the others come from its attachments.
 */
function part(mail: ParsedMail, type: string, raw?: Buffer): string {
  if (type === 'message/delivery-status') {
    const ct = mail.headers.get('content-type') as { value: string; params: Record<string, string> };
    const pieces = (raw ?? Buffer.alloc(0)).toString('utf8').split(`--${ct.params.boundary}`);
    const found = pieces.find((p) => /^Content-Type: message\/delivery-status/im.test(p.slice(0, p.indexOf('\r\n\r\n'))));
    if (!found) throw new Error('no message/delivery-status part');
    const body = found.slice(found.indexOf('\r\n\r\n') + 4);
    // mailparser read it too: it is in the text it shows.
    expect(mail.text).toContain(body.split('\r\n').find((l) => l.startsWith('Final-Recipient')));
    return body;
  }
  const a = mail.attachments.find((x) => x.contentType === type);
  if (!a) throw new Error(`no ${type} part; parts: ${mail.attachments.map((x) => x.contentType).join(', ')}`);
  return a.content.toString('utf8');
}

async function parse(raw: Buffer): Promise<ParsedMail> {
  return simpleParser(raw);
}

describe('failure DSN', () => {
  it('a 5xx bounces to the sender as a multipart/report carrying the remote reply', async () => {
    const h = await queueWith({ deliver: answerAll('failed', REJECT) });
    const raw = message('lost letter');
    const id = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test', orcpt: 'rfc822;bob@remote.test' }], dsn: { envid: 'ENV-42' } }, raw);
    await waitFor(() => h.queue.list().length === 0, 'bounced and removed');
    expect(h.bounces).toHaveLength(1);
    const b = h.bounces[0];
    expect(b.from).toBe('');
    expect(b.to).toBe('alice@hearth.example');
    const head = b.raw.subarray(0, b.raw.indexOf('\r\n\r\n')).toString();
    expect(head).toMatch(/Content-Type: multipart\/report;\s+report-type=delivery-status/i);
    expect(head).toMatch(/^Auto-Submitted: auto-replied/im);

    const mail = await parse(b.raw);
    expect(mail.headers.get('content-type')).toMatchObject({ value: 'multipart/report', params: { 'report-type': 'delivery-status' } });
    expect(mail.subject).toBe('Undelivered Mail Returned to Sender');
    expect(mail.from?.value[0].address).toBe('MAILER-DAEMON@hearth.example');
    expect(mail.text).toContain('<bob@remote.test>: the receiving server mx1.remote.test refused it permanently: ' + REJECT);
    expect(mail.text).toContain(`queue id ${id}`);
    const status = part(mail, 'message/delivery-status', b.raw);
    expect(status).toContain('Reporting-MTA: dns; hearth.example');
    expect(status).toContain('Original-Envelope-Id: ENV-42');
    expect(status).toMatch(/^Arrival-Date: \w{3}, \d{2} Jan 2025 12:00:00 \+0000$/m);
    expect(status).toContain('Original-Recipient: rfc822;bob@remote.test');
    expect(status).toContain('Final-Recipient: rfc822; bob@remote.test');
    expect(status).toContain('Action: failed');
    expect(status).toContain('Status: 5.1.1');
    expect(status).toContain('Remote-MTA: dns; mx1.remote.test');
    expect(status).toContain(`Diagnostic-Code: smtp; ${REJECT}`);
    // The original comes back whole (RET=FULL is the default here).
    expect(part(mail, 'message/rfc822')).toBe(raw.toString());
  });

  it('with RET=HDRS returns only the headers of the original', async () => {
    const h = await queueWith({ deliver: answerAll('failed', REJECT) });
    await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }], dsn: { ret: 'HDRS' } }, message('headers only'));
    await waitFor(() => h.bounces.length === 1, 'bounce');
    const mail = await parse(h.bounces[0].raw);
    const headers = part(mail, 'text/rfc822-headers');
    expect(headers).toContain('Subject: headers only');
    expect(headers).not.toContain('Hi Bob');
    expect(mail.attachments.some((a) => a.contentType === 'message/rfc822')).toBe(false);
  });

  it('partial failure: one DSN naming only the failed recipient', async () => {
    const h = await queueWith({
      deliver: async (job): Promise<DeliveryOutcome> => ({
        recipients: job.recipients.map((r) => (r.address === 'bob@remote.test' ? { address: r.address, status: 'failed', reply: REJECT } : { address: r.address, status: 'delivered', reply: '250 2.1.5 ok (from mx1.remote.test)' })),
      }),
    });
    await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'carol@remote.test' }, { address: 'bob@remote.test' }] }, message());
    await waitFor(() => h.queue.list().length === 0, 'done');
    expect(h.bounces).toHaveLength(1);
    const mail = await parse(h.bounces[0].raw);
    const status = part(mail, 'message/delivery-status', h.bounces[0].raw);
    expect(status).toContain('Final-Recipient: rfc822; bob@remote.test');
    expect(status).not.toContain('carol');
    expect(mail.text).not.toContain('carol');
    expect(mail.text).toContain('one recipient');
  });

  it('never bounces a message from the null sender', async () => {
    const h = await queueWith({ deliver: answerAll('failed', REJECT) });
    await h.queue.enqueue({ from: '', recipients: [{ address: 'bob@remote.test' }] }, message('a bounce itself'));
    await waitFor(() => h.queue.list().length === 0, 'dropped');
    expect(h.calls).toHaveLength(1);
    expect(h.bounces).toEqual([]);
  });

  it('respects NOTIFY=NEVER and NOTIFY without FAILURE', async () => {
    const h = await queueWith({ deliver: answerAll('failed', REJECT) });
    await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'a@remote.test', notify: ['NEVER'] }, { address: 'b@remote.test', notify: ['SUCCESS', 'DELAY'] }, { address: 'c@remote.test', notify: ['FAILURE'] }] }, message());
    await waitFor(() => h.queue.list().length === 0, 'done');
    expect(h.bounces).toHaveLength(1);
    const status = part(await parse(h.bounces[0].raw), 'message/delivery-status', h.bounces[0].raw);
    expect(status).toContain('c@remote.test');
    expect(status).not.toMatch(/\b[ab]@remote\.test/);
  });

  it('a bounce that cannot be handed over is retried, and the entry stays until it is', async () => {
    let failBounce = true;
    const h = await queueWith({
      deliver: answerAll('failed', REJECT),
      bounce: async () => {
        if (failBounce) throw new Error('mailbox unavailable');
      },
    });
    const id = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message());
    await waitFor(() => h.queue.get(id)?.recipients[0].status === 'failed', 'failed');
    expect(h.queue.get(id)).toBeDefined();
    failBounce = false;
    h.advance(10 * MIN);
    await waitFor(() => h.queue.list().length === 0, 'bounced on retry and removed');
    expect(h.bounces).toHaveLength(1);
  });

  it('fails with a DSN when the lifetime ends, after a last attempt at the deadline', async () => {
    const last = '451 4.3.0 mailbox temporarily unavailable (in reply to RCPT TO, from mx1.remote.test)';
    const h = await queueWith({ deliver: answerAll('deferred', last), policy: { firstRetryMs: 10 * MIN, maxRetryMs: 40 * MIN, lifetimeMs: 60 * MIN } });
    const t0 = h.clock.t;
    const id = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message());
    // Attempts at 0, 10, 30 and 60 (the lifetime end) minutes.
    for (const [i, at] of [10, 30, 60].entries()) {
      await waitFor(() => h.completed.count === i + 1 && h.queue.get(id)?.recipients[0].nextAttemptAt === t0 + at * MIN, `deferred until ${at} min`);
      h.advance(t0 + at * MIN - h.clock.t);
    }
    await waitFor(() => h.queue.list().length === 0, 'expired and removed');
    expect(h.calls).toHaveLength(4);
    expect(h.bounces).toHaveLength(1);
    const mail = await parse(h.bounces[0].raw);
    expect(mail.text).toContain('given up');
    expect(mail.text).toContain(last);
    const status = part(mail, 'message/delivery-status', h.bounces[0].raw);
    expect(status).toContain('Action: failed');
    expect(status).toContain('Status: 5.4.7');
    expect(status).toContain(`Diagnostic-Code: smtp; ${last}`);
  });
});

describe('delay DSN', () => {
  it('warns once, with Action: delayed, after delayWarningMs', async () => {
    const h = await queueWith({ deliver: answerAll('deferred', '451 4.2.1 try later (from mx1.remote.test)'), policy: { firstRetryMs: 20 * MIN, maxRetryMs: 80 * MIN, delayWarningMs: 30 * MIN } });
    const t0 = h.clock.t;
    const id = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message('slow'));
    const at = [20, 60, 140];
    for (const [i, m] of at.entries()) {
      await waitFor(() => h.completed.count === i + 1 && h.queue.get(id)?.recipients[0].nextAttemptAt === t0 + m * MIN, `next attempt at ${m} min`);
      if (m === 20) expect(h.bounces).toHaveLength(0); // 20 min < 30 min: too early for a warning
      h.advance(t0 + m * MIN - h.clock.t);
    }
    await waitFor(() => h.completed.count === 4, 'fourth attempt');
    await settle(); // a second warning would be sent right after the outcome
    expect(h.bounces).toHaveLength(1);
    expect(h.queue.get(id)?.delayWarned).toBe(true);
    const mail = await parse(h.bounces[0].raw);
    expect(mail.subject).toBe('Delayed Mail (still being retried)');
    expect(mail.text).toContain('This is a warning only');
    const status = part(mail, 'message/delivery-status', h.bounces[0].raw);
    expect(status).toContain('Action: delayed');
    expect(status).toContain('Status: 4.2.1');
    expect(status).toMatch(/^Will-Retry-Until: /m);
    expect(part(mail, 'text/rfc822-headers')).toContain('Subject: slow');
  });
});

describe('buildDsn', () => {
  it('reports an internationalized recipient as utf-8 and omits Remote-MTA when unknown', async () => {
    const entry: QueueEntry = { id: 'abcdefgh1234', from: 'alice@hearth.example', recipients: [], size: 10, createdAt: Date.UTC(2025, 0, 1), held: false, needsSmtpUtf8: true, eightBit: true };
    const raw = await buildDsn({
      hostname: 'hearth.example',
      entry,
      recipients: [{ address: 'jörg@bücher.test', status: 'failed', attempts: 1, lastReply: '550 5.1.1 unknown' }],
      action: 'failed',
      original: null,
      now: Date.UTC(2025, 0, 2),
    });
    const mail = await parse(raw);
    const status = part(mail, 'message/delivery-status', raw);
    expect(status).toContain('Final-Recipient: utf-8; jörg@bücher.test');
    expect(status).not.toContain('Remote-MTA');
    expect(mail.text).toContain('A copy is not included.');
  });
});
