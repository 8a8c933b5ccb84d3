// Cold start of pg-iam/pg: import it and create a pool (no connection) for BENCH_HOST, an Aurora
// DSQL or an RDS endpoint, print "ok". Imported by package name, as pg-iam-postgres.mjs.
import { iamPool } from "pg-iam/pg";

const env = (name) =>
  globalThis.Deno ? globalThis.Deno.env.get(name) : globalThis.process.env[name];
const pool = iamPool({ connectionString: `postgres://admin@${env("BENCH_HOST")}:5432/postgres` });
console.log(typeof pool.query === "function" ? "ok" : "no pool");
