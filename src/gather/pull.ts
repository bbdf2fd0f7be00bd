// One pull of one gather account: connect, find what is new, deliver it here exactly once, then
// (move mode) delete it remotely or (mirror mode) bring flags into step. The ledger says what
// was collected; the sink delivers. See ledger.ts for the exactly-once protocol:
//   intent (durable) -> deliver each message, tagged -> complete (durable) -> remote delete.
// Messages stream through in batches: at most `parallel` messages are in memory at once, and a
// large first pull that is stopped resumes after its last completed batch.
import { ImapFlow } from 'imapflow';
import type { FetchMessageObject, MailboxObject } from 'imapflow';
import { HearthError, isStorageFault } from '../core/errors.ts';
import { headerEnd, stripOwnAuthResults } from '../smtp/auth-checks.ts';
import type { Logger } from '../core/log.ts';
import type { MailboxRef } from '../store/maildir.ts';
import type { GatherAccount } from './accounts.ts';
import { topReceivedDate } from './auth.ts';
import type { GatherAuthSetup } from './auth.ts';
import { GatherError } from './accounts.ts';
import type { CollectedItem, GatherLedger } from './ledger.ts';
import { Pop3Client, Pop3Error } from './pop3-client.ts';
import type { GatherSink } from './sink.ts';
import { traceHeaders } from './sink.ts';

export type PullProgress = { folder: string; done: number; total: number };
export type PullResult = { collected: number; deleted: number; flagsToLocal: number; flagsToRemote: number; remapped: number };

export type PullContext = {
  account: GatherAccount;
  password: string;
  ledger: GatherLedger;
  sink: GatherSink;
  log: Logger;
  /** This server's name, for the Received header. */
  hostname: string;
  signal?: AbortSignal;
  /** Messages per ledger intent (one durable commit before and one after). Default 100. */
  batchSize?: number;
  /** Local deliveries in flight at once (each holds one message in memory). Default 8. */
  parallel?: number;
  /** Network timeout per wait, ms. Default 60 s. */
  timeoutMs?: number;
  /** The folder junk mail may have been diverted to (searched during recovery). */
  junkFolder?: string;
  /** Sender authentication (DKIM/ARC/DMARC) of collected mail; none when absent. */
  auth?: GatherAuthSetup;
  /** For the age limit of the checks; injectable for tests. */
  now?: () => number;
  onProgress?(p: PullProgress): void;
};

/**
 * Failure kinds the scheduler acts on: `auth` stops the account until its password changes;
 * `network` and `remote` retry with backoff; `local` (our disk) retries too.
 */
export type FailureKind = 'auth' | 'network' | 'remote' | 'local' | 'config';

export class PullError extends HearthError {
  readonly kind: FailureKind;
  constructor(code: string, kind: FailureKind, message: string, options?: ErrorOptions) {
    super(code, message, options);
    this.kind = kind;
  }
}

const MIRRORED_SYSTEM = new Set(['\\Seen', '\\Answered', '\\Flagged', '\\Draft']);

export function ownerRef(owner: string): MailboxRef {
  const at = owner.lastIndexOf('@');
  return { user: owner.slice(0, at).toLowerCase(), domain: owner.slice(at + 1).toLowerCase() };
}

/** The tag on the first line of a gathered message: unique per remote message. */
export function gatherTag(account: GatherAccount, folder: string, uidvalidity: number, rid: string): string {
  return account.protocol === 'imap' ? `${account.id} imap:${encodeURIComponent(folder)};UIDVALIDITY=${uidvalidity};UID=${rid}` : `${account.id} pop3:UIDL=${rid}`;
}

/** Message-ID from the header of a raw message (first occurrence), or null. */
export function messageIdOf(raw: Buffer): string | null {
  let end = raw.indexOf('\r\n\r\n');
  if (end < 0) end = raw.indexOf('\n\n');
  const head = raw.subarray(0, end < 0 ? Math.min(raw.length, 64 * 1024) : end).toString('latin1');
  const m = /^message-id:[ \t]*((?:.|\r?\n[ \t])*)/im.exec(head);
  if (!m) return null;
  const id = /<[^<>\s]+>/.exec(m[1].replace(/\r?\n[ \t]/g, ' '));
  return id ? id[0] : null;
}

