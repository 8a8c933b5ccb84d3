// End to end: node-postgres through iamPool()/iamClient() → the IAM-verifying gateway (TLS, SigV4
// checked against the gateway's clock) → a real PostgreSQL server. The same proofs as for
// postgres.js (tests/e2e/postgres.test.ts), each with its negative control.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";
import { rdsToken } from "../../mod.ts";
import {
  type ConnectEvent,
  iamClient,
  iamPool,
  type IamPoolConfig,
  prewarm,
  type TokenEvent,
} from "../../src/pg/mod.ts";
import type { Gateway, GatewayOptions } from "../../src/gateway/mod.ts";
import { closeTestGateways, RDS, testGateway } from "../_gateway.ts";
import { upstreamPostgres } from "../_postgres.ts";
import { ca } from "../fixtures/tls.ts";
import { Tally } from "../_closes.ts";
import { churn } from "../_churn.ts";

const DSQL = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
const KEYS = { accessKeyId: "AKIDPGIAMPG", secretAccessKey: "pg-iam/node-postgres/secret/key" };
const MINUTE = 60_000;
const TIMEOUT = { timeout: 60_000 };

const pools: pg.Pool[] = [];
after(async () => {
  await Promise.all(pools.map((p) => p.end().catch(() => {})));
  await closeTestGateways();
});

function gateway(extra: Partial<GatewayOptions> = {}): Promise<Gateway> {
  return testGateway(KEYS, extra);
}

/** A pool for the gateway: connects to 127.0.0.1, signs for the endpoint, trusts the test CA. */
function pool(g: Gateway, extra: Partial<IamPoolConfig> = {}): pg.Pool {
  const p = iamPool({
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    signingHostname: g.endpoint,
    ...(g.service === "rds" ? { signingPort: 5432 } : {}),
    credentials: KEYS,
    ssl: { ca },
    ...extra,
  });
  p.on("error", () => {}); // idle clients dropped by the gateway's kills
  pools.push(p);
  return p;
}

/** The clients `p` has dropped (its `remove` event: after a close it saw, or an idle timeout). */
function removals(p: pg.Pool): Tally {
  const removed = new Tally();
  p.on("remove", removed.add);
  return removed;
}

/**
 * Drops every connection on the gateway's side and waits until the pool has removed each client:
 * a query sent before that could be given a client whose connection is dead.
 */
async function killAll(g: Gateway, removed: Tally): Promise<void> {
  await removed.reaches(removed.count + g.disconnectAll());
}

test(
  "pg: a pool of 5 under churn across two simulated hours: zero failures, a token signed for every connection",
  TIMEOUT,
  async () => {
    const g = await gateway();
    await churn(g, (now) => {
      const tokens: TokenEvent[] = [];
      const connects: ConnectEvent[] = [];
      const p = pool(g, {
        max: 5,
        maxLifetimeSeconds: 2,
        idleTimeoutMillis: 1000,
        now,
        onToken: (e) => tokens.push(e),
        onIamConnect: (e) => connects.push(e),
      });
      return {
        query: async () =>
          (await p.query("select pg_backend_pid() as pid, pg_sleep(0.02)")).rows[0].pid,
        opened: () => connects.filter((e) => e.ok).length,
        closes: removals(p),
        tokens,
        connects,
        end: () => p.end(),
      };
    });
  },
);

test(
  "pg: negative control: a pool given one fixed password fails once the clock passes 15 minutes",
  TIMEOUT,
  async () => {
    const g = await gateway();
    const token = await rdsToken({ hostname: RDS, username: "app", credentials: KEYS });
    const p = new pg.Pool({
      host: g.host,
      port: g.port,
      user: "app",
      database: "postgres",
      password: token, // frozen into the pool, as in seed 000
      ssl: { ca, servername: RDS },
      max: 2,
    });
    p.on("error", () => {});
    pools.push(p);
    const removed = removals(p);
    assert.equal((await p.query("select 1 as one")).rows[0].one, 1);
    g.clockOffsetMs = 16 * MINUTE;
    await killAll(g, removed);
    await assert.rejects(p.query("select 1"), { code: "28P01" });
    // The same clock with iamPool: a fresh token, accepted.
    const fresh = pool(g, { now: () => Date.now() + 16 * MINUTE });
    assert.equal((await fresh.query("select 1 as one")).rows[0].one, 1);
  },
);

test(
  "pg: a rejected token is retried once with force-refreshed credentials; twice is an IamAuthError without the token",
  TIMEOUT,
  async () => {
    const g = await gateway();
    const calls: boolean[] = [];
    const p = pool(g, {
      credentials: (o?: { forceRefresh?: boolean }) => {
        calls.push(o?.forceRefresh === true);
        return o?.forceRefresh ? KEYS : { accessKeyId: "AKIDSTALE", secretAccessKey: "stale" };
      },
    });
    assert.equal((await p.query("select 1 as one")).rows[0].one, 1);
    assert.deepEqual(calls, [false, true]);
    const bad = pool(g, { credentials: { accessKeyId: "AKIDOTHER", secretAccessKey: "other" } });
    await assert.rejects(bad.query("select 1"), (e: Error & { code?: string }) => {
      assert.equal(e.name, "IamAuthError");
      assert.equal(e.code, "28P01");
      assert.match(e.message, /rejected twice/);
      assert.doesNotMatch(e.message, /X-Amz-Signature|other/);
      return true;
    });
    assert.equal(g.stats.rejections["unknown-access-key"], 3);
  },
);

