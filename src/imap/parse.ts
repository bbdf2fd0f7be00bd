// The IMAP4rev1 command parser (RFC 3501 9, with the extensions hearth speaks): an
// AssembledCommand in, a typed ImapCommand or a ParseError value out. Pure: no sockets, no
// timers, never throws on any input. The session answers a ParseError with
// `${tag ?? '*'} BAD ${text}`.
import type { AssembledCommand } from './assembler.ts';
import { Cursor, ParseFail, parseFlag, parseFlagList } from './tokens.ts';
import type { SequenceSet } from './sequence.ts';
import { parseFetchArgs } from './fetch-parse.ts';
import type { FetchArgs } from './fetch-parse.ts';
import { parseSearchArgs } from './search-parse.ts';
import type { SearchArgs } from './search-parse.ts';

export type { AssembledCommand } from './assembler.ts';
export type { FetchArgs, FetchAttribute, FetchSection, FetchSimpleName, SectionText } from './fetch-parse.ts';
export type { SearchArgs, SearchKey, SearchReturnOption } from './search-parse.ts';
export type { SequenceSet, SeqRange, SeqNumber } from './sequence.ts';

export interface ParseError {
  readonly ok: false;
  /** Absent when the tag itself was missing or bad: answer `* BAD`. */
  readonly tag?: string;
  /** The verb, when it was recognised. */
  readonly verb?: string;
  readonly text: string;
}

type Empty = Record<string, never>;

export interface LoginArgs {
  readonly user: string;
  readonly password: string;
}
export interface AuthenticateArgs {
  /** Upper-case, e.g. PLAIN. */
  readonly mechanism: string;
  /** RFC 4959 SASL-IR: decoded bytes; `=` gives an empty buffer. Absent: none sent. */
  readonly initialResponse?: Buffer;
}
export interface SelectArgs {
  readonly mailbox: string;
  /** RFC 7162 3.1.8 SELECT/EXAMINE (CONDSTORE). */
  readonly condstore: boolean;
}
export interface MailboxArgs {
  readonly mailbox: string;
}
export interface RenameArgs {
  readonly from: string;
  readonly to: string;
}
export type ListSelectionOption = 'SUBSCRIBED' | 'REMOTE' | 'RECURSIVEMATCH' | 'SPECIAL-USE';
export type StatusItem = 'MESSAGES' | 'RECENT' | 'UIDNEXT' | 'UIDVALIDITY' | 'UNSEEN' | 'HIGHESTMODSEQ' | 'SIZE' | 'DELETED';
export interface ListArgs {
  /** Decoded; not INBOX-normalised (the reference is a prefix, RFC 3501 6.3.8). */
  readonly reference: string;
  /** One or more (RFC 5258 multiple patterns); decoded, wildcards `%` and `*` kept. */
  readonly patterns: readonly string[];
  /** RFC 5258 LIST-EXTENDED selection options. */
  readonly selection: readonly ListSelectionOption[];
  /** RFC 5258 RETURN options: CHILDREN, SUBSCRIBED, SPECIAL-USE (RFC 6154). */
  readonly returnOptions: readonly ('SUBSCRIBED' | 'CHILDREN' | 'SPECIAL-USE')[];
  /** RFC 5819 RETURN (STATUS (...)). */
  readonly returnStatus?: readonly StatusItem[];
  /** The command was extended syntax (selection options, pattern list or RETURN). */
  readonly extended: boolean;
}
export interface LsubArgs {
  readonly reference: string;
  readonly pattern: string;
}
export interface StatusArgs {
  readonly mailbox: string;
  readonly items: readonly StatusItem[];
}
export interface AppendArgs {
  readonly mailbox: string;
  readonly flags: readonly string[];
  /** INTERNALDATE as ms since the epoch, when given. */
  readonly date?: number;
  readonly message: Buffer;
}
export interface ExpungeArgs {
  /** UID EXPUNGE (RFC 4315 2.1) only. */
  readonly set?: SequenceSet;
}
export interface StoreArgs {
  readonly set: SequenceSet;
  /** FLAGS replaces, +FLAGS adds, -FLAGS removes. */
  readonly action: 'set' | 'add' | 'remove';
  /** `.SILENT`: no untagged FETCH for this client (RFC 3501 6.4.6). */
  readonly silent: boolean;
  readonly flags: readonly string[];
  /** RFC 7162 3.1.3 UNCHANGEDSINCE. */
  readonly unchangedSince?: number;
}
export interface CopyArgs {
  readonly set: SequenceSet;
  readonly mailbox: string;
}
export interface EnableArgs {
  /** Upper-case capability names. */
  readonly capabilities: readonly string[];
}
export interface IdArgs {
  /** null for `ID NIL`; field names as sent (RFC 2971 says compare case-insensitively). */
  readonly params: ReadonlyArray<readonly [string, string | null]> | null;
}

