// FETCH and UID FETCH (RFC 3501 6.4.5, 6.4.8, 7.4.2; CONDSTORE MODSEQ and CHANGEDSINCE RFC
// 7162 3.1.4). Responses are written message by message with socket backpressure; a large
// BODY[] / RFC822 is streamed from the file in chunks (bare LF turned into CRLF on the way)
// rather than read whole. ENVELOPE, BODYSTRUCTURE and BODY come from the shared summary
// provider; sections from fetch-body.ts.
import { Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import type { MessageRecord, UserMailboxes } from '../../store/mailboxes.ts';
import { imapDate } from '../format.ts';
import type { CommandOf, FetchAttribute } from '../parse.ts';
import type { ImapSession } from '../session.ts';
import type { SelectedView, ViewMessage } from '../selected.ts';
import { resolveSet } from './messages.ts';
import { applyPartial, extractSection, toCrlf } from '../fetch-body.ts';

/** What FETCH needs of a message's parsed summary (message-info.ts's MessageSummary fits). */
export type SummaryLike = { envelope: string; bodyStructure: string; body: string; rfc822Size: number; bareLf: boolean };
/** The shared summary cache (message-info.ts's SummaryProvider fits). */
export type SummarySource = {
  get(mailboxes: UserMailboxes, folder: string, record: MessageRecord): Promise<SummaryLike | null>;
  warm?(mailboxes: UserMailboxes, folder: string, records: MessageRecord[]): unknown;
};

/** Whole-message bodies above this are streamed from the file instead of read into memory. */
const STREAM_ABOVE = 256 * 1024;
/** Untagged responses are gathered up to this many bytes per socket write. */
const WRITE_BATCH = 64 * 1024;

const SUMMARY_ITEMS = new Set(['ENVELOPE', 'BODYSTRUCTURE', 'BODY']);
/** Items the index record holds: FETCHes of only these take the fast path (fastFetch). */
const RECORD_ITEMS = new Set(['UID', 'FLAGS', 'RFC822.SIZE', 'INTERNALDATE', 'MODSEQ']);

/** For tests: turn the fast path off to compare its output with the general path's. */
export const fetchTuning = { fastPath: true };

type Part = string | Buffer | { stream: () => Promise<NodeJS.ReadableStream | null>; size: number };

export async function do_SELECTED_FETCH(this: ImapSession, cmd: CommandOf<'FETCH'>): Promise<void> {
  const view = this.view!;
  const msgs = await resolveSet(this, cmd);
  if (!msgs) return;
  const { attributes, changedSince } = cmd.args;
  const askedModseq = attributes.some((a) => a.kind === 'simple' && a.name === 'MODSEQ');
  if (askedModseq || changedSince !== undefined) this.enableCondstore();
  const withModseq = askedModseq || changedSince !== undefined;
  // RFC 3501 6.4.5: BODY[...] (not PEEK), RFC822 and RFC822.TEXT set \Seen.
  const setsSeen =
    !view.readOnly && attributes.some((a) => (a.kind === 'section' && !a.peek) || (a.kind === 'simple' && (a.name === 'RFC822' || a.name === 'RFC822.TEXT')));
  // Flags and new messages may be reported now; EXPUNGE not, for FETCH by number (7.4.1).
  await this.flushUpdates(cmd.uid);

  let targets: ViewMessage[] = msgs;
  if (changedSince !== undefined) targets = msgs.filter((m) => (view.record(m.rec.uid)?.modseq ?? 0) > changedSince);
  const seenNow = new Set<number>();
  if (setsSeen) {
    const unseen = targets.filter((m) => !view.record(m.rec.uid)?.flags.includes('\\Seen')).map((m) => m.rec.uid);
    if (unseen.length > 0) {
      const res = await this.withTimerPaused(() => this.mailboxes!.setFlags(view.folder, unseen, 'add', ['\\Seen']));
      view.forgetFlags(res.changed);
      for (const r of res.changed) seenNow.add(r.uid);
    }
  }
  const needsSummary = attributes.some((a) => a.kind === 'simple' && SUMMARY_ITEMS.has(a.name));
  const summaries = this.opts.summaries;
  if (needsSummary && summaries?.warm && targets.length > 1) summaries.warm(this.mailboxes!, view.folder, targets.map((m) => m.rec));

  if (fetchTuning.fastPath && attributes.every((a) => a.kind === 'simple' && RECORD_ITEMS.has(a.name))) {
    const gone = await this.withTimerPaused(() => fastFetch(this, targets, attributes, withModseq));
    if (gone > 0) return this.tagged(cmd.tag, 'NO', '[EXPUNGEISSUED] some messages were expunged and could not be fetched');
    return this.tagged(cmd.tag, 'OK', `${cmd.uid ? 'UID ' : ''}FETCH completed`);
  }

  let gone = 0;
  let batch = '';
  const flush = async (): Promise<void> => {
    if (batch) {
      const b = batch;
      batch = '';
      await this.write(b);
    }
  };
  await this.withTimerPaused(async () => {
    for (const m of targets) {
      if (this.conn.closed) return;
      const rec = currentRecord(view, m);
      if (!rec) continue;
      const parts = await messageParts(this, view.folder, rec, m.seq, attributes, { withModseq, addFlags: seenNow.has(rec.uid) });
      if (parts === null) {
        gone++;
        continue;
      }
      for (const p of parts) {
        if (typeof p === 'string') {
          batch += p;
          continue;
        }
        await flush();
        if (Buffer.isBuffer(p)) await this.write(p);
        else await streamPart(this, p);
      }
      if (batch.length >= WRITE_BATCH) await flush();
    }
    await flush();
  });
  if (gone > 0) {
    // RFC 2180 4.1.2 / RFC 5530: some messages were expunged by another session meanwhile.
    return this.tagged(cmd.tag, 'NO', '[EXPUNGEISSUED] some messages were expunged and could not be fetched');
  }
  await this.tagged(cmd.tag, 'OK', `${cmd.uid ? 'UID ' : ''}FETCH completed`);
}

/** The record the view shows now for a message resolved earlier in the command. */
function currentRecord(view: SelectedView, m: ViewMessage): MessageRecord | undefined {
  const at = view.messages[m.seq - 1];
  return at !== undefined && at.uid === m.rec.uid ? at : view.record(m.rec.uid);
}

/** Bytes of the fast path's output buffers: each is handed to the socket whole, then a new one is begun. */
const FAST_CHUNK = 64 * 1024;
/** `FLAGS (...)` as bytes, per shared (frozen) flags array of the store: most messages share a handful. */
const flagsBytes = new WeakMap<readonly string[], Buffer>();
const ASCII_FETCH = Buffer.from(' FETCH (');
const ASCII_END = Buffer.from(')\r\n');

/**
 * FETCH of items the index record holds (UID, FLAGS, RFC822.SIZE, INTERNALDATE, MODSEQ), the
 * usual `1:* (UID FLAGS)` of a client opening a folder: no await per message, the responses
 * written as ASCII into large buffers handed to the socket with backpressure. Byte for byte what
 * messageParts would write. A message without W= whose RFC822.SIZE needs the summary takes the
 * general path. Returns how many messages had gone.
 */
async function fastFetch(session: ImapSession, targets: readonly ViewMessage[], attributes: readonly FetchAttribute[], withModseq: boolean): Promise<number> {
  const view = session.view!;
  const names = attributes.map((a) => (a as { name: string }).name);
  const sawModseq = names.includes('MODSEQ');
  const needsSize = names.includes('RFC822.SIZE');
  const slowSize = needsSize && session.opts.summaries !== undefined;
  let buf = Buffer.allocUnsafeSlow(FAST_CHUNK);
  let pos = 0;
  let gone = 0;
  const flush = async (): Promise<void> => {
    if (pos === 0) return;
    const out = buf.subarray(0, pos);
    buf = Buffer.allocUnsafeSlow(FAST_CHUNK);
    pos = 0;
    await session.write(out);
  };
  const putBytes = (b: Buffer): void => {
    b.copy(buf, pos);
    pos += b.length;
  };
  const putText = (t: string): void => {
    pos += buf.write(t, pos, 'utf8');
  };
  const putInt = (n: number): void => {
    if (n < 10) {
      buf[pos++] = 48 + n;
      return;
    }
    let digits = 1;
    for (let x = n; x >= 10; x = Math.floor(x / 10)) digits++;
    let at = pos + digits;
    pos = at;
    for (let x = n; at > pos - digits; x = Math.floor(x / 10)) buf[--at] = 48 + (x % 10);
  };
  for (let i = 0; i < targets.length; i++) {
    if (session.conn.closed) return gone;
    const m = targets[i];
    const rec = currentRecord(view, m);
    if (!rec) continue;
    const recent = view.recent.has(rec.uid);
    let flagBytes: Buffer | undefined;
    if (!recent && Object.isFrozen(rec.flags)) {
      flagBytes = flagsBytes.get(rec.flags);
      if (flagBytes === undefined) flagsBytes.set(rec.flags, (flagBytes = Buffer.from(`FLAGS (${rec.flags.join(' ')})`)));
    }
    // Room for the longest response this message can have (items may be repeated), else a new buffer.
    const flagsRoom = flagBytes ? flagBytes.length : 3 * (rec.flags.join(' ').length + 20);
    const room = 64 + names.length * (48 + flagsRoom);
    if (pos + room > buf.length) {
      await flush();
      if (session.conn.closed) return gone;
      if (room > buf.length) buf = Buffer.allocUnsafeSlow(room);
    }
    if (slowSize && rec.vsize === null) {
      // A file written by another program: its CRLF size comes from the summary.
      const parts = await messageParts(session, view.folder, rec, m.seq, attributes, { withModseq, addFlags: false });
      if (parts === null) {
        gone++;
        continue;
      }
      const text = parts.join('');
      if (pos + Buffer.byteLength(text) <= buf.length) {
        putText(text);
      } else {
        await flush();
        await session.write(text);
      }
      continue;
    }
    buf[pos++] = 42; // '*'
    buf[pos++] = 32;
    putInt(m.seq);
    putBytes(ASCII_FETCH);
    for (let k = 0; k < names.length; k++) {
      if (k > 0) buf[pos++] = 32;
      switch (names[k]) {
        case 'UID':
          putText('UID ');
          putInt(rec.uid);
          break;
        case 'FLAGS':
          if (flagBytes) putBytes(flagBytes);
          else putText(`FLAGS (${view.flagsOf(rec).join(' ')})`);
          break;
        case 'INTERNALDATE':
          putText(`INTERNALDATE "${imapDate(rec.internalDate)}"`);
          break;
        case 'MODSEQ':
          putText('MODSEQ (');
          putInt(rec.modseq);
          buf[pos++] = 41; // ')'
          break;
        case 'RFC822.SIZE':
          putText('RFC822.SIZE ');
          putInt(rec.vsize ?? rec.size);
          break;
      }
    }
    if (withModseq && !sawModseq) {
      putText(' MODSEQ (');
      putInt(rec.modseq);
      buf[pos++] = 41;
    }
    putBytes(ASCII_END);
  }
  await flush();
  return gone;
}

/** The FETCH response of one message as strings, literal buffers and streams; null if it is gone. */
async function messageParts(
  session: ImapSession,
  folder: string,
  rec: MessageRecord,
  seq: number,
  attributes: readonly FetchAttribute[],
  opts: { withModseq: boolean; addFlags: boolean },
): Promise<Part[] | null> {
  const view = session.view!;
  const items: Part[][] = [];
  let summary: SummaryLike | null | undefined;
  const getSummary = async (): Promise<SummaryLike | null> => {
    if (summary === undefined) summary = session.opts.summaries ? await session.opts.summaries.get(session.mailboxes!, folder, rec) : null;
    return summary;
  };
  let raw: Buffer | null | undefined;
  const getRaw = async (): Promise<Buffer | null> => {
    if (raw === undefined) {
      const data = await session.mailboxes!.readMessage(folder, rec.uid);
      raw = data === null ? null : toCrlf(data);
    }
    return raw;
  };
  let sawFlags = false;
  let sawModseq = false;
  for (const a of attributes) {
    if (a.kind === 'simple') {
      switch (a.name) {
        case 'UID':
          items.push([`UID ${rec.uid}`]);
          break;
        case 'FLAGS':
          sawFlags = true;
          items.push([`FLAGS (${view.flagsOf(rec).join(' ')})`]);
          break;
        case 'INTERNALDATE':
          items.push([`INTERNALDATE "${imapDate(rec.internalDate)}"`]);
          break;
        case 'MODSEQ':
          sawModseq = true;
          items.push([`MODSEQ (${rec.modseq})`]);
          break;
        case 'RFC822.SIZE': {
          // The CRLF size from the file name (W=): a client's first `1:* (RFC822.SIZE)` on a big
          // folder parses nothing. Only files written by other programs need the summary.
          if (rec.vsize !== null) {
            items.push([`RFC822.SIZE ${rec.vsize}`]);
            break;
          }
          const s = session.opts.summaries ? await getSummary() : null;
          items.push([`RFC822.SIZE ${s ? s.rfc822Size : rec.size}`]);
          break;
        }
        case 'ENVELOPE':
        case 'BODYSTRUCTURE':
        case 'BODY': {
          const s = await getSummary();
          if (!s) return null;
          items.push([`${a.name} ${a.name === 'ENVELOPE' ? s.envelope : a.name === 'BODY' ? s.body : s.bodyStructure}`]);
          break;
        }
        case 'RFC822':
        case 'RFC822.HEADER':
        case 'RFC822.TEXT': {
          const section = a.name === 'RFC822' ? { part: [] } : { part: [], text: a.name === 'RFC822.HEADER' ? ('HEADER' as const) : ('TEXT' as const) };
          if (a.name === 'RFC822' && rec.size > STREAM_ABOVE) {
            const whole = await wholeMessage(session, folder, rec, rec.vsize === null ? await getSummary() : null);
            if (!whole) return null;
            items.push([`RFC822 {${whole.size}}\r\n`, whole]);
            break;
          }
          const data = await getRaw();
          if (data === null) return null;
          const body = extractSection(data, section);
          items.push([`${a.name} {${body.length}}\r\n`, body]);
          break;
        }
      }
      continue;
    }
    // BODY[section]<partial>
    if (a.section.part.length === 0 && a.section.text === undefined && a.partial === undefined && rec.size > STREAM_ABOVE) {
      const whole = await wholeMessage(session, folder, rec, rec.vsize === null ? await getSummary() : null);
      if (!whole) return null;
      items.push([`${a.label} {${whole.size}}\r\n`, whole]);
      continue;
    }
    const data = await getRaw();
    if (data === null) return null;
    const body = applyPartial(extractSection(data, a.section), a.partial);
    items.push([`${a.label} {${body.length}}\r\n`, body]);
  }
  // RFC 3501 6.4.5: a fetch that set \Seen reports the new flags; RFC 7162 3.1.4.1: CHANGEDSINCE and
  // MODSEQ responses carry MODSEQ.
  if (opts.addFlags && !sawFlags) items.push([`FLAGS (${view.flagsOf(rec).join(' ')})`]);
  if (opts.withModseq && !sawModseq) items.push([`MODSEQ (${rec.modseq})`]);
  const out: Part[] = [`* ${seq} FETCH (`];
  items.forEach((parts, i) => {
    if (i > 0) out.push(' ');
    out.push(...parts);
  });
  out.push(')\r\n');
  // Merge adjacent strings so small responses are one string.
  const merged: Part[] = [];
  for (const p of out) {
    const last = merged[merged.length - 1];
    if (typeof p === 'string' && typeof last === 'string') merged[merged.length - 1] = last + p;
    else merged.push(p);
  }
  return merged;
}

/**
 * A whole message to stream: its size as sent (CRLF), and how to open it. The size and whether
 * line ends need converting come from the record's vsize when known (W= counts the bare LFs),
 * else from the summary.
 */
async function wholeMessage(session: ImapSession, folder: string, rec: MessageRecord, summary: SummaryLike | null): Promise<{ stream: () => Promise<NodeJS.ReadableStream | null>; size: number } | null> {
  const mailboxes = session.mailboxes!;
  const bareLf = rec.vsize !== null ? rec.vsize !== rec.size : summary ? summary.bareLf : false;
  const size = rec.vsize ?? (summary ? summary.rfc822Size : rec.size);
  return {
    size,
    stream: async () => {
      const s = await mailboxes.openMessage(folder, rec.uid);
      if (!s) return null;
      return bareLf ? s.pipe(crlfStream()) : s;
    },
  };
}

async function streamPart(session: ImapSession, p: { stream: () => Promise<NodeJS.ReadableStream | null>; size: number }): Promise<void> {
  const stream = await p.stream();
  let sent = 0;
  if (stream) {
    try {
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        if (session.conn.closed) break;
        const take = chunk.length > p.size - sent ? chunk.subarray(0, p.size - sent) : chunk;
        if (take.length > 0) await session.write(take);
        sent += take.length;
      }
    } finally {
      (stream as unknown as { destroy?: () => void }).destroy?.();
    }
  }
  // The literal's size is promised already: pad if the file shrank under us (never expected).
  if (sent < p.size && !session.conn.closed) await session.write(Buffer.alloc(p.size - sent, 0x20));
}

/** Bare LF to CRLF on a stream (chunk boundaries anywhere). */
export function crlfStream(): Transform {
  let lastCR = false;
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
      const out: Buffer[] = [];
      let start = 0;
      for (let i = chunk.indexOf(0x0a); i >= 0; i = chunk.indexOf(0x0a, i + 1)) {
        const prevCR = i > 0 ? chunk[i - 1] === 0x0d : lastCR;
        if (!prevCR) {
          out.push(chunk.subarray(start, i), CRLF);
          start = i + 1;
        }
      }
      out.push(chunk.subarray(start));
      if (chunk.length > 0) lastCR = chunk[chunk.length - 1] === 0x0d;
      cb(null, Buffer.concat(out));
    },
  });
}
const CRLF = Buffer.from('\r\n');
