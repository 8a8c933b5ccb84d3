// Clients nobody here wrote, each proven directly against the test PostgreSQL (and the gateway
// where a password is needed) before the proxy's tests drive them through `pg-iam proxy` and
// `pg-iam exec`: Python's psycopg2 (libpq) for queries, a held session, cancel and COPY; Debian's
// PgBouncer as the reference relay; the Knex and drizzle-kit CLIs migrating through a URL. The
// Python, PgBouncer and migration CLIs are child processes, the same on Node, Deno and Bun.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rdsToken } from "../../mod.ts";
import { closeTestGateways, RDS, testGateway } from "../_gateway.ts";
import { upstreamPostgres } from "../_postgres.ts";
import {
  psycopgCancel,
  psycopgCopy,
  psycopgHeld,
  psycopgMissing,
  psycopgQuery,
} from "../_psycopg.ts";
import { pgbouncerMissing, startPgbouncer } from "../_pgbouncer.ts";
import { type MigrationTool, runMigrations, scratchDatabase } from "../_migrations.ts";
import { ca } from "../fixtures/tls.ts";

const KEYS = { accessKeyId: "AKIDPGIAMCLIENTS", secretAccessKey: "pg-iam/clients/secret/key" };
const MINUTE = 60_000;
const PSYCOPG = { skip: psycopgMissing(), timeout: 60_000 };

const dir = mkdtempSync(join(tmpdir(), "pg-iam-clients-test-"));
const CA_FILE = join(dir, "ca.pem");
writeFileSync(CA_FILE, ca);

after(async () => {
  await closeTestGateways();
  rmSync(dir, { recursive: true, force: true });
});

/** libpq's environment for the test server, directly (trust auth: no password). */
async function direct(): Promise<Record<string, string>> {
  const up = await upstreamPostgres();
  return { PGHOST: up.host, PGPORT: String(up.port), PGUSER: up.user, PGDATABASE: "postgres" };
}

test(
  "psycopg2 (libpq from the environment) runs a query on the test PostgreSQL; its errors carry their SQLSTATE",
  PSYCOPG,
  async () => {
    const env = await direct();
    const ok = await psycopgQuery("select 1 as one, current_user as who", env);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(ok.value, { columns: ["one", "who"], rows: [[1, env.PGUSER]] });
    // The controls: an error of the server, and one of libpq (no server there).
    const failed = await psycopgQuery("select 1/0", env);
    assert.equal(failed.code, 3, failed.stderr);
    assert.deepEqual(failed.error, {
      error: "DivisionByZero",
      pgcode: "22012",
      message: "division by zero",
    });
    const refused = await psycopgQuery("select 1", { ...env, PGPORT: "1" });
    assert.equal(refused.error?.error, "OperationalError");
    assert.equal(refused.error?.pgcode, null);
    assert.match(refused.error?.message ?? "", /port 1 failed: Connection refused/);
    // Through a wrapping command (as the proxy's tests run it through `pg-iam exec`), which here
    // sets libpq's PGAPPNAME; without it the name is libpq's default, none.
    const appName = "select current_setting('application_name')";
    const wrapped = await psycopgQuery(appName, env, {
      wrap: (command, args) => ["/usr/bin/env", ["PGAPPNAME=wrapped", command, ...args]],
    });
    assert.deepEqual(wrapped.value?.rows, [["wrapped"]], wrapped.stdout + wrapped.stderr);
    assert.deepEqual((await psycopgQuery(appName, env)).value?.rows, [[""]]);
  },
);

test(
  "psycopg2 through the gateway: a session opened with a token keeps working after the clock passes its expiry, when a new login with it is refused",
  PSYCOPG,
  async () => {
    const g = await testGateway(KEYS);
    const env = {
      PGHOST: RDS, // the name verify-full checks, and the one signed
      PGHOSTADDR: g.host,
      PGPORT: String(g.port),
      PGUSER: "app",
      PGDATABASE: "postgres",
      PGPASSWORD: await rdsToken({ hostname: RDS, username: "app", credentials: KEYS }),
      PGSSLMODE: "verify-full",
      PGSSLROOTCERT: CA_FILE,
    };
    let loggedIn = 0;
    const held = await psycopgHeld(env, "select 42 as answer", async () => {
      loggedIn = g.stats.accepted;
      g.clockOffsetMs = 16 * MINUTE;
      // The control: the same token, in a new connection, is now refused.
      const fresh = await psycopgQuery("select 1", env);
      assert.equal(fresh.error?.error, "OperationalError", fresh.stdout + fresh.stderr);
      assert.match(
        fresh.error?.message ?? "",
        /FATAL: {2}PAM authentication failed for user "app"/,
      );
      assert.equal(g.stats.rejections.expired, 1);
    });
    assert.equal(loggedIn, 1);
    assert.equal(held.code, 0, held.stdout + held.stderr);
    assert.deepEqual(held.value?.rows, [[42]]);
    assert.equal(g.stats.accepted, 1);
  },
);

