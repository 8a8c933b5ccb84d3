// sslnegotiation=direct (libpq 17): TLS from the first byte, no SSLRequest, ALPN "postgresql".
// End to end against a real PostgreSQL 18 with TLS on (tests/_postgres.ts starts it from the npm
// binaries unless PGIAM_TEST_PG18 names one), through postgres.js and node-postgres, and through
// the gateway; a byte-recording relay shows what went first on the wire. Negative controls: the
// same relay sees an SSLRequest with sslnegotiation=postgres; a server without direct TLS (the
// tests' older PostgreSQL, without TLS) and TLS servers without ALPN fail with their own codes.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import type pg from "pg";
import { type ConnectEvent, iamPostgres } from "../../src/postgres/mod.ts";
import { iamPool } from "../../src/pg/mod.ts";
import { iamSql } from "../../src/bun/mod.ts";
import { parseTarget } from "../../src/connection/target.ts";
import { socketPlan } from "../../src/connection/socket-plan.ts";
import { signingConfig } from "../../src/connection/sign.ts";
import { closeTestGateways, RDS, testGateway } from "../_gateway.ts";
import { upstreamPostgres, upstreamPostgres18 } from "../_postgres.ts";
import { ca, cert, key } from "../fixtures/tls.ts";

const KEYS = { accessKeyId: "AKIDPGIAMDIRECT", secretAccessKey: "pg-iam/direct/secret/key" };
const SLOW = { timeout: 60_000 };

const dir = mkdtempSync(join(tmpdir(), "pg-iam-direct-"));
const CA_FILE = join(dir, "ca.pem");
writeFileSync(CA_FILE, ca);

const closers: (() => unknown)[] = [];
after(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  await closeTestGateways();
  rmSync(dir, { recursive: true, force: true });
});

/** A TCP relay to `port` that records the first byte each client sent. */
async function relay(port: number): Promise<{ port: number; firstBytes: number[] }> {
  const firstBytes: number[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: "127.0.0.1", port });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => (client.destroy(), upstream.destroy(), sockets.delete(s)));
    }
    client.once("data", (chunk: Uint8Array) => firstBytes.push(chunk[0]));
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(() =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    })
  );
  return { port: (server.address() as net.AddressInfo).port, firstBytes };
}

/** A connection string for 127.0.0.1:`port`, verify-full against the test CA. */
function url(port: number, negotiation: "direct" | "postgres", user = "app"): string {
  return `postgres://${user}@127.0.0.1:${port}/postgres?sslmode=verify-full` +
    `&sslrootcert=${encodeURIComponent(CA_FILE)}&sslnegotiation=${negotiation}`;
}

// The certificate is for the RDS name (and localhost): tokens and the name check use it.
const SIGNING = { signingHostname: RDS, signingPort: 5432, credentials: KEYS };

function postgresJs(connection: string, events: ConnectEvent[] = []) {
  const sql = iamPostgres(connection, {
    ...SIGNING,
    max: 1,
    onnotice: () => {},
    onConnect: (event) => events.push(event),
  });
  closers.push(() => sql.end({ timeout: 0 }));
  return sql;
}

function pgPool(connection: string): pg.Pool {
  const pool = iamPool({ connectionString: connection, ...SIGNING, max: 1 });
  pool.on("error", () => {});
  closers.push(() => pool.end());
  return pool;
}

const SSL_OF_BACKEND = "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()";

test(
  "postgres.js, sslnegotiation=direct, PostgreSQL 18: the first byte is a ClientHello, TLS verified; sslnegotiation=postgres sends an SSLRequest",
  SLOW,
  async () => {
    const server = await upstreamPostgres18();
    const wire = await relay(server.port);
    const events: ConnectEvent[] = [];
    const direct = postgresJs(url(wire.port, "direct"), events);
    const [row] = await direct.unsafe(SSL_OF_BACKEND);
    assert.equal(row.ssl, true);
    assert.match(row.version, /^TLSv1\.[23]$/);
    assert.deepEqual(wire.firstBytes, [0x16]);
    assert.equal(events.length, 1);
    assert.equal(events[0].ok, true);
    assert.ok(Number.isFinite(events[0].timings.tlsMs));
    // The control: the same relay and server, negotiated.
    const negotiated = postgresJs(url(wire.port, "postgres"));
    const [again] = await negotiated.unsafe(SSL_OF_BACKEND);
    assert.equal(again.ssl, true);
    assert.deepEqual(wire.firstBytes, [0x16, 0x00]); // an SSLRequest's length starts 00 00 00 08
  },
);

