// Option intake, whatever the driver: the IAM options an adapter takes for itself and the rest it
// passes to its driver, a password refused, the names a connection string gave its parameters,
// count options. Signing (sign.ts) takes what this hands over; both use only the core.

import type { CredentialsOption } from "../core/credentials.ts";
import { show } from "../core/errors.ts";
import type { SigningNames } from "../core/signing.ts";

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

/**
 * Where pg-iam's warnings go (a client's idle connection failing, a hook that threw, a failed
 * credentials refresh): the methods `console` and pino's loggers share. pg-iam calls
 * `warn(message, error)` or `error(message, error)`: `message` is one line starting `pg-iam: `
 * that ends with the error's message, and `error` the Error itself. Neither holds a token or a
 * secret. A logger that throws is ignored. Default: `console`, with the lines pg-iam always wrote.
 *
 * pino takes the Error as a format argument and, without a `%` placeholder, leaves it out: the
 * message alone is logged. To log the Error as pino's `err` field, wrap it (below).
 *
 * @example
 * ```ts
 * import type { Logger } from "@pg-iam/pg-iam/postgres";
 *
 * // pino: `import pino from "pino"; const log = pino();`, then
 * const log = { warn: console.warn, error: console.error }; // stands in for pino here
 * const logger: Logger = {
 *   warn: (message, error) => log.warn({ err: error }, message),
 *   error: (message, error) => log.error({ err: error }, message),
 * };
 * ```
 */
export interface Logger {
  /** Not called by pg-iam today; part of the shape so that `console` and pino fit. */
  debug?: (message: string, ...args: unknown[]) => void;
  /** Not called by pg-iam today; part of the shape so that `console` and pino fit. */
  info?: (message: string, ...args: unknown[]) => void;
  /** A failed credentials refresh (the current credentials are kept). */
  warn: (message: string, ...args: unknown[]) => void;
  /** A failure pg-iam survived: an idle connection's error, a hook that threw. */
  error: (message: string, ...args: unknown[]) => void;
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
  /**
   * Told when refreshing expiring credentials in the background fails. Default: the `logger`'s
   * `warn`, else `console.warn`.
   */
  onRefreshError?: (error: Error) => void;
  /**
   * Where pg-iam's warnings go, e.g. a pino logger: any object with `warn` and `error` methods
   * (see {@linkcode Logger}). Default: `console`.
   */
  logger?: Logger;
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

// The keys of IamOptions: an adapter takes these for itself, the rest go to its driver.
const IAM_KEYS: ReadonlySet<string> = new Set<string>(
  [
    "region",
    "credentials",
    "profile",
    "onRefreshError",
    "logger",
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

/**
 * The names of the IAM options a connection string gave (and `options` did not), as the user
 * wrote them, for `signingConfig()`'s messages: `the connection string parameter
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

/** A count option (prewarm, connections): a whole number from 1 to 10,000; returns it. */
export function checkCount(value: unknown, option: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 10000) {
    throw new RangeError(
      `The "${option}" option must be a whole number from 1, got ${show(value)}`,
    );
  }
  return value;
}

/** The `logger` option, checked: an object with `warn` and `error` methods, or undefined. */
export function checkLogger(value: unknown, option = "logger"): Logger | undefined {
  if (value === undefined) return undefined;
  const o = value as Record<string, unknown>;
  if (
    typeof value !== "object" || value === null || typeof o.warn !== "function" ||
    typeof o.error !== "function"
  ) {
    throw new TypeError(
      `The "${option}" option must be an object with warn and error methods (console, a pino ` +
        `logger), got ${show(value)}`,
    );
  }
  return value as Logger;
}

/**
 * Tells the user's `logger` `message` and the error; without one, `console` as pg-iam always did
 * (`plain`: the arguments it was given). A throwing logger must not break a connection.
 */
export function warn(
  logger: Logger | undefined,
  level: "warn" | "error",
  message: string,
  error: unknown,
  plain: unknown[] = [message],
): void {
  try {
    if (logger) logger[level](message, error);
    else console[level](...plain);
  } catch {
    // Ignored, as a throwing hook is.
  }
}

/** An error's message, for a log line (hooks may throw anything). */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
