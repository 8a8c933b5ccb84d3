// The socket pg-iam hands to postgres.js (its documented `socket` option). postgres.js believes it
// talks to the server directly; in fact this object performs the whole connection start itself:
// credentials, a token signed for this connection, TCP, TLS, the startup message postgres.js wrote,
// the cleartext-password exchange, and one retry on a new connection with force-refreshed
// credentials when the server rejects the token.
//
// Then it steps aside: at AuthenticationOk, postgres.js's listeners move onto the TCP/TLS socket
// itself and this object's methods forward to it (one branch), so every later byte goes between
// postgres.js and the socket as if pg-iam were not there (a relay cost ~10 % on small queries; see
// bench/README.md). A cancel request is handed over the same way, once TLS is up.
//
// Why not postgres.js's `password` function alone (measured on 3.4.9): a password function that
// rejects crashes Node and Deno with an unhandled rejection, one slower than `connect_timeout`
// crashes the process in `nextWrite`, and a rejected login fails the query with no retry. Here a
// failure becomes this socket's 'error' event, which postgres.js hands to the query that opened
// the connection; the pool slot is released ('close'), and nothing is left unhandled.
//
// Runtime-specific: node:net and node:tls on Node, Deno and Bun; on Cloudflare Workers,
// `cloudflare:sockets` behind a Node-style socket (socket-workerd.ts's StreamSocket), with
// nodejs_compat for node:buffer and node:events (postgres.js needs them there too). The plan a
// client's sockets follow is built in socket-plan.ts.

import { Buffer } from "node:buffer";
import { EventEmitter } from "node:events";
import net from "node:net";
import tls from "node:tls";

import {
  AUTH_CLEARTEXT,
  AUTH_OK,
  authCode,
  authMethodName,
  CANCEL_REQUEST,
  checkStartupParameters,
  errorFields,
  message as typedMessage,
  MessageReader,
  passwordMessage,
  PROTOCOL_3,
  readProtocolNegotiation,
  sslRequest,
  startupParameters,
  typeName,
} from "./pgwire.ts";
import { checkAlpn, directTlsError, tlsError, type TlsPlan, withRdsCa } from "./tls.ts";
import type { ServerError } from "./sign.ts";
import { backoffMs, sleep } from "./backoff.ts";
import { ConnectError, type ConnectStep } from "./errors.ts";
import { deadline } from "../core/deadline.ts";
import {
  type ConnectChannelContext,
  type ConnectDriver,
  type ConnectTimings,
  connectTraced,
  traceConnectEnd,
  traceConnectStart,
} from "./diagnostics.ts";

export type { ConnectTimings };

/** What the socket needs for one connection attempt. */
export interface SocketPlan {
  /** The host named in messages and errors. */
  host: string;
  /** The address to connect to (libpq hostaddr), else `host`. */
  address: string;
  port: number;
  tls: TlsPlan | undefined;
  /** Bounds each connection start; a function is read as each one begins (postgres.js reads its
   * `connect_timeout` per connection). */
  connectTimeoutMs: number | (() => number);
  /** Credentials (bounded in time) and a token; throws a clear error. */
  token(
    forceRefresh: boolean,
  ): Promise<{ token: string; credentialsMs: number; signMs: number; reused?: boolean }>;
  /** Told when the server rejected a token, so that it is never handed out again. */
  rejected?(token: string): void;
  /** Builds the error for a login the server rejected twice. */
  authError(serverError: ServerError): Error;
  onConnect(event: ConnectOutcome): void;
  /**
   * Who connects, for the `pg-iam:connect` channel (diagnostics.ts): the driver, and the signer's
   * user, service and region as each traced connection starts (read only when someone
   * subscribes). Without it (pg-iam doctor's plan) connections are not traced.
   */
  traced?: {
    driver: ConnectDriver;
    signer(): { user: string; service: "rds" | "dsql"; region: string | undefined };
  };
  /** Retry a rejected token once, with force-refreshed credentials. Default: true. */
  retry?: boolean;
  /** SQLSTATEs of a busy server, asked again with backoff within the connect timeout. */
  busy?: readonly string[];
  /** Refuse a server that lets the client in without asking for the token (libpq require_auth). */
  requirePassword?: boolean;
  /** Told as each network step completes, with its socket (pg-iam doctor describes them). */
  onStep?(step: "connect" | "tls", ms: number, socket: net.Socket): void;
  /** Checks the TLS connection before any token is sent; throws to refuse the server. */
  checkTls?(socket: tls.TLSSocket): void;
  /** How sockets open: node:net and node:tls, or cloudflare:sockets. Default: node. */
  backend?: SocketBackend;
  /**
   * The startup parameters the driver will send, read as each connection starts (its options may
   * have changed since): a NUL in any fails the connection start before anything is signed or
   * sent. In the StartupMessage this socket is given, a NUL has already split a parameter in two.
   */
  startupParams?(): Iterable<readonly [string, unknown]>;
}

