// Runs once per `vitest run`, before any test file: makes the default config (with its TLS
// certificate) that every test setup copies, and removes it afterwards. Made per test file,
// it cost a key generation each time and left one folder in the temp directory per file.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureDefaultConfig } from '../src/config/defaults.ts';
import { silentLogger } from '../src/core/log.ts';

export default async function setup(): Promise<() => Promise<void>> {
  const dir = await mkdtemp(join(tmpdir(), 'hearth-template-'));
  await ensureDefaultConfig(join(dir, 'config'), { log: silentLogger() });
  // The test files run in forked processes, which inherit this.
  process.env.HEARTH_TEST_TEMPLATE = dir;
  return () => rm(dir, { recursive: true, force: true });
}
