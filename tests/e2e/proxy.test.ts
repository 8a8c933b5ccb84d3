// pg-iam proxy (startProxy) in front of the gateway (IAM verified, TLS with the test CA) in front of
// Debian's PostgreSQL: clients nobody here wrote (psql, postgres.js, node-postgres) log in with no
// password, across simulated hours of short-lived tokens; each claim beside its control.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import postgres from "postgres";
import {
  iamUrl,
  type Proxy,
  type ProxyLogin,
  type ProxyOptions,
  type ProxySessionEnd,
  startProxy,
} from "../../src/proxy/mod.ts";
import { rdsToken } from "../../mod.ts";
import { childEnv, type Result, run } from "../_cli.ts";
import { closeTestGateways, RDS, testGateway } from "../_gateway.ts";
import { ca } from "../fixtures/tls.ts";

const KEYS = { accessKeyId: "AKIDPGIAMPROXY", secretAccessKey: "pg-iam/proxy/test/secret/0123456" };
const TIMEOUT = { timeout: 120_000 };
const dir = mkdtempSync(join(tmpdir(), "pg-iam-proxy-test-"));
const CA_FILE = join(dir, "ca.pem");
writeFileSync(CA_FILE, ca);

const proxies: Proxy[] = [];
after(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()));
  await closeTestGateways();
});

/** A gateway, and a proxy to it signing on the gateway's clock. */
async function setup(extra: Partial<ProxyOptions> = {}, target = "") {
  const g = await testGateway(KEYS);
  const proxy = await startProxy({
    connectionString: `postgres://127.0.0.1:${g.port}?iam_host=${RDS}&iam_port=5432` +
      `&sslrootcert=${CA_FILE}${target}`,
    credentials: KEYS,
    now: () => g.now(),
    ...extra,
  });
  proxies.push(proxy);
  return { g, proxy };
}

/** psql, with no password and nothing of ours in its environment. */
function psql(args: string[], query: string): Promise<Result> {
  return run("psql", ["-X", "-w", "-tA", ...args, "-c", query], childEnv(KEYS, dir));
}

/** Resolves once `done()` holds (checked on each turn of the event loop). */
async function waitFor(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((resolve) => setTimeout(resolve, 5));
}

/** Every text a failure shows: no signature, credential or token may be in it. */
function assertNoSecret(text: string): void {
  assert.ok(!text.includes(KEYS.secretAccessKey), text);
  assert.ok(!/X-Amz-Signature|Action=connect/i.test(text), text);
}

test(
  "startProxy: psql logs in through the proxy with no password (the gateway verified an IAM token over TLS); the same psql straight at the gateway is asked for a password it has not (the control)",
  TIMEOUT,
  async () => {
    const logins: ProxyLogin[] = [];
    const closes: ProxySessionEnd[] = [];
    const { g, proxy } = await setup({
      onLogin: (login) => logins.push(login),
      onClose: (session) => closes.push(session),
    });
    const ok = await psql([
      "-h",
      proxy.host,
      "-p",
      String(proxy.port),
      "-U",
      "app",
      "-d",
      "postgres",
    ], "select 41 + 1");
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), "42");
    const login = g.stats.logins.at(-1)!;
    assert.equal(login.accepted, true);
    assert.equal(login.user, "app");
    assert.equal(login.tls, true);
    assert.equal(proxy.stats.logins.ok, 1);
    assert.equal(proxy.stats.tokens.signed, 1);
    assert.ok(proxy.stats.bytes.toClient > 0 && proxy.stats.bytes.toServer > 0);
    assert.equal(logins.length, 1);
    assert.equal(logins[0].ok, true);
    assert.equal(logins[0].user, "app");
    assert.equal(logins[0].database, "postgres");
    assert.match(logins[0].client, /^127\.0\.0\.1:\d+$/);
    assert.ok(logins[0].timings!.totalMs > 0 && logins[0].timings!.tlsMs > 0);
    await waitFor(() => closes.length === 1);
    assert.deepEqual(closes[0].bytes, proxy.stats.bytes);

    const direct = await psql(
      ["-h", g.host, "-p", String(g.port), "-U", "app", "-d", "postgres"],
      "select 1",
    );
    assert.notEqual(direct.code, 0);
    assert.match(direct.stderr, /password/);
  },
);

