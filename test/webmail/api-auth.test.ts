// Login, sessions, logout, CSRF and origin checks, and the limiter shared with the other logins.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { client, makeHarness } from './api-harness.ts';
import type { Harness } from './api-harness.ts';

let h: Harness;
let api: ReturnType<typeof client>;

describe('webmail login and sessions', () => {
  beforeEach(async () => {
    h = await makeHarness({ limiter: { maxFailuresPerAddress: 3, maxFailuresPerAccount: 100 } });
    api = client(h.app);
  });
  afterEach(() => h.close());

  it('logs in with the right password and sets a strict HttpOnly cookie', async () => {
    const res = await api.request('POST', '/api/login', { body: { address: 'Alice@Example.test', password: 'alice-password' } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { user: string; csrf: string };
    expect(body.user).toBe('alice@example.test');
    expect(body.csrf).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const cookie = res.headers.get('set-cookie')!;
    expect(cookie).toMatch(/^hearth=[A-Za-z0-9_-]{43};/);
    expect(cookie).toMatch(/HttpOnly/i);
    expect(cookie).toMatch(/SameSite=Strict/i);
    expect(cookie).toMatch(/Path=\//);
    expect(cookie).not.toMatch(/Secure/i);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');

    const session = await api.request('GET', '/api/session', { login: { cookie: cookie.split(';')[0], csrf: '', user: '' } });
    expect(session.status).toBe(200);
    expect(await session.json()).toEqual({ user: 'alice@example.test', csrf: body.csrf });
  });

  it('marks the cookie Secure with the __Host- prefix under HTTPS', async () => {
    const secure = await makeHarness({ deps: { secureCookies: true } });
    try {
      const res = await client(secure.app).request('POST', '/api/login', { body: { address: 'alice@example.test', password: 'alice-password' } });
      expect(res.status).toBe(200);
      const cookie = res.headers.get('set-cookie')!;
      expect(cookie).toMatch(/^__Host-hearth=/);
      expect(cookie).toMatch(/Secure/);
      expect(res.headers.get('strict-transport-security')).toMatch(/max-age=/);
    } finally {
      await secure.close();
    }
  });

  it('refuses a wrong password, an unknown user and a malformed request', async () => {
    expect((await api.request('POST', '/api/login', { body: { address: 'alice@example.test', password: 'nope' } })).status).toBe(401);
    expect((await api.request('POST', '/api/login', { body: { address: 'mallory@example.test', password: 'x' } })).status).toBe(401);
    expect((await api.request('POST', '/api/login', { body: { address: 'alice@example.test' } })).status).toBe(400);
    expect((await api.request('POST', '/api/login', { body: 'alice' })).status).toBe(400);
    const form = await api.request('POST', '/api/login', { body: { address: 'a', password: 'b' }, headers: { 'content-type': 'text/plain' } });
    expect(form.status).toBe(415);
  });

  it('locks out after repeated failures with 429 and Retry-After, even for the right password', async () => {
    for (let i = 0; i < 3; i++) expect((await api.request('POST', '/api/login', { body: { address: 'alice@example.test', password: `bad${i}` } })).status).toBe(401);
    const res = await api.request('POST', '/api/login', { body: { address: 'alice@example.test', password: 'alice-password' } });
    expect(res.status).toBe(429);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await res.json()) as { error: string }).error).toMatch(/too many failed logins/);
  });

  it('without a session every API endpoint answers 401', async () => {
    for (const [method, path] of [
      ['GET', '/api/folders'],
      ['GET', '/api/session'],
      ['GET', '/api/folders/INBOX/messages'],
      ['GET', '/api/folders/INBOX/messages/1'],
      ['GET', '/api/folders/INBOX/messages/1/html'],
      ['GET', '/api/folders/INBOX/messages/1/parts/1'],
      ['GET', '/api/folders/INBOX/messages/1/source'],
      ['GET', '/api/search?q=x'],
      ['GET', '/api/events'],
      ['POST', '/api/logout'],
      ['POST', '/api/send'],
      ['POST', '/api/folders/INBOX/flags'],
    ] as const) {
      const res = await api.request(method, path, { body: method === 'POST' ? {} : undefined, csrf: 'x' });
      expect(res.status, `${method} ${path}`).toBe(401);
    }
    const bogus = await api.request('GET', '/api/folders', { login: { cookie: 'hearth=not-a-session', csrf: '', user: '' } });
    expect(bogus.status).toBe(401);
  });

  it('refuses a POST without the CSRF token, with a wrong one, or from another origin (403)', async () => {
    const login = await api.login('alice@example.test', 'alice-password');
    const none = await api.request('POST', '/api/folders', { login, csrf: null, body: { name: 'Projects' } });
    expect(none.status).toBe(403);
    const wrong = await api.request('POST', '/api/folders', { login, csrf: 'A'.repeat(43), body: { name: 'Projects' } });
    expect(wrong.status).toBe(403);
    const otherOrigin = await api.request('POST', '/api/folders', { login, body: { name: 'Projects' }, headers: { origin: 'https://evil.example' } });
    expect(otherOrigin.status).toBe(403);
    const crossSite = await api.request('POST', '/api/folders', { login, body: { name: 'Projects' }, headers: { 'sec-fetch-site': 'cross-site' } });
    expect(crossSite.status).toBe(403);
    const loginFromElsewhere = await api.request('POST', '/api/login', { body: { address: 'alice@example.test', password: 'alice-password' }, headers: { origin: 'https://evil.example' } });
    expect(loginFromElsewhere.status).toBe(403);
    const logoutNoToken = await api.request('POST', '/api/logout', { login, csrf: null });
    expect(logoutNoToken.status).toBe(403);
    // Nothing happened; the right token and our own origin work.
    const folders = (await api.json<Array<{ name: string }>>('GET', '/api/folders', login)).body;
    expect(folders.map((f) => f.name)).not.toContain('Projects');
    const ok = await api.request('POST', '/api/folders', { login, body: { name: 'Projects' }, headers: { origin: 'http://mail.test.example', 'sec-fetch-site': 'same-origin' } });
    expect(ok.status).toBe(200);
  });

  it('logs out: the session is gone and the cookie cleared', async () => {
    const login = await api.login('alice@example.test', 'alice-password');
    const res = await api.request('POST', '/api/logout', { login });
    expect(res.status).toBe(200);
    expect(res.headers.get('set-cookie')).toMatch(/hearth=;.*Max-Age=0/i);
    expect((await api.request('GET', '/api/folders', { login })).status).toBe(401);
    expect((await api.request('GET', '/api/session', { login })).status).toBe(401);
  });

  it('expires sessions after the idle time and after the absolute lifetime', async () => {
    let now = 1_000_000;
    const t = await makeHarness({ deps: { now: () => now, sessionIdleMs: 60_000, sessionMaxMs: 300_000 } });
    const c = client(t.app);
    try {
      const idle = await c.login('alice@example.test', 'alice-password');
      now += 61_000;
      expect((await c.request('GET', '/api/folders', { login: idle })).status).toBe(401);

      const busy = await c.login('alice@example.test', 'alice-password');
      for (let i = 0; i < 7; i++) {
        now += 50_000;
        const res = await c.request('GET', '/api/session', { login: busy });
        expect(res.status, `after ${(i + 1) * 50} s`).toBe(i < 6 ? 200 : 401);
      }
    } finally {
      await t.close();
    }
  });

  it('sets security headers and no caching on API answers', async () => {
    const login = await api.login('alice@example.test', 'alice-password');
    const res = await api.request('GET', '/api/folders', { login });
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('x-frame-options')).toBe('SAMEORIGIN');
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    const missing = await api.request('GET', '/api/nothing-here', { login });
    expect(missing.status).toBe(404);
  });
});
