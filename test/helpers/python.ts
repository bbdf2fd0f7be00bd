// Runs a Python 3 script (real stdlib clients: smtplib, imaplib, poplib) as a child process.
import { execFile } from 'node:child_process';

export function runPython(script: string, args: string[] = [], timeoutMs = 20_000): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile('python3', ['-c', script, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(err, { stdout, stderr }));
      else resolve({ stdout, stderr });
    });
  });
}
