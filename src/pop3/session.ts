// One POP3 connection (RFC 1939, CAPA RFC 2449, AUTH RFC 5034, STLS RFC 2595, response
// codes RFC 3206) as an explicit state machine: AUTHORIZATION -> TRANSACTION -> UPDATE, with
// CLOSED once the connection is gone. Every command is dispatched to do_${state}_${VERB};
// a command in the wrong state falls to that state's default and gets -ERR.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import { plaintextAllowed } from '../core/connection.ts';
import type { LineConnection } from '../core/connection.ts';
import { CommandPacer } from '../core/limits.ts';
import type { LineSessionOptions } from '../core/line-server.ts';
import { dotStuff, dotStuffBuffer, firstOf } from '../core/lines.ts';
import { StateMachine } from '../core/state-machine.ts';
import type { NoStrayHandlers } from '../core/state-machine.ts';
import { decodeSaslPlain, parseLineCount, parseMessageNumber, parsePop3Command } from './parse.ts';
import { headersAndLines } from './top.ts';

export const STATES = ['AUTHORIZATION', 'TRANSACTION', 'UPDATE', 'CLOSED'] as const;
export type State = (typeof STATES)[number];
type Verb = 'USER' | 'PASS' | 'AUTH' | 'APOP' | 'CAPA' | 'STLS' | 'QUIT' | 'STAT' | 'LIST' | 'UIDL' | 'RETR' | 'TOP' | 'DELE' | 'RSET' | 'NOOP';

/** What a session needs from the mailbox index for one user's INBOX. */
export type Pop3Maildrop = {
  lockMaildrop(owner: object): boolean;
  unlockMaildrop(owner: object): void;
  sync(folder: string): Promise<{ uidValidity: number; messages: Array<{ uid: number; size: number; vsize?: number | null }> }>;
  openMessage(folder: string, uid: number): Promise<Readable | null>;
  readMessage(folder: string, uid: number): Promise<Buffer | null>;
  setFlags(folder: string, uids: number[], mode: 'add', flags: string[]): Promise<unknown>;
  expunge(folder: string, uids?: number[]): Promise<number[]>;
};

export type Pop3Backend = {
  /** The mailbox of a user whose password is right, else null. */
  authenticate(username: string, password: string): Promise<{ user: string; domain: string } | null>;
  openMaildrop(box: { user: string; domain: string }): Promise<Pop3Maildrop>;
};

export type Pop3SessionOptions = LineSessionOptions<Pop3Backend> & {
  /** Inactivity autologout per state; in TRANSACTION it also bounds a stalled write (a client that stops reading). */
  idleMs: { authorization: number; transaction: number };
  /** Authentication deadline: armed once at connect, never re-armed by commands, cleared at login. 0 = none. */
  loginMs?: number;
  /** Unknown or misplaced commands before we hang up (RFC 2449 does not bound it; abuse). */
  maxBadCommands?: number;
  /** Commands per second before further ones are slowed down (not refused). */
  commandsPerSecond?: number;
};

type Entry = { number: number; uid: number; size: number; deleted: boolean };

const INBOX = 'INBOX';
/** Messages up to this size are read whole and sent in one write; bigger ones stream. */
const WHOLE_READ_MAX = 1024 * 1024;
/** \Seen flags from RETR are written in batches (one rename pass, one fsync) this often. */
const SEEN_FLUSH_MS = 200;
const SEEN_FLUSH_COUNT = 256;
/** How long a farewell line may take to flush before the connection is cut anyway. */
const LAST_REPLY_GRACE_MS = 2_000;

export class Pop3Session extends StateMachine<State> {
  readonly conn: LineConnection;
  readonly #opts: Pop3SessionOptions;
  #pendingUser: string | undefined;
  /** Set while AUTH waits for the client's base64 response line. */
  #saslPending = false;
  #badCommands = 0;
  readonly #pacer: CommandPacer;
  #maildrop: Pop3Maildrop | undefined;
  #entries: Entry[] = [];
  #uidValidity = 0;
  #username = '';
  #seenQueue: number[] = [];
  #seenTimer: NodeJS.Timeout | undefined;
  #loginTimer: NodeJS.Timeout | undefined;
  #markClosed!: () => void;
  readonly #closed = new Promise<void>((resolve) => (this.#markClosed = resolve));

