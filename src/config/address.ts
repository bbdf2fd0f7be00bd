// Mail address checks shared by the users and aliases files. Addresses are keys of the
// passwd-file and names of Maildir folders downstream, so anything that could escape a path
// or break the file format (`/`, `..`, `:`, control characters, whitespace) is refused here.

export type ParsedAddress = { address: string; local: string; domain: string };

const DOMAIN = /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;
// Characters never allowed in a local part here: controls, whitespace, path and file-format
// separators, and the RFC 5322 specials that would need quoting.
const LOCAL_FORBIDDEN = /[\u0000-\u0020\u007f-\u009f\u2028\u2029/\\:@,;"<>()[\]#]/u;

export function isDomainName(domain: string): boolean {
  return DOMAIN.test(domain.toLowerCase());
}

/**
 * Check and lower-case `user@domain`; returns the reason as a string when it is not acceptable.
 * Lower-casing the local part is a hearth decision: a personal server treats Me@ and me@ alike.
 */
export function parseAddress(text: string): ParsedAddress | string {
  const at = text.lastIndexOf('@');
  if (at < 0) return `"${text}" is not an address: write it as user@domain`;
  const local = text.slice(0, at).toLowerCase();
  const domain = text.slice(at + 1).toLowerCase();
  if (local.length === 0) return `"${text}" has no user part before the @`;
  if (local.length > 64) return `"${text}": the user part is longer than 64 characters`;
  if (LOCAL_FORBIDDEN.test(local)) return `"${text}": the user part may not contain whitespace, control characters or any of / \\ : @ , ; " < > ( ) [ ] #`;
  if (local.includes('..') || local.startsWith('.') || local.endsWith('.')) return `"${text}": the user part may not start or end with a dot or contain ".."`;
  if (!isDomainName(domain)) return `"${text}": "${domain}" is not a domain name (letters, digits, hyphens and dots)`;
  return { address: `${local}@${domain}`, local, domain };
}
