// The full-text index is in charge of finding, fast, which messages *may* contain a piece of
// text: one node:sqlite file per user (`hearth-fulltext.sqlite` beside the mailbox index, WAL),
// an FTS5 table with the trigram tokenizer so it answers IMAP's substring semantics (RFC 3501
// 6.4.4: "contains the specified string"), not word matches. It is a prefilter: a candidate set
// is a superset and the caller still checks each message. Like the mailbox index it is a cache
// and can be deleted at any time. It also owns the one way hearth turns a raw message into
// searchable text (decoded headers, decoded body text), so the IMAP SEARCH evaluator and the
// webmail index and match exactly the same text.
import fs from 'node:fs';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { StatementSync } from 'node:sqlite';
import libmime from 'libmime';
import { decode as decodeCharset } from 'libmime/lib/charset.js';
import { decode as decodeQp } from 'libqp';
import { decode as decodeBase64 } from 'libbase64';
import type { Logger } from '../core/log.ts';
import type { UserMailboxes } from './mailboxes.ts';
import { StoreError } from './names.ts';
import { Transactions, prepareOrClose, prepareSideFile } from './sqlite.ts';

export const FULLTEXT_FILE = 'hearth-fulltext.sqlite';
const SCHEMA_VERSION = 2;
/** Body text kept in the index per message; longer ones are marked partial and always candidates. */
const MAX_INDEXED_BODY = 4 << 20;
/** Multipart nesting and part count we follow; deeper/further parts are ignored (hostile mail). */
const MAX_MIME_DEPTH = 16;
const MAX_MIME_PARTS = 500;

// --- text normalisation shared by the index and the SEARCH evaluator ---

/**
 * The form both sides of a substring match are compared in: NFC, Unicode lower case, and runs
 * of white space as one space (a folded header or a wrapped line must not hide a phrase).
 */
export function foldText(text: string): string {
  return text.normalize('NFC').toLowerCase().replace(/\s+/g, ' ');
}

/**
 * foldText, and accents on Latin letters dropped (é → e), as the index's tokenizer
 * (remove_diacritics) does: for the webmail's search, whose answer must not depend on whether a
 * folder is indexed yet. Marks on other scripts stay: in が the mark is part of the letter.
 */
export function foldTextLoose(text: string): string {
  return foldText(text.normalize('NFD').replace(/(\p{Script=Latin})\p{M}+/gu, '$1'));
}

/** As stored in and queried from FTS5: FTS5 folds case and diacritics itself. */
function indexForm(text: string): string {
  return text.normalize('NFC').replace(/\s+/g, ' ').replaceAll('\0', '');
}

// --- raw message → text ---

export type HeaderFields = Map<string, string[]>;
export type MessageHeaders = { fields: HeaderFields; sentDate: number | null };
export type FullTextDocument = { subject: string; addresses: string; body: string };

const utf8Strict = new TextDecoder('utf-8', { fatal: true });
const utf8Loose = new TextDecoder('utf-8');

/** Undeclared 8-bit text: UTF-8 when it is valid UTF-8, else Latin-1 (never lose a byte). */
function decodeUnlabelled(buf: Uint8Array): string {
  try {
    return utf8Strict.decode(buf);
  } catch {
    return Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('latin1');
  }
}

function decodeText(buf: Buffer, charset: string | undefined): string {
  const cs = (charset ?? '').trim().toLowerCase();
  if (cs === '' || cs === 'us-ascii' || cs === 'ascii') return decodeUnlabelled(buf);
  if (cs === 'utf-8' || cs === 'utf8') return utf8Loose.decode(buf);
  try {
    return decodeCharset(buf, cs);
  } catch {
    return decodeUnlabelled(buf);
  }
}

/** Header block and body: the header ends at the first empty line (CRLF or bare LF). */
function splitMessage(raw: Buffer): { head: Buffer; body: Buffer } {
  let pos = 0;
  while (pos < raw.length) {
    const nl = raw.indexOf(0x0a, pos);
    if (nl < 0) break;
    const lineLen = nl - pos - (nl > pos && raw[nl - 1] === 0x0d ? 1 : 0);
    if (lineLen === 0) return { head: raw.subarray(0, pos), body: raw.subarray(nl + 1) };
    pos = nl + 1;
  }
  return { head: raw, body: raw.subarray(raw.length) };
}

