// A raw line-based client (POP3, IMAP) for byte-exact tests that real clients will not send.
import net from 'node:net';
import tls from 'node:tls';

export class RawLines {
  socket: net.Socket;
  #buffer = '';
  #waiters: Array<() => void> = [];
  closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.#attach();
  }

  #attach(): void {
    this.socket.setEncoding('latin1');
    this.socket.on('data', (d: string) => {
      this.#buffer += d;
      this.#wake();
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
    this.socket.on('error', () => undefined);
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  static async connect(port: number, opts: { tls?: boolean } = {}): Promise<RawLines> {
    const socket = opts.tls ? tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }) : net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once(opts.tls ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    return new RawLines(socket);
  }

  async #until<T>(take: () => T | undefined, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = take();
      if (got !== undefined) return got;
      if (this.closed) throw new Error(`closed; buffer: ${JSON.stringify(this.#buffer)}`);
      if (Date.now() > deadline) throw new Error(`timed out; buffer: ${JSON.stringify(this.#buffer.slice(0, 500))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** One line without its CRLF. */
  line(timeoutMs = 10_000): Promise<string> {
    return this.#until(() => {
      const nl = this.#buffer.indexOf('\r\n');
      if (nl < 0) return undefined;
      const line = this.#buffer.slice(0, nl);
      this.#buffer = this.#buffer.slice(nl + 2);
      return line;
    }, timeoutMs);
  }

  /** A POP3 multi-line body after its +OK line, up to the lone dot (not unstuffed). */
  dotBody(timeoutMs = 10_000): Promise<string> {
    return this.#until(() => {
      const end = this.#buffer.startsWith('.\r\n') ? 0 : this.#buffer.indexOf('\r\n.\r\n');
      if (end < 0) return undefined;
      const body = end === 0 ? '' : this.#buffer.slice(0, end + 2);
      this.#buffer = this.#buffer.slice(end === 0 ? 3 : end + 5);
      return body;
    }, timeoutMs);
  }

  /** Resolves true once the server has closed the connection. */
  waitClosed(timeoutMs = 10_000): Promise<boolean> {
    return this.#until(() => (this.closed ? true : undefined), timeoutMs).catch(() => this.closed);
  }

  send(data: string): void {
    this.socket.write(data);
  }

  async command(line: string): Promise<string> {
    this.send(`${line}\r\n`);
    return this.line();
  }

  async starttls(): Promise<void> {
    const plain = this.socket;
    plain.removeAllListeners('data');
    const secure = tls.connect({ socket: plain, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    this.socket = secure;
    this.#buffer = '';
    this.#attach();
  }

  close(): void {
    this.socket.destroy();
  }
}
