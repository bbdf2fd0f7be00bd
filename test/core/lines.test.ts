import { once } from 'node:events';
import { createServer, connect } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { LineReader, SocketWriter, dotStuff, serveLines } from '../../src/core/lines.ts';

function reader(maxLine = 16): { r: LineReader; events: string[] } {
  const events: string[] = [];
  const r = new LineReader({
    maxLine,
    onLine: (line) => events.push(line.toString('latin1')),
    onOverflow: () => events.push('<overflow>'),
    onEnd: () => events.push('<end>'),
  });
  return { r, events };
}

describe('LineReader', () => {
  it('splits on CRLF and on a lone LF, without the terminator', () => {
    const { r, events } = reader();
    r.push(Buffer.from('USER a\r\nPASS b\nSTAT\r\n\r\nNOOP'));
    expect(events).toEqual(['USER a', 'PASS b', 'STAT', '']);
    r.push(Buffer.from('\r\n'));
    expect(events).toEqual(['USER a', 'PASS b', 'STAT', '', 'NOOP']);
  });

  it('handles every split point, including between CR and LF', () => {
    const input = 'A1 LOGIN x y\r\nA2 NOOP\r\nA3 X\n';
    for (let cut = 0; cut <= input.length; cut++) {
      const { r, events } = reader(32);
      r.push(Buffer.from(input.slice(0, cut)));
      r.push(Buffer.from(input.slice(cut)));
      expect(events, `cut at ${cut}`).toEqual(['A1 LOGIN x y', 'A2 NOOP', 'A3 X']);
    }
    const { r, events } = reader(32);
    for (const b of Buffer.from(input)) r.push(Buffer.from([b]));
    expect(events).toEqual(['A1 LOGIN x y', 'A2 NOOP', 'A3 X']);
  });

  it('accepts a line of exactly maxLine bytes, even with its CR and LF in separate chunks', () => {
    const { r, events } = reader(8);
    r.push(Buffer.from('12345678\r'));
    r.push(Buffer.from('\n'));
    expect(events).toEqual(['12345678']);
  });

  it('reports an overlong line once, keeps the buffer bounded, and recovers at the next line', () => {
    const { r, events } = reader(16);
    r.push(Buffer.from('OK\r\n'));
    for (let i = 0; i < 1000; i++) {
      r.push(Buffer.alloc(1024, 0x41)); // 1 MB without a line end
      expect(r.buffered).toBeLessThanOrEqual(17);
    }
    r.push(Buffer.from('AAAA\r\nNOOP\r\n'));
    expect(events).toEqual(['OK', '<overflow>', 'NOOP']);
  });

  it('reports an overlong line that arrived whole in one chunk', () => {
    const { r, events } = reader(4);
    r.push(Buffer.from('TOOLONG\r\nOK\r\n'));
    expect(events).toEqual(['<overflow>', 'OK']);
  });

  it('streams a literal, consuming exactly n bytes, then the rest of the line', async () => {
    const literal: string[] = [];
    const events: string[] = [];
    let done: Promise<void> | undefined;
    const r: LineReader = new LineReader({
      maxLine: 64,
      onLine(line) {
        const text = line.toString();
        events.push(text);
        const m = /\{(\d+)\}$/.exec(text);
        if (m) done = r.readLiteral(Number(m[1]), (chunk) => literal.push(chunk.toString()));
      },
      onOverflow: () => events.push('<overflow>'),
    });
    const input = 'A1 APPEND INBOX {12}\r\nhello\r\nworld FLAGS (\\Seen)\r\nA2 NOOP\r\n';
    for (const b of Buffer.from(input)) r.push(Buffer.from([b]));
    await done;
    expect(literal.join('')).toBe('hello\r\nworld');
    expect(literal.length).toBe(12); // streamed as it arrived, byte by byte here
    expect(events).toEqual(['A1 APPEND INBOX {12}', ' FLAGS (\\Seen)', 'A2 NOOP']);
  });

  it('a literal larger than maxLine is fine, and one big chunk is split at n', async () => {
    const literal: Buffer[] = [];
    const { r, events } = reader(8);
    const done = r.readLiteral(100_000, (c) => literal.push(c));
    r.push(Buffer.concat([Buffer.alloc(100_000, 0x78), Buffer.from('\r\nNEXT\r\n')]));
    await done;
    expect(Buffer.concat(literal).length).toBe(100_000);
    expect(events).toEqual(['', 'NEXT']);
  });

  it('literal bytes flow while lines are paused; the literal rejects if the peer ends first', async () => {
    const { r, events } = reader(16);
    r.pause();
    const got: string[] = [];
    const done = r.readLiteral(5, (c) => got.push(c.toString()));
    r.push(Buffer.from('abcdeTAIL\r\n'));
    await done;
    expect(got.join('')).toBe('abcde');
    expect(events).toEqual([]);
    r.resume();
    expect(events).toEqual(['TAIL']);
    const short = r.readLiteral(10, () => {});
    r.push(Buffer.from('abc'));
    r.end();
    await expect(short).rejects.toMatchObject({ code: 'LINE_EOF' });
    expect(events).toEqual(['TAIL', '<end>']);
  });

  it('pause/resume: pipelined lines wait, and end is reported after they are delivered', () => {
    const { r, events } = reader();
    r.push(Buffer.from('ONE\r\n'));
    r.pause();
    r.push(Buffer.from('TWO\r\nTHREE\r\nFOUR'));
    r.end();
    expect(events).toEqual(['ONE']);
    expect(r.buffered).toBe('TWO\r\nTHREE\r\nFOUR'.length);
    r.resume();
    expect(events).toEqual(['ONE', 'TWO', 'THREE', '<end>']); // partial FOUR dropped at EOF
  });

  it('one line at a time when onLine pauses and resumes later', async () => {
    const events: string[] = [];
    const r: LineReader = new LineReader({
      maxLine: 16,
      onLine(line) {
        r.pause();
        events.push(`start ${line}`);
        queueMicrotask(() => {
          events.push(`done ${line}`);
          r.resume();
        });
      },
      onOverflow() {},
    });
    r.push(Buffer.from('A\r\nB\r\nC\r\n'));
    expect(events).toEqual(['start A']);
    await new Promise<void>((res) => setImmediate(res));
    expect(events).toEqual(['start A', 'done A', 'start B', 'done B', 'start C', 'done C']);
  });

  it('signals pressure when paused input piles up, and relief when it drains', () => {
    const pressure: boolean[] = [];
    const r = new LineReader({ maxLine: 16, highWater: 100, onLine() {}, onOverflow() {}, onPressure: (p) => pressure.push(p) });
    r.pause();
    for (let i = 0; i < 30; i++) r.push(Buffer.from('LINE\r\n'));
    expect(pressure).toEqual([true]);
    r.resume();
    expect(pressure).toEqual([true, false]);
    expect(r.buffered).toBe(0);
  });

  it('discardBuffered drops what was pipelined (STARTTLS)', () => {
    const { r, events } = reader();
    r.pause();
    r.push(Buffer.from('MAIL FROM:<x>\r\n'));
    expect(r.discardBuffered()).toBe(15);
    r.resume();
    expect(events).toEqual([]);
  });
});

