// Mailbox commands of the AUTHENTICATED state (also valid in SELECTED, RFC 3501 6.3): LIST
// (RFC 3501 6.3.8, LIST-EXTENDED selection/return options as far as SPECIAL-USE RFC 6154 and
// CHILDREN RFC 3348 need them), LSUB, STATUS, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE,
// APPEND (with UIDPLUS APPENDUID, RFC 4315). Hierarchy delimiter "/", names in modified UTF-7.
import type { FolderInfo } from '../../store/mailboxes.ts';
import { StoreError } from '../../store/names.ts';
import type { CommandOf } from '../parse.ts';
import type { ImapSession } from '../session.ts';

const DELIM = '/';

type Listed = { name: string; info?: FolderInfo };

/** LIST pattern to a RegExp: `*` any characters, `%` any but the delimiter (RFC 3501 6.3.8). */
function patternRegex(pattern: string, ignoreCase: boolean): RegExp {
  let src = '';
  for (const ch of pattern) {
    if (ch === '*') src += '.*';
    else if (ch === '%') src += '[^/]*';
    else src += ch.replace(/[\\^$.|?+()[\]{}]/g, '\\$&');
  }
  return new RegExp(`^${src}$`, ignoreCase ? 'iu' : 'u');
}

function matches(name: string, pattern: string): boolean {
  // RFC 3501 5.1: INBOX is case-insensitive, so "inbox" and "Inbox" patterns find it.
  return patternRegex(pattern, false).test(name) || (name === 'INBOX' && patternRegex(pattern, true).test(name));
}

