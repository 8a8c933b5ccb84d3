// What reaches the server's StartupMessage from a connection string, options and PG* variables,
// end to end against a real PostgreSQL (trust authentication, no TLS: pg-iam's login sends no
// token, and the server shows what it was sent): a NUL never splits a parameter (refused, as libpq
// refuses %00), other control characters arrive exactly as given, `options` built from PGTZ & co.
// is escaped as the server splits it, `?database=` is refused as libpq refuses it, and a server's
// NegotiateProtocolVersion (`_pq_.` options it does not know) lets the login continue. Each case
// beside its control: the plain driver taking the same input to the server.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import pg from "pg";
import postgres from "postgres";
import { iamPostgres } from "../../src/postgres/mod.ts";
import { iamClient, iamPool } from "../../src/pg/mod.ts";
import { iamSql } from "../../src/bun/mod.ts";
import { parseTarget } from "../../src/connection/target.ts";
import { upstreamPostgres, upstreamPostgres18 } from "../_postgres.ts";
import { postgresMajor } from "../_postgres_major.mjs";
import { withEnv } from "../_env.ts";
import { closeTestGateways, testGateway } from "../_gateway.ts";
import { ca } from "../fixtures/tls.ts";

const KEYS = { accessKeyId: "AKIDSTARTUP", secretAccessKey: "pg-iam/startup/secret/key" };
const BUN = (globalThis as { Bun?: { SQL?: unknown } }).Bun?.SQL !== undefined;
const IAM = { region: "us-east-1", credentials: KEYS, dangerouslyDisableTls: true } as const;
const EVIL = "postgres\0options\0-c search_path=evil";

const servers: net.Server[] = [];
after(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  await closeTestGateways();
});

/** `postgres://postgres@host:port/<path>` of the test server. */
async function url(path = "postgres", major: 15 | 18 = 15): Promise<string> {
  const up = await (major === 18 ? upstreamPostgres18() : upstreamPostgres());
  return `postgres://${up.user}@${up.host}:${up.port}/${path}`;
}

/** One row through iamPostgres(), iamPool() and (on Bun) iamSql(), each given `input`. */
async function everyDriver(
  sqlText: string,
  input: { url?: string; connection?: Record<string, string> },
): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  const sql = iamPostgres(input.url!, { ...IAM, connection: input.connection, onnotice: () => {} });
  try {
    rows.push((await sql.unsafe(sqlText))[0]);
  } finally {
    await sql.end({ timeout: 0 });
  }
  const pool = iamPool({ connectionString: input.url, ...IAM });
  try {
    rows.push((await pool.query(sqlText)).rows[0]);
  } finally {
    await pool.end();
  }
  if (BUN) {
    const bun = iamSql(input.url!, { ...IAM, connection: input.connection });
    try {
      rows.push((await bun.unsafe(sqlText))[0]);
    } finally {
      await bun.close({ timeout: 0 });
    }
  }
  return rows;
}

/** The search_path a plain node-postgres client gets on the test server with `config`. */
async function plainSearchPath(config: pg.ClientConfig): Promise<string> {
  const up = await upstreamPostgres();
  const client = new pg.Client({ host: up.host, port: up.port, user: up.user, ...config });
  await client.connect();
  try {
    return (await client.query("select current_setting('search_path') as s")).rows[0].s;
  } finally {
    await client.end();
  }
}

/** Asserts that `fn` throws a TypeError whose message matches every pattern. */
function refuses(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (error: Error) => {
    assert.ok(error instanceof TypeError, String(error));
    for (const pattern of patterns) assert.match(error.message, pattern);
    return true;
  });
}

// ---- 1. %00 and NUL ----