/** Only the flags that are mirrored: system flags a person sets, and keywords. */
export function mirroredFlags(flags: Iterable<string>): string[] {
  const out = new Set<string>();
  for (const f of flags) {
    if (f.startsWith('\\')) {
      const canon = `\\${f.slice(1, 2).toUpperCase()}${f.slice(2).toLowerCase()}`;
      if (MIRRORED_SYSTEM.has(canon)) out.add(canon);
    } else if (f) {
      out.add(f);
    }
  }
  return [...out].sort();
}

/** Three-way merge per flag: a side that changed a flag since the base wins for that flag. */
export function mergeFlags(base: readonly string[], local: readonly string[], remote: readonly string[]): string[] {
  const b = new Set(base);
  const l = new Set(local);
  const r = new Set(remote);
  const out: string[] = [];
  for (const f of new Set([...b, ...l, ...r])) {
    const inL = l.has(f);
    if (inL !== b.has(f) ? inL : r.has(f)) out.push(f);
  }
  return out.sort();
}

const sameFlags = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((f, i) => f === b[i]);

/** Are this account's messages checked (its own setting, or the config's default)? */
export function authChecksOn(account: GatherAccount, auth: GatherAuthSetup | undefined): boolean {
  if (!auth) return false;
  return account.authChecks ?? (account.trustAuthResults ? true : auth.enabled);
}

/**
 * The collected message as it is stored: without Authentication-Results fields claiming our
 * authserv-id, and (checks on, mail received recently) with our own on top. Never refuses:
 * a DMARC reject/quarantine failure comes back as `junk`.
 */
export async function authenticate(ctx: PullContext, source: Buffer, opts: { rid: string; folder: string; receivedAt: Date | undefined; flags: readonly string[] }): Promise<{ head: Buffer; body: Buffer; junk: boolean }> {
  const { account, auth } = ctx;
  if (!auth) return { head: Buffer.alloc(0), body: source, junk: false };
  const age = opts.receivedAt ? (ctx.now ?? Date.now)() - opts.receivedAt.getTime() : 0;
  if (!authChecksOn(account, auth) || age > auth.maxAgeMs) {
    // No blank line: the message is all header (as the checker takes it too).
    const end = headerEnd(source);
    const headLen = end < 0 ? source.length : end;
    const stripped = stripOwnAuthResults(source.subarray(0, headLen), auth.checker.hostname);
    return { head: Buffer.alloc(0), body: stripped.removed ? Buffer.concat([stripped.head, source.subarray(headLen)]) : source, junk: false };
  }
  const via = `${account.protocol.toUpperCase()} from ${account.host.replace(/[^A-Za-z0-9.:[\]-]/g, '')}`;
  const out = await auth.checker.check({ message: source, via, trustAuthservId: account.trustAuthResults });
  const log = { account: account.id, folder: opts.folder, rid: opts.rid, from: out.fromDomain, source: out.source, dkim: out.dkim, arc: out.arc, dmarc: out.dmarc, policy: out.policy, temp: out.temp, lookups: out.lookups, ms: out.ms };
  // Mail the person already handled at the provider (mirrored flags) stays where they put it.
  const junk = out.junk && opts.flags.length === 0;
  if (junk) ctx.log.warn(log, `gathered message fails DMARC for ${out.fromDomain} (policy ${out.policy}); delivered to Junk`);
  else if (out.temp) ctx.log.info(log, `gathered message delivered with DMARC temperror (${out.temp})`);
  else ctx.log.debug(log, 'gathered message checked');
  return { head: Buffer.from(out.header, 'latin1'), body: out.message, junk };
}

/** Pull one account. Resolves with counts; rejects with a PullError. */
export async function pullAccount(ctx: PullContext): Promise<PullResult> {
  await recoverIntents(ctx);
  if (ctx.account.protocol === 'imap') return pullImap(ctx);
  return pullPop3(ctx);
}

/**
 * After a crash: every intent still open may have had some of its messages delivered. Look
 * for their tags in the target (and junk) folder and record those found; the rest is fetched
 * again by the normal pull.
 */
