// The diagnostics channels (issue 23): `pg-iam:connect`, a TracingChannel around every physical
// connection start, and `pg-iam:token`, one message per token signed or reused, for postgres.js
// (4, and 3 in the runner's second pass), node-postgres, Bun.SQL (Bun only) and the proxy, each
// through the IAM-verifying gateway. The controls: failing connects (keys the gateway refuses, a
// closed port, a certificate nobody trusts) publish `error` with their step; nobody subscribed,
// nothing is published; and no payload carries a secret, a signature or a token.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import dc from "node:diagnostics_channel";
import net from "node:net";
import { inspect } from "node:util";
import pg from "pg";
import { iamPostgres } from "../../src/postgres/mod.ts";
import { iamPool } from "../../src/pg/mod.ts";
import * as bunAdapter from "../../src/bun/mod.ts";
import { type Proxy, startProxy } from "../../src/proxy/mod.ts";
import {
  CONNECT_CHANNEL,
  type ConnectChannelContext,
  TOKEN_CHANNEL,
  type TokenChannelMessage,
} from "../../src/postgres/mod.ts";
import * as pgAdapter from "../../src/pg/mod.ts";
import * as proxyModule from "../../src/proxy/mod.ts";
import * as root from "../../mod.ts";
import type { Gateway } from "../../src/gateway/mod.ts";
import { closeTestGateways, RDS, testGateway } from "../_gateway.ts";
import { postgresMajor } from "../_postgres_major.mjs";
import { ca } from "../fixtures/tls.ts";

const KEYS = {
  accessKeyId: "AKIDPGIAMDIAGNOSTICS",
  secretAccessKey: "pg-iam/diagnostics/secret/key/0123",
  sessionToken: "pg-iam-diagnostics-session-token-0123456789",
};
const WRONG = { ...KEYS, secretAccessKey: "pg-iam/diagnostics/WRONG/secret/key" };
const BUN = (globalThis as { Bun?: { SQL?: unknown } }).Bun?.SQL !== undefined;
const TIMEOUT = { timeout: 120_000 };
const ON_BUN = { ...TIMEOUT, skip: BUN ? false : "Bun.SQL is Bun's own client" };
const MAJOR = postgresMajor();

const closers: (() => Promise<unknown>)[] = [];
after(async () => {
  await Promise.all(closers.splice(0).map((close) => close().catch(() => {})));
  await closeTestGateways();
});

const connectChannel = dc.tracingChannel(CONNECT_CHANNEL);
const EVENTS = ["start", "end", "asyncStart", "asyncEnd", "error"] as const;

/** What the subscribers saw: each trace's context with its events in order, and every token. */
interface Seen {
  traces: Map<ConnectChannelContext, string[]>;
  tokens: TokenChannelMessage[];
  /** Every payload as it was published, for the secrets search. */
  all: unknown[];
  stop(): void;
}

function subscribe(): Seen {
  const traces = new Map<ConnectChannelContext, string[]>();
  const tokens: TokenChannelMessage[] = [];
  const all: unknown[] = [];
  const handlers = Object.fromEntries(EVENTS.map((event) => [event, (c: unknown) => {
    const context = c as ConnectChannelContext;
    if (!traces.has(context)) traces.set(context, []);
    traces.get(context)!.push(event);
    all.push(context);
  }])) as unknown as Parameters<typeof connectChannel.subscribe>[0];
  const onToken = (message: unknown) => {
    tokens.push(message as TokenChannelMessage);
    all.push(message);
  };
  connectChannel.subscribe(handlers);
  dc.subscribe(TOKEN_CHANNEL, onToken);
  return {
    traces,
    tokens,
    all,
    stop() {
      connectChannel.unsubscribe(handlers);
      dc.unsubscribe(TOKEN_CHANNEL, onToken);
    },
  };
}

/** Resolves once `done()` holds (checked on each turn of the event loop). */
async function waitFor(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((resolve) => setTimeout(resolve, 5));
}

/** No secret key, session token, signature or token in any payload, however it is printed. */
function assertNoSecret(seen: Seen): void {
  for (const payload of seen.all) {
    for (const text of [JSON.stringify(payload), inspect(payload, { depth: 10 })]) {
      for (const secret of [KEYS.secretAccessKey, WRONG.secretAccessKey, KEYS.sessionToken]) {
        assert.ok(!text.includes(secret), text);
      }
      assert.doesNotMatch(text, /X-Amz-Signature|X-Amz-Credential|Action=connect|Security-Token/i);
    }
  }
}

