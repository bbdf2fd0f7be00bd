// The control socket from the command line's side: a server that is not there, or one that is
// there but belongs to another account, each said plainly (not a stack trace).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controlRequest, controlSocketError, ControlServer } from '../../src/core/control.ts';
import { HearthError } from '../../src/core/errors.ts';
import { silentLogger } from '../../src/core/log.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hearth-control-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

it('says no server is running when nothing listens on the socket', async () => {
  const err = await controlRequest(join(dir, 'none.sock'), 'status').catch((e: unknown) => e);
  expect(err).toBeInstanceOf(HearthError);
  expect(err).toMatchObject({ code: 'CONTROL_NOT_RUNNING', message: expect.stringContaining('no hearth server is running') });
});

it('says whose socket it is when the server belongs to another account', () => {
  // Root may open any socket, so the refusal is given here as the kernel gives it.
  const denied = Object.assign(new Error('connect EACCES /srv/mail/hearth.sock'), { code: 'EACCES' });
  const err = controlSocketError(denied, '/srv/mail/hearth.sock');
  expect(err).toBeInstanceOf(HearthError);
  expect(err).toMatchObject({ code: 'CONTROL_DENIED', message: expect.stringContaining('run this as the account hearth runs as') });
  const other = Object.assign(new Error('boom'), { code: 'EIO' });
  expect(controlSocketError(other, '/x')).toBe(other);
});

it('answers a command through a running server', async () => {
  const path = join(dir, 'up.sock');
  const server = new ControlServer(path, silentLogger(), { status: async () => ({ pid: process.pid }) });
  await server.listen();
  try {
    expect(await controlRequest(path, 'status')).toEqual({ pid: process.pid });
  } finally {
    await server.close();
  }
});
