// The synthetic INBOX the IMAP and webmail benchmarks measure: plausible plain-text messages,
// written straight through the Maildir store (no index, no fsync), so both benchmarks fill a
// mailbox the same way and their figures stay comparable.
import type { MaildirStore } from '../src/store/maildir.ts';

/** In the body of every 100th message: a word for SEARCH BODY with few hits. */
export const RARE_WORD = 'zanzibar';
const DAY = 86_400_000;
const WORDS = 'the quick brown fox jumps over lazy dog mail server index folder message report weekly meeting notes budget review draft invoice travel plans'.split(' ');

/** The headers every benchmark message starts with (Subject and Date vary with `i`). */
export function commonHeaders(i: number, date: Date): string {
  const from = i % 97;
  return (
    `From: Sender ${from} <sender${from}@remote.example>\r\nTo: Bench <bench@example.test>\r\n` +
    `Subject: ${WORDS[i % WORDS.length]} ${WORDS[(i * 7) % WORDS.length]} number ${i}\r\nDate: ${date.toUTCString().replace('GMT', '+0000')}\r\n` +
    `Message-ID: <${i}.bench@remote.example>\r\n`
  );
}

/** Words (with a line break now and then) filling message `i` to 1.5 to 5.5 KB after a head of `headLength`; every 100th has RARE_WORD. */
export function bodyText(i: number, headLength: number): string {
  const size = 1500 + ((i * 7919) % 4000);
  let body = '';
  for (let w = i; body.length < size - headLength; w += 3) {
    body += WORDS[w % WORDS.length] + (w % 11 === 0 ? '\r\n' : ' ');
    if (i % 100 === 0 && body.length > 400 && !body.includes(RARE_WORD)) body += `${RARE_WORD} `;
  }
  return body;
}

/**
 * Fill a user's INBOX with `message(i, date)` for i < count, dated 100 a day up to now, 16
 * deliveries at a time: 2/3 \Seen, 1/7 \Flagged, the newest 1% in new/. Progress and the rate
 * are printed under `label` (none when empty). Returns the seconds it took.
 */
export async function fillInbox(store: MaildirStore, user: string, count: number, label: string, message: (i: number, date: Date) => string): Promise<number> {
  const started = performance.now();
  const now = Date.now();
  let next = 0;
  let reported = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) {
      const date = new Date(now - (count - i) * (DAY / 100));
      const flags = i >= count * 0.99 ? undefined : `${i % 7 === 0 ? 'F' : ''}${i % 3 !== 0 ? 'S' : ''}`;
      await store.deliver([{ user, domain: 'example.test' }], message(i, date), { flags, mtime: date });
      if (label && i - reported >= count / 10) {
        reported = i;
        process.stdout.write(`\r  filling ${label}: ${Math.round((i / count) * 100)}%`);
      }
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  const seconds = (performance.now() - started) / 1000;
  if (label) process.stdout.write(`\r  filled ${label}: ${count} messages in ${seconds.toFixed(1)} s (${(count / seconds).toFixed(0)}/s)\n`);
  return seconds;
}