export async function recoverIntents(ctx: PullContext): Promise<number> {
  const { account, ledger } = ctx;
  let recovered = 0;
  for (const intent of ledger.intents(account.id)) {
    const byTag = new Map(intent.rids.map((rid) => [gatherTag(account, intent.folder, intent.uidvalidity, rid), rid]));
    const folders = [intent.localFolder, ...(ctx.junkFolder ? [ctx.junkFolder] : [])];
    const found = await ctx.sink.findTagged(ownerRef(account.owner), folders, intent.at, new Set(byTag.keys()));
    const items: CollectedItem[] = found.map((f) => ({ rid: byTag.get(f.tag)!, localKey: f.key, localFolder: f.folder }));
    ledger.complete(intent.id, account.id, intent.folder, intent.uidvalidity, intent.localFolder, items);
    recovered += items.length;
    ctx.log.info({ account: account.id, folder: intent.folder, intended: intent.rids.length, found: items.length }, 'recovered an interrupted gather batch');
  }
  return recovered;
}

// ---- IMAP ----------------------------------------------------------------------------------

function imapError(err: unknown, account: GatherAccount): PullError {
  if (err instanceof PullError) return err;
  const e = err as Error & { authenticationFailed?: boolean; code?: string; responseText?: string; serverResponseCode?: string };
  if (e?.authenticationFailed) {
    return new PullError('GATHER_AUTH_FAILED', 'auth', `the server refused the password for ${account.user} at ${account.host}${e.responseText ? ` ("${e.responseText}")` : ''}; update it with \`hearth gather passwd ${account.id}\``, { cause: err });
  }
  if (isStorageFault(err) || (e as HearthError)?.code?.startsWith?.('STORE_')) return new PullError('GATHER_LOCAL', 'local', `cannot store gathered mail here: ${e.message}`, { cause: err });
  const code = e?.code ?? '';
  if (/^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNRESET|EHOSTUNREACH|ENETUNREACH|EPIPE|NoConnection|ETIMEOUT|CONNECT_TIMEOUT|GREETING_TIMEOUT|UPGRADE_TIMEOUT|EConnectionClosed)$/i.test(code) || /timeout|closed|socket|ECONN/i.test(e?.message ?? '')) {
    return new PullError('GATHER_NETWORK', 'network', `cannot reach ${account.host}:${account.port}: ${e.message}`, { cause: err });
  }
  if (/certificate|self.signed|SSL|TLS/i.test(e?.message ?? '')) {
    return new PullError('GATHER_TLS', 'config', `TLS with ${account.host} failed: ${e.message} (a self-signed server needs \`--insecure-tls\` on the account)`, { cause: err });
  }
  return new PullError('GATHER_REMOTE', 'remote', `${account.host}: ${e?.responseText ?? e?.message ?? String(err)}`, { cause: err });
}

function uidRange(uids: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < uids.length; ) {
    let j = i;
    while (j + 1 < uids.length && uids[j + 1] === uids[j] + 1) j++;
    parts.push(j > i ? `${uids[i]}:${uids[j]}` : String(uids[i]));
    i = j + 1;
  }
  return parts.join(',');
}

export function imapClientFor(account: GatherAccount, password: string, timeoutMs: number, extra: { maxIdleTime?: number } = {}): ImapFlow {
  return new ImapFlow({
    ...extra,
    host: account.host,
    port: account.port,
    secure: account.tls === 'implicit',
    doSTARTTLS: account.tls === 'starttls',
    auth: { user: account.user, pass: password },
    logger: false,
    disableAutoIdle: true,
    disableCompression: true,
    tls: { rejectUnauthorized: !account.insecureTls, minVersion: 'TLSv1.2' },
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: Math.max(timeoutMs, 5 * 60_000),
  });
}

async function pullImap(ctx: PullContext): Promise<PullResult> {
  const { account } = ctx;
  const result: PullResult = { collected: 0, deleted: 0, flagsToLocal: 0, flagsToRemote: 0, remapped: 0 };
  const client = imapClientFor(account, ctx.password, ctx.timeoutMs ?? 60_000);
  client.on('error', (err: Error) => ctx.log.debug({ account: account.id, err: err.message }, 'imap client error'));
  const onAbort = (): void => client.close();
  ctx.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await client.connect();
    for (const folder of account.folders) {
      if (ctx.signal?.aborted) break;
      await pullImapFolder(ctx, client, folder, result);
    }
    await client.logout().catch(() => undefined);
  } catch (err) {
    if (ctx.signal?.aborted) throw new PullError('GATHER_ABORTED', 'network', `stopped: ${String((ctx.signal.reason as Error)?.message ?? ctx.signal.reason)}`, { cause: err });
    throw imapError(err, account);
  } finally {
    ctx.signal?.removeEventListener('abort', onAbort);
    client.close();
  }
  return result;
}

