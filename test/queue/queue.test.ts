import { existsSync } from 'node:fs';
import { open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import type { DeliveryOutcome, QueueEntry } from '../../src/queue/queue.ts';
import { answerAll, deferred, makeQueue, message, queuesPerTest, removeDir, settle, tempDir, waitFor } from './helpers.ts';

const queueWith = queuesPerTest();

async function stateOnDisk(dir: string, id: string): Promise<QueueEntry> {
  const parsed = JSON.parse(await readFile(path.join(dir, `${id}.json`), 'utf8')) as { version: number; entry: QueueEntry };
  expect(parsed.version).toBe(1);
  return parsed.entry;
}

const MIN = 60_000;

describe('enqueue', () => {
  it('has the message file and its state durably on disk when it resolves', async () => {
    const gate = deferred<DeliveryOutcome>();
    const h = await queueWith({ deliver: () => gate.promise });
    const raw = message('durable');
    const id = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test', notify: ['FAILURE'], orcpt: 'rfc822;bob@remote.test' }], dsn: { ret: 'HDRS', envid: 'E1' } }, raw);
    // Checked synchronously after the await: no delivery step has had a turn yet.
    expect(existsSync(path.join(h.dir, `${id}.eml`))).toBe(true);
    expect(await readFile(path.join(h.dir, `${id}.eml`))).toEqual(raw);
    const state = await stateOnDisk(h.dir, id);
    // The first attempt (it starts at once) is recorded with the message: a crash from here on
    // retries after the first backoff, never in a storm.
    expect(state).toMatchObject({ id, from: 'alice@hearth.example', size: raw.length, held: false, dsn: { ret: 'HDRS', envid: 'E1' }, recipients: [{ address: 'bob@remote.test', status: 'pending', attempts: 1, lastAttemptAt: state.createdAt, nextAttemptAt: state.createdAt + 10 * MIN, notify: ['FAILURE'], orcpt: 'rfc822;bob@remote.test' }] });
    // The message's temporary file is gone (a state .tmp may be the attempt being recorded now).
    expect((await readdir(h.dir)).filter((n) => n.includes('.eml.'))).toEqual([]);
    gate.resolve({ recipients: [{ address: 'bob@remote.test', status: 'delivered', reply: '250 ok' }] });
  });

  it('refuses the message when the folder sync fails with an I/O error, instead of syncing again', async () => {
    const h = await queueWith({ deliver: answerAll('delivered', '250 ok') });
    // Every FileHandle shares one prototype: make the next directory fsync fail as a disk would.
    const probe = await open(h.dir, 'r');
    const proto = Object.getPrototypeOf(probe) as { sync(this: FileHandle): Promise<void> };
    await probe.close();
    const realSync = proto.sync;
    let failures = 0;
    const spy = vi.spyOn(proto, 'sync').mockImplementation(async function (this: FileHandle) {
      if (failures === 0 && (await this.stat()).isDirectory()) {
        failures++;
        throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
      }
      return realSync.call(this);
    });
    try {
      // After a failed fsync a second one may report success with nothing on disk (Linux clears
      // the error): the message must not be acknowledged.
      await expect(h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message('eio'))).rejects.toMatchObject({ code: 'QUEUE_IO' });
    } finally {
      spy.mockRestore();
    }
    expect(failures).toBe(1);
    expect(h.queue.list()).toEqual([]);
  });

  it('streams content from an async iterable and rejects an envelope without recipients', async () => {
    const h = await queueWith({ deliver: () => new Promise(() => {}) });
    async function* chunks(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('Subject: parts\r\n\r\n');
      yield Buffer.from('one\r\n');
      yield Buffer.from('two\r\n');
    }
    const id = await h.queue.enqueue({ from: 'a@hearth.example', recipients: [{ address: 'b@remote.test' }, { address: 'b@REMOTE.test' }] }, chunks());
    expect(await readFile(path.join(h.dir, `${id}.eml`), 'utf8')).toBe('Subject: parts\r\n\r\none\r\ntwo\r\n');
    expect(h.queue.get(id)?.recipients.map((r) => r.address)).toEqual(['b@remote.test']);
    await expect(h.queue.enqueue({ from: 'a@hearth.example', recipients: [] }, message())).rejects.toMatchObject({ code: 'QUEUE_BAD_ENVELOPE' });
  });
});

