// One process of bench/als.mjs: transactions against a trust-auth PostgreSQL, with `concurrency`
// loops in flight, for `ms` after `warmup` ms; prints {"tps": …, "cpuUs": …, "n": …}. One variant per process,
// because on Node 20 the first AsyncLocalStorage.run() turns on promise hooks for the whole process
// and nothing turns them off:
//
// - plain:    the driver's own begin/commit (postgres.js sql.begin(); pg: connect, BEGIN, COMMIT);
// - als-once: the same loop, after one AsyncLocalStorage.run() at start (hooks on, never used);
// - als-run:  the same loop, each transaction's work inside AsyncLocalStorage.run(), as
//             transaction()'s nesting check runs it;
// - pg-iam:   pg-iam's transaction() (its nesting check included), on the same plain client.
//
//   <runtime> bench/als/child.ts <postgres|pg> <variant> <host:port> [ms] [warmup] [concurrency]
//     [startAt: epoch ms to start at]

import { AsyncLocalStorage } from "node:async_hooks";
import process from "node:process";
import postgres from "postgres";
import pg from "pg";

const [driver, variant, address, ms = "1000", warmup = "400", concurrency = "4", startAt = "0"] =
  process.argv.slice(2);
const [host, port] = address.split(":");
const conn = { host, port: Number(port), user: "postgres", database: "postgres" };
const loops = Number(concurrency);

let als: AsyncLocalStorage<object> | undefined;
if (variant === "als-once" || variant === "als-run") {
  als = new AsyncLocalStorage();
  als.run({}, () => {});
}
const work = <T>(fn: () => Promise<T>): Promise<T> =>
  variant === "als-run" ? als!.run({ outer: als!.getStore() }, fn) : fn();

let tx: () => Promise<unknown>;
let close: () => Promise<unknown>;
if (driver === "postgres") {
  const sql = postgres({ ...conn, max: loops, onnotice: () => {} });
  close = () => sql.end();
  if (variant === "pg-iam") {
    const { transaction } = await import("../../src/postgres/mod.ts");
    tx = () => transaction(sql, (t) => t`select 1`);
  } else {
    tx = () => sql.begin((t) => work(() => t`select 1`));
  }
} else {
  const pool = new pg.Pool({ ...conn, max: loops });
  close = () => pool.end();
  if (variant === "pg-iam") {
    const { transaction } = await import("../../src/pg/mod.ts");
    tx = () => transaction(pool, (c) => c.query("select 1"));
  } else {
    tx = async () => {
      const client = await pool.connect();
      try {
        await client.query("begin");
        await work(() => client.query("select 1"));
        await client.query("commit");
      } catch (error) {
        await client.query("rollback").catch(() => {});
        throw error;
      } finally {
        client.release();
      }
    };
  }
}

async function run(forMs: number): Promise<number> {
  const end = performance.now() + forMs;
  let n = 0;
  await Promise.all(Array.from({ length: loops }, async () => {
    while (performance.now() < end) {
      await tx();
      n++;
    }
  }));
  return n;
}

// bench/als.mjs --together starts the four variants' warm-ups at the same instant.
const wait = Number(startAt) - Date.now();
if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
await run(Number(warmup));
const t = performance.now();
const cpu = process.cpuUsage();
const n = await run(Number(ms));
const used = process.cpuUsage(cpu);
const tps = n / ((performance.now() - t) / 1000);
await close();
// This process's CPU time per transaction (user + system): what the nesting check costs the
// client, less blurred by other processes on a loaded machine than the wall-clock rate.
const cpuUs = (used.user + used.system) / n;
process.stdout.write(JSON.stringify({ tps: Math.round(tps), cpuUs, n }) + "\n");
