// Logging: pino, one JSON line per event (or pretty lines on a terminal), a child logger
// per connection carrying `svc` and `cid`, and credentials redacted wherever they appear.
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import type { DestinationStream, Logger, LevelWithSilent } from 'pino';

export type { Logger } from 'pino';
export type LogLevel = LevelWithSilent;

const REDACT = ['password', 'pass', 'auth.password', 'credentials', '*.password', 'secret', '*.secret'];

export function createLogger(level: LogLevel = 'info', destination?: DestinationStream): Logger {
  return pino({ level, base: undefined, redact: { paths: REDACT, censor: '[redacted]' }, timestamp: pino.stdTimeFunctions.isoTime }, destination ?? pino.destination({ fd: 1, sync: false }));
}

/** A logger that writes nothing: the default for unit tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** Short random connection id, present on every log line of that connection. */
export function newConnectionId(): string {
  return randomBytes(6).toString('base64url');
}
