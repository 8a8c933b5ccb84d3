// What `pg-iam proxy` costs: a plain client through startProxy() (no password, no TLS, loopback)
// to the IAM gateway, against the same driver's IAM integration straight at that gateway; and, in
// the same run, PgBouncer (Debian's) as the reference relay: the plain client through PgBouncer
// against the plain client straight at PostgreSQL. Each relay adds one hop over its baseline:
//
//   iam       driver (iamPostgres / iamPool) --TLS, token--> gateway --> PostgreSQL
//   proxy     plain driver --> proxy --TLS, token--> gateway --> PostgreSQL
//   pg        plain driver --> PostgreSQL                        (the floor)
//   pgbouncer plain driver --> PgBouncer --> PostgreSQL
//
// so the proxy's cost is proxy/iam, PgBouncer's is pgbouncer/pg. The gateway (bench/_proxy_child.ts
// on Node) and each proxy (the same file on Node, Deno or Bun) run in their own processes, so the
// client's CPU is the client's alone; theirs is process.cpuUsage() asked of them around each run,
// PgBouncer's is read from /proc/<pid>/schedstat (it has one thread). PostgreSQL uses trust
// authentication; the gateway verifies every token (SigV4, the test keys).
//
//   node_modules/.bin/tsx --expose-gc bench/proxy.ts [--driver postgres|pg]
//     [--proxy-runtimes node,deno,bun] [--rounds N] [--quick] [--cases a,b,c,d,e] [--no-tls]
//     [--json]
//   (the client on Deno or Bun: node_modules/.bin/deno run -A --v8-flags=--expose-gc
//   bench/proxy.ts ..., node_modules/.bin/bun bench/proxy.ts ...)
//
// Cases: (a) sequential `select 1` on one connection; (b) small queries issued at once on one
// connection (postgres.js pipelines them; node-postgres queues them); (c) a large result (100,000
// rows of text); (d) multi-row inserts of 1 MB each into an unlogged table; (e) connect cost: a
// new connection and its first query, one after another (timed up to the first query's answer;
// the close, awaited before the next, only in the CPU times). One
// untimed warm-up round, then rounds rotating which client goes first; medians of each client's
// runs, and the median of the per-round ratios. Nothing is asserted on timings.
//
// --no-tls: the gateway without TLS, iam and the proxies to it in plaintext (dangerouslyDisableTls),
// to tell what TLS costs from what the hop costs; never a setup to use, tokens cross in plaintext.
//
// PostgreSQL: PGIAM_TEST_PG=host:port (trust auth), or one started here (tests/_postgres.ts).

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { createInterface, type Interface } from "node:readline";
import { fileURLToPath } from "node:url";
import pg from "pg";
import postgres from "postgres";
import { iamPostgres } from "../src/postgres/mod.ts";
import { iamPool } from "../src/pg/mod.ts";
import { startPgbouncer } from "../tests/_pgbouncer.ts";
import { upstreamPostgres } from "../tests/_postgres.ts";
import { ca } from "../tests/fixtures/tls.ts";
import { CREDENTIALS, ENDPOINT } from "./_proxy_child.ts";

const arg = (name: string): string | undefined => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : undefined;
};
const quick = process.argv.includes("--quick");
const roundsArg = arg("--rounds");
const rounds = (full: number, short: number) =>
  roundsArg ? Number(roundsArg) : quick ? short : full;
const CASES = (arg("--cases") ?? "a,b,c,d,e").split(",").map((c) => c.trim());
const RUNTIMES = (arg("--proxy-runtimes") ?? "node").split(",").map((r) => r.trim());
for (const r of RUNTIMES) {
  if (!["node", "deno", "bun"].includes(r)) {
    throw new Error(`unknown --proxy-runtimes entry ${r}: use node, deno, bun`);
  }
}
const noTls = process.argv.includes("--no-tls");
const plain = noTls ? ["plain"] : [];
const driverName = arg("--driver") ?? "postgres";
if (driverName !== "postgres" && driverName !== "pg") {
  throw new Error(`unknown --driver ${driverName}: use postgres or pg`);
}

