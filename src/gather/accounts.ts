// Gather accounts: which remote mailboxes each local user collects from. Kept under the data
// directory in `gather/accounts.json` (no secrets; readable by the owner only) and
// `gather/passwords.json` (mode 0600, the passwords), both written atomically (temp file, fsync,
// rename). `hearth gather add|remove|passwd` change them, through the running server when there
// is one. Passwords never appear in logs, status output or error messages.
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, rename, stat } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { HearthError } from '../core/errors.ts';

export class GatherError extends HearthError {}

export const GATHER_PROTOCOLS = ['imap', 'pop3'] as const;
export type GatherProtocol = (typeof GATHER_PROTOCOLS)[number];
/** implicit = TLS from the first byte (993/995); starttls = upgrade (143/110); none = loopback only. */
export const GATHER_TLS = ['implicit', 'starttls', 'none'] as const;
export type GatherTls = (typeof GATHER_TLS)[number];
/** copy = leave on the server; move = delete remotely after a durable local copy; mirror = copy and keep flags in step. */
export const GATHER_MODES = ['copy', 'move', 'mirror'] as const;
export type GatherMode = (typeof GATHER_MODES)[number];

export type GatherAccount = {
  /** Short name used on the command line and in logs. */
  id: string;
  /** The local address whose mailbox receives the mail. */
  owner: string;
  protocol: GatherProtocol;
  host: string;
  port: number;
  tls: GatherTls;
  /** Accept an unverifiable certificate (a self-signed home server). Default false. */
  insecureTls?: boolean;
  user: string;
  /** Remote folders to pull (IMAP); POP3 has only the maildrop. */
  folders: string[];
  /** Local folder that receives the mail. */
  target: string;
  mode: GatherMode;
  /** ms between pulls; the config's default when absent. */
  intervalMs?: number;
  /** Use IMAP IDLE for near-instant pickup where the server offers it. Default true. */
  idle?: boolean;
  enabled?: boolean;
  /** Check DKIM/ARC/DMARC on collected mail; the config's [gather] auth_checks when absent. */
  authChecks?: boolean;
  /** Trust the provider's Authentication-Results with this authserv-id (e.g. mx.google.com). */
  trustAuthResults?: string;
};

const ACCOUNTS_FILE = 'accounts.json';
const PASSWORDS_FILE = 'passwords.json';
const ID_PATTERN = /^[a-z0-9][a-z0-9._@+-]{0,99}$/;

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (net.isIPv4(h)) return h.startsWith('127.');
  return h === '::1' || h.startsWith('::ffff:127.');
}

/** The default port for a protocol and TLS mode. */
export function defaultPort(protocol: GatherProtocol, tls: GatherTls): number {
  if (protocol === 'imap') return tls === 'implicit' ? 993 : 143;
  return tls === 'implicit' ? 995 : 110;
}

/** A name from the remote login: `bob@example.net`, or `bob@imap.example.net` for a bare user. */
export function defaultAccountId(user: string, host: string): string {
  const base = user.includes('@') ? user : `${user}@${host}`;
  return base.toLowerCase().replace(/[^a-z0-9._@+-]/g, '-').slice(0, 100);
}

/** Check an account as it will be stored; throws GATHER_INVALID with what to fix. */
export function validateAccount(a: GatherAccount): GatherAccount {
  const bad = (what: string): never => {
    throw new GatherError('GATHER_INVALID', what);
  };
  if (!ID_PATTERN.test(a.id)) bad(`account name ${JSON.stringify(a.id)} must be lower-case letters, digits and . _ @ + - (at most 100)`);
  if (!/^[^@\s]+@[^@\s]+$/.test(a.owner)) bad(`the local address ${JSON.stringify(a.owner)} is not an address like me@example.org`);
  if (!(GATHER_PROTOCOLS as readonly string[]).includes(a.protocol)) bad(`protocol must be imap or pop3`);
  if (!(GATHER_TLS as readonly string[]).includes(a.tls)) bad(`tls must be implicit, starttls or none`);
  if (!(GATHER_MODES as readonly string[]).includes(a.mode)) bad(`mode must be copy, move or mirror`);
  if (!a.host || /[\s/]/.test(a.host)) bad(`host ${JSON.stringify(a.host)} is not a host name`);
  if (!Number.isInteger(a.port) || a.port < 1 || a.port > 65535) bad(`port ${a.port} is not a port number`);
  // Passwords in clear text over the internet: only to a server on this machine.
  if (a.tls === 'none' && !isLoopbackHost(a.host)) bad(`tls = none is only allowed for a server on this machine (loopback); use implicit or starttls for ${a.host}`);
  if (!a.user || /[\r\n]/.test(a.user)) bad('the remote user name is empty or has a line break');
  if (a.protocol === 'pop3' && a.mode === 'mirror') bad('mirror mode needs IMAP (POP3 has no flags); use copy or move');
  if (a.protocol === 'pop3' && (a.folders.length !== 1 || a.folders[0] !== 'INBOX')) bad('POP3 has only one folder (INBOX)');
  if (a.folders.length === 0) bad('name at least one remote folder');
  for (const f of a.folders) if (!f || /[\r\n\0]/.test(f)) bad(`remote folder ${JSON.stringify(f)} is not a folder name`);
  if (!a.target || /(^|\/)\.\.?($|\/)|[\r\n\0]/.test(a.target)) bad(`local folder ${JSON.stringify(a.target)} is not a folder name`);
  if (a.intervalMs !== undefined && (!Number.isFinite(a.intervalMs) || a.intervalMs < 1000)) bad('the interval must be at least 1s');
  // An authserv-id as providers write it: a host name (RFC 8601 2.5).
  if (a.trustAuthResults !== undefined && !/^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(a.trustAuthResults)) bad(`the provider's authserv-id ${JSON.stringify(a.trustAuthResults)} should be a host name like mx.google.com`);
  return a;
}

