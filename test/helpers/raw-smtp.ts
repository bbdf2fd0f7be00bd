// A raw SMTP conversation over a socket, for tests that need byte-exact control (smuggling,
// pipelining, oversized lines) that real clients refuse to send.
import net from 'node:net';
import tls from 'node:tls';

export class RawSmtp {
  socket: net.Socket;
  #buffer = '';
  #waiters: Array<() => void> = [];
  closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.#attach();
  }

  #attach(): void {
    this.socket.setEncoding('utf8');
    this.socket.on('data', (d: string) => {
      this.#buffer += d;
      for (const w of this.#waiters.splice(0)) w();
    });
    const onClose = () => {
      this.closed = true;
      for (const w of this.#waiters.splice(0)) w();
    };
    this.socket.on('close', onClose);
    this.socket.on('end', onClose);
    this.socket.on('error', () => undefined);
  }

  static async connect(port: number): Promise<RawSmtp> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    return new RawSmtp(socket);
  }

  /** Read one complete (possibly multi-line) reply; resolves with its text, or '' on close. */
  async reply(timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = /^(?:\d{3}-[^\n]*\n)*\d{3}(?: [^\n]*)?\r?\n/.exec(this.#buffer);
      if (m) {
        this.#buffer = this.#buffer.slice(m[0].length);
        return m[0];
      }
      if (this.closed) return '';
      if (Date.now() > deadline) throw new Error(`no reply; buffer: ${JSON.stringify(this.#buffer)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  send(data: string | Buffer): void {
    this.socket.write(data);
  }

  async command(line: string): Promise<string> {
    this.send(line + '\r\n');
    return this.reply();
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