test(
  "psycopg2's conn.cancel() cancels a running pg_sleep(30): QueryCanceled 57014, the connection still usable; without it pg_sleep(0.2) completes",
  PSYCOPG,
  async () => {
    const env = await direct();
    const control = await psycopgCancel(env, { seconds: 0.2, cancel: false });
    assert.equal(control.code, 0, control.stderr);
    assert.deepEqual(control.value, { cancelSent: false, afterwards: 1, completed: true });
    const cancelled = await psycopgCancel(env, { seconds: 30, cancel: true });
    assert.equal(cancelled.code, 0, cancelled.stderr);
    assert.deepEqual(cancelled.value, {
      cancelSent: true,
      afterwards: 1,
      completed: false,
      error: {
        error: "QueryCanceled",
        pgcode: "57014",
        message: "canceling statement due to user request",
      },
    });
  },
);

test(
  "psycopg2's COPY FROM STDIN and COPY TO STDOUT move 1.4 MB each way unchanged (checksums of both sides and the server's)",
  PSYCOPG,
  async () => {
    const r = await psycopgCopy(await direct(), { rows: 20_000 });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const v = r.value!;
    assert.equal(v.copiedIn, 20_000);
    assert.equal(v.count, 20_000);
    assert.ok(v.bytesSent > 1_000_000, `${v.bytesSent} bytes`);
    assert.equal(v.bytesReceived, v.bytesSent);
    assert.equal(v.receivedSha256, v.sentSha256);
    assert.equal(v.serverMd5, v.sentMd5);
  },
);

test(
  "pgbouncer (session and transaction pooling) relays psycopg2's query to the test PostgreSQL; close() leaves no process",
  { skip: pgbouncerMissing() || psycopgMissing(), timeout: 60_000 },
  async () => {
    const up = await upstreamPostgres();
    for (const poolMode of ["session", "transaction"] as const) {
      const bouncer = await startPgbouncer({ ...up, database: "postgres" }, { poolMode });
      let closed = false;
      try {
        assert.notEqual(bouncer.port, up.port);
        const r = await psycopgQuery("select inet_server_port() as port, current_user as who", {
          PGHOST: bouncer.host,
          PGPORT: String(bouncer.port),
          PGUSER: "anyone", // auth_type = any: the database entry logs in as up.user
          PGDATABASE: "postgres",
        });
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.deepEqual(r.value?.rows, [[up.port, up.user]], poolMode);
        // The control for the check below: the process is there before close().
        assert.ok(existsSync(`/proc/${bouncer.pid}`));
        await bouncer.close();
        closed = true;
        assert.ok(!existsSync(`/proc/${bouncer.pid}`), `pgbouncer ${bouncer.pid} left running`);
      } finally {
        if (!closed) await bouncer.close();
      }
    }
  },
);

async function migrates(tool: MigrationTool): Promise<void> {
  const db = await scratchDatabase();
  try {
    // The control: a DATABASE_URL with nothing listening at its port fails the tool, and its
    // database stays empty.
    const refused = await runMigrations(tool, {
      DATABASE_URL: db.url({ host: db.host, port: 1 }),
    });
    assert.notEqual(refused.code, 0, refused.stdout + refused.stderr);
    await assert.rejects(db.migrated(tool), /does not exist/);

    const r = await runMigrations(tool, { DATABASE_URL: db.url() });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const migrated = { widgets: [{ id: 1, name: "first", size: 2 }], applied: 2 };
    assert.deepEqual(await db.migrated(tool), migrated);

    // Run again, through a wrapping command that gives the right URL over the wrong one (as
    // `pg-iam exec` will): nothing left to apply, nothing changed.
    const again = await runMigrations(tool, { DATABASE_URL: db.url({ host: db.host, port: 1 }) }, {
      wrap: (command, args) => ["/usr/bin/env", [`DATABASE_URL=${db.url()}`, command, ...args]],
    });
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.deepEqual(await db.migrated(tool), migrated);
  } finally {
    await db.drop();
  }
}

test(
  "knex migrate:latest (its CLI, under Node) migrates the database of DATABASE_URL; a URL with a wrong port exits non-zero; a rerun applies nothing",
  { timeout: 60_000 },
  () => migrates("knex"),
);

test(
  "drizzle-kit migrate (its CLI, under Node, with pg) migrates the database of DATABASE_URL; a URL with a wrong port exits non-zero; a rerun applies nothing",
  { timeout: 60_000 },
  () => migrates("drizzle-kit"),
);
