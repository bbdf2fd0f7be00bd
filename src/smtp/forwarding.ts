// Forwarding of inbound mail to addresses elsewhere (aliases with remote targets), and the
// protection around it. Inbound SMTP (inbound.ts) calls in three places:
//
//   1. at RCPT, `reverse()` checks a bounce to one of our SRS addresses (srs.ts);
//   2. before anything is stored, `checkLoop()` refuses a message that has been here before
//      (our Delivered-To for the same recipient) or has travelled too far (Received: count);
//   3. after the sender checks passed and the local copies are on disk, `forward()` puts one
//      queue entry per forwarding recipient, sender rewritten with SRS, message unchanged but
//      for our trace fields on top, so the original DKIM signature still verifies at the
//      destination; optionally ARC-sealed (RFC 8617). The queue entry is durable before the
//      250, like the local copies.
import { sealMessage } from 'mailauth/lib/arc/index.js';
import type { Logger } from '../core/log.ts';
import { headerEnd } from './auth-checks.ts';
import { isSrsLocalPart } from './srs.ts';
import type { Srs, SrsReversal } from './srs.ts';

/** What forwarding needs from the outbound queue (queue/queue.ts provides it). */
export type ForwardQueue = {
  enqueue(
    envelope: { from: string; recipients: Array<{ address: string }>; needsSmtpUtf8?: boolean; eightBit?: boolean },
    content: AsyncIterable<Uint8Array> | Uint8Array,
  ): Promise<string>;
};

/** A DKIM key that may seal for a domain (the same keys sign our outbound mail). */
export type ArcKey = { domain: string; selector: string; privateKey: string; algorithm: 'rsa-sha256' | 'ed25519-sha256' };

export type ForwarderOptions = {
  log: Logger;
  /** The SRS keys; a promise, so the secret file is read (or made) on first use only. */
  srs: () => Promise<Srs>;
  queue: ForwardQueue;
  /** More Received: fields than this: a loop (or a path no honest message takes). */
  maxReceived: number;
  /** When set, forwarded mail is ARC-sealed with the key of the forwarding alias's domain. */
  arcKey?: (domain: string) => ArcKey | undefined;
};

/** One original recipient whose mail is forwarded: its address (an alias here) and where to. */
export type ForwardGroup = { rcpt: string; targets: string[] };

export type ForwardJob = {
  cid: string;
  /** The envelope sender as received ('' for the null sender). */
  sender: string;
  groups: ForwardGroup[];
  /** Our trace fields for this hop (Received:, Authentication-Results:), CRLF-terminated. */
  trace: string;
  /** The message's header as received (minus Authentication-Results claiming our name), with its blank line. */
  head: Buffer;
  /** A fresh reader of everything after `head`. */
  body: () => AsyncIterable<Uint8Array>;
  smtpUtf8: boolean;
  eightBit: boolean;
  /** The inbound ARC verdict and our Authentication-Results value, for the seal. */
  arc?: { cv: string; authResults: string };
};

export class Forwarder {
  readonly #opts: ForwarderOptions;
  readonly #log: Logger;

  constructor(opts: ForwarderOptions) {
    this.#opts = opts;
    this.#log = opts.log;
  }

  /** A bounce address of ours back to the original sender, or why not. */
  async reverse(address: string): Promise<SrsReversal> {
    return (await this.#opts.srs()).reverse(address);
  }

  /** For a DSN: the original sender behind one of our valid SRS addresses, else `address` itself. */
  async original(address: string): Promise<string> {
    const at = address.lastIndexOf('@');
    if (at <= 0 || !isSrsLocalPart(address.slice(0, at))) return address;
    const r = await this.reverse(address);
    if (!r.ok) this.#log.warn({ address, why: r.reason }, 'DSN to an SRS address that does not verify; left as addressed');
    return r.ok ? r.address : address;
  }

  /**
   * The reply text when this message loops, else undefined. `addresses`: every address the
   * message is about to be delivered to here (RCPT addresses and the mailboxes they reach).
   */
  checkLoop(head: Buffer, addresses: string[]): string | undefined {
    let received = 0;
    const mine = new Set(addresses.map((a) => a.toLowerCase()));
    for (const { name, value } of headerFields(head)) {
      if (name === 'received') received++;
      else if (name === 'delivered-to' && mine.has(bareAddress(value).toLowerCase())) {
        return `5.4.6 Routing loop detected: this message was delivered to <${bareAddress(value)}> here before`;
      }
    }
    // RFC 5321 6.3: a count of Received: fields is the usual loop detector.
    if (received > this.#opts.maxReceived) return `5.4.6 Routing loop detected: ${received} Received: fields (more than ${this.#opts.maxReceived})`;
    return undefined;
  }

  /** Queue the forwarded copies; resolves once every queue entry is durable. */
  async forward(job: ForwardJob): Promise<string[]> {
    const srs = await this.#opts.srs();
    const ids: string[] = [];
    const seen = new Set<string>();
    for (const group of job.groups) {
      const targets = group.targets.filter((t) => {
        const key = t.toLowerCase();
        if (seen.has(key)) return false;
        seen.add(key);
        return true;
      });
      if (targets.length === 0) continue;
      const ourDomain = group.rcpt.slice(group.rcpt.lastIndexOf('@') + 1).toLowerCase();
      // Return-Path is for final delivery only (RFC 5321 4.4); Delivered-To marks that this
      // alias has handled the message, so it cannot come round again (checkLoop).
      const top = Buffer.from(`Delivered-To: ${group.rcpt}\r\n${job.trace}`, 'utf8');
      let content: AsyncIterable<Uint8Array> | Uint8Array = concatStreams([top, job.head], job.body());
      const key = job.arc ? this.#opts.arcKey?.(ourDomain) : undefined;
      // RFC 8617 5.1.2: a broken chain is not sealed over (it would only claim the break).
      const sealed = Boolean(key && job.arc && (job.arc.cv === 'none' || job.arc.cv === 'pass'));
      if (sealed) content = await this.#seal(await collect(content), key!, job.arc!);
      const from = srs.forward(job.sender, ourDomain);
      const id = await this.#opts.queue.enqueue(
        { from, recipients: targets.map((address) => ({ address })), needsSmtpUtf8: job.smtpUtf8 || targets.some((t) => /[^\x00-\x7f]/.test(t)), eightBit: job.eightBit },
        content,
      );
      this.#log.info({ cid: job.cid, queueId: id, rcpt: group.rcpt, to: targets, from, sealed }, 'forwarded');
      ids.push(id);
    }
    return ids;
  }

  async #seal(message: Buffer, key: ArcKey, arc: { cv: string; authResults: string }): Promise<Buffer> {
    try {
      return await arcSeal(message, key, arc);
    } catch (err) {
      // An unsealed forward still carries the original DKIM signature: better than none.
      this.#log.error({ err: (err as Error).message, domain: key.domain }, 'ARC sealing failed; forwarding unsealed');
      return message;
    }
  }
}

