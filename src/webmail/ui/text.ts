// Pure text helpers for the webmail UI: links in plain text, quoting, subjects, addresses,
// dates. No DOM and no Preact here, so they can be tested in Node.
import type { Address, MessageView } from '../api-types.ts';

/** A piece of plain text: either text to show as is, or a link with a safe href. */
export type TextToken = { kind: 'text'; text: string } | { kind: 'link'; text: string; href: string };

// http(s) URLs, www. hosts and mailto: addresses; the surrounding text stays text, and the
// caller renders it as a text node, so nothing in a message can become markup.
const LINK = /\b(?:https?:\/\/|www\.|mailto:)[^\s<>"'`]+/gi;

/** Split plain text into text and link tokens; only http, https and mailto become links. */
export function linkify(text: string): TextToken[] {
  const out: TextToken[] = [];
  let last = 0;
  for (const m of text.matchAll(LINK)) {
    let url = m[0];
    // Trailing punctuation usually ends the sentence, not the URL; a ')' belongs to the URL
    // only when it closes a '(' inside it (Wikipedia links).
    for (;;) {
      const end = url.at(-1) ?? '';
      if (/[.,;:!?*]/.test(end)) url = url.slice(0, -1);
      else if (end === ')' && count(url, '(') < count(url, ')')) url = url.slice(0, -1);
      else break;
    }
    const start = m.index;
    if (url.length === 0 || /^(?:https?:\/\/|www\.|mailto:)$/i.test(url)) continue;
    if (start > last) out.push({ kind: 'text', text: text.slice(last, start) });
    const href = /^www\./i.test(url) ? `https://${url}` : url;
    out.push({ kind: 'link', text: url, href });
    last = start + url.length;
  }
  if (last < text.length) out.push({ kind: 'text', text: text.slice(last) });
  return out;
}

function count(s: string, ch: string): number {
  let n = 0;
  for (const c of s) if (c === ch) n++;
  return n;
}

/** "Re: subject", without stacking prefixes. */
export function replySubject(subject: string): string {
  return /^\s*re\s*:/i.test(subject) ? subject : `Re: ${subject}`;
}

/** "Fwd: subject", without stacking prefixes. */
export function forwardSubject(subject: string): string {
  return /^\s*(?:fwd?|fw)\s*:/i.test(subject) ? subject : `Fwd: ${subject}`;
}

/** One address as it would be typed: `Name <a@b>`, quoting the name when it needs it. */
export function formatAddress(a: Address): string {
  if (!a.name) return a.address;
  const name = /[",;:<>@()[\]\\.]/.test(a.name) ? `"${a.name.replace(/["\\]/g, '\\$&')}"` : a.name;
  return `${name} <${a.address}>`;
}

export function formatAddresses(list: Address[]): string {
  return list.map(formatAddress).join(', ');
}

/** The name to show for a sender: the display name, else the address. */
export function displayName(list: Address[]): string {
  const a = list[0];
  if (!a) return '(no sender)';
  return a.name || a.address;
}

/** `> `-quote every line, as mail clients have done since RFC 3676 (`>` then a space). */
export function quoteText(text: string): string {
  const body = text.replace(/\r\n/g, '\n').replace(/\n+$/, '');
  return body
    .split('\n')
    .map((line) => (line.startsWith('>') ? `>${line}` : `> ${line}`))
    .join('\n');
}

export function longDate(ms: number): string {
  return new Date(ms).toLocaleString('en-GB', { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit' });
}

/** A list date: the time today, the day this year, the full date before. */
export function shortDate(ms: number, now = Date.now()): string {
  const d = new Date(ms);
  const n = new Date(now);
  if (d.toDateString() === n.toDateString()) return d.toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' });
  if (d.getFullYear() === n.getFullYear()) return d.toLocaleDateString('en-GB', { day: 'numeric', month: 'short' });
  return d.toLocaleDateString('en-GB', { day: 'numeric', month: 'short', year: 'numeric' });
}

export function humanSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(bytes < 10 * 1024 ? 1 : 0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export type Draft = {
  to: string;
  cc: string;
  bcc: string;
  subject: string;
  text: string;
  inReplyTo?: string;
  references?: string[];
  forwardOf?: { folder: string; uid: number };
  /** Flag the original \Answered once sent. */
  answers?: { folder: string; uid: number };
};

function sameAddress(a: string, b: string): boolean {
  return a.trim().toLowerCase() === b.trim().toLowerCase();
}

/** A reply (or reply to all) to `m`, quoting it inline below the cursor. */
export function replyDraft(m: MessageView, folder: string, me: string, all: boolean): Draft {
  const primary = m.replyTo.length > 0 ? m.replyTo : m.from;
  let to: Address[] = [...primary];
  let cc: Address[] = [];
  if (all) {
    to = [...primary, ...m.to];
    cc = [...m.cc];
  }
  const seen = new Set<string>();
  const keep = (a: Address): boolean => {
    const key = a.address.toLowerCase();
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  };
  // Never send a reply-all to yourself, unless you are the only one there (a note to self).
  const notMe = (a: Address): boolean => !sameAddress(a.address, me);
  let toList = to.filter(keep);
  if (all && toList.some(notMe)) toList = toList.filter(notMe);
  const ccList = cc.filter(notMe).filter(keep);
  const refs = [...m.references];
  if (m.messageId && !refs.includes(m.messageId)) refs.push(m.messageId);
  return {
    to: formatAddresses(toList),
    cc: formatAddresses(ccList),
    bcc: '',
    subject: replySubject(m.subject),
    text: `\n\nOn ${longDate(m.date)}, ${displayName(m.from)} wrote:\n${quoteText(m.text)}\n`,
    inReplyTo: m.messageId || undefined,
    references: refs.length > 0 ? refs : undefined,
    answers: { folder, uid: m.uid },
  };
}

/** Forward inline (the original's headers and text below a marker) or as a message/rfc822 attachment. */
export function forwardDraft(m: MessageView, folder: string, asAttachment: boolean): Draft {
  const base = { to: '', cc: '', bcc: '', subject: forwardSubject(m.subject) };
  if (asAttachment) return { ...base, text: '\n', forwardOf: { folder, uid: m.uid } };
  const head = [
    '---------- Forwarded message ----------',
    `From: ${formatAddresses(m.from)}`,
    `Date: ${longDate(m.date)}`,
    `Subject: ${m.subject}`,
    `To: ${formatAddresses(m.to)}`,
    ...(m.cc.length > 0 ? [`Cc: ${formatAddresses(m.cc)}`] : []),
  ];
  return { ...base, text: `\n\n${head.join('\n')}\n\n${m.text.replace(/\r\n/g, '\n')}\n` };
}

/** Base64 of bytes, in chunks so big files do not overflow the argument list. */
export function bytesToBase64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
