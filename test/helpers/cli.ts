// Run the `hearth` command as a child process on the pinned Node, as a person would. The result
// comes on "close", once its output streams have ended, not on "exit", which can come first.
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { CLI } from './hearth.ts';

/** `code` is the exit code; a process ended by a signal counts as 128 + its number, as shells say. */
export type CliResult = { code: number; stdout: string; stderr: string };

/** `hearth <args>`: `input` on its stdin, `preload` imported (--import) first, `env` added to ours. */
export function runCli(args: string[], opts: { input?: string; preload?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...(opts.preload ? ['--import', opts.preload] : []), CLI, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1', ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(opts.input ?? '');
    child.on('close', (code, signal) => resolve({ code: code ?? 128 + (signal ? osConstants.signals[signal] : 0), stdout, stderr }));
  });
}