test(
  "pg: a credentials provider that throws or hangs fails the query clearly; the process and the pool live on",
  TIMEOUT,
  async () => {
    const g = await gateway();
    let mode: "throw" | "hang" | "ok" = "throw";
    const p = pool(g, {
      max: 2,
      credentialsTimeout: 0.2,
      credentials: () => {
        if (mode === "throw") throw new Error("SSO session expired");
        if (mode === "hang") return new Promise<typeof KEYS>(() => {});
        return KEYS;
      },
    });
    for (let i = 0; i < 4; i++) { // more failures than pool slots: a leaked slot would hang
      await assert.rejects(p.query("select 1"), { name: "CredentialsError" });
    }
    mode = "hang";
    await assert.rejects(p.query("select 1"), /credentialsTimeout/);
    mode = "ok";
    assert.equal((await p.query("select 1 as one")).rows[0].one, 1);
    assert.equal(g.stats.rejected, 0);
  },
);

test(
  "pg: what node-postgres does with a password function that rejects or hangs (why pg-iam gives it a stream instead)",
  TIMEOUT,
  async () => {
    const g = await gateway();
    const base = { host: g.host, port: g.port, user: "app", database: "postgres" };
    const ssl = { ca, servername: RDS };
    // A rejecting password function fails that connect cleanly (pg 8): no crash, no retry.
    const rejecting = new pg.Client({
      ...base,
      ssl,
      password: () => Promise.reject(new Error("nope")),
    });
    await assert.rejects(rejecting.connect(), /nope/);
    // A hanging one hangs the connect until connectionTimeoutMillis, with no word of why.
    const hanging = new pg.Client({
      ...base,
      ssl,
      password: () => new Promise<string>(() => {}),
      connectionTimeoutMillis: 300,
    });
    await assert.rejects(hanging.connect(), /timeout/i);
    // pg-iam: the same hang is cut by credentialsTimeout and says so.
    const iam = iamClient({
      ...base,
      signingHostname: RDS,
      signingPort: 5432,
      ssl: { ca },
      credentials: () => new Promise<typeof KEYS>(() => {}),
      credentialsTimeout: 0.2,
    });
    await assert.rejects(iam.connect(), /credentialsTimeout/);
  },
);

test(
  "pg: TLS is verified: an untrusted CA names the CA source, another name suggests signingHostname",
  TIMEOUT,
  async () => {
    const g = await gateway();
    const noCa = pool(g, { ssl: undefined });
    await assert.rejects(noCa.query("select 1"), (e: Error) => {
      assert.match(e.message, /RDS CA bundle/);
      assert.doesNotMatch(e.message, /signingHostname/);
      return true;
    });
    const otherName = pool(g, {
      signingHostname: "db.cluster-zzz999zzz.us-east-1.rds.amazonaws.com",
    });
    await assert.rejects(otherName.query("select 1"), /signingHostname/);
    assert.equal(g.stats.logins.length, 0); // no token was ever sent
    // The control: require encrypts without checking, and logs in.
    const require = pool(g, { ssl: "require" });
    assert.equal((await require.query("select 1 as one")).rows[0].one, 1);
  },
);

test(
  "pg: DSQL admin signs DbConnectAdmin, other roles DbConnect; lifetimes stay below 60 minutes, jittered",
  TIMEOUT,
  async () => {
    const g = await gateway({ endpoint: DSQL });
    const admin = pool(g, { user: "admin" });
    const app = pool(g, { user: "app" });
    const appAsAdmin = pool(g, { user: "app", admin: true });
    assert.equal((await admin.query("select 1 as one")).rows[0].one, 1);
    assert.equal((await app.query("select 1 as one")).rows[0].one, 1);
    await assert.rejects(appAsAdmin.query("select 1"), { name: "IamAuthError" });
    assert.equal(g.stats.rejections.action, 2);
    const options = (admin as unknown as { options: { maxLifetimeSeconds: number } }).options;
    const lifetimes = Array.from({ length: 50 }, () => options.maxLifetimeSeconds);
    assert.ok(lifetimes.every((s) => s >= 45 * 60 && s <= 55 * 60), String(lifetimes));
    assert.ok(new Set(lifetimes).size > 40); // jittered per client
    assert.throws(() => pool(g, { maxLifetimeSeconds: 3600 }), RangeError);
    // The control: RDS keeps pg's default (no lifetime).
    const rds = pool(await gateway());
    assert.equal(
      (rds as unknown as { options: { maxLifetimeSeconds: number } }).options.maxLifetimeSeconds,
      0,
    );
  },
);