async function pullImapFolder(ctx: PullContext, client: ImapFlow, folder: string, result: PullResult): Promise<void> {
  const { account, ledger, log } = ctx;
  let mb: MailboxObject;
  try {
    // Copy mode never changes anything remotely: EXAMINE. Source is fetched with BODY.PEEK[].
    mb = await client.mailboxOpen(folder, { readOnly: account.mode === 'copy' });
  } catch (err) {
    const e = err as Error & { responseText?: string };
    throw new PullError('GATHER_NO_FOLDER', 'remote', `cannot open the remote folder ${JSON.stringify(folder)} at ${account.host}: ${e.responseText ?? e.message}`, { cause: err });
  }
  const uv = Number(mb.uidValidity);
  let row = ledger.folder(account.id, folder);
  if (!row) {
    row = { uidvalidity: uv, synced_uid: 0, modseq: '0' };
    ledger.setFolder(account.id, folder, row);
  } else if (row.uidvalidity !== uv) {
    result.remapped += await resyncByMessageId(ctx, client, folder, uv);
    row = ledger.folder(account.id, folder)!;
  }

  if (account.mode === 'move') result.deleted += await deleteCollected(ctx, client, folder, uv);

  const listed = mb.exists === 0 ? [] : ((await client.search({ uid: `${row.synced_uid + 1}:*` }, { uid: true })) || []);
  const todo = listed.filter((u) => u > row.synced_uid && !ledger.has(account.id, folder, uv, String(u))).sort((a, b) => a - b);
  const total = todo.length;
  if (total > 0) log.info({ account: account.id, folder, new: total }, `gathering ${total} message(s) from ${account.host}/${folder}`);
  const batchSize = ctx.batchSize ?? 100;
  let done = 0;
  ctx.onProgress?.({ folder, done, total });
  for (let i = 0; i < todo.length; i += batchSize) {
    if (ctx.signal?.aborted) return;
    const batch = todo.slice(i, i + batchSize);
    const items = await fetchBatch(ctx, client, folder, uv, batch);
    done += batch.length;
    result.collected += items.filter((it) => it.localKey !== null).length;
    // The whole batch is accounted for (a UID FETCH leaves out only messages expunged meanwhile).
    ledger.advanceSynced(account.id, folder, batch[batch.length - 1]);
    ctx.onProgress?.({ folder, done, total });
    if (done % 1000 < batchSize || done === total) log.info({ account: account.id, folder, done, total }, `gather progress ${done}/${total}`);
    if (account.mode === 'move' && items.length > 0) result.deleted += await deleteRemote(ctx, client, folder, uv, items.map((it) => Number(it.rid)));
  }
  if (listed.length > 0 && !ctx.signal?.aborted) ledger.advanceSynced(account.id, folder, listed.reduce((a, b) => Math.max(a, b), 0));

  if (account.mode === 'mirror') await mirrorFlags(ctx, client, folder, uv, mb, result);
}

/** Fetch one batch and deliver it; the ledger learns of it in one commit. */
async function fetchBatch(ctx: PullContext, client: ImapFlow, folder: string, uv: number, batch: number[]): Promise<CollectedItem[]> {
  const { account, ledger } = ctx;
  const owner = ownerRef(account.owner);
  const intent = ledger.beginIntent(account.id, folder, uv, account.target, batch.map(String));
  const items: CollectedItem[] = [];
  const parallel = Math.max(1, ctx.parallel ?? 8);
  const inflight = new Set<Promise<void>>();
  let failure: unknown;
  const deliverOne = async (msg: FetchMessageObject): Promise<void> => {
    const rid = String(msg.uid);
    if (!msg.source) {
      items.push({ rid, localKey: null, note: 'the server returned no message source' });
      return;
    }
    const flags = account.mode === 'mirror' ? mirroredFlags(msg.flags ?? []) : [];
    const head = traceHeaders(gatherTag(account, folder, uv, rid), { protocol: 'IMAP', remoteHost: account.host, hostname: ctx.hostname, accountId: account.id });
    let internalDate: Date | undefined = msg.internalDate ? new Date(msg.internalDate) : undefined;
    if (internalDate && Number.isNaN(internalDate.getTime())) internalDate = undefined;
    const checked = await authenticate(ctx, msg.source, { rid, folder, receivedAt: internalDate, flags });
    const raw = Buffer.concat([head, checked.head, checked.body]);
    const delivered = await ctx.sink.deliver(owner, account.target, raw, { flags, internalDate, junk: checked.junk });
    items.push({ rid, msgid: messageIdOf(msg.source), localKey: delivered.key, localFolder: delivered.folder, flags });
  };
  try {
    for await (const msg of client.fetch(uidRange(batch), { uid: true, source: true, flags: true, internalDate: true }, { uid: true })) {
      const p: Promise<void> = deliverOne(msg).then(
        () => void inflight.delete(p),
        (err: unknown) => {
          inflight.delete(p);
          failure ??= err;
        },
      );
      inflight.add(p);
      // Backpressure: imapflow reads the next message only when we ask for it.
      if (inflight.size >= parallel) await Promise.race(inflight);
      if (failure) break;
    }
  } catch (err) {
    failure ??= err;
  }
  await Promise.all(inflight);
  // What was delivered is recorded even when the batch failed part-way.
  ledger.complete(intent, account.id, folder, uv, account.target, items);
  await ctx.sink.flush(owner);
  if (failure) throw failure;
  return items;
}

