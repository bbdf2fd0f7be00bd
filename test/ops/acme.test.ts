// ACME (issue 9) against a real, local ACME CA: Debian's `pebble` (apt package `pebble`),
// started on loopback ports with its own test certificate for its HTTPS API (trusted through
// [acme] ca_file), resolving the test domain through the loopback DNS fixture and validating
// HTTP-01 against hearth's web listener. Skipped when /usr/bin/pebble is absent, except under CI=1 (fails there).
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generate } from 'selfsigned';
import { Scheduler } from '../../src/core/scheduler.ts';
import { silentLogger } from '../../src/core/log.ts';
import { scheduleRenewal } from '../../src/ops/acme.ts';
import type { AcmeSettings } from '../../src/ops/acme.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { CLI, makeSetup, startTestHearth } from '../helpers/hearth.ts';
import { until } from '../config/helpers.ts';
import { fingerprintAt } from './helpers.ts';

const PEBBLE = process.env.PEBBLE ?? '/usr/bin/pebble';
const DOMAIN = 'mx.test.example';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

type Pebble = { directoryUrl: string; caFile: string; logs: string[] };

/** pebble on loopback: its API certificate made here, HTTP-01 sent to `httpPort`, DNS from the fixture. */
async function startPebble(dir: string, httpPort: number, dnsPort: number): Promise<Pebble> {
  const pems = await generate([{ name: 'commonName', value: 'pebble.test' }], {
    keySize: 2048,
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] }],
  });
  const caFile = join(dir, 'pebble-api.pem');
  await writeFile(caFile, pems.cert);
  await writeFile(join(dir, 'pebble-api.key'), pems.private);
  const [apiPort, mgmtPort, tlsPort] = [await freePort(), await freePort(), await freePort()];
  await writeFile(
    join(dir, 'pebble.json'),
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${apiPort}`,
        managementListenAddress: `127.0.0.1:${mgmtPort}`,
        certificate: caFile,
        privateKey: join(dir, 'pebble-api.key'),
        httpPort,
        tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
      },
    }),
  );
  const child: ChildProcess = spawn(PEBBLE, ['-config', join(dir, 'pebble.json'), '-dnsserver', `127.0.0.1:${dnsPort}`], {
    env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanups.push(async () => {
    child.kill('SIGTERM');
    await exited;
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pebble did not start:\n${logs.join('')}`)), 15_000);
    const onData = (d: Buffer) => {
      logs.push(d.toString());
      if (/ACME directory available/.test(logs.join(''))) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then(() => reject(new Error(`pebble exited:\n${logs.join('')}`)));
  });
  return { directoryUrl: `https://127.0.0.1:${apiPort}/dir`, caFile, logs };
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
}

