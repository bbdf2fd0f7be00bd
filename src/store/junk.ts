// The junk filter is in charge of one user's Bayesian spam verdicts and of what it has learned:
// one node:sqlite file per user (`hearth-junk.sqlite` beside the mailbox index, WAL) with a
// count of spam and ham messages per token and the list of messages it was trained on. Unlike
// the mailbox and full-text indexes it is not a cache: what the user taught it exists only here.
//
// Design after mox's junk/ package (learned from, not copied): tokens from headers, body and link
// hosts (junk-tokens.ts); each token's spam probability from how often it appeared in spam and
// ham *messages*, each side divided by its number of messages so an unbalanced corpus does not
// tilt it; rare tokens pulled toward 0.5 (Robinson's f(w) with s = 0.45, as SpamBayes uses);
// the strongest clues (|f − 0.5| ≥ 0.1, at most 150) combined by Robinson's chi-square method,
// which says 0.5 when the evidence disagrees instead of jumping to 0 or 1 as Graham's product
// does. It says nothing (probability 0.5, never junk) until it has seen `minTrained` spam and
// `minTrained` ham messages, and never calls junk on fewer than `minTokens` clues.
//
// Training is keyed: each trained message is recorded by a hash of its Message-ID, Date, From,
// Subject and body (junk-tokens.ts trainingKey) together with how it was trained. Training the
// same message again the same way changes nothing; training it the other way first takes back
// the earlier training (so a message trained as ham and then moved to Junk ends up counted once,
// as spam, whether or not the caller also calls untrain); untraining a message not trained that
// way changes nothing. Untraining re-tokenises the message, so it takes back exactly what training
// added as long as the tokenizer has not changed in between (counts never go below zero).
//
// classify is synchronous: token counts come from an in-memory cache, filled for unseen tokens by
// one sqlite query per message; another connection's writes (PRAGMA data_version) drop the cache.
import fs from 'node:fs';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { StatementSync } from 'node:sqlite';
import type { Logger } from '../core/log.ts';
import { headersFromRaw } from './fulltext.ts';
import { TOKENIZER_VERSION, tokenize, trainingKey } from './junk-tokens.ts';
import { StoreError } from './names.ts';
import { Transactions, prepareSideFile } from './sqlite.ts';

export const JUNK_FILE = 'hearth-junk.sqlite';
const SCHEMA_VERSION = 1;

export type JunkKind = 'spam' | 'ham';
export type JunkVerdict = {
  /** 0 (ham) .. 1 (spam); 0.5 means "cannot tell". */
  probability: number;
  junk: boolean;
  /** Distinct tokens in the message (0 from an untrained filter, which does not tokenize). */
  tokens: number;
  /** The strongest clues, strongest first: for logs and the webmail's "why". */
  significant: Array<{ token: string; p: number }>;
  /** Why `junk` is what it is. */
  reason: 'untrained' | 'few-tokens' | 'below-threshold' | 'above-threshold';
};
export type JunkFilterOptions = {
  log: Logger;
  /** Probability at or above which a message is junk. */
  threshold?: number;
  /** Clues (tokens with a clear lean, seen in training) needed before anything is called junk. */
  minTokens?: number;
  /** Spam and ham messages (each) to be trained on before any verdict is given. */
  minTrained?: number;
};

export const JUNK_DEFAULTS = { threshold: 0.95, minTokens: 8, minTrained: 10 } as const;

// Robinson's f(w): a token seen n times has probability (s·x + n·p) / (s + n), so one sighting
// is weak evidence. SpamBayes's defaults.
const UNKNOWN_WORD_STRENGTH = 0.45;
const UNKNOWN_WORD_PROB = 0.5;
/** Tokens closer than this to 0.5 say nothing and are left out. */
const MIN_CLUE_STRENGTH = 0.1;
const MAX_CLUES = 150;
const SHOWN_CLUES = 10;
/** Token counts kept in memory per user; past this the cache starts over. */
const CACHE_MAX = 200_000;

