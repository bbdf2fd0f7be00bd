// Name checks for the store: every user, domain and folder name passes through here before it
// can become part of a path (DESIGN invariant 5: `..` or `/` in user and mailbox names).
import { HearthError } from '../core/errors.ts';

export type StoreErrorCode =
  | 'STORE_BAD_NAME'
  | 'STORE_IO'
  | 'STORE_ABORTED'
  // The mailbox index (mailboxes.ts):
  | 'STORE_NO_FOLDER'
  | 'STORE_FOLDER_EXISTS'
  | 'STORE_HAS_CHILDREN'
  | 'STORE_INBOX'
  | 'STORE_BAD_FLAG'
  | 'STORE_CLOSED';

export class StoreError extends HearthError {
  declare readonly code: StoreErrorCode;
  constructor(code: StoreErrorCode, message: string, options?: ErrorOptions) {
    super(code, message, options);
  }
}

/** The largest name most filesystems allow for one path component (NAME_MAX). */
const NAME_MAX_BYTES = 255;

// C0 controls, DEL and C1 controls: never useful in a name, and confusing in logs and terminals.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/u;

function refuse(kind: string, name: string, why: string): never {
  throw new StoreError('STORE_BAD_NAME', `bad ${kind} name ${JSON.stringify(name)}: ${why}`);
}

function checkComponent(kind: string, whole: string, part: string): void {
  if (part.length === 0) refuse(kind, whole, 'empty');
  if (!part.isWellFormed()) refuse(kind, whole, 'not well-formed Unicode');
  if (CONTROL.test(part)) refuse(kind, whole, 'control character');
  if (part.includes('\\')) refuse(kind, whole, 'backslash');
  if (part.includes('/')) refuse(kind, whole, 'slash');
  if (part.startsWith('.')) refuse(kind, whole, 'leading dot');
  if (part.includes('..')) refuse(kind, whole, '".."');
  if (Buffer.byteLength(part, 'utf8') > NAME_MAX_BYTES) refuse(kind, whole, `over ${NAME_MAX_BYTES} bytes`);
}

/**
 * Throw StoreError STORE_BAD_NAME unless `name` is safe to use as a path component.
 *
 * - user, domain: one component; no `/`, `\`, NUL or control characters, no leading dot,
 *   no `..`, not empty, at most 255 bytes of UTF-8.
 * - folder: `/` separates hierarchy levels (`Lists/foo`); each level is checked as above and
 *   may not contain `.` at all, because Maildir++ stores `Lists/foo` as the directory
 *   `.Lists.foo` and a dot inside a level could not be told apart from a separator.
 *   The encoded directory name must also fit in 255 bytes. Unicode is stored as given (UTF-8);
 *   IMAP's modified UTF-7 is the IMAP layer's business.
 */
export function assertSafeName(kind: 'user' | 'domain' | 'folder', name: string): void {
  if (typeof name !== 'string') refuse(kind, String(name), 'not a string');
  if (kind !== 'folder') {
    checkComponent(kind, name, name);
    return;
  }
  if (name.length === 0) refuse(kind, name, 'empty');
  for (const part of name.split('/')) {
    checkComponent(kind, name, part);
    if (part.includes('.')) refuse(kind, name, '"." is the Maildir++ hierarchy separator');
  }
  if (Buffer.byteLength(folderDirName(name), 'utf8') > NAME_MAX_BYTES) refuse(kind, name, `over ${NAME_MAX_BYTES} bytes once encoded`);
}

/** `INBOX` in any case is the maildir itself (RFC 3501 5.1: INBOX is case-insensitive). */
export function isInbox(folder: string | undefined): boolean {
  return folder === undefined || folder.toUpperCase() === 'INBOX';
}

/** Maildir++ directory for a (checked) folder name: `Lists/foo` -> `.Lists.foo`. */
export function folderDirName(folder: string): string {
  return '.' + folder.split('/').join('.');
}

/**
 * The info suffix flags, checked, deduplicated and in ASCII order as the Maildir spec asks
 * (`SF` -> `FS`). Upper-case letters are the standard flags (D F P R S T); lower-case letters
 * are Dovecot keyword slots.
 */
export function normalizeFlags(flags: string): string {
  if (!/^[A-Za-z]*$/.test(flags)) throw new StoreError('STORE_BAD_NAME', `bad Maildir flags ${JSON.stringify(flags)}: only ASCII letters`);
  return [...new Set(flags)].sort().join('');
}

/** Hostname as Courier and Dovecot put it in a file name: `/` and `:` would break the name. */
export function escapeHostname(hostname: string): string {
  return hostname.replaceAll('/', '\\057').replaceAll(':', '\\072');
}
