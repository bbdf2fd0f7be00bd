// Sequence sets (RFC 3501 9: sequence-set, seq-number, seq-range) as a structure the session
// resolves against a mailbox: message sequence numbers against the message count, UIDs
// against the highest UID. Also the compact form used by COPYUID/APPENDUID (RFC 4315).

/** A number, or "*": the largest number in use (the message count, or the highest UID). */
export type SeqNumber = number | '*';

/** `from:to` as written (a single number has from === to); either end may be the larger. */
export interface SeqRange {
  readonly from: SeqNumber;
  readonly to: SeqNumber;
}

export type SequenceSet = readonly SeqRange[];

const MAX_NZ = 4294967295; // RFC 3501 9: nz-number is a 32-bit unsigned value

function parseSeqNumber(text: string): SeqNumber | null {
  if (text === '*') return '*';
  // RFC 3501 9: nz-number = digit-nz *DIGIT, so no 0 and no leading zero.
  if (!/^[1-9][0-9]{0,9}$/.test(text)) return null;
  const n = Number(text);
  return n <= MAX_NZ ? n : null;
}

/** Parse `1:*`, `*:4`, `1,3:5,7`. Null for anything else (no spaces, no empty items). */
export function parseSequenceSet(text: string): SequenceSet | null {
  if (text.length === 0) return null;
  const ranges: SeqRange[] = [];
  for (const item of text.split(',')) {
    const colon = item.indexOf(':');
    if (colon < 0) {
      const n = parseSeqNumber(item);
      if (n === null) return null;
      ranges.push({ from: n, to: n });
    } else {
      const from = parseSeqNumber(item.slice(0, colon));
      const to = parseSeqNumber(item.slice(colon + 1));
      if (from === null || to === null) return null;
      ranges.push({ from, to });
    }
  }
  return ranges;
}

/** Intervals [lo, hi] clamped to 1..max, sorted and merged. */
export function intervals(set: SequenceSet, max: number): Array<[number, number]> {
  const raw: Array<[number, number]> = [];
  for (const r of set) {
    const a = r.from === '*' ? max : r.from;
    const b = r.to === '*' ? max : r.to;
    // RFC 3501 6.4.8: "n:*" when n exceeds the largest is the largest, hence min/max then clamp.
    const lo = Math.max(1, Math.min(a, b));
    const hi = Math.min(max, Math.max(a, b));
    if (lo <= hi) raw.push([lo, hi]);
  }
  raw.sort((x, y) => x[0] - y[0]);
  const merged: Array<[number, number]> = [];
  for (const iv of raw) {
    const last = merged[merged.length - 1];
    if (last && iv[0] <= last[1] + 1) last[1] = Math.max(last[1], iv[1]);
    else merged.push([iv[0], iv[1]]);
  }
  return merged;
}

/**
 * The numbers in `set` that lie in 1..max, ascending and without duplicates. `*` is `max`;
 * ranges may be reversed (`4:2`); on an empty mailbox (max 0) the result is empty. For
 * message sequence numbers, check `highestExplicit(set) <= count` first (a number beyond the
 * count is an error, RFC 3501 9 seq-number); for UIDs use `filterBySequence` instead, since
 * UIDs are sparse and `1:*` must not expand to every number up to the highest UID.
 */
export function resolveSequence(set: SequenceSet, max: number): number[] {
  const out: number[] = [];
  for (const [lo, hi] of intervals(set, max)) for (let n = lo; n <= hi; n++) out.push(n);
  return out;
}

/** Is n in the set, with `*` standing for max? */
export function sequenceHas(set: SequenceSet, n: number, max: number): boolean {
  for (const r of set) {
    const a = r.from === '*' ? max : r.from;
    const b = r.to === '*' ? max : r.to;
    if (n >= Math.min(a, b) && n <= Math.max(a, b)) return true;
  }
  return false;
}

/** The members of `values` (e.g. the mailbox's UIDs, ascending) in the set; `*` is `max`. */
export function filterBySequence(set: SequenceSet, values: readonly number[], max: number): number[] {
  const ivs = intervals(set, max);
  // Binary search in the merged intervals: a set may hold thousands of ranges and the
  // mailbox a hundred thousand UIDs.
  return values.filter((v) => {
    let a = 0;
    let b = ivs.length - 1;
    while (a <= b) {
      const m = (a + b) >> 1;
      if (v < ivs[m][0]) b = m - 1;
      else if (v > ivs[m][1]) a = m + 1;
      else return true;
    }
    return false;
  });
}

/** The largest number written in the set (0 if only `*`). */
export function highestExplicit(set: SequenceSet): number {
  let m = 0;
  for (const r of set) {
    if (r.from !== '*' && r.from > m) m = r.from;
    if (r.to !== '*' && r.to > m) m = r.to;
  }
  return m;
}

/** Compact form, e.g. [1, 2, 3, 7] → `1:3,7` (RFC 4315 uid-set). Sorted and de-duplicated. */
export function formatSequence(nums: Iterable<number>): string {
  const sorted = [...new Set(nums)].sort((a, b) => a - b);
  const parts: string[] = [];
  let i = 0;
  while (i < sorted.length) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(j === i ? `${sorted[i]}` : `${sorted[i]}:${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** The set as the client would write it (for logs and echoing). */
export function sequenceToString(set: SequenceSet): string {
  return set.map((r) => (r.from === r.to ? `${r.from}` : `${r.from}:${r.to}`)).join(',');
}
