// Mailbox names on the wire: RFC 3501 5.1.3 modified UTF-7 (IMAP4rev1 without UTF8=ACCEPT)
// to and from Unicode, and the case-insensitive INBOX rule (RFC 3501 5.1).

const AMP = 0x26;
// RFC 3501 5.1.3: base64 of RFC 2152 with "," in place of "/", no padding.
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,';
const B64_VALUE = new Int16Array(128).fill(-1);
for (let i = 0; i < B64.length; i++) B64_VALUE[B64.charCodeAt(i)] = i;

/** RFC 3501 5.1: "INBOX" in any case is INBOX; every other name keeps its case. */
export function normaliseInbox(name: string): string {
  return name.length === 5 && name.toUpperCase() === 'INBOX' ? 'INBOX' : name;
}

/**
 * Modified UTF-7 to Unicode. Returns null for an invalid encoding: a bad base64 character, a
 * shift not closed by "-", leftover bits, an odd UTF-16 byte count, a lone surrogate, or an
 * encoded printable ASCII character (RFC 3501 5.1.3 says those MUST represent themselves, so
 * accepting them would give one mailbox two names).
 */
export function decodeMailboxName(wire: string): string | null {
  if (!wire.includes('&')) return wire;
  let out = '';
  let i = 0;
  while (i < wire.length) {
    const c = wire.charCodeAt(i);
    if (c !== AMP) {
      out += wire[i];
      i++;
      continue;
    }
    const end = wire.indexOf('-', i + 1);
    if (end < 0) return null;
    if (end === i + 1) {
      out += '&';
      i = end + 1;
      continue;
    }
    const units = decodeModifiedBase64(wire, i + 1, end);
    if (units === null) return null;
    for (const u of units) if (u >= 0x20 && u <= 0x7e) return null;
    const text = String.fromCharCode(...units);
    if (!text.isWellFormed()) return null;
    out += text;
    i = end + 1;
  }
  return out;
}

function decodeModifiedBase64(s: string, start: number, end: number): number[] | null {
  const units: number[] = [];
  let bits = 0;
  let nbits = 0;
  for (let j = start; j < end; j++) {
    const code = s.charCodeAt(j);
    const v = code < 128 ? B64_VALUE[code] : -1;
    if (v < 0) return null;
    bits = (bits << 6) | v;
    nbits += 6;
    if (nbits >= 16) {
      nbits -= 16;
      units.push((bits >> nbits) & 0xffff);
      bits &= (1 << nbits) - 1;
    }
  }
  // Fewer than 6 bits may be left over, and they must be zero (RFC 2152).
  if (nbits >= 6 || bits !== 0 || units.length === 0) return null;
  return units;
}

/** Unicode to modified UTF-7 (RFC 3501 5.1.3), for LIST/LSUB/STATUS responses. */
export function encodeMailboxName(name: string): string {
  let out = '';
  let i = 0;
  while (i < name.length) {
    const c = name.charCodeAt(i);
    if (c >= 0x20 && c <= 0x7e) {
      out += c === AMP ? '&-' : name[i];
      i++;
      continue;
    }
    let j = i;
    while (j < name.length) {
      const d = name.charCodeAt(j);
      if (d >= 0x20 && d <= 0x7e) break;
      j++;
    }
    out += '&' + encodeModifiedBase64(name, i, j) + '-';
    i = j;
  }
  return out;
}

function encodeModifiedBase64(s: string, start: number, end: number): string {
  let out = '';
  let bits = 0;
  let nbits = 0;
  for (let k = start; k < end; k++) {
    bits = (bits << 16) | s.charCodeAt(k);
    nbits += 16;
    while (nbits >= 6) {
      nbits -= 6;
      out += B64[(bits >> nbits) & 0x3f];
    }
    bits &= (1 << nbits) - 1;
  }
  if (nbits > 0) out += B64[(bits << (6 - nbits)) & 0x3f];
  return out;
}
