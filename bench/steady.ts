// Steady-state cost of pg-iam's driver integrations against the same driver used plainly, after
// login: the same real PostgreSQL, both over verified TLS (the test CA, server name `localhost`),
// every connection opened before timing. The server uses trust authentication, so the IAM token
// pg-iam signs per connection is never checked; what is measured is what pg-iam adds to every
// query after login.
//
//   node_modules/.bin/tsx --expose-gc bench/steady.ts [--driver postgres|pg|bun] [--rounds N]
//     [--quick] [--cases a,b,c,d,e]
//   node_modules/.bin/deno run -A --v8-flags=--expose-gc bench/steady.ts ...
//   node_modules/.bin/bun bench/steady.ts ...
//   (every driver on every runtime in turn: node bench/steady.mjs)
//
// Drivers (--driver, default postgres):
// - postgres: iamPostgres() against plain postgres.js (pg-iam's socket does TLS and the login, then
//   hands its TCP/TLS socket to postgres.js).
// - pg: iamPool() against a plain node-postgres pg.Pool (the same hand-over, to node-postgres).
// - bun (Bun only): iamSql() against a plain Bun.SQL client (Bun opens its own sockets and does
//   TLS and the login itself; pg-iam gives it a password function and TLS options).
//
// Cases: (a) sequential `select 1` on one connection; (b) small queries issued at once over 10
// connections; (c) a 40 MB result; (d) a 20 MB multi-row insert into an unlogged table; (e) memory
// per open connection. Rounds alternate which client goes first; the report gives medians and the
// median of the per-round ratios iam/plain. CPU is process.cpuUsage() (user + system, all threads).
//
// The server: one started here (tests/_postgres_server.mjs, with the test certificate), or
// PGIAM_BENCH_PG=host:port (TLS with that certificate, trust auth for `postgres`; the memory
// children get their parent's this way). --json also prints one `BENCH_JSON {...}` line.
//
// postgres.js 3.x instead of 4 (the default): PGIAM_TEST_POSTGRES=3 with "postgres" remapped as the
// tests do it (tests/_postgres_major.mjs), which `node bench/steady.mjs --postgres 3` does; the
// script checks that the postgres.js it loaded is the major asked for (the memory children too).

import { execFileSync } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import pg from "pg";
import postgres from "postgres";
import { iamPostgres } from "../src/postgres/mod.ts";
import { iamPool } from "../src/pg/mod.ts";
import { type BunSqlClient, iamSql } from "../src/bun/mod.ts";
import { startPostgres } from "../tests/_postgres_server.mjs";
import { ca, cert, key } from "../tests/fixtures/tls.ts";
import { childRuntimeArgs, postgresMajor } from "../tests/_postgres_major.mjs";

// postgres.js 4 parses require_auth, 3.x does not; constructing a client opens nothing.
const loadedMajor = "require_auth" in postgres({ max: 1 }).options ? 4 : 3;
if (loadedMajor !== postgresMajor()) {
  throw new Error(
    `loaded postgres.js ${loadedMajor}, but PGIAM_TEST_POSTGRES asks for ${postgresMajor()}: ` +
      `remap "postgres" as bench/README.md says, or run node bench/steady.mjs --postgres 3`,
  );
}

const quick = process.argv.includes("--quick");
const arg = (name: string): string | undefined => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : undefined;
};
const roundsArg = arg("--rounds");
const rounds = (full: number, short: number) =>
  roundsArg ? Number(roundsArg) : quick ? short : full;
const CASES = (arg("--cases") ?? "a,b,c,d,e").split(",").map((c) => c.trim());

const SEQUENTIAL = 3_000; // (a)
const PIPELINED = 20_000; // (b)
const PIPELINE_POOL = 10;
const RESULT_ROWS = 40_000; // (c): 40,000 rows of 1,000 bytes = 40 MB of column data
const RESULT_WIDTH = 1_000;
const INSERT_ROWS = 100_000; // (d): 100,000 rows of (int, 200 bytes) = 20 MB of text
const INSERT_WIDTH = 200;
const INSERT_BATCH = 20_000; // 40,000 parameters a statement; the protocol allows 65,535
const MEMORY_POOL = 50; // (e)

