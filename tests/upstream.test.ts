// The upstream servers end-to-end tests talk to: a real Debian PostgreSQL (tests/_postgres.ts) and
// the embedded PGlite one (src/gateway/pglite.ts), both reached through postgres.js over TCP.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import postgres from "postgres";
import { TEST_ROLES, upstreamPostgres } from "./_postgres.ts";
import { freePort } from "./_postgres_server.mjs";
import { type PgliteServer, startPglite } from "../src/gateway/pglite.ts";

const clients: postgres.Sql[] = [];
let pglite: PgliteServer | undefined;

after(async () => {
  await Promise.all(clients.map((sql) => sql.end({ timeout: 1 })));
  await pglite?.close();
});

function connect(
  target: { host: string; port: number; user?: string },
  options: postgres.Options<Record<string, never>> = {},
): postgres.Sql {
  const sql = postgres({
    host: target.host,
    port: target.port,
    username: target.user ?? "postgres",
    database: "postgres",
    max: 1,
    connect_timeout: 10,
    onnotice: () => {},
    ...options,
  });
  clients.push(sql);
  return sql;
}

test("upstream PostgreSQL: a real server answers current_user and version() as postgres", async () => {
  const pg = await upstreamPostgres();
  const sql = connect(pg);
  const [row] = await sql`select current_user as user, version() as version`;
  assert.equal(row.user, "postgres");
  assert.match(row.version, /^PostgreSQL \d+/);
  await sql.end();
});

test("upstream PostgreSQL: roles app, admin and iam_user exist with LOGIN and can connect", async () => {
  const pg = await upstreamPostgres();
  const sql = connect(pg);
  const rows = await sql`
    select rolname from pg_roles where rolcanlogin and rolname = any(${TEST_ROLES}) order by 1`;
  assert.deepEqual(rows.map((r) => r.rolname), [...TEST_ROLES].sort());
  await sql.end();
  for (const role of TEST_ROLES) {
    const as = connect({ ...pg, user: role });
    const [row] = await as`select current_user as user`;
    assert.equal(row.user, role);
    await as.end();
  }
});

test("negative control: connecting to a port nothing listens on fails with ECONNREFUSED", async () => {
  const sql = connect({ host: "127.0.0.1", port: await freePort() });
  await assert.rejects(sql`select 1`, (err: { code?: string }) => {
    assert.equal(err.code, "ECONNREFUSED");
    return true;
  });
  await sql.end();
});

// PGlite compiles its WebAssembly on start: seconds on a loaded machine, past bun test's 5 s default.
test("PGlite (embedded upstream): 5 concurrent connections each answer select 1", {
  timeout: 30_000,
}, async () => {
  pglite = await startPglite();
  assert.equal(pglite.host, "127.0.0.1");
  assert.ok(pglite.port > 0);
  const sql = connect(pglite, { max: 5 });
  const reserved = await Promise.all(Array.from({ length: 5 }, () => sql.reserve()));
  try {
    const answers = await Promise.all(reserved.map((conn) => conn`select 1 as one`));
    assert.deepEqual(answers.map((rows) => rows[0].one), [1, 1, 1, 1, 1]);
    // Five open connections at once, as the database itself counts them.
    const [{ version }] = await reserved[0]`select version() as version`;
    assert.match(version, /^PostgreSQL \d+/);
  } finally {
    for (const conn of reserved) conn.release();
  }
  // Concurrent transactions on different connections stay apart.
  const results = await Promise.all([1, 2, 3, 4, 5].map((i) =>
    sql.begin(async (tx) => {
      await tx`select pg_sleep(0.02)`;
      const [row] = await tx`select ${i}::int as i`;
      return row.i;
    })
  ));
  assert.deepEqual(results, [1, 2, 3, 4, 5]);
  await sql.end();
});

test("PGlite (embedded upstream): after close(), a new connection is refused", async () => {
  const server = pglite ?? await startPglite();
  const sql = connect(server);
  assert.deepEqual((await sql`select 1 as one`).map((r) => r.one), [1]);
  await sql.end();
  await server.close();
  await server.close(); // idempotent
  const late = connect(server);
  await assert.rejects(late`select 1`, (err: { code?: string }) => {
    assert.equal(err.code, "ECONNREFUSED");
    return true;
  });
  await late.end();
});
