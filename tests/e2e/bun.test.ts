// End to end: Bun's built-in client through iamSql() → the IAM-verifying gateway → a real
// PostgreSQL server. Bun only: on Node and Deno each test is skipped, saying so (and iamSql() there
// is an error that says what to use instead, checked below on every runtime).
import { after, test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { rdsToken } from "../../mod.ts";
import {
  type BunSqlClient,
  iamSql,
  type IamSqlOptions,
  prewarm,
  type TokenEvent,
} from "../../src/bun/mod.ts";
import type { Gateway, GatewayOptions } from "../../src/gateway/mod.ts";
import { closeTestGateways, RDS, testGateway } from "../_gateway.ts";
import { ca } from "../fixtures/tls.ts";
import { rdsCa } from "../../src/connection/tls.ts";
import { upstreamPostgres } from "../_postgres.ts";
import { Tally } from "../_closes.ts";
import { churn } from "../_churn.ts";

const DSQL = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
const KEYS = { accessKeyId: "AKIDPGIAMBUN", secretAccessKey: "pg-iam/bun/secret/key" };
const MINUTE = 60_000;
const BUN = (globalThis as { Bun?: { SQL?: unknown } }).Bun?.SQL !== undefined;
const ON_BUN = { skip: BUN ? false : "Bun.SQL is Bun's own client", timeout: 60_000 };

const clients: BunSqlClient[] = [];
after(async () => {
  await Promise.all(clients.map((c) => c.close({ timeout: 0 }).catch(() => {})));
  await closeTestGateways();
});

function gateway(extra: Partial<GatewayOptions> = {}): Promise<Gateway> {
  return testGateway(KEYS, extra);
}

function client(g: Gateway, extra: IamSqlOptions = {}): BunSqlClient {
  const sql = iamSql({
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
  clients.push(sql);
  return sql;
}

test("iamSql() outside Bun is an error that names the clients to use instead", () => {
  if (BUN) return; // the control on Bun: every other test here
  assert.throws(() => iamSql("postgres://app@db.example.com/app"), (e: Error) => {
    assert.ok(e instanceof TypeError);
    assert.match(e.message, /iamPostgres\(\).*iamPool\(\)/);
    return true;
  });
});

test(
  "bun: a client of 5 under churn across two simulated hours: zero failures, a token for every connection",
  ON_BUN,
  async () => {
    const g = await gateway();
    await churn(g, (now) => {
      const tokens: TokenEvent[] = [];
      const closes = new Tally();
      const sql = client(g, {
        max: 5,
        maxLifetime: 2,
        idleTimeout: 1,
        now,
        onToken: (e) => tokens.push(e),
        onclose: closes.add,
      });
      return {
        query: async () =>
          (await sql`select pg_backend_pid() as pid, pg_sleep(0.02)` as { pid: number }[])[0].pid,
        // Bun.SQL tells of no connection opening: the gateway's count of accepted logins.
        opened: () => g.stats.accepted,
        closes,
        tokens,
        end: () => sql.close(),
      };
    });
  },
);

test(
  "bun: negative control: Bun.SQL given one fixed token fails once the clock passes 15 minutes",
  ON_BUN,
  async () => {
    const g = await gateway();
    const token = await rdsToken({ hostname: RDS, username: "app", credentials: KEYS });
    const SQL =
      (globalThis as unknown as { Bun: { SQL: new (o: object) => BunSqlClient } }).Bun.SQL;
    const closes = new Tally();
    const frozen = new SQL({
      hostname: g.host,
      port: g.port,
      username: "app",
      database: "postgres",
      password: token,
      tls: { ca, serverName: RDS, rejectUnauthorized: true },
      max: 1,
      onclose: closes.add,
    });
    clients.push(frozen);
    assert.deepEqual([...await frozen`select 1 as one`], [{ one: 1 }]);
    g.clockOffsetMs = 16 * MINUTE;
    await closes.reaches(closes.count + g.disconnectAll()); // Bun.SQL saw its connection close
    await assert.rejects(frozen`select 1`, (e: Error & { errno?: string }) => e.errno === "28P01");
    const fresh = client(g, { now: () => Date.now() + 16 * MINUTE, max: 1 });
    assert.deepEqual([...await fresh`select 1 as one`], [{ one: 1 }]);
  },
);

test(
  "bun: a rejected token fails its query; the next connection signs with force-refreshed credentials",
  ON_BUN,
  async () => {
    const g = await gateway();
    const calls: boolean[] = [];
    const sql = client(g, {
      max: 1,
      credentials: (o?: { forceRefresh?: boolean }) => {
        calls.push(o?.forceRefresh === true);
        return o?.forceRefresh ? KEYS : { accessKeyId: "AKIDSTALE", secretAccessKey: "stale" };
      },
    });
    await assert.rejects(sql`select 1`, (e: Error & { errno?: string }) => e.errno === "28P01");
    assert.deepEqual([...await sql`select 1 as one`], [{ one: 1 }]);
    assert.deepEqual(calls, [false, true]);
  },
);

test(
  "bun: a throwing or hanging credentials provider fails the query clearly; the client lives on",
  ON_BUN,
  async () => {
    const g = await gateway();
    let mode: "throw" | "hang" | "ok" = "throw";
    const sql = client(g, {
      max: 2,
      credentialsTimeout: 0.2,
      credentials: () => {
        if (mode === "throw") throw new Error("SSO session expired");
        if (mode === "hang") return new Promise<typeof KEYS>(() => {});
        return KEYS;
      },
    });
    for (let i = 0; i < 3; i++) await assert.rejects(sql`select 1`, /credentials/);
    mode = "hang";
    await assert.rejects(sql`select 1`, /credentialsTimeout/);
    mode = "ok";
    assert.deepEqual([...await sql`select 1 as one`], [{ one: 1 }]);
    assert.equal(g.stats.rejected, 0);
  },
);

test(
  "bun: TLS is verified by default: no CA or another name fails before any token is sent; require encrypts only",
  ON_BUN,
  async () => {
    const g = await gateway();
    await assert.rejects(client(g, { ssl: undefined, max: 1 })`select 1`, /verify|certificate/i);
    await assert.rejects(
      client(g, {
        signingHostname: "db.cluster-zzz999zzz.us-east-1.rds.amazonaws.com",
        max: 1,
      })`select 1`,
      /is not for the name "db\.cluster-zzz999zzz[^"]*"\. .*Set signingHostname/,
    );
    assert.equal(g.stats.logins.length, 0);
    assert.deepEqual([...await client(g, { ssl: "require", max: 1 })`select 1 as one`], [{
      one: 1,
    }]);
  },
);

test(
  "bun: DSQL admin signs DbConnectAdmin, other roles DbConnect; lifetime below 60 minutes",
  ON_BUN,
  async () => {
    const g = await gateway({ endpoint: DSQL });
    assert.deepEqual([...await client(g, { user: "admin", max: 1 })`select 1 as one`], [{
      one: 1,
    }]);
    assert.deepEqual([...await client(g, { user: "app", max: 1 })`select 1 as one`], [{ one: 1 }]);
    await assert.rejects(client(g, { user: "app", admin: true, max: 1 })`select 1`);
    assert.deepEqual(
      g.stats.logins.map((l) => [l.accepted, l.action ?? l.reason]),
      [[true, "DbConnectAdmin"], [true, "DbConnect"], [false, "action"]],
    );
    const sql = client(g, { user: "admin", max: 1 });
    // Bun keeps it in milliseconds.
    const lifetime = (sql as unknown as { options: { maxLifetime: number } }).options.maxLifetime;
    assert.ok(lifetime >= 45 * MINUTE && lifetime <= 55 * MINUTE, String(lifetime));
    assert.throws(() => client(g, { maxLifetime: 3600 }), RangeError);
  },
);

test(
  "bun: a connection string's libpq and iam_* parameters are honoured and never sent; prewarm opens n",
  ON_BUN,
  async () => {
    const g = await gateway();
    const url = `postgres://app@${g.host}:${g.port}/postgres?iam_host=${RDS}&iam_port=5432` +
      `&application_name=bun_app`;
    const sql = iamSql(url, { credentials: KEYS, ssl: { ca }, max: 3 });
    clients.push(sql);
    assert.deepEqual(await prewarm(sql, 3), { opened: 3, errors: [] });
    const rows = await sql`select name, setting from pg_settings where source = 'client'` as {
      name: string;
      setting: string;
    }[];
    const settings = Object.fromEntries(rows.map((r) => [r.name, r.setting]));
    assert.equal(settings.application_name, "bun_app");
    assert.equal(settings.iam_host, undefined);
    assert.ok(g.stats.accepted >= 3);
    assert.throws(() => iamSql(`postgres://app:secret@${g.host}/postgres`), /password/);
  },
);

test(
  "bun: DATABASE_URL in the environment, with pg-iam's parameters, is never read by Bun.SQL behind iamSql (the control: plain Bun.SQL sends them)",
  ON_BUN,
  async () => {
    const g = await gateway();
    const up = await upstreamPostgres();
    const saved = process.env.DATABASE_URL;
    process.env.DATABASE_URL =
      `postgres://${up.user}@${up.host}:${up.port}/postgres?iam_host=${g.endpoint}`;
    try {
      const sql = client(g, { max: 1 });
      assert.equal([...await sql`select 1 as one`][0].one, 1);
      // The control: Bun.SQL on its own reads the variable and sends its parameters.
      const bun = (globalThis as unknown as { Bun: { SQL: new (o: object) => BunSqlClient } }).Bun;
      const plain = new bun.SQL({
        hostname: up.host,
        port: up.port,
        username: up.user,
        database: "postgres",
        max: 1,
      });
      await assert.rejects(plain`select 1`, /unrecognized configuration parameter "iam_host"/);
      await plain.close({ timeout: 0 });
    } finally {
      if (saved === undefined) delete process.env.DATABASE_URL;
      else process.env.DATABASE_URL = saved;
    }
  },
);

test(
  "bun: the certificate is checked for the signing name without SNI too (Bun alone checks the address), and a wrong CA names sslrootcert, as with the other drivers",
  ON_BUN,
  async () => {
    const g = await gateway();
    const SQL =
      (globalThis as unknown as { Bun: { SQL: new (o: object) => BunSqlClient } }).Bun.SQL;
    const plain = (tls: object) => {
      const sql = new SQL({
        hostname: g.host,
        port: g.port,
        username: "app",
        database: "postgres",
        password: "not a token",
        tls,
        max: 1,
      });
      clients.push(sql);
      return sql;
    };
    const url = `postgres://app@${g.host}:${g.port}/postgres?sslsni=0`;
    const other = "db.cluster-zzz999zzz.us-east-1.rds.amazonaws.com";
    const sni0 = { signingPort: 5432, credentials: KEYS, ssl: { ca }, max: 1 };
    // Without SNI, a certificate not for the signing name fails before any token is sent…
    const wrongName = iamSql(url, { ...sni0, signingHostname: other });
    clients.push(wrongName);
    await assert.rejects(wrongName`select 1`, (e: Error & { code?: string }) => {
      assert.equal(e.code, "ERR_TLS_CERT_ALTNAME_INVALID");
      assert.match(
        e.message,
        /is not for the name "db\.cluster-zzz999zzz[^"]*"\. .*signingHostname/,
      );
      return true;
    });
    assert.equal(g.stats.logins.length, 0);
    // …where Bun.SQL itself checks the address it connects to (the test certificate has
    // 127.0.0.1), and logs in (the control).
    await assert.rejects(plain({ ca, rejectUnauthorized: true })`select 1`);
    assert.equal(g.stats.logins.length, 1);
    const right = iamSql(url, { ...sni0, signingHostname: RDS });
    clients.push(right);
    assert.deepEqual([...await right`select 1 as one`], [{ one: 1 }]);

    // The RDS CA bundle (the default) does not lead to the test CA: the error says what was
    // trusted and how to pass another CA; Bun.SQL's own error does not (the control).
    const wrongCa = client(g, { ssl: undefined, max: 1 });
    await assert.rejects(wrongCa`select 1`, (e: Error & { code?: string }) => {
      assert.match(e.code!, /^(UNABLE_TO_|SELF_SIGNED)/);
      assert.match(e.message, /the RDS CA bundle.*sslrootcert=<file>/);
      return true;
    });
    await assert.rejects(
      plain({ ca: await rdsCa(), serverName: RDS, rejectUnauthorized: true })`select 1`,
      (e: Error) => !/sslrootcert/.test(e.message),
    );
    assert.equal(g.stats.logins.length, 2);
  },
);
