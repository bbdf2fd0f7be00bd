// Operations commands: `hearth tls selfsigned|reload`, `hearth doctor`, and the part of
// `hearth status` that shows connections, the queue, the certificate and recent errors.
import { access, mkdir, readFile } from 'node:fs/promises';
import { promises as dns } from 'node:dns';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { generateLocalCertificate } from '../config/defaults.ts';
import { writeFileAtomic } from '../config/fsutil.ts';
import { loadConfig } from '../config/load.ts';
import { controlRequest } from '../core/control.ts';
import { HearthError } from '../core/errors.ts';
import { silentLogger } from '../core/log.ts';
import type { QueueEntry } from '../queue/queue.ts';
import type { Finding } from '../ops/doctor.ts';

export function configDirOf(opts: { config?: string }): string {
  return resolve(opts.config ?? process.env.HEARTH_CONFIG ?? 'config');
}

const exists = (path: string): Promise<boolean> => access(path).then(() => true, () => false);

function parseHostPort(text: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text);
  if (!m) throw new HearthError('CLI_USAGE', `${what} must be host:port, e.g. gmail-smtp-in.l.google.com:25`);
  return { host: m[1] ?? m[2], port: Number(m[3]) };
}

function age(seconds: number): string {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172_800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86_400)}d`;
}

/** The lines `hearth status` prints after the endpoints (from the ops part of the status reply). */
export function formatOpsStatus(status: Record<string, unknown>): string {
  const s = status as {
    connections?: Record<string, number>;
    queue?: { messages: number; oldestAgeSeconds: number; deferredRecipients: number; held: number };
    tls?: { notAfter: string; names: string[]; sni: string[] } | null;
    recentErrors?: Array<{ time: string; svc?: string; msg: string }>;
    catchMode?: boolean;
    counters?: Record<string, number>;
  };
  let out = '';
  if (s.catchMode) out += 'TEST MODE (--catch): outbound mail goes to the sender\'s Caught folder, nothing leaves\n';
  if (s.connections) out += `connections open: ${Object.entries(s.connections).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}\n`;
  if (s.queue) out += `queue: ${s.queue.messages} message${s.queue.messages === 1 ? '' : 's'}${s.queue.messages ? `, oldest ${age(s.queue.oldestAgeSeconds)}, ${s.queue.deferredRecipients} recipient(s) deferred${s.queue.held ? `, ${s.queue.held} held` : ''}` : ''}\n`;
  if (s.counters) out += `since start: ${s.counters.received ?? 0} received, ${s.counters.delivered ?? 0} delivered, ${s.counters.deferred ?? 0} deferred, ${s.counters.bounced ?? 0} bounced, ${s.counters.loginFailures ?? 0} failed logins\n`;
  if (s.tls !== undefined) {
    if (s.tls === null) out += 'certificate: none (TLS off)\n';
    else {
      const days = Math.floor((new Date(s.tls.notAfter).getTime() - Date.now()) / 86_400_000);
      out += `certificate: ${s.tls.names.join(', ')}, valid until ${s.tls.notAfter.slice(0, 10)} (${days} days)${s.tls.sni.length ? `; SNI: ${s.tls.sni.join(', ')}` : ''}\n`;
    }
  }
  if (s.recentErrors) {
    if (s.recentErrors.length === 0) out += 'recent errors: none\n';
    else {
      out += `recent errors (last ${Math.min(10, s.recentErrors.length)}):\n`;
      for (const e of s.recentErrors.slice(-10)) out += `  ${e.time.slice(0, 19).replace('T', ' ')} ${(e.svc ?? '').padEnd(10)} ${e.msg}\n`;
    }
  }
  return out;
}

const MARK: Record<Finding['severity'], string> = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL', skip: 'skip' };

export function formatFindings(findings: Finding[]): string {
  let out = '';
  for (const f of findings) {
    out += `${MARK[f.severity]}  ${f.check.padEnd(8)} ${f.message}\n`;
    if (f.fix && f.severity !== 'ok') out += `      fix: ${f.fix}\n`;
  }
  const fails = findings.filter((f) => f.severity === 'fail').length;
  const warns = findings.filter((f) => f.severity === 'warn').length;
  out += fails + warns === 0 ? '\nall checks passed\n' : `\n${fails} problem(s), ${warns} warning(s)\n`;
  return out;
}

export function registerOpsCommands(program: Command): void {
  const tlsCmd = program.command('tls').description('TLS certificates: a self-signed pair for tests, and reloading the running server');
  tlsCmd
    .command('selfsigned')
    .description('write a self-signed certificate and key to tls.cert / tls.key (for a test setup; clients will ask to trust it)')
    .option('-c, --config <dir>', 'config folder (default: $HEARTH_CONFIG or ./config)')
    .option('--hostname <name>', 'the name to put in the certificate (default: hostname from hearth.toml)')
    .option('--force', 'replace an existing certificate')
    .action(async (opts: { config?: string; hostname?: string; force?: boolean }) => {
      const configDir = configDirOf(opts);
      let certFile = join(configDir, 'tls', 'cert.pem');
      let keyFile = join(configDir, 'tls', 'key.pem');
      let hostname = opts.hostname;
      let dataDir: string | undefined;
      if (await exists(join(configDir, 'hearth.toml'))) {
        const loaded = await loadConfig(configDir);
        certFile = loaded.tlsCert;
        keyFile = loaded.tlsKey;
        hostname ??= loaded.config.hostname;
        dataDir = loaded.dataDir;
      }
      hostname = (hostname ?? 'localhost').toLowerCase();
      if (!/^[a-z0-9.-]+$/.test(hostname)) throw new HearthError('CLI_USAGE', `--hostname ${JSON.stringify(hostname)} is not a host name`);
      if (!opts.force && ((await exists(certFile)) || (await exists(keyFile)))) {
        throw new HearthError('CLI_TLS_EXISTS', `${certFile} already exists; add --force to replace it`);
      }
      const { cert, key } = await generateLocalCertificate(hostname);
      await mkdir(dirname(certFile), { recursive: true, mode: 0o755 });
      await mkdir(dirname(keyFile), { recursive: true, mode: 0o755 });
      // Key first: the watcher of a running server reloads when the pair matches again.
      await writeFileAtomic(keyFile, key, 0o600);
      await writeFileAtomic(certFile, cert, 0o644);
      process.stdout.write(`wrote a self-signed certificate for ${hostname}${hostname === 'localhost' ? '' : ', localhost'}, 127.0.0.1 and ::1 (valid 825 days)\n  certificate: ${certFile}\n  key:         ${keyFile}\n`);
      if (dataDir) {
        const reloaded = (await controlRequest(join(dataDir, 'hearth.sock'), 'tls.reload', {}, 10_000).catch(() => undefined)) as { ok: boolean } | undefined;
        if (reloaded?.ok) process.stdout.write('the running server now serves it\n');
      }
    });
  tlsCmd
    .command('reload')
    .description('make the running server read tls.cert / tls.key again (as SIGHUP does); open connections are kept')
    .option('-c, --config <dir>', 'config folder (default: $HEARTH_CONFIG or ./config)')
    .action(async (opts: { config?: string }) => {
      const loaded = await loadConfig(configDirOf(opts));
      const r = (await controlRequest(join(loaded.dataDir, 'hearth.sock'), 'tls.reload', {}, 10_000)) as { ok: boolean; error?: string; notAfter?: string };
      if (!r.ok) throw new HearthError('CLI_TLS_RELOAD', `the server kept its previous certificate: ${r.error}`);
      process.stdout.write(`reloaded; the certificate is valid until ${r.notAfter}\n`);
    });

  tlsCmd
    .command('acme')
    .description('get a certificate for [acme] domains (default: hostname) from the ACME CA ([acme] directory_url), answering HTTP-01 on the web listener, and install it as tls.cert / tls.key')
    .option('-c, --config <dir>', 'config folder (default: $HEARTH_CONFIG or ./config)')
    .option('--timeout <seconds>', 'how long the order may take', '300')
    .action(async (opts: { config?: string; timeout: string }) => {
      const loaded = await loadConfig(configDirOf(opts));
      const { AcmeChallenges, acmeSettings, obtainCertificate } = await import('../ops/acme.ts');
      const timeoutMs = Math.max(10, Number(opts.timeout) || 300) * 1000;
      type Obtained = { names: string[]; notAfter: string; issuer: string; certFile: string };
      let result: Obtained;
      try {
        // The running server answers the challenge on its web listener and reloads afterwards.
        result = (await controlRequest(join(loaded.dataDir, 'hearth.sock'), 'tls.acme', {}, timeoutMs)) as Obtained;
      } catch (err) {
        if ((err as HearthError).code !== 'CONTROL_NOT_RUNNING') throw err;
        // No server: answer on the web listener's address for the length of the order.
        const web = loaded.config.listeners.http;
        if (!web?.enabled) throw new HearthError('CLI_ACME_NO_WEB', 'HTTP-01 needs the web listener: configure [listeners.http] (reachable as http://NAME/ on port 80)');
        if (web.tls !== 'plain') process.stderr.write('note: the web listener is HTTPS; the CA asks over plain HTTP on port 80, so something must forward that to it\n');
        const challenges = new AcmeChallenges();
        const server = await challenges.listen(web.listen.host, web.listen.port);
        try {
          result = await obtainCertificate(acmeSettings(loaded), challenges, silentLogger());
        } finally {
          server.close();
        }
      }
      process.stdout.write(`certificate for ${result.names.join(', ')} issued by ${result.issuer}, valid until ${result.notAfter}\n  written to ${result.certFile}\n`);
    });

  program
    .command('doctor')
    .description('check DNS records, reverse DNS, the certificate, the queue and outbound port 25; each problem with its fix')
    .option('-c, --config <dir>', 'config folder (default: $HEARTH_CONFIG or ./config)')
    .option('--port25-test <host:port>', 'where to try an outbound SMTP connection', 'gmail-smtp-in.l.google.com:25')
    .option('--timeout <seconds>', 'how long each network check may take', '8')
    .option('--json', 'print JSON')
    .action(async (opts: { config?: string; port25Test: string; timeout: string; json?: boolean }) => {
      const loaded = await loadConfig(configDirOf(opts));
      const { config } = loaded;
      const timeoutMs = Math.max(1, Number(opts.timeout) || 8) * 1000;
      const resolver = new dns.Resolver({ timeout: Math.min(timeoutMs, config.dns.timeout), tries: 2 });
      if (config.dns.servers.length) resolver.setServers(config.dns.servers);
      const [cert, key] = await Promise.all([readFile(loaded.tlsCert).catch((err: Error) => err), readFile(loaded.tlsKey).catch(() => undefined)]);
      const { loadDkimKeys, dkimTxtRecord } = await import('../smtp/dkim.ts');
      const dkim = (await loadDkimKeys(loaded.dir, silentLogger())).map((k) => ({ domain: k.domain, selector: k.selector, txt: dkimTxtRecord(k.privateKey) }));
      const smarthost = config.relay.mode === 'smarthost' && config.relay.smarthost ? parseHostPort(config.relay.smarthost, 'relay.smarthost') : undefined;
      const test = parseHostPort(opts.port25Test, '--port25-test');
      const { runDoctor } = await import('../ops/doctor.ts');
      const findings = await runDoctor({
        hostname: config.hostname,
        domains: config.domains,
        addresses: config.client.addresses,
        resolver,
        dnsTimeoutMs: timeoutMs,
        certificate: cert instanceof Error ? { file: loaded.tlsCert, error: cert.message } : { file: loaded.tlsCert, cert, key },
        dkim,
        queue: async () => {
          try {
            return (await controlRequest(join(loaded.dataDir, 'hearth.sock'), 'queue.list', {}, timeoutMs)) as QueueEntry[];
          } catch (err) {
            if ((err as HearthError).code === 'CONTROL_NOT_RUNNING') return 'not-running';
            throw err;
          }
        },
        outbound: { smarthost, testHost: test.host, testPort: test.port, timeoutMs },
      });
      if (opts.json) process.stdout.write(JSON.stringify(findings, null, 2) + '\n');
      else process.stdout.write(`hearth doctor: ${config.hostname} (${config.domains.join(', ')})\n\n${formatFindings(findings)}`);
      if (findings.some((f) => f.severity === 'fail')) process.exitCode = 1;
    });
}