test(
  "node-postgres, sslnegotiation=direct, PostgreSQL 18: the first byte is a ClientHello, TLS verified; sslnegotiation=postgres sends an SSLRequest",
  SLOW,
  async () => {
    const server = await upstreamPostgres18();
    const wire = await relay(server.port);
    const { rows } = await pgPool(url(wire.port, "direct")).query(SSL_OF_BACKEND);
    assert.equal(rows[0].ssl, true);
    assert.deepEqual(wire.firstBytes, [0x16]);
    const control = await pgPool(url(wire.port, "postgres")).query(SSL_OF_BACKEND);
    assert.equal(control.rows[0].ssl, true);
    assert.deepEqual(wire.firstBytes, [0x16, 0x00]);
  },
);

test(
  "sslnegotiation=direct verifies the certificate as ever: another CA fails the connect with the TLS error, not a direct-TLS one",
  SLOW,
  async () => {
    const server = await upstreamPostgres18();
    const otherCa = join(dir, "other-ca.pem");
    writeFileSync(otherCa, tls.rootCertificates[0]);
    const sql = postgresJs(
      `postgres://app@127.0.0.1:${server.port}/postgres?sslmode=verify-full&sslnegotiation=direct` +
        `&sslrootcert=${encodeURIComponent(otherCa)}`,
    );
    await assert.rejects(sql`select 1`, (e: Error & { code?: string }) => {
      assert.notEqual(e.code, "DIRECT_TLS_FAILED");
      assert.match(e.message, /certificate chain does not lead to a CA in the CA file/);
      return true;
    });
  },
);

test(
  "sslnegotiation=direct to a server without direct TLS (the tests' older PostgreSQL, TLS off) fails with DIRECT_TLS_FAILED, naming PostgreSQL 17",
  SLOW,
  async () => {
    const server = await upstreamPostgres();
    const events: ConnectEvent[] = [];
    const sql = postgresJs(url(server.port, "direct"), events);
    await assert.rejects(sql`select 1`, (e: Error & { code?: string }) => {
      assert.equal(e.code, "DIRECT_TLS_FAILED");
      assert.match(e.message, /direct TLS with 127\.0\.0\.1:\d+ failed .*PostgreSQL 17 or later/);
      assert.match(e.message, /sslnegotiation=postgres/);
      return true;
    });
    assert.equal(events[0]?.step, "tls");
    assert.equal(events[0]?.tokenSent, false);
    // The control: the same server, negotiated, answers the SSLRequest with "N".
    const negotiated = postgresJs(url(server.port, "postgres"));
    await assert.rejects(negotiated`select 1`, { code: "TLS_REFUSED" });
  },
);

