// Connect cost of a postgres.js pool through the IAM gateway: iamPostgres() (a token signed for
// every connection, pg-iam's socket doing TLS and auth) against the same pool given one static
// password (a token signed once; postgres.js doing TLS and auth itself). Both go through the same
// gateway, which verifies every token, to the same real PostgreSQL, so the difference is what
// pg-iam adds per connection. Rounds alternate the two so machine noise hits both alike.
//
//   node_modules/.bin/tsx bench/connect.ts [--rounds 15] [--pool 10] [--pglite]
//   (also: deno run -A bench/connect.ts, bun bench/connect.ts)
//
// Upstream: the Debian PostgreSQL of the tests (PGIAM_TEST_PG, or started here), or --pglite.

import process from "node:process";
import postgres from "postgres";
import { rdsToken } from "../mod.ts";
import { startGateway } from "../src/gateway/mod.ts";
import { iamPostgres, type TokenEvent } from "../src/postgres/mod.ts";
import { startPglite } from "../src/gateway/pglite.ts";
import { upstreamPostgres } from "../tests/_postgres.ts";
import { ca, cert, key } from "../tests/fixtures/tls.ts";

const arg = (name: string, fallback: number) => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
};
const ROUNDS = arg("--rounds", 15);
const POOL = arg("--pool", 10);
const usePglite = process.argv.includes("--pglite");

const credentials = { accessKeyId: "AKIDBENCH", secretAccessKey: "bench/secret/key" };
const endpoint = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";
const lite = usePglite ? await startPglite() : undefined;
const upstream = lite ?? await upstreamPostgres();
const gateway = await startGateway({
  endpoint,
  credentials,
  upstream: { host: upstream.host, port: upstream.port, user: lite ? undefined : "postgres" },
  tls: { cert, key },
});
const common = {
  host: gateway.host,
  port: gateway.port,
  user: "app",
  database: "postgres",
  max: POOL,
  onnotice: () => {},
};

/** Opens POOL connections at once; returns the wall time in ms. */
async function fill(sql: postgres.Sql): Promise<number> {
  const t = performance.now();
  await Promise.all(Array.from({ length: POOL }, () => sql`select 1`));
  const ms = performance.now() - t;
  await sql.end();
  return ms;
}

const tokens: TokenEvent[] = [];
const times = { iam: [] as number[], static: [] as number[] };
for (let round = 0; round <= ROUNDS; round++) {
  const password = await rdsToken({ hostname: endpoint, username: "app", credentials });
  const pair = [
    [
      "iam",
      () =>
        iamPostgres({
          ...common,
          signingHostname: endpoint,
          signingPort: 5432,
          credentials,
          ssl: { ca },
          onToken: (e) => round > 0 && tokens.push(e),
        }),
    ],
    ["static", () => postgres({ ...common, password, ssl: { ca, servername: endpoint } })],
  ] as const;
  for (const [name, make] of round % 2 ? pair : [...pair].reverse()) {
    const ms = await fill(make() as postgres.Sql);
    if (round > 0) times[name].push(ms); // round 0 warms up both paths
  }
}
await gateway.close();
await lite?.close();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
const iam = median(times.iam);
const fixed = median(times.static);
const sign = tokens.map((e) => e.credentialsMs + e.signMs);
const runtime = "Deno" in globalThis
  ? "Deno"
  : "Bun" in globalThis
  ? "Bun"
  : `Node ${process.versions.node}`;
console.log(
  `Connect cost, ${runtime}, pool of ${POOL} opened at once through the gateway (TLS, token ` +
    `verified) to ${lite ? "PGlite" : "PostgreSQL"}; median of ${ROUNDS} alternating rounds:\n`,
);
console.log(`| pool | fill ${POOL} connections | per connection |`);
console.log(`| --- | ---: | ---: |`);
console.log(
  `| static password (one token) | ${fixed.toFixed(1)} ms | ${(fixed / POOL).toFixed(2)} ms |`,
);
console.log(
  `| iamPostgres (token per connection) | ${iam.toFixed(1)} ms | ${(iam / POOL).toFixed(2)} ms |`,
);
console.log(
  `\nIAM / static: ${(iam / fixed).toFixed(3)} (${((iam / fixed - 1) * 100).toFixed(1)} %)`,
);
console.log(
  `Token (credentials + signing) under ${POOL} concurrent connects: p50 ${
    pct(sign, 0.5).toFixed(3)
  } ms, p95 ${pct(sign, 0.95).toFixed(3)} ms, max ${Math.max(...sign).toFixed(3)} ms ` +
    `(${sign.length} tokens)`,
);
process.exit(0);
