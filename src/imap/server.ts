// The IMAP listeners: 143 with STARTTLS and 993 with implicit TLS (RFC 8314), each a
// LineServer whose connections are ImapSessions. Knows nothing of the store beyond the
// ImapBackend interface.
import { LineServer } from '../core/line-server.ts';
import type { LineServiceOptions } from '../core/line-server.ts';
import { StateMachine } from '../core/state-machine.ts';
import { ImapSession, STATES } from './session.ts';
import type { ImapSessionOptions } from './session.ts';

export type ImapServerOptions = Omit<ImapSessionOptions, 'log' | 'tlsContext'> & LineServiceOptions;

export class ImapServer extends LineServer<ImapSession> {
  constructor(opts: ImapServerOptions) {
    StateMachine.assertHandlers(ImapSession.prototype, STATES);
    super({
      ...opts,
      tooManyConnections: '* BYE [UNAVAILABLE] too many connections from your address; try again later',
      createSession: (conn, log, tlsContext) => new ImapSession(conn, { ...opts, log, tlsContext }),
    });
  }
}
