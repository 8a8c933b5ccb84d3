// Token reuse, end to end through the IAM-verifying gateway, which fingerprints every token it is
// shown (`tokenId`): a pool filling at once presents one or two tokens; a token is never shown
// again after a server rejected it; credentials that change are never mixed with an old token;
// `tokenReuse: false` signs one per connection (the control). postgres.js and node-postgres here;
// Bun.SQL too when running on Bun.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import type pg from "pg";
import type { Sql } from "postgres";
import { iamPostgres, type TokenEvent } from "../../src/postgres/mod.ts";
import { iamPool, type IamPoolConfig } from "../../src/pg/mod.ts";
import { type BunSqlClient, iamSql, type IamSqlOptions } from "../../src/bun/mod.ts";
import type { Gateway, GatewayLogin, GatewayOptions } from "../../src/gateway/mod.ts";
import { closeTestGateways, testGateway } from "../_gateway.ts";
import { ca } from "../fixtures/tls.ts";
import { Tally } from "../_closes.ts";

const KEYS = { accessKeyId: "AKIDPGIAMREUSE", secretAccessKey: "pg-iam/token-reuse/secret" };
const ROTATED = { accessKeyId: "AKIDPGIAMREUSE2", secretAccessKey: "pg-iam/token-reuse/next" };
const MINUTE = 60_000;
const TIMEOUT = { timeout: 60_000 };
const BUN = (globalThis as { Bun?: { SQL?: unknown } }).Bun?.SQL !== undefined;
const ON_BUN = { skip: BUN ? false : "Bun.SQL is Bun's own client", timeout: 60_000 };

const closers: (() => Promise<unknown>)[] = [];
after(async () => {
  await Promise.all(closers.map((close) => close().catch(() => {})));
  await closeTestGateways();
});

function gateway(extra: Partial<GatewayOptions> = {}): Promise<Gateway> {
  return testGateway([KEYS, ROTATED], extra);
}

type Extra = Record<string, unknown>;

const common = (g: Gateway) => ({
  host: g.host,
  port: g.port,
  user: "app",
  database: "postgres",
  signingHostname: g.endpoint,
  signingPort: 5432,
  credentials: KEYS,
});

function postgresJs(g: Gateway, extra: Extra = {}): Sql {
  const sql = iamPostgres({ ...common(g), ssl: { ca }, onnotice: () => {}, ...extra });
  closers.push(() => sql.end({ timeout: 1 }));
  return sql;
}

function pgPool(g: Gateway, extra: Extra = {}): pg.Pool {
  const pool = iamPool({ ...common(g), ssl: { ca }, ...extra } as IamPoolConfig);
  pool.on("error", () => {});
  closers.push(() => pool.end());
  return pool;
}

function bunSql(g: Gateway, extra: Extra = {}): BunSqlClient {
  const sql = iamSql({ ...common(g), ssl: { ca }, ...extra } as IamSqlOptions);
  closers.push(() => sql.close({ timeout: 0 }));
  return sql;
}

/** `n` queries at once, each holding its connection a moment, so that a pool of `n` fills. */
const DRIVERS = {
  "postgres.js": {
    // Reserved, since postgres.js 4 pipelines concurrent queries on the connections it has.
    fill: async (g: Gateway, n: number, extra: Extra) => {
      const sql = postgresJs(g, { max: n, ...extra });
      const reserved = await Promise.all(Array.from({ length: n }, () => sql.reserve()));
      await Promise.all(reserved.map((r) => r`select 1`));
      for (const r of reserved) r.release();
    },
  },
  "node-postgres": {
    fill: (g: Gateway, n: number, extra: Extra) => {
      const pool = pgPool(g, { max: n, ...extra });
      return Promise.all(Array.from({ length: n }, () => pool.query("select pg_sleep(0.05)")));
    },
  },
};

const distinct = (logins: GatewayLogin[]) => new Set(logins.map((l) => l.tokenId)).size;

