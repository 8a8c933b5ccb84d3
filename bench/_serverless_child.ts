// One simulated Lambda execution environment for bench/serverless.ts (and tests/serverless.test.ts):
// loads a handler, then runs one invocation per line read on stdin, until stdin ends.
//
//   <runtime> bench/_serverless_child.ts <postgres|pg|bun> <iam|static>
//
// iam: the example handler of examples/serverless/ (DATABASE_URL and AWS_* from the environment);
// its cold-start log line goes to stdout as it would to CloudWatch. static: the same pattern on the
// plain driver with a static password (PGIAM_BENCH_STATIC: JSON { url, password, ca?, servername? }).
//
// stdout, one JSON line each: {"ready":{"loadMs"}} once the handler is loaded (and, for static, its
// "prewarmMs"); per invocation {"invocation":{"ms","ok","error"?}}; the handler's own lines between.
import process from "node:process";
import { createInterface } from "node:readline";

type Handler = (event: { id?: number }) => Promise<{ id: number }>;
const BunSQL = (globalThis as { Bun?: { SQL?: new (options: object) => BunSql } }).Bun?.SQL;
interface BunSql {
  (strings: TemplateStringsArray, ...values: unknown[]): Promise<{ id: number }[]>;
}

const [driver, kind] = process.argv.slice(2);
const send = (line: object) => process.stdout.write(JSON.stringify(line) + "\n");

/** The static-password twin of an example handler: same client settings, query and prewarm. */
async function staticHandler(): Promise<{ handler: Handler; prewarmMs: number }> {
  const { url, password, ca, servername } = JSON.parse(process.env.PGIAM_BENCH_STATIC ?? "{}");
  let start = performance.now();
  if (driver === "postgres") {
    const { default: postgres } = await import("postgres");
    start = performance.now(); // as the example's prewarmMs: from after its imports
    const sql = postgres(url, { max: 1, password, ssl: ca ? { ca, servername } : false });
    await sql`select 1`;
    return {
      prewarmMs: performance.now() - start,
      handler: async (event) =>
        (await sql<{ id: number }[]>`select ${event.id ?? 0}::int as id, now() as at`)[0],
    };
  }
  if (driver === "pg") {
    const { default: pg } = await import("pg");
    start = performance.now();
    const u = new URL(url); // pg's connectionString would override the password
    const pool = new pg.Pool({
      host: u.hostname,
      port: Number(u.port),
      user: u.username,
      database: u.pathname.slice(1),
      max: 1,
      password,
      ssl: ca ? { ca, servername } : false,
    });
    (await pool.connect()).release();
    return {
      prewarmMs: performance.now() - start,
      handler: async (event) =>
        (await pool.query("select $1::int as id, now() as at", [event.id ?? 0])).rows[0],
    };
  }
  if (driver === "bun" && BunSQL) {
    const sql = new BunSQL({
      url,
      max: 1,
      password,
      tls: ca ? { ca, serverName: servername, rejectUnauthorized: true } : false,
    });
    await sql`select 1`;
    return {
      prewarmMs: performance.now() - start,
      handler: async (event) => (await sql`select ${event.id ?? 0}::int as id, now() as at`)[0],
    };
  }
  throw new Error(`no static twin for driver ${driver} on this runtime`);
}

const loadStart = performance.now();
let handler: Handler;
let prewarmMs: number | undefined;
if (kind === "iam") {
  // Literal specifiers, so that `deno check bench/` checks the examples too.
  handler = (driver === "postgres"
    ? await import("../examples/serverless/postgres.ts")
    : driver === "pg"
    ? await import("../examples/serverless/pg.ts")
    : await import("../examples/serverless/bun.ts")).handler;
} else {
  ({ handler, prewarmMs } = await staticHandler());
}
send({ ready: { loadMs: performance.now() - loadStart, prewarmMs } });

let id = 0;
for await (const _ of createInterface({ input: process.stdin })) {
  const start = performance.now();
  try {
    const row = await handler({ id: ++id });
    if (row.id !== id) throw new Error(`the handler answered id ${row.id}, not ${id}`);
    send({ invocation: { ms: performance.now() - start, ok: true } });
  } catch (error) {
    send({ invocation: { ms: performance.now() - start, ok: false, error: String(error) } });
  }
}
process.exit(0);
