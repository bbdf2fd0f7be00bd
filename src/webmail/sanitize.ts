// HTML mail, made safe to show: a server-side rewrite with sanitize-html (no scripts, event
// handlers, forms, frames, plugins, SVG/MathML, <base>, <meta>, <link>; only http(s)/mailto/tel
// links, opened in a new tab without an opener or referrer; cid: turned into our part URLs;
// remote images and CSS url()s replaced unless the reader allowed them), then served under the
// per-response CSP below inside an <iframe sandbox> without allow-scripts (DESIGN.md). The CSP
// is what holds even if the rewrite misses something; the rewrite is what keeps a tracking pixel
// from loading and the layout from escaping.
import sanitizeHtml from 'sanitize-html';
import type { IOptions } from 'sanitize-html';

/** DESIGN.md: the HTML mail CSP, exactly. */
export const HTML_MAIL_CSP = "sandbox allow-popups allow-popups-to-escape-sandbox; frame-ancestors 'self'; default-src 'none'; img-src data: 'self'; style-src 'unsafe-inline'";
/** With remote content allowed: images may also come from the web (CSS url() images count as images). */
export const HTML_MAIL_CSP_REMOTE = "sandbox allow-popups allow-popups-to-escape-sandbox; frame-ancestors 'self'; default-src 'none'; img-src data: 'self' https: http:; style-src 'unsafe-inline'";

/** 1×1 transparent GIF: what a blocked remote image becomes. */
const PLACEHOLDER = 'data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7';
const DATA_IMAGE = /^data:image\/(?:png|gif|jpe?g|webp|bmp|avif|x-icon|vnd\.microsoft\.icon|svg\+xml)(?:;[a-z0-9=.+-]+)*;base64,[a-z0-9+/=\s]*$/i;
const REMOTE = /^(?:https?:)?\/\//i;

const TAGS = [
  'a', 'abbr', 'acronym', 'address', 'article', 'aside', 'b', 'bdi', 'bdo', 'big', 'blockquote', 'br', 'caption', 'center', 'cite', 'code', 'col',
  'colgroup', 'dd', 'del', 'details', 'dfn', 'div', 'dl', 'dt', 'em', 'figcaption', 'figure', 'font', 'footer', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6',
  'header', 'hr', 'i', 'img', 'ins', 'kbd', 'li', 'main', 'mark', 'nav', 'ol', 'p', 'pre', 'q', 'rp', 'rt', 'ruby', 's', 'samp', 'section', 'small',
  'span', 'strike', 'strong', 'style', 'sub', 'summary', 'sup', 'table', 'tbody', 'td', 'tfoot', 'th', 'thead', 'time', 'tr', 'tt', 'u', 'ul',
  'var', 'wbr',
];
/** Disallowed tags whose content is dropped too (not only the tag). */
const DROP_WITH_CONTENT = [
  'script', 'noscript', 'template', 'title', 'textarea', 'option', 'select', 'button', 'svg', 'math', 'iframe', 'frame', 'frameset', 'noframes',
  'object', 'embed', 'applet', 'noembed', 'xmp', 'plaintext', 'audio', 'video', 'canvas', 'head-script', 'xml',
];
const GLOBAL_ATTRS = ['style', 'class', 'id', 'title', 'lang', 'dir', 'align', 'valign', 'width', 'height', 'bgcolor', 'color', 'border', 'role', 'background'];
const ATTRS: Record<string, string[]> = {
  '*': GLOBAL_ATTRS,
  a: ['href', 'name', 'target', 'rel'],
  img: ['src', 'alt', 'hspace', 'vspace'],
  table: ['cellpadding', 'cellspacing', 'summary', 'frame', 'rules'],
  td: ['colspan', 'rowspan', 'nowrap', 'abbr', 'scope'],
  th: ['colspan', 'rowspan', 'nowrap', 'abbr', 'scope'],
  col: ['span'],
  colgroup: ['span'],
  font: ['face', 'size'],
  ol: ['start', 'type', 'reversed'],
  ul: ['type'],
  li: ['value', 'type'],
  blockquote: ['type'],
  hr: ['size', 'noshade'],
  time: ['datetime'],
  details: ['open'],
};

