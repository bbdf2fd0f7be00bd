// Delivery status notifications (RFC 3464): the bounce or delay notice the queue sends to a
// message's sender. A multipart/report (RFC 6522) with a text part a person can read, the
// machine-readable message/delivery-status part, and the original message (or only its headers).
import { randomBytes } from 'node:crypto';
import MimeNode from 'nodemailer/lib/mime-node';
import type { QueueEntry, QueuedRecipient } from './queue.ts';

export type DsnOptions = {
  hostname: string;
  entry: QueueEntry;
  recipients: QueuedRecipient[];
  action: 'failed' | 'delayed';
  /** The original message, or only its header block when RET=HDRS (or for a delay notice). */
  original: Buffer | null;
  now: number;
  /** When a `delayed` notice says retries will stop (wall clock); defaults to unknown. */
  retryUntil?: number;
};

const ENHANCED = /^([245])\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b/;

/** The RFC 3463 status for a recipient: the remote's enhanced code if it gave one. */
export function statusOf(r: QueuedRecipient, action: 'failed' | 'delayed'): string {
  const reply = r.lastReply ?? '';
  const m = ENHANCED.exec(reply);
  const cls = m?.[1] ?? reply.charAt(0);
  if (action === 'failed' && cls !== '5') return '5.4.7'; // gave up on a temporary failure: delivery time expired
  if (m) return m[2];
  if (cls === '5') return '5.0.0';
  return '4.0.0';
}

/** "from mx1.example.org" at the end of a reply names the remote MTA (the relay client's format). */
export function remoteMtaOf(reply: string | undefined): string | undefined {
  const m = /\bfrom ([A-Za-z0-9.:[\]-]+)\)?\s*$/.exec(reply ?? '');
  return m?.[1];
}

function rfc822Date(ms: number): string {
  return new Date(ms).toUTCString().replace(/GMT$/, '+0000');
}

function addressType(addr: string): string {
  // RFC 6533 3: an internationalized address is reported as utf-8.
  return /[^\x00-\x7f]/.test(addr) ? 'utf-8' : 'rfc822';
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ').trim();
}

function humanText(o: DsnOptions): string {
  const lines: string[] = [];
  const who = o.entry.from || 'you';
  if (o.action === 'failed') {
    lines.push(`This is the mail system at ${o.hostname}.`, '');
    lines.push(`I'm sorry to have to tell you that your message could not be delivered to ${o.recipients.length === 1 ? 'one recipient' : `${o.recipients.length} recipients`}.`);
    lines.push('It has been given up on; nobody listed below received it.', '');
  } else {
    const hours = Math.round((o.now - o.entry.createdAt) / 3_600_000);
    lines.push(`This is the mail system at ${o.hostname}.`, '');
    lines.push(`This is a warning only: your message has not been delivered yet after ${hours >= 1 ? `${hours} hour${hours === 1 ? '' : 's'}` : 'a while'}.`);
    lines.push(`It is still being retried${o.retryUntil ? ` until ${rfc822Date(o.retryUntil)}` : ''}; you do not need to send it again.`, '');
  }
  for (const r of o.recipients) {
    const reply = r.lastReply ? oneLine(r.lastReply) : 'no answer was recorded';
    const mta = remoteMtaOf(r.lastReply);
    let why: string;
    if (o.action === 'failed' && !/^5/.test(reply)) {
      const days = Math.max(1, Math.round((o.now - o.entry.createdAt) / 86_400_000));
      why = `delivery kept failing temporarily for ${days} day${days === 1 ? '' : 's'}, so it was given up. The last attempt${mta ? ` (to ${mta})` : ''} got: ${reply}`;
    } else if (o.action === 'failed') {
      why = `${mta ? `the receiving server ${mta}` : 'delivery'} refused it permanently: ${reply}`;
    } else {
      why = `the last attempt${mta ? ` (to ${mta})` : ''} failed temporarily: ${reply}`;
    }
    lines.push(`<${r.address}>: ${why}`, '');
  }
  lines.push(`The message was sent by <${who}> on ${rfc822Date(o.entry.createdAt)} (queue id ${o.entry.id}).`);
  lines.push(o.original ? 'It is attached below.' : 'A copy is not included.');
  return lines.join('\r\n') + '\r\n';
}

