// The gateway's public types, exported by mod.ts: its options, what it records of each login, and
// the running gateway.

import type { ListenerLimits } from "../listener/types.ts";

/**
 * An access key the gateway accepts tokens from.
 *
 * @example
 * ```ts
 * import type { GatewayCredentials } from "@pg-iam/pg-iam/gateway";
 *
 * const key: GatewayCredentials = { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret" };
 * ```
 */
export interface GatewayCredentials {
  /** The access key id named in tokens' `X-Amz-Credential`. */
  accessKeyId: string;
  /** The secret tokens are signed with. */
  secretAccessKey: string;
  /**
   * The session token of temporary credentials. When set, tokens must carry exactly this one;
   * when not, tokens must carry none.
   */
  sessionToken?: string;
}

/**
 * The real PostgreSQL server the gateway relays accepted connections to, over plain TCP.
 *
 * @example
 * ```ts
 * import type { GatewayUpstream } from "@pg-iam/pg-iam/gateway";
 *
 * const upstream: GatewayUpstream = { host: "127.0.0.1", port: 5432, user: "postgres" };
 * ```
 */
export interface GatewayUpstream {
  /** Host name or IP address. */
  host: string;
  /** Port. */
  port: number;
  /** The user to log in upstream as, instead of the client's startup user. */
  user?: string;
  /** The upstream password, for `password` (cleartext) or `md5` upstream auth; trust needs none. */
  password?: string;
  /** The database to connect to upstream, instead of the client's. */
  database?: string;
}

/**
 * Options of {@linkcode startGateway}.
 *
 * @example
 * ```ts
 * import type { GatewayOptions } from "@pg-iam/pg-iam/gateway";
 *
 * const options: GatewayOptions = {
 *   endpoint: "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws",
 *   credentials: [{ accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret" }],
 *   upstream: { host: "127.0.0.1", port: 5432, user: "postgres" },
 *   tls: false,
 * };
 * ```
 */
export interface GatewayOptions extends ListenerLimits {
  /**
   * The endpoint name the gateway impersonates: tokens must be signed for it. For example
   * `db.cluster-abc123xyz.us-east-1.rds.amazonaws.com`, or a DSQL endpoint
   * `<cluster id>.dsql.us-east-1.on.aws`. Case-insensitive, as DNS: tokens are verified against
   * the lowercase name, as AWS does.
   */
  endpoint: string;
  /** The port signed into RDS tokens (not the port the gateway listens on). Default: `5432`. */
  port?: number;
  /** Which service's tokens to accept. Default: the one of the `endpoint` name. */
  service?: "rds" | "dsql";
  /** The region tokens must be signed for. Default: the one in the `endpoint` name. */
  region?: string;
  /** The access keys whose tokens are accepted. */
  credentials: GatewayCredentials | readonly GatewayCredentials[];
  /** Where accepted connections are relayed to. */
  upstream: GatewayUpstream;
  /**
   * Where to listen: `host` and `port` (default: `127.0.0.1`, an ephemeral port), or `path`, a
   * Unix socket's path (then `host` is that path and `port` is 0).
   */
  listen?: { host?: string; port?: number; path?: string };
  /**
   * The server certificate and key (PEM). With TLS, clients must negotiate it, as RDS with
   * `rds.force_ssl` and DSQL require, with an SSLRequest or directly (sslnegotiation=direct, ALPN
   * `postgresql`, as PostgreSQL 17+); `false` refuses TLS (SSLRequest is answered `N`).
   */
  tls: { cert: string; key: string } | false;
  /** The initial offset of the gateway's clock from the system clock, in ms. Default: `0`. */
  clockOffsetMs?: number;
  /**
   * Called for every login, accepted or rejected, right after the token is checked. Exceptions it
   * throws are ignored.
   */
  onLogin?: (login: GatewayLogin) => void;
  /** How many of the most recent logins {@linkcode GatewayStats.logins} keeps. Default: `1000`. */
  recentLogins?: number;
}

/**
 * Why the gateway rejected a login:
 * - `"malformed"`: the password is not a token (or the startup packet names no user);
 * - `"algorithm"`: `X-Amz-Algorithm` is not `AWS4-HMAC-SHA256`;
 * - `"unknown-access-key"`: the token's access key id is not among `credentials`;
 * - `"session-token"`: the token's session token is not the key's (or one of them has none);
 * - `"scope"`: the credential scope's date, region or service is wrong;
 * - `"host"`, `"port"`: the token is signed for another endpoint name or port;
 * - `"user"`: an RDS token's `DBUser` is not the startup user;
 * - `"action"`: not `connect` (RDS), or not `DbConnectAdmin` for DSQL's `admin` and `DbConnect`
 *   for other roles;
 * - `"expires-range"`: `X-Amz-Expires` is not 1 to 900 (RDS) or 604800 (DSQL) seconds;
 * - `"not-yet-valid"`: signed more than five minutes ahead of the gateway's clock;
 * - `"expired"`: past `X-Amz-Date` + `X-Amz-Expires` by the gateway's clock;
 * - `"signature"`: the signature does not match (wrong secret, or the token was altered);
 * - `"no-tls"`: TLS is configured but the client did not negotiate it;
 * - `"no-password"`: the client sent no password, or closed instead of sending one.
 *
 * @example
 * ```ts
 * import type { GatewayRejectReason } from "@pg-iam/pg-iam/gateway";
 *
 * const reason: GatewayRejectReason = "expired";
 * ```
 */
