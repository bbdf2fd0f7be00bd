// The webmail in chromium (playwright-core) against a real hearth on loopback: a conversation
// opens as the whole thread, oldest first, the older read messages collapsed to a line that
// opens on a click; and "Set up your phone" shows a QR code that decodes to a link which serves
// the profile without the session cookie.
import { ImapFlow } from 'imapflow';
import jsQRModule from 'jsqr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deliverMail, hoursAgo, rowBySubject, useChromiumSuite } from './ui-helpers.ts';
import type { WebmailHearth } from './ui-helpers.ts';

const ALICE = 'alice@example.test';
// jsqr is CommonJS with a default export: under Node's ESM interop the function is `.default`.
type Decode = (data: Uint8ClampedArray, width: number, height: number) => { data: string } | null;
const jsQR = ((jsQRModule as unknown as { default?: Decode }).default ?? jsQRModule) as Decode;

/** A thread of three (Ann, Bob's reply, Ann again; the first read elsewhere) and one unrelated message. */
async function seedConversation(hearth: WebmailHearth): Promise<void> {
  const thread: Array<Parameters<typeof deliverMail>[1]> = [
    { from: 'Ann Lee <ann@family.test>', to: ALICE, subject: 'Trip to the coast', text: 'Shall we go to the coast on Saturday?', messageId: '<trip-1@family.test>', date: hoursAgo(5) },
    {
      from: 'Bob <bob@example.test>',
      to: ALICE,
      subject: 'Re: Trip to the coast',
      text: 'Yes! I can drive.\n\nOn Sat, Ann Lee wrote:\n> Shall we go to the coast on Saturday?',
      messageId: '<trip-2@example.test>',
      date: hoursAgo(4),
      headers: { 'In-Reply-To': '<trip-1@family.test>', References: '<trip-1@family.test>' },
    },
    {
      from: 'Ann Lee <ann@family.test>',
      to: ALICE,
      subject: 'Re: Trip to the coast',
      text: 'Great, leaving at nine.',
      messageId: '<trip-3@family.test>',
      date: hoursAgo(1),
      headers: { 'In-Reply-To': '<trip-2@example.test>', References: '<trip-1@family.test> <trip-2@example.test>' },
    },
  ];
  for (const m of thread) await deliverMail(hearth.smtpPort, m);
  await deliverMail(hearth.smtpPort, { from: 'Library <noreply@library.example.org>', to: ALICE, subject: 'Your loan is due', text: 'Renew it online.', date: hoursAgo(2) });
  // The first was read elsewhere (an IMAP client); the reply and the newest are unread.
  const imap = new ImapFlow({ host: '127.0.0.1', port: hearth.port('imap'), secure: false, auth: { user: ALICE, pass: 'alice-password' }, logger: false, tls: { rejectUnauthorized: false }, disableAutoIdle: true });
  await imap.connect();
  try {
    await imap.mailboxOpen('INBOX');
    await imap.messageFlagsAdd('1', ['\\Seen']);
  } finally {
    await imap.logout();
  }
}