test(
  "pg: a connectionString with libpq and iam_* parameters, none sent to the server; a password in it is refused",
  TIMEOUT,
  async () => {
    const g = await gateway();
    const url = `postgres://app@${g.host}:${g.port}/postgres?iam_host=${RDS}&iam_port=5432` +
      `&application_name=pg_app&options=-c%20search_path%3Dpg_catalog&connect_timeout=10`;
    const p = iamPool({ connectionString: url, credentials: KEYS, ssl: { ca } });
    pools.push(p);
    const { rows } = await p.query("select name, setting from pg_settings where source = 'client'");
    const settings = Object.fromEntries(rows.map((r) => [r.name, r.setting]));
    assert.equal(settings.application_name, "pg_app");
    assert.equal(settings.search_path, "pg_catalog");
    assert.equal(settings.iam_host, undefined);
    assert.throws(
      () => iamPool({ connectionString: `postgres://app:secret@${g.host}/postgres` }),
      (e: Error) =>
        e instanceof TypeError && /password/.test(e.message) && !/secret/.test(e.message),
    );
    assert.throws(() => iamPool({ password: "x" } as IamPoolConfig), /password/);
    assert.throws(
      () => iamPool({ host: RDS, user: "app", dangerouslyUsePlatformCas: "yes" as never }),
      (e: Error) =>
        e instanceof TypeError &&
        /"dangerouslyUsePlatformCas" option must be a boolean, got "yes"/.test(e.message),
    );
  },
);

test(
  "pg: prewarm opens n connections ahead of traffic and reports their timings",
  TIMEOUT,
  async () => {
    const g = await gateway();
    const connects: ConnectEvent[] = [];
    const p = pool(g, { max: 4, onIamConnect: (e) => connects.push(e) });
    const result = await prewarm(p, 4);
    assert.deepEqual(result, { opened: 4, errors: [] });
    assert.equal(p.totalCount, 4);
    assert.equal(p.idleCount, 4);
    assert.equal(connects.length, 4);
    for (const e of connects) {
      assert.ok(e.ok && e.timings.totalMs >= e.timings.tlsMs && e.timings.authMs > 0);
    }
    assert.equal(g.stats.accepted, 4);
  },
);

test("pg: wrong region, wrong user and wrong signing host give clear errors", TIMEOUT, async () => {
  const up = await upstreamPostgres();
  const g = await gateway({ upstream: { host: up.host, port: up.port } }); // the client's user

  // A region that contradicts the endpoint name is caught before any connection.
  assert.throws(() => pool(g, { region: "us-west-2" }), (e: Error) => {
    assert.ok(e instanceof RangeError);
    assert.match(e.message, /us-west-2/);
    return true;
  });
  // A region the gateway does not expect (the name carries none: a CNAME), and the hint for it.
  const cname = pool(g, {
    signingHostname: "db.example.com",
    region: "eu-west-1",
    ssl: { ca, servername: RDS },
  });
  await assert.rejects(cname.query("select 1"), (e: Error) => {
    assert.equal(e.name, "IamAuthError");
    assert.match(e.message, /eu-west-1/);
    assert.match(e.message, /CNAME/);
    return true;
  });
  // A user the database does not have: the token is good, the server refuses the role.
  const nobody = pool(g, { user: "nosuchuser" });
  await assert.rejects(nobody.query("select 1"), /role "nosuchuser" does not exist/);
  assert.equal(g.stats.rejections.scope, 2);
  assert.equal(g.stats.accepted, 1);
});

test(
  "pg: pipeline: true sends a client's queries through pg-iam's socket before the first result is in; without it, one at a time (the control)",
  TIMEOUT,
  async () => {
    const g = await gateway();
    for (const pipeline of [true, false]) {
      const client = await pool(g, { max: 1, pipeline }).connect();
      try {
        assert.equal(client.pipeline, pipeline);
        const log: string[] = [];
        /** A query that notes when node-postgres writes it and when its answer is in. */
        const run = (n: number) =>
          new Promise<unknown>((resolve) => {
            const text = n === 3
              ? "select 1/0" // an error in the middle: each pipelined query has its own Sync
              : `select pg_backend_pid() as pid, ${n} as n`;
            const query = new pg.Query(text, (error, result) => {
              log.push(`done ${n}`);
              resolve(error ?? result.rows[0]);
            });
            const submit = query.submit.bind(query);
            query.submit = (connection) => (log.push(`sent ${n}`), submit(connection));
            client.query(query);
          });
        const results = await Promise.all([1, 2, 3, 4, 5].map(run));
        const sent = [1, 2, 3, 4, 5].map((n) => `sent ${n}`);
        const done = [1, 2, 3, 4, 5].map((n) => `done ${n}`);
        assert.deepEqual(
          log,
          pipeline ? [...sent, ...done] : sent.flatMap((s, i) => [s, done[i]]),
          `pipeline: ${pipeline}`,
        );
        const rows = results.filter((r) => !(r instanceof Error)) as { pid: number; n: number }[];
        assert.deepEqual(rows.map((r) => r.n), [1, 2, 4, 5]);
        assert.equal(new Set(rows.map((r) => r.pid)).size, 1); // one connection
        assert.equal((results[2] as { code?: string }).code, "22012");
      } finally {
        client.release();
      }
    }
    assert.equal(g.stats.accepted, 2);
  },
);