/** Existing folders plus the superiors they imply (listed \Noselect when they do not exist). */
function universe(folders: FolderInfo[]): Listed[] {
  const byName = new Map<string, Listed>();
  for (const info of folders) byName.set(info.name, { name: info.name, info });
  for (const info of folders) {
    const parts = info.name.split(DELIM);
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join(DELIM);
      if (!byName.has(parent)) byName.set(parent, { name: parent });
    }
  }
  return [...byName.values()].sort((a, b) => (a.name === 'INBOX' ? -1 : b.name === 'INBOX' ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export async function do_AUTHENTICATED_LIST(this: ImapSession, cmd: CommandOf<'LIST'>): Promise<void> {
  const { reference, patterns, selection, returnOptions } = cmd.args;
  if (cmd.args.returnStatus) return this.tagged(cmd.tag, 'BAD', 'LIST RETURN (STATUS) is not supported');
  if (patterns.length === 1 && patterns[0] === '') {
    // RFC 3501 6.3.8: the hierarchy delimiter and root of the reference.
    await this.untagged([`* LIST (\\Noselect) "${DELIM}" ""`]);
    return this.tagged(cmd.tag, 'OK', 'LIST completed');
  }
  const folders = await this.withTimerPaused(() => this.mailboxes!.listFolders());
  const all = universe(folders);
  const onlySubscribed = selection.includes('SUBSCRIBED');
  const onlySpecial = selection.includes('SPECIAL-USE');
  const showSubscribed = onlySubscribed || returnOptions.includes('SUBSCRIBED');
  const lines: string[] = [];
  for (const l of all) {
    const full = patterns.map((p) => reference + p);
    if (!full.some((p) => matches(l.name, p))) continue;
    if (onlySubscribed && !l.info?.subscribed) continue;
    if (onlySpecial && !l.info?.specialUse) continue;
    const attrs: string[] = [];
    if (!l.info) attrs.push('\\Noselect');
    const prefix = l.name + DELIM;
    attrs.push(all.some((o) => o.name.startsWith(prefix)) ? '\\HasChildren' : '\\HasNoChildren');
    if (showSubscribed && l.info?.subscribed) attrs.push('\\Subscribed');
    if (l.info?.specialUse) attrs.push(l.info.specialUse);
    lines.push(`* LIST (${attrs.join(' ')}) "${DELIM}" ${this.wireName(l.name)}`);
  }
  await this.untagged(lines);
  await this.tagged(cmd.tag, 'OK', 'LIST completed');
}
export const do_SELECTED_LIST = do_AUTHENTICATED_LIST;

export async function do_AUTHENTICATED_LSUB(this: ImapSession, cmd: CommandOf<'LSUB'>): Promise<void> {
  // The store lists subscriptions of existing folders only (UserMailboxes.listFolders).
  const folders = await this.withTimerPaused(() => this.mailboxes!.listFolders());
  const pattern = cmd.args.reference + cmd.args.pattern;
  const lines: string[] = [];
  for (const f of folders) {
    if (!f.subscribed || !matches(f.name, pattern)) continue;
    lines.push(`* LSUB () "${DELIM}" ${this.wireName(f.name)}`);
  }
  await this.untagged(lines);
  await this.tagged(cmd.tag, 'OK', 'LSUB completed');
}
export const do_SELECTED_LSUB = do_AUTHENTICATED_LSUB;

export async function do_AUTHENTICATED_STATUS(this: ImapSession, cmd: CommandOf<'STATUS'>): Promise<void> {
  const unsupported = cmd.args.items.find((i) => i === 'SIZE' || i === 'DELETED');
  if (unsupported) return this.tagged(cmd.tag, 'BAD', `STATUS ${unsupported} is not supported`);
  let st;
  try {
    st = await this.withTimerPaused(() => this.mailboxes!.folderStatus(cmd.args.mailbox));
  } catch (err) {
    return this.storeError(cmd.tag, err, 'STATUS');
  }
  const values: Record<string, number> = {
    MESSAGES: st.messages,
    RECENT: st.recent,
    UIDNEXT: st.uidNext,
    UIDVALIDITY: st.uidValidity,
    UNSEEN: st.unseen,
    HIGHESTMODSEQ: st.highestModseq,
  };
  if (cmd.args.items.includes('HIGHESTMODSEQ')) this.enableCondstore();
  const items = cmd.args.items.map((i) => `${i} ${values[i]}`).join(' ');
  await this.flushUpdates(true);
  await this.untagged([`* STATUS ${this.wireName(canonical(cmd.args.mailbox))} (${items})`]);
  await this.tagged(cmd.tag, 'OK', 'STATUS completed');
}
export const do_SELECTED_STATUS = do_AUTHENTICATED_STATUS;

export async function do_AUTHENTICATED_CREATE(this: ImapSession, cmd: CommandOf<'CREATE'>): Promise<void> {
  // RFC 3501 6.3.3: a trailing delimiter declares the intent to create children; drop it.
  const name = cmd.args.mailbox.endsWith(DELIM) ? cmd.args.mailbox.slice(0, -1) : cmd.args.mailbox;
  if (canonical(name) === 'INBOX') return this.tagged(cmd.tag, 'NO', '[ALREADYEXISTS] INBOX always exists');
  try {
    await this.withTimerPaused(() => this.mailboxes!.createFolder(name));
  } catch (err) {
    return this.storeError(cmd.tag, err, 'CREATE');
  }
  await this.tagged(cmd.tag, 'OK', 'CREATE completed');
}
export const do_SELECTED_CREATE = do_AUTHENTICATED_CREATE;

export async function do_AUTHENTICATED_DELETE(this: ImapSession, cmd: CommandOf<'DELETE'>): Promise<void> {
  try {
    await this.withTimerPaused(() => this.mailboxes!.deleteFolder(cmd.args.mailbox));
  } catch (err) {
    return this.storeError(cmd.tag, err, 'DELETE');
  }
  await this.tagged(cmd.tag, 'OK', 'DELETE completed');
}
export const do_SELECTED_DELETE = do_AUTHENTICATED_DELETE;

export async function do_AUTHENTICATED_RENAME(this: ImapSession, cmd: CommandOf<'RENAME'>): Promise<void> {
  try {
    await this.withTimerPaused(() => this.mailboxes!.renameFolder(cmd.args.from, cmd.args.to));
  } catch (err) {
    return this.storeError(cmd.tag, err, 'RENAME');
  }
  await this.flushUpdates(true);
  await this.tagged(cmd.tag, 'OK', 'RENAME completed');
}
export const do_SELECTED_RENAME = do_AUTHENTICATED_RENAME;

async function subscribe(session: ImapSession, cmd: CommandOf<'SUBSCRIBE' | 'UNSUBSCRIBE'>, on: boolean): Promise<void> {
  try {
    await session.withTimerPaused(() => session.mailboxes!.setSubscribed(cmd.args.mailbox, on));
  } catch (err) {
    return session.storeError(cmd.tag, err, cmd.verb);
  }
  await session.tagged(cmd.tag, 'OK', `${cmd.verb} completed`);
}

export function do_AUTHENTICATED_SUBSCRIBE(this: ImapSession, cmd: CommandOf<'SUBSCRIBE'>): Promise<void> {
  return subscribe(this, cmd, true);
}
export const do_SELECTED_SUBSCRIBE = do_AUTHENTICATED_SUBSCRIBE;
export function do_AUTHENTICATED_UNSUBSCRIBE(this: ImapSession, cmd: CommandOf<'UNSUBSCRIBE'>): Promise<void> {
  return subscribe(this, cmd, false);
}
export const do_SELECTED_UNSUBSCRIBE = do_AUTHENTICATED_UNSUBSCRIBE;

export async function do_AUTHENTICATED_APPEND(this: ImapSession, cmd: CommandOf<'APPEND'>): Promise<void> {
  const { mailbox, flags, date, message } = cmd.args;
  if (message.length === 0) return this.tagged(cmd.tag, 'NO', 'APPEND of an empty message');
  let rec;
  try {
    rec = await this.withTimerPaused(() => this.mailboxes!.append(mailbox, message, { flags: [...flags], internalDate: date === undefined ? undefined : new Date(date) }));
  } catch (err) {
    // RFC 3501 6.3.11: [TRYCREATE] tells the client to CREATE the mailbox and try again.
    if (err instanceof StoreError && err.code === 'STORE_NO_FOLDER') return this.tagged(cmd.tag, 'NO', '[TRYCREATE] no such mailbox');
    return this.storeError(cmd.tag, err, 'APPEND');
  }
  const uidValidity = this.mailboxes!.state(mailbox)?.uidValidity ?? 0;
  await this.flushUpdates(true);
  await this.tagged(cmd.tag, 'OK', `[APPENDUID ${uidValidity} ${rec.uid}] APPEND completed`);
}
export const do_SELECTED_APPEND = do_AUTHENTICATED_APPEND;

function canonical(name: string): string {
  return name.toUpperCase() === 'INBOX' ? 'INBOX' : name;
}
