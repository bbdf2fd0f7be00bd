// DESIGN invariant 1: a 250 after DATA means the message is on disk. Kill hearth with
// SIGKILL in the middle of a burst, restart it, and check that every acknowledged message is
// in new/ exactly once and that nothing partial is visible in new/ or cur/.
import { afterAll, describe, expect, it } from 'vitest';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeSetup, spawnHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';

const BODY_LINES = 400; // about 20 KB per message, so a kill often lands mid-write

function message(id: string): string {
  const line = `${id} the quick brown fox jumps over the lazy dog\r\n`;
  return `Subject: ${id}\r\nMessage-ID: <${id}@burst>\r\n\r\n${line.repeat(BODY_LINES)}END ${id}\r\n`;
}

/** One sender: keeps sending until the connection dies, recording every 250. */
async function sender(port: number, prefix: string, acked: Set<string>, attempted: Set<string>): Promise<void> {
  let c: RawSmtp;
  try {
    c = await RawSmtp.connect(port);
    if (!(await c.reply()).startsWith('220')) return;
    await c.command('EHLO burst.test');
  } catch {
    return;
  }
  for (let n = 0; n < 10_000; n++) {
    const id = `${prefix}-${n}`;
    try {
      if (!(await c.command('MAIL FROM:<burst@remote.example>')).startsWith('250')) return;
      if (!(await c.command('RCPT TO:<alice@example.test>')).startsWith('250')) return;
      if (!(await c.command('DATA')).startsWith('354')) return;
      attempted.add(id);
      c.send(message(id) + '.\r\n');
      const reply = await c.reply(15_000);
      if (!reply.startsWith('250')) return;
      acked.add(id);
    } catch {
      return;
    }
  }
}

describe('durability under SIGKILL', () => {
  let setup: TestSetup;
  afterAll(async () => setup?.cleanup());

  it('keeps every acknowledged message exactly once and shows nothing partial', async () => {
    setup = await makeSetup({ toml: '[limits]\nconnections_per_ip = 50\n' });
    const acked = new Set<string>();
    const attempted = new Set<string>();
    for (let round = 0; round < 2; round++) {
      const hearth = await spawnHearth(setup.configDir);
      const senders = Array.from({ length: 8 }, (_, i) => sender(hearth.smtpPort, `r${round}s${i}`, acked, attempted));
      // Kill once a good number of messages are acknowledged, while the others are mid-flight.
      const target = acked.size + 60;
      for (let i = 0; i < 3000 && acked.size < target; i++) await new Promise((r) => setImmediate(r));
      const deadline = Date.now() + 20_000;
      while (acked.size < target && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      hearth.child.kill('SIGKILL');
      await hearth.exited;
      await Promise.all(senders);
    }
    expect(acked.size).toBeGreaterThanOrEqual(60);

    // Restart once more so a restart after a crash is proven to work, then inspect the store.
    const hearth = await spawnHearth(setup.configDir);
    hearth.child.kill('SIGTERM');
    expect(await hearth.exited).toBe(0);

    const maildir = join(setup.dataDir, 'example.test', 'alice');
    const seen = new Map<string, number>();
    for (const sub of ['new', 'cur']) {
      for (const name of await readdir(join(maildir, sub))) {
        const text = await readFile(join(maildir, sub, name), 'latin1');
        const id = /^Subject: (\S+)\r\n/m.exec(text)?.[1];
        expect(id, `${sub}/${name} has a subject`).toBeTruthy();
        // Whole: the body ends with its END marker and the size in the name is the real size.
        expect(text.endsWith(`END ${id}\r\n`), `${sub}/${name} is complete`).toBe(true);
        expect(name).toContain(`,S=${Buffer.byteLength(text, 'latin1')}`);
        seen.set(id!, (seen.get(id!) ?? 0) + 1);
      }
    }
    for (const id of acked) expect(seen.get(id), `acknowledged ${id}`).toBe(1);
    // A message stored but not acknowledged (killed between fsync and 250) may be there, once.
    for (const [id, count] of seen) {
      expect(attempted.has(id)).toBe(true);
      expect(count).toBe(1);
    }
  }, 90_000);
});
