// The control socket: a Unix socket under the data directory through which the `hearth`
// command talks to the running server (status, reload, and later queue and gather commands).
// One JSON object per line each way: {"cmd": "status", "args": {...}} -> {"ok": true, "result": ...}.
// Only the owner may connect (mode 0600). A second server on the same data directory finds
// the socket alive and refuses to start, instead of two processes sharing one Maildir.
import { chmod, unlink } from 'node:fs/promises';
import net from 'node:net';
import { HearthError } from './errors.ts';
import type { Logger } from './log.ts';

export type ControlHandler = (args: Record<string, unknown>) => Promise<unknown>;

const MAX_REQUEST = 64 * 1024;

export class ControlServer {
  readonly path: string;
  readonly #log: Logger;
  readonly #handlers: Record<string, ControlHandler>;
  readonly #server: net.Server;

  constructor(path: string, log: Logger, handlers: Record<string, ControlHandler>) {
    this.path = path;
    this.#log = log;
    this.#handlers = handlers;
    this.#server = net.createServer((socket) => this.#serve(socket));
  }

  async listen(): Promise<void> {
    if (await isAlive(this.path)) {
      throw new HearthError('CONTROL_IN_USE', `another hearth is already running on this data directory (its control socket ${this.path} answers); stop it first`);
    }
    await unlink(this.path).catch(() => undefined);
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.path, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    await chmod(this.path, 0o600);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await unlink(this.path).catch(() => undefined);
  }

  #serve(socket: net.Socket): void {
    let buffered = '';
    socket.setEncoding('utf8');
    socket.setTimeout(30_000, () => socket.destroy());
    socket.on('error', () => undefined);
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      if (buffered.length > MAX_REQUEST) {
        socket.end(JSON.stringify({ ok: false, error: 'request too large' }) + '\n');
        return;
      }
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        void this.#answer(line).then((reply) => socket.write(JSON.stringify(reply) + '\n'));
      }
    });
  }

  async #answer(line: string): Promise<{ ok: boolean; result?: unknown; error?: string }> {
    let req: { cmd?: unknown; args?: unknown };
    try {
      req = JSON.parse(line) as { cmd?: unknown; args?: unknown };
    } catch {
      return { ok: false, error: 'not JSON' };
    }
    const handler = typeof req.cmd === 'string' && Object.hasOwn(this.#handlers, req.cmd) ? this.#handlers[req.cmd] : undefined;
    if (!handler) return { ok: false, error: `unknown command ${JSON.stringify(req.cmd)}; known: ${Object.keys(this.#handlers).join(', ')}` };
    try {
      const args = req.args && typeof req.args === 'object' ? (req.args as Record<string, unknown>) : {};
      return { ok: true, result: await handler(args) };
    } catch (err) {
      this.#log.error({ err, cmd: req.cmd }, 'control command failed');
      return { ok: false, error: (err as Error).message };
    }
  }
}

/** Send one command to a running server. Rejects with CONTROL_NOT_RUNNING when none answers. */
export function controlRequest(path: string, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    let buffered = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new HearthError('CONTROL_TIMEOUT', `the server did not answer "${cmd}" within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(JSON.stringify({ cmd, args }) + '\n'));
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      const nl = buffered.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      socket.end();
      const reply = JSON.parse(buffered.slice(0, nl)) as { ok: boolean; result?: unknown; error?: string };
      if (reply.ok) resolve(reply.result);
      else reject(new HearthError('CONTROL_FAILED', reply.error ?? 'failed'));
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(controlSocketError(err, path));
    });
  });
}

/** What failing to reach the control socket means, for a person: not running, or not yours. */
export function controlSocketError(err: NodeJS.ErrnoException, path: string): Error {
  if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') return new HearthError('CONTROL_NOT_RUNNING', `no hearth server is running (no answer on ${path})`, { cause: err });
  if (err.code === 'EACCES' || err.code === 'EPERM') {
    return new HearthError('CONTROL_DENIED', `the running server's control socket ${path} is not open to you: run this as the account hearth runs as (e.g. \`sudo -u hearth …\`), or as root`, { cause: err });
  }
  return err;
}

async function isAlive(path: string): Promise<boolean> {
  try {
    await controlRequest(path, 'status', {}, 2_000);
    return true;
  } catch (err) {
    // A server we may not talk to is still a server on this data directory.
    return (err as HearthError).code === 'CONTROL_FAILED' || (err as HearthError).code === 'CONTROL_DENIED';
  }
}
