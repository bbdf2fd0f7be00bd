// The hearth under test for bench/imap.ts, in a child process of its own: the benchmark's
// client does not share its event loop, and its memory figures are the server's alone.
// argv: <configDir>. Sends { ports } once listening; answers { mem } (after two full GCs when
// started with --expose-gc) and { stop } over the IPC channel.
import v8 from 'node:v8';
import { silentLogger } from '../src/core/log.ts';
import { startHearth } from '../src/main.ts';

type Request = { id: number; op: 'mem' | 'stop' };

const hearth = await startHearth({ configDir: process.argv[2], log: silentLogger() });
const gc = (globalThis as { gc?: () => void }).gc;
process.on('message', (msg: Request) => {
  void (async () => {
    if (msg.op === 'mem') {
      if (gc) {
        gc();
        await new Promise((r) => setImmediate(r));
        gc();
      }
      const m = process.memoryUsage();
      process.send!({ id: msg.id, mem: { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, newSpace: newSpace() } });
    } else if (msg.op === 'stop') {
      await hearth.close();
      process.send!({ id: msg.id, stopped: true }, () => process.exit(0));
    }
  })();
});
function newSpace(): number {
  return v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
}
process.send!({ ports: Object.fromEntries(hearth.endpoints.map((e) => [e.service, e.port])) });
