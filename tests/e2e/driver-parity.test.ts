// Where the drivers' own test suites, run through pg-iam (scripts/driver-suites.mjs), found pg-iam
// behaving unlike the plain driver: each case end to end through the gateway, beside the plain
// driver doing the same (the behaviour to match) or the case pg-iam still distinguishes.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import pg from "pg";
import postgres from "postgres";
import { rdsToken } from "../../mod.ts";
import { type ConnectEvent, iamClient, iamPool } from "../../src/pg/mod.ts";
import { iamPostgres } from "../../src/postgres/mod.ts";
import { IamSocket } from "../../src/connection/socket.ts";
import type { Gateway, GatewayOptions } from "../../src/gateway/mod.ts";
import { closeTestGateways, testGateway } from "../_gateway.ts";
import { upstreamPostgres } from "../_postgres.ts";
import { ca } from "../fixtures/tls.ts";

const KEYS = { accessKeyId: "AKIDPGIAMPARITY", secretAccessKey: "pg-iam/parity/secret/key" };
const OTHER = { accessKeyId: "AKIDUNKNOWN", secretAccessKey: "not-known-to-the-gateway" };

const servers: net.Server[] = [];
const accepted = new Set<net.Socket>();
after(async () => {
  for (const socket of accepted) socket.destroy();
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  await closeTestGateways();
});

function gateway(extra: Partial<GatewayOptions> = {}): Promise<Gateway> {
  return testGateway(KEYS, extra);
}

/** What iamClient/iamPool/iamPostgres need to log in through `g`. */
function iam(g: Gateway) {
  return { signingHostname: g.endpoint, signingPort: 5432, credentials: KEYS, ssl: { ca } };
}

/** A plain pg client logging in to `g` with a token of its own as the password. */
async function plainClient(g: Gateway, extra: pg.ClientConfig = {}): Promise<pg.Client> {
  const password = await rdsToken({
    hostname: g.endpoint,
    port: 5432,
    username: "app",
    credentials: KEYS,
  });
  return new pg.Client({
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    password,
    ssl: { ca, servername: g.endpoint },
    ...extra,
  });
}

async function listen(server: net.Server): Promise<number> {
  servers.push(server);
  server.on("connection", (socket) => accepted.add(socket));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as net.AddressInfo).port;
}

const closed = (stream: unknown) =>
  new Promise<void>((resolve) => (stream as net.Socket).once("close", () => resolve()));

// ---- 1. node-postgres: connect() on a stream destroyed earlier ----

test("parity, node-postgres: connect() after the client's stream was destroyed (its 'close' gone out) connects, as with the plain driver", async () => {
  const g = await gateway();
  const plain = await plainClient(g);
  const client = iamClient({
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    ...iam(g),
  });
  for (const c of [plain, client]) {
    const stream = (c as unknown as { connection: { stream: net.Socket } }).connection.stream;
    const gone = closed(stream);
    stream.destroy();
    await gone;
    // Before the fix, pg-iam's socket emitted neither 'connect' nor 'close' again: this hung.
    await c.connect();
    assert.deepEqual((await c.query("select 1 as x")).rows, [{ x: 1 }]);
    await c.end();
  }
});

test("parity, node-postgres: connect() on a stream destroyed in the same tick fails, as with the plain driver", async () => {
  const g = await gateway();
  const plain = await plainClient(g);
  const client = iamClient({
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    ...iam(g),
  });
  const messages: string[] = [];
  for (const c of [plain, client]) {
    (c as unknown as { connection: { stream: net.Socket } }).connection.stream.destroy();
    messages.push(await c.connect().then(() => "connected", (e: Error) => e.message));
    // The plain driver's net.Socket reconnects underneath regardless; end it.
    (c as unknown as { connection: { stream: net.Socket } }).connection.stream.destroy();
  }
  assert.deepEqual(messages, Array(2).fill("Connection terminated unexpectedly"));
});

// ---- 2. pg.defaults.host, .port and .database ----

