/**
 * postgres.js with IAM authentication: every physical connection signs a fresh token, TLS is
 * verified by default, and a rejected token is retried once with force-refreshed credentials.
 *
 * postgres.js (`npm:postgres`, 4.x or 3.4.x) is a peer dependency: install it next to pg-iam.
 *
 * @example RDS or Aurora PostgreSQL
 * ```ts ignore
 * import { iamPostgres } from "@pg-iam/pg-iam/postgres";
 *
 * const sql = iamPostgres("postgres://app@orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com/orders");
 * const [{ now }] = await sql`select now()`;
 * ```
 *
 * @module
 */

import * as asyncHooks from "node:async_hooks";
import postgres from "postgres";
import * as postgresModule from "postgres";
import type { Options as PgOptions, PostgresType, Sql, TransactionSql } from "postgres";
import { show } from "../core/errors.ts";
import { checkPort } from "../core/checks.ts";
import {
  type Adapter,
  dsqlDefaultLifetime,
  type IamConnectOptions,
  intake,
  intakePlan,
  intakeSigning,
  type IntakeSpec,
  prewarmClient,
} from "../connection/adapter.ts";
import { parseTarget, stringOption } from "../connection/target.ts";
import {
  loggers,
  nestingOf,
  type SavepointDriver,
  savepointTransaction,
  type TransactionOptions,
} from "../connection/retry.ts";
import { dsqlLifetime, safely, signFor, signingConfig } from "../connection/sign.ts";
import { type IamOptions, urlNames, warn } from "../connection/options.ts";
import type { PrewarmOptions, PrewarmResult } from "../connection/prewarm.ts";
import {
  type ConnectEvent,
  connectTimeoutReader,
  IamSocket,
  type SocketPlan,
} from "../connection/socket.ts";
import { ON_WORKERD } from "../connection/socket-workerd.ts";
import { checkStartupParameters } from "../connection/pgwire.ts";

export * from "../connection/public.ts";
export * from "../connection/public-socket.ts";

/** Options of {@linkcode iamPostgres}: postgres.js options (minus passwords) plus IAM ones. */
// `{}` mirrors postgres.js's own signature, so inferred custom types stay identical.
// deno-lint-ignore ban-types
export type IamPostgresOptions<T extends Record<string, PostgresType> = {}> =
  & Omit<PgOptions<T>, "password" | "pass" | "ssl" | "require_auth" | "channel_binding">
  & IamOptions
  & IamConnectOptions
  & {
    /**
     * The old name of `onIamConnect`, on this driver only.
     *
     * @deprecated Use `onIamConnect`, the hook's name on every driver.
     */
    onConnect?: (event: ConnectEvent) => void;
    /** Open this many connections right away (IAM connects are slow); see {@linkcode prewarm}. */
    prewarm?: number;
    /**
     * libpq's `require_auth` (also `PGREQUIREAUTH`) for pg-iam's login, which sends the token as
     * a cleartext password: `"password"` and lists allowing it are accepted, anything else is a
     * TypeError; a server that never asks for the password (trust) is refused unless `none` is
     * allowed too. postgres.js 4 does not check the login itself: pg-iam did it.
     */
    require_auth?: string;
    /**
     * libpq's `channel_binding` (also `PGCHANNELBINDING`): `"require"` is a TypeError (binding is
     * part of SCRAM, which IAM does not use); `"prefer"` and `"disable"` change nothing.
     */
    channel_binding?: string;
  };

/** The postgres.js client type {@linkcode iamPostgres} returns for these options. */
// deno-lint-ignore ban-types
export type IamSql<T extends Record<string, PostgresType> = {}> = Sql<
  // deno-lint-ignore ban-types
  Record<string, PostgresType> extends T ? {}
    : {
      [type in keyof T]: T[type] extends {
        serialize: (value: infer R) => unknown;
        parse: (raw: string) => infer R;
      } ? R
        : never;
    }
>;

