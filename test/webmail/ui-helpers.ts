// Browser-test helpers: Debian's chromium driven by playwright-core, a hearth with the webmail
// listener on loopback, mail delivered through hearth's own SMTP listener, and a page guard
// that records dialogs, console output, script errors and every request that is not loopback.
import nodemailer from 'nodemailer';
import { chromium } from 'playwright-core';
import type { Browser, BrowserContext, BrowserContextOptions, Page } from 'playwright-core';
import { ALL_LISTENERS, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';

export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'];

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
}

export type WebmailHearth = Awaited<ReturnType<typeof startTestHearth>> & { setup: TestSetup; baseUrl: string };

/** A hearth with SMTP, IMAP and the webmail listener on ephemeral loopback ports. */
export async function startWebmailHearth(opts: { extraToml?: string } = {}): Promise<WebmailHearth> {
  const setup = await makeSetup({
    fsync: false,
    toml: `${ALL_LISTENERS}
[listeners.http]
listen = "127.0.0.1:0"
tls = "plain"
${opts.extraToml ?? ''}`,
  });
  const hearth = await startTestHearth(setup);
  if (!hearth.endpoints.some((e) => e.service === 'http')) {
    await hearth.close();
    throw new Error('hearth did not start the webmail listener ([listeners.http]); is startWebmail wired into src/main.ts?');
  }
  const baseUrl = `http://127.0.0.1:${hearth.port('http')}`;
  return Object.assign(hearth, { setup, baseUrl });
}

/** Deliver a raw message to `to` through hearth's inbound SMTP listener (port 25's role). */
export async function deliverRaw(smtpPort: number, from: string, to: string | string[], raw: string): Promise<void> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort, secure: false, ignoreTLS: true });
  try {
    await transport.sendMail({ envelope: { from, to }, raw });
  } finally {
    transport.close();
  }
}

export type SimpleMail = {
  from: string;
  to: string;
  subject: string;
  text?: string;
  html?: string;
  date?: Date;
  messageId?: string;
  attachments?: Array<{ filename: string; contentType: string; content: string | Buffer }>;
  /** Extra header fields (In-Reply-To, References for a conversation). */
  headers?: Record<string, string>;
};

/** Build a message with nodemailer's composer and deliver it over SMTP. */
export async function deliverMail(smtpPort: number, mail: SimpleMail): Promise<void> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort, secure: false, ignoreTLS: true });
  try {
    await transport.sendMail({ ...mail, date: mail.date ?? new Date(), messageId: mail.messageId });
  } finally {
    transport.close();
  }
}

export type Guard = {
  dialogs: string[];
  consoleMessages: Array<{ type: string; text: string }>;
  pageErrors: string[];
  /** Requests for anything but 127.0.0.1 (and data:/about:), all aborted. */
  remoteRequests: string[];
};

/** Watch a page: dialogs are recorded and dismissed, non-loopback requests recorded and aborted. */
export async function guardPage(page: Page | BrowserContext): Promise<Guard> {
  const guard: Guard = { dialogs: [], consoleMessages: [], pageErrors: [], remoteRequests: [] };
  const watch = (p: Page): void => {
    p.on('dialog', (d) => {
      guard.dialogs.push(`${d.type()}: ${d.message()}`);
      void d.dismiss().catch(() => undefined);
    });
    p.on('console', (m) => guard.consoleMessages.push({ type: m.type(), text: m.text() }));
    p.on('pageerror', (e) => guard.pageErrors.push(e.message));
  };
  if ('context' in page) watch(page);
  else {
    for (const p of page.pages()) watch(p);
    page.on('page', watch);
  }
  await page.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.protocol === 'data:' || url.protocol === 'about:' || url.protocol === 'blob:' || url.hostname === '127.0.0.1') return route.continue();
    guard.remoteRequests.push(url.href);
    return route.abort();
  });
  return guard;
}

export async function login(page: Page, baseUrl: string, address: string, password: string): Promise<void> {
  await page.goto(`${baseUrl}/`);
  await page.locator('input[name=address]').fill(address);
  await page.locator('input[name=password]').fill(password);
  await page.locator('button[type=submit]').click();
  await page.locator('.list-head').waitFor();
}

/** The list row whose subject is exactly `subject`. */
export function rowBySubject(page: Page, subject: string) {
  return page.locator('.list .row[data-uid]').filter({ has: page.locator('.subject', { hasText: subject }) });
}

/** A date `h` hours before now (for seeded mail). */
export const hoursAgo = (h: number): Date => new Date(Date.now() - h * 3_600_000);

export type ChromiumSuite = { hearth: WebmailHearth; browser: Browser; context: BrowserContext; page: Page; guard: Guard };

export type ChromiumSuiteOptions = {
  /** More hearth config (see startWebmailHearth). */
  extraToml?: string;
  /** Fills the hearth (mail, flags) before the browser context opens. */
  seed?: (hearth: WebmailHearth) => Promise<void>;
  context?: BrowserContextOptions;
  /** Log the page in; otherwise it is left blank. */
  login?: { address: string; password: string };
};

/**
 * Start a webmail hearth and chromium side by side, seed the hearth, and open a guarded page.
 * Each part is set on `suite` as soon as it runs, so closeChromiumSuite(suite) also stops a half-started one.
 */
export async function openChromiumSuite(suite: Partial<ChromiumSuite>, opts: ChromiumSuiteOptions = {}): Promise<ChromiumSuite> {
  [suite.hearth, suite.browser] = await Promise.all([startWebmailHearth({ extraToml: opts.extraToml }), launchChromium()]);
  await opts.seed?.(suite.hearth);
  suite.context = await suite.browser.newContext(opts.context ?? { viewport: { width: 1280, height: 800 } });
  suite.guard = await guardPage(suite.context);
  suite.page = await suite.context.newPage();
  if (opts.login) await login(suite.page, suite.hearth.baseUrl, opts.login.address, opts.login.password);
  return suite as ChromiumSuite;
}

/** Close what openChromiumSuite started (the parts that did start). */
export async function closeChromiumSuite(suite: Partial<ChromiumSuite>): Promise<void> {
  await suite.browser?.close();
  await suite.hearth?.close();
  await suite.hearth?.setup.cleanup();
}

/** openChromiumSuite in a beforeAll and closeChromiumSuite in an afterAll, for a describe block; the fields are set once beforeAll has run. */
export function useChromiumSuite(hooks: { beforeAll(fn: () => Promise<void>): void; afterAll(fn: () => Promise<void>): void }, opts: ChromiumSuiteOptions = {}): ChromiumSuite {
  const suite = {} as ChromiumSuite;
  hooks.beforeAll(async () => {
    await openChromiumSuite(suite, opts);
  });
  hooks.afterAll(() => closeChromiumSuite(suite));
  return suite;
}
