// The adapter contract (issue 21, item 2): every adapter subpath exports the same error classes
// (the very classes, so `instanceof` works whichever subpath a user imported from), the connection
// hook has one name on every driver (onIamConnect; postgres.js's old onConnect still works, as a
// deprecated alias), and the compiler holds each adapter to one shape. End to end through the
// gateway, each claim with its negative control.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import pg from "pg";
import * as root from "../../mod.ts";
import * as postgresAdapter from "../../src/postgres/mod.ts";
import * as pgAdapter from "../../src/pg/mod.ts";
import * as bunAdapter from "../../src/bun/mod.ts";
import * as proxyModule from "../../src/proxy/mod.ts";
import type { Adapter } from "../../src/connection/adapter.ts";
import type { ConnectEvent } from "../../src/connection/socket.ts";
import type { Gateway } from "../../src/gateway/mod.ts";
import { closeTestGateways, testGateway } from "../_gateway.ts";
import { ca } from "../fixtures/tls.ts";

const KEYS = { accessKeyId: "AKIDPGIAMCONTRACT", secretAccessKey: "pg-iam/contract/secret/key" };
const BUN = (globalThis as { Bun?: { SQL?: unknown } }).Bun?.SQL !== undefined;
const TIMEOUT = { timeout: 60_000 };

const closers: (() => Promise<unknown>)[] = [];
after(async () => {
  await Promise.all(closers.splice(0).map((close) => close().catch(() => {})));
  await closeTestGateways();
});

/** Where each client connects: the gateway, signing for its endpoint, trusting the test CA. */
function endpoint(g: Gateway) {
  return {
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    signingHostname: g.endpoint,
    signingPort: 5432,
    credentials: KEYS,
    ssl: { ca },
  };
}

function postgresClient(g: Gateway, extra: Record<string, unknown>) {
  const sql = postgresAdapter.iamPostgres({ ...endpoint(g), max: 1, onnotice: () => {}, ...extra });
  closers.push(() => sql.end({ timeout: 0 }));
  return sql;
}

function pgPool(g: Gateway, extra: Record<string, unknown>) {
  const pool = pgAdapter.iamPool({ ...endpoint(g), max: 1, ...extra } as pgAdapter.IamPoolConfig);
  pool.on("error", () => {});
  closers.push(() => pool.end());
  return pool;
}

test("every adapter subpath exports the root's CredentialsError, and one TransactionOutcomeUnknownError", () => {
  for (const adapter of [postgresAdapter, pgAdapter, bunAdapter]) {
    assert.equal(adapter.CredentialsError, root.CredentialsError);
    assert.equal(
      adapter.TransactionOutcomeUnknownError,
      postgresAdapter.TransactionOutcomeUnknownError,
    );
  }
  // The control: the comparison does tell two classes apart.
  assert.notEqual(postgresAdapter.CredentialsError, postgresAdapter.TransactionOutcomeUnknownError);
  // What a query fails with when credentials fail is what every subpath exports.
  assert.ok(
    new root.CredentialsError("missing", "no credentials") instanceof pgAdapter.CredentialsError,
  );
});

const DIST = new URL("../../dist/", import.meta.url);
const NO_DIST = existsSync(new URL("chunks/", DIST))
  ? false
  : "no bundled dist/: run npm run build";

test(
  "npm's dist: each adapter subpath (and the proxy's) exports what its source does, nothing of the layers under it, and the same error classes",
  { skip: NO_DIST },
  async () => {
    const dist = (path: string) => import(new URL(path, DIST).href);
    const root = await dist("mod.js");
    for (
      const [path, source] of [
        ["src/postgres/mod.js", postgresAdapter],
        ["src/pg/mod.js", pgAdapter],
        ["src/bun/mod.js", bunAdapter],
        ["src/proxy/mod.js", proxyModule],
      ] as const
    ) {
      const bundled = await dist(path);
      // `export *` of a shared module would re-export a whole chunk here (intake, signFor, …).
      assert.deepEqual(Object.keys(bundled).sort(), Object.keys(source).sort(), path);
      assert.equal(bundled.CredentialsError, root.CredentialsError, path);
    }
    const proxy = await dist("src/proxy/mod.js");
    const pgBundled = await dist("src/pg/mod.js");
    assert.equal(proxy.ConnectError, pgBundled.ConnectError);
    assert.equal(proxy.IamAuthError, pgBundled.IamAuthError);
    // The control: the comparison sees a name the source lacks.
    assert.notDeepEqual(Object.keys(root).sort(), Object.keys(postgresAdapter).sort());
  },
);

test("IamAuthError is one class where pg-iam does the login (postgres.js, node-postgres); ./bun, where Bun.SQL's own error reaches the query, does not export it", () => {
  assert.equal(typeof postgresAdapter.IamAuthError, "function");
  assert.equal(pgAdapter.IamAuthError, postgresAdapter.IamAuthError);
  assert.equal("IamAuthError" in bunAdapter, false);
  // The control: the same check sees an export that is there.
  assert.equal("TransactionOutcomeUnknownError" in bunAdapter, true);
});

