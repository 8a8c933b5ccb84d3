// Signing for one connection, whatever the driver: the IAM options checked once per client, a
// token per physical connection (credentials bounded in time, timings reported), the error for a
// login rejected twice, DSQL's connection lifetimes. Driver adapters (postgres.js, node-postgres,
// Bun.SQL) and the CLI use it; it uses only the core.

import {
  abandonPending,
  type Credentials,
  type CredentialsContext,
  type CredentialsOption,
  resolveCredentials,
} from "../core/credentials.ts";
import { CredentialsError, show } from "../core/errors.ts";
import { isDsqlClusterId } from "../core/hostname.ts";
import {
  credentialsContext,
  presignInput,
  resolveSigning,
  type Signing,
  type SigningNames,
} from "../core/signing.ts";
import { presign, type SigningCredentials } from "../core/sigv4.ts";

/** Fields of a server ErrorResponse (by their one-letter codes). */
export type ServerError = Record<string, string>;

/** Reported by `onToken` each time a token is signed. Never contains the token. */
export interface TokenEvent {
  /** `"rds"` or `"dsql"`. */
  service: "rds" | "dsql";
  /** The host name signed into the token. */
  signingHostname: string;
  /** The port signed into the token (RDS only). */
  signingPort?: number;
  /** The database user. */
  user: string;
  /** The signing region. */
  region: string;
  /** `connect` (RDS), `DbConnect` or `DbConnectAdmin` (DSQL). */
  action: string;
  /** The token's signing time and expiry. */
  signedAt: Date;
  /** When the token stops being accepted for new connections. */
  expiresAt: Date;
  /** Time spent resolving credentials (near 0 when cached). */
  credentialsMs: number;
  /** Time spent signing. */
  signMs: number;
  /** Whether credentials were force-refreshed (the retry after a rejected token). */
  forceRefresh: boolean;
  /**
   * Whether an earlier token was handed out again (see `tokenReuse`): `signedAt` and `expiresAt`
   * are then that token's, and `signMs` is 0.
   */
  reused: boolean;
}

/** The IAM options every driver adapter takes (iamPostgres, iamPool, iamSql, iamPassword). */
export interface IamOptions {
  /** Signing region. Default: from the endpoint name, then `AWS_REGION`, `AWS_DEFAULT_REGION`. */
  region?: string;
  /**
   * AWS credentials or a provider. Default: `AWS_ACCESS_KEY_ID` and friends, else the standard
   * AWS chain (profiles, SSO, ECS, EKS, EC2) when `@aws-sdk/credential-provider-node` is installed.
   */
  credentials?: CredentialsOption;
  /** The AWS profile for credentials (and region, if needed). Default: `AWS_PROFILE`. */
  profile?: string;
  /** Told when refreshing expiring credentials in the background fails. Default: `console.warn`. */
  onRefreshError?: (error: Error) => void;
  /** Token lifetime in seconds (default 900). Only matters while the connection is opening. */
  expiresIn?: number;
  /**
   * The endpoint name to sign for (and to verify the TLS certificate against) when connecting
   * through a CNAME, an SSH/SSM tunnel or a local proxy. Default: the host connected to.
   */
  signingHostname?: string;
  /** The port to sign for (RDS tokens embed it). Default: the port connected to. */
  signingPort?: number;
  /** `"rds"` or `"dsql"`. Default: from the (signing) host name; `"rds"` if it says nothing. */
  service?: "rds" | "dsql";
  /** DSQL: sign `DbConnectAdmin`. Default: true for the user `admin`. */
  admin?: boolean;
  /** Called for each token a connection is given, signed or reused, with timings (never the token). */
  onToken?: (event: TokenEvent) => void;
  /**
   * Reuse a token for new connections while it is young (default: true). IAM throttles new
   * authentications (RDS: about 200 per second; reused tokens are not throttled), so a pool filling
   * at once presents one token, not thirty. A token is handed out again only while it is less than
   * 5 minutes and less than half its lifetime old, at least the connect timeout away from its expiry,
   * signed with the credentials resolved now, and never after a login with it was rejected (the
   * retry always signs afresh). `false` signs a token for every connection.
   */
  tokenReuse?: boolean;
  /** Upper bound in seconds for resolving credentials. Default: min(10, connect_timeout / 2). */
  credentialsTimeout?: number;
  /** The clock used for signing, in epoch milliseconds (tests and simulations). */
  now?: () => number;
}

/**
 * The error a query gets when the server rejected the IAM token twice (the second time with
 * force-refreshed credentials). `code` is the server's SQLSTATE (`28P01` or `28000`); the message
 * lists the likely causes and what was signed, never the token.
 *
 * @example
 * ```ts ignore
 * import { IamAuthError, iamPostgres } from "@pg-iam/pg-iam/postgres";
 *
 * try {
 *   await iamPostgres("postgres://app@db.abc123xyz.us-east-1.rds.amazonaws.com/app")`select 1`;
 * } catch (error) {
 *   if (error instanceof IamAuthError) console.error(error.code, error.message);
 * }
 * ```
 */
