// Cold start of AWS's Aurora DSQL connector for node-postgres: import it and create a pool (no
// connection) for a DSQL endpoint, print "ok".
import { AuroraDSQLPool } from "@aws/aurora-dsql-node-postgres-connector";

const env = (name) =>
  globalThis.Deno ? globalThis.Deno.env.get(name) : globalThis.process.env[name];
const pool = new AuroraDSQLPool({ host: env("BENCH_HOST"), user: "admin" });
console.log(typeof pool.query === "function" ? "ok" : "no pool");