describe('delivery', () => {
  it('removes the entry and its files once every recipient is delivered', async () => {
    const h = await queueWith({ deliver: answerAll('delivered', '250 2.0.0 queued as X (from mx.remote.test)') });
    const id = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message());
    await waitFor(() => h.queue.list().length === 0, 'entry removed');
    expect(h.calls).toHaveLength(1);
    expect(h.calls[0].domain).toBe('remote.test');
    await waitFor(async () => (await readdir(h.dir)).length === 0, 'files removed');
    expect(existsSync(path.join(h.dir, `${id}.eml`))).toBe(false);
    expect(h.bounces).toEqual([]);
  });

  it('hands deliver one job per (entry, domain) with all of that domain\'s recipients and a readable message', async () => {
    const bodies: string[] = [];
    const h = await queueWith({
      deliver: async (job) => {
        const parts: Buffer[] = [];
        for await (const c of job.open()) parts.push(Buffer.from(c as Buffer));
        bodies.push(Buffer.concat(parts).toString());
        return answerAll('delivered', '250 ok')(job);
      },
    });
    await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'b1@a.test' }, { address: 'b2@b.test' }, { address: 'b3@A.test' }] }, message('split'));
    await waitFor(() => h.queue.list().length === 0, 'all delivered');
    const byDomain = Object.fromEntries(h.calls.map((c) => [c.domain, c.recipients.map((r) => r.address)]));
    expect(byDomain).toEqual({ 'a.test': ['b1@a.test', 'b3@A.test'], 'b.test': ['b2@b.test'] });
    expect(bodies).toHaveLength(2);
    for (const b of bodies) expect(b).toContain('this is split.');
    expect(h.calls[0].signal).toBeInstanceOf(AbortSignal);
  });

  it('the first attempt runs on the state written at enqueue; a retry writes its own record and reads the message back', async () => {
    const gates = [deferred<DeliveryOutcome>(), deferred<DeliveryOutcome>()];
    const seen: Array<{ inode: number; state: QueueEntry; body: Buffer }> = [];
    let dir = '';
    let id = '';
    const h = await queueWith({
      deliver: async (job) => {
        const parts: Buffer[] = [];
        for await (const c of job.open()) parts.push(Buffer.from(c as Buffer));
        // Every state write is a new file renamed into place, so the inode shows whether one happened.
        seen.push({ inode: (await stat(path.join(dir, `${id}.json`))).ino, state: await stateOnDisk(dir, id), body: Buffer.concat(parts) });
        return gates[seen.length - 1].promise;
      },
    });
    dir = h.dir;
    const raw = message('reserved');
    const t0 = h.clock.t;
    id = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, raw);
    const enqueuedInode = (await stat(path.join(dir, `${id}.json`))).ino;
    await waitFor(() => seen.length === 1, 'first attempt');
    expect(seen[0].inode).toBe(enqueuedInode);
    expect(seen[0].state.recipients[0]).toMatchObject({ status: 'pending', attempts: 1, lastAttemptAt: t0, nextAttemptAt: t0 + 10 * MIN });
    expect(seen[0].body.equals(raw)).toBe(true);
    gates[0].resolve({ recipients: [{ address: 'bob@remote.test', status: 'deferred', reply: '451 4.7.1 later' }] });
    await waitFor(async () => (await stateOnDisk(dir, id)).recipients[0].status === 'deferred', 'deferral on disk');

    h.advance(10 * MIN);
    await waitFor(() => seen.length === 2, 'second attempt');
    // Recorded before deliver ran: attempt 2, due again after the doubled backoff.
    expect(seen[1].state.recipients[0]).toMatchObject({ status: 'deferred', attempts: 2, lastAttemptAt: t0 + 10 * MIN, nextAttemptAt: t0 + 30 * MIN });
    expect(seen[1].body.equals(raw)).toBe(true);
    gates[1].resolve({ recipients: [{ address: 'bob@remote.test', status: 'delivered', reply: '250 ok' }] });
    await waitFor(async () => (await readdir(dir)).length === 0, 'files removed once delivered');
    expect(h.queue.list()).toEqual([]);
  });

  it('keeps no message body in memory once nothing is left to deliver, even while the failure notice waits', async () => {
    // 32 messages of 1 MB (the in-memory limit in all) fail for good, and their notices cannot be
    // sent, so they stay queued. Their bodies are not needed again (a notice reads the file).
    const filler = Buffer.alloc(1024 * 1024, 'x');
    const probeBody = message('probe');
    let notices = 0;
    let probeSeen: Buffer | undefined;
    let dir = '';
    const h = await queueWith({
      deliver: async (job) => {
        if (!job.recipients[0].address.startsWith('probe')) return answerAll('failed', '550 5.1.1 no such user')(job);
        // The file changes under the probe: what deliver reads shows whether the body came from memory.
        await writeFile(path.join(dir, `${job.entry.id}.eml`), Buffer.from('changed on disk\r\n'));
        const parts: Buffer[] = [];
        for await (const c of job.open()) parts.push(Buffer.from(c as Buffer));
        probeSeen = Buffer.concat(parts);
        return answerAll('delivered', '250 ok')(job);
      },
      bounce: async () => {
        notices++;
        throw new Error('mailbox of the sender is full');
      },
    });
    dir = h.dir;
    for (let i = 0; i < 32; i++) await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: `nobody${i}@remote.test` }] }, filler);
    await waitFor(() => notices === 32, 'every failure notice tried', 20_000);
    expect(h.queue.list()).toHaveLength(32);
    await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'probe@remote.test' }] }, probeBody);
    await waitFor(() => probeSeen !== undefined, 'probe delivered');
    expect(probeSeen!.equals(probeBody)).toBe(true);
  }, 30_000);

  it('retries a 4xx with backoff and succeeds on a later attempt', async () => {
    const replies = ['451 4.7.1 greylisted, try again later (from mx.remote.test)', '421 4.3.2 busy (from mx.remote.test)'];
    const h = await queueWith({
      deliver: async (job) => {
        const reply = replies.shift();
        return answerAll(reply ? 'deferred' : 'delivered', reply ?? '250 2.0.0 ok')(job);
      },
    });
    const t0 = h.clock.t;
    const id = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message());
    await waitFor(async () => (await stateOnDisk(h.dir, id)).recipients[0].status === 'deferred', 'first deferral on disk');
    let r = (await stateOnDisk(h.dir, id)).recipients[0];
    expect(r).toMatchObject({ attempts: 1, lastAttemptAt: t0, nextAttemptAt: t0 + 10 * MIN, lastReply: expect.stringContaining('greylisted') });

    h.advance(10 * MIN - 1);
    await settle();
    expect(h.calls).toHaveLength(1); // not before it is due
    h.advance(1);
    await waitFor(() => h.calls.length === 2, 'second attempt');
    await waitFor(async () => (await stateOnDisk(h.dir, id)).recipients[0].attempts === 2 && (await stateOnDisk(h.dir, id)).recipients[0].status === 'deferred', 'second deferral');
    r = (await stateOnDisk(h.dir, id)).recipients[0];
    expect(r.nextAttemptAt).toBe(t0 + 10 * MIN + 20 * MIN); // doubled

    h.advance(20 * MIN);
    await waitFor(() => h.queue.list().length === 0, 'delivered on the third attempt');
    expect(h.calls).toHaveLength(3);
    expect(h.bounces).toEqual([]);
  });

  it('caps the backoff at maxRetryMs', async () => {
    const h = await queueWith({ deliver: answerAll('deferred', '450 4.2.0 mailbox busy'), policy: { firstRetryMs: 10 * MIN, maxRetryMs: 25 * MIN } });
    const id = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message());
    const gaps: number[] = [];
    for (let i = 1; i <= 4; i++) {
      await waitFor(() => h.completed.count === i, `attempt ${i}`);
      const r = h.queue.get(id)!.recipients[0];
      gaps.push(r.nextAttemptAt! - r.lastAttemptAt!);
      h.advance(r.nextAttemptAt! - h.clock.t);
    }
    expect(gaps).toEqual([10 * MIN, 20 * MIN, 25 * MIN, 25 * MIN]);
  });

  it('counts a rejecting deliver as a deferral with a clear reply', async () => {
    let n = 0;
    const h = await queueWith({
      deliver: async (job) => {
        if (n++ === 0) throw new Error('relay exploded');
        return answerAll('delivered', '250 ok')(job);
      },
    });
    const id = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message());
    await waitFor(() => h.queue.get(id)?.recipients[0].status === 'deferred', 'deferred');
    expect(h.queue.get(id)?.recipients[0].lastReply).toBe('451 4.3.0 delivery attempt failed inside hearth: relay exploded');
    h.advance(10 * MIN);
    await waitFor(() => h.queue.list().length === 0, 'delivered on retry');
  });

  it('aborts an attempt at the scheduler deadline and defers it', async () => {
    let sawAbort = false;
    const h = await queueWith({
      policy: { attemptDeadlineMs: 50 },
      deliver: (job) =>
        new Promise((_, reject) => {
          job.signal.addEventListener('abort', () => {
            sawAbort = true;
            reject(job.signal.reason);
          });
        }),
    });
    const id = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message());
    await waitFor(() => h.queue.get(id)?.recipients[0].status === 'deferred', 'deferred after the deadline');
    expect(sawAbort).toBe(true);
    expect(h.queue.get(id)?.recipients[0].lastReply).toMatch(/^451 4\.4\.2 delivery attempt to remote\.test timed out/);
  });
});

