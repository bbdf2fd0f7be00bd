// Paging through a search while the full-text index catches up (a folder searched for the first
// time, or every folder after the index's layout changed): pages must neither repeat nor skip.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { userSearch } from '../../src/store/user-search.ts';
import type { MessageList } from '../../src/webmail/api-types.ts';
import { client, makeHarness, message } from './api-harness.ts';
import type { Harness, Login } from './api-harness.ts';

let h: Harness;
let api: ReturnType<typeof client>;
let alice: Login;
const box = { user: 'alice', domain: 'example.test' };

beforeAll(async () => {
  h = await makeHarness();
  api = client(h.app);
  alice = await api.login('alice@example.test', 'alice-password');
});
afterAll(() => h?.close());

it('pages of a search do not repeat or skip a message when the index fills in between them', async () => {
  // 12 messages with the word, one of them only with diacritics (both ways of searching fold
  // them). A next page that searched again from the top, the index filled in by then, showed 8 twice.
  for (let i = 1; i <= 12; i++) await h.deliver('alice@example.test', message({ subject: `message ${i}`, body: i === 9 ? 'the zänzibar plan' : 'the zanzibar plan' }));
  const mb = await h.mail.open(box);
  const search = userSearch(mb)!;
  await search.idle();
  // As after an upgrade of the index file: nothing held yet.
  const state = await mb.sync('INBOX');
  search.index.removeFolder('INBOX');
  expect(search.index.indexedUids('INBOX', state.uidValidity).size).toBe(0);
  const page = async (offset: number): Promise<MessageList> => (await api.json<MessageList>('GET', `/api/search?folder=INBOX&q=zanzibar&offset=${offset}&limit=4`, alice)).body;
  const first = await page(0);
  // The first search asked for the folder to be indexed: let that finish before the next page.
  await search.idle();
  expect(search.index.indexedUids('INBOX', state.uidValidity).size).toBe(12);
  const seen = first.messages.map((m) => m.subject);
  let last = first;
  for (let offset = 4; offset < last.total || last.more; offset += 4) {
    last = await page(offset);
    seen.push(...last.messages.map((m) => m.subject));
    if (last.messages.length === 0) break;
  }
  expect(new Set(seen).size).toBe(seen.length);
  // Newest first throughout, and the total is what the pages showed.
  const numbers = seen.map((s) => Number(s.split(' ')[1]));
  expect(numbers).toEqual([...numbers].sort((a, b) => b - a));
  expect(last.more).toBeUndefined();
  expect(last.total).toBe(seen.length);
  expect(seen.length).toBe(12);
});

it('finds the same messages before and after the folder is indexed: diacritics and Bcc-only addresses', async () => {
  await h.deliver('alice@example.test', message({ subject: 'Menu du Café Ørsted', body: 'see you there' }));
  await h.deliver('alice@example.test', message({ subject: 'minutes', headers: 'Bcc: quietwatcher@elsewhere.example' }));
  await h.deliver('alice@example.test', message({ subject: 'ガイド', body: 'カード' })); // Japanese marks are part of the letter: not folded
  const mb = await h.mail.open(box);
  const search = userSearch(mb)!;
  await search.idle();
  const state = await mb.sync('INBOX');
  const subjects = async (q: string): Promise<string[]> =>
    (await api.json<MessageList>('GET', `/api/search?folder=INBOX&q=${encodeURIComponent(q)}&limit=50`, alice)).body.messages.map((m) => m.subject).sort();
  const queries = ['cafe du', 'café', 'quietwatcher', 'to:quietwatcher', 'カイド', 'ガイド'];
  // Unindexed: the summaries and bodies are checked one by one.
  search.index.removeFolder('INBOX');
  const before: Record<string, string[]> = {};
  for (const q of queries) {
    before[q] = await subjects(q);
    search.index.removeFolder('INBOX'); // each search asks for indexing: keep it unindexed
  }
  await subjects('reindex please');
  await search.idle();
  expect(search.index.indexedUids('INBOX', state.uidValidity).size).toBeGreaterThan(0);
  const after: Record<string, string[]> = {};
  for (const q of queries) after[q] = await subjects(q);
  expect(before).toEqual(after);
  expect(before['cafe du']).toEqual(['Menu du Café Ørsted']);
  expect(before['café']).toEqual(['Menu du Café Ørsted']);
  expect(before.quietwatcher).toEqual(['minutes']);
  expect(before['to:quietwatcher']).toEqual(['minutes']);
  expect(before['ガイド']).toEqual(['ガイド']);
  expect(before['カイド']).toEqual([]);
});