/**
 * Creates a postgres.js client that authenticates with IAM: each physical connection (the first,
 * pool growth, reconnects after `max_lifetime`, `idle_timeout` or a server kill, `listen`
 * connections) signs a fresh token. Accepts everything postgres.js accepts, plus the
 * {@linkcode IamOptions}; connection strings and the `PG*` variables are read with libpq's meaning
 * and precedence (an option over the connection string over the environment): `sslmode`,
 * `sslrootcert`, `hostaddr`, `connect_timeout`, `application_name`, `options`, … are honoured,
 * none of them and no `iam_*` parameter is sent to the server, and what cannot be honoured is an
 * error. After login, postgres.js talks to the TCP/TLS socket directly.
 *
 * A credentials or signing failure fails the query that needed the connection with a clear error
 * (the process never crashes); a rejected token is retried once on a new connection with
 * force-refreshed credentials, then fails with an {@linkcode IamAuthError}.
 *
 * @param url A connection string (`postgres://user@host:port/db?sslmode=…&iam_region=…`, or
 * libpq's `host=… dbname=…`).
 * @param options postgres.js options plus IAM ones; they override the URL.
 * @returns A postgres.js `Sql` client.
 * @throws {TypeError} On a static password, several hosts, a unix socket, TLS turned off without
 * `dangerouslyDisableTls`, or a bad IAM option (the message names it); on Cloudflare Workers, for
 * a certificate a Worker cannot verify (an RDS or Aurora endpoint other than RDS Proxy, or another
 * CA; the message says what to do instead).
 * @throws {RangeError} When an IAM option is out of range.
 *
 * @example RDS with a connection string, region from the endpoint, credentials from the env
 * ```ts ignore
 * import { iamPostgres } from "@pg-iam/pg-iam/postgres";
 *
 * const sql = iamPostgres("postgres://app@orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com/orders");
 * console.log(await sql`select current_user`);
 * await sql.end();
 * ```
 *
 * @example DSQL admin, pre-warmed, with connect timings
 * ```ts ignore
 * import { iamPostgres } from "@pg-iam/pg-iam/postgres";
 *
 * const sql = iamPostgres({
 *   host: "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws",
 *   user: "admin",
 *   database: "postgres",
 *   prewarm: 4,
 *   onIamConnect: (e) => console.log(e.ok, e.timings.totalMs),
 * });
 * ```
 *
 * @example Through an SSH tunnel on localhost
 * ```ts ignore
 * import { iamPostgres } from "@pg-iam/pg-iam/postgres";
 *
 * const sql = iamPostgres("postgres://app@127.0.0.1:15432/orders", {
 *   signingHostname: "orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com",
 *   signingPort: 5432,
 * });
 * ```
 */
