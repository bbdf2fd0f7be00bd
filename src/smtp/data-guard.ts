// Checks the DATA stream as it passes: a size cap that stops writing to disk as soon as the
// message is too big, and the SMTP smuggling rule. smtp-server ends DATA only at
// <CRLF>.<CRLF> and passes bare CR and LF bytes through; a receiver that stored them would
// let a sender hide a second message behind <LF>.<LF> that another server (or our own
// relay later) splits differently. RFC 5321 2.3.8 forbids bare CR and LF in SMTP, so a
// message carrying one is refused whole: 554 5.6.0, nothing stored.
import { HearthError } from '../core/errors.ts';

export class DataError extends HearthError {
  /** SMTP reply code the client gets. */
  readonly responseCode: number;
  constructor(code: 'DATA_BARE_NEWLINE' | 'DATA_TOO_BIG' | 'DATA_BAD_HEADER', responseCode: number, message: string) {
    super(code, message);
    this.responseCode = responseCode;
  }
}

const CR = 0x0d;
const LF = 0x0a;

export class DataGuard {
  readonly maxBytes: number;
  bytes = 0;
  #pendingCR = false;

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }

  /** Throws a DataError when the chunk breaks a rule; otherwise returns nothing. */
  check(chunk: Uint8Array): void {
    this.bytes += chunk.length;
    if (this.bytes > this.maxBytes) {
      throw new DataError('DATA_TOO_BIG', 552, `5.3.4 Message too big: the limit here is ${this.maxBytes} bytes`);
    }
    let i = 0;
    if (this.#pendingCR) {
      if (chunk.length === 0) return;
      if (chunk[0] !== LF) throw bareNewline('CR');
      i = 1;
      this.#pendingCR = false;
    }
    // Scan for CR and LF only; each LF must follow a CR and each CR must precede an LF.
    const n = chunk.length;
    for (;;) {
      const lf = chunk.indexOf(LF, i);
      const cr = chunk.indexOf(CR, i);
      if (cr === -1 && lf === -1) return;
      if (cr === -1 || (lf !== -1 && lf < cr)) throw bareNewline('LF');
      // cr comes first: the next byte must be LF (possibly in the next chunk)
      if (cr === n - 1) {
        this.#pendingCR = true;
        return;
      }
      if (chunk[cr + 1] !== LF) throw bareNewline('CR');
      i = cr + 2;
    }
  }

  /** At the end of DATA: a CR as the very last byte is bare too. */
  finish(): void {
    if (this.#pendingCR) throw bareNewline('CR');
  }
}

function bareNewline(which: 'CR' | 'LF'): DataError {
  return new DataError('DATA_BARE_NEWLINE', 554, `5.6.0 Message refused: it contains a bare ${which}; lines must end with CRLF (RFC 5321 2.3.8)`);
}