describe('concurrency', () => {
  it('keeps at most maxPerDomain attempts per domain and maxConcurrent in total', async () => {
    const active = new Map<string, number>();
    const peak = new Map<string, number>();
    let total = 0;
    let peakTotal = 0;
    const gates: Array<() => void> = [];
    const h = await queueWith({
      policy: { maxPerDomain: 2, maxConcurrent: 3 },
      deliver: async (job) => {
        active.set(job.domain, (active.get(job.domain) ?? 0) + 1);
        peak.set(job.domain, Math.max(peak.get(job.domain) ?? 0, active.get(job.domain)!));
        peakTotal = Math.max(peakTotal, ++total);
        await new Promise<void>((r) => gates.push(r));
        active.set(job.domain, active.get(job.domain)! - 1);
        total--;
        return answerAll('delivered', '250 ok')(job);
      },
    });
    for (let i = 0; i < 6; i++) await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: `u${i}@busy.test` }] }, message(`m${i}`));
    await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'x@other.test' }] }, message('other'));
    await waitFor(() => gates.length === 3, 'three attempts running');
    // The other domain got a slot although busy.test has more waiting.
    expect(peak.get('busy.test')).toBe(2);
    expect(peak.get('other.test')).toBe(1);
    while (h.queue.list().length > 0) {
      await waitFor(() => gates.length > 0 || h.queue.list().length === 0, 'an attempt to release');
      gates.shift()?.();
    }
    expect(peak.get('busy.test')).toBe(2);
    expect(peakTotal).toBe(3);
    expect(h.calls).toHaveLength(7);
  });
});

