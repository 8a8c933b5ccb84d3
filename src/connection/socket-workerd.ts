// Sockets on Cloudflare Workers (workerd): `cloudflare:sockets`' connect() in starttls mode, the
// SSLRequest, then startTls(). The connection start itself (token, retry, timings, backoff) is
// IamSocket's, the same on every runtime; this module holds what differs on Workers: opening the
// socket (a Node-style StreamSocket over the Web-streams one), and what a Worker's TLS can and
// cannot check.
//
// A Worker's TLS verifies every certificate, against the CAs the platform trusts (publicly
// trusted CAs on Cloudflare; the config's tlsOptions.trustedCertificates on workerd), for the
// name it is given. It cannot be handed another CA, nor told to skip the check. So the RDS CA,
// which RDS and Aurora certificates chain to, cannot be trusted from a Worker: such a target is
// refused when the client is created, saying what works instead. Aurora DSQL and RDS Proxy
// endpoints carry publicly trusted certificates (Amazon's roots), and are verified as anywhere.
// https://developers.cloudflare.com/workers/runtime-apis/tcp-sockets/
//
// Web APIs, and node:buffer and node:events (nodejs_compat, as postgres.js needs there too): the
// `cloudflare:sockets` module is imported when the first socket opens (a non-literal specifier,
// so neither type checkers nor bundlers try to resolve it elsewhere).

import { Buffer } from "node:buffer";
import { EventEmitter } from "node:events";
import type net from "node:net";
import { show } from "../core/errors.ts";
import { parseHostname } from "../core/hostname.ts";
import type { TlsSettings } from "./target.ts";
import type { TlsPlan } from "./tls.ts";
import { ConnectError } from "./errors.ts";
import type { SocketBackend } from "./socket.ts";

/** Whether this is the Workers runtime (workerd, locally or on Cloudflare). */
export const ON_WORKERD: boolean =
  (globalThis as { navigator?: { userAgent?: string } }).navigator?.userAgent ===
    "Cloudflare-Workers";

/** A `cloudflare:sockets` Socket: the part used here. */
export interface WorkerdSocket {
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  /** Resolves once connected (after startTls(): once the handshake is done). */
  readonly opened: Promise<unknown>;
  readonly closed: Promise<unknown>;
  close(): Promise<unknown>;
  startTls(options?: { expectedServerHostname?: string }): WorkerdSocket;
}

type Connect = (
  address: { hostname: string; port: number },
  options: { secureTransport: "off" | "starttls"; allowHalfOpen: boolean },
) => WorkerdSocket;

const SOCKETS = "cloudflare:sockets";
let sockets: Promise<{ connect: Connect }> | undefined;

/** Opens a TCP connection; `starttls`: it may be upgraded to TLS by startTls() later. */
export async function workerdConnect(
  hostname: string,
  port: number,
  starttls: boolean,
): Promise<WorkerdSocket> {
  sockets ??= import(SOCKETS) as Promise<{ connect: Connect }>;
  const { connect } = await sockets;
  return connect({ hostname, port }, {
    secureTransport: starttls ? "starttls" : "off",
    allowHalfOpen: false,
  });
}

const PLATFORM_TRUST = "the CAs the Worker's runtime trusts (publicly trusted CAs on Cloudflare; " +
  "tlsOptions.trustedCertificates in a workerd config)";

/**
 * The TLS plan on Workers, or undefined for sslmode disable. Throws a TypeError, before any
 * connection, for what a Worker's TLS cannot do: trust the RDS CA or another CA of the user's,
 * present a client certificate, check a CRL. `platformCas` (`dangerouslyUsePlatformCas`): check
 * the certificate against the platform's CAs instead of the one the target asks for.
 */
