// Starts the suite on one event loop: config, store, directory, scheduler, services and the
// control socket, and stops it gracefully. Services that later issues add (submission, IMAP,
// POP3, webmail) plug in here; nothing below this file reads the config itself.
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { ControlServer } from './core/control.ts';
import type { ControlHandler } from './core/control.ts';
import { queueCommands } from './queue/commands.ts';
import { HearthError } from './core/errors.ts';
import { createLogger } from './core/log.ts';
import type { Logger } from './core/log.ts';
import { Scheduler } from './core/scheduler.ts';
import { loadConfig } from './config/load.ts';
import type { LoadedConfig } from './config/load.ts';
import { Directory } from './config/directory.ts';
import { watchConfig } from './config/watch.ts';
import { MaildirStore } from './store/maildir.ts';
import { MailStore } from './store/mailboxes.ts';
import { JunkFilters } from './store/junk-filters.ts';
import { InboundSmtp } from './smtp/inbound.ts';
import type { InboundTrustOptions } from './smtp/inbound.ts';
import { Pop3Server } from './pop3/server.ts';
import type { Pop3Backend } from './pop3/session.ts';
import { LoginLimiter } from './core/login-limiter.ts';
import { ImapServer } from './imap/server.ts';
import { SUMMARY_TASK_MODULE, SummaryProvider } from './imap/message-info.ts';
import type { LineServer, LineSessionLike } from './core/line-server.ts';
import { WorkerPool } from './core/workers.ts';
import { promises as dns } from 'node:dns';
import { OutboundQueue } from './queue/queue.ts';
import { makeDeliver } from './smtp/outbound.ts';
import type { Deliver } from './smtp/outbound.ts';
import type { RelayTarget } from './smtp/relay-client.ts';
import { DkimSigner, loadDkimKeys } from './smtp/dkim.ts';
import type { DkimKey } from './smtp/dkim.ts';
import { Forwarder } from './smtp/forwarding.ts';
import type { ForwardQueue } from './smtp/forwarding.ts';
import { Srs, loadSrsSecrets, srsSecretTooOpen } from './smtp/srs.ts';
import { VacationResponder, VacationStore, vacationCommands } from './smtp/vacation.ts';
import type { InboundRoutingOptions } from './smtp/inbound.ts';
import { SubmissionPipeline, SubmissionSmtp } from './smtp/submission.ts';
import { startWebmail } from './webmail/server.ts';
import { OpsRuntime } from './ops/runtime.ts'; // ops (issue 9)
import { AcmeChallenges, acmeSettings, obtainCertificate, scheduleRenewal } from './ops/acme.ts'; // ops (issue 9): ACME
import { CAUGHT_FOLDER, makeCatchDeliver } from './ops/catch.ts'; // ops (issue 9): serve --catch
import { splitAddress } from './smtp/listener.ts';
import type { MailboxRef } from './smtp/listener.ts';

export type Endpoint = { service: string; host: string; port: number; tls: string };

export type RunningHearth = {
  loaded: LoadedConfig;
  log: Logger;
  endpoints: Endpoint[];
  store: MaildirStore;
  directory: Directory;
  controlPath: string;
  /** Graceful stop: no new connections, in-flight transactions finish within the grace bound. */
  close(): Promise<void>;
};

const HOUR = 3_600_000;