export class IamAuthError extends Error {
  /** The server's SQLSTATE: `28P01` or `28000`. */
  readonly code: string;
  /** The server's own message, e.g. `PAM authentication failed for user "app"`. */
  readonly serverMessage: string;

  /**
   * Creates the error (pg-iam does; you would only catch it).
   *
   * @param code The SQLSTATE.
   * @param serverMessage The server's message.
   * @param message The full explanation.
   */
  constructor(code: string, serverMessage: string, message: string) {
    super(message);
    this.name = "IamAuthError";
    this.code = code;
    this.serverMessage = serverMessage;
  }
}

/** The result of an adapter's `prewarm()`: how many connections opened, and why others did not. */
export interface PrewarmResult {
  /** Connections that opened and answered. */
  opened: number;
  /** Errors of the connections that did not. */
  errors: Error[];
}

// The keys of IamOptions: an adapter takes these for itself, the rest go to its driver.
const IAM_KEYS: ReadonlySet<string> = new Set<string>(
  [
    "region",
    "credentials",
    "profile",
    "onRefreshError",
    "expiresIn",
    "signingHostname",
    "signingPort",
    "service",
    "admin",
    "onToken",
    "credentialsTimeout",
    "now",
    "tokenReuse",
  ] satisfies (keyof IamOptions)[],
);

/**
 * An adapter's `(url?, options?)` arguments, checked: the connection string, the IAM options, and
 * the rest (the driver's own), with a password refused.
 */
export function driverArgs(
  fn: string,
  url: unknown,
  options: unknown,
): { url: string | undefined; iam: Record<string, unknown>; rest: Record<string, unknown> } {
  if (typeof url === "object" && url !== null && options === undefined) {
    options = url;
    url = undefined;
  }
  if (url !== undefined && typeof url !== "string") {
    throw new TypeError(`${fn}() expects a connection string, got ${show(url)}`);
  }
  if (options !== undefined && (typeof options !== "object" || options === null)) {
    throw new TypeError(`${fn}() expects an options object, got ${show(options)}`);
  }
  const { iam, rest } = splitIam(options as Record<string, unknown> | undefined);
  return { url: url as string | undefined, iam, rest };
}

/**
 * Splits options into the IAM ones and the driver's, refusing a password (in any of its names)
 * and checking `dangerouslyDisableTls`.
 */
export function splitIam(
  options: Record<string, unknown> | undefined,
): { iam: Record<string, unknown>; rest: Record<string, unknown> } {
  const iam: Record<string, unknown> = {};
  const rest: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options ?? {})) {
    (IAM_KEYS.has(key) ? iam : rest)[key] = value;
  }
  if ("password" in rest || "pass" in rest) {
    throw new TypeError(
      `The "password" option cannot be combined with IAM authentication: pg-iam signs a token ` +
        `for every connection (remove the password)`,
    );
  }
  const disable = rest.dangerouslyDisableTls;
  if (disable !== undefined && typeof disable !== "boolean") {
    throw new TypeError(
      `The "dangerouslyDisableTls" option must be a boolean, got ${show(disable)}`,
    );
  }
  return { iam, rest };
}

/** Everything needed to sign a token for one connection, checked. */
export interface SigningConfig extends Signing {
  credentials: CredentialsOption | undefined;
  context: CredentialsContext | undefined;
  credentialsTimeoutMs: number;
  now: () => number;
  onToken?: (event: TokenEvent) => void;
  /** Reuse young tokens (`tokenReuse`). */
  reuse: boolean;
  /** A reused token has at least this long to live when handed out (the connect timeout). */
  minRemainingMs: number;
  /** The token last signed, while reuse is on. */
  last?: Signed;
  /** A signing under way, shared by the connections that ask meanwhile. */
  pending?: { credentials: SigningCredentials; signed: Promise<Signed> };
}

/** A token and what it was signed with. */
interface Signed {
  token: string;
  signedAt: number;
  until: number;
  credentials: SigningCredentials;
}

/**
 * Checks the IAM options for a connection to `host:port` as `user` and resolves what can be resolved
 * up front (service, signing host, action, region or the promise of it). `urlNames` names the
 * options that came from the connection string by the parameter the user wrote (`iam_host`).
 */
