// OpenTelemetry for pg-iam's connects: copy this file into your app and call instrumentPgIam()
// once, with the tracer and meter of your SDK. It subscribes to pg-iam's diagnostics channels
// (docs/observability.md) and needs nothing from pg-iam itself, only `@opentelemetry/api`:
//
//   import { metrics, trace } from "@opentelemetry/api";
//   import { instrumentPgIam } from "./otel.ts";
//   const stop = instrumentPgIam({ tracer: trace.getTracer("pg-iam"), meter: metrics.getMeter("pg-iam") });
//
// Every physical connection becomes a `pg-iam.connect` span, from the channel's start to its
// asyncEnd, with the steps (credentials, sign, connect, tls, auth) as events carrying their
// durations. Events rather than child spans: pg-iam measures each step's duration, not when it
// began, and after a rejected token (attempts 2) the durations of both attempts are added up, so
// child spans would claim intervals nobody observed; events keep the measured numbers honest, and
// a connect stays one span. They sit where each step ended had the steps run back to back from the
// span's start: in order, exactly placed for one attempt, approximately after a retry.
// Metrics: pgiam.connect.duration (s), pgiam.tokens {reused}, pgiam.connect.failures {step}.
// Spans and the channel's context are matched through a WeakMap keyed by that context (the same
// object at start and at asyncEnd), so no AsyncLocalStorage is needed.
import dc from "node:diagnostics_channel";
import {
  type Attributes,
  type Meter,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
} from "@opentelemetry/api";

/** The `pg-iam:connect` context, as the channel fills it in (docs/observability.md). */
export interface PgIamConnectContext {
  driver: "postgres" | "pg" | "bun" | "proxy";
  host: string;
  port: number;
  user: string;
  database: string | undefined;
  service: "rds" | "dsql";
  region: string | undefined;
  /** Set before asyncEnd. */
  ok?: boolean;
  attempts?: number;
  timings?: Partial<PgIamConnectTimings>;
  tokenReused?: boolean | undefined;
  step?: "credentials" | "connect" | "tls" | "auth";
  /** Set, with the error event, when the connect failed. */
  error?: unknown;
}

/** Where a connect's time went, in milliseconds. */
export interface PgIamConnectTimings {
  credentialsMs: number;
  signMs: number;
  connectMs: number;
  tlsMs: number;
  authMs: number;
  totalMs: number;
}

/** A `pg-iam:token` message: one per token signed or reused (never the token). */
export interface PgIamTokenMessage {
  host: string;
  port: number;
  user: string;
  service: "rds" | "dsql";
  region: string;
  reused: boolean;
  signMs: number;
  credentialsMs: number;
  credentialsSource: string | undefined;
  credentialsExpiration: Date | undefined;
}

/** The steps as span events, in the order they run, with the timing each one reads. */
const STEPS = [
  ["credentials", "credentialsMs"],
  ["sign", "signMs"],
  ["connect", "connectMs"],
  ["tls", "tlsMs"],
  ["auth", "authMs"],
] as const;

// Seconds: connects take from a few milliseconds (a reused token, a warm network) to many seconds
// (a slow credentials provider, a throttled IAM check); the SDK's default buckets are for ms.
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

interface Started {
  span: Span;
  /** performance.now() at the channel's start. */
  t0: number;
}

/**
 * Turns pg-iam's `pg-iam:connect` and `pg-iam:token` channels into OpenTelemetry spans and metrics.
 * Returns a function that unsubscribes (a connect in flight then is not recorded: its span never ends).
 *
 * @example
 * ```ts
 * import { metrics, trace } from "@opentelemetry/api";
 * const stop = instrumentPgIam({
 *   tracer: trace.getTracer("pg-iam"),
 *   meter: metrics.getMeter("pg-iam"),
 * });
 * // ... on shutdown:
 * stop();
 * ```
 */
