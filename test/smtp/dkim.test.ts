// DKIM: keys made by `generateDkimKey` sign with mailauth, and the signature verifies against
// the TXT record we tell the user to publish.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { silentLogger } from '../../src/core/log.ts';
import { DkimSigner, generateDkimKey, loadDkimKeys } from '../../src/smtp/dkim.ts';
import { arcSeal } from '../../src/smtp/forwarding.ts';
import { authenticate } from 'mailauth';

const MESSAGE = Buffer.from('From: Me <me@example.org>\r\nTo: you@remote.example\r\nSubject: signed\r\nDate: Mon, 2 Feb 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nHello,\r\nthis is signed.\r\n');

describe('DKIM', () => {
  let dir: string;
  const records = new Map<string, string>();
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-dkim-'));
    for (const [selector, alg] of [['rsa1', 'rsa'], ['ed1', 'ed25519']] as const) {
      const made = await generateDkimKey(dir, 'example.org', selector, alg);
      records.set(made.name, made.record);
      expect((await stat(made.path)).mode & 0o777).toBe(0o600);
    }
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it('signs with every key of the domain (rsa-sha256 and ed25519-sha256), and both verify', async () => {
    const signer = new DkimSigner(await loadDkimKeys(dir, silentLogger()), silentLogger());
    const signature = await signer.sign(MESSAGE, 'example.org');
    expect(signature.match(/^DKIM-Signature:/gm)).toHaveLength(2);
    expect(signature).toContain('a=rsa-sha256');
    expect(signature).toContain('a=ed25519-sha256');
    const resolver = async (name: string, type: string) => {
      const txt = records.get(name);
      if (type !== 'TXT' || !txt) throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
      return [[txt]];
    };
    const result = await dkimVerify(Buffer.concat([Buffer.from(signature), MESSAGE]), { resolver } as never);
    const statuses = result.results.map((r: { status: { result: string } }) => r.status.result);
    expect(statuses).toEqual(['pass', 'pass']);
  });

  it('signs nothing for a domain without keys, and refuses to overwrite a key', async () => {
    const signer = new DkimSigner(await loadDkimKeys(dir, silentLogger()), silentLogger());
    expect(await signer.sign(MESSAGE, 'other.example')).toBe('');
    await expect(generateDkimKey(dir, 'example.org', 'rsa1', 'rsa')).rejects.toThrow(/exists already/);
    await expect(generateDkimKey(dir, 'example.org', 'bad selector', 'rsa')).rejects.toThrow(/not a valid selector/);
  });

  it('signs with one t= even when the clock passes a half second while it signs', async () => {
    // Without a signing time, mailauth stamps t= from Date.now() when it computes the signature
    // and again when it writes the header: rounded, the two could differ (about one message in
    // 500, more under load), and the signature then failed everywhere.
    const signer = new DkimSigner(await loadDkimKeys(dir, silentLogger()), silentLogger());
    let now = 1_800_000_000_400;
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => (now += 600));
    let signature: string;
    try {
      signature = await signer.sign(MESSAGE, 'example.org');
    } finally {
      clock.mockRestore();
    }
    const resolver = async (name: string) => [[records.get(name)!]];
    const result = await dkimVerify(Buffer.concat([Buffer.from(signature), MESSAGE]), { resolver } as never);
    expect(result.results.map((r: { status: { result: string } }) => r.status.result)).toEqual(['pass', 'pass']);
  });

  it('seals a forward (ARC) with one t= even when the clock passes a half second while it seals', async () => {
    const [key] = (await loadDkimKeys(dir, silentLogger())).filter((k) => k.algorithm === 'rsa-sha256');
    let now = 1_800_000_000_400;
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => (now += 600));
    let sealed: Buffer;
    try {
      sealed = await arcSeal(MESSAGE, key, { cv: 'none', authResults: 'mx.example.org; spf=pass smtp.mailfrom=me@example.org' });
    } finally {
      clock.mockRestore();
    }
    const resolver = async (name: string, type: string) => {
      const txt = records.get(name);
      if (type !== 'TXT' || !txt) throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
      return [[txt]];
    };
    const result = await authenticate(sealed, { ip: '127.0.0.1', helo: 'mx.example.org', sender: 'me@example.org', mta: 'mx.remote.example', resolver: resolver as never });
    expect(result.arc && result.arc.status.result).toBe('pass');
  });

  it('a changed body fails verification (the signature really covers it)', async () => {
    const signer = new DkimSigner(await loadDkimKeys(dir, silentLogger()), silentLogger());
    const signature = await signer.sign(MESSAGE, 'example.org');
    const tampered = Buffer.from(MESSAGE.toString().replace('this is signed', 'this is forged'));
    const resolver = async (name: string) => [[records.get(name)!]];
    const result = await dkimVerify(Buffer.concat([Buffer.from(signature), tampered]), { resolver } as never);
    expect(result.results.every((r: { status: { result: string } }) => r.status.result !== 'pass')).toBe(true);
  });
});
