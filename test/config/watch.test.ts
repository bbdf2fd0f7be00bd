import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { LoadedConfig } from '../../src/config/load.ts';
import { watchConfig } from '../../src/config/watch.ts';
import { tempDir, until } from './helpers.ts';

const closers: Array<{ close(): void }> = [];
afterEach(() => {
  for (const c of closers.splice(0)) c.close();
});

function capturingLogger(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(JSON.parse(String(chunk)));
      cb();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines };
}

describe('watchConfig', () => {
  it('hands over a valid change and keeps the last good configuration on an invalid one', async () => {
    const dir = await tempDir();
    const file = join(dir, 'hearth.toml');
    await writeFile(file, 'hostname = "a.test"\ndomains = ["a.test"]\n');
    const { log, lines } = capturingLogger();
    const seen: LoadedConfig[] = [];
    closers.push(watchConfig(dir, { log, onConfig: (next) => seen.push(next) }));

    await writeFile(file, 'hostname = "a.test"\ndomains = ["a.test", "b.test"]\n');
    await until(() => seen.length === 1);
    expect(seen[0].config.domains).toEqual(['a.test', 'b.test']);
    expect(seen[0].dir).toBe(dir);

    await writeFile(file, 'hostname = "a.test"\ndomains = ["a.test"]\n[limits]\nmessage_size = "10XB"\n');
    const error = await until(() => lines.find((l) => l.level === 50));
    expect(String(error.msg)).toContain('limits.message_size: "10XB" is not a size');
    expect(String(error.msg)).toContain('keeping the last good configuration');
    expect(seen).toHaveLength(1);

    await writeFile(file, 'hostname = "c.test"\ndomains = ["c.test"]\n');
    await until(() => seen.length === 2);
    expect(seen[1].config.hostname).toBe('c.test');
  });
});
