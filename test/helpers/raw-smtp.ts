// A raw SMTP conversation over a socket, for tests that need byte-exact control (smuggling,
// pipelining, oversized lines) that real clients refuse to send. Lines come from RawLines;
// this adds SMTP's multi-line replies.
import { RawLines } from './raw-lines.ts';

export class RawSmtp {
  readonly #lines: RawLines;

  private constructor(lines: RawLines) {
    this.#lines = lines;
  }

  static async connect(port: number): Promise<RawSmtp> {
    return new RawSmtp(await RawLines.connect(port));
  }

  get closed(): boolean {
    return this.#lines.closed;
  }

  /** The socket now in use (a TLSSocket after starttls()). */
  get socket(): import('node:net').Socket {
    return this.#lines.socket;
  }

  /** One complete (possibly multi-line) reply with its CRLFs; '' when the server closed first. */
  async reply(timeoutMs = 10_000): Promise<string> {
    let text = '';
    for (;;) {
      let line: string;
      try {
        line = await this.#lines.line(timeoutMs);
      } catch (err) {
        if (this.#lines.closed) return text;
        throw err;
      }
      text += `${line}\r\n`;
      if (/^\d{3}(?: |$)/.test(line)) return text;
    }
  }

  send(data: string | Buffer): void {
    this.#lines.socket.write(data);
  }

  async command(line: string): Promise<string> {
    this.send(line + '\r\n');
    return this.reply();
  }

  starttls(): Promise<void> {
    return this.#lines.starttls();
  }

  close(): void {
    this.#lines.close();
  }
}