const SEQUENTIAL = 2_000; // (a)
const PIPELINED = 10_000; // (b)
const RESULT_ROWS = 100_000; // (c): 100,000 rows of (int, 100 characters), about 10.5 MB as text
const RESULT_WIDTH = 100;
const INSERT_ROWS = 5_000; // (d): 5,000 rows of (int, 200 characters) = 1 MB a statement
const INSERT_WIDTH = 200;
const INSERT_STATEMENTS = 4;
const CONNECTS = 20; // (e)

const runtime = "Deno" in globalThis
  ? `Deno ${(globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno}`
  : "Bun" in globalThis
  ? `Bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`
  : `Node ${process.versions.node}`;
const g = globalThis as { Bun?: { gc(sync: boolean): void }; gc?: () => void };
const collect = g.Bun ? () => g.Bun!.gc(true) : g.gc ?? (() => {});
const log = (message: string) => process.stderr.write(`[proxy bench] ${message}\n`);

// ---- the relays ----

/** A relay of _proxy_child.ts in its own process, asked for its CPU time over stdin. */
interface Child {
  host: string;
  port: number;
  runtime: string;
  cpuMs(): Promise<number>;
  stats(): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

const here = fileURLToPath(new URL(".", import.meta.url));
const bin = (name: string) => join(here, "..", "node_modules", ".bin", name);
const CHILD = join(here, "_proxy_child.ts");
const COMMANDS: Record<string, [string, string[]]> = {
  // Node itself with tsx's loader (not the tsx wrapper, which would add a process in between).
  node: ["node", ["--import", "tsx", CHILD]],
  deno: [bin("deno"), ["run", "-A", "--quiet", CHILD]],
  bun: [bin("bun"), [CHILD]],
};

async function startChild(on: string, args: string[]): Promise<Child> {
  const [cmd, pre] = COMMANDS[on];
  const child: ChildProcess = spawn(cmd, [...pre, ...args], {
    cwd: join(here, ".."),
    stdio: ["pipe", "pipe", "inherit"],
  });
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  const lines: Interface = createInterface({ input: child.stdout! });
  const waiting: ((line: string) => void)[] = [];
  const early: string[] = [];
  lines.on("line", (line) => {
    const next = waiting.shift();
    if (next) next(line);
    else early.push(line);
  });
  const nextLine = () =>
    new Promise<string>((resolve, reject) => {
      const line = early.shift();
      if (line !== undefined) return resolve(line);
      waiting.push(resolve);
      exited.then(() => reject(new Error(`the ${on} ${args[0]} exited`)));
    });
  const ask = async (what: string, prefix: string) => {
    child.stdin!.write(what + "\n");
    const line = await nextLine();
    if (!line.startsWith(prefix + " ")) throw new Error(`${on} ${args[0]}: ${line}`);
    return JSON.parse(line.slice(prefix.length + 1));
  };
  const ready = await nextLine();
  if (!ready.startsWith("READY ")) throw new Error(`${on} ${args[0]} did not start: ${ready}`);
  const info = JSON.parse(ready.slice(6));
  return {
    host: info.host,
    port: info.port,
    runtime: info.runtime,
    cpuMs: async () => {
      const { user, system } = await ask("cpu", "CPU");
      return (user + system) / 1000;
    },
    stats: () => ask("stats", "STATS"),
    close: async () => {
      child.stdin!.end();
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** CPU time of every thread of a process, in ms, from the scheduler's nanosecond counters. */
function schedCpuMs(pid: number): number {
  let ns = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    ns += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ")[0]);
  }
  return ns / 1e6;
}

const dir = mkdtempSync(join(tmpdir(), "pg-iam-bench-proxy-"));
const CA_FILE = join(dir, "ca.pem");
writeFileSync(CA_FILE, ca);

const up = await upstreamPostgres();
log(`PostgreSQL at ${up.host}:${up.port}; starting the gateway, PgBouncer, the proxies`);
const gateway = await startChild("node", ["gateway", up.host, String(up.port), up.user, ...plain]);
const bouncer = await startPgbouncer(
  { host: up.host, port: up.port, user: up.user, database: "postgres" },
  { poolSize: 20, maxClientConn: 1000 },
);
const proxies: Record<string, Child> = {};
for (const r of RUNTIMES) {
  proxies[r] = await startChild(r, ["proxy", String(gateway.port), CA_FILE, ...plain]);
}

let cleaned = false;
async function cleanup(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  await Promise.all([...Object.values(proxies), gateway].map((c) => c.close()));
  await bouncer.close();
  rmSync(dir, { recursive: true, force: true });
}

// ---- the clients ----

type Kind = "pg" | "pgbouncer" | "iam" | `proxy-${string}`;
const KINDS: Kind[] = ["pg", "pgbouncer", "iam", ...RUNTIMES.map((r) => `proxy-${r}` as Kind)];
const TLS = noTls ? "no TLS" : "TLS";
const LABEL: Record<string, string> = {
  pg: "plain → PostgreSQL",
  pgbouncer: "plain → PgBouncer → PostgreSQL",
  iam: `${driverName === "pg" ? "iamPool" : "iamPostgres"} → gateway (${TLS}) → PostgreSQL`,
};
for (const r of RUNTIMES) {
  LABEL[`proxy-${r}`] = `plain → proxy (${r}) → gateway (${TLS}) → PostgreSQL`;
}

/** Where a plain client connects for `kind` (iam goes to the gateway with TLS and a token). */
function address(kind: Kind): { host: string; port: number } {
  if (kind === "pg") return { host: up.host, port: up.port };
  if (kind === "pgbouncer") return { host: bouncer.host, port: bouncer.port };
  if (kind === "iam") return { host: gateway.host, port: gateway.port };
  const p = proxies[kind.slice("proxy-".length)];
  return { host: p.host, port: p.port };
}

/** The relays each client's bytes cross, for their CPU time. */
const RELAYS: Record<string, { relay?: () => Promise<number>; gateway?: boolean }> = {
  pg: {},
  pgbouncer: { relay: () => Promise.resolve(schedCpuMs(bouncer.pid)) },
  iam: { gateway: true },
};
for (const r of RUNTIMES) RELAYS[`proxy-${r}`] = { relay: () => proxies[r].cpuMs(), gateway: true };

interface Db {
  sequential(n: number): Promise<void>;
  pipelined(n: number): Promise<number>;
  result(rows: number, width: number): Promise<number>;
  insert(table: string, data: { id: number; s: string }[]): Promise<void>;
  // deno-lint-ignore no-explicit-any
  exec(text: string): Promise<any[]>;
  end(): Promise<void>;
}

const iamOptions = {
  signingHostname: ENDPOINT,
  signingPort: 5432,
  credentials: CREDENTIALS,
  ...(noTls ? { ssl: false, dangerouslyDisableTls: true } : { ssl: { ca } }),
};

function postgresDb(kind: Kind): Db {
  const common = { ...address(kind), user: up.user, database: "postgres", max: 1 };
  const sql = kind === "iam"
    ? iamPostgres({ ...common, ...iamOptions, onnotice: () => {} }) as unknown as postgres.Sql
    : postgres({ ...common, ssl: false, onnotice: () => {} });
  return {
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
        select i, repeat('x', ${width}::int) as s from generate_series(1, ${rows}::int) i`;
      let chars = 0;
      for (const r of result) chars += r.s.length;
      return chars;
    },
    insert: async (table, data) => {
      await sql`insert into ${sql(table)} ${sql(data, "id", "s")}`;
    },
    exec: (text) => sql.unsafe(text),
    end: () => sql.end(),
  };
}

function pgDb(kind: Kind): Db {
  const common = { ...address(kind), user: up.user, database: "postgres", max: 1 };
  const pool = kind === "iam"
    ? iamPool({ ...common, ...iamOptions })
    : new pg.Pool({ ...common, ssl: false });
  const insertText = (table: string, rows: number) =>
    `insert into ${table} (id, s) values ${
      Array.from({ length: rows }, (_, i) => `($${2 * i + 1}, $${2 * i + 2})`).join(", ")
    }`;
  return {
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
        "select i, repeat('x', $1::int) as s from generate_series(1, $2::int) i",
        [width, rows],
      );
      let chars = 0;
      for (const r of result) chars += r.s.length;
      return chars;
    },
    insert: async (table, data) => {
      const values: unknown[] = [];
      for (const r of data) values.push(r.id, r.s);
      await pool.query(insertText(table, data.length), values);
    },
    exec: async (text) => (await pool.query(text)).rows,
    end: () => pool.end(),
  };
}

const connect = driverName === "pg" ? pgDb : postgresDb;

/** Opens a client of `kind` and checks where it landed: a backend, and TLS only for iam. */
async function open(kind: Kind): Promise<Db> {
  const db = connect(kind);
  const [{ ssl }] = await db.exec(
    "select coalesce((select ssl from pg_stat_ssl " +
      "where pid = pg_backend_pid()), false) as ssl",
  );
  if (ssl) throw new Error(`${kind}: PostgreSQL sees TLS, but every hop to it is plain`);
  return db;
}

// ---- timing ----

interface Sample {
  wall: number;
  client: number;
  relay: number;
  gateway: number;
}
type Timed = Record<string, Sample[]>;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

/**
 * One untimed warm-up round, then `n` rounds of `work` on every client, the first client of each
 * round rotating. `prepare` (untimed) runs before each run.
 */
async function timed(
  n: number,
  dbs: Record<string, Db> | undefined,
  work: (db: Db | undefined, kind: Kind) => Promise<number | void>,
  prepare: (db: Db | undefined, kind: Kind) => Promise<void> = async () => {},
): Promise<Timed> {
  const out: Timed = Object.fromEntries(KINDS.map((k) => [k, []]));
  for (let round = 0; round <= n; round++) {
    const order = KINDS.map((_, i) => KINDS[(i + round) % KINDS.length]);
    for (const kind of order) {
      const db = dbs?.[kind];
      await prepare(db, kind);
      collect();
      const relays = RELAYS[kind];
      const relay0 = await relays.relay?.() ?? 0;
      const gateway0 = relays.gateway ? await gateway.cpuMs() : 0;
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const timedPart = await work(db, kind);
      const wall = timedPart ?? performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      const gatewayMs = relays.gateway ? await gateway.cpuMs() - gateway0 : 0;
      const relayMs = (await relays.relay?.() ?? 0) - relay0;
      if (round === 0) continue;
      out[kind].push({
        wall,
        client: (cpu.user + cpu.system) / 1000,
        relay: relayMs,
        gateway: gatewayMs,
      });
    }
  }
  return out;
}

async function withClients<T>(body: (dbs: Record<string, Db>) => Promise<T>): Promise<T> {
  const dbs: Record<string, Db> = {};
  for (const kind of KINDS) dbs[kind] = await open(kind);
  try {
    return await body(dbs);
  } finally {
    await Promise.all(Object.values(dbs).map((db) => db.end()));
  }
}

interface Row {
  name: string;
  /** How many operations a run does (the per-operation columns divide by it). */
  ops: number;
  rounds: number;
  samples: Timed;
}
const rows: Row[] = [];

try {
  if (CASES.includes("a")) {
    log("(a) sequential");
    const samples = await withClients((dbs) =>
      timed(rounds(11, 3), dbs, (db) => db!.sequential(SEQUENTIAL))
    );
    rows.push({
      name: `(a) ${SEQUENTIAL.toLocaleString("en-US")} sequential select 1`,
      ops: SEQUENTIAL,
      rounds: rounds(11, 3),
      samples,
    });
  }

  if (CASES.includes("b")) {
    log("(b) pipelined");
    const samples = await withClients((dbs) =>
      timed(rounds(11, 3), dbs, async (db, kind) => {
        const sum = await db!.pipelined(PIPELINED);
        if (sum !== PIPELINED * (PIPELINED - 1) / 2) throw new Error(`(b) ${kind}: sum ${sum}`);
      })
    );
    rows.push({
      name: `(b) ${PIPELINED.toLocaleString("en-US")} select $1 at once, 1 conn`,
      ops: PIPELINED,
      rounds: rounds(11, 3),
      samples,
    });
  }

  if (CASES.includes("c")) {
    log("(c) large result");
    const samples = await withClients((dbs) =>
      timed(rounds(9, 2), dbs, async (db, kind) => {
        const chars = await db!.result(RESULT_ROWS, RESULT_WIDTH);
        if (chars !== RESULT_ROWS * RESULT_WIDTH) throw new Error(`(c) ${kind}: ${chars}`);
      })
    );
    rows.push({
      name: `(c) ${RESULT_ROWS.toLocaleString("en-US")} rows × ${RESULT_WIDTH} chars result`,
      ops: 1,
      rounds: rounds(9, 2),
      samples,
    });
  }

  if (CASES.includes("d")) {
    log("(d) inserts");
    const text = "y".repeat(INSERT_WIDTH - 6);
    const data = Array.from({ length: INSERT_ROWS }, (_, i) => ({
      id: i,
      s: text + String(i).padStart(6, "0"),
    }));
    const table = (kind: Kind) => `bench_proxy_${kind.replace("-", "_")}`;
    const samples = await withClients(async (dbs) => {
      for (const kind of KINDS) {
        await dbs[kind].exec(`drop table if exists ${table(kind)}`);
        await dbs[kind].exec(`create unlogged table ${table(kind)} (id int, s text)`);
      }
      const result = await timed(
        rounds(9, 2),
        dbs,
        async (db, kind) => {
          for (let i = 0; i < INSERT_STATEMENTS; i++) await db!.insert(table(kind), data);
        },
        async (db, kind) => void await db!.exec(`truncate ${table(kind)}`),
      );
      for (const kind of KINDS) {
        const [{ n, bytes }] = await dbs[kind].exec(
          `select count(*)::int as n, sum(length(s))::int as bytes from ${table(kind)}`,
        );
        const rowsIn = INSERT_ROWS * INSERT_STATEMENTS;
        if (n !== rowsIn || bytes !== rowsIn * INSERT_WIDTH) {
          throw new Error(`(d) ${kind}: ${n} rows, ${bytes} bytes`);
        }
        await dbs[kind].exec(`drop table ${table(kind)}`);
      }
      return result;
    });
    rows.push({
      name: `(d) ${INSERT_STATEMENTS} inserts of 1 MB (${
        INSERT_ROWS.toLocaleString("en-US")
      } rows)`,
      ops: INSERT_STATEMENTS,
      rounds: rounds(9, 2),
      samples,
    });
  }

  if (CASES.includes("e")) {
    log("(e) connect");
    // The wall time is the opening and first query only: a plain PostgreSQL backend takes
    // milliseconds to exit after the client's Terminate, which a client waiting for the socket to
    // close would count against the floor but not against a relay (which closes on the client's
    // end). The CPU times cover the closes too.
    const samples = await timed(rounds(9, 2), undefined, async (_, kind) => {
      let wall = 0;
      for (let i = 0; i < CONNECTS; i++) {
        const t0 = performance.now();
        const db = connect(kind);
        await db.sequential(1);
        wall += performance.now() - t0;
        await db.end();
      }
      return wall;
    });
    rows.push({
      name: `(e) ${CONNECTS} connects + select 1, one after another`,
      ops: CONNECTS,
      rounds: rounds(9, 2),
      samples,
    });
  }

  const stats = {
    gateway: await gateway.stats(),
    proxies: Object.fromEntries(
      await Promise.all(RUNTIMES.map(async (r) => [r, await proxies[r].stats()])),
    ),
  };

  // ---- report ----
  const ms = (n: number) => n.toFixed(1);
  const r3 = (n: number) => n.toFixed(3);
  const load = (() => {
    try {
      return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(", ");
    } catch {
      return "unknown";
    }
  })();
  const total = (s: Sample) => s.client + s.relay + s.gateway;
  const ratio = (a: Sample[], b: Sample[], f: (s: Sample) => number) =>
    median(a.map((s, i) => f(s) / f(b[i])));
  const added = (a: Sample[], b: Sample[], f: (s: Sample) => number) =>
    median(a.map((s, i) => f(s) - f(b[i])));
  const lines = [
    `### Client on ${runtime}, ${driverName === "pg" ? "node-postgres" : "postgres.js"}; ` +
    `proxy on ${
      RUNTIMES.map((r) => proxies[r].runtime).join(", ")
    }; gateway on ${gateway.runtime}` +
    (noTls ? "; --no-tls (gateway, iam and proxies in plaintext)" : ""),
    "",
    `Load average at the end: ${load}. Clients: ${
      KINDS.map((k) => `${k} = ${LABEL[k]}`).join("; ")
    }.`,
    "",
    "Medians per run (CPU: client = this process; relay = the proxy or PgBouncer; gateway):",
    "",
    "| case | client | rounds | wall ms | client CPU ms | relay CPU ms | gateway CPU ms |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const row of rows) {
    for (const kind of KINDS) {
      const s = row.samples[kind];
      const m = (f: (s: Sample) => number) => ms(median(s.map(f)));
      lines.push(
        `| ${row.name} | ${kind} | ${s.length} | ${m((x) => x.wall)} | ${m((x) => x.client)} | ` +
          `${RELAYS[kind].relay ? m((x) => x.relay) : "–"} | ` +
          `${RELAYS[kind].gateway ? m((x) => x.gateway) : "–"} |`,
      );
    }
  }
  lines.push(
    "",
    "The hop each relay adds, in the same rounds: medians of per-round ratios (and of per-round " +
      "differences per operation: a query, a 1 MB insert, a connect; for (c) the run). " +
      "Total CPU = client + relay + gateway.",
    "",
    "| case | relay | wall ratio | added wall | client CPU ratio | total CPU ratio | added CPU |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
  );
  for (const row of rows) {
    const pairs: [string, Kind, Kind][] = RUNTIMES.map((
      r,
    ) => [`proxy (${r}) / iam`, `proxy-${r}`, "iam"]);
    pairs.push(["pgbouncer / pg", "pgbouncer", "pg"]);
    // Per operation: µs, or ms from 1 ms on (and always for a one-operation run).
    const per = (n: number) => {
      const us = n * 1000 / row.ops;
      return row.ops > 1 && Math.abs(us) < 1000 ? `${us.toFixed(1)} µs` : `${ms(us / 1000)} ms`;
    };
    for (const [name, a, b] of pairs) {
      const [sa, sb] = [row.samples[a], row.samples[b]];
      lines.push(
        `| ${row.name} | ${name} | ${r3(ratio(sa, sb, (s) => s.wall))} | ` +
          `${per(added(sa, sb, (s) => s.wall))} | ${r3(ratio(sa, sb, (s) => s.client))} | ` +
          `${r3(ratio(sa, sb, total))} | ${per(added(sa, sb, total))} |`,
      );
    }
  }
  const p = (s: Record<string, unknown>) => JSON.stringify({ logins: s.logins, tokens: s.tokens });
  lines.push(
    "",
    `Counters at the end: gateway ${
      JSON.stringify({
        accepted: stats.gateway.accepted,
        rejected: stats.gateway.rejected,
      })
    }; ` +
      RUNTIMES.map((r) => `proxy (${r}) ${p(stats.proxies[r] as Record<string, unknown>)}`).join(
        "; ",
      ) + ".",
  );
  console.log(lines.join("\n"));
  if (process.argv.includes("--json")) {
    console.log("BENCH_JSON " + JSON.stringify({ runtime, driver: driverName, load, rows, stats }));
  }
} finally {
  await cleanup();
}
process.exit(0);