test(
  "startProxy: new connections keep logging in across 3 simulated hours of 15-minute tokens, and a session opened at the start still answers at the end; a pool given one token as a fixed password (what a frozen token does) is refused after 15 minutes (the control)",
  TIMEOUT,
  async () => {
    const { g, proxy } = await setup();
    const through = new pg.Client({
      host: proxy.host,
      port: proxy.port,
      user: "app",
      database: "postgres",
    });
    await through.connect();
    const token = await rdsToken({
      hostname: RDS,
      port: 5432,
      username: "app",
      region: "us-east-1",
      credentials: KEYS,
      signingDate: new Date(g.now()),
    });
    const frozen = () =>
      new pg.Client({
        host: g.host,
        port: g.port,
        user: "app",
        database: "postgres",
        password: token,
        ssl: { ca, servername: RDS },
      });
    const first = frozen();
    await first.connect(); // the control works while the token is young
    await first.end();
    for (let minutes = 20; minutes <= 180; minutes += 20) {
      g.clockOffsetMs = minutes * 60_000;
      const client = new pg.Client({
        host: proxy.host,
        port: proxy.port,
        user: "app",
        database: "postgres",
        password: "ignored",
      });
      await client.connect();
      const { rows } = await client.query("select 1 as one");
      assert.deepEqual(rows, [{ one: 1 }]);
      await client.end();
    }
    const { rows } = await through.query("select 'still here' as s");
    assert.deepEqual(rows, [{ s: "still here" }]);
    await through.end();
    assert.ok(proxy.stats.tokens.signed >= 9, JSON.stringify(proxy.stats));

    const late = frozen();
    await assert.rejects(late.connect(), /PAM authentication failed/);
    const rejection = g.stats.logins.at(-1)!;
    assert.equal(rejection.accepted, false);
    assert.equal(rejection.reason, "expired");
  },
);

test(
  "startProxy: postgres.js's query.cancel() through the proxy cancels pg_sleep upstream (57014); an uncancelled short sleep completes (the control)",
  TIMEOUT,
  async () => {
    const { proxy } = await setup();
    const sql = postgres({
      host: proxy.host,
      port: proxy.port,
      user: "app",
      database: "postgres",
      max: 1,
      onnotice: () => {},
    });
    try {
      const [{ slept }] = await sql`select pg_sleep(0.05)::text as slept`;
      assert.equal(slept, "");
      const query = sql`select pg_sleep(30)`;
      const running = query.execute();
      setTimeout(() => query.cancel(), 300);
      await assert.rejects(running, (e: { code?: string }) => e.code === "57014");
      assert.equal(proxy.stats.cancels, 1);
      const [{ n }] = await sql`select 1 as n`; // the session survived its cancelled query
      assert.equal(n, 1);
    } finally {
      await sql.end();
    }
  },
);

test(
  "startProxy: the target's user and database win over the client's; the server's own refusal (no such database) reaches the client as the server sent it",
  TIMEOUT,
  async () => {
    const { g, proxy } = await setup({ user: "fixed", database: "postgres" });
    const r = await psql([
      "-h",
      proxy.host,
      "-p",
      String(proxy.port),
      "-U",
      "someone",
      "-d",
      "elsewhere",
    ], "select current_database()");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), "postgres");
    assert.equal(g.stats.logins.at(-1)!.user, "fixed");

    const free = await setup();
    const missing = await psql(
      ["-h", free.proxy.host, "-p", String(free.proxy.port), "-U", "app", "-d", "no_such_db"],
      "select 1",
    );
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /database "no_such_db" does not exist/);
  },
);

