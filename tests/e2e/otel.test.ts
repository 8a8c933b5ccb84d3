// The OpenTelemetry recipe (examples/otel.ts) under the official SDK, with an in-memory span
// exporter and a metric reader collected on demand. First against the channel contract itself
// (docs/observability.md): messages of its shape published here by hand on node:diagnostics_channel,
// so that the recipe and the contract are checked without pg-iam; then end to end, postgres.js
// through iamPostgres() and the IAM-verifying gateway. Controls: unsubscribed, nothing is recorded;
// a successful connect counts no failure; the secret search finds a planted secret.
import { test } from "node:test";
import assert from "node:assert/strict";
import dc from "node:diagnostics_channel";
import type { HrTime } from "@opentelemetry/api";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { MeterProvider, MetricReader } from "@opentelemetry/sdk-metrics";
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
  // The histogram's seconds and the span's duration measure the same interval.
  assert.ok(Math.abs(point.value.sum * 1000 - duration) < 1, `${point.value.sum} s`);
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
