// Steady-state cost of iamPostgres() against plain postgres.js, after login: the same real
// PostgreSQL, both over verified TLS (the test CA, server name `localhost`), every connection
// opened before timing. The server uses trust authentication, so the IAM token pg-iam signs per
// connection is never checked; what is measured is what pg-iam's socket adds to every query after
// login, against postgres.js's own TLS socket.
//
//   node_modules/.bin/tsx --expose-gc bench/steady.ts [--rounds N] [--quick] [--cases a,b,c,d,e]
//   node_modules/.bin/deno run -A --v8-flags=--expose-gc bench/steady.ts ...
//   node_modules/.bin/bun bench/steady.ts ...
//   (all three in turn: node bench/steady.mjs)
//
// Cases: (a) sequential `select 1` on one connection; (b) small queries pipelined over 10
// connections; (c) a 40 MB result; (d) a 20 MB multi-row insert into an unlogged table; (e) memory
// per open connection. Rounds alternate which client goes first; the report gives medians and the
// median of the per-round ratios iam/plain. CPU is process.cpuUsage() (user + system, all threads).
//
// The server: one started here (tests/_postgres_server.mjs, with the test certificate), or
// PGIAM_BENCH_PG=host:port (TLS with that certificate, trust auth for `postgres`; the memory
// children get their parent's this way). --json also prints one `BENCH_JSON {...}` line.

import { execFileSync } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { iamPostgres } from "../src/postgres/mod.ts";
import { startPostgres } from "../tests/_postgres_server.mjs";
import { ca, cert, key } from "../tests/fixtures/tls.ts";

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
const INSERT_BATCH = 20_000; // 40,000 parameters a statement; postgres.js allows 65,534
const MEMORY_POOL = 50; // (e)

const runtime = "Deno" in globalThis
  ? `Deno ${(globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno}`
  : "Bun" in globalThis
  ? `Bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`
  : `Node ${process.versions.node}`;

const g = globalThis as { Bun?: { gc(sync: boolean): void }; gc?: () => void };
const hasGc = Boolean(g.Bun || g.gc);
const collect = g.Bun ? () => g.Bun!.gc(true) : g.gc ?? (() => {});

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
const common = { host, port, user: "postgres", database: "postgres", onnotice: () => {} };

function connect(client: Client, max: number): postgres.Sql {
  if (client === "plain") return postgres({ ...common, max, ssl: { ca, servername: "localhost" } });
  return iamPostgres({
    ...common,
    max,
    signingHostname: "localhost",
    region: "us-east-1",
    credentials: { accessKeyId: "AKIDBENCH", secretAccessKey: "bench/secret/key" },
    ssl: { ca },
  }) as unknown as postgres.Sql;
}

const tlsSeen = new Set<string>();

/**
 * Runs `count` queries at once, which opens connections up to `count` (postgres.js opens a new
 * one while none is idle), and checks that they ran on as many backends, all over TLS.
 */
async function fill(sql: postgres.Sql, client: Client, count: number): Promise<void> {
  const rows = await Promise.all(
    Array.from(
      { length: count },
      () => sql`select pid, ssl, version, cipher from pg_stat_ssl where pid = pg_backend_pid()`,
    ),
  );
  const pids = new Set(rows.map(([r]) => r.pid));
  for (const [r] of rows) {
    if (!r.ssl) throw new Error(`${client}: connection ${r.pid} is not TLS`);
    tlsSeen.add(`${client} ${r.version} ${r.cipher}`);
  }
  if (pids.size !== count) throw new Error(`${client}: ${pids.size} backends, not ${count}`);
}

