// Client setup over HTTP: Thunderbird autoconfig, Outlook Autodiscover (POX and the JSON probe),
// the MTA-STS policy, and the .mobileconfig profile, on the webmail app as main.ts mounts them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { parseConfigText } from '../../src/config/load.ts';
import { clientSettings } from '../../src/setup/dns-records.ts';
import { mtaStsId } from '../../src/webmail/autoconfig.ts';
import type { ClientSettings } from '../../src/webmail/autoconfig.ts';
import { client, makeHarness } from './api-harness.ts';
import type { Harness } from './api-harness.ts';

// A server behind port mapping: IMAPS listens on 1993 but the internet sees 993, and so on.
const TOML = `
hostname = "mx.test.example"
domains = ["example.test", "family.test"]
[listeners.submission]
listen = ":2587"
tls = "starttls"
[listeners.submissions]
listen = ":2465"
tls = "implicit"
[listeners.imap]
listen = ":1143"
tls = "starttls"
[listeners.imaps]
listen = ":1993"
tls = "implicit"
[listeners.pop3s]
listen = ":1995"
tls = "implicit"
[listeners.http]
listen = "127.0.0.1:8080"
tls = "plain"
[client]
hostname = "mail.test.example"
display_name = "Test Mail"
[client.ports]
submission = 587
submissions = 465
imap = 143
imaps = 993
pop3s = 995
`;

const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@', isArray: (name) => ['incomingServer', 'outgoingServer', 'domain', 'Protocol'].includes(name) });
type Server = { '@type': string; hostname: string; port: number; socketType: string; username: string; authentication: string };

function parseXml(text: string): Record<string, unknown> {
  expect(XMLValidator.validate(text)).toBe(true);
  return parser.parse(text) as Record<string, unknown>;
}

let h: Harness;
let api: ReturnType<typeof client>;
let settings: ClientSettings;

