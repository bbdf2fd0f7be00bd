// Webmail search stops at a page: the full-text index is asked for the newest matches only
// (asked again, further down the folder, when those run out), and the API says when more may
// follow. Whatever the page size or the number of asks, the answer is the same as checking
// every message, newest first.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bodyTextFromRawSync } from '../../src/store/fulltext.ts';
import { userSearch } from '../../src/store/user-search.ts';
import type { MessageList } from '../../src/webmail/api-types.ts';
import { parseQuery, searchUids } from '../../src/webmail/listing.ts';
import type { SearchQuery } from '../../src/webmail/listing.ts';
import { client, makeHarness, message } from './api-harness.ts';
import type { Harness, Login } from './api-harness.ts';

let h: Harness;
let api: ReturnType<typeof client>;
let alice: Login;
/** Subjects by UID, and which bodies have the rare word. */
const subjects = new Map<number, string>();

const COUNT = 40;
const bodyOf = (i: number): string => (i % 3 === 0 ? `note ${i}: the zanzibar plan` : i % 5 === 0 ? `note ${i}: zanzibar` : `note ${i}: nothing to see`);

async function uidsOf(q: string, opts: { want?: number; firstAsk?: number } = {}) {
  const mb = await h.mail.open({ user: 'alice', domain: 'example.test' });
  const state = await mb.sync('INBOX');
  return searchUids(h.summaries, mb, 'INBOX', state, parseQuery(q) as SearchQuery, async (rec) => {
    const raw = await mb.readMessage('INBOX', rec.uid);
    return raw ? bodyTextFromRawSync(raw) : '';
  }, opts);
}

/** Every message checked by hand: UIDs whose subject or body has all the words, newest first. */
function expected(words: string[]): number[] {
  const out: number[] = [];
  for (const [uid, subject] of [...subjects].sort((a, b) => b[0] - a[0])) {
    const i = Number(subject.split(' ')[1]);
    if (words.every((w) => bodyOf(i).includes(w) || subject.includes(w))) out.push(uid);
  }
  return out;
}

describe('search, a page at a time', () => {
  beforeAll(async () => {
    h = await makeHarness();
    api = client(h.app);
    alice = await api.login('alice@example.test', 'alice-password');
    for (let i = 1; i <= COUNT; i++) await h.deliver('alice@example.test', message({ subject: `message ${i}`, body: bodyOf(i) }));
    const list = (await api.json<MessageList>('GET', `/api/folders/INBOX/messages?limit=500`, alice)).body;
    for (const m of list.messages) subjects.set(m.uid, m.subject);
    const mb = await h.mail.open({ user: 'alice', domain: 'example.test' });
    userSearch(mb)!.schedule('INBOX');
    await userSearch(mb)!.idle();
  });
  afterAll(() => h?.close());

  it('stops after `want` matches, newest first, and says more may follow', async () => {
    const all = expected(['zanzibar']);
    expect(all.length).toBe(19);
    const first = await uidsOf('zanzibar', { want: 4, firstAsk: 2 });
    expect(first).toEqual({ uids: all.slice(0, 4), partial: false, more: true, unindexed: 0 });
    // Asking the index two at a time, then 8, 32: still every match, in order.
    expect(await uidsOf('zanzibar', { firstAsk: 2 })).toEqual({ uids: all, partial: false, more: false, unindexed: 0 });
    expect((await uidsOf('zanzibar', { want: all.length, firstAsk: 1 })).uids).toEqual(all);
    // Two words: the index answers both at once.
    expect((await uidsOf('zanzibar plan', { firstAsk: 3 })).uids).toEqual(expected(['zanzibar', 'plan']));
    expect((await uidsOf('plan zanzibar', { want: 2, firstAsk: 1 })).uids).toEqual(expected(['zanzibar', 'plan']).slice(0, 2));
    // A short word the index cannot look up is checked on the index's candidates.
    expect((await uidsOf('zanzibar 3', { firstAsk: 2 })).uids).toEqual(expected(['zanzibar', '3']));
    expect((await uidsOf('nothing-like-this', { want: 5, firstAsk: 2 })).uids).toEqual([]);
  });

  it('finds messages the index does not hold yet, in their place', async () => {
    const mb = await h.mail.open({ user: 'alice', domain: 'example.test' });
    const index = userSearch(mb)!.index;
    const state = await mb.sync('INBOX');
    // Forget three messages, as if they had just arrived: they are read and checked instead.
    const forgotten = expected(['zanzibar']).slice(1, 4);
    index.remove('INBOX', state.uidValidity, forgotten);
    const got = await uidsOf('zanzibar', { firstAsk: 2 });
    expect(got.uids).toEqual(expected(['zanzibar']));
    expect(got.unindexed).toBe(3);
    userSearch(mb)!.schedule('INBOX');
    await userSearch(mb)!.idle();
    expect((await uidsOf('zanzibar', { firstAsk: 2 })).unindexed).toBe(0);
  });

  it('the API pages through with `more`, and the total grows to the exact count', async () => {
    const all = expected(['zanzibar']);
    const page = async (offset: number): Promise<MessageList> => (await api.json<MessageList>('GET', `/api/search?folder=INBOX&q=zanzibar&offset=${offset}&limit=5`, alice)).body;
    const first = await page(0);
    expect(first.total).toBe(6); // the page and one more: enough to know there is a next page
    expect(first.more).toBe(true);
    const seen = first.messages.map((m) => m.uid);
    let offset = 5;
    let last = first;
    // As the list does: the next page while rows are missing, the total growing as it goes.
    while (offset < last.total) {
      last = await page(offset);
      seen.push(...last.messages.map((m) => m.uid));
      offset += 5;
    }
    expect(seen).toEqual(all);
    expect(last.total).toBe(all.length);
    expect(last.more).toBeUndefined();
    // The first page again answers from what was found: the exact total now.
    const again = await page(0);
    expect(again.total).toBe(all.length);
    expect(again.messages.map((m) => m.uid)).toEqual(all.slice(0, 5));
    // A new message changes the folder: the search runs again, and finds it first.
    await h.deliver('alice@example.test', message({ subject: 'message 41', body: 'zanzibar news' }));
    const fresh = await page(0);
    expect(fresh.messages[0].subject).toBe('message 41');
    expect(fresh.more).toBe(true);
  });

  it('finds a word past the part of a long body the index holds', async () => {
    const filler = `${'lorem ipsum dolor sit amet '.repeat(40)}\n`.repeat(4100); // over 4 MiB of text
    await h.deliver('alice@example.test', message({ subject: 'message 42', body: `${filler}the zanzibar appendix\n` }));
    await h.deliver('alice@example.test', message({ subject: 'message 43', body: 'nothing here' }));
    const mb = await h.mail.open({ user: 'alice', domain: 'example.test' });
    userSearch(mb)!.schedule('INBOX');
    await userSearch(mb)!.idle();
    const state = await mb.sync('INBOX');
    const long = state.messages[state.messages.length - 2].uid;
    const held = userSearch(mb)!.index.indexedBetween('INBOX', state.uidValidity, long, long);
    expect([...held.partial]).toEqual([long]); // indexed, but only in part
    const got = await uidsOf('zanzibar appendix', { firstAsk: 2 });
    expect(got.uids).toEqual([long]);
    expect(got.unindexed).toBe(0);
    expect((await uidsOf('zanzibar', { want: 2, firstAsk: 1 })).uids[0]).toBe(long);
  });
});
