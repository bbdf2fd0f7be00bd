// The pure half of the relay client: SMTP reply lines to replies (RFC 5321 4.2), enhanced
// status codes (RFC 2034/3463), EHLO keywords (RFC 5321 4.1.1.1), xtext (RFC 3461 4) and the
// MAIL/RCPT command lines with their ESMTP parameters. No sockets, no timers: cheap to test.

/** One line of a reply: `250-text` (more follow) or `250 text` (the last). */
export type ReplyLine = { code: number; final: boolean; text: string };

/** A whole reply. `text` has the enhanced code stripped from each line, lines joined by a space. */
export type SmtpReply = { code: number; enhanced?: string; lines: string[]; text: string };

const REPLY_LINE = /^([2-5]\d\d)(?:([ -])(.*))?$/s;

/**
 * Parse one reply line (without CRLF). Null if it is not a reply line. A bare `250` (no
 * separator) is a final line with empty text, as RFC 5321 4.2 allows.
 */
export function parseReplyLine(line: string): ReplyLine | null {
  const m = REPLY_LINE.exec(line);
  if (!m) return null;
  return { code: Number(m[1]), final: m[2] !== '-', text: m[3] ?? '' };
}

const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)/;

/**
 * The enhanced status code at the start of `text`, if its class matches the reply code's
 * first digit (RFC 3463 2: the class must agree with the basic code). Servers that do not
 * advertise ENHANCEDSTATUSCODES sometimes send them anyway; they are still useful in a DSN.
 */
export function extractEnhanced(code: number, text: string): string | undefined {
  const m = ENHANCED.exec(text);
  if (!m || Number(m[1]) !== Math.floor(code / 100)) return undefined;
  return `${m[1]}.${m[2]}.${m[3]}`;
}

/**
 * Join the lines of one reply. Every line must carry the same code (RFC 5321 4.2.1); a reply
 * whose lines disagree is a protocol error, returned as a string.
 */
export function buildReply(lines: readonly ReplyLine[]): SmtpReply | string {
  if (lines.length === 0) return 'empty reply';
  const code = lines[lines.length - 1].code;
  if (lines.some((l) => l.code !== code)) return `reply lines with different codes (${lines.map((l) => l.code).join(', ')})`;
  const enhanced = extractEnhanced(code, lines[0].text);
  const texts = lines.map((l) => {
    if (enhanced && l.text.startsWith(enhanced)) return l.text.slice(enhanced.length).trimStart();
    return l.text;
  });
  const reply: SmtpReply = { code, lines: lines.map((l) => l.text), text: texts.filter((t) => t !== '').join(' ') };
  if (enhanced) reply.enhanced = enhanced;
  return reply;
}

/** What the remote offered in its EHLO reply. */
export type EhloCapabilities = {
  /** Every keyword (upper case) with its parameters. */
  keywords: Map<string, string[]>;
  /** SIZE limit in bytes; 0 = no limit declared (RFC 1870 4: `SIZE 0` or bare `SIZE`). */
  size: number;
  starttls: boolean;
  eightBitMime: boolean;
  smtpUtf8: boolean;
  pipelining: boolean;
  enhancedStatusCodes: boolean;
  dsn: boolean;
  /** SASL mechanisms, upper case. */
  auth: string[];
};

export const NO_CAPABILITIES: EhloCapabilities = Object.freeze({
  keywords: new Map<string, string[]>(),
  size: 0,
  starttls: false,
  eightBitMime: false,
  smtpUtf8: false,
  pipelining: false,
  enhancedStatusCodes: false,
  dsn: false,
  auth: [],
});

/**
 * Parse the lines of a 250 EHLO reply (the first line is the server's name and greeting).
 * Keywords are case-insensitive; `AUTH=PLAIN LOGIN` (pre-RFC 4954 servers) counts as AUTH.
 */
export function parseEhlo(lines: readonly string[]): EhloCapabilities {
  const keywords = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const words = line.trim().split(/\s+/).filter((w) => w !== '');
    if (words.length === 0) continue;
    let keyword = words[0].toUpperCase();
    let params = words.slice(1);
    if (keyword.startsWith('AUTH=')) {
      params = [keyword.slice(5), ...params];
      keyword = 'AUTH';
    }
    if (!/^[A-Z0-9][A-Z0-9-]*$/.test(keyword)) continue;
    const known = keywords.get(keyword);
    keywords.set(keyword, known ? [...known, ...params] : params);
  }
  const sizeParam = keywords.get('SIZE')?.[0];
  const size = sizeParam !== undefined && /^\d{1,20}$/.test(sizeParam) ? Number(sizeParam) : 0;
  const auth = [...new Set((keywords.get('AUTH') ?? []).map((m) => m.toUpperCase()))];
  return {
    keywords,
    size: Number.isSafeInteger(size) ? size : 0,
    starttls: keywords.has('STARTTLS'),
    eightBitMime: keywords.has('8BITMIME'),
    smtpUtf8: keywords.has('SMTPUTF8'),
    pipelining: keywords.has('PIPELINING'),
    enhancedStatusCodes: keywords.has('ENHANCEDSTATUSCODES'),
    dsn: keywords.has('DSN'),
    auth,
  };
}