/** Move mode: delete collected messages still on the server (after an interrupted run too). */
async function deleteCollected(ctx: PullContext, client: ImapFlow, folder: string, uv: number): Promise<number> {
  const rids = ctx.ledger.undeleted(ctx.account.id, folder, uv).map(Number).sort((a, b) => a - b);
  if (rids.length === 0) return 0;
  let n = 0;
  for (let i = 0; i < rids.length; i += 500) n += await deleteRemote(ctx, client, folder, uv, rids.slice(i, i + 500));
  return n;
}

async function deleteRemote(ctx: PullContext, client: ImapFlow, folder: string, uv: number, uids: number[]): Promise<number> {
  if (uids.length === 0) return 0;
  // Only UIDs whose local copy the ledger has durably recorded ever get here.
  const ok = await client.messageDelete(uidRange(uids.sort((a, b) => a - b)), { uid: true });
  if (!ok) throw new PullError('GATHER_REMOTE', 'remote', `${ctx.account.host} refused to delete collected messages in ${folder}`);
  ctx.ledger.markDeleted(ctx.account.id, folder, uv, uids.map(String));
  return uids.length;
}

/**
 * UIDVALIDITY changed (the remote folder was rebuilt): UIDs mean nothing any more. Messages whose
 * Message-ID we collected under the old UIDVALIDITY are mapped to their new UIDs without being
 * fetched again; everything else is new.
 */
async function resyncByMessageId(ctx: PullContext, client: ImapFlow, folder: string, uv: number): Promise<number> {
  const { account, ledger, log } = ctx;
  const mapped: CollectedItem[] = [];
  const used = new Set<string>();
  for await (const msg of client.fetch('1:*', { uid: true, headers: ['message-id'] }, {})) {
    const mid = msg.headers ? messageIdOf(Buffer.concat([msg.headers, Buffer.from('\r\n')])) : null;
    if (!mid) continue;
    const old = ledger.findByMsgid(account.id, folder, mid, uv);
    if (!old || used.has(`${old.rid}`)) continue;
    used.add(old.rid);
    mapped.push({ rid: String(msg.uid), msgid: mid, localKey: old.local_key, localFolder: old.local_folder ?? undefined, flags: old.flags ? old.flags.split(' ') : [] });
  }
  ledger.transaction(() => {
    ledger.setFolder(account.id, folder, { uidvalidity: uv, synced_uid: 0, modseq: '0' });
    ledger.record(account.id, folder, uv, account.target, mapped);
    ledger.dropOtherEpochs(account.id, folder, uv);
  });
  log.warn({ account: account.id, folder, uidvalidity: uv, remapped: mapped.length }, 'remote UIDVALIDITY changed; re-synced by Message-ID');
  return mapped.length;
}