test(
  "startProxy: pg-iam's failures reach the client as PostgreSQL errors with their step: keys the server does not accept (28000, the IAM refusal), an unverifiable certificate (08001, tls), an unreachable server (08001, connect); none shows a secret",
  TIMEOUT,
  async () => {
    const logins: ProxyLogin[] = [];
    const wrong = await setup({
      onLogin: (login) => logins.push(login),
      credentials: {
        accessKeyId: "AKIDNOTACCEPTED",
        secretAccessKey: "not/accepted/secret/key/0123456789",
      },
    });
    const c1 = new pg.Client({
      host: wrong.proxy.host,
      port: wrong.proxy.port,
      user: "app",
      database: "postgres",
    });
    const e1 = await c1.connect().then(() => undefined, (e) => e);
    assert.equal(e1?.code, "28000");
    assert.match(e1.message, /^pg-iam proxy: /);
    assert.match(e1.message, /PAM authentication failed/);
    assertNoSecret(`${e1.message} ${e1.detail}`);
    assert.equal(wrong.proxy.stats.failures.auth, 1);
    assert.equal(logins.length, 1);
    assert.equal(logins[0].ok, false);
    assert.equal(logins[0].step, "auth");
    assert.equal(logins[0].attempts, 2); // rejected, then a fresh token rejected too
    assert.equal(logins[0].code, "28000");
    assert.equal(logins[0].error?.name, "IamAuthError");

    const g = await testGateway(KEYS);
    const untrusted = await startProxy({
      connectionString: `postgres://127.0.0.1:${g.port}/postgres?iam_host=${RDS}&iam_port=5432`,
      credentials: KEYS,
    });
    proxies.push(untrusted);
    const c2 = new pg.Client({
      host: untrusted.host,
      port: untrusted.port,
      user: "app",
      database: "postgres",
    });
    const e2 = await c2.connect().then(() => undefined, (e) => e);
    assert.equal(e2?.code, "08001");
    assert.match(e2.detail, /pg-iam step: tls/);
    assertNoSecret(`${e2.message} ${e2.detail}`);
    assert.equal(g.stats.logins.length, 0); // no token was sent

    const nowhere = await startProxy({
      connectionString: `postgres://127.0.0.1:1/postgres?iam_host=${RDS}&iam_port=5432`,
      credentials: KEYS,
    });
    proxies.push(nowhere);
    const c3 = new pg.Client({
      host: nowhere.host,
      port: nowhere.port,
      user: "app",
      database: "postgres",
    });
    const e3 = await c3.connect().then(() => undefined, (e) => e);
    assert.equal(e3?.code, "08001");
    assert.match(e3.detail, /pg-iam step: connect; code: ECONNREFUSED/);
  },
);

test(
  "startProxy: a Unix socket directory, created owner-only, with an owner-only socket named as libpq looks for it; psql connects with -h <dir>",
  TIMEOUT,
  async () => {
    const socketDir = join(dir, "sock");
    const { proxy } = await setup({ listen: { dir: socketDir, port: 6543 } });
    assert.equal(proxy.path, join(socketDir, ".s.PGSQL.6543"));
    assert.equal(proxy.port, 6543);
    assert.equal(statSync(socketDir).mode & 0o777, 0o700);
    assert.equal(statSync(proxy.path!).mode & 0o777, 0o600);
    const r = await psql(
      ["-h", socketDir, "-p", "6543", "-U", "app", "-d", "postgres"],
      "select 7",
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), "7");
  },
);

test(
  "startProxy: a non-loopback address is refused without allowRemote, and without a password with it; a socket directory open to others is refused, a shared sticky one (as /tmp) too, an existing owner-only one is used (the control)",
  async () => {
    const target = { connectionString: `postgres://db.example.com/postgres`, credentials: KEYS };
    await assert.rejects(
      startProxy({ ...target, listen: { host: "0.0.0.0" } }),
      (e: Error) =>
        e instanceof RangeError &&
        /"listen.host" "0.0.0.0" is not a loopback address/.test(e.message),
    );
    await assert.rejects(
      startProxy({ ...target, listen: { host: "0.0.0.0" }, allowRemote: true }),
      (e: Error) => e instanceof RangeError && /"password" option is required/.test(e.message),
    );
    const open = join(dir, "open");
    const { mkdirSync, chmodSync } = await import("node:fs");
    mkdirSync(open);
    chmodSync(open, 0o777);
    await assert.rejects(
      startProxy({ ...target, listen: { dir: open } }),
      (e: Error) => e instanceof RangeError && /open to other users \(mode 777\)/.test(e.message),
    );
    chmodSync(open, 0o1777); // as /tmp: sticky, so no one replaces another's file, but enterable
    await assert.rejects(
      startProxy({ ...target, listen: { dir: open } }),
      (e: Error) => e instanceof RangeError && /open to other users \(mode 1777\)/.test(e.message),
    );
    chmodSync(open, 0o700);
    const own = await startProxy({ ...target, listen: { dir: open, port: 6544 } });
    assert.equal(own.path, join(open, ".s.PGSQL.6544"));
    await own.close();
    await assert.rejects(
      startProxy({ ...target, bogus: 1 } as ProxyOptions),
      (e: Error) => e instanceof TypeError && /no "bogus" option/.test(e.message),
    );
  },
);

