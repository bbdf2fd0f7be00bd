// A real, tiny authoritative DNS server for tests: UDP and TCP on 127.0.0.1, port 0, answering
// from an in-memory zone. Point a node:dns Resolver at it (`resolver()`), so routing, SPF, DKIM
// and DMARC code runs against the same resolver API it uses in production.
//
// Semantics, as a real authoritative server would answer:
//   - a name with records, asked for a type it has: NOERROR with those records (AA set)
//   - a name with records, asked for a type it lacks: NOERROR, no answers (NODATA -> ENODATA)
//   - an unknown name: NXDOMAIN (-> ENOTFOUND)
//   - a name in `servfail`: SERVFAIL (-> ESERVFAIL); in `drop`: never answered (-> ETIMEOUT)
// Names are case-insensitive and written without the trailing dot. A null MX (RFC 7505) is
// `MX: [{ preference: 0, exchange: '.' }]`.
import dgram from 'node:dgram';
import { promises as dns } from 'node:dns';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import * as packet from 'dns-packet';
import type { Answer, Packet, Question } from 'dns-packet';

export type DnsRecords = {
  MX?: Array<{ preference: number; exchange: string }>;
  A?: string[];
  AAAA?: string[];
  TXT?: string[][];
  CNAME?: string;
  PTR?: string[];
};
export type DnsZone = { [name: string]: DnsRecords };
export type DnsServerOptions = { servfail?: string[]; drop?: string[]; ttl?: number };

export type DnsServer = {
  port: number;
  /** A fresh Resolver aimed at this server. Short timeouts by default, so a dropped query fails fast. */
  resolver(opts?: { timeout?: number; tries?: number }): dns.Resolver;
  /** Replace one name's records (undefined removes the name: NXDOMAIN afterwards). */
  set(name: string, rr: DnsRecords | undefined): void;
  servfail(name: string, on?: boolean): void;
  drop(name: string, on?: boolean): void;
  /** Queries received, oldest first (name lower-cased, type). */
  readonly queries: Array<{ name: string; type: string; transport: 'udp' | 'tcp' }>;
  close(): Promise<void>;
};

const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3 } as const;
const norm = (name: string): string => name.toLowerCase().replace(/\.$/, '');

export async function startDnsServer(records: DnsZone = {}, opts: DnsServerOptions = {}): Promise<DnsServer> {
  const zone = new Map<string, DnsRecords>();
  for (const [name, rr] of Object.entries(records)) zone.set(norm(name), rr);
  const servfail = new Set((opts.servfail ?? []).map(norm));
  const drop = new Set((opts.drop ?? []).map(norm));
  const ttl = opts.ttl ?? 60;
  const queries: DnsServer['queries'] = [];

  function answersFor(q: Question): Answer[] {
    const name = norm(q.name);
    const rr = zone.get(name);
    if (!rr) return [];
    const base = { name: q.name, ttl, class: 'IN' as const };
    if (rr.CNAME && q.type !== 'CNAME') {
      // Follow within the zone, as an authoritative server for both names would.
      const target = answersFor({ ...q, name: rr.CNAME });
      return [{ ...base, type: 'CNAME', data: rr.CNAME }, ...target];
    }
    switch (q.type) {
      case 'MX':
        return (rr.MX ?? []).map((mx) => ({ ...base, type: 'MX', data: { preference: mx.preference, exchange: mx.exchange === '.' ? '' : mx.exchange } }));
      case 'A':
        return (rr.A ?? []).map((ip) => ({ ...base, type: 'A', data: ip }));
      case 'AAAA':
        return (rr.AAAA ?? []).map((ip) => ({ ...base, type: 'AAAA', data: ip }));
      case 'TXT':
        return (rr.TXT ?? []).map((strings) => ({ ...base, type: 'TXT', data: strings.map((s) => Buffer.from(s, 'utf8')) }));
      case 'CNAME':
        return rr.CNAME ? [{ ...base, type: 'CNAME', data: rr.CNAME }] : [];
      case 'PTR':
        return (rr.PTR ?? []).map((p) => ({ ...base, type: 'PTR', data: p }));
      default:
        return [];
    }
  }

  /** The reply to one query packet, or undefined to stay silent. */
  function reply(query: Packet, transport: 'udp' | 'tcp'): Packet | undefined {
    const q = query.questions?.[0];
    if (!q) return undefined;
    const name = norm(q.name);
    queries.push({ name, type: q.type, transport });
    if (drop.has(name)) return undefined;
    const head = { id: query.id, type: 'response' as const, questions: query.questions };
    const rd = (query.flags ?? 0) & packet.RECURSION_DESIRED;
    // dns-packet encodes the RCODE only from the low 4 bits of `flags`, not from `rcode`.
    if (servfail.has(name)) return { ...head, flags: rd | RCODE.SERVFAIL };
    const known = zone.has(name);
    return { ...head, flags: packet.AUTHORITATIVE_ANSWER | rd | (known ? RCODE.NOERROR : RCODE.NXDOMAIN), answers: answersFor(q) };
  }

  const udp = dgram.createSocket('udp4');
  udp.on('message', (msg, rinfo) => {
    let query: Packet;
    try {
      query = packet.decode(msg);
    } catch {
      return;
    }
    const r = reply(query, 'udp');
    if (!r) return;
    let out = packet.encode(r);
    if (out.length > 512) {
      // Too big for classic UDP: truncate, so the resolver retries over TCP.
      out = packet.encode({ id: r.id, type: 'response', flags: packet.AUTHORITATIVE_ANSWER | packet.TRUNCATED_RESPONSE, questions: r.questions });
    }
    udp.send(out, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    udp.once('error', reject);
    udp.bind(0, '127.0.0.1', () => resolve());
  });
  const port = (udp.address() as AddressInfo).port;

  // TCP on the same port number (RFC 7766), for truncated answers.
  const sockets = new Set<net.Socket>();
  const tcp = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        let query: Packet;
        try {
          query = packet.decode(msg);
        } catch {
          sock.destroy();
          return;
        }
        const r = reply(query, 'tcp');
        if (r) sock.write(packet.streamEncode(r));
      }
    });
  });
  await new Promise<void>((resolve) => {
    // If the TCP port is taken, UDP alone still serves; resolvers only need TCP for big answers.
    tcp.once('error', () => resolve());
    tcp.listen(port, '127.0.0.1', () => resolve());
  });

  return {
    port,
    queries,
    resolver(ropts) {
      const r = new dns.Resolver({ timeout: ropts?.timeout ?? 300, tries: ropts?.tries ?? 1 });
      r.setServers([`127.0.0.1:${port}`]);
      return r;
    },
    set(name, rr) {
      if (rr === undefined) zone.delete(norm(name));
      else zone.set(norm(name), rr);
    },
    servfail(name, on = true) {
      if (on) servfail.add(norm(name));
      else servfail.delete(norm(name));
    },
    drop(name, on = true) {
      if (on) drop.add(norm(name));
      else drop.delete(norm(name));
    },
    async close() {
      for (const s of sockets) s.destroy();
      await Promise.all([new Promise<void>((resolve) => udp.close(() => resolve())), new Promise<void>((resolve) => (tcp.listening ? tcp.close(() => resolve()) : resolve()))]);
    },
  };
}