/** Mirror mode: bring flags into step both ways, per flag, the side that changed it winning. */
async function mirrorFlags(ctx: PullContext, client: ImapFlow, folder: string, uv: number, mb: MailboxObject, result: PullResult): Promise<void> {
  const { account, ledger } = ctx;
  const owner = ownerRef(account.owner);
  const row = ledger.folder(account.id, folder)!;
  const remote = new Map<number, string[]>();
  if (mb.exists > 0) {
    const since = mb.highestModseq && row.modseq !== '0' ? BigInt(row.modseq) : undefined;
    for await (const msg of client.fetch('1:*', { uid: true, flags: true }, { uid: true, ...(since !== undefined ? { changedSince: since } : {}) })) {
      remote.set(msg.uid, mirroredFlags(msg.flags ?? []));
    }
  }
  const locals = new Map<string, Map<string, string[]>>();
  const localFlags = async (f: string): Promise<Map<string, string[]>> => {
    let m = locals.get(f);
    if (!m) locals.set(f, (m = await ctx.sink.flagsByKey(owner, f).catch(() => new Map<string, string[]>())));
    return m;
  };
  // Remote changes grouped by (flags to add, flags to remove), so a few STOREs cover many messages.
  const toRemote = new Map<string, number[]>();
  const updates: Array<{ rid: string; flags: string[] }> = [];
  for (const r of [...ledger.mirrored(account.id, folder, uv)]) {
    const base = r.flags ? r.flags.split(' ').sort() : [];
    const localFolder = r.local_folder ?? account.target;
    const local = (await localFlags(localFolder)).get(r.local_key!);
    if (!local) continue; // moved or deleted here: nothing to mirror onto
    const l = mirroredFlags(local);
    const rem = remote.get(Number(r.rid)) ?? base;
    const merged = mergeFlags(base, l, rem);
    if (!sameFlags(merged, l)) {
      const keep = local.filter((f) => mirroredFlags([f]).length === 0); // \Deleted and the like stay as they are
      await ctx.sink.setFlags(owner, localFolder, r.local_key!, [...keep, ...merged]);
      result.flagsToLocal++;
    }
    if (!sameFlags(merged, rem)) {
      const add = merged.filter((f) => !rem.includes(f));
      const drop = rem.filter((f) => !merged.includes(f));
      const key = JSON.stringify([add, drop]);
      const list = toRemote.get(key) ?? [];
      list.push(Number(r.rid));
      toRemote.set(key, list);
      result.flagsToRemote++;
    }
    if (!sameFlags(merged, base)) updates.push({ rid: r.rid, flags: merged });
  }
  for (const [key, uids] of toRemote) {
    // Only what differs is added or removed: the remote's other flags (\Deleted) are not ours.
    const [add, drop] = JSON.parse(key) as [string[], string[]];
    const range = uidRange(uids.sort((a, b) => a - b));
    if (add.length) await client.messageFlagsAdd(range, add, { uid: true });
    if (drop.length) await client.messageFlagsRemove(range, drop, { uid: true });
  }
  ledger.transaction(() => {
    for (const u of updates) ledger.setFlags(account.id, folder, uv, u.rid, u.flags);
    if (mb.highestModseq) ledger.setModseq(account.id, folder, String(mb.highestModseq));
  });
}

// ---- POP3 ----------------------------------------------------------------------------------

function pop3Error(err: unknown, account: GatherAccount): PullError {
  if (err instanceof PullError) return err;
  if (err instanceof Pop3Error) {
    switch (err.code) {
      case 'POP3_AUTH_FAILED':
        return new PullError('GATHER_AUTH_FAILED', 'auth', `the server refused the password for ${account.user} at ${account.host}${err.serverText ? ` ("${err.serverText}")` : ''}; update it with \`hearth gather passwd ${account.id}\``, { cause: err });
      case 'POP3_CONNECT_FAILED':
      case 'POP3_TIMEOUT':
      case 'POP3_CONNECTION_LOST':
      case 'POP3_IN_USE':
      case 'POP3_ABORTED':
        return new PullError('GATHER_NETWORK', 'network', err.message, { cause: err });
      case 'POP3_TLS_FAILED':
      case 'POP3_TLS_REQUIRED':
        return new PullError('GATHER_TLS', 'config', `${err.message} (a self-signed server needs \`--insecure-tls\` on the account)`, { cause: err });
      case 'POP3_NO_UIDL':
        return new PullError('GATHER_NO_UIDL', 'config', err.message, { cause: err });
      default:
        return new PullError('GATHER_REMOTE', 'remote', err.message, { cause: err });
    }
  }
  if (isStorageFault(err) || String((err as HearthError)?.code ?? '').startsWith('STORE_')) return new PullError('GATHER_LOCAL', 'local', `cannot store gathered mail here: ${(err as Error).message}`, { cause: err });
  return new PullError('GATHER_REMOTE', 'remote', (err as Error)?.message ?? String(err), { cause: err });
}