async function open(client: Client, max: number): Promise<postgres.Sql> {
  const sql = connect(client, max);
  await fill(sql, client, max);
  return sql;
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
  const sql = connect(memoryChild, MEMORY_POOL);
  await fill(sql, memoryChild, 2);
  const before = sample();
  await fill(sql, memoryChild, MEMORY_POOL);
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
  pools: Record<Client, postgres.Sql>,
  work: (sql: postgres.Sql) => Promise<void>,
  prepare: (sql: postgres.Sql, client: Client) => Promise<void> = async () => {},
): Promise<Timed> {
  const out: Timed = { wall: { plain: [], iam: [] }, cpu: { plain: [], iam: [] } };
  for (let round = 0; round <= n; round++) {
    for (const client of round % 2 ? [...CLIENTS].reverse() : CLIENTS) {
      await prepare(pools[client], client);
      collect(); // the other client's garbage is not collected on this one's time
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await work(pools[client]);
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
  body: (pools: Record<Client, postgres.Sql>) => Promise<T>,
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
const log = (message: string) => process.stderr.write(`[steady ${runtime}] ${message}\n`);

if (CASES.includes("a")) {
  log("(a) sequential");
  const t = await withPools(1, (pools) =>
    timed(rounds(15, 3), pools, async (sql) => {
      for (let i = 0; i < SEQUENTIAL; i++) await sql`select 1`;
    }));
  rows.push(summarize(`(a) ${SEQUENTIAL.toLocaleString("en-US")} sequential select 1, 1 conn`, t));
}

if (CASES.includes("b")) {
  log("(b) pipelined");
  const t = await withPools(PIPELINE_POOL, (pools) =>
    timed(rounds(15, 3), pools, async (sql) => {
      const results = await Promise.all(
        Array.from({ length: PIPELINED }, (_, i) => sql`select ${i}::int as i`),
      );
      let sum = 0;
      for (const [r] of results) sum += r.i;
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
    timed(rounds(7, 2), pools, async (sql) => {
      const result = await sql`
        select repeat('x', ${RESULT_WIDTH}::int) as s from generate_series(1, ${RESULT_ROWS}::int)`;
      let bytes = 0;
      for (const r of result) bytes += r.s.length;
      if (bytes !== RESULT_ROWS * RESULT_WIDTH) throw new Error(`(c): got ${bytes} bytes`);
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
      const sql = pools[client];
      await sql`drop table if exists ${sql(table(client))}`;
      await sql`create unlogged table ${sql(table(client))} (id int, s text)`;
    }
    const current = { table: "" };
    const result = await timed(
      rounds(7, 2),
      pools,
      async (sql) => {
        for (let at = 0; at < data.length; at += INSERT_BATCH) {
          await sql`insert into ${sql(current.table)} ${
            sql(data.slice(at, at + INSERT_BATCH), "id", "s")
          }`;
        }
      },
      async (sql, client) => {
        current.table = table(client);
        await sql`truncate ${sql(current.table)}`;
      },
    );
    for (const client of CLIENTS) {
      const sql = pools[client];
      const [{ n, bytes }] = await sql`
        select count(*)::int as n, sum(length(s))::int as bytes from ${sql(table(client))}`;
      if (n !== INSERT_ROWS || bytes !== INSERT_ROWS * INSERT_WIDTH) {
        throw new Error(`(d): ${client}'s table has ${n} rows, ${bytes} bytes`);
      }
      await sql`drop table ${sql(table(client))}`;
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
  const [cmd, pre] = "Deno" in globalThis
    ? [process.execPath, ["run", "-A", "--quiet", "--v8-flags=--expose-gc"]]
    : [process.execPath, process.execArgv]; // Node: tsx's loader flags and --expose-gc; Bun: none
  for (let round = 0; round < n; round++) {
    for (const client of round % 2 ? [...CLIENTS].reverse() : CLIENTS) {
      const out = execFileSync(cmd, [...pre, script, "--memory-child", client], {
        encoding: "utf8",
        env: { ...process.env, PGIAM_BENCH_PG: `${host}:${port}` },
        stdio: ["ignore", "pipe", "inherit"],
      });
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
  `### ${runtime}: iamPostgres vs plain postgres.js, steady state over TLS`,
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
  console.log("BENCH_JSON " + JSON.stringify({ runtime, tls: [...tlsSeen], rows, memory, hasGc }));
}
process.exit(0);
