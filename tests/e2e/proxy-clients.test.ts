// Clients nobody here wrote, through startProxy() (running on this file's runtime: Node, Deno or
// Bun) in front of the gateway (IAM verified, TLS with the test CA) in front of Debian's
// PostgreSQL: Python's psycopg2 (libpq) across simulated hours of 15-minute tokens, a session
// held past its token's expiry, cancel, COPY both ways; the Knex and drizzle-kit CLIs migrating
// under `pg-iam exec` (the CLI on this file's runtime). Each claim beside its control.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { rdsToken } from "../../mod.ts";
import { type Proxy, startProxy } from "../../src/proxy/mod.ts";
import type { Gateway } from "../../src/gateway/mod.ts";
import { closeTestGateways, RDS, testGateway } from "../_gateway.ts";
import {
  psycopgCancel,
  psycopgCopy,
  psycopgHeld,
  psycopgMissing,
  psycopgQuery,
} from "../_psycopg.ts";
import { type MigrationTool, runMigrations, scratchDatabase } from "../_migrations.ts";
import { runtimeCommand } from "../_runtime.ts";
import { ca } from "../fixtures/tls.ts";

const KEYS = { accessKeyId: "AKIDPGIAMPROXYCLIENTS", secretAccessKey: "pg-iam/proxy-clients/key" };
const MINUTE = 60_000;
const PSYCOPG = { skip: psycopgMissing(), timeout: 120_000 };
const CLI = fileURLToPath(new URL("../../src/cli/mod.ts", import.meta.url));

const dir = mkdtempSync(join(tmpdir(), "pg-iam-proxy-clients-test-"));
const CA_FILE = join(dir, "ca.pem");
writeFileSync(CA_FILE, ca);

const proxies: Proxy[] = [];
after(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()));
  await closeTestGateways();
  rmSync(dir, { recursive: true, force: true });
});

/** A gateway, and a proxy to it signing on the gateway's clock. */
async function setup(): Promise<{ g: Gateway; proxy: Proxy; env: Record<string, string> }> {
  const g = await testGateway(KEYS);
  const proxy = await startProxy({
    connectionString: `postgres://127.0.0.1:${g.port}?iam_host=${RDS}&iam_port=5432` +
      `&sslrootcert=${CA_FILE}`,
    credentials: KEYS,
    now: () => g.now(),
  });
  proxies.push(proxy);
  // libpq's environment for the proxy: no password, no TLS (loopback), as `pg-iam exec` sets it.
  const env = {
    PGHOST: proxy.host,
    PGPORT: String(proxy.port),
    PGUSER: "app",
    PGDATABASE: "postgres",
    PGSSLMODE: "disable",
  };
  return { g, proxy, env };
}

test(
  "psycopg2 through the proxy: a new connection every 20 minutes for 3 simulated hours logs in, and a session opened at the start still answers at the end; a token frozen at the start (libpq's PGPASSWORD straight at the gateway) is refused after 15 minutes (the control)",
  PSYCOPG,
  async () => {
    const { g, proxy, env } = await setup();
    const frozen = {
      PGHOST: RDS,
      PGHOSTADDR: g.host,
      PGPORT: String(g.port),
      PGUSER: "app",
      PGDATABASE: "postgres",
      PGPASSWORD: await rdsToken({
        hostname: RDS,
        username: "app",
        credentials: KEYS,
        signingDate: new Date(g.now()),
      }),
      PGSSLMODE: "verify-full",
      PGSSLROOTCERT: CA_FILE,
    };
    assert.equal((await psycopgQuery("select 1", frozen)).code, 0); // young, the control works
    const held = await psycopgHeld(env, "select 'held' as s", async () => {
      for (let minutes = 20; minutes <= 180; minutes += 20) {
        g.clockOffsetMs = minutes * MINUTE;
        const r = await psycopgQuery("select current_user, 7 as n", env);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.deepEqual(r.value?.rows[0][1], 7);
      }
      const stale = await psycopgQuery("select 1", frozen);
      assert.match(stale.error?.message ?? "", /PAM authentication failed for user "app"/);
    });
    assert.equal(held.code, 0, held.stdout + held.stderr);
    assert.deepEqual(held.value?.rows, [["held"]]);
    assert.ok(proxy.stats.tokens.signed >= 10, JSON.stringify(proxy.stats.tokens));
    assert.equal(g.stats.rejections.expired, 1); // only the frozen token's
  },
);

