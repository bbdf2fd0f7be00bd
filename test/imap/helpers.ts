// Feed wire bytes through CommandAssembler then parseCommand, as the session will.
import { CommandAssembler } from '../../src/imap/assembler.ts';
import type { AssembledCommand, AssemblerOptions, AssemblerResult } from '../../src/imap/assembler.ts';
import { parseCommand } from '../../src/imap/parse.ts';
import type { CommandOf, ImapCommand, ParseError, ParseOptions } from '../../src/imap/parse.ts';

export type FeedOptions = {
  /**
   * Hand the assembler a literal of `size` bytes from `rest`, the wire after its line; returns
   * what is left of the wire, or undefined to stop there. Default: the whole literal at once.
   */
  literal?: (size: number, rest: Buffer) => Buffer | undefined;
  /** Stop at an error that closes the connection, as a session does. */
  stopOnClose?: boolean;
};

/** Split wire bytes into the assembler's events; returns every result in order. */
export function feed(asm: CommandAssembler, wire: Buffer | string, opts: FeedOptions = {}): AssemblerResult[] {
  const literal = opts.literal ?? ((size: number, rest: Buffer) => {
    const take = rest.subarray(0, size);
    asm.addLiteral(take);
    return rest.subarray(take.length);
  });
  let buf: Buffer | undefined = typeof wire === 'string' ? Buffer.from(wire, 'utf8') : wire;
  const out: AssemblerResult[] = [];
  while (buf && buf.length > 0) {
    const lf = buf.indexOf(0x0a);
    if (lf < 0) break;
    const line = buf.subarray(0, lf > 0 && buf[lf - 1] === 0x0d ? lf - 1 : lf);
    buf = buf.subarray(lf + 1);
    const r = asm.push(line);
    out.push(r);
    if (r.kind === 'error' && r.close && opts.stopOnClose) break;
    if (r.kind === 'need-literal') buf = literal(r.size, buf);
  }
  return out;
}

export function assemble(wire: Buffer | string, opts: Partial<AssemblerOptions> = {}): AssembledCommand {
  const asm = new CommandAssembler({ maxLiteral: 1 << 20, maxCommandBytes: 1 << 20, ...opts });
  const text = typeof wire === 'string' && !wire.endsWith('\n') ? `${wire}\r\n` : wire;
  const results = feed(asm, text);
  const last = results[results.length - 1];
  if (last?.kind !== 'command') throw new Error(`not assembled: ${JSON.stringify(last)}`);
  return last.raw;
}

export function parse(wire: Buffer | string, opts?: ParseOptions): ImapCommand | ParseError {
  return parseCommand(assemble(wire), opts);
}

/** Parse and insist on success, narrowing to the verb. */
export function ok<V extends ImapCommand['verb']>(wire: Buffer | string, verb: V, opts?: ParseOptions): CommandOf<V> {
  const r = parse(wire, opts);
  if (!r.ok) throw new Error(`parse failed: ${r.text}`);
  if (r.verb !== verb) throw new Error(`verb ${r.verb}, expected ${verb}`);
  return r as CommandOf<V>;
}

export function err(wire: Buffer | string, opts?: ParseOptions): ParseError {
  const r = parse(wire, opts);
  if (r.ok) throw new Error(`expected a parse error, got ${JSON.stringify(r)}`);
  return r;
}