for (const [name, driver] of Object.entries(DRIVERS)) {
  test(
    `${name}: a pool of 30 filling at once presents one or two distinct tokens; with tokenReuse: false, one per connection (the control)`,
    TIMEOUT,
    async () => {
      // A clock that moves a second for every token asked for: without reuse, every token differs
      // (SigV4 tokens signed in the same second with the same keys are byte-identical).
      let tick = Date.now();
      const now = () => tick += 1000;
      const g = await gateway();
      const events: TokenEvent[] = [];
      await driver.fill(g, 30, { now, onToken: (e: TokenEvent) => events.push(e) });
      assert.equal(g.stats.accepted, 30);
      assert.equal(g.stats.rejected, 0);
      const shared = distinct(g.stats.logins);
      assert.ok(shared <= 2, `${shared} distinct tokens for 30 connections`);
      assert.equal(events.length, 30); // onToken for every connection, reused or not
      assert.ok(events.filter((e) => e.reused).length >= 28);
      for (const e of events.filter((e) => e.reused)) assert.equal(e.signMs, 0);

      const control = await gateway();
      const signed: TokenEvent[] = [];
      await driver.fill(control, 30, {
        now,
        tokenReuse: false,
        onToken: (e: TokenEvent) => signed.push(e),
      });
      assert.equal(control.stats.accepted, 30);
      assert.equal(distinct(control.stats.logins), 30);
      assert.ok(signed.every((e) => !e.reused));
    },
  );

  test(
    `${name}: churn across simulated hours, every connection dropped every few steps: zero rejections, a reused token is under 5 minutes old when presented`,
    TIMEOUT,
    async () => {
      let offset = 0;
      const g = await gateway();
      const now = () => Date.now() + offset;
      const events: TokenEvent[] = [];
      // Connections opened and closed, as the client saw them (tests/_closes.ts).
      const opened = new Tally();
      const closes = new Tally();
      const extra = { max: 5, now, onToken: (e: TokenEvent) => events.push(e) };
      const sql = name === "postgres.js"
        ? postgresJs(g, {
          ...extra,
          onConnect: (e: { ok: boolean }) => e.ok && opened.add(),
          onclose: closes.add,
        })
        : undefined;
      const pool = name === "node-postgres" ? pgPool(g, extra) : undefined;
      pool?.on("connect", opened.add).on("remove", closes.add);
      const query = () =>
        sql ? sql`select pg_sleep(0.02)`.execute() : pool!.query("select pg_sleep(0.02)");
      for (let step = 0; step < 16; step++) { // 16 × 2 simulated minutes
        offset += 2 * MINUTE;
        g.clockOffsetMs = offset;
        const results = await Promise.allSettled(Array.from({ length: 6 }, query));
        assert.deepEqual(results.filter((r) => r.status === "rejected"), []);
        if (step % 4 === 3 || step % 5 === 4) { // the server drops every connection
          g.disconnectAll();
          await closes.reaches(opened.count); // none is dead but thought open
        }
      }
      assert.equal(g.stats.rejected, 0, JSON.stringify(g.stats.rejections));
      assert.ok(g.stats.accepted >= 10, `only ${g.stats.accepted} connections`);
      const ages = g.stats.logins.map((l) => l.tokenAgeMs!);
      assert.ok(ages.every((age) => age < 5 * MINUTE), `ages ${ages}`);
      // Reuse happened, across simulated minutes, and never past the 5-minute limit.
      assert.ok(ages.some((age) => age >= 2 * MINUTE), `no reuse across steps: ${ages}`);
      assert.ok(events.some((e) => e.reused) && events.some((e) => !e.reused));
    },
  );
}