// deno-lint-ignore ban-types
export function iamPostgres<T extends Record<string, PostgresType> = {}>(
  url?: string | IamPostgresOptions<T>,
  options?: IamPostgresOptions<T>,
): IamSql<T> {
  const i = intake(SPEC, url, options);
  const { target, host, port } = i;
  const pgOptions = i.driver;
  const pgDefaults: Record<string, unknown> = {
    connect_timeout: target.connectTimeout,
    keep_alive: target.keepAlive,
    target_session_attrs: target.targetSessionAttrs === "any"
      ? undefined
      : target.targetSessionAttrs,
  };
  for (const [key, value] of Object.entries(pgDefaults)) {
    if (value !== undefined && !(key in pgOptions)) pgOptions[key] = value;
  }
  // Parameters neither libpq nor pg-iam knows are postgres.js's (max, idle_timeout, …) or server
  // settings it forwards; postgres.js reads them from a connection string of their own.
  const extra = new URLSearchParams(target.extraParams).toString();
  const pgUrl = extra ? `postgres://localhost/?${extra}` : undefined;

  const ref: { plan?: SocketPlan } = {};
  const pgOpts = {
    ...pgOptions,
    host,
    port,
    ...(target.user === undefined ? {} : { user: target.user }),
    ...(target.database === undefined ? {} : { database: target.database }),
    connection: { ...target.serverParams, ...pgOptions.connection as object },
    ssl: false, // TLS is done by IamSocket, before postgres.js sees the connection
    // postgres.js 4 checks the login itself (require_auth, channel_binding, and PGREQUIREAUTH /
    // PGCHANNELBINDING when these are unset), but it sees only the AuthenticationOk that follows
    // pg-iam's own login: to postgres.js, no method was used, which is true. pg-iam honours
    // require_auth for the login it does (target.requirePassword). postgres.js 3 ignores both.
    require_auth: "none",
    channel_binding: "disable",
    socket: () => new IamSocket(ref.plan!),
    ...(POSTGRES_4 && ON_WORKERD && pgOptions.timers === undefined
      ? { timers: WORKER_TIMERS }
      : {}),
  } as PgOptions<T>;
  // Constructing a client opens nothing (its connections open on first use).
  let sql = postgres(pgUrl as string, pgOpts) as unknown as IamSql<T>;
  const parsed = sql.options as unknown as {
    user: string;
    database: unknown;
    connection: Record<string, unknown>;
    connect_timeout: number | null;
    max_lifetime: number | null | (() => number);
  };
  // What postgres.js will send as startup parameters, as it will send them: pg-iam's socket sees
  // them only as bytes, where a NUL already split one (postgres.js 4 refuses one at connect, 3
  // sends it). Checked now, and again as each connection starts (socketPlan's startupParams).
  checkStartupParameters(startupOf(parsed));
  // Not read here (an object's valueOf() is postgres.js's to call, once per connection).
  const connectTimeout = typeof parsed.connect_timeout === "number"
    ? parsed.connect_timeout || 30
    : 30;
  const signing = intakeSigning(i, parsed.user, connectTimeout);
  const lifetime = parsed.max_lifetime; // a function: postgres.js's default (30–60 minutes)
  const dsql = signing.service === "dsql" &&
    dsqlDefaultLifetime("max_lifetime", lifetime, typeof lifetime === "function");
  // Built again, with what only the parsed options tell: for DSQL a lifetime below its 60
  // minutes, jittered per connection so that connections do not all recycle at once (postgres.js
  // 4 draws it per connection; 3.x per pool slot, when it builds the client); on postgres.js 4 the
  // TLS pg-iam negotiates, so that its `ssl` (and what it reports, in diagnostics channels too)
  // is true: the socket says it is `negotiated`, and postgres.js leaves TLS to it.
  if (dsql || (POSTGRES_4 && target.ssl.mode !== "disable")) {
    sql = postgres(pgUrl as string, {
      ...pgOpts,
      ...(dsql ? { max_lifetime: dsqlLifetime as unknown as number } : {}),
      ...(POSTGRES_4 && target.ssl.mode !== "disable" ? { ssl: target.ssl.mode } : {}),
    } as PgOptions<T>) as unknown as IamSql<T>;
  }

  ref.plan = intakePlan(i, signing, {
    connectTimeoutMs: connectTimeoutReader(parsed.connect_timeout),
    // postgres.js 4 asks again itself on 53300 (with its backoff, within connect_timeout), as
    // without pg-iam; DSQL's 53400 it does not.
    busy: POSTGRES_4 ? ["53400"] : undefined,
    startupParams: () => startupOf(sql.options as unknown as typeof parsed),
    driver: "postgres",
  });
  if (signing.logger) loggers.set(sql, signing.logger);
  if (i.prewarm !== undefined) void prewarm(sql, i.prewarm);
  return sql;
}