  constructor(conn: LineConnection, opts: Pop3SessionOptions) {
    super('AUTHORIZATION', opts.log, { AUTHORIZATION: opts.idleMs.authorization, TRANSACTION: opts.idleMs.transaction, UPDATE: 0, CLOSED: 0 });
    this.conn = conn;
    this.#opts = opts;
    this.#pacer = new CommandPacer(opts.commandsPerSecond ?? 10_000);
    // A client that keeps sending CAPA or NOOP resets the idle timer, not this one.
    if (opts.loginMs && opts.loginMs > 0) this.#loginTimer = setTimeout(() => void this.#onLoginDeadline(), opts.loginMs);
  }

  async #onLoginDeadline(): Promise<void> {
    this.#loginTimer = undefined;
    if (this.state !== 'AUTHORIZATION') return;
    this.log.info('no login before the authentication deadline: closing');
    this.#saslPending = false;
    this.#release();
    this.transition('CLOSED', 'login deadline');
    // conn.close waits for the farewell to flush: a client that does not read its replies would
    // hold it (and the connection, with no timer left) forever. Give it a moment, then cut.
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([
      this.conn.close('-ERR authentication deadline passed; closing the connection\r\n'),
      new Promise<void>((resolve) => (grace = setTimeout(resolve, LAST_REPLY_GRACE_MS))),
    ]);
    clearTimeout(grace);
    this.conn.socket.destroy();
  }

  /** The session holds nothing time-bound any more (login deadline). */
  #clearLoginDeadline(): void {
    clearTimeout(this.#loginTimer);
    this.#loginTimer = undefined;
  }

  greet(): Promise<void> {
    // No APOP timestamp in the greeting: APOP needs plaintext passwords on disk.
    return this.ok(`${this.#opts.hostname} hearth POP3 server ready`);
  }

  // ---- plumbing ----------------------------------------------------------------------

  ok(text: string): Promise<void> {
    return this.conn.writer.writeLine(`+OK ${text}`);
  }

  err(text: string, code?: 'AUTH' | 'IN-USE' | 'SYS/TEMP' | 'SYS/PERM'): Promise<void> {
    return this.conn.writer.writeLine(`-ERR ${code ? `[${code}] ` : ''}${text}`);
  }

  /** A multi-line response: +OK, the lines (dot-stuffed), and the terminating dot. */
  async multiline(first: string, lines: string[]): Promise<void> {
    const body = lines.map((l) => (l.startsWith('.') ? `.${l}` : l)).join('\r\n');
    await this.conn.writer.write(`+OK ${first}\r\n${body}${lines.length ? '\r\n' : ''}.\r\n`);
  }

  /** One line from the client: a command, or the response to an AUTH challenge. */
  async onLine(line: Buffer): Promise<void> {
    if (this.state === 'CLOSED' || this.state === 'UPDATE') return;
    const wait = this.#pacer.next();
    if (wait > 0) await this.withTimerPaused(() => sleep(wait));
    if (this.#saslPending) {
      this.#saslPending = false;
      this.rearm();
      const text = line.toString('utf8').trim();
      if (text === '*') return this.err('authentication cancelled');
      return this.#saslPlain(text);
    }
    const cmd = parsePop3Command(line);
    if (!cmd.ok) return this.#bad(cmd.text);
    this.log.trace({ verb: cmd.verb, args: cmd.verb === 'PASS' ? ['[redacted]'] : cmd.args }, 'C:');
    await this.dispatch(cmd.verb, cmd.args);
  }

  async onOverflow(): Promise<void> {
    await this.#bad('line too long');
  }

  /** Server shutdown: end the session without UPDATE (a QUIT already running finishes). */
  async shutdown(): Promise<void> {
    if (this.state === 'CLOSED') return;
    if (this.state === 'UPDATE') {
      await this.#closed;
      return;
    }
    this.#release();
    this.#clearLoginDeadline();
    this.transition('CLOSED', 'server shutdown');
    await this.conn.close('-ERR [SYS/TEMP] server shutting down; please reconnect later\r\n');
  }

  /** The connection went away: no UPDATE state, so nothing marked deleted is removed. */
  onClosed(): void {
    this.#markClosed();
    this.stopTimer();
    this.#clearLoginDeadline();
    this.#release();
    if (this.state !== 'CLOSED') this.transition('CLOSED', 'connection closed');
  }

  onTimeout(): void {
    // RFC 1939 3: on autologout the server closes without removing messages or replying.
    this.log.info({ state: this.state }, 'idle timeout: closing');
    this.#release();
    this.transition('CLOSED', 'idle timeout');
    this.conn.socket.destroy();
  }

  async onHandlerError(err: unknown): Promise<void> {
    // RFC 3206: SYS/TEMP tells the client to try again later, SYS/PERM that retrying will not help.
    if (isPermanent(err)) await this.err('the server cannot read your maildrop; retrying will not help, tell the administrator', 'SYS/PERM');
    else await this.err('internal error; please try again later', 'SYS/TEMP');
  }

  async do_default(verb: string): Promise<void> {
    await this.#bad(`unknown command ${sanitize(verb)}`);
  }

  async #bad(text: string): Promise<void> {
    this.#badCommands += 1;
    if (this.#badCommands > (this.#opts.maxBadCommands ?? 10)) {
      this.log.info('too many bad commands: closing');
      await this.err('too many bad commands; closing the connection');
      this.#release();
      this.transition('CLOSED', 'too many bad commands');
      await this.conn.close();
      return;
    }
    await this.err(text);
  }

  #release(): void {
    if (this.#seenQueue.length > 0) void this.#flushSeen();
    if (this.#maildrop) this.#maildrop.unlockMaildrop(this);
    this.#maildrop = undefined;
  }

  get #plaintextAllowed(): boolean {
    return plaintextAllowed(this.conn, this.#opts.plaintext);
  }

  #capabilities(): string[] {
    const caps = ['TOP', 'UIDL', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING', 'EXPIRE NEVER', 'IMPLEMENTATION hearth'];
    if (this.state === 'AUTHORIZATION') {
      if (this.#plaintextAllowed) caps.push('USER', 'SASL PLAIN');
      if (this.#opts.tlsContext && !this.conn.secure) caps.push('STLS');
    }
    return caps;
  }

  // ---- AUTHORIZATION -----------------------------------------------------------------

  async do_AUTHORIZATION_CAPA(): Promise<void> {
    await this.multiline('capability list follows', this.#capabilities());
  }

  async do_AUTHORIZATION_STLS(): Promise<void> {
    if (!this.#opts.tlsContext) return this.err('TLS is not configured on this server');
    if (this.conn.secure) return this.err('already using TLS');
    await this.ok('begin TLS negotiation');
    this.#pendingUser = undefined;
    try {
      await this.conn.startTls(this.#opts.tlsContext);
      this.rearm();
    } catch (err) {
      this.log.info({ err: (err as Error).message }, 'TLS handshake failed');
    }
  }

  async do_AUTHORIZATION_USER(args: string[]): Promise<void> {
    if (!this.#plaintextAllowed) return this.err('log in over TLS: send STLS first (or use port 995)', 'AUTH');
    if (args.length !== 1) return this.err('usage: USER name');
    this.#pendingUser = args[0];
    await this.ok('send PASS');
  }

  async do_AUTHORIZATION_PASS(args: string[]): Promise<void> {
    if (!this.#plaintextAllowed) return this.err('log in over TLS: send STLS first (or use port 995)', 'AUTH');
    const user = this.#pendingUser;
    this.#pendingUser = undefined;
    if (!user) return this.err('send USER first');
    // RFC 1939 7: the password may contain spaces; take the rest of the line.
    if (args.length === 0) return this.err('usage: PASS password');
    await this.#login(user, args.join(' '));
  }

  async do_AUTHORIZATION_AUTH(args: string[]): Promise<void> {
    if (args.length === 0) {
      // Not in RFC 5034, but Outlook and others send a bare AUTH to list the mechanisms.
      return this.multiline('SASL mechanisms follow', this.#plaintextAllowed ? ['PLAIN'] : []);
    }
    if (args[0].toUpperCase() !== 'PLAIN') return this.err(`SASL mechanism ${sanitize(args[0])} is not supported; use PLAIN`);
    if (!this.#plaintextAllowed) return this.err('log in over TLS: send STLS first (or use port 995)', 'AUTH');
    if (args.length > 2) return this.err('usage: AUTH PLAIN [initial-response]');
    if (args.length === 2) return this.#saslPlain(args[1] === '=' ? '' : args[1]);
    this.#saslPending = true;
    await this.conn.writer.writeLine('+ ');
  }

  async do_AUTHORIZATION_APOP(): Promise<void> {
    await this.err('APOP is not supported (it needs plaintext passwords on the server); use USER/PASS or AUTH PLAIN over TLS');
  }

  async do_AUTHORIZATION_QUIT(): Promise<void> {
    this.#clearLoginDeadline();
    this.transition('CLOSED', 'QUIT');
    await this.conn.close(`+OK ${this.#opts.hostname} signing off\r\n`);
  }

  async do_AUTHORIZATION_default(verb: string): Promise<void> {
    const known: readonly string[] = ['STAT', 'LIST', 'UIDL', 'RETR', 'TOP', 'DELE', 'RSET', 'NOOP'];
    // Before login, misplaced commands count as bad ones too: a client that will not log in is
    // shown the door (smtp-server counts unauthenticated commands the same way).
    if (known.includes(verb)) return this.#bad(`${verb} needs a login first`);
    await this.#bad(`unknown command ${sanitize(verb)}`);
  }

  async #saslPlain(base64: string): Promise<void> {
    const creds = decodeSaslPlain(base64);
    if (!creds) return this.err('malformed SASL PLAIN response');
    if (creds.authzid && creds.authzid !== creds.authcid) return this.err('logging in as another user is not supported', 'AUTH');
    await this.#login(creds.authcid, creds.password);
  }

  async #login(username: string, password: string): Promise<void> {
    const peer = this.conn.remoteAddress;
    const verdict = this.#opts.limiter.check(peer, username);
    if (!verdict.allowed) {
      this.log.warn({ user: username, reason: verdict.reason }, 'login refused: locked out after repeated failures');
      return this.err(`too many failed logins; try again in ${Math.ceil(verdict.retryAfterMs / 60_000)} minutes`, 'SYS/TEMP');
    }
    // The login deadline (or a shutdown) may close the session while we wait on the store: after
    // each wait, a session no longer in AUTHORIZATION abandons the login and holds nothing.
    const abandoned = (): boolean => this.state !== 'AUTHORIZATION';
    const box = await this.withTimerPaused(() => this.#opts.backend.authenticate(username, password));
    if (!box) {
      const delay = this.#opts.limiter.failure(peer, username);
      this.log.info({ user: username, delayMs: delay }, 'login failed');
      if (abandoned()) return;
      await this.withTimerPaused(() => sleep(delay));
      return this.err('invalid user name or password', 'AUTH');
    }
    this.#opts.limiter.success(peer);
    if (abandoned()) return;
    const maildrop = await this.withTimerPaused(() => this.#opts.backend.openMaildrop(box));
    if (abandoned()) return;
    if (!maildrop.lockMaildrop(this)) {
      this.log.info({ user: username }, 'maildrop in use by another POP3 session');
      return this.err('your maildrop is in use by another POP3 session; try again later', 'IN-USE');
    }
    this.#maildrop = maildrop;
    try {
      const state = await this.withTimerPaused(() => maildrop.sync(INBOX));
      this.#uidValidity = state.uidValidity;
      // RFC 1939 5: LIST/STAT give the size as RETR sends it (CRLF line ends): the W= size when
      // the file name has one, else the file's size.
      this.#entries = state.messages.map((m, i) => ({ number: i + 1, uid: m.uid, size: m.vsize ?? m.size, deleted: false }));
    } catch (err) {
      this.#release();
      throw err;
    }
    if (abandoned()) {
      this.#release();
      return;
    }
    this.#username = `${box.user}@${box.domain}`;
    this.log.info({ user: this.#username, messages: this.#entries.length }, 'logged in');
    this.#clearLoginDeadline();
    this.#badCommands = 0;
    this.transition('TRANSACTION', 'login');
    const { count, octets } = this.#totals();
    await this.ok(`maildrop has ${count} message${count === 1 ? '' : 's'} (${octets} octets)`);
  }

  // ---- TRANSACTION -------------------------------------------------------------------

  #totals(): { count: number; octets: number } {
    let count = 0;
    let octets = 0;
    for (const e of this.#entries) {
      if (e.deleted) continue;
      count += 1;
      octets += e.size;
    }
    return { count, octets };
  }

  /** The message a number argument names, or an -ERR already sent (null). */
  async #entry(arg: string | undefined): Promise<Entry | null> {
    const n = parseMessageNumber(arg);
    const e = n === null ? undefined : this.#entries[n - 1];
    if (!e || e.deleted) {
      await this.err(n === null ? 'expected a message number' : `no such message ${n}`);
      return null;
    }
    return e;
  }

  /** RFC 2449 compatible UIDL: Dovecot's default form, UID and UIDVALIDITY in hex. */
  #uidl(e: Entry): string {
    const hex = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');
    return `${hex(e.uid)}${hex(this.#uidValidity)}`;
  }

  async do_TRANSACTION_CAPA(): Promise<void> {
    await this.multiline('capability list follows', this.#capabilities());
  }

  async do_TRANSACTION_STAT(): Promise<void> {
    const { count, octets } = this.#totals();
    await this.ok(`${count} ${octets}`);
  }

  async do_TRANSACTION_LIST(args: string[]): Promise<void> {
    if (args.length > 0) {
      const e = await this.#entry(args[0]);
      if (e) await this.ok(`${e.number} ${e.size}`);
      return;
    }
    const { count, octets } = this.#totals();
    await this.multiline(
      `${count} messages (${octets} octets)`,
      this.#entries.filter((e) => !e.deleted).map((e) => `${e.number} ${e.size}`),
    );
  }

  async do_TRANSACTION_UIDL(args: string[]): Promise<void> {
    if (args.length > 0) {
      const e = await this.#entry(args[0]);
      if (e) await this.ok(`${e.number} ${this.#uidl(e)}`);
      return;
    }
    await this.multiline(
      'unique-id listing follows',
      this.#entries.filter((e) => !e.deleted).map((e) => `${e.number} ${this.#uidl(e)}`),
    );
  }

  async do_TRANSACTION_RETR(args: string[]): Promise<void> {
    const e = await this.#entry(args[0]);
    if (!e) return;
    const sent = await this.#send(e, `${e.size} octets`, null);
    // RETR means read: other clients (IMAP, webmail) see it as \Seen.
    if (sent) await this.#queueSeen(e.uid);
  }

  /** Batch \Seen updates: a client downloading 10,000 messages must not cost 10,000 fsyncs. */
  async #queueSeen(uid: number): Promise<void> {
    this.#seenQueue.push(uid);
    if (this.#seenQueue.length >= SEEN_FLUSH_COUNT) return this.#flushSeen();
    this.#seenTimer ??= setTimeout(() => void this.#flushSeen(), SEEN_FLUSH_MS);
  }

  async #flushSeen(): Promise<void> {
    clearTimeout(this.#seenTimer);
    this.#seenTimer = undefined;
    const uids = this.#seenQueue;
    const maildrop = this.#maildrop;
    if (uids.length === 0 || !maildrop) return;
    this.#seenQueue = [];
    try {
      await maildrop.setFlags(INBOX, uids, 'add', ['\\Seen']);
    } catch (err) {
      this.log.warn({ err, user: this.#username }, 'could not mark retrieved messages \\Seen');
    }
  }

  async do_TRANSACTION_TOP(args: string[]): Promise<void> {
    if (args.length !== 2) return this.err('usage: TOP message lines');
    const lines = parseLineCount(args[1]);
    if (lines === null) return this.err('expected a number of lines');
    const e = await this.#entry(args[0]);
    if (!e) return;
    await this.#send(e, 'top of message follows', lines);
  }

  /** Stream a message (or its top) dot-stuffed, honouring socket backpressure. */
  async #send(e: Entry, first: string, topLines: number | null): Promise<boolean> {
    // A message removed under the session (IMAP EXPUNGE, another program) is gone for good:
    // a plain -ERR, not [SYS/TEMP], which would have the client retry it forever.
    const vanished = () => this.err(`message ${e.number} no longer exists (removed by another session)`);
    if (topLines === null && e.size <= WHOLE_READ_MAX) {
      const whole = await this.withTimerPaused(() => this.#maildrop!.readMessage(INBOX, e.uid));
      if (!whole) {
        await vanished();
        return false;
      }
      const written = this.conn.writer.write(Buffer.concat([Buffer.from(`+OK ${first}\r\n`), dotStuffBuffer(whole)]));
      // Most writes go straight into the socket: only one that waits on the client needs watching.
      if (this.conn.socket.writableNeedDrain) await this.#watchingStalls(() => written);
      else await written;
      return !this.conn.closed;
    }
    const stream = await this.withTimerPaused(() => this.#maildrop!.openMessage(INBOX, e.uid));
    if (!stream) {
      await vanished();
      return false;
    }
    await this.conn.writer.writeLine(`+OK ${first}`);
    const source = topLines === null ? stream : headersAndLines(stream, topLines);
    const stuffed = dotStuff();
    const pump = (async () => {
      try {
        for await (const chunk of source) {
          if (stuffed.destroyed) break;
          if (!stuffed.write(chunk)) await firstOf(stuffed, ['drain', 'close']);
        }
        stuffed.end();
      } catch (err) {
        stuffed.destroy(err as Error);
      }
    })();
    try {
      await this.#watchingStalls(async () => {
        for await (const chunk of stuffed) {
          if (this.conn.closed || this.conn.writer.closed) break;
          await this.conn.writer.write(chunk as Buffer);
        }
      });
    } catch (err) {
      // The +OK and part of the body are out: an -ERR now would be read as message text. The
      // only honest signal left is to drop the connection (the client sees no final dot).
      this.log.error({ err, user: this.#username, uid: e.uid }, 'reading the message failed mid-transfer: closing the connection');
      this.#release();
      this.transition('CLOSED', 'read failure mid-transfer');
      this.conn.socket.destroy();
    } finally {
      stream.destroy();
      stuffed.destroy();
      await pump;
    }
    return !this.conn.closed;
  }

  /**
   * Run a write that may wait on the client (RETR, TOP) with the idle timer off (a slow reader
   * is not an idle one) but a stall watchdog on: if the socket makes no drain progress for the
   * TRANSACTION idle time, the client has stopped reading; log it and drop the connection.
   */
  async #watchingStalls<T>(fn: () => Promise<T>): Promise<T> {
    const ms = this.#opts.idleMs.transaction;
    const socket = this.conn.socket;
    let timer: NodeJS.Timeout | undefined;
    const progress = (): void => {
      clearTimeout(timer);
      if (ms > 0) timer = setTimeout(stalled, ms);
    };
    const stalled = (): void => {
      socket.off('drain', progress);
      this.log.info({ user: this.#username, unsent: socket.writableLength, timeoutMs: ms }, 'client stopped reading (no write progress): closing');
      this.#release();
      this.transition('CLOSED', 'write stalled');
      socket.destroy();
    };
    socket.on('drain', progress);
    progress();
    try {
      return await this.withTimerPaused(fn);
    } finally {
      clearTimeout(timer);
      socket.off('drain', progress);
    }
  }

  async do_TRANSACTION_DELE(args: string[]): Promise<void> {
    const e = await this.#entry(args[0]);
    if (!e) return;
    e.deleted = true;
    await this.ok(`message ${e.number} deleted`);
  }

  async do_TRANSACTION_RSET(): Promise<void> {
    for (const e of this.#entries) e.deleted = false;
    const { count, octets } = this.#totals();
    await this.ok(`maildrop has ${count} messages (${octets} octets)`);
  }

  async do_TRANSACTION_NOOP(): Promise<void> {
    await this.ok('');
  }

  async do_TRANSACTION_QUIT(): Promise<void> {
    this.transition('UPDATE', 'QUIT');
    await this.#flushSeen();
    const uids = this.#entries.filter((e) => e.deleted).map((e) => e.uid);
    let reply = `+OK ${this.#opts.hostname} signing off`;
    if (uids.length > 0) {
      try {
        await this.#maildrop!.setFlags(INBOX, uids, 'add', ['\\Deleted']);
        const removed = await this.#maildrop!.expunge(INBOX, uids);
        this.log.info({ user: this.#username, deleted: removed.length }, 'deleted messages at QUIT');
        reply = `+OK ${this.#opts.hostname} signing off (${removed.length} message${removed.length === 1 ? '' : 's'} deleted)`;
      } catch (err) {
        this.log.error({ err, user: this.#username }, 'could not delete messages at QUIT');
        reply = '-ERR [SYS/TEMP] some deleted messages could not be removed; they are still there';
      }
    }
    this.#release();
    this.transition('CLOSED', 'after UPDATE');
    await this.conn.close(`${reply}\r\n`);
  }

  async do_TRANSACTION_default(verb: string): Promise<void> {
    const notHere: readonly string[] = ['USER', 'PASS', 'AUTH', 'APOP', 'STLS'];
    if (notHere.includes(verb)) return this.err(`${verb} is not allowed after login`);
    await this.#bad(`unknown command ${sanitize(verb)}`);
  }
}

/** Error codes (errno, SQLite) that will not go away by retrying: the maildrop is unreadable. */
const PERMANENT_CODES = new Set(['EACCES', 'EPERM', 'ENOTDIR', 'EISDIR', 'ELOOP', 'ENAMETOOLONG', 'SQLITE_CORRUPT', 'SQLITE_NOTADB', 'SQLITE_CANTOPEN']);

/**
 * node:sqlite throws `code: 'ERR_SQLITE_ERROR'` with the SQLite result code as a number in
 * `errcode` (extended codes carry the primary one in the low byte): SQLITE_CANTOPEN 14,
 * SQLITE_CORRUPT 11, SQLITE_NOTADB 26.
 */
const SQLITE_RESULT_NAMES: Record<number, string> = { 11: 'SQLITE_CORRUPT', 14: 'SQLITE_CANTOPEN', 26: 'SQLITE_NOTADB' };

/** Is any error in the cause chain a permanent one (else: transient, or a bug)? */
function isPermanent(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const { code, errcode } = e as { code?: unknown; errcode?: unknown };
    if (typeof code === 'string' && PERMANENT_CODES.has(code)) return true;
    if (typeof errcode === 'number' && PERMANENT_CODES.has(SQLITE_RESULT_NAMES[errcode & 0xff] ?? '')) return true;
  }
  return false;
}

function sanitize(s: string): string {
  return s.replace(/[^\x21-\x7e]/g, '?').slice(0, 16);
}

// Compile-time check: every do_* method names a real state and verb.
const noStrayHandlers: NoStrayHandlers<Pop3Session, State, Verb> = true;
void noStrayHandlers;