export function workerdTlsPlan(
  settings: TlsSettings,
  service: "rds" | "dsql",
  name: string,
  override: Record<string, unknown> | undefined,
  platformCas: boolean,
): TlsPlan | undefined {
  if (settings.mode === "disable") return undefined;
  if (settings.negotiation === "direct") {
    // PostgreSQL 17+ closes a direct TLS connection whose client offered no ALPN "postgresql".
    throw new TypeError(
      `pg-iam on Cloudflare Workers cannot use sslnegotiation=direct: a Worker's TLS ` +
        `(cloudflare:sockets, secureTransport "on") offers no ALPN protocol, and PostgreSQL ` +
        `closes a direct TLS connection that does not offer "postgresql"; use ` +
        `sslnegotiation=postgres (the default)`,
    );
  }
  const unsupported = [
    settings.cert || settings.key ? "a client certificate (sslcert, sslkey)" : "",
    settings.crl ? "a certificate revocation list (sslcrl)" : "",
    ...Object.keys(override ?? {}).filter((key) => key !== "ca" && key !== "servername")
      .map((key) => `the ssl option's ${JSON.stringify(key)}`),
  ].filter(Boolean);
  if (unsupported.length) {
    throw new TypeError(
      `pg-iam on Cloudflare Workers cannot honour ${unsupported.join(", ")}: a Worker's TLS ` +
        `(cloudflare:sockets) always verifies the server's certificate and its name, against ` +
        `${PLATFORM_TRUST}, and takes no other TLS settings`,
    );
  }
  const customCa = override?.ca !== undefined
    ? "the ssl option's ca"
    : settings.rootcert && settings.rootcert !== "system"
    ? `the sslrootcert file ${show(settings.rootcert.path)} (${settings.rootcert.source})`
    : undefined;
  const parsed = parseHostname(name);
  const rdsCa = !customCa && settings.rootcert === undefined && service === "rds" &&
    !(parsed?.service === "rds" && parsed.kind === "proxy");
  if ((customCa || rdsCa) && !platformCas) {
    throw new TypeError(
      rdsCa
        ? `pg-iam on Cloudflare Workers cannot verify the certificate of ${show(name)}: RDS and ` +
          `Aurora certificates chain to the RDS CA, and a Worker's TLS can neither be told to ` +
          `trust it nor skip the check (it trusts publicly trusted CAs only). Options: connect ` +
          `through an RDS Proxy endpoint (<name>.proxy-<id>.<region>.rds.amazonaws.com: it takes ` +
          `IAM tokens, and its certificates chain to Amazon's public roots); put Cloudflare ` +
          `Hyperdrive in front (it logs in to the database itself, with a password it holds, ` +
          `not an IAM token); or pass dangerouslyUsePlatformCas: true to check the certificate ` +
          `against ${PLATFORM_TRUST} instead, which only succeeds if what answers presents such ` +
          `a certificate for that name`
        : `pg-iam on Cloudflare Workers cannot use ${customCa}: a Worker's TLS cannot be told to ` +
          `trust another CA (it trusts publicly trusted CAs only; in a workerd config, add the CA ` +
          `to tlsOptions.trustedCertificates). Pass dangerouslyUsePlatformCas: true to check the ` +
          `certificate against ${PLATFORM_TRUST} instead`,
    );
  }
  // The Worker checks a name whatever the mode (verify-ca and require included): ssl.servername if
  // given, as node:tls does, else the endpoint name.
  const checked = typeof override?.servername === "string" ? override.servername : name;
  return {
    mode: settings.mode,
    options: { host: checked },
    name: checked,
    trust: PLATFORM_TRUST,
    otherCa: "a Worker cannot be given another CA",
    direct: false,
  };
}

/**
 * A failed startTls(), explained. The runtime tells the Worker only "internal error; reference =
 * …" for a refused certificate (the reason goes to its own log), so say what was checked.
 */
export function workerdTlsError(error: Error, plan: TlsPlan, host: string, port: number): Error {
  return new ConnectError(
    `pg-iam: TLS with ${host}:${port} failed (${error.message}): the certificate must chain ` +
      `to ${plan.trust} and be for the name ${show(plan.name)}; the Worker's runtime does not ` +
      `say which check failed (its log does). Connecting through a tunnel or by IP address? ` +
      `Set signingHostname to the endpoint name (the token and the certificate check both use it)`,
    { code: "TLS", step: "tls", host, port, cause: error },
  );
}

/** cloudflare:sockets (Cloudflare Workers), behind StreamSocket. */
export const WORKERD_BACKEND: SocketBackend = {
  connect: (host, port, tls) =>
    new StreamSocket(
      host,
      port,
      workerdConnect(host, port, tls),
      "connect",
    ) as unknown as net.Socket,
  startTls: (socket, plan) =>
    (socket as unknown as StreamSocket).startTls(plan.name) as unknown as net.Socket,
  tlsError: workerdTlsError,
};

type Callback = (error?: Error | null) => void;
type Listener = (...args: unknown[]) => void;

/**
 * A Node-style socket over a Web-streams one (cloudflare:sockets): what IamSocket and, after the
 * hand-over, postgres.js expect of a socket. It reads only while someone listens for 'data' and it
 * is not paused, so nothing is read that nobody takes: the SSLRequest's answer leaves no read
 * pending when startTls() needs the streams back, and a chunk arriving after pause() is held.
 */
class StreamSocket extends EventEmitter {
  readyState: "opening" | "open" | "closed" = "opening";
  #host: string;
  #port: number;
  #raw: WorkerdSocket | undefined;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #held: Buffer[] = [];
  #paused = false;
  #reading = false;
  #done = false;
  #replaced = false; // by the TLS socket after startTls(): its events are that one's

