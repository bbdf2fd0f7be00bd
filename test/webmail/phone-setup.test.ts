// "Set up your phone" (issue 9): a signed, short-lived link to the user's .mobileconfig that
// works without the session cookie, and an SVG QR code of it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PhoneSetup } from '../../src/webmail/api-types.ts';
import { client, makeHarness } from './api-harness.ts';
import type { Harness, Login } from './api-harness.ts';

let h: Harness;
let api: ReturnType<typeof client>;
let clock = Date.parse('2026-03-02T10:00:00Z');
let alice: Login;
let bob: Login;

/** The link's path and query, as the phone would ask for it (no cookie). */
const pathOf = (url: string): string => {
  const u = new URL(url);
  return u.pathname + u.search;
};
const tokenOf = (url: string): string => new URL(url).searchParams.get('t') ?? '';

describe('phone set-up link', () => {
  beforeAll(async () => {
    h = await makeHarness({ deps: { now: () => clock } });
    api = client(h.app);
    alice = await api.login('alice@example.test', 'alice-password');
    bob = await api.login('bob@example.test', 'bob-password');
  });
  afterAll(() => h?.close());

  it('is only for a logged-in user', async () => {
    expect((await api.request('GET', '/api/client/phone-setup')).status).toBe(401);
  });

  it('gives a link on the host the browser used, valid for 15 minutes, with an SVG QR code, and no password in it', async () => {
    const { status, body } = await api.json<PhoneSetup>('GET', '/api/client/phone-setup', alice);
    expect(status).toBe(200);
    const url = new URL(body.url);
    expect(url.origin).toBe('http://mail.test.example');
    expect(url.pathname).toBe('/api/client/mobileconfig');
    expect(body.expiresAt).toBe(clock + 15 * 60_000);
    expect(body.url).not.toContain('alice-password');
    expect(body.svg).toMatch(/^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"[^>]*viewBox="0 0 (\d+) \1"/);
    expect(body.svg).toMatch(/<path [^>]*stroke="#000000" d="M\d/);
    expect(body.svg).not.toMatch(/<script|on\w+=/i);
  });

  it('downloads that user\'s profile without a cookie', async () => {
    const { body } = await api.json<PhoneSetup>('GET', '/api/client/phone-setup', alice);
    const res = await api.request('GET', pathOf(body.url));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/x-apple-aspen-config');
    expect(res.headers.get('content-disposition')).toBe('attachment; filename="alice@example.test.mobileconfig"');
    expect(res.headers.get('cache-control')).toBe('no-store');
    const profile = await res.text();
    expect(profile).toContain('<string>alice@example.test</string>');
    expect(profile).not.toContain('bob@example.test');
    expect(profile).not.toMatch(/password<\/key>\s*<string>/i);
    // Each user's link is their own.
    const bobs = await api.json<PhoneSetup>('GET', '/api/client/phone-setup', bob);
    const bobProfile = await (await api.request('GET', pathOf(bobs.body.url))).text();
    expect(bobProfile).toContain('<string>bob@example.test</string>');
    expect(bobProfile).not.toContain('alice@example.test');
  });

  it('refuses a link once it has expired', async () => {
    const { body } = await api.json<PhoneSetup>('GET', '/api/client/phone-setup', alice);
    clock += 14 * 60_000;
    expect((await api.request('GET', pathOf(body.url))).status).toBe(200);
    clock += 2 * 60_000;
    const res = await api.request('GET', pathOf(body.url));
    expect(res.status).toBe(403);
    expect(((await res.json()) as { error: string }).error).toMatch(/expired/);
  });

  it('refuses a tampered link: another address, a later expiry, a changed signature, a part-URL token', async () => {
    const { body } = await api.json<PhoneSetup>('GET', '/api/client/phone-setup', alice);
    const [exp, who, mac] = tokenOf(body.url).split('.');
    const bobWho = Buffer.from('bob@example.test').toString('base64url');
    const later = (parseInt(exp, 36) + 86_400).toString(36);
    const flipped = mac.slice(0, 10) + (mac[10] === 'A' ? 'B' : 'A') + mac.slice(11);
    // The same address spelt with other base64 padding bits would decode alike: also refused.
    const lastBits = who.slice(0, -1) + String.fromCharCode(who.charCodeAt(who.length - 1) ^ 1);
    for (const token of [`${exp}.${bobWho}.${mac}`, `${later}.${who}.${mac}`, `${exp}.${who}.${flipped}`, `${exp}.${lastBits}.${mac}`, `${exp}.${who}`, '', 'x'.repeat(5000)]) {
      const res = await api.request('GET', `/api/client/mobileconfig?t=${encodeURIComponent(token)}`);
      expect(res.status, token).toBe(403);
    }
    // A token signed for an attachment URL is not a set-up token.
    const part = h.app.sessions.signPartUrl('alice@example.test', 'INBOX', 1, clock + 60_000);
    expect((await api.request('GET', `/api/client/mobileconfig?t=${part}`)).status).toBe(403);
    // A bad token is refused even with a session cookie: it was asked for explicitly.
    expect((await api.request('GET', `/api/client/mobileconfig?t=${exp}.${bobWho}.${mac}`, { login: alice })).status).toBe(403);
  });

  it('uses https in the link when the webmail runs with secure cookies', async () => {
    const secure = await makeHarness({ deps: { secureCookies: true } });
    try {
      const c = client(secure.app);
      const res = await c.request('POST', '/api/login', { body: { address: 'alice@example.test', password: 'alice-password' } });
      const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0];
      const setup = (await (await c.request('GET', '/api/client/phone-setup', { headers: { cookie } })).json()) as PhoneSetup;
      expect(setup.url).toMatch(/^https:\/\/mail\.test\.example\/api\/client\/mobileconfig\?t=/);
    } finally {
      await secure.close();
    }
  });
});
