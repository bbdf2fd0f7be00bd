// Metrics are in charge of counting what the server does and saying it in the Prometheus text
// format (exposition format 0.0.4): a few counters and gauges, written here rather than pulled
// from a library. One registry is made in main.ts and handed down; lower layers get a counter
// or a callback, never the registry or the config. Gauges that mirror state someone else owns
// (queue size, open connections) are read when scraped, through `collect` callbacks.
import { monitorEventLoopDelay } from 'node:perf_hooks';
type IntervalHistogram = ReturnType<typeof monitorEventLoopDelay>;

export type Labels = Record<string, string>;
type Kind = 'counter' | 'gauge';

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function labelKey(labels: Labels | undefined): string {
  if (!labels) return '';
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return '';
  for (const k of keys) if (!LABEL.test(k)) throw new TypeError(`bad metric label name ${k}`);
  // Exposition format: backslash, double quote and newline are escaped in label values.
  return `{${keys.map((k) => `${k}="${labels[k].replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')}}`;
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** One metric family: a name, help, type, and a value per label set. */
export class Metric {
  readonly name: string;
  readonly help: string;
  readonly kind: Kind;
  readonly #values = new Map<string, number>();

  constructor(name: string, help: string, kind: Kind) {
    if (!NAME.test(name)) throw new TypeError(`bad metric name ${name}`);
    this.name = name;
    this.help = help;
    this.kind = kind;
  }

  inc(labels?: Labels, by = 1): void {
    if (this.kind === 'counter' && by < 0) throw new RangeError('a counter only goes up');
    const key = labelKey(labels);
    this.#values.set(key, (this.#values.get(key) ?? 0) + by);
  }

  set(value: number, labels?: Labels): void {
    if (this.kind === 'counter') throw new TypeError(`${this.name} is a counter; use inc()`);
    this.#values.set(labelKey(labels), value);
  }

  get(labels?: Labels): number {
    return this.#values.get(labelKey(labels)) ?? 0;
  }

  /** The sum over every label set. */
  total(): number {
    let sum = 0;
    for (const v of this.#values.values()) sum += v;
    return sum;
  }

  /** Drop every label set (for gauges refilled on each scrape). */
  clear(): void {
    this.#values.clear();
  }

  render(): string {
    const head = `# HELP ${this.name} ${this.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${this.name} ${this.kind}\n`;
    let body = '';
    for (const [key, value] of this.#values) body += `${this.name}${key} ${formatValue(value)}\n`;
    return head + body;
  }
}

export class MetricsRegistry {
  readonly #metrics = new Map<string, Metric>();
  readonly #collectors: Array<() => void> = [];

  counter(name: string, help: string): Metric {
    return this.#family(name, help, 'counter');
  }

  gauge(name: string, help: string): Metric {
    return this.#family(name, help, 'gauge');
  }

  /** Run before every render: refresh gauges from whoever owns the state. */
  collect(fn: () => void): void {
    this.#collectors.push(fn);
  }

  get(name: string): Metric | undefined {
    return this.#metrics.get(name);
  }

  render(): string {
    for (const fn of this.#collectors) {
      try {
        fn();
      } catch {
        // A broken collector must not take /metrics down; its gauges keep their last value.
      }
    }
    return [...this.#metrics.values()].map((m) => m.render()).join('');
  }

  #family(name: string, help: string, kind: Kind): Metric {
    const known = this.#metrics.get(name);
    if (known) {
      if (known.kind !== kind) throw new TypeError(`${name} is already a ${known.kind}`);
      return known;
    }
    const m = new Metric(name, help, kind);
    this.#metrics.set(name, m);
    return m;
  }
}

/** The counters hearth's services move, by name, so call sites stay one line. */
export class HearthMetrics {
  readonly registry = new MetricsRegistry();
  readonly connections = this.registry.counter('hearth_connections_total', 'Connections accepted, by service.');
  readonly openConnections = this.registry.gauge('hearth_connections_open', 'Connections open now, by service.');
  readonly received = this.registry.counter('hearth_messages_received_total', 'Messages accepted over SMTP (after the final 250), by service.');
  readonly delivered = this.registry.counter('hearth_messages_delivered_total', 'Outbound recipients delivered (or caught in test mode).');
  readonly deferred = this.registry.counter('hearth_messages_deferred_total', 'Outbound delivery attempts deferred, per recipient.');
  readonly bounced = this.registry.counter('hearth_messages_bounced_total', 'Outbound recipients failed for good (a bounce is sent where one is wanted).');
  readonly loginFailures = this.registry.counter('hearth_login_failures_total', 'Failed logins, by service.');
  readonly queueSize = this.registry.gauge('hearth_queue_messages', 'Messages in the outbound queue.');
  readonly queueOldest = this.registry.gauge('hearth_queue_oldest_age_seconds', 'Age of the oldest message in the outbound queue (0 when empty).');
  readonly tlsNotAfter = this.registry.gauge('hearth_tls_certificate_expiry_timestamp_seconds', 'When the served certificate expires (Unix time).');
  readonly tlsReloads = this.registry.counter('hearth_tls_reloads_total', 'Certificate reloads, by result.');
  readonly eventLoopDelay = this.registry.gauge('hearth_event_loop_delay_seconds', 'Event-loop delay since the last scrape, by quantile (and max).');
  readonly heap = this.registry.gauge('hearth_heap_bytes', 'V8 heap, used and total.');
  readonly rss = this.registry.gauge('hearth_resident_memory_bytes', 'Resident set size of the process.');
  readonly uptime = this.registry.gauge('hearth_uptime_seconds', 'Seconds since the process started.');
  readonly #loop: IntervalHistogram;

  constructor() {
    // 20 ms resolution is plenty to see a blocked loop and costs next to nothing.
    this.#loop = monitorEventLoopDelay({ resolution: 20 });
    this.#loop.enable();
    // Unlabelled counters show 0 from the start, so rate() has a first point.
    for (const c of [this.delivered, this.deferred, this.bounced]) c.inc(undefined, 0);
    this.registry.collect(() => {
      const h = this.#loop;
      for (const q of [0.5, 0.9, 0.99]) this.eventLoopDelay.set(h.count ? h.percentile(q * 100) / 1e9 : 0, { quantile: String(q) });
      this.eventLoopDelay.set(h.count ? h.max / 1e9 : 0, { quantile: 'max' });
      // Each scrape covers the interval since the previous one, so a past stall does not stick.
      h.reset();
      const mem = process.memoryUsage();
      this.heap.set(mem.heapUsed, { kind: 'used' });
      this.heap.set(mem.heapTotal, { kind: 'total' });
      this.rss.set(mem.rss);
      this.uptime.set(Math.round(process.uptime()));
    });
  }

  render(): string {
    return this.registry.render();
  }

  close(): void {
    this.#loop.disable();
  }
}