type PasswordMap = Record<string, string>;

/** The accounts and passwords files under `<data>/gather/`. Each call reads the files afresh. */
export class GatherAccounts {
  readonly dir: string;
  #tail: Promise<unknown> = Promise.resolve();

  constructor(dir: string) {
    this.dir = dir;
  }

  async list(): Promise<GatherAccount[]> {
    const text = await readFile(join(this.dir, ACCOUNTS_FILE), 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return '[]';
      throw err;
    });
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new GatherError('GATHER_FILE', `${join(this.dir, ACCOUNTS_FILE)} is not valid JSON (${(err as Error).message}); fix or remove it`);
    }
    if (!Array.isArray(parsed)) throw new GatherError('GATHER_FILE', `${join(this.dir, ACCOUNTS_FILE)} should hold a JSON array of accounts`);
    return parsed as GatherAccount[];
  }

  async get(id: string): Promise<GatherAccount | undefined> {
    return (await this.list()).find((a) => a.id === id);
  }

  async password(id: string): Promise<string | undefined> {
    return (await this.#passwords())[id];
  }

  add(account: GatherAccount, password: string): Promise<GatherAccount> {
    return this.#locked(async () => {
      validateAccount(account);
      const accounts = await this.list();
      if (accounts.some((a) => a.id === account.id)) throw new GatherError('GATHER_EXISTS', `there is already an account named ${account.id}; pick another with --name, or remove it first`);
      // Passwords first: an account without its password would fail its first run.
      const passwords = await this.#passwords();
      passwords[account.id] = password;
      await this.#writePasswords(passwords);
      accounts.push(account);
      await writeAtomic(join(this.dir, ACCOUNTS_FILE), JSON.stringify(accounts, null, 2) + '\n', 0o600);
      return account;
    });
  }

  remove(id: string): Promise<GatherAccount> {
    return this.#locked(async () => {
      const accounts = await this.list();
      const found = accounts.find((a) => a.id === id);
      if (!found) throw new GatherError('GATHER_NO_SUCH', `no gather account named ${id}; see \`hearth gather list\``);
      await writeAtomic(join(this.dir, ACCOUNTS_FILE), JSON.stringify(accounts.filter((a) => a.id !== id), null, 2) + '\n', 0o600);
      const passwords = await this.#passwords();
      delete passwords[id];
      await this.#writePasswords(passwords);
      return found;
    });
  }

  setPassword(id: string, password: string): Promise<void> {
    return this.#locked(async () => {
      if (!(await this.get(id))) throw new GatherError('GATHER_NO_SUCH', `no gather account named ${id}; see \`hearth gather list\``);
      const passwords = await this.#passwords();
      passwords[id] = password;
      await this.#writePasswords(passwords);
    });
  }

  async #passwords(): Promise<PasswordMap> {
    const file = join(this.dir, PASSWORDS_FILE);
    let text: string;
    try {
      const st = await stat(file);
      // Someone loosened the file: tighten it rather than go on leaking.
      if ((st.mode & 0o077) !== 0) await chmod(file, 0o600);
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw err;
    }
    try {
      return JSON.parse(text) as PasswordMap;
    } catch {
      throw new GatherError('GATHER_FILE', `${file} is not valid JSON; remove it and set the passwords again with \`hearth gather passwd\``);
    }
  }

  #writePasswords(passwords: PasswordMap): Promise<void> {
    return writeAtomic(join(this.dir, PASSWORDS_FILE), JSON.stringify(passwords) + '\n', 0o600);
  }

  #locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(async () => {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      return fn();
    });
    this.#tail = run.catch(() => undefined);
    return run;
  }
}

/** Write a file so a crash leaves either the old or the new content, created with `mode`. */
async function writeAtomic(file: string, content: string, mode: number): Promise<void> {
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  const dir = await open(join(file, '..'), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
