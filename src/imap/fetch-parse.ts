// FETCH arguments (RFC 3501 6.4.5 and 9: fetch-att, section, partial; RFC 7162 CHANGEDSINCE).
import type { Cursor } from './tokens.ts';

export type FetchSimpleName =
  | 'FLAGS'
  | 'INTERNALDATE'
  | 'RFC822'
  | 'RFC822.HEADER'
  | 'RFC822.TEXT'
  | 'RFC822.SIZE'
  | 'ENVELOPE'
  | 'BODY'
  | 'BODYSTRUCTURE'
  | 'UID'
  | 'MODSEQ';

/** Which part of the selected body part a BODY[...] asks for. */
export type SectionText = 'HEADER' | 'HEADER.FIELDS' | 'HEADER.FIELDS.NOT' | 'TEXT' | 'MIME';

export interface FetchSection {
  /** MIME part path, e.g. [1, 2] for `1.2`; empty for the whole message. */
  readonly part: readonly number[];
  /** Absent: the whole part (`BODY[]`, `BODY[1.2]`). */
  readonly text?: SectionText;
  /** For HEADER.FIELDS / HEADER.FIELDS.NOT, the field names as the client wrote them. */
  readonly fields?: readonly string[];
}

export type FetchAttribute =
  | { readonly kind: 'simple'; readonly name: FetchSimpleName }
  | {
      readonly kind: 'section';
      /** `BODY[...]` sets \Seen (RFC 3501 6.4.5); `BODY.PEEK[...]` does not. */
      readonly peek: boolean;
      readonly section: FetchSection;
      /** `<start.length>`: octets from start, at most length. */
      readonly partial?: { readonly start: number; readonly length: number };
      /**
       * The item name for the response (RFC 3501 7.4.2): `BODY[1.HEADER.FIELDS (FROM TO)]`, and
       * `<start>` when partial. Always `BODY[`, never `BODY.PEEK[`.
       */
      readonly label: string;
    };

export interface FetchArgs {
  readonly set: import('./sequence.ts').SequenceSet;
  /** Attributes in request order, macros expanded; UID first for UID FETCH (RFC 3501 6.4.8). */
  readonly attributes: readonly FetchAttribute[];
  /** ALL / FAST / FULL, when the client used one. */
  readonly macro?: 'ALL' | 'FAST' | 'FULL';
  /** RFC 7162 3.1.4 CHANGEDSINCE; implies MODSEQ in the response. */
  readonly changedSince?: number;
  /** RFC 7162 3.2.6 VANISHED (UID FETCH with CHANGEDSINCE only; QRESYNC). */
  readonly vanished?: boolean;
}

const SIMPLE = new Set<string>(['FLAGS', 'INTERNALDATE', 'RFC822', 'RFC822.HEADER', 'RFC822.TEXT', 'RFC822.SIZE', 'ENVELOPE', 'BODY', 'BODYSTRUCTURE', 'UID', 'MODSEQ']);

const MACROS: Record<'ALL' | 'FAST' | 'FULL', FetchSimpleName[]> = {
  // RFC 3501 6.4.5
  ALL: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE'],
  FAST: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE'],
  FULL: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE', 'BODY'],
};

