// The shape of config/hearth.toml, validated with zod. Strict objects everywhere: an unknown
// key is an error (a typo must not silently fall back to a default).
import { z } from 'zod';

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3 };
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "25MB", "512k" or a plain number of bytes. */
export const byteSize = z.union([z.number(), z.string()]).transform((value, ctx) => {
    const text = String(value);
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
    const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined;
    if (!m || unit === undefined) {
      ctx.addIssue({ code: 'custom', message: `"${text}" is not a size: write a number of bytes or e.g. "25MB", "512KB"` });
      return z.NEVER;
    }
    return Math.round(Number(m[1]) * unit);
  });

/** "30s", "5m", "4h", "5d" or a plain number of milliseconds. */
export const duration = z.union([z.number(), z.string()]).transform((value, ctx) => {
    const text = typeof value === 'number' ? `${value}ms` : value;
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/.exec(text);
    if (!m) {
      ctx.addIssue({ code: 'custom', message: `"${text}" is not a duration: write e.g. "30s", "5m", "4h" or "5d"` });
      return z.NEVER;
    }
    return Math.round(Number(m[1]) * DURATION_UNITS[m[2]]);
  });

/** "127.0.0.1:2525", "[::1]:2525", "0.0.0.0:25" or ":25" (all addresses). */
export const listenAddress = z.string().transform((text, ctx) => {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]*)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : -1;
  if (!m || port < 0 || port > 65535) {
    ctx.addIssue({ code: 'custom', message: `"${text}" is not host:port: write e.g. "127.0.0.1:2525", "[::1]:993" or ":25"` });
    return z.NEVER;
  }
  return { host: m[1] ?? (m[2] || '::'), port };
});
export type ListenAddress = { host: string; port: number };

export const TLS_MODES = ['plain', 'starttls', 'implicit'] as const;
export type TlsMode = (typeof TLS_MODES)[number];

const listener = z.strictObject({
  listen: listenAddress,
  tls: z.enum(TLS_MODES),
  enabled: z.boolean().default(true),
});
export type ListenerConfig = z.infer<typeof listener>;

const domainName = z.string().regex(/^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i, 'is not a domain name (letters, digits, hyphens and dots)').transform((d) => d.toLowerCase());

export const SERVICES = ['smtp', 'submission', 'submissions', 'imap', 'imaps', 'pop3', 'pop3s', 'http'] as const;
export type ServiceName = (typeof SERVICES)[number];

// --- Inbound trust (issue 6): sender authentication, abuse limits, greylisting, DNSBL ------
// Kept together so the rest of the schema can change around it.

const inboundSection = z
  .strictObject({
    /** Check SPF, DKIM, DMARC and ARC on port 25 and add Authentication-Results. */
    authentication: z.boolean().default(true),
    /** Apply all checks and limits to loopback clients too (tests, benchmarks). */
    check_loopback: z.boolean().default(false),
    /** Refuse mail that fails DMARC where the domain's policy is p=reject (550 5.7.1). */
    dmarc_reject: z.boolean().default(true),
    /** Deliver mail that fails DMARC under p=quarantine (or p=reject, when not refused) into Junk. */
    dmarc_quarantine: z.boolean().default(true),
    junk_folder: z.string().min(1).default('Junk'),
    /** Refuse SPF "fail" (-all) when the From domain has no DMARC policy; otherwise only marked. */
    reject_spf_fail: z.boolean().default(false),
    /** Timeout of one DNS query of the checks and DNSBL (retried once); servers come from [dns]. */
    dns_timeout: duration.prefault('3s'),
    /** All DNS for one message's checks must be done within this; otherwise 451 4.4.3. */
    dns_deadline: duration.prefault('20s'),
    /** DNS lookups one message's checks may make (SPF itself stops at 10). */
    dns_max_lookups: z.number().int().min(1).default(50),
    /** Checked messages up to this size are held in memory while checked; larger ones spill to a temp file. */
    spool_memory: byteSize.prefault('1MB'),
    /** Per client address (IPv6: per /64); 0 turns a limit off. */
    connections_per_minute: z.number().int().min(0).default(60),
    messages_per_minute: z.number().int().min(0).default(120),
    /** Unknown recipients a client may try (within failed_rcpt_window) before 421 and disconnect. */
    max_failed_rcpts: z.number().int().min(0).default(10),
    failed_rcpt_window: duration.prefault('10m'),
  })
  .prefault({});

const greylistSection = z
  .strictObject({
    enabled: z.boolean().default(false),
    /** How long a new (network, sender, recipient) triplet must wait before its retry is accepted. */
    delay: duration.prefault('5m'),
    /** A triplet not retried within this time is forgotten. */
    retry_window: duration.prefault('2d'),
    /** A whitelisted triplet unused for this long is forgotten. */
    expire: duration.prefault('35d'),
  })
  .prefault({});

