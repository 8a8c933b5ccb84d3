/**
 * A local IAM gateway: a PostgreSQL-protocol proxy that authenticates clients the way Amazon RDS
 * IAM authentication and Aurora DSQL do — the password must be a valid, unexpired IAM token for
 * the impersonated endpoint, user and region — then relays the connection to a real PostgreSQL.
 * For tests, demos and local development: exercise token refresh, expiry and TLS without AWS.
 *
 * Runs on Deno, Node and Bun (it uses `node:net` and `node:tls`).
 *
 * @example An RDS look-alike in front of a local PostgreSQL
 * ```ts ignore
 * import { startGateway } from "@pg-iam/pg-iam/gateway";
 *
 * await using gateway = await startGateway({
 *   endpoint: "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com",
 *   credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/EXAMPLEKEY" },
 *   upstream: { host: "127.0.0.1", port: 5432 },
 *   tls: false,
 * });
 * console.log(`connect to ${gateway.host}:${gateway.port} with an IAM token as the password`);
 * ```
 *
 * @module
 */

import net from "node:net";
import tls from "node:tls";
import { sha256Hex } from "../core/_sha256.ts";
import { checkNotSwapped } from "../core/credentials.ts";
import { show } from "../core/errors.ts";
import { checkHostname, isRegion, parseHostname } from "../core/hostname.ts";
import { checkPort } from "../core/_options.ts";
import {
  AUTH_CLEARTEXT,
  AUTH_MD5,
  AUTH_OK,
  authCleartext,
  authCode,
  CANCEL_REQUEST,
  errorFields,
  errorResponse,
  GSSENC_REQUEST,
  MAX_PASSWORD_LENGTH,
  MessageReader,
  negotiateProtocolVersion,
  passwordMessage,
  passwordOf,
  SSL_REQUEST,
  startupCode,
  startupMessage,
  startupParameters,
  typeName,
} from "../connection/pgwire.ts";
import { type VerifySecret, verifyToken } from "./verify.ts";

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
export interface GatewayOptions {
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
  /** Where to listen. Default: `127.0.0.1`, an ephemeral port. */
  listen?: { host?: string; port?: number };
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
  /**
   * How many sessions may be open at once, as PostgreSQL's `max_connections`: clients whose token
   * was accepted, relayed or being logged in upstream. Connections still logging in do not count
   * (`maxStartups` bounds those), so unauthenticated sockets cannot lock logins out. A connection
   * beyond it is answered as PostgreSQL answers one beyond `max_connections`: after TLS and its
   * startup packet, `FATAL 53300 sorry, too many clients already`, then closed. Default: `100`.
   */
  maxConnections?: number;
  /**
   * How many connections may be logging in at once (connected, token not yet accepted), as
   * sshd's `MaxStartups`: a connection beyond it is refused as one beyond `maxConnections` is
   * (53300). Each one is dropped at `authenticationTimeoutMs` in any case. Default:
   * 10 × `maxConnections` (`1000`).
   */
  maxStartups?: number;
  /**
   * How many of the connections logging in may come from one client address, as sshd's
   * `PerSourceMaxStartups`: one address opening sockets and sending nothing cannot take the
   * slots of all the others. A connection beyond it is refused as one beyond `maxConnections` is
   * (53300). Default: `maxConnections` (at most `maxStartups`), so a whole pool can log in at
   * once from one host, as every client of a gateway on 127.0.0.1 does.
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
   * now and then is dropped all the same. Relayed connections have none. Default: `60000`.
   */
  authenticationTimeoutMs?: number;
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
// Spelled out rather than built from _verify.ts's RejectReason, which is internal; reject() takes
// verifyToken()'s reasons as GatewayRejectReason, so the compiler checks this list covers them.
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

/**
 * Starts a gateway that accepts IAM tokens for `options.endpoint` and relays authenticated
 * connections to `options.upstream`.
 *
 * @param options What to impersonate, which keys to accept, where to relay, TLS.
 * @returns The running gateway, once it listens.
 * @throws {TypeError} If an option is missing or of the wrong type.
 * @throws {RangeError} If an option is out of range, or the region or service contradicts the
 * endpoint name.
 *
 * @example A DSQL look-alike, connected to with a pg-iam token
 * ```ts ignore
 * import { dsqlToken } from "@pg-iam/pg-iam";
 * import { startGateway } from "@pg-iam/pg-iam/gateway";
 * import postgres from "postgres";
 *
 * const credentials = { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/EXAMPLEKEY" };
 * const endpoint = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
 * await using gateway = await startGateway({
 *   endpoint,
 *   credentials,
 *   upstream: { host: "127.0.0.1", port: 5432, user: "postgres" },
 *   tls: false,
 * });
 * const sql = postgres({
 *   host: gateway.host,
 *   port: gateway.port,
 *   user: "admin",
 *   password: () => dsqlToken({ hostname: endpoint, credentials }),
 * });
 * await sql`select 1`;
 * await sql.end();
 * ```
 */
export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const config = checkGatewayOptions(options);
  const gateway = new GatewayServer(config);
  await gateway.listen();
  return gateway;
}

// ---------------------------------------------------------------------------------------------
// Options

