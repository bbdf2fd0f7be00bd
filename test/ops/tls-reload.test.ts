// Certificates are re-read on SIGHUP and when the files change, for every listener (SMTP
// STARTTLS, submissions, IMAP/POP3 implicit and STARTTLS, HTTPS), without dropping the
// connections already open; a broken pair is refused and the old one stays.
import { X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { controlRequest } from '../../src/core/control.ts';
import { ALL_LISTENERS, makeSetup, spawnHearth, startTestHearth } from '../helpers/hearth.ts';
import type { ChildHearth, TestSetup } from '../helpers/hearth.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { until } from '../config/helpers.ts';
import { fingerprintAt, installPair, makePair, readUntil, tlsConnect, imapStarttlsFingerprintAt } from './helpers.ts';

const TOML = `${ALL_LISTENERS}
[listeners.submissions]
listen = "127.0.0.1:0"
tls = "implicit"

[listeners.http]
listen = "127.0.0.1:0"
tls = "implicit"
`;

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function smtpStarttlsFingerprint(port: number): Promise<string> {
  const c = await RawSmtp.connect(port);
  await c.reply();
  await c.command('EHLO client.test');
  expect(await c.command('STARTTLS')).toMatch(/^220/);
  await c.starttls();
  const fp = (c.socket as tls.TLSSocket).getPeerCertificate().fingerprint256;
  c.close();
  return fp;
}

async function imapStarttlsFingerprint(port: number): Promise<string> {
  const socket = (await import('node:net')).connect(port, '127.0.0.1');
  await readUntil(socket, /^\* OK/m);
  socket.write('a1 STARTTLS\r\n');
  await readUntil(socket, /^a1 OK/m);
  socket.removeAllListeners('data');
  const secure = tls.connect({ socket, rejectUnauthorized: false });
  await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
  const fp = secure.getPeerCertificate().fingerprint256;
  secure.destroy();
  return fp;
}

async function httpsFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/healthz', rejectUnauthorized: false, agent: false }, (res) => {
      const fp = (res.socket as tls.TLSSocket).getPeerCertificate().fingerprint256;
      res.resume();
      res.on('end', () => resolve(fp));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('TLS reload', () => {
  it('SIGHUP: new connections on every listener see the new certificate, an open one stays up', async () => {
    const setup: TestSetup = await makeSetup({ toml: TOML });
    cleanups.push(() => setup.cleanup());
    const child: ChildHearth = await spawnHearth(setup.configDir);
    cleanups.push(async () => {
      child.child.kill('SIGTERM');
      await child.exited;
    });
    const status = (await controlRequest(join(setup.dataDir, 'hearth.sock'), 'status')) as { endpoints: Array<{ service: string; port: number }> };
    const port = (s: string) => status.endpoints.find((e) => e.service === s)!.port;
    const before = await fingerprintAt(port('imaps'));

    // An IMAP session over implicit TLS, open across the reload.
    const open = await tlsConnect(port('imaps'));
    await readUntil(open.socket, /^\* OK/m);

    const next = await makePair('mx.test.example');
    // Write the files so that only SIGHUP is awaited: the log line names the reason.
    await installPair(setup.configDir, next);
    child.child.kill('SIGHUP');
    await until(() => child.logs.some((l) => l.includes('TLS certificate loaded') && l.includes('"why":"SIGHUP"')), 10_000);

    expect(next.fingerprint).not.toBe(before);
    expect(await fingerprintAt(port('imaps'))).toBe(next.fingerprint);
    expect(await fingerprintAt(port('pop3s'))).toBe(next.fingerprint);
    expect(await fingerprintAt(port('submissions'))).toBe(next.fingerprint);
    expect(await smtpStarttlsFingerprint(child.smtpPort)).toBe(next.fingerprint);
    expect(await imapStarttlsFingerprint(port('imap'))).toBe(next.fingerprint);
    expect(await httpsFingerprint(port('http'))).toBe(next.fingerprint);

    // The connection opened before still works, with the certificate it started with.
    expect(open.fingerprint).toBe(before);
    open.socket.write('a1 NOOP\r\n');
    expect(await readUntil(open.socket, /^a1 /m)).toMatch(/^a1 OK/m);
    open.socket.destroy();
    expect(child.child.exitCode).toBeNull();
  }, 60_000);

  it('file changes: reloads by itself, refuses a half-replaced pair, serves SNI names from tls/sni/', async () => {
    const setup = await makeSetup({ toml: ALL_LISTENERS });
    cleanups.push(() => setup.cleanup());
    const hearth = await startTestHearth(setup);
    cleanups.push(() => hearth.close());
    const imaps = hearth.port('imaps');
    const before = await fingerprintAt(imaps);

    // A certificate without its key: the old pair stays.
    const next = await makePair('mx.test.example');
    await writeFile(join(setup.configDir, 'tls', 'cert.pem'), next.cert);
    // Ask for a reload at once rather than waiting for the watcher, to read its verdict.
    const verdict = (await controlRequest(hearth.controlPath, 'tls.reload')) as { ok: boolean; error?: string };
    expect(verdict.ok).toBe(false);
    expect(verdict.error).toMatch(/does not belong to the certificate/);
    expect(await fingerprintAt(imaps)).toBe(before);

    // The key arrives: the watcher reloads without being asked.
    await writeFile(join(setup.configDir, 'tls', 'key.pem'), next.key);
    await until(async () => (await fingerprintAt(imaps)) === next.fingerprint, 10_000);

    // SNI: a second certificate for another name, picked by the name the client asks for.
    const other = await makePair('mail.other.test');
    await installPair(setup.configDir, other, join('sni', 'other'));
    await until(async () => (await fingerprintAt(imaps, 'mail.other.test')) === other.fingerprint, 10_000);
    expect(await fingerprintAt(imaps, 'mx.test.example')).toBe(next.fingerprint);
    expect(await fingerprintAt(imaps)).toBe(next.fingerprint);
    // STARTTLS on plain IMAP picks by name too.
    expect(await imapStarttlsFingerprintAt(hearth.port('imap'), 'mail.other.test')).toBe(other.fingerprint);
    expect(await imapStarttlsFingerprintAt(hearth.port('imap'), 'mx.test.example')).toBe(next.fingerprint);
    expect(new X509Certificate(other.cert).checkHost('mail.other.test')).toBe('mail.other.test');
  }, 60_000);
});
