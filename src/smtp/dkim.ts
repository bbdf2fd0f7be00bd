// DKIM signing of outbound mail (RFC 6376, relaxed/relaxed; RFC 8463 ed25519-sha256) with
// mailauth. Keys live in the config folder as dkim/<domain>/<selector>.pem; every key of the
// From: domain signs (an RSA and an Ed25519 key side by side is the recommended pair).
// `generateDkimKey` makes a key and the TXT record to publish.
import { generateKeyPairSync, createPublicKey } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import { HearthError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';

export type DkimKey = { domain: string; selector: string; privateKey: string; algorithm: 'rsa-sha256' | 'ed25519-sha256' };

function algorithmOf(pem: string): DkimKey['algorithm'] {
  const type = createPublicKey(pem).asymmetricKeyType;
  if (type === 'ed25519') return 'ed25519-sha256';
  if (type === 'rsa') return 'rsa-sha256';
  throw new HearthError('DKIM_BAD_KEY', `unsupported DKIM key type ${type}: use RSA (2048 bits) or Ed25519`);
}

/** Every key under <configDir>/dkim/<domain>/<selector>.pem. A bad key is logged and skipped. */
export async function loadDkimKeys(configDir: string, log: Logger): Promise<DkimKey[]> {
  const root = join(configDir, 'dkim');
  let domains: string[];
  try {
    domains = await readdir(root);
  } catch {
    return [];
  }
  const keys: DkimKey[] = [];
  for (const domain of domains) {
    let files: string[];
    try {
      files = await readdir(join(root, domain));
    } catch {
      continue;
    }
    for (const file of files.filter((f) => f.endsWith('.pem'))) {
      const path = join(root, domain, file);
      try {
        const privateKey = await readFile(path, 'utf8');
        keys.push({ domain: domain.toLowerCase(), selector: file.slice(0, -4), privateKey, algorithm: algorithmOf(privateKey) });
      } catch (err) {
        log.error({ path, err: (err as Error).message }, 'cannot use this DKIM key; mail from its domain goes out unsigned');
      }
    }
  }
  return keys;
}

export class DkimSigner {
  readonly #keys: DkimKey[];
  readonly #log: Logger;

  constructor(keys: DkimKey[], log: Logger) {
    this.#keys = keys;
    this.#log = log;
  }

  hasKeysFor(domain: string): boolean {
    return this.#keys.some((k) => k.domain === domain.toLowerCase());
  }

  /** DKIM-Signature header lines (CRLF-terminated) for the message, or '' when no key fits. */
  async sign(message: Buffer, domain: string): Promise<string> {
    const keys = this.#keys.filter((k) => k.domain === domain.toLowerCase());
    if (keys.length === 0) return '';
    // signatureData is the form that signs with every key; the typed top-level shortcut
    // silently yields no signature (DESIGN.md), hence the cast past mailauth's typings.
    const options = {
      canonicalization: 'relaxed/relaxed',
      // One signing time: without it mailauth reads the clock for t= when it signs and again
      // when it writes the header, and a half second passing in between broke the signature.
      signTime: new Date(),
      signatureData: keys.map((k) => ({ signingDomain: k.domain, selector: k.selector, privateKey: k.privateKey, algorithm: k.algorithm })),
    } as unknown as Parameters<typeof dkimSign>[1];
    const result = await dkimSign(message, options);
    if (result.errors?.length) this.#log.error({ domain, errors: result.errors.map((e: unknown) => String(e)) }, 'DKIM signing failed for some keys');
    const signatures = result.signatures ?? '';
    return signatures.endsWith('\r\n') || signatures === '' ? signatures : `${signatures}\r\n`;
  }
}

/** The TXT record value for a key: v=DKIM1; k=...; p=base64 (RFC 6376 3.6.1, RFC 8463). */
export function dkimTxtRecord(privateKeyPem: string): string {
  const pub = createPublicKey(privateKeyPem);
  if (pub.asymmetricKeyType === 'ed25519') {
    // RFC 8463: p= is the raw 32-byte public key, not the SPKI structure.
    const raw = pub.export({ format: 'der', type: 'spki' }).subarray(-32);
    return `v=DKIM1; k=ed25519; p=${raw.toString('base64')}`;
  }
  return `v=DKIM1; k=rsa; p=${pub.export({ format: 'der', type: 'spki' }).toString('base64')}`;
}

/** Make a key in <configDir>/dkim/<domain>/<selector>.pem (0600); refuses to overwrite. */
export async function generateDkimKey(configDir: string, domain: string, selector: string, algorithm: 'rsa' | 'ed25519'): Promise<{ path: string; record: string; name: string }> {
  if (!/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i.test(selector)) throw new HearthError('DKIM_BAD_SELECTOR', `"${selector}" is not a valid selector: letters, digits and hyphens`);
  if (!/^(?=.{1,253}$)[a-z0-9-]+(\.[a-z0-9-]+)*$/i.test(domain)) throw new HearthError('DKIM_BAD_DOMAIN', `"${domain}" is not a domain name`);
  const dir = join(configDir, 'dkim', domain.toLowerCase());
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `${selector}.pem`);
  const pem =
    algorithm === 'ed25519'
      ? generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString()
      : generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  try {
    await writeFile(path, pem, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new HearthError('DKIM_EXISTS', `${path} exists already; pick another --selector (keys are rotated by adding a new selector)`);
    throw err;
  }
  return { path, record: dkimTxtRecord(pem), name: `${selector}._domainkey.${domain.toLowerCase()}` };
}