  constructor(
    host: string,
    port: number,
    raw: Promise<WorkerdSocket>,
    ready: "connect" | "secureConnect",
  ) {
    super();
    this.#host = host;
    this.#port = port;
    // A connection that never opened says where it was going (the runtime's message does not).
    const failed = (error: Error) =>
      this.#fail(
        ready === "connect" && this.readyState === "opening"
          ? new ConnectError(`pg-iam: connecting to ${host}:${port} failed (${error.message})`, {
            code: "CONNECT",
            step: "connect",
            host,
            port,
            cause: error,
          })
          : error,
      );
    raw.then((socket) => {
      if (this.#done) return void socket.close().catch(noop);
      this.#raw = socket;
      this.#reader = socket.readable.getReader();
      this.#writer = socket.writable.getWriter();
      socket.opened.then(() => {
        if (this.#done || this.#replaced) return;
        this.readyState = "open";
        this.emit(ready);
        this.#pump();
      }, failed);
      socket.closed.then(() => this.#pump(), failed);
    }, failed);
  }

  get writable(): boolean {
    return !this.#done;
  }

  write(chunk: Uint8Array, callback?: Callback | string, cb?: Callback): boolean {
    const done = typeof callback === "function" ? callback : cb;
    if (this.#done || !this.#writer) {
      const error = new Error("pg-iam: write on a socket that is not open");
      if (done) queueMicrotask(() => done(error));
      return false;
    }
    this.#writer.write(chunk).then(() => done?.(), (error) => {
      done?.(error);
      this.#fail(error);
    });
    return true;
  }

  end(data?: Uint8Array): this {
    if (data && !this.#done && this.#writer) {
      this.#writer.write(data).then(() => this.destroy(), () => this.destroy());
      return this;
    }
    return this.destroy();
  }

  destroy(error?: Error): this {
    this.#raw?.close().catch(noop);
    if (error) this.#fail(error);
    else this.#finish(false);
    return this;
  }

  pause(): this {
    this.#paused = true;
    return this;
  }

  resume(): this {
    this.#paused = false;
    this.#pump();
    return this;
  }

  override on(event: string | symbol, fn: Listener): this {
    super.on(event, fn);
    // Later, not now: whoever adds a 'data' listener may have bytes of its own to emit first (the
    // hand-over emits what came with AuthenticationOk); held chunks must follow them, in order.
    if (event === "data") queueMicrotask(() => this.#pump());
    return this;
  }

  override addListener(event: string | symbol, fn: Listener): this {
    return this.on(event, fn);
  }

  // What Node's sockets offer and a Worker's do not need.
  setKeepAlive(): this {
    return this;
  }
  setNoDelay(): this {
    return this;
  }
  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }
  cork(): void {}
  uncork(): void {}

  /** The TLS socket over this one (this one is spent): verified for `name` by the runtime. */
  startTls(name: string | undefined): StreamSocket {
    const raw = this.#raw;
    if (!raw || this.#done) throw new Error("pg-iam: the connection closed before TLS");
    this.#replaced = true;
    this.#reader?.releaseLock();
    this.#writer?.releaseLock();
    // The name checked is the one connected to unless told otherwise (a tunnel, an address).
    const options = name === undefined || name === this.#host
      ? undefined
      : { expectedServerHostname: name };
    return new StreamSocket(
      this.#host,
      this.#port,
      Promise.resolve(raw.startTls(options)),
      "secureConnect",
    );
  }

  async #pump(): Promise<void> {
    if (this.#reading || !this.#reader) return;
    this.#reading = true;
    try {
      while (!this.#paused && !this.#done && !this.#replaced && this.listenerCount("data")) {
        const held = this.#held.shift();
        if (held) {
          this.emit("data", held);
          continue;
        }
        const { done, value } = await this.#reader.read();
        if (done) return this.#finish(false);
        const chunk = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
        if (this.#paused || !this.listenerCount("data")) this.#held.push(chunk);
        else this.emit("data", chunk);
      }
    } catch (error) {
      this.#fail(error as Error);
    } finally {
      this.#reading = false;
    }
  }

  #fail(error: Error): void {
    if (this.#done || this.#replaced) return;
    if (this.listenerCount("error")) this.emit("error", error);
    this.#finish(true);
  }

  #finish(hadError: boolean): void {
    if (this.#done || this.#replaced) return;
    this.#done = true;
    this.readyState = "closed";
    this.#raw?.close().catch(noop);
    this.emit("close", hadError);
  }
}

function noop(): void {}