const dnsblSection = z
  .strictObject({
    /** Blocklist zones, e.g. ["zen.spamhaus.org"]; none by default. */
    zones: z.array(domainName).default([]),
    /** For all zones together; a list that does not answer in time does not block mail. */
    timeout: duration.prefault('2s'),
  })
  .prefault({});

/** rspamd's HTTP API as a second opinion on inbound mail (src/smtp/rspamd.ts); off without a url. */
const rspamdSection = z
  .strictObject({
    /** rspamd's normal worker, e.g. "http://127.0.0.1:11333"; empty: rspamd is not asked. */
    url: z.union([z.literal(''), z.url({ protocol: /^https?$/ })]).default(''),
    /** For the whole scan; past it the message is accepted without rspamd's verdict. */
    timeout: duration.prefault('5s'),
    /** Sent as rspamd's Password header, if set. */
    password: z.string().optional(),
    /** Refuse mail rspamd says to reject (550 5.7.1); false: it goes to Junk. */
    reject: z.boolean().default(true),
    /** Defer mail rspamd says to soft-reject (451 4.7.1); false: accepted. */
    soft_reject: z.boolean().default(true),
    /** Junk anything scoring at least this, whatever rspamd's action; unset: the action decides. */
    junk_score: z.number().optional(),
  })
  .prefault({});
// --- end of inbound trust ------------------------------------------------------------------

// --- Routing (issue 6): plus-addressing, forwarding with SRS, loop protection, vacation ------
const routingSection = z
  .strictObject({
    /** Characters that start a tag in user+tag@domain (each one does); "" turns plus-addressing off. */
    plus_delimiter: z.string().max(8).regex(/^[^@\sA-Za-z0-9.]*$/, 'may not contain letters, digits, dots, "@" or spaces').default('+'),
    /** File user+tag@ mail into the user's folder "tag" when it exists (otherwise INBOX). */
    plus_to_folder: z.boolean().default(false),
    /** SRS secret(s), one per line (the first signs), relative to the config folder; made (0600) on first use. */
    srs_secret_file: z.string().min(1).default('srs.secret'),
    /** How long a bounce to an SRS address is accepted after the forward (postsrsd: 21 days). */
    srs_max_age: duration.prefault('21d'),
    /** Refuse (554 5.4.6) a message that already has more Received: fields than this. */
    max_received: z.number().int().min(5).max(1000).default(50),
    /** Add an ARC seal (RFC 8617) to forwarded mail, signed with the alias domain's DKIM key. */
    forward_arc_seal: z.boolean().default(false),
    /** A vacation auto-reply goes to one sender at most once per this long (RFC 3834 2). */
    vacation_interval: duration.prefault('7d'),
  })
  .prefault({});
// --- end of routing ------------------------------------------------------------------------

// --- Gathering (issue 7): collecting mail from remote IMAP/POP3 accounts ------------------
// The accounts themselves live under the data directory (`hearth gather add`), not here.
const gatherSection = z
  .strictObject({
    /** Run the gather accounts on their schedule (off: only `hearth gather run`). */
    enabled: z.boolean().default(true),
    /** Default time between pulls of an account (each account may set its own); jittered ±10 %. */
    interval: duration.prefault('5m'),
    /** Watch IMAP accounts with IDLE for near-instant pickup where the server offers it. */
    idle: z.boolean().default(true),
    /** After network errors, retries back off from first_backoff, doubling, up to max_backoff. */
    first_backoff: duration.prefault('1m'),
    max_backoff: duration.prefault('1h'),
    /** Network timeout per wait (connect, each reply). */
    timeout: duration.prefault('1m'),
    /** Messages delivered locally at once while pulling (each held in memory). */
    parallel: z.number().int().min(1).max(64).default(8),
    /** Messages per durable ledger commit. */
    batch: z.number().int().min(1).max(1000).default(100),
    /** Score gathered INBOX mail with the owner's junk filter (junk goes to [inbound] junk_folder). */
    junk_filter: z.boolean().default(true),
    /**
     * Check DKIM, ARC and DMARC on gathered mail and add Authentication-Results (SPF is the
     * provider's: there is no connecting IP here); each account may override. DNS as [inbound].
     */
    auth_checks: z.boolean().default(true),
    /** Mail the provider received longer ago than this is not checked (DKIM keys get rotated). */
    auth_max_age: duration.prefault('7d'),
  })
  .prefault({});
// --- end of gathering ----------------------------------------------------------------------