/** Opens a connection and upgrades it to TLS; both sockets emit Node's events. */
export interface SocketBackend {
  /** A socket connecting to `host:port` (emits 'connect'); `tls`: TLS will follow. */
  connect(host: string, port: number, tls: boolean): net.Socket;
  /** The TLS socket over `socket` (emits 'secureConnect' once the handshake is done). */
  startTls(socket: net.Socket, plan: TlsPlan): net.Socket;
  /** A failed handshake, explained. */
  tlsError(error: Error & { code?: string }, plan: TlsPlan, host: string, port: number): Error;
}

/** node:net and node:tls (Node, Deno, Bun). */
export const NODE_BACKEND: SocketBackend = {
  connect: (host, port) => net.connect({ host, port }),
  startTls: (socket, plan) => tls.connect({ ...plan.options, socket }),
  tlsError,
};

export type { ConnectStep };

/** The outcome of one physical connection start. */
export interface ConnectOutcome {
  ok: boolean;
  attempts: number;
  timings: ConnectTimings;
  error?: Error;
  step?: ConnectStep;
  tokenSent: boolean;
}

export type { ServerError };

/** Reported by `onIamConnect` for every physical connection start, successful or not. */
export interface ConnectEvent {
  /** Whether the connection was established. */
  ok: boolean;
  /** The host and port connected to (not necessarily the signed ones). */
  host: string;
  /** The port connected to. */
  port: number;
  /** The database user. */
  user: string;
  /** 1, or 2 when the first token was rejected and the connection retried. */
  attempts: number;
  /** Where the time went. */
  timings: ConnectTimings;
  /**
   * Why it failed, when it did: a `ConnectError` (a server's refusal as `SERVER_ERROR`, with its
   * `sqlState`; the query gets the driver's own error for it), an `IamAuthError`, a
   * `CredentialsError`, or a `TypeError` or `RangeError` for a bad option.
   */
  error?: Error;
  /**
   * The step it failed at: `credentials` (credentials or signing), `connect` (DNS and TCP), `tls`
   * (the SSLRequest and the handshake) or `auth` (the login).
   */
  step?: ConnectStep;
  /** Whether a token reached the server (a failure before that is not the token's). */
  tokenSent: boolean;
}
const NO_TIMINGS: ConnectTimings = {
  credentialsMs: 0,
  signMs: 0,
  connectMs: 0,
  tlsMs: 0,
  authMs: 0,
  totalMs: 0,
};

/** A server at its connection limit (53300), or over DSQL's new-connection rate (53400). */
const BUSY: readonly string[] = ["53300", "53400"];

/**
 * Milliseconds of a driver's connect timeout `seconds`, read when each connection starts, as
 * postgres.js reads its `connect_timeout` (a number, or an object it multiplies, hence its
 * `valueOf()`, per connection; a function is called). 0, null or not a number: `fallback` seconds.
 */
export function connectTimeoutReader(seconds: unknown, fallback = 30): () => number {
  return () => (Number(typeof seconds === "function" ? seconds() : seconds) || fallback) * 1000;
}

type Callback = (error?: Error | null) => void;
const EMPTY: Buffer = Buffer.alloc(0);
type Listener = (...args: unknown[]) => void;

/**
 * A socket-like object for postgres.js; see the file comment. After the hand-over every method
 * forwards to the TCP/TLS socket (one branch, no per-connection closures), and postgres.js's
 * listeners sit on that socket itself.
 */
export class IamSocket extends EventEmitter {
  host: string;
  port: number;
  #plan: SocketPlan;
  #upstream: net.Socket | undefined;
  #to: net.Socket | undefined; // the socket handed over to
  #pending: Buffer[] = [];
  #first: Buffer = EMPTY;
  #started = false;
  #cancelling = false;
  #closed = false;
  #closeEmitted = false;
  #step: ConnectStep = "credentials";
  // What the driver asked of its socket before the hand-over, applied to the TCP socket.
  #noDelay: boolean | undefined;
  #keepAlive: [boolean, number | undefined] | undefined;
  #unref = false;

  constructor(plan: SocketPlan) {
    super();
    this.#plan = plan;
    this.host = plan.host;
    this.port = plan.port;
  }

  /** postgres.js 4: TLS is this socket's business (it skips its own SSLRequest). */
  get negotiated(): boolean {
    return this.#plan.tls !== undefined;
  }

  /** postgres.js sends Terminate only when this says "open". */
  get readyState(): string {
    return this.#to?.readyState ?? (this.#closed ? "closed" : "opening");
  }