test(
  "psycopg2 through the proxy: conn.cancel() (libpq's CancelRequest to the proxy, forwarded upstream) cancels pg_sleep(30) with 57014 and the session goes on; an uncancelled pg_sleep(0.2) completes (the control)",
  PSYCOPG,
  async () => {
    const { proxy, env } = await setup();
    const control = await psycopgCancel(env, { seconds: 0.2, cancel: false });
    assert.deepEqual(control.value, { cancelSent: false, afterwards: 1, completed: true });
    const cancelled = await psycopgCancel(env, { seconds: 30, cancel: true });
    assert.equal(cancelled.code, 0, cancelled.stdout + cancelled.stderr);
    assert.equal(cancelled.value?.error?.pgcode, "57014");
    assert.equal(cancelled.value?.afterwards, 1);
    assert.equal(proxy.stats.cancels, 1);
  },
);

test(
  "psycopg2 through the proxy: COPY FROM STDIN and COPY TO STDOUT move 1.4 MB each way unchanged (checksums of both sides and the server's)",
  PSYCOPG,
  async () => {
    const { proxy, env } = await setup();
    const r = await psycopgCopy(env, { rows: 20_000 });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const v = r.value!;
    assert.equal(v.count, 20_000);
    assert.ok(v.bytesSent > 1_000_000);
    assert.equal(v.receivedSha256, v.sentSha256);
    assert.equal(v.serverMd5, v.sentMd5);
    assert.ok(proxy.stats.bytes.toServer > v.bytesSent);
    assert.ok(proxy.stats.bytes.toClient > v.bytesReceived);
  },
);

/** Runs `tool` under `pg-iam exec TARGET --` (this file's runtime running the CLI), with `keys`. */
async function migrateThroughExec(
  tool: MigrationTool,
  g: Gateway,
  database: string,
  keys: { accessKeyId: string; secretAccessKey: string },
) {
  const target = `postgres://app@127.0.0.1:${g.port}/${database}?iam_host=${RDS}&iam_port=5432` +
    `&sslrootcert=${CA_FILE}`;
  const [runtime, pre] = runtimeCommand(CLI);
  return await runMigrations(tool, {
    AWS_ACCESS_KEY_ID: keys.accessKeyId,
    AWS_SECRET_ACCESS_KEY: keys.secretAccessKey,
    AWS_CONFIG_FILE: join(dir, "no-config"),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, "no-credentials"),
    XDG_CACHE_HOME: join(dir, "cache"),
  }, {
    wrap: (command, args) => [runtime, [...pre, "exec", target, "--", command, ...args]],
  });
}

async function migrates(tool: MigrationTool): Promise<void> {
  const g = await testGateway(KEYS);
  const db = await scratchDatabase();
  try {
    // The control: keys the gateway does not accept; the tool's login is refused, nothing applied.
    const refused = await migrateThroughExec(tool, g, db.name, {
      accessKeyId: "AKIDNOTACCEPTED",
      secretAccessKey: "not/accepted/secret/key",
    });
    assert.notEqual(refused.code, 0, refused.stdout + refused.stderr);
    await assert.rejects(db.migrated(tool), /does not exist/);

    const r = await migrateThroughExec(tool, g, db.name, KEYS);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(await db.migrated(tool), {
      widgets: [{ id: 1, name: "first", size: 2 }],
      applied: 2,
    });
    assert.ok(g.stats.accepted >= 1);
    assert.ok(!(r.stdout + r.stderr).includes(KEYS.secretAccessKey));
  } finally {
    await db.drop();
  }
}

test(
  "pg-iam exec TARGET -- knex migrate:latest applies its migrations through the proxy; with keys the server refuses, nothing is applied (the control)",
  { timeout: 120_000 },
  () => migrates("knex"),
);

test(
  "pg-iam exec TARGET -- drizzle-kit migrate applies its migrations through the proxy; with keys the server refuses, nothing is applied (the control)",
  { timeout: 120_000 },
  () => migrates("drizzle-kit"),
);
