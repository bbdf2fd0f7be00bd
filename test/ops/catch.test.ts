// Test mode (`hearth serve --catch`): a message addressed to a remote domain stays here, in the
// sender's "Caught" folder, and the remote MX hears nothing; without --catch the same setup
// does deliver to it, so the silence is the test mode's doing.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { afterEach, describe, expect, it } from 'vitest';
import { controlRequest } from '../../src/core/control.ts';
import { startHearth } from '../../src/main.ts';
import { silentLogger } from '../../src/core/log.ts';
import { makeSetup } from '../helpers/hearth.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { until } from '../config/helpers.ts';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function remoteSink() {
  const received: string[][] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    logger: false,
    onData(stream, session, cb) {
      stream.resume();
      stream.on('end', () => {
        received.push(session.envelope.rcptTo.map((r) => r.address));
        cb();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return { received, port: (server.server.address() as { port: number }).port };
}

async function run(catchMail: boolean) {
  const sink = await remoteSink();
  const dns = await startDnsServer({ 'remote.example': { MX: [{ preference: 10, exchange: 'mx.remote.example' }] }, 'mx.remote.example': { A: ['127.0.0.1'] } });
  cleanups.push(() => dns.close());
  const setup = await makeSetup({
    toml: `[listeners.submission]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n[relay]\nmx_port = ${sink.port}\n[dns]\nservers = ["127.0.0.1:${dns.port}"]\ntimeout = "2s"\n`,
  });
  cleanups.push(() => setup.cleanup());
  const hearth = await startHearth({ configDir: setup.configDir, log: silentLogger(), catchMail });
  cleanups.push(() => hearth.close());
  const port = hearth.endpoints.find((e) => e.service === 'submission')!.port;
  await nodemailer
    .createTransport({ host: '127.0.0.1', port, secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, auth: { user: 'alice@example.test', pass: 'alice-password' } })
    .sendMail({ from: 'alice@example.test', to: 'friend@remote.example', bcc: 'other@remote.example', subject: 'caught?', text: 'hello' });
  // Delivered (or caught) once the queue is empty again.
  await until(async () => ((await controlRequest(hearth.controlPath, 'queue.list')) as unknown[]).length === 0, 15_000);
  return { sink, setup, hearth };
}

describe('serve --catch', () => {
  it('keeps a remote-addressed message in the sender\'s Caught folder; the remote MX receives nothing', async () => {
    const { sink, setup, hearth } = await run(true);
    const dir = join(setup.dataDir, 'example.test', 'alice', '.Caught', 'new');
    const files = await readdir(dir);
    expect(files).toHaveLength(1);
    const text = await readFile(join(dir, files[0]), 'utf8');
    expect(text).toMatch(/^X-Hearth-Caught: from=<alice@example\.test> to=(friend|other)@remote\.example, (friend|other)@remote\.example\r\n/);
    expect(text).toContain('Subject: caught?');
    expect(sink.received).toEqual([]);
    const status = (await controlRequest(hearth.controlPath, 'status')) as { catchMode: boolean; counters: { delivered: number } };
    expect(status.catchMode).toBe(true);
    expect(status.counters.delivered).toBe(2);
  }, 30_000);

  it('without --catch the same message reaches the remote MX (the fixture works)', async () => {
    const { sink, setup } = await run(false);
    expect(sink.received.flat().sort()).toEqual(['friend@remote.example', 'other@remote.example']);
    await expect(readdir(join(setup.dataDir, 'example.test', 'alice', '.Caught', 'new'))).rejects.toThrow();
  }, 30_000);
});
