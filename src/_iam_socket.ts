// The socket pg-iam hands to postgres.js (its documented `socket` option). postgres.js believes it
// talks to the server directly; in fact this object performs the whole connection start itself:
// credentials, a token signed for this connection, TCP, TLS, the startup message postgres.js wrote,
// the cleartext-password exchange, and one retry on a new connection with force-refreshed
// credentials when the server rejects the token. Only then does it relay bytes both ways.
//
// Why not postgres.js's `password` function alone (measured on 3.4.9): a password function that
// rejects crashes Node and Deno with an unhandled rejection, one slower than `connect_timeout`
// crashes the process in `nextWrite`, and a rejected login fails the query with no retry. Here a
// failure becomes this socket's 'error' event, which postgres.js hands to the query that opened
// the connection; the pool slot is released ('close'), and nothing is left unhandled.
//
// Runtime-specific (node:net, node:tls, node:stream): works on Node, Deno and Bun.

import { Buffer } from "node:buffer";
import net from "node:net";
import { Duplex } from "node:stream";
import tls from "node:tls";

import {
  AUTH_CLEARTEXT,
  AUTH_OK,
  authMethodName,
  CANCEL_REQUEST,
  errorFields,
  passwordMessage,
  PROTOCOL_3,
  sslRequest,
} from "./_pgwire.ts";

/** Timings of one connection start, in milliseconds. */
export interface ConnectTimings {
  /** Resolving AWS credentials (0 when cached). */
  credentialsMs: number;
  /** Signing the token. */
  signMs: number;
  /** DNS lookup and TCP connect. */
  connectMs: number;
  /** SSLRequest and TLS handshake (0 without TLS). */
  tlsMs: number;
  /** From sending the token to the server's answer: the server's IAM check. */
  authMs: number;
  /** From the start to AuthenticationOk, retries included. */
  totalMs: number;
}

/** What the socket needs for one connection attempt. */
export interface SocketPlan {
  host: string;
  port: number;
  tls: tls.ConnectionOptions | undefined;
  keepAlive: number;
  connectTimeoutMs: number;
  /** Credentials (bounded in time) and a token; throws a clear error. */
  token(forceRefresh: boolean): Promise<{ token: string; credentialsMs: number; signMs: number }>;
  /** Builds the error for a login the server rejected twice. */
  authError(serverError: ServerError): Error;
  onConnect(event: ConnectOutcome): void;
}

/** The outcome of one physical connection start. */
export interface ConnectOutcome {
  ok: boolean;
  attempts: number;
  timings: ConnectTimings;
  error?: Error;
}

/** Fields of a server ErrorResponse (by their one-letter codes). */
export type ServerError = Record<string, string>;

/** A socket-like duplex stream for postgres.js; see the file comment. */
export class IamSocket extends Duplex {
  host: string;
  port: number;
  #plan: SocketPlan;
  #upstream: net.Socket | undefined;
  #relaying = false;
  #pending: Buffer[] = [];
  #first: Buffer = Buffer.alloc(0);
  #started = false;
  #hadError = false;

  constructor(plan: SocketPlan) {
    super({ allowHalfOpen: false });
    this.#plan = plan;
    this.host = plan.host;
    this.port = plan.port;
  }

  /** postgres.js sends Terminate only when this says "open". */
  get readyState(): string {
    return this.#relaying && !this.destroyed ? "open" : this.destroyed ? "closed" : "opening";
  }

  /** postgres.js asks for keep-alive here; #open() applies `keep_alive` to the TCP socket. */
  setKeepAlive(_enable?: boolean, _delay?: number): this {
    return this;
  }