// --- Client setup (issue 9): what mail clients and DNS records are told --------------------
// Autoconfig, Autodiscover, the .mobileconfig profile and `hearth dns` advertise the services of
// [listeners] under `hostname`; this block says so when the public view differs (port mapping,
// a TLS proxy in front of the web listener, another name for clients).
const clientPort = z.number().int().min(0).max(65535);
const clientSection = z
  .strictObject({
    /** The name mail clients connect to (default: hostname); the certificate must cover it. */
    hostname: domainName.optional(),
    /** Public port per service when it differs from its listener's; 0 = do not advertise it. */
    ports: z
      .strictObject({
        submission: clientPort.optional(),
        submissions: clientPort.optional(),
        imap: clientPort.optional(),
        imaps: clientPort.optional(),
        pop3: clientPort.optional(),
        pop3s: clientPort.optional(),
        /** HTTPS port of the web listener as the internet sees it (autoconfig, MTA-STS); default 443. */
        https: clientPort.optional(),
      })
      .prefault({}),
    /** Public IPv4/IPv6 addresses of this server, for the A/AAAA records `hearth dns` prints and checks. */
    addresses: z.array(z.union([z.ipv4(), z.ipv6()])).default([]),
    /** Name shown by mail clients for the account provider (default: the domain). */
    display_name: z.string().min(1).max(100).optional(),
    /** Where DMARC and TLS-RPT reports go (default: postmaster@ each domain). */
    reports_to: z.email().optional(),
    /** The p= of the DMARC record `hearth dns` suggests. */
    dmarc_policy: z.enum(['none', 'quarantine', 'reject']).default('quarantine'),
    /** MTA-STS (RFC 8461) policy served at /.well-known/mta-sts.txt: start with testing. */
    mta_sts_mode: z.enum(['none', 'testing', 'enforce']).default('testing'),
    mta_sts_max_age: duration.prefault('7d'),
  })
  .prefault({});
// --- end of client setup -------------------------------------------------------------------

// --- ACME (issue 9): certificates from Let's Encrypt or another RFC 8555 CA ----------------
// `hearth tls acme` orders one (HTTP-01 on the web listener, which must be reachable as
// http://<each name>/ on port 80); with enabled = true the server also renews it on its own.
const acmeSection = z
  .strictObject({
    /** Renew automatically (a check twice a day; renews when fewer than renew_before remain). */
    enabled: z.boolean().default(false),
    /** The CA's ACME directory. Let's Encrypt staging: https://acme-staging-v02.api.letsencrypt.org/directory */
    directory_url: z.url().default('https://acme-v02.api.letsencrypt.org/directory'),
    /** Contact for expiry and policy mail from the CA (optional). */
    email: z.email().optional(),
    /** Names the certificate covers (default: hostname); each must point at this server. */
    domains: z.array(domainName).default([]),
    /** The ACME account key (made, mode 0600, on first use), relative to the config folder. */
    account_key_file: z.string().min(1).default('tls/acme-account.key'),
    /** Extra CA certificate(s) (PEM) trusted for the directory's HTTPS: only for test CAs like pebble. */
    ca_file: z.string().min(1).optional(),
    renew_before: duration.prefault('30d'),
  })
  .prefault({});
// --- end of ACME ----------------------------------------------------------------------------