describe('webmail conversations and phone set-up in chromium', () => {
  const ui = useChromiumSuite(
    { beforeAll, afterAll },
    {
      // Public ports to advertise (the test's own listeners are on ephemeral ports, which are not).
      extraToml: '[client]\nhostname = "mail.test.example"\n[client.ports]\nimaps = 993\nsubmission = 587\n',
      seed: seedConversation,
      login: { address: ALICE, password: 'alice-password' },
    },
  );

  it('opens a conversation as the whole thread: older read messages collapsed, unread ones and the newest open', async () => {
    const { page } = ui;
    await page.locator('.list-head .toggle input').check();
    const row = rowBySubject(page, 'Re: Trip to the coast');
    await row.locator('.thread-count', { hasText: '3' }).waitFor();
    expect(await page.locator('.list .row[data-uid]').count()).toBe(2);
    await row.click();

    const items = page.locator('.reader .conversation .conv-item');
    await expect.poll(() => items.count()).toBe(3);
    await page.locator('.reader .conv-count', { hasText: '3 messages' }).waitFor();
    // Oldest first: Ann's first message was read elsewhere, so it is one line (sender, snippet);
    // Bob's reply is unread and the newest is the one opened: both are open.
    expect(await items.nth(0).getAttribute('class')).toContain('collapsed');
    expect(await items.nth(1).getAttribute('class')).toContain('expanded');
    expect(await items.nth(2).getAttribute('class')).toContain('expanded');
    const first = items.nth(0);
    expect(await first.locator('.conv-from').textContent()).toBe('Ann Lee');
    expect(await first.locator('.conv-snippet').textContent()).toBe('Shall we go to the coast on Saturday?');
    await items.nth(1).locator('.plain', { hasText: 'Yes! I can drive.' }).waitFor();
    await items.nth(2).locator('.plain', { hasText: 'Great, leaving at nine.' }).waitFor();
    await items.nth(2).locator('.hdr-value', { hasText: 'ann@family.test' }).first().waitFor();

    // Showing the unread reply and the newest marked both read (the row loses its unread mark).
    await expect.poll(async () => (await row.getAttribute('class')) ?? '').not.toContain('unread');
    const unread = async (): Promise<number> => {
      const list = await page.evaluate(async (path: string) => (await fetch(path)).json(), '/api/folders/INBOX/messages?limit=10');
      return (list as { messages: Array<{ flags: string[] }> }).messages.filter((m) => !m.flags.includes('\\Seen')).length;
    };
    await expect.poll(unread).toBe(1); // only the unrelated library notice

    // Bob's reply collapses to a line with what Bob wrote (not the quote of Ann's message)...
    await items.nth(1).locator('.conv-head').click();
    await expect.poll(() => page.locator('.reader .conv-item.collapsed').count()).toBe(2);
    expect(await items.nth(1).locator('.conv-from').textContent()).toBe('Bob');
    expect(await items.nth(1).locator('.conv-snippet').textContent()).toBe('Yes! I can drive.');
    // ...and a click opens the oldest in place, with its full text.
    await first.click();
    await items.nth(0).locator('.plain', { hasText: 'Shall we go to the coast on Saturday?' }).waitFor();
    expect(await page.locator('.reader .conv-item.expanded').count()).toBe(2);

    // The toolbar acts on the opened (newest) message: Reply quotes it.
    await page.locator('.reader .toolbar button', { hasText: 'Reply' }).first().click();
    await page.locator('.compose textarea').waitFor();
    expect(await page.locator('.compose textarea').inputValue()).toContain('> Great, leaving at nine.');
    await page.locator('.compose textarea').press('Escape');
    await page.locator('.compose').waitFor({ state: 'detached' });
  });

  it('shows a single message (not a conversation) for a thread of one, and with conversations off', async () => {
    const { page } = ui;
    await rowBySubject(page, 'Your loan is due').click();
    await page.locator('.reader h1.subject', { hasText: 'Your loan is due' }).waitFor();
    expect(await page.locator('.reader .conversation').count()).toBe(0);
    await page.locator('.list-head .toggle input').uncheck();
    await page.locator('.list .row[data-uid]').filter({ has: page.locator('.subject', { hasText: /^Trip to the coast$/ }) }).click();
    await page.locator('.reader h1.subject', { hasText: 'Trip to the coast' }).waitFor();
    await page.locator('.reader .plain', { hasText: 'Shall we go to the coast on Saturday?' }).waitFor();
    expect(await page.locator('.reader .conversation').count()).toBe(0);
  });

  it('"Set up your phone" shows a QR code of a link that serves the profile without the cookie', async () => {
    const { page, hearth, browser } = ui;
    await page.locator('.sidebar .phone-btn').click();
    const dialog = page.locator('.dialog[aria-label="Set up your phone"]');
    await dialog.locator('.qr svg').waitFor();
    const link = (await dialog.locator('a.setup-link').textContent()) ?? '';
    expect(link).toMatch(new RegExp(`^${hearth.baseUrl.replace(/[.]/g, '\\.')}/api/client/mobileconfig\\?t=[\\w.-]+$`));
    expect(await dialog.locator('a.setup-link').getAttribute('href')).toBe(link);

    // Decode the QR code as a phone camera would: draw the SVG, read its pixels, find the code.
    const svg = await dialog.locator('.qr').innerHTML();
    const pixels = await page.evaluate(async (markup: string) => {
      const img = new Image();
      img.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(markup)}`;
      await img.decode();
      const canvas = document.createElement('canvas');
      canvas.width = 400;
      canvas.height = 400;
      const ctx = canvas.getContext('2d')!;
      ctx.drawImage(img, 0, 0, 400, 400);
      return Array.from(ctx.getImageData(0, 0, 400, 400).data);
    }, svg);
    const decoded = jsQR(Uint8ClampedArray.from(pixels), 400, 400);
    expect(decoded?.data).toBe(link);

    // The link works from somewhere with no session: a fresh browser context, as a phone would be.
    const phone = await browser.newContext();
    try {
      const res = await phone.request.get(link);
      expect(res.status()).toBe(200);
      expect(res.headers()['content-type']).toBe('application/x-apple-aspen-config');
      const profile = await res.text();
      expect(profile).toContain('<string>alice@example.test</string>');
      expect(profile).toContain('<string>mail.test.example</string>');
      expect(profile).not.toContain('alice-password');
      // A tampered link is refused.
      const bad = await phone.request.get(link.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A')));
      expect(bad.status()).toBe(403);
    } finally {
      await phone.close();
    }
    // And fetch from the page itself (with the cookie) gets the same profile.
    const fromPage = await page.evaluate(async (url: string) => {
      const r = await fetch(url);
      return { status: r.status, text: await r.text() };
    }, link);
    expect(fromPage.status).toBe(200);
    expect(fromPage.text).toContain('<string>alice@example.test</string>');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
  });

  it('raised no script errors, dialogs or remote requests', () => {
    const { guard } = ui;
    expect(guard.pageErrors).toEqual([]);
    expect(guard.dialogs).toEqual([]);
    expect(guard.remoteRequests).toEqual([]);
  });
});