export type SanitizeOptions = {
  /** Load remote images and CSS images (the reader asked, or trusts the sender). */
  remote: boolean;
  /** cid: reference (Content-ID without <>) → URL of that part, or undefined when unknown. */
  cidUrl: (cid: string) => string | undefined;
};
export type SanitizeResult = { html: string; remoteBlocked: number; remoteFound: number };

type Ctx = { opts: SanitizeOptions; remoteFound: number; remoteBlocked: number };

/** A URL found in mail, as it should be in the output for an image-like use; undefined drops it. */
function imageUrl(ctx: Ctx, raw: string): string | undefined {
  const url = raw.trim().replace(/[\u0000-\u001f]/g, '');
  if (/^cid:/i.test(url)) return ctx.opts.cidUrl(safeDecode(url.slice(4)).replace(/^<|>$/g, ''));
  if (DATA_IMAGE.test(url)) return url;
  if (REMOTE.test(url)) {
    ctx.remoteFound++;
    if (ctx.opts.remote) return url.startsWith('//') ? `https:${url}` : url;
    ctx.remoteBlocked++;
    return PLACEHOLDER;
  }
  return undefined;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** CSS escapes (`\75 rl(`) undone: only to look for what they might hide. */
function unescapeCss(css: string): string {
  return css.replace(/\\([0-9a-f]{1,6})\s?/gi, (_, h: string) => {
    const cp = parseInt(h, 16);
    return cp > 0 && cp <= 0x10ffff ? String.fromCodePoint(cp) : '';
  }).replace(/\\(.)/g, '$1');
}

const CSS_DANGER = /url\s*\(|@import|image-set\s*\(|expression\s*\(|behavior\s*:|-moz-binding|javascript:|vbscript:|@font-face|src\s*\(/gi;
const dangerCount = (css: string): number => css.match(CSS_DANGER)?.length ?? 0;

/**
 * CSS from a style attribute or <style> element: @import and expression()/behaviors gone,
 * url() kept only for data: images, cid: parts and (when allowed) remote images. A declaration
 * whose escapes would hide any of that is dropped whole.
 */
export function sanitizeCss(ctx: Ctx, css: string): string {
  let out = css.replace(/<\/?[a-z!]/gi, ' ').replace(/\/\*[\s\S]*?(?:\*\/|$)/g, ' ');
  // A declaration or rule whose escapes spell something that loads or runs goes, whole.
  if (out.includes('\\')) out = out.replace(/[^;{}]*\\[^;{}]*/g, (chunk) => (dangerCount(unescapeCss(chunk)) > dangerCount(chunk) ? '' : chunk));
  out = out.replace(/@import[^;]*(?:;|$)/gi, '');
  out = out.replace(/@font-face\s*\{[^}]*\}?/gi, '');
  out = out.replace(/(?:-webkit-)?image-set\s*\((?:[^()]|\([^()]*\))*\)/gi, () => {
    ctx.remoteFound++;
    ctx.remoteBlocked++;
    return 'none';
  });
  out = out.replace(/url\s*\(\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([^)]*))\s*\)/gi, (_, dq?: string, sq?: string, bare?: string) => {
    const u = imageUrl(ctx, (dq ?? sq ?? bare ?? '').trim());
    return u === undefined ? 'none' : `url("${u.replace(/["\\\n\r]/g, '')}")`;
  });
  out = out.replace(/expression\s*\(/gi, 'x(').replace(/behavior\s*:/gi, 'x:').replace(/-moz-binding/gi, 'x').replace(/(?:java|vb)script\s*:/gi, 'x:');
  // Anything still loading something (an unbalanced url( ) is dropped whole.
  if (/url\s*\(|@import/i.test(out.replace(/url\("[^"]*"\)/g, ''))) return '';
  return out;
}

function linkHref(raw: string): string | undefined {
  const url = raw.trim();
  if (/^(?:https?:|mailto:|tel:)/i.test(url)) return url;
  if (url.startsWith('//')) return `https:${url}`;
  if (/^#[\w-]*$/.test(url)) return url;
  return undefined;
}

function options(ctx: Ctx): IOptions {
  return {
    allowedTags: TAGS,
    allowVulnerableTags: true, // <style>: its text is filtered after the fact (filterStyles)
    disallowedTagsMode: 'discard',
    nonTextTags: DROP_WITH_CONTENT,
    allowedAttributes: ATTRS,
    allowedSchemes: ['http', 'https', 'mailto', 'tel'],
    allowedSchemesByTag: { img: ['http', 'https', 'data'] },
    allowedSchemesAppliedToAttributes: ['href', 'src', 'background'],
    allowProtocolRelative: false,
    parseStyleAttributes: false,
    enforceHtmlBoundary: false,
    transformTags: {
      body: (_tag, attribs) => ({ tagName: 'div', attribs }),
      '*': (tagName, attribs) => {
        const out: Record<string, string> = {};
        for (const [k, v] of Object.entries(attribs)) {
          const name = k.toLowerCase();
          if (name.startsWith('on') || name === 'srcset' || name === 'formaction' || name === 'xlink:href') continue;
          out[name] = v;
        }
        if (out.style !== undefined) {
          const css = sanitizeCss(ctx, out.style);
          if (css.trim() === '') delete out.style;
          else out.style = css;
        }
        if (out.background !== undefined) {
          const u = imageUrl(ctx, out.background);
          if (u === undefined || u === PLACEHOLDER) delete out.background;
          else out.background = u;
        }
        if (tagName === 'img') {
          const u = out.src === undefined ? undefined : imageUrl(ctx, out.src);
          if (u === undefined) delete out.src;
          else out.src = u;
        }
        if (tagName === 'a') {
          const href = out.href === undefined ? undefined : linkHref(out.href);
          delete out.target;
          delete out.rel;
          if (href === undefined) delete out.href;
          else {
            out.href = href;
            if (!href.startsWith('#')) {
              out.target = '_blank';
              out.rel = 'noopener noreferrer';
            }
          }
        }
        return { tagName, attribs: out };
      },
    },
  };
}

/** <style> text is passed through raw by sanitize-html: filter it as CSS, and close no tags. */
function filterStyles(ctx: Ctx, html: string): string {
  return html.replace(/<style>([\s\S]*?)<\/style>/g, (_, css: string) => {
    const clean = sanitizeCss(ctx, css).replace(/</g, '\\3c ');
    return clean.trim() === '' ? '' : `<style>${clean}</style>`;
  });
}

/** The mail's HTML, rewritten (see the file comment). */
export function sanitizeMailHtml(html: string, opts: SanitizeOptions): SanitizeResult {
  const ctx: Ctx = { opts, remoteFound: 0, remoteBlocked: 0 };
  const body = filterStyles(ctx, sanitizeHtml(html, options(ctx)));
  return { html: body, remoteBlocked: ctx.remoteBlocked, remoteFound: ctx.remoteFound };
}

/** A whole document for the iframe: our defaults first, then the sanitised mail. */
export function mailDocument(body: string): string {
  return (
    '<!doctype html><html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">' +
    '<style>html{color-scheme:light}body{margin:8px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#111;background:#fff;overflow-wrap:anywhere}' +
    'img{max-width:100%;height:auto}table{max-width:100%}pre{white-space:pre-wrap}blockquote{margin:0 0 0 .8em;padding-left:.8em;border-left:2px solid #ccc}</style>' +
    `</head><body>${body}</body></html>`
  );
}