  // postgres.js reads `hadError` from 'close' to back off between failed connects.
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event === "close" && args.length === 0) return super.emit("close", this.#hadError);
    return super.emit(event, ...args);
  }

  override _read(): void {
    this.#upstream?.resume();
  }

  override _write(chunk: Buffer, _encoding: string, callback: (error?: Error | null) => void) {
    if (this.#relaying) {
      const upstream = this.#upstream!;
      if (upstream.write(chunk)) callback();
      else upstream.once("drain", () => callback());
      return;
    }
    if (this.#started) {
      this.#pending.push(chunk);
      return callback();
    }
    // The first message: StartupMessage, or CancelRequest on a connection of its own.
    this.#first = Buffer.concat([this.#first, chunk]);
    if (this.#first.length >= 8 && this.#first.length >= this.#first.readUInt32BE(0)) {
      this.#started = true;
      const message = this.#first.subarray(0, this.#first.readUInt32BE(0));
      const rest = this.#first.subarray(message.length);
      if (rest.length) this.#pending.push(rest);
      const code = message.readUInt32BE(4);
      if (code === CANCEL_REQUEST) this.#cancel(message);
      else if (code === PROTOCOL_3) this.#start(message);
      else this.destroy(new Error(`pg-iam: unexpected first message from postgres.js (${code})`));
    }
    callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.#upstream && this.#relaying) this.#upstream.end(callback);
    else callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (error) this.#hadError = true;
    this.#upstream?.destroy();
    callback(error);
  }

  async #cancel(message: Buffer): Promise<void> {
    try {
      const socket = await this.#open();
      socket.end(message);
      socket.once("close", () => this.destroy());
    } catch (error) {
      this.destroy(error as Error);
    }
  }

  async #start(startup: Buffer): Promise<void> {
    const plan = this.#plan;
    const t0 = performance.now();
    const timings: ConnectTimings = {
      credentialsMs: 0,
      signMs: 0,
      connectMs: 0,
      tlsMs: 0,
      authMs: 0,
      totalMs: 0,
    };
    let attempts = 0;
    let phase = "";
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const seconds = plan.connectTimeoutMs / 1000;
        const error = Object.assign(
          new Error(
            `pg-iam: connecting to ${plan.host}:${plan.port} timed out after ${seconds}s ` +
              `(while ${phase})`,
          ),
          { code: "CONNECT_TIMEOUT" },
        );
        reject(error);
      }, plan.connectTimeoutMs);
    });
    timeout.catch(() => {});
    const within = <T>(p: Promise<T>): Promise<T> => Promise.race([p, timeout]);
    try {
      for (attempts = 1;; attempts++) {
        phase = "resolving credentials and signing the token";
        const signed = await within(plan.token(attempts > 1));
        timings.credentialsMs += signed.credentialsMs;
        timings.signMs += signed.signMs;
        if (this.destroyed) return;

        phase = `connecting to ${plan.host}:${plan.port}`;
        const socket = await within(this.#open(timings));
        this.#upstream = socket;
        if (this.destroyed) {
          socket.destroy();
          return;
        }

        phase = "authenticating (the server's IAM check)";
        socket.write(startup);
        const t = performance.now();
        const answer = await within(authenticate(socket, signed.token));
        timings.authMs += performance.now() - t;
        if (answer.ok) {
          timings.totalMs = performance.now() - t0;
          this.#relay(socket, answer.rest);
          clearTimeout(timer);
          plan.onConnect({ ok: true, attempts, timings });
          return;
        }
        socket.destroy();
        this.#upstream = undefined;
        const code = answer.error.C;
        if (attempts === 1 && (code === "28P01" || code === "28000")) continue;
        throw code === "28P01" || code === "28000"
          ? plan.authError(answer.error)
          : serverError(answer.error);
      }
    } catch (error) {
      clearTimeout(timer);
      timings.totalMs = performance.now() - t0;
      plan.onConnect({ ok: false, attempts, timings, error: error as Error });
      this.destroy(error as Error);
    }
  }

  /** TCP connect, then SSLRequest and the TLS handshake when TLS is on. */
  async #open(timings?: ConnectTimings): Promise<net.Socket> {
    const plan = this.#plan;
    let t = performance.now();
    const socket = net.connect({ host: plan.host, port: plan.port });
    // Destroying this stream must also destroy a socket that is still connecting. Errors are
    // handled by whoever waits on the socket; this listener only keeps an error that arrives
    // between two waits from becoming an uncaught exception.
    this.#upstream = socket;
    socket.on("error", noop);
    await once(socket, "connect");
    socket.setNoDelay(true);
    if (plan.keepAlive) socket.setKeepAlive(true, plan.keepAlive * 1000);
    if (timings) timings.connectMs += performance.now() - t;
    if (!plan.tls) return socket;

    t = performance.now();
    socket.write(sslRequest());
    const reply = await once(socket, "data") as Buffer;
    // More than the one byte would be injected plaintext (CVE-2021-23214 class): refuse it.
    if (reply.length !== 1 || reply[0] !== 0x53) {
      socket.destroy();
      throw Object.assign(
        new Error(
          reply[0] === 0x4e
            ? `pg-iam: ${plan.host}:${plan.port} refused TLS (it answered the SSLRequest with ` +
              `"N"); IAM tokens are sent only over TLS unless you opt out with ` +
              `dangerouslyDisableTls: true`
            : `pg-iam: ${plan.host}:${plan.port} sent an invalid answer to the SSLRequest`,
        ),
        { code: "TLS_REFUSED" },
      );
    }
    const secure = tls.connect({ ...plan.tls, socket });
    this.#upstream = secure;
    secure.on("error", noop);
    try {
      await once(secure, "secureConnect");
    } catch (error) {
      socket.destroy();
      throw tlsError(error as Error & { code?: string }, plan);
    }
    if (timings) timings.tlsMs += performance.now() - t;
    return secure;
  }

  #relay(socket: net.Socket, rest: Buffer): void {
    this.#relaying = true;
    socket.removeAllListeners("data");
    socket.on("data", (chunk: Buffer) => {
      if (!this.push(chunk)) socket.pause();
    });
    socket.resume(); // paused by authenticate() so nothing was emitted to no listener
    socket.on("error", (error) => this.destroy(error));
    socket.on("close", () => {
      // Let postgres.js read what is buffered (say, a FATAL from a killed backend) first.
      if (this.readableLength === 0) this.destroy();
      else this.once("end", () => this.destroy()).push(null);
    });
    this.push(rest);
    for (const chunk of this.#pending.splice(0)) socket.write(chunk);
  }
}

