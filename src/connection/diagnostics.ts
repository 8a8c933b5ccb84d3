// The diagnostics channels (node:diagnostics_channel) pg-iam publishes to: `pg-iam:connect`, a
// TracingChannel around every physical connection start, and `pg-iam:token`, one message per token
// signed or reused. OpenTelemetry instrumentations and APMs subscribe to such channels, as they do
// to postgres.js's, undici's and Node's http ones.
//
// The module is taken from `process.getBuiltinModule` (Node >= 20.16, Deno, Bun, and workerd with
// nodejs_compat), not imported: sign.ts publishes here, and the connection layer's non-socket
// modules stay free of node: imports (tests/unit/purity.test.ts), so that nothing here can fail to
// load where the module is missing (workerd without nodejs_compat, browsers): there, every check
// below is false and nothing is published.
//
// Nothing is built while nobody subscribes: callers check `connectTraced()` or `tokenTraced()`
// before making a payload.

import type { ConnectStep } from "./errors.ts";

/** Timings of one connection start, in milliseconds. */
export interface ConnectTimings {
  /** Resolving AWS credentials (0 when cached). */
  credentialsMs: number;
  /** Signing the token. */
  signMs: number;
  /** DNS lookup and TCP connect. */
  connectMs: number;
  /** SSLRequest (none with sslnegotiation=direct) and TLS handshake (0 without TLS). */
  tlsMs: number;
  /** From sending the token to the server's answer: the server's IAM check. */
  authMs: number;
  /** From the start to AuthenticationOk, retries included. */
  totalMs: number;
}

/**
 * The name of the TracingChannel around every physical connection start (`start`, `end`,
 * `asyncStart`, `asyncEnd` and, on failure, `error`, all with one {@linkcode ConnectChannelContext}).
 *
 * @example
 * ```ts
 * import { tracingChannel } from "node:diagnostics_channel";
 * import { CONNECT_CHANNEL, type ConnectChannelContext } from "@pg-iam/pg-iam/postgres";
 *
 * tracingChannel<unknown, ConnectChannelContext>(CONNECT_CHANNEL).subscribe({
 *   start() {},
 *   end() {},
 *   asyncStart() {},
 *   asyncEnd: (c) => console.log(c.driver, c.host, c.ok, c.step, c.timings?.totalMs),
 *   error: (c) => console.log("connect failed at", c.step, c.error?.message),
 * });
 * ```
 */
export const CONNECT_CHANNEL = "pg-iam:connect";

/**
 * The name of the channel with one {@linkcode TokenChannelMessage} per token signed or reused.
 *
 * @example
 * ```ts
 * import { subscribe } from "node:diagnostics_channel";
 * import { TOKEN_CHANNEL, type TokenChannelMessage } from "@pg-iam/pg-iam/pg";
 *
 * subscribe(TOKEN_CHANNEL, (message) => {
 *   const m = message as TokenChannelMessage;
 *   console.log(m.host, m.user, m.reused ? "reused" : `signed in ${m.signMs} ms`);
 * });
 * ```
 */
export const TOKEN_CHANNEL = "pg-iam:token";

/** The driver whose connection a {@linkcode ConnectChannelContext} is about. */
export type ConnectDriver = "postgres" | "pg" | "bun" | "proxy";

/**
 * The context of one trace on {@linkcode CONNECT_CHANNEL}: who connects where at `start`, the
 * outcome filled in before `asyncEnd` (and before `error`, on failure). Never a token, signature or
 * credential.
 *
 * @example
 * ```ts
 * import type { ConnectChannelContext } from "@pg-iam/pg-iam/postgres";
 *
 * const describe = (c: ConnectChannelContext) =>
 *   `${c.driver} ${c.user}@${c.host}:${c.port} ${c.ok ? "ok" : `failed at ${c.step}`}`;
 * ```
 */
export interface ConnectChannelContext {
  /** The driver: `postgres` (postgres.js), `pg` (node-postgres), `bun` (Bun.SQL) or `proxy`. */
  driver: ConnectDriver;
  /** The host connected to (not necessarily the signed one). */
  host: string;
  /** The port connected to. */
  port: number;
  /** The database user. */
  user: string;
  /** The database, when known at the start (the one the driver asks for). */
  database: string | undefined;
  /** `rds` (RDS and Aurora) or `dsql`. */
  service: "rds" | "dsql";
  /** The signing region, once known (a profile's is read with the first token). */
  region: string | undefined;
  /** Whether the connection was established (set at the end). */
  ok?: boolean;
  /** 1, or 2 when the first token was rejected and the connection retried (set at the end). */
  attempts?: number;
  /**
   * Where the time went (set at the end). Bun.SQL times none of its own steps: there
   * `connectMs`, `tlsMs` and `authMs` are 0, and `totalMs` runs from Bun's password request to
   * Bun's report of the connection.
   */
  timings?: ConnectTimings;
  /** Whether the token was one signed earlier and handed out again; undefined without a token. */
  tokenReused?: boolean | undefined;
  /** The step a failure happened at (set at the end). */
  step?: ConnectStep;
  /** The failure, set before `error` is published. */
  error?: Error;
}