interface Config {
  endpoint: string;
  port: number;
  service: "rds" | "dsql";
  region: string;
  keys: Map<string, VerifySecret>;
  upstream: GatewayUpstream;
  listenHost: string;
  listenPort: number;
  secureContext: tls.SecureContext | undefined;
  clockOffsetMs: number;
  onLogin: ((login: GatewayLogin) => void) | undefined;
  maxConnections: number;
  maxStartups: number;
  maxStartupsPerAddress: number;
  maxConnectionRate: number | undefined;
  connectionBurst: number;
  authenticationTimeoutMs: number;
  recentLogins: number;
}

function checkGatewayOptions(options: unknown): Config {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`startGateway() expects an options object, got ${show(options)}`);
  }
  const o = options as Record<string, unknown>;
  // DNS names are case-insensitive, and AWS signs and verifies the lowercase name.
  const endpoint = checkHostname(o.endpoint, "endpoint").toLowerCase();
  const parsed = parseHostname(endpoint);

  let service = parsed?.service;
  if (o.service !== undefined) {
    if (o.service !== "rds" && o.service !== "dsql") {
      throw new TypeError(`The "service" option must be "rds" or "dsql", got ${show(o.service)}`);
    }
    if (parsed && parsed.service !== o.service) {
      throw new RangeError(
        `The "service" option ${show(o.service)} contradicts the "endpoint" ${show(endpoint)}, ` +
          `an ${parsed.service.toUpperCase()} endpoint`,
      );
    }
    service = o.service;
  }
  if (service === undefined) {
    throw new TypeError(
      `The "service" option is required: the "endpoint" ${show(endpoint)} is not an AWS ` +
        `database endpoint name, so pass "rds" or "dsql"`,
    );
  }

  let region = parsed?.region;
  if (o.region !== undefined) {
    if (typeof o.region !== "string" || !isRegion(o.region)) {
      throw new RangeError(
        `The "region" option is not an AWS region name (like "us-east-1"), got ${show(o.region)}`,
      );
    }
    if (parsed && parsed.region !== o.region) {
      throw new RangeError(
        `The "region" option ${show(o.region)} contradicts the region ${show(parsed.region)} of ` +
          `the "endpoint" ${show(endpoint)}`,
      );
    }
    region = o.region;
  }
  if (region === undefined) {
    throw new TypeError(
      `The "region" option is required: the "endpoint" ${show(endpoint)} is not an AWS ` +
        `database endpoint name, so no region can be derived from it`,
    );
  }

  const listen = o.listen ?? {};
  if (typeof listen !== "object" || listen === null) {
    throw new TypeError(`The "listen" option must be an object, got ${show(listen)}`);
  }
  const { host: listenHost = "127.0.0.1", port: listenPort = 0 } = listen as Record<
    string,
    unknown
  >;
  if (typeof listenHost !== "string" || listenHost === "") {
    throw new TypeError(
      `The "listen.host" option must be a host or address, got ${show(listenHost)}`,
    );
  }
  if (listenPort !== 0) checkPort(listenPort, "listen.port");

  const clockOffsetMs = o.clockOffsetMs ?? 0;
  checkOffset(clockOffsetMs, "clockOffsetMs");
  if (o.onLogin !== undefined && typeof o.onLogin !== "function") {
    throw new TypeError(`The "onLogin" option must be a function, got ${show(o.onLogin)}`);
  }

  const maxConnections = checkCount(o.maxConnections, "maxConnections", 1, 100);
  const maxStartups = checkCount(o.maxStartups, "maxStartups", 1, 10 * maxConnections);
  return {
    endpoint,
    port: checkPort(o.port),
    service,
    region,
    keys: checkCredentials(o.credentials),
    upstream: checkUpstream(o.upstream),
    listenHost,
    listenPort: listenPort as number,
    secureContext: checkTls(o.tls),
    clockOffsetMs: clockOffsetMs as number,
    onLogin: o.onLogin as Config["onLogin"],
    maxConnections,
    maxStartups,
    maxStartupsPerAddress: checkCount(
      o.maxStartupsPerAddress,
      "maxStartupsPerAddress",
      1,
      Math.min(maxConnections, maxStartups),
    ),
    maxConnectionRate: o.maxConnectionRate === undefined
      ? undefined
      : checkRate(o.maxConnectionRate, "maxConnectionRate"),
    connectionBurst: o.connectionBurst === undefined
      ? Math.max(1, Math.floor(Number(o.maxConnectionRate ?? 1)))
      : checkCount(o.connectionBurst, "connectionBurst", 1, 1),
    // setTimeout's longest delay.
    authenticationTimeoutMs: checkCount(
      o.authenticationTimeoutMs,
      "authenticationTimeoutMs",
      1,
      60_000,
      2 ** 31 - 1,
    ),
    recentLogins: checkCount(o.recentLogins, "recentLogins", 0, 1000),
  };
}

function checkRate(value: unknown, option: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new RangeError(
      `The "${option}" option must be a positive number (per second), got ${show(value)}`,
    );
  }
  return value;
}