/** The startup exchange after the StartupMessage: sends the token when asked for a password. */
function authenticate(
  socket: net.Socket,
  token: string,
): Promise<{ ok: true; rest: Buffer } | { ok: false; error: ServerError }> {
  return new Promise((resolve, reject) => {
    let buffer: Buffer = Buffer.alloc(0);
    const cleanup = () => {
      socket.off("data", onData).off("error", onError).off("close", onClose);
    };
    const onError = (error: Error) => (cleanup(), reject(error));
    const onClose = () => {
      cleanup();
      reject(
        Object.assign(new Error("pg-iam: the server closed the connection during authentication"), {
          code: "CONNECTION_CLOSED",
        }),
      );
    };
    const onData = (chunk: Buffer) => {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      while (buffer.length >= 5) {
        const length = buffer.readUInt32BE(1) + 1;
        if (buffer.length < length) return;
        const type = buffer[0];
        const body = buffer.subarray(5, length);
        if (type === 0x52 /* R */) {
          const method = body.readUInt32BE(0);
          if (method === AUTH_OK) {
            socket.pause();
            cleanup();
            return resolve({ ok: true, rest: buffer });
          }
          if (method !== AUTH_CLEARTEXT) {
            cleanup();
            return reject(methodError(method));
          }
          socket.write(passwordMessage(token));
        } else if (type === 0x45 /* E */) {
          cleanup();
          return resolve({ ok: false, error: Object.fromEntries(errorFields(body)) });
        } else if (type !== 0x4e /* N: notices before auth are dropped */) {
          cleanup();
          return reject(new Error(`pg-iam: unexpected message "${String.fromCharCode(type)}"`));
        }
        buffer = buffer.subarray(length);
      }
    };
    socket.on("data", onData).on("error", onError).on("close", onClose);
  });
}

function methodError(method: number): Error {
  return Object.assign(
    new Error(
      `pg-iam: the server asked for ${authMethodName(method)}, not the ` +
        `cleartext password IAM authentication uses: this database user is not set up for IAM ` +
        `(on RDS and Aurora: GRANT rds_iam TO the user)`,
    ),
    { code: "AUTH_METHOD" },
  );
}

/** A server error other than an auth failure, shaped like postgres.js's PostgresError. */
function serverError(fields: ServerError): Error {
  return Object.assign(new Error(fields.M ?? "server error"), {
    name: "PostgresError",
    severity: fields.S,
    code: fields.C,
    detail: fields.D,
    hint: fields.H,
  });
}

function tlsError(error: Error & { code?: string }, plan: SocketPlan): Error {
  const name = plan.tls?.servername ?? plan.host;
  return Object.assign(
    new Error(
      `pg-iam: TLS with ${plan.host}:${plan.port} failed (${error.code ?? error.message}): ` +
        `${error.message}. The certificate is checked against ${JSON.stringify(name)}` +
        (plan.tls?.ca ? " and the CA bundle in use" : " and the system's root CAs") +
        `; connecting through a tunnel or by IP? set signingHostname to the endpoint name`,
      { cause: error },
    ),
    { code: error.code ?? "TLS" },
  );
}

function noop(): void {}

/** Resolves on the first `event`, rejects on 'error' or an early 'close'. */
function once(emitter: net.Socket, event: string): Promise<unknown> {
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
          Object.assign(new Error(`pg-iam: the connection closed while waiting for "${event}"`), {
            code: "CONNECTION_CLOSED",
          }),
        )
      );
    emitter.on(event, onEvent).on("error", onError).on("close", onClose);
  });
}
