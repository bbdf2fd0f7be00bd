// The hostile HTML corpus (test/fixtures/hostile/): delivered, opened through the API, the
// document has no scripts, handlers, dangerous URLs, forms, frames, SVG/MathML, <meta>/<base>/
// <link>, CSS imports or remote loads (unless remote=1), and the CSP header is DESIGN.md's.
import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MessageList, MessageView } from '../../src/webmail/api-types.ts';
import { contentDisposition, safeFilename } from '../../src/webmail/mime-view.ts';
import { HTML_MAIL_CSP, sanitizeMailHtml } from '../../src/webmail/sanitize.ts';
import { client, fixture, makeHarness } from './api-harness.ts';
import type { Harness, Login } from './api-harness.ts';

const HOSTILE = fixture('hostile');
const FILES = readdirSync(HOSTILE).filter((f) => f.endsWith('.eml')).sort();
const EXACT_CSP = "sandbox allow-popups allow-popups-to-escape-sandbox; frame-ancestors 'self'; default-src 'none'; img-src data: 'self'; style-src 'unsafe-inline'";

/** What must never be in the sanitised document, whatever the mail. */
const FORBIDDEN: Array<[string, RegExp]> = [
  ['script element', /<script/i],
  ['event handler attribute', /<[^>]*\son[a-z]+\s*=/i],
  ['javascript: URL', /javascript\s*:/i],
  ['vbscript: URL', /vbscript\s*:/i],
  ['data:text/html', /data:text\/html/i],
  ['svg', /<svg/i],
  ['math', /<math/i],
  ['iframe/frame', /<i?frame/i],
  ['object', /<object/i],
  ['embed', /<embed/i],
  ['applet', /<applet/i],
  ['form', /<form/i],
  ['input', /<input/i],
  ['button', /<button/i],
  ['textarea', /<textarea/i],
  ['meta', /<meta/i],
  ['http-equiv', /http-equiv/i],
  ['base', /<base/i],
  ['link', /<link/i],
  ['@import', /@import/i],
  ['@font-face', /@font-face/i],
  ['expression()', /expression\s*\(/i],
  ['-moz-binding', /-moz-binding/i],
  ['srcset', /srcset/i],
  ['formaction', /formaction/i],
  ['video/audio', /<(video|audio|portal)/i],
  ['srcdoc', /srcdoc/i],
];

let h: Harness;
let api: ReturnType<typeof client>;
let alice: Login;
const uids = new Map<string, number>();

describe('hostile HTML mail', () => {
  beforeAll(async () => {
    h = await makeHarness();
    api = client(h.app);
    alice = await api.login('alice@example.test', 'alice-password');
    for (const f of FILES) await h.deliver('alice@example.test', await readFile(join(HOSTILE, f)));
    const list = (await api.json<MessageList>('GET', '/api/folders/INBOX/messages?limit=100', alice)).body;
    for (const m of list.messages) uids.set(m.subject, m.uid);
    expect(uids.size).toBe(FILES.length);
  });
  afterAll(() => h.close());

  it('has at least the corpus the issue names', () => {
    expect(FILES).toEqual(expect.arrayContaining(['script.eml', 'javascript-urls.eml', 'svg-mathml.eml', 'css-beacons.eml', 'meta-refresh-base.eml', 'forms.eml', 'frames-objects.eml', 'remote-images.eml']));
  });

  for (const file of FILES) {
    it(`${file}: nothing dangerous or remote survives, the CSP is exact`, async () => {
      const subject = (await readFile(join(HOSTILE, file), 'utf8')).match(/^Subject: (.*)$/m)![1];
      const uid = uids.get(subject)!;
      const res = await api.request('GET', `/api/folders/INBOX/messages/${uid}/html`, { login: alice });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-security-policy')).toBe(EXACT_CSP);
      expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('cache-control')).toBe('no-store');
      const doc = await res.text();
      // Our own head (charset, no-referrer, base styles), then the mail, only in the body.
      expect(doc).toMatch(/^<!doctype html><html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer"><style>[^<]*<\/style><\/head><body>/);
      const html = doc.slice(doc.indexOf('<body>'));
      expect(html.match(/<\/body><\/html>$/g)).toHaveLength(1);
      for (const [what, re] of FORBIDDEN) expect(html, `${file}: ${what}`).not.toMatch(re);
      expect(html, `${file}: remote host`).not.toMatch(/evil\.example|tracker\.example/);
      // Every URL left is ours, a data: image, or a plain link.
      for (const m of html.matchAll(/\b(?:src|href|background)="([^"]*)"/g)) {
        expect(m[1], `${file}: ${m[1]}`).toMatch(/^(?:\/api\/folders\/|data:image\/|https:\/\/(?:example\.org|shop\.example)\/|mailto:|#)/);
      }
      const view = (await api.json<MessageView>('GET', `/api/folders/INBOX/messages/${uid}`, alice)).body;
      expect(view.hasHtml).toBe(true);
      expect(view.text).not.toMatch(/<script/i);
    });
  }

  it('keeps the harmless content: text, a good link (new tab, no opener), a data: image, plain CSS', async () => {
    const js = await (await api.request('GET', `/api/folders/INBOX/messages/${uids.get('javascript and data URLs')}/html`, { login: alice })).text();
    expect(js).toContain('<a href="https://example.org/ok" target="_blank" rel="noopener noreferrer">a good link</a>');
    expect(js).toContain('href="mailto:someone@example.org"');
    expect(js).toContain('src="data:image/png;base64,iVBORw0KGgo="');
    expect(js).toContain('>relative</a>'); // the text stays, the link to our own API does not
    expect(js).not.toContain('/api/logout');
    const css = await (await api.request('GET', `/api/folders/INBOX/messages/${uids.get('CSS beacons')}/html`, { login: alice })).text();
    expect(css).toContain('.ok { color: red; font-weight: bold; }');
    expect(css).toContain('visible text');
    expect(css).toMatch(/style="[^"]*color: blue/);
    const script = await (await api.request('GET', `/api/folders/INBOX/messages/${uids.get('script tags and event handlers')}/html`, { login: alice })).text();
    expect(script).toContain('plain text stays');
    expect(script).toContain('hover me');
  });

  it('blocks remote images by default, says so, and loads them with remote=1 under the wider CSP', async () => {
    const uid = uids.get('remote images and cid')!;
    const view = (await api.json<MessageView>('GET', `/api/folders/INBOX/messages/${uid}`, alice)).body;
    expect(view.hasRemoteContent).toBe(true);
    const blocked = await (await api.request('GET', `/api/folders/INBOX/messages/${uid}/html`, { login: alice })).text();
    expect(blocked).not.toContain('tracker.example');
    expect(blocked).toContain('src="data:image/gif;base64,'); // the placeholder
    const res = await api.request('GET', `/api/folders/INBOX/messages/${uid}/html?remote=1`, { login: alice });
    expect(res.headers.get('content-security-policy')).toBe(`${EXACT_CSP.replace("img-src data: 'self'", "img-src data: 'self' https: http:")}`);
    const open = await res.text();
    expect(open).toContain('src="https://tracker.example/pixel.gif?u=alice"');
    expect(open).toContain('src="http://tracker.example/plain-http.gif"');
    expect(open).toContain('src="https://tracker.example/proto-relative.gif"');
    expect(open).toContain('background="https://tracker.example/table-bg.gif"');
    expect(open).not.toContain('srcset');
    // remote=1 allows images, never scripts, imports or frames.
    const css = await (await api.request('GET', `/api/folders/INBOX/messages/${uids.get('CSS beacons')}/html?remote=1`, { login: alice })).text();
    expect(css).not.toMatch(/@import|linked\.css|imported|font\.woff2|escaped\.png/);
    expect(css).toContain('https://evil.example/body-bg.png');
  });

  it('rewrites cid: to a signed part URL that works inside the cookie-less sandboxed frame', async () => {
    const uid = uids.get('remote images and cid')!;
    const html = await (await api.request('GET', `/api/folders/INBOX/messages/${uid}/html`, { login: alice })).text();
    const src = html.match(/src="(\/api\/folders\/INBOX\/messages\/\d+\/parts\/2\?t=[^"]+)"/)?.[1];
    expect(src).toBeDefined();
    const img = await api.request('GET', src!.replaceAll('&amp;', '&'));
    expect(img.status).toBe(200);
    expect(img.headers.get('content-type')).toBe('image/png');
    expect(img.headers.get('cross-origin-resource-policy')).toBe('cross-origin');
    // The token is for this message only, and cannot be forged.
    const other = uids.get('forms')!;
    expect((await api.request('GET', src!.replace(`/messages/${uid}/`, `/messages/${other}/`))).status).toBe(401);
    expect((await api.request('GET', src!.replace(/t=[^.]+/, 't=zzzzzzz'))).status).toBe(401);
    expect((await api.request('GET', `/api/folders/INBOX/messages/${uid}/parts/2`)).status).toBe(401);
  });

  it('the exported CSP is DESIGN.md\'s, character for character', () => {
    expect(HTML_MAIL_CSP).toBe(EXACT_CSP);
  });
});

