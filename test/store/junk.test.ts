import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/core/log.ts';
import { JUNK_FILE, JunkFilter, trainingFor } from '../../src/store/junk.ts';
import type { JunkFilterOptions, TrainingEvent, TrainingOp } from '../../src/store/junk.ts';
import { tokenize, trainingKey } from '../../src/store/junk-tokens.ts';
import { prng } from '../helpers/prng.ts';

let dir: string;
let open: JunkFilter[];

beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'hearth-junk-'));
  open = [];
});
afterEach(async () => {
  for (const f of open) f.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

function openFilter(opts: Partial<JunkFilterOptions> = {}, file = JunkFilter.pathFor(dir)): JunkFilter {
  const f = JunkFilter.open(file, { log: silentLogger(), ...opts });
  open.push(f);
  return f;
}

// --- a small corpus, written for this test (from a seeded prng, so the figures are the same every run) ---

type Encoding = '7bit' | '8bit' | 'base64' | 'quoted-printable';
type Eml = { from: string; to?: string; subject: string; text: string; html?: string; encoding?: Encoding; id: string; extraHeaders?: string[] };

function encodeBody(text: string, encoding: Encoding): string {
  if (encoding === 'base64') return (Buffer.from(text, 'utf8').toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
  if (encoding === 'quoted-printable') {
    return [...Buffer.from(text.replace(/\r?\n/g, '\n'), 'utf8')]
      .map((b) => (b === 0x0a ? '\r\n' : b === 0x3d || b > 0x7e ? `=${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b)))
      .join('');
  }
  return text.replace(/\r?\n/g, '\r\n');
}

function encodedWord(s: string): string {
  return /^[\x20-\x7e]*$/.test(s) ? s : `=?utf-8?b?${Buffer.from(s, 'utf8').toString('base64')}?=`;
}

function eml(m: Eml): Buffer {
  const enc = m.encoding ?? '8bit';
  const head = [
    `From: ${m.from}`,
    `To: ${m.to ?? 'Sam Hearth <sam@hearth.test>'}`,
    `Subject: ${encodedWord(m.subject)}`,
    `Date: Mon, 3 Mar 2025 10:00:00 +0000`,
    `Message-ID: <${m.id}>`,
    'MIME-Version: 1.0',
    ...(m.extraHeaders ?? []),
  ];
  if (m.html === undefined) {
    return Buffer.from([...head, 'Content-Type: text/plain; charset=utf-8', `Content-Transfer-Encoding: ${enc}`, '', encodeBody(m.text, enc), ''].join('\r\n'));
  }
  const b = `b-${m.id.replace(/\W/g, '')}`;
  return Buffer.from(
    [
      ...head,
      `Content-Type: multipart/alternative; boundary="${b}"`,
      '',
      `--${b}`,
      'Content-Type: text/plain; charset=utf-8',
      `Content-Transfer-Encoding: ${enc}`,
      '',
      encodeBody(m.text, enc),
      `--${b}`,
      'Content-Type: text/html; charset=utf-8',
      `Content-Transfer-Encoding: ${enc}`,
      '',
      encodeBody(m.html, enc),
      `--${b}--`,
      '',
    ].join('\r\n'),
  );
}

const SPAM_SENTENCES = [
  'Congratulations, you have been selected to receive a free gift card worth 500 dollars.',
  'Act now, this exclusive offer expires tonight at midnight.',
  'Lose weight fast with our miracle pills, no diet and no exercise needed.',
  'Claim your prize today by confirming your bank account details.',
  'Cheap replica watches and designer handbags at 90% discount.',
  'Earn thousands of dollars per week working from home.',
  'Your account has been suspended, verify your password immediately.',
  'Limited time offer: buy one get three free, free shipping worldwide.',
  'Meet hot singles in your area tonight, no credit card required.',
  'Increase your credit score overnight with this one weird trick.',
  'We are pleased to inform you that you won the international lottery.',
  'Unsubscribe at any time, this is not spam, you opted in to our promotions.',
  'Best prices on prescription medication without a prescription.',
  'Click the link below to claim your reward before it is too late.',
  'Dear beneficiary, a sum of ten million dollars awaits your confirmation.',
  'Make money online fast, guaranteed income, risk free investment.',
  'Exclusive deal for valued customers only, order now and save big.',
  'Your package could not be delivered, pay the customs fee to release it.',
  'Crypto trading bot doubles your bitcoin in seven days, guaranteed profit.',
  'Urgent business proposal, kindly reply with your full name and phone number.',
  'Hot deals on cheap loans, instant approval, no credit check.',
  'Enlarge your results, amazing formula, satisfaction guaranteed or money back.',
  'Dear customer, your invoice is attached, open the attachment to pay now.',
  'Special promotion: win a brand new iPhone, just complete this short survey.',
  'You have one unread message from a secret admirer, login to see it.',
  'Refinance your mortgage today and lower your monthly payments dramatically.',
  'Get rich quick with this proven system, thousands of happy customers.',
  'Casino bonus: deposit now and receive 200 free spins instantly.',
  'Final notice: your warranty is about to expire, call now to renew.',
  'Your email has won a cash prize, send your details to the claims agent.',
  // Held out: only the evaluation messages use these.
  'Amazing discount on luxury watches, order today, free express shipping.',
  'Confirm your password now or your mailbox will be closed within 24 hours.',
  'Work from home and earn guaranteed cash every single day.',
  'Cheap medication online, no prescription needed, discreet delivery.',
  'You are the lucky winner of our prize draw, claim your money now.',
  'Investment opportunity with guaranteed returns, act now before it is gone.',
  'Free gift for you, just pay shipping, limited offer for valued customers.',
  'Your bank account is locked, click here to verify your identity.',
];
const HAM_SENTENCES = [
  'Are we still on for lunch on Thursday at the usual place?',
  'I attached the minutes from yesterday\'s meeting, have a look when you can.',
  'The kids had a great time at the lake, thanks again for inviting us.',
  'Could you review my pull request before the release branch is cut?',
  'Mum says the garden is finally blooming after all that rain.',
  'I booked the train tickets for the conference, we leave at eight.',
  'The build failed on the integration tests, I think the fixture is stale.',
  'Happy birthday! Hope you have a lovely day with the family.',
  'Can you pick up some bread and milk on your way home?',
  'Here are the photos from the hiking trip last weekend.',
  'The landlord is coming on Tuesday to fix the heating.',
  'Let me know if the draft chapter reads well, I rewrote the ending.',
  'Our choir rehearsal moved to Wednesday evening this week.',
  'I finished the book you lent me, the ending surprised me.',
  'The quarterly report numbers look fine, just two typos on page three.',
  'Grandpa is doing better, the doctor was pleased with his recovery.',
  'Shall we rent the cottage again in August? The kids loved it.',
  'The meeting with the architect went well, she will send revised plans.',
  'Thanks for dinner last night, the risotto was delicious.',
  'Reminder: the school trip permission slip is due on Friday.',
  'I pushed a fix for the flaky test, can you rerun the pipeline?',
  'We should plan the move, the boxes are in the garage already.',
  'Our neighbours invited us to their barbecue on Saturday afternoon.',
  'The cat knocked over the plant again, the living room is a mess.',
  'Please find the signed contract, the original follows by post.',
  'Grüße aus München, das Wetter ist herrlich und das Bier auch.',
  'Merci pour ton message, on se voit à la réunion de jeudi.',
  'I will be late to the standup tomorrow, dentist appointment.',
  'The bike shop called, your bicycle is repaired and ready.',
  'Let us schedule a call next week to discuss the project timeline.',
  // Held out: only the evaluation messages use these.
  'Could you send me the slides from the talk, I missed the end.',
  'We are visiting my sister next weekend, can you water the plants?',
  'The code review comments are addressed, ready for another look.',
  'Dinner at our place on Sunday? Bring the kids, we will make pasta.',
  'The plumber fixed the leak, the kitchen is usable again.',
  'I found the recipe you asked about, it is my grandmother\'s.',
  'Bis bald, ich rufe dich morgen nach der Arbeit an.',
  'The deploy went fine, monitoring looks quiet so far.',
];
// Words both kinds share, so the filter cannot lean on greetings alone.
const NEUTRAL_SENTENCES = ['Hello,', 'Hi there,', 'Thanks,', 'Best regards,', 'Please reply soon.', 'Have a nice day.', 'Let me know.', 'See below.', 'Cheers,', 'Kind regards,'];
const TRAIN_POOL = 30;

const SPAM_SUBJECTS = [
  'You have WON!!!', 'Limited offer inside', 'Your account is suspended', 'Exclusive deal just for you', 'URGENT: action required', 'Free gift card', 'Lose 10 kg in a week', 'Re: your prize', 'Make money fast', 'Final notice',
  'Cheap meds online', 'Congratulations winner', 'Hot singles near you', 'Invoice overdue, pay now', 'Bitcoin profit guaranteed', 'Ｆｒｅｅ ｍｏｎｅｙ',
];
const HAM_SUBJECTS = [
  'Lunch Thursday?', 'Meeting minutes', 'Photos from the weekend', 'Re: pull request', 'Train tickets', 'Garden news', 'Birthday!', 'Shopping list', 'Heating repair', 'Draft chapter',
  'Choir rehearsal', 'Quarterly report', 'Cottage in August', 'Re: school trip', 'Contract', 'Grüße aus München', 'Réunion jeudi', 'Project timeline',
];
const SPAM_FROM = ['"Rewards Center" <rewards@promo-winners.top>', '"PayPaI Security" <security@account-verify.xyz>', '"Dr. Slim" <offers@miracle-diet.click>', 'deals@cheap-watches.shop', '"Lottery Board" <claims@intl-lottery.biz>', '"Crypto Gains" <profit@btc-doubler.io>', '"Customs Office" <fees@parcel-release.top>', 'newsletter@hot-deals-4u.info'];
const HAM_FROM = ['"Alice Martin" <alice@example.org>', '"Bob Chen" <bob@work.example.com>', '"Mum" <mum@family.example.net>', '"Jörg Müller" <joerg@example.de>', '"Claire Dubois" <claire@example.fr>', '"CI Bot" <ci@git.example.com>', '"Dana Lee" <dana@example.org>', '"Tom Hearth" <tom@hearth.test>'];
const SPAM_HOSTS = ['promo-winners.top', 'track.account-verify.xyz', 'miracle-diet.click', 'www.cheap-watches.shop', 'claims.intl-lottery.biz', 'btc-doubler.io', 'parcel-release.top', 'go.hot-deals-4u.info'];
const HAM_HOSTS = ['github.com', 'docs.example.org', 'photos.family.example.net', 'en.wikipedia.org', 'calendar.example.com'];

function pick<T>(rand: () => number, list: readonly T[], n = 1, from = 0, to = list.length): T[] {
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(list[from + Math.floor(rand() * (to - from))]);
  return out;
}

/** heldOut: false for training; true mixes in sentences training never saw; 'unseen' uses only those. */
function makeMessage(kind: 'spam' | 'ham', i: number, heldOut: boolean | 'unseen', rand: () => number): Buffer {
  const sentences = kind === 'spam' ? SPAM_SENTENCES : HAM_SENTENCES;
  const body = [
    ...pick(rand, NEUTRAL_SENTENCES),
    ...(heldOut === 'unseen' ? [] : pick(rand, sentences, 2 + Math.floor(rand() * 3), 0, TRAIN_POOL)),
    ...(heldOut ? pick(rand, sentences, heldOut === 'unseen' ? 3 : 2, TRAIN_POOL) : []),
    ...pick(rand, NEUTRAL_SENTENCES),
  ];
  const host = pick(rand, kind === 'spam' ? SPAM_HOSTS : HAM_HOSTS)[0];
  const url = `https://${host}/${kind === 'spam' ? `c/${Math.floor(rand() * 1e9).toString(36)}?uid=${i}` : `page/${i}`}`;
  const text = body.join('\n') + '\n';
  const style = i % 4; // 0 plain 8bit, 1 HTML + base64, 2 HTML + quoted-printable, 3 plain base64
  const html =
    style === 1 || style === 2
      ? `<html><head><style>p{color:red}</style></head><body>${body.map((s) => `<p>${s.replace(/&/g, '&amp;')}</p>`).join('')}<p><a href="${url}">${kind === 'spam' ? 'Click here' : 'link'}</a></p></body></html>`
      : undefined;
  const plain = html === undefined && i % 2 === 0 ? `${text}${url}\n` : text;
  if (heldOut === 'unseen') {
    // Nothing but the body to go on: same sender, subject and Message-ID domain for both kinds.
    return eml({ from: `"Sam Sender" <sender${i}@mail.example.net>`, subject: 'Hello', text: plain, html, encoding: style === 1 || style === 3 ? 'base64' : style === 2 ? 'quoted-printable' : '8bit', id: `${kind}-${i}@mail.example.net` });
  }
  return eml({
    from: pick(rand, kind === 'spam' ? SPAM_FROM : HAM_FROM)[0],
    subject: pick(rand, kind === 'spam' ? SPAM_SUBJECTS : HAM_SUBJECTS)[0],
    text: plain,
    html,
    encoding: style === 1 || style === 3 ? 'base64' : style === 2 ? 'quoted-printable' : '8bit',
    id: `${kind}-${i}-${heldOut ? 'eval' : 'train'}@${kind === 'spam' ? 'bulk.mailer.example' : 'mail.example.org'}`,
  });
}

type Corpus = { spam: Buffer[]; ham: Buffer[] };
function corpus(seed = 7): { train: Corpus; test: Corpus; unseen: Corpus } {
  const rand = prng(seed);
  const build = (kind: 'spam' | 'ham', from: number, n: number, heldOut: boolean | 'unseen'): Buffer[] => Array.from({ length: n }, (_, k) => makeMessage(kind, from + k, heldOut, rand));
  return {
    train: { spam: build('spam', 0, 32, false), ham: build('ham', 0, 32, false) },
    test: { spam: build('spam', 100, 16, true), ham: build('ham', 100, 16, true) },
    unseen: { spam: build('spam', 200, 16, 'unseen'), ham: build('ham', 200, 16, 'unseen') },
  };
}

function trainAll(f: JunkFilter, c: Corpus): void {
  for (const m of c.spam) f.train(m, 'spam');
  for (const m of c.ham) f.train(m, 'ham');
}

const probe = eml({
  from: '"Prize Dept" <claims@intl-lottery.biz>',
  subject: 'Congratulations winner',
  text: 'Dear beneficiary, you won the international lottery. Claim your prize today by confirming your bank account details. Act now, this exclusive offer expires tonight.\n',
  id: 'probe@bulk.mailer.example',
});

// --- tokens ---

describe('tokenize', () => {
  it('prefixes header words by field, lower-cases, pairs words and keeps address domains', () => {
    const t = tokenize(eml({ from: '"Alice Martin" <Alice@Example.ORG>', subject: 'Lunch THURSDAY at noon', text: 'Shall we meet at the café?\n', id: 'x@y.example' }));
    expect(t).toContain('subject:lunch');
    expect(t).toContain('subject:thursday');
    expect(t).toContain('subject:lunch thursday');
    expect(t).toContain('from:alice');
    expect(t).toContain('from:@example.org');
    expect(t).toContain('to:@hearth.test');
    expect(t).toContain('message-id:@y.example');
    expect(t).toContain('café');
    expect(t).toContain('the café');
    expect(t).not.toContain('lunch'); // a subject word is not a body word
    expect(t).not.toContain('a'); // shorter than 2
  });

  it('decodes base64 HTML, drops tags and styles, and reduces links to hosts (also hidden hrefs)', () => {
    const raw = eml({
      from: 'x@spam.example',
      subject: 'hi',
      text: 'Plain part',
      html: '<html><head><style>.promo{color:red}</style></head><body><p>Cheap&nbsp;watches &amp; bags</p><a href="https://track.cheap-watches.shop/c/8f7a6b5c?u=1234">Click here</a> or www.other-deals.top/x</body></html>',
      encoding: 'quoted-printable',
      id: 'h@y.example',
    });
    const t = tokenize(raw);
    for (const w of ['cheap', 'watches', 'bags', 'click here', 'url:track.cheap-watches.shop', 'url:*.cheap-watches.shop', 'url:www.other-deals.top']) expect(t).toContain(w);
    for (const w of ['promo', 'color', 'href', 'nbsp', '8f7a6b5c', '1234']) expect(t).not.toContain(w);

    const b64 = tokenize(eml({ from: 'x@spam.example', subject: 'hi', text: 'Grüße aus München\n', html: '<p>Grüße aus <b>München</b></p>', encoding: 'base64', id: 'b@y.example' }));
    expect(b64).toContain('grüße');
    expect(b64).toContain('grüße aus');
    expect(b64).toContain('münchen');
  });

  it('folds fullwidth letters, skips numbers and identifiers, splits unspaced scripts, caps word length', () => {
    const t = tokenize(eml({ from: 'x@y.example', subject: 'Ｆｒｅｅ ｍｏｎｅｙ', text: `Order 123456 ref a9x8c7v6b5 today 今日は良い天気です ${'z'.repeat(41)} ok\n`, id: 'n@y.example' }));
    expect(t).toContain('subject:free money');
    expect(t).toContain('order');
    expect(t).toContain('天気');
    for (const w of ['123456', 'a9x8c7v6b5', 'z'.repeat(41)]) expect(t).not.toContain(w);
    expect([...t].every((w) => !w.includes('  '))).toBe(true);
  });

  it('keys a message by identity, not by trace headers or line endings', () => {
    const a = eml({ from: 'a@b.example', subject: 's', text: 'same body\n', id: 'same@b.example' });
    const withTrace = Buffer.concat([Buffer.from('Received: from mx by hearth; Mon, 3 Mar 2025\r\nDelivered-To: sam@hearth.test\r\n'), a]);
    const bareLf = Buffer.from(a.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
    const other = eml({ from: 'a@b.example', subject: 's', text: 'another body\n', id: 'same@b.example' });
    expect(trainingKey(withTrace).equals(trainingKey(a))).toBe(true);
    expect(trainingKey(bareLf).equals(trainingKey(a))).toBe(true);
    expect(trainingKey(other).equals(trainingKey(a))).toBe(false);
  });
});

// --- the filter ---

describe('JunkFilter', () => {
  it('creates a WAL sqlite file beside the user index and starts empty', () => {
    const f = openFilter();
    expect(f.file).toBe(path.join(dir, JUNK_FILE));
    expect(fs.existsSync(f.file)).toBe(true);
    expect(f.counts()).toEqual({ spam: 0, ham: 0 });
    expect(fs.readFileSync(f.file).subarray(18, 20)).toEqual(Buffer.from([2, 2])); // WAL mode in the file header
  });

  it('is neutral until it has seen enough spam and enough ham', () => {
    const c = corpus();
    const f = openFilter();
    // Untrained, it does not even tokenize (tokens: 0): nothing it could find would count.
    expect(f.classify(probe)).toMatchObject({ probability: 0.5, junk: false, reason: 'untrained', significant: [], tokens: 0 });
    for (const m of c.train.spam.slice(0, 10)) f.train(m, 'spam');
    for (const m of c.train.ham.slice(0, 9)) f.train(m, 'ham');
    expect(f.counts()).toEqual({ spam: 10, ham: 9 });
    expect(f.classify(probe)).toMatchObject({ probability: 0.5, junk: false, reason: 'untrained' });
    f.train(c.train.ham[9], 'ham');
    const v = f.classify(probe);
    expect(v.reason).not.toBe('untrained');
    expect(v.tokens).toBeGreaterThan(0);
    expect(v.probability).toBeGreaterThan(0.9);
    expect(v.junk).toBe(true);
    expect(v.significant.length).toBeGreaterThan(0);
    expect(v.significant[0].p).toBeGreaterThan(0.9);
  });

  it('tells held-out spam from ham (at least 80% each, deterministic)', () => {
    const c = corpus();
    const f = openFilter();
    trainAll(f, c.train);
    const spamScores = c.test.spam.map((m) => f.classify(m));
    const hamScores = c.test.ham.map((m) => f.classify(m));
    const spamCaught = spamScores.filter((v) => v.junk).length;
    const hamKept = hamScores.filter((v) => !v.junk).length;
    const spamAbove = spamScores.filter((v) => v.probability > 0.5).length;
    const hamBelow = hamScores.filter((v) => v.probability < 0.5).length;
    console.log(
      `junk accuracy: spam caught ${spamCaught}/${spamScores.length} (p>0.5: ${spamAbove}), ham kept ${hamKept}/${hamScores.length} (p<0.5: ${hamBelow}); ` +
        `spam p min ${Math.min(...spamScores.map((v) => v.probability)).toFixed(4)}, ham p max ${Math.max(...hamScores.map((v) => v.probability)).toFixed(4)}`,
    );
    expect(spamCaught / spamScores.length).toBeGreaterThanOrEqual(0.8);
    expect(hamKept).toBe(hamScores.length); // a false positive hides real mail: none allowed here
    expect(hamBelow / hamScores.length).toBeGreaterThanOrEqual(0.8);
    // Bodies made only of sentences training never saw, from a sender, subject and Message-ID
    // domain both kinds share: the filter has to generalise from body words and link hosts.
    // Reported; only ham safety and the lean are asserted.
    const unseenSpam = c.unseen.spam.map((m) => f.classify(m));
    const unseenHam = c.unseen.ham.map((m) => f.classify(m));
    console.log(
      `junk accuracy, unseen sentences: spam caught ${unseenSpam.filter((v) => v.junk).length}/${unseenSpam.length} (p>0.5: ${unseenSpam.filter((v) => v.probability > 0.5).length}), ` +
        `ham kept ${unseenHam.filter((v) => !v.junk).length}/${unseenHam.length} (p<0.5: ${unseenHam.filter((v) => v.probability < 0.5).length})`,
    );
    expect(unseenHam.filter((v) => v.junk)).toEqual([]);
    expect(unseenSpam.filter((v) => v.probability > 0.5).length / unseenSpam.length).toBeGreaterThanOrEqual(0.8);
    // Deterministic: a second filter trained the same way scores the same.
    const g = openFilter({}, path.join(dir, 'other.sqlite'));
    trainAll(g, c.train);
    expect(c.test.spam.map((m) => g.classify(m).probability)).toEqual(spamScores.map((v) => v.probability));
  });

  it('trains each message once however often it is trained', () => {
    const c = corpus();
    const f = openFilter();
    trainAll(f, c.train);
    const before = f.classify(probe);
    expect(f.train(c.train.spam[0], 'spam')).toBe(false);
    const copy = Buffer.concat([Buffer.from('Received: from elsewhere\r\n'), c.train.spam[0]]);
    expect(f.train(copy, 'spam')).toBe(false);
    expect(f.counts()).toEqual({ spam: 32, ham: 32 });
    expect(f.classify(probe)).toEqual(before);
  });

  it('untrain reverses train exactly, and ignores messages not trained that way', () => {
    const c = corpus();
    const f = openFilter();
    trainAll(f, c.train);
    const before = f.classify(probe);
    const extra = c.test.spam[0];
    expect(f.trainedAs(extra)).toBeUndefined();
    expect(f.train(extra, 'spam')).toBe(true);
    expect(f.trainedAs(extra)).toBe('spam');
    expect(f.classify(probe).probability).not.toBe(before.probability);
    expect(f.untrain(extra, 'ham')).toBe(false); // trained as spam, not ham
    expect(f.untrain(extra, 'spam')).toBe(true);
    expect(f.untrain(extra, 'spam')).toBe(false);
    expect(f.counts()).toEqual({ spam: 32, ham: 32 });
    expect(f.classify(probe)).toEqual(before);
  });

  it('moving a ham-trained message to Junk leaves it counted once, as spam', () => {
    const c = corpus();
    const f = openFilter();
    const g = openFilter({}, path.join(dir, 'reference.sqlite'));
    trainAll(f, c.train);
    trainAll(g, c.train);
    const m = c.test.spam[1];
    f.train(m, 'ham'); // the user first left it in INBOX and it was trained as ham ...
    for (const op of trainingFor({ kind: 'moved', from: 'INBOX', to: 'Junk' })) f[op.op](m, op.as); // ... then moved it to Junk
    g.train(m, 'spam');
    expect(f.counts()).toEqual({ spam: 33, ham: 32 });
    expect(f.classify(probe)).toEqual(g.classify(probe));
    expect(f.classify(c.test.ham[0])).toEqual(g.classify(c.test.ham[0]));
    // train alone (without the untrain) switches too.
    f.train(m, 'ham');
    expect(f.counts()).toEqual({ spam: 32, ham: 33 });
    expect(f.trainedAs(m)).toBe('ham');
  });

  it('keeps what it learned across close and reopen', () => {
    const c = corpus();
    const f = openFilter();
    trainAll(f, c.train);
    const before = c.test.spam.concat(c.test.ham).map((m) => f.classify(m));
    f.close();
    expect(() => f.classify(probe)).toThrow(expect.objectContaining({ code: 'STORE_CLOSED' }));
    const g = openFilter();
    expect(g.counts()).toEqual({ spam: 32, ham: 32 });
    expect(c.test.spam.concat(c.test.ham).map((m) => g.classify(m))).toEqual(before);
    expect(g.train(c.train.ham[3], 'ham')).toBe(false); // the training record survived too
  });

  it('sees training done through another connection to the same file', () => {
    const c = corpus();
    const a = openFilter();
    const b = openFilter();
    trainAll(a, c.train);
    const before = a.classify(probe).probability; // fills a's cache
    b.train(c.test.ham[2], 'ham');
    b.train(probe, 'ham'); // a user insisting it is ham
    expect(a.counts()).toEqual({ spam: 32, ham: 34 });
    expect(a.classify(probe).probability).toBeLessThan(before);
  });

  it('refuses to call junk on too few clues', () => {
    const c = corpus();
    const f = openFilter();
    trainAll(f, c.train);
    const tiny = Buffer.from('Subject: prize\r\n\r\nclaim now\r\n');
    const v = f.classify(tiny);
    expect(v.reason).toBe('few-tokens');
    expect(v.junk).toBe(false);
    expect(v.probability).toBeGreaterThan(0.5); // it does lean, it just will not act on it
    const strict = openFilter({ minTokens: 1000 });
    expect(strict.classify(probe)).toMatchObject({ junk: false, reason: 'few-tokens' });
    const lax = openFilter({ threshold: 0.999999 });
    expect(lax.classify(c.test.ham[0]).reason).toBe('below-threshold');
  });

  it('scores hostile and odd input without throwing', () => {
    const c = corpus();
    const f = openFilter();
    trainAll(f, c.train);
    const huge = eml({ from: 'x@y.example', subject: 'big', text: `${'lottery prize winner claim '.repeat(60_000)}\n`, id: 'huge@y.example' });
    const inputs = [
      Buffer.alloc(0),
      Buffer.from('\r\n\r\n'),
      Buffer.from('no header separator at all'),
      Buffer.from([0xff, 0xfe, 0x00, 0x80, 0x0a, 0x0a, 0xc3, 0x28]),
      Buffer.from('Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n'),
      huge,
    ];
    for (const raw of inputs) {
      const v = f.classify(raw);
      expect(v.probability).toBeGreaterThanOrEqual(0);
      expect(v.probability).toBeLessThanOrEqual(1);
    }
    expect(f.classify(huge).tokens).toBeLessThanOrEqual(6000);
    expect(f.train(Buffer.alloc(0), 'ham')).toBe(true);
    expect(f.untrain(Buffer.alloc(0), 'ham')).toBe(true);
    expect(f.counts()).toEqual({ spam: 32, ham: 32 });
  });

  it('sets an unreadable file aside and starts untrained', () => {
    const file = JunkFilter.pathFor(dir);
    fs.writeFileSync(file, 'this is not a database'.repeat(100));
    const f = openFilter();
    expect(f.counts()).toEqual({ spam: 0, ham: 0 });
    expect(fs.readdirSync(dir).some((n) => n.startsWith(`${JUNK_FILE}.broken-`))).toBe(true);
  });

  it('classifies a 10 KB message quickly (printed, not asserted)', () => {
    const c = corpus();
    const f = openFilter();
    trainAll(f, c.train);
    const paragraphs: string[] = [];
    const rand = prng(99);
    while (paragraphs.join('\n').length < 10_000) paragraphs.push(pick(rand, [...HAM_SENTENCES, ...SPAM_SENTENCES, ...NEUTRAL_SENTENCES], 3).join(' ') + ` item${paragraphs.length}x`);
    const big = eml({ from: '"Alice Martin" <alice@example.org>', subject: 'A long letter', text: paragraphs.join('\n'), id: 'big@example.org' });
    expect(big.length).toBeGreaterThan(10_000);
    let t = performance.now();
    const first = f.classify(big);
    const cold = performance.now() - t;
    const runs = 200;
    t = performance.now();
    for (let i = 0; i < runs; i++) f.classify(big);
    const warm = (performance.now() - t) / runs;
    console.log(`junk classify ${big.length} bytes, ${first.tokens} tokens: first ${cold.toFixed(2)} ms (cache cold), then ${warm.toFixed(3)} ms each`);
    expect(first.tokens).toBeGreaterThan(100);
    expect(f.classify(big)).toEqual(first);
  });
});

// --- what user actions mean ---

describe('trainingFor', () => {
  const spam: TrainingOp[] = [
    { op: 'untrain', as: 'ham' },
    { op: 'train', as: 'spam' },
  ];
  const ham: TrainingOp[] = [
    { op: 'untrain', as: 'spam' },
    { op: 'train', as: 'ham' },
  ];
  const table: Array<[string, TrainingEvent, TrainingOp[]]> = [
    ['INBOX → Junk', { kind: 'moved', from: 'INBOX', to: 'Junk' }, spam],
    ['Archive → Junk', { kind: 'moved', from: 'Archive', to: 'Junk' }, spam],
    ['Junk → INBOX', { kind: 'moved', from: 'Junk', to: 'INBOX' }, ham],
    ['Junk → Archive/2025', { kind: 'moved', from: 'Junk', to: 'Archive/2025' }, ham],
    ['Junk → Trash (deleting spam)', { kind: 'moved', from: 'Junk', to: 'Trash' }, []],
    ['INBOX → Trash', { kind: 'moved', from: 'INBOX', to: 'Trash' }, []],
    ['INBOX → Archive', { kind: 'moved', from: 'INBOX', to: 'Archive' }, []],
    ['Trash → Junk', { kind: 'moved', from: 'Trash', to: 'Junk' }, spam],
    ['Junk → Junk', { kind: 'moved', from: 'Junk', to: 'Junk' }, []],
    ['junk (other case) is not Junk', { kind: 'moved', from: 'INBOX', to: 'junk' }, []],
    ['+$Junk', { kind: 'keyword', added: ['$Junk'], removed: [] }, spam],
    ['+$junk (keywords ignore case)', { kind: 'keyword', added: ['\\Seen', '$junk'], removed: [] }, spam],
    ['+$NotJunk', { kind: 'keyword', added: ['$NotJunk'], removed: [] }, ham],
    ['$Junk → $NotJunk', { kind: 'keyword', added: ['$NotJunk'], removed: ['$Junk'] }, ham],
    ['Thunderbird Junk', { kind: 'keyword', added: ['Junk'], removed: ['NonJunk'] }, spam],
    ['Thunderbird NonJunk', { kind: 'keyword', added: ['NonJunk'], removed: [] }, ham],
    ['-$Junk', { kind: 'keyword', added: [], removed: ['$Junk'] }, [{ op: 'untrain', as: 'spam' }]],
    ['-$NotJunk', { kind: 'keyword', added: [], removed: ['$NotJunk'] }, [{ op: 'untrain', as: 'ham' }]],
    ['+$Junk +$NotJunk (contradictory)', { kind: 'keyword', added: ['$Junk', '$NotJunk'], removed: [] }, []],
    ['other keywords', { kind: 'keyword', added: ['\\Flagged', '$Forwarded'], removed: ['\\Seen'] }, []],
  ];
  it.each(table)('%s', (_name, event, expected) => {
    expect(trainingFor(event)).toEqual(expected);
  });

  it('takes the Junk and Trash names from the caller', () => {
    expect(trainingFor({ kind: 'moved', from: 'INBOX', to: 'Spam' }, { junk: 'Spam' })).toEqual(spam);
    expect(trainingFor({ kind: 'moved', from: 'Spam', to: 'Deleted' }, { junk: 'Spam', trash: 'Deleted' })).toEqual([]);
    expect(trainingFor({ kind: 'moved', from: 'Spam', to: 'Trash' }, { junk: 'Spam', trash: 'Deleted' })).toEqual(ham);
  });

  it('hands out fresh objects (callers may mutate them)', () => {
    const a = trainingFor({ kind: 'moved', from: 'INBOX', to: 'Junk' });
    a[0].as = 'spam';
    expect(trainingFor({ kind: 'moved', from: 'INBOX', to: 'Junk' })).toEqual(spam);
  });
});
