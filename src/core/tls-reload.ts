// TLS reload is in charge of the certificates the listeners serve: reading the PEM files,
// checking that key and certificate belong together before anything is swapped, handing the
// new pair to every listener (each swaps its SecureContext, so only new handshakes see it and
// open connections stay as they are), and noticing when the files change (certbot, acme.sh and
// editors replace them by rename, so the folders are watched rather than the files).
//
// SNI: besides the default pair, <cert folder>/sni/<any name>/{cert,key}.pem pairs are read;
// each serves the DNS names in its certificate's subjectAltName. A client that names none of
// them (or sends no SNI) gets the default certificate.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import tls from 'node:tls';
import type { SecureContext, SecureContextOptions } from 'node:tls';
import { HearthError } from './errors.ts';
import type { Logger } from './log.ts';

export type CertPair = { key: Buffer; cert: Buffer };
export type SniPair = CertPair & { names: string[] };
export type TlsMaterial = CertPair & {
  sni: SniPair[];
  /** Of the default certificate. */
  notAfter: Date;
  subject: string;
  names: string[];
};
/** A listener that can take a new certificate without restarting. */
export type TlsTarget = { service: string; apply(material: TlsMaterial): void };

/** Options every TLS context of hearth shares: RFC 8996 retired TLS 1.0 and 1.1. */
export function contextOptions(pair: CertPair): SecureContextOptions {
  return { key: pair.key, cert: pair.cert, minVersion: 'TLSv1.2' };
}

/** DNS names a certificate covers (subjectAltName, else the CN). */
export function certificateNames(cert: X509Certificate): string[] {
  const san = cert.subjectAltName;
  const names = san
    ? san.split(/,\s*/).filter((s) => s.startsWith('DNS:')).map((s) => s.slice(4).toLowerCase())
    : [];
  if (names.length === 0) {
    const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1];
    if (cn) names.push(cn.toLowerCase());
  }
  return names;
}

function nameMatches(pattern: string, host: string): boolean {
  if (pattern === host) return true;
  // RFC 6125 6.4.3: a wildcard stands for exactly one left-most label.
  if (pattern.startsWith('*.')) {
    const dot = host.indexOf('.');
    return dot > 0 && host.slice(dot + 1) === pattern.slice(2);
  }
  return false;
}

/** Parse and cross-check one pair; throws TLS_BAD_CERT with what is wrong. */
export function checkPair(pair: CertPair, where: string): X509Certificate {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pair.cert);
  } catch (err) {
    throw new HearthError('TLS_BAD_CERT', `${where}: the certificate is not a PEM certificate (${(err as Error).message})`, { cause: err });
  }
  let matches: boolean;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(pair.key));
  } catch (err) {
    throw new HearthError('TLS_BAD_CERT', `${where}: the key is not a PEM private key (${(err as Error).message})`, { cause: err });
  }
  if (!matches) throw new HearthError('TLS_BAD_CERT', `${where}: the private key does not belong to the certificate (a half-replaced pair?)`);
  // Catches what createSecureContext refuses (e.g. a key too weak for OpenSSL's security level).
  tls.createSecureContext(contextOptions(pair));
  return cert;
}

export type TlsReloaderOptions = {
  certFile: string;
  keyFile: string;
  log: Logger;
  /** Wait this long after the last file event before reading (a renewal writes several files). */
  debounceMs?: number;
};

export class TlsReloader {
  readonly certFile: string;
  readonly keyFile: string;
  readonly sniDir: string;
  readonly #log: Logger;
  readonly #targets: TlsTarget[] = [];
  readonly #debounceMs: number;
  #current: TlsMaterial | undefined;
  #contexts = new Map<string, SecureContext>();
  #watchers: FSWatcher[] = [];
  #timer: NodeJS.Timeout | undefined;
  #chain: Promise<unknown> = Promise.resolve();
  #closed = false;
  /** Called after each reload attempt (metrics, status). */
  onReload: ((result: { ok: boolean; error?: string }) => void) | undefined;

  constructor(opts: TlsReloaderOptions) {
    this.certFile = opts.certFile;
    this.keyFile = opts.keyFile;
    this.sniDir = join(dirname(opts.certFile), 'sni');
    this.#log = opts.log;
    this.#debounceMs = opts.debounceMs ?? 250;
  }

  get current(): TlsMaterial | undefined {
    return this.#current;
  }

