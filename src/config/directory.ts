// The directory: the live view of who lives here (config/users) and where mail for each
// address goes (config/aliases). Services ask it; they never read those files themselves.
// It follows edits while the server runs (`hearth user add` needs no restart) and never
// lets a broken edit take away the last good view.
import { EventEmitter } from 'node:events';
import { watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import type { Logger } from '../core/log.ts';
import { parseAliases } from './aliases.ts';
import { hashPassword, parseUsers, verifyPassword } from './users.ts';
import type { UserRecord } from './users.ts';

/**
 * Where mail for an address goes. `tag` is set on a user reached through plus-addressing
 * (`me+shop@` -> user me, tag "shop"), so delivery can file it into that folder.
 */
export type Resolution = { local: Array<{ user: string; domain: string; tag?: string }>; remote: string[] };

/** Addresses every local domain has even when nobody wrote them down (RFC 5321 4.5.1, RFC 2142). */
const WELL_KNOWN = new Set(['postmaster', 'abuse']);

export const USERS_FILE_NAME = 'users';
export const ALIASES_FILE_NAME = 'aliases';

type Source = 'users' | 'aliases';
export type ReloadEvent = { file: Source; ok: boolean; problems: string[] };

/** How deep alias chains may go, and how many addresses one resolution may visit. */
const MAX_ALIAS_DEPTH = 10;
const MAX_EXPANSIONS = 1000;
const DEBOUNCE_MS = 100;

let dummyHash: Promise<string> | undefined;

export class Directory extends EventEmitter<{ reload: [ReloadEvent] }> {
  readonly configDir: string;
  readonly log: Logger;
  #domains = new Set<string>();
  #users = new Map<string, UserRecord>();
  #aliases = new Map<string, string[]>();
  #watcher: FSWatcher | undefined;
  /** Characters that start a plus-address tag ("+" by default; "" turns it off). */
  #plusDelimiters = '+';
  #timers = new Map<Source, NodeJS.Timeout>();
  #running = new Map<Source, Promise<void>>();
  #loadedOnce = new Set<Source>();
  #problems = new Map<Source, string[]>();
  #closed = false;

  private constructor(configDir: string, domains: string[], log: Logger) {
    super();
    this.configDir = configDir;
    this.log = log;
    this.setDomains(domains);
  }

  static async open(opts: { configDir: string; domains: string[]; log: Logger; watch?: boolean; plusDelimiter?: string }): Promise<Directory> {
    const dir = new Directory(resolvePath(opts.configDir), opts.domains, opts.log);
    if (opts.plusDelimiter !== undefined) dir.setPlusDelimiter(opts.plusDelimiter);
    await dir.#reload('users');
    await dir.#reload('aliases');
    if (opts.watch ?? true) dir.#watch();
    return dir;
  }

  isLocalDomain(domain: string): boolean {
    return this.#domains.has(domain.toLowerCase());
  }

  /** The first configured local domain: where a bare `RCPT TO:<postmaster>` goes (RFC 5321 4.5.1). */
  get primaryDomain(): string | undefined {
    for (const domain of this.#domains) return domain;
    return undefined;
  }

  setDomains(domains: string[]): void {
    this.#domains = new Set(domains.map((d) => d.toLowerCase()));
  }

  /** Each character of `delimiters` starts a tag (Postfix's recipient_delimiter); "" turns plus-addressing off. */
  setPlusDelimiter(delimiters: string): void {
    this.#plusDelimiters = delimiters;
  }

  /** Number of users and aliases currently known (for status output and tests). */
  get size(): { users: number; aliases: number } {
    return { users: this.#users.size, aliases: this.#aliases.size };
  }

  /**
   * Where mail for `address` goes. A user is its own mailbox; an alias expands (recursively,
   * at most MAX_ALIAS_DEPTH deep, each address once) to users and remote addresses. When
   * neither matches: `user+tag@` is tried as `user@` (an alias written with the "+" wins, as
   * it matched first), then postmaster@ and abuse@ go to the domain's first user, then the
   * domain's catch-all applies. null: not a local domain, or nobody here by that name.
   */
  resolve(address: string): Resolution | null {
    const addr = address.trim().toLowerCase();
    const at = addr.lastIndexOf('@');
    if (at <= 0 || !this.isLocalDomain(addr.slice(at + 1))) return null;
    const local = new Map<string, { user: string; domain: string; tag?: string }>();
    const remote = new Map<string, string>();
    const visited = new Set<string>();
    let budget = MAX_EXPANSIONS;

    const expand = (target: string, depth: number): void => {
      const key = target.toLowerCase();
      if (visited.has(key) || budget-- <= 0) return;
      visited.add(key);
      const user = this.#users.get(key);
      if (user) {
        if (!local.has(key)) local.set(key, { user: user.user, domain: user.domain });
        return;
      }
      const domain = key.slice(key.lastIndexOf('@') + 1);
      if (!this.isLocalDomain(domain)) {
        remote.set(key, target);
        return;
      }
      let found = this.#lookup(key, domain);
      let tag: string | undefined;
      if (!found) {
        const plus = this.#splitTag(key);
        if (plus && !visited.has(plus.base)) {
          found = this.#lookup(plus.base, domain);
          tag = plus.tag;
          if (found) visited.add(plus.base);
        }
      }
      if (found && 'user' in found) {
        const k = `${found.user}@${found.domain}`;
        if (!local.has(k)) local.set(k, !tag ? { user: found.user, domain: found.domain } : { user: found.user, domain: found.domain, tag });
        return;
      }
      const targets = found?.targets ?? (visited.has(`@${domain}`) ? undefined : this.#catchAll(domain, visited));
      if (!targets) return;
      if (depth >= MAX_ALIAS_DEPTH) {
        this.log.warn({ address, alias: key }, `aliases nest deeper than ${MAX_ALIAS_DEPTH} levels; the rest of the chain is ignored`);
        return;
      }
      for (const t of targets) expand(t, depth + 1);
    };
    expand(addr, 0);
    if (budget < 0) this.log.warn({ address }, `alias expansion stopped after ${MAX_EXPANSIONS} addresses`);
    if (local.size === 0 && remote.size === 0) return null;
    return { local: [...local.values()], remote: [...remote.values()] };
  }

  /** A user, an alias, or (for postmaster@ and abuse@ with neither) the domain's first user. */
  #lookup(key: string, domain: string): { user: string; domain: string } | { targets: string[] } | undefined {
    const user = this.#users.get(key);
    if (user) return { user: user.user, domain: user.domain };
    const targets = this.#aliases.get(key);
    if (targets) return { targets };
    if (WELL_KNOWN.has(key.slice(0, key.lastIndexOf('@')))) {
      // RFC 5321 4.5.1 (postmaster) and RFC 2142 (abuse) must always be deliverable.
      const first = this.#firstUser(domain);
      if (first) return { user: first.user, domain: first.domain };
    }
    return undefined;
  }

  /** The first user of `domain` in the users file; else the first user of any local domain. */
  #firstUser(domain: string): UserRecord | undefined {
    let fallback: UserRecord | undefined;
    for (const u of this.#users.values()) {
      if (u.domain === domain) return u;
      if (!fallback && this.isLocalDomain(u.domain)) fallback = u;
    }
    return fallback;
  }

  /** `user+tag@domain` -> base `user@domain` and tag "tag"; undefined without a delimiter. */
  #splitTag(key: string): { base: string; tag: string } | undefined {
    if (this.#plusDelimiters === '') return undefined;
    const at = key.lastIndexOf('@');
    let cut = -1;
    for (let i = 1; i < at; i++) {
      if (this.#plusDelimiters.includes(key[i])) {
        cut = i;
        break;
      }
    }
    if (cut <= 0) return undefined;
    return { base: key.slice(0, cut) + key.slice(at), tag: key.slice(cut + 1, at) };
  }

  #catchAll(domain: string, visited: Set<string>): string[] | undefined {
    const targets = this.#aliases.get(`@${domain}`);
    if (targets) visited.add(`@${domain}`); // a catch-all applies once per resolution: no loops through it
    return targets;
  }

  /** The user if `password` is right; null otherwise (unknown, disabled or wrong: one answer, similar time). */
  async authenticate(address: string, password: string): Promise<UserRecord | null> {
    const user = this.#users.get(address.trim().toLowerCase());
    if (!user || user.disabled) {
      // spend about the same time as a real check, so timing does not reveal who exists
      dummyHash ??= hashPassword(`dummy-${Math.random()}`);
      await verifyPassword(password, await dummyHash);
      return null;
    }
    return (await verifyPassword(password, user.hash)) ? user : null;
  }

  /** Re-read users and aliases now (e.g. asked to by `hearth user add` over the control socket). */
  async reload(): Promise<void> {
    await Promise.all((['users', 'aliases'] as const).map((file) => this.#queueReload(file)));
  }

  /** The problems found by the latest read of each file (empty when both are clean). */
  problems(): string[] {
    return [...(this.#problems.get('users') ?? []), ...(this.#problems.get('aliases') ?? [])];
  }

  close(): void {
    this.#closed = true;
    this.#watcher?.close();
    this.#watcher = undefined;
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
  }

  #watch(): void {
    try {
      this.#watcher = watch(this.configDir, { persistent: false }, (_event, filename) => {
        const name = filename?.toString();
        if (name === USERS_FILE_NAME || name === undefined || name === null) this.#schedule('users');
        if (name === ALIASES_FILE_NAME || name === undefined || name === null) this.#schedule('aliases');
      });
      this.#watcher.on('error', (err) => this.log.error({ err, dir: this.configDir }, 'cannot watch the config folder; users and aliases will not reload until restart'));
    } catch (err) {
      this.log.error({ err, dir: this.configDir }, 'cannot watch the config folder; users and aliases will not reload until restart');
    }
  }

  #schedule(file: Source): void {
    if (this.#closed) return;
    clearTimeout(this.#timers.get(file));
    this.#timers.set(
      file,
      setTimeout(() => {
        this.#timers.delete(file);
        void this.#queueReload(file);
      }, DEBOUNCE_MS),
    );
  }

  /** One reload at a time per file; a change during a reload gets its own pass afterwards. */
  #queueReload(file: Source): Promise<void> {
    const previous = this.#running.get(file) ?? Promise.resolve();
    const next = previous.then(() => (this.#closed ? undefined : this.#reload(file))).catch((err) => this.log.error({ err, file }, 'reload failed'));
    this.#running.set(file, next);
    return next;
  }

  async #reload(file: Source): Promise<void> {
    const path = join(this.configDir, file === 'users' ? USERS_FILE_NAME : ALIASES_FILE_NAME);
    const first = !this.#loadedOnce.has(file);
    const done = (ok: boolean, problems: string[]): void => {
      this.#loadedOnce.add(file);
      this.#problems.set(file, problems);
      this.emit('reload', { file, ok, problems });
    };
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && first) {
        this.log.info({ file: path }, `no ${file} file yet; starting with none`);
        return done(true, []);
      }
      const problem = code === 'ENOENT' ? `${path}: the file was removed` : `${path}: cannot read: ${(err as Error).message}`;
      this.log.error({ file: path, problems: [problem] }, `${problem}; keeping the last good ${file}`);
      return done(false, [problem]);
    }

    const parsed = file === 'users' ? parseUsers(text, path) : parseAliases(text, path);
    const entries = 'users' in parsed ? parsed.users : parsed.aliases;
    const contentLines = text.split(/\r?\n/).filter((l) => l.trim() !== '' && !l.trim().startsWith('#')).length;
    if (entries.size === 0 && contentLines > 0) {
      // not one usable line: most likely a broken write or the wrong file, not an intent to empty it
      this.log.error({ file: path, problems: parsed.problems }, `${path} has no usable line; keeping the last good ${file}:\n${parsed.problems.join('\n')}`);
      return done(false, parsed.problems);
    }
    for (const problem of parsed.problems) this.log.warn({ file: path }, problem);
    if ('users' in parsed) {
      this.#users = parsed.users;
      for (const u of parsed.users.values()) {
        if (!this.isLocalDomain(u.domain)) this.log.warn({ user: u.address }, `user ${u.address} is not in a local domain; mail for it is not accepted until "${u.domain}" is added to domains`);
      }
    } else {
      this.#aliases = parsed.aliases;
    }
    this.log.info({ file: path, entries: entries.size, problems: parsed.problems.length }, `${first ? 'loaded' : 'reloaded'} ${file}`);
    done(true, parsed.problems);
  }
}