export function signingConfig(
  o: IamOptions & { host: string; port: number; user: string },
  connectTimeout: number,
  urlNames: SigningNames = {},
): SigningConfig {
  const context = credentialsContext(o as unknown as Record<string, unknown>);
  const signing = resolveSigning({ ...o, profile: context?.profile }, {
    host: "the host connected to",
    ...urlNames,
  });
  if (o.credentialsTimeout !== undefined) {
    if (typeof o.credentialsTimeout !== "number" || !(o.credentialsTimeout > 0)) {
      throw new RangeError(
        `The "credentialsTimeout" option must be a positive number of seconds, got ${
          show(o.credentialsTimeout)
        }`,
      );
    }
  }
  if (o.tokenReuse !== undefined && typeof o.tokenReuse !== "boolean") {
    throw new TypeError(`The "tokenReuse" option must be a boolean, got ${show(o.tokenReuse)}`);
  }
  for (const name of ["onToken", "now"] as const) {
    if (o[name] !== undefined && typeof o[name] !== "function") {
      throw new TypeError(`The "${name}" option must be a function, got ${show(o[name])}`);
    }
  }
  if (
    o.credentials !== undefined && typeof o.credentials !== "function" &&
    (typeof o.credentials !== "object" || o.credentials === null)
  ) {
    throw new CredentialsError(
      "invalid",
      `The "credentials" option must be an object or a provider function, got ${
        show(o.credentials)
      }`,
    );
  }
  return {
    ...signing,
    credentials: o.credentials,
    context,
    credentialsTimeoutMs: (o.credentialsTimeout ?? Math.min(10, connectTimeout / 2)) * 1000,
    now: o.now ?? Date.now,
    onToken: o.onToken,
    reuse: o.tokenReuse ?? true,
    minRemainingMs: connectTimeout * 1000,
  };
}

/**
 * The names of the IAM options a connection string gave (and `options` did not), as the user
 * wrote them, for {@linkcode signingConfig}'s messages: `the connection string parameter
 * "iam_host"`.
 */
export function urlNames(
  target: { iamParams?: Partial<Record<string, string>> },
  options: Record<string, unknown>,
): SigningNames {
  const names: Record<string, string> = {};
  for (const [key, param] of Object.entries(target.iamParams ?? {})) {
    if (options[key] === undefined) names[key] = `the connection string parameter "${param}"`;
  }
  return names;
}

/** The host to connect to: for a bare DSQL cluster id, the endpoint it expands to. */
export function connectHost(c: SigningConfig, host: string): string {
  return c.service === "dsql" && isDsqlClusterId(host) ? c.signingHostname : host;
}

/** Seconds: 45 to 55 minutes, below DSQL's 60-minute connection limit, drawn anew per call. */
export function dsqlLifetime(): number {
  return 60 * (45 + Math.random() * 10);
}

/**
 * Credentials (bounded in time), then a token: a young one again while `tokenReuse` allows it,
 * else a new one. Rejects with a clear error.
 */
export async function signFor(
  c: SigningConfig,
  forceRefresh: boolean,
): Promise<{ token: string; credentialsMs: number; signMs: number; reused: boolean }> {
  const t0 = performance.now();
  if (typeof c.region !== "string") c.region = await c.region;
  if (forceRefresh) c.last = c.pending = undefined; // a rejected token is never handed out again
  const signingDate = new Date(c.now());
  const until = signingDate.getTime() + c.expiresIn * 1000;
  let credentials = resolveCredentials(c.credentials, signingDate, until, forceRefresh, c.context);
  if (credentials instanceof Promise) {
    credentials = await bounded(credentials, c.credentialsTimeoutMs).catch((error) => {
      if (error instanceof TimeoutError) abandonPending(c.credentials);
      throw error;
    });
  }
  const t1 = performance.now();
  let signed: Signed | undefined;
  let reused = false;
  if (c.reuse && !forceRefresh) {
    if (c.last && young(c, c.last, credentials, signingDate.getTime())) {
      signed = c.last;
      reused = true;
    } else if (c.pending && same(c.pending.credentials, credentials)) {
      // A pool filling at once: the connections asking while the first token is being signed
      // share it.
      signed = await c.pending.signed;
      reused = true;
    }
  }
  if (!signed) {
    const fresh = sign(c, c.region, signingDate, until, credentials);
    if (c.reuse) {
      const pending = { credentials, signed: fresh };
      c.pending = pending;
      fresh.then(
        (s) => {
          if (c.pending === pending) c.last = s;
        },
        () => {},
      ).finally(() => {
        if (c.pending === pending) c.pending = undefined;
      });
    }
    signed = await fresh;
  }
  const t2 = performance.now();
  const signMs = reused ? 0 : t2 - t1;
  if (c.onToken) {
    const onToken = c.onToken;
    const region = c.region;
    const { signedAt, until: expiresAt } = signed;
    safely(() =>
      onToken({
        service: c.service,
        signingHostname: c.signingHostname,
        ...(c.service === "rds" ? { signingPort: c.signingPort } : {}),
        user: c.user,
        region,
        action: c.action,
        signedAt: new Date(signedAt),
        expiresAt: new Date(expiresAt),
        credentialsMs: t1 - t0,
        signMs,
        forceRefresh,
        reused,
      })
    );
  }
  return { token: signed.token, credentialsMs: t1 - t0, signMs, reused };
}

