// Connect cost of a pool through the IAM gateway: pg-iam's integration (a token signed for every
// connection) against the same driver's pool given one static password (a token signed once; the
// driver doing TLS and auth itself). Both go through the same gateway, which verifies every token,
// to the same real PostgreSQL, so the difference is what pg-iam adds per connection. Rounds
// alternate the two so machine noise hits both alike.
//
//   node_modules/.bin/tsx bench/connect.ts [--driver postgres|pg|bun] [--rounds 15] [--pool 10]
//     [--pglite] [--subscriber]
//   (also: deno run -A bench/connect.ts, bun bench/connect.ts)
//
// postgres.js 3.x instead of 4 (the default): PGIAM_TEST_POSTGRES=3 with "postgres" remapped as the
// tests do it (tests/_postgres_major.mjs; the commands are in bench/README.md). The script checks
// that the postgres.js it loaded is the major asked for, and names it in its report.
//
// Drivers (--driver, default postgres):
// - postgres: iamPostgres() against postgres.js with a static password (pg-iam's socket does
//   credentials, signing, TCP, TLS and the password exchange, then hands the socket over);
// - pg: iamPool() against a node-postgres pg.Pool with a static password (the same, for pg);
// - bun (Bun only): iamSql() against Bun.SQL with a static password (Bun does TCP, TLS and the
//   login itself in both; iamSql gives it a password function that signs a token).
//
// Upstream: the Debian PostgreSQL of the tests (PGIAM_TEST_PG, or started here), or --pglite.
//
// --subscriber: the diagnostics channels' cost instead. Both sides are pg-iam's pool; one fills
// with nobody subscribed, the other with a subscriber on `pg-iam:connect` and `pg-iam:token` (it
// counts what it is sent, checked against the connections), rounds alternating as above.

import dc from "node:diagnostics_channel";
import process from "node:process";
import pg from "pg";
import postgres from "postgres";
import { rdsToken } from "../mod.ts";
import { startGateway } from "../src/gateway/mod.ts";
import {
  CONNECT_CHANNEL,
  iamPostgres,
  TOKEN_CHANNEL,
  type TokenEvent,
} from "../src/postgres/mod.ts";
import { iamPool } from "../src/pg/mod.ts";
import { connectTraced, tokenTraced } from "../src/connection/diagnostics.ts";
import { type BunSqlClient, iamSql } from "../src/bun/mod.ts";
import { startPglite } from "../src/gateway/pglite.ts";
import { upstreamPostgres } from "../tests/_postgres.ts";
import { ca, cert, key } from "../tests/fixtures/tls.ts";
import { postgresMajor } from "../tests/_postgres_major.mjs";

const arg = (name: string, fallback: number) => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
};
const ROUNDS = arg("--rounds", 15);
const POOL = arg("--pool", 10);
const usePglite = process.argv.includes("--pglite");
const SUBSCRIBER = process.argv.includes("--subscriber");
const DRIVERS = {
  postgres: { driver: "postgres.js", iam: "iamPostgres" },
  pg: { driver: "node-postgres", iam: "iamPool" },
  bun: { driver: "Bun.SQL", iam: "iamSql" },
} as const;
type DriverName = keyof typeof DRIVERS;
const driverAt = process.argv.indexOf("--driver");
const driverName = (driverAt >= 0 ? process.argv[driverAt + 1] : "postgres") as DriverName;
if (!(driverName in DRIVERS)) {
  throw new Error(`unknown --driver ${driverName}: use ${Object.keys(DRIVERS).join(", ")}`);
}
const names = DRIVERS[driverName];
const BunSQL = (globalThis as { Bun?: { SQL?: new (options: object) => BunSqlClient } }).Bun?.SQL;
if (driverName === "bun" && !BunSQL) throw new Error("--driver bun needs Bun (Bun.SQL)");

// postgres.js 4 parses require_auth, 3.x does not; constructing a client opens nothing.
const loadedMajor = "require_auth" in postgres({ max: 1 }).options ? 4 : 3;
if (loadedMajor !== postgresMajor()) {
  throw new Error(
    `loaded postgres.js ${loadedMajor}, but PGIAM_TEST_POSTGRES asks for ${postgresMajor()}: ` +
      `remap "postgres" as bench/README.md says`,
  );
}

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