test("parity, node-postgres: pg.defaults.host, .port and .database are honoured below options, URL and PG* variables, as by the plain driver", async () => {
  const g = await gateway();
  const up = await upstreamPostgres();
  const saved = { host: pg.defaults.host, port: pg.defaults.port, database: pg.defaults.database };
  try {
    // The plain driver: the defaults take it to the server, to that database.
    Object.assign(pg.defaults, { host: up.host, port: up.port, database: "template1" });
    const plain = new pg.Client({ user: up.user });
    await plain.connect();
    const row = async (c: pg.Client | pg.Pool) =>
      (await c.query("select current_database() as db, inet_server_port() as port")).rows[0];
    assert.deepEqual(await row(plain), { db: "template1", port: up.port });
    await plain.end();

    // pg-iam: the defaults take it to the gateway (signed for its endpoint), to that database.
    Object.assign(pg.defaults, { host: g.host, port: g.port, database: "template1" });
    const client = iamClient({ user: "app", ...iam(g) });
    await client.connect();
    assert.deepEqual(await row(client), { db: "template1", port: up.port });
    await client.end();
    const pool = iamPool({ user: "app", max: 1, ...iam(g) });
    assert.equal((await row(pool)).db, "template1");
    await pool.end();

    // An option wins over them; a connection string too.
    const explicit = iamClient({ user: "app", database: "postgres", ...iam(g) });
    await explicit.connect();
    assert.equal((await row(explicit)).db, "postgres");
    await explicit.end();
    Object.assign(pg.defaults, { port: 1 }); // nothing listens there
    const url = iamClient({
      connectionString: `postgres://app@${g.host}:${g.port}/postgres`,
      ...iam(g),
    });
    await url.connect();
    assert.equal((await row(url)).db, "postgres");
    await url.end();

    // A bad default is named.
    Object.assign(pg.defaults, { port: "x" });
    assert.throws(() => iamClient({ user: "app", ...iam(g) }), {
      name: "RangeError",
      message: /^pg\.defaults\.port must be a port number from 1 to 65535, got "x"/,
    });
  } finally {
    Object.assign(pg.defaults, saved);
  }
});

// ---- 3. postgres.js: connect_timeout read per connection ----

test("parity, postgres.js: connect_timeout is read as each connection starts (its valueOf()), as by the plain driver: a short first one fails, the next connects", async () => {
  const g = await gateway();
  const up = await upstreamPostgres();
  // The first connection goes nowhere (accepted, never answered): it must time out, whatever the
  // machine's speed; every later one is relayed to `to`.
  async function firstBlackHoled(to: { host: string; port: number }): Promise<number> {
    let first = true;
    return await listen(net.createServer((socket) => {
      socket.on("error", () => {});
      if (first) return void (first = false);
      const upstream = net.connect(to.port, to.host);
      upstream.on("error", () => socket.destroy());
      socket.on("close", () => upstream.destroy());
      socket.pipe(upstream).pipe(socket);
    }));
  }
  // The test postgres.js's own suite runs ("requests works after single connect_timeout").
  const timeout = () => {
    let first = true;
    return { valueOf: () => first ? (first = false, 0.05) : 30 } as unknown as number;
  };
  const results: string[] = [];
  const run = async (sql: postgres.Sql) => {
    results.push(
      [
        await sql`select 1 as x`.then(() => "success", (e: { code?: string }) => e.code),
        (await sql`select 1 as x`)[0].x,
      ].join(","),
    );
    await sql.end();
  };
  await run(postgres({
    host: "127.0.0.1",
    port: await firstBlackHoled(up),
    user: up.user,
    database: "postgres",
    max: 1,
    connect_timeout: timeout(),
  }));
  const events: ConnectEvent[] = [];
  await run(iamPostgres({
    host: "127.0.0.1",
    port: await firstBlackHoled(g),
    user: "app",
    database: "postgres",
    max: 1,
    connect_timeout: timeout(),
    onConnect: (e) => events.push(e),
    ...iam(g),
  }));
  assert.deepEqual(results, ["CONNECT_TIMEOUT,1", "CONNECT_TIMEOUT,1"]);
  // pg-iam's own bound was 30 s for the second: before, it was the 0.05 s read at creation.
  assert.deepEqual(events.map((e) => e.ok), [false, true]);
});

