// Turns a raw message into the set of tokens the junk filter counts (junk.ts). Pure: no I/O, no
// state. MIME decoding is fulltext.ts's (headers RFC 2047-decoded, body parts decoded from
// base64/quoted-printable and their charsets, HTML turned into text), so the filter reads the
// same text the search index does. The shape follows mox's junk/parse.go: header words carry
// their field as a prefix (`subject:free` is not `free`), body words and word pairs, URLs
// reduced to host names, one set per message (a word counts once however often it appears).
import { createHash } from 'node:crypto';
import { bodyTextFromRawSync, headersFromRaw } from './fulltext.ts';
import type { HeaderFields } from './fulltext.ts';

/**
 * Bumped when tokens change shape. Trained counts made by an older tokenizer stay in use (they
 * still mostly match); the version is recorded per trained message so a later migration can tell.
 */
export const TOKENIZER_VERSION = 1;

/** Body text read per message: past this a newsletter only adds more of the same. */
const MAX_BODY_CHARS = 200_000;
/** Raw message bytes scanned for link targets (see rawLinkHosts). */
const MAX_RAW_SCAN = 512 * 1024;
/** Distinct tokens kept per message, so one huge message cannot flood the database. */
export const MAX_TOKENS = 6000;
const MIN_WORD = 2;
const MAX_WORD = 40;

/** Headers whose words are counted, each under its own prefix. */
const WORD_FIELDS = ['subject', 'from', 'to', 'cc', 'reply-to', 'sender', 'list-id', 'x-mailer', 'user-agent'] as const;
/** Headers whose address domains become tokens (`from:@example.com`). */
const ADDRESS_FIELDS = ['from', 'to', 'cc', 'reply-to', 'sender', 'return-path'] as const;

