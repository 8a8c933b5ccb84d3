// Cold start of plain postgres.js: import it and create a client (no connection), print "ok".
// The driver scenario of bench/cold.mjs runs this file beside pg-iam-postgres.mjs.
import postgres from "postgres";

const env = (name) =>
  globalThis.Deno ? globalThis.Deno.env.get(name) : globalThis.process.env[name];
const sql = postgres(`postgres://admin@${env("BENCH_HOST")}:5432/postgres`, { ssl: "require" });
console.log(typeof sql === "function" ? "ok" : "no client");