  /** Read and check the files; throws TLS_UNREADABLE or TLS_BAD_CERT saying what is wrong. */
  async read(): Promise<TlsMaterial> {
    const [key, cert] = await Promise.all([readFile(this.keyFile), readFile(this.certFile)]).catch((err: NodeJS.ErrnoException) => {
      throw new HearthError('TLS_UNREADABLE', `cannot read the TLS certificate or key (${this.certFile}, ${this.keyFile}): ${err.message}`, { cause: err });
    });
    const x509 = checkPair({ key, cert }, this.certFile);
    const sni: SniPair[] = [];
    let entries: string[] = [];
    try {
      entries = (await readdir(this.sniDir)).sort();
    } catch {
      // No sni/ folder: one certificate for everything.
    }
    for (const entry of entries) {
      const dir = join(this.sniDir, entry);
      const pair = await Promise.all([readFile(join(dir, 'key.pem')), readFile(join(dir, 'cert.pem'))]).then(
        ([k, c]) => ({ key: k, cert: c }),
        () => undefined,
      );
      if (!pair) {
        this.#log.warn({ dir }, 'SNI folder without a readable cert.pem and key.pem; skipped');
        continue;
      }
      try {
        sni.push({ ...pair, names: certificateNames(checkPair(pair, dir)) });
      } catch (err) {
        this.#log.error({ dir, err: (err as Error).message }, 'SNI certificate refused; the others are used');
      }
    }
    return { key, cert, sni, notAfter: new Date(x509.validTo), subject: x509.subject, names: certificateNames(x509) };
  }

  /** Read the files and give every listener the new pair. On any problem the old pair stays. */
  reload(why: string): Promise<{ ok: boolean; error?: string; notAfter?: string }> {
    const run = async () => {
      try {
        const material = await this.read();
        this.#install(material);
        this.#log.info({ why, notAfter: material.notAfter.toISOString(), names: material.names, sni: material.sni.map((s) => s.names).flat() }, 'TLS certificate loaded');
        this.onReload?.({ ok: true });
        return { ok: true, notAfter: material.notAfter.toISOString() };
      } catch (err) {
        const error = (err as Error).message;
        this.#log.error({ why, err: error }, this.#current ? `TLS reload failed; still serving the previous certificate: ${error}` : `no usable TLS certificate: ${error}`);
        this.onReload?.({ ok: false, error });
        return { ok: false, error };
      }
    };
    const result = this.#chain.then(run, run);
    this.#chain = result;
    return result;
  }

  /** The first load at start-up: the material, or undefined (TLS off) with the reason logged. */
  async start(): Promise<TlsMaterial | undefined> {
    const r = await this.reload('start');
    return r.ok ? this.#current : undefined;
  }

  /** Register a listener; it gets the current pair at once if there is one. */
  add(target: TlsTarget): void {
    this.#targets.push(target);
    if (this.#current) target.apply(this.#current);
  }

  /** For tls.Server and TLSSocket's SNICallback: the context for a name, or the default one. */
  readonly sniCallback = (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void): void => {
    const host = servername.toLowerCase().replace(/\.$/, '');
    for (const [pattern, ctx] of this.#contexts) {
      if (pattern !== '*' && nameMatches(pattern, host)) return cb(null, ctx);
    }
    cb(null, this.#contexts.get('*'));
  };

  /** sniOptions for smtp-server: name -> TLS options. */
  sniOptions(material: TlsMaterial): Map<string, SecureContextOptions> {
    const map = new Map<string, SecureContextOptions>();
    for (const s of material.sni) for (const name of s.names) if (!map.has(name)) map.set(name, contextOptions(s));
    return map;
  }

  /** Follow the certificate's folder (and sni/): a change reloads after a short quiet spell. */
  watch(): void {
    const kick = () => {
      if (this.#closed) return;
      clearTimeout(this.#timer);
      this.#timer = setTimeout(() => void this.reload('files changed'), this.#debounceMs);
    };
    const interesting = new Set([basename(this.certFile), basename(this.keyFile), 'sni']);
    const dirs = new Set([dirname(this.certFile), dirname(this.keyFile)]);
    for (const dir of dirs) {
      try {
        const w = watch(dir, { persistent: false }, (_event, name) => {
          if (!name || interesting.has(name.toString())) kick();
        });
        w.on('error', (err) => this.#log.warn({ err: err.message, dir }, 'cannot watch the certificate folder; reload with SIGHUP or `hearth tls reload`'));
        this.#watchers.push(w);
      } catch (err) {
        this.#log.warn({ err: (err as Error).message, dir }, 'cannot watch the certificate folder; reload with SIGHUP or `hearth tls reload`');
      }
    }
    try {
      const w = watch(this.sniDir, { persistent: false, recursive: true }, kick);
      w.on('error', () => undefined);
      this.#watchers.push(w);
    } catch {
      // No sni/ folder yet; creating it shows up in the parent watcher.
    }
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    for (const w of this.#watchers.splice(0)) w.close();
  }

  #install(material: TlsMaterial): void {
    const contexts = new Map<string, SecureContext>();
    for (const s of material.sni) {
      const ctx = tls.createSecureContext(contextOptions(s));
      for (const name of s.names) if (!contexts.has(name)) contexts.set(name, ctx);
    }
    contexts.set('*', tls.createSecureContext(contextOptions(material)));
    this.#contexts = contexts;
    this.#current = material;
    for (const t of this.#targets) {
      try {
        t.apply(material);
      } catch (err) {
        this.#log.error({ service: t.service, err }, 'a listener refused the new certificate; it keeps the old one');
      }
    }
  }
}
