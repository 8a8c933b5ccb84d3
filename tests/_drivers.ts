// transaction() as the end-to-end tests drive it on each driver (postgres.js, node-postgres and,
// on Bun, Bun.SQL), each on a pool of its own gateway: a scenario is written once against
// `Driver` and run for every driver (tests/e2e/transaction.test.ts).
import type postgres from "postgres";
import { iamPostgres, type RetryEvent, transaction } from "../src/postgres/mod.ts";
import { iamPool, type PoolClient, transaction as pgTransaction } from "../src/pg/mod.ts";
import { type BunSqlClient, iamSql, transaction as bunTransaction } from "../src/bun/mod.ts";
import type { Gateway, GatewayOptions } from "../src/gateway/mod.ts";
import { RDS, testGateway } from "./_gateway.ts";
import { ca } from "./fixtures/tls.ts";

export type Rows = Record<string, unknown>[];
/** Runs one query (text, no parameters) and gives its rows. */
export type Query = (text: string) => Promise<Rows>;
export type Work<T> = (q: Query, tx: unknown) => Promise<T>;

/** transaction()'s options as the scenarios use them, the same on every driver. */
export interface TxOptions {
  begin?: string;
  maxAttempts?: number;
  baseDelayMs?: number;
  onRetry?: (event: RetryEvent) => void;
}

/** A driver's transaction() on a pool of its own gateway. */
export interface Driver {
  name: DriverName;
  gateway: Gateway;
  /** transaction(pool, fn): `q` runs a query in the transaction, `tx` is fn's handle. */
  run<T>(fn: Work<T>, options?: TxOptions): Promise<T>;
  /** transaction(tx, fn), with the handle a running transaction gave its fn. */
  nested<T>(tx: unknown, fn: Work<T>, options?: { begin?: string }): Promise<T>;
  /** The control: the driver's own BEGIN … COMMIT, without transaction(). */
  plain(begin: string, fn: (q: Query) => Promise<unknown>): Promise<unknown>;
  /** A query on the pool, outside any transaction. */
  query: Query;
  /**
   * node-postgres only: how many checkouts wait after three nested ones by hand on the plain pool
   * (each asked for while holding the one before).
   */
  waitingAfterThreeCheckouts?: () => Promise<number>;
}

export type DriverName = "node-postgres" | "postgres.js" | "Bun.SQL";

/** Every driver, in the order the tests run them (Bun.SQL skipped off Bun). */
export const DRIVERS: readonly DriverName[] = ["node-postgres", "postgres.js", "Bun.SQL"];

const ON_BUN = (globalThis as { Bun?: { SQL?: unknown } }).Bun?.SQL !== undefined;

/** node:test options for a test of `name`: skipped, saying why, where the driver cannot run. */
export function onDriver(
  name: DriverName,
  timeout = 60_000,
): { skip: string | false; timeout: number } {
  return {
    skip: name === "Bun.SQL" && !ON_BUN ? "Bun.SQL is Bun's own client" : false,
    timeout,
  };
}

/**
 * `name`'s transaction() on a pool of at most `max` connections, through a new gateway accepting
 * `credentials`; `ends` collects what the test file's `after` hook must close.
 */
export async function driver(
  name: DriverName,
  max: number,
  credentials: GatewayOptions["credentials"] & { accessKeyId: string; secretAccessKey: string },
  ends: (() => Promise<unknown>)[],
): Promise<Driver> {
  const gateway = await testGateway(credentials);
  const common = {
    host: gateway.host,
    port: gateway.port,
    user: "app",
    database: "postgres",
    signingHostname: RDS,
    signingPort: 5432,
    credentials,
    ssl: { ca },
    max,
  };
  if (name === "node-postgres") {
    const pool = iamPool(common);
    pool.on("error", () => {});
    ends.push(() => pool.end());
    const q = (c: PoolClient): Query => async (text) => (await c.query(text)).rows;
    return {
      name,
      gateway,
      run: (fn, options) => pgTransaction(pool, (c) => fn(q(c), c), options),
      nested: (tx, fn, options) => pgTransaction(tx as PoolClient, (c) => fn(q(c), c), options),
      plain: async (begin, fn) => {
        const client = await pool.connect();
        try {
          await client.query(`begin ${begin}`);
          const result = await fn(q(client));
          await client.query("commit");
          return result;
        } catch (error) {
          await client.query("rollback");
          throw error;
        } finally {
          client.release();
        }
      },
      query: async (text) => (await pool.query(text)).rows,
      waitingAfterThreeCheckouts: async () => {
        const first = await pool.connect();
        const second = await pool.connect();
        const third = pool.connect();
        const waiting = pool.waitingCount;
        second.release();
        (await third).release();
        first.release();
        return waiting;
      },
    };
  }
  if (name === "postgres.js") {
    const sql = iamPostgres({ ...common, onnotice: () => {} });
    ends.push(() => sql.end({ timeout: 0 }));
    const q = (tx: postgres.TransactionSql): Query => (text) => tx.unsafe(text);
    return {
      name,
      gateway,
      run: (fn, options) => transaction(sql, (tx) => fn(q(tx), tx), options),
      nested: (tx, fn, options) =>
        transaction(tx as postgres.TransactionSql, (sp) => fn(q(sp), sp), options),
      plain: async (begin, fn) => await sql.begin(begin, (tx) => fn(q(tx))),
      query: (text) => sql.unsafe(text),
    };
  }
  const bun = iamSql(common);
  ends.push(() => bun.close({ timeout: 0 }));
  const q = (tx: BunSqlClient): Query => (text) => tx.unsafe(text);
  return {
    name,
    gateway,
    run: (fn, options) => bunTransaction(bun, (tx) => fn(q(tx), tx), options),
    nested: (tx, fn, options) => bunTransaction(tx as BunSqlClient, (sp) => fn(q(sp), sp), options),
    plain: (begin, fn) => bun.begin(begin, (tx: BunSqlClient) => fn(q(tx))),
    query: (text) => bun.unsafe(text),
  };
}