test(
  "postgres.js: a token the server rejected is never presented again, even young and with the same keys; new keys are never mixed with an old token",
  TIMEOUT,
  async () => {
    const g = await testGateway([ROTATED]); // a server that knows only the rotated keys
    let keys = KEYS; // the provider still hands out the old ones
    let tick = Date.now();
    const events: TokenEvent[] = [];
    const client = postgresJs(g, {
      max: 1,
      credentials: () => Promise.resolve(keys),
      now: () => tick += 1000, // every token a new signing second, so a fresh token differs
      // postgres.js 4 answers queries with the last connect failure until its backoff has passed.
      backoff: () => 0,
      onToken: (e: TokenEvent) => events.push(e),
    });
    await assert.rejects(client`select 1`, { code: "28P01" }); // rejected, retried, rejected
    await assert.rejects(client`select 1`, { code: "28P01" }); // the same, with fresh tokens
    const shown = g.stats.logins.map((l) => l.tokenId);
    assert.equal(shown.length, 4);
    assert.equal(new Set(shown).size, 4, "a rejected token was presented again");
    assert.ok(events.every((e) => !e.reused));
    keys = ROTATED; // new keys: the young token of the old ones (if any) is not used
    assert.deepEqual([...await client`select 1 as one`], [{ one: 1 }]);
    const last = g.stats.logins.at(-1)!;
    assert.equal(last.accepted, true);
    assert.equal(last.accessKeyId, ROTATED.accessKeyId);
    assert.equal(events.at(-1)!.reused, false);
  },
);

test("postgres.js: a token within the connect timeout of its expiry is not reused; tokenReuse must be a boolean; iamPassword() takes none", async () => {
  let offset = 0;
  const g = await gateway();
  const events: TokenEvent[] = [];
  const closes = new Tally();
  // 60-second tokens, a 45-second connect timeout: reuse at most 15 seconds in, not at 20.
  const sql = postgresJs(g, {
    max: 1,
    expiresIn: 60,
    connect_timeout: 45,
    now: () => Date.now() + offset,
    onToken: (e: TokenEvent) => events.push(e),
    onclose: closes.add,
  });
  const reconnect = async () => {
    await sql`select 1`;
    await closes.reaches(closes.count + g.disconnectAll()); // the next query connects anew
  };
  await reconnect();
  offset += 10_000;
  g.clockOffsetMs = offset;
  await reconnect();
  offset += 10_000;
  g.clockOffsetMs = offset;
  await reconnect();
  assert.deepEqual(events.map((e) => e.reused), [false, true, false]);
  assert.equal(g.stats.rejected, 0);

  assert.throws(() => iamPostgres({ ...common(g), tokenReuse: "no" as never }), (e: Error) => {
    assert.ok(e instanceof TypeError);
    assert.match(e.message, /"tokenReuse" option must be a boolean, got "no"/);
    return true;
  });
  const { iamPassword } = await import("../../src/postgres/mod.ts");
  assert.throws(
    () => iamPassword({ hostname: g.endpoint, username: "app", tokenReuse: true } as never),
    /iamPassword\(\) takes no "tokenReuse" option/,
  );
  // And the connection string's iam_token_reuse=false turns it off.
  const control = await gateway();
  let tick = Date.now();
  const off = iamPostgres(
    `postgres://app@${control.host}:${control.port}/postgres?iam_token_reuse=false`,
    {
      signingHostname: control.endpoint,
      signingPort: 5432,
      credentials: KEYS,
      ssl: { ca },
      max: 3,
      now: () => tick += 1000,
    },
  );
  closers.push(() => off.end({ timeout: 1 }));
  await Promise.all([1, 2, 3].map(() => off`select pg_sleep(0.05)`));
  assert.equal(distinct(control.stats.logins), 3);
});

test(
  "bun: a client of 10 filling at once presents one or two distinct tokens; tokenReuse: false signs for each (the control)",
  ON_BUN,
  async () => {
    let tick = Date.now();
    const now = () => tick += 1000;
    const g = await gateway();
    const sql = bunSql(g, { max: 10, now });
    await Promise.all(Array.from({ length: 10 }, () => sql`select pg_sleep(0.05)`));
    assert.equal(g.stats.accepted, 10);
    assert.ok(distinct(g.stats.logins) <= 2, `${distinct(g.stats.logins)} distinct tokens`);
    const control = await gateway();
    const off = bunSql(control, { max: 10, now, tokenReuse: false });
    await Promise.all(Array.from({ length: 10 }, () => off`select pg_sleep(0.05)`));
    assert.equal(control.stats.accepted, 10);
    assert.equal(distinct(control.stats.logins), 10);
  },
);
