// The proxy: a listener (src/listener: accept, limits, TLS, up to the StartupMessage) whose clients
// each get their own upstream connection through the connection layer's IamSocket, which signs,
// connects, negotiates TLS and logs in as it does for a driver; then bytes flow both ways.

import type net from "node:net";
import { intakePlan, intakeSigning } from "../connection/adapter.ts";
import { ConnectError } from "../connection/errors.ts";
import { errorResponse, negotiateProtocolVersion, startupMessage } from "../connection/pgwire.ts";
import { IamAuthError, safely } from "../connection/sign.ts";
import { IamSocket, type SocketPlan } from "../connection/socket.ts";
import type { ConnectEvent, ConnectStep } from "../connection/socket.ts";
import type { TokenEvent } from "../connection/options.ts";
import { Listener } from "../listener/server.ts";
import { type Client, closeWith, fail, relay, send, TOO_MANY } from "../listener/client.ts";
import type { ProxyConfig } from "./_options.ts";
import type { Proxy, ProxyLogin, ProxyStats } from "./types.ts";
import { clientAddress } from "../listener/startup.ts";
import { scramLogin, type ScramVerifier } from "../listener/scram.ts";
import { type ProxyMetrics, proxyMetrics } from "./_metrics.ts";
import { type HttpServer, startHttp } from "./_http.ts";

// Who a login is: the client's address ("local" on a Unix socket), the user and database upstream.
type Who = Pick<ProxyLogin, "client" | "user" | "database">;

// The plans kept, one per user name a client asked for (each holds its young token): a client
// naming ever new users must not grow the proxy's memory.
const MAX_PLANS = 64;

export class ProxyServer implements Proxy {
  readonly stats: ProxyStats = {
    logins: { ok: 0, refused: 0, failed: 0 },
    tokens: { signed: 0, reused: 0 },
    failures: { credentials: 0, connect: 0, tls: 0, auth: 0 },
    refused: { "53300": 0, "53400": 0 },
    cancels: 0,
    bytes: { toServer: 0, toClient: 0 },
  };
  readonly config: ProxyConfig;
  readonly listener: Listener;
  readonly #plans = new Map<string, SocketPlan>();
  readonly #upstreams = new Set<net.Socket>();
  readonly #onConnect: ((event: ConnectEvent) => void) | undefined;
  readonly #onToken: ((event: TokenEvent) => void) | undefined;

  readonly #verifier: ScramVerifier | undefined;
  readonly #metrics: ProxyMetrics = proxyMetrics();
  #http: HttpServer | undefined;

  constructor(config: ProxyConfig, verifier: ScramVerifier | undefined) {
    this.config = config;
    this.#verifier = verifier;
    this.#onConnect = config.target.onIamConnect;
    this.#onToken = config.target.iam.onToken as ((event: TokenEvent) => void) | undefined;
    this.listener = new Listener(config, {
      startup: (client, params, minor) => this.#login(client, params, minor),
      cancel: (client, packet) => this.#cancel(client, packet),
      refused: (code) => {
        this.stats.refused[code]++;
        this.#metrics.refused.inc({ code });
      },
    });
  }

  get host(): string {
    return this.listener.host;
  }

  get port(): number {
    return this.listener.port;
  }

  get path(): string | undefined {
    return this.config.listenPath;
  }

  get accepting(): boolean {
    return this.listener.accepting;
  }

  sessions(): number {
    return this.listener.sessions();
  }

  get http(): { host: string; port: number } | undefined {
    return this.#http && { host: this.#http.host, port: this.#http.port };
  }

  metrics(): string {
    this.#metrics.sessions.set(this.listener.sessions());
    this.#metrics.startups.set(this.listener.startups());
    return this.#metrics.render();
  }