/** A port nothing listens on. */
function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    }).on("error", reject);
  });
}

/** How each driver connects, for the shared scenarios. */
interface Driver {
  name: ConnectChannelContext["driver"];
  /** Opens `connections` connections at once (held together, then released), or rejects. */
  connect(g: Gateway, extra: Record<string, unknown>, connections?: number): Promise<void>;
}

function endpoint(g: Gateway, user = "app") {
  return {
    host: g.host,
    port: g.port,
    user,
    database: "postgres",
    signingHostname: g.endpoint,
    signingPort: 5432,
    credentials: KEYS,
    ssl: { ca },
    connectTimeout: 10,
  };
}

const POSTGRES: Driver = {
  name: "postgres",
  async connect(g, extra, connections = 1) {
    const { connectTimeout: _, ...options } = { ...endpoint(g), ...extra };
    const sql = iamPostgres({ ...options, max: connections, connect_timeout: 10 } as never);
    closers.push(() => sql.end({ timeout: 0 }));
    try {
      const reserved = await Promise.all(Array.from({ length: connections }, () => sql.reserve()));
      for (const r of reserved) r.release();
    } finally {
      await sql.end({ timeout: 0 });
    }
  },
};

const PG: Driver = {
  name: "pg",
  async connect(g, extra, connections = 1) {
    const { connectTimeout: _, ...options } = { ...endpoint(g), ...extra };
    const pool = iamPool({
      ...options,
      max: connections,
      connectionTimeoutMillis: 10_000,
    } as pgAdapter.IamPoolConfig);
    pool.on("error", () => {});
    closers.push(() => pool.end());
    try {
      const clients = await Promise.all(Array.from({ length: connections }, () => pool.connect()));
      for (const c of clients) c.release();
    } finally {
      await pool.end();
    }
  },
};

const BUN_SQL: Driver = {
  name: "bun",
  async connect(g, extra, connections = 1) {
    const { connectTimeout: _, ...options } = { ...endpoint(g), ...extra };
    const sql = bunAdapter.iamSql({ ...options, max: connections, connectionTimeout: 10 });
    closers.push(() => sql.close({ timeout: 0 }));
    try {
      const reserved = await Promise.all(Array.from({ length: connections }, () => sql.reserve()));
      for (const r of reserved) r.release();
    } finally {
      await sql.close({ timeout: 0 });
    }
  },
};

/** A plain node-postgres client (no pg-iam) through a proxy to the gateway. */
const PROXY: Driver = {
  name: "proxy",
  async connect(g, extra, connections = 1) {
    const { host, port, ...options } = { ...endpoint(g), ...extra };
    const proxy: Proxy = await startProxy({
      ...options,
      host,
      port,
      connectTimeout: 10,
    } as never);
    closers.push(() => proxy.close());
    try {
      const clients = Array.from({ length: connections }, () =>
        new pg.Client({
          host: proxy.host,
          port: proxy.port,
          user: "app",
          database: "postgres",
        }));
      for (const c of clients) c.on("error", () => {});
      try {
        await Promise.all(clients.map((c) => c.connect()));
      } finally {
        await Promise.all(clients.map((c) => c.end().catch(() => {})));
      }
    } finally {
      await proxy.close();
    }
  },
};

/** The start fields every trace carries, for a connection to `g` as `user`. */
function assertStart(
  c: ConnectChannelContext,
  driver: string,
  g: Gateway,
  port = g.port,
  user = "app",
): void {
  assert.equal(c.driver, driver);
  assert.equal(c.host, g.host);
  assert.equal(c.port, port);
  assert.equal(c.user, user);
  assert.equal(c.database, "postgres");
  assert.equal(c.service, "rds");
  assert.equal(c.region, "us-east-1");
}

function assertTimings(c: ConnectChannelContext): void {
  const t = c.timings!;
  for (const key of ["credentialsMs", "signMs", "connectMs", "tlsMs", "authMs", "totalMs"]) {
    const ms = t[key as keyof typeof t];
    assert.ok(typeof ms === "number" && ms >= 0, `${key}: ${ms}`);
  }
  assert.ok(t.totalMs > 0);
}