/** Unfolded `name → raw values` (RFC 5322 2.2.3), names lower-cased, values not yet decoded. */
function parseHeaderBlock(head: Buffer): HeaderFields {
  const fields: HeaderFields = new Map();
  const text = decodeUnlabelled(head).replace(/\r?\n(?=[ \t])/g, '');
  for (const line of text.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    if (!/^[\x21-\x39\x3b-\x7e]+$/.test(name)) continue;
    const value = line.slice(colon + 1).trim();
    const list = fields.get(name);
    if (list) list.push(value);
    else fields.set(name, [value]);
  }
  return fields;
}

function decodeWords(value: string): string {
  try {
    return libmime.decodeWords(value);
  } catch {
    return value;
  }
}

/** Headers RFC 2047-decoded and unfolded; `sentDate` is the Date: header in ms, or null. */
export function headersFromRaw(raw: Buffer): MessageHeaders {
  const fields = parseHeaderBlock(splitMessage(raw).head);
  for (const [name, values] of fields) fields.set(name, values.map(decodeWords));
  const date = fields.get('date')?.[0];
  let sentDate: number | null = null;
  if (date !== undefined) {
    const ms = Date.parse(date.replace(/\([^)]*\)/g, ' ').trim());
    if (Number.isFinite(ms)) sentDate = ms;
  }
  return { fields, sentDate };
}

type ContentType = { type: string; params: Record<string, string> };

function contentType(fields: HeaderFields, fallback: string): ContentType {
  const value = fields.get('content-type')?.[0];
  if (value === undefined) return { type: fallback, params: {} };
  const parsed = libmime.parseHeaderValue(value);
  const type = String(parsed.value ?? '').trim().toLowerCase();
  return { type: type.includes('/') ? type : fallback, params: (parsed.params ?? {}) as Record<string, string> };
}

function isAttachment(fields: HeaderFields): boolean {
  const value = fields.get('content-disposition')?.[0];
  if (value === undefined) return false;
  return String(libmime.parseHeaderValue(value).value ?? '').trim().toLowerCase() === 'attachment';
}

function decodeTransfer(body: Buffer, fields: HeaderFields): Buffer {
  const cte = (fields.get('content-transfer-encoding')?.[0] ?? '').trim().toLowerCase();
  if (cte === 'base64') return decodeBase64(body.toString('latin1'));
  if (cte === 'quoted-printable') return decodeQp(body);
  return body;
}

/** The parts of a multipart body between `--boundary` lines (RFC 2046 5.1.1). */
function splitMultipart(body: Buffer, boundary: string): Buffer[] {
  const marker = Buffer.from(`--${boundary}`, 'latin1');
  const parts: Buffer[] = [];
  let partStart = -1;
  let pos = 0;
  while (pos <= body.length && parts.length < MAX_MIME_PARTS) {
    const at = body.indexOf(marker, pos);
    if (at < 0) break;
    pos = at + marker.length;
    if (at > 0 && body[at - 1] !== 0x0a) continue; // not at a line start
    const closing = body[pos] === 0x2d && body[pos + 1] === 0x2d;
    if (partStart >= 0) {
      let end = at > 0 ? at - 1 : 0; // the CRLF before the delimiter belongs to it
      if (end > partStart && body[end - 1] === 0x0d) end--;
      parts.push(body.subarray(partStart, Math.max(partStart, end)));
    }
    if (closing) return parts;
    const nl = body.indexOf(0x0a, pos);
    if (nl < 0) return parts;
    partStart = nl + 1;
    pos = nl + 1;
  }
  // No closing delimiter: keep what follows the last one (truncated mail still searchable).
  if (partStart >= 0 && parts.length < MAX_MIME_PARTS) parts.push(body.subarray(partStart));
  return parts;
}

function collectText(raw: Buffer, out: string[], depth: number, fallbackType: string, budget: { parts: number }): void {
  const { head, body } = splitMessage(raw);
  collectPart(parseHeaderBlock(head), body, out, depth, fallbackType, budget);
}

