// The limits a listener holds its clients to, as options of startGateway() and startProxy() (each
// mod.ts exports the type).

/**
 * The limits every client connection is held to, as PostgreSQL and sshd hold theirs.
 *
 * @example
 * ```ts
 * import type { ListenerLimits } from "@pg-iam/pg-iam/proxy";
 *
 * const limits: ListenerLimits = { maxConnections: 20, authenticationTimeoutMs: 10_000 };
 * ```
 */
export interface ListenerLimits {
  /**
   * How many sessions may be open at once, as PostgreSQL's `max_connections`: clients logged in
   * (relayed, or being logged in upstream). Connections still logging in do not count
   * (`maxStartups` bounds those), so unauthenticated sockets cannot lock logins out. A connection
   * beyond it is answered as PostgreSQL answers one beyond `max_connections`: after TLS and its
   * startup packet, `FATAL 53300 sorry, too many clients already`, then closed. Default: `100`.
   */
  maxConnections?: number;
  /**
   * How many connections may be logging in at once (connected, not yet logged in), as sshd's
   * `MaxStartups`: a connection beyond it is refused as one beyond `maxConnections` is (53300).
   * Each one is dropped at `authenticationTimeoutMs` in any case. Default: 10 × `maxConnections`
   * (`1000`).
   */
  maxStartups?: number;
  /**
   * How many of the connections logging in may come from one client address, as sshd's
   * `PerSourceMaxStartups`: one address opening sockets and sending nothing cannot take the
   * slots of all the others. A connection beyond it is refused as one beyond `maxConnections` is
   * (53300). Default: `maxConnections` (at most `maxStartups`), so a whole pool can log in at
   * once from one host, as every client on 127.0.0.1 does.
   */
  maxStartupsPerAddress?: number;
  /**
   * New connections accepted per second, as Aurora DSQL limits them (100 per second per cluster):
   * a token bucket refilled at this rate, holding `connectionBurst`. A connection beyond it is
   * answered after TLS and its startup packet with DSQL's SQLSTATE, `FATAL 53400`, and closed.
   * Default: no limit.
   */
  maxConnectionRate?: number;
  /** How many connections may arrive at once under `maxConnectionRate`. Default: one second's. */
  connectionBurst?: number;
  /**
   * How long a client has from its connection to log in, in ms, as PostgreSQL's
   * `authentication_timeout`: a fixed deadline, not an idle timeout, so a client sending a byte
   * now and then is dropped all the same. Sessions have none. Default: `60000`.
   */
  authenticationTimeoutMs?: number;
}
