/**
 * node-postgres (`pg`) with IAM authentication: every physical connection signs a fresh token, TLS
 * is verified by default, and a rejected token is retried once with force-refreshed credentials.
 * Prisma (`@prisma/adapter-pg`), Drizzle, Kysely, Knex and TypeORM run on it.
 *
 * node-postgres (`npm:pg@^8`) is a peer dependency: install it next to pg-iam.
 *
 * @example RDS or Aurora PostgreSQL
 * ```ts ignore
 * import { iamPool } from "@pg-iam/pg-iam/pg";
 *
 * const pool = iamPool({ connectionString: process.env.DATABASE_URL });
 * const { rows } = await pool.query("select now()");
 * ```
 *
 * @module
 */

import * as asyncHooks from "node:async_hooks";
import pg from "pg";
import { show } from "../core/errors.ts";
import {
  type Adapter,
  dsqlDefaultLifetime,
  type IamConnectOptions,
  type Intake,
  intake,
  intakePlan,
  intakeSigning,
  type IntakeSpec,
  prewarmClient,
} from "../connection/adapter.ts";
import { optionsSetting } from "../connection/target.ts";
import type { PrewarmOptions, PrewarmResult } from "../connection/prewarm.ts";
import { ON_WORKERD } from "../connection/socket-workerd.ts";
import {
  checkNestedMode,
  checkTransactionOptions,
  connectionLost,
  loggers,
  type Nesting,
  nestingOf,
  retrying,
  transactionCall,
  type TransactionOptions,
} from "../connection/retry.ts";
import { dsqlLifetime } from "../connection/sign.ts";
import { type IamOptions, type Logger, warn } from "../connection/options.ts";
import { IamSocket } from "../connection/socket.ts";
import { checkStartupParameters } from "../connection/pgwire.ts";

export * from "../connection/public.ts";
export * from "../connection/public-socket.ts";
/** node-postgres's `Pool` (from `pg`), as {@linkcode iamPool} returns it. */
export type Pool = pg.Pool;
/** node-postgres's `Client` (from `pg`), as {@linkcode iamClient} returns it. */
export type Client = pg.Client;
/** node-postgres's pool options (from `pg`). */
export type PoolConfig = pg.PoolConfig;
/** node-postgres's pooled client (from `pg`), as {@linkcode transaction} hands it to `fn`. */
export type PoolClient = pg.PoolClient;
/** node-postgres's client options (from `pg`). */
export type ClientConfig = pg.ClientConfig;
/** What `iamClient()` takes: `pg.ClientConfig` (minus passwords and the stream) plus IAM options. */
export type IamClientConfig =
  & Omit<ClientConfig, "password" | "ssl" | "stream">
  & IamOptions
  & IamConnectOptions;

/** What `iamPool()` takes: `pg.PoolConfig` (minus passwords and the stream) plus IAM options. */
export type IamPoolConfig =
  & Omit<PoolConfig, "password" | "ssl" | "stream">
  & IamClientConfig
  & {
    /** Open this many connections right away (IAM connects are slow); see {@linkcode prewarm}. */
    prewarm?: number;
  };

/**
 * Creates a `pg.Pool` that authenticates with IAM: each physical connection (the first, pool
 * growth, reconnects after `maxLifetimeSeconds`, `idleTimeoutMillis` or a server kill) signs a
 * fresh token. Takes what `pg.Pool` takes, `connectionString` included (read with libpq's meaning
 * and precedence, as `PG*` variables are), plus the {@linkcode IamOptions}.
 *
 * A credentials or signing failure fails the query (or `connect()`) that needed the connection with
 * a clear error, never crashing the process; a rejected token is retried once on a new connection
 * with force-refreshed credentials, then fails with an {@linkcode IamAuthError}. An idle client's
 * error (a server restart, say) is reported on the pool's `"error"` event, logged by default.
 *
 * @param config `pg.Pool` options plus IAM ones.
 * @returns A `pg.Pool`.
 * @throws {TypeError} On a password, several hosts, a unix socket, TLS turned off without
 * `dangerouslyDisableTls`, or a bad IAM option (the message names it).
 * @throws {RangeError} When an option is out of range.
 *
 * @example
 * ```ts ignore
 * import { iamPool } from "@pg-iam/pg-iam/pg";
 *
 * const pool = iamPool({
 *   host: "orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com",
 *   user: "app", // GRANT rds_iam TO app;
 *   database: "orders",
 *   max: 10,
 *   prewarm: 2,
 * });
 * const { rows } = await pool.query("select current_user");
 * await pool.end();
 * ```
 */