interface Shape<V extends string, A> {
  readonly ok: true;
  readonly tag: string;
  readonly verb: V;
  /** A UID command (UID FETCH, UID SEARCH, …): sets are UIDs, not sequence numbers. */
  readonly uid: boolean;
  /** LOGIN and AUTHENTICATE: never log the arguments. */
  readonly sensitive: boolean;
  readonly args: A;
}

export type ImapCommand =
  | Shape<'CAPABILITY' | 'NOOP' | 'LOGOUT' | 'STARTTLS' | 'NAMESPACE' | 'CHECK' | 'CLOSE' | 'UNSELECT' | 'IDLE', Empty>
  | Shape<'LOGIN', LoginArgs>
  | Shape<'AUTHENTICATE', AuthenticateArgs>
  | Shape<'ENABLE', EnableArgs>
  | Shape<'ID', IdArgs>
  | Shape<'SELECT' | 'EXAMINE', SelectArgs>
  | Shape<'CREATE' | 'DELETE' | 'SUBSCRIBE' | 'UNSUBSCRIBE', MailboxArgs>
  | Shape<'RENAME', RenameArgs>
  | Shape<'LIST', ListArgs>
  | Shape<'LSUB', LsubArgs>
  | Shape<'STATUS', StatusArgs>
  | Shape<'APPEND', AppendArgs>
  | Shape<'EXPUNGE', ExpungeArgs>
  | Shape<'SEARCH', SearchArgs>
  | Shape<'FETCH', FetchArgs>
  | Shape<'STORE', StoreArgs>
  | Shape<'COPY' | 'MOVE', CopyArgs>;

export type ImapVerb = ImapCommand['verb'];

/** The command type for one verb, e.g. `CommandOf<'FETCH'>` (also for verbs sharing a shape). */
export type CommandOf<V extends ImapVerb> = ImapCommand extends infer C ? (C extends { verb: infer W } ? (V extends W ? C & { verb: V } : never) : never) : never;

/** Every verb the parser knows, for typing the session's handler table. */
export const IMAP_VERBS = [
  'CAPABILITY', 'NOOP', 'LOGOUT', 'STARTTLS', 'LOGIN', 'AUTHENTICATE', 'ENABLE', 'ID', 'NAMESPACE',
  'SELECT', 'EXAMINE', 'CREATE', 'DELETE', 'RENAME', 'SUBSCRIBE', 'UNSUBSCRIBE', 'LIST', 'LSUB', 'STATUS',
  'APPEND', 'CHECK', 'CLOSE', 'UNSELECT', 'EXPUNGE', 'SEARCH', 'FETCH', 'STORE', 'COPY', 'MOVE', 'IDLE',
] as const satisfies readonly ImapVerb[];

/** RFC 3501 6.4.8: the verbs that take a UID prefix (MOVE: RFC 6851; EXPUNGE: RFC 4315). */
const UID_VERBS = new Set<string>(['FETCH', 'STORE', 'COPY', 'MOVE', 'SEARCH', 'EXPUNGE']);
const KNOWN = new Set<string>(IMAP_VERBS);