const runtime = "Deno" in globalThis
  ? `Deno ${(globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno}`
  : "Bun" in globalThis
  ? `Bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`
  : `Node ${process.versions.node}`;

const g = globalThis as { Bun?: { gc(sync: boolean): void }; gc?: () => void };
const hasGc = Boolean(g.Bun || g.gc);
const collect = g.Bun ? () => g.Bun!.gc(true) : g.gc ?? (() => {});

const DRIVERS = {
  postgres: { driver: "postgres.js", iam: "iamPostgres" },
  pg: { driver: "node-postgres", iam: "iamPool" },
  bun: { driver: "Bun.SQL", iam: "iamSql" },
} as const;
type DriverName = keyof typeof DRIVERS;
const driverName = (arg("--driver") ?? "postgres") as DriverName;
if (!(driverName in DRIVERS)) {
  throw new Error(`unknown --driver ${driverName}: use ${Object.keys(DRIVERS).join(", ")}`);
}
const names = DRIVERS[driverName];
const BunSQL = (globalThis as { Bun?: { SQL?: new (options: object) => BunSqlClient } }).Bun?.SQL;
if (driverName === "bun" && !BunSQL) throw new Error("--driver bun needs Bun (Bun.SQL)");

async function server(): Promise<{ host: string; port: number }> {
  const given = process.env.PGIAM_BENCH_PG;
  if (given) {
    const [host, port] = given.split(/:(?=\d+$)/);
    return { host, port: Number(port) };
  }
  const started = await startPostgres({ ssl: { cert, key } });
  process.on("exit", () => started.stop());
  return started;
}
const { host, port } = await server();

type Client = "plain" | "iam";
const CLIENTS: Client[] = ["plain", "iam"];
const credentials = { accessKeyId: "AKIDBENCH", secretAccessKey: "bench/secret/key" };
const iamOptions = { signingHostname: "localhost", region: "us-east-1", credentials, ssl: { ca } };

interface Backend {
  pid: number;
  ssl: boolean;
  version: string;
  cipher: string;
}
interface InsertRow {
  id: number;
  s: string;
}

/**
 * One client (pool) of one driver, with each workload written as that driver's users write it. The
 * timed code is only the body of sequential, pipelined, result and insert.
 */
interface Db {
  /** Runs the pg_stat_ssl query on `count` connections at once (opening up to `count`). */
  backends(count: number): Promise<Backend[]>;
  /** (a): `n` awaited `select 1`, one after another. */
  sequential(n: number): Promise<void>;
  /** (b): `n` `select $1::int` issued at once; returns the sum of the results. */
  pipelined(n: number): Promise<number>;
  /** (c): `rows` rows of `width` characters; returns the characters received. */
  result(rows: number, width: number): Promise<number>;
  /** (d): inserts `data` into `table`, `batch` rows a statement. */
  insert(table: string, data: InsertRow[], batch: number): Promise<void>;
  /** Untimed statements (create, truncate, drop, the final check). */
  // deno-lint-ignore no-explicit-any
  exec(text: string): Promise<any[]>;
  end(): Promise<void>;
}

const STAT_SSL = "select pid, ssl, version, cipher from pg_stat_ssl where pid = pg_backend_pid()";

