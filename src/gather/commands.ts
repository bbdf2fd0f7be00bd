// The gather commands, one set for both ways the CLI reaches them: through the running server's
// control socket (`gather.*`), or (server stopped) on a GatherService opened in the CLI process.
// Passwords travel only in `gather.add` and `gather.passwd` requests and are never returned.
import { GatherError, GATHER_MODES, GATHER_PROTOCOLS, GATHER_TLS, defaultAccountId, defaultPort } from './accounts.ts';
import type { GatherAccount, GatherMode, GatherProtocol, GatherTls } from './accounts.ts';
import type { GatherService } from './service.ts';

export type GatherCommand = (args: Record<string, unknown>) => Promise<unknown>;

/** The fields `gather add` takes, as the CLI sends them. */
export type AddRequest = {
  name?: string;
  owner: string;
  protocol: string;
  host: string;
  port?: number;
  tls?: string;
  insecureTls?: boolean;
  user: string;
  folders?: string[];
  target?: string;
  mode?: string;
  intervalMs?: number;
  idle?: boolean;
  authChecks?: boolean;
  trustAuthResults?: string;
};

const str = (v: unknown, what: string): string => {
  if (typeof v !== 'string' || v === '') throw new GatherError('GATHER_INVALID', `${what} is missing`);
  return v;
};

/** Build an account from an add request, with defaults filled in. */
export function accountFromRequest(r: AddRequest): GatherAccount {
  const protocol = str(r.protocol, 'protocol').toLowerCase() as GatherProtocol;
  if (!GATHER_PROTOCOLS.includes(protocol)) throw new GatherError('GATHER_INVALID', 'protocol must be imap or pop3');
  const tls = (r.tls ?? 'implicit').toLowerCase() as GatherTls;
  if (!GATHER_TLS.includes(tls)) throw new GatherError('GATHER_INVALID', 'tls must be implicit, starttls or none');
  const mode = (r.mode ?? 'copy').toLowerCase() as GatherMode;
  if (!GATHER_MODES.includes(mode)) throw new GatherError('GATHER_INVALID', 'mode must be copy, move or mirror');
  const host = str(r.host, 'host').toLowerCase();
  const user = str(r.user, 'the remote user');
  const account: GatherAccount = {
    id: (r.name ?? defaultAccountId(user, host)).toLowerCase(),
    owner: str(r.owner, 'the local address').toLowerCase(),
    protocol,
    host,
    port: r.port ?? defaultPort(protocol, tls),
    tls,
    user,
    folders: r.folders?.length ? r.folders : ['INBOX'],
    target: r.target ?? 'INBOX',
    mode,
  };
  if (r.insecureTls) account.insecureTls = true;
  if (r.intervalMs !== undefined) account.intervalMs = r.intervalMs;
  if (r.idle === false) account.idle = false;
  if (typeof r.authChecks === 'boolean') account.authChecks = r.authChecks;
  if (r.trustAuthResults !== undefined) {
    // An empty one is refused (by validateAccount), not taken for none.
    if (typeof r.trustAuthResults !== 'string') throw new GatherError('GATHER_INVALID', "the provider's authserv-id should be a host name like mx.google.com");
    account.trustAuthResults = r.trustAuthResults.toLowerCase();
  }
  return account;
}

function idOf(args: Record<string, unknown>): string {
  if (typeof args.id !== 'string' || !args.id) throw new GatherError('GATHER_INVALID', 'give an account name as shown by `hearth gather list`');
  return args.id;
}

export function gatherCommands(service: GatherService): Record<string, GatherCommand> {
  return {
    'gather.list': async () => service.list(),
    'gather.status': async (args) => {
      const all = await service.list();
      return typeof args.id === 'string' ? all.filter((a) => a.id === args.id) : all;
    },
    'gather.add': async (args) => {
      const password = str(args.password, 'the password');
      const account = accountFromRequest(args.account as AddRequest);
      return service.add(account, password);
    },
    'gather.remove': async (args) => service.remove(idOf(args)),
    'gather.passwd': async (args) => {
      await service.setPassword(idOf(args), str(args.password, 'the password'));
      return { changed: true };
    },
    'gather.run': async (args) => service.run(typeof args.id === 'string' ? args.id : undefined),
  };
}
