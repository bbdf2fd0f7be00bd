// Tasks every worker of the pool can run. Other folders add their own task modules by path
// (WorkerPool's `taskModules`), since core imports nothing from the rest of hearth.
import { createHash } from 'node:crypto';

/** `never` so a task may declare whatever payload type it expects. */
export type WorkerTask = (payload: never) => unknown;

function asBytes(data: unknown): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (typeof data === 'string') return Buffer.from(data);
  throw new TypeError('expected bytes (Uint8Array, ArrayBuffer or string)');
}

export const tasks: Record<string, WorkerTask> = {
  /** Hex SHA-256 of bytes: CPU work that would otherwise block the loop on large bodies. */
  sha256(payload: unknown): string {
    return createHash('sha256').update(asBytes(payload)).digest('hex');
  },
};