type Counts = { readonly spam: number; readonly ham: number };
const ZERO: Counts = Object.freeze({ spam: 0, ham: 0 });

const SCHEMA = `
CREATE TABLE IF NOT EXISTS tokens (
  token TEXT PRIMARY KEY,
  spam INTEGER NOT NULL DEFAULT 0,
  ham INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trained (
  key BLOB PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('spam', 'ham')),
  tokenizer INTEGER NOT NULL,
  at INTEGER NOT NULL
) WITHOUT ROWID;
`;

/**
 * Upper tail of the chi-square distribution with `v` (even) degrees of freedom: the chance of a
 * value at least `x2` if the clues were random. Terms of the Poisson series; exp(-m) underflows
 * only where the answer is 0 anyway.
 */
function chi2Q(x2: number, v: number): number {
  const m = x2 / 2;
  let term = Math.exp(-m);
  let sum = term;
  for (let i = 1; i < v / 2; i++) {
    term *= m / i;
    sum += term;
  }
  return Math.min(sum, 1);
}

/** Robinson/SpamBayes chi-square combining: (1 + S − H) / 2. */
function combine(probs: number[]): number {
  if (probs.length === 0) return 0.5;
  let lnSpam = 0; // Σ ln(1 − f): very negative when many clues are spammy
  let lnHam = 0; // Σ ln f: very negative when many clues are hammy
  for (const f of probs) {
    lnSpam += Math.log(1 - f);
    lnHam += Math.log(f);
  }
  const v = 2 * probs.length;
  const spam = 1 - chi2Q(-2 * lnSpam, v);
  const ham = 1 - chi2Q(-2 * lnHam, v);
  return (1 + spam - ham) / 2;
}

type Clue = { token: string; p: number; strength: number };

/**
 * The MAX_CLUES strongest clues, strongest first; ties broken by token so the same message
 * always gets the same score. Only the candidates at or above the cut-off are sorted in full.
 */
function strongestClues(clues: Clue[]): Clue[] {
  let pool = clues;
  if (clues.length > MAX_CLUES) {
    const strengths = Float64Array.from(clues, (c) => c.strength).sort();
    const cutoff = strengths[strengths.length - MAX_CLUES];
    pool = clues.filter((c) => c.strength >= cutoff);
  }
  pool.sort((a, b) => b.strength - a.strength || (a.token < b.token ? -1 : a.token > b.token ? 1 : 0));
  return pool.length > MAX_CLUES ? pool.slice(0, MAX_CLUES) : pool;
}

export class JunkFilter {
  readonly file: string;
  readonly threshold: number;
  readonly minTokens: number;
  readonly minTrained: number;
  readonly #db: DatabaseSync;
  readonly #s: Record<'lookup' | 'add' | 'subtract' | 'prune' | 'trainedGet' | 'trainedPut' | 'trainedDelete' | 'trainedCounts' | 'dataVersion', StatementSync>;
  readonly #log: Logger;
  readonly #cache = new Map<string, Counts>();
  #counts = { spam: 0, ham: 0 };
  #dataVersion = -1;
  readonly #tx: Transactions;

  /** Open (or create) a user's filter; an unreadable file is set aside (kept) and a new one started. */
  static open(file: string, opts: JunkFilterOptions): JunkFilter {
    try {
      return new JunkFilter(file, opts);
    } catch (err) {
      const aside = `${file}.broken-${Date.now()}`;
      opts.log.warn({ file, aside, err: err instanceof Error ? err.message : String(err) }, 'junk filter unusable, set aside, starting untrained');
      try {
        fs.renameSync(file, aside);
        for (const s of ['-wal', '-shm']) if (fs.existsSync(file + s)) fs.renameSync(file + s, aside + s);
      } catch {
        // nothing to set aside
      }
      return new JunkFilter(file, opts);
    }
  }