test(
  "startProxy: shutdown() stops accepting at once and lets an open session finish its query; close() after the limit drops the rest",
  TIMEOUT,
  async () => {
    const { proxy } = await setup({ shutdownTimeout: 1 });
    const client = new pg.Client({
      host: proxy.host,
      port: proxy.port,
      user: "app",
      database: "postgres",
    });
    await client.connect();
    const slow = client.query("select pg_sleep(0.3)::text as s");
    const shutdown = proxy.shutdown();
    assert.equal(proxy.accepting, false);
    const refused = new pg.Client({
      host: proxy.host,
      port: proxy.port,
      user: "app",
      database: "postgres",
    });
    await assert.rejects(refused.connect(), /ECONNREFUSED/);
    assert.deepEqual((await slow).rows, [{ s: "" }]);
    const ended = new Promise((resolve) => client.once("error", resolve).once("end", resolve));
    await shutdown;
    await ended;
  },
);

test(
  "iamUrl(): psql and node-postgres (whose connection-string parser drizzle-kit uses) log in through the gateway with the URL, TLS verified with the connection string's CA file; the URL with its token altered is refused (the control)",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const url = await iamUrl({
      connectionString: `postgres://app@127.0.0.1:${g.port}/postgres?iam_host=${RDS}` +
        `&iam_port=5432&sslrootcert=${CA_FILE}&application_name=from%20url`,
      credentials: KEYS,
    });
    const parsed = new URL(url);
    assert.equal(parsed.hostname, RDS);
    assert.equal(parsed.searchParams.get("hostaddr"), "127.0.0.1");
    assert.equal(parsed.searchParams.get("sslmode"), "verify-full");
    assert.equal(parsed.searchParams.get("sslrootcert"), CA_FILE);
    const r = await psql([url], "select current_setting('application_name')");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), "from url");

    // node-postgres has no hostaddr: it connects to the host it checks the certificate against.
    // What its connection-string parser read (the token, the CA file) is used as is, with the
    // address given apart and the endpoint name as the servername.
    // deno-lint-ignore no-explicit-any
    const read: pg.ClientConfig = (new pg.Client({ connectionString: url }) as any)
      .connectionParameters;
    assert.equal(read.password, decodeURIComponent(parsed.password));
    assert.equal((read.ssl as { ca: string }).ca, ca);
    const client = new pg.Client({
      user: read.user,
      password: read.password,
      database: read.database,
      port: read.port,
      host: "127.0.0.1",
      ssl: { ...(read.ssl as object), servername: RDS },
    });
    await client.connect();
    assert.deepEqual((await client.query("select 1 as one")).rows, [{ one: 1 }]);
    await client.end();

    const signature = /X-Amz-Signature%3D([0-9a-f])/i.exec(url)!;
    const altered = url.replace(
      signature[0],
      `X-Amz-Signature%3D${signature[1] === "0" ? "1" : "0"}`,
    );
    const refused = await psql([altered], "select 1");
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /PAM authentication failed/);
    assert.equal(g.stats.logins.at(-1)!.reason, "signature");
  },
);

test("iamUrl(): TLS options that a URL cannot carry, an unknown option and a missing user are TypeErrors naming them", async () => {
  await assert.rejects(
    iamUrl({ connectionString: "postgres://app@db.example.com/x", ssl: { ca } as never }),
    (e: Error) =>
      e instanceof TypeError && /"ssl" option of iamUrl\(\) must be a mode/.test(e.message),
  );
  await assert.rejects(
    iamUrl({ connectionString: "postgres://app@db.example.com/x", max: 3 } as never),
    (e: Error) => e instanceof TypeError && /iamUrl\(\) has no "max" option/.test(e.message),
  );
  await assert.rejects(
    iamUrl({ host: "db.example.com", region: "us-east-1", credentials: KEYS }),
    (e: Error) => e instanceof TypeError && /iamUrl\(\) needs a user/.test(e.message),
  );
});

