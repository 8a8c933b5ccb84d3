// The plan every socket of a client follows, built once per client by the adapters from the target,
// the signing configuration and the driver's options: where to connect, TLS, the token, the retry
// and what onConnect is told.

import type tls from "node:tls";
import type { ConnectionTarget } from "./target.ts";
import { tlsPlan } from "./tls.ts";
import { ON_WORKERD, WORKERD_BACKEND, workerdTlsPlan } from "./socket-workerd.ts";
import {
  authError,
  connectHost,
  forgetToken,
  safely,
  signFor,
  type SigningConfig,
} from "./sign.ts";
import { type ConnectEvent, type ConnectOutcome, NODE_BACKEND, type SocketPlan } from "./socket.ts";
import type { ConnectDriver } from "./diagnostics.ts";

/**
 * The plan every socket of a client follows: sign, connect (for a bare DSQL cluster id, to the
 * endpoint it expands to; with libpq's hostaddr, to that address), TLS as the target asks with
 * explicit `node:tls` options merged over it, retry a rejected token once, report `onConnect`.
 * On workerd, sockets are cloudflare:sockets', and TLS what a Worker can do: a target it cannot
 * verify (the RDS CA, another CA) is a TypeError here, before any connection.
 */
export function socketPlan(o: {
  target: ConnectionTarget;
  host: string;
  port: number;
  signing: SigningConfig;
  tlsOverride?: tls.ConnectionOptions;
  connectTimeoutMs: number | (() => number);
  onConnect?: (event: ConnectEvent) => void;
  /** Workers: check certificates against the platform's CAs instead of the target's. */
  dangerouslyUsePlatformCas?: boolean;
  /** Open sockets with cloudflare:sockets. Default: when running on workerd. */
  workerd?: boolean;
  /** Busy answers to ask again (default 53300 and 53400): those the driver does not retry. */
  busy?: readonly string[];
  /** The startup parameters the driver will send, read as each connection starts. */
  startupParams?: () => Iterable<readonly [string, unknown]>;
  /** The driver, named on the `pg-iam:connect` channel; none: its connections are not traced. */
  driver?: ConnectDriver;
}): SocketPlan {
  const { signing, onConnect } = o;
  const host = connectHost(signing, o.host);
  const workerd = o.workerd ?? ON_WORKERD;
  return {
    host,
    address: o.target.hostaddr ?? host,
    port: o.port,
    tls: workerd
      ? workerdTlsPlan(
        o.target.ssl,
        signing.service,
        signing.signingHostname,
        o.tlsOverride as Record<string, unknown> | undefined,
        o.dangerouslyUsePlatformCas === true,
      )
      : tlsPlan(o.target.ssl, signing.service, signing.signingHostname, o.tlsOverride),
    backend: workerd ? WORKERD_BACKEND : NODE_BACKEND,
    connectTimeoutMs: o.connectTimeoutMs,
    requirePassword: o.target.requirePassword,
    busy: o.busy,
    startupParams: o.startupParams,
    token: (forceRefresh) => signFor(signing, forceRefresh),
    rejected: (token) => forgetToken(signing, token),
    authError: (fields) => authError(fields, signing),
    traced: o.driver === undefined ? undefined : {
      driver: o.driver,
      signer: () => ({
        user: signing.user,
        service: signing.service,
        region: typeof signing.region === "string" ? signing.region : undefined,
      }),
    },
    onConnect: (outcome: ConnectOutcome) => {
      if (onConnect) {
        safely(
          () => onConnect({ ...outcome, host, port: o.port, user: signing.user }),
          signing.logger,
        );
      }
    },
  };
}