/** A pool of one driver: `fill` opens POOL connections at once, `end` closes them. */
interface Pool {
  fill(): Promise<void>;
  end(): Promise<void>;
}
type Make = (onToken: (e: TokenEvent) => void, password: string) => Pool;

/** Checks that the fill ran on POOL distinct backends (for the drivers that can say so). */
function distinct(pids: unknown[]): void {
  if (new Set(pids).size !== POOL) {
    throw new Error(`the fill opened ${new Set(pids).size} connections, not ${POOL}`);
  }
}

const makers: Record<DriverName, { iam: Make; static: Make }> = {
  postgres: (() => {
    const common = {
      host: gateway.host,
      port: gateway.port,
      user: "app",
      database: "postgres",
      max: POOL,
      onnotice: () => {},
    };
    // Reserving POOL connections at once opens POOL, on postgres.js 3 and 4 alike. Queries issued
    // at once do not: 3.x opened a connection for each while none was idle, but 4 pipelines them
    // onto the first connections ready (10 queries at once ran on 1–3 backends here), so the fill
    // would end before the pool had opened.
    const wrap = (sql: postgres.Sql): Pool => ({
      fill: async () => {
        const reserved = await Promise.all(Array.from({ length: POOL }, () => sql.reserve()));
        const pids = await Promise.all(
          reserved.map(async (r) => (await r`select pg_backend_pid() as pid`)[0].pid),
        );
        for (const r of reserved) r.release();
        distinct(pids);
      },
      end: () => sql.end(),
    });
    return {
      iam: (onToken) =>
        wrap(
          iamPostgres({
            ...common,
            signingHostname: endpoint,
            signingPort: 5432,
            credentials,
            ssl: { ca },
            onToken,
          }) as unknown as postgres.Sql,
        ),
      static: (_, password) =>
        wrap(postgres({ ...common, password, ssl: { ca, servername: endpoint } })),
    };
  })(),
  pg: (() => {
    const common = {
      host: gateway.host,
      port: gateway.port,
      user: "app",
      database: "postgres",
      max: POOL,
    };
    // pg-pool opens a new client for each query while none is idle and the pool is not full.
    const wrap = (pool: pg.Pool): Pool => ({
      fill: async () => {
        const results = await Promise.all(
          Array.from({ length: POOL }, () => pool.query("select pg_backend_pid() as pid")),
        );
        distinct(results.map((r) => r.rows[0].pid));
      },
      end: () => pool.end(),
    });
    return {
      iam: (onToken) =>
        wrap(iamPool({
          ...common,
          signingHostname: endpoint,
          signingPort: 5432,
          credentials,
          ssl: { ca },
          onToken,
        })),
      static: (_, password) =>
        wrap(new pg.Pool({ ...common, password, ssl: { ca, servername: endpoint } })),
    };
  })(),
  bun: (() => {
    const common = {
      hostname: gateway.host,
      port: gateway.port,
      username: "app",
      database: "postgres",
      max: POOL,
    };
    // Queries issued at once may share a connection in Bun.SQL: reserving POOL connections at
    // once opens POOL.
    const wrap = (sql: BunSqlClient): Pool => ({
      fill: async () => {
        const reserved = await Promise.all(Array.from({ length: POOL }, () => sql.reserve()));
        const pids = await Promise.all(
          reserved.map(async (r) => (await r`select pg_backend_pid() as pid`)[0].pid),
        );
        for (const r of reserved) r.release();
        distinct(pids);
      },
      end: () => sql.close(),
    });
    return {
      iam: (onToken) =>
        wrap(iamSql({
          ...common,
          signingHostname: endpoint,
          signingPort: 5432,
          credentials,
          ssl: { ca },
          onToken,
        })),
      static: (_, password) =>
        wrap(
          new BunSQL!({
            ...common,
            password,
            tls: { ca, serverName: endpoint, rejectUnauthorized: true },
          }),
        ),
    };
  })(),
};
const make = makers[driverName];

/** Opens POOL connections at once; returns the wall time in ms. */
async function fill(pool: Pool): Promise<number> {
  const t = performance.now();
  await pool.fill();
  const ms = performance.now() - t;
  await pool.end();
  return ms;
}

