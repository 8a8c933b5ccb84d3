// ConnectError, the typed error of a connection start that fails in pg-iam's part of it: each code
// provoked for real (a listener that never answers, a close mid-login, a hostile server's bytes, a
// refused or untrusted TLS, an auth method IAM cannot answer, a refused TCP connect), with its step,
// through pg-iam's socket and through each driver; and a server's ErrorResponse during the login,
// which each driver raises as its own class, field for field as the plain driver does.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { inspect } from "node:util";
import postgres from "postgres";
import pg from "pg";
import { ConnectError, iamPostgres } from "../../src/postgres/mod.ts";
import { ConnectError as PgConnectError, iamClient } from "../../src/pg/mod.ts";
import { iamSql } from "../../src/bun/mod.ts";
import { IamSocket } from "../../src/connection/socket.ts";
import { socketPlan } from "../../src/connection/socket-plan.ts";
import { IamAuthError, signingConfig } from "../../src/connection/sign.ts";
import { parseTarget } from "../../src/connection/target.ts";
import { message, startupMessage } from "../../src/connection/pgwire.ts";
import { CredentialsError } from "../../mod.ts";
import { ca, cert, key } from "../fixtures/tls.ts";

const KEYS = { accessKeyId: "AKIDCONNECTERROR", secretAccessKey: "connect/error/test/secret" };
const BUN = (globalThis as { Bun?: { SQL?: unknown } }).Bun?.SQL !== undefined;
const servers: net.Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

type Answer = (socket: net.Socket, first: Buffer) => void;

/**
 * A server that reads the client's first packet and calls `answer`; with `tls`, the first packet
 * (the SSLRequest) is answered "S" and a TLS handshake with the test certificate, and `answer`
 * gets the startup packet over TLS.
 */