describe('control', () => {
  it('hold keeps a message from delivery, release lets it go', async () => {
    const h = await queueWith({ deliver: answerAll('deferred', '451 4.0.0 later') });
    const id = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message());
    await waitFor(() => h.calls.length === 1 && h.queue.get(id)?.recipients[0].status === 'deferred', 'first attempt');
    expect(h.queue.hold(id)).toBe(true);
    expect(h.queue.hold('nosuchid0000')).toBe(false);
    await waitFor(async () => (await stateOnDisk(h.dir, id)).held, 'hold recorded on disk');
    expect(h.queue.retry(id)).toBe(0); // held: retry leaves it alone
    h.advance(60 * MIN);
    await settle();
    expect(h.calls).toHaveLength(1);
    expect(h.queue.release(id)).toBe(true);
    await waitFor(() => h.calls.length === 2, 'attempt after release');
    await waitFor(async () => !(await stateOnDisk(h.dir, id)).held, 'release recorded');
  });

  it('retry makes a deferred message due now', async () => {
    let n = 0;
    const h = await queueWith({ deliver: async (job) => answerAll(n++ === 0 ? 'deferred' : 'delivered', n === 1 ? '451 later' : '250 ok')(job) });
    const id = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message());
    await waitFor(() => h.queue.get(id)?.recipients[0].status === 'deferred', 'deferred');
    expect(h.queue.retry(id)).toBe(1);
    await waitFor(() => h.queue.list().length === 0, 'delivered without moving the clock');
    expect(h.calls).toHaveLength(2);
  });

  it('delete removes the files, aborts a running attempt and sends no bounce', async () => {
    let aborted = false;
    const h = await queueWith({
      deliver: (job) =>
        new Promise((_, reject) => {
          job.signal.addEventListener('abort', () => {
            aborted = true;
            reject(new Error('aborted'));
          });
        }),
    });
    const id = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message());
    await waitFor(() => h.calls.length === 1, 'attempt running');
    expect(await h.queue.delete(id)).toBe(true);
    expect(await h.queue.delete(id)).toBe(false);
    expect(h.queue.get(id)).toBeUndefined();
    await waitFor(() => aborted, 'running attempt aborted');
    await settle();
    expect(await readdir(h.dir)).toEqual([]);
    expect(h.bounces).toEqual([]);
  });

  it('flush retries everything now and returns once only deferred remain', async () => {
    const h = await queueWith({
      deliver: async (job) => ({ recipients: job.recipients.map((r) => (r.address.startsWith('ok') ? { address: r.address, status: 'delivered' as const, reply: '250 ok' } : { address: r.address, status: 'deferred' as const, reply: '451 4.3.0 later' })) }),
    });
    await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'ok@a.test' }] }, message('a'));
    const stuck = await h.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'no@b.test' }] }, message('b'));
    await waitFor(() => h.queue.get(stuck)?.recipients[0].status === 'deferred', 'first attempt');
    const calls = h.calls.length;
    const result = await h.queue.flush({ timeoutMs: 5_000 });
    expect(result).toEqual({ remaining: 1 });
    expect(h.calls.length).toBe(calls + 1); // the deferred one was tried again by the flush
    expect(h.queue.list().map((e) => e.id)).toEqual([stuck]);
  });
});

