// The aliases file (config/aliases):
//   alias@domain: target[, target...]
//   @domain: target            catch-all for that domain, used only when nothing else matches
// Targets are local users, other aliases, or remote addresses (forwarding, with SRS).
// Not written here but always there (config/directory.ts): user+tag@domain reaches user@domain
// unless an alias names user+tag@domain itself, and postmaster@ and abuse@ of every local
// domain reach the domain's first user unless an alias says otherwise (RFC 5321 4.5.1, RFC 2142).
import { isDomainName, parseAddress } from './address.ts';

export function parseAliases(text: string, file: string): { aliases: Map<string, string[]>; problems: string[] } {
  const aliases = new Map<string, string[]>();
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const where = `${file}:${i + 1}`;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon < 0) {
      problems.push(`${where}: no ":" after the alias: write alias@domain: target[, target...]`);
      return;
    }
    const name = line.slice(0, colon).trim();
    let key: string;
    if (name.startsWith('@')) {
      const domain = name.slice(1).toLowerCase();
      if (!isDomainName(domain)) {
        problems.push(`${where}: catch-all "${name}": "${domain}" is not a domain name`);
        return;
      }
      key = `@${domain}`;
    } else {
      const parsed = parseAddress(name);
      if (typeof parsed === 'string') {
        problems.push(`${where}: alias ${parsed}`);
        return;
      }
      key = parsed.address;
    }
    const targets: string[] = [];
    for (const part of line.slice(colon + 1).split(',')) {
      const target = part.trim();
      if (target === '') continue;
      const parsed = parseAddress(target);
      if (typeof parsed === 'string') {
        problems.push(`${where}: target ${parsed}; this target is skipped`);
        continue;
      }
      // keep the user part as written for remote targets (RFC 5321 2.4: only the remote host may fold its case)
      const at = target.lastIndexOf('@');
      const written = `${target.slice(0, at)}@${parsed.domain}`;
      if (!targets.some((t) => t.toLowerCase() === written.toLowerCase())) targets.push(written);
    }
    if (targets.length === 0) {
      problems.push(`${where}: ${key} has no valid target: write ${key}: user@domain[, other@domain...]`);
      return;
    }
    if (aliases.has(key)) {
      problems.push(`${where}: ${key} is listed again; the first line wins: merge the targets into one line`);
      return;
    }
    aliases.set(key, targets);
  });
  return { aliases, problems };
}
