// A generated 200 MB mbox imports with bounded memory: the file is streamed, one message in
// memory at a time. RSS growth is asserted loosely (GC timing varies); the rate is printed.
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { makeSetup } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { importMbox } from '../../src/transfer/import.ts';
import { bob, openStore } from './helpers.ts';

const TARGET_BYTES = Number(process.env.HEARTH_LARGE_MBOX_MB ?? 200) * 1024 * 1024;
const BODY_LINE = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt.\n';

let setup: TestSetup;
let dir: string;
let file: string;
let messages = 0;

beforeAll(async () => {
  setup = await makeSetup({ fsync: false });
  dir = await mkdtemp(join(tmpdir(), 'hearth-large-'));
  file = join(dir, 'large.mbox');
  const out = createWriteStream(file);
  let written = 0;
  const body = BODY_LINE.repeat(500); // ~46 KB a message, plus every 50th about 2 MB
  const big = BODY_LINE.repeat(22_000);
  while (written < TARGET_BYTES) {
    messages++;
    const msg = `From sender@example.org Mon Jan 15 10:30:00 2024\nFrom: sender@example.org\nSubject: message ${messages}\nMessage-ID: <large-${messages}@example.org>\n\n>From quoted ${messages}\n${messages % 50 === 0 ? big : body}\n`;
    written += Buffer.byteLength(msg);
    if (!out.write(msg)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'close');
}, 60_000);
afterAll(async () => {
  await setup?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

it('imports a 200 MB mbox with bounded memory', async () => {
  const mail = openStore(setup, { fullText: false });
  const size = (await stat(file)).size;
  globalThis.gc?.();
  const before = process.memoryUsage().rss;
  let peak = before;
  let ticks = 0;
  const r = await importMbox({
    mail,
    box: bob,
    file,
    onProgress: () => {
      if (++ticks % 50 === 0) peak = Math.max(peak, process.memoryUsage().rss);
    },
  });
  await mail.close();
  const growthMb = (peak - before) / 1048576;
  const secs = r.ms / 1000;
  process.stdout.write(`large mbox: ${r.imported} messages, ${(size / 1048576).toFixed(0)} MiB in ${secs.toFixed(1)} s = ${(r.imported / secs).toFixed(0)} msg/s, ${(size / 1048576 / secs).toFixed(1)} MiB/s; RSS growth ${growthMb.toFixed(0)} MiB\n`);
  expect(r).toMatchObject({ imported: messages, duplicates: 0, broken: [] });
  // The file is 200 MiB; holding it would grow RSS past that. One message (≤ 2 MB) plus the
  // store's caches, SQLite pages and GC slack measured 126–138 MiB (62 without full-text indexing).
  expect(growthMb).toBeLessThan(180);
}, 120_000);
