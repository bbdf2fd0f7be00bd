// Logging: pino, one event per line, a child logger per connection carrying `svc` and `cid`,
// and credentials redacted wherever they appear. JSON lines for machines (and when output is
// a file or pipe); on a terminal, or with HEARTH_LOG=pretty, short lines a person can read:
//   20:14:03 INFO  smtp  message delivered  cid=Ab3x peer=127.0.0.1 bytes=1043
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import type { DestinationStream, Logger, LevelWithSilent } from 'pino';

export type { Logger } from 'pino';
export type LogLevel = LevelWithSilent;

const REDACT = ['password', 'pass', 'auth.password', 'credentials', '*.password', 'secret', '*.secret'];

export function createLogger(level: LogLevel = 'info', destination?: DestinationStream): Logger {
  const pretty = process.env.HEARTH_LOG === 'pretty' || (process.env.HEARTH_LOG !== 'json' && !destination && process.stdout.isTTY);
  const dest = destination ?? (pretty ? prettyDestination(process.stdout) : pino.destination({ fd: 1, sync: false }));
  return pino({ level, base: undefined, redact: { paths: REDACT, censor: '[redacted]' }, timestamp: pino.stdTimeFunctions.isoTime }, dest);
}

/** A logger that writes nothing: the default for unit tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * The logger a part of hearth logs through: `svc` added unless the caller already named the
 * service (pino writes a key bound twice twice, and `"svc":"index","svc":"index"` is noise),
 * plus any further bindings (a connection's `cid` and `peer`).
 */
export function named(log: Logger, svc: string, more?: Record<string, unknown>): Logger {
  if (log.bindings().svc === undefined) return log.child({ svc, ...more });
  return more ? log.child(more) : log;
}

/** Short random connection id, present on every log line of that connection. */
export function newConnectionId(): string {
  return randomBytes(6).toString('base64url');
}

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' };

/** Turns one pino JSON line into a readable one. */
export function formatPretty(line: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const { level, time, svc, msg, err, ...rest } = entry;
  const clock = typeof time === 'string' ? time.slice(11, 19) : '';
  const fields = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? (/\s/.test(v) ? JSON.stringify(v) : v) : JSON.stringify(v)}`)
    .join(' ');
  const errText = err && typeof err === 'object' ? `\n    ${String((err as { stack?: string; message?: string }).stack ?? (err as { message?: string }).message).replace(/\n/g, '\n    ')}` : '';
  return `${clock} ${LEVEL_NAMES[level as number] ?? String(level)} ${String(svc ?? 'hearth').padEnd(9)} ${String(msg ?? '')}${fields ? `  ${fields}` : ''}${errText}\n`;
}

function prettyDestination(out: NodeJS.WritableStream): DestinationStream {
  return { write: (line: string) => void out.write(formatPretty(line.trimEnd())) };
}
