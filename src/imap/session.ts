// One IMAP4rev1 connection (RFC 3501, with LITERAL+ RFC 7888, SASL-IR RFC 4959, ENABLE RFC 5161,
// ID RFC 2971, NAMESPACE RFC 2342, IDLE RFC 2177, UIDPLUS RFC 4315, MOVE RFC 6851, SPECIAL-USE
// RFC 6154, UNSELECT RFC 3691, CHILDREN RFC 3348, CONDSTORE RFC 7162) as an explicit state
// machine: NOT_AUTHENTICATED -> AUTHENTICATED <-> SELECTED -> LOGOUT. Framing (lines and
// literals) comes from LineConnection and CommandAssembler, parsing from parse.ts; each command
// is dispatched to do_${state}_${VERB}. UID commands keep their verb (FETCH, STORE, …) and carry
// `cmd.uid`, so `UID FETCH` runs do_SELECTED_FETCH with cmd.uid === true. IDLE is a sub-mode of
// AUTHENTICATED/SELECTED: lines go to the DONE check instead of the assembler, store changes are
// written at once, the folder is polled for outside changes, and the state's autologout timer
// keeps running (a client re-issues IDLE within 29 minutes, RFC 2177).
// Large commands live in commands/*.ts and are attached to the prototype at the bottom.
import { setTimeout as sleep } from 'node:timers/promises';
import { plaintextAllowed } from '../core/connection.ts';
import type { LineConnection } from '../core/connection.ts';
import { CommandPacer } from '../core/limits.ts';
import type { LineSessionOptions } from '../core/line-server.ts';
import { StateMachine } from '../core/state-machine.ts';
import type { NoStrayHandlers } from '../core/state-machine.ts';
import { StoreError } from '../store/names.ts';
import type { ChangeEvent, UserMailboxes } from '../store/mailboxes.ts';
import { indexFolderSoon } from '../store/user-search.ts';
import type { MailboxRef } from '../store/maildir.ts';
import { CommandAssembler } from './assembler.ts';
import { describeForLog, isDone, parseCommand } from './parse.ts';
import type { CommandOf, ImapCommand, ImapVerb } from './parse.ts';
import { encodeMailboxName } from './mailbox-name.ts';
import { quoteString } from './format.ts';
import { SelectedView } from './selected.ts';
import * as mailboxCommands from './commands/mailbox.ts';
import * as messageCommands from './commands/messages.ts';
import * as fetchCommands from './commands/fetch.ts';
import * as searchCommands from './commands/search.ts';
import type { SummarySource } from './commands/fetch.ts';

export const STATES = ['NOT_AUTHENTICATED', 'AUTHENTICATED', 'SELECTED', 'LOGOUT'] as const;
export type State = (typeof STATES)[number];
export type Verb = ImapVerb;

export type ImapBackend = {
  /** The mailbox of a user whose password is right, else null. */
  authenticate(username: string, password: string): Promise<MailboxRef | null>;
  open(box: MailboxRef): Promise<UserMailboxes>;
};

export type ImapSessionOptions = LineSessionOptions<ImapBackend> & {
  /** Login deadline from connect; autologout after this long without a command (RFC 3501 5.4: at least 30 min). */
  timeouts: { login: number; idle: number };
  /** Largest literal in commands other than APPEND. */
  maxLiteral?: number;
  /** Largest message APPEND takes (limits.message_size). */
  maxMessage: number;
  /** Bytes of lines and literals in one command, APPEND's message aside. */
  maxCommandBytes?: number;
  /** Unknown, malformed or misplaced commands before we say BYE. */
  maxBadCommands?: number;
  commandsPerSecond?: number;
  /** How often IDLE looks at the Maildir for changes made by other programs. */
  idlePollMs?: number;
  /** ENVELOPE, BODYSTRUCTURE and header summaries (shared by all sessions). */
  summaries?: SummarySource;
};

export type Cmd = ImapCommand;
type Reply = 'OK' | 'NO' | 'BAD';