test("startup params: %00 decoded from a connection string (path database, user, application_name, any parameter) is refused as libpq refuses it, by every driver; the control: the decoded value reaches the server as search_path=evil", async () => {
  const base = await url("");
  const cases: [string, RegExp][] = [
    [`${base}postgres%00options%00-c%20search_path%3Devil`, /string's database/],
    [
      `${base}postgres?application_name=x%00options%00-c%20search_path%3Devil`,
      /"application_name"/,
    ],
    [`${base}postgres?search%00path=evil`, /parameter "search\\u0000path"/],
    [
      base.replace("postgres@", "postgres%00options%00-c%20search_path%3Devil@") + "postgres",
      /user/,
    ],
  ];
  for (const [text, where] of cases) {
    const forbidden = /forbidden value %00 in a percent-encoded value/;
    refuses(() => parseTarget({ url: text }), forbidden, where);
    refuses(() => iamPostgres(text, IAM), forbidden, where);
    refuses(() => iamPool({ connectionString: text, ...IAM }), forbidden, where);
    refuses(() => iamClient({ connectionString: text, ...IAM }), forbidden, where);
    if (BUN) refuses(() => iamSql(text, IAM), forbidden, where);
  }
  // A raw NUL: no libpq connection string can hold one (C strings); never quoted (a password).
  refuses(() => iamPostgres(`${base}${EVIL}`, IAM), /contains a NUL character/);
  refuses(() => parseTarget({ url: `host=h dbname=${EVIL}` }), /contains a NUL character/);
  // The control: what pg-iam decoded and handed to the driver before, given to the plain driver.
  assert.equal(await plainSearchPath({ database: EVIL }), "evil");
  assert.equal(
    await plainSearchPath({
      database: "postgres",
      application_name: "x\0options\0-c search_path=evil",
    }),
    "evil",
  );
});

test("startup params: a NUL in any startup parameter from options (database, user, connection, application_name, options, a parameter's name) is a TypeError naming it with the value escaped; the control: the plain driver sends it as search_path=evil", async () => {
  const base = await url();
  const attack = "x\0options\0-c search_path=evil";
  const escaped = /"x\\u0000options\\u0000-c search_path=evil"/;
  refuses(() => iamPostgres(base, { ...IAM, database: attack }), /"database" option/, escaped);
  refuses(() => iamPostgres(base, { ...IAM, user: attack }), /"user" option/, escaped);
  refuses(
    () => iamPostgres(base, { ...IAM, connection: { application_name: attack } }),
    /startup parameter "application_name"/,
    escaped,
  );
  refuses(
    () => iamPostgres(base, { ...IAM, connection: { [attack]: "on" } }),
    /startup parameter's name/,
    escaped,
  );
  refuses(() => iamPool({ connectionString: base, ...IAM, database: attack }), /"database"/);
  refuses(
    () => iamPool({ connectionString: base, ...IAM, application_name: attack }),
    /startup parameter "application_name"/,
    escaped,
  );
  refuses(
    () => iamClient({ connectionString: base, ...IAM, fallback_application_name: attack }),
    /startup parameter "application_name"/,
    escaped,
  );
  refuses(
    () => iamClient({ connectionString: base, ...IAM, options: `-c a=${attack}` }),
    /startup parameter "options"/,
  );
  if (BUN) {
    refuses(
      () => iamSql(base, { ...IAM, connection: { application_name: attack } }),
      /startup parameter "application_name"/,
      escaped,
    );
    refuses(() => iamSql(base, { ...IAM, database: attack }), /"database" option/, escaped);
  }
  // The control: the plain driver sends it, and the server reads two parameters.
  assert.equal(await plainSearchPath({ database: "postgres", application_name: attack }), "evil");
  if (postgresMajor() === 3) {
    const up = await upstreamPostgres();
    const plain = postgres({
      ...up,
      database: "postgres",
      connection: { application_name: attack },
    });
    try {
      assert.equal((await plain`select current_setting('search_path') as s`)[0].s, "evil");
    } finally {
      await plain.end({ timeout: 0 });
    }
  }
});

test("startup params: iamPostgres() checks what postgres.js will send again as each connection starts: a NUL put in its options after creation fails the query (a TypeError from pg-iam's socket on postgres.js 3, which would send it; postgres.js 4's own error), nothing signed; the control: a value put there reaches the server", async () => {
  const base = await url();
  const events: { ok: boolean; step?: string }[] = [];
  const sql = iamPostgres(base, { ...IAM, onConnect: (e) => events.push(e), onnotice: () => {} });
  const connection = (sql.options as unknown as { connection: Record<string, string> }).connection;
  try {
    connection.application_name = "x\0options\0-c search_path=evil";
    const error = await sql`select current_setting('search_path') as s`.then(
      () => undefined,
      (e) => e,
    );
    if (postgresMajor() === 3) {
      // postgres.js 3 writes the StartupMessage, split: pg-iam's socket refuses it.
      assert.ok(error instanceof TypeError, String(error));
      assert.equal((error as { code?: string }).code, "INVALID_CONFIGURATION");
      assert.match(error.message, /startup parameter "application_name".*"x\\u0000options/);
      assert.deepEqual(events.map((e) => [e.ok, e.step]), [[false, "credentials"]]);
    } else {
      // postgres.js 4 refuses it itself, before writing anything.
      assert.equal(error?.code, "NUL_CHARACTER", String(error));
      assert.deepEqual(events, []);
    }
    // The control: postgres.js reads its options as it connects.
    connection.application_name = "mutated";
    const [row] = await sql`select current_setting('application_name') as a`;
    assert.equal(row.a, "mutated");
  } finally {
    await sql.end({ timeout: 0 });
  }
});

test("startup params: tabs, newlines and backslashes in a parameter reach the server exactly as given (URL and connection option), through every driver that can send them", async () => {
  const value = "a\tb\nc\\d\re\vf\fg h";
  const rows = await everyDriver(
    "select current_setting('pgiam.u', true) as u, current_setting('pgiam.c', true) as c",
    {
      url: await url(`postgres?pgiam.u=${encodeURIComponent(value)}`),
      connection: { "pgiam.c": value },
    },
  );
  // postgres.js sends the URL's other parameters and its connection option; node-postgres has
  // neither (pg-iam adds none: the control, the server's default); Bun.SQL its connection option.
  const expected = [{ u: value, c: value }, { u: null, c: null }, { u: null, c: value }];
  assert.deepEqual(rows, expected.slice(0, BUN ? 3 : 2));
  // application_name, which every driver sends: the server cleans control characters itself
  // ("a?b" on 15, "a\x09b" on 18), the same for pg-iam as for the plain driver.
  const up = await upstreamPostgres();
  const name = "a\tb\nc";
  const pool = iamPool({ ...up, database: "postgres", application_name: name, ...IAM });
  const ours = (await pool.query("select current_setting('application_name') as a")).rows[0].a;
  await pool.end();
  const plain = await plainClientRow("select current_setting('application_name') as a", {
    application_name: name,
  });
  assert.equal(ours, plain.a);
  assert.match(ours, /^a(\?|\\x09)b(\?|\\x0a)c$/);
});

// ---- 2. options built from PGTZ, PGDATESTYLE and PGGEQO ----

test("startup params: PGTZ with tabs, newlines or other whitespace reaches the server as that one value (an invalid TimeZone), never search_path=evil; the control: the old escaping (spaces and backslashes only) injects it", async () => {
  const up = await upstreamPostgres();
  for (const space of [" ", "\t", "\n", "\v", "\f", "\r"]) {
    const tz = `UTC${space}-c${space}search_path=evil`;
    await withEnv({ PGTZ: tz }, async () => {
      const pool = iamPool({ host: up.host, port: up.port, user: up.user, ...IAM });
      const error = await pool.query("select 1").then(() => undefined, (e: Error) => e);
      await pool.end();
      assert.equal((error as { code?: string })?.code, "22023", String(error));
      assert.equal(error!.message, `invalid value for parameter "TimeZone": "${tz}"`);
      // postgres.js (and Bun.SQL) send it as a startup parameter of its own, as libpq does.
      const sql = iamPostgres({ host: up.host, port: up.port, user: up.user, ...IAM });
      const e2 = await sql`select 1`.then(() => undefined, (e: Error) => e);
      await sql.end({ timeout: 0 });
      assert.equal(e2!.message, `invalid value for parameter "TimeZone": "${tz}"`);
      if (BUN) {
        const bun = iamSql({ host: up.host, port: up.port, user: up.user, ...IAM });
        const e3 = await bun`select 1`.then(() => undefined, (e: Error) => e);
        await bun.close({ timeout: 0 });
        assert.equal(e3?.message, `invalid value for parameter "TimeZone": "${tz}"`);
      }
    });
    // The control: only spaces and backslashes escaped, as pg-iam built `options` before.
    if (space !== " ") {
      const old = `-c timezone=${tz.replace(/[\\ ]/g, "\\$&")}`;
      assert.equal(await plainSearchPath({ database: "postgres", options: old }), "evil");
    }
  }
});

test("startup params: PGTZ=default (any case) is not sent, as libpq sends none; PGDATESTYLE with a tab is one value", async () => {
  const up = await upstreamPostgres();
  const plain = (await plainClientRow("select current_setting('timezone') as tz")).tz;
  await withEnv({ PGTZ: "DEFAULT", PGDATESTYLE: "SQL,\tDMY" }, async () => {
    const pool = iamPool({ host: up.host, port: up.port, user: up.user, ...IAM });
    const { rows } = await pool.query(
      "select current_setting('timezone') as tz, current_setting('datestyle') as ds",
    );
    await pool.end();
    assert.deepEqual(rows[0], { tz: plain, ds: "SQL, DMY" });
    const sql = iamPostgres({ host: up.host, port: up.port, user: up.user, ...IAM });
    const [row] = await sql`select current_setting('timezone') as tz`;
    await sql.end({ timeout: 0 });
    assert.equal(row.tz, plain);
  });
  // The control: "default" sent as a value is an error.
  const error = await plainClientRow("select 1", { options: "-c timezone=DEFAULT" }).catch((e) =>
    e
  );
  assert.match(String(error), /invalid value for parameter "TimeZone"/);
});

async function plainClientRow(text: string, config: pg.ClientConfig = {}) {
  const up = await upstreamPostgres();
  const client = new pg.Client({ ...up, database: "postgres", ...config });
  await client.connect();
  try {
    return (await client.query(text)).rows[0];
  } finally {
    await client.end();
  }
}

// ---- 7. ?database= ----

test("startup params: ?database= (or database= in key=value form) is refused as libpq refuses it, by every driver; the path and dbname= name the database; the control: plain postgres.js takes template1 over the path's", async () => {
  const text = await url("postgres?database=template1");
  const notLibpq = /parameter "database" is not libpq's.*path or with dbname=/;
  refuses(() => iamPostgres(text, IAM), notLibpq);
  refuses(() => iamPool({ connectionString: text, ...IAM }), notLibpq);
  refuses(() => parseTarget({ url: "host=h dbname=postgres database=template1" }), notLibpq);
  if (BUN) refuses(() => iamSql(text, IAM), notLibpq);
  const rows = await everyDriver("select current_database() as d", {
    url: await url("postgres?dbname=template1"),
  });
  assert.deepEqual(rows.map((r) => r.d), Array(BUN ? 3 : 2).fill("template1"));
  // The control: the plain driver, given the same URL, logs in to template1.
  const plain = postgres(text, { onnotice: () => {} });
  try {
    assert.equal((await plain`select current_database() as d`)[0].d, "template1");
  } finally {
    await plain.end({ timeout: 0 });
  }
});

// ---- 8. NegotiateProtocolVersion ----

/** A relay to `port` that tells whether the server sent a NegotiateProtocolVersion ('v'). */
async function watching(port: number): Promise<{ port: number; sawV: () => boolean }> {
  let sawV = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    let first = true;
    upstream.on("data", (chunk: Uint8Array) => {
      if (first) sawV = chunk[0] === 0x76;
      first = false;
      client.write(chunk);
    });
    client.on("data", (chunk) => upstream.write(chunk));
    for (const s of [client, upstream]) {
      s.on("error", () => {}).on("close", () => {
        client.destroy();
        upstream.destroy();
      });
    }
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { port: (server.address() as net.AddressInfo).port, sawV: () => sawV };
}

for (const major of [15, 18] as const) {
  test(`startup params: a real PostgreSQL ${major} answering a _pq_. option with NegotiateProtocolVersion lets iamPostgres() log in, as plain postgres.js 4 does (3 fails)`, async () => {
    const up = await (major === 18 ? upstreamPostgres18() : upstreamPostgres());
    const relay = await watching(up.port);
    const text = `postgres://${up.user}@127.0.0.1:${relay.port}/postgres?_pq_.something=1`;
    const sql = iamPostgres(text, { ...IAM, onnotice: () => {} });
    try {
      assert.deepEqual([...await sql`select 1 as x`], [{ x: 1 }]);
    } finally {
      await sql.end({ timeout: 0 });
    }
    // The control: the server did send one (before the fix, PROTOCOL_VIOLATION), and the plain
    // driver meets it too.
    assert.ok(relay.sawV(), "the server sent NegotiateProtocolVersion");
    const plain = postgres(text, { onnotice: () => {} });
    const result = await plain`select 1 as x`.then((r) => r[0].x, (e) => e.code);
    await plain.end({ timeout: 0 });
    assert.equal(result, postgresMajor() === 3 ? "MESSAGE_NOT_SUPPORTED" : 1);
  });
}

test("startup params: pg-iam's gateway answers a _pq_. option with a NegotiateProtocolVersion PostgreSQL's way (version 3.0 whole), and iamPostgres() logs in through it with a token", async () => {
  const g = await testGateway(KEYS);
  const sql = iamPostgres(`postgres://app@${g.host}:${g.port}/postgres?_pq_.something=1`, {
    signingHostname: g.endpoint,
    signingPort: 5432,
    credentials: KEYS,
    ssl: { ca },
    onnotice: () => {},
  });
  try {
    assert.deepEqual([...await sql`select 1 as x`], [{ x: 1 }]);
  } finally {
    await sql.end({ timeout: 0 });
  }
  // A login with a token, checked by the gateway (the option never reaches the upstream).
  assert.equal(g.stats.accepted, 1);
});