function postgresDb(client: Client, max: number): Db {
  const common = { host, port, user: "postgres", database: "postgres", onnotice: () => {} };
  const sql = client === "plain"
    ? postgres({ ...common, max, ssl: { ca, servername: "localhost" } })
    : iamPostgres({ ...common, max, ...iamOptions }) as unknown as postgres.Sql;
  return {
    // Reserves `count` connections at once: postgres.js 4 pipelines queries issued at once onto
    // the connections already open (3.x opened a new one for each while none was idle).
    backends: async (count) => {
      const reserved = await Promise.all(Array.from({ length: count }, () => sql.reserve()));
      try {
        return await Promise.all(
          reserved.map(async (r) => (await r.unsafe(STAT_SSL))[0] as unknown as Backend),
        );
      } finally {
        for (const r of reserved) r.release();
      }
    },
    sequential: async (n) => {
      for (let i = 0; i < n; i++) await sql`select 1`;
    },
    pipelined: async (n) => {
      const results = await Promise.all(
        Array.from({ length: n }, (_, i) => sql`select ${i}::int as i`),
      );
      let sum = 0;
      for (const [r] of results) sum += r.i;
      return sum;
    },
    result: async (rows, width) => {
      const result = await sql`
        select repeat('x', ${width}::int) as s from generate_series(1, ${rows}::int)`;
      let chars = 0;
      for (const r of result) chars += r.s.length;
      return chars;
    },
    insert: async (table, data, batch) => {
      for (let at = 0; at < data.length; at += batch) {
        await sql`insert into ${sql(table)} ${sql(data.slice(at, at + batch), "id", "s")}`;
      }
    },
    exec: (text) => sql.unsafe(text),
    end: () => sql.end(),
  };
}

function pgDb(client: Client, max: number): Db {
  const common = { host, port, user: "postgres", database: "postgres", max };
  const pool = client === "plain"
    ? new pg.Pool({ ...common, ssl: { ca, servername: "localhost" } })
    : iamPool({ ...common, ...iamOptions });
  // (d): the statement text for a batch size, built once (numbered parameters, two a row).
  const texts = new Map<string, string>();
  const insertText = (table: string, rows: number) => {
    const id = `${table} ${rows}`;
    let text = texts.get(id);
    if (!text) {
      const values = Array.from({ length: rows }, (_, i) => `($${2 * i + 1}, $${2 * i + 2})`);
      text = `insert into ${table} (id, s) values ${values.join(", ")}`;
      texts.set(id, text);
    }
    return text;
  };
  return {
    // Checks out `count` clients at once (the pool opens a new one while none is idle).
    backends: async (count) => {
      const clients = await Promise.all(Array.from({ length: count }, () => pool.connect()));
      try {
        return await Promise.all(
          clients.map(async (c) => (await c.query(STAT_SSL)).rows[0] as Backend),
        );
      } finally {
        for (const c of clients) c.release();
      }
    },
    sequential: async (n) => {
      for (let i = 0; i < n; i++) await pool.query("select 1");
    },
    pipelined: async (n) => {
      const results = await Promise.all(
        Array.from({ length: n }, (_, i) => pool.query("select $1::int as i", [i])),
      );
      let sum = 0;
      for (const { rows: [r] } of results) sum += r.i;
      return sum;
    },
    result: async (rows, width) => {
      const { rows: result } = await pool.query(
        "select repeat('x', $1::int) as s from generate_series(1, $2::int)",
        [width, rows],
      );
      let chars = 0;
      for (const r of result) chars += r.s.length;
      return chars;
    },
    insert: async (table, data, batch) => {
      for (let at = 0; at < data.length; at += batch) {
        const rows = data.slice(at, at + batch);
        const values: unknown[] = [];
        for (const r of rows) values.push(r.id, r.s);
        await pool.query(insertText(table, rows.length), values);
      }
    },
    exec: async (text) => (await pool.query(text)).rows,
    end: () => pool.end(),
  };
}

