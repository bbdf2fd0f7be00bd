// SHA-crypt ($5$ SHA-256, $6$ SHA-512), as specified by Ulrich Drepper ("Unix crypt using
// SHA-256 and SHA-512", the algorithm glibc implements). Dovecot stores these as
// {SHA256-CRYPT} and {SHA512-CRYPT}; hearth only verifies them, it never writes new ones.
import { createHash, hash } from 'node:crypto';

const ITOA64 = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const ROUNDS_DEFAULT = 5000;
const ROUNDS_MIN = 1000;
const ROUNDS_MAX = 999_999_999;
/** Refuse to spend more than this on one verification (a hostile or mistaken users file). */
export const SHA_CRYPT_ROUNDS_LIMIT = 10_000_000;

// Byte order of the final encoding: triples of indexes into the digest (spec, step 22).
const ORDER_256: Array<[number, number, number]> = [
  [0, 10, 20], [21, 1, 11], [12, 22, 2], [3, 13, 23], [24, 4, 14],
  [15, 25, 5], [6, 16, 26], [27, 7, 17], [18, 28, 8], [9, 19, 29],
];
const ORDER_512: Array<[number, number, number]> = [
  [0, 21, 42], [22, 43, 1], [44, 2, 23], [3, 24, 45], [25, 46, 4], [47, 5, 26], [6, 27, 48],
  [28, 49, 7], [50, 8, 29], [9, 30, 51], [31, 52, 10], [53, 11, 32], [12, 33, 54], [34, 55, 13],
  [56, 14, 35], [15, 36, 57], [37, 58, 16], [59, 17, 38], [18, 39, 60], [40, 61, 19], [62, 20, 41],
];

function b64From24(b2: number, b1: number, b0: number, n: number): string {
  let w = (b2 << 16) | (b1 << 8) | b0;
  let out = '';
  for (let i = 0; i < n; i++) {
    out += ITOA64[w & 0x3f];
    w >>>= 6;
  }
  return out;
}

/** `n` bytes made by repeating `block` (spec steps 16 and 20). */
function repeatTo(block: Buffer, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i += block.length) block.copy(out, i, 0, Math.min(block.length, n - i));
  return out;
}

export type ShaCryptSetting = { variant: '5' | '6'; rounds: number; roundsCustom: boolean; salt: string };

/** Parse `$6$[rounds=N$]salt[$hash]`; null when it is not a SHA-crypt string. */
export function parseShaCryptSetting(setting: string): ShaCryptSetting | null {
  const m = /^\$([56])\$(?:rounds=(\d{1,10})\$)?([^$]*)(?:\$[./0-9A-Za-z]*)?$/.exec(setting);
  if (!m) return null;
  const roundsCustom = m[2] !== undefined;
  const rounds = roundsCustom ? Math.min(ROUNDS_MAX, Math.max(ROUNDS_MIN, Number(m[2]))) : ROUNDS_DEFAULT;
  return { variant: m[1] as '5' | '6', rounds, roundsCustom, salt: m[3].slice(0, 16) };
}

/**
 * Compute the full crypt string for `password` under `setting` (a salt string or an existing
 * hash). Async because it yields to the event loop every thousand rounds.
 */
export async function shaCrypt(password: string | Buffer, setting: string): Promise<string> {
  const s = parseShaCryptSetting(setting);
  if (!s) throw new Error('not a $5$ or $6$ crypt setting');
  if (s.rounds > SHA_CRYPT_ROUNDS_LIMIT) throw new Error(`rounds=${s.rounds} is above the limit of ${SHA_CRYPT_ROUNDS_LIMIT}`);
  const algo = s.variant === '5' ? 'sha256' : 'sha512';
  const P = Buffer.isBuffer(password) ? password : Buffer.from(password, 'utf8');
  const S = Buffer.from(s.salt, 'utf8');
  const H = (...parts: Buffer[]): Buffer => {
    const h = createHash(algo);
    for (const p of parts) h.update(p);
    return h.digest();
  };

  const B = H(P, S, P);
  const a = createHash(algo).update(P).update(S).update(repeatTo(B, P.length));
  for (let n = P.length; n > 0; n >>= 1) a.update(n & 1 ? B : P);
  const A = a.digest();

  const dp = createHash(algo);
  for (let i = 0; i < P.length; i++) dp.update(P);
  const Pseq = repeatTo(dp.digest(), P.length);

  const ds = createHash(algo);
  for (let i = 0; i < 16 + A[0]; i++) ds.update(S);
  const Sseq = repeatTo(ds.digest(), S.length);

  // The rounds hash one reused buffer in one shot: a Hash object per round left thousands of
  // native objects per login for the GC, fragmenting the heap between connections' buffers.
  let C = A;
  const input = Buffer.alloc(2 * Math.max(C.length, Pseq.length) + Sseq.length + Pseq.length);
  for (let i = 0; i < s.rounds; i++) {
    let n = (i & 1 ? Pseq : C).copy(input, 0);
    if (i % 3 !== 0) n += Sseq.copy(input, n);
    if (i % 7 !== 0) n += Pseq.copy(input, n);
    n += (i & 1 ? C : Pseq).copy(input, n);
    C = hash(algo, input.subarray(0, n), 'buffer');
    if (i % 1000 === 999) await new Promise((r) => setImmediate(r)); // a few ms at most on the loop
  }

  let encoded = '';
  for (const [x, y, z] of s.variant === '5' ? ORDER_256 : ORDER_512) encoded += b64From24(C[x], C[y], C[z], 4);
  encoded += s.variant === '5' ? b64From24(0, C[31], C[30], 3) : b64From24(0, 0, C[63], 2);
  return `$${s.variant}$${s.roundsCustom ? `rounds=${s.rounds}$` : ''}${s.salt}$${encoded}`;
}