async function collect(stream: NodeJS.ReadableStream): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(Buffer.from(c as Buffer));
  return Buffer.concat(parts).toString('latin1');
}

async function stuff(input: string, chunkSize: number): Promise<string> {
  const bytes = Buffer.from(input, 'latin1');
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunkSize) chunks.push(bytes.subarray(i, i + chunkSize));
  return collect(Readable.from(chunks).pipe(dotStuff()));
}

describe('dotStuff', () => {
  const cases: Array<[string, string]> = [
    ['', '.\r\n'],
    ['a\r\nb\r\n', 'a\r\nb\r\n.\r\n'],
    ['.\r\n', '..\r\n.\r\n'],
    ['.hidden\n..two\nx.y\n.', '..hidden\r\n...two\r\nx.y\r\n..\r\n.\r\n'],
    ['bare\nlf\n', 'bare\r\nlf\r\n.\r\n'],
    ['no final newline', 'no final newline\r\n.\r\n'],
    ['smuggle\r\n.\r\nMAIL FROM:<x>\r\n', 'smuggle\r\n..\r\nMAIL FROM:<x>\r\n.\r\n'],
    ['bare\rcr\r', 'bare\r\ncr\r\n.\r\n'],
    ['\n.\n', '\r\n..\r\n.\r\n'],
    ['a\r\r\n.b', 'a\r\n\r\n..b\r\n.\r\n'],
  ];
  for (const [input, expected] of cases) {
    it(`stuffs ${JSON.stringify(input)} the same with any chunking`, async () => {
      for (const size of [1, 2, 3, 7, 1 << 16]) expect(await stuff(input, size), `chunk ${size}`).toBe(expected);
    });
  }

  it('keeps 8-bit bytes and a large body intact', async () => {
    const line = Buffer.from('.é\xff line\n', 'latin1').toString('latin1');
    const out = await stuff(line.repeat(10_000), 4096);
    expect(out).toBe(`..é\xff line\r\n`.repeat(10_000) + '.\r\n');
  });
});