async function succeeds(driver: Driver): Promise<void> {
  const g = await testGateway(KEYS);
  const seen = subscribe();
  try {
    await driver.connect(g, {}, 2);
  } finally {
    seen.stop();
  }
  // A connect of an earlier test still under way (postgres.js 3 opens one after its client's
  // failure) is on another gateway's port.
  const traces = [...seen.traces].filter(([c]) => c.port === g.port);
  assert.equal(traces.length, 2, inspect(traces));
  for (const [c, events] of traces) {
    assert.deepEqual(events, ["start", "end", "asyncStart", "asyncEnd"]);
    assertStart(c, driver.name, g);
    assert.equal(c.ok, true);
    assert.equal(c.attempts, 1);
    assert.equal(c.step, undefined);
    assert.equal(c.error, undefined);
    assertTimings(c);
    if (driver.name !== "bun") assert.ok(c.timings!.connectMs > 0 && c.timings!.authMs > 0);
    assert.equal(typeof c.tokenReused, "boolean");
  }
  // One token signed, the other connection's handed out again (tokenReuse, the default).
  assert.deepEqual(traces.map(([c]) => c.tokenReused).sort(), [false, true]);
  // The failing connects of earlier tests log in as admin.
  const tokens = seen.tokens.filter((t) => t.user === "app");
  assert.equal(tokens.length, 2, inspect(seen.tokens));
  assert.deepEqual(tokens.map((t) => t.reused).sort(), [false, true]);
  for (const t of tokens) {
    assert.deepEqual(Object.keys(t).sort(), [
      "credentialsExpiration",
      "credentialsMs",
      "credentialsSource",
      "host",
      "port",
      "region",
      "reused",
      "service",
      "signMs",
      "user",
    ]);
    assert.equal(t.host, RDS);
    assert.equal(t.port, 5432);
    assert.equal(t.user, "app");
    assert.equal(t.service, "rds");
    assert.equal(t.region, "us-east-1");
    assert.equal(t.credentialsSource, "option");
    assert.equal(t.credentialsExpiration, undefined);
    assert.ok(t.signMs >= 0 && t.credentialsMs >= 0);
    if (t.reused) assert.equal(t.signMs, 0);
  }
  assert.equal(g.stats.logins.filter((l) => l.accepted).length, 2);
  assertNoSecret(seen);
}

/** Each failing connect publishes `error` then `asyncEnd`, with its step; no secret anywhere. */
async function fails(driver: Driver): Promise<void> {
  const cases: [string, Record<string, unknown>, string, boolean?][] = [
    ["auth", { credentials: WRONG }, "wrong keys"],
    ["connect", {}, "a closed port", true],
    // The RDS CA bundle (no `ca`) does not trust the test certificate.
    ["tls", { ssl: "verify-full" }, "an untrusted certificate"],
  ];
  const seen = subscribe();
  try {
    for (const [step, extra, what, closed] of cases) {
      // A gateway (or a closed port) of its own: a connect of an earlier case or test still under
      // way is on another port.
      const g = await testGateway(KEYS);
      const port = closed ? await closedPort() : g.port;
      const mine = () => [...seen.traces].filter(([c]) => c.port === port);
      await assert.rejects(driver.connect(g, { user: "admin", ...extra, port }), what);
      // Bun.SQL fails the query before it calls onclose.
      await waitFor(() => mine().some(([, events]) => events.includes("asyncEnd")));
      const [c, events] = mine()[0];
      assert.deepEqual(events, ["start", "end", "error", "asyncStart", "asyncEnd"], what);
      assertStart(c, driver.name, g, port, "admin");
      assert.equal(c.ok, false, what);
      assert.equal(c.step, step, what);
      assert.ok(c.error instanceof Error, what);
      assertTimings(c);
      if (step === "auth") {
        // The gateway refused the token: the server's verdict, not the client's.
        assert.ok(g.stats.logins.some((l) => !l.accepted));
        // Rejected, then retried with force-refreshed credentials: two attempts (Bun: one).
        assert.equal(c.attempts, driver.name === "bun" ? 1 : 2);
      }
    }
  } finally {
    seen.stop();
  }
  assertNoSecret(seen);
}

/** The channels' publish methods, counted (own properties over the channels' own). */
function countPublishes(): { count: () => number; restore: () => void } {
  const channels = [
    ...EVENTS.map((e) => dc.channel(`tracing:${CONNECT_CHANNEL}:${e}`)),
    dc.channel(TOKEN_CHANNEL),
  ];
  let n = 0;
  for (const channel of channels) {
    Object.defineProperty(channel, "publish", {
      configurable: true,
      value: () => void n++,
    });
  }
  return {
    count: () => n,
    restore: () => {
      for (const channel of channels) delete (channel as { publish?: unknown }).publish;
    },
  };
}

