import { describe, expect, it } from 'vitest';
import { DataError, DataGuard } from '../../src/smtp/data-guard.ts';

/** Feed the text in chunks of `size` bytes; return the error code or 'ok'. */
function feed(text: string, size: number, max = 1 << 20): string {
  const g = new DataGuard(max);
  const buf = Buffer.from(text, 'latin1');
  try {
    for (let i = 0; i < buf.length; i += size) g.check(buf.subarray(i, i + size));
    g.finish();
    return 'ok';
  } catch (err) {
    return (err as DataError).code;
  }
}

describe('DataGuard', () => {
  const cases: Array<[string, string]> = [
    ['a\r\nb\r\n', 'ok'],
    ['\r\n\r\n', 'ok'],
    ['', 'ok'],
    ['a\nb\r\n', 'DATA_BARE_NEWLINE'],
    ['a\rb\r\n', 'DATA_BARE_NEWLINE'],
    ['a\r\n.\n', 'DATA_BARE_NEWLINE'],
    ['a\r\n\r', 'DATA_BARE_NEWLINE'],
    ['\n', 'DATA_BARE_NEWLINE'],
    ['a\r\r\n', 'DATA_BARE_NEWLINE'],
  ];
  for (const [text, expected] of cases) {
    it(`${JSON.stringify(text)} -> ${expected}, at every chunk size`, () => {
      for (const size of [1, 2, 3, 64]) expect(feed(text, size), `chunk size ${size}`).toBe(expected);
    });
  }

  it('stops at the size limit with 552 5.3.4', () => {
    const g = new DataGuard(10);
    g.check(Buffer.from('0123456789'));
    let err: unknown;
    try {
      g.check(Buffer.from('x'));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DataError);
    expect((err as DataError).responseCode).toBe(552);
    expect((err as DataError).message).toMatch(/^5\.3\.4 /);
  });
});