  /** The filter file for a user's maildir (`UserMailboxes.dir`). */
  static pathFor(userDir: string): string {
    return path.join(userDir, JUNK_FILE);
  }

  constructor(file: string, opts: JunkFilterOptions) {
    this.file = file;
    this.#log = opts.log;
    this.threshold = opts.threshold ?? JUNK_DEFAULTS.threshold;
    this.minTokens = opts.minTokens ?? JUNK_DEFAULTS.minTokens;
    this.minTrained = opts.minTrained ?? JUNK_DEFAULTS.minTrained;
    this.#db = new DatabaseSync(file);
    this.#tx = new Transactions(this.#db);
    try {
      const db = this.#db;
      prepareSideFile(db, { what: 'junk filter', schema: SCHEMA, version: SCHEMA_VERSION });
      const p = (sql: string): StatementSync => db.prepare(sql);
      // Token lists travel as one JSON array: one statement per message, not one per token.
      this.#s = {
        lookup: p('SELECT token, spam, ham FROM tokens WHERE token IN (SELECT value FROM json_each(?))'),
        // `WHERE true` lets SQLite parse ON CONFLICT after a SELECT (https://sqlite.org/lang_upsert.html 2.2).
        add: p('INSERT INTO tokens (token, spam, ham) SELECT value, ?, ? FROM json_each(?) WHERE true ON CONFLICT (token) DO UPDATE SET spam = spam + excluded.spam, ham = ham + excluded.ham'),
        subtract: p('UPDATE tokens SET spam = max(0, spam - ?), ham = max(0, ham - ?) WHERE token IN (SELECT value FROM json_each(?))'),
        prune: p('DELETE FROM tokens WHERE spam = 0 AND ham = 0 AND token IN (SELECT value FROM json_each(?))'),
        trainedGet: p('SELECT kind FROM trained WHERE key = ?'),
        trainedPut: p('INSERT INTO trained (key, kind, tokenizer, at) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, tokenizer = excluded.tokenizer, at = excluded.at'),
        trainedDelete: p('DELETE FROM trained WHERE key = ?'),
        trainedCounts: p('SELECT kind, count(*) AS n FROM trained GROUP BY kind'),
        dataVersion: p('PRAGMA data_version'),
      };
      this.#s.lookup.setReturnArrays(true);
      this.#refresh();
    } catch (err) {
      this.#db.close();
      throw err;
    }
  }

  close(): void {
    if (this.#db.isOpen) this.#db.close();
    this.#cache.clear();
  }

  /** Spam and ham messages trained on. */
  counts(): { spam: number; ham: number } {
    this.#checkOpen();
    this.#refresh();
    return { ...this.#counts };
  }

  /** Score a message. Never trains: verdicts the filter made itself would only reinforce its mistakes. */
  classify(raw: Buffer): JunkVerdict {
    this.#checkOpen();
    this.#refresh();
    const { spam: nSpam, ham: nHam } = this.#counts;
    // An untrained filter cannot decide anything: do not spend the tokenizer on it.
    if (nSpam < this.minTrained || nHam < this.minTrained) {
      return { probability: 0.5, junk: false, tokens: 0, significant: [], reason: 'untrained' };
    }
    const tokens = tokenize(raw);
    this.#load(tokens);
    const clues: Clue[] = [];
    for (const token of tokens) {
      const c = this.#cache.get(token) ?? ZERO;
      const n = c.spam + c.ham;
      if (n === 0) continue;
      const spamRatio = c.spam / nSpam;
      const p = spamRatio / (spamRatio + c.ham / nHam);
      const f = (UNKNOWN_WORD_STRENGTH * UNKNOWN_WORD_PROB + n * p) / (UNKNOWN_WORD_STRENGTH + n);
      const strength = Math.abs(f - 0.5);
      if (strength >= MIN_CLUE_STRENGTH) clues.push({ token, p: f, strength });
    }
    const strongest = strongestClues(clues);
    const probability = combine(strongest.map((c) => c.p));
    const significant = strongest.slice(0, SHOWN_CLUES).map((c) => ({ token: c.token, p: Math.round(c.p * 10_000) / 10_000 }));
    if (strongest.length < this.minTokens) return { probability, junk: false, tokens: tokens.size, significant, reason: 'few-tokens' };
    const junk = probability >= this.threshold;
    return { probability, junk, tokens: tokens.size, significant, reason: junk ? 'above-threshold' : 'below-threshold' };
  }

  /**
   * Learn a message as spam or ham. Returns whether anything changed: false when this message
   * was already trained this way. A message trained the other way is untrained from that first.
   */
  train(raw: Buffer, kind: JunkKind): boolean {
    this.#checkOpen();
    this.#refresh();
    const { fields } = headersFromRaw(raw);
    const key = trainingKey(raw, fields);
    const previous = this.#trainedAs(key);
    if (previous === kind) return false;
    const tokens = [...tokenize(raw, fields)];
    const json = JSON.stringify(tokens);
    this.#transaction(() => {
      if (previous !== undefined) this.#subtract(json, previous);
      this.#s.add.run(kind === 'spam' ? 1 : 0, kind === 'ham' ? 1 : 0, json);
      this.#s.trainedPut.run(key, kind, TOKENIZER_VERSION, Date.now());
    });
    if (previous !== undefined) {
      this.#counts[previous]--;
      this.#adjustCache(tokens, previous, -1);
    }
    this.#counts[kind]++;
    this.#adjustCache(tokens, kind, 1);
    this.#log.debug({ kind, previous, tokens: tokens.length, counts: this.#counts }, 'junk filter trained');
    return true;
  }

  /** Take back an earlier `train(raw, kind)`. Returns false (and changes nothing) if the message was not trained as `kind`. */
  untrain(raw: Buffer, kind: JunkKind): boolean {
    this.#checkOpen();
    this.#refresh();
    const { fields } = headersFromRaw(raw);
    const key = trainingKey(raw, fields);
    if (this.#trainedAs(key) !== kind) return false;
    const tokens = [...tokenize(raw, fields)];
    const json = JSON.stringify(tokens);
    this.#transaction(() => {
      this.#subtract(json, kind);
      this.#s.trainedDelete.run(key);
    });
    this.#counts[kind]--;
    this.#adjustCache(tokens, kind, -1);
    this.#log.debug({ kind, tokens: tokens.length, counts: this.#counts }, 'junk filter untrained');
    return true;
  }

  /** How this message was trained, if it was. */
  trainedAs(raw: Buffer): JunkKind | undefined {
    this.#checkOpen();
    return this.#trainedAs(trainingKey(raw));
  }

  // --- internals ---

  #checkOpen(): void {
    if (!this.#db.isOpen) throw new StoreError('STORE_CLOSED', 'junk filter is closed');
  }

  #trainedAs(key: Buffer): JunkKind | undefined {
    return (this.#s.trainedGet.get(key) as { kind: JunkKind } | undefined)?.kind;
  }

  #subtract(json: string, kind: JunkKind): void {
    this.#s.subtract.run(kind === 'spam' ? 1 : 0, kind === 'ham' ? 1 : 0, json);
    this.#s.prune.run(json);
  }

  /** Another connection (another process, a CLI) committed: our cache and counts may be stale. */
  #refresh(): void {
    const version = (this.#s.dataVersion.get() as { data_version: number }).data_version;
    if (version === this.#dataVersion) return;
    this.#dataVersion = version;
    this.#cache.clear();
    const counts = { spam: 0, ham: 0 };
    for (const row of this.#s.trainedCounts.all() as Array<{ kind: JunkKind; n: number }>) counts[row.kind] = row.n;
    this.#counts = counts;
  }

  /** Make sure every token's counts are in the cache (unknown tokens as ZERO). */
  #load(tokens: Set<string>): void {
    let missing: string[] = [];
    for (const t of tokens) if (!this.#cache.has(t)) missing.push(t);
    if (missing.length === 0) return;
    if (this.#cache.size + missing.length > CACHE_MAX) {
      this.#cache.clear();
      missing = [...tokens];
    }
    for (const t of missing) this.#cache.set(t, ZERO);
    for (const row of this.#s.lookup.all(JSON.stringify(missing)) as unknown as Array<[string, number, number]>) {
      this.#cache.set(row[0], { spam: row[1], ham: row[2] });
    }
  }

  /** Mirror of the SQL just run, for tokens already cached (counts never below zero). */
  #adjustCache(tokens: string[], kind: JunkKind, delta: 1 | -1): void {
    for (const t of tokens) {
      const c = this.#cache.get(t);
      if (c === undefined) continue;
      this.#cache.set(t, kind === 'spam' ? { spam: Math.max(0, c.spam + delta), ham: c.ham } : { spam: c.spam, ham: Math.max(0, c.ham + delta) });
    }
  }

  #transaction<T>(fn: () => T): T {
    return this.#tx.run(fn);
  }
}

