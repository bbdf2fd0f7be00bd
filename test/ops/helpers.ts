// Helpers for the ops tests: certificates, and what a TLS client sees.
import { X509Certificate } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import tls from 'node:tls';
import { generate } from 'selfsigned';
import { generateLocalCertificate } from '../../src/config/defaults.ts';

export type Pair = { cert: string; key: string; fingerprint: string };

export async function makePair(hostname: string): Promise<Pair> {
  const { cert, key } = await generateLocalCertificate(hostname);
  return { cert, key, fingerprint: new X509Certificate(cert).fingerprint256 };
}

/** A certificate valid from `from` to `to` for `names` (expired or mismatched fixtures). */
export async function makePairAt(names: string[], from: Date, to: Date): Promise<Pair> {
  const pems = await generate([{ name: 'commonName', value: names[0] }], {
    keySize: 2048,
    algorithm: 'sha256',
    notBeforeDate: from,
    notAfterDate: to,
    extensions: [{ name: 'subjectAltName', altNames: names.map((value) => ({ type: 2 as const, value })) }],
  });
  return { cert: pems.cert, key: pems.private, fingerprint: new X509Certificate(pems.cert).fingerprint256 };
}

/** Replace the served pair the way a renewal does (key first, then certificate). */
export async function installPair(configDir: string, pair: Pair, sub = ''): Promise<void> {
  const dir = join(configDir, 'tls', sub);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'key.pem'), pair.key);
  await writeFile(join(dir, 'cert.pem'), pair.cert);
}

/** Open a TLS connection and report the certificate the server presented. */
export async function tlsConnect(port: number, servername?: string): Promise<{ socket: tls.TLSSocket; fingerprint: string }> {
  const socket = tls.connect({ port, host: '127.0.0.1', servername, rejectUnauthorized: false });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('error', reject);
  });
  return { socket, fingerprint: socket.getPeerCertificate().fingerprint256 };
}

/**
 * The certificate a new implicit-TLS connection gets. Waits for the greeting before closing:
 * a client gone straight after the handshake leaves the server a half-open socket to time out.
 */
export async function fingerprintAt(port: number, servername?: string): Promise<string> {
  const { socket, fingerprint } = await tlsConnect(port, servername);
  await readUntil(socket, /\n/);
  socket.destroy();
  return fingerprint;
}

/** Read from a socket until `pattern` shows up in what arrived. */
export async function readUntil(socket: NodeJS.ReadableStream, pattern: RegExp, ms = 10_000): Promise<string> {
  let text = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${pattern} in ${JSON.stringify(text)}`)), ms);
    const onData = (d: Buffer | string) => {
      text += d.toString();
      if (pattern.test(text)) {
        clearTimeout(timer);
        socket.off('data', onData);
        resolve(text);
      }
    };
    socket.on('data', onData);
  });
}

/** The certificate an IMAP STARTTLS upgrade gets, asking for `servername` (SNI). */
export async function imapStarttlsFingerprintAt(port: number, servername: string): Promise<string> {
  const net = await import('node:net');
  const tls = await import('node:tls');
  const plain = net.connect(port, '127.0.0.1');
  await readUntil(plain, /^\* OK/m);
  plain.write('s1 STARTTLS\r\n');
  await readUntil(plain, /^s1 OK/m);
  const secure = tls.connect({ socket: plain, servername, rejectUnauthorized: false });
  await new Promise<void>((resolve, reject) => {
    secure.once('secureConnect', () => resolve());
    secure.once('error', reject);
  });
  const fingerprint = secure.getPeerCertificate().fingerprint256;
  secure.destroy();
  return fingerprint;
}