test(
  "startProxy: with allowRemote on 0.0.0.0, clients must give the proxy's password (SCRAM-SHA-256): psql and a node-postgres pool configured with it log in; a wrong password is 28P01 and no password is asked for (the controls), and neither reaches the server",
  TIMEOUT,
  async () => {
    const logins: ProxyLogin[] = [];
    const { g, proxy } = await setup({
      listen: { host: "0.0.0.0" },
      allowRemote: true,
      password: "local proxy password",
      onLogin: (login) => logins.push(login),
    });
    const args = ["-h", "127.0.0.1", "-p", String(proxy.port), "-U", "app", "-d", "postgres"];
    const env = (password?: string) =>
      childEnv(KEYS, dir, password === undefined ? {} : { PGPASSWORD: password });
    const ok = await run(
      "psql",
      ["-X", "-w", "-tA", ...args, "-c", "select 2"],
      env("local proxy password"),
    );
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), "2");

    const pool = new pg.Pool({
      host: "127.0.0.1",
      port: proxy.port,
      user: "app",
      database: "postgres",
      password: "local proxy password",
      max: 2,
    });
    const results = await Promise.all([1, 2, 3].map((n) => pool.query("select $1::int as n", [n])));
    assert.deepEqual(results.map((r) => r.rows[0].n), [1, 2, 3]);
    await pool.end();
    const upstreamLogins = g.stats.accepted;

    const wrong = await run("psql", ["-X", "-w", "-tA", ...args, "-c", "select 1"], env("not it"));
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /password authentication failed for user "app"/);
    const none = await run("psql", ["-X", "-w", "-tA", ...args, "-c", "select 1"], env());
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /no password supplied/);
    assert.equal(g.stats.accepted, upstreamLogins); // the refused never reached the server
    // The wrong password, then psql -w closing when asked for one it has not.
    assert.deepEqual(logins.filter((l) => !l.ok).map((l) => l.code), ["28P01", "08006"]);
    assert.ok(!JSON.stringify(logins).includes("local proxy password"));
  },
);

test(
  "startProxy: the password may be given as PostgreSQL's stored SCRAM verifier instead of the password itself",
  TIMEOUT,
  async () => {
    const { formatScramVerifier, scramVerifier } = await import("../../src/listener/scram.ts");
    const stored = formatScramVerifier(await scramVerifier("from a hash"));
    const { proxy } = await setup({ password: stored });
    const args = ["-h", proxy.host, "-p", String(proxy.port), "-U", "app", "-d", "postgres"];
    const ok = await run(
      "psql",
      ["-X", "-w", "-tA", ...args, "-c", "select 3"],
      childEnv(KEYS, dir, { PGPASSWORD: "from a hash" }),
    );
    assert.equal(ok.code, 0, ok.stderr);
    const hashAsPassword = await run(
      "psql",
      ["-X", "-w", "-tA", ...args, "-c", "select 3"],
      childEnv(KEYS, dir, { PGPASSWORD: stored }),
    );
    assert.notEqual(hashAsPassword.code, 0); // the verifier is no password (the control)
  },
);

test(
  "startProxy: a young token is reused for the next logins; once the server rejects it (the clock moved past its life), the one retry signs anew and the client never sees the rejection",
  TIMEOUT,
  async () => {
    const logins: ProxyLogin[] = [];
    let proxyClock = 0;
    const { g, proxy } = await setup({
      onLogin: (login) => logins.push(login),
      now: () => Date.now() + proxyClock,
    });
    const connect = async () => {
      const client = new pg.Client({
        host: proxy.host,
        port: proxy.port,
        user: "app",
        database: "postgres",
      });
      await client.connect();
      await client.end();
    };
    for (let i = 0; i < 3; i++) await connect();
    assert.deepEqual(proxy.stats.tokens, { signed: 1, reused: 2 });
    // Two minutes on for the proxy: its token is young (reused up to 5 minutes). Sixteen for the
    // gateway: that token is expired, while one signed now by the proxy is 14 minutes old.
    proxyClock = 2 * 60_000;
    g.clockOffsetMs = 16 * 60_000;
    await connect();
    assert.equal(logins.at(-1)!.attempts, 2);
    assert.deepEqual(proxy.stats.tokens, { signed: 2, reused: 3 });
    assert.equal(g.stats.rejections.expired, 1);
  },
);

test(
  "startProxy: a server at its connection limit (53300) is asked again with backoff, so a client gets in once a slot frees; straight at the server the same client is refused at once (the control)",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS, { maxConnections: 1 });
    const proxy = await startProxy({
      connectionString: `postgres://127.0.0.1:${g.port}?iam_host=${RDS}&iam_port=5432` +
        `&sslrootcert=${CA_FILE}`,
      credentials: KEYS,
    });
    proxies.push(proxy);
    const options = { host: proxy.host, port: proxy.port, user: "app", database: "postgres" };
    const first = new pg.Client(options);
    await first.connect();
    const token = await rdsToken({ hostname: RDS, username: "app", credentials: KEYS });
    const direct = new pg.Client({
      host: g.host,
      port: g.port,
      user: "app",
      database: "postgres",
      password: token,
      ssl: { ca, servername: RDS },
    });
    await assert.rejects(direct.connect(), (e: { code?: string }) => e.code === "53300");
    const second = new pg.Client(options);
    const waiting = second.connect();
    await waitFor(() => g.stats.refused["53300"] >= 2); // the proxy was refused, and asks again
    await first.end();
    await waiting;
    assert.deepEqual((await second.query("select 1 as one")).rows, [{ one: 1 }]);
    await second.end();
  },
);