export function iamPool(config: IamPoolConfig = {}): Pool {
  const built = buildConfig(intake(SPEC_POOL, config));
  const lifetime = built.intake.driver.maxLifetimeSeconds;
  const dsql = built.dsql && dsqlDefaultLifetime("maxLifetimeSeconds", lifetime);
  // What its clients will send: a client's startup parameters, read as node-postgres reads them.
  checkStartup(new pg.Client(built.config as ClientConfig));
  const pool = new pg.Pool(built.config as PoolConfig);
  const { logger } = built;
  if (logger) loggers.set(pool, logger);
  // Not on Workers: a client lives for one request there, and pg-pool's lifetime timer calls
  // unref(), which a Worker's timers do not have (the pool's connect would fail).
  if (dsql && !ON_WORKERD) {
    // pg-pool reads this for every new client: a getter gives each its own 45–55 minutes, so a
    // pool filled at once does not recycle at once.
    Object.defineProperty((pool as unknown as { options: object }).options, "maxLifetimeSeconds", {
      get: dsqlLifetime,
      configurable: true,
    });
  }
  // An idle client's error (the server went away) is emitted on the pool: without a listener it
  // would crash the process.
  pool.on("error", (error) => {
    if (pool.listenerCount("error") === 1) {
      warn(logger, "error", `pg-iam: an idle client of the pool failed: ${error.message}`, error);
    }
  });
  if (built.intake.prewarm !== undefined) void prewarm(pool, built.intake.prewarm);
  return pool;
}

/**
 * Creates a `pg.Client` that authenticates with IAM (a fresh token when it connects, verified TLS,
 * one retry on a rejected token). Takes what `pg.Client` takes, plus the {@linkcode IamOptions}.
 *
 * @param config `pg.Client` options plus IAM ones.
 * @returns A `pg.Client` (call `connect()` as usual).
 * @throws {TypeError} On a password, several hosts, a unix socket, TLS turned off without
 * `dangerouslyDisableTls`, or a bad IAM option (the message names it).
 * @throws {RangeError} When an option is out of range.
 *
 * @example
 * ```ts ignore
 * import { iamClient } from "@pg-iam/pg-iam/pg";
 *
 * const client = iamClient({ connectionString: process.env.DATABASE_URL });
 * await client.connect();
 * console.log((await client.query("select 1 as one")).rows);
 * await client.end();
 * ```
 */
export function iamClient(config: IamClientConfig = {}): Client {
  const client = new pg.Client(buildConfig(intake(SPEC_CLIENT, config)).config as ClientConfig);
  checkStartup(client);
  return client;
}

/**
 * Opens `connections` connections of `pool` ahead of traffic (IAM connects are slow: the server
 * checks the token with IAM), started at most `options.rate` per second (default 50, under Aurora
 * DSQL's 100 new connections per second), and puts them back idle once all have opened. Never
 * rejects: failures are returned.
 *
 * @param pool A pool from {@linkcode iamPool} (or any `pg.Pool`).
 * @param connections How many connections to open (at most the pool's `max`).
 * @param options `rate`: connections started per second.
 * @returns How many opened, and the errors of those that did not.
 * @throws {RangeError} When `connections` is not a whole number from 1 to the pool's `max`, or
 * `rate` is not a positive number.
 *
 * @example
 * ```ts ignore
 * import { iamPool, prewarm } from "@pg-iam/pg-iam/pg";
 *
 * const pool = iamPool({ connectionString: process.env.DATABASE_URL, max: 10 });
 * const { opened, errors } = await prewarm(pool, 10);
 * ```
 */
