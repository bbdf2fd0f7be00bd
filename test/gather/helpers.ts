// Shared bits of the gather tests: a "remote" hearth (IMAP and POP3 on loopback, a user with
// mail) and a "local" hearth that gathers from it, plus readers for what arrived locally.
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { controlRequest } from '../../src/core/control.ts';
import { ALL_LISTENERS, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import type { DnsServer } from '../helpers/dns-server.ts';

export type Running = Awaited<ReturnType<typeof startTestHearth>>;
export { runCli } from '../helpers/cli.ts';
export type { CliResult } from '../helpers/cli.ts';

export type Remote = { setup: TestSetup; hearth: Running; imap: number; imaps: number; pop3: number; pop3s: number };

export const REMOTE_USER = 'bob@example.test';
export const REMOTE_PASS = 'bob-password';
export const LOCAL_USER = 'alice@example.test';

const AUTH = '[auth]\nfailure_delay = "1ms"\nmax_failure_delay = "5ms"\nmax_failures = 200\n';

export async function startRemote(): Promise<Remote> {
  const setup = await makeSetup({ fsync: false, toml: `${ALL_LISTENERS}\n${AUTH}[junk]\nenabled = false\n[gather]\nenabled = false\n` });
  const hearth = await startTestHearth(setup);
  return { setup, hearth, imap: hearth.port('imap'), imaps: hearth.port('imaps'), pop3: hearth.port('pop3'), pop3s: hearth.port('pop3s') };
}

/** `dnsPort`: a loopback DNS server for the sender checks of gathered mail (keeps tests off the network). */
export async function startLocal(extraToml = '', dnsPort?: number): Promise<{ setup: TestSetup; hearth: Running }> {
  const dns = dnsPort ? `[dns]\nservers = ["127.0.0.1:${dnsPort}"]\n` : '';
  const setup = await makeSetup({ fsync: false, toml: `${ALL_LISTENERS}\n${AUTH}[junk]\nenabled = false\n${dns}${extraToml}` });
  const hearth = await startTestHearth(setup);
  return { setup, hearth };
}

let counter = 0;

/** A message as a remote sender would have written it. */
export function message(subject: string, opts: { messageId?: string; bodyBytes?: number; body?: string } = {}): Buffer {
  const id = opts.messageId ?? `<${subject.replace(/\W/g, '')}.${++counter}.${process.pid}@remote.test>`;
  let body = opts.body ?? `Hello, this is ${subject}.\r\n.a line starting with a dot\r\n`;
  if (opts.bodyBytes) body += 'x'.repeat(75).concat('\r\n').repeat(Math.ceil(opts.bodyBytes / 77));
  return Buffer.from(`From: Carol <carol@elsewhere.test>\r\nTo: <${REMOTE_USER}>\r\nSubject: ${subject}\r\nDate: Mon, 2 Feb 2026 10:00:00 +0000\r\nMessage-ID: ${id}\r\n\r\n${body}`);
}

/** Put messages straight into the remote user's Maildir (as if delivered earlier). */
export async function seedRemote(remote: Remote, messages: Buffer[], folder?: string): Promise<void> {
  const [user, domain] = REMOTE_USER.split('@');
  for (const m of messages) await remote.hearth.store.deliver([{ user, domain, folder }], m);
}

export type LocalMessage = { dir: 'new' | 'cur'; name: string; tag: string | undefined; subject: string | undefined; messageId: string | undefined; flags: string; content: Buffer };

/** Every message in a local user's folder (Maildir new/ and cur/), parsed a little. */
export async function localMessages(dataDir: string, address = LOCAL_USER, folder = 'INBOX'): Promise<LocalMessage[]> {
  const [user, domain] = address.split('@');
  const base = join(dataDir, domain, user, folder === 'INBOX' ? '' : `.${folder}`);
  const out: LocalMessage[] = [];
  for (const dir of ['new', 'cur'] as const) {
    let names: string[] = [];
    try {
      names = await readdir(join(base, dir));
    } catch {
      continue;
    }
    for (const name of names.sort()) {
      const content = await readFile(join(base, dir, name));
      const head = content.subarray(0, Math.max(0, content.indexOf('\r\n\r\n'))).toString('latin1');
      out.push({
        dir,
        name,
        content,
        tag: /^X-Hearth-Gathered: (.*)$/m.exec(head)?.[1],
        subject: /^Subject: (.*)$/m.exec(head)?.[1],
        messageId: /^Message-ID: (.*)$/im.exec(head)?.[1],
        flags: name.includes(':2,') ? name.slice(name.indexOf(':2,') + 3) : '',
      });
    }
  }
  return out;
}

export function control(hearth: Running, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<unknown> {
  return controlRequest(hearth.controlPath, cmd, args, timeoutMs);
}

/** `gather.add` through the control socket with loopback defaults. */
export async function addAccount(local: Running, remote: Remote, over: Record<string, unknown> = {}, password = REMOTE_PASS): Promise<string> {
  const protocol = (over.protocol as string) ?? 'imap';
  const account = {
    name: `acct-${++counter}`,
    owner: LOCAL_USER,
    protocol,
    host: '127.0.0.1',
    port: protocol === 'imap' ? remote.imap : remote.pop3,
    tls: 'none',
    user: REMOTE_USER,
    mode: 'copy',
    intervalMs: 3_600_000,
    idle: false,
    ...over,
  };
  const added = (await control(local, 'gather.add', { account, password })) as { id: string };
  return added.id;
}

export type Outcome = { id: string; ok: boolean; error?: string; code?: string; result?: { collected: number; deleted: number; flagsToLocal: number; flagsToRemote: number; remapped: number } };

export async function runAccount(local: Running, id: string): Promise<Outcome> {
  const [o] = (await control(local, 'gather.run', { id }, 120_000)) as Outcome[];
  return o;
}

/** Poll `check` until it returns a value (bounded); no fixed sleeps. */
export async function eventually<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let delay = 10;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(200, delay * 2);
  }
}

