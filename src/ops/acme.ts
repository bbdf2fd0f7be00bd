// ACME (issue 9) is in charge of getting and renewing the certificate that tls.cert / tls.key
// name from a CA such as Let's Encrypt, with the maintained `acme-client` library (RFC 8555)
// and the HTTP-01 challenge answered on the web listener (/.well-known/acme-challenge/TOKEN).
// It only writes the two files (key first, then certificate, each atomically); the TLS
// reloader notices the change and every listener serves the new pair to new connections.
//
// Who answers the challenge: the running server (its web listener mounts challengeRoutes()),
// which is why `hearth tls acme` asks the server to do the order over the control socket; with
// no server running, the command answers on the web listener's address itself for the order.
// The renewal check runs on the delivery scheduler: twice a day, renewing when fewer than
// 30 days remain (or the certificate does not cover the configured names), with backoff.
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import https from 'node:https';
import { dirname, resolve } from 'node:path';
import tls from 'node:tls';
import * as acme from 'acme-client';
import { Hono } from 'hono';
import { writeFileAtomic } from '../config/fsutil.ts';
import type { LoadedConfig } from '../config/load.ts';
import { HearthError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { Scheduler } from '../core/scheduler.ts';
import { certificateNames } from '../core/tls-reload.ts';

const DAY = 86_400_000;
const HOUR = 3_600_000;
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/;

/** Key authorizations of the HTTP-01 challenges in progress, by token. */
export class AcmeChallenges {
  readonly #answers = new Map<string, string>();

  set(token: string, keyAuthorization: string): void {
    this.#answers.set(token, keyAuthorization);
  }

  delete(token: string): void {
    this.#answers.delete(token);
  }

  get(token: string): string | undefined {
    return TOKEN.test(token) ? this.#answers.get(token) : undefined;
  }

  /** GET /.well-known/acme-challenge/:token, for the web listener (RFC 8555 8.3). */
  routes(): Hono {
    const app = new Hono();
    app.get('/.well-known/acme-challenge/:token', (c) => {
      const answer = this.get(c.req.param('token'));
      if (answer === undefined) return c.text('no such challenge\n', 404, { 'Cache-Control': 'no-store' });
      return c.body(answer, 200, { 'Content-Type': 'application/octet-stream', 'Cache-Control': 'no-store' });
    });
    return app;
  }

  /** A plain-HTTP server answering only the challenges (when no hearth is running). */
  async listen(host: string, port: number): Promise<Server> {
    const server = createServer((req, res) => {
      const m = /^\/\.well-known\/acme-challenge\/([^/?#]+)/.exec(req.url ?? '');
      const answer = m && req.method === 'GET' ? this.get(m[1]) : undefined;
      res.writeHead(answer === undefined ? 404 : 200, { 'Content-Type': 'application/octet-stream', 'Cache-Control': 'no-store' });
      res.end(answer ?? 'no such challenge\n');
    });
    await new Promise<void>((ok, fail) => {
      server.once('error', fail);
      server.listen(port, host, () => ok());
    });
    return server;
  }
}

/** What an order needs, resolved from [acme] and [tls] of hearth.toml. */
export type AcmeSettings = {
  directoryUrl: string;
  email?: string;
  domains: string[];
  accountKeyFile: string;
  /** Extra CA certificates (PEM) to trust for the directory's HTTPS, e.g. a test CA (pebble). */
  caFile?: string;
  certFile: string;
  keyFile: string;
  renewBeforeMs: number;
};

export function acmeSettings(loaded: LoadedConfig): AcmeSettings {
  const a = loaded.config.acme;
  return {
    directoryUrl: a.directory_url,
    email: a.email,
    domains: a.domains.length ? a.domains : [loaded.config.hostname],
    accountKeyFile: resolve(loaded.dir, a.account_key_file),
    caFile: a.ca_file ? resolve(loaded.dir, a.ca_file) : undefined,
    certFile: loaded.tlsCert,
    keyFile: loaded.tlsKey,
    renewBeforeMs: a.renew_before,
  };
}

export type ObtainResult = { names: string[]; notAfter: string; issuer: string; certFile: string; keyFile: string };

/** The account key, made (ECDSA P-256, mode 0600) on first use. */
async function accountKey(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new HearthError('ACME_ACCOUNT_KEY', `cannot read the ACME account key ${file}: ${(err as Error).message}`, { cause: err });
  }
  const key = await acme.crypto.createPrivateEcdsaKey('P-256');
  await mkdir(dirname(file), { recursive: true, mode: 0o750 });
  await writeFileAtomic(file, key, 0o600);
  return key;
}

/**
 * Run one order: account (made or found), HTTP-01 for every name through `challenges`, then
 * a new key and the issued chain written over certFile/keyFile. Throws ACME_FAILED saying why.
 */
export async function obtainCertificate(settings: AcmeSettings, challenges: AcmeChallenges, log: Logger): Promise<ObtainResult> {
  // acme-client talks through its own axios instance; only that instance trusts the extra CA.
  if (settings.caFile) {
    const ca = await readFile(settings.caFile, 'utf8').catch((err: Error) => {
      throw new HearthError('ACME_CA_FILE', `cannot read acme.ca_file ${settings.caFile}: ${err.message}`, { cause: err });
    });
    acme.axios.defaults.httpsAgent = new https.Agent({ ca: [...tls.rootCertificates, ca] });
  } else {
    acme.axios.defaults.httpsAgent = undefined;
  }
  const client = new acme.Client({ directoryUrl: settings.directoryUrl, accountKey: await accountKey(settings.accountKeyFile) });
  const [key, csr] = await acme.crypto.createCsr({ commonName: settings.domains[0], altNames: settings.domains }, await acme.crypto.createPrivateRsaKey(2048));
  log.info({ domains: settings.domains, directory: settings.directoryUrl }, 'ACME: ordering a certificate');
  let cert: string;
  try {
    cert = await client.auto({
      csr,
      email: settings.email,
      termsOfServiceAgreed: true,
      challengePriority: ['http-01'],
      // The CA's own check is what counts; a self-check from here often fails behind NAT.
      skipChallengeVerification: true,
      challengeCreateFn: async (_authz, challenge, keyAuthorization) => {
        if (challenge.type !== 'http-01') throw new Error(`unsupported challenge ${challenge.type}`);
        challenges.set(challenge.token, keyAuthorization);
      },
      challengeRemoveFn: async (_authz, challenge) => {
        challenges.delete(challenge.token);
      },
    });
  } catch (err) {
    const detail = (err as Error).message;
    throw new HearthError(
      'ACME_FAILED',
      `the CA did not issue a certificate for ${settings.domains.join(', ')}: ${detail} (the CA must reach http://<each name>/.well-known/acme-challenge/ on port 80, i.e. the web listener, over plain HTTP)`,
      { cause: err },
    );
  }
  const x509 = new X509Certificate(cert);
  await mkdir(dirname(settings.keyFile), { recursive: true, mode: 0o755 });
  await mkdir(dirname(settings.certFile), { recursive: true, mode: 0o755 });
  // Key first: the reloader waits until the pair matches again (it never serves half a pair).
  await writeFileAtomic(settings.keyFile, key, 0o600);
  await writeFileAtomic(settings.certFile, cert, 0o644);
  const result = { names: certificateNames(x509), notAfter: new Date(x509.validTo).toISOString(), issuer: x509.issuer.replace(/\n/g, ', '), certFile: settings.certFile, keyFile: settings.keyFile };
  log.info(result, 'ACME: certificate issued and installed');
  return result;
}

/** Why the current certificate needs renewing, or undefined when it is fine. */
export async function renewalReason(settings: AcmeSettings, now = Date.now()): Promise<string | undefined> {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(await readFile(settings.certFile));
  } catch {
    return 'no readable certificate';
  }
  const left = new Date(x509.validTo).getTime() - now;
  if (left < settings.renewBeforeMs) return `${Math.max(0, Math.floor(left / DAY))} days left`;
  const names = certificateNames(x509);
  const missing = settings.domains.filter((d) => !names.includes(d));
  if (missing.length) return `does not cover ${missing.join(', ')}`;
  if (x509.issuer === x509.subject) return 'self-signed';
  return undefined;
}

/**
 * The renewal timer on the delivery scheduler: a check soon after start, then every
 * `checkEveryMs` (12 h); after a failure the next try comes after 1 h, doubling up to the
 * check interval. Returns a stopper.
 */
export function scheduleRenewal(opts: {
  scheduler: Scheduler;
  settings: () => AcmeSettings;
  obtain: () => Promise<unknown>;
  log: Logger;
  checkEveryMs?: number;
  firstCheckMs?: number;
  firstBackoffMs?: number;
  now?: () => number;
}): () => void {
  const now = opts.now ?? Date.now;
  const every = opts.checkEveryMs ?? 12 * HOUR;
  const firstBackoff = opts.firstBackoffMs ?? HOUR;
  let failures = 0;
  let stopped = false;
  const id = 'acme-renew';
  const plan = (inMs: number) => {
    if (stopped) return;
    opts.scheduler.schedule({ id, dueAt: now() + inMs, deadlineMs: 10 * 60_000, run: check });
  };
  async function check(): Promise<void> {
    try {
      const why = await renewalReason(opts.settings(), now());
      if (why) {
        opts.log.info({ why }, 'ACME: renewing the certificate');
        await opts.obtain();
      }
      failures = 0;
      plan(every);
    } catch (err) {
      failures++;
      const wait = Math.min(every, firstBackoff * 2 ** (failures - 1));
      opts.log.error({ err: (err as Error).message, failures, retryInMinutes: Math.round(wait / 60_000) }, 'ACME: renewal failed; the current certificate stays');
      plan(wait);
    }
  }
  plan(opts.firstCheckMs ?? 60_000);
  return () => {
    stopped = true;
    opts.scheduler.cancel(id);
  };
}