function collectPart(fields: HeaderFields, body: Buffer, out: string[], depth: number, fallbackType: string, budget: { parts: number }): void {
  if (depth > MAX_MIME_DEPTH || budget.parts-- <= 0) return;
  const ct = contentType(fields, fallbackType);
  if (ct.type.startsWith('multipart/')) {
    const boundary = ct.params.boundary;
    if (!boundary) return;
    const childDefault = ct.type === 'multipart/digest' ? 'message/rfc822' : 'text/plain';
    for (const part of splitMultipart(body, boundary)) collectText(part, out, depth + 1, childDefault, budget);
    return;
  }
  if (ct.type === 'message/rfc822' || ct.type === 'message/global') {
    // An attached or forwarded message: its headers people read, then its body.
    const inner = decodeTransfer(body, fields);
    const innerFields = parseHeaderBlock(splitMessage(inner).head);
    for (const name of ['subject', 'from', 'to', 'cc', 'date']) {
      for (const v of innerFields.get(name) ?? []) out.push(decodeWords(v));
    }
    collectText(inner, out, depth + 1, 'text/plain', budget);
    return;
  }
  if (isAttachment(fields)) return;
  if (ct.type !== 'text/plain' && ct.type !== 'text/html' && ct.type !== 'message/delivery-status' && ct.type !== 'text/enriched') return;
  let text = decodeText(decodeTransfer(body, fields), ct.params.charset);
  if (ct.type === 'text/html') text = htmlToText(text);
  else if ((ct.params.format ?? '').toLowerCase() === 'flowed') {
    text = libmime.decodeFlowed(text, (ct.params.delsp ?? '').toLowerCase() === 'yes');
  }
  out.push(text);
}

/**
 * Readable text of the body: text/plain parts and text/html turned into text, decoded from
 * base64/quoted-printable and their charsets; attachments (and non-text parts) skipped,
 * embedded messages included. Async so a caller may move it to a worker later unchanged.
 */
export async function bodyTextFromRaw(raw: Buffer): Promise<string> {
  return bodyTextFromRawSync(raw);
}

export function bodyTextFromRawSync(raw: Buffer): string {
  const out: string[] = [];
  collectText(raw, out, 0, 'text/plain', { parts: MAX_MIME_PARTS });
  return out.join('\n');
}

const NAMED_ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", hellip: '…', mdash: '—', ndash: '–', lsquo: '‘', rsquo: '’', ldquo: '“', rdquo: '”', euro: '€', trade: '™', bull: '•', zwnj: '', zwj: '' };
// HTML 4 Latin-1 entities, U+00A0..U+00FF in order.
'nbsp iexcl cent pound curren yen brvbar sect uml copy ordf laquo not shy reg macr deg plusmn sup2 sup3 acute micro para middot cedil sup1 ordm raquo frac14 frac12 frac34 iquest Agrave Aacute Acirc Atilde Auml Aring AElig Ccedil Egrave Eacute Ecirc Euml Igrave Iacute Icirc Iuml ETH Ntilde Ograve Oacute Ocirc Otilde Ouml times Oslash Ugrave Uacute Ucirc Uuml Yacute THORN szlig agrave aacute acirc atilde auml aring aelig ccedil egrave eacute ecirc euml igrave iacute icirc iuml eth ntilde ograve oacute ocirc otilde ouml divide oslash ugrave uacute ucirc uuml yacute thorn yuml'
  .split(' ')
  .forEach((name, i) => (NAMED_ENTITIES[name] = String.fromCodePoint(0xa0 + i)));

function decodeEntities(text: string): string {
  return text.replace(/&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});?/g, (all, ent: string) => {
    if (ent[0] === '#') {
      const cp = ent[1] === 'x' || ent[1] === 'X' ? parseInt(ent.slice(2), 16) : parseInt(ent.slice(1), 10);
      return cp > 0 && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff) ? String.fromCodePoint(cp) : all;
    }
    return NAMED_ENTITIES[ent] ?? NAMED_ENTITIES[ent.toLowerCase()] ?? all;
  });
}