function checkCount(
  value: unknown,
  option: string,
  min: number,
  fallback: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number") {
    throw new TypeError(`The "${option}" option must be a number, got ${show(value)}`);
  }
  if (!Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`;
    throw new RangeError(`The "${option}" option must be an integer ${range}, got ${show(value)}`);
  }
  return value;
}

function checkOffset(value: unknown, option: string): asserts value is number {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new TypeError(`The "${option}" option must be a finite number of ms, got ${show(value)}`);
  }
}

// Secrets are described by their type only: an error message must never quote one.
const kind = (value: unknown) =>
  typeof value === "string" ? (value === "" ? "an empty string" : "a string") : show(value);

function checkCredentials(value: unknown): Map<string, VerifySecret> {
  if (value === undefined || value === null) {
    throw new TypeError(`The "credentials" option is required: pass the access keys to accept`);
  }
  const list = Array.isArray(value) ? value : [value];
  if (list.length === 0) throw new TypeError(`The "credentials" option must not be an empty array`);
  const keys = new Map<string, VerifySecret>();
  list.forEach((c: unknown, i) => {
    const name = Array.isArray(value) ? `credentials[${i}]` : "credentials";
    if (typeof c !== "object" || c === null) {
      throw new TypeError(`The "${name}" option must be an object, got ${show(c)}`);
    }
    const { accessKeyId, secretAccessKey, sessionToken } = c as Record<string, unknown>;
    if (typeof accessKeyId === "string" && typeof secretAccessKey === "string") {
      checkNotSwapped(
        accessKeyId,
        secretAccessKey,
        `The "${name}" option`,
        "accessKeyId",
        "secretAccessKey",
      );
    }
    if (typeof accessKeyId !== "string" || !/^[A-Za-z0-9_-]+$/.test(accessKeyId)) {
      // Not quoted when it has characters only a secret has: it may be one.
      const shown = typeof accessKeyId === "string" && /[/+]/.test(accessKeyId)
        ? `a string with "/" or "+" (not shown: a secret access key?)`
        : show(accessKeyId);
      throw new TypeError(
        `The "${name}.accessKeyId" option must be an access key id (letters and digits), got ${shown}`,
      );
    }
    if (typeof secretAccessKey !== "string" || secretAccessKey === "") {
      throw new TypeError(
        `The "${name}.secretAccessKey" option must be a non-empty string, got ${
          kind(secretAccessKey)
        }`,
      );
    }
    if (sessionToken !== undefined && (typeof sessionToken !== "string" || sessionToken === "")) {
      throw new TypeError(
        `The "${name}.sessionToken" option must be a non-empty string or absent, got ${
          kind(sessionToken)
        }`,
      );
    }
    if (keys.has(accessKeyId)) {
      throw new TypeError(`The "${name}.accessKeyId" ${show(accessKeyId)} is listed twice`);
    }
    keys.set(accessKeyId, { secretAccessKey, sessionToken });
  });
  return keys;
}

function checkUpstream(value: unknown): GatewayUpstream {
  if (typeof value !== "object" || value === null) {
    throw new TypeError(
      `The "upstream" option must be an object { host, port }, got ${show(value)}`,
    );
  }
  const u = value as Record<string, unknown>;
  const host = checkHostname(u.host, "upstream.host");
  if (u.port === undefined) throw new TypeError(`The "upstream.port" option is required`);
  const port = checkPort(u.port, "upstream.port");
  for (const field of ["user", "database"] as const) {
    if (u[field] !== undefined && (typeof u[field] !== "string" || u[field] === "")) {
      throw new TypeError(
        `The "upstream.${field}" option must be a non-empty string, got ${show(u[field])}`,
      );
    }
  }
  if (u.password !== undefined && typeof u.password !== "string") {
    throw new TypeError(`The "upstream.password" option must be a string, got ${kind(u.password)}`);
  }
  return {
    host,
    port,
    user: u.user as string | undefined,
    password: u.password as string | undefined,
    database: u.database as string | undefined,
  };
}

const PEM = (label: RegExp) => new RegExp(`-----BEGIN ${label.source}-----[\\s\\S]+-----END `);

function checkTls(value: unknown): tls.SecureContext | undefined {
  if (value === false) return undefined;
  if (value === undefined) {
    throw new TypeError(
      `The "tls" option is required: pass { cert, key } (PEM), or false for no TLS at all`,
    );
  }
  if (typeof value !== "object" || value === null) {
    throw new TypeError(`The "tls" option must be { cert, key } or false, got ${show(value)}`);
  }
  const { cert, key } = value as Record<string, unknown>;
  if (typeof cert !== "string" || !PEM(/CERTIFICATE/).test(cert)) {
    throw new TypeError(`The "tls.cert" option must be a PEM certificate, got ${kind(cert)}`);
  }
  if (typeof key !== "string" || !PEM(/(?:[A-Z]+ )?PRIVATE KEY/).test(key)) {
    throw new TypeError(`The "tls.key" option must be a PEM private key, got ${kind(key)}`);
  }
  try {
    return tls.createSecureContext({ cert, key });
  } catch (cause) {
    // The TLS library's own words (no key material in them), e.g. a key that does not match.
    throw new TypeError(
      `The "tls" option's cert and key cannot be used: ${(cause as Error).message}`,
      { cause },
    );
  }
}

// ---------------------------------------------------------------------------------------------
// The server

// A relayed connection: the client socket (TLS or not) and the upstream one.
interface Relay {
  client: net.Socket;
  upstream: net.Socket;
}

