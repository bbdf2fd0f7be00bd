#!/usr/bin/env node
// Runs the hearth CLI on Node 24 (type stripping, node:sqlite, argon2). When started by an
// older system Node, hand over to the Node that `npm install` put in node_modules.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
const major = Number(process.versions.node.split('.')[0]);
if (major >= 24) {
  const { main } = await import(cli);
  await main(process.argv);
} else {
  const pinned = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  if (!existsSync(pinned)) {
    process.stderr.write(`hearth needs Node 24 (this is ${process.version}); run \`npm install\` in ${fileURLToPath(new URL('..', import.meta.url))} first\n`);
    process.exit(1);
  }
  const result = spawnSync(pinned, [cli, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(result.status ?? 1);
}
