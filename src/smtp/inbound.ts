// Inbound SMTP (port 25): mail from the internet for the local domains. smtp-server runs the
// protocol; this module supplies the policy (who may send to whom), the trace headers, the
// smuggling and size guards, and the durable hand-off to the store. A 250 after DATA is sent
// only once every recipient's copy is on disk (DESIGN invariant 1).
//
// Inbound trust (issue 6), for clients that are checked (not loopback unless configured):
// per-client rate limits and DNSBL at connect, a message rate at MAIL FROM, greylisting and
// directory-harvest protection at RCPT, and SPF/DKIM/DMARC/ARC after DATA. Checked messages
// are spooled (memory, or a temp file past `spoolMemoryBytes`) because the verdict needs the
// whole message before the reply; unchecked mail streams to the store as before.
//
// Routing (issue 6, `routing` option): plus-addressing into folders and SRS bounce addresses
// at RCPT; a loop check on the header before anything is stored; forwarding to remote alias
// targets through the queue after the sender checks (forwarding.ts); vacation replies after
// delivery (vacation.ts).
import type { Readable } from 'node:stream';
import type { SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { Logger } from '../core/log.ts';
import { SenderAuthenticator, headerEnd, makeResolver, stripOwnAuthResults, withoutOwnAuthResults } from './auth-checks.ts';
import type { AuthOutcome } from './auth-checks.ts';
import { AuthCheckWorker } from './auth-worker.ts';
import { plainIp } from './client-address.ts';
import { DataGuard } from './data-guard.ts';
import { DnsCache } from './dns-cache.ts';
import type { DnsCacheOptions, DnsResolver } from './dns-cache.ts';
import { peekHeader } from './forwarding.ts';
import type { Forwarder, ForwardGroup } from './forwarding.ts';
import type { VacationResponder } from './vacation.ts';
import { Dnsbl } from './dnsbl.ts';
import { Greylist } from './greylist.ts';
import { SmtpListener, isLoopback, sessionOf, splitAddress } from './listener.ts';
import type { MailboxRef, SmtpListenerOptions, SmtpSession, Transaction } from './listener.ts';
import { AbuseLimits } from './rate-limits.ts';
import { smtpError } from './replies.ts';
import { MessageSpool } from './spool.ts';
import { RspamdClient, SPAM_FIELDS, withoutFields } from './rspamd.ts';
import type { RspamdOptions, RspamdVerdict } from './rspamd.ts';
import { isSrsLocalPart } from './srs.ts';

export { splitAddress } from './listener.ts';
export type { MailboxRef } from './listener.ts';
export type Resolution = { local: MailboxRef[]; remote: string[] };

/** What inbound SMTP needs to know about users and aliases (config/directory.ts provides it). */
export type RecipientDirectory = {
  isLocalDomain(domain: string): boolean;
  resolve(address: string): Resolution | null;
};

/** A mailbox, and optionally a folder in it (INBOX when absent). */
export type DeliveryTarget = MailboxRef & { folder?: string };

/** What inbound SMTP needs from the store (store/maildir.ts provides it). */
export type MessageStore = {
  deliver(targets: DeliveryTarget[], content: AsyncIterable<Uint8Array>, opts?: { signal?: AbortSignal }): Promise<unknown[]>;
};

/** Inbound trust settings (config [inbound], [greylist], [dnsbl]); absent: no checks at all. */
export type InboundTrustOptions = {
  /** Check loopback clients too (tests, benchmarks); otherwise 127.0.0.0/8 and ::1 are trusted. */
  checkLoopback: boolean;
  /** DNS servers for the checks ("127.0.0.1:5353"); empty: the system's. */
  dnsServers: string[];
  /** Per DNS query. */
  dnsTimeoutMs: number;
  /** One answer cache for SPF, DKIM, DMARC, ARC and DNSBL; absent: every check asks the resolver. */
  dnsCache?: DnsCacheOptions;
  /** SPF/DKIM/DMARC/ARC; absent: not checked. */
  auth?: {
    dnsDeadlineMs: number;
    maxDnsLookups: number;
    dmarcReject: boolean;
    dmarcQuarantine: boolean;
    rejectSpfFail: boolean;
    /** Folder for quarantined mail. */
    junkFolder: string;
    /** Checked messages up to this size are held in memory; larger ones spill to `spoolDir`. */
    spoolMemoryBytes: number;
    spoolDir: string;
    random?: () => number;
    /** Run the checks in a worker thread, off the event loop (not with `random`). */
    worker?: boolean;
  };
  limits: { connectionsPerMinute: number; messagesPerMinute: number; maxFailedRcpts: number; failedRcptWindowMs: number };
  greylist?: { file: string; delayMs: number; retryWindowMs: number; expireMs: number };
  dnsbl?: { zones: string[]; timeoutMs: number };
  /** rspamd's verdict too (config [rspamd]); `spoolDir` holds big messages while it scans them. */
  rspamd?: Omit<RspamdOptions, 'log'> & { spoolDir: string };
  clock?: () => number;
};

export type InboundOptions = Omit<SmtpListenerOptions<AcceptedRcpt>, 'policy' | 'plaintextAuth'> & {
  directory: RecipientDirectory;
  store: MessageStore;
  /** Told after each durable delivery, so open mailbox views can show the new mail at once. */
  onDelivered?: (boxes: DeliveryTarget[]) => void;
  trust?: InboundTrustOptions;
  /** Each recipient's junk filter: mail that passed the sender checks and scores as spam goes to Junk. */
  junk?: { classify(box: MailboxRef, raw: Buffer): { junk: boolean; probability: number; significant: Array<{ token: string }> } | undefined };
  /** Forwarding, SRS bounces, loop protection, plus-folders, vacation; absent: local delivery only. */
  routing?: InboundRoutingOptions;
};

/** Routing beyond the local mailboxes (issue 6; config [routing]). */
export type InboundRoutingOptions = {
  forwarder: Forwarder;
  /** With plus_to_folder: the user's folder for a plus-address tag (matched case-insensitively), if it exists. */
  findFolder?: (box: MailboxRef, name: string) => Promise<string | undefined>;
  vacation?: VacationResponder;
  /** Where unchecked mail that must also be forwarded is held meanwhile (big messages only). */
  spoolDir: string;
};

type AcceptedRcpt = { address: string; mailboxes: DeliveryTarget[]; greylistKey?: string; forwards?: string[] };

/** Inbound SMTP: mail for local users only, stored in their Maildirs before the 250. */
export class InboundSmtp extends SmtpListener<AcceptedRcpt> {
  readonly #policy: MxPolicy;

  constructor(opts: InboundOptions) {
    const policy = new MxPolicy(opts);
    super({ ...opts, policy });
    this.#policy = policy;
    // The listener has no connect hook for policies: wrap smtp-server's, so rate limits and
    // DNSBL run before the listener's own per-address connection cap counts the client.
    const listenerConnect = this.server.onConnect.bind(this.server);
    this.server.onConnect = (session, cb) => {
      policy.connect(sessionOf(session)).then(
        () => listenerConnect(session, cb),
        (err: unknown) => cb(err as Error),
      );
    };
  }

  override async close(): Promise<void> {
    await super.close();
    await this.#policy.close();
  }
}

class MxPolicy {
  readonly #opts: InboundOptions;
  readonly #log: Logger;
  readonly #trust: InboundTrustOptions | undefined;
  readonly #limits: AbuseLimits | undefined;
  readonly #greylist: Greylist | undefined;
  readonly #dnsbl: Dnsbl | undefined;
  readonly #auth: SenderAuthenticator | AuthCheckWorker | undefined;
  readonly #rspamd: RspamdClient | undefined;

  constructor(opts: InboundOptions) {
    this.#opts = opts;
    this.#log = opts.log;
    const trust = opts.trust;
    this.#trust = trust;
    if (!trust) return;
    const clock = trust.clock;
    this.#limits = new AbuseLimits({ ...trust.limits, clock });
    const needsDns = Boolean(trust.auth || trust.dnsbl?.zones.length);
    let resolver: DnsResolver | undefined;
    if (needsDns) {
      const direct = makeResolver(trust.dnsServers, trust.dnsTimeoutMs);
      resolver = trust.dnsCache && trust.dnsCache.maxEntries > 0 ? new DnsCache(direct, trust.dnsCache) : direct;
    }
    if (trust.rspamd) {
      this.#rspamd = new RspamdClient({ ...trust.rspamd, log: opts.log.child({ part: 'rspamd' }) });
      if (!trust.auth) void MessageSpool.sweep(trust.rspamd.spoolDir).then((n) => n && this.#log.info({ removed: n }, 'removed stale inbound spool files'));
    }
    if (trust.greylist) this.#greylist = new Greylist({ ...trust.greylist, log: opts.log.child({ part: 'greylist' }), clock });
    if (trust.dnsbl?.zones.length && resolver) this.#dnsbl = new Dnsbl({ ...trust.dnsbl, resolver, log: opts.log.child({ part: 'dnsbl' }), clock });
    if (trust.auth && resolver) {
      const a = trust.auth;
      const authOpts = {
        hostname: opts.hostname,
        resolver,
        deadlineMs: a.dnsDeadlineMs,
        maxLookups: a.maxDnsLookups,
        dmarcReject: a.dmarcReject,
        dmarcQuarantine: a.dmarcQuarantine,
        rejectSpfFail: a.rejectSpfFail,
        random: a.random,
      };
      this.#auth = a.worker && !a.random ? new AuthCheckWorker(authOpts, opts.log.child({ part: 'auth-worker' })) : new SenderAuthenticator(authOpts);
      void MessageSpool.sweep(a.spoolDir).then((n) => n && this.#log.info({ removed: n }, 'removed stale inbound spool files'));
    }
  }

  /** Is this client subject to the trust checks? Loopback is trusted unless configured. */
  #checked(session: SmtpSession): boolean {
    return Boolean(this.#trust) && (this.#trust!.checkLoopback || !isLoopback(session.remoteAddress));
  }

  async connect(session: SmtpSession): Promise<void> {
    if (!this.#checked(session)) return;
    const ip = plainIp(session.remoteAddress);
    if (!this.#limits!.connection(ip)) {
      session.log.warn({ limit: this.#trust!.limits.connectionsPerMinute }, 'too many connections per minute from one client');
      throw smtpError(421, '4.7.0 Too many connections from your address in the last minute; try again later');
    }
    const listing = await this.#dnsbl?.lookup(ip, session.log.child({ part: 'dnsbl' }));
    if (listing) {
      session.log.warn({ zone: listing.zone, answer: listing.answer }, 'client listed by DNSBL; refused');
      throw smtpError(554, `5.7.1 Service unavailable; client [${ip}] listed by ${listing.zone}`);
    }
  }

  async close(): Promise<void> {
    await this.#greylist?.flush();
    if (this.#auth instanceof AuthCheckWorker) await this.#auth.close();
  }

  mailFrom(_address: string, session: SmtpSession): void {
    if (!this.#checked(session)) return;
    const ip = plainIp(session.remoteAddress);
    if (!this.#limits!.message(ip)) {
      session.log.warn({ limit: this.#trust!.limits.messagesPerMinute }, 'too many messages per minute from one client');
      throw smtpError(451, '4.7.0 Too many messages from your address in the last minute; try again later');
    }
  }

  async rcptTo(address: string, session: SmtpSession): Promise<AcceptedRcpt> {
    let accepted: AcceptedRcpt;
    try {
      accepted = await this.#resolveRecipient(address, session);
    } catch (err) {
      if ((err as { responseCode?: number }).responseCode === 550 && this.#checked(session)) this.#countFailedRcpt(address, session);
      throw err;
    }
    if (this.#greylist && this.#checked(session)) {
      const sender = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
      const verdict = this.#greylist.check(session.remoteAddress, sender, address);
      if (!verdict.ok) {
        session.log.info({ from: sender, rcpt: address, retryInMs: verdict.retryInMs }, 'greylisted');
        throw smtpError(451, `4.7.1 Greylisted: please try again in ${Math.ceil(verdict.retryInMs / 1000)} seconds`);
      }
      accepted.greylistKey = verdict.key;
    }
    return accepted;
  }

  /** Directory-harvest protection: the Nth unknown recipient from one client ends the session. */
  #countFailedRcpt(address: string, session: SmtpSession): void {
    const ip = plainIp(session.remoteAddress);
    if (this.#limits!.failedRecipient(ip)) return;
    session.log.warn({ rcpt: address, limit: this.#trust!.limits.maxFailedRcpts }, 'too many unknown recipients (directory harvest?); disconnecting');
    throw smtpError(421, '4.7.0 Too many unknown recipients; closing connection');
  }

  async #resolveRecipient(address: string, session: SmtpSession): Promise<AcceptedRcpt> {
    const parts = splitAddress(address)!;
    const { directory } = this.#opts;
    if (!directory.isLocalDomain(parts.domain)) {
      // DESIGN invariant 2: never an open relay. Inbound port 25 takes mail for local domains only.
      session.log.info({ rcpt: address }, 'relay attempt refused');
      throw smtpError(554, `5.7.1 Relay access denied: ${parts.domain} is not a domain of this server`);
    }
    const routing = this.#opts.routing;
    let target = address;
    if (routing && isSrsLocalPart(parts.local)) {
      // A bounce (or reply) to a sender address we rewrote when forwarding: back to the original.
      const reversal = await routing.forwarder.reverse(address);
      if (!reversal.ok) {
        session.log.info({ rcpt: address, why: reversal.reason }, 'invalid SRS address refused');
        throw smtpError(550, `5.1.1 No such user here: <${address}> (invalid SRS address: ${reversal.reason})`);
      }
      const original = splitAddress(reversal.address);
      if (!original) throw smtpError(550, `5.1.1 No such user here: <${address}>`);
      if (!directory.isLocalDomain(original.domain)) return { address, mailboxes: [], forwards: [reversal.address] };
      target = reversal.address;
    }
    const resolution = directory.resolve(target);
    if (!resolution || resolution.local.length === 0) {
      if (resolution && resolution.remote.length > 0) {
        if (routing) return { address, mailboxes: [], forwards: resolution.remote };
        session.log.warn({ rcpt: address, remote: resolution.remote }, 'alias forwards only to remote addresses, and forwarding is not configured');
        throw smtpError(550, '5.7.0 This address forwards elsewhere, which this server does not do');
      }
      session.log.info({ rcpt: address }, 'unknown recipient refused');
      throw smtpError(550, `5.1.1 No such user here: <${address}>`);
    }
    if (resolution.remote.length > 0 && !routing) {
      session.log.warn({ rcpt: address, remote: resolution.remote }, 'remote alias targets skipped: forwarding is not configured');
    }
    const mailboxes = await Promise.all(resolution.local.map((box) => this.#plusFolder(box, session)));
    return { address, mailboxes, forwards: routing ? resolution.remote : undefined };
  }

  /** plus_to_folder: user+tag@ goes into the user's folder "tag" when it exists, else the INBOX. */
  async #plusFolder(box: { user: string; domain: string; tag?: string }, session: SmtpSession): Promise<DeliveryTarget> {
    const mailbox = { user: box.user, domain: box.domain };
    const find = this.#opts.routing?.findFolder;
    if (!box.tag || !find) return mailbox;
    const folder = await find(mailbox, box.tag).catch((err: unknown) => {
      session.log.warn({ user: `${box.user}@${box.domain}`, tag: box.tag, err: (err as Error).message }, 'cannot look up the plus-address folder; delivering into INBOX');
      return undefined;
    });
    return folder ? { ...mailbox, folder } : mailbox;
  }

  /** Refuse a looping message (554 5.4.6) before anything is stored. */
  #checkLoop(head: Buffer, tx: Transaction<AcceptedRcpt>, session: SmtpSession): void {
    const forwarder = this.#opts.routing?.forwarder;
    if (!forwarder) return;
    const addresses = tx.rcpts.flatMap((r) => [r.address, ...r.mailboxes.map((b) => `${b.user}@${b.domain}`)]);
    const loop = forwarder.checkLoop(head, addresses);
    if (!loop) return;
    session.log.warn({ rcpts: tx.rcpts.map((r) => r.address), reply: loop }, 'mail loop refused');
    throw smtpError(554, loop);
  }

  /**
   * The forwarding step, after the sender checks and the local copies: queue the forwarded
   * copies (durable before the 250). Mail the checks put into Junk is not passed on.
   */
  async #forward(groups: ForwardGroup[], session: SmtpSession, sender: string, localCount: number, msg: { trace: string; head: Buffer; body: () => AsyncIterable<Uint8Array>; verdict?: AuthOutcome; spam?: boolean }): Promise<number> {
    if (groups.length === 0) return 0;
    if (msg.spam) {
      // Passing spam on would only spoil this server's name with the forwarding targets.
      session.log.info({ from: sender, rcpts: groups.map((g) => g.rcpt) }, 'rspamd: spam, not forwarded');
      if (localCount === 0) throw smtpError(550, '5.7.1 Message refused as spam; not forwarded');
      return 0;
    }
    if (msg.verdict?.action === 'junk') {
      session.log.info({ from: sender, rcpts: groups.map((g) => g.rcpt) }, 'DMARC quarantine: not forwarded');
      if (localCount === 0) throw smtpError(550, '5.7.1 Message quarantined by the sender domain\'s DMARC policy; not forwarded');
      return 0;
    }
    const args = (session.envelope.mailFrom ? session.envelope.mailFrom.args : undefined) as Record<string, unknown> | false | undefined;
    const ids = await this.#opts.routing!.forwarder.forward({
      cid: session.id,
      sender,
      groups,
      trace: msg.trace,
      head: msg.head,
      body: msg.body,
      smtpUtf8: Boolean(args && args.SMTPUTF8) || /[^\x00-\x7f]/.test(sender),
      eightBit: Boolean(args && String(args.BODY ?? '').toUpperCase() === '8BITMIME'),
      arc: msg.verdict ? { cv: msg.verdict.arc, authResults: msg.verdict.header.replace(/^Authentication-Results:\s*/i, '').replace(/\r\n$/, '') } : undefined,
    });
    return ids.length;
  }

  /** Ask each recipient's junk filter (the prefix of a big message is enough to decide). */
  #junkScore(targets: DeliveryTarget[], raw: Buffer, session: SmtpSession): DeliveryTarget[] {
    const junk = this.#opts.junk;
    const folder = this.#trust?.auth?.junkFolder ?? 'Junk';
    if (!junk) return targets;
    return targets.map((t) => {
      if (t.folder && t.folder !== 'INBOX') return t;
      const v = junk.classify(t, raw);
      if (!v?.junk) return t;
      session.log.info({ user: `${t.user}@${t.domain}`, probability: Number(v.probability.toFixed(3)), clues: v.significant.slice(0, 3).map((c) => c.token) }, 'junk filter: delivering into Junk');
      return { ...t, folder };
    });
  }

  async receive(stream: SMTPServerDataStream, session: SmtpSession, tx: Transaction<AcceptedRcpt>, signal?: AbortSignal): Promise<string> {
    let targets: DeliveryTarget[] = uniqueMailboxes(tx.rcpts.flatMap((r) => r.mailboxes));
    const sender = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const header = traceHeaders({
      hostname: this.#opts.hostname,
      session,
      sender,
      // RFC 5321 4.4: "for" and Delivered-To name a recipient only when there is one, since
      // all recipients share one stored file (hard links), as Dovecot's LMTP does.
      recipient: tx.rcpts.length === 1 ? tx.rcpts[0].address : undefined,
      deliveredTo: targets.length === 1 ? `${targets[0].user}@${targets[0].domain}` : undefined,
    });
    const guard = new DataGuard(this.#opts.maxMessageBytes);
    const started = performance.now();
    const hostname = this.#opts.hostname;
    let verdict: AuthOutcome | undefined;
    const a = this.#trust?.auth;
    // Routing: the header is read ahead, so a mail loop is refused before anything is stored.
    let data: AsyncIterable<Uint8Array> = checkedData(stream, guard);
    let originalHead: Buffer = Buffer.alloc(0);
    if (this.#opts.routing) {
      const peeked = await peekHeader(data);
      try {
        this.#checkLoop(peeked.head, tx, session);
      } catch (err) {
        await peeked.release();
        throw err;
      }
      originalHead = peeked.head;
      data = peeked.all;
    }
    const forwards = forwardGroups(tx.rcpts);
    let forwarded = 0;
    if ((!this.#auth && !this.#rspamd) || !this.#checked(session)) {
      // Unchecked: stream straight to the store; only forged results in our name are dropped.
      if (forwards.length === 0) {
        await this.#opts.store.deliver(targets, prepend(Buffer.from(header, 'utf8'), withoutOwnAuthResults(data, hostname)), { signal });
      } else {
        // Forwarded as well: held (as checked mail is), so the local copies and the forwards can each read it.
        const held = await MessageSpool.collect(withoutOwnAuthResults(data, hostname), { memoryBytes: 1024 * 1024, dir: this.#opts.routing!.spoolDir });
        try {
          if (targets.length) await this.#opts.store.deliver(targets, prepend(Buffer.from(header, 'utf8'), held.read()), { signal });
          forwarded = await this.#forward(forwards, session, sender, targets.length, { trace: receivedField(header), head: Buffer.alloc(0), body: () => held.read() });
        } finally {
          await held.dispose();
        }
      }
    } else {
      const spoolAt = a ? { memoryBytes: a.spoolMemoryBytes, dir: a.spoolDir } : { memoryBytes: 1024 * 1024, dir: this.#trust!.rspamd!.spoolDir };
      const spool = await MessageSpool.collect(data, spoolAt);
      const junkFolder = a?.junkFolder ?? 'Junk';
      try {
        if (this.#auth) {
          verdict = await this.#auth.check({
            message: spool.onDisk ? () => spool.read() : spool.prefix,
            ip: session.remoteAddress,
            helo: session.hostNameAppearsAs || '',
            sender,
          });
          const log = { from: sender, spf: verdict.spf, helo: verdict.helo, dkim: verdict.dkim, dmarc: verdict.dmarc, arc: verdict.arc, policy: verdict.policy, lookups: verdict.lookups, checkMs: verdict.ms };
          if (verdict.action === 'defer') {
            session.log.warn({ ...log, reply: verdict.reply }, 'sender checks failed temporarily; deferred');
            throw smtpError(451, verdict.reply!);
          }
          if (verdict.action === 'reject') {
            session.log.info({ ...log, reply: verdict.reply }, 'message refused by sender checks');
            throw smtpError(550, verdict.reply!);
          }
          if (verdict.action === 'junk') session.log.info(log, 'DMARC failure with quarantine policy: delivering into Junk');
          else session.log.debug(log, 'sender checks');
        }
        let spam: RspamdVerdict | undefined;
        if (this.#rspamd) {
          spam = await this.#rspamd.check(spool.onDisk ? () => spool.read() : spool.prefix, spool.size, {
            ip: session.remoteAddress,
            helo: session.hostNameAppearsAs || '',
            sender,
            rcpts: tx.rcpts.map((r) => r.address),
            user: session.user ? String(session.user) : undefined,
            queueId: session.id,
            hostname,
          });
          const log = { from: sender, action: spam?.action, score: spam?.score, symbols: spam?.symbols.slice(0, 5), rspamdMs: spam?.ms };
          if (spam?.decision === 'reject') {
            session.log.info({ ...log, reply: spam.reply }, 'rspamd: refused');
            throw smtpError(550, spam.reply!);
          }
          if (spam?.decision === 'defer') {
            session.log.info({ ...log, reply: spam.reply }, 'rspamd: deferred (soft reject)');
            throw smtpError(451, spam.reply!);
          }
          if (spam?.decision === 'junk') session.log.info(log, 'rspamd: spam, delivering into Junk');
          else if (spam) session.log.debug(log, 'rspamd');
        }
        if (verdict?.action === 'junk' || spam?.decision === 'junk') targets = targets.map((t) => ({ ...t, folder: junkFolder }));
        else targets = this.#junkScore(targets, spool.prefix, session);
        // The stored copy: our trace and results, then the message as received, minus any
        // Authentication-Results that claim to be ours (RFC 8601 5) and, when rspamd speaks,
        // any spam verdict the sender wrote for itself.
        let end = headerEnd(spool.prefix);
        if (end < 0 && !spool.onDisk) end = spool.prefix.length; // a message that is all header
        let head = end < 0 ? spool.prefix : stripOwnAuthResults(spool.prefix.subarray(0, end), hostname).head;
        if (this.#rspamd && end >= 0) head = withoutFields(head, SPAM_FIELDS);
        const results = (verdict?.header ?? '') + (spam?.header ?? '');
        const ours = Buffer.from(header + results, 'utf8');
        const rest = end < 0 ? spool.prefix.length : end;
        if (targets.length) await this.#opts.store.deliver(targets, prepend(Buffer.concat([ours, head]), spool.read(rest)), { signal });
        forwarded = await this.#forward(forwards, session, sender, targets.length, { trace: receivedField(header) + results, head, body: () => spool.read(rest), verdict, spam: spam?.decision === 'junk' });
      } finally {
        await spool.dispose();
      }
    }
    const ms = Math.round(performance.now() - started);
    if (this.#greylist) this.#greylist.confirm(tx.rcpts.flatMap((r) => (r.greylistKey ? [r.greylistKey] : [])));
    this.#opts.onDelivered?.(targets);
    this.#opts.routing?.vacation?.consider({ cid: session.id, sender, head: originalHead, deliveries: vacationDeliveries(tx.rcpts, targets) });
    session.log.info({ from: sender, rcpts: tx.rcpts.map((r) => r.address), bytes: guard.bytes, ms, folder: targets[0]?.folder, dmarc: verdict?.dmarc, forwarded }, 'message delivered');
    return `2.6.0 Message accepted for delivery (${targets.length} mailbox${targets.length === 1 ? '' : 'es'}${forwarded ? `, ${forwarded} forward${forwarded === 1 ? '' : 's'} queued` : ''})`;
  }
}

/** The forwarding part of each accepted recipient (remote alias targets, reversed SRS bounces). */
function forwardGroups(rcpts: AcceptedRcpt[]): ForwardGroup[] {
  return rcpts.flatMap((r) => (r.forwards?.length ? [{ rcpt: r.address, targets: r.forwards }] : []));
}

/** Each stored copy, with the RCPT addresses that led to it (vacation answers only those in To/Cc). */
function vacationDeliveries(rcpts: AcceptedRcpt[], targets: DeliveryTarget[]): Array<{ box: MailboxRef; addresses: string[]; folder?: string }> {
  return targets.map((t) => ({
    box: { user: t.user, domain: t.domain },
    addresses: rcpts.filter((r) => r.mailboxes.some((b) => b.user === t.user && b.domain === t.domain)).map((r) => r.address),
    folder: t.folder,
  }));
}

/** Our Received: field alone (forwarded copies carry no Return-Path and their own Delivered-To). */
function receivedField(trace: string): string {
  const at = trace.indexOf('Received:');
  return at < 0 ? '' : trace.slice(at);
}

export function uniqueMailboxes(boxes: MailboxRef[]): MailboxRef[] {
  const seen = new Map<string, MailboxRef>();
  for (const b of boxes) seen.set(`${b.user}@${b.domain}`, b);
  return [...seen.values()];
}

/** The message as the store should write it: trace headers, then DATA checked chunk by chunk. */
export async function* guarded(stream: Readable, guard: DataGuard, header: Buffer): AsyncGenerator<Uint8Array> {
  yield header;
  yield* checkedData(stream, guard);
}

async function* prepend(first: Buffer, rest: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  yield first;
  yield* rest;
}

/** DATA checked chunk by chunk (size, bare CR/LF). */
export async function* checkedData(stream: Readable, guard: DataGuard): AsyncGenerator<Uint8Array> {
  // destroyOnReturn: false keeps smtp-server's stream alive when we stop early, so it can
  // still read up to the client's final dot before replying.
  for await (const chunk of stream.iterator({ destroyOnReturn: false })) {
    guard.check(chunk as Buffer);
    yield chunk as Buffer;
  }
  guard.finish();
}

type TraceInput = { hostname: string; session: SMTPServerSession; sender: string; recipient?: string; deliveredTo?: string };

/** Return-Path, Delivered-To and Received, folded as RFC 5322 wants. */
export function traceHeaders(t: TraceInput): string {
  const s = t.session;
  const helo = (s.hostNameAppearsAs || 'unknown').replace(/[^\x21-\x7e]/g, '?');
  const ip = s.remoteAddress.startsWith('::ffff:') ? s.remoteAddress.slice(7) : s.remoteAddress;
  const ipLiteral = ip.includes(':') ? `IPv6:${ip}` : ip;
  const tls = s.secure && s.tlsOptions ? ` (${s.tlsOptions.version} ${s.tlsOptions.name})` : '';
  const protocol = s.transmissionType || 'ESMTP';
  const lines = [`Return-Path: <${t.sender}>`];
  if (t.deliveredTo) lines.push(`Delivered-To: ${t.deliveredTo}`);
  lines.push(
    `Received: from ${helo} ([${ipLiteral}])\r\n\tby ${t.hostname} (hearth) with ${protocol}${tls}\r\n\tid ${s.id}${t.recipient ? `\r\n\tfor <${t.recipient}>` : ''}; ${rfc5322Date(new Date())}`,
  );
  return lines.join('\r\n') + '\r\n';
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

export function rfc5322Date(d: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  const offset = -d.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  const abs = Math.abs(offset);
  return `${DAYS[d.getDay()]}, ${d.getDate()} ${MONTHS[d.getMonth()]} ${d.getFullYear()} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${sign}${pad(Math.floor(abs / 60))}${pad(abs % 60)}`;
}