export interface ParseOptions {
  /** UTF8=ACCEPT is enabled (RFC 6855): mailbox names are UTF-8, not modified UTF-7. */
  utf8?: boolean;
}

const TAG_CHAR = /^[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c\x7e]+$/; // ASTRING-CHAR minus "+"
const MAX_TAG = 64;

export function parseCommand(input: AssembledCommand, options: ParseOptions = {}): ImapCommand | ParseError {
  const cur = new Cursor(input, { utf8: options.utf8 ?? false });
  // RFC 3501 9: command = tag SP (command-any / command-auth / command-nonauth / command-select) CRLF
  const first = input.lines[0] ?? Buffer.alloc(0);
  const sp = first.indexOf(0x20);
  const tag = (sp < 0 ? first : first.subarray(0, sp)).toString('latin1');
  if (tag.length === 0 || tag.length > MAX_TAG || !TAG_CHAR.test(tag)) {
    return { ok: false, text: tag.length === 0 ? 'missing tag' : 'bad tag' };
  }
  if (sp < 0) return { ok: false, tag, text: 'missing command' };
  cur.pos = sp + 1;
  let uid = false;
  let verb = '';
  try {
    verb = cur.atomOrEmpty().toUpperCase();
    if (verb === 'UID') {
      uid = true;
      cur.sp();
      verb = cur.atomOrEmpty().toUpperCase();
      if (!UID_VERBS.has(verb)) return { ok: false, tag, text: verb ? `UID ${verb}: not a UID command` : 'UID: expected a command' };
    }
    if (!KNOWN.has(verb)) {
      const shown = verb.length > 20 ? `${verb.slice(0, 20)}…` : verb;
      return { ok: false, tag, text: verb ? `unknown command ${shown.replace(/[^\x21-\x7e]/g, '?')}` : 'missing command' };
    }
    cur.context = uid ? `UID ${verb}` : verb;
    if (verb === 'EXPUNGE' && !uid) {
      cur.end();
      return command(tag, 'EXPUNGE', false, {});
    }
    return parseArgs(cur, tag, verb as ImapVerb, uid);
  } catch (err) {
    if (err instanceof ParseFail) {
      // The text goes on the wire after BAD: one line of printable ASCII.
      const text = err.text.replace(/[^\x20-\x7e]/g, '?');
      return verb && KNOWN.has(verb) ? { ok: false, tag, verb, text } : { ok: false, tag, text };
    }
    throw err;
  }
}

function command<V extends ImapVerb>(tag: string, verb: V, uid: boolean, args: CommandOf<V>['args'], sensitive = false): ImapCommand {
  return { ok: true, tag, verb, uid, sensitive, args } as ImapCommand;
}