/**
 * One message on {@linkcode TOKEN_CHANNEL}: a token signed or handed out again. Never the token,
 * its signature or the credentials.
 *
 * @example
 * ```ts
 * import type { TokenChannelMessage } from "@pg-iam/pg-iam/pg";
 *
 * const expiresSoon = (m: TokenChannelMessage) =>
 *   m.credentialsExpiration !== undefined &&
 *   m.credentialsExpiration.getTime() - Date.now() < 10 * 60_000;
 * ```
 */
export interface TokenChannelMessage {
  /** The host name signed into the token. */
  host: string;
  /** The port signed into the token (DSQL signs none: the port connected to). */
  port: number;
  /** The database user. */
  user: string;
  /** `rds` or `dsql`. */
  service: "rds" | "dsql";
  /** The signing region. */
  region: string;
  /** Whether an earlier token was handed out again (`tokenReuse`); `signMs` is then 0. */
  reused: boolean;
  /** Time spent signing. */
  signMs: number;
  /** Time spent resolving credentials (near 0 when cached). */
  credentialsMs: number;
  /**
   * Where the credentials came from: `option` (the `credentials` option as an object),
   * `provider` (a provider function), `env` (`AWS_ACCESS_KEY_ID` and friends) or `chain` (the
   * standard AWS chain); followed, when the AWS SDK attributed the credentials (its `$source`),
   * by its feature names: `chain:CREDENTIALS_PROFILE,CREDENTIALS_STS_ASSUME_ROLE`.
   */
  credentialsSource: string | undefined;
  /** When the credentials expire, if they do. */
  credentialsExpiration: Date | undefined;
}

interface Channel {
  readonly hasSubscribers: boolean;
  publish(message: unknown): void;
  runStores?<T>(context: object, fn: () => T): T;
}

interface Tracing {
  start: Channel;
  end: Channel;
  asyncStart: Channel;
  asyncEnd: Channel;
  error: Channel;
}

interface DiagnosticsChannel {
  channel(name: string): Channel;
  tracingChannel(name: string): Tracing;
}

function load(): DiagnosticsChannel | undefined {
  try {
    const process = (globalThis as {
      process?: { getBuiltinModule?: (name: string) => unknown };
    }).process;
    const dc = process?.getBuiltinModule?.("node:diagnostics_channel") as
      | DiagnosticsChannel
      | undefined;
    return typeof dc?.tracingChannel === "function" ? dc : undefined;
  } catch {
    return undefined;
  }
}

const dc = load();
const connect: Tracing | undefined = dc?.tracingChannel(CONNECT_CHANNEL);
const token: Channel | undefined = dc?.channel(TOKEN_CHANNEL);
// workerd's hasSubscribers is a method (Node, Deno and Bun: a getter); Bun's TracingChannel has
// none of its own, hence each channel's.
const subscribed: (channel: Channel) => boolean =
  typeof (token?.hasSubscribers as unknown) === "function"
    ? (channel) => (channel.hasSubscribers as unknown as () => boolean).call(channel)
    : (channel) => channel.hasSubscribers;

/** Whether anyone listens on `pg-iam:connect` (false where the module is missing). */
export function connectTraced(): boolean {
  return connect !== undefined &&
    (subscribed(connect.start) || subscribed(connect.asyncEnd) || subscribed(connect.error) ||
      subscribed(connect.end) || subscribed(connect.asyncStart));
}

/** Whether anyone listens on `pg-iam:token` (false where the module is missing). */
export function tokenTraced(): boolean {
  return token !== undefined && subscribed(token);
}

/**
 * Publishes `start`, runs `fn` (the connection start, whose async work then carries the
 * subscribers' bound stores, as TracingChannel.tracePromise does), then publishes `end`. Only
 * after connectTraced().
 */
export function traceConnectStart<T>(context: ConnectChannelContext, fn: () => T): T {
  const channels = connect!;
  const run = () => {
    try {
      return fn();
    } finally {
      channels.end.publish(context);
    }
  };
  if (channels.start.runStores) return channels.start.runStores(context, run);
  channels.start.publish(context);
  return run();
}

/** The outcome of a traced connection start, as onIamConnect's event has it. */
export interface ConnectEnd {
  ok: boolean;
  attempts: number;
  timings: ConnectTimings;
  error?: Error;
  step?: ConnectStep;
}

/** Fills in the outcome, then publishes `error` (on failure), `asyncStart` and `asyncEnd`. */
export function traceConnectEnd(
  context: ConnectChannelContext,
  outcome: ConnectEnd,
  tokenReused: boolean | undefined,
): void {
  const channels = connect!;
  context.ok = outcome.ok;
  context.attempts = outcome.attempts;
  context.timings = { ...outcome.timings };
  context.tokenReused = tokenReused;
  if (outcome.step !== undefined && !outcome.ok) context.step = outcome.step;
  if (!outcome.ok) {
    context.error = outcome.error;
    channels.error.publish(context);
  }
  channels.asyncStart.publish(context);
  channels.asyncEnd.publish(context);
}

/** Publishes one message on `pg-iam:token`. Only after tokenTraced(). */
export function publishToken(message: TokenChannelMessage): void {
  token!.publish(message);
}
