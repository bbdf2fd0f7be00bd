// rspamd as a second opinion on inbound mail (issue 6, optional, config [rspamd]): the message
// is POSTed to rspamd's /checkv2 with the envelope in request headers (IP, Helo, From, Rcpt,
// User, Queue-Id, MTA-Name), and its action becomes our decision:
//   reject                         -> 550 5.7.1 (when `reject` is on; otherwise Junk)
//   soft reject                    -> 451 4.7.1 (when `soft_reject` is on; otherwise accepted)
//   add header, rewrite subject    -> Junk
//   score >= junk_score (if set)   -> Junk
//   no action, greylist            -> accepted (hearth greylists by itself, [greylist])
// The user's own filter still judges what rspamd accepts: either one saying junk means Junk.
// rspamd is advice, not a gate: when it is slow, down or answers nonsense, the message is
// accepted without its verdict and one warning line says why (fail-open).
import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import type { Logger } from '../core/log.ts';
import { plainIp } from './client-address.ts';

export type RspamdOptions = {
  /** Base URL of rspamd's normal worker (or proxy), e.g. "http://127.0.0.1:11333". */
  url: string;
  /** For the whole exchange: connect, upload, scan, answer. */
  timeoutMs: number;
  /** Sent as the Password header when set (rspamd proxy/controller setups ask for it). */
  password?: string;
  /** Refuse what rspamd says to reject (550 5.7.1); otherwise it goes to Junk. */
  reject: boolean;
  /** Defer what rspamd says to soft-reject (451 4.7.1); otherwise it is accepted. */
  softReject: boolean;
  /** Also Junk anything scoring at least this, whatever the action; absent: the action decides. */
  junkScore?: number;
  log: Logger;
};

export type RspamdEnvelope = {
  ip: string;
  helo: string;
  /** MAIL FROM, '' for the null sender. */
  sender: string;
  rcpts: string[];
  /** The authenticated user, if any. */
  user?: string;
  /** Our session id, so rspamd's log and ours can be matched. */
  queueId: string;
  /** Our hostname. */
  hostname: string;
};

export type RspamdDecision = 'accept' | 'junk' | 'reject' | 'defer';

export type RspamdVerdict = {
  action: string;
  score: number;
  required: number;
  /** Symbol names, highest score first. */
  symbols: string[];
  decision: RspamdDecision;
  /** Reply text (with its enhanced code) for reject and defer. */
  reply?: string;
  /** `X-Spam-Score: ...\r\n` (and `X-Spam: Yes\r\n` when junk), ready to prepend. */
  header: string;
  ms: number;
};

/** Header fields rspamd's verdict speaks for: copies arriving with the message are dropped. */
export const SPAM_FIELDS = ['x-spam', 'x-spam-score', 'x-spam-status', 'x-spamd-result', 'x-rspamd-score'];

/** The most of rspamd's answer we read; a real one is a few KB. */
const MAX_ANSWER_BYTES = 1024 * 1024;

export class RspamdClient {
  readonly #opts: RspamdOptions;
  readonly #endpoint: URL;