describe('restart', () => {
  it('resumes pending recipients and never re-sends delivered ones', async () => {
    const dir = await tempDir();
    const first = await makeQueue({
      dir,
      deliver: async (job) => ({ recipients: job.recipients.map((r) => (r.address === 'done@remote.test' ? { address: r.address, status: 'delivered' as const, reply: '250 ok' } : { address: r.address, status: 'deferred' as const, reply: '451 later' })) }),
    });
    const id = await first.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'done@remote.test' }, { address: 'later@remote.test' }] }, message());
    await waitFor(async () => (await stateOnDisk(dir, id)).recipients.every((r) => r.status !== 'pending'), 'first attempt recorded');
    await first.shutdown();

    const second = await queueWith({ dir, clock: first.clock, deliver: answerAll('delivered', '250 ok') });
    expect(second.queue.get(id)?.recipients.map((r) => [r.address, r.status])).toEqual([
      ['done@remote.test', 'delivered'],
      ['later@remote.test', 'deferred'],
    ]);
    second.advance(10 * MIN);
    await waitFor(() => second.queue.list().length === 0, 'resumed and delivered');
    expect(second.calls.map((c) => c.recipients.map((r) => r.address))).toEqual([['later@remote.test']]);
  });

  it('a failed folder sync while removing a finished entry at start is logged, not an unhandled rejection', async () => {
    const dir = await tempDir();
    const hung = await makeQueue({ dir, deliver: () => new Promise(() => {}) });
    const id = await hung.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message());
    await waitFor(() => hung.calls.length === 1, 'attempt running');
    await hung.scheduler.stop({ abort: false, graceMs: 0 });
    // What a crash can leave: a state that says every recipient is done, still on disk.
    const state = JSON.parse(await readFile(path.join(dir, `${id}.json`), 'utf8')) as { entry: QueueEntry };
    state.entry.recipients[0].status = 'delivered';
    await writeFile(path.join(dir, `${id}.json`), JSON.stringify(state));

    const probe = await open(dir, 'r');
    const proto = Object.getPrototypeOf(probe) as { sync(this: FileHandle): Promise<void> };
    await probe.close();
    const realSync = proto.sync;
    const spy = vi.spyOn(proto, 'sync').mockImplementation(async function (this: FileHandle) {
      if ((await this.stat()).isDirectory()) throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
      return realSync.call(this);
    });
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown): void => {
      rejections.push(reason);
    };
    process.on('unhandledRejection', onRejection);
    try {
      const restarted = await queueWith({ dir, clock: hung.clock, deliver: answerAll('delivered', '250 ok') });
      await waitFor(() => restarted.queue.list().length === 0, 'finished entry removed');
      await waitFor(() => !existsSync(path.join(dir, `${id}.eml`)), 'message file removed');
      await settle();
    } finally {
      process.off('unhandledRejection', onRejection);
      spy.mockRestore();
    }
    expect(rejections).toEqual([]);
  });

  it('records the attempt before deliver runs, so a crash mid-attempt retries at the backoff time', async () => {
    const dir = await tempDir();
    const hung = await makeQueue({ dir, deliver: () => new Promise(() => {}) });
    const t0 = hung.clock.t;
    const id = await hung.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message());
    await waitFor(() => hung.calls.length === 1, 'attempt running');
    // The state on disk while deliver runs is what a crash leaves behind.
    expect((await stateOnDisk(dir, id)).recipients[0]).toMatchObject({ status: 'pending', attempts: 1, lastAttemptAt: t0, nextAttemptAt: t0 + 10 * MIN });
    await hung.scheduler.stop({ abort: false, graceMs: 0 }); // the crashed process: nothing more happens there

    const restarted = await queueWith({ dir, clock: hung.clock, deliver: answerAll('delivered', '250 ok') });
    await settle();
    expect(restarted.calls).toHaveLength(0); // no retry storm
    restarted.advance(10 * MIN);
    await waitFor(() => restarted.queue.list().length === 0, 'retried at the backoff time');
    expect(restarted.calls).toHaveLength(1);
  });

  it('ignores a torn state write and an unfinished enqueue left by a crash', async () => {
    const dir = await tempDir();
    const first = await makeQueue({ dir, deliver: answerAll('deferred', '451 later') });
    const id = await first.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message());
    await waitFor(async () => (await stateOnDisk(dir, id)).recipients[0].status === 'deferred', 'deferred');
    await first.shutdown();
    // A state write that died before its rename, and an enqueue that died before its state file.
    await writeFile(path.join(dir, `.${id}.json.deadbeef.tmp`), '{"version":1,"entry":{"id":"' + id + '","recipients":[{"addr');
    await writeFile(path.join(dir, '0000000000orphan.eml'), message('orphan'));
    await writeFile(path.join(dir, '.0000000001abc.eml.cafe.tmp'), 'Subject: half');

    const second = await queueWith({ dir, clock: first.clock, deliver: answerAll('delivered', '250 ok') });
    expect(second.queue.list().map((e) => [e.id, e.recipients[0].status, e.recipients[0].attempts])).toEqual([[id, 'deferred', 1]]);
    expect((await readdir(dir)).sort()).toEqual([`${id}.eml`, `${id}.json`]);
    second.advance(10 * MIN);
    await waitFor(() => second.queue.list().length === 0, 'delivered');
  });

  it('an attempt interrupted by shutdown is due again at once after the restart', async () => {
    const dir = await tempDir();
    const first = await makeQueue({ dir, deliver: (job) => new Promise((_, reject) => job.signal.addEventListener('abort', () => reject(job.signal.reason))) });
    const id = await first.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'bob@remote.test' }] }, message());
    await waitFor(() => first.calls.length === 1, 'attempt running');
    await first.shutdown();
    expect((await stateOnDisk(dir, id)).recipients[0]).toMatchObject({ status: 'deferred', nextAttemptAt: first.clock.t, lastReply: expect.stringContaining('shutting down') });
    const second = await queueWith({ dir, clock: first.clock, deliver: answerAll('delivered', '250 ok') });
    await waitFor(() => second.queue.list().length === 0, 'delivered without waiting for the backoff');
  });
});