/** Subscribes to both channels, counting what they send; returns the unsubscribe. */
const seen = { traces: 0, ended: 0, tokens: 0 };
function subscribe(): () => void {
  const connect = dc.tracingChannel(CONNECT_CHANNEL);
  const handlers = {
    start: () => void seen.traces++,
    end: () => {},
    asyncStart: () => {},
    asyncEnd: () => void seen.ended++,
    error: () => {},
  };
  const onToken = () => void seen.tokens++;
  connect.subscribe(handlers);
  dc.subscribe(TOKEN_CHANNEL, onToken);
  return () => {
    connect.unsubscribe(handlers);
    dc.unsubscribe(TOKEN_CHANNEL, onToken);
  };
}

const tokens: TokenEvent[] = [];
const times = { iam: [] as number[], static: [] as number[] };
for (let round = 0; round <= ROUNDS; round++) {
  const password = await rdsToken({ hostname: endpoint, username: "app", credentials });
  const onToken = (e: TokenEvent) => round > 0 && tokens.push(e);
  // With --subscriber, "static" is pg-iam's pool with a subscriber on both channels.
  const pair = [["iam", () => make.iam(onToken, password)], [
    "static",
    () => SUBSCRIBER ? make.iam(onToken, password) : make.static(onToken, password),
  ]] as const;
  for (const [name, open] of round % 2 ? pair : [...pair].reverse()) {
    const unsubscribe = SUBSCRIBER && name === "static" ? subscribe() : undefined;
    const ms = await fill(open());
    unsubscribe?.();
    if (round > 0) times[name].push(ms); // round 0 warms up both paths
  }
}
if (SUBSCRIBER) {
  const expected = (ROUNDS + 1) * POOL;
  if (seen.traces !== expected || seen.ended !== expected || seen.tokens !== expected) {
    throw new Error(`the subscriber saw ${JSON.stringify(seen)}, not ${expected} of each`);
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
if (SUBSCRIBER) {
  console.log(
    `Diagnostics channels' cost, ${runtime}, ${names.driver}${
      driverName === "postgres" ? ` ${loadedMajor}` : ""
    }, ${names.iam} pool of ${POOL} opened at once through the gateway to ${
      lite ? "PGlite" : "PostgreSQL"
    }; median of ${ROUNDS} alternating rounds:\n`,
  );
  console.log(`| ${names.iam} | fill ${POOL} connections | per connection |`);
  console.log(`| --- | ---: | ---: |`);
  console.log(`| nobody subscribed | ${iam.toFixed(1)} ms | ${(iam / POOL).toFixed(2)} ms |`);
  console.log(
    `| subscribed to ${CONNECT_CHANNEL} and ${TOKEN_CHANNEL} | ${fixed.toFixed(1)} ms | ${
      (fixed / POOL).toFixed(2)
    } ms |`,
  );
  console.log(
    `\nsubscribed / unsubscribed: ${(fixed / iam).toFixed(3)} (${
      ((fixed / iam - 1) * 100).toFixed(1)
    } %); the subscriber saw ${seen.traces} traces and ${seen.tokens} tokens`,
  );
  // What a connection pays with nobody subscribed: the two checks (one per connection start, one
  // per token), timed here alone as no connect can resolve them.
  let any = false;
  const checks = 1_000_000;
  const t = performance.now();
  for (let i = 0; i < checks; i++) any = connectTraced() || tokenTraced() || any;
  const ns = (performance.now() - t) * 1e6 / checks;
  console.log(
    `Nobody subscribed, a connection's checks (connect and token channels): ${ns.toFixed(1)} ns` +
      `${any ? " (subscribed?)" : ""}`,
  );
  process.exit(0);
}
console.log(
  `Connect cost, ${runtime}, ${names.driver}${
    driverName === "postgres" ? ` ${loadedMajor}` : ""
  }, pool of ${POOL} opened at once through the ` +
    `gateway (TLS, token verified) to ${lite ? "PGlite" : "PostgreSQL"}; median of ${ROUNDS} ` +
    `alternating rounds:\n`,
);
console.log(`| pool | fill ${POOL} connections | per connection |`);
console.log(`| --- | ---: | ---: |`);
console.log(
  `| static password (one token) | ${fixed.toFixed(1)} ms | ${(fixed / POOL).toFixed(2)} ms |`,
);
console.log(
  `| ${names.iam} (token per connection) | ${iam.toFixed(1)} ms | ${(iam / POOL).toFixed(2)} ms |`,
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
if (sign.length !== ROUNDS * POOL) {
  console.log(`Note: ${sign.length} tokens for ${ROUNDS} rounds of ${POOL} connections`);
}
process.exit(0);