async function server(answer: Answer, options: { tls?: boolean } = {}): Promise<number> {
  const s = net.createServer((socket) => {
    socket.on("error", () => {});
    if (!options.tls) return firstPacket(socket, (first) => answer(socket, first));
    firstPacket(socket, () => {
      socket.write("S");
      const secure = new tls.TLSSocket(socket, { isServer: true, cert, key });
      secure.on("error", () => {});
      firstPacket(secure, (first) => answer(secure, first));
    });
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  return (s.address() as net.AddressInfo).port;
}

function firstPacket(socket: net.Socket, then: (packet: Buffer) => void): void {
  let got = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    got = Buffer.concat([got, chunk]);
    if (got.length >= 4 && got.length >= got.readInt32BE(0)) {
      socket.off("data", onData);
      then(got);
    }
  };
  socket.on("data", onData);
}

const R = (code: number, extra: Uint8Array = new Uint8Array(0)) => {
  const body = new Uint8Array(4 + extra.length);
  new DataView(body.buffer).setInt32(0, code);
  body.set(extra, 4);
  return message("R", body);
};

/** An ErrorResponse with the fields a PostgreSQL server sends, in its order. */
function serverError(code: string, text: string): Uint8Array {
  const fields = [
    ["S", "FATAL"],
    ["V", "FATAL"],
    ["C", code],
    ["M", text],
    ["F", "postinit.c"],
    ["L", "1032"],
    ["R", "InitPostgres"],
  ];
  const body = fields.map(([k, v]) => `${k}${v}\0`).join("") + "\0";
  return message("E", new TextEncoder().encode(body));
}

/** A port nothing listens on (one that was just free). */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * pg-iam's login alone (its socket, no driver): the error it fails with and the step reported
 * to onConnect, or undefined when it handed the connection over.
 */
function login(
  port: number,
  options: { tls?: boolean; timeoutMs?: number; ca?: string } = {},
): Promise<{ error?: Error; step?: string; emitted?: Error }> {
  const target = parseTarget({ url: `postgres://app@127.0.0.1:${port}/postgres` });
  const signing = signingConfig(
    {
      host: "127.0.0.1",
      port,
      user: "app",
      region: "us-east-1",
      credentials: KEYS,
      signingHostname: "localhost",
    },
    2,
  );
  return new Promise((resolve) => {
    let emitted: Error | undefined;
    let reported: { error?: Error; step?: string } = {};
    const plan = socketPlan({
      target: {
        ...target,
        ssl: { ...target.ssl, mode: options.tls ? "verify-full" : "disable" },
      },
      host: "127.0.0.1",
      port,
      signing,
      tlsOverride: options.tls ? { ca: options.ca ?? ca } : undefined,
      connectTimeoutMs: options.timeoutMs ?? 3000,
      onConnect: (event) => {
        if (event.ok) queueMicrotask(() => (socket.destroy(), resolve({})));
        reported = { error: event.error, step: event.step };
      },
    });
    const socket = new IamSocket(plan);
    socket.on("error", (error) => (emitted = error as Error));
    socket.on("close", () => resolve({ ...reported, emitted }));
    socket.write(startupMessage(new Map([["user", "app"], ["database", "postgres"]])));
  });
}

function assertConnectError(
  error: unknown,
  code: string | RegExp,
  step: string,
): asserts error is ConnectError {
  assert.ok(error instanceof ConnectError, `a ConnectError, got ${inspect(error)}`);
  if (typeof code === "string") assert.equal(error.code, code);
  else assert.match(error.code, code);
  assert.equal(error.step, step);
  assert.equal(error.name, "ConnectError");
}

// ---- the class ---------------------------------------------------------------------------

test("ConnectError: code, step, host and port as given; one class for every adapter; a socket's own error keeps its code, errno, syscall and message; other classes stay themselves", () => {
  const e = new ConnectError("pg-iam: x", {
    code: "CONNECTION_CLOSED",
    step: "auth",
    host: "db",
    port: 5432,
  });
  assert.ok(e instanceof Error);
  assert.equal(PgConnectError, ConnectError);
  assert.deepEqual(
    { name: e.name, code: e.code, step: e.step, host: e.host, port: e.port },
    { name: "ConnectError", code: "CONNECTION_CLOSED", step: "auth", host: "db", port: 5432 },
  );
  assert.equal(String(e), "ConnectError: pg-iam: x");
  assert.ok(!("sqlState" in e) && !("errno" in e), "no field that is not known");
  const system = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), {
    code: "ECONNREFUSED",
    errno: -111,
    syscall: "connect",
    address: "127.0.0.1",
    port: 1,
  });
  const wrapped = ConnectError.from(system, "connect", "127.0.0.1", 1) as ConnectError;
  assertConnectError(wrapped, "ECONNREFUSED", "connect");
  assert.equal(wrapped.message, system.message);
  assert.equal(wrapped.cause, system);
  assert.deepEqual([wrapped.errno, wrapped.syscall, wrapped.address], [
    -111,
    "connect",
    "127.0.0.1",
  ]);
  // The controls: errors with a class of their own, or no system code, are not wrapped.
  const auth = new IamAuthError("28P01", "no", "pg-iam: rejected");
  const credentials = new CredentialsError("missing", "no credentials");
  const option = Object.assign(new TypeError("bad"), { code: "ERR_INVALID_ARG_TYPE" });
  const plain = Object.assign(new Error("x"), { code: "missing" });
  for (const other of [auth, credentials, option, plain]) {
    assert.equal(ConnectError.from(other, "auth"), other);
  }
});

test("ConnectError: no token or secret key in the message, the fields, toString(), JSON or inspect(), though the server was sent the token", async () => {
  let password = "";
  const port = await server((s) => {
    s.write(R(3));
    s.once("data", (chunk: Buffer) => {
      password = chunk.subarray(5, -1).toString();
      s.destroy();
    });
  });
  const { error } = await login(port);
  assertConnectError(error, "CONNECTION_CLOSED", "auth");
  // The control: what the server got is the token, so the checks below look for real bytes.
  assert.match(password, /X-Amz-Signature=[0-9a-f]{64}/);
  const signature = /X-Amz-Signature=([0-9a-f]{64})/.exec(password)![1];
  const shown = [
    error.message,
    String(error),
    JSON.stringify(error),
    JSON.stringify({ ...error }),
    inspect(error, { depth: 5, showHidden: true }),
    error.stack ?? "",
  ].join("\n");
  for (const secret of [password, signature, KEYS.secretAccessKey, "X-Amz-Credential"]) {
    assert.ok(!shown.includes(secret), `${secret.slice(0, 20)}… is not shown`);
  }
  assert.match(shown, /closed the connection during authentication/);
});

// ---- each code, for real, through pg-iam's socket ------------------------------------------