/** Verbs only valid with a mailbox selected. */
const SELECTED_ONLY: readonly string[] = ['CHECK', 'CLOSE', 'UNSELECT', 'EXPUNGE', 'SEARCH', 'FETCH', 'STORE', 'COPY', 'MOVE'];
const PRE_AUTH_ONLY: readonly string[] = ['LOGIN', 'AUTHENTICATE', 'STARTTLS'];

export class ImapSession extends StateMachine<State> {
  readonly conn: LineConnection;
  readonly opts: ImapSessionOptions;
  /** The user's mailboxes once logged in. */
  mailboxes: UserMailboxes | undefined;
  /** The selected folder (state SELECTED). */
  view: SelectedView | undefined;
  /** RFC 7162 3.1: CONDSTORE enabled (ENABLE, SELECT (CONDSTORE), or a MODSEQ-using command). */
  condstore = false;
  username = '';
  readonly #asm: CommandAssembler;
  readonly #pacer: CommandPacer;
  #badCommands = 0;
  #tag: string | undefined;
  #saslTag: string | undefined;
  #idleTag: string | undefined;
  #idlePoll: NodeJS.Timeout | undefined;
  #idleWrites: Promise<void> = Promise.resolve();
  #loginDeadline: NodeJS.Timeout | undefined;
  readonly #onChange = (ev: ChangeEvent): void => this.#changed(ev);

