// Operations is in charge of what a person running hearth looks at: the metrics registry and
// where it is counted, the recent errors, `hearth status`, /metrics and /healthz, and the
// certificate reloads (SIGHUP, file changes, `hearth tls reload`). main.ts makes one OpsRuntime
// and hands each service to it once it exists; the services themselves only expose a hook
// (onReceived, onRecipientOutcome) or their socket server.
import type net from 'node:net';
import type { Server as HttpServer } from 'node:http';
import tls from 'node:tls';
import { Hono } from 'hono';
import pino from 'pino';
import { named } from '../core/log.ts';
import type { Logger } from '../core/log.ts';
import type { LoginLimiter } from '../core/login-limiter.ts';
import { HearthMetrics } from '../core/metrics.ts';
import { TlsReloader, contextOptions } from '../core/tls-reload.ts';
import type { TlsMaterial } from '../core/tls-reload.ts';
import type { OutboundQueue } from '../queue/queue.ts';
import type { SmtpListener } from '../smtp/listener.ts';
import type { LineServer, LineSessionLike } from '../core/line-server.ts';

export type RecentError = { time: string; level: 'error' | 'fatal' | 'warn'; svc?: string; msg: string };

/**
 * Keeps the last error lines the logger writes, by listening on its destination (shared by
 * every child logger), so nothing else has to report errors twice.
 */
export class RecentErrors {
  readonly #max: number;
  readonly #items: RecentError[] = [];
  #restore: (() => void) | undefined;
  onError: (() => void) | undefined;

  constructor(max = 20) {
    this.#max = max;
  }

  get items(): RecentError[] {
    return [...this.#items];
  }

  /** Tap the logger's destination; undone by close(). */
  attach(log: Logger): void {
    const stream = (log as unknown as Record<symbol, { write(s: string): unknown } | undefined>)[pino.symbols.streamSym];
    if (!stream || typeof stream.write !== 'function') return;
    const write = stream.write;
    stream.write = (line: string) => {
      // Cheap test first: only error (50) and fatal (60) lines are parsed.
      if (typeof line === 'string' && /"level":[56]0[,}]/.test(line)) this.note(line);
      return write.call(stream, line);
    };
    this.#restore = () => {
      stream.write = write;
    };
  }

  note(line: string): void {
    try {
      const e = JSON.parse(line) as { level: number; time?: string | number; svc?: string; msg?: string; err?: unknown };
      const detail = typeof e.err === 'string' ? e.err : (e.err as { message?: string } | undefined)?.message;
      const msg = [e.msg, detail && !String(e.msg ?? '').includes(detail) ? detail : ''].filter(Boolean).join(': ');
      this.#items.push({ time: typeof e.time === 'number' ? new Date(e.time).toISOString() : String(e.time ?? new Date().toISOString()), level: e.level >= 60 ? 'fatal' : 'error', svc: e.svc, msg: msg.slice(0, 500) });
      if (this.#items.length > this.#max) this.#items.shift();
      this.onError?.();
    } catch {
      // Not JSON (a pretty destination already formatted it): nothing to keep.
    }
  }

  close(): void {
    this.#restore?.();
    this.#restore = undefined;
  }
}

type ServiceInfo = { service: string; open(): number };

export type OpsRuntimeOptions = {
  log: Logger;
  certFile: string;
  keyFile: string;
  /** Test mode (`serve --catch`): outbound mail is filed locally, not sent. */
  catchMode?: boolean;
  now?: () => number;
};

export class OpsRuntime {
  readonly metrics = new HearthMetrics();
  readonly errors = new RecentErrors();
  readonly tls: TlsReloader;
  readonly catchMode: boolean;
  readonly #log: Logger;
  readonly #services: ServiceInfo[] = [];
  readonly #now: () => number;
  readonly #logErrors = this.metrics.registry.counter('hearth_log_errors_total', 'Error lines logged.');
  #queue: OutboundQueue | undefined;
  #onHup: (() => void) | undefined;