/** RFC 3461 4: xtext encodes `+`, `=`, and anything outside printable ASCII as `+HH`. */
export function xtextEncode(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    if (byte < 33 || byte > 126 || byte === 0x2b || byte === 0x3d) out += `+${byte.toString(16).toUpperCase().padStart(2, '0')}`;
    else out += String.fromCharCode(byte);
  }
  return out;
}

/** Is this already valid xtext (as smtp-server hands ENVID and ORCPT over, still encoded)? */
export function isXtext(value: string): boolean {
  return /^(?:[!-*,-<>-~]|\+[0-9A-F]{2})*$/.test(value);
}

/** ENVID as given by the submitting client (xtext) is passed on; anything else is encoded. */
export function envidParam(envid: string): string {
  return isXtext(envid) ? envid : xtextEncode(envid);
}

/** ORCPT: `addr-type;xtext` (RFC 3461 4.2). A bare address becomes `rfc822;` + xtext. */
export function orcptParam(orcpt: string): string {
  const m = /^([A-Za-z0-9-]+);(.+)$/s.exec(orcpt);
  if (m && isXtext(m[2])) return `${m[1]};${m[2]}`;
  if (m) return `${m[1]};${xtextEncode(m[2])}`;
  return `rfc822;${xtextEncode(orcpt)}`;
}

const NOTIFY_VALUES = new Set(['NEVER', 'SUCCESS', 'FAILURE', 'DELAY']);

/** NOTIFY values, upper case, unknown ones dropped; NEVER alone wins (RFC 3461 4.1). */
export function notifyParam(notify: readonly string[]): string | undefined {
  const values = [...new Set(notify.map((n) => n.trim().toUpperCase()).filter((n) => NOTIFY_VALUES.has(n)))];
  if (values.length === 0) return undefined;
  if (values.includes('NEVER')) return 'NEVER';
  return values.join(',');
}

/**
 * Can this address go inside `<...>` on a command line? CR, LF and NUL would let a stored
 * address inject commands; angle brackets would end the path early.
 */
export function isSafeAddress(address: string): boolean {
  return !/[\r\n\0<>]/.test(address) && address.length <= 998;
}

export type MailFromOptions = {
  from: string;
  caps: EhloCapabilities;
  esmtp: boolean;
  size: number;
  eightBit: boolean;
  smtpUtf8: boolean;
  dsn?: { ret?: 'FULL' | 'HDRS'; envid?: string };
};

/** `MAIL FROM:<a> SIZE=n BODY=8BITMIME SMTPUTF8 RET=.. ENVID=..`, only what the remote offered. */
export function mailFromCommand(o: MailFromOptions): string {
  const params: string[] = [];
  if (o.esmtp) {
    if (o.caps.keywords.has('SIZE')) params.push(`SIZE=${o.size}`);
    if (o.eightBit && o.caps.eightBitMime) params.push('BODY=8BITMIME');
    if (o.smtpUtf8 && o.caps.smtpUtf8) params.push('SMTPUTF8');
    if (o.caps.dsn && o.dsn) {
      if (o.dsn.ret === 'FULL' || o.dsn.ret === 'HDRS') params.push(`RET=${o.dsn.ret}`);
      if (o.dsn.envid) params.push(`ENVID=${envidParam(o.dsn.envid)}`);
    }
  }
  return `MAIL FROM:<${o.from}>${params.map((p) => ` ${p}`).join('')}`;
}

/** `RCPT TO:<a> NOTIFY=.. ORCPT=..`, DSN parameters only when the remote offered DSN. */
export function rcptToCommand(address: string, caps: EhloCapabilities, dsn: { notify?: readonly string[]; orcpt?: string }): string {
  const params: string[] = [];
  if (caps.dsn) {
    const notify = dsn.notify ? notifyParam(dsn.notify) : undefined;
    if (notify) params.push(`NOTIFY=${notify}`);
    if (dsn.orcpt) params.push(`ORCPT=${orcptParam(dsn.orcpt)}`);
  }
  return `RCPT TO:<${address}>${params.map((p) => ` ${p}`).join('')}`;
}