describe('offline use (the CLI with no server running)', () => {
  it('hold, retry and delete on a spool with an unstarted scheduler persist once stop() resolves', async () => {
    const dir = await tempDir();
    const server = await makeQueue({ dir, deliver: answerAll('deferred', '451 later') });
    const held = await server.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'a@remote.test' }] }, message('one'));
    const gone = await server.queue.enqueue({ from: 'alice@hearth.example', recipients: [{ address: 'b@remote.test' }] }, message('two'));
    await waitFor(() => server.completed.count === 2, 'both attempted');
    await server.shutdown();

    const { Scheduler } = await import('../../src/core/scheduler.ts');
    const { OutboundQueue } = await import('../../src/queue/queue.ts');
    const { silentLogger } = await import('../../src/core/log.ts');
    let delivered = 0;
    const cli = new OutboundQueue({ dir, scheduler: new Scheduler({ log: silentLogger() }), hostname: 'h', log: silentLogger(), now: server.clock.now, deliver: async () => { delivered++; return { recipients: [] }; }, bounce: () => Promise.reject(new Error('offline')) });
    await cli.start();
    expect(cli.list().map((e) => e.id)).toEqual([held, gone]);
    expect(cli.hold(held)).toBe(true);
    expect(await cli.delete(gone)).toBe(true);
    await cli.stop();
    expect(delivered).toBe(0);
    expect((await stateOnDisk(dir, held)).held).toBe(true);
    expect((await readdir(dir)).sort()).toEqual([`${held}.eml`, `${held}.json`]);
    await removeDir(dir);
  });
});