/** A fetch-att name: letters, digits and "." up to "[", "<", SP, ")" or the end. */
function attName(cur: Cursor): string {
  const line = cur.line;
  const start = cur.pos;
  while (cur.pos < line.length) {
    const c = line[cur.pos];
    const ok = (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x2d;
    if (!ok) break;
    cur.pos++;
  }
  return line.subarray(start, cur.pos).toString('latin1').toUpperCase();
}

function parseSection(cur: Cursor): FetchSection {
  cur.expect('[');
  const part: number[] = [];
  let text: SectionText | undefined;
  let fields: string[] | undefined;
  if (cur.take(']')) return { part };
  for (;;) {
    const c = cur.peek();
    if (c >= 0x30 && c <= 0x39) {
      part.push(cur.nzNumber('a section part number'));
      if (part.length > 32) cur.fail('section nested too deeply');
      if (cur.take('.')) continue;
      break;
    }
    const word = attName(cur);
    if (word === 'HEADER' || word === 'TEXT' || word === 'HEADER.FIELDS' || word === 'HEADER.FIELDS.NOT') {
      text = word;
    } else if (word === 'MIME' && part.length > 0) {
      // RFC 3501 9: section-text MIME only after a part number.
      text = 'MIME';
    } else {
      cur.fail(`bad section ${word ? JSON.stringify(word) : cur.got()}`);
    }
    if (text === 'HEADER.FIELDS' || text === 'HEADER.FIELDS.NOT') {
      cur.sp();
      fields = cur.list(() => cur.astring('a header field name'), false, 'a header field list');
    }
    break;
  }
  cur.expect(']', '"]" to end the section');
  return fields ? { part, text, fields } : text ? { part, text } : { part };
}

export function sectionLabel(section: FetchSection): string {
  let spec = section.part.join('.');
  if (section.text) spec += (spec ? '.' : '') + section.text;
  if (section.fields) spec += ` (${section.fields.map(formatFieldName).join(' ')})`;
  return `BODY[${spec}]`;
}

function formatFieldName(name: string): string {
  return /^[!#-'*+\-.0-9A-Z^-z|~]+$/.test(name) ? name : JSON.stringify(name);
}

function parseAttribute(cur: Cursor): FetchAttribute {
  const start = cur.pos;
  const name = attName(cur);
  if ((name === 'BODY' || name === 'BODY.PEEK') && cur.peek() === 0x5b) {
    const section = parseSection(cur);
    let partial: { start: number; length: number } | undefined;
    let label = sectionLabel(section);
    if (cur.take('<')) {
      const from = cur.number('a partial start');
      cur.expect('.', '"." in a partial');
      const length = cur.nzNumber('a partial length');
      cur.expect('>', '">" to end a partial');
      partial = { start: from, length };
      label += `<${from}>`;
    }
    return partial ? { kind: 'section', peek: name === 'BODY.PEEK', section, partial, label } : { kind: 'section', peek: name === 'BODY.PEEK', section, label };
  }
  if (SIMPLE.has(name)) return { kind: 'simple', name: name as FetchSimpleName };
  cur.pos = start;
  cur.expected('a fetch attribute');
}

export function parseFetchArgs(cur: Cursor, uid: boolean): FetchArgs {
  cur.sp();
  const set = cur.sequenceSet();
  cur.sp();
  let macro: 'ALL' | 'FAST' | 'FULL' | undefined;
  let attributes: FetchAttribute[];
  if (cur.isListNext()) {
    attributes = cur.list(() => parseAttribute(cur), false, 'a fetch attribute list');
  } else {
    const start = cur.pos;
    const word = attName(cur);
    if (word === 'ALL' || word === 'FAST' || word === 'FULL') {
      macro = word;
      attributes = MACROS[word].map((name) => ({ kind: 'simple', name }));
    } else {
      cur.pos = start;
      attributes = [parseAttribute(cur)];
    }
  }
  let changedSince: number | undefined;
  let vanished = false;
  if (cur.maybeSp()) {
    // RFC 4466 fetch-modifiers: "(" fetch-modifier *(SP fetch-modifier) ")"
    cur.list(
      () => {
        if (cur.takeWord('CHANGEDSINCE')) {
          cur.sp();
          changedSince = cur.modSeq(true);
        } else if (cur.takeWord('VANISHED')) {
          vanished = true;
        } else {
          cur.expected('CHANGEDSINCE or VANISHED');
        }
      },
      false,
      'fetch modifiers',
    );
    if (vanished && (!uid || changedSince === undefined)) cur.fail('VANISHED needs UID FETCH with CHANGEDSINCE');
  }
  cur.end();
  if (uid && !attributes.some((a) => a.kind === 'simple' && a.name === 'UID')) {
    attributes = [{ kind: 'simple', name: 'UID' }, ...attributes];
  }
  const out: { -readonly [K in keyof FetchArgs]: FetchArgs[K] } = { set, attributes };
  if (macro) out.macro = macro;
  if (changedSince !== undefined) out.changedSince = changedSince;
  if (vanished) out.vanished = true;
  return out;
}
