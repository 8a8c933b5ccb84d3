// End to end: postgres.js through iamPostgres() → the IAM-verifying gateway (TLS, SigV4 checked
// against the gateway's clock) → a real PostgreSQL server (Debian's, started by tests/_postgres.ts)
// and the embedded PGlite. Every claim has its negative control next to it.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import postgres from "postgres";
import { rdsToken } from "../../mod.ts";
import {
  type ConnectError,
  type ConnectEvent,
  iamPassword,
  iamPostgres,
  prewarm,
  type TokenEvent,
} from "../../src/postgres/mod.ts";
import { type Gateway, type GatewayOptions, startGateway } from "../../src/gateway/mod.ts";
import { startPglite } from "../../src/gateway/pglite.ts";
import { upstreamPostgres } from "../_postgres.ts";
import { ca, cert, key } from "../fixtures/tls.ts";
import { withEnv } from "../_env.ts";
import { Tally } from "../_closes.ts";
import { churn } from "../_churn.ts";
import { postgresMajor } from "../_postgres_major.mjs";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { rdsCa } from "../../src/connection/tls.ts";

const RDS = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";
const DSQL = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
const KEYS = { accessKeyId: "AKIDPGIAMTEST", secretAccessKey: "pg-iam/test/secret/key/0123456789" };
const OTHER = { accessKeyId: "AKIDUNKNOWN", secretAccessKey: "not-known-to-the-gateway" };
const MINUTE = 60_000;

const gateways: Gateway[] = [];
after(async () => {
  await Promise.all(gateways.map((g) => g.close()));
});

async function gateway(extra: Partial<GatewayOptions> = {}): Promise<Gateway> {
  const pg = await upstreamPostgres();
  const g = await startGateway({
    endpoint: RDS,
    credentials: KEYS,
    upstream: { host: pg.host, port: pg.port, user: pg.user },
    tls: { cert, key },
    ...extra,
  });
  gateways.push(g);
  return g;
}