/** Tags must be unique: two local copies of one remote message is a duplicate. */
export function duplicates(messages: LocalMessage[]): string[] {
  const seen = new Map<string, number>();
  for (const m of messages) if (m.tag) seen.set(m.tag, (seen.get(m.tag) ?? 0) + 1);
  return [...seen].filter(([, n]) => n > 1).map(([t]) => t);
}

/** The messages one account delivered (tests share a local mailbox). */
export function mine(messages: LocalMessage[], accountId: string): LocalMessage[] {
  return messages.filter((m) => m.tag?.startsWith(`${accountId} `));
}

/**
 * Empty bob's mailboxes between tests. The remote server keeps bob's index open, so it is
 * stopped first (deleting under it would leave it writing to deleted files and serving a
 * stale mailbox), then started again on new ports.
 */
export async function resetRemote(remote: Remote): Promise<void> {
  await remote.hearth.close();
  await rm(join(remote.setup.dataDir, 'example.test', 'bob'), { recursive: true, force: true });
  remote.hearth = await startTestHearth(remote.setup);
  Object.assign(remote, { imap: remote.hearth.port('imap'), imaps: remote.hearth.port('imaps'), pop3: remote.hearth.port('pop3'), pop3s: remote.hearth.port('pop3s') });
}

export type GatherPair = { remote: Remote; local: { setup: TestSetup; hearth: Running }; dns: DnsServer };

/**
 * A remote hearth (bob's mailbox, the account collected from) and a local one (alice, who
 * collects), shared by a describe block: every test starts with no accounts and an empty bob.
 */
export function useGatherPair(hooks: { beforeAll(fn: () => Promise<void>): void; afterAll(fn: () => Promise<void>): void; afterEach(fn: () => Promise<void>): void }): GatherPair {
  const pair = {} as GatherPair;
  hooks.beforeAll(async () => {
    pair.remote = await startRemote();
    // An empty zone: the sender checks of gathered mail get quick NXDOMAINs, not the internet.
    pair.dns = await startDnsServer();
    pair.local = await startLocal('', pair.dns.port);
  });
  hooks.afterAll(async () => {
    await pair.local?.hearth.close();
    await pair.remote?.hearth.close();
    await pair.local?.setup.cleanup();
    await pair.remote?.setup.cleanup();
    await pair.dns?.close();
  });
  hooks.afterEach(async () => {
    for (const acct of (await control(pair.local.hearth, 'gather.list')) as Array<{ id: string }>) await control(pair.local.hearth, 'gather.remove', { id: acct.id });
    await resetRemote(pair.remote);
  });
  return pair;
}