function parseArgs(cur: Cursor, tag: string, verb: ImapVerb, uid: boolean): ImapCommand {
  switch (verb) {
    case 'CAPABILITY':
    case 'NOOP':
    case 'LOGOUT':
    case 'STARTTLS':
    case 'NAMESPACE':
    case 'CHECK':
    case 'CLOSE':
    case 'UNSELECT':
    case 'IDLE':
      cur.end();
      return command(tag, verb, false, {});
    case 'LOGIN': {
      cur.sp();
      const user = cur.astring('a user name');
      cur.sp();
      const password = cur.astring('a password');
      cur.end();
      return command(tag, 'LOGIN', false, { user, password }, true);
    }
    case 'AUTHENTICATE':
      return command(tag, 'AUTHENTICATE', false, parseAuthenticate(cur), true);
    case 'ENABLE': {
      const capabilities: string[] = [];
      do {
        cur.sp();
        capabilities.push(cur.atom('a capability').toUpperCase());
        if (capabilities.length > 100) cur.fail('too many capabilities');
      } while (!cur.atEnd());
      return command(tag, 'ENABLE', false, { capabilities });
    }
    case 'ID':
      return command(tag, 'ID', false, parseId(cur));
    case 'SELECT':
    case 'EXAMINE': {
      cur.sp();
      const mailbox = cur.mailbox();
      let condstore = false;
      if (cur.maybeSp()) {
        // RFC 4466 select-params; only CONDSTORE is understood (QRESYNC is not offered).
        cur.list(
          () => {
            if (cur.takeWord('CONDSTORE')) condstore = true;
            else cur.expected('CONDSTORE');
          },
          false,
          'select parameters',
        );
      }
      cur.end();
      return command(tag, verb, false, { mailbox, condstore });
    }
    case 'CREATE':
    case 'DELETE':
    case 'SUBSCRIBE':
    case 'UNSUBSCRIBE': {
      cur.sp();
      const mailbox = cur.mailbox();
      // RFC 6154 CREATE (USE (...)) is not supported: anything after the name is an error.
      cur.end();
      return command(tag, verb, false, { mailbox });
    }
    case 'RENAME': {
      cur.sp();
      const from = cur.mailbox();
      cur.sp();
      const to = cur.mailbox();
      cur.end();
      return command(tag, 'RENAME', false, { from, to });
    }
    case 'LIST':
      return command(tag, 'LIST', false, parseList(cur));
    case 'LSUB': {
      cur.sp();
      const reference = cur.listMailbox();
      cur.sp();
      const pattern = cur.listMailbox();
      cur.end();
      return command(tag, 'LSUB', false, { reference, pattern });
    }
    case 'STATUS': {
      cur.sp();
      const mailbox = cur.mailbox();
      cur.sp();
      const items = cur.list(() => statusItem(cur), false, 'status items');
      cur.end();
      return command(tag, 'STATUS', false, { mailbox, items });
    }
    case 'APPEND':
      return command(tag, 'APPEND', false, parseAppend(cur));
    case 'EXPUNGE': {
      // Only UID EXPUNGE reaches here.
      cur.sp();
      const set = cur.sequenceSet();
      cur.end();
      return command(tag, 'EXPUNGE', true, { set });
    }
    case 'SEARCH':
      return command(tag, 'SEARCH', uid, parseSearchArgs(cur));
    case 'FETCH':
      return command(tag, 'FETCH', uid, parseFetchArgs(cur, uid));
    case 'STORE':
      return command(tag, 'STORE', uid, parseStore(cur));
    case 'COPY':
    case 'MOVE': {
      cur.sp();
      const set = cur.sequenceSet();
      cur.sp();
      const mailbox = cur.mailbox();
      cur.end();
      return command(tag, verb, uid, { set, mailbox });
    }
  }
}

function parseAuthenticate(cur: Cursor): AuthenticateArgs {
  cur.sp();
  const mechanism = cur.atom('a SASL mechanism').toUpperCase();
  if (!cur.maybeSp()) {
    cur.end();
    return { mechanism };
  }
  // RFC 4959: initial-response = base64 / "="
  const start = cur.pos;
  const text = cur.line.subarray(cur.pos).toString('latin1');
  cur.pos = cur.line.length;
  cur.end();
  if (text === '=') return { mechanism, initialResponse: Buffer.alloc(0) };
  if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(text) || text === '') {
    cur.pos = start;
    cur.expected('a base64 initial response');
  }
  return { mechanism, initialResponse: Buffer.from(text, 'base64') };
}

function parseId(cur: Cursor): IdArgs {
  cur.sp();
  if (cur.takeWord('NIL')) {
    cur.end();
    return { params: null };
  }
  // RFC 2971 3.3: at most 30 field/value pairs.
  const params: Array<[string, string | null]> = [];
  cur.expect('(', '"(" or NIL');
  if (!cur.take(')')) {
    for (;;) {
      const key = cur.string('a field name');
      cur.sp();
      params.push([key, cur.nstring('a value or NIL')]);
      if (params.length > 30) cur.fail('more than 30 fields');
      if (cur.take(')')) break;
      cur.sp();
    }
  }
  cur.end();
  return { params };
}