  /** Listens for clients, then serves the HTTP port if asked for. */
  async listen(): Promise<void> {
    await this.listener.listen();
    const http = this.config.http;
    if (http === undefined) return;
    try {
      this.#http = await startHttp({
        ...http,
        metrics: () => this.metrics(),
        ready: () => this.listener.accepting,
      });
    } catch (error) {
      await this.listener.close();
      throw error;
    }
  }

  startups(): number {
    return this.listener.startups();
  }

  // One plan per upstream user: the token is signed for the user the server sees.
  #plan(user: string): SocketPlan {
    let plan = this.#plans.get(user);
    if (plan) {
      // Most recently used last: the first is the one to drop.
      this.#plans.delete(user);
      this.#plans.set(user, plan);
      return plan;
    }
    const target = this.config.target;
    const signing = intakeSigning(
      {
        ...target,
        iam: {
          ...target.iam,
          onToken: (event: TokenEvent) => {
            this.stats.tokens[event.reused ? "reused" : "signed"]++;
            this.#metrics.tokens.inc({ reused: event.reused ? "true" : "false" });
            this.#onToken?.(event);
          },
        },
      },
      user,
      this.config.connectTimeoutMs / 1000,
    );
    plan = intakePlan({ ...target, onIamConnect: (event) => this.#connected(event) }, signing, {
      connectTimeoutMs: this.config.connectTimeoutMs,
      driver: "proxy",
    });
    this.#plans.set(user, plan);
    if (this.#plans.size > MAX_PLANS) this.#plans.delete(this.#plans.keys().next().value!);
    return plan;
  }

  #counted(result: "ok" | "failed" | "refused"): void {
    this.stats.logins[result]++;
    this.#metrics.logins.inc({ result });
  }

  #connected(event: ConnectEvent): void {
    this.#counted(event.ok ? "ok" : "failed");
    if (event.ok) this.#metrics.connectSeconds.observe(event.timings.totalMs / 1000);
    if (!event.ok && event.step) {
      this.stats.failures[event.step]++;
      this.#metrics.upstreamFailures.inc({ step: event.step });
    }
    this.#onConnect?.(event);
  }

  // Tells onLogin, whose exceptions are logged (a logger's bug must not take the proxy down).
  #told(login: ProxyLogin): void {
    const onLogin = this.config.onLogin;
    if (onLogin) safely(() => onLogin(login), this.config.logger);
  }

  #refuse(client: Client, who: Who, code: string, message: string): void {
    this.#counted("refused");
    this.#told({ ok: false, ...who, attempts: 0, code, message });
    fail(client, code, message);
  }

  async #login(client: Client, params: Map<string, string>, minor: number): Promise<void> {
    const socket = client.inbox.socket;
    const address = client.raw.remoteAddress === undefined
      ? "local"
      : `${clientAddress(client.raw)}:${client.raw.remotePort}`;
    // Protocol options (_pq_.*) are refused, and the session goes on in 3.0, as the upstream login
    // is (the gateway does the same).
    const unrecognized = [...params.keys()].filter((name) => name.startsWith("_pq_."));
    for (const name of unrecognized) params.delete(name);
    if (minor > 0 || unrecognized.length > 0) {
      if (!send(socket, negotiateProtocolVersion(0, unrecognized))) return;
    }
    const { target } = this.config.target;
    // The target's user and database, when it names them, win over the client's.
    const clientUser = params.get("user") ?? "";
    const user = target.user ?? clientUser;
    const database = target.database ?? (params.get("database") || user);
    const who: Who = { client: address, user, database };
    if (user === "") {
      return this.#refuse(
        client,
        who,
        "28000",
        "no PostgreSQL user name specified in startup packet",
      );
    }
    params.set("user", user);
    params.set("database", database);
    for (const [name, value] of Object.entries(target.serverParams)) {
      if (!params.has(name)) params.set(name, value);
    }
    if (this.#verifier !== undefined) {
      const ok = await this.#localLogin(client, who, clientUser);
      if (!ok) return;
    }
    if (!this.listener.beginSession(client)) {
      return this.#refuse(client, who, TOO_MANY.code, TOO_MANY.message);
    }
    let shared: SocketPlan;
    try {
      shared = this.#plan(user);
    } catch (error) {
      return this.#refuse(client, who, "28000", (error as Error).message);
    }
    // Logging in upstream is bounded by the connect timeout from here on, not the listener's.
    clearTimeout(client.deadline);
    const started = performance.now();
    const plan: SocketPlan = {
      ...shared,
      onConnect: (outcome) => {
        shared.onConnect(outcome);
        const told = outcome.error && !(outcome.error instanceof ConnectError &&
            outcome.error.code === "SERVER_ERROR")
          ? errorFields(outcome.error)
          : undefined;
        const { sqlState, message } = outcome.error as ConnectError ?? {};
        this.#told({
          ok: outcome.ok,
          ...who,
          attempts: outcome.attempts,
          timings: outcome.timings,
          ...(outcome.step && !outcome.ok ? { step: outcome.step } : {}),
          ...(outcome.error ? { error: outcome.error } : {}),
          ...(told
            ? { code: told.code, message: told.message }
            : sqlState
            ? { code: sqlState, message }
            : {}),
        });
      },
    };
    const upstream = new IamSocket(plan);
    // Bytes go on as they come: Nagle would hold a client's small pipelined messages back. TCP
    // keep-alive as libpq's (on by default, keepalives_idle, keepalives=0 off).
    upstream.setNoDelay(true);
    const keepAlive = this.config.target.target.keepAlive;
    if (keepAlive !== null) upstream.setKeepAlive(true, (keepAlive ?? 0) * 1000);
    const up = upstream as unknown as net.Socket;
    this.#upstreams.add(up);
    upstream.once("close", () => this.#upstreams.delete(up));
    // The server's first bytes (AuthenticationOk, or its own refusal) come with the hand-over;
    // an error before them is pg-iam's (credentials, TCP, TLS, the token), told to the client as
    // a PostgreSQL error. After them, the upstream's errors are the session's end, as a server's.
    let answered = false;
    upstream.once("error", (error: unknown) => {
      if (answered) return;
      client.inbox.detach();
      closeWith(socket, errorResponse({ severity: "FATAL", ...errorFields(error as Error) }));
    });
    client.inbox.detach();
    upstream.write(startupMessage(params));
    const bytes = { toServer: 0, toClient: 0 };
    const ended = () => {
      const onClose = this.config.onClose;
      if (!answered || onClose === undefined) return;
      safely(
        () => onClose({ ...who, durationMs: performance.now() - started, bytes }),
        this.config.logger,
      );
    };
    relay(socket, up, [], client.inbox.reader.rest(), ended, (direction, n) => {
      if (direction === "up") {
        bytes.toServer += n;
        this.stats.bytes.toServer += n;
        this.#metrics.bytes.inc({ direction: "client_to_server" }, n);
      } else {
        answered = true;
        bytes.toClient += n;
        this.stats.bytes.toClient += n;
        this.#metrics.bytes.inc({ direction: "server_to_client" }, n);
      }
    });
  }

  // The proxy's own password (SCRAM-SHA-256: it never crosses the network), before any upstream
  // login; AuthenticationOk is the server's, relayed once the proxy is logged in for the client.
  async #localLogin(client: Client, who: Who, clientUser: string): Promise<boolean> {
    const socket = client.inbox.socket;
    const result = await scramLogin(
      client.inbox,
      (bytes) => send(socket, bytes),
      this.#verifier!,
      clientUser,
    );
    if (result.ok) return true;
    this.#counted("refused");
    this.#told({ ok: false, ...who, attempts: 0, code: result.code, message: result.message });
    client.inbox.detach();
    closeWith(socket, errorResponse({ severity: "FATAL", ...result }));
    return false;
  }

  async #cancel(client: Client, packet: Uint8Array): Promise<void> {
    client.inbox.detach(); // the server reads nothing after a CancelRequest
    const plan = this.#plans.values().next().value;
    if (plan) {
      this.stats.cancels++;
      this.#metrics.cancels.inc();
      const upstream = new IamSocket(plan);
      upstream.on("error", () => {});
      upstream.end(packet);
    }
    await Promise.resolve();
    closeWith(client.inbox.socket);
  }

  /**
   * Stops accepting, lets sessions finish for up to `timeoutMs` (default: the `shutdownTimeout`
   * option), then closes what is left.
   */
  async shutdown(timeoutMs: number = this.config.shutdownTimeoutMs): Promise<void> {
    const stopped = this.listener.stop();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    await Promise.race([stopped, late]);
    clearTimeout(timer);
    await this.close();
  }

  async close(): Promise<void> {
    for (const upstream of this.#upstreams) upstream.destroy();
    this.#upstreams.clear();
    await Promise.all([this.listener.close(), this.#http?.close()]);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * A failure before the server answered, as the ErrorResponse fields a client shows: pg-iam's
 * message (never a secret: pg-iam's errors hold none), its code and step in the detail.
 */
function errorFields(
  error: Error,
): { code: string; message: string; detail?: string; hint?: string } {
  const message = `pg-iam proxy: ${error.message.replace(/^pg-iam: /, "")}`;
  if (error instanceof IamAuthError) {
    // Refused twice (with a fresh token the second time): the proxy's IAM identity, not the
    // client, is not allowed in.
    return {
      code: "28000",
      message,
      detail: `The server answered ${error.code}: ${error.serverMessage}`,
    };
  }
  if (error instanceof ConnectError) {
    const detail = `pg-iam step: ${error.step}; code: ${error.code}`;
    // Credentials the proxy cannot get, or a server that let it in without the token
    // (require_auth): authorization, not the network.
    const code = error.step === "credentials" || error.code === "AUTH_METHOD" ? "28000" : "08001";
    return { code, message, detail };
  }
  const step: ConnectStep | undefined = (error as { step?: ConnectStep }).step;
  return {
    code: error.name === "CredentialsError" ? "28000" : "08001",
    message,
    ...(step ? { detail: `pg-iam step: ${step}` } : {}),
  };
}
