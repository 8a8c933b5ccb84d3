// iamPostgres() against a hostile or broken server: pg-iam's own part of the connection start
// (the SSLRequest answer, TLS, the authentication exchange) is fed malformed, truncated, oversized
// and random replies. Every case must fail the query with a clear error, never crash the process
// or hang past connect_timeout. The server here is written for the test, on node:net and node:tls.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { iamPostgres } from "../../src/postgres/mod.ts";
import { iamClient } from "../../src/pg/mod.ts";
import { IamSocket } from "../../src/connection/socket.ts";
import { socketPlan } from "../../src/connection/socket-plan.ts";
import { signingConfig } from "../../src/connection/sign.ts";
import { parseTarget } from "../../src/connection/target.ts";
import { startupMessage } from "../../src/connection/pgwire.ts";
import { ca, cert, key } from "../fixtures/tls.ts";

const KEYS = { accessKeyId: "AKIDHOSTILE", secretAccessKey: "hostile/server/test/secret" };
const servers: net.Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

type Reply = Uint8Array | ((socket: net.Socket) => void);

/**
 * A server that reads what a client sends first, then answers with `reply` (bytes, then a close;
 * or a function that takes over). With `tls`, it first answers the SSLRequest with `sslReply`, or
 * with "S" and a TLS handshake (the test certificate) when that is undefined.
 */
