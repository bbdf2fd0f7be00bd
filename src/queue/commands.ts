// The queue's commands, one set for both ways the CLI reaches it: through the running
// server's control socket, or (server stopped) on a queue opened straight on the spool.
import { HearthError } from '../core/errors.ts';
import type { OutboundQueue } from './queue.ts';

export type QueueCommand = (args: Record<string, unknown>) => Promise<unknown>;

function idOf(args: Record<string, unknown>): string {
  if (typeof args.id !== 'string' || !/^[a-z0-9]{1,64}$/.test(args.id)) throw new HearthError('QUEUE_BAD_ID', 'give a queue id as shown by `hearth queue list`');
  return args.id;
}

function known<T>(value: T | undefined | false, id: string): T {
  if (value === undefined || value === false) throw new HearthError('QUEUE_NO_SUCH', `no message ${id} in the queue (it may have been delivered already)`);
  return value;
}

export function queueCommands(queue: OutboundQueue): Record<string, QueueCommand> {
  return {
    'queue.list': async () => queue.list(),
    'queue.show': async (args) => {
      const id = idOf(args);
      return { entry: known(queue.get(id), id), path: queue.messagePath(id) };
    },
    'queue.retry': async (args) => ({ retried: queue.retry(args.id === undefined ? undefined : idOf(args)) }),
    'queue.hold': async (args) => ({ held: known(queue.hold(idOf(args)), String(args.id)) }),
    'queue.release': async (args) => ({ released: known(queue.release(idOf(args)), String(args.id)) }),
    'queue.delete': async (args) => ({ deleted: known(await queue.delete(idOf(args)), String(args.id)) }),
    'queue.flush': async (args) => queue.flush({ timeoutMs: typeof args.timeoutMs === 'number' ? args.timeoutMs : 60_000 }),
  };
}
