// The upstream servers end-to-end tests talk to: a real Debian PostgreSQL (tests/_postgres.ts) and
// the embedded PGlite one (src/gateway/pglite.ts), both reached through postgres.js over TCP.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import postgres from "postgres";
import { TEST_ROLES, upstreamPostgres } from "../_postgres.ts";
import { freePort } from "../_postgres_server.mjs";
import { type PgliteServer, startPglite } from "../../src/gateway/pglite.ts";
import { message, startupMessage } from "../../src/connection/pgwire.ts";
import { Buffer } from "node:buffer";
import { createConnection } from "node:net";

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
  // prepare: false: PGlite serves all connections in one session, where the named statements
  // postgres.js 4 prepares per connection would meet (src/gateway/pglite.ts).
  const sql = connect(pglite, { max: 5, prepare: false });
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

// ---- PGlite: one session for all connections, so a batch must not interleave with another ----

/** A raw protocol client: write messages, read until a message of a type arrives. */
async function rawClient(server: { host: string; port: number }) {
  const socket = createConnection({ host: server.host, port: server.port });
  let buffer = Buffer.alloc(0);
  const waiters: Array<() => void> = [];
  socket.on("data", (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk]);
    for (const wake of waiters.splice(0)) wake();
  });
  await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  /** Messages up to and including the first of type `until`, as [type, body] pairs. */
  const read = async (until: string): Promise<Array<[string, Buffer]>> => {
    for (;;) {
      const out: Array<[string, Buffer]> = [];
      let at = 0;
      while (buffer.length >= at + 5 && buffer.length >= at + 1 + buffer.readUInt32BE(at + 1)) {
        const end = at + 1 + buffer.readUInt32BE(at + 1);
        out.push([String.fromCharCode(buffer[at]), buffer.subarray(at + 5, end)]);
        at = end;
        if (out[out.length - 1][0] === until) {
          buffer = buffer.subarray(at);
          return out;
        }
      }
      await new Promise<void>((wake) => waiters.push(wake));
    }
  };
  const cstr = (s: string) => Buffer.from(`${s}\0`);
  const i16 = (n: number) => Buffer.from([n >> 8, n & 255]);
  socket.write(startupMessage(new Map([["user", "postgres"], ["database", "postgres"]])));
  await read("Z");
  return {
    read,
    /** The text of the first column of the first DataRow in `messages`. */
    value: (messages: Array<[string, Buffer]>) => {
      const row = messages.find(([type]) => type === "D")?.[1];
      return row ? row.subarray(6, 6 + row.readInt32BE(2)).toString() : undefined;
    },
    parse: (sql: string) =>
      socket.write(message("P", Buffer.concat([cstr(""), cstr(sql), i16(0)]))),
    flush: () => socket.write(message("H")),
    run: () =>
      socket.write(Buffer.concat([
        message("B", Buffer.concat([cstr(""), cstr(""), i16(0), i16(0), i16(0)])),
        message("E", Buffer.concat([cstr(""), Buffer.alloc(4)])),
        message("S"),
      ])),
    close: () => socket.destroy(),
  };
}

test(
  "PGlite (embedded upstream): another connection's extended-query batch waits for this one's Sync (pglite-socket alone interleaves them: the control)",
  {
    timeout: 60_000,
  },
  async () => {
    // pg-iam's server: B's batch waits while A is between Parse and Sync; A runs its own statement.
    const server = await startPglite();
    try {
      const a = await rawClient(server);
      const b = await rawClient(server);
      a.parse("select 'a'::text");
      a.flush();
      assert.equal((await a.read("1"))[0][0], "1"); // ParseComplete: A's Parse was run
      b.parse("select 'b'::text");
      b.run();
      a.run();
      assert.equal(a.value(await a.read("Z")), "a");
      assert.equal(b.value(await b.read("Z")), "b");
      a.close();
      b.close();
    } finally {
      await server.close();
    }

    // The control: pglite-socket's own server, one message at a time. B's batch runs in the middle
    // of A's, its Parse replaces A's unnamed statement, and A's Bind runs B's query.
    const { PGlite } = await import("@electric-sql/pglite");
    const { PGLiteSocketServer } = await import("@electric-sql/pglite-socket");
    const db = await PGlite.create();
    const plain = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections: 10 });
    await plain.start();
    const address = { host: "127.0.0.1", port: Number(plain.getServerConn().split(":").pop()) };
    try {
      const a = await rawClient(address);
      const b = await rawClient(address);
      a.parse("select 'a'::text");
      a.flush();
      await a.read("1");
      b.parse("select 'b'::text");
      b.run();
      assert.equal(b.value(await b.read("Z")), "b"); // not held back
      a.run();
      assert.equal(a.value(await a.read("Z")), "b"); // A got B's statement
      a.close();
      b.close();
    } finally {
      await plain.stop();
      await db.close();
    }
  },
);
