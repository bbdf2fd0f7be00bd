// IMAP's worker-thread tasks (WorkerPool `taskModules`): parsing a large message's MIME tree is
// CPU work that would stall every connection on the event loop. Listed by SUMMARY_TASK_MODULE.
import { summarizeMessage } from './message-info.ts';
import type { MessageSummary } from './message-info.ts';

export const tasks = {
  /** The message's bytes (moved in as an ArrayBuffer) to its MessageSummary. */
  summarize(payload: ArrayBuffer | Uint8Array): MessageSummary {
    const raw = payload instanceof Uint8Array ? Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength) : Buffer.from(payload);
    return summarizeMessage(raw);
  },
};