test("the compiler holds every adapter to one contract", () => {
  // Each module declares `satisfies Adapter<…>`; this proves the type would catch a mismatch: a
  // postgres.js transaction() is no node-postgres one.
  const wrong = {
    create: pgAdapter.iamPool,
    prewarm: pgAdapter.prewarm,
    transaction: postgresAdapter.transaction,
  };
  // @ts-expect-error: postgres.js's transaction() does not take a pg.Pool
  const _checked: Adapter<pgAdapter.Pool, pgAdapter.PoolClient, pgAdapter.IamPoolConfig> = wrong;
  const right: Adapter<pgAdapter.Pool, pgAdapter.PoolClient, pgAdapter.IamPoolConfig> = {
    create: pgAdapter.iamPool,
    prewarm: pgAdapter.prewarm,
    transaction: pgAdapter.transaction,
  };
  assert.equal(right.transaction, pgAdapter.transaction);
  // One transaction-options type: the old names are the same type.
  const options: postgresAdapter.TransactionOptions = { begin: "isolation level serializable" };
  const old:
    & pgAdapter.PgTransactionOptions
    & postgresAdapter.PostgresTransactionOptions
    & bunAdapter.BunTransactionOptions = options;
  assert.equal(old.begin, "isolation level serializable");
});

test(
  "postgres.js: onIamConnect is told of each connection; so is the deprecated onConnect; a hook of another name is not",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const events: Record<string, ConnectEvent[]> = {
      onIamConnect: [],
      onConnect: [],
      onconnect: [],
    };
    for (const name of Object.keys(events)) {
      const sql = postgresClient(g, { [name]: (e: ConnectEvent) => events[name].push(e) });
      assert.deepEqual([...await sql`select 1 as one`], [{ one: 1 }]);
    }
    for (const name of ["onIamConnect", "onConnect"]) {
      assert.equal(events[name].length, 1, name);
      assert.equal(events[name][0].ok, true);
      assert.equal(events[name][0].user, "app");
    }
    // The negative control: a name pg-iam does not know reaches postgres.js, which calls nothing.
    assert.equal(events.onconnect.length, 0);
    assert.throws(
      () => postgresClient(g, { onIamConnect: () => {}, onConnect: () => {} }),
      /Pass "onIamConnect" alone: "onConnect" is its deprecated name/,
    );
    assert.throws(
      () => postgresClient(g, { onConnect: 1 }),
      /The "onConnect" option must be a function, got 1/,
    );
    assert.throws(
      () => postgresClient(g, { onIamConnect: "x" }),
      /The "onIamConnect" option must be a function/,
    );
  },
);

test(
  "node-postgres: onIamConnect is told of each connection, and pg-pool's own onConnect stays pg-pool's (called with the client)",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const events: ConnectEvent[] = [];
    const clients: unknown[] = [];
    const pool = pgPool(g, {
      onIamConnect: (e: ConnectEvent) => events.push(e),
      onConnect: (client: unknown) => void clients.push(client),
    });
    assert.deepEqual((await pool.query("select 1 as one")).rows, [{ one: 1 }]);
    assert.equal(events.length, 1);
    assert.equal(events[0].ok, true);
    // The control: pg-pool's hook of the other name got a client, not pg-iam's event.
    assert.equal(clients.length, 1);
    assert.ok(clients[0] instanceof pg.Client);
    assert.equal("timings" in (clients[0] as object), false);
    assert.throws(
      () => pgPool(g, { onIamConnect: 1 }),
      /The "onIamConnect" option must be a function/,
    );
  },
);

test("Bun.SQL: onIamConnect is refused by that name, saying why (Bun opens its own sockets)", () => {
  if (!BUN) {
    // Outside Bun iamSql() is an error of its own, before any option is read.
    assert.throws(() => bunAdapter.iamSql({ onIamConnect: () => {} } as never), /needs Bun/);
    return;
  }
  assert.throws(
    () => bunAdapter.iamSql({ host: "localhost", user: "app", onIamConnect: () => {} } as never),
    (e: Error) => e instanceof TypeError && /"onIamConnect".*Bun\.SQL/.test(e.message),
  );
  // The control: without it, the same options make a client.
  const sql = bunAdapter.iamSql({
    host: "localhost",
    user: "app",
    dangerouslyDisableTls: true,
    ssl: "disable",
  });
  closers.push(() => sql.close({ timeout: 0 }));
});

test(
  "a login rejected twice: postgres.js and node-postgres fail the query with IamAuthError; Bun.SQL with its own error (errno 28P01), so ./bun exports none",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const stale = { credentials: { accessKeyId: "AKIDSTALE", secretAccessKey: "stale" } };
    const isIamAuthError = (e: Error) => {
      assert.ok(e instanceof postgresAdapter.IamAuthError, String(e));
      assert.equal((e as { code?: string }).code, "28P01");
      assert.match(e.message, /rejected twice.*rds_iam/);
      return true;
    };
    await assert.rejects(postgresClient(g, stale)`select 1`, isIamAuthError);
    await assert.rejects(pgPool(g, stale).query("select 1"), isIamAuthError);
    if (!BUN) return;
    const sql = bunAdapter.iamSql({ ...endpoint(g), max: 1, ...stale });
    closers.push(() => sql.close({ timeout: 0 }));
    // Twice: the second connection signed with force-refreshed (here the same stale) credentials.
    for (let i = 0; i < 2; i++) {
      await assert.rejects(sql`select 1`, (e: Error & { errno?: string }) => {
        assert.equal(e.errno, "28P01");
        assert.equal(e instanceof postgresAdapter.IamAuthError, false);
        return true;
      });
    }
  },
);