const STATUS_ITEMS = new Set<string>(['MESSAGES', 'RECENT', 'UIDNEXT', 'UIDVALIDITY', 'UNSEEN', 'HIGHESTMODSEQ', 'SIZE', 'DELETED']);

function statusItem(cur: Cursor): StatusItem {
  const start = cur.pos;
  const item = cur.atom('a status item').toUpperCase();
  if (!STATUS_ITEMS.has(item)) {
    cur.pos = start;
    cur.expected('a status item (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE DELETED)');
  }
  return item as StatusItem;
}

const SELECTION = new Set<string>(['SUBSCRIBED', 'REMOTE', 'RECURSIVEMATCH', 'SPECIAL-USE']);

function parseList(cur: Cursor): ListArgs {
  // RFC 5258 3: list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
  cur.sp();
  let extended = false;
  let selection: ListSelectionOption[] = [];
  if (cur.isListNext()) {
    extended = true;
    selection = cur.list(
      () => {
        const start = cur.pos;
        const opt = cur.atom('a selection option').toUpperCase();
        if (!SELECTION.has(opt)) {
          cur.pos = start;
          cur.expected('SUBSCRIBED, REMOTE, RECURSIVEMATCH or SPECIAL-USE');
        }
        return opt as ListSelectionOption;
      },
      true,
      'list selection options',
    );
    cur.sp();
  }
  const reference = cur.listMailbox();
  cur.sp();
  let patterns: string[];
  if (cur.isListNext()) {
    extended = true;
    patterns = cur.list(() => cur.listMailbox(), false, 'a pattern list');
  } else {
    patterns = [cur.listMailbox()];
  }
  const returnOptions: Array<'SUBSCRIBED' | 'CHILDREN' | 'SPECIAL-USE'> = [];
  let returnStatus: StatusItem[] | undefined;
  if (cur.maybeSp()) {
    if (!cur.takeWord('RETURN')) cur.expected('RETURN');
    extended = true;
    cur.sp();
    cur.list(
      () => {
        const start = cur.pos;
        const opt = cur.atom('a return option').toUpperCase();
        if (opt === 'SUBSCRIBED' || opt === 'CHILDREN' || opt === 'SPECIAL-USE') {
          returnOptions.push(opt);
        } else if (opt === 'STATUS') {
          cur.sp();
          returnStatus = cur.list(() => statusItem(cur), false, 'status items');
        } else {
          cur.pos = start;
          cur.expected('SUBSCRIBED, CHILDREN, SPECIAL-USE or STATUS');
        }
      },
      true,
      'list return options',
    );
  }
  cur.end();
  // RFC 5258 3.1: RECURSIVEMATCH alone is an error.
  if (selection.includes('RECURSIVEMATCH') && selection.length === 1) cur.fail('RECURSIVEMATCH needs another selection option');
  const out: { -readonly [K in keyof ListArgs]: ListArgs[K] } = { reference, patterns, selection, returnOptions, extended };
  if (returnStatus) out.returnStatus = returnStatus;
  return out;
}

const MONTHS = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'];

/** RFC 3501 9: date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE */
export function parseDateTime(text: string): number | null {
  const m = /^([ 0-9]?[0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})$/.exec(text);
  if (!m) return null;
  const month = MONTHS.indexOf(m[2].toUpperCase());
  const day = Number(m[1].trim());
  const year = Number(m[3]);
  const [hh, mm, ss, zh, zm] = [m[4], m[5], m[6], m[8], m[9]].map(Number);
  if (month < 0 || day < 1 || day > new Date(Date.UTC(year, month + 1, 0)).getUTCDate()) return null;
  if (hh > 23 || mm > 59 || ss > 60 || zm > 59) return null;
  const offset = (m[7] === '-' ? -1 : 1) * (zh * 60 + zm);
  return Date.UTC(year, month, day, hh, mm, ss) - offset * 60_000;
}