/** A TLS server with the test certificate that records whether a startup packet arrived. */
async function tlsServer(alpn: string[] | undefined) {
  const seen = { startup: false };
  const server = tls.createServer({ cert, key, ...(alpn ? { ALPNProtocols: alpn } : {}) }, (s) => {
    s.on("error", () => {});
    s.once("data", () => {
      seen.startup = true;
      s.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(() => new Promise((resolve) => server.close(resolve)));
  return { port: (server.address() as net.AddressInfo).port, seen };
}

test(
  "sslnegotiation=direct refuses a TLS server that selects no ALPN protocol, before sending anything (as libpq 17)",
  SLOW,
  async () => {
    const bare = await tlsServer(undefined);
    const sql = postgresJs(url(bare.port, "direct"));
    await assert.rejects(sql`select 1`, (e: Error & { code?: string }) => {
      assert.equal(e.code, "DIRECT_TLS_ALPN");
      assert.match(e.message, /without ALPN protocol negotiation/);
      return true;
    });
    assert.equal(bare.seen.startup, false);
    // The control: the same server selecting "postgresql" gets the startup packet.
    const alpn = await tlsServer(["postgresql"]);
    await assert.rejects(postgresJs(url(alpn.port, "direct"))`select 1`, (
      e: Error & {
        code?: string;
      },
    ) => e.code !== "DIRECT_TLS_ALPN");
    assert.equal(alpn.seen.startup, true);
  },
);

test(
  "the gateway takes direct TLS with ALPN postgresql: postgres.js and node-postgres log in with a token, over TLS",
  SLOW,
  async () => {
    const g = await testGateway(KEYS);
    const sql = postgresJs(url(g.port, "direct"));
    const [row] = await sql`select 1 as one`;
    assert.equal(row.one, 1);
    const { rows } = await pgPool(url(g.port, "direct")).query("select 1 as one");
    assert.equal(rows[0].one, 1);
    const logins = g.stats.logins;
    assert.equal(logins.length, 2);
    assert.ok(
      logins.every((l) => l.accepted && l.tls && l.user === "app"),
      JSON.stringify(logins),
    );
  },
);

/** Opens direct TLS to `port` and sends a StartupMessage; resolves with what came back. */
function rawDirect(port: number, alpn: string[] | undefined): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({
      host: "127.0.0.1",
      port,
      ca,
      servername: "localhost",
      ...(alpn ? { ALPNProtocols: alpn } : {}),
    });
    s.on("secureConnect", () => {
      const body = new TextEncoder().encode("\0\x03\0\0user\0app\0database\0postgres\0\0");
      const packet = new Uint8Array(body.length + 4);
      new DataView(packet.buffer).setUint32(0, packet.length);
      packet.set(body, 4);
      s.write(packet);
    });
    s.on("data", (d: Uint8Array) => {
      resolve(`message ${String.fromCharCode(d[0])}`);
      s.destroy();
    });
    s.on("error", (e: Error & { code?: string }) => resolve(`error ${e.code}`));
    s.on("close", () => resolve("closed"));
  });
}

test(
  "the gateway closes direct TLS without ALPN postgresql unanswered, as PostgreSQL does; with it, asks for the password",
  SLOW,
  async () => {
    const g = await testGateway(KEYS);
    assert.equal(await rawDirect(g.port, undefined), "closed");
    assert.equal(
      await rawDirect(g.port, ["h2"]),
      "error ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL",
    );
    assert.equal(g.stats.logins.length, 0);
    assert.equal(await rawDirect(g.port, ["postgresql"]), "message R");
  },
);

test("a gateway without TLS closes direct TLS: pg-iam says DIRECT_TLS_FAILED", SLOW, async () => {
  const g = await testGateway(KEYS, { tls: false });
  const sql = postgresJs(url(g.port, "direct"));
  await assert.rejects(sql`select 1`, { code: "DIRECT_TLS_FAILED" });
});

const PREFER_DIRECT =
  /^The connection string parameter "sslmode" is "prefer", which may not be combined with sslnegotiation=direct \(the connection string parameter "sslnegotiation"\)/;

test("sslmode=prefer with sslnegotiation=direct is a TypeError at creation naming both, for postgres.js and node-postgres", () => {
  const connection = `postgres://app@db.example.com/app?sslmode=prefer&sslnegotiation=direct`;
  const named = (e: Error) => {
    assert.ok(e instanceof TypeError);
    assert.match(e.message, PREFER_DIRECT);
    return true;
  };
  assert.throws(() => iamPostgres(connection, SIGNING), named);
  assert.throws(() => iamPool({ connectionString: connection, ...SIGNING }), named);
  // The control: require is allowed.
  const sql = iamPostgres(connection.replace("prefer", "require"), SIGNING);
  closers.push(() => sql.end({ timeout: 0 }));
});

test("iamSql() (Bun.SQL) refuses sslnegotiation=direct at creation: Bun.SQL always sends an SSLRequest", () => {
  const g = globalThis as { Bun?: { SQL?: unknown } };
  const onBun = g.Bun?.SQL !== undefined;
  // Off Bun, a stand-in that must never be constructed: the refusal comes first.
  const saved = g.Bun;
  if (!onBun) {
    g.Bun = {
      SQL: class {
        constructor() {
          throw new Error("Bun.SQL constructed");
        }
      },
    };
  }
  try {
    assert.throws(
      () => iamSql(`postgres://app@db.example.com/app?sslnegotiation=direct`, SIGNING),
      (e: Error) => {
        assert.ok(e instanceof TypeError);
        assert.match(
          e.message,
          /^The connection string parameter "sslnegotiation" is "direct", which Bun\.SQL cannot do/,
        );
        return true;
      },
    );
  } finally {
    if (!onBun) g.Bun = saved;
  }
});

test("on Cloudflare Workers, sslnegotiation=direct is a TypeError at creation: no ALPN in cloudflare:sockets", () => {
  const target = parseTarget({ url: `postgres://app@${RDS}/app?sslnegotiation=direct` });
  const signing = signingConfig({ ...SIGNING, host: RDS, port: 5432, user: "app" }, 30);
  const plan = (workerd: boolean) =>
    socketPlan({
      target,
      host: RDS,
      port: 5432,
      signing,
      connectTimeoutMs: 30_000,
      dangerouslyUsePlatformCas: true,
      workerd,
    });
  assert.throws(() => plan(true), (e: Error) => {
    assert.ok(e instanceof TypeError);
    assert.match(e.message, /Cloudflare Workers cannot use sslnegotiation=direct.*ALPN/);
    return true;
  });
  // The control: node:tls offers ALPN postgresql.
  assert.deepEqual(plan(false).tls?.options.ALPNProtocols, ["postgresql"]);
});
