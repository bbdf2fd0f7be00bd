// Client addresses as the abuse checks see them: IPv4-mapped IPv6 unwrapped, IPv6 written out in
// full, networks (/24, /64) for keys, and the reversed forms that DNSBL queries use.
import net from 'node:net';

/** `::ffff:1.2.3.4` -> `1.2.3.4`; anything else unchanged. */
export function plainIp(address: string): string {
  return address.toLowerCase().startsWith('::ffff:') && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
}

/** The eight 16-bit groups of an IPv6 address, or null if it is not one. */
export function ipv6Groups(address: string): number[] | null {
  if (!net.isIPv6(address)) return null;
  let text = address.toLowerCase();
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  // An embedded IPv4 tail (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) becomes two groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number);
    text = text.slice(0, v4.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [left, right] = text.includes('::') ? text.split('::') : [text, undefined];
  const head = left ? left.split(':') : [];
  const tail = right === undefined ? [] : right ? right.split(':') : [];
  const missing = 8 - head.length - tail.length;
  const groups = [...head, ...(right === undefined ? [] : Array<string>(missing).fill('0')), ...tail].map((g) => parseInt(g, 16));
  return groups.length === 8 && groups.every((g) => g >= 0 && g <= 0xffff) ? groups : null;
}

/**
 * The client's network as a map key: the whole address for IPv4 (or its /24 when `v4Prefix`
 * is 24), the /64 for IPv6, since one host usually owns a whole /64.
 */
export function networkKey(address: string, v4Prefix: 24 | 32 = 32): string {
  const ip = plainIp(address);
  if (net.isIPv4(ip)) return v4Prefix === 24 ? `${ip.split('.').slice(0, 3).join('.')}.0/24` : ip;
  const g = ipv6Groups(ip);
  if (!g) return ip;
  return `${g.slice(0, 4).map((x) => x.toString(16)).join(':')}::/64`;
}

/** RFC 5782 2.1/2.4: `d.c.b.a` for IPv4, 32 reversed nibbles for IPv6; null if not an address. */
export function reversedForDnsbl(address: string): string | null {
  const ip = plainIp(address);
  if (net.isIPv4(ip)) return ip.split('.').reverse().join('.');
  const g = ipv6Groups(ip);
  if (!g) return null;
  return g
    .map((x) => x.toString(16).padStart(4, '0'))
    .join('')
    .split('')
    .reverse()
    .join('.');
}