// The one list: verify.ts's RejectReason, the token's reasons, is this one less no-tls and
// no-password.
export type GatewayRejectReason =
  | "malformed"
  | "algorithm"
  | "unknown-access-key"
  | "session-token"
  | "scope"
  | "host"
  | "port"
  | "user"
  | "action"
  | "expires-range"
  | "not-yet-valid"
  | "expired"
  | "signature"
  | "no-tls"
  | "no-password";

/**
 * One login attempt, as recorded in {@linkcode GatewayStats} and passed to `onLogin`. A login is
 * accepted when its token is; what the upstream server does afterwards is not part of it.
 *
 * @example
 * ```ts
 * import type { GatewayLogin } from "@pg-iam/pg-iam/gateway";
 *
 * const describe = (l: GatewayLogin) =>
 *   l.accepted ? `${l.user}: token ${l.tokenAgeMs} ms old` : `${l.user}: ${l.reason}`;
 * ```
 */
export interface GatewayLogin {
  /** Whether the token was accepted. */
  accepted: boolean;
  /** Why not, when rejected. */
  reason?: GatewayRejectReason;
  /** What exactly was wrong, when rejected; never contains the token or a secret. */
  detail?: string;
  /** The startup user. */
  user: string;
  /** The startup database (the user name when none was sent). */
  database: string;
  /** When the gateway decided, by its clock. */
  at: Date;
  /** The token's access key id, when accepted. */
  accessKeyId?: string;
  /** The token's `Action`, when accepted. */
  action?: string;
  /**
   * A fingerprint of the token presented (the first 16 hex digits of its SHA-256), to tell tokens
   * apart: which logins shared one. Not the token, and nothing can be signed with it.
   */
  tokenId?: string;
  /** The token's `X-Amz-Date`, when accepted. */
  signedAt?: Date;
  /** The gateway's clock minus `X-Amz-Date`, in ms, when accepted. */
  tokenAgeMs?: number;
  /** Whether the client connection was TLS. */
  tls: boolean;
}

/**
 * Counters of a running gateway.
 *
 * @example
 * ```ts
 * import type { GatewayStats } from "@pg-iam/pg-iam/gateway";
 *
 * const summary = (s: GatewayStats) => `${s.accepted} accepted, ${s.rejected} rejected`;
 * ```
 */
export interface GatewayStats {
  /** Logins whose token was accepted. */
  accepted: number;
  /** Logins rejected. */
  rejected: number;
  /** Rejected logins by reason. */
  rejections: Partial<Record<GatewayRejectReason, number>>;
  /**
   * The most recent logins, oldest first: at most `recentLogins` of them (the counters above
   * count every login).
   */
  logins: GatewayLogin[];
  /** Cancel requests relayed upstream. */
  cancels: number;
  /**
   * Connections refused before login: `53300` beyond `maxConnections`, `maxStartups` or
   * `maxStartupsPerAddress`, `53400` beyond `maxConnectionRate`.
   */
  refused: { "53300": number; "53400": number };
}

/**
 * A running gateway, from {@linkcode startGateway}.
 *
 * @example Expiring tokens by moving the gateway's clock
 * ```ts ignore
 * gateway.clockOffsetMs = 16 * 60_000; // tokens signed now are expired for the gateway
 * ```
 */
export interface Gateway extends AsyncDisposable {
  /** The address it listens on. */
  readonly host: string;
  /** The port it listens on. */
  readonly port: number;
  /** The endpoint name it impersonates. */
  readonly endpoint: string;
  /** Whose tokens it accepts. */
  readonly service: "rds" | "dsql";
  /** The region tokens must be signed for. */
  readonly region: string;
  /** Login and cancel counters. */
  readonly stats: GatewayStats;
  /** The offset of the gateway's clock from the system clock, in ms; settable. */
  clockOffsetMs: number;
  /** The gateway's clock: `Date.now() + clockOffsetMs`. */
  now(): number;
  /** How many client connections are being relayed now. */
  connections(): number;
  /**
   * How many client connections are open now: logging in, relayed, or cancel requests being
   * forwarded (not those being refused).
   */
  clients(): number;
  /**
   * How many client connections are logging in now (their token not yet accepted), cancel
   * requests included: what `maxStartups` bounds.
   */
  startups(): number;
  /** Drops every relayed connection, as a server restart would; returns how many. */
  disconnectAll(): number;
  /** Stops listening and drops every connection. */
  close(): Promise<void>;
}
