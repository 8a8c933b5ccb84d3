// `npm run demo`: the whole IAM connect path on this machine, with nothing installed on the system
// and no AWS account. An embedded PostgreSQL (PGlite, WebAssembly) sits behind pg-iam's gateway,
// which checks IAM tokens the way RDS does (TLS, SigV4 signature, expiry against its own clock).
// A postgres.js pool made by iamPostgres() runs queries while the clocks move two hours forward,
// far past a token's 15 minutes, with connections recycled and killed on the way. Then the same
// churn with one token frozen into a plain postgres.js pool (seed 000's bug) for contrast.
// Not published: it uses the test certificate and the AWS SDK (dev dependencies).

import postgres from "postgres";
import { Signer } from "@aws-sdk/rds-signer";
import { rdsToken } from "../mod.ts";
import { startGateway } from "../src/gateway/mod.ts";
import { type ConnectEvent, iamPostgres, type TokenEvent } from "../src/postgres/mod.ts";
import { startPglite } from "../src/gateway/pglite.ts";
import { ca, cert, key } from "../tests/fixtures/tls.ts";

// AWS's documentation example keys: syntactically real, authorised for nothing.
const credentials = {
  accessKeyId: "AKIAIOSFODNN7EXAMPLE",
  secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
};
const endpoint = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";
const MINUTE = 60_000;
const STEPS = 24; // × 5 simulated minutes = 2 hours
const log = (line = "") => console.log(line);
const ms = (x: number) => `${x.toFixed(x < 10 ? 2 : 1)} ms`;
const pct = (xs: number[], p: number) =>
  xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))] : 0;
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

// 1. The token engine against the AWS SDK, same inputs, same second.
let sdkSame = false;
for (let i = 0; i < 5 && !sdkSame; i++) {
  const second = Math.floor(Date.now() / 1000);
  const ours = await rdsToken({ hostname: endpoint, username: "app", credentials });
  const sdk = await new Signer({
    hostname: endpoint,
    port: 5432,
    username: "app",
    region: "us-east-1",
    credentials,
  }).getAuthToken();
  if (Math.floor(Date.now() / 1000) === second) sdkSame = ours === sdk;
}
log(`RDS token byte-identical to @aws-sdk/rds-signer's: ${sdkSame ? "yes" : "NO"}`);

// 2. Embedded PostgreSQL behind the IAM gateway.
let t = performance.now();
const lite = await startPglite();
log(`embedded PostgreSQL (PGlite) on ${lite.host}:${lite.port} (${ms(performance.now() - t)})`);
const gateway = await startGateway({
  endpoint,
  credentials,
  upstream: { host: lite.host, port: lite.port },
  tls: { cert, key },
});
log(`IAM gateway for ${endpoint} on ${gateway.host}:${gateway.port} (TLS, test CA)\n`);

// 3. A pool of 5 through iamPostgres(), its signing clock moving with the gateway's.
let offset = 0;
const tokens: TokenEvent[] = [];
const connects: ConnectEvent[] = [];
const sql = iamPostgres({
  host: gateway.host,
  port: gateway.port,
  user: "app",
  database: "postgres",
  signingHostname: endpoint, // connect to 127.0.0.1, sign for (and verify TLS against) the endpoint
  signingPort: 5432,
  credentials,
  ssl: { ca },
  max: 5,
  // PGlite serves every connection in its one session, so the named statements postgres.js 4
  // prepares per connection would meet there; a real server has one session per connection.
  prepare: false,
  onnotice: () => {},
  now: () => Date.now() + offset,
  onToken: (e) => tokens.push(e),
  onIamConnect: (e) => connects.push(e),
});
let queries = 0;
let failures = 0;
t = performance.now();
await sql`create table if not exists orders (id serial primary key, at timestamptz)`;
for (let step = 1; step <= STEPS; step++) {
  offset += 5 * MINUTE;
  gateway.clockOffsetMs = offset;
  const results = await Promise.allSettled(
    Array.from({ length: 10 }, () => sql`insert into orders (at) values (now()) returning id`),
  );
  queries += results.length;
  failures += results.filter((r) => r.status === "rejected").length;
  if (step % 6 === 0) {
    const killed = gateway.disconnectAll(); // as a failover or a server restart would
    log(`  t+${offset / MINUTE} min: killed ${killed} connections`);
    await sleep(50);
  }
}
const [{ count }] = await sql`select count(*)::int as count from orders`;
await sql.end();
const seconds = (performance.now() - t) / 1000;

const sign = tokens.map((e) => e.credentialsMs + e.signMs);
const total = connects.map((e) => e.timings.totalMs);
const auth = connects.map((e) => e.timings.authMs);
const tls = connects.map((e) => e.timings.tlsMs);
const ages = gateway.stats.logins.filter((l) => l.accepted).map((l) => l.tokenAgeMs ?? 0);
log(`\niamPostgres pool of 5, ${STEPS * 5} simulated minutes in ${seconds.toFixed(1)} s:`);
log(`  queries              ${queries + 1} run, ${failures} failed, ${count} rows written`);
log(`  physical connections ${connects.length} opened (the first, pool growth, after each kill)`);
log(`  tokens signed        ${tokens.length}, one per connection`);
log(
  `  gateway              ${gateway.stats.accepted} logins accepted, ${gateway.stats.rejected} rejected`,
);
log(`  token age at login   max ${ms(Math.max(...ages))} (the gateway's clock moved 2 h)`);
log(`  token signing        p50 ${ms(pct(sign, 0.5))}, p95 ${ms(pct(sign, 0.95))}`);
log(`  TLS handshake        p50 ${ms(pct(tls, 0.5))}, p95 ${ms(pct(tls, 0.95))}`);
log(`  IAM check (auth)     p50 ${ms(pct(auth, 0.5))}, p95 ${ms(pct(auth, 0.95))}`);
log(`  connect total        p50 ${ms(pct(total, 0.5))}, p95 ${ms(pct(total, 0.95))}`);

// 4. Contrast: one token frozen into a plain postgres.js pool.
offset = 0;
gateway.clockOffsetMs = 0;
const frozen = postgres({
  host: gateway.host,
  port: gateway.port,
  user: "app",
  database: "postgres",
  password: await rdsToken({ hostname: endpoint, username: "app", credentials }),
  ssl: { ca, servername: endpoint },
  max: 5,
  onnotice: () => {},
});
let frozenFailure = "";
for (let minute = 5; minute <= 30 && !frozenFailure; minute += 5) {
  gateway.clockOffsetMs = minute * MINUTE;
  gateway.disconnectAll();
  await sleep(50);
  try {
    await frozen`select 1`;
  } catch (error) {
    frozenFailure = `t+${minute} min: ${(error as Error).message} (${
      (error as { code?: string }).code
    })`;
  }
}
await frozen.end();
log(`\nfor contrast, one token frozen into a postgres.js pool (seed 000):`);
log(`  ${frozenFailure || "never failed (unexpected!)"}`);

await gateway.close();
await lite.close();
const ok = sdkSame && failures === 0 && gateway.stats.logins.some((l) => !l.accepted) &&
  frozenFailure !== "";
log(`\n${ok ? "OK" : "FAILED"}: zero failures with a fresh token per connection`);
if (!ok) process.exitCode = 1;
