// `hearth setup`, `hearth dns [DOMAIN]` and `hearth dns check DOMAIN`: the command line of
// client setup (issue 9). The work is in src/setup/; this file reads options, loads the
// config, and prints for a person (or JSON with --json).
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { HearthError } from '../core/errors.ts';
import { loadConfig } from '../config/load.ts';
import type { LoadedConfig } from '../config/load.ts';
import type { DnsRecord } from '../setup/dns-records.ts';
import type { SetupAnswers } from '../setup/wizard.ts';

function configDirOf(opts: { config?: string }): string {
  return resolve(opts.config ?? process.env.HEARTH_CONFIG ?? 'config');
}

async function readStdinLine(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

async function recordsFor(loaded: LoadedConfig, domain: string): Promise<DnsRecord[]> {
  const { dnsRecords, dkimPublicKeys } = await import('../setup/dns-records.ts');
  return dnsRecords({ domain, config: loaded.config, dkim: await dkimPublicKeys(loaded.dir, domain) });
}

function checkDomain(loaded: LoadedConfig, domain: string): string {
  const d = domain.toLowerCase().replace(/\.$/, '');
  if (!loaded.config.domains.includes(d)) {
    throw new HearthError('CLI_NOT_OUR_DOMAIN', `${d} is not one of this server's domains (${loaded.config.domains.join(', ')}): add it to domains in ${loaded.file} first`);
  }
  return d;
}

/** `hearth dns` for every domain (or one), as zone-file text. */
export async function dnsText(loaded: LoadedConfig, domain?: string): Promise<string> {
  const { formatZone } = await import('../setup/dns-records.ts');
  const domains = domain ? [checkDomain(loaded, domain)] : loaded.config.domains;
  const parts: string[] = [];
  for (const d of domains) parts.push(formatZone(d, await recordsFor(loaded, d)));
  return parts.join('\n');
}

export function registerSetupCommands(program: Command): void {
  const dns = program
    .command('dns')
    .description('print every DNS record a domain needs (MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, SRV, autoconfig), ready to paste; `dns check` verifies them')
    .argument('[domain]', 'one of the configured domains (default: all)')
    .option('-c, --config <dir>', 'config folder (default: $HEARTH_CONFIG or ./config)')
    .option('--json', 'print JSON')
    .action(async (domain: string | undefined, opts: { config?: string; json?: boolean }) => {
      const loaded = await loadConfig(configDirOf(opts));
      if (opts.json) {
        const domains = domain ? [checkDomain(loaded, domain)] : loaded.config.domains;
        const out: Record<string, DnsRecord[]> = {};
        for (const d of domains) out[d] = await recordsFor(loaded, d);
        process.stdout.write(JSON.stringify(out, null, 2) + '\n');
        return;
      }
      process.stdout.write(await dnsText(loaded, domain));
    });

  dns
    .command('check')
    .description('look the records up and say what is missing or wrong, and what to change; exits 1 on problems')
    .argument('<domain>', 'one of the configured domains')
    .option('-c, --config <dir>', 'config folder (default: $HEARTH_CONFIG or ./config)')
    .option('--server <address...>', 'ask these DNS servers, ip or ip:port (e.g. your provider\'s, to see changes before they spread) instead of [dns] servers')
    .option('--json', 'print JSON')
    .action(async (domain: string, own: { config?: string; server?: string[]; json?: boolean }) => {
      // -c and --json given after `check` may have been taken by `dns` itself
      const opts = { ...(dns.opts() as { config?: string; json?: boolean }), ...own };
      const loaded = await loadConfig(configDirOf(opts));
      const d = checkDomain(loaded, domain);
      const { checkDns, formatFindings, makeResolver, problemsIn } = await import('../setup/dns-check.ts');
      const resolver = makeResolver(opts.server ?? loaded.config.dns.servers, loaded.config.dns.timeout);
      const findings = await checkDns(resolver, await recordsFor(loaded, d), { mxHost: loaded.config.hostname, addresses: loaded.config.client.addresses });
      process.stdout.write(opts.json ? JSON.stringify(findings, null, 2) + '\n' : formatFindings(d, findings));
      if (problemsIn(findings) > 0) process.exitCode = 1;
    });

  program
    .command('setup')
    .description('set up a mail server for your domain: asks for domain, host name, first user, TLS and relay; writes config/ and prints the DNS records')
    .option('-c, --config <dir>', 'config folder to write (default: $HEARTH_CONFIG or ./config)')
    .option('--domain <domain>', 'your mail domain, e.g. example.org')
    .option('--hostname <name>', "this server's public name (default: mail.DOMAIN)")
    .option('--user <address>', 'the first user (default: me@DOMAIN)')
    .option('--password-stdin', "read the first user's password from standard input")
    .option('--tls <kind>', '"self-signed" (default) or "files" (with --cert and --key)')
    .option('--cert <file>', 'certificate PEM (with chain), with --tls files')
    .option('--key <file>', 'private key PEM, with --tls files')
    .option('--relay <mode>', '"mx" (deliver directly, default) or "smarthost"')
    .option('--smarthost <host:port>', "your provider's server, with --relay smarthost")
    .option('--smarthost-user <user>', 'smarthost login')
    .option('--smarthost-password-file <file>', 'file (0600, relative to the config folder) holding the smarthost password')
    .option('--ports <kind>', '"standard" (25, 587, 993…; default) or "high" (2525, 2587, 1993… behind a port mapping)')
    .option('--force', 'replace an existing hearth.toml (a .bak copy is kept)')
    .option('-y, --yes', 'do not ask: take the flags and defaults (needs --domain and --password-stdin)')
    .action(async (opts: {
      config?: string;
      domain?: string;
      hostname?: string;
      user?: string;
      passwordStdin?: boolean;
      tls?: string;
      cert?: string;
      key?: string;
      relay?: string;
      smarthost?: string;
      smarthostUser?: string;
      smarthostPasswordFile?: string;
      ports?: string;
      force?: boolean;
      yes?: boolean;
    }) => {
      const { askAnswers, writeSetup } = await import('../setup/wizard.ts');
      const configDir = configDirOf(opts);
      if (opts.tls && opts.tls !== 'self-signed' && opts.tls !== 'files') throw new HearthError('CLI_USAGE', '--tls is "self-signed" or "files"');
      if (opts.relay && opts.relay !== 'mx' && opts.relay !== 'smarthost') throw new HearthError('CLI_USAGE', '--relay is "mx" or "smarthost"');
      if (opts.ports && opts.ports !== 'standard' && opts.ports !== 'high') throw new HearthError('CLI_USAGE', '--ports is "standard" or "high"');
      if (opts.relay === 'smarthost' && !opts.smarthost) throw new HearthError('CLI_USAGE', '--relay smarthost needs --smarthost host:port');
      if (opts.tls === 'files' && (!opts.cert || !opts.key)) throw new HearthError('CLI_USAGE', '--tls files needs --cert and --key');

      const known: Partial<SetupAnswers> = { force: opts.force };
      if (opts.domain) known.domain = opts.domain.toLowerCase();
      if (opts.hostname) known.hostname = opts.hostname.toLowerCase();
      if (opts.user) known.user = opts.user.toLowerCase();
      if (opts.passwordStdin) {
        known.password = await readStdinLine();
        if (!known.password) throw new HearthError('CLI_NO_PASSWORD', 'standard input was empty: pipe the password in, e.g. `printf %s "$PW" | hearth setup --yes --domain example.org --password-stdin`');
      }
      if (opts.tls === 'files') known.tls = { kind: 'files', cert: opts.cert!, key: opts.key! };
      else if (opts.tls === 'self-signed' || opts.yes) known.tls = { kind: 'self-signed' };
      if (opts.relay === 'smarthost') known.relay = { mode: 'smarthost', smarthost: opts.smarthost!, user: opts.smarthostUser, passwordFile: opts.smarthostPasswordFile };
      else if (opts.relay === 'mx' || opts.yes) known.relay = { mode: 'mx' };
      if (opts.ports) known.ports = opts.ports as SetupAnswers['ports'];

      let answers: SetupAnswers;
      if (opts.yes) {
        if (!known.domain) throw new HearthError('CLI_USAGE', 'setup --yes needs --domain');
        if (known.password === undefined) throw new HearthError('CLI_USAGE', 'setup --yes needs the password on standard input (--password-stdin)');
        answers = {
          domain: known.domain,
          hostname: known.hostname ?? `mail.${known.domain}`,
          user: known.user ?? `me@${known.domain}`,
          password: known.password,
          tls: known.tls!,
          relay: known.relay!,
          ports: known.ports ?? 'standard',
          force: opts.force,
        };
      } else {
        if (!process.stdin.isTTY) throw new HearthError('CLI_NO_TTY', 'no terminal to ask on: run `hearth setup --yes --domain DOMAIN --password-stdin` with the other flags (see --help)');
        answers = await askAnswers(known);
      }

      const result = await writeSetup(configDir, answers);
      const out = process.stdout;
      out.write(`\nhearth setup wrote ${result.loaded.dir}:\n${result.written.map((f) => `  ${f}`).join('\n')}\n`);
      if (result.backup) out.write(`(the previous hearth.toml is kept as ${result.backup})\n`);
      out.write(`\nNow add these records at your DNS provider:\n\n${await dnsText(result.loaded, answers.domain)}\n`);
      out.write(
        [
          'Next:',
          `  1. Add the records above; \`hearth dns check ${answers.domain}\` says which are missing or wrong.`,
          answers.tls.kind === 'self-signed' ? `  2. The certificate is self-signed: replace config/tls/*.pem with a real one for ${answers.hostname} (and autoconfig., mta-sts. of ${answers.domain}).` : '  2. TLS: your certificate files are in place.',
          // In a clone there is no `hearth` on the PATH; `npm start` reads ./config.
          result.loaded.dir === resolve('config')
            ? '  3. Start the server: `npm start` in this folder (or `hearth serve` where hearth is installed as a command).'
            : `  3. Start the server: \`npm run hearth -- serve --config ${result.loaded.dir}\` in the hearth folder (or \`hearth serve --config ${result.loaded.dir}\`).`,
          `  4. In Thunderbird, Outlook or on a phone, add the account ${answers.user.toLowerCase()}: the settings are found on their own.`,
          answers.relay.mode === 'mx' ? '  Sending directly needs outbound port 25 and a reverse DNS (PTR) name for your address; ask your provider, or use --relay smarthost.' : '',
        ]
          .filter(Boolean)
          .join('\n') + '\n',
      );
    });
}
