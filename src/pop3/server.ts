// The POP3 listeners: 110 with STLS and 995 with implicit TLS (RFC 8314), each a LineServer
// whose connections are Pop3Sessions. Knows nothing of the store beyond Pop3Backend.
import { LineServer } from '../core/line-server.ts';
import type { LineServiceOptions } from '../core/line-server.ts';
import { StateMachine } from '../core/state-machine.ts';
import { Pop3Session, STATES } from './session.ts';
import type { Pop3SessionOptions } from './session.ts';

export type Pop3ServerOptions = Omit<Pop3SessionOptions, 'log' | 'tlsContext'> & LineServiceOptions;

export class Pop3Server extends LineServer<Pop3Session> {
  constructor(opts: Pop3ServerOptions) {
    StateMachine.assertHandlers(Pop3Session.prototype, STATES);
    super({
      ...opts,
      tooManyConnections: '-ERR [SYS/TEMP] too many connections from your address; try again later',
      // Shutdown ends sessions without UPDATE: nothing marked deleted is removed.
      createSession: (conn, log, tlsContext) => new Pop3Session(conn, { ...opts, log, tlsContext }),
    });
  }
}
