// Starts the suite on one event loop: config, store, directory, scheduler, services and the
// control socket, and stops it gracefully. Services that later issues add (submission, IMAP,
// POP3, webmail) plug in here; nothing below this file reads the config itself.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ControlServer } from './core/control.ts';
import { createLogger } from './core/log.ts';
import type { Logger } from './core/log.ts';
import { Scheduler } from './core/scheduler.ts';
import { loadConfig } from './config/load.ts';
import type { LoadedConfig } from './config/load.ts';
import { Directory } from './config/directory.ts';
import { watchConfig } from './config/watch.ts';
import { MaildirStore } from './store/maildir.ts';
import { InboundSmtp } from './smtp/inbound.ts';

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

export async function startHearth(opts: { configDir: string; log?: Logger }): Promise<RunningHearth> {
  const loaded = await loadConfig(opts.configDir);
  const { config } = loaded;
  const log = opts.log ?? createLogger(config.log_level);

  await mkdir(loaded.dataDir, { recursive: true, mode: 0o750 });
  const store = new MaildirStore({ root: loaded.dataDir, hostname: config.hostname, fsync: config.fsync, log: log.child({ svc: 'store' }) });
  const directory = await Directory.open({ configDir: loaded.dir, domains: config.domains, log: log.child({ svc: 'directory' }), watch: true });
  const scheduler = new Scheduler({ log: log.child({ svc: 'scheduler' }) });
  scheduler.start();
  // Maildir spec: files left in tmp/ for 36 hours are debris of interrupted deliveries.
  scheduler.every('maildir-tmp-cleanup', 6 * HOUR, async () => {
    const removed = await store.cleanTmp(36 * HOUR);
    if (removed > 0) log.info({ removed }, 'removed stale files from Maildir tmp/');
  });

  const tls = await readTls(loaded, log);
  const endpoints: Endpoint[] = [];
  const closers: Array<() => Promise<void>> = [];

  const smtpListener = config.listeners.smtp;
  if (smtpListener?.enabled) {
    const wantsTls = smtpListener.tls !== 'plain';
    const inbound = new InboundSmtp({
      hostname: config.hostname,
      log: log.child({ svc: 'smtp' }),
      directory,
      store,
      tls: wantsTls && !tls ? 'plain' : smtpListener.tls,
      key: tls?.key,
      cert: tls?.cert,
      maxMessageBytes: config.limits.message_size,
      maxRecipients: config.limits.recipients,
      connectionsPerIp: config.limits.connections_per_ip,
      maxConnections: config.limits.connections,
      idleTimeoutMs: config.timeouts.smtp_idle,
      closeTimeoutMs: config.timeouts.shutdown_grace,
    });
    const bound = await inbound.listen(smtpListener.listen.port, smtpListener.listen.host);
    endpoints.push({ service: 'smtp', ...bound, tls: smtpListener.tls });
    closers.push(() => inbound.close());
  }
  for (const [service, listener] of Object.entries(config.listeners)) {
    if (listener?.enabled && service !== 'smtp') log.info({ service }, `${service} is configured but not part of this version yet; skipping`);
  }

  const controlPath = join(loaded.dataDir, 'hearth.sock');
  const control = new ControlServer(controlPath, log.child({ svc: 'control' }), {
    status: async () => ({ pid: process.pid, uptime: Math.round(process.uptime()), endpoints, version: await version() }),
    'users-changed': async () => {
      await directory.reload();
      return { reloaded: true };
    },
  });
  await control.listen();

  const watcher = watchConfig(loaded.dir, {
    log: log.child({ svc: 'config' }),
    onConfig(next) {
      // Live-applicable settings; listener changes need a restart, so say so.
      log.level = next.config.log_level;
      directory.setDomains(next.config.domains);
      log.info('configuration reloaded (listener and TLS changes take effect after a restart)');
    },
  });

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
        watcher.close();
        await Promise.allSettled(closers.map((c) => c()));
        await control.close();
        await scheduler.stop();
        directory.close();
        log.info('stopped');
      })();
      return closing;
    },
  };
}

async function readTls(loaded: LoadedConfig, log: Logger): Promise<{ key: Buffer; cert: Buffer } | undefined> {
  const needsTls = Object.values(loaded.config.listeners).some((l) => l?.enabled && l.tls !== 'plain');
  if (!needsTls) return undefined;
  try {
    const [key, cert] = await Promise.all([readFile(loaded.tlsKey), readFile(loaded.tlsCert)]);
    return { key, cert };
  } catch (err) {
    log.error({ err: (err as Error).message }, `cannot read the TLS certificate or key (${loaded.tlsCert}, ${loaded.tlsKey}): TLS is off until they exist; set tls.cert and tls.key in hearth.toml`);
    return undefined;
  }
}

async function version(): Promise<string> {
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}
