// The proxy's public types, exported by mod.ts: its options, the running proxy and its counters.

import type { IamConnectOptions } from "../connection/adapter.ts";
import type { ListenerLimits } from "../listener/types.ts";
import type { ConnectStep, ConnectTimings } from "../connection/socket.ts";
import type { IamOptions } from "../connection/options.ts";

/**
 * What {@linkcode startProxy} takes: where to listen and the limits, and the target — a
 * connection string with libpq's meaning (`host`, `port`, `dbname`, `user`, `sslmode`,
 * `sslrootcert`, … and pg-iam's `iam_*`), the `PG*` variables, and pg-iam's options.
 */
export interface ProxyOptions extends IamOptions, IamConnectOptions, ListenerLimits {
  /** The target: `postgres://user@host:port/db?sslmode=…&iam_region=…`, or libpq `key=value`. */
  connectionString?: string;
  /** The target's host (wins over the connection string's). */
  host?: string;
  /** The target's port. */
  port?: number;
  /** The user every session logs in as. Default: the client's. */
  user?: string;
  /** The database every session uses. Default: the client's. */
  database?: string;
  /**
   * Where to listen: `host` and `port` (default `127.0.0.1`, an ephemeral port), or `dir`, a Unix
   * socket directory (the socket is `<dir>/.s.PGSQL.<port>`, port default 5432, as libpq names it;
   * the directory is created owner-only when missing and the socket made owner-only; an existing
   * directory must be the user's own and closed to others, so not `/tmp` itself).
   */
  listen?: { host?: string; port?: number; dir?: string };
  /**
   * Listen on an address other than loopback. Anyone who reaches the proxy logs in as its AWS
   * identity, so a {@linkcode ProxyOptions.password} is required with it.
   */
  allowRemote?: boolean;
  /**
   * The password clients must give the proxy, checked with SCRAM-SHA-256 (it never crosses the
   * network), whatever user name they give; or its SCRAM verifier as PostgreSQL stores it
   * (`SCRAM-SHA-256$4096:…`), so that the password itself need not be in the proxy's
   * configuration. Required with `allowRemote`.
   */
  password?: string;
  /** The proxy's certificate and key (PEM), for clients that ask for TLS. Default: none. */
  tls?: { cert: string; key: string } | false;
  /** Seconds for each upstream login (libpq `connect_timeout`). Default: the target's, or 30. */
  connectTimeout?: number;
  /**
   * An HTTP port for running it as a sidecar: `GET /livez`, `GET /readyz` (503 once shutting
   * down) and `GET /metrics` ({@linkcode Proxy.metrics}). Default: none. `host` defaults to
   * `127.0.0.1`; it serves no data and no secret, so another address needs no `allowRemote`.
   */
  http?: { host?: string; port?: number };
  /** Seconds {@linkcode Proxy.shutdown} lets sessions finish. Default: 30. */
  shutdownTimeout?: number;
  /**
   * Called for every client login: its upstream login's outcome and timings, or the proxy's
   * refusal. For logs; an exception it throws is logged (the `logger` option), never thrown into
   * the proxy.
   */
  onLogin?: (login: ProxyLogin) => void;
  /** Called when a session (a client logged in upstream) ends. An exception it throws is logged. */
  onClose?: (session: ProxySessionEnd) => void;
}

/** One client's login through the proxy, told to {@linkcode ProxyOptions.onLogin}. */
export interface ProxyLogin {
  /** Whether the client is logged in upstream. */
  ok: boolean;
  /** The client's address and port, or `"local"` on a Unix socket. */
  client: string;
  /** The user logged in as upstream (the target's, or the client's). */
  user: string;
  /** The database upstream. */
  database: string;
  /** Upstream login attempts: 0 when the proxy refused the client first, 2 after a retry. */
  attempts: number;
  /** Where the upstream login's time went. */
  timings?: ConnectTimings;
  /** The step the upstream login failed at. */
  step?: ConnectStep;
  /** Why it failed (a `ConnectError`, `IamAuthError`, `CredentialsError`). */
  error?: Error;
  /** The SQLSTATE the client was told, when it failed. */
  code?: string;
  /** The message the client was told, when it failed. */
  message?: string;
}

/** A session's end, told to {@linkcode ProxyOptions.onClose}. */
export interface ProxySessionEnd {
  /** The client's address and port, or `"local"`. */
  client: string;
  /** The user upstream. */
  user: string;
  /** The database upstream. */
  database: string;
  /** From the client's StartupMessage to the end. */
  durationMs: number;
  /** Bytes relayed each way. */
  bytes: { toServer: number; toClient: number };
}

/** The proxy's counters since it started. */
export interface ProxyStats {
  /** Logins upstream: `ok`; `failed` (pg-iam's or the server's refusal); `refused` by the proxy. */
  logins: { ok: number; refused: number; failed: number };
  /** Tokens signed, and young tokens reused. */
  tokens: { signed: number; reused: number };
  /** Failed upstream logins by the step they failed at. */
  failures: { credentials: number; connect: number; tls: number; auth: number };
  /** Connections refused at a limit: too many (53300), too fast (53400). */
  refused: { "53300": number; "53400": number };
  /** CancelRequests forwarded. */
  cancels: number;
  /** Bytes relayed each way. */
  bytes: { toServer: number; toClient: number };
}

/** A running proxy. `await using` closes it. */
export interface Proxy extends AsyncDisposable {
  /** The address it listens on (the socket's path for a Unix socket). */
  readonly host: string;
  /** The port it listens on (the one in the socket's name for a Unix socket). */
  readonly port: number;
  /** The Unix socket's path, when it listens on one. */
  readonly path: string | undefined;
  /** Whether it accepts connections (false once shutting down). */
  readonly accepting: boolean;
  /** The counters. */
  readonly stats: ProxyStats;
  /** The HTTP port's address, when the `http` option asked for one. */
  readonly http: { host: string; port: number } | undefined;
  /** Open sessions (logged in upstream, or logging in). */
  sessions(): number;
  /**
   * The counters in Prometheus's text format (0.0.4), as `/metrics` serves them:
   * `pgiam_proxy_sessions`, `_startups`, `_logins_total{result}`, `_tokens_total{reused}`,
   * `_upstream_failures_total{step}`, `_connect_seconds` (histogram), `_refused_total{code}`,
   * `_cancels_total`, `_bytes_total{direction}`.
   */
  metrics(): string;
  /** Connections logging in to the proxy. */
  startups(): number;
  /** Stops accepting, lets sessions finish within `timeoutMs` (the `shutdownTimeout`), closes. */
  shutdown(timeoutMs?: number): Promise<void>;
  /** Stops accepting and drops every connection. */
  close(): Promise<void>;
}