class GatewayServer implements Gateway {
  readonly endpoint: string;
  readonly service: "rds" | "dsql";
  readonly region: string;
  readonly stats: GatewayStats = {
    accepted: 0,
    rejected: 0,
    rejections: {},
    logins: [],
    cancels: 0,
    refused: { "53300": 0, "53400": 0 },
  };
  readonly config: Config;
  #clockOffsetMs: number;
  readonly #server: net.Server;
  // Every socket the gateway holds, so close() can drop connections still logging in.
  readonly #sockets = new Set<net.Socket>();
  readonly #relays = new Set<Relay>();
  // Sessions (token accepted: relayed, or logging in upstream): what maxConnections bounds.
  #sessions = 0;
  // Connections logging in, in all and by client address: what maxStartups and
  // maxStartupsPerAddress bound. An address leaves the map with its last connection.
  #startups = 0;
  readonly #startupsFrom = new Map<string, number>();
  // Connections being refused (over a limit) after their startup packet, as PostgreSQL does.
  #refusing = 0;
  #bucket = Infinity;
  #filled = 0;
  #address: { host: string; port: number } = { host: "", port: 0 };

  constructor(config: Config) {
    this.config = config;
    this.endpoint = config.endpoint;
    this.service = config.service;
    this.region = config.region;
    this.#clockOffsetMs = config.clockOffsetMs;
    this.#server = net.createServer((socket) => this.#accept(socket));
  }

  get host(): string {
    return this.#address.host;
  }

  get port(): number {
    return this.#address.port;
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(this.config.listenPort, this.config.listenHost, () => {
        this.#server.off("error", reject);
        // A listening server's later errors (none expected) must not crash the process.
        this.#server.on("error", () => {});
        const address = this.#server.address() as net.AddressInfo;
        this.#address = { host: address.address, port: address.port };
        resolve();
      });
    });
  }

  get clockOffsetMs(): number {
    return this.#clockOffsetMs;
  }

  // Checked when set: a NaN clock would make every token "expired" with no hint why.
  set clockOffsetMs(value: number) {
    checkOffset(value, "clockOffsetMs");
    this.#clockOffsetMs = value;
  }

  now(): number {
    return Date.now() + this.#clockOffsetMs;
  }

  connections(): number {
    return this.#relays.size;
  }

  clients(): number {
    return this.#startups + this.#sessions;
  }

  startups(): number {
    return this.#startups;
  }

  #accept(raw: net.Socket): void {
    this.track(raw);
    const c = this.config;
    const address = clientAddress(raw);
    const refusal = this.#sessions >= c.maxConnections || this.#startups >= c.maxStartups ||
        (this.#startupsFrom.get(address) ?? 0) >= c.maxStartupsPerAddress
      ? TOO_MANY
      : this.#overRate()
      ? RATE_EXCEEDED
      : undefined;
    if (refusal) {
      this.stats.refused[refusal.code as "53300" | "53400"]++;
      // As many refusals wait for their startup packet as connections may be logging in.
      if (this.#refusing >= c.maxStartups) {
        // A flood: no TLS handshake for it, the answer at once (libpq and pg-iam read an
        // ErrorResponse in place of the answer to their SSLRequest).
        return closeWith(raw, errorResponse({ severity: "FATAL", ...refusal }));
      }
      this.#refusing++;
      raw.once("close", () => this.#refusing--);
    }
    const endStartup = refusal ? () => {} : this.#startup(address, raw);
    handleClient(this, raw, endStartup, refusal).catch(() => raw.destroy());
  }

  // Counts a connection logging in until it closes or becomes a session; returns what ends that.
  #startup(address: string, raw: net.Socket): () => void {
    this.#startups++;
    this.#startupsFrom.set(address, (this.#startupsFrom.get(address) ?? 0) + 1);
    let counted = true;
    const end = () => {
      if (!counted) return;
      counted = false;
      this.#startups--;
      const left = this.#startupsFrom.get(address)! - 1;
      if (left === 0) this.#startupsFrom.delete(address);
      else this.#startupsFrom.set(address, left);
    };
    raw.once("close", end);
    return end;
  }

  /** Whether a session can start now (fewer than maxConnections are open). */
  hasSessionSlot(): boolean {
    return this.#sessions < this.config.maxConnections;
  }

  /**
   * Makes a client whose token was accepted a session, out of the startups; false when
   * maxConnections are open (then the client is to be refused with 53300).
   */
  beginSession(client: Client): boolean {
    // Gone already (its close may have been emitted): nothing to count, nothing to answer.
    if (client.raw.destroyed) return false;
    if (!this.hasSessionSlot()) {
      this.stats.refused["53300"]++;
      return false;
    }
    client.endStartup();
    this.#sessions++;
    client.raw.once("close", () => this.#sessions--);
    return true;
  }

  // A token bucket of connectionBurst, refilled at maxConnectionRate per second.
  #overRate(): boolean {
    const rate = this.config.maxConnectionRate;
    if (rate === undefined) return false;
    const now = performance.now();
    this.#bucket = Math.min(
      this.config.connectionBurst,
      this.#bucket + (now - this.#filled) * rate / 1000,
    );
    this.#filled = now;
    if (this.#bucket < 1) return true;
    this.#bucket--;
    return false;
  }

  disconnectAll(): number {
    const count = this.#relays.size;
    for (const { client, upstream } of this.#relays) {
      client.destroy();
      upstream.destroy();
    }
    this.#relays.clear();
    return count;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.disconnectAll();
      for (const socket of this.#sockets) socket.destroy();
      this.#sockets.clear();
    });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Remembers a socket until it closes, with an error handler: a reset must not crash us. */
  track(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.on("error", () => {});
    socket.once("close", () => this.#sockets.delete(socket));
  }

  addRelay(relay: Relay): void {
    this.#relays.add(relay);
  }

  removeRelay(relay: Relay): void {
    this.#relays.delete(relay);
  }

  record(login: GatewayLogin): void {
    const s = this.stats;
    if (login.accepted) s.accepted++;
    else {
      s.rejected++;
      s.rejections[login.reason!] = (s.rejections[login.reason!] ?? 0) + 1;
    }
    s.logins.push(login);
    const over = s.logins.length - this.config.recentLogins;
    if (over > 0) s.logins.splice(0, over);
    try {
      this.config.onLogin?.(login);
    } catch {
      // Documented: the callback's exceptions are ignored; a test's broken callback must not
      // take the gateway down.
    }
  }
}