export function prewarm(
  pool: Pool,
  connections: number,
  options?: PrewarmOptions,
): Promise<PrewarmResult> {
  const max = (pool as Pool & { options?: { max?: number } }).options?.max;
  return prewarmClient(pool, max, connections, options, {
    open: () => pool.connect(),
    release: (client) => client.release(),
    closers: ["end"],
  });
}

/**
 * The old name of {@linkcode TransactionOptions}, which every adapter now shares.
 *
 * @deprecated Use {@linkcode TransactionOptions}.
 *
 * @example
 * ```ts
 * import type { TransactionOptions } from "@pg-iam/pg-iam/pg";
 *
 * const options: TransactionOptions = { begin: "isolation level serializable" };
 * ```
 */
export type PgTransactionOptions = TransactionOptions;

/**
 * Runs `fn` in a transaction on a client of `pool` (`BEGIN`, `fn`, `COMMIT`; `ROLLBACK` on error)
 * and runs it again on an optimistic concurrency or serialization conflict (SQLSTATE `40001`: every
 * Aurora DSQL conflict, OC000 and OC001, and PostgreSQL's SERIALIZABLE failures), with exponential
 * backoff and full jitter, up to `maxAttempts` (default 5). Never runs it again when the outcome is
 * unknown (the connection was lost while committing): that is a
 * {@linkcode TransactionOutcomeUnknownError}. `fn` may run more than once.
 *
 * Any error of `fn`'s rolls the transaction back, and the client goes back to the pool; only a
 * client whose connection is gone (the `ROLLBACK` fails) is destroyed.
 *
 * Given the client of a running transaction() instead of the pool, `fn` runs in a savepoint of it
 * (`SAVEPOINT`, `fn`, `RELEASE`; `ROLLBACK TO` on error, which is thrown on): never retried by
 * itself, as a conflict fails the whole transaction, which the outermost transaction() runs again.
 * Given the pool while a transaction() of it runs in the same async context (inside its `fn`), it
 * throws a TypeError at once: it would wait for a second connection while holding the first.
 *
 * @param pool A pool from {@linkcode iamPool} (or any `pg.Pool`), or the client a running
 * transaction() gave its `fn`, for a savepoint.
 * @param fn The transaction's work, given the client it runs on.
 * @param options The retry policy (`maxAttempts`, `baseDelayMs`, `maxDelayMs`, `onRetry`) and
 * `begin` (in a savepoint: none, or the outer transaction's).
 * @returns What `fn` returned, from the attempt that committed.
 * @throws The last conflict after `maxAttempts`, any other error at once, or a
 * {@linkcode TransactionOutcomeUnknownError}.
 *
 * @example
 * ```ts ignore
 * import { iamPool, transaction } from "@pg-iam/pg-iam/pg";
 *
 * const pool = iamPool({ connectionString: process.env.DATABASE_URL });
 * await transaction(pool, async (client) => {
 *   const { rows } = await client.query("select n from counters where id = 1");
 *   await client.query("update counters set n = $1 where id = 1", [rows[0].n + 1]);
 *   // a savepoint: its failure rolls back only its own work
 *   await transaction(client, (c) => c.query("insert into audit (n) values ($1)", [rows[0].n]))
 *     .catch(() => {});
 * });
 * ```
 */