export async function startHearth(opts: { configDir: string; log?: Logger; /** Test mode: outbound mail goes to the sender's Caught folder. */ catchMail?: boolean }): Promise<RunningHearth> {
  const loaded = await loadConfig(opts.configDir);
  const { config } = loaded;
  const log = opts.log ?? createLogger(config.log_level);
  // Whatever has started is stopped in reverse order, on shutdown or when start-up fails half way.
  const stoppers: Array<() => unknown> = [];
  const stopAll = async () => {
    for (const stop of stoppers.splice(0).reverse()) await Promise.resolve(stop()).catch((err: unknown) => log.error({ err }, 'error while stopping'));
  };

  try {
    await mkdir(loaded.dataDir, { recursive: true, mode: 0o750 });
    const store = new MaildirStore({ root: loaded.dataDir, hostname: config.hostname, fsync: config.fsync, log: log.child({ svc: 'store' }) });
    // Junk filters learn from every user's moves (attached through the mail store) and score inbound mail.
    const junk = config.junk.enabled ? new JunkFilters({ maildir: store, log: log.child({ svc: 'junk' }), threshold: config.junk.threshold }) : undefined;
    if (junk) stoppers.push(() => junk.close());
    const mail = new MailStore({ maildir: store, log: log.child({ svc: 'index' }), junk });
    stoppers.push(() => mail.close());
    const directory = await Directory.open({ configDir: loaded.dir, domains: config.domains, log: log.child({ svc: 'directory' }), watch: true, plusDelimiter: config.routing.plus_delimiter });
    stoppers.push(() => directory.close());

    const controlPath = join(loaded.dataDir, 'hearth.sock');
    const endpoints: Endpoint[] = [];
    // --- ops (issue 9): metrics, recent errors, certificate reload; each service registers below ---
    const ops = new OpsRuntime({ log, certFile: loaded.tlsCert, keyFile: loaded.tlsKey, catchMode: opts.catchMail });
    stoppers.push(() => ops.close());
    // ACME: the web listener answers HTTP-01; `hearth tls acme` (tls.acme) and the renewal timer
    // order through here, one order at a time; the reloader picks up the written files.
    const acmeChallenges = new AcmeChallenges();
    let acmeRun: Promise<unknown> = Promise.resolve();
    const acmeObtain = () => {
      const run = async () => {
        const result = await obtainCertificate(acmeSettings(loaded), acmeChallenges, log.child({ svc: 'acme' }));
        await ops.tls.reload('acme');
        return result;
      };
      const next = acmeRun.then(run, run);
      acmeRun = next.catch(() => undefined);
      return next;
    };
    // --- end of ops ---
    // Services add their own commands (queue.*) as they start.
    const controlCommands: Record<string, ControlHandler> = {
      status: async () => ({ pid: process.pid, uptime: Math.round(process.uptime()), endpoints, version: await version(), ...ops.status() }),
      'tls.reload': () => ops.tls.reload('hearth tls reload'), // ops (issue 9)
      'tls.acme': () => acmeObtain(), // ops (issue 9)
      'users-changed': async () => {
        await directory.reload();
        return { reloaded: true };
      },
    };
    const control = new ControlServer(controlPath, log.child({ svc: 'control' }), controlCommands);
    // First, so a second hearth on the same data directory stops before touching anything.
    await control.listen();
    stoppers.push(() => control.close());

    // Room for the queue's deliveries plus housekeeping; the queue enforces its own limits.
    const scheduler = new Scheduler({ log: log.child({ svc: 'scheduler' }), concurrency: config.queue.max_concurrent + 4 });
    scheduler.start();
    stoppers.push(() => scheduler.stop());
    // ops (issue 9): ACME renewal on the delivery scheduler
    if (config.acme.enabled) stoppers.push(scheduleRenewal({ scheduler, settings: () => acmeSettings(loaded), obtain: acmeObtain, log: log.child({ svc: 'acme' }) }));
    // Maildir spec: files left in tmp/ for 36 hours are debris of interrupted deliveries.
    scheduler.every('maildir-tmp-cleanup', 6 * HOUR, async () => {
      const removed = await store.cleanTmp(36 * HOUR);
      if (removed > 0) log.info({ removed }, 'removed stale files from Maildir tmp/');
    });

    const tls = await readTls(loaded, log, ops);
    // Routing (issue 6). The queue and the DKIM keys are made further down; these closures are
    // called only once mail arrives.
    const routing = inboundRouting(loaded, log, {
      directory,
      store,
      mail,
      queue: { enqueue: (envelope, content) => queue.enqueue(envelope, content) },
      sign: (message, domain) => dkim.sign(message, domain),
      dkimKeys: () => dkimKeys,
    });
    Object.assign(controlCommands, vacationCommands(routing.vacation, (address) => isUser(directory, address)));
    const smtpListener = config.listeners.smtp;
    // What the MX and both submission listeners share from [limits] and [timeouts].
    const smtpLimits = {
      maxMessageBytes: config.limits.message_size,
      maxRecipients: config.limits.recipients,
      connectionsPerIp: config.limits.connections_per_ip,
      maxConnections: config.limits.connections,
      idleTimeoutMs: config.timeouts.smtp_idle,
      closeTimeoutMs: config.timeouts.shutdown_grace,
    };
    // The MX starts listening only once the queue and DKIM keys are up (below): forwarding and
    // vacation need them, and mail in the first milliseconds would otherwise get a 451.
    let startMx: (() => Promise<void>) | undefined;
    if (smtpListener?.enabled) {
      const inbound = new InboundSmtp({
        hostname: config.hostname,
        log: log.child({ svc: 'smtp' }),
        directory,
        store,
        junk,
        tls: smtpListener.tls !== 'plain' && !tls ? 'plain' : smtpListener.tls,
        key: tls?.key,
        cert: tls?.cert,
        ...smtpLimits,
        postmasterDomain: () => directory.primaryDomain,
        // Wake IDLE sessions and POP3/IMAP views of these mailboxes (and folders) at once.
        onDelivered: (boxes) => {
          for (const box of boxes) void mail.notifyDelivered(box, box.folder);
        },
        trust: inboundTrust(loaded),
        routing,
      });
      ops.smtp('smtp', inbound, tls ? smtpListener.tls : 'plain'); // ops (issue 9)
      startMx = async () => {
        const bound = await listenOrExplain(() => inbound.listen(smtpListener.listen.port, smtpListener.listen.host), 'smtp', smtpListener.listen);
        endpoints.push({ service: 'smtp', ...bound, tls: smtpListener.tls });
        // Pushed after the queue's stopper, so it stops first: no forward meets a stopped queue.
        stoppers.push(() => inbound.close());
      };
    }
    // One limiter for every login path, so guesses cannot be spread over protocols.
    const limiter = new LoginLimiter({
      maxFailuresPerAddress: config.auth.max_failures,
      maxFailuresPerAccount: config.auth.max_failures * 3,
      lockoutMs: config.auth.lockout,
      windowMs: config.auth.lockout,
      baseDelayMs: config.auth.failure_delay,
      maxDelayMs: config.auth.max_failure_delay,
    });
    // Domains can change on a config reload; logins qualify bare names with the current ones.
    let currentDomains = config.domains;
    // --- sending: the outbound queue, its delivery through the relay client, submission ---
    const resolver = new dns.Resolver({ timeout: Math.min(config.dns.timeout, 30_000), tries: 2 });
    if (config.dns.servers.length) resolver.setServers(config.dns.servers);
    const deliverLocally = async (boxes: MailboxRef[], raw: Buffer) => {
      await store.deliver(boxes, (async function* () {
        yield raw;
      })());
      for (const box of boxes) void mail.notifyDelivered(box);
    };
    // The relay's deliver keeps connections for reuse; closed (QUIT) after the queue stops.
    let relayDeliver: Deliver | undefined;
    const queue: OutboundQueue = new OutboundQueue({
      dir: join(loaded.dataDir, 'queue'),
      scheduler,
      hostname: config.hostname,
      log: log.child({ svc: 'queue' }),
      fsync: config.fsync,
      policy: {
        firstRetryMs: config.queue.first_retry,
        maxRetryMs: config.queue.max_retry,
        lifetimeMs: config.queue.lifetime,
        delayWarningMs: config.queue.delay_warning,
        maxConcurrent: config.queue.max_concurrent,
        maxPerDomain: config.queue.max_per_domain,
      },
      // ops (issue 9): in test mode (serve --catch) nothing leaves; see src/ops/catch.ts.
      deliver: opts.catchMail ? catchDeliver(directory, mail, config.domains, log) : (relayDeliver = makeDeliver({
        heloName: config.hostname,
        log: log.child({ svc: 'relay' }),
        resolver,
        dnsTimeoutMs: config.dns.timeout,
        mxPort: config.relay.mx_port,
        requireTls: config.relay.require_tls,
        smarthost: await smarthostTarget(loaded),
        pool: { idleMs: config.relay.pool_idle_time, maxIdlePerDestination: config.relay.pool_max_idle_per_destination, maxIdle: config.relay.pool_max_idle, maxMessagesPerConnection: config.relay.pool_max_messages_per_connection },
      })),
      // Bounces come from <>, so they never bounce themselves (no loops).
      bounce: async ({ to: addressed, raw }) => {
        // A DSN about forwarded mail comes to our SRS sender address: it goes to the original sender.
        const to = await routing.forwarder.original(addressed);
        const parts = splitAddress(to);
        if (parts && directory.isLocalDomain(parts.domain)) {
          const boxes = directory.resolve(to)?.local ?? [];
          if (boxes.length === 0) return void log.warn({ to }, 'bounce for an address that no longer exists here; dropped');
          await deliverLocally(boxes, Buffer.concat([Buffer.from('Return-Path: <>\r\n'), raw]));
        } else {
          await queue.enqueue({ from: '', recipients: [{ address: to }] }, raw);
        }
      },
    });
    ops.queue(queue); // ops (issue 9)
    await queue.start();
    stoppers.push(() => relayDeliver?.close());
    stoppers.push(() => queue.stop());
    stoppers.push(() => routing.vacation.idle());
    Object.assign(controlCommands, queueCommands(queue));
    const dkimKeys = await loadDkimKeys(loaded.dir, log.child({ svc: 'dkim' }));
    const dkim = new DkimSigner(dkimKeys, log.child({ svc: 'dkim' }));
    await startMx?.();
    const pipeline = new SubmissionPipeline({
      hostname: config.hostname,
      log: log.child({ svc: 'submission' }),
      directory,
      store,
      queue,
      dkim,
      onDelivered: (boxes) => {
        for (const box of boxes) void mail.notifyDelivered(box);
      },
    });
    for (const service of ['submission', 'submissions'] as const) {
      const listener = config.listeners[service];
      if (!listener?.enabled) continue;
      if (listener.tls === 'implicit' && !tls) {
        log.error({ service }, `${service} needs a TLS certificate for implicit TLS; not started`);
        continue;
      }
      const server = new SubmissionSmtp({
        hostname: config.hostname,
        log: log.child({ svc: service }),
        directory,
        pipeline,
        limiter: ops.limiter(service, limiter), // ops (issue 9): failures counted per service
        domains: () => currentDomains,
        tls: listener.tls,
        key: tls?.key,
        cert: tls?.cert,
        plaintextAuth: config.auth.plaintext,
        ...smtpLimits,
      });
      ops.smtp(service, server, listener.tls); // ops (issue 9)
      const bound = await listenOrExplain(() => server.listen(listener.listen.port, listener.listen.host), service, listener.listen);
      endpoints.push({ service, ...bound, tls: listener.tls });
      stoppers.push(() => server.close());
    }

    const mailBackend: Pop3Backend = {
      authenticate: async (username, password) => {
        const record = await directory.authenticate(qualify(username, config.domains), password);
        return record ? { user: record.user, domain: record.domain } : null;
      },
      openMaildrop: (box) => mail.open(box),
    };
    /** Start one line-protocol listener (POP3, IMAP) if it is configured. */
    const startLineService = async (service: 'pop3' | 'pop3s' | 'imap' | 'imaps', make: (mode: 'plain' | 'starttls' | 'implicit') => LineServer<LineSessionLike>) => {
      const listener = config.listeners[service];
      if (!listener?.enabled) return;
      if (listener.tls === 'implicit' && !tls) {
        log.error({ service }, `${service} needs a TLS certificate for implicit TLS; not started`);
        return;
      }
      const server = make(listener.tls);
      ops.line(service, server, listener.tls); // ops (issue 9)
      const bound = await listenOrExplain(() => server.listen(listener.listen.port, listener.listen.host), service, listener.listen);
      endpoints.push({ service, ...bound, tls: listener.tls });
      stoppers.push(() => server.close());
    };
    const lineLimits = { connectionsPerIp: config.limits.connections_per_ip, maxConnections: config.limits.connections, tlsCredentials: tls };

    // RFC 1939 3: the autologout timer is at least 10 minutes; shorter is allowed (tests), but said.
    if ((config.listeners.pop3?.enabled || config.listeners.pop3s?.enabled) && config.timeouts.pop3_idle < 600_000) {
      log.warn({ pop3_idle_ms: config.timeouts.pop3_idle }, 'timeouts.pop3_idle is below the 10 minutes RFC 1939 requires; clients may be logged out mid-session');
    }
    for (const service of ['pop3', 'pop3s'] as const) {
      await startLineService(service, (mode) => new Pop3Server({
        ...lineLimits,
        hostname: config.hostname,
        log: log.child({ svc: service }),
        backend: mailBackend,
        limiter: ops.limiter(service, limiter), // ops (issue 9)
        plaintext: config.auth.plaintext,
        tls: mode,
        idleMs: { authorization: config.timeouts.pop3_idle, transaction: config.timeouts.pop3_idle },
        loginMs: config.timeouts.pop3_login,
        commandsPerSecond: config.limits.pop3_commands_per_second,
        maxLine: config.limits.line_length,
      }));
    }

    // CPU-heavy parsing (ENVELOPE/BODYSTRUCTURE of big messages) runs off the event loop.
    const pool = new WorkerPool({ log: log.child({ svc: 'workers' }), taskModules: [SUMMARY_TASK_MODULE] });
    stoppers.push(() => pool.close());
    // IMAP shares the login limiter, the mailbox index (so IDLE hears SMTP deliveries through
    // notifyDelivered) and the TLS credentials with POP3; one summary cache for all sessions.
    const summaries = new SummaryProvider({ log: log.child({ svc: 'imap-summary' }), pool });
    for (const service of ['imap', 'imaps'] as const) {
      await startLineService(service, (mode) => new ImapServer({
        ...lineLimits,
        hostname: config.hostname,
        log: log.child({ svc: service }),
        backend: { authenticate: mailBackend.authenticate, open: (box) => mail.open(box) },
        limiter: ops.limiter(service, limiter), // ops (issue 9)
        plaintext: config.auth.plaintext,
        tls: mode,
        timeouts: { login: config.timeouts.imap_login, idle: config.timeouts.imap_idle },
        maxMessage: config.limits.message_size,
        // RFC 7162 4: clients send long UID sets; at least 8192 octets per line.
        maxLine: Math.max(config.limits.line_length, 64 * 1024),
        summaries,
      }));
    }

    // The webmail reads the same index and sends through the same pipeline as mail clients.
    const httpListener = config.listeners.http;
    if (httpListener?.enabled) {
      const client = (await import('./setup/dns-records.ts')).clientSettings(config); // client setup (issue 9): autoconfig, Autodiscover, MTA-STS
      const web = await listenOrExplain(
        () =>
          startWebmail({
            log: log.child({ svc: 'webmail' }),
            hostname: config.hostname,
            authenticate: mailBackend.authenticate,
            limiter: ops.limiter('http', limiter), // ops (issue 9)
            ops: ops.http(), // ops (issue 9): /metrics, /healthz
            acme: acmeChallenges.routes(), // ops (issue 9): ACME HTTP-01
            mail,
            summaries,
            pipeline,
            secureCookies: httpListener.tls !== 'plain',
            maxMessageBytes: config.limits.message_size,
            listen: httpListener.listen,
            tls: httpListener.tls !== 'plain' && tls ? tls : undefined,
            client, // client setup (issue 9)
          }),
        'http',
        httpListener.listen,
      );
      endpoints.push({ service: 'http', host: httpListener.listen.host, port: web.port, tls: httpListener.tls });
      ops.web('http', web.server); // ops (issue 9)
      stoppers.push(() => web.close());
    }

    // --- gathering (issue 7): scheduled pulls from remote IMAP/POP3 accounts into local mailboxes ---
    // Runs on the delivery scheduler, delivers through the mail store (index, IDLE, junk filter),
    // and adds the gather.* control commands `hearth gather` uses while the server runs.
    {
      const { GatherService } = await import('./gather/service.ts');
      const { StoreSink } = await import('./gather/sink.ts');
      const { gatherCommands } = await import('./gather/commands.ts');
      const { gatherAuthFromConfig } = await import('./gather/auth.ts');
      const g = config.gather;
      const gather = new GatherService({
        dataDir: loaded.dataDir,
        scheduler,
        sink: new StoreSink({ mail, junk: g.junk_filter ? junk : undefined, junkFolder: config.inbound.junk_folder }),
        log: log.child({ svc: 'gather' }),
        hostname: config.hostname,
        fsync: config.fsync,
        junkFolder: config.inbound.junk_folder,
        auth: gatherAuthFromConfig(config),
        settings: { intervalMs: g.interval, idle: g.idle, firstBackoffMs: g.first_backoff, maxBackoffMs: g.max_backoff, timeoutMs: g.timeout, parallel: g.parallel, batchSize: g.batch },
        isLocalAddress: (address) => (directory.resolve(address)?.local ?? []).some((b) => `${b.user}@${b.domain}` === address.toLowerCase()),
      });
      if (g.enabled) await gather.start();
      stoppers.push(() => gather.stop());
      Object.assign(controlCommands, gatherCommands(gather));
    }
    // --- end of gathering ---

    const notYet = Object.entries(config.listeners).filter(([service, l]) => l?.enabled && !endpoints.some((e) => e.service === service)).map(([service]) => service);
    if (notYet.length) log.info({ services: notYet }, `configured but not part of this version yet, skipped: ${notYet.join(', ')}`);

    const watcher = watchConfig(loaded.dir, {
      log: log.child({ svc: 'config' }),
      onConfig(next) {
        // Live-applicable settings; listener changes need a restart, so say so.
        log.level = next.config.log_level;
        directory.setDomains(next.config.domains);
        directory.setPlusDelimiter(next.config.routing.plus_delimiter);
        currentDomains = next.config.domains;
        log.info('configuration reloaded (listener and TLS changes take effect after a restart)');
      },
    });
    stoppers.push(() => watcher.close());

    for (const e of endpoints) log.info({ service: e.service, host: e.host, port: e.port, tls: e.tls }, `listening: ${e.service} on ${e.host}:${e.port}`);

    let closing: Promise<void> | undefined;
    return {
      loaded,
      log,
      endpoints,
      store,
      directory,
      controlPath,
      close() {
        closing ??= (async () => {
          log.info('shutting down: no new connections, letting transactions in flight finish');
          await stopAll();
          log.info('stopped');
        })();
        return closing;
      },
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/** Inbound trust (issue 6): sender authentication, abuse limits, greylisting, DNSBL, from config. */
function inboundTrust(loaded: LoadedConfig): InboundTrustOptions {
  const { inbound, greylist, dnsbl, dns, rspamd } = loaded.config;
  return {
    checkLoopback: inbound.check_loopback,
    dnsServers: dns.servers,
    dnsTimeoutMs: inbound.dns_timeout,
    dnsCache: { maxEntries: dns.cache_size, maxTtlMs: dns.cache_max_ttl, negativeTtlMs: dns.cache_negative_ttl },
    auth: inbound.authentication
      ? {
          dnsDeadlineMs: inbound.dns_deadline,
          maxDnsLookups: inbound.dns_max_lookups,
          dmarcReject: inbound.dmarc_reject,
          dmarcQuarantine: inbound.dmarc_quarantine,
          rejectSpfFail: inbound.reject_spf_fail,
          junkFolder: inbound.junk_folder,
          spoolMemoryBytes: inbound.spool_memory,
          spoolDir: join(loaded.dataDir, '.inbound-spool'),
          worker: true,
        }
      : undefined,
    limits: {
      connectionsPerMinute: inbound.connections_per_minute,
      messagesPerMinute: inbound.messages_per_minute,
      maxFailedRcpts: inbound.max_failed_rcpts,
      failedRcptWindowMs: inbound.failed_rcpt_window,
    },
    greylist: greylist.enabled
      ? { file: join(loaded.dataDir, 'greylist.json'), delayMs: greylist.delay, retryWindowMs: greylist.retry_window, expireMs: greylist.expire }
      : undefined,
    dnsbl: dnsbl.zones.length ? { zones: dnsbl.zones, timeoutMs: dnsbl.timeout } : undefined,
    rspamd: rspamd.url
      ? { url: rspamd.url, timeoutMs: rspamd.timeout, password: rspamd.password, reject: rspamd.reject, softReject: rspamd.soft_reject, junkScore: rspamd.junk_score, spoolDir: join(loaded.dataDir, '.inbound-spool') }
      : undefined,
  };
}

/** Routing (issue 6): forwarding with SRS, loop protection, plus-folders and vacation, from [routing]. */
function inboundRouting(
  loaded: LoadedConfig,
  log: Logger,
  deps: { directory: Directory; store: MaildirStore; mail: MailStore; queue: ForwardQueue; sign(message: Buffer, domain: string): Promise<string>; dkimKeys(): DkimKey[] },
): InboundRoutingOptions & { vacation: VacationResponder } {
  const { routing, hostname } = loaded.config;
  const secretFile = resolvePath(loaded.dir, routing.srs_secret_file);
  const forwardLog = log.child({ svc: 'forward' });
  let srs: Promise<Srs> | undefined;
  // The secret is read (or made, 0600) on first use, so a server that never forwards has none.
  const loadSrs = (): Promise<Srs> =>
    (srs ??= (async () => {
      const secrets = await loadSrsSecrets(secretFile);
      if (await srsSecretTooOpen(secretFile)) forwardLog.warn({ file: secretFile }, 'the SRS secret is readable by other users; chmod 600 it');
      return new Srs({ secrets, maxAgeDays: Math.max(1, Math.round(routing.srs_max_age / 86_400_000)) });
    })().catch((err: unknown) => {
      srs = undefined;
      throw err;
    }));
  const forwarder = new Forwarder({
    log: forwardLog,
    srs: loadSrs,
    queue: deps.queue,
    maxReceived: routing.max_received,
    // Prefer RSA for the seal: ed25519 ARC is not widely verified yet.
    arcKey: routing.forward_arc_seal ? (domain) => deps.dkimKeys().find((k) => k.domain === domain && k.algorithm === 'rsa-sha256') ?? deps.dkimKeys().find((k) => k.domain === domain) : undefined,
  });
  const vacation = new VacationResponder({
    store: new VacationStore(join(loaded.dataDir, 'vacation')),
    hostname,
    log: log.child({ svc: 'vacation' }),
    intervalMs: routing.vacation_interval,
    junkFolder: loaded.config.inbound.junk_folder,
    isLocalDomain: (domain) => deps.directory.isLocalDomain(domain),
    resolveLocal: (address) => (deps.directory.resolve(address)?.local ?? []).map((b) => ({ user: b.user, domain: b.domain })),
    deliverLocal: async (boxes, raw) => {
      await deps.store.deliver(boxes, raw);
      for (const box of boxes) void deps.mail.notifyDelivered(box);
    },
    queue: deps.queue,
    sign: deps.sign,
  });
  const findFolder = async (box: MailboxRef, name: string): Promise<string | undefined> => {
    const folders = await (await deps.mail.open(box)).listFolders();
    return folders.find((f) => f.name !== 'INBOX' && f.name.toLowerCase() === name.toLowerCase())?.name;
  };
  return { forwarder, vacation, spoolDir: join(loaded.dataDir, '.inbound-spool'), findFolder: routing.plus_to_folder ? findFolder : undefined };
}

/** Is this address a user's own (not an alias)? Vacation settings belong to users. */
function isUser(directory: Directory, address: string): boolean {
  const r = directory.resolve(address);
  return r?.local.length === 1 && r.remote.length === 0 && `${r.local[0].user}@${r.local[0].domain}` === address.toLowerCase() && !r.local[0].tag;
}

/** Turn EADDRINUSE/EACCES into an error that says which setting to change. */
async function listenOrExplain<T>(listen: () => Promise<T>, service: string, at: { host: string; port: number }): Promise<T> {
  try {
    return await listen();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const where = `${at.host}:${at.port}`;
    if (code === 'EADDRINUSE') throw new HearthError('LISTEN_IN_USE', `${service}: ${where} is already in use by another program; stop it or change listeners.${service}.listen in hearth.toml`, { cause: err });
    if (code === 'EACCES') throw new HearthError('LISTEN_DENIED', `${service}: not allowed to listen on ${where} (ports below 1024 need privileges); use a port above 1024 or grant CAP_NET_BIND_SERVICE`, { cause: err });
    if (code === 'EADDRNOTAVAIL') throw new HearthError('LISTEN_NO_ADDRESS', `${service}: ${at.host} is not an address of this machine; fix listeners.${service}.listen in hearth.toml`, { cause: err });
    throw err;
  }
}

async function readTls(loaded: LoadedConfig, log: Logger, ops: OpsRuntime): Promise<{ key: Buffer; cert: Buffer } | undefined> {
  const needsTls = Object.values(loaded.config.listeners).some((l) => l?.enabled && l.tls !== 'plain');
  if (!needsTls) return undefined;
  // ops (issue 9): read through the reloader, which also follows the files and SIGHUP.
  const material = await ops.startTls();
  if (!material) log.error(`TLS is off: fix the certificate or key (${loaded.tlsCert}, ${loaded.tlsKey}) named by tls.cert and tls.key in hearth.toml, or make a test pair with \`hearth tls selfsigned\`, and restart`);
  return material ? { key: material.key, cert: material.cert } : undefined;
}

/**
 * ops (issue 9), test mode: the queue's deliver files each message into the sender's Caught
 * folder (or postmaster's when the sender is not local, e.g. a bounce), never the network.
 */
function catchDeliver(directory: Directory, mail: MailStore, domains: string[], log: Logger): ReturnType<typeof makeCatchDeliver> {
  return makeCatchDeliver({
    log: log.child({ svc: 'catch' }),
    owners: (from) => {
      const own = directory.resolve(from)?.local ?? [];
      if (own.length) return own.map((b) => ({ user: b.user, domain: b.domain }));
      for (const domain of domains) {
        const pm = directory.resolve(`postmaster@${domain}`)?.local ?? [];
        if (pm.length) return pm.map((b) => ({ user: b.user, domain: b.domain }));
      }
      return [];
    },
    file: async (box, folder, content) => {
      const mb = await mail.open(box);
      if (!(await mb.listFolders()).some((f) => f.name === folder)) await mb.createFolder(folder).catch(() => undefined);
      await mb.append(folder, content);
    },
    folder: CAUGHT_FOLDER,
  });
}

/** The smarthost as a relay target, from [relay] (its password from a 0600 file), or undefined for MX mode. */
export async function smarthostTarget(loaded: LoadedConfig): Promise<RelayTarget | undefined> {
  const relay = loaded.config.relay;
  if (relay.mode !== 'smarthost') return undefined;
  const m = relay.smarthost ? /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(relay.smarthost) : null;
  if (!m) throw new HearthError('CONFIG_INVALID', `relay.smarthost must be "host:port" when relay.mode = "smarthost" (e.g. "smtp.provider.example:587"); it is ${JSON.stringify(relay.smarthost ?? '')}`);
  let auth: RelayTarget['auth'];
  if (relay.smarthost_user) {
    if (!relay.smarthost_password_file) throw new HearthError('CONFIG_INVALID', 'relay.smarthost_user needs relay.smarthost_password_file (a file holding only the password, mode 0600)');
    const file = resolvePath(loaded.dir, relay.smarthost_password_file); // relative to the config folder unless absolute
    const pass = (await readFile(file, 'utf8').catch((err: Error) => {
      throw new HearthError('CONFIG_INVALID', `cannot read the smarthost password from ${file}: ${err.message}`);
    })).trim();
    auth = { user: relay.smarthost_user, pass };
  }
  const tlsMode = relay.smarthost_tls === 'implicit' ? 'implicit' : relay.smarthost_tls === 'none' ? 'none' : 'required';
  return { host: m[1] ?? m[2], port: Number(m[3]), tls: tlsMode, auth };
}

/** A bare user name means that user in the only local domain, as Dovecot does with one domain. */
function qualify(username: string, domains: string[]): string {
  return username.includes('@') || domains.length !== 1 ? username : `${username}@${domains[0]}`;
}

async function version(): Promise<string> {
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}