// A word: letters, marks and digits, with apostrophes inside ("don't"); hyphens, dots, @ and
// slashes split words, so `free-shipping` gives `free`, `shipping` and the pair.
const WORD_RE = /[\p{L}\p{N}][\p{L}\p{M}\p{N}]*(?:['’][\p{L}\p{M}\p{N}]+)*/gu;
// Scripts written without spaces between words: ICU's dictionary segmenter finds the words.
const UNSPACED_RE = /[\p{sc=Han}\p{sc=Hiragana}\p{sc=Katakana}\p{sc=Thai}\p{sc=Lao}\p{sc=Khmer}\p{sc=Myanmar}]/u;
const HAN_RE = /\p{sc=Han}/u;
const URL_RE = /\b(?:https?:\/\/|www\.)[^\s<>"'()[\]{}]+/gi;
const RAW_URL_RE = /\bhttps?:\/\/([a-z0-9.-]{3,253})/gi;
const ADDRESS_DOMAIN_RE = /@([a-z0-9.-]+\.[a-z]{2,})/gi;

let segmenter: Intl.Segmenter | undefined;

/** Text as compared: compatibility forms folded (fullwidth `ＦＲＥＥ` is `free`), lower case. */
function normalise(text: string): string {
  return text.normalize('NFKC').toLowerCase();
}

/**
 * Words that carry no reusable signal: numbers, and identifiers (tracking codes, message ids)
 * that would fill the database with tokens seen exactly once. A run of four digits, or six
 * consonants/digits in a row in an ASCII word, marks an identifier (mox's looksRandom idea).
 */
function isNoise(word: string): boolean {
  let digitRun = 0;
  let idRun = 0; // consonants and digits in a row
  let ascii = true;
  let allDigits = true;
  for (let i = 0; i < word.length; i++) {
    const c = word.charCodeAt(i);
    if (c >= 0x30 && c <= 0x39) {
      if (++digitRun >= 4) return true;
      idRun++;
    } else {
      digitRun = 0;
      allDigits = false;
      if (c >= 0x80) ascii = false;
      idRun = c >= 0x61 && c <= 0x7a && !VOWEL[c - 0x61] ? idRun + 1 : 0;
    }
    if (idRun >= 6 && ascii && /^[\x00-\x7f]*$/.test(word)) return true;
  }
  return allDigits || (!ascii && /^\p{N}+$/u.test(word));
}
// a e i o u y: vowels; the rest of a..z count toward an identifier run.
const VOWEL = [...'abcdefghijklmnopqrstuvwxyz'].map((ch) => 'aeiouy'.includes(ch));

/** The words of a (normalised) text, in order, noise dropped. */
export function wordsOf(text: string): string[] {
  const out: string[] = [];
  const unspaced = UNSPACED_RE.test(text);
  for (const m of text.matchAll(WORD_RE)) {
    const word = m[0];
    if (unspaced && UNSPACED_RE.test(word)) {
      segmenter ??= new Intl.Segmenter(undefined, { granularity: 'word' });
      for (const seg of segmenter.segment(word)) {
        if (!seg.isWordLike || isNoise(seg.segment)) continue;
        // One Han character is a word in its own right; one kana is mostly a particle.
        const len = [...seg.segment].length;
        if (len <= MAX_WORD && (len >= MIN_WORD || HAN_RE.test(seg.segment))) out.push(seg.segment);
      }
      continue;
    }
    // Length in code points; UTF-16 length is the same but for astral letters, rare enough to count slowly.
    if (word.length < MIN_WORD || (word.length > MAX_WORD && [...word].length > MAX_WORD) || isNoise(word)) continue;
    out.push(word);
  }
  return out;
}

/** Add words and consecutive word pairs (`prefix` before each), up to MAX_TOKENS. */
function addWords(tokens: Set<string>, words: string[], prefix: string, pairs: boolean): void {
  for (let i = 0; i < words.length && tokens.size < MAX_TOKENS; i++) {
    tokens.add(prefix + words[i]);
    if (pairs && i > 0) tokens.add(`${prefix}${words[i - 1]} ${words[i]}`);
  }
}

/** A link target's host name, lower-cased, without port, user info or a trailing dot. */
function hostOf(url: string): string | undefined {
  let rest = url.replace(/^https?:\/\//i, '');
  rest = rest.split(/[/?#\\]/, 1)[0];
  rest = rest.slice(rest.lastIndexOf('@') + 1).replace(/:\d*$/, '').replace(/\.+$/, '');
  return /^[\p{L}\p{N}.-]{3,253}$/u.test(rest) && rest.includes('.') ? rest : undefined;
}

/** `url:host` and, for deeper names, `url:*.domain` (the last two labels), so rotating subdomains still match. */
function addHost(tokens: Set<string>, host: string): void {
  if (tokens.size >= MAX_TOKENS) return;
  const h = normalise(host);
  tokens.add(`url:${h}`);
  const labels = h.split('.');
  if (labels.length > 2) tokens.add(`url:*.${labels.slice(-2).join('.')}`);
}

/**
 * Hosts of links in the raw message. HTML converted to text loses its `href`s, the very links a
 * spammer hides behind "click here"; they are read from the undecoded bytes, which finds them in
 * 7bit, 8bit and quoted-printable parts and in headers such as List-Unsubscribe (not in base64
 * parts: fulltext.ts would have to hand them over while it decodes).
 */
function rawLinkHosts(raw: Buffer): string[] {
  const text = raw.subarray(0, MAX_RAW_SCAN).toString('latin1').replace(/=\r?\n/g, '');
  const hosts: string[] = [];
  for (const m of text.matchAll(RAW_URL_RE)) {
    const host = hostOf(m[1]);
    if (host !== undefined) hosts.push(host);
  }
  return hosts;
}

/** All tokens of one message, deduplicated. */
export function tokenize(raw: Buffer, fields: HeaderFields = headersFromRaw(raw).fields): Set<string> {
  const tokens = new Set<string>();

  for (const name of WORD_FIELDS) {
    for (const value of fields.get(name) ?? []) {
      addWords(tokens, wordsOf(normalise(value)), `${name}:`, name === 'subject');
    }
  }
  for (const name of ADDRESS_FIELDS) {
    for (const value of fields.get(name) ?? []) {
      for (const m of value.matchAll(ADDRESS_DOMAIN_RE)) tokens.add(`${name}:@${m[1].toLowerCase()}`);
    }
  }
  const messageIdHost = /@([^>\s]+)>?\s*$/.exec(fields.get('message-id')?.[0] ?? '')?.[1];
  if (messageIdHost !== undefined) tokens.add(`message-id:@${messageIdHost.toLowerCase()}`);
  const contentType = /^\s*([a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+)/i.exec(fields.get('content-type')?.[0] ?? '')?.[1];
  tokens.add(`content-type:${contentType?.toLowerCase() ?? 'none'}`);

  let body = bodyTextFromRawSync(raw);
  if (body.length > MAX_BODY_CHARS) body = body.slice(0, MAX_BODY_CHARS);
  body = normalise(body);
  // URLs become host tokens; their path words (ids, tracking codes) would only be noise.
  const hosts: string[] = [];
  body = body.replace(URL_RE, (url) => {
    const host = hostOf(url.toLowerCase().startsWith('www.') ? `http://${url}` : url);
    if (host !== undefined) hosts.push(host);
    return ' ';
  });
  // Hosts before words: when a huge message reaches MAX_TOKENS, its links matter more.
  for (const host of hosts) addHost(tokens, host);
  for (const host of rawLinkHosts(raw)) addHost(tokens, host);
  addWords(tokens, wordsOf(body), '', true);
  return tokens;
}

/**
 * What makes two copies of a message "the same message" for training: Message-ID, Date, From,
 * Subject and the body bytes (line endings normalised). A move or copy between folders keeps
 * the file as it is, and a client re-uploading it keeps these; so does the same message
 * delivered twice (two aliases), which should count once. Trace headers (Received,
 * Delivered-To) are left out for that reason.
 */
export function trainingKey(raw: Buffer, fields: HeaderFields = headersFromRaw(raw).fields): Buffer {
  const text = raw.toString('latin1');
  const m = /\r?\n\r?\n/.exec(text);
  const body = m === null ? '' : text.slice(m.index + m[0].length);
  const h = createHash('sha256');
  for (const name of ['message-id', 'date', 'from', 'subject']) h.update(`${name}:${(fields.get(name) ?? []).join('\n').trim()}\n`);
  h.update('\n');
  h.update(body.replace(/\r\n/g, '\n').replace(/\s+$/, ''), 'latin1');
  return h.digest();
}