// ---- 4. The socket's properties, and error codes ----

test("parity, node-postgres: the stream tells what a TLS socket tells (destroyed, addresses, ports, encrypted, authorized, bytes), as the plain driver's does", async () => {
  const g = await gateway();
  const plain = await plainClient(g);
  const client = iamClient({
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    ...iam(g),
  });
  const seen = [];
  for (const c of [plain, client]) {
    await c.connect();
    await c.query("select 1");
    const s = (c as unknown as { connection: { stream: net.Socket & Record<string, unknown> } })
      .connection.stream;
    const before = {
      destroyed: s.destroyed,
      remoteAddress: s.remoteAddress,
      remotePort: s.remotePort,
      localAddress: s.localAddress,
      localPort: typeof s.localPort,
      encrypted: s.encrypted,
      authorized: s.authorized,
      bytesWritten: (s.bytesWritten as number) > 0,
      bytesRead: (s.bytesRead as number) > 0,
      peer: typeof (s.getPeerCertificate as () => object)(),
    };
    const gone = closed(s);
    await c.end();
    await gone;
    seen.push({ ...before, destroyedAfterEnd: s.destroyed });
  }
  assert.deepEqual(seen[1], seen[0]);
  assert.deepEqual(seen[0], {
    destroyed: false,
    remoteAddress: g.host,
    remotePort: g.port,
    localAddress: g.host,
    localPort: "number",
    encrypted: true,
    authorized: true,
    bytesWritten: true,
    bytesRead: true,
    peer: "object",
    destroyedAfterEnd: true,
  });
});

test("parity: a server resetting the connection during login gives ECONNRESET through pg-iam, as with the plain drivers; a close without a system error gives pg-iam's CONNECTION_CLOSED", async () => {
  // Reads the StartupMessage, then resets the connection; or closes it at once (pg-pool's test).
  const resetting = await listen(net.createServer((socket) => {
    socket.on("error", () => {});
    socket.once("data", () => socket.resetAndDestroy());
  }));
  const closing = await listen(net.createServer((socket) => socket.destroy()));
  const target = { host: "127.0.0.1", user: "app", database: "postgres" };
  const opts = { credentials: KEYS, region: "us-east-1", dangerouslyDisableTls: true };
  const codes = async (port: number, drivers: ("plain" | "iam")[]) => {
    const all: unknown[] = [];
    for (const kind of drivers) {
      const iamed = kind === "iam";
      const c = iamed
        ? iamClient({ ...target, port, ...opts })
        : new pg.Client({ ...target, port });
      all.push(await c.connect().then(() => "connected", (e: { code?: string }) => e.code));
      // postgres.js 4 asks again after a CONNECTION_CLOSED until connect_timeout: a short one.
      const retry = { connect_timeout: 1, backoff: () => 0.1 };
      const sql = iamed
        ? iamPostgres({ ...target, port, max: 1, ...retry, ...opts })
        : postgres({ ...target, port, max: 1, ...retry });
      all.push(await sql`select 1`.then(() => "connected", (e: { code?: string }) => e.code));
      await sql.end({ timeout: 0 });
    }
    return all;
  };
  assert.deepEqual(await codes(resetting, ["plain", "iam"]), Array(4).fill("ECONNRESET"));
  // Without a system error the plain drivers differ (pg: no code; postgres.js, which may also
  // reconnect: CONNECTION_DESTROYED); pg-iam's error always has a code. (Which of the close or a
  // reset of pg-iam's write arrives first is the kernel's: either is kept.)
  for (const code of await codes(closing, ["iam"])) {
    assert.ok(["CONNECTION_CLOSED", "ECONNRESET", "EPIPE"].includes(code as string), `${code}`);
  }
});

