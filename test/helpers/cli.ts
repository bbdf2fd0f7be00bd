// Run the `hearth` command as a child process on the pinned Node, as a person would.
import { spawn } from 'node:child_process';
import { CLI } from './hearth.ts';

export type CliResult = { code: number | null; stdout: string; stderr: string };

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
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}