export function transaction<T>(
  pool: Pool | PoolClient,
  fn: (client: PoolClient) => T | Promise<T>,
  options?: TransactionOptions,
): Promise<T> {
  const begin = transactionCall(fn, options);
  const inside = running.get(pool as PoolClient);
  if (inside !== undefined) {
    checkTransactionOptions(options);
    checkNestedMode(begin, inside.mode);
    return savepoint(pool as PoolClient, inside, fn);
  }
  if (!isPool(pool)) {
    throw new TypeError(
      `transaction() expects a pg.Pool, or the client of a running transaction(), got ${
        show(pool)
      }`,
    );
  }
  nesting.check(pool);
  return retrying(
    async (workDone) => {
      const client = await (pool as Pool).connect();
      // The connection's own error: it is gone. The server may end the connection while the
      // client is idle between two of fn's queries (a restart, pg_terminate_backend): node-postgres
      // then emits "error" on the client, and pg-pool listens only on idle clients, so without
      // this the process would crash. The next query fails as a lost connection instead.
      let lost: unknown;
      const onError = (error: Error) => void (lost ??= error);
      client.on("error", onError);
      const state = { mode: begin, savepoints: 0 };
      try {
        await client.query(begin ? `begin ${begin}` : "begin");
        running.set(client, state);
        const result = await nesting.run(pool, () => fn(client));
        running.delete(client);
        workDone();
        await client.query("commit");
        return result;
      } catch (error) {
        running.delete(client);
        // Whatever failed (fn, a query, the COMMIT), the connection is rolled back and kept: an
        // application's error costs no connection. One that cannot roll back is gone.
        if (lost === undefined) {
          await client.query("rollback").catch((rollbackError) => void (lost = rollbackError));
        }
        throw error;
      } finally {
        client.off("error", onError);
        client.release(lost === undefined ? undefined : lost instanceof Error ? lost : true);
      }
    },
    options,
    connectionLost,
    loggers.get(pool),
  );
}

/** The clients of running transaction()s: their mode, and how many savepoints they have named. */
const running = new WeakMap<PoolClient, { mode: string; savepoints: number }>();

/** A marker of transaction()s running in an async context (nested ones on the same pool fail). */
const nesting: Nesting = nestingOf(asyncHooks, "the client");

/** A pool: this module's `pg.Pool`, or another that connects (another copy of pg), not a client. */
function isPool(value: unknown): boolean {
  if (value instanceof pg.Pool) return true;
  if (value instanceof pg.Client) return false;
  const v = value as { connect?: unknown; release?: unknown } | null;
  return typeof v === "object" && v !== null && typeof v.connect === "function" &&
    v.release === undefined;
}

/** `fn` in a savepoint of the transaction running on `client`. */
async function savepoint<T>(
  client: PoolClient,
  state: { savepoints: number },
  fn: (client: PoolClient) => T | Promise<T>,
): Promise<T> {
  const name = `pg_iam_${state.savepoints++}`;
  await client.query(`savepoint ${name}`);
  let result: T;
  try {
    result = await fn(client);
  } catch (error) {
    // A connection that cannot do this is gone: the outer transaction finds out and destroys it.
    await client.query(`rollback to savepoint ${name}`).catch(() => {});
    throw error;
  }
  await client.query(`release savepoint ${name}`);
  return result;
}

// ---- internals ----

/**
 * Refuses a NUL in what node-postgres will send as startup parameters (getStartupConf(), which it
 * serializes as is): pg-iam's socket sees them only as bytes, where a NUL already split one.
 */
function checkStartup(client: Client): void {
  const startup = (client as unknown as { getStartupConf?(): Record<string, unknown> })
    .getStartupConf?.();
  if (startup) checkStartupParameters(Object.entries(startup));
}

