// The browser UI, bundled in memory by esbuild when the server starts (src/webmail/ui/main.tsx,
// Preact, plus src/webmail/ui/app.css when present), kept with its gzip form and a content hash
// for the URL, so nothing is built on disk and nothing comes from a CDN.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

export type Asset = { body: Buffer; gzip: Buffer; type: string; hash: string };
export type Assets = { js?: Asset; css?: Asset; error?: string };

export const UI_DIR = fileURLToPath(new URL('./ui/', import.meta.url));
const ENTRY = fileURLToPath(new URL('./ui/main.tsx', import.meta.url));
const CSS = fileURLToPath(new URL('./ui/app.css', import.meta.url));

function asset(body: Uint8Array, type: string): Asset {
  const buf = Buffer.from(body);
  return { body: buf, gzip: gzipSync(buf, { level: 9 }), type, hash: createHash('sha256').update(buf).digest('base64url').slice(0, 12) };
}

/** Bundle the UI; a missing entry or a build error is reported in `error`, never thrown. */
export async function buildAssets(opts: { entry?: string; css?: string } = {}): Promise<Assets> {
  const entry = opts.entry ?? ENTRY;
  const cssFile = opts.css ?? CSS;
  if (!existsSync(entry)) return { error: `the webmail UI (${entry}) is not there yet` };
  try {
    const js = await build({
      entryPoints: { app: entry },
      bundle: true,
      minify: true,
      jsx: 'automatic',
      jsxImportSource: 'preact',
      format: 'esm',
      target: 'es2022',
      outdir: 'assets',
      write: false,
      logLevel: 'silent',
      legalComments: 'none',
      loader: { '.svg': 'dataurl', '.png': 'dataurl', '.woff2': 'dataurl' },
    });
    let jsOut: Uint8Array | undefined;
    const cssParts: Uint8Array[] = [];
    for (const f of js.outputFiles) {
      if (f.path.endsWith('.js')) jsOut = f.contents;
      else if (f.path.endsWith('.css')) cssParts.push(f.contents);
    }
    if (existsSync(cssFile)) {
      const css = await build({ entryPoints: [cssFile], bundle: true, minify: true, write: false, outdir: 'assets', logLevel: 'silent', loader: { '.svg': 'dataurl', '.png': 'dataurl', '.woff2': 'dataurl' } });
      for (const f of css.outputFiles) cssParts.push(f.contents);
    }
    return {
      js: jsOut ? asset(jsOut, 'text/javascript; charset=utf-8') : undefined,
      css: cssParts.length ? asset(Buffer.concat(cssParts), 'text/css; charset=utf-8') : undefined,
    };
  } catch (err) {
    return { error: `the webmail UI did not build: ${err instanceof Error ? err.message : String(err)}` };
  }
}

/** The page that loads the app (or says why there is none). */
export function shellHtml(assets: Assets): string {
  const head =
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">' +
    '<meta name="color-scheme" content="light dark"><meta name="referrer" content="no-referrer"><title>hearth mail</title>';
  if (!assets.js) {
    const why = (assets.error ?? 'the webmail UI is not built').replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
    return `${head}</head><body><main style="font:16px system-ui;margin:3em auto;max-width:40em"><h1>hearth</h1><p>${why}.</p><p>The mail API is up under <code>/api</code>.</p></main></body></html>`;
  }
  const css = assets.css ? `<link rel="stylesheet" href="/assets/app.css?v=${assets.css.hash}">` : '';
  return `${head}${css}<script type="module" src="/assets/app.js?v=${assets.js.hash}"></script></head><body><div id="app"></div></body></html>`;
}
