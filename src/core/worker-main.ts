// Entry point of a WorkerPool thread: loads the task modules named in workerData, then
// answers one { id, task, payload } message at a time with { id, ok, result | error }.
// Run directly by Node 24's type stripping, outside any bundler or test runner.
import { parentPort, workerData } from 'node:worker_threads';

type Task = (payload: unknown) => unknown;
interface Request {
  id: number;
  task: string;
  payload: unknown;
}

const port = parentPort;
if (!port) throw new Error('worker-main.ts must run in a worker thread');

const moduleUrls: string[] = (workerData as { taskModules: string[] }).taskModules;

const loaded: Promise<Map<string, Task>> = (async () => {
  const registry = new Map<string, Task>();
  for (const url of moduleUrls) {
    const mod = (await import(url)) as { tasks?: Record<string, Task>; default?: Record<string, Task> };
    const table = mod.tasks ?? mod.default;
    if (!table || typeof table !== 'object') throw new Error(`task module ${url} exports no "tasks" table`);
    for (const [name, fn] of Object.entries(table)) {
      if (typeof fn === 'function') registry.set(name, fn);
    }
  }
  return registry;
})();
// A module that fails to load is reported to each caller (below), not as an unhandled
// rejection that would kill the thread and hide the reason.
loaded.catch(() => {});

function serializeError(err: unknown): { name: string; message: string; stack?: string; code?: unknown } {
  if (err instanceof Error) return { name: err.name, message: err.message, stack: err.stack, code: (err as { code?: unknown }).code };
  return { name: 'Error', message: String(err) };
}

port.on('message', async (msg: Request) => {
  try {
    const registry = await loaded;
    const fn = registry.get(msg.task);
    if (!fn) throw Object.assign(new Error(`unknown worker task "${msg.task}"`), { code: 'WORKER_UNKNOWN_TASK' });
    const result = await fn(msg.payload);
    port.postMessage({ id: msg.id, ok: true, result });
  } catch (err) {
    port.postMessage({ id: msg.id, ok: false, error: serializeError(err) });
  }
});