/**
 * Opens `connections` connections ahead of traffic (IAM connects are slow: the server checks the
 * token with IAM), started at most `options.rate` per second (default 50, under Aurora DSQL's 100
 * new connections per second), each held until all have opened, then given back to the pool.
 * Never rejects: failures are returned.
 *
 * @param sql A client from {@linkcode iamPostgres} (or any postgres.js client).
 * @param connections How many connections to open (at most the client's `max`).
 * @param options `rate`: connections started per second.
 * @returns How many opened, and the errors of those that did not.
 * @throws {RangeError} When `connections` is not a whole number from 1 to the client's `max`, or
 * `rate` is not a positive number.
 *
 * @example
 * ```ts ignore
 * import { iamPostgres, prewarm } from "@pg-iam/pg-iam/postgres";
 *
 * const sql = iamPostgres("postgres://app@db.abc123xyz.us-east-1.rds.amazonaws.com/app", { max: 10 });
 * const { opened, errors } = await prewarm(sql, 10);
 * ```
 */
export function prewarm(
  // deno-lint-ignore no-explicit-any
  sql: Sql<any>,
  connections: number,
  options?: PrewarmOptions,
): Promise<PrewarmResult> {
  return prewarmClient(sql, sql.options.max, connections, options, {
    open: () => sql.reserve(),
    release: (reserved) => reserved.release(),
    closers: ["end", "close"],
  });
}

/**
 * The old name of {@linkcode TransactionOptions}, which every adapter now shares.
 *
 * @deprecated Use {@linkcode TransactionOptions}.
 *
 * @example
 * ```ts
 * import type { TransactionOptions } from "@pg-iam/pg-iam/postgres";
 *
 * const options: TransactionOptions = { begin: "isolation level serializable" };
 * ```
 */
export type PostgresTransactionOptions = TransactionOptions;

/**
 * Runs `fn` in a transaction (postgres.js's `sql.begin`) and runs it again on an optimistic
 * concurrency or serialization conflict (SQLSTATE `40001`: every Aurora DSQL conflict, OC000 and
 * OC001, and PostgreSQL's SERIALIZABLE failures), with exponential backoff and full jitter, up to
 * `maxAttempts` (default 5). Never runs it again when the outcome is unknown (the connection was
 * lost while committing): that is a {@linkcode TransactionOutcomeUnknownError}. `fn` may run more
 * than once: keep side effects outside the database out of it.
 *
 * Given the `tx` of a running transaction instead of `sql`, `fn` runs in a savepoint of it
 * (`tx.savepoint`; rolled back to on error, which is thrown on): never retried by itself, as a
 * conflict fails the whole transaction, which the outermost transaction() runs again. Given `sql`
 * while a transaction() of it runs in the same async context (inside its `fn`), it throws a
 * TypeError at once: it would wait for a second connection while holding the first.
 *
 * @param sql A client from {@linkcode iamPostgres} (or any postgres.js client), or the `tx` of a
 * running transaction, for a savepoint.
 * @param fn The transaction's work, given the transaction's `sql`.
 * @param options The retry policy (`maxAttempts`, `baseDelayMs`, `maxDelayMs`, `onRetry`) and
 * `begin` (in a savepoint: none, or the outer transaction's).
 * @returns What `fn` returned, from the attempt that committed.
 * @throws The last conflict after `maxAttempts`, any other error at once, or a
 * {@linkcode TransactionOutcomeUnknownError}.
 *
 * @example
 * ```ts ignore
 * import { iamPostgres, transaction } from "@pg-iam/pg-iam/postgres";
 *
 * const sql = iamPostgres("postgres://admin@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres");
 * await transaction(sql, async (tx) => {
 *   const [{ n }] = await tx`select n from counters where id = 1`;
 *   await tx`update counters set n = ${n + 1} where id = 1`;
 *   // a savepoint: its failure rolls back only its own work
 *   await transaction(tx, (sp) => sp`insert into audit (n) values (${n})`).catch(() => {});
 * });
 * ```
 */
export function transaction<T>(
  // deno-lint-ignore no-explicit-any
  sql: Sql<any> | TransactionSql<any>,
  // deno-lint-ignore no-explicit-any
  fn: (tx: TransactionSql<any>) => T | Promise<T>,
  options?: TransactionOptions,
): Promise<T> {
  return savepointTransaction(sql, fn, options, TRANSACTIONS);
}