/** What a reader sees of an HTML part: no tags, scripts, styles or comments; entities decoded. */
export function htmlToText(html: string): string {
  return decodeEntities(
    html
      .replace(/<!--[\s\S]*?-->/g, ' ')
      .replace(/<(script|style|head|title)\b[\s\S]*?<\/\1\s*>/gi, ' ')
      .replace(/<(br|\/p|\/div|\/tr|\/li|\/h[1-6]|\/table|hr)\b[^>]*>/gi, '\n')
      .replace(/<[^>]*>/g, ''),
  );
}

/** What the index stores of one message. */
export async function documentFromRaw(raw: Buffer): Promise<FullTextDocument> {
  const { fields } = headersFromRaw(raw);
  const join = (names: string[]): string => names.flatMap((n) => fields.get(n) ?? []).join('\n');
  return { subject: join(['subject']), addresses: join(['from', 'to', 'cc', 'bcc']), body: await bodyTextFromRaw(raw) };
}

// --- the index ---

export type FullTextField = 'subject' | 'addresses' | 'body';
const FIELDS: readonly FullTextField[] = ['subject', 'addresses', 'body'];

// Every (folder, UIDVALIDITY) gets a small key, and a message's document id is
// (key << 32) + (0xFFFFFFFF - uid): one folder's documents are one rowid range, newest (highest
// UID) first. FTS5 walks rowids upwards fast and stops at a LIMIT, so "the newest N matches" costs
// about N rows, not every match (walking downwards it cannot seek, measured on 100,000 messages).
// Ids are computed in SQL and never read back whole, so JavaScript numbers need not hold them.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS folders (
  key INTEGER PRIMARY KEY,
  folder TEXT NOT NULL,
  uidvalidity INTEGER NOT NULL,
  UNIQUE (folder, uidvalidity)
);
CREATE TABLE IF NOT EXISTS docs (
  id INTEGER PRIMARY KEY,
  partial INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS docs_partial ON docs (id) WHERE partial = 1;
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(
  subject, addresses, body,
  content = '', contentless_delete = 1,
  tokenize = 'trigram remove_diacritics 1'
);
`;

/** SQL for a document id from a folder key (?1) and a UID expression. */
const DOC_ID = (uid: string): string => `((?1 << 32) + (4294967295 - ${uid}))`;
/** A folder's whole id range, and a UID back from an id. */
const IN_FOLDER = (col: string): string => `${col} BETWEEN (?1 << 32) AND (?1 << 32) + 4294967295`;
const UID_OF = (col: string): string => `(4294967295 - (${col} & 4294967295))`;

/** FTS5 string syntax (https://sqlite.org/fts5.html 3.1): double quotes, `"` written twice. */
function phrase(text: string): string {
  return `"${text.replaceAll('"', '""')}"`;
}

/** Whether the index can look `text` up: trigrams need 3 characters (after white space folding). */
export function indexable(text: string): boolean {
  return [...indexForm(text)].length >= 3;
}

/** One condition of a text search: `text` in any of `fields` (a phrase does not span fields). */
export type FullTextTerm = { fields: readonly FullTextField[]; text: string };

export class FullTextIndex {
  readonly file: string;
  readonly #db: DatabaseSync;
  readonly #s: Record<string, StatementSync>;
  readonly #log: Logger;
  readonly #tx: Transactions;
  /** Folder keys by `folder\0uidvalidity`, as read or made; dropped with the folder. */
  readonly #keys = new Map<string, number>();
  #generation = 0;

  /** Open (or create) the index; an unreadable file is set aside and a new one started. */
  static open(file: string, log: Logger): FullTextIndex {
    try {
      return new FullTextIndex(file, log);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      // An index of another schema version is only a cache in an old layout: start again.
      const outdated = /schema version/.test(message);
      const aside = `${file}.broken-${Date.now()}`;
      log.warn({ file, err: message }, outdated ? 'full-text index has an older layout, starting a new one' : 'full-text index unusable, starting a new one');
      try {
        if (outdated) fs.rmSync(file, { force: true });
        else fs.renameSync(file, aside);
      } catch {
        // nothing to set aside
      }
      for (const s of ['-wal', '-shm']) fs.rmSync(file + s, { force: true });
      return new FullTextIndex(file, log);
    }
  }

  /** The index file for a user's maildir (`UserMailboxes.dir`). */
  static pathFor(userDir: string): string {
    return path.join(userDir, FULLTEXT_FILE);
  }

  constructor(file: string, log: Logger) {
    this.file = file;
    this.#log = log;
    this.#db = new DatabaseSync(file);
    this.#tx = new Transactions(this.#db);
    this.#s = prepareOrClose(this.#db, (db) => {
      prepareSideFile(db, { what: 'full-text', schema: SCHEMA, version: SCHEMA_VERSION });
      const p = (sql: string): StatementSync => db.prepare(sql);
      const s: Record<string, StatementSync> = {
        keyGet: p('SELECT key FROM folders WHERE folder = ? AND uidvalidity = ?'),
        keyInsert: p('INSERT INTO folders (folder, uidvalidity) VALUES (?, ?) RETURNING key'),
        keysOf: p('SELECT key, uidvalidity FROM folders WHERE folder = ?'),
        keyDelete: p('DELETE FROM folders WHERE key = ?'),
        folderRename: p('UPDATE folders SET folder = ? WHERE folder = ?'),
        docGet: p(`SELECT partial FROM docs WHERE id = ${DOC_ID('?2')}`),
        docPut: p(`INSERT INTO docs (id, partial) VALUES (${DOC_ID('?2')}, ?3) ON CONFLICT (id) DO UPDATE SET partial = excluded.partial`),
        docDelete: p(`DELETE FROM docs WHERE id = ${DOC_ID('?2')}`),
        ftsInsert: p(`INSERT INTO fts (rowid, subject, addresses, body) VALUES (${DOC_ID('?2')}, ?3, ?4, ?5)`),
        ftsDelete: p(`DELETE FROM fts WHERE rowid = ${DOC_ID('?2')}`),
        uids: p(`SELECT ${UID_OF('id')} AS uid FROM docs WHERE ${IN_FOLDER('id')}`),
        docsBetween: p(`SELECT ${UID_OF('id')} AS uid FROM docs WHERE id BETWEEN ${DOC_ID('?3')} AND ${DOC_ID('?2')}`),
        partialBetween: p(`SELECT ${UID_OF('id')} AS uid FROM docs WHERE id BETWEEN ${DOC_ID('?3')} AND ${DOC_ID('?2')} AND partial = 1`),
        partialUids: p(`SELECT ${UID_OF('id')} AS uid FROM docs WHERE ${IN_FOLDER('id')} AND partial = 1`),
        folderDocsDelete: p(`DELETE FROM docs WHERE ${IN_FOLDER('id')}`),
        match: p(`SELECT ${UID_OF('rowid')} AS uid FROM fts WHERE fts MATCH ?2 AND ${IN_FOLDER('rowid')}`),
        // Upwards from the id of UID `?3 - 1` to the folder's end: newest first.
        newest: p(`SELECT ${UID_OF('rowid')} AS uid FROM fts WHERE fts MATCH ?2 AND rowid BETWEEN ${DOC_ID('(?3 - 1)')} AND (?1 << 32) + 4294967295 ORDER BY rowid LIMIT ?4`),
      };
      s.docsBetween.setReturnArrays(true);
      s.partialBetween.setReturnArrays(true);
      return s;
    });
  }

  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }

  /** Run `fn` in one transaction (nested calls join the outer one): batch adds while catching up. */
  transaction<T>(fn: () => T): T {
    // Every write goes through here (add, remove, removeFolder, renameFolder, catch-ups).
    this.#generation++;
    try {
      return this.#tx.run(fn);
    } catch (err) {
      // A folder key made in a transaction that rolled back does not exist: forget the cache.
      this.#keys.clear();
      throw err;
    }
  }

  /** The folder's key, made when `create` (in the caller's transaction). */
  #key(folder: string, uidValidity: number, create: boolean): number | undefined {
    const name = `${folder}\0${uidValidity}`;
    let key = this.#keys.get(name);
    if (key !== undefined) return key;
    key = (this.#s.keyGet.get(folder, uidValidity) as { key: number } | undefined)?.key;
    if (key === undefined && create) key = (this.#s.keyInsert.get(folder, uidValidity) as { key: number }).key;
    if (key !== undefined) this.#keys.set(name, key);
    return key;
  }

  /** Index (or re-index) one message. */
  add(folder: string, uidValidity: number, uid: number, doc: FullTextDocument): void {
    const body = indexForm(doc.body);
    const partial = body.length > MAX_INDEXED_BODY;
    this.transaction(() => {
      const key = this.#key(folder, uidValidity, true)!;
      if (this.#s.docGet.get(key, uid) !== undefined) this.#s.ftsDelete.run(key, uid);
      this.#s.docPut.run(key, uid, partial ? 1 : 0);
      this.#s.ftsInsert.run(key, uid, indexForm(doc.subject), indexForm(doc.addresses), partial ? body.slice(0, MAX_INDEXED_BODY) : body);
    });
  }

  /** Forget messages (expunged, moved away). Unknown UIDs are ignored. */
  remove(folder: string, uidValidity: number, uids: Iterable<number>): void {
    this.transaction(() => {
      const key = this.#key(folder, uidValidity, false);
      if (key === undefined) return;
      for (const uid of uids) {
        if (this.#s.docGet.get(key, uid) === undefined) continue;
        this.#s.ftsDelete.run(key, uid);
        this.#s.docDelete.run(key, uid);
      }
    });
  }

  /** Forget a folder's messages under every UIDVALIDITY except `keepUidValidity` (all if absent). */
  removeFolder(folder: string, keepUidValidity = -1): number {
    return this.transaction(() => {
      let removed = 0;
      for (const { key, uidvalidity } of this.#s.keysOf.all(folder) as Array<{ key: number; uidvalidity: number }>) {
        if (uidvalidity === keepUidValidity) continue;
        const uids = this.#s.uids.all(key) as Array<{ uid: number }>;
        for (const { uid } of uids) this.#s.ftsDelete.run(key, uid);
        this.#s.folderDocsDelete.run(key);
        this.#s.keyDelete.run(key);
        this.#keys.delete(`${folder}\0${uidvalidity}`);
        removed += uids.length;
      }
      return removed;
    });
  }

  /**
   * A folder was renamed (UIDVALIDITY and UIDs kept, RFC 3501 6.3.5): its documents follow it, so
   * nothing is read again. Whatever was indexed under the new name before is forgotten first.
   */
  renameFolder(from: string, to: string): number {
    return this.transaction(() => {
      this.removeFolder(to);
      for (const name of [...this.#keys.keys()]) if (name.startsWith(`${from}\0`)) this.#keys.delete(name);
      let moved = 0;
      for (const { key } of this.#s.keysOf.all(from) as Array<{ key: number }>) moved += (this.#s.uids.all(key) as unknown[]).length;
      this.#s.folderRename.run(to, from);
      return moved;
    });
  }

  /**
   * UIDs of indexed messages whose `field` may contain `value` as a substring (case and
   * diacritics ignored, so a superset of the exact answer), plus those whose body was too long
   * to index whole. Undefined when the index cannot tell: fewer than 3 characters (trigrams).
   * Messages not yet indexed are not in the set: see `indexedUids`.
   */
  candidates(folder: string, uidValidity: number, field: FullTextField, value: string): Set<number> | undefined {
    const text = indexForm(value);
    if ([...text].length < 3) return undefined;
    const out = new Set<number>();
    const key = this.#key(folder, uidValidity, false);
    if (key === undefined) return out;
    for (const r of this.#s.match.all(key, `{${field}} : ${phrase(text)}`) as Array<{ uid: number }>) out.add(r.uid);
    if (field === 'body') for (const r of this.#s.partialUids.all(key) as Array<{ uid: number }>) out.add(r.uid);
    return out;
  }

  /**
   * The newest (highest UID first) at most `limit` indexed messages that may match every term
   * (each a substring of one of its fields, as `candidates` decides it), with UIDs below
   * `belowUid` when given. Terms must be `indexable`. Messages indexed only in part are not
   * in the answer unless their indexed part matches: see `indexedBetween` for which to trust.
   */
  newestMatches(folder: string, uidValidity: number, terms: readonly FullTextTerm[], limit: number, belowUid = 0x1_0000_0000): number[] {
    const key = this.#key(folder, uidValidity, false);
    if (key === undefined || terms.length === 0) return [];
    const expr = terms.map((t) => `{${t.fields.join(' ')}} : ${phrase(indexForm(t.text))}`).join(' AND ');
    return (this.#s.newest.all(key, expr, belowUid, limit) as Array<{ uid: number }>).map((r) => r.uid);
  }

  /**
   * The indexed UIDs in [fromUid, toUid], highest first, and which of them are indexed only in
   * part (long bodies): for whole ones the index's answer is final, the others must be checked.
   * Rows come back as arrays, not objects: 100,000 UIDs cost milliseconds, not a garbage collection.
   */
  indexedBetween(folder: string, uidValidity: number, fromUid: number, toUid: number): { uids: Uint32Array; partial: Set<number> } {
    const key = this.#key(folder, uidValidity, false);
    if (key === undefined || fromUid > toUid) return { uids: new Uint32Array(0), partial: new Set() };
    const rows = this.#s.docsBetween.all(key, fromUid, toUid) as unknown as Array<[number]>;
    const uids = new Uint32Array(rows.length);
    for (let i = 0; i < rows.length; i++) uids[i] = rows[i][0];
    const partial = new Set((this.#s.partialBetween.all(key, fromUid, toUid) as unknown as Array<[number]>).map((r) => r[0]));
    return { uids, partial };
  }

  /** Changes with every write: what a caller derived from the index is current while this is unchanged. */
  get generation(): number {
    return this.#generation;
  }

  indexedUids(folder: string, uidValidity: number): Set<number> {
    const key = this.#key(folder, uidValidity, false);
    if (key === undefined) return new Set();
    return new Set((this.#s.uids.all(key) as Array<{ uid: number }>).map((r) => r.uid));
  }

  /**
   * Bring a folder's index up to date with the mailbox: index messages not yet in it, forget
   * expunged ones and older UIDVALIDITYs. Reads one message at a time and yields between
   * batches; stops early (returning what it did) when `signal` aborts. Returns counts.
   */
  async catchUp(mailboxes: UserMailboxes, folder: string, opts: { signal?: AbortSignal; batch?: number } = {}): Promise<{ added: number; removed: number }> {
    const state = mailboxes.state(folder) ?? (await mailboxes.sync(folder));
    const { uidValidity } = state;
    let removed = this.removeFolder(folder, uidValidity);
    const present = new Set(state.messages.map((m) => m.uid));
    const indexed = this.indexedUids(folder, uidValidity);
    const gone = [...indexed].filter((uid) => !present.has(uid));
    this.remove(folder, uidValidity, gone);
    removed += gone.length;
    const batchSize = opts.batch ?? 50;
    let added = 0;
    let pending: Array<{ uid: number; doc: FullTextDocument }> = [];
    const flush = (): void => {
      if (pending.length === 0) return;
      const docs = pending;
      pending = [];
      this.transaction(() => {
        for (const d of docs) this.add(folder, uidValidity, d.uid, d.doc);
      });
      added += docs.length;
    };
    for (const m of state.messages) {
      if (opts.signal?.aborted) break;
      if (indexed.has(m.uid)) continue;
      let raw: Buffer | null;
      try {
        raw = await mailboxes.readMessage(folder, m.uid);
      } catch (err) {
        // The folder went away (deleted, renamed: what was read is not kept under the old name)
        // or the mailbox closed (what was read is kept): nothing more to read here either way.
        if (err instanceof StoreError && err.code === 'STORE_NO_FOLDER') pending = [];
        if (err instanceof StoreError && (err.code === 'STORE_NO_FOLDER' || err.code === 'STORE_CLOSED')) break;
        this.#log.warn({ folder, uid: m.uid, err: err instanceof Error ? err.message : String(err) }, 'full-text: cannot read message');
        continue;
      }
      if (raw === null) continue; // expunged meanwhile
      pending.push({ uid: m.uid, doc: await documentFromRaw(raw) });
      if (pending.length >= batchSize) {
        flush();
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
    flush();
    if (added + removed > 0) this.#log.debug({ folder, added, removed }, 'full-text index caught up');
    return { added, removed };
  }
}