  constructor(opts: OpsRuntimeOptions) {
    this.#log = opts.log;
    this.#now = opts.now ?? Date.now;
    this.catchMode = opts.catchMode ?? false;
    this.errors.attach(opts.log);
    this.errors.onError = () => this.#logErrors.inc();
    this.tls = new TlsReloader({ certFile: opts.certFile, keyFile: opts.keyFile, log: named(opts.log, 'tls') });
    this.tls.onReload = (r) => {
      this.metrics.tlsReloads.inc({ result: r.ok ? 'ok' : 'failed' });
      if (r.ok && this.tls.current) this.metrics.tlsNotAfter.set(Math.floor(this.tls.current.notAfter.getTime() / 1000));
    };
    this.metrics.registry.collect(() => {
      this.metrics.openConnections.clear();
      for (const s of this.#services) this.metrics.openConnections.set(s.open(), { service: s.service });
      const q = this.queueSummary();
      this.metrics.queueSize.set(q.messages);
      this.metrics.queueOldest.set(q.oldestAgeSeconds);
    });
  }

  /** Certificates: first load, file watching and SIGHUP. Undefined when TLS cannot be served. */
  async startTls(): Promise<TlsMaterial | undefined> {
    const material = await this.tls.start();
    this.tls.watch();
    this.#onHup = () => {
      this.#log.info('SIGHUP: reloading the TLS certificates');
      void this.tls.reload('SIGHUP');
    };
    process.on('SIGHUP', this.#onHup);
    return material;
  }

  /** An smtp-server based listener: counts connections and accepted messages, takes new certificates. */
  smtp(service: string, listener: Pick<SmtpListener<never>, 'server' | 'onReceived'>, tlsMode: string): void {
    listener.server.server.on('connection', () => this.metrics.connections.inc({ service }));
    listener.onReceived = () => this.metrics.received.inc({ service });
    this.#services.push({ service, open: () => listener.server.connections.size });
    if (tlsMode !== 'plain') {
      this.tls.add({ service, apply: (m) => listener.server.updateSecureContext({ key: m.key, cert: m.cert, sniOptions: this.tls.sniOptions(m) }) });
    }
  }

  /** A POP3/IMAP listener. */
  line(service: string, server: Pick<LineServer<LineSessionLike>, 'netServer' | 'sessions' | 'setTlsCredentials'>, tlsMode: string): void {
    server.netServer.on('connection', () => this.metrics.connections.inc({ service }));
    this.#services.push({ service, open: () => server.sessions });
    if (tlsMode !== 'plain') this.tls.add({ service, apply: (m) => server.setTlsCredentials(m, this.tls.sniCallback) });
  }

  /** The web listener (HTTPS when it is a tls.Server). */
  web(service: string, server: HttpServer): void {
    server.on('connection', () => this.metrics.connections.inc({ service }));
    let open = 0;
    server.on('connection', (s: net.Socket) => {
      open++;
      s.once('close', () => open--);
    });
    this.#services.push({ service, open: () => open });
    if (server instanceof tls.Server) {
      const https = server;
      this.tls.add({
        service,
        apply: (m) => {
          https.setSecureContext(contextOptions(m));
          // Node's own SNI lookup takes the most recently added match, so re-adding replaces.
          for (const s of m.sni) for (const name of s.names) https.addContext(name, contextOptions(s));
        },
      });
    }
  }

  /** The login limiter as one service sees it: the same limits, failures counted under its name. */
  limiter(service: string, limiter: LoginLimiter): LoginLimiter {
    const counted = Object.create(limiter) as LoginLimiter;
    counted.check = limiter.check.bind(limiter);
    counted.success = limiter.success.bind(limiter);
    counted.failure = (address: string, account?: string) => {
      this.metrics.loginFailures.inc({ service });
      return limiter.failure(address, account);
    };
    return counted;
  }

  queue(queue: OutboundQueue): void {
    this.#queue = queue;
    queue.onRecipientOutcome = (status) => (status === 'delivered' ? this.metrics.delivered : status === 'deferred' ? this.metrics.deferred : this.metrics.bounced).inc();
  }

  queueSummary(): { messages: number; oldestAgeSeconds: number; deferredRecipients: number; held: number } {
    const entries = this.#queue?.list() ?? [];
    const now = this.#now();
    let oldest = now;
    let deferred = 0;
    let held = 0;
    for (const e of entries) {
      oldest = Math.min(oldest, e.createdAt);
      if (e.held) held++;
      for (const r of e.recipients) if (r.status === 'deferred') deferred++;
    }
    return { messages: entries.length, oldestAgeSeconds: entries.length ? Math.max(0, Math.round((now - oldest) / 1000)) : 0, deferredRecipients: deferred, held };
  }

  /** What `hearth status` adds to pid, uptime and endpoints. */
  status(): Record<string, unknown> {
    const cert = this.tls.current;
    return {
      connections: Object.fromEntries(this.#services.map((s) => [s.service, s.open()])),
      queue: this.queueSummary(),
      recentErrors: this.errors.items,
      tls: cert ? { notAfter: cert.notAfter.toISOString(), names: cert.names, sni: cert.sni.map((s) => s.names).flat() } : null,
      catchMode: this.catchMode,
      counters: {
        received: this.metrics.received.total(),
        delivered: this.metrics.delivered.get(),
        deferred: this.metrics.deferred.get(),
        bounced: this.metrics.bounced.get(),
        loginFailures: this.metrics.loginFailures.total(),
      },
    };
  }

  /** /metrics (Prometheus) and /healthz, mounted on the web listener. */
  http(): Hono {
    const app = new Hono();
    app.get('/metrics', (c) => {
      // Counts are not secrets, but they are nobody else's business: this machine and private networks only.
      const peer = (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming?.socket?.remoteAddress ?? '';
      if (!isPrivatePeer(peer)) return c.text('metrics are served to loopback and private-network addresses only\n', 403);
      return c.body(this.metrics.render(), 200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8', 'Cache-Control': 'no-store' });
    });
    app.get('/healthz', (c) => {
      // Alive and serving: the event loop answered. Details are for `hearth status`.
      const q = this.queueSummary();
      return c.json({ status: 'ok', uptime: Math.round(process.uptime()), queue: { messages: q.messages, oldestAgeSeconds: q.oldestAgeSeconds } }, 200, { 'Cache-Control': 'no-store' });
    });
    return app;
  }

  close(): void {
    if (this.#onHup) process.off('SIGHUP', this.#onHup);
    this.tls.close();
    this.errors.close();
    this.metrics.close();
  }
}

/** Loopback, RFC 1918, RFC 6598 shared, link-local and IPv6 ULA addresses. */
export function isPrivatePeer(address: string): boolean {
  const ip = address.startsWith('::ffff:') ? address.slice(7) : address;
  if (ip === '::1' || /^fe80:/i.test(ip) || /^f[cd][0-9a-f]{2}:/i.test(ip)) return true;
  const m = /^(\d+)\.(\d+)\.\d+\.\d+$/.exec(ip);
  if (!m) return false;
  const [a, b] = [Number(m[1]), Number(m[2])];
  return a === 127 || a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127) || (a === 169 && b === 254);
}
