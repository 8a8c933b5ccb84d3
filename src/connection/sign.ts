// Signing for one connection, whatever the driver: the IAM options checked once per client, a
// token per physical connection (credentials bounded in time, timings reported), the error for a
// login rejected twice, DSQL's connection lifetimes. Option intake (which options are IAM ones) is
// options.ts's. Driver adapters (postgres.js, node-postgres, Bun.SQL) and the CLI use it.

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
import { withTimeout } from "../core/deadline.ts";
import {
  checkLogger,
  type IamOptions,
  type Logger,
  messageOf,
  type TokenEvent,
  warn,
} from "./options.ts";
import { publishToken, tokenTraced } from "./diagnostics.ts";

/** Fields of a server ErrorResponse (by their one-letter codes). */
export type ServerError = Record<string, string>;

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

/** Everything needed to sign a token for one connection, checked. */
export interface SigningConfig extends Signing {
  credentials: CredentialsOption | undefined;
  context: CredentialsContext | undefined;
  credentialsTimeoutMs: number;
  now: () => number;
  onToken?: (event: TokenEvent) => void;
  /** The `logger` option: where hooks' errors go (default: console). */
  logger?: Logger;
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
  const logger = checkLogger(o.logger);
  // The core reports a failed refresh to onRefreshError (else console.warn): a logger gets it
  // there, the core being at its size limit.
  const context = credentialsContext({
    ...o,
    onRefreshError: o.onRefreshError ?? (logger && ((error: Error) =>
      warn(
        logger,
        "warn",
        `pg-iam: credentials refresh failed, current ones kept: ${error.message}`,
        error,
      ))),
  } as unknown as Record<string, unknown>);
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
    logger,
    reuse: o.tokenReuse ?? true,
    minRemainingMs: connectTimeout * 1000,
  };
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
  // Static credentials and the environment's resolve at once; a provider and the chain by promise.
  const fromPromise = credentials instanceof Promise;
  if (credentials instanceof Promise) {
    const ms = c.credentialsTimeoutMs;
    credentials = await withTimeout(
      credentials,
      ms,
      () =>
        new TimeoutError(
          "provider",
          `The "credentials" provider did not answer within ${ms / 1000}s ` +
            `(credentialsTimeout); the connection was not attempted`,
        ),
    ).catch((error) => {
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
      }), c.logger);
  }
  if (tokenTraced()) {
    publishToken({
      host: c.signingHostname,
      port: c.signingPort,
      user: c.user,
      service: c.service,
      region: c.region as string,
      reused,
      signMs,
      credentialsMs: t1 - t0,
      credentialsSource: credentialsSource(c.credentials, fromPromise, credentials),
      credentialsExpiration: (credentials as Credentials).expiration ?? undefined,
    });
  }
  return { token: signed.token, credentialsMs: t1 - t0, signMs, reused };
}

/**
 * Where credentials came from, as the `pg-iam:token` channel names it, with the AWS SDK's own
 * attribution (`$source`: feature names such as `CREDENTIALS_PROFILE`) when it gave one.
 */
function credentialsSource(
  option: CredentialsOption | undefined,
  fromPromise: boolean,
  credentials: SigningCredentials,
): string {
  const kind = typeof option === "function"
    ? "provider"
    : option != null
    ? "option"
    : fromPromise
    ? "chain"
    : "env";
  const attributed = (credentials as { $source?: unknown }).$source;
  const features = typeof attributed === "object" && attributed !== null
    ? Object.keys(attributed).filter((name) => /^[A-Z0-9_]{1,64}$/.test(name))
    : [];
  return features.length ? `${kind}:${features.join(",")}` : kind;
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

// User hooks must not break a connection: their errors are reported, never thrown into it.
export function safely(fn: () => void, logger?: Logger): void {
  try {
    fn();
  } catch (error) {
    warn(logger, "error", `pg-iam: a hook threw: ${messageOf(error)}`, error, [
      "pg-iam: a hook threw:",
      error,
    ]);
  }
}
