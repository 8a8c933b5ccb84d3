// The OpenTelemetry recipe (examples/otel.ts) under the official SDK, with an in-memory span
// exporter and a metric reader collected on demand. First against the channel contract itself
// (docs/observability.md): messages of its shape published here by hand on node:diagnostics_channel,
// so that the recipe and the contract are checked without pg-iam; then end to end, postgres.js
// through iamPostgres() and the IAM-verifying gateway. Controls: unsubscribed, nothing is recorded;
// a successful connect counts no failure; the secret search finds a planted secret.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import dc from "node:diagnostics_channel";
import { readFileSync } from "node:fs";
import type { HrTime } from "@opentelemetry/api";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { MeterProvider, MetricReader } from "@opentelemetry/sdk-metrics";
import type pg from "pg";
import type { Sql } from "postgres";
import {
  CONNECT_CHANNEL,
  type ConnectChannelContext,
  iamPostgres,
  TOKEN_CHANNEL,
  type TokenChannelMessage,
} from "../../src/postgres/mod.ts";
import { iamPool, type IamPoolConfig } from "../../src/pg/mod.ts";
import { type BunSqlClient, iamSql, type IamSqlOptions } from "../../src/bun/mod.ts";
import type { Gateway } from "../../src/gateway/mod.ts";
import { closeTestGateways, testGateway } from "../_gateway.ts";
import { ca } from "../fixtures/tls.ts";
import {
  instrumentPgIam,
  type PgIamConnectContext,
  type PgIamTokenMessage,
} from "../../examples/otel.ts";

const CONNECT = dc.tracingChannel("pg-iam:connect");
const TOKEN = dc.channel("pg-iam:token");

/** A reader the test collects from when it likes (no timer, no exporter). */
class Reader extends MetricReader {
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
  protected override onShutdown(): Promise<void> {
    return Promise.resolve();
  }
}

interface Point {
  attributes: Record<string, unknown>;
  // deno-lint-ignore no-explicit-any
  value: any;
}

