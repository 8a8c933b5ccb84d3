// The README's Drizzle and Kysely recipes, run for real: each ORM gets an iamPostgres() client and
// queries PostgreSQL through the IAM gateway, and each connection it opens presents a fresh token.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { drizzle } from "drizzle-orm/postgres-js";
import { sql as drizzleSql } from "drizzle-orm";
import { Kysely, sql as kyselySql } from "kysely";
import { PostgresJSDialect } from "kysely-postgres-js";
import { iamPostgres } from "../../src/postgres/mod.ts";
import { type Gateway, startGateway } from "../../src/gateway/mod.ts";
import { upstreamPostgres } from "../_postgres.ts";
import { ca, cert, key } from "../fixtures/tls.ts";

const RDS = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";
const KEYS = { accessKeyId: "AKIDRECIPES", secretAccessKey: "recipes/secret" };

const gateways: Gateway[] = [];
after(async () => {
  await Promise.all(gateways.map((g) => g.close()));
});

async function setup(credentials = KEYS) {
  const pg = await upstreamPostgres();
  const gateway = await startGateway({
    endpoint: RDS,
    credentials: KEYS,
    upstream: { host: pg.host, port: pg.port, user: pg.user },
    tls: { cert, key },
  });
  gateways.push(gateway);
  const client = iamPostgres({
    host: gateway.host,
    port: gateway.port,
    user: "app",
    database: "postgres",
    signingHostname: RDS,
    signingPort: 5432,
    credentials,
    ssl: { ca },
    max: 3,
    onnotice: () => {},
  });
  return { gateway, client };
}

test("recipe: Drizzle on an iamPostgres() client", async () => {
  const { gateway, client } = await setup();
  const db = drizzle(client);
  try {
    const rows = await db.execute(drizzleSql`select current_user as who, 40 + 2 as answer`);
    assert.deepEqual([...rows], [{ who: "postgres", answer: 42 }]);
  } finally {
    await client.end();
  }
  assert.equal(gateway.stats.accepted, 1);
  // Negative control: with keys the gateway does not know, Drizzle's query fails with 28P01.
  const bad = await setup({ accessKeyId: "AKIDOTHER", secretAccessKey: "other" });
  await assert.rejects(drizzle(bad.client).execute(drizzleSql`select 1`), (e: Error) => {
    const code = (e as { code?: string }).code ?? (e.cause as { code?: string })?.code;
    assert.equal(code, "28P01", String(e));
    return true;
  });
  await bad.client.end();
});

test("recipe: Kysely with kysely-postgres-js on an iamPostgres() client", async () => {
  const { gateway, client } = await setup();
  const db = new Kysely<Record<string, never>>({
    dialect: new PostgresJSDialect({ postgres: client }),
  });
  try {
    const { rows } = await kyselySql<{ answer: number }>`select 40 + 2 as answer`.execute(db);
    assert.deepEqual(rows, [{ answer: 42 }]);
  } finally {
    await db.destroy(); // ends the postgres.js client
  }
  assert.equal(gateway.stats.accepted, 1);
  assert.equal(gateway.stats.rejected, 0);
  // Negative control: with keys the gateway does not know, Kysely's query fails with 28P01.
  const bad = await setup({ accessKeyId: "AKIDOTHER", secretAccessKey: "other" });
  const badDb = new Kysely<Record<string, never>>({
    dialect: new PostgresJSDialect({ postgres: bad.client }),
  });
  await assert.rejects(kyselySql`select 1`.execute(badDb), { code: "28P01" });
  // Not badDb.destroy(): postgres.js 3.4.9 keeps a failed reserve() queued and retries it, and
  // an end() without timeout right after waits for that forever (plain postgres.js with a wrong
  // password does the same). end({ timeout: 0 }) closes at once.
  await bad.client.end({ timeout: 0 });
});