/** How node-postgres names its options, for the shared intake. */
const SPEC_CLIENT: IntakeSpec = {
  fn: "iamClient",
  url: "connectionString",
  check: (driver) => {
    if ("stream" in driver) {
      throw new TypeError(
        `The "stream" option cannot be combined with pg-iam, which provides the stream (for a ` +
          `tunnel, connect to its local port and set signingHostname)`,
      );
    }
  },
  // As node-postgres: each from the options, URL or PG* variable, else pg.defaults.
  defaultHost: () => pgDefault("host"),
  defaultPort: pgDefaultPort,
};
const SPEC_POOL: IntakeSpec = { ...SPEC_CLIENT, fn: "iamPool" };

// The adapter contract, checked by the compiler.
void ({ create: iamPool, prewarm, transaction } satisfies Adapter<
  Pool,
  PoolClient,
  IamPoolConfig
>);

/** The pg config for what intake() read: a socket of pg-iam's for each connection. */
function buildConfig(
  i: Intake,
): { config: Record<string, unknown>; dsql: boolean; intake: Intake; logger?: Logger } {
  const { target, host, port } = i;
  const pgConfig = i.driver;
  // As node-postgres: the user from the options, URL or PGUSER, else pg.defaults' (the operating
  // system's).
  const targetUser = target.user ?? pg.defaults.user;
  if (!targetUser) {
    throw new TypeError(`The "user" option is required (or a connectionString, or PGUSER)`);
  }
  const connectTimeout = connectSeconds(pgConfig.connectionTimeoutMillis, target.connectTimeout);
  const signing = intakeSigning(i, targetUser, connectTimeout);
  const params = target.serverParams;
  // Settings node-postgres has no option for travel as `-c name=value` in `options`, as libpq's
  // PGTZ and friends do.
  const settings = Object.entries(params)
    .filter(([k]) => !["application_name", "options", "replication", "client_encoding"].includes(k))
    .map(([k, v]) => optionsSetting(k, v));
  const options = [params.options, ...settings].filter(Boolean).join(" ") || undefined;
  const keepAlive = target.keepAlive;
  const plan = intakePlan(i, signing, { connectTimeoutMs: connectTimeout * 1000, driver: "pg" });
  const defaults: Record<string, unknown> = {
    application_name: params.application_name,
    options,
    replication: params.replication,
    connectionTimeoutMillis: target.connectTimeout ? target.connectTimeout * 1000 : undefined,
    keepAlive: keepAlive === null ? false : keepAlive !== undefined ? true : undefined,
    keepAliveInitialDelayMillis: keepAlive ? keepAlive * 1000 : undefined,
  };
  for (const [key, value] of Object.entries(defaults)) {
    if (value !== undefined && pgConfig[key] === undefined) pgConfig[key] = value;
  }
  return {
    config: {
      ...pgConfig,
      host,
      port,
      user: targetUser,
      database: target.database ?? pgDefault("database") ?? targetUser,
      ssl: false, // TLS is done by pg-iam's socket, before node-postgres sees the connection
      stream: () => new IamSocket(plan),
    },
    dsql: signing.service === "dsql",
    intake: i,
    logger: signing.logger,
  };
}

/** `pg.defaults[key]` when set: a string, else a TypeError naming it (empty: unset, as in pg). */
function pgDefault(key: "host" | "database"): string | undefined {
  const value: unknown = (pg.defaults as Record<string, unknown>)[key];
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string") {
    throw new TypeError(`pg.defaults.${key} must be a string, got ${show(value)}`);
  }
  return value;
}

/** `pg.defaults.port` when set: a port number (or its digits), else a RangeError naming it. */
function pgDefaultPort(): number | undefined {
  const value: unknown = pg.defaults.port;
  if (value === undefined || value === null || value === "") return undefined;
  const port = typeof value === "string" && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(
      `pg.defaults.port must be a port number from 1 to 65535, got ${show(value)}`,
    );
  }
  return port;
}

/** Seconds to bound a connection start by: the driver's timeout, libpq's, else 30. */
function connectSeconds(millis: unknown, libpq: number | null | undefined): number {
  if (typeof millis === "number" && millis > 0) return millis / 1000;
  return libpq || 30;
}