/** postgres.js's transactions: `sql.begin(mode, fn)`, and the marker of those running. */
// deno-lint-ignore no-explicit-any
const TRANSACTIONS: SavepointDriver<Sql<any>, TransactionSql<any>> = {
  client: "a postgres.js client",
  nesting: nestingOf(asyncHooks, "tx"),
  // deno-lint-ignore no-explicit-any
  begin: (sql, begin, work) => sql.begin(begin, (tx) => work(tx as TransactionSql<any>)),
};

/**
 * Options of {@linkcode iamPassword}: the IAM options but `tokenReuse` (a password function cannot
 * see whether a login was rejected, so it signs a token for every connection).
 */
export interface IamPasswordOptions extends Omit<IamOptions, "tokenReuse"> {
  /**
   * A connection string to read the host, port, user and `iam_*` parameters from (the options
   * win over it, and it over `PGHOST`, `PGPORT` and `PGUSER`), as {@linkcode iamPostgres} does.
   */
  url?: string;
  /** The host connected to (the endpoint, or a tunnel with `signingHostname`). */
  hostname?: string;
  /** The port connected to (default 5432). */
  port?: number;
  /** The database user. */
  username?: string;
  /**
   * Called when no token can be made (credentials missing, expired, provider failed or too slow).
   * With postgres.js 4 the password function then rejects with that error, which postgres.js
   * gives the query. With 3.x, where a rejection would crash the process, it resolves to an empty
   * password instead, which the server rejects: the query fails and the process lives; the
   * default there is the `logger`'s `error` (else `console.error`) with the reason.
   */
  onError?: (error: Error) => void;
}

/**
 * A postgres.js `password` function that signs a fresh token each time postgres.js opens a
 * connection, for clients you build yourself. It never hangs (credentials are bounded by
 * `credentialsTimeout`, default 10 s), and fails as the installed postgres.js can take it: with
 * 4.x it rejects with the credentials error, which the query gets; with 3.x it never rejects
 * (postgres.js 3 would crash the process) and reports to `onError` instead.
 * Prefer {@linkcode iamPostgres}, which also verifies TLS by default, retries a rejected token and
 * reports the credential error to the query itself.
 *
 * @param options The endpoint, user and IAM options, or a connection string with them.
 * @returns `() => Promise<string>` for postgres.js's `password` option.
 * @throws {TypeError} On a bad option (the message names it).
 *
 * @example
 * ```ts ignore
 * import postgres from "postgres";
 * import { iamPassword } from "@pg-iam/pg-iam/postgres";
 *
 * const hostname = "orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com";
 * const sql = postgres({
 *   host: hostname,
 *   user: "app",
 *   ssl: "verify-full",
 *   password: iamPassword({ hostname, username: "app" }),
 * });
 * ```
 */
export function iamPassword(options: IamPasswordOptions): () => Promise<string> {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`iamPassword() expects an options object, got ${show(options)}`);
  }
  const { url, hostname, port, username, onError, ...iam } = options;
  if ("tokenReuse" in iam) {
    throw new TypeError(
      `iamPassword() takes no "tokenReuse" option: a password function cannot see whether a ` +
        `login was rejected, so it signs a token for every connection (iamPostgres() reuses ` +
        `tokens safely)`,
    );
  }
  if (onError !== undefined && typeof onError !== "function") {
    throw new TypeError(`The "onError" option must be a function, got ${show(onError)}`);
  }
  const target = parseTarget({
    url,
    explicit: {
      host: stringOption(hostname, "hostname"),
      port: port === undefined ? undefined : checkPort(port),
      user: stringOption(username, "username"),
    },
    explicitName: (key) =>
      `the "${key === "host" ? "hostname" : key === "user" ? "username" : key}" option`,
  });
  const host = target.host ?? target.hostaddr;
  if (host === undefined) {
    throw new TypeError(`The "hostname" option is required (or a url, or PGHOST)`);
  }
  if (target.user === undefined) {
    throw new TypeError(`The "username" option is required (or a url, or PGUSER)`);
  }
  const config = signingConfig(
    {
      ...target.iam as IamOptions,
      ...iam,
      host,
      port: target.port ?? 5432,
      user: target.user,
      tokenReuse: false,
    },
    30,
    urlNames(target, iam),
  );
  return () =>
    signFor(config, false).then(
      (signed) => signed.token,
      (error: Error) => {
        // postgres.js 4 fails the connection attempt with a rejection (the query gets the
        // CredentialsError itself); 3.x would crash the process on one.
        if (POSTGRES_4) {
          if (onError) safely(() => onError(error), config.logger);
          throw error;
        }
        if (onError) safely(() => onError(error), config.logger);
        else warn(config.logger, "error", `pg-iam: ${error.message}`, error);
        return "";
      },
    );
}

