// `hearth setup`: from a domain name to a config/ folder a real server can run on. In charge of
// the questions (domain, hostname, first user, TLS, relay), of checking the answers, and of
// writing hearth.toml, users, aliases, a certificate and a DKIM key. It reuses the first-run
// pieces of src/config/defaults.ts (password generator, atomic writes) and the users file;
// the interactive part (prompts) is separate from writing, so tests drive writeSetup directly.
import { access, copyFile, mkdir, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { generate } from 'selfsigned';
import { HearthError } from '../core/errors.ts';
import { randomPassword } from '../config/defaults.ts';
import { ALIASES_FILE_NAME, USERS_FILE_NAME } from '../config/directory.ts';
import { writeFileAtomic, writeFileExclusive } from '../config/fsutil.ts';
import { CONFIG_FILE_NAME, loadConfig } from '../config/load.ts';
import type { LoadedConfig } from '../config/load.ts';
import { UsersFile } from '../config/users.ts';
import { generateDkimKey } from '../smtp/dkim.ts';

export type SetupAnswers = {
  domain: string;
  hostname: string;
  user: string;
  password: string;
  /** self-signed: a certificate made here (clients warn until a real one replaces it); files: existing PEM paths. */
  tls: { kind: 'self-signed' } | { kind: 'files'; cert: string; key: string };
  relay: { mode: 'mx' } | { mode: 'smarthost'; smarthost: string; user?: string; passwordFile?: string; password?: string };
  /** standard: 25/587/465/143/993/110/995 (needs privileges); high: 2525… with [client.ports] for a port mapping. */
  ports: 'standard' | 'high';
  /** Replace an existing hearth.toml (kept as hearth.toml.bak-<time>). */
  force?: boolean;
};

export type SetupResult = { loaded: LoadedConfig; written: string[]; backup?: string; dkimRecord?: { name: string; record: string } };

const DOMAIN = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/i;
const HOST_PORT = /^(?:\[[0-9a-f:.]+\]|[a-z0-9.-]+):\d{1,5}$/i;

/** Problems with the answers, each saying what to give instead; empty when all is well. */
export function checkAnswers(a: SetupAnswers): string[] {
  const problems: string[] = [];
  if (!DOMAIN.test(a.domain)) problems.push(`domain "${a.domain}" is not a domain name like example.org`);
  if (!DOMAIN.test(a.hostname)) problems.push(`hostname "${a.hostname}" is not a host name like mail.example.org`);
  const at = a.user.lastIndexOf('@');
  if (at < 1 || a.user.slice(at + 1).toLowerCase() !== a.domain.toLowerCase()) problems.push(`user "${a.user}" should be an address in ${a.domain}, e.g. me@${a.domain}`);
  if (a.password.length < 8) problems.push('the password needs at least 8 characters');
  if (a.relay.mode === 'smarthost' && !HOST_PORT.test(a.relay.smarthost)) problems.push(`smarthost "${a.relay.smarthost}" is not host:port, e.g. smtp.provider.example:587`);
  return problems;
}

const q = (s: string) => JSON.stringify(s);

const PORTS = {
  standard: { smtp: 25, submission: 587, submissions: 465, imap: 143, imaps: 993, pop3: 110, pop3s: 995 },
  high: { smtp: 2525, submission: 2587, submissions: 2465, imap: 1143, imaps: 1993, pop3: 1110, pop3s: 1995 },
} as const;

/** hearth.toml for the answers; every key not set here keeps its default (config/hearth.example.toml lists them). */
export function configToml(a: SetupAnswers): string {
  const p = PORTS[a.ports];
  const tls = a.tls.kind === 'files' ? a.tls : { cert: 'tls/cert.pem', key: 'tls/key.pem' };
  const relay =
    a.relay.mode === 'mx'
      ? `mode = "mx"              # straight to each recipient's MX: needs outbound port 25 and reverse DNS for your address\n`
      : `mode = "smarthost"        # everything leaves through your provider's server\nsmarthost = ${q(a.relay.smarthost)}\nsmarthost_tls = ${a.relay.smarthost.endsWith(':465') ? '"implicit"' : '"starttls"'}\n` +
        (a.relay.user ? `smarthost_user = ${q(a.relay.user)}\n` : '') +
        (a.relay.passwordFile ? `smarthost_password_file = ${q(a.relay.passwordFile)}\n` : '');
  const listener = (name: keyof typeof p, mode: string, what: string) => `[listeners.${name}]${' '.repeat(Math.max(1, 14 - name.length))}# ${what}\nlisten = ":${p[name]}"\ntls = "${mode}"\n`;
  return (
    `# hearth.toml, written by \`hearth setup\` for ${a.domain}. config/hearth.example.toml lists every key.\n` +
    `# hearth follows changes to this file while it runs; listener and TLS changes need a restart.\n\n` +
    `# The server's public name: the MX record points here, clients connect here.\n` +
    `hostname = ${q(a.hostname.toLowerCase())}\n` +
    `domains = [${q(a.domain.toLowerCase())}]\n` +
    `data_dir = "../maildir"\n\n` +
    `[tls]\n` +
    (a.tls.kind === 'self-signed' ? `# self-signed by \`hearth setup\`: clients warn until you put a real certificate here\n` : '') +
    `cert = ${q(tls.cert)}\nkey = ${q(tls.key)}\n\n` +
    `[auth]\nplaintext = "never"        # passwords only over TLS\n\n` +
    [
      listener('smtp', 'starttls', 'mail from other servers (port 25 on the internet)'),
      listener('submission', 'starttls', 'mail clients sending'),
      listener('submissions', 'implicit', 'mail clients sending, implicit TLS'),
      listener('imap', 'starttls', 'mail clients reading'),
      listener('imaps', 'implicit', 'mail clients reading, implicit TLS'),
      listener('pop3', 'starttls', 'POP3'),
      listener('pop3s', 'implicit', 'POP3, implicit TLS'),
    ].join('\n') +
    '\n' +
    `[listeners.http]          # webmail, autoconfig, MTA-STS; put an HTTPS proxy for ${a.hostname}:443 in front\nlisten = "127.0.0.1:8080"\ntls = "plain"\n\n` +
    `[relay]\n${relay}\n` +
    `[client]                  # what mail clients and \`hearth dns\` are told\n` +
    `# addresses = ["203.0.113.5"]   # this server's public IPs: \`hearth dns\` fills in the A/AAAA records\n` +
    (a.ports === 'high'
      ? `[client.ports]            # the router maps these public ports to the high ones above\nimaps = 993\nimap = 143\npop3s = 995\npop3 = 110\nsubmissions = 465\nsubmission = 587\n`
      : '')
  );
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** A self-signed certificate for the host name and the names clients and senders fetch over HTTPS. */
async function selfSignedFor(hostname: string, domain: string): Promise<{ cert: string; key: string }> {
  const notBeforeDate = new Date(Date.now() - 60_000);
  const names = [...new Set([hostname, domain, `autoconfig.${domain}`, `autodiscover.${domain}`, `mta-sts.${domain}`])];
  const pems = await generate([{ name: 'commonName', value: hostname }], {
    keySize: 2048,
    algorithm: 'sha256',
    notBeforeDate,
    notAfterDate: new Date(notBeforeDate.getTime() + 825 * 86_400_000),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: names.map((value) => ({ type: 2, value })) },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}

/** Write config/ for the answers; hearth.toml last, and only once everything else is in place. */
export async function writeSetup(dir: string, a: SetupAnswers): Promise<SetupResult> {
  const problems = checkAnswers(a);
  if (problems.length) throw new HearthError('SETUP_INVALID', problems.join('; '));
  const configDir = resolve(dir);
  const domain = a.domain.toLowerCase();
  const tomlPath = join(configDir, CONFIG_FILE_NAME);
  const written: string[] = [];
  let backup: string | undefined;
  if (await exists(tomlPath)) {
    if (!a.force) throw new HearthError('SETUP_EXISTS', `${tomlPath} exists already: pass --force to replace it (it is kept as a .bak file), or use another --config folder`);
    backup = `${tomlPath}.bak-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    await copyFile(tomlPath, backup);
  }
  await mkdir(configDir, { recursive: true, mode: 0o755 });

  if (a.tls.kind === 'self-signed') {
    await mkdir(join(configDir, 'tls'), { recursive: true, mode: 0o755 });
    const certPath = join(configDir, 'tls', 'cert.pem');
    if (!(await exists(certPath)) || a.force) {
      const { cert, key } = await selfSignedFor(a.hostname.toLowerCase(), domain);
      await writeFileAtomic(join(configDir, 'tls', 'key.pem'), key, 0o600);
      await writeFileAtomic(certPath, cert, 0o644);
      written.push(certPath, join(configDir, 'tls', 'key.pem'));
    }
  } else {
    for (const f of [a.tls.cert, a.tls.key]) if (!(await exists(resolve(configDir, f)))) throw new HearthError('SETUP_NO_FILE', `${resolve(configDir, f)} does not exist: give the PEM files of your certificate and key`);
  }

  if (a.relay.mode === 'smarthost' && a.relay.password) {
    const file = a.relay.passwordFile ?? 'smarthost-password';
    await writeFileAtomic(join(configDir, file), `${a.relay.password}\n`, 0o600);
    a = { ...a, relay: { ...a.relay, passwordFile: file } };
    written.push(join(configDir, file));
  }

  const users = new UsersFile(join(configDir, USERS_FILE_NAME));
  const address = a.user.toLowerCase();
  if ((await users.list()).some((u) => u.address === address)) await users.setPassword(address, a.password);
  else await users.add(address, a.password);
  written.push(users.path);

  const aliasesPath = join(configDir, ALIASES_FILE_NAME);
  const aliases =
    `# aliases: where mail for an address goes, besides the users in the users file.\n#   alias@domain: target[, target...]\n# hearth reloads this file when it changes.\n\n` +
    `# RFC 5321 4.5.1 and RFC 2142: these must reach a person; DMARC and TLS-RPT reports come to postmaster.\n` +
    `postmaster@${domain}: ${address}\nabuse@${domain}: ${address}\n`;
  if (await writeFileExclusive(aliasesPath, aliases, 0o644)) written.push(aliasesPath);

  let dkimRecord: SetupResult['dkimRecord'];
  const haveKeys = await readdir(join(configDir, 'dkim', domain)).then(
    (files) => files.some((f) => f.endsWith('.pem')),
    () => false,
  );
  if (!haveKeys) {
    const key = await generateDkimKey(configDir, domain, `hearth${new Date().getUTCFullYear()}`, 'rsa');
    written.push(key.path);
    dkimRecord = { name: key.name, record: key.record };
  }

  await writeFileAtomic(tomlPath, configToml(a), 0o644);
  written.push(tomlPath);
  // what was written must load: a wizard that leaves a broken config is worse than none
  const loaded = await loadConfig(configDir);
  return { loaded, written, backup, dkimRecord };
}

/** The questions, asked on a terminal with @clack/prompts; defaults from what is known already. */
export async function askAnswers(known: Partial<SetupAnswers>): Promise<SetupAnswers> {
  const p = await import('@clack/prompts');
  const stop = <T>(v: T): Exclude<T, symbol> => {
    if (p.isCancel(v)) throw new HearthError('CLI_CANCELLED', 'setup cancelled; nothing was written');
    return v as Exclude<T, symbol>;
  };
  p.intro('hearth setup: a mail server for your domain');
  const domain = known.domain ?? stop(await p.text({ message: 'Your mail domain (the part after @)', placeholder: 'example.org', validate: (v) => (v && DOMAIN.test(v) ? undefined : 'a domain name like example.org') }));
  const hostname =
    known.hostname ?? stop(await p.text({ message: 'The name of this server (where the MX record points)', initialValue: `mail.${domain}`, validate: (v) => (v && DOMAIN.test(v) ? undefined : 'a host name like mail.example.org') }));
  const user = known.user ?? stop(await p.text({ message: 'Your address (the first user)', initialValue: `me@${domain}`, validate: (v) => (v && v.toLowerCase().endsWith(`@${domain.toLowerCase()}`) ? undefined : `an address in ${domain}`) }));
  let password = known.password;
  if (password === undefined) {
    const suggestion = randomPassword();
    const typed = stop(await p.password({ message: `Password for ${user} (empty: use ${suggestion})` }));
    password = typed || suggestion;
    if (!typed) p.note(`${user}\n${suggestion}`, 'Your login (shown once)');
  }
  const tlsKind =
    known.tls?.kind ??
    stop(
      await p.select({
        message: 'TLS certificate',
        options: [
          { value: 'self-signed' as const, label: 'Self-signed for now', hint: 'clients warn once; replace it later' },
          { value: 'files' as const, label: 'I have certificate files', hint: 'PEM, e.g. from certbot' },
        ],
      }),
    );
  let tls: SetupAnswers['tls'] = { kind: 'self-signed' };
  if (known.tls) tls = known.tls;
  else if (tlsKind === 'files') {
    const cert = stop(await p.text({ message: 'Certificate file (PEM, with chain)', initialValue: `/etc/letsencrypt/live/${hostname}/fullchain.pem` }));
    const key = stop(await p.text({ message: 'Private key file (PEM)', initialValue: `/etc/letsencrypt/live/${hostname}/privkey.pem` }));
    tls = { kind: 'files', cert, key };
  }
  let relay = known.relay;
  if (!relay) {
    const mode = stop(
      await p.select({
        message: 'How should mail leave this server?',
        options: [
          { value: 'mx' as const, label: 'Directly', hint: 'needs outbound port 25 (often blocked on home lines) and reverse DNS' },
          { value: 'smarthost' as const, label: "Through my provider's server (smarthost)", hint: 'host:port, user and password' },
        ],
      }),
    );
    if (mode === 'mx') relay = { mode: 'mx' };
    else {
      const smarthost = stop(await p.text({ message: 'Smarthost (host:port)', placeholder: 'smtp.provider.example:587', validate: (v) => (v && HOST_PORT.test(v) ? undefined : 'host:port') }));
      const smUser = stop(await p.text({ message: 'Smarthost user (empty: none)', defaultValue: '' }));
      const smPassword = smUser ? stop(await p.password({ message: 'Smarthost password' })) : undefined;
      relay = { mode: 'smarthost', smarthost, user: smUser || undefined, password: smPassword || undefined };
    }
  }
  const ports =
    known.ports ??
    stop(
      await p.select({
        message: 'Ports',
        options: [
          { value: 'standard' as const, label: 'Standard (25, 587, 465, 993, ...)', hint: 'needs root or CAP_NET_BIND_SERVICE' },
          { value: 'high' as const, label: 'High (2525, 2587, 1993, ...)', hint: 'your router or firewall maps the standard ports to them' },
        ],
      }),
    );
  return { domain, hostname, user, password, tls, relay, ports, force: known.force };
}