export const ConfigSchema = z.strictObject({
  /** The name this server gives itself in greetings and Received: headers. */
  hostname: domainName,
  /** Domains whose mail is delivered here. */
  domains: z.array(domainName).min(1, 'name at least one local domain'),
  /** Where Maildirs, the queue and indexes live; relative paths are relative to the config folder. */
  data_dir: z.string().min(1).default('../maildir'),
  log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Flush message files and folders to disk before acknowledging (keep on outside benchmarks of unsafe setups). */
  fsync: z.boolean().default(true),
  tls: z
    .strictObject({
      cert: z.string().default('tls/cert.pem'),
      key: z.string().default('tls/key.pem'),
    })
    .prefault({}),
  listeners: z.strictObject(Object.fromEntries(SERVICES.map((s) => [s, listener.optional()])) as Record<ServiceName, z.ZodOptional<typeof listener>>).prefault({}),
  auth: z
    .strictObject({
      /** Allow passwords over unencrypted connections: never, only from loopback, or always. */
      plaintext: z.enum(['never', 'loopback', 'always']).default('loopback'),
      /** Failed logins from one address (within lockout) before it is locked out. */
      max_failures: z.number().int().min(1).default(10),
      /** How long a locked-out address (or guessed account) must wait. */
      lockout: duration.prefault('15m'),
      /** Delay after a failed login; doubles with each further failure, up to max_failure_delay. */
      failure_delay: duration.prefault('250ms'),
      max_failure_delay: duration.prefault('8s'),
    })
    .prefault({}),
  limits: z
    .strictObject({
      message_size: byteSize.prefault(25 * 1024 * 1024),
      recipients: z.number().int().min(1).default(100),
      line_length: byteSize.prefault(4096),
      connections_per_ip: z.number().int().min(1).default(20),
      connections: z.number().int().min(1).default(500),
      /** POP3 commands per second per connection before further ones are delayed (not refused). */
      pop3_commands_per_second: z.number().int().min(1).default(10_000),
    })
    .prefault({}),
  timeouts: z
    .strictObject({
      smtp_idle: duration.prefault('5m'),
      pop3_idle: duration.prefault('10m'),
      imap_idle: duration.prefault('30m'),
      imap_login: duration.prefault('1m'),
      /** POP3 authentication deadline: from connect to a successful login. */
      pop3_login: duration.prefault('1m'),
      shutdown_grace: duration.prefault('10s'),
    })
    .prefault({}),
  // --- sending: outbound relay, queue, DNS ---
  relay: z
    .strictObject({
      /** "mx" delivers straight to each domain's MX; "smarthost" hands everything to one server. */
      mode: z.enum(['mx', 'smarthost']).default('mx'),
      /** host:port of the smarthost (e.g. your provider's submission server). */
      smarthost: z.string().optional(),
      smarthost_tls: z.enum(['starttls', 'implicit', 'none']).default('starttls'),
      smarthost_user: z.string().optional(),
      /** File (relative to the config folder, mode 0600) holding the smarthost password. */
      smarthost_password_file: z.string().optional(),
      /** Port of remote MX servers: 25 on the internet; tests point it at loopback servers. */
      mx_port: z.number().int().min(1).max(65535).default(25),
      /** Refuse to deliver to an MX that does not offer STARTTLS (default: use it when offered). */
      require_tls: z.boolean().default(false),
      // Connection reuse (src/smtp/relay-pool.ts; the defaults are its DEFAULT_RELAY_POOL).
      /** How long a delivered-over connection waits for the next message to the same MX or smarthost. */
      pool_idle_time: duration.prefault('5s'),
      /** Idle connections kept per destination; 0 turns reuse off. */
      pool_max_idle_per_destination: z.number().int().min(0).default(4),
      /** Idle connections kept in all; 0 turns reuse off. */
      pool_max_idle: z.number().int().min(0).default(32),
      /** Messages over one connection before it is closed (the next one opens a new connection). */
      pool_max_messages_per_connection: z.number().int().min(1).default(100),
    })
    .prefault({}),
  queue: z
    .strictObject({
      first_retry: duration.prefault('5m'),
      max_retry: duration.prefault('4h'),
      lifetime: duration.prefault('5d'),
      /** Tell the sender once when a message has waited this long; 0 = never. */
      delay_warning: duration.prefault('4h'),
      max_concurrent: z.number().int().min(1).default(20),
      max_per_domain: z.number().int().min(1).default(4),
    })
    .prefault({}),
  dns: z
    .strictObject({
      /** Resolvers as "ip" or "ip:port"; empty = the system's. */
      servers: z.array(z.string()).default([]),
      timeout: duration.prefault('10s'),
      /** Answers the inbound checks (SPF, DKIM, DMARC, ARC, DNSBL) keep in memory; 0 turns the cache off. */
      cache_size: z.number().int().min(0).default(10_000),
      /** Longest an answer is kept (A/AAAA: their TTL, if shorter; node:dns reports no TTL for TXT/MX/PTR). */
      cache_max_ttl: duration.prefault('5m'),
      /** How long "no such name / no such record" is remembered (RFC 2308 negative caching). */
      cache_negative_ttl: duration.prefault('1m'),
    })
    .prefault({}),
  junk: z
    .strictObject({
      /** A per-user Bayesian filter: mail scoring above the threshold goes to Junk; moves into/out of Junk teach it. */
      enabled: z.boolean().default(true),
      threshold: z.number().min(0.5).max(1).default(0.95),
    })
    .prefault({}),
  // inbound trust (issue 6): sections defined above
  inbound: inboundSection,
  greylist: greylistSection,
  dnsbl: dnsblSection,
  rspamd: rspamdSection,
  // routing (issue 6): section defined above
  routing: routingSection,
  // gathering (issue 7): section defined above
  gather: gatherSection,
  // client setup (issue 9): section defined above
  client: clientSection,
  // ACME (issue 9): section defined above
  acme: acmeSection,
});

export type HearthConfig = z.output<typeof ConfigSchema>;