  /** Before the hand-over: the StartupMessage (or CancelRequest), and anything after it. */
  write(chunk: Uint8Array, callback?: Callback | string, cb?: Callback): boolean {
    if (this.#to) return this.#to.write(chunk, callback as never, cb);
    const done = typeof callback === "function" ? callback : cb;
    if (this.#closed) {
      if (done) {
        const error = new Error("pg-iam: write after the socket closed");
        queueMicrotask(() => done(Object.assign(error, { code: "ERR_STREAM_DESTROYED" })));
      }
      return false;
    }
    if (this.#started) this.#pending.push(Buffer.from(chunk));
    else {
      // The first message: StartupMessage, or CancelRequest on a connection of its own.
      this.#first = Buffer.concat([this.#first, chunk]);
      if (this.#first.length >= 8 && this.#first.length >= this.#first.readUInt32BE(0)) {
        this.#started = true;
        const message = this.#first.subarray(0, this.#first.readUInt32BE(0));
        const rest = this.#first.subarray(message.length);
        if (rest.length) this.#pending.push(rest);
        // Held only until the login is done (a slice would keep Buffer's shared 8 KB pool alive).
        this.#first = EMPTY;
        const code = message.readUInt32BE(4);
        if (code === CANCEL_REQUEST) this.#cancel(message), this.#cancelling = true;
        else if (code === PROTOCOL_3) this.#traced(message);
        else {
          this.destroy(
            new ConnectError(`pg-iam: unexpected first message from the driver (${code})`, {
              code: "PROTOCOL_VIOLATION",
              step: this.#step,
              host: this.host,
              port: this.port,
            }),
          );
        }
      }
    }
    if (done) queueMicrotask(() => done());
    return true;
  }

  end(data?: Uint8Array): this {
    if (this.#to) return (data ? this.#to.end(data) : this.#to.end()), this;
    if (data) this.write(data);
    // postgres.js 4 hands its CancelRequest to end(): sent once its connection is open, which
    // then ends with it (#cancel). Destroyed now, it was never sent.
    if (this.#cancelling) return this;
    return this.destroy();
  }

  /** Before the hand-over: abandons the connection start; 'error' (if any), then 'close'. */
  destroy(error?: Error): this {
    if (this.#to) return this.#to.destroy(error), this;
    if (this.#closed) return this;
    this.#closed = true;
    this.#upstream?.destroy();
    this.#upstream = undefined;
    queueMicrotask(() => {
      if (error) this.emit("error", error);
      this.#closeEmitted = true;
      this.emit("close", error !== undefined);
    });
    return this;
  }

  pause(): this {
    return this.#to?.pause(), this;
  }

  resume(): this {
    return this.#to?.resume(), this;
  }

  /** node-postgres corks around each query's messages, to send them in one write. */
  cork(): void {
    this.#to?.cork();
  }

  uncork(): void {
    this.#to?.uncork();
  }

  /** Kept until the TCP socket exists (postgres.js and node-postgres ask before it does). */
  setKeepAlive(enable = false, delay?: number): this {
    if (this.#to) return this.#to.setKeepAlive(enable, delay), this;
    this.#keepAlive = [enable, delay];
    return this;
  }

  /** Kept until the TCP socket exists (node-postgres asks for it; postgres.js does not). */
  setNoDelay(noDelay = true): this {
    if (this.#to) return this.#to.setNoDelay(noDelay), this;
    this.#noDelay = noDelay;
    return this;
  }

  ref(): this {
    if (this.#to) return this.#to.ref(), this;
    this.#unref = false;
    return this;
  }

  unref(): this {
    if (this.#to) return this.#to.unref(), this;
    this.#unref = true;
    return this;
  }

  /**
   * node-postgres connects its stream itself: the connection starts when it writes. On a socket
   * destroyed before any login began, whose 'close' has gone out, this starts afresh, as
   * net.Socket's connect() does (else the caller would wait for a 'connect' or 'close' that never
   * comes); after a login began, it fails.
   */
  connect(_port?: number, _host?: string): this {
    if (this.#closeEmitted && !this.#to) {
      if (!this.#started) {
        this.#closed = false;
        this.#closeEmitted = false;
      } else {
        const error = new Error("pg-iam: connect() on a socket whose connection was destroyed");
        queueMicrotask(() => {
          this.emit("error", Object.assign(error, { code: "ERR_SOCKET_CLOSED" }));
          this.emit("close", true);
        });
        return this;
      }
    }
    queueMicrotask(() => this.#closed || this.emit("connect"));
    return this;
  }

  // What node:net and node:tls sockets tell (drivers, their tests and users read them): the
  // connection's own, once it exists.

  get destroyed(): boolean {
    return this.#to ? this.#to.destroyed : this.#closed;
  }

  get remoteAddress(): string | undefined {
    return (this.#to ?? this.#upstream)?.remoteAddress;
  }

  get remotePort(): number | undefined {
    return (this.#to ?? this.#upstream)?.remotePort;
  }

  get remoteFamily(): string | undefined {
    return (this.#to ?? this.#upstream)?.remoteFamily;
  }

  get localAddress(): string | undefined {
    return (this.#to ?? this.#upstream)?.localAddress;
  }

  get localPort(): number | undefined {
    return (this.#to ?? this.#upstream)?.localPort;
  }

  get bytesRead(): number {
    return (this.#to ?? this.#upstream)?.bytesRead ?? 0;
  }

  get bytesWritten(): number {
    return (this.#to ?? this.#upstream)?.bytesWritten ?? 0;
  }

  /** True over TLS (a TLSSocket's), undefined otherwise (as on a net.Socket). */
  get encrypted(): boolean | undefined {
    return (this.#to as tls.TLSSocket | undefined)?.encrypted;
  }

  get authorized(): boolean | undefined {
    return (this.#to as tls.TLSSocket | undefined)?.authorized;
  }

  get authorizationError(): Error | undefined {
    return (this.#to as tls.TLSSocket | undefined)?.authorizationError;
  }

  get alpnProtocol(): string | false | null | undefined {
    return (this.#to as tls.TLSSocket | undefined)?.alpnProtocol;
  }

  address(): net.AddressInfo | Record<string, never> {
    return (this.#to ?? this.#upstream)?.address() as net.AddressInfo ?? {};
  }

  getPeerCertificate(detailed?: boolean): tls.PeerCertificate | Record<string, never> | null {
    const socket = this.#to as tls.TLSSocket | undefined;
    return socket?.getPeerCertificate ? socket.getPeerCertificate(detailed as true) : null;
  }

  getCipher(): tls.CipherNameAndProtocol | undefined {
    return (this.#to as tls.TLSSocket | undefined)?.getCipher?.();
  }

  getProtocol(): string | null {
    return (this.#to as tls.TLSSocket | undefined)?.getProtocol?.() ?? null;
  }

  /** node-postgres writes only while this says so. */
  get writable(): boolean {
    return this.#to ? this.#to.writable : !this.#closed;
  }

  override on(event: string | symbol, fn: Listener): this {
    return this.#to ? (this.#to.on(event, fn), this) : super.on(event, fn);
  }

  override addListener(event: string | symbol, fn: Listener): this {
    return this.#to ? (this.#to.addListener(event, fn), this) : super.addListener(event, fn);
  }

  override once(event: string | symbol, fn: Listener): this {
    return this.#to ? (this.#to.once(event, fn), this) : super.once(event, fn);
  }

  override prependListener(event: string | symbol, fn: Listener): this {
    return this.#to
      ? (this.#to.prependListener(event, fn), this)
      : super.prependListener(event, fn);
  }

  override off(event: string | symbol, fn: Listener): this {
    return this.#to ? (this.#to.off(event, fn), this) : super.off(event, fn);
  }

  override removeListener(event: string | symbol, fn: Listener): this {
    return this.#to ? (this.#to.removeListener(event, fn), this) : super.removeListener(event, fn);
  }

  override removeAllListeners(event?: string | symbol): this {
    if (!this.#to) return super.removeAllListeners(event);
    if (event === undefined) this.#to.removeAllListeners();
    else this.#to.removeAllListeners(event);
    return this;
  }

  override listeners(event: string | symbol): Listener[] {
    return (this.#to ? this.#to.listeners(event) : super.listeners(event)) as Listener[];
  }

  override emit(event: string | symbol, ...args: unknown[]): boolean {
    return this.#to ? this.#to.emit(event, ...args) : super.emit(event, ...args);
  }

  async #cancel(message: Buffer): Promise<void> {
    try {
      const socket = await this.#open();
      if (this.#closed) return void socket.destroy();
      this.#handOver(socket, undefined);
      socket.end(message);
    } catch (error) {
      const refused = error instanceof Refusal;
      if (refused) error.socket.destroy();
      this.destroy(
        refused
          ? serverError(error.fields, this.#step, this.host, this.port)
          : asConnectError(error as Error, this.#step, this.host, this.port),
      );
    }
  }

  /** Starts the login, inside a `pg-iam:connect` trace when someone subscribes. */
  #traced(startup: Buffer): void {
    const traced = this.#plan.traced;
    if (!traced || !connectTraced()) return void this.#start(startup);
    const signer = traced.signer();
    const trace: ConnectChannelContext = {
      driver: traced.driver,
      host: this.#plan.host,
      port: this.#plan.port,
      user: signer.user,
      database: startupParameters(startup)?.get("database") ?? undefined,
      service: signer.service,
      region: signer.region,
    };
    const t0 = performance.now();
    traceConnectStart(trace, () =>
      this.#start(startup, trace).then(() => {
        // The driver destroyed the socket mid-start (its own timeout, the pool closing): no
        // outcome reached onIamConnect, but a trace must end.
        if (trace.ok !== undefined) return;
        const error = new ConnectError(
          "pg-iam: the driver closed the connection during its start",
          {
            code: "CONNECTION_CLOSED",
            step: this.#step,
            host: this.host,
            port: this.port,
          },
        );
        const timings = { ...NO_TIMINGS, totalMs: performance.now() - t0 };
        traceConnectEnd(
          trace,
          { ok: false, attempts: 1, timings, error, step: this.#step },
          undefined,
        );
      }));
  }

  async #start(startup: Buffer, trace?: ConnectChannelContext): Promise<void> {
    const plan = this.#plan;
    // Told of each outcome: the hook, and the trace (its region known once a token was signed).
    let tokenReused: boolean | undefined;
    const report = (outcome: ConnectOutcome) => {
      plan.onConnect(outcome);
      if (trace) {
        trace.region ??= plan.traced!.signer().region;
        traceConnectEnd(trace, outcome, tokenReused);
      }
    };
    const t0 = performance.now();
    const timeoutMs = typeof plan.connectTimeoutMs === "function"
      ? plan.connectTimeoutMs()
      : plan.connectTimeoutMs;
    const timings: ConnectTimings = {
      credentialsMs: 0,
      signMs: 0,
      connectMs: 0,
      tlsMs: 0,
      authMs: 0,
      totalMs: 0,
    };
    let attempts = 0;
    // The parameter names the driver's StartupMessage carries: the only protocol options a
    // NegotiateProtocolVersion may say the server did not recognize.
    const requested = new Set(startupParameters(startup)?.keys());
    const limit = deadline(timeoutMs, () =>
      new ConnectError(
        `pg-iam: connecting to ${plan.host}:${plan.port} timed out after ${timeoutMs / 1000}s ` +
          `(while ${
            {
              credentials: "resolving credentials and signing the token",
              connect: `connecting to ${plan.host}:${plan.port}`,
              tls: "negotiating TLS",
              auth: "authenticating (the server's IAM check)",
            }[this.#step]
          })`,
        { code: "CONNECT_TIMEOUT", step: this.#step, host: plan.host, port: plan.port },
      ));
    const within = limit.race;
    let tokenSent = false;
    // A server at its connection limit (53300) or over its new-connection rate (DSQL's 53400) is
    // asked again after a jittered wait, until connect_timeout: a fleet starting at once spreads
    // out instead of failing.
    let waits = 0;
    const busyCodes = plan.busy ?? BUSY;
    const busy = (code: unknown) => busyCodes.includes(code as string) && plan.retry !== false;
    // The wait before asking again, or undefined when it would end past the deadline (the
    // driver's own timeout fires there too).
    const nextWait = () => {
      const ms = backoffMs(waits + 1, 50, 2000);
      return performance.now() + ms + 500 > t0 + timeoutMs ? undefined : (waits++, ms);
    };
    // The server's refusal goes to the driver as the server sent it (it raises its own error
    // class, as without pg-iam), said to be the last of several when pg-iam asked again.
    const refuse = (socket: net.Socket, fields: ServerError, raw: Buffer) => {
      limit.clear();
      timings.totalMs = performance.now() - t0;
      const asked = busy(fields.C)
        ? ` (asked ${waits + 1} times, with backoff, within the connect timeout)`
        : "";
      const shown = asked ? { ...fields, M: `${fields.M ?? ""}${asked}` } : fields;
      const error = serverError(shown, this.#step, plan.host, plan.port);
      report({ ok: false, attempts, timings, error, step: this.#step, tokenSent });
      if (this.#closed) return void socket.destroy();
      this.#handOver(socket, asked ? errorMessageOf(shown) : raw, false);
    };
    try {
      if (plan.startupParams) checkStartupParameters(plan.startupParams());
      for (attempts = 1;; attempts++) {
        this.#step = "credentials";
        const signed = await within(plan.token(attempts > 1));
        tokenReused = signed.reused;
        timings.credentialsMs += signed.credentialsMs;
        timings.signMs += signed.signMs;
        if (this.#closed) return;

        let socket: net.Socket;
        try {
          socket = await within(this.#open(timings));
        } catch (error) {
          if (!(error instanceof Refusal)) throw error;
          const ms = busy(error.fields.C) ? nextWait() : undefined;
          if (ms === undefined) return refuse(error.socket, error.fields, error.raw);
          error.socket.destroy();
          await within(sleep(ms));
          attempts--; // the same attempt, again
          continue;
        }
        if (this.#closed) {
          socket.destroy();
          return;
        }

        this.#step = "auth";
        socket.write(startup);
        const answer = await within(
          authenticate(socket, signed.token, timings, requested, plan.host, plan.port),
        );
        tokenSent ||= answer.tokenSent;
        if (this.#closed) return;
        if (answer.ok && !answer.tokenSent && plan.requirePassword) {
          socket.destroy();
          throw new ConnectError(
            `pg-iam: ${plan.host}:${plan.port} let the client in without asking for a ` +
              `password, and require_auth does not allow "none" (as libpq: authentication ` +
              `method requirement failed: server did not complete authentication)`,
            { code: "AUTH_METHOD", step: "auth", host: plan.host, port: plan.port },
          );
        }
        if (answer.ok) {
          timings.totalMs = performance.now() - t0;
          limit.clear();
          this.#handOver(socket, answer.rest);
          report({ ok: true, attempts, timings, tokenSent });
          return;
        }
        const code = answer.error.C;
        const rejected = answer.tokenSent && (code === "28P01" || code === "28000");
        const ms = busy(code) ? nextWait() : undefined;
        if (!rejected && ms === undefined) return refuse(socket, answer.error, answer.raw);
        socket.destroy();
        this.#upstream = undefined;
        if (ms !== undefined) {
          await within(sleep(ms));
          attempts--;
          continue;
        }
        plan.rejected?.(signed.token);
        if (attempts === 1 && plan.retry !== false) continue;
        throw plan.authError(answer.error);
      }
    } catch (error) {
      limit.clear();
      timings.totalMs = performance.now() - t0;
      const failure = asConnectError(error as Error, this.#step, plan.host, plan.port);
      report({ ok: false, attempts, timings, error: failure, step: this.#step, tokenSent });
      this.destroy(failure);
    }
  }

  /** TCP connect, then (SSLRequest and) the TLS handshake when TLS is on. */
  async #open(timings?: ConnectTimings): Promise<net.Socket> {
    const plan = this.#plan;
    let t = performance.now();
    this.#step = "connect";
    // The RDS CA bundle, imported the first time while TCP connects (not with pg-iam).
    const ca = plan.tls && withRdsCa(plan.tls);
    ca?.catch(noop);
    const backend = plan.backend ?? NODE_BACKEND;
    const socket = backend.connect(plan.address, plan.port, plan.tls !== undefined);
    // Destroying this object must also destroy a socket that is still connecting. Errors are
    // handled by whoever waits on the socket; this listener only keeps an error that arrives
    // between two waits from becoming an uncaught exception.
    this.#upstream = socket;
    socket.on("error", noop);
    await once(socket, "connect", "connect", plan.host, plan.port);
    // No setNoDelay(): the socket is postgres.js's after login, and stays as postgres.js makes
    // its own (Nagle on). Measured both ways in bench/steady.ts: no difference on Node.
    if (this.#keepAlive) socket.setKeepAlive(...this.#keepAlive);
    if (this.#noDelay !== undefined) socket.setNoDelay(this.#noDelay);
    if (this.#unref) socket.unref();
    if (timings) timings.connectMs += performance.now() - t;
    plan.onStep?.("connect", performance.now() - t, socket);
    if (!plan.tls) return socket;

    t = performance.now();
    this.#step = "tls";
    // sslnegotiation=direct: the ClientHello is the first byte sent, no SSLRequest round trip.
    if (!plan.tls.direct) await sslRequested(socket, plan.host, plan.port);
    await ca;
    const secure = backend.startTls(socket, plan.tls);
    this.#upstream = secure;
    secure.on("error", noop);
    try {
      await once(secure, "secureConnect", "tls", plan.host, plan.port);
    } catch (error) {
      socket.destroy();
      const explain = plan.tls.direct ? directTlsError : backend.tlsError;
      throw explain(error as Error & { code?: string }, plan.tls, plan.host, plan.port);
    }
    try {
      if (plan.tls.direct) checkAlpn((secure as tls.TLSSocket).alpnProtocol, plan.host, plan.port);
      plan.checkTls?.(secure as tls.TLSSocket);
    } catch (error) {
      secure.destroy();
      throw error;
    }
    if (timings) timings.tlsMs += performance.now() - t;
    plan.onStep?.("tls", performance.now() - t, secure);
    return secure;
  }

  /**
   * Steps aside: postgres.js's listeners move to `socket`, and from now on every method forwards
   * to it. `rest`: what the server sent from AuthenticationOk on, delivered first; or the server's
   * ErrorResponse that refused the login (`loggedIn` false), which the driver reads as it would
   * without pg-iam, and what the driver wrote meanwhile is dropped, not sent.
   */
  #handOver(socket: net.Socket, rest: Buffer | undefined, loggedIn = true): void {
    this.#upstream = undefined;
    const listeners = this.eventNames().map((event) => [event, super.rawListeners(event)] as const);
    super.removeAllListeners();
    this.#to = socket;
    for (const [event, fns] of listeners) {
      for (const fn of fns) socket.on(event, fn as Listener);
    }
    const pending = this.#pending.splice(0);
    if (loggedIn) { for (const chunk of pending) socket.write(chunk); }
    // A refusing server may have reset the connection already: its 'close' went to no listener.
    const gone = socket.destroyed;
    if (rest?.length) socket.emit("data", rest);
    if (gone) queueMicrotask(() => socket.emit("close", false));
    else socket.resume(); // paused by authenticate(), so nothing was emitted to no listener
  }
}

/** The startup exchange after the StartupMessage: sends the token when asked for a password. */
function authenticate(
  socket: net.Socket,
  token: string,
  timings: ConnectTimings,
  requested: ReadonlySet<string>,
  host: string,
  port: number,
): Promise<
  | { ok: true; rest: Buffer; tokenSent: boolean }
  | { ok: false; error: ServerError; raw: Buffer; tokenSent: boolean }
> {
  return new Promise((resolve, reject) => {
    const reader = new MessageReader();
    // The server's IAM check: from the token sent to the server's answer.
    let sentAt: number | undefined;
    let negotiated = false;
    const answered = () => {
      if (sentAt !== undefined) timings.authMs += performance.now() - sentAt;
    };
    const cleanup = () => {
      socket.off("data", onData).off("error", onError).off("close", onClose);
    };
    const onError = (error: Error) => (cleanup(), reject(error));
    const onClose = () => {
      cleanup();
      reject(
        new ConnectError("pg-iam: the server closed the connection during authentication", {
          code: "CONNECTION_CLOSED",
          step: "auth",
          host,
          port,
        }),
      );
    };
    const protocolError = (what: string, note?: string) =>
      new ConnectError(
        `pg-iam: the server sent ${what} during authentication${note ? ` (${note})` : ""}`,
        { code: "PROTOCOL_VIOLATION", step: "auth", host, port },
      );
    const onData = (chunk: Buffer) => {
      reader.push(chunk);
      for (let head = reader.header(); head; head = reader.header()) {
        const { type, length } = head;
        // A malformed reply (a length below 4 or past any login message's, an R without its
        // code) must fail the connect, not throw out of this listener and crash the process.
        if (length < 4 || length >= MAX_LOGIN_MESSAGE || (type === 0x52 && length < 8)) {
          cleanup();
          return reject(protocolError(`a malformed ${typeName(type)} message (length ${length})`));
        }
        const message = reader.message(MAX_LOGIN_MESSAGE);
        if (!message) return;
        const body = message.body;
        if (type === 0x52 /* R */) {
          const method = authCode(body);
          if (method === AUTH_OK) {
            socket.pause();
            cleanup();
            answered();
            // From AuthenticationOk on, what came with it goes to the driver, which reads it.
            // (Trust authentication asks for no password: no token is sent.)
            const rest = Buffer.concat([message.raw, reader.rest()]);
            return resolve({ ok: true, rest, tokenSent: sentAt !== undefined });
          }
          if (method !== AUTH_CLEARTEXT) {
            cleanup();
            return reject(methodError(method, host, port));
          }
          socket.write(passwordMessage(token));
          sentAt = performance.now();
        } else if (type === 0x45 /* E */) {
          // Drivers loop forever on a field without its NUL (postgres.js 4.2): refused here.
          if (!wellFormed(body)) {
            cleanup();
            return reject(protocolError(`a malformed 'E' message (a field without its end)`));
          }
          // Held as it is (paused, as at AuthenticationOk) for the driver to read, unless retried.
          socket.pause();
          cleanup();
          answered();
          return resolve({
            ok: false,
            error: Object.fromEntries(errorFields(body)),
            raw: Buffer.concat([message.raw, reader.rest()]),
            tokenSent: sentAt !== undefined,
          });
        } else if (type === 0x76 /* v */) {
          // NegotiateProtocolVersion, once, before the server asks for the password: the protocol
          // version it supports and the `_pq_.` options of the StartupMessage it did not
          // recognize. The server goes on without them, as plain postgres.js 4 does; libpq 18
          // refuses the same malformed ones (they are its words).
          const read = negotiated || sentAt !== undefined
            ? { ok: false as const, reason: "received duplicate or late message" }
            : readProtocolNegotiation(body, requested);
          if (!read.ok) {
            cleanup();
            return reject(
              protocolError(`an invalid NegotiateProtocolVersion ('v') message (${read.reason})`),
            );
          }
          negotiated = true;
        } else if (type !== 0x4e /* N: notices before auth are dropped */) {
          cleanup();
          return reject(
            protocolError(
              `an unexpected ${typeName(type)} message`,
              `received invalid response: ${type.toString(16)}`,
            ),
          );
        }
      }
    };
    socket.on("data", onData).on("error", onError).on("close", onClose);
  });
}

// Longer than any message a server sends before AuthenticationOk (an ErrorResponse is well below).
const MAX_LOGIN_MESSAGE = 1 << 20;

/** Sends the SSLRequest and reads its answer: `S`, or an error naming what the server said. */
async function sslRequested(socket: net.Socket, host: string, port: number): Promise<void> {
  socket.write(sslRequest());
  const reply = await once(socket, "data", "tls", host, port) as Buffer;
  // More than the one byte would be injected plaintext (CVE-2021-23214 class): refuse it.
  if (reply.length === 1 && reply[0] === 0x53) return;
  // A server that cannot take the connection (too many clients, …) may answer with an error.
  const refusal = reply[0] === 0x45 ? await errorMessage(socket, reply, host, port) : undefined;
  if (refusal) throw new Refusal(socket, refusal.fields, refusal.raw);
  socket.destroy();
  throw new ConnectError(
    reply[0] === 0x4e
      ? `pg-iam: ${host}:${port} refused TLS (it answered the SSLRequest with ` +
        `"N"); IAM tokens are sent only over TLS unless you opt out with ` +
        `dangerouslyDisableTls: true`
      : `pg-iam: ${host}:${port} sent an invalid answer to the SSLRequest ` +
        `(not a PostgreSQL server, or something in between)`,
    { code: reply[0] === 0x4e ? "TLS_REFUSED" : "PROTOCOL_VIOLATION", step: "tls", host, port },
  );
}

/** A server's ErrorResponse, with the socket it came on (paused): the driver reads it. */
class Refusal extends Error {
  constructor(readonly socket: net.Socket, readonly fields: ServerError, readonly raw: Buffer) {
    super(fields.M ?? "server error");
  }
}

/**
 * The fields of the ErrorResponse starting in `first` (the rest read from `socket`, bounded);
 * undefined when its length is below 4 or longer than any login message. Rejects as the socket
 * does.
 */
async function errorMessage(
  socket: net.Socket,
  first: Buffer,
  host: string,
  port: number,
): Promise<{ fields: ServerError; raw: Buffer } | undefined> {
  const reader = new MessageReader();
  reader.push(first);
  for (;;) {
    const head = reader.header();
    if (head && (head.length < 4 || head.length > MAX_LOGIN_MESSAGE)) return undefined;
    const message = head && reader.message(MAX_LOGIN_MESSAGE);
    if (message) {
      if (!wellFormed(message.body)) return undefined;
      socket.pause();
      const raw = Buffer.concat([message.raw, reader.rest()]);
      return { fields: Object.fromEntries(errorFields(message.body)), raw };
    }
    // A reset or a close mid-message is that (ECONNRESET, CONNECTION_CLOSED), not garbage.
    reader.push(await once(socket, "data", "tls", host, port) as Buffer);
  }
}

function methodError(method: number, host: string, port: number): Error {
  return new ConnectError(
    `pg-iam: the server asked for ${authMethodName(method)}, not the ` +
      `cleartext password IAM authentication uses: this database user is not set up for IAM ` +
      `(on RDS and Aurora: GRANT rds_iam TO the user)`,
    { code: "AUTH_METHOD", step: "auth", host, port },
  );
}

/**
 * A server's ErrorResponse during the login, for `onIamConnect` (and a cancel request's connection):
 * the query gets the driver's own error, read by the driver from the server's bytes.
 */
function serverError(fields: ServerError, step: ConnectStep, host: string, port: number): Error {
  // An ErrorResponse must carry a SQLSTATE: internal_error if not.
  return new ConnectError(fields.M ?? "server error", {
    code: "SERVER_ERROR",
    step,
    host,
    port,
    server: { ...fields, C: fields.C ?? "XX000" },
  });
}

/** An ErrorResponse body made of fields (a type byte, text, NUL), then a NUL. */
function wellFormed(body: Uint8Array): boolean {
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const end = body.indexOf(0, i + 1);
    if (end < 0) return false;
    i = end + 1;
  }
  return i === body.length - 1;
}

/** The ErrorResponse of `fields`, every field in the order the server sent them. */
function errorMessageOf(fields: ServerError): Buffer {
  let text = "";
  for (const [tag, value] of Object.entries(fields)) text += `${tag}${value}\0`;
  return Buffer.from(typedMessage("E", new TextEncoder().encode(text + "\0")));
}

function noop(): void {}

/**
 * `error` as a failed connection start reports it: a socket's own error (ECONNREFUSED, …) as a
 * ConnectError with its code; pg-iam's other errors (IamAuthError, CredentialsError) as they are;
 * any other error given a code when it has none: a bad option or a missing region (TypeError,
 * RangeError) is no network failure, and postgres.js 4's pool must not retry it as it retries a
 * code-less CONNECTION_CLOSED.
 */
function asConnectError(error: Error, step: ConnectStep, host: string, port: number): Error {
  const typed = ConnectError.from(error, step, host, port) as Error;
  if (typed !== error) return typed;
  const e = error as Error & { code?: unknown };
  if (e.code !== undefined || !Object.isExtensible(e)) return e;
  e.code = e instanceof TypeError || e instanceof RangeError
    ? "INVALID_CONFIGURATION"
    : "CONNECT_FAILED";
  return e;
}

/** Resolves on the first `event`, rejects on 'error' or an early 'close'. */
function once(
  emitter: net.Socket,
  event: string,
  step: ConnectStep,
  host: string,
  port: number,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const done = (fn: () => void) => {
      emitter.off(event, onEvent).off("error", onError).off("close", onClose);
      fn();
    };
    const onEvent = (value: unknown) => done(() => resolve(value));
    const onError = (error: Error) => done(() => reject(error));
    const onClose = () =>
      done(() =>
        reject(
          new ConnectError(`pg-iam: the connection closed while waiting for "${event}"`, {
            code: "CONNECTION_CLOSED",
            step,
            host,
            port,
          }),
        )
      );
    emitter.on(event, onEvent).on("error", onError).on("close", onClose);
  });
}
