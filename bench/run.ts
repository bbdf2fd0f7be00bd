// `npm run bench -- <name> [options]`: runs one benchmark from bench/. Benchmarks print
// figures; they are never part of `npm test`.
const BENCHES: Record<string, string> = {
  gather: './gather.ts',
  imap: './imap.ts',
  ingest: './ingest.ts',
  pop3: './pop3.ts',
  relay: './relay.ts',
  web: './web.ts',
};

const [name, ...rest] = process.argv.slice(2);
if (!name || name === '--help' || !BENCHES[name]) {
  process.stdout.write(`usage: npm run bench -- <${Object.keys(BENCHES).join('|')}> [--help]\n`);
  process.exit(name && name !== '--help' ? 2 : 0);
}
const mod = (await import(BENCHES[name])) as { run(args: string[]): Promise<void> };
await mod.run(rest);
