// POP3 command lines to a verb and arguments (RFC 1939 3, RFC 2449 3). Pure: no sockets.
// Keywords are case-insensitive, 3 or 4 characters; arguments are separated by single
// spaces and at most 40 characters each (we allow longer ones only for AUTH responses,
// which are not commands and never reach this parser).

export type Pop3Command = { ok: true; verb: string; args: string[] };
export type Pop3ParseError = { ok: false; text: string };

const MAX_ARG = 255;

export function parsePop3Command(line: Buffer | string): Pop3Command | Pop3ParseError {
  const text = typeof line === 'string' ? line : line.toString('utf8');
  if (text.length === 0) return { ok: false, text: 'empty command' };
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x08\x0a-\x1f\x7f]/.test(text)) return { ok: false, text: 'control characters are not allowed in commands' };
  const parts = text.split(' ');
  const verb = parts[0].toUpperCase();
  if (!/^[A-Z]{3,4}$/.test(verb)) return { ok: false, text: 'unknown command' };
  // Be lenient with trailing or doubled spaces (some clients send "LIST ").
  const args = parts.slice(1).filter((a) => a.length > 0);
  if (args.some((a) => a.length > MAX_ARG)) return { ok: false, text: 'argument too long' };
  return { ok: true, verb, args };
}

/** A message number argument: 1-based, within the maildrop. */
export function parseMessageNumber(arg: string | undefined): number | null {
  if (arg === undefined || !/^[1-9]\d{0,8}$/.test(arg)) return null;
  return Number(arg);
}

/** Non-negative line count for TOP. */
export function parseLineCount(arg: string | undefined): number | null {
  if (arg === undefined || !/^\d{1,9}$/.test(arg)) return null;
  return Number(arg);
}

/** SASL PLAIN (RFC 4616): authzid NUL authcid NUL password, base64 encoded. */
export function decodeSaslPlain(base64: string): { authzid: string; authcid: string; password: string } | null {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(base64) || base64.length % 4 !== 0) return null;
  const parts = Buffer.from(base64, 'base64').toString('utf8').split('\0');
  if (parts.length !== 3 || !parts[1] || !parts[2]) return null;
  return { authzid: parts[0], authcid: parts[1], password: parts[2] };
}