/** The message with our ARC set (RFC 8617) on top: seal, message signature, our results. */
export async function arcSeal(message: Buffer, key: ArcKey, arc: { cv: string; authResults: string }): Promise<Buffer> {
  const seal = await sealMessage(message, {
    signingDomain: key.domain,
    selector: key.selector,
    privateKey: key.privateKey,
    algorithm: key.algorithm,
    authResults: arc.authResults,
    cv: arc.cv,
    // One signing time for the seal and the message signature (see DkimSigner.sign).
    signTime: new Date(),
  } as Parameters<typeof sealMessage>[1]);
  return Buffer.concat([seal, message]);
}

/** Header fields, unfolded: name lower-cased, value without the leading space. */
export function headerFields(head: Buffer | string): Array<{ name: string; value: string }> {
  const text = typeof head === 'string' ? head : head.toString('latin1');
  const fields: Array<{ name: string; value: string }> = [];
  for (const line of text.split(/\r?\n/)) {
    if (line === '') break;
    if ((line[0] === ' ' || line[0] === '\t') && fields.length) {
      fields[fields.length - 1].value += ` ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    fields.push({ name: line.slice(0, colon).trim().toLowerCase(), value: line.slice(colon + 1).trim() });
  }
  return fields;
}

/** `<a@b>` or `Name <a@b>` or `a@b` -> `a@b`. */
export function bareAddress(value: string): string {
  const m = /<([^<>]*)>/.exec(value);
  return (m ? m[1] : value).trim();
}

/**
 * Read a message's header (up to `limit` bytes) ahead of everything else, so it can be judged
 * before anything is stored. `all` yields the whole message again, unchanged; `release` gives
 * the source up instead.
 */
export async function peekHeader(source: AsyncIterable<Uint8Array>, limit = 256 * 1024): Promise<{ head: Buffer; all: AsyncGenerator<Uint8Array>; release(): Promise<void> }> {
  const it = source[Symbol.asyncIterator]();
  let gathered: Buffer = Buffer.alloc(0);
  let done = false;
  let end = -1;
  while (end < 0 && gathered.length <= limit) {
    const next = await it.next();
    if (next.done) {
      done = true;
      break;
    }
    const chunk = Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
    gathered = gathered.length === 0 ? chunk : Buffer.concat([gathered, chunk]);
    end = headerEnd(gathered);
  }
  const head = end >= 0 ? gathered.subarray(0, end) : gathered;
  async function* all(): AsyncGenerator<Uint8Array> {
    if (gathered.length) yield gathered;
    if (done) return;
    for (;;) {
      const next = await it.next();
      if (next.done) return;
      yield next.value;
    }
  }
  // release(): when the message is refused after the peek, let go of the source (so an SMTP
  // server's stream can be drained to the final dot and answered).
  return { head, all: all(), release: async () => void (await it.return?.()) };
}

async function* concatStreams(first: Buffer[], rest: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  for (const b of first) if (b.length) yield b;
  yield* rest;
}

async function collect(content: AsyncIterable<Uint8Array> | Uint8Array): Promise<Buffer> {
  if (content instanceof Uint8Array) return Buffer.from(content);
  const parts: Buffer[] = [];
  for await (const c of content) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}