test("parity: a write after pg-iam's socket closed fails with ERR_STREAM_DESTROYED, as on a destroyed net.Socket", async () => {
  const writeError = (socket: { write(b: Uint8Array, cb: (e?: Error | null) => void): unknown }) =>
    new Promise<unknown>((resolve) => socket.write(new Uint8Array(8), (e) => resolve(e)));
  const plain = new net.Socket();
  plain.on("error", () => {});
  plain.destroy();
  const plainError = await writeError(plain) as { code?: string };
  const socket = new IamSocket({} as never);
  socket.destroy();
  const error = await writeError(socket) as { code?: string };
  assert.equal(plainError.code, "ERR_STREAM_DESTROYED");
  assert.equal(error.code, plainError.code);
});

// ---- 5. The gateway's upstream login ----

test("gateway: an upstream login the gateway cannot do (it asks for a password the gateway lacks, or for SCRAM; it refuses the gateway's password, or its connection) is one 08004 error naming it, not a token rejected twice", async () => {
  // Upstream of the gateway under test: another gateway, which wants a token as the password
  // (and, with TLS, refuses the plaintext connection the gateway opens upstream).
  const inner = await gateway({ tls: false });
  const innerTls = await gateway();
  // And a server asking for SCRAM (AuthenticationSASL).
  const scram = await listen(net.createServer((socket) => {
    socket.on("error", () => {});
    socket.once("data", () => {
      const mechanism = new TextEncoder().encode("SCRAM-SHA-256\0\0");
      const message = new Uint8Array(9 + mechanism.length);
      const view = new DataView(message.buffer);
      message[0] = 0x52;
      view.setUint32(1, 8 + mechanism.length);
      view.setUint32(5, 10);
      message.set(mechanism, 9);
      socket.write(message);
    });
  }));
  const cases: [Partial<GatewayOptions>["upstream"], RegExp][] = [
    [
      { host: inner.host, port: inner.port },
      /cannot log in to the upstream server at .* as "app": it asks for authentication method password, and no upstream password is set$/,
    ],
    [
      { host: "127.0.0.1", port: scram },
      /cannot log in to the upstream server at .* as "app": it asks for authentication method SASL \(SCRAM\)$/,
    ],
    [
      { host: innerTls.host, port: innerTls.port },
      /its own login to the upstream server at .* as "app" failed: no pg_hba\.conf entry for host .*, no encryption$/,
    ],
    [
      { host: inner.host, port: inner.port, password: "not a token" },
      /its own login to the upstream server at .* as "app" failed: PAM authentication failed for user "app"$/,
    ],
  ];
  for (const [upstream, message] of cases) {
    const g = await gateway({ upstream });
    const events: ConnectEvent[] = [];
    const sql = iamPostgres({
      host: g.host,
      port: g.port,
      user: "app",
      database: "postgres",
      max: 1,
      onConnect: (e) => events.push(e),
      ...iam(g),
    });
    const error = await sql`select 1`.catch((e) => e);
    await sql.end();
    assert.equal(error.code, "08004");
    assert.match(error.message, /^the gateway accepted the IAM token, but /);
    assert.match(error.message, message);
    assert.notEqual(error.name, "IamAuthError");
    assert.deepEqual(events.map((e) => [e.ok, e.attempts]), [[false, 1]]);
    assert.equal(g.stats.accepted, 1);
  }
  // Control: a token the gateway does reject is retried once, then an IamAuthError.
  const g = await gateway();
  const events: ConnectEvent[] = [];
  const sql = iamPostgres({
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    max: 1,
    onConnect: (e) => events.push(e),
    ...iam(g),
    credentials: OTHER,
  });
  const error = await sql`select 1`.catch((e) => e);
  await sql.end();
  assert.equal(error.name, "IamAuthError");
  assert.deepEqual(events.map((e) => [e.ok, e.attempts]), [[false, 2]]);
});