describe.skipIf(!existsSync(PEBBLE) && !process.env.CI)('hearth tls acme against pebble (apt package pebble)', () => {
  it('obtains a certificate over HTTP-01 on the web listener, installs it, and every TLS listener serves it without a restart', async () => {
    const dns = await startDnsServer({ [DOMAIN]: { A: ['127.0.0.1'] } });
    cleanups.push(() => dns.close());
    const dir = await mkdtemp(join(tmpdir(), 'hearth-pebble-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const webPort = await freePort();
    const pebble = await startPebble(dir, webPort, dns.port);

    const setup = await makeSetup({
      toml: `[listeners.imaps]
listen = "127.0.0.1:0"
tls = "implicit"

[listeners.http]
listen = "127.0.0.1:${webPort}"
tls = "plain"

[acme]
directory_url = "${pebble.directoryUrl}"
email = "postmaster@example.test"
ca_file = "${pebble.caFile}"
`,
    });
    cleanups.push(() => setup.cleanup());
    const hearth = await startTestHearth(setup);
    cleanups.push(() => hearth.close());
    const certFile = join(setup.configDir, 'tls', 'cert.pem');
    const before = new X509Certificate(await readFile(certFile));
    expect(await fingerprintAt(hearth.port('imaps'))).toBe(before.fingerprint256);

    // Unknown tokens are not answered.
    const miss = await fetch(`http://127.0.0.1:${webPort}/.well-known/acme-challenge/nope`);
    expect(miss.status).toBe(404);

    const r = await runCli(['tls', 'acme', '--config', setup.configDir, '--timeout', '60']);
    expect(r.stderr + r.stdout).toMatch(/issued by .*Pebble/);
    expect(r.code).toBe(0);

    const after = new X509Certificate(await readFile(certFile));
    expect(after.fingerprint256).not.toBe(before.fingerprint256);
    expect(after.issuer).toMatch(/Pebble/);
    expect(after.subjectAltName).toContain(`DNS:${DOMAIN}`);
    expect(after.checkPrivateKey((await import('node:crypto')).createPrivateKey(await readFile(join(setup.configDir, 'tls', 'key.pem'))))).toBe(true);
    expect((await stat(join(setup.configDir, 'tls', 'key.pem'))).mode & 0o077).toBe(0);
    expect((await stat(join(setup.configDir, 'tls', 'acme-account.key'))).mode & 0o077).toBe(0);
    // The running server serves the new pair to new connections (no restart).
    await until(async () => (await fingerprintAt(hearth.port('imaps'))) === after.fingerprint256);

    // With no server running, the command answers the challenge on the web listener's address itself.
    await hearth.close();
    const again = await runCli(['tls', 'acme', '--config', setup.configDir, '--timeout', '60']);
    expect(again.stderr + again.stdout).toMatch(/issued by .*Pebble/);
    const renewed = new X509Certificate(await readFile(certFile));
    expect(renewed.fingerprint256).not.toBe(after.fingerprint256);
    expect(renewed.subjectAltName).toContain(`DNS:${DOMAIN}`);
  }, 60_000);
});

describe('ACME renewal timer', () => {
  const settings = (certFile: string): AcmeSettings => ({ directoryUrl: 'https://acme.invalid/dir', domains: [DOMAIN], accountKeyFile: '/nonexistent', certFile, keyFile: '/nonexistent', renewBeforeMs: 30 * 86_400_000 });

  it('renews a certificate with fewer than 30 days left, leaves a fresh one alone, and backs off after failures', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hearth-acme-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const { makePairAt } = await import('./helpers.ts');
    const now = Date.now();
    const soon = await makePairAt([DOMAIN], new Date(now - 60 * 86_400_000), new Date(now + 10 * 86_400_000));
    // A CA-issued one (a self-signed certificate counts as due: ACME replaces the default pair).
    const ca = await generate([{ name: 'commonName', value: 'Test CA' }], { keySize: 2048, algorithm: 'sha256' });
    const fresh = await generate([{ name: 'commonName', value: DOMAIN }], {
      keySize: 2048,
      algorithm: 'sha256',
      notBeforeDate: new Date(now - 86_400_000),
      notAfterDate: new Date(now + 80 * 86_400_000),
      extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: DOMAIN }] }],
      ca: { key: ca.private, cert: ca.cert },
    });
    const certFile = join(dir, 'cert.pem');
    await writeFile(certFile, soon.cert);

    const scheduler = new Scheduler({ log: silentLogger() });
    scheduler.start();
    cleanups.push(() => scheduler.stop());
    const attempts: number[] = [];
    let fail = 2;
    const stop = scheduleRenewal({
      scheduler,
      settings: () => settings(certFile),
      log: silentLogger(),
      firstCheckMs: 10,
      firstBackoffMs: 50,
      checkEveryMs: 200,
      obtain: async () => {
        attempts.push(Date.now());
        if (fail-- > 0) throw new Error('CA unreachable');
        await writeFile(certFile, fresh.cert);
      },
    });
    cleanups.push(async () => stop());
    await until(() => attempts.length >= 3, 5_000);
    // Backoff: the second failure waits about twice as long as the first.
    expect(attempts[1] - attempts[0]).toBeGreaterThanOrEqual(40);
    expect(attempts[2] - attempts[1]).toBeGreaterThanOrEqual(90);
    // Renewed: later checks find the fresh certificate and order nothing.
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(attempts.length).toBe(3);
  }, 15_000);
});