export function instrumentPgIam(options: { tracer: Tracer; meter: Meter }): () => void {
  const { tracer, meter } = options;
  const duration = meter.createHistogram("pgiam.connect.duration", {
    description: "Duration of pg-iam connects, from the start to the server's AuthenticationOk",
    unit: "s",
    advice: { explicitBucketBoundaries: BUCKETS },
  });
  const tokens = meter.createCounter("pgiam.tokens", {
    description: "IAM tokens handed to connections, signed or reused",
    unit: "{token}",
  });
  const failures = meter.createCounter("pgiam.connect.failures", {
    description: "pg-iam connects that failed, by the step that failed",
    unit: "{failure}",
  });
  const started = new WeakMap<object, Started>();

  const finish = (ctx: PgIamConnectContext) => {
    const s = started.get(ctx);
    if (!s) return; // started before we subscribed
    started.delete(ctx);
    const { span, t0 } = s;
    const seconds = (performance.now() - t0) / 1000;
    const failed = ctx.ok === false || ctx.error !== undefined;
    const attributes: Attributes = {};
    if (ctx.attempts !== undefined) attributes["pgiam.attempts"] = ctx.attempts;
    if (ctx.tokenReused !== undefined) attributes["pgiam.token.reused"] = ctx.tokenReused;
    let at = t0;
    for (const [name, key] of STEPS) {
      const ms = ctx.timings?.[key];
      if (typeof ms !== "number") continue;
      at += ms;
      // A number up to performance.now() is read as a performance timestamp by the SDK.
      span.addEvent(name, { "pgiam.step.duration_ms": ms }, Math.min(at, performance.now()));
    }
    const metric: Attributes = { "pgiam.driver": ctx.driver, "pgiam.ok": !failed };
    if (failed) {
      const type = errorType(ctx.error);
      attributes["error.type"] = type;
      if (ctx.step) attributes["pgiam.step"] = metric["pgiam.step"] = ctx.step;
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(ctx.error) });
      failures.add(1, ctx.step ? { "pgiam.step": ctx.step } : {});
    }
    span.setAttributes(attributes);
    span.end();
    duration.record(seconds, metric);
  };

  const connect = {
    start(message: unknown) {
      const ctx = message as PgIamConnectContext;
      const attributes: Attributes = {
        "db.system.name": "postgresql",
        "server.address": ctx.host,
        "server.port": ctx.port,
        // Semantic conventions have no user attribute since db.user was dropped (1.26); this is
        // the name it had, which backends still show.
        "db.user": ctx.user,
        "pgiam.driver": ctx.driver,
        "pgiam.service": ctx.service,
      };
      if (ctx.database !== undefined) attributes["db.namespace"] = ctx.database;
      if (ctx.region !== undefined) attributes["aws.region"] = ctx.region;
      const span = tracer.startSpan("pg-iam.connect", { kind: SpanKind.CLIENT, attributes });
      started.set(ctx, { span, t0: performance.now() });
    },
    // A connect that threw synchronously ends here: a TracingChannel publishes no asyncEnd then.
    end(message: unknown) {
      const ctx = message as PgIamConnectContext;
      if (ctx.error !== undefined) finish(ctx);
    },
    asyncStart() {},
    asyncEnd(message: unknown) {
      finish(message as PgIamConnectContext);
    },
    error() {}, // the error is read from the context at asyncEnd
  };
  const onToken = (message: unknown) => {
    const m = message as PgIamTokenMessage;
    tokens.add(1, { "pgiam.token.reused": m.reused, "pgiam.service": m.service });
  };

  const channel = dc.tracingChannel("pg-iam:connect");
  channel.subscribe(connect);
  dc.subscribe("pg-iam:token", onToken);
  return () => {
    channel.unsubscribe(connect);
    dc.unsubscribe("pg-iam:token", onToken);
  };
}

/** OTel's `error.type`: pg-iam's error code (`SERVER_ERROR`, `TIMEOUT`, …), else the class. */
function errorType(error: unknown): string {
  if (error && typeof error === "object") {
    const { code, name } = error as { code?: unknown; name?: unknown };
    if (typeof code === "string") return code;
    if (typeof name === "string") return name;
  }
  return "_OTHER";
}

// pg-iam's messages never hold a token or a secret (a rule its tests check).
function errorMessage(error: unknown): string | undefined {
  return error instanceof Error ? error.message : undefined;
}
