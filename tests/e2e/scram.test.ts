// SCRAM-SHA-256's server side (src/listener/scram.ts) against clients nobody here wrote: psql
// (libpq), postgres.js, node-postgres and, on Bun, Bun.SQL log in to a small server written here
// (SSLRequest answered "N", scramLogin, then the client's StartupMessage relayed to the test
// PostgreSQL, trust auth, which sends AuthenticationOk and the rest) and run `select 1`. The
// controls: a wrong password is refused with 28P01 by every client; a server signing with the
// wrong ServerKey is refused by every client, so their success means our signature is right.
// postgres.js 3 runs this file in the suite's second pass (tests/_postgres_major.mjs).
import { after, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import process from "node:process";
import postgres from "postgres";
import pg from "pg";
import { Inbox } from "../../src/connection/inbox.ts";
import {
  errorResponse,
  GSSENC_REQUEST,
  SSL_REQUEST,
  startupCode,
  startupParameters,
} from "../../src/connection/pgwire.ts";
import {
  parseScramVerifier,
  scramLogin,
  type ScramResult,
  type ScramVerifier,
  scramVerifier,
} from "../../src/listener/scram.ts";
import { upstreamPostgres } from "../_postgres.ts";
import { run } from "../_cli.ts";

const BUN = (globalThis as { Bun?: { SQL?: unknown } }).Bun?.SQL !== undefined;
const PASSWORD = "correct horse battery staple";
const WRONG = "correct horse battery stapler";
const closers: (() => void)[] = [];
after(() => {
  for (const close of closers) close();
});

interface ScramServer {
  port: number;
  /** How each login ended, in order. */
  logins: ScramResult[];
  /** SSLRequests answered "N". */
  sslRequests: number;
}

/** A server that asks for `verifier`'s password, then relays the session to the test PostgreSQL. */
async function scramServer(verifier: ScramVerifier): Promise<ScramServer> {
  const upstream = await upstreamPostgres();
  const logins: ScramResult[] = [];
  let sslRequests = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer(async (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    const inbox = new Inbox(socket);
    let startup: Uint8Array | undefined;
    for (;;) {
      startup = await inbox.next(() => inbox.reader.startup());
      if (startup === undefined) return void socket.destroy();
      const code = startupCode(startup);
      if (code !== SSL_REQUEST && code !== GSSENC_REQUEST) break;
      if (code === SSL_REQUEST) sslRequests++;
      socket.write("N");
    }
    const user = startupParameters(startup)?.get("user") ?? "";
    const result = await scramLogin(inbox, (bytes) => socket.write(bytes), verifier, user);
    logins.push(result);
    if (!result.ok) {
      const { code, message, detail } = result;
      return void socket.end(errorResponse({ severity: "FATAL", code, message, detail }));
    }
    inbox.detach();
    const relay = net.connect(upstream.port, upstream.host);
    sockets.add(relay);
    relay.on("close", () => socket.destroy());
    relay.on("error", () => {});
    socket.on("close", () => relay.destroy());
    relay.write(startup);
    relay.write(inbox.reader.rest());
    socket.pipe(relay);
    relay.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(() => {
    server.close();
    for (const socket of sockets) socket.destroy();
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    logins,
    get sslRequests() {
      return sslRequests;
    },
  };
}

/** The verifier with its ServerKey altered: the proof still checks, the signature is wrong. */
function wrongServerKey(verifier: ScramVerifier): ScramVerifier {
  const serverKey = verifier.serverKey.slice();
  serverKey[0] ^= 1;
  return { ...verifier, serverKey };
}

const codeOf = (result: ScramResult | undefined) => result?.ok ? "ok" : result?.code;

// ---- the clients, each a login and `select 1`: the value, or the error ----

/** psql (libpq): sslmode=prefer as by default, so its SSLRequest is answered "N" first. */
async function psql(port: number, password: string): Promise<string> {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k, v]) => v !== undefined && !k.startsWith("PG")),
  ) as Record<string, string>;
  const conninfo = `host=127.0.0.1 port=${port} user=app dbname=postgres sslmode=prefer`;
  const r = await run("psql", ["-X", "-w", "-tAc", "select 1", conninfo], {
    ...env,
    PGPASSWORD: password,
  });
  return r.code === 0 ? r.stdout.trim() : `exit ${r.code}: ${r.stderr.trim()}`;
}

async function postgresJs(port: number, password: string): Promise<unknown> {
  const sql = postgres({
    host: "127.0.0.1",
    port,
    user: "app",
    database: "postgres",
    password,
    ssl: false,
    max: 1,
  });
  try {
    const [row] = await sql`select 1 as x`;
    return row.x;
  } catch (error) {
    return error;
  } finally {
    await sql.end({ timeout: 0 });
  }
}

async function nodePostgres(port: number, password: string): Promise<unknown> {
  const client = new pg.Client({
    host: "127.0.0.1",
    port,
    user: "app",
    database: "postgres",
    password,
    ssl: false,
  });
  client.on("error", () => {});
  try {
    await client.connect();
    const { rows } = await client.query("select 1 as x");
    return rows[0].x;
  } catch (error) {
    return error;
  } finally {
    await client.end().catch(() => {});
  }
}