// ---------------------------------------------------------------------------------------------
// One client connection

// What the gateway holds of a client's input before it stops reading (the rest waits in the
// client's own TCP buffers): more than a login needs (a startup packet is at most 10,000 bytes, a
// password 65,535); only a client pipelining behind its password gets there. Times maxStartups,
// the most that connections logging in hold.
const MAX_BUFFERED = 1 << 17;
// What the gateway queues for a client during login before it drops one that does not read.
const MAX_UNSENT = 1 << 20;
// How long a refused client has to read the ErrorResponse and close before it is dropped.
const CLOSE_GRACE_MS = 1000;
// The protocol versions the gateway speaks, as PostgreSQL words it when refusing another.
const SUPPORTED = "server supports 3.0 to 3.0";

/**
 * Reads whole packets from a socket as they complete. Each wait resolves on data, end or error,
 * so a peer that vanishes mid-handshake ends the wait with `undefined`, never a hang or a throw.
 * It pauses the socket while it holds more than `limit` bytes, and resumes it as they are taken.
 */
class Inbox {
  readonly reader: MessageReader = new MessageReader();
  readonly socket: net.Socket;
  readonly #limit: number;
  #ended = false;
  #paused = false;
  #wake: (() => void) | undefined;
  readonly #onData = (chunk: Uint8Array) => {
    this.reader.push(chunk);
    if (!this.#paused && this.reader.buffered > this.#limit) {
      this.#paused = true;
      this.socket.pause();
    }
    this.#notify();
  };
  readonly #onEnd = () => {
    this.#ended = true;
    this.#notify();
  };

  constructor(socket: net.Socket, limit = MAX_BUFFERED) {
    this.socket = socket;
    this.#limit = limit;
    socket.on("data", this.#onData);
    socket.on("end", this.#onEnd);
    socket.on("close", this.#onEnd);
    socket.on("error", this.#onEnd);
  }

  /** Waits until `take` returns something, or the socket ends (then `undefined`). */
  async next<T>(take: () => T | undefined): Promise<T | undefined> {
    for (;;) {
      const value = take();
      if (this.#paused && this.reader.buffered <= this.#limit) {
        this.#paused = false;
        this.socket.resume();
      }
      if (value !== undefined) return value;
      if (this.#ended) return undefined;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /**
   * Stops listening: the socket's data goes elsewhere from now on. Keeps an error handler. The
   * socket may be left paused: whoever reads it next resumes it.
   */
  detach(): void {
    this.socket.off("data", this.#onData);
    this.socket.off("end", this.#onEnd);
    this.socket.off("close", this.#onEnd);
    this.socket.off("error", this.#onEnd);
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/** A client connection, from accept until it is relayed or closed. */
interface Client {
  gateway: GatewayServer;
  /** The TCP socket, under the TLS one if any. */
  raw: net.Socket;
  /** Reads the socket the client speaks on: the TCP one, then the TLS one once negotiated. */
  inbox: Inbox;
  tls: boolean;
  /** The authentication deadline, from accept; cleared once relaying starts. */
  deadline: ReturnType<typeof setTimeout>;
  /** Whether the deadline passed (and the connection was dropped for it). */
  timedOut: boolean;
  /** Stops counting it among the connections logging in (it became a session). */
  endStartup: () => void;
}

/** A client that sent its StartupMessage. */
interface Session extends Client {
  user: string;
  database: string;
}

/** A server's answer to a connection it will not take. */
interface Refusal {
  code: string;
  message: string;
}

const TOO_MANY: Refusal = { code: "53300", message: "sorry, too many clients already" };
const RATE_EXCEEDED: Refusal = {
  code: "53400",
  message: "unable to accept connection, rate exceeded",
};

async function handleClient(
  gateway: GatewayServer,
  raw: net.Socket,
  endStartup: () => void,
  refusal?: Refusal,
): Promise<void> {
  raw.setNoDelay(true);
  const client: Client = {
    gateway,
    raw,
    inbox: new Inbox(raw),
    tls: false,
    // Like authentication_timeout: fixed from accept, whatever the client sends meanwhile. The
    // server closes without a word; so does the gateway.
    deadline: setTimeout(() => {
      client.timedOut = true;
      raw.destroy();
    }, gateway.config.authenticationTimeoutMs),
    timedOut: false,
    endStartup,
  };
  raw.once("close", () => clearTimeout(client.deadline));
  // One SSLRequest and one GSSENCRequest, in either order, as PostgreSQL (which fixed clients
  // alternating them forever); a repeat is then an unsupported protocol version, 1234.5679 or
  // 1234.5680. TLS negotiated counts as both.
  let sslDone = false;
  let gssDone = false;
  // Direct TLS (PostgreSQL 17's sslnegotiation=direct): a ClientHello as the connection's first
  // byte (0x16 cannot begin a startup packet: its length would be hundreds of megabytes).
  const first = await client.inbox.next(() => client.inbox.reader.buffered > 0 || undefined);
  if (first === undefined) return void raw.destroy();
  if (client.inbox.reader.peek() === TLS_HANDSHAKE) {
    const secured = gateway.config.secureContext !== undefined && await directTls(client);
    // As PostgreSQL: without TLS, or without ALPN "postgresql", the connection is closed unanswered.
    if (!secured) return closeWith(raw);
    sslDone = gssDone = true;
  }
  for (;;) {
    const inbox = client.inbox;
    const packet = await inbox.next(() => inbox.reader.startup());
    if (packet === undefined) return void raw.destroy();
    const code = startupCode(packet);
    if (code === CANCEL_REQUEST) return forwardCancel(client, packet);
    const secureContext = gateway.config.secureContext;
    if (code === SSL_REQUEST && !sslDone && secureContext) {
      // Bytes after the SSLRequest would be a client ignoring our answer: refuse, as the server.
      if (inbox.reader.buffered > 0) return void raw.destroy();
      inbox.detach();
      raw.write("S");
      const socket = new tls.TLSSocket(raw, { isServer: true, secureContext });
      gateway.track(socket);
      client.inbox = new Inbox(socket);
      client.tls = true;
      sslDone = gssDone = true;
      continue;
    }
    const ssl = code === SSL_REQUEST && !sslDone;
    if (ssl || (code === GSSENC_REQUEST && !gssDone)) {
      if (ssl) sslDone = true;
      else gssDone = true;
      if (!send(inbox.socket, "N")) return;
      if (inbox.reader.buffered > 0) {
        // Sent before the answer, so sent in plaintext whatever the answer: the server refuses it.
        const request = ssl ? "SSL request" : "GSSAPI encryption request";
        return fail(client, "08P01", `received unencrypted data after ${request}`, {
          detail: "This could be either a client-software bug or evidence of an attempted " +
            "man-in-the-middle attack.",
        });
      }
      continue;
    }
    const major = code >>> 16;
    const minor = code & 0xffff;
    if (major !== 3) {
      return fail(client, "0A000", `unsupported frontend protocol ${major}.${minor}: ${SUPPORTED}`);
    }
    const params = startupParameters(packet);
    if (params === undefined) {
      return fail(
        client,
        "08P01",
        "invalid startup packet layout: expected terminator as last byte",
      );
    }
    // PostgreSQL says it is full only now, after TLS and the startup packet.
    if (refusal) return fail(client, refusal.code, refusal.message);
    if (!gateway.hasSessionSlot()) {
      gateway.stats.refused["53300"]++;
      return fail(client, TOO_MANY.code, TOO_MANY.message);
    }
    return login(client, params, minor);
  }
}

// The address a connection comes from, IPv4 as such when it arrives on an IPv6 socket.
function clientAddress(socket: net.Socket): string {
  const address = socket.remoteAddress ?? "";
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

// The first byte of a TLS record carrying a handshake message (the ClientHello).
const TLS_HANDSHAKE = 0x16;
// The ALPN protocol PostgreSQL 17 and later require on direct TLS.
const PG_ALPN = "postgresql";

/**
 * The TLS handshake a client started without an SSLRequest; the client's inbox moves to the TLS
 * socket. False when the handshake fails or the client did not offer ALPN "postgresql".
 */
async function directTls(client: Client): Promise<boolean> {
  const { gateway, raw } = client;
  const received = client.inbox.reader.rest();
  client.inbox.detach();
  // The bytes already read go back to the socket, for the TLS socket to read first.
  raw.pause();
  raw.unshift(received);
  const socket = new tls.TLSSocket(raw, {
    isServer: true,
    secureContext: gateway.config.secureContext,
    ALPNProtocols: [PG_ALPN],
  });
  gateway.track(socket);
  const secure = await new Promise<boolean>((resolve) => {
    socket.once("secure", () => resolve(true));
    socket.once("error", () => resolve(false));
    socket.once("close", () => resolve(false));
  });
  if (!secure || socket.alpnProtocol !== PG_ALPN) {
    socket.destroy();
    return false;
  }
  client.inbox = new Inbox(socket);
  client.tls = true;
  return true;
}

// Writes to a client that is logging in; drops one that does not read what it was sent.
function send(socket: net.Socket, bytes: Uint8Array | string): boolean {
  if (socket.destroyed) return false;
  if (socket.writableLength > MAX_UNSENT) {
    socket.destroy();
    return false;
  }
  socket.write(bytes);
  return true;
}

// Sends a FATAL ErrorResponse and closes.
function fail(
  client: Client,
  code: string,
  message: string,
  extra: { detail?: string; hint?: string } = {},
): void {
  client.inbox.detach();
  closeWith(client.inbox.socket, errorResponse({ severity: "FATAL", code, message, ...extra }));
}

// Sends `bytes` (if any) and closes: a FIN once they are written, then the socket is dropped when
// the peer closes too, or CLOSE_GRACE_MS later. Whatever the peer still sends is read and
// discarded meanwhile: closing with unread input would be a reset, which can destroy the message
// before the peer reads it.
function closeWith(socket: net.Socket, bytes?: Uint8Array): void {
  if (socket.destroyed) return;
  socket.on("data", () => {});
  socket.resume();
  if (bytes) socket.end(bytes);
  else socket.end();
  const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
  socket.once("close", () => clearTimeout(timer));
}

async function login(client: Client, params: Map<string, string>, minor: number): Promise<void> {
  const { gateway, inbox } = client;
  const socket = inbox.socket;
  // Protocol options (_pq_.*) are the gateway's to negotiate, and it knows none: they are
  // refused in NegotiateProtocolVersion, never sent upstream. So is a minor version beyond 3.0
  // (3.2 is PostgreSQL 18's): the client goes on in 3.0, as the upstream login is.
  const unrecognized = [...params.keys()].filter((name) => name.startsWith("_pq_."));
  for (const name of unrecognized) params.delete(name);
  if (minor > 0 || unrecognized.length > 0) {
    if (!send(socket, negotiateProtocolVersion(0, unrecognized))) return;
  }
  const user = params.get("user") ?? "";
  const database = params.get("database") || user;
  const session: Session = Object.assign(client, { user, database });
  if (user === "") {
    reject(session, "malformed", "the startup packet names no user");
    return fail(client, "28000", "no PostgreSQL user name specified in startup packet");
  }
  if (gateway.config.secureContext && !client.tls) {
    reject(session, "no-tls", "the client did not request TLS");
    return fail(
      client,
      "28000",
      `no pg_hba.conf entry for host "${socket.remoteAddress}", user "${user}", database "${database}", no encryption`,
      { hint: "This server requires TLS: connect with sslmode=require or stricter." },
    );
  }

  if (!send(socket, authCleartext())) return;
  const reply = await inbox.next(() => inbox.reader.message(MAX_PASSWORD_LENGTH));
  if (reply === undefined || reply.type !== "p".charCodeAt(0)) {
    // psql closes here when it has no password yet, then asks for one and reconnects.
    reject(
      session,
      "no-password",
      reply
        ? `expected a password, got a ${typeName(reply.type)} message`
        : client.timedOut
        ? `no password within the authentication timeout ` +
          `(${gateway.config.authenticationTimeoutMs} ms from the connection)`
        : "the client closed instead of sending a password",
    );
    return reply ? fail(client, "08P01", "expected password response") : void socket.destroy();
  }
  const password = passwordOf(reply.body);
  if (password === "") {
    reject(session, "no-password", "the password is empty");
    return fail(client, "28P01", `PAM authentication failed for user "${user}"`);
  }

  const now = gateway.now();
  const c = gateway.config;
  const result = verifyToken(password, {
    hostname: c.endpoint,
    port: c.port,
    service: c.service,
    region: c.region,
    user,
    now,
    credentials: c.keys,
  });
  const tokenId = sha256Hex(password).slice(0, 16);
  if (!result.ok) {
    reject(session, result.reason, result.detail, tokenId);
    // The server says no more than this, whatever the reason: the detail is for the operator.
    return fail(client, "28P01", `PAM authentication failed for user "${user}"`);
  }
  gateway.record({
    accepted: true,
    user,
    database,
    at: new Date(now),
    accessKeyId: result.accessKeyId,
    action: result.action,
    tokenId,
    signedAt: result.signedAt,
    tokenAgeMs: result.ageMs,
    tls: client.tls,
  });
  // Sessions that started since the startup packet took the last slot.
  if (!gateway.beginSession(client)) return fail(client, TOO_MANY.code, TOO_MANY.message);
  await connectUpstream(session, params);
}

function reject(
  session: Session,
  reason: GatewayRejectReason,
  detail: string,
  tokenId?: string,
): void {
  const { gateway, user, database, tls } = session;
  gateway.record({
    accepted: false,
    reason,
    detail,
    user,
    database,
    at: new Date(gateway.now()),
    ...(tokenId === undefined ? {} : { tokenId }),
    tls,
  });
}

// Opens a TCP connection; resolves with the socket or the connection error.
function connect(host: string, port: number): Promise<net.Socket | Error> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const onError = (error: Error) => {
      socket.destroy();
      resolve(error);
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      resolve(socket);
    });
  });
}

async function connectUpstream(session: Session, params: Map<string, string>): Promise<void> {
  const { gateway, inbox } = session;
  const client = inbox.socket;
  const { host, port, user, database, password } = gateway.config.upstream;
  const target = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  const upstream = await connect(host, port);
  if (upstream instanceof Error) {
    return fail(
      session,
      "08006",
      `the gateway cannot reach the upstream server at ${target}: ${upstream.message}`,
    );
  }
  gateway.track(upstream);
  upstream.setNoDelay(true);
  if (client.destroyed) return void upstream.destroy();
  // A client gone (or past its deadline) before the upstream login completes takes it along.
  const drop = () => upstream.destroy();
  client.once("close", drop);

  const sent = new Map(params);
  if (user !== undefined) sent.set("user", user);
  if (database !== undefined) sent.set("database", database);
  upstream.write(startupMessage(sent));
  // The upstream is trusted: what it sends during login is read whole.
  const upInbox = new Inbox(upstream, Infinity);
  const upstreamUser = sent.get("user")!;

  for (;;) {
    const m = await upInbox.next(() => upInbox.reader.message());
    if (m === undefined) {
      upstream.destroy();
      return fail(
        session,
        "08006",
        `the upstream server at ${target} closed the connection during login`,
      );
    }
    const type = String.fromCharCode(m.type);
    if (type === "E") {
      upstream.destroy();
      const fields = Object.fromEntries(errorFields(m.body));
      // The upstream refusing the gateway's own login (a wrong upstream password, pg_hba.conf)
      // is not the client's token failing: as 28P01/28000 the client would retry with a new
      // token and report it rejected.
      if (fields.C === "28P01" || fields.C === "28000") {
        return fail(
          session,
          UPSTREAM_LOGIN_FAILED,
          `the gateway accepted the IAM token, but its own login to the upstream server at ` +
            `${target} as "${upstreamUser}" failed: ${fields.M ?? "no message"}`,
          { detail: `The upstream server answered with SQLSTATE ${fields.C}.` },
        );
      }
      // The upstream's own refusal (no such database, …): the client sees it as is.
      inbox.detach();
      return closeWith(client, m.raw);
    }
    if (type === "N") {
      if (!send(client, m.raw)) return void upstream.destroy();
      continue;
    }
    const code = type === "R" ? authCode(m.body) : -1;
    if (code === AUTH_OK) {
      client.off("close", drop);
      upInbox.detach();
      inbox.detach();
      return relay(session, upstream, [m.raw, upInbox.reader.rest()], inbox.reader.rest());
    }
    const reply = code === AUTH_CLEARTEXT
      ? password
      : code === AUTH_MD5 && password !== undefined && m.body.length >= 8
      ? await md5Password(password, upstreamUser, m.body.subarray(4, 8))
      : undefined;
    if (reply === undefined) {
      upstream.destroy();
      const what = type === "R"
        ? `authentication method ${AUTH_NAMES[code] ?? code}`
        : `a ${typeName(m.type)} message`;
      return fail(
        session,
        UPSTREAM_LOGIN_FAILED,
        `the gateway accepted the IAM token, but cannot log in to the upstream server at ` +
          `${target} as "${upstreamUser}": it asks for ${what}` +
          (code === AUTH_CLEARTEXT || code === AUTH_MD5 ? ", and no upstream password is set" : ""),
        {
          hint: code === AUTH_CLEARTEXT || code === AUTH_MD5
            ? `Set the gateway's "upstream.password" option.`
            : `Configure the upstream server for trust, password or md5 authentication of user "${upstreamUser}".`,
        },
      );
    }
    upstream.write(passwordMessage(reply));
  }
}

// 08004 (sqlserver_rejected_establishment_of_sqlconnection): the connection was refused for a
// reason other than the client's credentials, so pg-iam's clients do not retry with a new token.
const UPSTREAM_LOGIN_FAILED = "08004";

const AUTH_NAMES: Record<number, string> = {
  2: "Kerberos V5",
  3: "password",
  5: "md5",
  7: "GSSAPI",
  9: "SSPI",
  10: "SASL (SCRAM)",
};

// md5 auth: "md5" + md5hex(md5hex(password + user) + salt). node:crypto is loaded only here, for
// the rare md5 upstream.
async function md5Password(password: string, user: string, salt: Uint8Array): Promise<string> {
  const { createHash } = await import("node:crypto");
  const inner = createHash("md5").update(password + user).digest("hex");
  return "md5" + createHash("md5").update(inner).update(salt).digest("hex");
}

// Relays bytes verbatim both ways from now on: the upstream's AuthenticationOk and whatever came
// with it to the client, anything the client pipelined to the upstream.
function relay(
  { gateway, deadline, inbox: { socket: client } }: Session,
  upstream: net.Socket,
  toClient: Uint8Array[],
  toUpstream: Uint8Array,
): void {
  const pair: Relay = { client, upstream };
  clearTimeout(deadline); // logged in: from now on idle connections are fine
  gateway.addRelay(pair);
  let closed = false;
  const closeBoth = () => {
    if (closed) return;
    closed = true;
    gateway.removeRelay(pair);
    // Whatever is still queued is delivered before the other side closes.
    for (const socket of [client, upstream]) {
      if (!socket.destroyed) socket.end(() => socket.destroy());
    }
  };
  const pipe = (from: net.Socket, to: net.Socket) => {
    from.on("data", (chunk: Uint8Array) => {
      if (!to.write(chunk)) from.pause();
    });
    to.on("drain", () => from.resume());
    from.once("end", closeBoth);
    from.once("close", closeBoth);
  };
  pipe(client, upstream);
  pipe(upstream, client);
  let clientDrained = true;
  for (const chunk of toClient) if (chunk.length) clientDrained = client.write(chunk);
  const upstreamDrained = toUpstream.length ? upstream.write(toUpstream) : true;
  // Either socket may have been paused by its inbox, and a 'data' listener does not resume a
  // paused stream: each flows now unless the other side has yet to drain.
  if (upstreamDrained) client.resume();
  else client.pause();
  if (clientDrained) upstream.resume();
  else upstream.pause();
  if (client.destroyed || upstream.destroyed) closeBoth();
}

// A CancelRequest goes to the upstream as is: the client's cancel key is the upstream's, since
// BackendKeyData was relayed verbatim. The server answers nothing; it just closes.
async function forwardCancel({ gateway, inbox }: Client, packet: Uint8Array): Promise<void> {
  inbox.detach(); // the server reads nothing after a CancelRequest
  const { host, port } = gateway.config.upstream;
  const upstream = await connect(host, port);
  if (!(upstream instanceof Error)) {
    gateway.track(upstream);
    gateway.stats.cancels++;
    upstream.end(packet);
  }
  closeWith(inbox.socket);
}