function deliveryStatus(o: DsnOptions): string {
  const fields: string[] = [];
  fields.push(`Reporting-MTA: dns; ${o.hostname}`);
  if (o.entry.dsn?.envid) fields.push(`Original-Envelope-Id: ${oneLine(o.entry.dsn.envid)}`);
  fields.push(`X-Hearth-Queue-ID: ${o.entry.id}`);
  fields.push(`Arrival-Date: ${rfc822Date(o.entry.createdAt)}`);
  const blocks = [fields.join('\r\n')];
  for (const r of o.recipients) {
    const f: string[] = [];
    if (r.orcpt) f.push(`Original-Recipient: ${r.orcpt.includes(';') ? oneLine(r.orcpt) : `${addressType(r.orcpt)}; ${oneLine(r.orcpt)}`}`);
    f.push(`Final-Recipient: ${addressType(r.address)}; ${r.address}`);
    f.push(`Action: ${o.action}`);
    f.push(`Status: ${statusOf(r, o.action)}`);
    const mta = remoteMtaOf(r.lastReply);
    if (mta) f.push(`Remote-MTA: dns; ${mta}`);
    if (r.lastReply) f.push(`Diagnostic-Code: smtp; ${oneLine(r.lastReply)}`);
    if (r.lastAttemptAt) f.push(`Last-Attempt-Date: ${rfc822Date(r.lastAttemptAt)}`);
    if (o.action === 'delayed' && o.retryUntil) f.push(`Will-Retry-Until: ${rfc822Date(o.retryUntil)}`);
    blocks.push(f.join('\r\n'));
  }
  return blocks.join('\r\n\r\n') + '\r\n';
}

/** The header block of a message (up to and including the blank line), or all of it if none. */
export function headerBlock(raw: Buffer): Buffer {
  const crlf = raw.indexOf('\r\n\r\n');
  const lf = raw.indexOf('\n\n');
  const end = crlf >= 0 && (lf < 0 || crlf < lf) ? crlf + 4 : lf >= 0 ? lf + 2 : raw.length;
  return raw.subarray(0, end);
}

/**
 * Build the DSN as a complete message (headers and body). The caller sends it from `<>`
 * to `entry.from`. `original`: whole message -> message/rfc822; header block only -> text/rfc822-headers.
 */
export async function buildDsn(opts: DsnOptions): Promise<Buffer> {
  const failed = opts.action === 'failed';
  const root = new MimeNode('multipart/report; report-type=delivery-status');
  root.setHeader({
    From: `Mail Delivery System <MAILER-DAEMON@${opts.hostname}>`,
    To: opts.entry.from,
    Subject: failed ? 'Undelivered Mail Returned to Sender' : 'Delayed Mail (still being retried)',
    Date: new Date(opts.now).toUTCString(),
    'Message-ID': `<${opts.now.toString(36)}.${randomBytes(6).toString('hex')}.dsn@${opts.hostname}>`,
    // RFC 3834 5: automatic responses must not trigger further automatic responses.
    'Auto-Submitted': failed ? 'auto-replied (failure)' : 'auto-replied (delay)',
  });
  root.createChild('text/plain; charset=utf-8').setHeader('Content-Description', 'Notification').setContent(humanText(opts));
  root.createChild('message/delivery-status').setHeader('Content-Description', 'Delivery report').setContent(deliveryStatus(opts));
  if (opts.original) {
    // A buffer that ends at its header block is the RET=HDRS form (or a delay notice's excerpt).
    const isHeadersOnly = opts.original.length === headerBlock(opts.original).length;
    const part = root.createChild(isHeadersOnly ? 'text/rfc822-headers' : 'message/rfc822');
    part.setHeader('Content-Description', isHeadersOnly ? 'Undelivered message headers' : 'Undelivered message');
    if (!isHeadersOnly && (opts.entry.eightBit || /[^\x00-\x7f]/.test(opts.original.toString('latin1')))) part.setHeader('Content-Transfer-Encoding', '8bit');
    part.setContent(opts.original);
  }
  return root.build();
}
