// The users file (config/users): Dovecot's passwd-file format, one user per line,
//   user@domain:{SCHEME}hash[:uid:gid:gecos:home:shell:extra]
// so an existing Dovecot file can be dropped in. hearth writes {ARGON2ID} hashes and verifies
// the common one-way schemes; plaintext schemes are refused (the user is disabled until
// `hearth user passwd` sets a hash).
import * as crypto from 'node:crypto';
import { readFile } from 'node:fs/promises';
import bcrypt from 'bcryptjs';
import { HearthError } from '../core/errors.ts';
import { parseAddress } from './address.ts';
import { writeFileAtomic } from './fsutil.ts';
import { shaCrypt, parseShaCryptSetting } from './sha-crypt.ts';

export type UserRecord = {
  address: string;
  user: string;
  domain: string;
  /** The stored password field, `{SCHEME}...`. */
  hash: string;
  /** Fields after the password (uid, gid, gecos, home, shell, extra), kept as written. */
  rest: string[];
  /** Set when this user may not log in (plaintext or unsupported scheme); mail is still delivered. */
  disabled?: string;
};

export class UsersError extends HearthError {}

// OWASP password storage cheat sheet: argon2id, m=19 MiB, t=2, p=1.
const ARGON2 = { memory: 19_456, passes: 2, parallelism: 1, tagLength: 32, saltLength: 16 } as const;
// OWASP: scrypt N=2^17, r=8, p=1.
const SCRYPT = { ln: 17, r: 8, p: 1, keyLength: 32, saltLength: 16 } as const;
// Ceilings for parameters read from the file, so one odd line cannot exhaust the machine.
const MAX = { argon2Memory: 1_048_576, argon2Passes: 64, argon2Parallelism: 64, scryptLn: 20, scryptR: 32, scryptP: 16 } as const;

const SUPPORTED = new Set(['ARGON2ID', 'ARGON2I', 'SHA512-CRYPT', 'SHA256-CRYPT', 'BLF-CRYPT', 'SCRYPT', 'CRYPT']);
const PLAINTEXT = new Set(['PLAIN', 'CLEAR', 'CLEARTEXT', 'PLAIN-TRUNC', '']);

type Argon2Fn = (algorithm: 'argon2d' | 'argon2i' | 'argon2id', params: crypto.Argon2Parameters, cb: (err: Error | null, key: Buffer) => void) => void;
const argon2 = (crypto as { argon2?: Argon2Fn }).argon2;

const b64 = (buf: Buffer): string => buf.toString('base64').replace(/=+$/, '');
const unb64 = (text: string): Buffer | null => (/^[A-Za-z0-9+/]+={0,2}$/.test(text) ? Buffer.from(text, 'base64') : null);

function argon2Async(algorithm: 'argon2d' | 'argon2i' | 'argon2id', params: crypto.Argon2Parameters): Promise<Buffer> {
  if (!argon2) return Promise.reject(new UsersError('USERS_ARGON2_MISSING', 'this Node.js has no crypto.argon2 (Node 24.7 or later is needed)'));
  return new Promise((resolve, reject) => argon2(algorithm, params, (err, key) => (err ? reject(err) : resolve(key))));
}

