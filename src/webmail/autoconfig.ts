// Client setup over HTTP: what a mail client asks before its user has typed more than an
// address. In charge of
//   - Thunderbird autoconfig (config-v1.1.xml, at /.well-known/autoconfig/mail/ and at /mail/
//     for the autoconfig.<domain> host); it answers without ?emailaddress= too, because some
//     clients (and Thunderbird's own /.well-known probe) leave it out;
//   - Microsoft Autodiscover: the POX protocol (POST /autodiscover/autodiscover.xml, Outlook's
//     "outlook" response schema) and the autodiscover.json probe of newer Outlooks, which is
//     answered with the POX URL instead of a 404 that makes Outlook give up on the domain;
//   - the MTA-STS policy (RFC 8461 3.2) at /.well-known/mta-sts.txt;
//   - an Apple configuration profile (.mobileconfig) for the logged-in webmail user.
// What to advertise (host names, public ports, TLS kind) comes in as ClientSettings, computed
// from the config by src/setup/dns-records.ts; nothing here reads the config.
import { createHash } from 'node:crypto';
import { Hono } from 'hono';
import type { Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';

/** SSL = TLS from the first byte (RFC 8314 "implicit TLS"); STARTTLS = upgraded; plain = neither. */
export type ClientSocket = 'SSL' | 'STARTTLS' | 'plain';
export type ClientService = 'imaps' | 'imap' | 'pop3s' | 'pop3' | 'submissions' | 'submission';
export type ClientEndpoint = { service: ClientService; protocol: 'imap' | 'pop3' | 'smtp'; host: string; port: number; socket: ClientSocket };

export type ClientSettings = {
  /** The name clients connect to. */
  hostname: string;
  /** The name the MX records point at (the SMTP hostname). */
  mxHost: string;
  /** Our mail domains; the first is the default when a request names none. */
  domains: string[];
  displayName?: string;
  /** What clients may use, best first within each protocol (implicit TLS before STARTTLS, RFC 8314 5.1). */
  endpoints: ClientEndpoint[];
  /** Public HTTPS port of the web listener (Autodiscover SRV); 0 when there is none. */
  httpsPort: number;
  mtaSts: { mode: 'none' | 'testing' | 'enforce'; maxAgeSeconds: number };
};

export type AutoconfigDeps = {
  settings: ClientSettings;
  /** The logged-in webmail user of this request, if any (the .mobileconfig is per user). */
  sessionOf(c: Context): { address: string } | undefined;
  /** The address a phone set-up token (`?t=`, from the QR code) was signed for, if it is valid. */
  setupLinkOwner?(token: string): string | undefined;
};

/** Standard ports on `hostname`, for when the caller passes no settings (tests, embedding). */
export function defaultClientSettings(hostname: string, domains: string[] = [hostname]): ClientSettings {
  const at = (service: ClientService, protocol: ClientEndpoint['protocol'], port: number, socket: ClientSocket): ClientEndpoint => ({ service, protocol, host: hostname, port, socket });
  return {
    hostname,
    mxHost: hostname,
    domains,
    endpoints: [at('imaps', 'imap', 993, 'SSL'), at('imap', 'imap', 143, 'STARTTLS'), at('pop3s', 'pop3', 995, 'SSL'), at('pop3', 'pop3', 110, 'STARTTLS'), at('submissions', 'smtp', 465, 'SSL'), at('submission', 'smtp', 587, 'STARTTLS')],
    httpsPort: 443,
    mtaSts: { mode: 'testing', maxAgeSeconds: 604_800 },
  };
}

export function xmlEscape(text: string): string {
  return text.replace(/[<>&"']/g, (ch) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[ch]!);
}

const EMAIL = /^[^\s@<>"'&]{1,64}@([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*)$/i;

/** The address's domain when it is a plausible address, lower-cased. */
function domainOf(address: string): string | undefined {
  return EMAIL.exec(address.trim())?.[1].toLowerCase();
}

/**
 * The domain a request is about: the address's, else the Host header's (autoconfig.example.org
 * → example.org), else our first domain. `null` when the address names a domain not ours.
 */
function requestDomain(settings: ClientSettings, address: string | undefined, host: string | undefined): string | null {
  if (address) {
    const d = domainOf(address);
    return d && settings.domains.includes(d) ? d : null;
  }
  const h = (host ?? '').toLowerCase().replace(/:\d+$/, '');
  for (const candidate of [h, h.replace(/^(autoconfig|autodiscover|mta-sts|mail)\./, '')]) if (settings.domains.includes(candidate)) return candidate;
  return settings.domains[0] ?? settings.hostname;
}

/** Endpoints of one protocol; plain ones only when there is no TLS alternative. */
function usable(settings: ClientSettings, protocol: ClientEndpoint['protocol']): ClientEndpoint[] {
  const all = settings.endpoints.filter((e) => e.protocol === protocol);
  const secure = all.filter((e) => e.socket !== 'plain');
  return secure.length ? secure : all;
}

/** Thunderbird's config-v1.1.xml (https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat). */
export function thunderbirdConfig(settings: ClientSettings, domain: string): string {
  const server = (tag: 'incomingServer' | 'outgoingServer', e: ClientEndpoint) =>
    `    <${tag} type="${e.protocol}">\n` +
    `      <hostname>${xmlEscape(e.host)}</hostname>\n` +
    `      <port>${e.port}</port>\n` +
    `      <socketType>${e.socket}</socketType>\n` +
    // hearth logs users in by their full address, on every protocol
    `      <username>%EMAILADDRESS%</username>\n` +
    `      <authentication>password-cleartext</authentication>\n` +
    `    </${tag}>\n`;
  const others = settings.domains.filter((d) => d !== domain);
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<clientConfig version="1.1">\n` +
    `  <emailProvider id="${xmlEscape(domain)}">\n` +
    [domain, ...others].map((d) => `    <domain>${xmlEscape(d)}</domain>\n`).join('') +
    `    <displayName>${xmlEscape(settings.displayName ?? domain)}</displayName>\n` +
    `    <displayShortName>${xmlEscape(settings.displayName ?? domain)}</displayShortName>\n` +
    [...usable(settings, 'imap'), ...usable(settings, 'pop3')].map((e) => server('incomingServer', e)).join('') +
    usable(settings, 'smtp').map((e) => server('outgoingServer', e)).join('') +
    `  </emailProvider>\n` +
    `</clientConfig>\n`
  );
}

const AUTODISCOVER_NS = 'http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006';
const OUTLOOK_NS = 'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a';

/** The POX Autodiscover answer for Outlook (MS-OXDSCLI 2.2.4). */
export function autodiscoverXml(settings: ClientSettings, address: string | undefined): string {
  const protocol = (e: ClientEndpoint) =>
    `      <Protocol>\n` +
    `        <Type>${e.protocol.toUpperCase()}</Type>\n` +
    `        <Server>${xmlEscape(e.host)}</Server>\n` +
    `        <Port>${e.port}</Port>\n` +
    `        <DomainRequired>off</DomainRequired>\n` +
    (address ? `        <LoginName>${xmlEscape(address)}</LoginName>\n` : '') +
    `        <SPA>off</SPA>\n` +
    // Encryption: SSL = implicit TLS, TLS = STARTTLS (MS-OXDSCLI 2.2.4.1.1.2.4.1.19)
    (e.socket === 'plain' ? `        <SSL>off</SSL>\n` : `        <Encryption>${e.socket === 'SSL' ? 'SSL' : 'TLS'}</Encryption>\n`) +
    `        <AuthRequired>on</AuthRequired>\n` +
    (e.protocol === 'smtp' ? `        <UsePOPAuth>on</UsePOPAuth>\n        <SMTPLast>off</SMTPLast>\n` : '') +
    `      </Protocol>\n`;
  const best = (p: ClientEndpoint['protocol']) => usable(settings, p).slice(0, 1);
  return (
    `<?xml version="1.0" encoding="utf-8"?>\n` +
    `<Autodiscover xmlns="${AUTODISCOVER_NS}">\n` +
    `  <Response xmlns="${OUTLOOK_NS}">\n` +
    `    <Account>\n` +
    `      <AccountType>email</AccountType>\n` +
    `      <Action>settings</Action>\n` +
    [...best('imap'), ...best('pop3'), ...best('smtp')].map(protocol).join('') +
    `    </Account>\n` +
    `  </Response>\n` +
    `</Autodiscover>\n`
  );
}

function autodiscoverError(code: number, message: string): string {
  return (
    `<?xml version="1.0" encoding="utf-8"?>\n` +
    `<Autodiscover xmlns="${AUTODISCOVER_NS}">\n` +
    `  <Response>\n` +
    `    <Error Time="${new Date().toISOString().slice(11, 19)}" Id="hearth">\n` +
    `      <ErrorCode>${code}</ErrorCode>\n` +
    `      <Message>${xmlEscape(message)}</Message>\n` +
    `      <DebugData />\n` +
    `    </Error>\n` +
    `  </Response>\n` +
    `</Autodiscover>\n`
  );
}

/** The policy file (RFC 8461 3.2): CRLF lines, our MX host as the only mx. */
export function mtaStsPolicy(settings: ClientSettings): string {
  const lines = ['version: STSv1', `mode: ${settings.mtaSts.mode}`, ...(settings.mtaSts.mode === 'none' ? [] : [`mx: ${settings.mxHost}`]), `max_age: ${settings.mtaSts.maxAgeSeconds}`];
  return lines.map((l) => `${l}\r\n`).join('');
}

/** The id of the _mta-sts TXT record: changes exactly when the policy does (RFC 8461 3.1). */
export function mtaStsId(settings: ClientSettings): string {
  return createHash('sha256').update(mtaStsPolicy(settings)).digest('hex').slice(0, 20);
}

/** A UUID derived from a name, so a re-downloaded profile replaces the installed one. */
function stableUuid(name: string): string {
  const h = createHash('sha256').update(name).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h[16], 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`.toUpperCase();
}

/** An unsigned Apple configuration profile with one com.apple.mail.managed payload; no password in it. */
export function mobileconfig(settings: ClientSettings, address: string): string {
  const incoming = usable(settings, 'imap')[0] ?? usable(settings, 'pop3')[0];
  const outgoing = usable(settings, 'smtp')[0];
  if (!incoming || !outgoing) throw new Error('no incoming or outgoing mail service is advertised');
  const reverse = settings.hostname.split('.').reverse().join('.');
  const id = `${reverse}.hearth.mail.${address.replace(/[^A-Za-z0-9.-]/g, '-')}`;
  const str = (key: string, value: string) => `      <key>${key}</key>\n      <string>${xmlEscape(value)}</string>\n`;
  const int = (key: string, value: number) => `      <key>${key}</key>\n      <integer>${value}</integer>\n`;
  const bool = (key: string, value: boolean) => `      <key>${key}</key>\n      <${value}/>\n`;
  const name = settings.displayName ?? address.slice(address.lastIndexOf('@') + 1);
  const payload =
    str('EmailAccountDescription', address) +
    str('EmailAccountType', incoming.protocol === 'imap' ? 'EmailTypeIMAP' : 'EmailTypePOP') +
    str('EmailAddress', address) +
    str('IncomingMailServerAuthentication', 'EmailAuthPassword') +
    str('IncomingMailServerHostName', incoming.host) +
    int('IncomingMailServerPortNumber', incoming.port) +
    // iOS speaks STARTTLS on the non-implicit ports when UseSSL is set
    bool('IncomingMailServerUseSSL', incoming.socket !== 'plain') +
    str('IncomingMailServerUsername', address) +
    str('OutgoingMailServerAuthentication', 'EmailAuthPassword') +
    str('OutgoingMailServerHostName', outgoing.host) +
    int('OutgoingMailServerPortNumber', outgoing.port) +
    bool('OutgoingMailServerUseSSL', outgoing.socket !== 'plain') +
    str('OutgoingMailServerUsername', address) +
    bool('OutgoingPasswordSameAsIncomingPassword', true) +
    str('PayloadDescription', `Mail account ${address}`) +
    str('PayloadDisplayName', address) +
    str('PayloadIdentifier', `${id}.account`) +
    str('PayloadType', 'com.apple.mail.managed') +
    str('PayloadUUID', stableUuid(`${id}.account`)) +
    int('PayloadVersion', 1) +
    bool('PreventAppSheet', false) +
    bool('PreventMove', false) +
    bool('SMIMEEnabled', false);
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n` +
    `<plist version="1.0">\n<dict>\n` +
    `  <key>PayloadContent</key>\n  <array>\n    <dict>\n${payload}    </dict>\n  </array>\n` +
    `  <key>PayloadDescription</key>\n  <string>${xmlEscape(`Sets up ${address} on ${settings.hostname}`)}</string>\n` +
    `  <key>PayloadDisplayName</key>\n  <string>${xmlEscape(`${name} mail`)}</string>\n` +
    `  <key>PayloadIdentifier</key>\n  <string>${xmlEscape(id)}</string>\n` +
    `  <key>PayloadRemovalDisallowed</key>\n  <false/>\n` +
    `  <key>PayloadType</key>\n  <string>Configuration</string>\n` +
    `  <key>PayloadUUID</key>\n  <string>${stableUuid(id)}</string>\n` +
    `  <key>PayloadVersion</key>\n  <integer>1</integer>\n` +
    `</dict>\n</plist>\n`
  );
}

const XML = 'application/xml; charset=utf-8';
/** Clients ask again on every account setup; a short cache spares nothing and hides fixes. */
const SHORT_CACHE = 'public, max-age=300';

/** The routes; mounted at / on the webmail app. */
export function autoconfigRoutes(deps: AutoconfigDeps): Hono {
  const { settings } = deps;
  const app = new Hono();

  const thunderbird = (c: Context) => {
    const address = c.req.query('emailaddress') || undefined;
    const domain = requestDomain(settings, address, c.req.header('host'));
    if (domain === null) return c.text(`this server does not handle mail for that address's domain (it serves ${settings.domains.join(', ')})\n`, 404);
    return c.body(thunderbirdConfig(settings, domain), 200, { 'Content-Type': XML, 'Cache-Control': SHORT_CACHE });
  };
  app.get('/.well-known/autoconfig/mail/config-v1.1.xml', thunderbird);
  app.get('/mail/config-v1.1.xml', thunderbird);

  const pox = async (c: Context) => {
    let address: string | undefined;
    let schema = OUTLOOK_NS;
    if (c.req.method === 'POST') {
      const body = await c.req.text();
      address = /<EMailAddress>\s*([^<]{1,320}?)\s*<\/EMailAddress>/i.exec(body)?.[1];
      schema = /<AcceptableResponseSchema>\s*([^<]{1,200}?)\s*<\/AcceptableResponseSchema>/i.exec(body)?.[1] ?? OUTLOOK_NS;
    }
    const headers = { 'Content-Type': XML, 'Cache-Control': 'no-store' };
    if (/mobilesync/i.test(schema)) return c.body(autodiscoverError(600, 'Invalid Request: this server offers IMAP, POP3 and SMTP, not Exchange ActiveSync'), 200, headers);
    if (address !== undefined && requestDomain(settings, address, undefined) === null) return c.body(autodiscoverError(500, 'The e-mail address cannot be found.'), 200, headers);
    return c.body(autodiscoverXml(settings, address?.toLowerCase()), 200, headers);
  };
  const limit = bodyLimit({ maxSize: 64 << 10, onError: (c) => c.text('request too large', 413) });
  for (const path of ['/autodiscover/autodiscover.xml', '/Autodiscover/Autodiscover.xml', '/AutoDiscover/AutoDiscover.xml']) {
    app.post(path, limit, pox);
    app.get(path, pox);
  }

  // Outlook's JSON probe: AutodiscoverV1 gets the POX URL; other protocols (EWS, ActiveSync)
  // get Exchange's own "not supported" answer, so Outlook falls back instead of stopping.
  const json = (c: Context) => {
    const protocol = c.req.query('Protocol') ?? c.req.query('protocol') ?? 'AutodiscoverV1';
    if (protocol.toLowerCase() !== 'autodiscoverv1') {
      return c.json({ ErrorCode: 'ProtocolNotSupported', ErrorMessage: `The given protocol value '${protocol.slice(0, 40)}' is invalid. Supported values are 'AutodiscoverV1'.` }, 400);
    }
    const host = settings.httpsPort === 443 || settings.httpsPort === 0 ? settings.hostname : `${settings.hostname}:${settings.httpsPort}`;
    return c.json({ Protocol: 'AutodiscoverV1', Url: `https://${host}/autodiscover/autodiscover.xml` });
  };
  for (const base of ['/autodiscover/autodiscover.json', '/Autodiscover/Autodiscover.json', '/AutoDiscover/AutoDiscover.json']) {
    app.get(base, json);
    app.get(`${base}/*`, json);
  }

  app.get('/.well-known/mta-sts.txt', (c) => {
    if (settings.mtaSts.mode === 'none') return c.text('no MTA-STS policy here ([client] mta_sts_mode = "none")\n', 404);
    return c.body(mtaStsPolicy(settings), 200, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': SHORT_CACHE });
  });

  // With the session cookie, or with a signed, short-lived `?t=` token for a phone that scanned
  // the webmail's QR code (a token that does not check out is refused even with a session).
  app.get('/api/client/mobileconfig', (c) => {
    const token = c.req.query('t');
    let address: string | undefined;
    if (token !== undefined) {
      address = deps.setupLinkOwner?.(token);
      if (!address) return c.json({ error: 'this set-up link is not valid or has expired; make a new one in the webmail' }, 403);
    } else {
      address = deps.sessionOf(c)?.address;
      if (!address) return c.json({ error: 'not logged in' }, 401);
    }
    const file = `${address.replace(/[^A-Za-z0-9@._-]/g, '_')}.mobileconfig`;
    if (usable(settings, 'smtp').length === 0 || usable(settings, 'imap').length + usable(settings, 'pop3').length === 0) {
      return c.json({ error: 'this server offers no incoming or no outgoing mail service to set up (see [listeners] in the config)' }, 404);
    }
    return c.body(mobileconfig(settings, address), 200, {
      'Content-Type': 'application/x-apple-aspen-config',
      'Content-Disposition': `attachment; filename="${file}"`,
      'Cache-Control': 'no-store',
    });
  });

  return app;
}