describe('sanitiser units', () => {
  const clean = (html: string, remote = false) => sanitizeMailHtml(html, { remote, cidUrl: (cid) => (cid === 'a@b' ? '/api/x/parts/2' : undefined) });

  it('counts and blocks remote resources, keeps data: images and cid: parts', () => {
    const r = clean('<img src="https://t.example/a.gif"><img src="cid:a@b"><img src="cid:unknown"><img src="data:image/gif;base64,R0lGOD==">');
    expect(r.remoteFound).toBe(1);
    expect(r.remoteBlocked).toBe(1);
    expect(r.html).toContain('src="/api/x/parts/2"');
    expect(r.html).not.toContain('t.example');
    expect(r.html).toContain('src="data:image/gif;base64,R0lGOD=="');
    expect(r.html).toContain('<img />');
  });

  it('drops CSS whose escapes hide a url() or @import', () => {
    expect(clean('<div style="background: \\75 rl(https://x.example/a)">a</div>').html).toBe('<div>a</div>');
    expect(clean('<style>@\\69mport "https://x.example/a.css"; p { color: red }</style>').html).toBe('<style>; p { color: red }</style>');
    expect(clean('<style>p { color: red }</style><p>x</p>').html).toBe('<style>p { color: red }</style><p>x</p>');
  });

  it('never lets a <style> close early or open a tag', () => {
    const r = clean('<style>p{}</style ><img src=x onerror=alert(1)>');
    expect(r.html).not.toMatch(/onerror/);
  });

  it('attachment names are names only, encoded per RFC 6266/5987', () => {
    expect(safeFilename('../../etc/passwd')).toBe('passwd');
    expect(safeFilename('C:\\Windows\\evil.exe')).toBe('evil.exe');
    expect(safeFilename('..')).toBe('attachment');
    expect(safeFilename('a\u0000b\r\n.txt')).toBe('ab.txt');
    expect(contentDisposition('attachment', 'résumé "final".pdf')).toBe(`attachment; filename="r_sum_ _final_.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9%20_final_.pdf`);
  });
});