  constructor(opts: RspamdOptions) {
    this.#opts = opts;
    this.#endpoint = new URL('checkv2', opts.url.endsWith('/') ? opts.url : `${opts.url}/`);
    if (this.#endpoint.protocol !== 'http:' && this.#endpoint.protocol !== 'https:') throw new TypeError(`rspamd url must be http or https: ${opts.url}`);
  }

  /** rspamd's verdict, or undefined when it could not give one (logged; the message is accepted). */
  async check(message: Buffer | (() => AsyncIterable<Uint8Array>), size: number, env: RspamdEnvelope): Promise<RspamdVerdict | undefined> {
    const started = performance.now();
    let answer: unknown;
    try {
      answer = await this.#post(message, size, env);
    } catch (err) {
      this.#opts.log.warn({ cid: env.queueId, url: this.#endpoint.href, err: (err as Error).message }, 'rspamd gave no verdict; message accepted without it');
      return undefined;
    }
    const a = answer as { action?: unknown; score?: unknown; required_score?: unknown; symbols?: unknown };
    if (typeof a?.action !== 'string' || typeof a.score !== 'number' || !Number.isFinite(a.score)) {
      this.#opts.log.warn({ cid: env.queueId, url: this.#endpoint.href, answer: JSON.stringify(answer).slice(0, 200) }, 'rspamd answered without an action and score; message accepted without its verdict');
      return undefined;
    }
    const required = typeof a.required_score === 'number' ? a.required_score : NaN;
    const symbols = a.symbols && typeof a.symbols === 'object' ? Object.entries(a.symbols as Record<string, { score?: number }>).sort((x, y) => (y[1]?.score ?? 0) - (x[1]?.score ?? 0)).map(([name]) => name) : [];
    return this.decide(a.action, a.score, required, symbols, Math.round(performance.now() - started));
  }

  /** Our decision from rspamd's action and score (see the table at the top). */
  decide(action: string, score: number, required: number, symbols: string[], ms = 0): RspamdVerdict {
    const o = this.#opts;
    let decision: RspamdDecision = 'accept';
    let reply: string | undefined;
    if (action === 'reject') {
      decision = o.reject ? 'reject' : 'junk';
      if (o.reject) reply = `5.7.1 Message refused as spam (score ${score.toFixed(2)})`;
    } else if (action === 'soft reject') {
      if (o.softReject) {
        decision = 'defer';
        reply = '4.7.1 Message deferred by the spam filter; please try again later';
      }
    } else if (action === 'add header' || action === 'rewrite subject') {
      decision = 'junk';
    }
    if (decision === 'accept' && o.junkScore !== undefined && score >= o.junkScore) decision = 'junk';
    const requiredText = Number.isFinite(required) ? ` / ${required.toFixed(2)}` : '';
    const header = `X-Spam-Score: ${score.toFixed(2)}${requiredText} (rspamd: ${action.replace(/[^\x20-\x7e]/g, '?')})\r\n` + (decision === 'junk' ? 'X-Spam: Yes\r\n' : '');
    return { action, score, required, symbols, decision, reply, header, ms };
  }

  #post(message: Buffer | (() => AsyncIterable<Uint8Array>), size: number, env: RspamdEnvelope): Promise<unknown> {
    const headers: Record<string, string | string[]> = {
      'Content-Length': String(size),
      IP: plainIp(env.ip),
      Helo: utf8Header(env.helo || 'unknown'),
      From: utf8Header(env.sender || '<>'),
      'Queue-Id': env.queueId,
      'MTA-Name': env.hostname,
    };
    // One Rcpt header per recipient, as rspamd's protocol has it.
    if (env.rcpts.length) headers.Rcpt = env.rcpts.map(utf8Header);
    if (env.user) headers.User = utf8Header(env.user);
    if (this.#opts.password) headers.Password = this.#opts.password;
    const signal = AbortSignal.timeout(this.#opts.timeoutMs);
    const request = this.#endpoint.protocol === 'https:' ? https.request : http.request;
    return new Promise((resolve, reject) => {
      const req = request(this.#endpoint, { method: 'POST', headers, signal }, (res) => {
        const parts: Buffer[] = [];
        let got = 0;
        res.on('data', (chunk: Buffer) => {
          got += chunk.length;
          if (got > MAX_ANSWER_BYTES) req.destroy(new Error(`answer larger than ${MAX_ANSWER_BYTES} bytes`));
          else parts.push(chunk);
        });
        res.on('error', reject);
        res.on('close', () => {
          if (!res.complete) reject(new Error(signal.aborted ? `no answer within ${this.#opts.timeoutMs} ms` : 'connection closed before the answer was complete'));
        });
        res.on('end', () => {
          const text = Buffer.concat(parts).toString('utf8');
          if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
          try {
            resolve(JSON.parse(text));
          } catch {
            reject(new Error(`answer is not JSON: ${text.slice(0, 200)}`));
          }
        });
      });
      req.on('error', (err) => reject(signal.aborted ? new Error(`no answer within ${this.#opts.timeoutMs} ms`) : err));
      if (Buffer.isBuffer(message)) req.end(message);
      else {
        const source = Readable.from(message()).on('error', (err) => req.destroy(err));
        // pipe() leaves the source open when the request fails; a file being read must be closed.
        req.on('close', () => source.destroy());
        source.pipe(req);
      }
    });
  }
}

/**
 * A header value as its UTF-8 bytes: node:http writes header strings as Latin-1 and refuses
 * characters beyond it, which would leave an SMTPUTF8 envelope unscored (fail-open).
 */
function utf8Header(value: string): string {
  return Buffer.from(value, 'utf8').toString('latin1');
}

/**
 * `head` (a header block ending in its blank line) without the fields named in `names`
 * (lower-case). Returns `head` itself when there is nothing to drop.
 */
export function withoutFields(head: Buffer, names: string[]): Buffer {
  const text = head.toString('latin1');
  const pattern = new RegExp(`(?:^|\\r\\n)(?:${names.map((n) => n.replace(/[-]/g, '\\-')).join('|')})[ \\t]*:`, 'i');
  if (!pattern.test(text)) return head;
  const lines = text.split('\r\n');
  const kept: string[] = [];
  const wanted = new Set(names);
  for (let i = 0; i < lines.length; ) {
    let j = i + 1;
    while (j < lines.length && lines[j].length > 0 && (lines[j][0] === ' ' || lines[j][0] === '\t')) j++;
    const name = /^([^:\s]+)[ \t]*:/.exec(lines[i])?.[1]?.toLowerCase();
    if (!name || !wanted.has(name)) kept.push(...lines.slice(i, j));
    i = j;
  }
  return Buffer.from(kept.join('\r\n'), 'latin1');
}