test(
  "nobody subscribed: no channel has subscribers and nothing is published on any driver; subscribed (the control), the same connects publish",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const drivers = BUN ? [POSTGRES, PG, PROXY, BUN_SQL] : [POSTGRES, PG, PROXY];
    assert.equal(dc.channel(TOKEN_CHANNEL).hasSubscribers, false);
    assert.equal(dc.channel(`tracing:${CONNECT_CHANNEL}:start`).hasSubscribers, false);
    const counter = countPublishes();
    try {
      for (const driver of drivers) await driver.connect(g, {});
      assert.equal(counter.count(), 0);
      // The control: one subscriber, and the same connects go through the counted methods.
      const seen = subscribe();
      try {
        for (const driver of drivers) await driver.connect(g, {});
      } finally {
        seen.stop();
      }
      assert.ok(counter.count() >= drivers.length * 4, `${counter.count()}`);
    } finally {
      counter.restore();
    }
  },
);

test(
  `postgres.js ${MAJOR}: one pg-iam:connect trace per connection (start, end, asyncStart, asyncEnd) with the contract's fields, one pg-iam:token message per token (signed, then reused), no secret in any`,
  TIMEOUT,
  () => succeeds(POSTGRES),
);

test(
  `postgres.js ${MAJOR}: keys the gateway refuses, a closed port and an untrusted certificate each publish error with their step (auth, connect, tls)`,
  TIMEOUT,
  () => fails(POSTGRES),
);

test(
  "node-postgres: one pg-iam:connect trace per connection with the contract's fields, one pg-iam:token message per token, no secret in any",
  TIMEOUT,
  () => succeeds(PG),
);

test(
  "node-postgres: keys the gateway refuses, a closed port and an untrusted certificate each publish error with their step",
  TIMEOUT,
  () => fails(PG),
);

test(
  "Bun.SQL: one pg-iam:connect trace per connection Bun opens (driver bun, what Bun lets pg-iam time), one pg-iam:token message per token",
  ON_BUN,
  () => succeeds(BUN_SQL),
);

test(
  "Bun.SQL: keys the gateway refuses, a closed port and an untrusted certificate each publish error with their step",
  ON_BUN,
  () => fails(BUN_SQL),
);

test(
  "the proxy: each upstream login is a pg-iam:connect trace (driver proxy) with the contract's fields, and its tokens are on pg-iam:token",
  TIMEOUT,
  () => succeeds(PROXY),
);

test(
  "the proxy: keys the gateway refuses, a closed port and an untrusted certificate each publish error with their step",
  TIMEOUT,
  () => fails(PROXY),
);

test(
  "credentialsSource and credentialsExpiration: a provider's, with the AWS SDK's attribution ($source); a session token is never in the message",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const expiration = new Date(Date.now() + 3_600_000);
    const provider = () =>
      Promise.resolve({ ...KEYS, expiration, $source: { CREDENTIALS_PROFILE: "n" } });
    const seen = subscribe();
    try {
      await PG.connect(g, { credentials: provider });
    } finally {
      seen.stop();
    }
    assert.equal(seen.tokens.length, 1);
    assert.equal(seen.tokens[0].credentialsSource, "provider:CREDENTIALS_PROFILE");
    assert.equal(seen.tokens[0].credentialsExpiration?.getTime(), expiration.getTime());
    assertNoSecret(seen);
    // The control: the search does see a session token, or a signature, where one is.
    const planted = (value: unknown) => ({ ...seen, all: [...seen.all, { value }] });
    assert.throws(() => assertNoSecret(planted(new Error(KEYS.sessionToken))));
    assert.throws(() => assertNoSecret(planted("?Action=connect&X-Amz-Signature=0f")));
  },
);

test("every subpath that opens connections exports the channel names", () => {
  for (const module of [pgAdapter, proxyModule, bunAdapter]) {
    assert.equal(module.CONNECT_CHANNEL, "pg-iam:connect");
    assert.equal(module.TOKEN_CHANNEL, "pg-iam:token");
  }
  assert.equal(CONNECT_CHANNEL, "pg-iam:connect");
  assert.equal(TOKEN_CHANNEL, "pg-iam:token");
  // The control: the root (the token engine, no connections) exports none.
  assert.equal("CONNECT_CHANNEL" in root, false);
});