function bunDb(client: Client, max: number): Db {
  const common = { hostname: host, port, username: "postgres", database: "postgres", max };
  const sql = client === "plain"
    ? new BunSQL!({ ...common, tls: { ca, serverName: "localhost", rejectUnauthorized: true } })
    : iamSql({ ...common, ...iamOptions });
  // sql(name) and sql(rows, ...columns): Bun's identifier and insert helpers.
  const helper = sql as unknown as (...args: unknown[]) => unknown;
  return {
    // Reserves `count` connections at once: queries issued at once may share a connection.
    backends: async (count) => {
      const reserved = await Promise.all(Array.from({ length: count }, () => sql.reserve()));
      try {
        return await Promise.all(
          reserved.map(async (r) =>
            (await r`select pid, ssl, version, cipher from pg_stat_ssl where pid = pg_backend_pid()`)[
              0
            ] as Backend
          ),
        );
      } finally {
        for (const r of reserved) r.release();
      }
    },
    sequential: async (n) => {
      for (let i = 0; i < n; i++) await sql`select 1`;
    },
    pipelined: async (n) => {
      const results = await Promise.all(
        Array.from({ length: n }, (_, i) => sql`select ${i}::int as i`),
      );
      let sum = 0;
      for (const [r] of results) sum += r.i;
      return sum;
    },
    result: async (rows, width) => {
      const result = await sql`
        select repeat('x', ${width}::int) as s from generate_series(1, ${rows}::int)`;
      let chars = 0;
      for (const r of result) chars += r.s.length;
      return chars;
    },
    insert: async (table, data, batch) => {
      for (let at = 0; at < data.length; at += batch) {
        await sql`insert into ${helper(table)} ${helper(data.slice(at, at + batch), "id", "s")}`;
      }
    },
    exec: (text) => sql.unsafe(text),
    end: () => sql.close(),
  };
}

const connect = { postgres: postgresDb, pg: pgDb, bun: bunDb }[driverName];

const tlsSeen = new Set<string>();

/**
 * Makes sure `count` connections are open, and checks that they are as many backends, all over
 * TLS.
 */
async function fill(db: Db, client: Client, count: number): Promise<void> {
  const rows = await db.backends(count);
  const pids = new Set(rows.map((r) => r.pid));
  for (const r of rows) {
    if (!r.ssl) throw new Error(`${client}: connection ${r.pid} is not TLS`);
    tlsSeen.add(`${client} ${r.version} ${r.cipher}`);
  }
  if (pids.size !== count) throw new Error(`${client}: ${pids.size} backends, not ${count}`);
}

async function open(client: Client, max: number): Promise<Db> {
  const db = connect(client, max);
  await fill(db, client, max);
  return db;
}

const sample = () => {
  collect();
  const m = process.memoryUsage();
  return { heap: m.heapUsed + m.external, rss: m.rss };
};