// ---- internals ----

/** How postgres.js names its options, for the shared intake. */
const SPEC: IntakeSpec = {
  fn: "iamPostgres",
  url: "argument",
  aliases: { hostname: "host", username: "user" },
  fallbacks: { db: "database" },
  one,
  libpqOptions: ["require_auth", "channel_binding"],
  deprecatedHook: "onConnect",
  check: (driver) => {
    if (driver.socket !== undefined) {
      throw new TypeError(
        `The "socket" option cannot be combined with iamPostgres(): pg-iam provides the socket ` +
          `(for a tunnel, connect to its local port and set signingHostname)`,
      );
    }
    if (driver.path !== undefined) {
      throw new TypeError(
        `iamPostgres() connects over TCP, got the unix socket ${show(driver.path)}: IAM tokens ` +
          `are for RDS and DSQL endpoints (or a local gateway on a TCP port)`,
      );
    }
  },
};

// The adapter contract, checked by the compiler.
void ({ create: iamPostgres, prewarm, transaction } satisfies Adapter<
  IamSql,
  // deno-lint-ignore no-explicit-any
  TransactionSql<any>,
  IamPostgresOptions
>);

// The installed major: postgres.js 4 also exports PostgresError by name (3.x only a default).
const POSTGRES_4: boolean = "PostgresError" in postgresModule;

// postgres.js 4.2's default timers are the global functions, called as methods of its own object
// (`timers.setTimeout(…)`), which a Worker's runtime refuses ("Illegal invocation"): cancelling a
// query threw, with plain postgres.js too. The same functions, called as plain functions.
const WORKER_TIMERS = {
  setTimeout: (fn: () => void, ms?: number) => setTimeout(fn, ms),
  clearTimeout: (timer: ReturnType<typeof setTimeout>) => clearTimeout(timer),
  setImmediate: (fn: () => void) => setTimeout(fn, 0),
  clearImmediate: (timer: ReturnType<typeof setTimeout>) => clearTimeout(timer),
  now: () => performance.now(),
};

/** The startup parameters postgres.js sends for its parsed `options` (its StartupMessage's). */
function startupOf(
  options: { user: unknown; database: unknown; connection?: Record<string, unknown> },
): [string, unknown][] {
  return [
    ["user", options.user],
    ["database", options.database],
    ...Object.entries(options.connection ?? {}),
  ];
}

/** A postgres.js host or port option: one value (postgres.js also takes a list, for failover). */
function one(value: unknown, option: string): string | number | undefined {
  if (Array.isArray(value)) {
    if (value.length !== 1) {
      throw new TypeError(
        `iamPostgres() connects to one host, got ${show(value.join(","))} in the "${option}" ` +
          `option: postgres.js does not tell a password function which host it is for; create ` +
          `one client per host`,
      );
    }
    value = value[0];
  }
  if (value !== undefined && typeof value !== "string" && typeof value !== "number") {
    throw new TypeError(`The "${option}" option must be a string, got ${show(value)}`);
  }
  return value;
}