/** A client for the gateway: connects to 127.0.0.1, signs for the endpoint, trusts the test CA. */
function client(g: Gateway, extra: Record<string, unknown> = {}) {
  return iamPostgres({
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    signingHostname: g.endpoint,
    ...(g.service === "rds" ? { signingPort: 5432 } : {}),
    credentials: KEYS,
    ssl: { ca },
    onnotice: () => {},
    ...extra,
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Drops every connection on the gateway's side and waits until the client has seen each close
 * (`closes`: postgres.js's `onclose`): a query sent before that would go to a dead connection.
 */
async function killAll(g: Gateway, closes: Tally): Promise<void> {
  await closes.reaches(closes.count + g.disconnectAll());
}

// About 4 s of real time: past bun test's default per-test limit of 5 s on a loaded machine.
test(
  "a pool of 5 under churn across two simulated hours: zero failures, every connection presented a token signed as it connected",
  { timeout: 60_000 },
  async () => {
    const g = await gateway();
    await churn(g, (now) => {
      const tokens: TokenEvent[] = [];
      const connects: ConnectEvent[] = [];
      const closes = new Tally();
      const sql = client(g, {
        max: 5,
        max_lifetime: 2, // seconds, real time: connections recycle during the run
        idle_timeout: 1,
        now,
        onToken: (e: TokenEvent) => tokens.push(e),
        onConnect: (e: ConnectEvent) => connects.push(e),
        onclose: closes.add,
      });
      return {
        query: async () => (await sql`select pg_backend_pid() as pid, pg_sleep(0.02)`)[0].pid,
        opened: () => connects.filter((e) => e.ok).length,
        closes,
        tokens,
        connects,
        end: () => sql.end(),
      };
    });
  },
);

test("negative control: the same pool given one fixed token fails once the clock passes 15 minutes", async () => {
  const g = await gateway();
  const token = await rdsToken({
    hostname: RDS,
    port: 5432,
    username: "app",
    credentials: KEYS,
  });
  const closes = new Tally();
  const sql = postgres({
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    password: token, // frozen into the pool, as in seed 000
    ssl: { ca, servername: RDS },
    max: 5,
    onnotice: () => {},
    onclose: closes.add,
  });
  try {
    assert.equal((await sql`select 1 as one`)[0].one, 1); // fresh: accepted
    g.clockOffsetMs = 14 * MINUTE;
    await killAll(g, closes);
    assert.equal((await sql`select 1 as one`)[0].one, 1); // 14 minutes: still accepted
    g.clockOffsetMs = 16 * MINUTE;
    await killAll(g, closes);
    await assert.rejects(sql`select 1`, (e: Error & { code?: string }) => {
      assert.equal(e.code, "28P01");
      assert.match(e.message, /PAM authentication failed for user "app"/);
      return true;
    });
    assert.equal(g.stats.rejections.expired, 1);
  } finally {
    await sql.end();
  }
});

test("a rejected token is retried once on a new connection with force-refreshed credentials", async () => {
  const g = await gateway();
  const calls: boolean[] = [];
  const provider = (o?: { forceRefresh?: boolean }) => {
    calls.push(o?.forceRefresh === true);
    return Promise.resolve(o?.forceRefresh ? KEYS : OTHER); // stale keys until forced
  };
  const connects: ConnectEvent[] = [];
  const sql = client(g, {
    credentials: provider,
    onConnect: (e: ConnectEvent) => connects.push(e),
  });
  try {
    assert.equal((await sql`select 1 as one`)[0].one, 1);
  } finally {
    await sql.end();
  }
  assert.deepEqual(calls, [false, true]);
  assert.equal(g.stats.rejections["unknown-access-key"], 1);
  assert.equal(g.stats.accepted, 1);
  assert.equal(connects[0].attempts, 2);
});

test("negative control: a token rejected twice fails the query with an explanation, never the token", async () => {
  const g = await gateway();
  const sql = client(g, { credentials: OTHER });
  let message = "";
  try {
    await assert.rejects(sql`select 1`, (e: Error & { code?: string; name: string }) => {
      assert.equal(e.name, "IamAuthError");
      assert.equal(e.code, "28P01");
      message = e.message;
      return true;
    });
  } finally {
    await sql.end();
  }
  assert.match(message, /PAM authentication failed for user "app"/);
  assert.match(message, /rejected twice/);
  assert.match(message, /rds_iam/);
  assert.match(message, /signingHostname/);
  assert.match(message, /clock/);
  assert.doesNotMatch(message, /X-Amz-Signature|not-known-to-the-gateway/);
  assert.equal(g.stats.rejections["unknown-access-key"], 2);
});

test("DSQL: admin connects with DbConnectAdmin, other roles with DbConnect; the gateway enforces both", async () => {
  const g = await gateway({ endpoint: DSQL });
  const admin = client(g, { user: "admin" });
  const app = client(g, { user: "app" });
  const appAsAdmin = client(g, { user: "app", admin: true });
  const adminAsApp = client(g, { user: "admin", admin: false });
  try {
    assert.equal((await admin`select 1 as one`)[0].one, 1);
    assert.equal((await app`select 1 as one`)[0].one, 1);
    // Negative controls: the wrong action for the role is rejected (twice: the retry).
    await assert.rejects(appAsAdmin`select 1`, { name: "IamAuthError", code: "28P01" });
    await assert.rejects(adminAsApp`select 1`, { name: "IamAuthError", code: "28P01" });
  } finally {
    await Promise.all([admin.end(), app.end(), appAsAdmin.end(), adminAsApp.end()]);
  }
  assert.equal(g.stats.accepted, 2);
  assert.equal(g.stats.rejections.action, 4);
  assert.deepEqual(
    g.stats.logins.filter((l) => l.accepted).map((l) => l.action).sort(),
    ["DbConnect", "DbConnectAdmin"],
  );
});

test("wrong region, wrong user, wrong signing host and expired credentials give clear errors", async () => {
  const g = await gateway();
  // Region: contradicting the endpoint name is caught before any connection.
  assert.throws(() => client(g, { region: "us-west-2" }), (e: Error) => {
    assert.ok(e instanceof RangeError);
    assert.match(e.message, /us-west-2/);
    return true;
  });
  // A region the gateway does not expect (the endpoint name carries none: a CNAME).
  const cname = client(g, {
    signingHostname: "db.example.com",
    region: "eu-west-1",
    ssl: { ca, servername: RDS },
  });
  await assert.rejects(
    cname`select 1`,
    (e: Error) => /eu-west-1/.test(e.message) && /CNAME/.test(e.message),
  );
  // User: a token signed for another user (iamPassword, building the client by hand).
  const errors: Error[] = [];
  const wrongUser = postgres({
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    ssl: { ca, servername: RDS },
    password: iamPassword({ hostname: RDS, username: "someone_else", credentials: KEYS }),
    onnotice: () => {},
  });
  await assert.rejects(wrongUser`select 1`, { code: "28P01" });
  // Signing host: another cluster's name.
  const otherHost = client(g, {
    signingHostname: "db.cluster-zzz999zzz.us-east-1.rds.amazonaws.com",
    ssl: { ca, servername: RDS },
  });
  await assert.rejects(otherHost`select 1`, { name: "IamAuthError" });
  // Expired credentials never reach the server.
  const before = g.stats.logins.length;
  const expired = client(g, {
    credentials: { ...KEYS, expiration: new Date(Date.now() - MINUTE) },
  });
  await assert.rejects(expired`select 1`, (e: Error & { code?: string }) => {
    assert.equal(e.name, "CredentialsError");
    assert.equal(e.code, "expired");
    return true;
  });
  assert.equal(g.stats.logins.length, before);
  await Promise.all([cname.end(), wrongUser.end(), otherHost.end(), expired.end()]);
  assert.equal(errors.length, 0);
  assert.ok((g.stats.rejections.user ?? 0) >= 1);
  assert.ok((g.stats.rejections.host ?? 0) >= 2);
  assert.ok((g.stats.rejections.scope ?? 0) >= 2);
});

test("a credentials provider that throws or hangs fails the query clearly; the process and the pool live on", async () => {
  const g = await gateway();
  let mode: "throw" | "hang" | "ok" = "throw";
  const provider = () => {
    if (mode === "throw") throw new Error("SSO session expired");
    if (mode === "hang") return new Promise<typeof KEYS>(() => {});
    return Promise.resolve(KEYS);
  };
  // backoff: 0: postgres.js 4 answers queries with the last connect failure until its backoff
  // has passed; every query here must try a connection of its own.
  const sql = client(g, {
    credentials: provider,
    credentialsTimeout: 0.2,
    max: 2,
    backoff: () => 0,
  });
  try {
    // More failures than pool slots: a leaked slot would make a later query hang.
    for (let i = 0; i < 4; i++) {
      await assert.rejects(sql`select 1`, (e: Error & { code?: string }) => {
        assert.equal(e.name, "CredentialsError");
        // The provider's own text is the cause, not repeated in pg-iam's message.
        assert.match((e.cause as Error).message, /SSO session expired/);
        assert.doesNotMatch(e.message, /SSO session expired/);
        return true;
      });
    }
    mode = "hang";
    await assert.rejects(sql`select 1`, /credentialsTimeout/);
    mode = "ok";
    assert.equal((await sql`select 1 as one`)[0].one, 1);
  } finally {
    await sql.end();
  }
  assert.equal(g.stats.rejected, 0);
});

test("iamPassword fails as the installed postgres.js can take it: 4.x gives the query the credentials error, 3.x a refused login (it would crash on a rejection); onError hears it", async () => {
  const g = await gateway();
  const reported: Error[] = [];
  const password = iamPassword({
    hostname: RDS,
    username: "app",
    credentials: () => Promise.reject(new Error("no credentials here")),
    onError: (e) => reported.push(e),
  });
  if (postgresMajor() === 3) assert.equal(await password(), "");
  else await assert.rejects(password(), { name: "CredentialsError" });
  const sql = postgres({
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    ssl: { ca, servername: RDS },
    password,
    onnotice: () => {},
  });
  try {
    await assert.rejects(
      sql`select 1`,
      postgresMajor() === 3 ? { code: "28P01" } : { name: "CredentialsError", code: "provider" },
    );
  } finally {
    await sql.end();
  }
  assert.equal(g.stats.rejected, postgresMajor() === 3 ? 1 : 0);
  assert.equal(reported.length, 2);
  assert.match(reported[0].message, /"credentials" provider failed/);
  assert.match((reported[0].cause as Error).message, /no credentials here/);
  // Positive control: the same function with good credentials connects.
  const good = postgres({
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    ssl: { ca, servername: RDS },
    password: iamPassword({ hostname: RDS, username: "app", credentials: KEYS }),
    onnotice: () => {},
  });
  try {
    assert.equal((await good`select 1 as one`)[0].one, 1);
  } finally {
    await good.end();
  }
});

test("TLS verify-full against the gateway's CA while connecting to 127.0.0.1 with signingHostname", async () => {
  const g = await gateway();
  const ok = client(g);
  try {
    assert.equal((await ok`select ssl from pg_stat_ssl where pid = pg_backend_pid()`).length, 1);
  } finally {
    await ok.end();
  }
  assert.equal(g.stats.logins[0].tls, true);
  // Negative controls: the default CA (the RDS bundle) does not trust the test CA; a name the
  // certificate lacks is refused; a server without TLS is refused; TLS off needs the opt-in.
  const defaultCa = client(g, { ssl: undefined });
  await assert.rejects(defaultCa`select 1`, (e: Error & { code?: string }) => {
    assert.match(e.message, /TLS/);
    assert.match(e.code ?? "", /CERT|SELF_SIGNED|UNABLE/);
    return true;
  });
  const wrongName = client(g, {
    signingHostname: "db.cluster-zzz999zzz.us-east-1.rds.amazonaws.com",
  });
  await assert.rejects(wrongName`select 1`, { code: "ERR_TLS_CERT_ALTNAME_INVALID" });
  const plain = await gateway({ tls: false });
  const refused = client(plain);
  await assert.rejects(refused`select 1`, { code: "TLS_REFUSED" });
  assert.throws(() => client(plain, { ssl: false }), /dangerouslyDisableTls/);
  const optedOut = client(plain, { ssl: undefined, dangerouslyDisableTls: true });
  try {
    assert.equal((await optedOut`select 1 as one`)[0].one, 1);
  } finally {
    await Promise.all([defaultCa.end(), wrongName.end(), refused.end(), optedOut.end()]);
  }
  assert.equal(g.stats.logins.length, 1); // no token was ever sent over a failed handshake
});

test("listen/notify connections get tokens too", async () => {
  const g = await gateway();
  const tokens: TokenEvent[] = [];
  const sql = client(g, { onToken: (e: TokenEvent) => tokens.push(e) });
  try {
    const got = new Promise<string>((resolve) => {
      void sql.listen("pg_iam_test", (payload) => resolve(payload));
    });
    await sleep(100);
    await sql.notify("pg_iam_test", "hello");
    assert.equal(await got, "hello");
  } finally {
    await sql.end();
  }
  assert.ok(g.stats.accepted >= 2, `${g.stats.accepted} logins`); // listener + query connection
  assert.equal(tokens.length, g.stats.accepted);
});

test("connection strings: iam_* parameters are consumed and never sent; PG* variables are honoured", async () => {
  const g = await gateway();
  const url = `postgres://app@${g.host}:${g.port}/postgres?application_name=pgiam_test` +
    `&iam_host=${RDS}&iam_port=5432&iam_region=us-east-1&iam_expiration=60`;
  const sql = iamPostgres(url, { credentials: KEYS, ssl: { ca }, onnotice: () => {} });
  try {
    const [row] = await sql`select current_setting('application_name') as app`;
    assert.equal(row.app, "pgiam_test");
  } finally {
    await sql.end();
  }
  // Negative control: postgres.js alone would send iam_host to the server, which refuses it.
  const token = await rdsToken({ hostname: RDS, username: "app", credentials: KEYS });
  const plain = postgres(url, {
    password: token,
    ssl: { ca, servername: RDS },
    onnotice: () => {},
  });
  try {
    await assert.rejects(plain`select 1`, /iam_host/);
  } finally {
    await plain.end();
  }
  // PGHOST, PGPORT, PGUSER, PGDATABASE.
  await withEnv(
    { PGHOST: g.host, PGPORT: String(g.port), PGUSER: "app", PGDATABASE: "postgres" },
    async () => {
      const env = iamPostgres({
        signingHostname: RDS,
        signingPort: 5432,
        credentials: KEYS,
        ssl: { ca },
        onnotice: () => {},
      });
      try {
        const [row] = await env`select current_database() as db`;
        assert.equal(row.db, "postgres");
      } finally {
        await env.end();
      }
    },
  );
  assert.equal(g.stats.rejected, 0);
  assert.equal(g.stats.accepted, 3);
});

test("bad options are TypeErrors or RangeErrors naming the option", () => {
  const base = `postgres://app@${RDS}/app`;
  const cases: [unknown, unknown, RegExp][] = [
    [`postgres://app:secret@${RDS}/app`, {}, /password/],
    [base, { password: "x" }, /"password"/],
    [`postgres://app@a.example.com,b.example.com/app`, { region: "us-east-1" }, /one host/],
    [base, { service: "mysql" }, /"service"/],
    [base, { admin: true }, /"admin"/],
    [base, { expiresIn: 901 }, /"expiresIn"/],
    [base, { prewarm: 0 }, /"prewarm"/],
    [base, { ssl: "prefer" }, /plaintext/],
    [`${base}?iam_regoin=us-east-1`, {}, /iam_regoin/],
    [`${base}?iam_expiration=soon`, {}, /iam_expiration/],
    [`postgres://admin@${DSQL}/postgres`, { max_lifetime: 3600 }, /max_lifetime/],
    [base, { credentialsTimeout: -1 }, /credentialsTimeout/],
    [base, { signingPort: 70000 }, /signingPort/],
  ];
  for (const [url, options, message] of cases) {
    assert.throws(
      () => iamPostgres(url as string, options as Record<string, never>),
      (e: Error) => (e instanceof TypeError || e instanceof RangeError) && message.test(e.message),
      `${url} ${JSON.stringify(options)}`,
    );
  }
});

test("prewarm opens n connections ahead of traffic and reports their timings", async () => {
  const g = await gateway();
  const connects: ConnectEvent[] = [];
  const sql = client(g, { max: 4, onConnect: (e: ConnectEvent) => connects.push(e) });
  try {
    const result = await prewarm(sql, 4);
    assert.equal(result.opened, 4);
    assert.equal(g.stats.accepted, 4);
    for (const e of connects) {
      assert.ok(e.ok);
      for (const k of ["credentialsMs", "signMs", "connectMs", "tlsMs", "authMs", "totalMs"]) {
        assert.ok(e.timings[k as keyof typeof e.timings] >= 0, k);
      }
      assert.ok(e.timings.tlsMs > 0);
    }
    // Traffic after prewarming opens no new connection.
    await Promise.all(Array.from({ length: 4 }, () => sql`select 1`));
    assert.equal(g.stats.accepted, 4);
  } finally {
    await sql.end();
  }
  // Negative control: a pool that is not prewarmed has opened nothing.
  const cold = client(g, { max: 4 });
  await sleep(50);
  assert.equal(g.stats.accepted, 4);
  await cold.end();
});

test("the embedded PGlite upstream serves a pool through the gateway across token lifetimes", async () => {
  const lite = await startPglite();
  const g = await startGateway({
    endpoint: RDS,
    credentials: KEYS,
    upstream: { host: lite.host, port: lite.port },
    tls: { cert, key },
  });
  let offset = 0;
  // prepare: false: PGlite serves all connections in one session (see src/gateway/pglite.ts).
  const closes = new Tally();
  const sql = client(g, {
    max: 3,
    prepare: false,
    now: () => Date.now() + offset,
    onclose: closes.add,
  });
  try {
    for (let step = 0; step < 4; step++) {
      offset += 20 * MINUTE; // past a token's 15 minutes each time
      g.clockOffsetMs = offset;
      const rows = await Promise.all([1, 2, 3].map((i) => sql`select ${i}::int as i`));
      assert.deepEqual(rows.map((r) => r[0].i), [1, 2, 3]);
      await killAll(g, closes);
    }
  } finally {
    await sql.end();
    await g.close();
    await lite.close();
  }
  assert.equal(g.stats.rejected, 0);
  assert.ok(g.stats.accepted >= 4);
});

test("DSQL pools recycle connections before DSQL's 60 minutes, jittered; RDS keeps postgres.js's default", () => {
  const lifetimes = (sql: { options: unknown }) =>
    (sql.options as { max_lifetime: unknown }).max_lifetime;
  const dsql = iamPostgres({ host: DSQL, user: "admin", credentials: KEYS });
  const lifetime = lifetimes(dsql);
  assert.equal(typeof lifetime, "function");
  const draws = Array.from({ length: 200 }, () => (lifetime as () => number)());
  assert.ok(draws.every((s) => s >= 45 * 60 && s < 55 * 60), "45 to 55 minutes");
  assert.ok(new Set(draws.map(Math.round)).size > 50, "jittered");
  // An explicit lifetime below 60 minutes is kept; 60 minutes or more is refused (see bad options).
  assert.equal(
    lifetimes(iamPostgres({ host: DSQL, user: "admin", credentials: KEYS, max_lifetime: 600 })),
    600,
  );
  // Negative control: RDS has no such limit; postgres.js's default (30–60 minutes) stays.
  const rds = lifetimes(iamPostgres({ host: RDS, user: "app", credentials: KEYS }));
  assert.equal(typeof rds, "function");
  assert.notEqual(rds, lifetime);
});

test("subscribe (logical replication) connections get tokens too", async () => {
  const g = await gateway();
  const tokens: TokenEvent[] = [];
  const table = `pgiam_sub_${Date.now()}`;
  const sql = client(g, {
    onToken: (e: TokenEvent) => tokens.push(e),
    user: "postgres",
    publications: `${table}_pub`,
  });
  try {
    await sql.unsafe(`create table ${table} (id int primary key, note text)`);
    await sql.unsafe(`create publication ${table}_pub for table ${table}`);
    const seen = new Promise<string>((resolve) => {
      void sql.subscribe(`insert:${table}`, (row) => resolve(row?.note));
    });
    await sleep(300);
    await sql.unsafe(`insert into ${table} values (1, 'replicated')`);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const guard = new Promise<string>((resolve) => {
      timer = setTimeout(resolve, 10_000, "no row replicated within 10 s (hang guard)");
    });
    assert.equal(await Promise.race([seen, guard]), "replicated");
    clearTimeout(timer);
  } finally {
    await sql.unsafe(`drop publication if exists ${table}_pub`).catch(() => {});
    await sql.unsafe(`drop table if exists ${table}`).catch(() => {});
    await sql.end({ timeout: 1 });
  }
  // The replication connection logged in through the gateway with its own token.
  assert.ok(g.stats.accepted >= 2, `${g.stats.accepted} logins`);
  assert.equal(tokens.length, g.stats.accepted);
  assert.equal(g.stats.rejected, 0);
});

// ---- connection strings and the libpq environment (one parser: src/connection/target.ts) ----

const tmp = mkdtempSync(join(tmpdir(), "pg-iam-postgres-test-"));
const CA_FILE = join(tmp, "gateway-ca.pem");
writeFileSync(CA_FILE, ca);
// A real CA that did not sign the gateway's certificate.
const OTHER_CA_FILE = join(tmp, "other-ca.pem");
writeFileSync(OTHER_CA_FILE, (await rdsCa())[0]);
// No PG* variable of the machine running the tests may steer these.
const NO_PG = Object.fromEntries(
  Object.keys(process.env).filter((k) => /^PG/.test(k)).map((k) => [k, undefined]),
);

/** The startup parameters the server got, as PostgreSQL records them (source "client"). */
async function clientSettings(sql: postgres.Sql): Promise<Record<string, string>> {
  const rows = await sql`select name, setting from pg_settings where source = 'client'`;
  return Object.fromEntries(rows.map((r) => [r.name as string, r.setting as string]));
}

test("a connection string's libpq parameters are honoured and none of them, nor iam_*, reaches the server; unknown ones are forwarded as postgres.js does", async () => {
  const g = await gateway();
  const params = new URLSearchParams({
    sslmode: "verify-full",
    sslrootcert: CA_FILE,
    iam_host: RDS,
    iam_port: "5432",
    iam_region: "us-east-1",
    iam_expiration: "60",
    connect_timeout: "10",
    keepalives: "1",
    keepalives_idle: "30",
    application_name: "libpq_app",
    fallback_application_name: "unused",
    options: "-c search_path=pg_catalog",
    target_session_attrs: "read-write",
    sslsni: "1",
    ssl_min_protocol_version: "TLSv1.2",
    channel_binding: "prefer",
    gssencmode: "disable",
    sslcompression: "0",
    sslcertmode: "allow",
    require_auth: "password",
    load_balance_hosts: "disable",
    statement_timeout: "4321", // neither libpq's nor pg-iam's: a server setting, forwarded
  });
  const url = `postgres://app@${g.host}:${g.port}/postgres?${params}`;
  await withEnv(NO_PG, async () => {
    const sql = iamPostgres(url, { credentials: KEYS, max: 1, onnotice: () => {} });
    try {
      const settings = await clientSettings(sql);
      assert.deepEqual(settings, {
        application_name: "libpq_app",
        client_encoding: "UTF8",
        search_path: "pg_catalog",
        statement_timeout: "4321", // the control: forwarded parameters do show up here
      });
      const [{ ssl }] = await sql`select true as ssl`; // through verified TLS, see sslrootcert
      assert.equal(ssl, true);
    } finally {
      await sql.end();
    }
  });
  assert.equal(g.stats.accepted, 1);
  // The control: postgres.js given the same URL forwards sslrootcert, and the server refuses it.
  const token = await rdsToken({ hostname: RDS, username: "app", credentials: KEYS });
  const plain = postgres(url.replace("sslmode=verify-full", "sslmode=require"), {
    password: token,
    onnotice: () => {},
  });
  try {
    await assert.rejects(plain`select 1`, /unrecognized configuration parameter/);
  } finally {
    await plain.end({ timeout: 0 });
  }
});

test("PGSSLROOTCERT, PGSSLMODE, PGAPPNAME and PGTZ are honoured; the connection string wins over them; a wrong CA fails TLS naming it, not signingHostname", async () => {
  const g = await gateway();
  const url = `postgres://app@${g.host}:${g.port}/postgres?iam_host=${RDS}&iam_port=5432`;
  const opts = { credentials: KEYS, max: 1, onnotice: () => {} };
  await withEnv(
    { ...NO_PG, PGSSLROOTCERT: CA_FILE, PGAPPNAME: "from_env", PGTZ: "Asia/Tokyo" },
    async () => {
      const sql = iamPostgres(url, opts);
      try {
        const settings = await clientSettings(sql);
        assert.equal(settings.application_name, "from_env");
        assert.equal(settings.TimeZone, "Asia/Tokyo");
      } finally {
        await sql.end();
      }
    },
  );
  await withEnv({ ...NO_PG, PGSSLROOTCERT: OTHER_CA_FILE }, async () => {
    // The control: the environment's CA did not sign the certificate.
    const wrong = iamPostgres(url, opts);
    await assert.rejects(wrong`select 1`, (e: Error) => {
      assert.match(e.message, /other-ca\.pem/);
      assert.match(e.message, /PGSSLROOTCERT/);
      assert.doesNotMatch(e.message, /signingHostname/);
      return true;
    });
    await wrong.end({ timeout: 0 });
    // The connection string's sslrootcert wins over the environment's.
    const sql = iamPostgres(`${url}&sslrootcert=${CA_FILE}`, opts);
    try {
      assert.equal((await sql`select 1 as x`)[0].x, 1);
    } finally {
      await sql.end();
    }
  });
  // PGSSLMODE=require encrypts without checking the certificate (libpq's meaning)...
  await withEnv({ ...NO_PG, PGSSLMODE: "require" }, async () => {
    const sql = iamPostgres(url, opts);
    try {
      assert.equal((await sql`select 1 as x`)[0].x, 1);
    } finally {
      await sql.end();
    }
  });
  // ...and the control: without it the default verify-full refuses the gateway's certificate.
  await withEnv(NO_PG, async () => {
    const strict = iamPostgres(url, opts);
    await assert.rejects(strict`select 1`, /RDS CA bundle/);
    await strict.end({ timeout: 0 });
  });
});

test("hostaddr: the host names the endpoint (token and certificate), hostaddr is where to connect", async () => {
  const g = await gateway();
  const events: TokenEvent[] = [];
  await withEnv(NO_PG, async () => {
    const url = `postgres://app@${RDS}:${g.port}/postgres?hostaddr=127.0.0.1&iam_port=5432` +
      `&sslrootcert=${CA_FILE}`;
    const sql = iamPostgres(url, { credentials: KEYS, max: 1, onToken: (e) => events.push(e) });
    try {
      assert.equal((await sql`select current_user as u`)[0].u, "postgres");
    } finally {
      await sql.end();
    }
    assert.equal(events[0].signingHostname, RDS);
    // The control: without hostaddr, the endpoint name itself is looked up, and does not resolve.
    const noAddr = iamPostgres(url.replace("hostaddr=127.0.0.1&", ""), { credentials: KEYS });
    await assert.rejects(noAddr`select 1`, /ENOTFOUND|EAI_AGAIN|not known|resolve|lookup/i);
    await noAddr.end({ timeout: 0 });
  });
});

test("after login postgres.js owns the socket: a server kill mid-query reaches the query and the pool recovers; slow readers and big writes keep their backpressure", async () => {
  const g = await gateway();
  const sql = client(g, { max: 1 });
  const admin = client(g, { max: 1 });
  try {
    const [{ pid }] = await sql`select pg_backend_pid() as pid`;
    // Its error is taken as soon as it comes (it may come before the kill's own answer).
    const running = sql`select pg_sleep(10)`.execute().then(() => undefined, (e: Error) => e);
    for (;;) {
      const [{ n }] = await admin`select count(*)::int as n from pg_stat_activity
        where pid = ${pid} and state = 'active'`;
      if (n > 0) break;
    }
    await admin`select pg_terminate_backend(${pid})`;
    const error = await running as Error & { code?: string };
    assert.match(String(error?.code), /57P01|CONNECTION_CLOSED/);
    // postgres.js 3.4.9 hands the server's FATAL to the next query (plain postgres.js does the
    // same, measured); the one after gets a new connection, with a new token.
    let next: number | undefined;
    for (let attempt = 1; next === undefined; attempt++) {
      try {
        next = (await sql`select pg_backend_pid() as pid`)[0].pid as number;
      } catch (e) {
        assert.ok(attempt < 2, String(e));
        assert.equal((e as { code?: string }).code, "57P01");
      }
    }
    assert.notEqual(next, pid);

    // A slow reader: postgres.js pauses the socket while the cursor's callback works.
    let rows = 0;
    await sql`select repeat('x', 1000) as x from generate_series(1, 5000)`.cursor(
      500,
      async (batch) => {
        rows += batch.length;
        await sleep(5);
      },
    );
    assert.equal(rows, 5000);
    // A big write: 8 MB through COPY, with the socket's own drain events.
    await sql`create temporary table big (x text)`;
    const line = "y".repeat(1023) + "\n";
    const writable = await sql`copy big from stdin`.writable();
    await new Promise<void>((resolve, reject) => {
      let i = 0;
      const write = () => {
        while (i < 8192) {
          i++;
          if (!writable.write(line)) return void writable.once("drain", write);
        }
        writable.end();
      };
      writable.on("finish", resolve).on("error", reject);
      write();
    });
    const [{ n, bytes }] = await sql`select count(*)::int as n, sum(length(x))::int as bytes
      from big`;
    assert.deepEqual({ n, bytes }, { n: 8192, bytes: 8192 * 1023 });
  } finally {
    await sql.end();
    await admin.end();
  }
  assert.equal(g.stats.rejected, 0);
});

test("connect_timeout from the options or the connection string bounds a server that never answers", async () => {
  const silent = createServer(() => {}); // accepts, never says a word
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
  const port = (silent.address() as { port: number }).port;
  try {
    await withEnv(NO_PG, async () => {
      for (
        const sql of [
          iamPostgres({
            host: "127.0.0.1",
            port,
            user: "app",
            credentials: KEYS,
            region: "us-east-1",
            connect_timeout: 2,
          }),
          iamPostgres(
            `postgres://app@127.0.0.1:${port}/postgres?connect_timeout=2&iam_region=us-east-1`,
            { credentials: KEYS },
          ),
        ]
      ) {
        const t = performance.now();
        await assert.rejects(sql`select 1`, { code: "CONNECT_TIMEOUT" });
        const seconds = (performance.now() - t) / 1000;
        assert.ok(seconds >= 1.9 && seconds < 10, `${seconds}s`);
        await sql.end({ timeout: 0 });
      }
    });
  } finally {
    silent.close();
  }
});

test("a server at its connection limit (53300) is asked again with backoff until a slot frees (by pg-iam on postgres.js 3, where plain postgres.js fails at once: the control; by postgres.js 4 itself)", async () => {
  const g = await gateway({ maxConnections: 1 });
  const holder = client(g, { max: 1 });
  await holder`select 1`; // holds the gateway's only slot
  // A plain client with a valid token: 3.x is refused at once (the control); 4.x asks again
  // itself until its connect_timeout, so pg-iam leaves 53300 to it.
  const token = await rdsToken({ hostname: RDS, username: "app", credentials: KEYS });
  const plain = postgres({
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    password: token,
    ssl: { ca, servername: RDS },
    max: 1,
    connect_timeout: 2,
    onnotice: () => {},
  });
  // (Answered after TLS and the startup packet, as PostgreSQL does: postgres.js reads it.)
  const before = g.stats.refused["53300"];
  await assert.rejects(plain`select 1`, { code: "53300" });
  await plain.end({ timeout: 0 });
  const asked = g.stats.refused["53300"] - before;
  if (postgresMajor() === 3) assert.equal(asked, 1);
  else assert.ok(asked > 1, `postgres.js 4 asked ${asked} times`);
  // pg-iam waits, jittered, and gets in once the holder lets go.
  const connects: ConnectEvent[] = [];
  const waiter = client(g, {
    max: 1,
    connect_timeout: 10,
    onConnect: (e: ConnectEvent) => connects.push(e),
  });
  const t = performance.now();
  const answer = waiter`select 1 as one`.execute();
  await sleep(400);
  await holder.end();
  assert.deepEqual([...await answer], [{ one: 1 }]);
  assert.ok(performance.now() - t >= 400);
  // One physical connect that waited inside (3.x); on 4.x, postgres.js's own tries, the last in.
  assert.equal(connects.at(-1)?.ok, true);
  if (postgresMajor() === 3) assert.equal(connects.length, 1);
  assert.ok(connects.slice(0, -1).every((e) => (e.error as ConnectError).sqlState === "53300"));
  await waiter.end();
  // And at the connect timeout, the server's own answer, not a bare timeout.
  const blocker = client(g, { max: 1 });
  await blocker`select 1`;
  const late = client(g, { max: 1, connect_timeout: 2 });
  await assert.rejects(late`select 1`, (e: Error & { code?: string }) => {
    assert.equal(e.code, "53300");
    // pg-iam says it asked again (3.x); 4.x gives the server's last answer as it got it.
    if (postgresMajor() === 3) assert.match(e.message, /with backoff/);
    return true;
  });
  await late.end({ timeout: 0 });
  await blocker.end();
});

test("require_auth and PGREQUIREAUTH are honoured by pg-iam's own login, and postgres.js never refuses the login pg-iam forwards", async () => {
  const g = await gateway();
  const pg = await upstreamPostgres(); // before NO_PG hides PGIAM_TEST_PG
  const url = `postgres://app@${g.host}:${g.port}/postgres?iam_host=${RDS}&iam_port=5432`;
  const opts = { credentials: KEYS, ssl: { ca }, max: 1, onnotice: () => {} };
  // A trust server lets the client in without asking for a password.
  const trust = (extra: Record<string, unknown> = {}) =>
    iamPostgres({
      host: pg.host,
      port: pg.port,
      user: "app",
      database: "postgres",
      region: "us-east-1",
      credentials: KEYS,
      dangerouslyDisableTls: true,
      max: 1,
      onnotice: () => {},
      ...extra,
    });
  await withEnv({ ...NO_PG, PGREQUIREAUTH: "password" }, async () => {
    // The gateway asks for the token as a cleartext password: allowed.
    const sql = iamPostgres(url, opts);
    try {
      assert.equal((await sql`select 1 as one`)[0].one, 1);
      assert.equal(g.stats.accepted, 1);
    } finally {
      await sql.end();
    }
    // The control: the same requirement refuses a server that never asks (libpq's rule).
    const refused = trust();
    try {
      await assert.rejects(refused`select 1`, (e: Error & { code?: string }) => {
        assert.equal(e.code, "AUTH_METHOD");
        assert.match(e.message, /require_auth does not allow "none"/);
        return true;
      });
    } finally {
      await refused.end();
    }
  });
  for (
    const [env, option] of [[{ PGREQUIREAUTH: "password,none" }, {}], [{}, {}], [
      { PGREQUIREAUTH: "password" },
      { require_auth: "!md5" }, // the option wins over the environment
    ]] as const
  ) {
    await withEnv({ ...NO_PG, ...env }, async () => {
      const sql = trust(option);
      try {
        assert.equal((await sql`select 1 as one`)[0].one, 1);
      } finally {
        await sql.end();
      }
    });
  }
  // A requirement IAM can never meet is an error at creation, naming where it came from.
  await withEnv({ ...NO_PG, PGREQUIREAUTH: "scram-sha-256" }, () => {
    assert.throws(() => iamPostgres(url, opts), (e: Error) => {
      assert.ok(e instanceof TypeError);
      assert.match(e.message, /PGREQUIREAUTH.*scram-sha-256.*cleartext/);
      return true;
    });
  });
  assert.throws(() => iamPostgres(url, { ...opts, require_auth: "md5" }), /"require_auth" option/);
  await withEnv({ ...NO_PG, PGCHANNELBINDING: "require" }, () => {
    assert.throws(() => iamPostgres(url, opts), /PGCHANNELBINDING.*SCRAM/);
  });
  await withEnv({ ...NO_PG, PGCHANNELBINDING: "prefer" }, async () => {
    const sql = iamPostgres(url, opts);
    try {
      assert.equal((await sql`select 1 as one`)[0].one, 1);
    } finally {
      await sql.end();
    }
  });
});

test("a configuration error at connect (no region) fails the query at once with a code, and is never retried as a lost connection", async () => {
  const events: ConnectEvent[] = [];
  await withEnv(
    {
      ...NO_PG,
      AWS_REGION: undefined,
      AWS_DEFAULT_REGION: undefined,
      AWS_PROFILE: undefined,
      AWS_CONFIG_FILE: "/nonexistent/pg-iam-test-config",
    },
    async () => {
      const sql = iamPostgres("postgres://app@127.0.0.1:5432/postgres", {
        credentials: KEYS,
        max: 2,
        onConnect: (e) => events.push(e),
      });
      try {
        for (let i = 0; i < 2; i++) {
          await assert.rejects(sql`select 1`, (e: Error & { code?: string }) => {
            assert.ok(e instanceof TypeError, String(e));
            assert.equal(e.code, "INVALID_CONFIGURATION");
            assert.match(e.message, /region/i);
            return true;
          });
        }
      } finally {
        await sql.end();
      }
    },
  );
  // One attempt per query: postgres.js 4 retries a code-less (CONNECTION_CLOSED) failure until its
  // connect_timeout, which is what this failed as before it had a code.
  assert.equal(events.length, 2, JSON.stringify(events.map((e) => e.error?.message)));
  assert.ok(events.every((e) => e.step === "credentials" && !e.tokenSent));
});

test("query.cancel() reaches the server through pg-iam's socket (a CancelRequest on a connection of its own) on both postgres.js majors", async () => {
  const g = await gateway();
  const pg = await upstreamPostgres();
  const sql = client(g, { max: 1 });
  const observer = postgres({ host: pg.host, port: pg.port, user: pg.user, max: 1 });
  try {
    const query = sql`select pg_sleep(30), 'pg-iam cancel test' as tag`;
    const outcome = query.then(() => undefined, (e: Error & { code?: string }) => e);
    // Cancelled once the server runs it, not before (the cancel would find nothing to cancel).
    for (let i = 0; i < 500; i++) {
      const [{ n }] = await observer`
        select count(*)::int as n from pg_stat_activity
        where state = 'active' and query like '%pg-iam cancel test%' and pid <> pg_backend_pid()`;
      if (n === 1) break;
      await sleep(10);
    }
    query.cancel();
    const error = await outcome;
    assert.equal(error?.code, "57014", String(error));
    assert.equal(g.stats.cancels, 1);
    // The connection stays usable.
    assert.equal((await sql`select 1 as one`)[0].one, 1);
  } finally {
    await sql.end();
    await observer.end();
  }
});
