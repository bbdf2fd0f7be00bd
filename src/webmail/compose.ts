// Messages written in the webmail, built with nodemailer's MailComposer: From is always the
// logged-in user (the submission pipeline checks it again), In-Reply-To/References for replies,
// files as attachments, a forwarded message as a message/rfc822 attachment. Bcc stays out of
// what is sent and in the copy kept in Sent or Drafts.
import { randomBytes } from 'node:crypto';
import MailComposer from 'nodemailer/lib/mail-composer';
import type Mail from 'nodemailer/lib/mailer';
import addressparser from 'nodemailer/lib/addressparser';
import type { ComposeRequest } from './api-types.ts';

export class ComposeError extends Error {
  readonly status: 400 | 413;
  constructor(message: string, status: 400 | 413 = 400) {
    super(message);
    this.status = status;
  }
}

type Parsed = { name?: string; address?: string; group?: Parsed[] };

/** The bare addresses in what the user typed ("Ann <ann@x>, bob@y"), checked for shape. */
export function recipientsOf(field: string | undefined): string[] {
  if (!field || field.trim() === '') return [];
  if (field.length > 100_000) throw new ComposeError('too many recipients');
  const out: string[] = [];
  const walk = (items: Parsed[]): void => {
    for (const a of items) {
      if (a.group) walk(a.group);
      else if (a.address) {
        if (!/^[^\s@<>()",;]+@[^\s@<>()",;]+\.?[^\s@<>()",;]*$/.test(a.address)) throw new ComposeError(`"${a.address}" is not an e-mail address`);
        out.push(a.address);
      } else if (a.name) throw new ComposeError(`"${a.name}" is not an e-mail address`);
    }
  };
  walk(addressparser(field) as Parsed[]);
  return out;
}

export type Composed = {
  /** What goes out (no Bcc header). */
  message: Buffer;
  /** The copy to keep (with Bcc). */
  copy: Buffer;
  recipients: string[];
  messageId: string;
};

const MSGID = /^<[^<>\s]{1,250}>$/;

/** Build the message. `forwarded` is the raw message to attach (forward as attachment). */
export async function compose(
  req: ComposeRequest,
  from: { address: string; name?: string },
  hostname: string,
  forwarded?: { raw: Buffer; subject: string },
): Promise<Composed> {
  if (typeof req !== 'object' || req === null) throw new ComposeError('the request must be a JSON object');
  for (const k of ['to', 'cc', 'bcc', 'subject', 'text', 'html', 'inReplyTo'] as const) {
    if (req[k] !== undefined && typeof req[k] !== 'string') throw new ComposeError(`${k} must be a string`);
  }
  const to = recipientsOf(req.to);
  const cc = recipientsOf(req.cc);
  const bcc = recipientsOf(req.bcc);
  const messageId = `<${Date.now().toString(36)}.${randomBytes(9).toString('base64url')}@${hostname}>`;
  const inReplyTo = req.inReplyTo && MSGID.test(req.inReplyTo.trim()) ? req.inReplyTo.trim() : undefined;
  const references = Array.isArray(req.references) ? req.references.filter((r): r is string => typeof r === 'string' && MSGID.test(r.trim())).map((r) => r.trim()).slice(-50) : [];
  const attachments: Mail.Attachment[] = [];
  for (const a of Array.isArray(req.attachments) ? req.attachments : []) {
    if (typeof a?.base64 !== 'string' || typeof a.filename !== 'string') throw new ComposeError('each attachment needs filename and base64');
    const contentType = typeof a.contentType === 'string' && /^[\w.+-]+\/[\w.+-]+$/.test(a.contentType) ? a.contentType : 'application/octet-stream';
    attachments.push({ filename: a.filename.slice(0, 200), contentType, content: Buffer.from(a.base64, 'base64') });
  }
  if (forwarded) {
    attachments.push({ filename: `${(forwarded.subject || 'message').slice(0, 150).replace(/[/\\]/g, '_')}.eml`, contentType: 'message/rfc822', contentDisposition: 'attachment', content: forwarded.raw });
  }
  const mail: Mail.Options = {
    from: from.name ? { name: from.name, address: from.address } : from.address,
    to: req.to?.trim() ? req.to : undefined,
    cc: req.cc?.trim() ? req.cc : undefined,
    bcc: req.bcc?.trim() ? req.bcc : undefined,
    subject: req.subject ?? '',
    text: req.text ?? '',
    html: req.html || undefined,
    messageId,
    date: new Date(),
    inReplyTo,
    references: references.length ? references : inReplyTo ? [inReplyTo] : undefined,
    attachments,
    headers: { 'User-Agent': 'hearth webmail' },
  };
  const message = await new MailComposer(mail).compile().build();
  const node = new MailComposer(mail).compile();
  node.keepBcc = true;
  const copy = bcc.length ? await node.build() : message;
  return { message, copy, recipients: [...new Set([...to, ...cc, ...bcc])], messageId };
}
