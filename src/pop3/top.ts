// TOP's cut (RFC 1939 7): the header, the blank line, and the first N lines of the body,
// streamed; the rest of the message is never read.
const LF = 0x0a;

export async function* headersAndLines(source: AsyncIterable<Uint8Array>, bodyLines: number): AsyncGenerator<Buffer> {
  let inHeader = true;
  let lineStart = true; // at the start of a line
  let blankSoFar = false; // the current line is empty so far (ignoring CR)
  let remaining = bodyLines;
  for await (const raw of source) {
    const chunk = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
    let i = 0;
    while (i < chunk.length) {
      if (!inHeader && remaining === 0) {
        if (i > 0) yield chunk.subarray(0, i);
        return;
      }
      const nl = chunk.indexOf(LF, i);
      if (nl === -1) {
        if (lineStart) blankSoFar = chunk.subarray(i).every((b) => b === 0x0d);
        else if (blankSoFar) blankSoFar = chunk.subarray(i).every((b) => b === 0x0d);
        lineStart = false;
        i = chunk.length;
        break;
      }
      const lineIsBlank = (lineStart || blankSoFar) && chunk.subarray(i, nl).every((b) => b === 0x0d);
      if (inHeader) {
        if (lineIsBlank) inHeader = false;
      } else {
        remaining -= 1;
      }
      i = nl + 1;
      lineStart = true;
      blankSoFar = true;
    }
    if (!inHeader && remaining === 0) {
      yield chunk.subarray(0, i);
      return;
    }
    yield chunk;
  }
}
