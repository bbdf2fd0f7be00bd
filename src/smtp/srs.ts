// The Sender Rewriting Scheme for forwarded mail, in the SRS0 form that postsrsd and libsrs2
// write, so a secret shared with a postsrsd installation verifies both ways:
//
//   SRS0=HHHH=TT=orig-domain=orig-local@our-domain
//
// HHHH: the first 4 characters of base64(HMAC-SHA1(secret, lower(TT + orig-domain + orig-local)));
// TT: the day number (Unix time / 86400) modulo 1024, in two base32 characters. A bounce to such
// an address is verified (hash, and an age of at most `maxAgeDays`) before it is passed back to
// the original sender; anything else addressed as SRS0 is refused, so we are never a relay for
// addresses we did not write ourselves.
//
// The secret file holds one secret per line, as postsrsd's does: the first signs, every line
// verifies (so a new secret can be put first while addresses made with the old one still return).
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { HearthError } from '../core/errors.ts';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const DAY_MS = 86_400_000;
/** Two base32 characters: the timestamp wraps every 1024 days (libsrs2's SRS_TIME_SLOTS). */
const TIME_SLOTS = 1024;
const HASH_LENGTH = 4;
const SEPARATORS = '=+-';

export type SrsReversal = { ok: true; address: string } | { ok: false; reason: string };

export class SrsError extends HearthError {}

export type SrsOptions = {
  /** The first signs; all verify. */
  secrets: string[];
  /** How many days an SRS address stays valid (postsrsd: 21). */
  maxAgeDays?: number;
  now?: () => number;
};

export class Srs {
  readonly #secrets: string[];
  readonly #maxAgeDays: number;
  readonly #now: () => number;

  constructor(opts: SrsOptions) {
    const secrets = opts.secrets.filter((s) => s.length > 0);
    if (secrets.length === 0) throw new SrsError('SRS_NO_SECRET', 'SRS needs at least one secret');
    this.#secrets = secrets;
    this.#maxAgeDays = opts.maxAgeDays ?? 21;
    this.#now = opts.now ?? Date.now;
  }

  /**
   * The envelope sender to use when forwarding mail from `sender` on behalf of `ourDomain`.
   * The null sender stays null; a sender in `ourDomain` itself is left alone (its SPF passes here).
   */
  forward(sender: string, ourDomain: string): string {
    if (sender === '') return '';
    const at = sender.lastIndexOf('@');
    if (at <= 0) throw new SrsError('SRS_BAD_SENDER', `cannot rewrite a sender without a domain: ${JSON.stringify(sender)}`);
    const local = sender.slice(0, at);
    const domain = sender.slice(at + 1);
    if (domain.toLowerCase() === ourDomain.toLowerCase()) return sender;
    const stamp = timestamp(this.#now());
    return `SRS0=${hash(this.#secrets[0], stamp, domain, local)}=${stamp}=${domain}=${local}@${ourDomain}`;
  }

  /** Undo `forward`: the original sender, or why the address is not one we wrote (recently). */
  reverse(address: string): SrsReversal {
    const at = address.lastIndexOf('@');
    const local = at < 0 ? address : address.slice(0, at);
    if (!isSrsLocalPart(local)) return { ok: false, reason: 'not an SRS address' };
    if (!/^srs0$/i.test(local.slice(0, 4))) return { ok: false, reason: 'only SRS0 addresses are issued here' };
    const parts = local.slice(5).split('=');
    if (parts.length < 4) return { ok: false, reason: 'malformed SRS0 address' };
    const [givenHash, stamp, domain] = parts;
    const origLocal = parts.slice(3).join('=');
    if (givenHash.length < HASH_LENGTH || stamp.length !== 2 || domain === '' || origLocal === '') return { ok: false, reason: 'malformed SRS0 address' };
    const day = decodeTimestamp(stamp);
    if (day < 0) return { ok: false, reason: 'bad timestamp' };
    // libsrs2 compares hashes case-insensitively: some MTAs fold the case of local parts.
    const given = Buffer.from(givenHash.toLowerCase());
    const matches = this.#secrets.some((secret) => {
      const expected = Buffer.from(hash(secret, stamp, domain, origLocal).toLowerCase());
      return expected.length === given.length && timingSafeEqual(expected, given);
    });
    if (!matches) return { ok: false, reason: 'hash does not match' };
    let today = Math.floor(this.#now() / DAY_MS) % TIME_SLOTS;
    while (today < day) today += TIME_SLOTS;
    if (today > day + this.#maxAgeDays) return { ok: false, reason: `older than ${this.#maxAgeDays} days` };
    return { ok: true, address: `${origLocal}@${domain}` };
  }
}

/** Does this local part claim to be an SRS address (SRS0 or SRS1, any separator)? */
export function isSrsLocalPart(local: string): boolean {
  return /^srs[01]/i.test(local) && local.length > 4 && SEPARATORS.includes(local[4]);
}

function timestamp(nowMs: number): string {
  const day = Math.floor(nowMs / DAY_MS) % TIME_SLOTS;
  return BASE32[(day >> 5) & 31] + BASE32[day & 31];
}

function decodeTimestamp(stamp: string): number {
  const hi = BASE32.indexOf(stamp[0].toUpperCase());
  const lo = BASE32.indexOf(stamp[1].toUpperCase());
  return hi < 0 || lo < 0 ? -1 : (hi << 5) | lo;
}

function hash(secret: string, stamp: string, domain: string, local: string): string {
  return createHmac('sha1', secret).update((stamp + domain + local).toLowerCase()).digest('base64').slice(0, HASH_LENGTH);
}

/**
 * The secrets in `file`, one per line. A missing file is created (mode 0600) with a fresh
 * random secret, as `postsrsd-generate-secret` would; concurrent first uses agree on one.
 */
export async function loadSrsSecrets(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new SrsError('SRS_SECRET_UNREADABLE', `cannot read the SRS secret ${file}: ${(err as Error).message}`, { cause: err });
    const secret = randomBytes(18).toString('base64');
    try {
      await writeFile(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
      return [secret];
    } catch (werr) {
      if ((werr as NodeJS.ErrnoException).code !== 'EEXIST') throw new SrsError('SRS_SECRET_UNWRITABLE', `cannot create the SRS secret ${file}: ${(werr as Error).message}`, { cause: werr });
      text = await readFile(file, 'utf8');
    }
  }
  const secrets = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  if (secrets.length === 0) throw new SrsError('SRS_NO_SECRET', `${file} holds no secret: put one random line in it, or remove it to have one made`);
  return secrets;
}

/** Is the secret file readable by anyone but its owner? (Worth a warning, not a refusal.) */
export async function srsSecretTooOpen(file: string): Promise<boolean> {
  try {
    return ((await stat(file)).mode & 0o077) !== 0;
  } catch {
    return false;
  }
}