describe('client autoconfiguration', () => {
  beforeAll(async () => {
    settings = clientSettings(parseConfigText(TOML, 'hearth.toml'));
    h = await makeHarness({ deps: { client: settings } });
    api = client(h.app);
  });
  afterAll(() => h?.close());

  async function thunderbird(path: string, host = 'mail.test.example'): Promise<{ provider: Record<string, unknown>; incoming: Server[]; outgoing: Server[]; res: Response }> {
    const res = await api.request('GET', path, { headers: { host } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/xml/);
    const doc = parseXml(await res.text()) as { clientConfig: { '@version': string; emailProvider: Record<string, unknown> } };
    expect(doc.clientConfig['@version']).toBe('1.1');
    const provider = doc.clientConfig.emailProvider;
    return { provider, incoming: provider.incomingServer as Server[], outgoing: provider.outgoingServer as Server[], res };
  }

  it('answers Thunderbird at /.well-known/autoconfig with IMAP, POP3 and SMTP as Thunderbird expects them', async () => {
    const { provider, incoming, outgoing } = await thunderbird('/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.test');
    expect(provider['@id']).toBe('example.test');
    expect(provider.domain).toEqual(['example.test', 'family.test']);
    expect(provider.displayName).toBe('Test Mail');
    // advertised (public) ports, implicit TLS first (RFC 8314)
    expect(incoming.map((s) => [s['@type'], s.hostname, s.port, s.socketType])).toEqual([
      ['imap', 'mail.test.example', 993, 'SSL'],
      ['imap', 'mail.test.example', 143, 'STARTTLS'],
      ['pop3', 'mail.test.example', 995, 'SSL'],
    ]);
    expect(outgoing.map((s) => [s['@type'], s.hostname, s.port, s.socketType])).toEqual([
      ['smtp', 'mail.test.example', 465, 'SSL'],
      ['smtp', 'mail.test.example', 587, 'STARTTLS'],
    ]);
    for (const s of [...incoming, ...outgoing]) {
      expect(s.username).toBe('%EMAILADDRESS%');
      expect(s.authentication).toBe('password-cleartext');
      expect(['SSL', 'STARTTLS']).toContain(s.socketType);
    }
  });

  it('answers at /mail/config-v1.1.xml without emailaddress, taking the domain from the autoconfig host name', async () => {
    const { provider, incoming, outgoing } = await thunderbird('/mail/config-v1.1.xml', 'autoconfig.family.test');
    expect(provider['@id']).toBe('family.test');
    expect(incoming.length).toBeGreaterThan(0);
    expect(outgoing.length).toBeGreaterThan(0);
    const bare = await thunderbird('/.well-known/autoconfig/mail/config-v1.1.xml', 'unknown.host.example');
    expect(bare.provider['@id']).toBe('example.test');
  });

  it('says so for an address of a domain it does not serve', async () => {
    const res = await api.request('GET', '/mail/config-v1.1.xml?emailaddress=eve%40elsewhere.example');
    expect(res.status).toBe(404);
    expect(await res.text()).toMatch(/example\.test/);
  });

  it('escapes what it echoes', async () => {
    const res = await api.request('GET', '/mail/config-v1.1.xml?emailaddress=%3Cx%3E%40example.test');
    // not a plausible address: treated as none
    expect(res.status).toBe(404);
    expect(await res.text()).not.toContain('<x>');
  });

  it('answers Outlook POX Autodiscover with IMAP, POP3 and SMTP', async () => {
    const body = `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>Alice@Example.test</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>`;
    for (const path of ['/autodiscover/autodiscover.xml', '/Autodiscover/Autodiscover.xml']) {
      const res = await h.app.request(`http://autodiscover.example.test${path}`, { method: 'POST', headers: { 'content-type': 'text/xml' }, body });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^application\/xml/);
      const doc = parseXml(await res.text()) as { Autodiscover: { '@xmlns': string; Response: { '@xmlns': string; Account: { AccountType: string; Action: string; Protocol: Array<Record<string, unknown>> } } } };
      expect(doc.Autodiscover['@xmlns']).toBe('http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006');
      const account = doc.Autodiscover.Response.Account;
      expect(account.AccountType).toBe('email');
      expect(account.Action).toBe('settings');
      const byType = Object.fromEntries(account.Protocol.map((p) => [p.Type, p]));
      expect(byType.IMAP).toMatchObject({ Server: 'mail.test.example', Port: 993, Encryption: 'SSL', LoginName: 'alice@example.test', SPA: 'off', AuthRequired: 'on' });
      expect(byType.POP3).toMatchObject({ Port: 995, Encryption: 'SSL' });
      expect(byType.SMTP).toMatchObject({ Server: 'mail.test.example', Port: 465, Encryption: 'SSL', LoginName: 'alice@example.test' });
    }
  });

  it('refuses ActiveSync and unknown domains the Autodiscover way', async () => {
    const ask = async (email: string, schema: string) => {
      const res = await h.app.request('http://x/autodiscover/autodiscover.xml', { method: 'POST', body: `<Autodiscover><Request><EMailAddress>${email}</EMailAddress><AcceptableResponseSchema>${schema}</AcceptableResponseSchema></Request></Autodiscover>` });
      expect(res.status).toBe(200);
      return parseXml(await res.text()) as { Autodiscover: { Response: { Error: { ErrorCode: number } } } };
    };
    expect((await ask('alice@example.test', 'http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006')).Autodiscover.Response.Error.ErrorCode).toBe(600);
    expect((await ask('eve@elsewhere.example', 'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a')).Autodiscover.Response.Error.ErrorCode).toBe(500);
  });

  it('answers the autodiscover.json probe instead of a 404', async () => {
    for (const path of ['/autodiscover/autodiscover.json?Email=alice%40example.test&Protocol=AutodiscoverV1', '/autodiscover/autodiscover.json/v1.0/alice@example.test?Protocol=AutodiscoverV1', '/autodiscover/autodiscover.json']) {
      const res = await api.request('GET', path);
      expect(res.status, path).toBe(200);
      expect(await res.json()).toEqual({ Protocol: 'AutodiscoverV1', Url: 'https://mail.test.example/autodiscover/autodiscover.xml' });
    }
    const ews = await api.request('GET', '/autodiscover/autodiscover.json/v1.0/alice@example.test?Protocol=ActiveSync');
    expect(ews.status).toBe(400);
    expect(((await ews.json()) as { ErrorCode: string }).ErrorCode).toBe('ProtocolNotSupported');
  });

  it('serves the MTA-STS policy (RFC 8461 3.2) whose id `hearth dns` publishes', async () => {
    const res = await api.request('GET', '/.well-known/mta-sts.txt', { headers: { host: 'mta-sts.example.test' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(await res.text()).toBe('version: STSv1\r\nmode: testing\r\nmx: mx.test.example\r\nmax_age: 604800\r\n');
    expect(mtaStsId(settings)).toMatch(/^[A-Za-z0-9]{1,32}$/);
  });

  it('gives a logged-in user their .mobileconfig, and nobody else one', async () => {
    expect((await api.request('GET', '/api/client/mobileconfig')).status).toBe(401);
    const login = await api.login('alice@example.test', 'alice-password');
    const res = await api.request('GET', '/api/client/mobileconfig', { login });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/x-apple-aspen-config');
    expect(res.headers.get('content-disposition')).toBe('attachment; filename="alice@example.test.mobileconfig"');
    expect(res.headers.get('cache-control')).toBe('no-store');
    const text = await res.text();
    const plist = parseXml(text) as { plist: { dict: { key: string[]; string: string[]; array: { dict: { key: string[]; string: string[]; integer: number[] } } } } };
    const inner = plist.plist.dict.array.dict;
    const pairs = (d: { key: string[] }, raw: string) => d.key.map((k) => [k, new RegExp(`<key>${k}</key>\\s*<(\\w+)\\s*/?>(?:([^<]*)</\\w+>)?`).exec(raw)]);
    const values = Object.fromEntries(pairs(inner, text).map(([k, m]) => [k, (m as RegExpExecArray)[2] ?? (m as RegExpExecArray)[1]]));
    expect(values).toMatchObject({
      EmailAccountType: 'EmailTypeIMAP',
      EmailAddress: 'alice@example.test',
      IncomingMailServerHostName: 'mail.test.example',
      IncomingMailServerPortNumber: '993',
      IncomingMailServerUseSSL: 'true',
      IncomingMailServerUsername: 'alice@example.test',
      OutgoingMailServerHostName: 'mail.test.example',
      OutgoingMailServerPortNumber: '465',
      OutgoingMailServerUseSSL: 'true',
      PayloadType: 'com.apple.mail.managed',
    });
    expect(text).toContain('<string>Configuration</string>');
    expect(text).not.toContain('alice-password');
    // the same user gets the same UUIDs: a second download replaces the installed profile
    const again = await (await api.request('GET', '/api/client/mobileconfig', { login })).text();
    expect(again).toBe(text);
  });

  it('works with no client settings given (standard ports on the host name)', async () => {
    const plain = await makeHarness();
    try {
      const res = await client(plain.app).request('GET', '/.well-known/autoconfig/mail/config-v1.1.xml');
      expect(res.status).toBe(200);
      const text = await res.text();
      expect(text).toContain('<hostname>mx.test.example</hostname>');
      expect(text).toContain('<port>993</port>');
    } finally {
      await plain.close();
    }
  });
});