async function hostile(
  reply: Reply,
  options: { tls?: boolean; sslReply?: Uint8Array } = {},
): Promise<number> {
  const server = net.createServer((socket) => {
    socket.on("error", () => {});
    const answer = (s: net.Socket) => {
      readPacket(s, () => {
        if (typeof reply === "function") return reply(s);
        s.end(reply);
      });
    };
    if (!options.tls) return answer(socket);
    readPacket(socket, () => {
      if (options.sslReply) return void socket.end(options.sslReply);
      socket.write("S");
      const secure = new tls.TLSSocket(socket, { isServer: true, cert, key });
      secure.on("error", () => {});
      answer(secure);
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return (server.address() as net.AddressInfo).port;
}

/** Calls `then` once a whole length-prefixed startup-phase packet has arrived. */
function readPacket(socket: net.Socket, then: () => void): void {
  let got = new Uint8Array(0);
  const onData = (chunk: Uint8Array) => {
    const joined = new Uint8Array(got.length + chunk.length);
    joined.set(got);
    joined.set(chunk, got.length);
    got = joined;
    if (got.length >= 4 && got.length >= new DataView(got.buffer).getInt32(0)) {
      socket.off("data", onData);
      then();
    }
  };
  socket.on("data", onData);
}

/** A typed message: type, length, body. */
function msg(type: string | number, body: number[] | Uint8Array = [], length?: number): Uint8Array {
  const out = new Uint8Array(5 + body.length);
  out[0] = typeof type === "string" ? type.charCodeAt(0) : type;
  new DataView(out.buffer).setUint32(1, length ?? 4 + body.length);
  out.set(body, 5);
  return out;
}
const int32 = (n: number) => [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
const text = (s: string) => [...new TextEncoder().encode(s)];
const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, at), at += p.length;
  return out;
};

/** Runs `select 1` through iamPostgres() against the server on `port`; returns its error. */
async function errorFrom(
  port: number,
  useTls = false,
  connectTimeout = 3,
  extra: Record<string, unknown> = {},
): Promise<Error> {
  const sql = iamPostgres({
    host: "127.0.0.1",
    port,
    user: "app",
    database: "postgres",
    region: "us-east-1",
    credentials: KEYS,
    connect_timeout: connectTimeout,
    // postgres.js 4 retries a connection closed mid-login (CONNECTION_CLOSED) until connect_timeout,
    // waiting its growing backoff between tries (seconds, after a few), as without pg-iam; here
    // a short one, so that the bound below is connect_timeout's.
    backoff: () => 0.1,
    max: 1,
    onnotice: () => {},
    ...(useTls ? { ssl: { ca } } : { dangerouslyDisableTls: true }),
    ...extra,
  });
  const t = performance.now();
  try {
    await sql`select 1`;
  } catch (error) {
    assert.ok(performance.now() - t < (connectTimeout + 2) * 1000, "bounded by connect_timeout");
    return error as Error;
  } finally {
    await sql.end({ timeout: 0 });
  }
  throw new Error("the query succeeded against a hostile server");
}

/**
 * pg-iam's login alone (its socket, no driver) against the server on `port`: the error it fails
 * with, or undefined when it handed the connection over (what follows is the driver's to read).
 */
function loginError(
  port: number,
  params: [string, string][] = [],
): Promise<Error | undefined> {
  const target = parseTarget({ url: `postgres://app@127.0.0.1:${port}/postgres` });
  const signing = signingConfig(
    { host: "127.0.0.1", port, user: "app", region: "us-east-1", credentials: KEYS },
    2,
  );
  return new Promise((resolve) => {
    const plan = socketPlan({
      target: { ...target, ssl: { ...target.ssl, mode: "disable" } },
      host: "127.0.0.1",
      port,
      signing,
      connectTimeoutMs: 2000,
      onConnect: (event) => resolve(event.error),
    });
    const socket = new IamSocket(plan);
    socket.on("error", () => {}); // reported through onConnect
    socket.write(
      startupMessage(new Map([["user", "app"], ["database", "postgres"], ...params])),
    );
    socket.on("close", () => socket.destroy());
  });
}

const CASES: [string, Reply, RegExp, string?][] = [
  ["a 6-byte R with no auth code", msg("R", [0]), /malformed 'R' message/, "PROTOCOL_VIOLATION"],
  ["an R with no body", msg("R"), /malformed 'R' message/, "PROTOCOL_VIOLATION"],
  ["a length below 4", msg("E", [], 2), /malformed 'E' message/, "PROTOCOL_VIOLATION"],
  ["a 2 GB length", msg("R", int32(3), 0x7fffffff), /malformed 'R'/, "PROTOCOL_VIOLATION"],
  [
    "an unexpected Z",
    msg("Z", text("I")),
    // node-postgres's words too ("received invalid response: 5a").
    /unexpected 'Z' message during authentication \(received invalid response: 5a\)/,
    "PROTOCOL_VIOLATION",
  ],
  ["a NUL type byte", msg(0, int32(0)), /unexpected 0x0 message/, "PROTOCOL_VIOLATION"],
  ["an escape type byte", msg(0x1b, int32(0)), /unexpected 0x1b message/, "PROTOCOL_VIOLATION"],
  ["an MD5 request", msg("R", [...int32(5), 1, 2, 3, 4]), /MD5 password/, "AUTH_METHOD"],
  [
    "a SASL request",
    msg("R", [...int32(10), ...text("SCRAM-SHA-256\0\0")]),
    /SCRAM/,
    "AUTH_METHOD",
  ],
  ["an unknown auth code", msg("R", int32(12345)), /12345/, "AUTH_METHOD"],
  ["an ErrorResponse without fields", msg("E", text("garbage without terminators")), /./],
  ["a truncated ErrorResponse, then a close", msg("E", text("SFATAL\0"), 200), /closed/],
  ["a close right after the startup", new Uint8Array(0), /closed/, "CONNECTION_CLOSED"],
  [
    "a password request, then a close",
    msg("R", int32(3)),
    /closed the connection during authentication/,
    "CONNECTION_CLOSED",
  ],
  [
    "a notice flood, then a close",
    concat(...Array.from({ length: 200 }, () => msg("N", text("SNOTICE\0Mhello\0\0")))),
    /closed/,
    "CONNECTION_CLOSED",
  ],
];

for (const [name, reply, pattern, code] of CASES) {
  test(`a hostile server's ${name} fails the query cleanly`, async () => {
    const error = await errorFrom(await hostile(reply));
    assert.match(error.message, pattern);
    if (code) assert.equal((error as { code?: string }).code, code);
  });
}

test("a hostile server's rejection (28P01) of the token is retried once, then an IamAuthError without the token", async () => {
  let logins = 0;
  const port = await hostile((s) => {
    logins++;
    s.write(msg("R", int32(3)));
    s.once("data", () => s.end(msg("E", text("SFATAL\0C28P01\0Mno\0\0"))));
  });
  const error = await errorFrom(port);
  assert.equal(error.name, "IamAuthError");
  assert.equal(logins, 2);
  assert.doesNotMatch(error.message, /X-Amz-Signature|hostile\/server/);
  // The control: refused before any token was asked for, it is not the token's fault: no retry,
  // the server's own error.
  let refusals = 0;
  const early = await errorFrom(
    await hostile((s) => {
      refusals++;
      s.end(msg("E", text("SFATAL\0C28000\0Mno pg_hba.conf entry\0\0")));
    }),
  );
  assert.equal(early.name, "PostgresError");
  assert.equal((early as { code?: string }).code, "28000");
  assert.equal(refusals, 1);
});

test("a server that never answers is cut off at connect_timeout", async () => {
  const port = await hostile(() => {});
  const t = performance.now();
  const error = await errorFrom(port, false, 2);
  assert.equal((error as { code?: string }).code, "CONNECT_TIMEOUT");
  assert.ok(performance.now() - t >= 1900);
});

test("over TLS: the 6-byte R a machine in the path could send fails the query, no crash", async () => {
  const error = await errorFrom(await hostile(msg("R", [0]), { tls: true }), true);
  assert.match(error.message, /malformed 'R' message/);
  // The control: the same server answering a real password request gets the token over TLS.
  let password = "";
  const port = await hostile((s) => {
    s.write(msg("R", int32(3)));
    s.once("data", (chunk: Uint8Array) => {
      password = new TextDecoder().decode(chunk.subarray(5, -1));
      s.end(msg("E", text("SFATAL\0C28P01\0Mno\0\0")));
    });
  }, { tls: true });
  await errorFrom(port, true);
  assert.match(password, /^127\.0\.0\.1:\d+\/\?Action=connect&DBUser=app&X-Amz-Algorithm=/);
});

test("answers to the SSLRequest: N is a refusal, E is the server's error, garbage after S is refused", async () => {
  const refused = await errorFrom(
    await hostile(new Uint8Array(0), {
      tls: true,
      sslReply: new Uint8Array([0x4e]),
    }),
    true,
  );
  assert.equal((refused as { code?: string }).code, "TLS_REFUSED");
  const tooMany = await errorFrom(
    await hostile(new Uint8Array(0), {
      tls: true,
      sslReply: msg("E", text("SFATAL\0C53300\0Msorry, too many clients already\0\0")),
    }),
    true,
  );
  assert.equal((tooMany as { code?: string }).code, "53300");
  assert.match(tooMany.message, /too many clients/);
  // "S" with plaintext after it in the same packet: an injection attempt (CVE-2021-23214 class).
  const injected = await errorFrom(
    await hostile(new Uint8Array(0), {
      tls: true,
      sslReply: concat(new Uint8Array([0x53]), msg("R", int32(0))),
    }),
    true,
  );
  assert.equal((injected as { code?: string }).code, "PROTOCOL_VIOLATION");
  // "S", then no TLS at all.
  const notTls = await errorFrom(await hostile((s) => s.end(), { tls: false }), true);
  assert.ok(notTls instanceof Error);
});

// pg-iam's login alone: through postgres.js 4, a connection closed mid-login is a transient
// CONNECTION_CLOSED that its pool retries until connect_timeout, as it would without pg-iam.
test("fuzz: 300 random replies to the startup message each end pg-iam's login with a clear error or a hand-over, never a crash or a hang", async () => {
  // xorshift32, seeded: the same cases every run.
  let seed = 0x9e3779b9;
  const random = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  const types = [..."RENZSKvp"].map((c) => c.charCodeAt(0)).concat([0, 0x1b, 0xff]);
  let current = new Uint8Array(0);
  const port = await hostile((s) => s.end(current));
  const errors = new Map<string, number>();
  for (let i = 0; i < 300; i++) {
    // Mostly well-framed messages of random types and lengths (truncated, oversized, exact),
    // sometimes pure noise.
    const parts: Uint8Array[] = [];
    for (let n = 1 + Math.floor(random() * 3); n > 0; n--) {
      const body = Uint8Array.from({ length: Math.floor(random() * 24) }, () => random() * 256);
      if (random() < 0.5 && body.length >= 4) {
        body.set(int32([0, 3, 5, 10, 11, 12][Math.floor(random() * 6)]), 0);
      }
      const lengths = [undefined, 0, 3, 4, body.length + 100, 0x7fffffff];
      const type = types[Math.floor(random() * types.length)];
      parts.push(
        random() < 0.1 ? body : msg(type, body, lengths[Math.floor(random() * lengths.length)]),
      );
    }
    current = concat(...parts);
    const error = await loginError(port);
    const code = error ? String((error as { code?: string }).code ?? error.name) : "handed over";
    errors.set(code, (errors.get(code) ?? 0) + 1);
  }
  // Every case ended in an error of a known kind (counted, for the record).
  for (const code of errors.keys()) {
    assert.match(
      code,
      /^(PROTOCOL_VIOLATION|AUTH_METHOD|CONNECTION_CLOSED|handed over|IamAuthError|\w{5})$/,
    );
  }
});

test("a connection dropped in the middle of the SSLRequest's answer or of the TLS handshake is said as such (not garbage, not the certificate)", async () => {
  const resetAfter = (then: (socket: net.Socket) => void) => {
    const server = net.createServer((socket) => {
      socket.on("error", () => {});
      readPacket(socket, () => then(socket));
    });
    servers.push(server);
    return new Promise<number>((resolve) =>
      server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port))
    );
  };
  // Half an ErrorResponse, then a reset.
  const midError = await resetAfter((socket) => {
    socket.write(
      msg("E", text("SFATAL\0C53300\0Msorry, too many clients already\0\0")).slice(0, 12),
    );
    setImmediate(() => socket.resetAndDestroy());
  });
  // (Whether the reset reaches the client as ECONNRESET or as a close is the kernel's to say.)
  const dropped = ["ECONNRESET", "CONNECTION_CLOSED"];
  const first = await errorFrom(midError, true);
  assert.ok(dropped.includes((first as { code?: string }).code!), String(first));
  // "S", then a reset as the ClientHello arrives.
  const midHandshake = await resetAfter((socket) => {
    socket.write("S");
    socket.once("data", () => socket.resetAndDestroy());
  });
  const second = await errorFrom(midHandshake, true);
  assert.ok(dropped.includes((second as { code?: string }).code!), String(second));
  assert.match(second.message, /dropped during the TLS handshake|closed/);
  assert.doesNotMatch(second.message, /certificate was checked against/);
  // The control: a handshake that completes with a certificate the client does not trust is
  // still explained as the certificate's.
  const untrusted = await errorFrom(await hostile(new Uint8Array(0), { tls: true }), true, 3, {
    ssl: { ca: [] },
  });
  assert.match(untrusted.message, /certificate chain does not lead to a CA/);
  assert.doesNotMatch(untrusted.message, /dropped during the TLS handshake/);
});

// NegotiateProtocolVersion ('v'): the newest minor version the server supports and the `_pq_.`
// options of the StartupMessage it did not recognize. pg-iam asks for protocol 3.0.
const negotiate = (version: number, names: string[], count = names.length) =>
  msg("v", [...int32(version), ...int32(count), ...names.flatMap((n) => text(n + "\0"))]);
const V3_0 = 0x30000;
const AUTH_OK = msg("R", int32(0));

test("a NegotiateProtocolVersion naming a _pq_. option the startup message carried is accepted, and the login goes on (to the password, or to AuthenticationOk)", async () => {
  const asked: [string, string][] = [["_pq_.something", "1"], ["_pq_.other", "on"]];
  for (const names of [["_pq_.something"], ["_pq_.something", "_pq_.other"]]) {
    const port = await hostile(concat(negotiate(V3_0, names), AUTH_OK));
    assert.equal(await loginError(port, asked), undefined, "handed over");
  }
  // After it, the password is asked for and sent, as without it.
  let password = "";
  const port = await hostile((s) => {
    s.write(concat(negotiate(V3_0, ["_pq_.something"]), msg("R", int32(3))));
    s.once("data", (chunk: Uint8Array) => {
      password = new TextDecoder().decode(chunk.subarray(5, -1));
      s.end(AUTH_OK);
    });
  });
  assert.equal(await loginError(port, asked), undefined);
  assert.match(password, /Action=connect&DBUser=app/);
});

const NEGOTIATION_CASES: [string, Uint8Array, RegExp][] = [
  ["an option not asked for", negotiate(V3_0, ["_pq_.other"]), /that was not requested/],
  ["a name without _pq_.", negotiate(V3_0, ["search_path"]), /without a "_pq_." prefix/],
  ["a higher version (3.2)", negotiate(0x30002, ["_pq_.something"]), /higher-numbered version/],
  ["a version below 3.0 (2.0)", negotiate(0x20000, ["_pq_.something"]), /pre-3.0 protocol/],
  ["no change asked for", negotiate(V3_0, []), /asks for no changes/],
  ["a negative count", negotiate(V3_0, [], -1), /negative number/],
  ["more names counted than sent", negotiate(V3_0, ["_pq_.something"], 0x7fffffff), /too short/],
  ["a body shorter than its counts", msg("v", int32(V3_0)), /too short/],
  [
    "bytes after the last name",
    msg("v", [...int32(V3_0), ...int32(1), ...text("_pq_.something\0extra")]),
    /too long/,
  ],
  [
    "a second one",
    concat(negotiate(V3_0, ["_pq_.something"]), negotiate(V3_0, ["_pq_.something"])),
    /duplicate or late/,
  ],
  [
    "one after the password was asked for",
    concat(msg("R", int32(3)), negotiate(V3_0, ["_pq_.something"])),
    /duplicate or late/,
  ],
  ["a 2 GB length", msg("v", int32(V3_0), 0x7fffffff), /malformed 'v' message/],
];

for (const [name, reply, pattern] of NEGOTIATION_CASES) {
  test(`a NegotiateProtocolVersion with ${name} fails the login with PROTOCOL_VIOLATION, saying so`, async () => {
    const port = await hostile(concat(reply, AUTH_OK));
    const error = await loginError(port, [["_pq_.something", "1"]]);
    assert.equal(
      (error as { code?: string } | undefined)?.code,
      "PROTOCOL_VIOLATION",
      String(error),
    );
    assert.match(error!.message, pattern);
    // Through postgres.js too, as a failed query.
    const failed = await errorFrom(port, false, 3, { connection: { "_pq_.something": "1" } });
    assert.equal((failed as { code?: string }).code, "PROTOCOL_VIOLATION");
  });
}

test("a server that answers the startup with another protocol's bytes (a MySQL handshake) fails with node-postgres's words too, through iamPostgres() and iamClient()", async () => {
  // pg's own gh-2627 test: the first bytes a MySQL 8 server sends.
  const mysql = Uint8Array.from(
    atob(
      "SgAAAAo4LjAuMjgAHwAAAB4dKyUJZ2p6AP///wIA/98VAAAAAAAAAAAAAAo1YiNJajgKKGkpfgBjYWNoaW5nX3NoYTJf" +
        "cGFzc3dvcmQAIQAAAf+EBCMwOFMwMUdvdCBwYWNrZXRzIG91dCBvZiBvcmRlcg==",
    ),
    (c) => c.charCodeAt(0),
  );
  const port = await hostile(mysql);
  const error = await errorFrom(port);
  assert.match(error.message, /unexpected 'J' message.*received invalid response: 4a/);
  const client = iamClient({
    host: "127.0.0.1",
    port,
    user: "not",
    database: "existing",
    region: "us-east-1",
    credentials: KEYS,
    dangerouslyDisableTls: true,
    connectionTimeoutMillis: 2000,
  });
  const failed = await client.connect().then(() => undefined, (e: Error) => e);
  assert.ok(failed?.message.includes("invalid response"), String(failed));
});
