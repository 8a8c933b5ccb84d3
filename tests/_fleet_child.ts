// One process of a fleet (tests/e2e/fleet.test.ts): a pool of POOL connections to the gateway at
// PORT, signing for the DSQL endpoint ENDPOINT. Prints "ready", waits for "go" on stdin, then
// runs POOL queries at once (each holding its connection a moment, so the pool fills), then
// POOL more, and prints one JSON line: how many queries failed, and why.
import process from "node:process";
import { iamPostgres } from "../src/postgres/mod.ts";
import { iamPool } from "../src/pg/mod.ts";
import { ca } from "./fixtures/tls.ts";

const env = process.env;
const pool = Number(env.POOL);
const options = {
  host: "127.0.0.1",
  port: Number(env.PORT),
  user: "app",
  database: "postgres",
  signingHostname: env.ENDPOINT!,
  credentials: { accessKeyId: env.KEY_ID!, secretAccessKey: env.KEY_SECRET! },
  ssl: { ca },
};
let query: () => Promise<unknown>;
let end: () => Promise<unknown>;
if (env.DRIVER === "pg") {
  const p = iamPool({ ...options, max: pool, connectionTimeoutMillis: 20_000 });
  p.on("error", () => {});
  query = () => p.query("select pg_sleep(0.1)");
  end = () => p.end();
} else {
  const sql = iamPostgres({ ...options, max: pool, connect_timeout: 20, onnotice: () => {} });
  query = () => sql`select pg_sleep(0.1)`.execute();
  end = () => sql.end();
}

console.log("ready");
await new Promise<void>((resolve) => process.stdin.once("data", () => resolve()));
const errors: string[] = [];
for (let round = 0; round < 2; round++) {
  const results = await Promise.allSettled(Array.from({ length: pool }, query));
  for (const r of results) {
    if (r.status === "rejected") {
      const e = r.reason as Error & { code?: string };
      errors.push(`${e.code ?? ""} ${e.message}`);
    }
  }
}
await end();
console.log(
  JSON.stringify({ queries: 2 * pool, failed: errors.length, errors: errors.slice(0, 3) }),
);
process.exit(0);