function scryptAsync(password: string, salt: Buffer, keyLength: number, ln: number, r: number, p: number): Promise<Buffer> {
  const N = 2 ** ln;
  return new Promise((resolve, reject) =>
    crypto.scrypt(password, salt, keyLength, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

/** Hash for the users file: argon2id (PHC string), or scrypt when this Node lacks argon2. Runs off the event loop. */
export async function hashPassword(password: string): Promise<string> {
  const salt = crypto.randomBytes(ARGON2.saltLength);
  if (argon2) {
    const { memory, passes, parallelism, tagLength } = ARGON2;
    const key = await argon2Async('argon2id', { message: password, nonce: salt, memory, passes, parallelism, tagLength });
    return `{ARGON2ID}$argon2id$v=19$m=${memory},t=${passes},p=${parallelism}$${b64(salt)}$${b64(key)}`;
  }
  const key = await scryptAsync(password, salt, SCRYPT.keyLength, SCRYPT.ln, SCRYPT.r, SCRYPT.p);
  return `{SCRYPT}$scrypt$ln=${SCRYPT.ln},r=${SCRYPT.r},p=${SCRYPT.p}$${b64(salt)}$${b64(key)}`;
}

/** Split `{SCHEME}value`; a missing scheme is '' (plaintext, as Dovecot's default would read it). */
export function splitScheme(stored: string): { scheme: string; value: string } {
  const m = /^\{([A-Za-z0-9._-]+)\}(.*)$/s.exec(stored);
  if (!m) return { scheme: '', value: stored };
  // Dovecot allows an encoding suffix such as {SHA512-CRYPT.b64}; the crypt schemes ignore it.
  return { scheme: m[1].toUpperCase().replace(/\.(B64|BASE64|HEX)$/, ''), value: m[2] };
}

function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

async function verifyArgon2(password: string, phc: string): Promise<boolean> {
  const m = /^\$(argon2id|argon2i|argon2d)\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([^$]+)\$([^$]+)$/.exec(phc);
  if (!m) return false;
  const [memory, passes, parallelism] = [Number(m[2]), Number(m[3]), Number(m[4])];
  const salt = unb64(m[5]);
  const expected = unb64(m[6]);
  if (!salt || !expected || salt.length < 8 || expected.length < 4 || expected.length > 1024) return false;
  if (memory > MAX.argon2Memory || passes > MAX.argon2Passes || parallelism > MAX.argon2Parallelism || parallelism < 1) return false;
  const key = await argon2Async(m[1] as 'argon2id', { message: password, nonce: salt, memory, passes, parallelism, tagLength: expected.length });
  return safeEqual(key, expected);
}

async function verifyScrypt(password: string, value: string): Promise<boolean> {
  const m = /^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([^$]+)\$([^$]+)$/.exec(value);
  if (!m) return false;
  const [ln, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const salt = unb64(m[4]);
  const expected = unb64(m[5]);
  if (!salt || !expected || expected.length < 16 || expected.length > 1024) return false;
  if (ln < 1 || ln > MAX.scryptLn || r < 1 || r > MAX.scryptR || p < 1 || p > MAX.scryptP) return false;
  return safeEqual(await scryptAsync(password, salt, expected.length, ln, r, p), expected);
}

async function verifyCrypt(password: string, value: string): Promise<boolean> {
  if (/^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/.test(value)) {
    // $2y$ (PHP, Dovecot) and $2b$ are the same algorithm; bcryptjs compares in a timing-safe way
    return bcrypt.compare(password, value.replace(/^\$2y\$/, '$2b$'));
  }
  if (parseShaCryptSetting(value) && /\$[./0-9A-Za-z]{43,86}$/.test(value)) {
    return safeEqual(Buffer.from(await shaCrypt(password, value)), Buffer.from(value));
  }
  return false;
}

/**
 * Check `password` against a stored `{SCHEME}hash`. Plaintext and unknown schemes always fail.
 * Comparisons of derived keys are constant-time.
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const { scheme, value } = splitScheme(stored);
  try {
    switch (scheme) {
      case 'ARGON2ID':
      case 'ARGON2I':
        return await verifyArgon2(password, value);
      case 'SCRYPT':
        return await verifyScrypt(password, value);
      case 'SHA512-CRYPT':
        return value.startsWith('$6$') && (await verifyCrypt(password, value));
      case 'SHA256-CRYPT':
        return value.startsWith('$5$') && (await verifyCrypt(password, value));
      case 'BLF-CRYPT':
        return value.startsWith('$2') && (await verifyCrypt(password, value));
      case 'CRYPT':
        return await verifyCrypt(password, value);
      default:
        return false;
    }
  } catch {
    // a malformed hash is a failed login, never a crash of the auth path
    return false;
  }
}

/** Why a stored password field cannot be used for login, or undefined when it can. */
function whyDisabled(address: string, stored: string): string | undefined {
  const { scheme } = splitScheme(stored);
  const fix = `run \`hearth user passwd ${address}\` to set a hashed password`;
  if (stored === '') return `user ${address} has no password: ${fix}`;
  if (PLAINTEXT.has(scheme)) return `user ${address} has a plaintext password${scheme ? ` ({${scheme}})` : ' (no {SCHEME} prefix)'}, which hearth refuses; the user cannot log in: ${fix}`;
  if (!SUPPORTED.has(scheme)) return `user ${address} uses the unsupported scheme {${scheme}}; the user cannot log in: ${fix} (supported: {ARGON2ID}, {ARGON2I}, {SHA512-CRYPT}, {SHA256-CRYPT}, {BLF-CRYPT}, {SCRYPT})`;
  return undefined;
}

type ParsedLine = { kind: 'skip' } | { kind: 'problem'; message: string } | { kind: 'user'; record: UserRecord };

function parseLine(line: string): ParsedLine {
  const trimmed = line.trim();
  if (trimmed === '' || trimmed.startsWith('#')) return { kind: 'skip' };
  const fields = trimmed.split(':');
  const addr = parseAddress(fields[0]);
  if (typeof addr === 'string') return { kind: 'problem', message: addr };
  if (fields.length < 2) return { kind: 'problem', message: `user ${addr.address} has no password field: write user@domain:{ARGON2ID}... or run \`hearth user passwd ${addr.address}\`` };
  const record: UserRecord = { address: addr.address, user: addr.local, domain: addr.domain, hash: fields[1], rest: fields.slice(2) };
  const disabled = whyDisabled(addr.address, fields[1]);
  if (disabled) record.disabled = disabled;
  return { kind: 'user', record };
}

/**
 * Parse a users file. Lines with problems are skipped (and listed); disabled users stay in the
 * map, so their mail is still delivered, but carry `disabled` and never authenticate.
 */
export function parseUsers(text: string, file: string): { users: Map<string, UserRecord>; problems: string[] } {
  const users = new Map<string, UserRecord>();
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const parsed = parseLine(line);
    if (parsed.kind === 'skip') return;
    if (parsed.kind === 'problem') {
      problems.push(`${file}:${i + 1}: ${parsed.message}`);
      return;
    }
    const { record } = parsed;
    if (users.has(record.address)) {
      problems.push(`${file}:${i + 1}: user ${record.address} is listed again; the first line wins: remove this one`);
      return;
    }
    if (record.disabled) problems.push(`${file}:${i + 1}: ${record.disabled}`);
    users.set(record.address, record);
  });
  return { users, problems };
}

// One queue per file path, so two edits from this process never interleave.
const fileLocks = new Map<string, Promise<unknown>>();
function withFileLock<T>(path: string, work: () => Promise<T>): Promise<T> {
  const previous = fileLocks.get(path) ?? Promise.resolve();
  const next = previous.then(work, work);
  const settled = next.catch(() => {});
  fileLocks.set(path, settled);
  void settled.then(() => {
    if (fileLocks.get(path) === settled) fileLocks.delete(path);
  });
  return next;
}

function checkAddress(address: string): string {
  const parsed = parseAddress(address.trim());
  if (typeof parsed === 'string') throw new UsersError('USER_ADDRESS_INVALID', parsed);
  return parsed.address;
}

function checkPassword(password: string): void {
  if (typeof password !== 'string' || password.length === 0) throw new UsersError('USER_PASSWORD_INVALID', 'the password is empty');
  if (password.length > 1024) throw new UsersError('USER_PASSWORD_INVALID', 'the password is longer than 1024 characters');
}

/** Edits the users file in place: comments, order and other users' extra fields are kept as written. */
export class UsersFile {
  readonly path: string;
  constructor(path: string) {
    this.path = path;
  }

  async #read(): Promise<string> {
    try {
      return await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
      throw new UsersError('USERS_IO', `cannot read ${this.path}: ${(err as Error).message}`, { cause: err });
    }
  }

  async #write(lines: string[]): Promise<void> {
    let text = lines.join('\n');
    if (text !== '' && !text.endsWith('\n')) text += '\n';
    try {
      await writeFileAtomic(this.path, text, 0o600);
    } catch (err) {
      throw new UsersError('USERS_IO', `cannot write ${this.path}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Index of each line that defines `address`. */
  static #linesOf(lines: string[], address: string): number[] {
    const found: number[] = [];
    lines.forEach((line, i) => {
      const parsed = parseLine(line);
      if (parsed.kind === 'user' && parsed.record.address === address) found.push(i);
    });
    return found;
  }

  async list(): Promise<UserRecord[]> {
    return [...parseUsers(await this.#read(), this.path).users.values()];
  }

  async add(address: string, password: string): Promise<void> {
    const key = checkAddress(address);
    checkPassword(password);
    const hash = await hashPassword(password);
    await withFileLock(this.path, async () => {
      const text = await this.#read();
      const lines = text === '' ? [] : text.replace(/\n$/, '').split('\n');
      if (UsersFile.#linesOf(lines, key).length > 0) throw new UsersError('USER_EXISTS', `user ${key} already exists: use \`hearth user passwd ${key}\` to change the password`);
      lines.push(`${key}:${hash}`);
      await this.#write(lines);
    });
  }

  async setPassword(address: string, password: string): Promise<void> {
    const key = checkAddress(address);
    checkPassword(password);
    const hash = await hashPassword(password);
    await withFileLock(this.path, async () => {
      const lines = (await this.#read()).replace(/\n$/, '').split('\n');
      const found = UsersFile.#linesOf(lines, key);
      if (found.length === 0) throw new UsersError('USER_UNKNOWN', `no user ${key} in ${this.path}: add it with \`hearth user add ${key}\``);
      const fields = lines[found[0]].split(':');
      const indent = /^\s*/.exec(fields[0])![0];
      fields[1] = hash;
      fields[0] = indent + fields[0].trim();
      lines[found[0]] = fields.join(':');
      await this.#write(lines);
    });
  }

  async remove(address: string): Promise<void> {
    const key = checkAddress(address);
    await withFileLock(this.path, async () => {
      const lines = (await this.#read()).replace(/\n$/, '').split('\n');
      const found = new Set(UsersFile.#linesOf(lines, key));
      if (found.size === 0) throw new UsersError('USER_UNKNOWN', `no user ${key} in ${this.path}`);
      await this.#write(lines.filter((_, i) => !found.has(i)));
    });
  }
}