test(
  "startProxy's http port: /metrics counts a login, its token, its connect time and bytes, and a failed login by its step; /readyz turns 503 as shutdown() starts draining, while a session finishes; close() frees the port",
  TIMEOUT,
  async () => {
    const { proxy } = await setup({ http: { port: 0 }, shutdownTimeout: 5 });
    const base = `http://${proxy.http!.host}:${proxy.http!.port}`;
    const sample = (text: string, series: string) =>
      Number(new RegExp(`^${series.replace(/[{}"]/g, "\\$&")} (\\S+)$`, "m").exec(text)?.[1]);
    const before = await (await fetch(`${base}/metrics`)).text();
    assert.equal(sample(before, 'pgiam_proxy_logins_total{result="ok"}'), 0);

    const client = new pg.Client({
      host: proxy.host,
      port: proxy.port,
      user: "app",
      database: "postgres",
    });
    await client.connect();
    await client.query("select 1");
    const after = await (await fetch(`${base}/metrics`)).text();
    assert.equal(sample(after, 'pgiam_proxy_logins_total{result="ok"}'), 1);
    assert.equal(sample(after, 'pgiam_proxy_tokens_total{reused="false"}'), 1);
    assert.equal(sample(after, "pgiam_proxy_connect_seconds_count"), 1);
    assert.equal(sample(after, "pgiam_proxy_sessions"), 1);
    assert.ok(sample(after, 'pgiam_proxy_bytes_total{direction="server_to_client"}') > 0);
    assert.match(proxy.metrics(), /^# TYPE pgiam_proxy_sessions gauge$/m);

    // A login that fails at TLS (the test CA is not the RDS bundle), counted by its step.
    const g = await testGateway(KEYS);
    const untrusted = await startProxy({
      connectionString: `postgres://127.0.0.1:${g.port}?iam_host=${RDS}&iam_port=5432`,
      credentials: KEYS,
      http: { port: 0 },
    });
    proxies.push(untrusted);
    const failing = new pg.Client({
      host: untrusted.host,
      port: untrusted.port,
      user: "app",
      database: "postgres",
    });
    await assert.rejects(failing.connect());
    const failed = await (await fetch(`http://127.0.0.1:${untrusted.http!.port}/metrics`)).text();
    assert.equal(sample(failed, 'pgiam_proxy_upstream_failures_total{step="tls"}'), 1);
    assert.equal(sample(failed, 'pgiam_proxy_logins_total{result="failed"}'), 1);
    assert.equal(sample(failed, 'pgiam_proxy_logins_total{result="ok"}'), 0);

    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const shutdown = proxy.shutdown();
    assert.equal((await fetch(`${base}/readyz`)).status, 503);
    assert.equal((await fetch(`${base}/livez`)).status, 200);
    assert.deepEqual((await client.query("select 2 as n")).rows, [{ n: 2 }]); // still served
    await client.end();
    await shutdown;
    await assert.rejects(fetch(`${base}/livez`));
  },
);

test(
  "startProxy holds clients to the listener's limits: past maxConnections a client gets 53300 before any upstream login, and a connection that sends nothing is closed at the authentication deadline; a client within them logs in (the control)",
  TIMEOUT,
  async () => {
    const { g, proxy } = await setup({ maxConnections: 1, authenticationTimeoutMs: 1500 });
    const options = { host: proxy.host, port: proxy.port, user: "app", database: "postgres" };
    const first = new pg.Client(options);
    await first.connect();
    const loginsBefore = g.stats.logins.length;
    const second = new pg.Client(options);
    await assert.rejects(
      second.connect(),
      (e: { code?: string; message?: string }) =>
        e.code === "53300" && e.message === "sorry, too many clients already",
    );
    assert.equal(g.stats.logins.length, loginsBefore); // refused before the server saw it
    assert.equal(proxy.stats.refused["53300"], 1);
    await first.end();

    const { connect } = await import("node:net");
    const silent = connect(proxy.port, proxy.host);
    const closedAt = await new Promise<number>((resolve) => {
      const opened = performance.now();
      silent.on("error", () => {});
      silent.on("close", () => resolve(performance.now() - opened));
    });
    assert.ok(closedAt >= 1400, `closed after ${closedAt} ms`);
  },
);
