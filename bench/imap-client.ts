// A raw IMAP client for bench/imap.ts: it pipelines, and it only counts what comes back
// (bytes, untagged responses, the tagged completion), skipping literals `{n}` by count, so it
// never holds a whole FETCH response and costs little next to the server. Text is kept only
// when a command asks for it (`capture`), e.g. SELECT's EXISTS or SEARCH's numbers.
import net from 'node:net';
import tls from 'node:tls';

export type Reply = {
  status: 'OK' | 'NO' | 'BAD' | 'BYE';
  /** The tagged line. */
  text: string;
  /** Untagged responses (`* ...`) received while this command was the oldest in flight. */
  untagged: number;
  /** Bytes received while this command was the oldest in flight (tagged line included). */
  bytes: number;
  /** Milliseconds from writing the command to its tagged completion. */
  ms: number;
  /** Logical response lines (literals left out) when the command asked for `capture`. */
  lines: string[];
};

type Pending = { tag: string; started: number; capture: boolean; untagged: number; bytes: number; lines: string[]; resolve(r: Reply): void; reject(e: Error): void };

const LITERAL_AT_END = /\{(\d+)\+?\}\r?\n$/;
/** Bytes of a logical line kept to recognise it (tag, `* `, `+ `) when not capturing. */
const HEAD = 96;
/** Bytes of a physical line's end kept to find a literal announcement `{n}`. */
const TAIL = 32;
/** A captured line is cut here (a SEARCH answer for 100,000 messages stays within it). */
const CAPTURE_MAX = 4 << 20;

export class ImapConn {
  readonly socket: net.Socket;
  bytesIn = 0;
  #seq = 0;
  readonly #pending: Pending[] = [];
  #continuation: Array<(line: string) => void> = [];
  #greeting: ((line: string) => void) | undefined;
  #literalLeft = 0;
  /** The logical line so far: its head (or all of it when capturing), and a physical line's tail. */
  #head = '';
  #tail = '';
  #closedError: Error | undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.#data(d));
    const fail = (err?: Error): void => {
      this.#closedError ??= err ?? new Error('connection closed');
      for (const p of this.#pending.splice(0)) p.reject(this.#closedError);
    };
    socket.on('error', fail);
    socket.on('close', () => fail());
  }

  /** Connect and wait for the greeting. */
  static connect(port: number, opts: { tls?: boolean; host?: string } = {}): Promise<ImapConn> {
    const host = opts.host ?? '127.0.0.1';
    return new Promise((resolve, reject) => {
      const socket = opts.tls ? tls.connect({ port, host, rejectUnauthorized: false }) : net.connect(port, host);
      const conn = new ImapConn(socket);
      socket.once('error', reject);
      conn.#greeting = (line) => {
        socket.off('error', reject);
        if (line.startsWith('* OK')) resolve(conn);
        else reject(new Error(`greeting: ${line}`));
      };
    });
  }

  /**
   * Send one command (without tag and CRLF) and resolve with its tagged completion. Callers may
   * send more before this resolves: that is pipelining. `literal` is sent right after the line
   * (the line must end with a LITERAL+ announcement `{n+}`), followed by CRLF.
   */
  command(text: string, opts: { capture?: boolean; literal?: Uint8Array } = {}): Promise<Reply> {
    if (this.#closedError) return Promise.reject(this.#closedError);
    const tag = `b${++this.#seq}`;
    return new Promise((resolve, reject) => {
      this.#pending.push({ tag, started: performance.now(), capture: opts.capture ?? false, untagged: 0, bytes: 0, lines: [], resolve, reject });
      if (opts.literal) {
        this.socket.write(`${tag} ${text}\r\n`);
        this.socket.write(opts.literal);
        this.socket.write('\r\n');
      } else {
        this.socket.write(`${tag} ${text}\r\n`);
      }
    });
  }

  /** A command that must complete with OK; throws with the tagged line otherwise. */
  async ok(text: string, opts: { capture?: boolean; literal?: Uint8Array } = {}): Promise<Reply> {
    const r = await this.command(text, opts);
    if (r.status !== 'OK') throw new Error(`${text.slice(0, 60)}: ${r.text}`);
    return r;
  }

  /** Start IDLE and resolve once the server's continuation (`+ idling`) arrived. */
  idle(): Promise<void> {
    const cont = new Promise<void>((resolve) => this.#continuation.push(() => resolve()));
    // The IDLE's own completion arrives after DONE; nobody waits for it here.
    this.command('IDLE').catch(() => {});
    return cont;
  }

  close(): void {
    this.socket.destroy();
  }

  #data(d: Buffer): void {
    this.bytesIn += d.length;
    const head = this.#pending[0];
    if (head) head.bytes += d.length;
    let i = 0;
    while (i < d.length) {
      if (this.#literalLeft > 0) {
        const take = Math.min(this.#literalLeft, d.length - i);
        this.#literalLeft -= take;
        i += take;
        continue;
      }
      const nl = d.indexOf(10, i);
      const end = nl < 0 ? d.length : nl + 1;
      this.#addText(d, i, end);
      i = end;
      if (nl < 0) break;
      const m = LITERAL_AT_END.exec(this.#tail);
      this.#tail = '';
      if (m) {
        // The logical line goes on after the literal's bytes.
        this.#literalLeft = Number(m[1]);
        continue;
      }
      this.#lineDone();
    }
  }

  #addText(d: Buffer, from: number, to: number): void {
    const capturing = this.#pending[0]?.capture ?? false;
    const keep = capturing ? CAPTURE_MAX : HEAD;
    if (this.#head.length < keep) this.#head += d.toString('latin1', from, Math.min(to, from + keep - this.#head.length));
    const tailFrom = Math.max(from, to - TAIL);
    this.#tail = (this.#tail + d.toString('latin1', tailFrom, to)).slice(-TAIL);
  }

  #lineDone(): void {
    const line = this.#head.replace(/\r?\n$/, '');
    this.#head = '';
    if (this.#greeting) {
      const g = this.#greeting;
      this.#greeting = undefined;
      g(line);
      return;
    }
    const p = this.#pending[0];
    if (line.startsWith('+')) {
      this.#continuation.shift()?.(line);
      return;
    }
    if (line.startsWith('* ')) {
      if (p) {
        p.untagged++;
        if (p.capture) p.lines.push(line);
      }
      return;
    }
    if (!p) return;
    const sp = line.indexOf(' ');
    const tag = line.slice(0, sp);
    const at = this.#pending.findIndex((q) => q.tag === tag);
    if (at < 0) return;
    const [done] = this.#pending.splice(at, 1);
    const status = line.slice(sp + 1).split(' ', 1)[0].toUpperCase() as Reply['status'];
    done.resolve({ status, text: line, untagged: done.untagged, bytes: done.bytes, ms: performance.now() - done.started, lines: done.lines });
  }
}
