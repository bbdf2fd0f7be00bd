// SMTP error replies for smtp-server hooks. smtp-server prefixes an enhanced status code
// chosen from the reply code alone (554 -> 5.6.0), which is wrong for e.g. a relay refusal
// (554 5.7.1). Our reply texts carry their own RFC 3463 code, so the prefix is skipped for
// any text that already starts with one.
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

export type SmtpReplyError = Error & { responseCode: number };

export function smtpError(responseCode: number, text: string): SmtpReplyError {
  const err = new Error(text) as SmtpReplyError;
  err.responseCode = responseCode;
  return err;
}

const OWN_CODE = /^[245]\.\d{1,3}\.\d{1,3} /;
let patched = false;

export function allowOwnEnhancedCodes(): void {
  if (patched) return;
  patched = true;
  const proto = SMTPConnection.prototype as unknown as { send(code: number, data: unknown, context?: unknown): void };
  const send = proto.send;
  proto.send = function (this: unknown, code: number, data: unknown, context?: unknown) {
    return send.call(this, code, data, typeof data === 'string' && OWN_CODE.test(data) ? false : context);
  };
}