const POP3_FOLDER = 'INBOX';
const POP3_EPOCH = 0;

async function pullPop3(ctx: PullContext): Promise<PullResult> {
  const { account, ledger, log } = ctx;
  const result: PullResult = { collected: 0, deleted: 0, flagsToLocal: 0, flagsToRemote: 0, remapped: 0 };
  const owner = ownerRef(account.owner);
  const client = new Pop3Client({ host: account.host, port: account.port, tls: account.tls, rejectUnauthorized: !account.insecureTls, log, timeoutMs: ctx.timeoutMs, signal: ctx.signal });
  try {
    await client.connect();
    await client.login(account.user, ctx.password);
    const listing = await client.uidl();
    if (!ledger.folder(account.id, POP3_FOLDER)) ledger.setFolder(account.id, POP3_FOLDER, { uidvalidity: POP3_EPOCH, synced_uid: 0, modseq: '0' });
    const todo = listing.filter((e) => !ledger.has(account.id, POP3_FOLDER, POP3_EPOCH, e.uidl));
    const total = todo.length;
    if (total > 0) log.info({ account: account.id, new: total }, `gathering ${total} message(s) from ${account.host} (POP3)`);
    ctx.onProgress?.({ folder: POP3_FOLDER, done: 0, total });
    const batchSize = ctx.batchSize ?? 100;
    let done = 0;
    for (let i = 0; i < todo.length; i += batchSize) {
      if (ctx.signal?.aborted) break;
      const batch = todo.slice(i, i + batchSize);
      const intent = ledger.beginIntent(account.id, POP3_FOLDER, POP3_EPOCH, account.target, batch.map((e) => e.uidl));
      const items: CollectedItem[] = [];
      try {
        for (const e of batch) {
          if (ctx.signal?.aborted) break;
          const body = await client.retr(e.n);
          const head = traceHeaders(gatherTag(account, POP3_FOLDER, POP3_EPOCH, e.uidl), { protocol: 'POP3', remoteHost: account.host, hostname: ctx.hostname, accountId: account.id });
          // POP3 has no arrival date: the provider's own Received field has it.
          const checked = await authenticate(ctx, body, { rid: e.uidl, folder: POP3_FOLDER, receivedAt: topReceivedDate(body), flags: [] });
          const delivered = await ctx.sink.deliver(owner, account.target, Buffer.concat([head, checked.head, checked.body]), { junk: checked.junk });
          items.push({ rid: e.uidl, msgid: messageIdOf(body), localKey: delivered.key, localFolder: delivered.folder });
        }
      } finally {
        ledger.complete(intent, account.id, POP3_FOLDER, POP3_EPOCH, account.target, items);
        await ctx.sink.flush(owner);
      }
      done += items.length;
      result.collected += items.length;
      ctx.onProgress?.({ folder: POP3_FOLDER, done, total });
      if (done % 1000 < batchSize || done === total) log.info({ account: account.id, done, total }, `gather progress ${done}/${total}`);
    }
    if (account.mode === 'move') {
      // Every listed message the ledger holds (this run's and any an earlier run left behind).
      const toDelete = listing.filter((e) => ledger.has(account.id, POP3_FOLDER, POP3_EPOCH, e.uidl));
      for (const e of toDelete) await client.dele(e.n);
      // RFC 1939 6: deletions happen at QUIT; only then are they recorded.
      await client.quit();
      if (toDelete.length) ledger.markDeleted(account.id, POP3_FOLDER, POP3_EPOCH, toDelete.map((e) => e.uidl));
      result.deleted += toDelete.length;
    } else {
      await client.quit();
    }
    // UIDLs gone from the server cannot come back (RFC 1939 7): forget them, so the set stays small.
    const present = new Set(listing.map((e) => e.uidl));
    const gone = ledger.rids(account.id, POP3_FOLDER, POP3_EPOCH).filter((u) => !present.has(u));
    if (gone.length) ledger.forget(account.id, POP3_FOLDER, POP3_EPOCH, gone);
  } catch (err) {
    throw pop3Error(err, account);
  } finally {
    client.close();
  }
  return result;
}

export { GatherError };
