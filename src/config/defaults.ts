// The first run: when the config folder has no hearth.toml, write a working configuration for
// a local trial (everything on 127.0.0.1, a self-signed certificate, one user with a random
// password) so `hearth serve` works out of the box. The caller prints the credentials once;
// they are not logged.
import { randomInt } from 'node:crypto';
import { access, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { generate } from 'selfsigned';
import type { Logger } from '../core/log.ts';
import { silentLogger } from '../core/log.ts';
import { ALIASES_FILE_NAME, USERS_FILE_NAME } from './directory.ts';
import { writeFileAtomic, writeFileExclusive } from './fsutil.ts';
import { CONFIG_FILE_NAME } from './load.ts';
import { hashPassword } from './users.ts';

export type DefaultSetup = { created: boolean; address?: string; password?: string; configDir: string };

export const DEFAULT_USER = 'me@localhost';

export const DEFAULT_CONFIG_TOML = `# hearth.toml: the configuration of this hearth mail server.
# Written by the first \`hearth serve\` for a local trial: everything listens on 127.0.0.1
# only, with a self-signed certificate. config/hearth.example.toml lists every key.
# hearth follows changes to this file while it runs; listener and TLS changes need a restart.

# The name this server gives itself in SMTP greetings and Received: headers.
# For a real server, its public DNS name (the one your MX record points at).
hostname = "localhost"

# Domains whose mail is delivered here. Mail to any other domain is relayed,
# and only for authenticated users.
domains = ["localhost"]

# Where the Maildirs, the outbound queue and the indexes live.
# Relative paths are relative to this config folder.
data_dir = "../maildir"

# How much to log: "fatal", "error", "warn", "info", "debug", "trace" or "silent".
log_level = "info"

# Flush each message to disk before acknowledging it. Leave on.
fsync = true

[tls]
# PEM certificate (with its chain) and private key, relative to this folder.
# These are self-signed for localhost; mail clients will ask you to accept them.
cert = "tls/cert.pem"
key = "tls/key.pem"

[auth]
# When passwords may be sent over a connection without TLS:
# "never", "loopback" (only from this machine) or "always".
plaintext = "loopback"

# Each listener: listen = "host:port"; tls = "plain", "starttls" (upgrade on the
# connection) or "implicit" (TLS from the first byte); enabled = true/false.
# The standard ports (25, 587, 465, 143, 993, 110, 995) need privileges, so the trial
# setup uses high ports.

[listeners.smtp]          # incoming mail from other servers (standard port 25)
listen = "127.0.0.1:2525"
tls = "starttls"

[listeners.submission]    # mail clients sending mail, STARTTLS (standard port 587)
listen = "127.0.0.1:2587"
tls = "starttls"

[listeners.submissions]   # mail clients sending mail, implicit TLS (standard port 465)
listen = "127.0.0.1:2465"
tls = "implicit"

[listeners.imap]          # mail clients reading mail, STARTTLS (standard port 143)
listen = "127.0.0.1:1143"
tls = "starttls"

[listeners.imaps]         # mail clients reading mail, implicit TLS (standard port 993)
listen = "127.0.0.1:1993"
tls = "implicit"

[listeners.pop3]          # POP3, STARTTLS (standard port 110)
listen = "127.0.0.1:1110"
tls = "starttls"

[listeners.pop3s]         # POP3, implicit TLS (standard port 995)
listen = "127.0.0.1:1995"
tls = "implicit"

[listeners.http]          # webmail in the browser
listen = "127.0.0.1:8080"
tls = "plain"

[limits]
# Largest message accepted, e.g. "25MB", "512KB" or a number of bytes.
message_size = "25MB"
# Most recipients per message.
recipients = 100
# Longest protocol line accepted.
line_length = "4KB"
# Open connections allowed from one IP address, and in all.
connections_per_ip = 20
connections = 500

[timeouts]
# How long an idle connection is kept: "30s", "5m", "4h", "5d".
smtp_idle = "5m"
pop3_idle = "10m"
imap_idle = "30m"
# Time an IMAP client has to log in after connecting.
imap_login = "1m"
# On shutdown, how long open connections get to finish.
shutdown_grace = "10s"
`;

const ALIASES_TEMPLATE = `# aliases: where mail for an address goes, besides the users in the users file.
#   alias@domain: target[, target...]
# A target is a user here, another alias, or an address elsewhere (the mail is forwarded).
#   @domain: target
# is a catch-all: mail for any unknown address in that domain (used last).
# hearth reloads this file when it changes.

# RFC 5321 4.5.1: every domain must accept mail for postmaster.
postmaster@localhost: ${DEFAULT_USER}

# family@localhost: me@localhost, partner@example.org
`;

const USERS_HEADER = `# users: one mail user per line, in Dovecot's passwd-file format:
#   user@domain:{SCHEME}hash[:uid:gid:gecos:home:shell:extra]
# Manage it with \`hearth user add|passwd|remove ADDRESS\`; the running server reloads it.
# Plaintext passwords ({PLAIN}, {CLEAR}) are refused.
`;

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** 4 groups of 5 base32 characters (100 bits), easy to read out and type. */
export function randomPassword(): string {
  const groups: string[] = [];
  for (let g = 0; g < 4; g++) {
    let group = '';
    for (let i = 0; i < 5; i++) group += BASE32[randomInt(32)];
    groups.push(group);
  }
  return groups.join('-');
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** A self-signed certificate for localhost, 127.0.0.1 and ::1 (and `hostname`, its CN, when given). */
export async function generateLocalCertificate(hostname = 'localhost'): Promise<{ cert: string; key: string }> {
  const notBeforeDate = new Date(Date.now() - 60_000);
  // 825 days: the longest validity Apple platforms accept for a TLS server certificate
  const notAfterDate = new Date(notBeforeDate.getTime() + 825 * 86_400_000);
  const pems = await generate([{ name: 'commonName', value: hostname }], {
    keySize: 2048,
    algorithm: 'sha256',
    notBeforeDate,
    notAfterDate,
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [...(hostname === 'localhost' ? [] : [{ type: 2 as const, value: hostname }]), { type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }, { type: 7, ip: '::1' }] },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}

/**
 * Create the default configuration in `dir` unless it has a hearth.toml already. Files that
 * exist (a certificate, a users file) are kept; hearth.toml is written last, so an
 * interrupted first run is simply repeated.
 */
export async function ensureDefaultConfig(dir: string, opts: { log?: Logger } = {}): Promise<DefaultSetup> {
  const log = opts.log ?? silentLogger();
  const configDir = resolve(dir);
  const tomlPath = join(configDir, CONFIG_FILE_NAME);
  if (await exists(tomlPath)) return { created: false, configDir };

  await mkdir(join(configDir, 'tls'), { recursive: true, mode: 0o755 });
  const certPath = join(configDir, 'tls', 'cert.pem');
  const keyPath = join(configDir, 'tls', 'key.pem');
  if (!(await exists(certPath)) || !(await exists(keyPath))) {
    const { cert, key } = await generateLocalCertificate();
    // a lone cert or key left by an interrupted run is replaced: the two must match
    await writeFileAtomic(keyPath, key, 0o600);
    await writeFileAtomic(certPath, cert, 0o644);
    log.info({ cert: certPath }, 'created a self-signed TLS certificate for localhost');
  }

  const setup: DefaultSetup = { created: true, configDir };
  const usersPath = join(configDir, USERS_FILE_NAME);
  if (!(await exists(usersPath))) {
    const password = randomPassword();
    const line = `${DEFAULT_USER}:${await hashPassword(password)}\n`;
    if (await writeFileExclusive(usersPath, USERS_HEADER + '\n' + line, 0o600)) {
      setup.address = DEFAULT_USER;
      setup.password = password;
      log.info({ user: DEFAULT_USER }, 'created the first mail user');
    }
  }
  const aliasesPath = join(configDir, ALIASES_FILE_NAME);
  await writeFileExclusive(aliasesPath, ALIASES_TEMPLATE, 0o644);

  if (!(await writeFileExclusive(tomlPath, DEFAULT_CONFIG_TOML, 0o644))) {
    // another process got there first; its configuration stands
    return { created: false, configDir };
  }
  log.info({ file: tomlPath }, 'created a default configuration');
  return setup;
}
