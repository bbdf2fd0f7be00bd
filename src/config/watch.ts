// Following hearth.toml while the server runs: a valid edit is handed to onConfig, a broken
// one is logged with its problems and the running configuration stays as it was.
import { readFileSync, watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from '../core/log.ts';
import { CONFIG_FILE_NAME, ConfigError, displayPath, loadedFromText } from './load.ts';
import type { LoadedConfig } from './load.ts';

const DEBOUNCE_MS = 100;

export function watchConfig(dir: string, opts: { log: Logger; onConfig(next: LoadedConfig): void }): { close(): void } {
  const absDir = resolve(dir);
  const file = join(absDir, CONFIG_FILE_NAME);
  const log = opts.log;
  // editors often write twice (truncate, then data); unchanged text is not a new configuration
  let lastText: string | undefined;
  try {
    lastText = readFileSync(file, 'utf8');
  } catch {
    lastText = undefined;
  }
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let chain = Promise.resolve();

  const check = async (): Promise<void> => {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (lastText === undefined) return;
      const code = (err as NodeJS.ErrnoException).code;
      const problem = `${displayPath(file)}: ${code === 'ENOENT' ? 'the file was removed' : `cannot read: ${(err as Error).message}`}`;
      log.error({ file, problems: [problem] }, `${problem}; keeping the last good configuration`);
      return;
    }
    if (text === lastText) return;
    lastText = text;
    let next: LoadedConfig;
    try {
      next = loadedFromText(absDir, text);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      log.error({ file, problems: err.problems }, `${err.message}\nkeeping the last good configuration`);
      return;
    }
    log.info({ file }, 'configuration changed; applying it');
    try {
      opts.onConfig(next);
    } catch (err) {
      log.error({ err }, 'applying the new configuration failed');
    }
  };

  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(absDir, { persistent: false }, (_event, filename) => {
      const name = filename?.toString();
      if (closed || (name && name !== CONFIG_FILE_NAME)) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        chain = chain.then(check).catch((err) => log.error({ err }, 'reloading the configuration failed'));
      }, DEBOUNCE_MS);
    });
    watcher.on('error', (err) => log.error({ err, dir: absDir }, 'cannot watch the config folder; configuration changes need a restart'));
  } catch (err) {
    log.error({ err, dir: absDir }, 'cannot watch the config folder; configuration changes need a restart');
  }

  return {
    close(): void {
      closed = true;
      clearTimeout(timer);
      watcher?.close();
    },
  };
}