type BunSql = {
  (s: TemplateStringsArray): Promise<{ x: number }[]>;
  close(o?: unknown): Promise<void>;
};

async function bunSql(port: number, password: string): Promise<unknown> {
  const { SQL } = (globalThis as unknown as { Bun: { SQL: new (o: unknown) => BunSql } }).Bun;
  const sql = new SQL({
    host: "127.0.0.1",
    port,
    user: "app",
    database: "postgres",
    password,
    tls: false,
    max: 1,
  });
  try {
    const [row] = await sql`select 1 as x`;
    return row.x;
  } catch (error) {
    return error;
  } finally {
    await sql.close({ timeout: 0 });
  }
}

/** The SQLSTATE a driver's error carries (Bun.SQL's is `errno`). */
function sqlState(error: unknown): string | undefined {
  const e = error as { code?: string; errno?: string };
  return BUN && typeof e?.errno === "string" ? e.errno : e?.code;
}

const DRIVERS: Array<[string, (port: number, password: string) => Promise<unknown>, boolean]> = [
  ["postgres.js", postgresJs, true],
  ["node-postgres", nodePostgres, true],
  ["Bun.SQL", bunSql, BUN],
];

test("psql logs in with the right password and runs select 1; a wrong one is 28P01, as PostgreSQL says it", async () => {
  const server = await scramServer(await scramVerifier(PASSWORD));
  assert.equal(await psql(server.port, PASSWORD), "1");
  const wrong = await psql(server.port, WRONG);
  assert.match(wrong, /^exit 2: .*FATAL: {2}password authentication failed for user "app"/s);
  assert.deepEqual(server.logins.map(codeOf), ["ok", "28P01"]);
  assert.equal(
    server.sslRequests,
    2,
    "psql asked for TLS first (sslmode=prefer), and went on without",
  );
});

for (const [name, client, runs] of DRIVERS) {
  test(
    `${name} logs in with the right password and runs select 1; a wrong one is 28P01`,
    { skip: runs ? false : "Bun.SQL is Bun's own client" },
    async () => {
      const server = await scramServer(await scramVerifier(PASSWORD));
      assert.equal(await client(server.port, PASSWORD), 1);
      const wrong = await client(server.port, WRONG);
      assert.ok(wrong instanceof Error, String(wrong));
      assert.equal(sqlState(wrong), "28P01");
      assert.equal(wrong.message, 'password authentication failed for user "app"');
      assert.deepEqual(server.logins.map(codeOf), ["ok", "28P01"]);
    },
  );
}

test("a server that signs with the wrong ServerKey: every client refuses it although its proof was accepted (the control for their success)", async () => {
  const server = await scramServer(wrongServerKey(await scramVerifier(PASSWORD)));
  const refusals: Record<string, string> = {};
  refusals.psql = await psql(server.port, PASSWORD);
  for (const [name, client, runs] of DRIVERS) {
    if (!runs) continue;
    const result = await client(server.port, PASSWORD);
    assert.ok(result instanceof Error, `${name} logged in: ${result}`);
    refusals[name] = result.message;
  }
  for (const [name, message] of Object.entries(refusals)) assert.match(message, /signature/i, name);
  assert.match(refusals.psql, /^exit 2: .*incorrect server signature/s);
  assert.deepEqual(server.logins.map(codeOf), Object.keys(refusals).map(() => "ok"));
});

test("a verifier PostgreSQL computed (pg_authid.rolpassword) given instead of the password: psql and the drivers log in with the password", async () => {
  const upstream = await upstreamPostgres();
  const role = `scram_e2e_${process.pid}_${Date.now()}`;
  const r = await run("psql", [
    "-X",
    "-tAc",
    `set password_encryption = 'scram-sha-256'; create role ${role} password 'pencil';` +
    `select rolpassword from pg_authid where rolname = '${role}'; drop role ${role};`,
    `host=${upstream.host} port=${upstream.port} user=${upstream.user} dbname=postgres`,
  ], { PATH: process.env.PATH ?? "/usr/bin:/bin" });
  assert.equal(r.code, 0, r.stderr);
  const stored = r.stdout.split("\n").find((line) => line.startsWith("SCRAM-SHA-256$"));
  assert.ok(stored, r.stdout);
  const server = await scramServer(parseScramVerifier(stored));
  assert.equal(await psql(server.port, "pencil"), "1");
  for (const [, client, runs] of DRIVERS) {
    if (runs) assert.equal(await client(server.port, "pencil"), 1);
  }
  assert.match(await psql(server.port, "Pencil"), /password authentication failed for user "app"/);
  assert.deepEqual(server.logins.map(codeOf), [
    ...DRIVERS.filter((d) => d[2]).map(() => "ok"),
    "ok",
    "28P01",
  ]);
});
