// Abuse limits on port 25: DNSBL at connect, connections and messages per minute per client,
// and directory-harvest protection (421 after too many unknown recipients).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import nodemailer from 'nodemailer';
import { inboxFiles, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import type { DnsServer } from '../helpers/dns-server.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { silentLogger } from '../../src/core/log.ts';
import { networkKey, reversedForDnsbl } from '../../src/smtp/client-address.ts';
import { Dnsbl } from '../../src/smtp/dnsbl.ts';
import { SlidingWindow } from '../../src/smtp/rate-limits.ts';

type Running = Awaited<ReturnType<typeof startTestHearth>>;

const NO_LIMITS = 'connections_per_minute = 0\nmessages_per_minute = 0\nmax_failed_rcpts = 0\n';

async function withHearth(toml: string, fn: (h: Running, setup: TestSetup) => Promise<void>): Promise<void> {
  const setup = await makeSetup({ toml });
  const hearth = await startTestHearth(setup);
  try {
    await fn(hearth, setup);
  } finally {
    await hearth.close();
    await setup.cleanup();
  }
}

async function greeting(port: number): Promise<{ c: RawSmtp; reply: string }> {
  const c = await RawSmtp.connect(port);
  return { c, reply: await c.reply() };
}

describe('DNSBL', () => {
  let dns: DnsServer;
  beforeAll(async () => {
    dns = await startDnsServer({ '1.0.0.127.bl.test': { A: ['127.0.0.2'] }, '2.0.0.127.bl.test': { A: ['127.0.0.2'] } }, { drop: ['1.0.0.127.slow-bl.test'] });
  });
  afterAll(() => dns?.close());

  it('refuses a listed client at connect with 554 5.7.1 naming the list, and nothing is delivered', async () => {
    await withHearth(`[inbound]\ncheck_loopback = true\nauthentication = false\n${NO_LIMITS}\n[dnsbl]\nzones = ["clean-bl.test", "bl.test"]\n\n[dns]\nservers = ["127.0.0.1:${dns.port}"]\n`, async (hearth, setup) => {
      const { c, reply } = await greeting(hearth.smtpPort);
      expect(reply).toBe('554 5.7.1 Service unavailable; client [127.0.0.1] listed by bl.test\r\n');
      // The server closes the connection after the refusal.
      expect(await c.reply()).toBe('');
      const err = await nodemailer
        .createTransport({ host: '127.0.0.1', port: hearth.smtpPort, ignoreTLS: true })
        .sendMail({ envelope: { from: 'a@spam.example', to: ['alice@example.test'] }, raw: 'Subject: listed\r\n\r\nx\r\n' })
        .catch((e: unknown) => e as { responseCode?: number });
      expect(err).toMatchObject({ responseCode: 554 });
      expect(await inboxFiles(setup.dataDir, 'alice@example.test')).toHaveLength(0);
      expect(dns.queries.some((q) => q.name === '1.0.0.127.clean-bl.test' && q.type === 'A')).toBe(true);
    });
  });

  it('lets mail through when the blocklist does not answer in time', async () => {
    await withHearth(`[inbound]\ncheck_loopback = true\nauthentication = false\n${NO_LIMITS}\n[dnsbl]\nzones = ["slow-bl.test"]\ntimeout = "300ms"\n\n[dns]\nservers = ["127.0.0.1:${dns.port}"]\n`, async (hearth, setup) => {
      const started = performance.now();
      const info = await nodemailer
        .createTransport({ host: '127.0.0.1', port: hearth.smtpPort, ignoreTLS: true })
        .sendMail({ envelope: { from: 'a@fine.example', to: ['alice@example.test'] }, raw: 'Subject: not listed\r\n\r\nx\r\n' });
      expect(info.response).toMatch(/^250 /);
      expect(performance.now() - started).toBeLessThan(3000);
      expect((await inboxFiles(setup.dataDir, 'alice@example.test')).filter((f) => f.content.includes('Subject: not listed'))).toHaveLength(1);
    });
  });

  it('a client that leaves during the DNSBL lookup does not keep counting against its per-address connection limit', async () => {
    await withHearth(`[limits]\nconnections_per_ip = 1\n[inbound]\ncheck_loopback = true\nauthentication = false\n${NO_LIMITS}\n[dnsbl]\nzones = ["slow-bl.test"]\ntimeout = "300ms"\n\n[dns]\nservers = ["127.0.0.1:${dns.port}"]\n`, async (hearth) => {
      const impatient = await RawSmtp.connect(hearth.smtpPort);
      await new Promise((r) => setTimeout(r, 150)); // the lookup (300 ms) is under way
      impatient.close();
      await new Promise((r) => setTimeout(r, 600)); // the lookup is over
      const { c, reply } = await greeting(hearth.smtpPort);
      expect(reply).toMatch(/^220 /);
      c.close();
    });
  });

  it('does not look up loopback clients unless check_loopback is set', async () => {
    const before = dns.queries.length;
    await withHearth(`[dnsbl]\nzones = ["bl.test"]\n\n[dns]\nservers = ["127.0.0.1:${dns.port}"]\n`, async (hearth) => {
      const { c, reply } = await greeting(hearth.smtpPort);
      expect(reply).toMatch(/^220 /);
      c.close();
    });
    expect(dns.queries.length).toBe(before);
  });

  it('reads 127.0.0.x answers as listings, ignores 127.255.255.x error codes and failures', async () => {
    dns.set('9.2.0.192.bl.test', { A: ['127.0.0.4'] });
    dns.set('9.2.0.192.refusing-bl.test', { A: ['127.255.255.254'] });
    const bl = new Dnsbl({ zones: ['refusing-bl.test', 'bl.test'], resolver: dns.resolver(), timeoutMs: 1000, log: silentLogger() });
    expect(await bl.lookup('192.0.2.9')).toEqual({ zone: 'bl.test', answer: '127.0.0.4' });
    expect(await new Dnsbl({ zones: ['refusing-bl.test'], resolver: dns.resolver(), timeoutMs: 1000, log: silentLogger() }).lookup('192.0.2.9')).toBeNull();
    expect(await bl.lookup('192.0.2.10')).toBeNull();
  });
});

describe('rate limits per client', () => {
  it('refuses connections over connections_per_minute with 421 4.7.0', async () => {
    await withHearth('[inbound]\ncheck_loopback = true\nauthentication = false\nconnections_per_minute = 3\n', async (hearth) => {
      const open: RawSmtp[] = [];
      for (let i = 0; i < 3; i++) {
        const { c, reply } = await greeting(hearth.smtpPort);
        expect(reply).toMatch(/^220 /);
        expect(await c.command('QUIT')).toMatch(/^221 /);
        open.push(c);
      }
      const { c, reply } = await greeting(hearth.smtpPort);
      expect(reply).toMatch(/^421 4\.7\.0 Too many connections from your address in the last minute/);
      expect(await c.reply()).toBe('');
      for (const x of open) x.close();
    });
  });

  it('defers messages over messages_per_minute with 451 4.7.0 at MAIL FROM', async () => {
    await withHearth('[inbound]\ncheck_loopback = true\nauthentication = false\nmessages_per_minute = 2\n', async (hearth, setup) => {
      const { c } = await greeting(hearth.smtpPort);
      await c.command('EHLO busy.example');
      for (let i = 1; i <= 2; i++) {
        expect(await c.command('MAIL FROM:<bulk@busy.example>')).toMatch(/^250/);
        expect(await c.command('RCPT TO:<alice@example.test>')).toMatch(/^250/);
        expect(await c.command('DATA')).toMatch(/^354/);
        c.send(`Subject: bulk ${i}\r\n\r\nx\r\n.\r\n`);
        expect(await c.reply()).toMatch(/^250 /);
      }
      expect(await c.command('MAIL FROM:<bulk@busy.example>')).toMatch(/^451 4\.7\.0 Too many messages from your address/);
      // A new connection does not reset the count.
      const second = await greeting(hearth.smtpPort);
      await second.c.command('EHLO busy.example');
      expect(await second.c.command('MAIL FROM:<bulk@busy.example>')).toMatch(/^451 4\.7\.0 /);
      c.close();
      second.c.close();
      expect((await inboxFiles(setup.dataDir, 'alice@example.test')).filter((f) => f.content.includes('Subject: bulk'))).toHaveLength(2);
    });
  });

  it('disconnects a directory harvester with 421 4.7.0 after max_failed_rcpts unknown recipients', async () => {
    await withHearth('[inbound]\ncheck_loopback = true\nauthentication = false\nmax_failed_rcpts = 3\n', async (hearth) => {
      const { c } = await greeting(hearth.smtpPort);
      await c.command('EHLO harvest.example');
      await c.command('MAIL FROM:<h@harvest.example>');
      expect(await c.command('RCPT TO:<alice@example.test>')).toMatch(/^250/); // real users do not count
      expect(await c.command('RCPT TO:<admin@example.test>')).toMatch(/^550 5\.1\.1 /);
      expect(await c.command('RCPT TO:<info@example.test>')).toMatch(/^550 5\.1\.1 /);
      expect(await c.command('RCPT TO:<sales@example.test>')).toMatch(/^421 4\.7\.0 Too many unknown recipients/);
      expect(await c.reply()).toBe(''); // closed
      // Reconnecting does not give a fresh allowance within the window.
      const again = await greeting(hearth.smtpPort);
      await again.c.command('EHLO harvest.example');
      await again.c.command('MAIL FROM:<h@harvest.example>');
      expect(await again.c.command('RCPT TO:<bob@example.test>')).toMatch(/^250/);
      expect(await again.c.command('RCPT TO:<ceo@example.test>')).toMatch(/^421 4\.7\.0 /);
      c.close();
      again.c.close();
    });
  });

  it('applies no per-minute limits to loopback clients by default', async () => {
    await withHearth('[inbound]\nconnections_per_minute = 1\nmessages_per_minute = 1\n', async (hearth) => {
      for (let i = 0; i < 3; i++) {
        const { c, reply } = await greeting(hearth.smtpPort);
        expect(reply).toMatch(/^220 /);
        await c.command('EHLO local.example');
        expect(await c.command('MAIL FROM:<a@local.example>')).toMatch(/^250/);
        c.close();
      }
    });
  });
});

describe('limit helpers', () => {
  it('SlidingWindow counts events in the last window only', () => {
    let now = 0;
    const w = new SlidingWindow(2, 60_000, () => now);
    expect(w.hit('a')).toBe(true);
    now = 10_000;
    expect(w.hit('a')).toBe(true);
    expect(w.hit('a')).toBe(false);
    expect(w.hit('b')).toBe(true);
    now = 60_001; // the first event left the window, but the refused one still counts
    expect(w.hit('a')).toBe(false);
    now = 130_000;
    expect(w.count('a')).toBe(0);
    expect(w.hit('a')).toBe(true);
  });

  it('keys IPv6 clients by /64 and reverses addresses for DNSBL queries (RFC 5782)', () => {
    expect(networkKey('2001:db8:0:1::5')).toBe('2001:db8:0:1::/64');
    expect(networkKey('2001:db8:0:1:ffff:1:2:3')).toBe('2001:db8:0:1::/64');
    expect(networkKey('::ffff:198.51.100.4')).toBe('198.51.100.4');
    expect(reversedForDnsbl('192.0.2.99')).toBe('99.2.0.192');
    expect(reversedForDnsbl('2001:db8:1:2:3:4:567:89ab')).toBe('b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2');
    expect(reversedForDnsbl('::1')).toBe(`1.${'0.'.repeat(31).slice(0, -1)}`);
    expect(reversedForDnsbl('not an address')).toBeNull();
  });
});
