// /metrics moves when mail flows over SMTP and IMAP logins fail; /healthz answers; `status`
// carries the connections, the queue and the counters.
import { afterEach, describe, expect, it } from 'vitest';
import { controlRequest } from '../../src/core/control.ts';
import { MetricsRegistry } from '../../src/core/metrics.ts';
import { RecentErrors, isPrivatePeer } from '../../src/ops/runtime.ts';
import { createLogger } from '../../src/core/log.ts';
import { formatOpsStatus } from '../../src/cli/ops.ts';
import { makeSetup, startTestHearth } from '../helpers/hearth.ts';
import { RawLines } from '../helpers/raw-lines.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const TOML = `[listeners.imap]
listen = "127.0.0.1:0"
tls = "starttls"

[listeners.http]
listen = "127.0.0.1:0"
tls = "plain"

[auth]
failure_delay = "1ms"
`;

/** The value of one sample in Prometheus text (0 when absent). */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

async function sendMail(port: number, to: string): Promise<void> {
  const c = await RawSmtp.connect(port);
  await c.reply();
  await c.command('EHLO client.test');
  expect(await c.command('MAIL FROM:<someone@remote.test>')).toMatch(/^250/);
  expect(await c.command(`RCPT TO:<${to}>`)).toMatch(/^250/);
  expect(await c.command('DATA')).toMatch(/^354/);
  expect(await c.command('From: someone@remote.test\r\nTo: ' + to + '\r\nSubject: hi\r\n\r\nhello\r\n.')).toMatch(/^250/);
  await c.command('QUIT');
  c.close();
}

describe('metrics', () => {
  it('counts SMTP messages, connections and IMAP login failures; /healthz and status', async () => {
    const setup = await makeSetup({ toml: TOML });
    cleanups.push(() => setup.cleanup());
    const hearth = await startTestHearth(setup);
    cleanups.push(() => hearth.close());
    const web = `http://127.0.0.1:${hearth.port('http')}`;
    const metrics = async () => {
      const res = await fetch(`${web}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      return res.text();
    };

    const before = await metrics();
    expect(sample(before, 'hearth_messages_received_total{service="smtp"}')).toBe(0);
    expect(before).toContain('# TYPE hearth_messages_received_total counter');
    expect(before).toMatch(/^hearth_event_loop_delay_seconds\{quantile="0.99"\} [\d.e-]+$/m);
    expect(sample(before, 'hearth_heap_bytes{kind="used"}')).toBeGreaterThan(0);
    expect(sample(before, 'hearth_queue_messages')).toBe(0);

    await sendMail(hearth.smtpPort, 'alice@example.test');
    await sendMail(hearth.smtpPort, 'bob@example.test');

    const imap = await RawLines.connect(hearth.port('imap'));
    await imap.line();
    expect(await imap.command('a1 LOGIN alice@example.test wrong-password')).toMatch(/^a1 NO/);
    // The connection stays open over the scrape.
    const after = await metrics();
    expect(sample(after, 'hearth_messages_received_total{service="smtp"}')).toBe(2);
    expect(sample(after, 'hearth_connections_total{service="smtp"}')).toBe(2);
    expect(sample(after, 'hearth_connections_total{service="imap"}')).toBe(1);
    expect(sample(after, 'hearth_connections_open{service="imap"}')).toBe(1);
    expect(sample(after, 'hearth_login_failures_total{service="imap"}')).toBe(1);
    expect(sample(after, 'hearth_tls_certificate_expiry_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000);

    const health = await fetch(`${web}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', queue: { messages: 0 } });

    const status = (await controlRequest(hearth.controlPath, 'status')) as Record<string, unknown>;
    expect(status).toMatchObject({ connections: { smtp: 0, imap: 1, http: expect.any(Number) }, queue: { messages: 0 }, counters: { received: 2, loginFailures: 1 }, catchMode: false });
    const printed = formatOpsStatus(status);
    expect(printed).toContain('queue: 0 messages');
    expect(printed).toContain('since start: 2 received');
    expect(printed).toContain('recent errors: none');
    imap.close();
  }, 30_000);

  it('renders the exposition format, escaping label values', () => {
    const r = new MetricsRegistry();
    const c = r.counter('x_total', 'Things.');
    c.inc({ svc: 'a"b\\c\nd' });
    c.inc({ svc: 'a"b\\c\nd' }, 2);
    r.gauge('g', 'A gauge.').set(1.5);
    expect(r.render()).toBe('# HELP x_total Things.\n# TYPE x_total counter\nx_total{svc="a\\"b\\\\c\\nd"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1.5\n');
    expect(() => c.inc(undefined, -1)).toThrow(RangeError);
  });

  it('serves /metrics to loopback and private networks only', () => {
    for (const ip of ['127.0.0.1', '::1', '::ffff:10.1.2.3', '192.168.0.9', '172.20.0.1', 'fd00::1']) expect(isPrivatePeer(ip)).toBe(true);
    for (const ip of ['8.8.8.8', '172.32.0.1', '2001:db8::1', '']) expect(isPrivatePeer(ip)).toBe(false);
  });

  it('keeps the last error lines any child logger writes, for hearth status', () => {
    const written: string[] = [];
    const log = createLogger('info', { write: (line: string) => void written.push(line) });
    const errors = new RecentErrors(2);
    errors.attach(log);
    log.child({ svc: 'relay' }).info('fine');
    log.child({ svc: 'relay' }).error({ err: new Error('connection refused') }, 'delivery failed');
    log.child({ svc: 'tls' }).error('no usable TLS certificate');
    log.child({ svc: 'queue' }).error('third');
    expect(errors.items.map((e) => [e.svc, e.msg])).toEqual([['tls', 'no usable TLS certificate'], ['queue', 'third']]);
    expect(written).toHaveLength(4);
    errors.close();
    log.error('after close');
    expect(errors.items).toHaveLength(2);
  });
});
