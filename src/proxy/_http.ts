// The proxy's HTTP port for running it as a sidecar: liveness, readiness and the metrics for
// Prometheus. node:http, which Deno, Node and Bun all serve. Three fixed GET/HEAD paths and no
// request body: nothing here reads more than a request's head.

import http from "node:http";
import type { AddressInfo } from "node:net";

/** What {@linkcode startHttp} serves, and where. */
export interface HttpOptions {
  /** The address to listen on (e.g. `127.0.0.1`). */
  host: string;
  /** The port to listen on; 0 for a free one. */
  port: number;
  /** The metrics' exposition text (Prometheus text format 0.0.4), at each scrape. */
  metrics: () => string;
  /** Whether the proxy is ready: accepting connections and not shutting down. */
  ready: () => boolean;
}

/** A running HTTP port. */
export interface HttpServer {
  /** The address listened on. */
  readonly host: string;
  /** The port listened on (the one chosen when 0 was asked for). */
  readonly port: number;
  /** Stops listening and ends every connection, kept-alive ones included. */
  close(): Promise<void>;
}

const METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_TYPE = "text/plain; charset=utf-8";
// A scrape or a probe sends its head at once; a client that does not is dropped soon.
const HEADERS_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 10_000;
// Probes and scrapers hold a few connections; more is a misbehaving client.
const MAX_CONNECTIONS = 64;

/**
 * Serves `GET`/`HEAD` `/livez` (200 while the process serves), `/readyz` (200 when `ready()`, else
 * 503) and `/metrics` (200, the text of `metrics()`); 404 for any other path, 405 for another
 * method (with `Allow: GET, HEAD`). Resolves once listening.
 *
 * @example
 * ```ts ignore
 * const server = await startHttp({
 *   host: "127.0.0.1",
 *   port: 9187,
 *   metrics: () => metrics.render(),
 *   ready: () => !closing,
 * });
 * // …
 * await server.close();
 * ```
 */
export async function startHttp(options: HttpOptions): Promise<HttpServer> {
  const { host, port, metrics, ready } = options ?? {};
  if (typeof host !== "string" || host === "") {
    throw new TypeError(`http host ${JSON.stringify(host)}: not a host name or address`);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`http port ${String(port)}: not a port number (0 to 65535)`);
  }
  if (typeof metrics !== "function") {
    throw new TypeError(`http metrics ${String(metrics)}: not a function`);
  }
  if (typeof ready !== "function") {
    throw new TypeError(`http ready ${String(ready)}: not a function`);
  }

  const server = http.createServer((request, response) => {
    const { status, body, type, allow } = answer(request.method, request.url, metrics, ready);
    const head: Record<string, string | number> = {
      "Content-Type": type,
      "Content-Length": new TextEncoder().encode(body).length,
      "Cache-Control": "no-store",
      "X-Content-Type-Options": "nosniff",
    };
    if (allow) head.Allow = allow;
    // A request with a body is answered without reading it, so its connection cannot carry
    // another request.
    const hasBody = request.headers["transfer-encoding"] !== undefined ||
      (request.headers["content-length"] ?? "0") !== "0";
    if (hasBody) head.Connection = "close";
    response.writeHead(status, head);
    response.end(request.method === "HEAD" ? undefined : body);
  });
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.maxConnections = MAX_CONNECTIONS;

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  // A listening server's later errors (none expected) must not crash the process.
  server.on("error", () => {});
  const address = server.address() as AddressInfo;
  let closed: Promise<void> | undefined;
  return {
    host: address.address,
    port: address.port,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Kept-alive and half-sent requests would otherwise hold close() until they time out.
        server.closeAllConnections?.();
      });
      return closed;
    },
  };
}

interface Answer {
  status: number;
  body: string;
  type: string;
  allow?: string;
}

function answer(
  method: string | undefined,
  url: string | undefined,
  metrics: () => string,
  ready: () => boolean,
): Answer {
  const path = (url ?? "").split("?", 1)[0];
  if (path !== "/livez" && path !== "/readyz" && path !== "/metrics") {
    return { status: 404, body: "not found", type: TEXT_TYPE };
  }
  if (method !== "GET" && method !== "HEAD") {
    return { status: 405, body: "method not allowed", type: TEXT_TYPE, allow: "GET, HEAD" };
  }
  if (path === "/livez") return { status: 200, body: "ok", type: TEXT_TYPE };
  if (path === "/readyz") {
    let isReady = false;
    try {
      isReady = ready() === true;
    } catch { /* not ready */ }
    return isReady
      ? { status: 200, body: "ok", type: TEXT_TYPE }
      : { status: 503, body: "not ready", type: TEXT_TYPE };
  }
  try {
    return { status: 200, body: metrics(), type: METRICS_TYPE };
  } catch {
    return { status: 500, body: "metrics failed", type: TEXT_TYPE };
  }
}