// (e) measures in fresh processes: in a long-lived one, memory freed by an earlier pool is reused
// by the next, and RSS hardly moves. The child opens 2 connections first (loading and compiling
// the client's code), then grows the pool to MEMORY_POOL; it prints the growth per connection.
const memoryChild = arg("--memory-child") as Client | undefined;
if (memoryChild) {
  const db = connect(memoryChild, MEMORY_POOL);
  await fill(db, memoryChild, 2);
  const before = sample();
  await fill(db, memoryChild, MEMORY_POOL);
  const after = sample();
  const per = (k: "heap" | "rss") => (after[k] - before[k]) / (MEMORY_POOL - 2);
  console.log("MEMORY_JSON " + JSON.stringify({ heap: per("heap"), rss: per("rss") }));
  process.exit(0);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

interface Timed {
  wall: Record<Client, number[]>;
  cpu: Record<Client, number[]>;
}

/**
 * Runs `work` on each client for one untimed warm-up round, then `n` timed rounds, alternating
 * which client goes first. `prepare` (untimed) runs before each run.
 */
async function timed(
  n: number,
  pools: Record<Client, Db>,
  work: (db: Db, client: Client) => Promise<void>,
  prepare: (db: Db, client: Client) => Promise<void> = async () => {},
): Promise<Timed> {
  const out: Timed = { wall: { plain: [], iam: [] }, cpu: { plain: [], iam: [] } };
  for (let round = 0; round <= n; round++) {
    for (const client of round % 2 ? [...CLIENTS].reverse() : CLIENTS) {
      await prepare(pools[client], client);
      collect(); // the other client's garbage is not collected on this one's time
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await work(pools[client], client);
      const wall = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      if (round === 0) continue; // warm-up
      out.wall[client].push(wall);
      out.cpu[client].push((cpu.user + cpu.system) / 1000);
    }
  }
  return out;
}

async function withPools<T>(
  max: number,
  body: (pools: Record<Client, Db>) => Promise<T>,
): Promise<T> {
  const pools = { plain: await open("plain", max), iam: await open("iam", max) };
  try {
    return await body(pools);
  } finally {
    await Promise.all(CLIENTS.map((c) => pools[c].end()));
  }
}

interface Row {
  name: string;
  rounds: number;
  wall: Record<Client, number>;
  cpu: Record<Client, number>;
  wallRatio: number;
  cpuRatio: number;
  samples: Timed; // every round, in order (in the --json output)
}

function summarize(name: string, t: Timed): Row {
  const ratios = (xs: Record<Client, number[]>) => median(xs.iam.map((v, i) => v / xs.plain[i]));
  return {
    name,
    rounds: t.wall.plain.length,
    wall: { plain: median(t.wall.plain), iam: median(t.wall.iam) },
    cpu: { plain: median(t.cpu.plain), iam: median(t.cpu.iam) },
    wallRatio: ratios(t.wall),
    cpuRatio: ratios(t.cpu),
    samples: t,
  };
}

const rows: Row[] = [];
const log = (message: string) =>
  process.stderr.write(`[steady ${runtime} ${names.driver}] ${message}\n`);

if (CASES.includes("a")) {
  log("(a) sequential");
  const t = await withPools(1, (pools) =>
    timed(rounds(15, 3), pools, async (db) => {
      await db.sequential(SEQUENTIAL);
    }));
  rows.push(summarize(`(a) ${SEQUENTIAL.toLocaleString("en-US")} sequential select 1, 1 conn`, t));
}

if (CASES.includes("b")) {
  log("(b) pipelined");
  const t = await withPools(PIPELINE_POOL, (pools) =>
    timed(rounds(15, 3), pools, async (db) => {
      const sum = await db.pipelined(PIPELINED);
      if (sum !== PIPELINED * (PIPELINED - 1) / 2) throw new Error(`(b): wrong sum ${sum}`);
    }));
  rows.push(
    summarize(
      `(b) ${PIPELINED.toLocaleString("en-US")} select $1 at once, ${PIPELINE_POOL} conns`,
      t,
    ),
  );
}

if (CASES.includes("c")) {
  log("(c) 40 MB result");
  const t = await withPools(1, (pools) =>
    timed(rounds(7, 2), pools, async (db) => {
      const chars = await db.result(RESULT_ROWS, RESULT_WIDTH);
      if (chars !== RESULT_ROWS * RESULT_WIDTH) throw new Error(`(c): got ${chars} bytes`);
    }));
  rows.push(summarize(`(c) 40 MB result (${RESULT_ROWS.toLocaleString("en-US")} rows), 1 conn`, t));
}

if (CASES.includes("d")) {
  log("(d) 20 MB insert");
  // The same rows for both clients, built once; each client gets its own unlogged table.
  const text = "y".repeat(INSERT_WIDTH - 6);
  const data = Array.from({ length: INSERT_ROWS }, (_, i) => ({
    id: i,
    s: text + String(i).padStart(6, "0"),
  }));
  const table = (client: Client) => `steady_insert_${client}`;
  const t = await withPools(1, async (pools) => {
    for (const client of CLIENTS) {
      await pools[client].exec(`drop table if exists ${table(client)}`);
      await pools[client].exec(`create unlogged table ${table(client)} (id int, s text)`);
    }
    const result = await timed(
      rounds(7, 2),
      pools,
      (db, client) => db.insert(table(client), data, INSERT_BATCH),
      async (db, client) => void await db.exec(`truncate ${table(client)}`),
    );
    for (const client of CLIENTS) {
      const [{ n, bytes }] = await pools[client].exec(
        `select count(*)::int as n, sum(length(s))::int as bytes from ${table(client)}`,
      );
      if (n !== INSERT_ROWS || bytes !== INSERT_ROWS * INSERT_WIDTH) {
        throw new Error(`(d): ${client}'s table has ${n} rows, ${bytes} bytes`);
      }
      await pools[client].exec(`drop table ${table(client)}`);
    }
    return result;
  });
  rows.push(
    summarize(
      `(d) 20 MB insert (${INSERT_ROWS.toLocaleString("en-US")} rows, ` +
        `${INSERT_ROWS / INSERT_BATCH} statements), 1 conn`,
      t,
    ),
  );
}

interface Memory {
  rounds: number;
  pool: number;
  heap: Record<Client, number>;
  rss: Record<Client, number>;
}
let memory: Memory | undefined;

if (CASES.includes("e")) {
  log("(e) memory per connection");
  const n = rounds(5, 2);
  const heap: Record<Client, number[]> = { plain: [], iam: [] };
  const rss: Record<Client, number[]> = { plain: [], iam: [] };
  const script = fileURLToPath(import.meta.url);
  // The same postgres.js major as this process: tsx follows the inherited environment, Deno and
  // Bun need their remapping flags again.
  const [cmd, pre] = "Deno" in globalThis
    ? [process.execPath, [
      "run",
      "-A",
      "--quiet",
      "--v8-flags=--expose-gc",
      ...childRuntimeArgs("deno"),
    ]]
    : "Bun" in globalThis
    ? [process.execPath, childRuntimeArgs("bun")]
    : [process.execPath, process.execArgv]; // Node: tsx's loader flags and --expose-gc
  for (let round = 0; round < n; round++) {
    for (const client of round % 2 ? [...CLIENTS].reverse() : CLIENTS) {
      const out = execFileSync(
        cmd,
        [...pre, script, "--driver", driverName, "--memory-child", client],
        {
          encoding: "utf8",
          env: { ...process.env, PGIAM_BENCH_PG: `${host}:${port}` },
          stdio: ["ignore", "pipe", "inherit"],
        },
      );
      const line = out.split("\n").find((l) => l.startsWith("MEMORY_JSON "));
      if (!line) throw new Error(`(e): no measurement from the ${client} child:\n${out}`);
      const m = JSON.parse(line.slice("MEMORY_JSON ".length));
      heap[client].push(m.heap);
      rss[client].push(m.rss);
    }
  }
  memory = {
    rounds: n,
    pool: MEMORY_POOL,
    heap: { plain: median(heap.plain), iam: median(heap.iam) },
    rss: { plain: median(rss.plain), iam: median(rss.iam) },
  };
}

const ms = (n: number) => n.toFixed(1);
const kb = (n: number) => (n / 1024).toFixed(1);
const lines = [
  `### ${runtime}: ${names.iam} vs plain ${names.driver}${
    driverName === "postgres" ? ` ${loadedMajor}` : ""
  }, steady state over TLS`,
  "",
  `TLS seen: ${[...tlsSeen].sort().join("; ") || "(checked in the memory children)"}.`,
  "",
  "| case | rounds | plain wall ms | iam wall ms | wall iam/plain | plain CPU ms | iam CPU ms " +
  "| CPU iam/plain |",
  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ...rows.map((r) =>
    `| ${r.name} | ${r.rounds} | ${ms(r.wall.plain)} | ${ms(r.wall.iam)} | ` +
    `${r.wallRatio.toFixed(3)} | ${ms(r.cpu.plain)} | ${ms(r.cpu.iam)} | ${r.cpuRatio.toFixed(3)} |`
  ),
];
if (memory) {
  lines.push(
    "",
    `(e) memory per open connection: growth from 2 to ${MEMORY_POOL} open connections in a ` +
      `fresh process, per connection, median of ${memory.rounds} processes per client` +
      `${hasGc ? " (after a full GC)" : " (no GC available: noisier)"}:`,
    "",
    "| client | heapUsed + external KB / conn | RSS KB / conn |",
    "| --- | ---: | ---: |",
    ...CLIENTS.map((c) => `| ${c} | ${kb(memory!.heap[c])} | ${kb(memory!.rss[c])} |`),
  );
}
console.log(lines.join("\n"));
if (process.argv.includes("--json")) {
  console.log(
    "BENCH_JSON " +
      JSON.stringify({
        runtime,
        driver: driverName,
        driverName: names.driver,
        postgresMajor: loadedMajor,
        iamName: names.iam,
        tls: [...tlsSeen],
        rows,
        memory,
        hasGc,
      }),
  );
}
process.exit(0);