  constructor(conn: LineConnection, opts: ImapSessionOptions) {
    super('NOT_AUTHENTICATED', opts.log, { NOT_AUTHENTICATED: opts.timeouts.login, AUTHENTICATED: opts.timeouts.idle, SELECTED: opts.timeouts.idle, LOGOUT: 0 });
    this.conn = conn;
    this.opts = opts;
    const maxMessage = opts.maxMessage;
    this.#asm = new CommandAssembler({
      maxLiteral: opts.maxLiteral ?? 64 * 1024,
      maxCommandBytes: opts.maxCommandBytes ?? 1024 * 1024,
      // Only APPEND may send a message-sized literal (as wildduck limits by command).
      maxLiteralFor: (verb) => (verb === 'APPEND' ? maxMessage : undefined),
    });
    this.#pacer = new CommandPacer(opts.commandsPerSecond ?? 1000);
    // A deadline, not an idle timer: NOOPs do not keep an unauthenticated connection alive.
    this.#loginDeadline = setTimeout(() => void this.#loginTimeout(), opts.timeouts.login);
  }

  greet(): Promise<void> {
    return this.write(`* OK [CAPABILITY ${this.capabilities().join(' ')}] ${this.opts.hostname} hearth IMAP4rev1 ready\r\n`);
  }

  // ---- plumbing ----------------------------------------------------------------------

  write(data: string | Buffer): Promise<void> {
    return this.conn.writer.write(data);
  }

  /** Untagged lines, in one write. */
  untagged(lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return Promise.resolve();
    return this.write(`${lines.join('\r\n')}\r\n`);
  }

  tagged(tag: string, reply: Reply, text: string): Promise<void> {
    return this.write(`${tag} ${reply} ${text}\r\n`);
  }

  /** A BAD that counts towards the abuse limit; past it, BYE and close. */
  async bad(tag: string | undefined, text: string, counts = true): Promise<void> {
    if (counts) this.#badCommands += 1;
    if (this.#badCommands > (this.opts.maxBadCommands ?? 20)) {
      this.log.info('too many bad commands: closing');
      await this.write(`${tag ?? '*'} BAD ${text}\r\n`);
      await this.#hangUp('* BYE too many bad commands; closing the connection\r\n', 'too many bad commands');
      return;
    }
    await this.write(`${tag ?? '*'} BAD ${text}\r\n`);
  }

  /** The reply for a store error a user can cause (a bad name, a missing folder); rethrow the rest. */
  async storeError(tag: string, err: unknown, what: string): Promise<void> {
    if (!(err instanceof StoreError)) throw err;
    switch (err.code) {
      case 'STORE_NO_FOLDER':
        return this.tagged(tag, 'NO', `[NONEXISTENT] ${what}: no such mailbox`);
      case 'STORE_FOLDER_EXISTS':
        return this.tagged(tag, 'NO', `[ALREADYEXISTS] ${what}: mailbox already exists`);
      case 'STORE_BAD_NAME':
        return this.tagged(tag, 'NO', `[CANNOT] ${what}: ${printable(err.message)}`);
      case 'STORE_INBOX':
        return this.tagged(tag, 'NO', `[CANNOT] ${what}: not possible for INBOX`);
      case 'STORE_HAS_CHILDREN':
        return this.tagged(tag, 'NO', `[INUSE] ${what}: mailbox has children; delete them first`);
      case 'STORE_BAD_FLAG':
        return this.tagged(tag, 'BAD', `${what}: ${printable(err.message)}`);
      default:
        throw err;
    }
  }

  /**
   * Report store changes to the client (RFC 3501 7: untagged EXISTS / EXPUNGE / FETCH), as a
   * command's response allows: `allowExpunge` false during FETCH, STORE, SEARCH by sequence
   * numbers (RFC 3501 7.4.1).
   */
  async flushUpdates(allowExpunge: boolean): Promise<void> {
    const view = this.view;
    if (!view || !view.hasPending) return;
    await this.untagged(view.takeUpdates(allowExpunge, { condstore: this.condstore }));
  }

  /** RFC 7162 3.1: the first CONDSTORE-using command enables it for the session. */
  enableCondstore(): void {
    this.condstore = true;
  }

  capabilities(): string[] {
    const caps = ['IMAP4rev1', 'LITERAL+', 'SASL-IR', 'ENABLE', 'ID', 'NAMESPACE', 'IDLE', 'UIDPLUS', 'MOVE', 'SPECIAL-USE', 'UNSELECT', 'CHILDREN', 'CONDSTORE'];
    if (this.state === 'NOT_AUTHENTICATED') {
      if (this.opts.tlsContext && !this.conn.secure) caps.push('STARTTLS');
      // RFC 3501 6.2.3, RFC 4616: no password mechanisms in the clear where config forbids it.
      if (this.#plaintextAllowed) caps.push('AUTH=PLAIN');
      else caps.push('LOGINDISABLED');
    }
    return caps;
  }

  get #plaintextAllowed(): boolean {
    return plaintextAllowed(this.conn, this.opts.plaintext);
  }

  // ---- input ---------------------------------------------------------------------------

  /** One line from the client: part of a command, a SASL response, or IDLE's DONE. */
  async onLine(line: Buffer): Promise<void> {
    if (this.state === 'LOGOUT') return;
    if (this.#idleTag !== undefined) return this.#idleLine(line);
    if (this.#saslTag !== undefined) return this.#saslLine(line);
    const r = this.#asm.push(line);
    if (r.kind === 'need-literal') {
      // Bytes flow to the assembler while line delivery waits on this promise.
      const done = this.conn.reader.readLiteral(r.size, (chunk) => this.#asm.addLiteral(chunk));
      if (!r.nonSync) await this.write('+ Ready for literal\r\n');
      try {
        await done;
      } catch {
        this.#asm.reset(); // the peer went away mid-literal
      }
      return;
    }
    if (r.kind === 'error') {
      if (r.close) {
        // RFC 7888 4: the client is sending bytes we will not read; they must not become commands.
        this.log.info({ text: r.text }, 'oversized non-synchronizing literal: closing');
        await this.#hangUp(`* BYE ${r.text}\r\n`, 'oversized literal');
        return;
      }
      if (r.response === 'NO') {
        await this.tagged(r.tag ?? '*', 'NO', r.text);
        return;
      }
      await this.bad(r.tag, r.text);
      return;
    }
    const cmd = parseCommand(r.raw);
    if (this.log.isLevelEnabled('trace')) this.log.trace({ line: describeForLog(r.raw) }, 'C:');
    if (!cmd.ok) {
      await this.bad(cmd.tag, cmd.text);
      return;
    }
    const wait = this.#pacer.next();
    if (wait > 0) await this.withTimerPaused(() => sleep(wait));
    this.#tag = cmd.tag;
    await this.dispatch(cmd.verb, cmd);
    this.#tag = undefined;
  }

  async onOverflow(): Promise<void> {
    if (this.#idleTag !== undefined || this.#saslTag !== undefined) {
      await this.#endSubMode('BAD', 'line too long');
      return;
    }
    this.#asm.reset();
    await this.bad(undefined, 'line too long');
  }

  /** The connection went away. */
  onClosed(): void {
    this.stopTimer();
    this.#stopIdle();
    this.#clearLoginDeadline();
    this.#detach();
    if (this.state !== 'LOGOUT') this.transition('LOGOUT', 'connection closed');
    this.stopTimer();
  }

  /** Server shutdown. */
  async shutdown(): Promise<void> {
    if (this.state === 'LOGOUT') return;
    await this.#hangUp('* BYE server shutting down; please reconnect later\r\n', 'server shutdown');
  }

  async onTimeout(): Promise<void> {
    this.log.info({ state: this.state }, 'autologout');
    await this.#hangUp('* BYE autologout; idle for too long\r\n', 'idle timeout');
  }

  #clearLoginDeadline(): void {
    clearTimeout(this.#loginDeadline);
    // A cleared Timeout still held here would stay on the heap for the whole session.
    this.#loginDeadline = undefined;
  }

  async #loginTimeout(): Promise<void> {
    if (this.state !== 'NOT_AUTHENTICATED') return;
    this.log.info('login deadline passed');
    await this.#hangUp('* BYE login took too long\r\n', 'login deadline');
  }

  async onHandlerError(): Promise<void> {
    await this.write(`${this.#tag ?? '*'} NO [SERVERBUG] internal error; please try again\r\n`);
  }

  async do_default(verb: string, cmd?: Cmd): Promise<void> {
    await this.bad(cmd?.tag, `${printable(verb)} is not valid here`);
  }

  async #hangUp(last: string, why: string): Promise<void> {
    this.#stopIdle();
    this.#clearLoginDeadline();
    this.#detach();
    if (this.state !== 'LOGOUT') this.transition('LOGOUT', why);
    this.stopTimer();
    await this.conn.close(last);
  }

  #detach(): void {
    this.mailboxes?.off('change', this.#onChange);
    this.view = undefined;
  }

  #changed(ev: ChangeEvent): void {
    const view = this.view;
    if (!view || !view.note(ev)) return;
    // In IDLE the client waits for exactly this (RFC 2177): write it now, in order.
    if (this.#idleTag !== undefined) this.#idleWrites = this.#idleWrites.then(() => this.flushUpdates(true)).catch(() => undefined);
  }

  // ---- any state -----------------------------------------------------------------------

  async #capability(cmd: Cmd): Promise<void> {
    await this.untagged([`* CAPABILITY ${this.capabilities().join(' ')}`]);
    await this.tagged(cmd.tag, 'OK', 'CAPABILITY completed');
  }

  async #noop(cmd: Cmd): Promise<void> {
    // RFC 3501 6.1.2: the way to poll; pick up changes other programs made to the Maildir too.
    if (this.view && this.mailboxes) {
      try {
        await this.withTimerPaused(() => this.mailboxes!.sync(this.view!.folder));
      } catch (err) {
        if (!(err instanceof StoreError && err.code === 'STORE_NO_FOLDER')) throw err;
      }
    }
    await this.flushUpdates(true);
    await this.tagged(cmd.tag, 'OK', `${cmd.verb} completed`);
  }

  async #logout(cmd: Cmd): Promise<void> {
    await this.#hangUp(`* BYE ${this.opts.hostname} logging out\r\n${cmd.tag} OK LOGOUT completed\r\n`, 'LOGOUT');
  }

  async #id(cmd: CommandOf<'ID'>): Promise<void> {
    if (cmd.args.params) this.log.debug({ id: Object.fromEntries(cmd.args.params.slice(0, 10)) }, 'client ID');
    await this.untagged(['* ID ("name" "hearth" "vendor" "hearth")']);
    await this.tagged(cmd.tag, 'OK', 'ID completed');
  }

  do_NOT_AUTHENTICATED_CAPABILITY(cmd: Cmd): Promise<void> {
    return this.#capability(cmd);
  }
  do_AUTHENTICATED_CAPABILITY(cmd: Cmd): Promise<void> {
    return this.#capability(cmd);
  }
  do_SELECTED_CAPABILITY(cmd: Cmd): Promise<void> {
    return this.#capability(cmd);
  }
  do_NOT_AUTHENTICATED_NOOP(cmd: Cmd): Promise<void> {
    return this.#noop(cmd);
  }
  do_AUTHENTICATED_NOOP(cmd: Cmd): Promise<void> {
    return this.#noop(cmd);
  }
  do_SELECTED_NOOP(cmd: Cmd): Promise<void> {
    return this.#noop(cmd);
  }
  /** RFC 3501 6.4.1: CHECK is a NOOP for us (every change is already durable). */
  do_SELECTED_CHECK(cmd: Cmd): Promise<void> {
    return this.#noop(cmd);
  }
  do_NOT_AUTHENTICATED_LOGOUT(cmd: Cmd): Promise<void> {
    return this.#logout(cmd);
  }
  do_AUTHENTICATED_LOGOUT(cmd: Cmd): Promise<void> {
    return this.#logout(cmd);
  }
  do_SELECTED_LOGOUT(cmd: Cmd): Promise<void> {
    return this.#logout(cmd);
  }
  do_NOT_AUTHENTICATED_ID(cmd: CommandOf<'ID'>): Promise<void> {
    return this.#id(cmd);
  }
  do_AUTHENTICATED_ID(cmd: CommandOf<'ID'>): Promise<void> {
    return this.#id(cmd);
  }
  do_SELECTED_ID(cmd: CommandOf<'ID'>): Promise<void> {
    return this.#id(cmd);
  }

  // ---- NOT_AUTHENTICATED -------------------------------------------------------------

  async do_NOT_AUTHENTICATED_STARTTLS(cmd: Cmd): Promise<void> {
    if (!this.opts.tlsContext || this.conn.secure) return this.tagged(cmd.tag, 'BAD', this.conn.secure ? 'TLS is already active' : 'STARTTLS is not offered here');
    await this.tagged(cmd.tag, 'OK', 'begin TLS negotiation now');
    // RFC 3501 6.2.1: anything pipelined after STARTTLS is discarded (startTls does it), and
    // so is any half-assembled command.
    this.#asm.reset();
    try {
      await this.conn.startTls(this.opts.tlsContext);
      this.rearm();
    } catch (err) {
      this.log.info({ err: (err as Error).message }, 'TLS handshake failed');
    }
  }

  async do_NOT_AUTHENTICATED_LOGIN(cmd: CommandOf<'LOGIN'>): Promise<void> {
    if (!this.#plaintextAllowed) return this.tagged(cmd.tag, 'NO', '[PRIVACYREQUIRED] LOGIN is disabled on an unencrypted connection; use STARTTLS or port 993');
    await this.#login(cmd.tag, cmd.args.user, cmd.args.password);
  }

  async do_NOT_AUTHENTICATED_AUTHENTICATE(cmd: CommandOf<'AUTHENTICATE'>): Promise<void> {
    if (cmd.args.mechanism !== 'PLAIN') return this.tagged(cmd.tag, 'NO', `[CANNOT] SASL mechanism ${printable(cmd.args.mechanism)} is not supported; use PLAIN`);
    if (!this.#plaintextAllowed) return this.tagged(cmd.tag, 'NO', '[PRIVACYREQUIRED] authentication is disabled on an unencrypted connection; use STARTTLS or port 993');
    if (cmd.args.initialResponse !== undefined) return this.#saslPlain(cmd.tag, cmd.args.initialResponse);
    this.#saslTag = cmd.tag;
    await this.write('+ \r\n');
  }

  async #saslLine(line: Buffer): Promise<void> {
    const tag = this.#saslTag!;
    this.#saslTag = undefined;
    this.rearm();
    const text = line.toString('latin1').trim();
    // RFC 3501 6.2.2: "*" cancels.
    if (text === '*') return this.tagged(tag, 'BAD', 'authentication cancelled');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return this.tagged(tag, 'BAD', 'malformed base64 in the SASL response');
    await this.#saslPlain(tag, Buffer.from(text, 'base64'));
  }

  async #saslPlain(tag: string, data: Buffer): Promise<void> {
    // RFC 4616: [authzid] NUL authcid NUL passwd
    const parts = data.toString('utf8').split('\0');
    if (parts.length !== 3 || !parts[1] || !parts[2]) return this.tagged(tag, 'BAD', 'malformed SASL PLAIN response');
    if (parts[0] && parts[0] !== parts[1]) return this.tagged(tag, 'NO', '[AUTHORIZATIONFAILED] logging in as another user is not supported');
    await this.#login(tag, parts[1], parts[2]);
  }

  async #login(tag: string, username: string, password: string): Promise<void> {
    const peer = this.conn.remoteAddress;
    const verdict = this.opts.limiter.check(peer, username);
    if (!verdict.allowed) {
      this.log.warn({ user: username, reason: verdict.reason }, 'login refused: locked out after repeated failures');
      return this.tagged(tag, 'NO', `[UNAVAILABLE] too many failed logins; try again in ${Math.ceil(verdict.retryAfterMs / 60_000)} minutes`);
    }
    const box = await this.withTimerPaused(() => this.opts.backend.authenticate(username, password));
    if (!box) {
      const delay = this.opts.limiter.failure(peer, username);
      this.log.info({ user: username, delayMs: delay }, 'login failed');
      await this.withTimerPaused(() => sleep(delay));
      return this.tagged(tag, 'NO', '[AUTHENTICATIONFAILED] invalid user name or password');
    }
    this.opts.limiter.success(peer);
    const mailboxes = await this.withTimerPaused(() => this.opts.backend.open(box));
    if (this.conn.closed) return;
    this.mailboxes = mailboxes;
    mailboxes.on('change', this.#onChange);
    this.username = `${box.user}@${box.domain}`;
    this.#clearLoginDeadline();
    this.log.info({ user: this.username }, 'logged in');
    this.transition('AUTHENTICATED', 'login');
    await this.tagged(tag, 'OK', `[CAPABILITY ${this.capabilities().join(' ')}] logged in`);
  }

  async do_NOT_AUTHENTICATED_default(verb: string, cmd: Cmd): Promise<void> {
    await this.bad(cmd.tag, `${verb} needs a login first`);
  }

  // ---- AUTHENTICATED and SELECTED ----------------------------------------------------

  async #enable(cmd: CommandOf<'ENABLE'>): Promise<void> {
    const enabled: string[] = [];
    for (const cap of cmd.args.capabilities) {
      if (cap === 'CONDSTORE' && !enabled.includes(cap)) {
        this.enableCondstore();
        enabled.push(cap);
      }
    }
    // RFC 5161 3.1: list only what this command newly enabled that we support.
    await this.untagged([`* ENABLED${enabled.map((c) => ` ${c}`).join('')}`]);
    await this.tagged(cmd.tag, 'OK', 'ENABLE completed');
  }

  do_AUTHENTICATED_ENABLE(cmd: CommandOf<'ENABLE'>): Promise<void> {
    return this.#enable(cmd);
  }
  do_SELECTED_ENABLE(cmd: CommandOf<'ENABLE'>): Promise<void> {
    return this.#enable(cmd);
  }

  async #namespace(cmd: Cmd): Promise<void> {
    await this.untagged(['* NAMESPACE (("" "/")) NIL NIL']);
    await this.tagged(cmd.tag, 'OK', 'NAMESPACE completed');
  }
  do_AUTHENTICATED_NAMESPACE(cmd: Cmd): Promise<void> {
    return this.#namespace(cmd);
  }
  do_SELECTED_NAMESPACE(cmd: Cmd): Promise<void> {
    return this.#namespace(cmd);
  }

  async #select(cmd: CommandOf<'SELECT' | 'EXAMINE'>): Promise<void> {
    const readOnly = cmd.verb === 'EXAMINE';
    // RFC 3501 6.3.1: a SELECT, even a failing one, first deselects the current mailbox.
    const wasSelected = this.state === 'SELECTED';
    this.view = undefined;
    if (cmd.args.condstore) this.enableCondstore();
    let state;
    try {
      state = await this.withTimerPaused(() => this.mailboxes!.syncShared(cmd.args.mailbox));
    } catch (err) {
      if (wasSelected) this.transition('AUTHENTICATED', `${cmd.verb} failed`);
      return this.storeError(cmd.tag, err, cmd.verb);
    }
    const folder = state === undefined ? cmd.args.mailbox : normalisedFolder(cmd.args.mailbox);
    const view = new SelectedView(this.mailboxes!, folder, state, readOnly);
    this.view = view;
    // A folder someone opens is one they may search: bring its full-text index up to date.
    indexFolderSoon(this.mailboxes!, folder);
    if (!wasSelected) this.transition('SELECTED', cmd.verb);
    const systemFlags = ['\\Answered', '\\Flagged', '\\Deleted', '\\Seen', '\\Draft'];
    const keywords = view.keywords();
    let firstUnseen = 0;
    const messages = view.messages;
    for (let i = 0; i < messages.length; i++) {
      if (!messages[i].flags.includes('\\Seen')) {
        firstUnseen = i + 1;
        break;
      }
    }
    const lines = [
      `* FLAGS (${[...systemFlags, ...keywords].join(' ')})`,
      `* OK [PERMANENTFLAGS (${readOnly ? '' : [...systemFlags, ...keywords, '\\*'].join(' ')})] ${readOnly ? 'read-only' : 'flags permitted'}`,
      `* ${view.exists} EXISTS`,
      `* ${view.recent.size} RECENT`,
    ];
    if (firstUnseen > 0) lines.push(`* OK [UNSEEN ${firstUnseen}] first unseen`);
    lines.push(`* OK [UIDVALIDITY ${view.uidValidity}] UIDs valid`, `* OK [UIDNEXT ${view.uidNext}] predicted next UID`, `* OK [HIGHESTMODSEQ ${view.highestModseq}] highest`);
    await this.untagged(lines);
    await this.tagged(cmd.tag, 'OK', `[${readOnly ? 'READ-ONLY' : 'READ-WRITE'}] ${cmd.verb} completed`);
  }

  do_AUTHENTICATED_SELECT(cmd: CommandOf<'SELECT'>): Promise<void> {
    return this.#select(cmd);
  }
  do_AUTHENTICATED_EXAMINE(cmd: CommandOf<'EXAMINE'>): Promise<void> {
    return this.#select(cmd);
  }
  do_SELECTED_SELECT(cmd: CommandOf<'SELECT'>): Promise<void> {
    return this.#select(cmd);
  }
  do_SELECTED_EXAMINE(cmd: CommandOf<'EXAMINE'>): Promise<void> {
    return this.#select(cmd);
  }

  /** RFC 3501 6.4.2: expunge (silently) unless read-only, then deselect. */
  async do_SELECTED_CLOSE(cmd: Cmd): Promise<void> {
    const view = this.view!;
    this.view = undefined;
    this.transition('AUTHENTICATED', 'CLOSE');
    if (!view.readOnly) {
      try {
        await this.withTimerPaused(() => this.mailboxes!.expunge(view.folder));
      } catch (err) {
        if (!(err instanceof StoreError && err.code === 'STORE_NO_FOLDER')) throw err;
      }
    }
    await this.tagged(cmd.tag, 'OK', 'CLOSE completed');
  }

  /** RFC 3691: deselect without expunging. */
  async do_SELECTED_UNSELECT(cmd: Cmd): Promise<void> {
    this.view = undefined;
    this.transition('AUTHENTICATED', 'UNSELECT');
    await this.tagged(cmd.tag, 'OK', 'UNSELECT completed');
  }

  // ---- IDLE (RFC 2177) -----------------------------------------------------------------

  async #idle(cmd: Cmd): Promise<void> {
    this.#idleTag = cmd.tag;
    await this.write('+ idling\r\n');
    await this.flushUpdates(true);
    const every = this.opts.idlePollMs ?? 30_000;
    // Mail from SMTP arrives as a change event at once (notifyDelivered); this poll finds what
    // other programs (mutt, Dovecot, a copy of files) did to the Maildir.
    this.#idlePoll = setInterval(() => void this.#idlePollOnce(), every);
    this.#idlePoll.unref();
  }

  async #idlePollOnce(): Promise<void> {
    const view = this.view;
    if (!view || !this.mailboxes || this.#idleTag === undefined) return;
    try {
      await this.mailboxes.sync(view.folder);
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'IDLE poll failed');
    }
  }

  async #idleLine(line: Buffer): Promise<void> {
    if (isDone(line)) {
      await this.#endSubMode('OK', 'IDLE terminated');
      return;
    }
    this.#badCommands += 1;
    await this.#endSubMode('BAD', 'expected DONE to end IDLE');
  }

  async #endSubMode(reply: Reply, text: string): Promise<void> {
    if (this.#saslTag !== undefined) {
      const tag = this.#saslTag;
      this.#saslTag = undefined;
      await this.tagged(tag, 'BAD', text);
      return;
    }
    const tag = this.#idleTag!;
    this.#stopIdle();
    await this.#idleWrites;
    await this.tagged(tag, reply, text);
  }

  #stopIdle(): void {
    clearInterval(this.#idlePoll);
    this.#idlePoll = undefined;
    this.#idleTag = undefined;
  }

  do_AUTHENTICATED_IDLE(cmd: Cmd): Promise<void> {
    return this.#idle(cmd);
  }
  do_SELECTED_IDLE(cmd: Cmd): Promise<void> {
    return this.#idle(cmd);
  }

  // ---- wrong state -------------------------------------------------------------------

  async do_AUTHENTICATED_default(verb: string, cmd: Cmd): Promise<void> {
    // A logged-in client in the wrong state is confused, not hostile: not counted as abuse.
    if (SELECTED_ONLY.includes(verb)) return this.bad(cmd.tag, `${verb} needs a selected mailbox; SELECT one first`, false);
    if (PRE_AUTH_ONLY.includes(verb)) return this.bad(cmd.tag, `${verb} is not allowed after login`, false);
    await this.bad(cmd.tag, `${printable(verb)} is not valid here`);
  }

  async do_SELECTED_default(verb: string, cmd: Cmd): Promise<void> {
    if (PRE_AUTH_ONLY.includes(verb)) return this.bad(cmd.tag, `${verb} is not allowed after login`, false);
    await this.bad(cmd.tag, `${printable(verb)} is not valid here`);
  }

  do_LOGOUT_default(): void {
    // The connection is closing: nothing more is answered.
  }

  /** The name a folder is shown under (mUTF-7 on the wire). */
  wireName(folder: string): string {
    return quoteString(encodeMailboxName(folder));
  }
}

function normalisedFolder(name: string): string {
  return name.toUpperCase() === 'INBOX' ? 'INBOX' : name;
}

export function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?').slice(0, 200);
}

// The command modules (wildduck-style): each exports do_${STATE}_${VERB} functions.
type Attached = typeof mailboxCommands & typeof messageCommands & typeof fetchCommands & typeof searchCommands;
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface ImapSession extends Attached {}
Object.assign(ImapSession.prototype, mailboxCommands, messageCommands, fetchCommands, searchCommands);

// Compile-time check: every do_* method names a real state and verb.
const noStrayHandlers: NoStrayHandlers<ImapSession, State, Verb> = true;
void noStrayHandlers;
