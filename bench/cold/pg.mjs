// Cold start of plain node-postgres: import it and create a Pool (no connection), print "ok".
import pg from "pg";

const env = (name) =>
  globalThis.Deno ? globalThis.Deno.env.get(name) : globalThis.process.env[name];
const pool = new pg.Pool({
  connectionString: `postgres://admin@${env("BENCH_HOST")}:5432/postgres`,
  ssl: true,
});
console.log(typeof pool.query === "function" ? "ok" : "no pool");