// --- what a user's action means for training ---

export type TrainingEvent = { kind: 'moved'; from: string; to: string } | { kind: 'keyword'; added: string[]; removed: string[] };
export type TrainingOp = { op: 'train' | 'untrain'; as: JunkKind };
export type JunkFolders = { junk?: string; trash?: string };

// `$Junk`/`$NotJunk` are the IANA keywords (RFC 5788 registry); Thunderbird sets `Junk`/`NonJunk`.
const JUNK_KEYWORDS = new Set(['$junk', 'junk']);
const NOT_JUNK_KEYWORDS = new Set(['$notjunk', 'notjunk', '$nonjunk', 'nonjunk']);

const AS_SPAM: TrainingOp[] = [
  { op: 'untrain', as: 'ham' },
  { op: 'train', as: 'spam' },
];
const AS_HAM: TrainingOp[] = [
  { op: 'untrain', as: 'spam' },
  { op: 'train', as: 'ham' },
];
const copy = (ops: TrainingOp[]): TrainingOp[] => ops.map((o) => ({ ...o }));

/**
 * Decide what a folder change means for training, to be applied in order to each message
 * concerned. Moved (or copied) into Junk → spam; out of Junk into anything but Trash → ham
 * (deleting spam says nothing new; moving a message between other folders says nothing about
 * spam). `$Junk`/`$NotJunk` set → spam/ham; removed (without the other set) → untrain. Each
 * "train" comes with the "untrain" of the other kind, so it works with or without the filter's
 * own bookkeeping. Folder names are compared exactly (`junk` defaults to "Junk", `trash` to
 * "Trash", the special-use names mailboxes.ts creates). Pure.
 */
export function trainingFor(event: TrainingEvent, folders: JunkFolders = {}): TrainingOp[] {
  const junk = folders.junk ?? 'Junk';
  const trash = folders.trash ?? 'Trash';
  if (event.kind === 'moved') {
    if (event.from === event.to) return [];
    if (event.to === junk) return copy(AS_SPAM);
    if (event.from === junk && event.to !== trash) return copy(AS_HAM);
    return [];
  }
  const has = (list: string[], names: Set<string>): boolean => list.some((k) => names.has(k.toLowerCase()));
  const addedJunk = has(event.added, JUNK_KEYWORDS);
  const addedNotJunk = has(event.added, NOT_JUNK_KEYWORDS);
  if (addedJunk && addedNotJunk) return []; // contradictory: leave as is
  if (addedJunk) return copy(AS_SPAM);
  if (addedNotJunk) return copy(AS_HAM);
  const ops: TrainingOp[] = [];
  if (has(event.removed, JUNK_KEYWORDS)) ops.push({ op: 'untrain', as: 'spam' });
  if (has(event.removed, NOT_JUNK_KEYWORDS)) ops.push({ op: 'untrain', as: 'ham' });
  return ops;
}