function parseAppend(cur: Cursor): AppendArgs {
  // RFC 3501 6.3.11: APPEND mailbox [SP flag-list] [SP date-time] SP literal
  cur.sp();
  const mailbox = cur.mailbox();
  cur.sp();
  let flags: string[] = [];
  if (cur.isListNext()) {
    flags = parseFlagList(cur);
    cur.sp();
  }
  let date: number | undefined;
  if (cur.peek() === 0x22) {
    const start = cur.pos;
    const parsed = parseDateTime(cur.string('a date-time'));
    if (parsed === null) {
      cur.pos = start;
      cur.expected('a date-time like "17-Jul-1996 02:44:25 -0700"');
    }
    date = parsed;
    cur.sp();
  }
  if (cur.peek() === 0x7e) cur.fail('literal8 (BINARY) is not supported');
  if (!cur.isLiteralNext()) cur.expected('the message as a literal');
  const message = cur.literal();
  // MULTIAPPEND (RFC 3502) is not offered: exactly one message.
  cur.end();
  return date === undefined ? { mailbox, flags, message } : { mailbox, flags, date, message };
}

function parseStore(cur: Cursor): StoreArgs {
  // RFC 3501 9: store = "STORE" SP sequence-set SP store-att-flags; RFC 7162 adds (UNCHANGEDSINCE n)
  cur.sp();
  const set = cur.sequenceSet();
  cur.sp();
  let unchangedSince: number | undefined;
  if (cur.isListNext()) {
    cur.list(
      () => {
        if (!cur.takeWord('UNCHANGEDSINCE')) cur.expected('UNCHANGEDSINCE');
        cur.sp();
        unchangedSince = cur.modSeq(true);
      },
      false,
      'store modifiers',
    );
    cur.sp();
  }
  const start = cur.pos;
  const word = cur.atomOrEmpty().toUpperCase();
  const m = /^([+-]?)FLAGS(\.SILENT)?$/.exec(word);
  if (!m) {
    cur.pos = start;
    cur.expected('FLAGS, +FLAGS or -FLAGS');
  }
  cur.sp();
  let flags: string[];
  if (cur.isListNext()) {
    flags = parseFlagList(cur);
  } else {
    flags = [parseFlag(cur)];
    while (cur.maybeSp()) flags.push(parseFlag(cur));
  }
  cur.end();
  const action = m[1] === '+' ? 'add' : m[1] === '-' ? 'remove' : 'set';
  const out: { -readonly [K in keyof StoreArgs]: StoreArgs[K] } = { set, action, silent: m[2] !== undefined, flags };
  if (unchangedSince !== undefined) out.unchangedSince = unchangedSince;
  return out;
}

/** RFC 2177: the line that ends IDLE (read as a bare line, not through the assembler). */
export function isDone(line: Buffer | string): boolean {
  const s = typeof line === 'string' ? line : line.toString('latin1');
  return s.length === 4 && s.toUpperCase() === 'DONE';
}

/**
 * The command for a C: trace line, safe to log: literals shown as `{n}` with their size
 * only, and everything after the verb replaced for LOGIN and AUTHENTICATE.
 */
export function describeForLog(raw: AssembledCommand, maxChars = 200): string {
  const first = raw.lines[0]?.toString('latin1') ?? '';
  const words = first.split(' ', 3);
  const verb = (words[1] ?? '').toUpperCase();
  if (verb === 'LOGIN' || verb === 'AUTHENTICATE') {
    return `${words[0]} ${words[1]} ${verb === 'AUTHENTICATE' ? `${(words[2] ?? '').slice(0, 20)} ` : ''}[redacted]`;
  }
  let s = raw.lines.map((l) => l.toString('latin1')).join('<literal>');
  s = s.replace(/[^\x20-\x7e]/g, '?');
  return s.length > maxChars ? `${s.slice(0, maxChars)}…` : s;
}

export { decodeMailboxName, encodeMailboxName, normaliseInbox } from './mailbox-name.ts';