describe('SocketWriter and serveLines on real sockets', () => {
  const cleanup: Array<() => void> = [];
  afterEach(() => {
    for (const f of cleanup.splice(0)) f();
  });

  async function pair(onServerSocket: (s: Socket) => void): Promise<{ server: Server; client: Socket }> {
    const server = createServer({ allowHalfOpen: true }, onServerSocket);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const client = connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
    await once(client, 'connect');
    cleanup.push(() => {
      client.destroy();
      server.close();
    });
    return { server, client };
  }

  /** A connected pair, with the accepted server-side socket. */
  async function connected(): Promise<{ client: Socket; server: Socket }> {
    let accept!: (s: Socket) => void;
    const server = new Promise<Socket>((resolve) => {
      accept = resolve;
    });
    const { client } = await pair(accept);
    return { client, server: await server };
  }

  it('waits for drain when the peer does not read, and delivers every byte in order', async () => {
    const { client, server } = await connected();
    client.pause();
    const writer = new SocketWriter(server);
    const size = 64 * 1024;
    const total = 200; // 12.5 MB: far more than the kernel buffers hold
    let sawBackpressure = false;
    const writes: Promise<void>[] = [];
    for (let i = 0; i < total; i++) {
      let settled = false;
      const p = writer.write(Buffer.alloc(size, i % 251)).then(() => {
        settled = true;
      });
      await Promise.resolve();
      await Promise.resolve();
      if (!settled) sawBackpressure = true;
      writes.push(p);
    }
    expect(sawBackpressure).toBe(true);
    expect(server.writableLength).toBeGreaterThan(0);
    expect(server.listenerCount('drain')).toBeLessThanOrEqual(2); // one shared waiter, not 200

    const received: Buffer[] = [];
    let bytes = 0;
    const all = new Promise<void>((resolve) => {
      client.on('data', (d: Buffer) => {
        received.push(d);
        bytes += d.length;
        if (bytes === total * size) resolve();
      });
    });
    client.resume();
    await Promise.all(writes);
    await all;
    const data = Buffer.concat(received);
    expect(data.length).toBe(total * size);
    for (let i = 0; i < total; i++) {
      expect(data[i * size]).toBe(i % 251);
      expect(data[(i + 1) * size - 1]).toBe(i % 251);
    }
  });

  it('never throws after destroy', async () => {
    const { server } = await connected();
    const w = new SocketWriter(server);
    server.destroy();
    await expect(w.write('x')).resolves.toBeUndefined();
    await expect(w.writeLine('y')).resolves.toBeUndefined();
    await expect(w.end('z')).resolves.toBeUndefined();
    expect(w.closed).toBe(true);
  });

  it('half-close: a command followed by FIN still gets its (slow) reply, then our FIN', async () => {
    const handled: string[] = [];
    let ended = false;
    const { client } = await pair((s) => {
      const { writer } = serveLines(s, {
        maxLine: 512,
        async onLine(line) {
          handled.push(line.toString());
          // The reply is computed after the client's FIN has already arrived.
          await new Promise<void>((r) => setImmediate(r));
          await new Promise<void>((r) => setImmediate(r));
          await writer.writeLine(`+OK ${line.toString()}`);
        },
        onOverflow: () => writer.writeLine('-ERR line too long'),
        onEnd: () => {
          ended = true;
        },
      });
    });
    client.end('STAT\r\nLIST\r\nUIDL');
    const parts: Buffer[] = [];
    client.on('data', (d: Buffer) => parts.push(d));
    await once(client, 'end');
    expect(Buffer.concat(parts).toString()).toBe('+OK STAT\r\n+OK LIST\r\n');
    expect(handled).toEqual(['STAT', 'LIST']);
    expect(ended).toBe(true);
  });

  it('serveLines answers an overlong line and keeps serving', async () => {
    const { client } = await pair((s) => {
      const { writer } = serveLines(s, {
        maxLine: 16,
        onLine: (line) => writer.writeLine(`+OK ${line.toString()}`),
        onOverflow: () => writer.writeLine('-ERR line too long'),
      });
    });
    const parts: Buffer[] = [];
    client.on('data', (d: Buffer) => parts.push(d));
    client.end(`${'X'.repeat(100_000)}\r\nNOOP\r\n`);
    await once(client, 'end');
    expect(Buffer.concat(parts).toString()).toBe('-ERR line too long\r\n+OK NOOP\r\n');
  });
});

describe('LineReader after end', () => {
  it('a literal requested after the peer ended rejects at once', async () => {
    const { r, events } = reader();
    r.end();
    expect(events).toEqual(['<end>']);
    await expect(r.readLiteral(3, () => {})).rejects.toMatchObject({ code: 'LINE_EOF' });
  });
});
