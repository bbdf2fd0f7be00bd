// Webmail sessions, kept in this process's memory: a random 256-bit id in an HttpOnly,
// SameSite=Strict cookie (Secure, and the __Host- prefix, under HTTPS), a CSRF token per
// session, an idle and an absolute lifetime. A restart logs everyone out, which for a personal
// server is an acceptable price for never writing a session secret to disk.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export type WebSession = {
  id: string;
  user: string;
  domain: string;
  address: string;
  csrf: string;
  createdAt: number;
  lastSeenAt: number;
};

export type SessionOptions = { idleMs: number; maxMs: number; now?: () => number };

export class SessionStore {
  readonly #byId = new Map<string, WebSession>();
  readonly #idleMs: number;
  readonly #maxMs: number;
  readonly #now: () => number;
  /** Signs capability URLs (cid: images inside the sandboxed iframe, which sends no cookie). */
  readonly #urlKey = randomBytes(32);
  /** Signs phone set-up links: a key of their own, so no part-URL token can pass for one. */
  readonly #setupKey = randomBytes(32);

  constructor(opts: SessionOptions) {
    this.#idleMs = opts.idleMs;
    this.#maxMs = opts.maxMs;
    this.#now = opts.now ?? Date.now;
  }

  create(box: { user: string; domain: string }): WebSession {
    this.#sweep();
    const now = this.#now();
    const s: WebSession = {
      id: randomBytes(32).toString('base64url'),
      user: box.user,
      domain: box.domain,
      address: `${box.user}@${box.domain}`,
      csrf: randomBytes(32).toString('base64url'),
      createdAt: now,
      lastSeenAt: now,
    };
    this.#byId.set(s.id, s);
    return s;
  }

  /** The live session for this id (its idle clock restarted), or undefined. */
  get(id: string | undefined): WebSession | undefined {
    if (!id || id.length > 64) return undefined;
    const s = this.#byId.get(id);
    if (!s) return undefined;
    const now = this.#now();
    if (now - s.lastSeenAt > this.#idleMs || now - s.createdAt > this.#maxMs) {
      this.#byId.delete(id);
      return undefined;
    }
    s.lastSeenAt = now;
    return s;
  }

  delete(id: string): void {
    this.#byId.delete(id);
  }

  /** Sessions that live on until they expire (SSE streams use this to end with them). */
  alive(id: string): boolean {
    const s = this.#byId.get(id);
    if (!s) return false;
    const now = this.#now();
    return now - s.lastSeenAt <= this.#idleMs && now - s.createdAt <= this.#maxMs;
  }

  get size(): number {
    return this.#byId.size;
  }

  /** A token that lets `address` fetch parts of one message until `expiresAt`. */
  signPartUrl(address: string, folder: string, uid: number, expiresAt: number): string {
    const exp = Math.floor(expiresAt / 1000).toString(36);
    const who = Buffer.from(address).toString('base64url');
    return `${exp}.${who}.${this.#mac(address, folder, uid, exp)}`;
  }

  /** The address a part-URL token was made for, if it is genuine, unexpired and for this message. */
  checkPartUrl(token: string, folder: string, uid: number): string | undefined {
    const m = /^([0-9a-z]{1,12})\.([A-Za-z0-9_-]{1,400})\.([A-Za-z0-9_-]{43})$/.exec(token);
    if (!m) return undefined;
    if (parseInt(m[1], 36) * 1000 < this.#now()) return undefined;
    const address = Buffer.from(m[2], 'base64url').toString();
    const want = Buffer.from(this.#mac(address, folder, uid, m[1]));
    const got = Buffer.from(m[3]);
    return want.length === got.length && timingSafeEqual(want, got) ? address : undefined;
  }

  /**
   * A token that lets whoever holds it download `address`'s .mobileconfig until `expiresAt`,
   * without the session cookie (a phone scanning a QR code has none). No password in it.
   */
  signSetupLink(address: string, expiresAt: number): string {
    const exp = Math.floor(expiresAt / 1000).toString(36);
    const who = Buffer.from(address).toString('base64url');
    return `${exp}.${who}.${this.#setupMac(address, exp)}`;
  }

  /** The address a set-up token was made for, if it is genuine and unexpired. */
  checkSetupLink(token: string): string | undefined {
    const m = /^([0-9a-z]{1,12})\.([A-Za-z0-9_-]{1,400})\.([A-Za-z0-9_-]{43})$/.exec(token);
    if (!m) return undefined;
    if (parseInt(m[1], 36) * 1000 < this.#now()) return undefined;
    const address = Buffer.from(m[2], 'base64url').toString();
    // base64 decoding ignores stray bits: only the one spelling of the address is genuine.
    if (Buffer.from(address).toString('base64url') !== m[2]) return undefined;
    const want = Buffer.from(this.#setupMac(address, m[1]));
    const got = Buffer.from(m[3]);
    return want.length === got.length && timingSafeEqual(want, got) ? address : undefined;
  }

  #setupMac(address: string, exp: string): string {
    return createHmac('sha256', this.#setupKey).update(`${address}\0${exp}`).digest('base64url');
  }

  #mac(address: string, folder: string, uid: number, exp: string): string {
    return createHmac('sha256', this.#urlKey).update(`${address}\0${folder}\0${uid}\0${exp}`).digest('base64url');
  }

  #sweep(): void {
    if (this.#byId.size < 1000) return;
    const now = this.#now();
    for (const [id, s] of this.#byId) if (now - s.lastSeenAt > this.#idleMs || now - s.createdAt > this.#maxMs) this.#byId.delete(id);
  }
}

/** Constant-time comparison of two tokens. */
export function sameToken(a: string | undefined, b: string): boolean {
  if (a === undefined) return false;
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