/** An SDK of its own, with the recipe subscribed: spans and metrics as they stand. */
function telemetry() {
  const exporter = new InMemorySpanExporter();
  const tracing = new BasicTracerProvider({
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const reader = new Reader();
  const meters = new MeterProvider({ readers: [reader] });
  const stop = instrumentPgIam({
    tracer: tracing.getTracer("otel.test"),
    meter: meters.getMeter("otel.test"),
  });
  return {
    stop,
    spans: (): ReadableSpan[] => exporter.getFinishedSpans().slice(),
    /** Each metric's data points by name. */
    async metrics(): Promise<Record<string, Point[]>> {
      const { resourceMetrics, errors } = await reader.collect();
      assert.deepEqual(errors, []);
      const out: Record<string, Point[]> = {};
      for (const scope of resourceMetrics.scopeMetrics) {
        for (const m of scope.metrics) {
          out[m.descriptor.name] = m.dataPoints.map((p) => ({
            attributes: { ...p.attributes },
            value: p.value,
          }));
        }
      }
      return out;
    },
  };
}

const ns = (t: HrTime) => t[0] * 1e9 + t[1];
const ms = (t: HrTime) => ns(t) / 1e6;
// The SDK starts a span at Date.now() and ends it that plus the performance clock's interval, so
// durations are exact and absolute times are not: the tests compare durations.
const clock = () => performance.now();
/** The SDK's float arithmetic on epoch milliseconds places an event within a microsecond. */
const ROUNDING_NS = 1000;

/** A context of the contract's shape, as the channel carries it at start. */
function startContext(extra: Partial<PgIamConnectContext> = {}): PgIamConnectContext {
  return {
    driver: "postgres",
    host: "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com",
    port: 5432,
    user: "app",
    database: "orders",
    service: "rds",
    region: "us-east-1",
    ...extra,
  };
}

const TIMINGS = {
  credentialsMs: 1.5,
  signMs: 0.5,
  connectMs: 2,
  tlsMs: 3,
  authMs: 4,
  totalMs: 11.25,
};

/**
 * One connect traced by hand the way the contract says: start, then (once `release` is called)
 * the end fields, and error + asyncEnd or asyncEnd. Returns the clock readings around start and
 * asyncEnd.
 */
async function publishConnect(
  ctx: PgIamConnectContext,
  end: Partial<PgIamConnectContext>,
  fail?: Error,
): Promise<{ beforeStart: number; afterStart: number; beforeEnd: number; afterEnd: number }> {
  const t = { beforeStart: 0, afterStart: 0, beforeEnd: 0, afterEnd: 0 };
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  t.beforeStart = clock();
  const traced = CONNECT.tracePromise(async () => {
    t.afterStart = clock();
    await gate;
    Object.assign(ctx, end);
    t.beforeEnd = clock();
    if (fail) throw fail;
  }, ctx as object);
  // Some time between start and asyncEnd: a timer turn, then the gate opens.
  await new Promise((resolve) => setTimeout(resolve, 5));
  release();
  await traced.catch(() => {});
  t.afterEnd = clock();
  return t;
}

const attrs = (span: ReadableSpan) => ({ ...span.attributes });

test("otel recipe, by hand: a contract-shaped connect on pg-iam:connect is one pg-iam.connect span from start to asyncEnd, with the attributes and the steps as events in order, and a duration point; unsubscribed, the same messages record nothing (the control)", async () => {
  const otel = telemetry();
  let t;
  try {
    t = await publishConnect(startContext(), {
      ok: true,
      attempts: 1,
      timings: TIMINGS,
      tokenReused: false,
    });
  } finally {
    otel.stop();
  }
  const spans = otel.spans();
  assert.equal(spans.length, 1);
  const [span] = spans;
  assert.equal(span.name, "pg-iam.connect");
  assert.equal(span.kind, 2); // SpanKind.CLIENT
  assert.deepEqual(attrs(span), {
    "db.system.name": "postgresql",
    "server.address": "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com",
    "server.port": 5432,
    "db.user": "app",
    "db.namespace": "orders",
    "pgiam.driver": "postgres",
    "pgiam.service": "rds",
    "aws.region": "us-east-1",
    "pgiam.attempts": 1,
    "pgiam.token.reused": false,
  });
  assert.equal(span.status.code, 0); // UNSET: OTel leaves success unset
  // Started within start's publish, ended within asyncEnd's: its duration lies between.
  const duration = ms(span.duration);
  assert.ok(t.beforeEnd - t.afterStart <= duration, `${duration} ms`);
  assert.ok(duration <= t.afterEnd - t.beforeStart, `${duration} ms`);
  assert.ok(duration > 0);
  assert.deepEqual(
    span.events.map((e) => [e.name, e.attributes?.["pgiam.step.duration_ms"]]),
    [["credentials", 1.5], ["sign", 0.5], ["connect", 2], ["tls", 3], ["auth", 4]],
  );
  const times = span.events.map((e) => ns(e.time));
  assert.deepEqual(times, [...times].sort((a, b) => a - b), "events in order");
  assert.ok(
    times.every((x) =>
      x >= ns(span.startTime) - ROUNDING_NS && x <= ns(span.endTime) + ROUNDING_NS
    ),
    "in the span",
  );
  const metrics = await otel.metrics();
  assert.deepEqual(metrics["pgiam.connect.duration"].map((p) => p.attributes), [
    { "pgiam.driver": "postgres", "pgiam.ok": true },
  ]);
  const [point] = metrics["pgiam.connect.duration"];
  assert.equal(point.value.count, 1);
  // The histogram's seconds measure the same interval as the span, start to asyncEnd.
  const histogramMs = point.value.sum * 1000;
  assert.ok(t.beforeEnd - t.afterStart <= histogramMs, `${histogramMs} ms`);
  assert.ok(histogramMs <= t.afterEnd - t.beforeStart, `${histogramMs} ms`);
  assert.deepEqual(metrics["pgiam.connect.failures"] ?? [], []);

  // The control: the recipe unsubscribed, the channels have no subscriber of it and the same
  // messages record nothing.
  assert.notEqual(CONNECT.start.hasSubscribers, true);
  assert.equal(TOKEN.hasSubscribers, false);
  await publishConnect(startContext(), { ok: true, attempts: 1, timings: TIMINGS });
  TOKEN.publish(tokenMessage(false));
  assert.equal(otel.spans().length, 1);
  const again = await otel.metrics();
  assert.equal(again["pgiam.connect.duration"][0].value.count, 1);
  assert.deepEqual(again["pgiam.tokens"] ?? [], []);
});

test("otel recipe, by hand: a failing connect (error, then asyncEnd) is an error span with error.type and pgiam.step, a failures count by step and a failed duration point; one that throws before it awaits (no asyncEnd) still ends its span", async () => {
  const otel = telemetry();
  const refused = Object.assign(
    new Error('the server refused the login: PAM authentication failed for user "app"'),
    {
      name: "ConnectError",
      code: "SERVER_ERROR",
    },
  );
  try {
    await publishConnect(startContext({ driver: "pg", database: undefined }), {
      ok: false,
      attempts: 2,
      timings: { ...TIMINGS, tlsMs: 0 },
      tokenReused: false,
      step: "auth",
    }, refused);
    // A synchronous throw: start, error, end; a TracingChannel publishes no asyncEnd.
    const ctx = startContext({ driver: "bun", region: undefined });
    assert.throws(() =>
      CONNECT.traceSync(() => {
        Object.assign(ctx, { ok: false, attempts: 1, timings: {}, step: "credentials" });
        throw new TypeError('Invalid "credentials": expected an object, got 42');
      }, ctx as object)
    );
  } finally {
    otel.stop();
  }
  const [failed, sync] = otel.spans();
  assert.equal(otel.spans().length, 2);
  assert.equal(failed.status.code, 2); // ERROR
  assert.equal(failed.status.message, refused.message);
  assert.deepEqual(attrs(failed), {
    "db.system.name": "postgresql",
    "server.address": "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com",
    "server.port": 5432,
    "db.user": "app",
    "pgiam.driver": "pg",
    "pgiam.service": "rds",
    "aws.region": "us-east-1",
    "pgiam.attempts": 2,
    "pgiam.token.reused": false,
    "error.type": "SERVER_ERROR",
    "pgiam.step": "auth",
  });
  assert.equal(sync.status.code, 2);
  assert.equal(sync.attributes["error.type"], "TypeError");
  assert.equal(sync.attributes["pgiam.step"], "credentials");
  assert.deepEqual(sync.events, []);
  const metrics = await otel.metrics();
  assert.deepEqual(
    metrics["pgiam.connect.failures"].map((p) => [p.attributes, p.value]),
    [[{ "pgiam.step": "auth" }, 1], [{ "pgiam.step": "credentials" }, 1]],
  );
  assert.deepEqual(metrics["pgiam.connect.duration"].map((p) => p.attributes), [
    { "pgiam.driver": "pg", "pgiam.ok": false, "pgiam.step": "auth" },
    { "pgiam.driver": "bun", "pgiam.ok": false, "pgiam.step": "credentials" },
  ]);
});

function tokenMessage(reused: boolean): PgIamTokenMessage {
  return {
    host: "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com",
    port: 5432,
    user: "app",
    service: "rds",
    region: "us-east-1",
    reused,
    signMs: reused ? 0 : 0.4,
    credentialsMs: 0.1,
    credentialsSource: "env",
    credentialsExpiration: undefined,
  };
}

test("otel recipe, by hand: pg-iam:token messages count pgiam.tokens by reused; a connect started before the recipe subscribed makes no span, nor one in flight when it unsubscribes", async () => {
  const early = startContext();
  let releaseEarly!: () => void;
  const earlyDone = CONNECT.tracePromise(
    () => new Promise<void>((resolve) => releaseEarly = resolve),
    early as object,
  );
  const otel = telemetry();
  let late;
  try {
    for (const reused of [false, true, true]) TOKEN.publish(tokenMessage(reused));
    releaseEarly();
    await earlyDone;
    late = CONNECT.tracePromise(() => Promise.resolve(), startContext({ driver: "proxy" }));
  } finally {
    otel.stop();
  }
  await late;
  assert.deepEqual(otel.spans(), []);
  const metrics = await otel.metrics();
  assert.deepEqual(
    metrics["pgiam.tokens"].map((p) => [p.attributes, p.value]),
    [
      [{ "pgiam.token.reused": false, "pgiam.service": "rds" }, 1],
      [{ "pgiam.token.reused": true, "pgiam.service": "rds" }, 2],
    ],
  );
});

// ---- end to end: pg-iam's own channels, through the IAM-verifying gateway ----------------------

// The example declares the payloads itself (it is copied without pg-iam's types): they must accept
// what pg-iam publishes, on the channels it names (checked by deno check, and by the runs below).
const _context: (c: ConnectChannelContext) => PgIamConnectContext = (c) => c;
const _token: (m: TokenChannelMessage) => PgIamTokenMessage = (m) => m;
test("otel recipe: the channel names it subscribes to are the ones pg-iam exports", () => {
  assert.equal(CONNECT_CHANNEL, "pg-iam:connect");
  assert.equal(TOKEN_CHANNEL, "pg-iam:token");
  const source = readFileSync(new URL("../../examples/otel.ts", import.meta.url), "utf8");
  assert.ok(source.includes(`dc.tracingChannel("${CONNECT_CHANNEL}")`));
  assert.ok(source.includes(`dc.subscribe("${TOKEN_CHANNEL}", `));
});

const KEYS = { accessKeyId: "AKIDPGIAMOTEL", secretAccessKey: "pg-iam/otel/secret" };
const WRONG = { accessKeyId: "AKIDPGIAMOTELWRONG", secretAccessKey: "pg-iam/otel/wrong" };
const E2E = { timeout: 60_000 };
const BUN = (globalThis as { Bun?: { SQL?: unknown } }).Bun?.SQL !== undefined;
const ON_BUN = { skip: BUN ? false : "Bun.SQL is Bun's own client", timeout: 60_000 };

after(closeTestGateways);

let shared: Promise<Gateway> | undefined;
const gateway = () => shared ??= testGateway([KEYS]);

const options = (g: Gateway, credentials = KEYS) => ({
  host: g.host,
  port: g.port,
  user: "app",
  database: "postgres",
  signingHostname: g.endpoint,
  signingPort: 5432,
  credentials,
  ssl: { ca },
});

function postgresJs(g: Gateway, credentials = KEYS, max = 1): Sql {
  return iamPostgres({ ...options(g, credentials), max, onnotice: () => {} });
}

/** What must never show: the secret key, and what a token is made of (its key id, its query). */
function leaks(text: string): string[] {
  return [
    KEYS.secretAccessKey,
    KEYS.accessKeyId,
    WRONG.secretAccessKey,
    WRONG.accessKeyId,
    "X-Amz-",
    "Action=connect",
  ].filter((secret) => text.includes(secret));
}

/** Every attribute, event, status message and metric attribute, as one text. */
function everything(spans: ReadableSpan[], metrics: Record<string, Point[]>): string {
  return JSON.stringify({
    spans: spans.map((s) => [s.name, s.attributes, s.status, s.events]),
    metrics: Object.values(metrics).map((points) => points.map((p) => p.attributes)),
  });
}

const stepSum = (span: ReadableSpan) =>
  span.events.reduce((sum, e) => sum + Number(e.attributes?.["pgiam.step.duration_ms"]), 0);

test(
  "otel recipe, end to end: two postgres.js connections through the gateway are two pg-iam.connect spans with the contract's attributes, the five steps as events, each lasting at least its steps' sum; one token signed, one reused; no secret in any attribute (the search finds a planted one); unsubscribed, a further connect records nothing (the control)",
  E2E,
  async () => {
    const g = await gateway();
    const otel = telemetry();
    const sql = postgresJs(g, KEYS, 2);
    try {
      const first = await sql.reserve();
      const second = await sql.reserve(); // a second connection, while the first is held
      assert.deepEqual([...await first`select 1 as x`], [{ x: 1 }]);
      assert.deepEqual([...await second`select 1 as x`], [{ x: 1 }]);
      first.release();
      second.release();
    } finally {
      await sql.end({ timeout: 1 });
      otel.stop();
    }
    const spans = otel.spans();
    assert.equal(spans.length, 2);
    for (const span of spans) {
      assert.equal(span.name, "pg-iam.connect");
      assert.equal(span.status.code, 0);
      const { "pgiam.token.reused": _, ...rest } = span.attributes;
      assert.deepEqual({ ...rest }, {
        "db.system.name": "postgresql",
        "server.address": g.host,
        "server.port": g.port,
        "db.user": "app",
        "db.namespace": "postgres",
        "pgiam.driver": "postgres",
        "pgiam.service": "rds",
        "aws.region": "us-east-1",
        "pgiam.attempts": 1,
      });
      assert.deepEqual(span.events.map((e) => e.name), [
        "credentials",
        "sign",
        "connect",
        "tls",
        "auth",
      ]);
      assert.ok(span.events.every((e) => Number(e.attributes?.["pgiam.step.duration_ms"]) >= 0));
      assert.ok(ms(span.duration) >= stepSum(span), `${ms(span.duration)} < ${stepSum(span)}`);
      assert.ok(stepSum(span) > 0);
    }
    assert.deepEqual(spans.map((s) => s.attributes["pgiam.token.reused"]), [false, true]);
    const metrics = await otel.metrics();
    assert.deepEqual(
      metrics["pgiam.tokens"].map((p) => [p.attributes["pgiam.token.reused"], p.value]),
      [[false, 1], [true, 1]],
    );
    assert.deepEqual(
      metrics["pgiam.connect.duration"].map((p) => [p.attributes, p.value.count]),
      [[{ "pgiam.driver": "postgres", "pgiam.ok": true }, 2]],
    );
    assert.deepEqual(metrics["pgiam.connect.failures"] ?? [], []);
    assert.deepEqual(leaks(everything(spans, metrics)), []);
    // The search's control: a token's parts and the secret key, planted, are found.
    assert.equal(leaks(`${KEYS.secretAccessKey} X-Amz-Credential=${KEYS.accessKeyId}`).length, 3);

    // The control: unsubscribed, a connect makes no span and counts nothing.
    const later = postgresJs(g);
    try {
      assert.deepEqual([...await later`select 2 as x`], [{ x: 2 }]);
    } finally {
      await later.end({ timeout: 1 });
    }
    assert.equal(otel.spans().length, 2);
    const unchanged = await otel.metrics();
    assert.equal(unchanged["pgiam.connect.duration"][0].value.count, 2);
    assert.equal(unchanged["pgiam.tokens"].reduce((n, p) => n + p.value, 0), 2);
  },
);

test(
  "otel recipe, end to end: keys the gateway refuses make an error span (error.type, pgiam.step auth, 2 attempts), a failure counted by step, two tokens signed and none reused, no secret anywhere; the right keys beside it make an ok span and count no failure (the control)",
  E2E,
  async () => {
    const g = await gateway();
    const otel = telemetry();
    const wrong = postgresJs(g, WRONG);
    const right = postgresJs(g);
    let refusal: Error | undefined;
    try {
      await wrong`select 1`.catch((error: Error) => refusal = error);
      assert.ok(refusal, "the wrong keys are refused");
      assert.deepEqual([...await right`select 1 as x`], [{ x: 1 }]);
    } finally {
      await Promise.all([wrong.end({ timeout: 1 }), right.end({ timeout: 1 })]);
      otel.stop();
    }
    const spans = otel.spans();
    const failed = spans.filter((s) => s.status.code === 2);
    const ok = spans.filter((s) => s.status.code === 0);
    assert.equal(ok.length, 1);
    assert.equal(failed.length, 1, "one connection for one query");
    const [span] = failed;
    assert.equal(span.attributes["pgiam.step"], "auth");
    assert.equal(span.attributes["pgiam.attempts"], 2);
    assert.equal(span.attributes["pgiam.token.reused"], false);
    // The server's SQLSTATE for the refused token (invalid_password), as pg-iam's IamAuthError has it.
    assert.equal(span.attributes["error.type"], "28P01");
    assert.match(span.status.message ?? "", /rejected twice/);
    assert.deepEqual(span.events.map((e) => e.name), [
      "credentials",
      "sign",
      "connect",
      "tls",
      "auth",
    ]);
    assert.ok(ms(span.duration) >= stepSum(span));
    assert.equal(ok[0].attributes["error.type"], undefined);
    assert.equal(ok[0].attributes["pgiam.step"], undefined);
    const metrics = await otel.metrics();
    assert.deepEqual(
      metrics["pgiam.connect.failures"].map((p) => [p.attributes, p.value]),
      [[{ "pgiam.step": "auth" }, 1]],
    );
    const tokens = Object.fromEntries(
      metrics["pgiam.tokens"].map((p) => [String(p.attributes["pgiam.token.reused"]), p.value]),
    );
    // The failed connect signs twice (the retry signs afresh), the right keys once.
    assert.deepEqual(tokens, { false: 3 });
    assert.deepEqual(leaks(everything(spans, metrics)), []);
  },
);

test(
  "otel recipe, end to end: a node-postgres pool's connect is a pg-iam.connect span of driver pg with its steps; unsubscribed, the next one records nothing (the control)",
  E2E,
  async () => {
    const g = await gateway();
    const otel = telemetry();
    const pool: pg.Pool = iamPool({ ...options(g), max: 1 } as IamPoolConfig);
    pool.on("error", () => {});
    try {
      assert.equal((await pool.query("select 1 as x")).rows[0].x, 1);
      otel.stop();
      const second = iamPool({ ...options(g), max: 1 } as IamPoolConfig); // a new connection
      second.on("error", () => {});
      try {
        assert.equal((await second.query("select 2 as x")).rows[0].x, 2);
      } finally {
        await second.end();
      }
    } finally {
      otel.stop();
      await pool.end();
    }
    const spans = otel.spans();
    assert.equal(spans.length, 1);
    assert.equal(spans[0].attributes["pgiam.driver"], "pg");
    assert.equal(spans[0].attributes["db.namespace"], "postgres");
    assert.deepEqual(spans[0].events.map((e) => e.name), [
      "credentials",
      "sign",
      "connect",
      "tls",
      "auth",
    ]);
    assert.ok(ms(spans[0].duration) >= stepSum(spans[0]));
  },
);

test(
  "otel recipe, end to end: a Bun.SQL connection is a pg-iam.connect span of driver bun; unsubscribed, the next one records nothing (the control)",
  ON_BUN,
  async () => {
    const g = await gateway();
    const otel = telemetry();
    const sql: BunSqlClient = iamSql({ ...options(g), max: 1 } as IamSqlOptions);
    try {
      assert.deepEqual([...await sql`select 1 as x`], [{ x: 1 }]);
    } finally {
      otel.stop();
      await sql.close({ timeout: 0 });
    }
    const again: BunSqlClient = iamSql({ ...options(g), max: 1 } as IamSqlOptions);
    try {
      assert.deepEqual([...await again`select 2 as x`], [{ x: 2 }]);
    } finally {
      await again.close({ timeout: 0 });
    }
    const spans = otel.spans();
    assert.equal(spans.length, 1);
    assert.equal(spans[0].status.code, 0);
    assert.equal(spans[0].attributes["pgiam.driver"], "bun");
    assert.equal(spans[0].attributes["server.port"], g.port);
    const metrics = await otel.metrics();
    assert.deepEqual(leaks(everything(spans, metrics)), []);
  },
);

test(
  "docs/observability.md: a subscriber of one's own logs one JSON line per connect (its steps' timings) and per token, postgres.js through the gateway, none with a secret; before it subscribes and after, a connect logs nothing (the controls)",
  E2E,
  async () => {
    const g = await gateway();
    const lines: string[] = [];
    const connectOnce = async () => {
      const sql = postgresJs(g);
      try {
        assert.deepEqual([...await sql`select 1 as x`], [{ x: 1 }]);
      } finally {
        await sql.end({ timeout: 1 });
      }
    };
    // The page's subscriber, with console.log as lines.push.
    const connect = {
      start() {},
      end() {},
      asyncStart() {},
      error() {},
      asyncEnd(message: unknown) {
        const c = message as ConnectChannelContext;
        const { driver, host, port, ok, attempts, step, timings } = c;
        lines.push(
          JSON.stringify({ connect: { driver, host, port, ok, attempts, step, ...timings } }),
        );
      },
    };
    const token = (message: unknown) => {
      const { user, reused, signMs, credentialsSource } = message as TokenChannelMessage;
      lines.push(JSON.stringify({ token: { user, reused, signMs, credentialsSource } }));
    };
    await connectOnce();
    assert.deepEqual(lines, []);
    dc.tracingChannel(CONNECT_CHANNEL).subscribe(connect);
    dc.subscribe(TOKEN_CHANNEL, token);
    try {
      await connectOnce();
    } finally {
      dc.tracingChannel(CONNECT_CHANNEL).unsubscribe(connect);
      dc.unsubscribe(TOKEN_CHANNEL, token);
    }
    await connectOnce();
    assert.equal(lines.length, 2, lines.join("\n"));
    const [tokenLine, connectLine] = lines.map((l) => JSON.parse(l));
    assert.deepEqual(tokenLine.token.user, "app");
    assert.equal(tokenLine.token.reused, false);
    assert.equal(tokenLine.token.credentialsSource, "option");
    assert.deepEqual(
      Object.keys(connectLine.connect),
      [
        "driver",
        "host",
        "port",
        "ok",
        "attempts",
        "credentialsMs",
        "signMs",
        "connectMs",
        "tlsMs",
        "authMs",
        "totalMs",
      ],
    );
    assert.equal(connectLine.connect.ok, true);
    assert.equal(connectLine.connect.port, g.port);
    assert.deepEqual(leaks(lines.join("\n")), []);
  },
);
