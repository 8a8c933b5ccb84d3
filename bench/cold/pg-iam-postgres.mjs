// Cold start of pg-iam/postgres: import it and create a client (no connection) for BENCH_HOST, an
// Aurora DSQL or an RDS endpoint, print "ok". Imported by package name: bench/cold.mjs installs
// the package (npm: the built dist/; Deno: the sources, as JSR serves them) beside this file.
import { iamPostgres } from "pg-iam/postgres";

const env = (name) =>
  globalThis.Deno ? globalThis.Deno.env.get(name) : globalThis.process.env[name];
const sql = iamPostgres(`postgres://admin@${env("BENCH_HOST")}:5432/postgres`);
console.log(typeof sql === "function" ? "ok" : "no client");