test("CONNECT_TIMEOUT at step auth: a listener that accepts and never answers", async () => {
  const port = await server(() => {});
  const { error, step, emitted } = await login(port, { timeoutMs: 300 });
  assertConnectError(error, "CONNECT_TIMEOUT", "auth");
  assert.equal(step, "auth");
  assert.equal(emitted, error, "the error the driver gets is the one onConnect reports");
  assert.equal(error.host, "127.0.0.1");
  assert.match(error.message, /timed out after 0\.3s \(while authenticating/);
});

test("CONNECTION_CLOSED, PROTOCOL_VIOLATION, AUTH_METHOD at step auth; the control: a server that asks for the password and lets the client in is handed over, no error", async () => {
  const closed = await login(await server((s) => s.end()));
  assertConnectError(closed.error, "CONNECTION_CLOSED", "auth");
  const violation = await login(await server((s) => s.end(message("Z", new Uint8Array([73])))));
  assertConnectError(violation.error, "PROTOCOL_VIOLATION", "auth");
  const md5 = await login(await server((s) => s.end(R(5, new Uint8Array([1, 2, 3, 4])))));
  assertConnectError(md5.error, "AUTH_METHOD", "auth");
  assert.match(md5.error.message, /MD5/);
  const ok = await login(
    await server((s) => {
      s.write(R(3));
      s.once("data", () => s.write(R(0)));
    }),
  );
  assert.equal(ok.error, undefined);
});

test("at step tls: TLS_REFUSED for an N, the runtime's certificate code for an untrusted certificate; at step connect: ECONNREFUSED as node says it", async () => {
  const refusing = await server((s) => s.end("N"));
  const refused = await login(refusing, { tls: true });
  assertConnectError(refused.error, "TLS_REFUSED", "tls");
  const untrusted = await login(await server(() => {}, { tls: true }), { tls: true, ca: cert });
  // The server's certificate is signed by the test CA; trusting only the leaf is no chain.
  assertConnectError(untrusted.error, /CERT|UNABLE_TO|TLS/, "tls");
  assert.match(untrusted.error.message, /^pg-iam: TLS with 127\.0\.0\.1:\d+ failed/);
  // The control: with the test CA trusted, the same server gets as far as the startup.
  const trusted = await login(await server((s) => s.end(), { tls: true }), { tls: true });
  assertConnectError(trusted.error, "CONNECTION_CLOSED", "auth");
  const port = await closedPort();
  const nothing = await login(port);
  assertConnectError(nothing.error, "ECONNREFUSED", "connect");
  assert.equal(nothing.error.syscall, "connect");
  // The message is the runtime's own, as without pg-iam.
  const raw = await new Promise<Error>((resolve) =>
    net.connect({ host: "127.0.0.1", port }).on("error", resolve)
  );
  assert.equal(nothing.error.message, raw.message);
  assert.equal(nothing.error.cause instanceof Error, true);
});

// ---- through each driver -----------------------------------------------------------------

function postgresClient(port: number, extra: Record<string, unknown> = {}) {
  return iamPostgres({
    host: "127.0.0.1",
    port,
    user: "app",
    database: "postgres",
    region: "us-east-1",
    credentials: KEYS,
    dangerouslyDisableTls: true,
    connect_timeout: 2,
    backoff: () => 0.05,
    max: 1,
    onnotice: () => {},
    ...extra,
  });
}

async function postgresError(port: number, extra: Record<string, unknown> = {}): Promise<Error> {
  const sql = postgresClient(port, extra);
  try {
    await sql`select 1`;
  } catch (error) {
    return error as Error;
  } finally {
    await sql.end({ timeout: 0 });
  }
  throw new Error("no error");
}

async function pgError(port: number): Promise<Error> {
  const client = iamClient({
    host: "127.0.0.1",
    port,
    user: "app",
    database: "postgres",
    region: "us-east-1",
    credentials: KEYS,
    dangerouslyDisableTls: true,
    connectionTimeoutMillis: 2000,
  });
  client.on("error", () => {});
  try {
    await client.connect();
  } catch (error) {
    return error as Error;
  } finally {
    await client.end().catch(() => {});
  }
  throw new Error("no error");
}

test("postgres.js and node-postgres: the query fails with the ConnectError (PROTOCOL_VIOLATION, AUTH_METHOD, ECONNREFUSED), instanceof from either subpath", async () => {
  const violation = await server((s) => s.end(message("Z", new Uint8Array([73]))));
  const md5 = await server((s) => s.end(R(5, new Uint8Array([1, 2, 3, 4]))));
  const refused = await closedPort();
  for (const get of [postgresError, pgError]) {
    assertConnectError(await get(violation), "PROTOCOL_VIOLATION", "auth");
    assertConnectError(await get(md5), "AUTH_METHOD", "auth");
    assertConnectError(await get(refused), "ECONNREFUSED", "connect");
  }
});

test("postgres.js: a close mid-login is CONNECTION_CLOSED, which its pool retries until connect_timeout as without pg-iam; a code it does not retry fails at once (the control)", async () => {
  let closes = 0;
  const closing = await server((s) => (closes++, s.end()));
  const closed = await postgresError(closing, { connect_timeout: 1 });
  assert.equal((closed as { code?: string }).code, "CONNECTION_CLOSED");
  let md5s = 0;
  const md5 = await server((s) => (md5s++, s.end(R(5, new Uint8Array([1, 2, 3, 4])))));
  await postgresError(md5, { connect_timeout: 1 });
  if (POSTGRES_4) assert.ok(closes > 1, `retried: ${closes} tries`);
  assert.equal(md5s, 1);
});

// ---- a server's ErrorResponse during the login: the driver's own class --------------------

const POSTGRES_4 = "PostgresError" in (await import("postgres"));

/**
 * The plain driver's error as pg-iam's should be: where pg-iam asks a busy server again (53300 on
 * node-postgres and postgres.js 3, which do not), the message says so (the difference is the point).
 */
function busyShape(
  code: string,
  plain: Record<string, unknown>,
  asks: boolean,
): Record<string, unknown> {
  if (code !== "53300" || !asks) return plain;
  const { length: _, ...fields } = plain.fields as Record<string, unknown>;
  const note = (m: unknown) => `${m} (asked N times, with backoff, within the connect timeout)`;
  return {
    ...plain,
    message: note(plain.message),
    fields: "message" in fields ? { ...fields, message: note(fields.message) } : fields,
  };
}

/** `shape` with how many times pg-iam asked, and pg's message length that counts it, left out. */
function asked(shape: Record<string, unknown>): Record<string, unknown> {
  const count = (m: unknown) => String(m).replace(/\(asked \d+ times/, "(asked N times");
  if (!/\(asked \d+ times/.test(String(shape.message))) return shape;
  const { length: _, ...fields } = shape.fields as Record<string, unknown>;
  if ("message" in fields) fields.message = count(fields.message);
  return { ...shape, message: count(shape.message), fields };
}

const REFUSALS: [string, string][] = [
  ["3D000", 'database "nope" does not exist'],
  ["53300", "sorry, too many clients already"],
  ["57P03", "the database system is starting up"],
];

/** What an error is made of: its class, message and own fields (no stack, no query). */
function shape(error: unknown): Record<string, unknown> {
  const e = error as Error;
  const fields: Record<string, unknown> = {};
  for (const key of Object.keys(e)) {
    if (!["stack", "query", "parameters", "args", "types"].includes(key)) {
      fields[key] = e[key as never];
    }
  }
  return { class: e.constructor.name, name: e.name, message: e.message, fields };
}

test("postgres.js: a server's 3D000, 53300 and 57P03 during the login are postgres.js's own PostgresError, the same class, code, message and fields as the plain driver's; different errors compare different (the control)", async () => {
  const shapes: Record<string, unknown>[] = [];
  for (const [code, text] of REFUSALS) {
    const port = await server((s) => s.end(serverError(code, text)));
    const plain = postgres({
      host: "127.0.0.1",
      port,
      user: "app",
      database: "postgres",
      connect_timeout: 1,
      backoff: () => 0.05,
      max: 1,
      onnotice: () => {},
    });
    let plainError: unknown;
    await plain`select 1`.catch((e) => (plainError = e));
    await plain.end({ timeout: 0 });
    const iamError = await postgresError(port, { connect_timeout: 1 });
    assert.ok(!(iamError instanceof ConnectError));
    assert.equal(iamError.constructor, (plainError as Error).constructor);
    assert.deepEqual(asked(shape(iamError)), busyShape(code, shape(plainError), !POSTGRES_4));
    assert.equal((iamError as { code?: string }).code, code);
    shapes.push(shape(iamError));
  }
  assert.notDeepEqual(shapes[0], shapes[2]);
});

test("node-postgres: a server's 3D000, 53300 and 57P03 during the login are pg's own DatabaseError, the same class, code, message and fields as the plain driver's", async () => {
  const shapes: Record<string, unknown>[] = [];
  for (const [code, text] of REFUSALS) {
    const port = await server((s) => s.end(serverError(code, text)));
    const plain = new pg.Client({
      host: "127.0.0.1",
      port,
      user: "app",
      database: "postgres",
      connectionTimeoutMillis: 2000,
    });
    plain.on("error", () => {});
    const plainError = await plain.connect().then(() => undefined, (e) => e);
    await plain.end().catch(() => {});
    const iamError = await pgError(port);
    assert.ok(plainError instanceof pg.DatabaseError);
    assert.ok(iamError instanceof pg.DatabaseError, inspect(iamError));
    assert.deepEqual(asked(shape(iamError)), busyShape(code, shape(plainError), true));
    assert.equal((iamError as { code?: string }).code, code);
    shapes.push(shape(iamError));
  }
  assert.notDeepEqual(shapes[0], shapes[2]);
});

test(
  "Bun.SQL: a server's 3D000, 53300 and 57P03 during the login are Bun's own error, as the plain Bun.SQL's (Bun opens its own sockets)",
  {
    skip: BUN ? false : "Bun.SQL is Bun's own client",
  },
  async () => {
    const { SQL } = (globalThis as unknown as { Bun: { SQL: new (o: unknown) => BunSql } }).Bun;
    type BunSql = {
      (s: TemplateStringsArray): Promise<unknown>;
      close(o?: unknown): Promise<void>;
    };
    for (const [code, text] of REFUSALS) {
      const port = await server((s) => s.end(serverError(code, text)));
      const options = { host: "127.0.0.1", port, user: "app", database: "postgres", max: 1 };
      const plain = new SQL({ ...options, password: "x", tls: false });
      const plainError = await plain`select 1`.then(() => undefined, (e) => e);
      await plain.close({ timeout: 0 });
      const iam = iamSql({
        ...options,
        region: "us-east-1",
        credentials: KEYS,
        dangerouslyDisableTls: true,
      });
      const iamError = await iam`select 1`.then(() => undefined, (e: unknown) => e);
      await iam.close({ timeout: 0 });
      assert.ok(plainError instanceof Error);
      assert.equal((iamError as Error).constructor, plainError.constructor);
      assert.deepEqual(shape(iamError), shape(plainError));
      assert.equal((iamError as { errno?: string }).errno, code);
    }
  },
);

test("onConnect reports a server's refusal as a ConnectError SERVER_ERROR with the SQLSTATE, at the step it came (the query gets the driver's class)", async () => {
  const port = await server((s) =>
    s.end(serverError("57P03", "the database system is starting up"))
  );
  const { error, step } = await login(port);
  assertConnectError(error, "SERVER_ERROR", "auth");
  assert.equal(step, "auth");
  assert.equal(error.sqlState, "57P03");
  assert.equal(error.severity, "FATAL");
  assert.equal(error.message, "the database system is starting up");
});

// docs/errors.md: the example, as written there.
test("docs/errors.md: the ConnectError example logs a refused connection, not the server's error (the control)", async () => {
  const refusing = await server((s) =>
    s.end(serverError("3D000", 'database "nope" does not exist'))
  );
  const lines: string[] = [];
  const log = (line: string) => lines.push(line);
  for (const port of [refusing, await closedPort()]) {
    const sql = postgresClient(port, { connect_timeout: 1 });
    try {
      await sql`select 1`;
    } catch (error) {
      // ---- as in docs/errors.md
      if (error instanceof ConnectError) {
        log(`${error.code} at ${error.step} (${error.host}:${error.port})`);
      }
      // ----
    } finally {
      await sql.end({ timeout: 0 });
    }
  }
  assert.equal(lines.length, 1, "the server's 3D000 is postgres.js's PostgresError");
  assert.match(lines[0], /^ECONNREFUSED at connect \(127\.0\.0\.1:\d+\)$/);
});