/** Forgets a token a server rejected: the next connection signs afresh. */
export function forgetToken(c: SigningConfig, token: string): void {
  if (c.last?.token === token) c.last = undefined;
}

// How long a token may be handed out again, at most. Seed 004 saw IAM connects take seconds (4+ s
// spikes on Aurora Serverless), and a server's clock may differ from ours by minutes; 5 minutes of
// reuse leaves a default 15-minute token 10 minutes of life when it is presented, far more than
// either, while already cutting a process's signing to one token per 5 minutes per endpoint.
const MAX_REUSE_MS = 5 * 60_000;

/** Whether a token may be handed out again at `now`, with `credentials` resolved now. */
function young(c: SigningConfig, s: Signed, credentials: SigningCredentials, now: number): boolean {
  const age = now - s.signedAt;
  if (age < 0 || age >= Math.min(MAX_REUSE_MS, (s.until - s.signedAt) / 2)) return false;
  if (s.until - now < c.minRemainingMs) return false;
  const expiration = (credentials as Credentials).expiration?.getTime();
  if (expiration !== undefined && expiration - now < c.minRemainingMs) return false;
  return same(s.credentials, credentials);
}

function same(a: SigningCredentials, b: SigningCredentials): boolean {
  return a === b ||
    (a.accessKeyId === b.accessKeyId && a.secretAccessKey === b.secretAccessKey &&
      a.sessionToken === b.sessionToken);
}

async function sign(
  c: SigningConfig,
  region: string,
  signingDate: Date,
  until: number,
  credentials: SigningCredentials,
): Promise<Signed> {
  const token = await presign(presignInput(c, region, signingDate), credentials);
  return { token, signedAt: signingDate.getTime(), until, credentials };
}

class TimeoutError extends CredentialsError {}

function bounded<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() =>
      reject(
        new TimeoutError(
          "provider",
          `The "credentials" provider did not answer within ${ms / 1000}s ` +
            `(credentialsTimeout); the connection was not attempted`,
        ),
      ), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The error for a login the server rejected twice: the likely causes, never the token. */
export function authError(fields: ServerError, c: SigningConfig): IamAuthError {
  const server = fields.M ?? "authentication failed";
  const causes = c.service === "rds"
    ? [
      `the database user ${JSON.stringify(c.user)} lacks the rds_iam role ` +
      `(GRANT rds_iam TO ${JSON.stringify(c.user)})`,
      `the IAM policy does not allow rds-db:connect on ` +
      `arn:aws:rds-db:${c.region}:<account>:dbuser:<DbiResourceId>/${c.user}`,
      `IAM authentication is not enabled on the instance or cluster`,
    ]
    : [
      `the IAM policy does not allow dsql:${c.action} on this cluster`,
      c.action === "DbConnect"
        ? `the role ${JSON.stringify(c.user)} is not linked to an IAM identity ` +
          `(AWS IAM GRANT … TO ${JSON.stringify(c.user)})`
        : `"admin" connects need DbConnectAdmin permission`,
    ];
  causes.push(
    `the region ${JSON.stringify(c.region)} or the signed host ${
      JSON.stringify(c.signingHostname)
    } is not the endpoint's (connecting through a CNAME, tunnel or proxy? set signingHostname` +
      (c.service === "rds" ? " and signingPort)" : ")"),
    `this machine's clock is off (tokens are checked against AWS's time)`,
  );
  return new IamAuthError(
    fields.C ?? "28P01",
    server,
    `${server} — the IAM token was rejected twice, the second time with force-refreshed ` +
      `credentials. Signed: ${c.service === "rds" ? "rds-db" : "dsql"} ${c.action} for ${
        c.service === "rds" ? `${c.signingHostname}:${c.signingPort}` : c.signingHostname
      }, user ${JSON.stringify(c.user)}, region ${c.region}. Likely causes: ${
        causes.map((cause, i) => `(${i + 1}) ${cause}`).join("; ")
      }.`,
  );
}

/** A count option (prewarm, connections): a whole number from 1 to 10,000. */
export function checkCount(value: unknown, option: string): void {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 10000) {
    throw new RangeError(
      `The "${option}" option must be a whole number from 1, got ${show(value)}`,
    );
  }
}

// User hooks must not break a connection: their errors are reported, never thrown into it.
export function safely(fn: () => void): void {
  try {
    fn();
  } catch (error) {
    console.error("pg-iam: a hook threw:", error);
  }
}
