// startProxy()'s options, checked once: where to listen (loopback, a Unix socket directory, or a
// remote address only with `allowRemote` and a local password), the limits, and the target, read by
// the connection layer's intake as an adapter's options are.

import { show } from "../core/errors.ts";
import { checkPort } from "../core/checks.ts";
import { type Intake, intake } from "../connection/adapter.ts";
import { checkLogger, type Logger } from "../connection/options.ts";
import type { ProxyLogin, ProxySessionEnd } from "./types.ts";
import {
  checkCount,
  checkListener,
  checkServerTls,
  type ListenerConfig,
} from "../listener/options.ts";

export interface ProxyConfig extends ListenerConfig {
  /** The target as the connection layer read it: host, port, TLS, IAM options, fixed user/db. */
  target: Intake;
  /** The Unix socket directory, when listening on one (the socket is `.s.PGSQL.<port>` in it). */
  socketDir: string | undefined;
  /** The local password clients must give (SCRAM-SHA-256), if any. */
  password: string | undefined;
  connectTimeoutMs: number;
  shutdownTimeoutMs: number;
  onLogin: ((login: ProxyLogin) => void) | undefined;
  onClose: ((session: ProxySessionEnd) => void) | undefined;
  /** The `logger` option: where onLogin's and onClose's errors go (default: console). */
  logger: Logger | undefined;
  http: { host: string; port: number } | undefined;
}

// The proxy's own options: the rest are the target's (the connection layer's options).
const OWN = [
  "listen",
  "tls",
  "allowRemote",
  "password",
  "maxConnections",
  "maxStartups",
  "maxStartupsPerAddress",
  "maxConnectionRate",
  "connectionBurst",
  "authenticationTimeoutMs",
  "connectTimeout",
  "shutdownTimeout",
  "onLogin",
  "onClose",
  "http",
] as const;

/** Whether `host` is a loopback address or name (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) ||
    /^::ffff:127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

export function checkProxyOptions(options: unknown): ProxyConfig {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`startProxy() expects an options object, got ${show(options)}`);
  }
  const all = options as Record<string, unknown>;
  const own: Record<string, unknown> = {};
  const rest: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(all)) {
    if ((OWN as readonly string[]).includes(key)) own[key] = value;
    else rest[key] = value;
  }
  const listen = own.listen ?? {};
  if (typeof listen !== "object" || listen === null) {
    throw new TypeError(`The "listen" option must be an object, got ${show(listen)}`);
  }
  const { dir, ...where } = listen as Record<string, unknown>;
  if (dir !== undefined && (typeof dir !== "string" || dir === "" || dir.includes("\0"))) {
    throw new TypeError(`The "listen.dir" option must be a directory path, got ${show(dir)}`);
  }
  if (dir !== undefined && where.host !== undefined) {
    throw new TypeError(
      `Pass "listen.host" or "listen.dir", not both: a proxy listens on TCP or on a Unix socket`,
    );
  }
  const socketPort = dir === undefined ? undefined : (where.port ?? 5432) as number;
  const listener = checkListener(
    {
      ...own,
      listen: dir === undefined ? where : {
        port: socketPort,
        path: `${(dir as string).replace(/\/+$/, "") || "/"}/.s.PGSQL.${socketPort}`,
      },
    },
    checkServerTls(own.tls, undefined),
    { maxConnections: 100, authenticationTimeoutMs: 60_000 },
  );
  if (dir !== undefined) listener.listenPort = socketPort!;

  const password = own.password;
  if (password !== undefined && (typeof password !== "string" || password === "")) {
    throw new TypeError(
      `The "password" option must be a non-empty string, got ${
        typeof password === "string" ? "an empty string" : show(password)
      }`,
    );
  }
  if (own.allowRemote !== undefined && typeof own.allowRemote !== "boolean") {
    throw new TypeError(`The "allowRemote" option must be a boolean, got ${show(own.allowRemote)}`);
  }
  if (dir === undefined && !isLoopback(listener.listenHost)) {
    if (own.allowRemote !== true) {
      throw new RangeError(
        `The "listen.host" ${show(listener.listenHost)} is not a loopback address: anyone who ` +
          `reaches it would log in as the proxy's AWS identity. Listen on 127.0.0.1 or a Unix ` +
          `socket, or pass allowRemote: true with a "password" clients must give`,
      );
    }
    if (password === undefined) {
      throw new RangeError(
        `The "password" option is required with allowRemote: clients on other hosts must log ` +
          `in to the proxy (SCRAM-SHA-256) before it logs in for them with IAM`,
      );
    }
  }
  for (const name of ["onLogin", "onClose"]) {
    if (own[name] !== undefined && typeof own[name] !== "function") {
      throw new TypeError(`The "${name}" option must be a function, got ${show(own[name])}`);
    }
  }
  const target = intake({ fn: "startProxy", url: "connectionString" }, rest);
  for (const key of Object.keys(target.driver)) {
    throw new TypeError(`startProxy() has no "${key}" option`);
  }
  if (target.prewarm !== undefined) throw new TypeError(`startProxy() has no "prewarm" option`);
  return {
    ...listener,
    target,
    socketDir: dir as string | undefined,
    password: password as string | undefined,
    // libpq's connect_timeout=0 (null here): no limit but setTimeout's.
    connectTimeoutMs: own.connectTimeout === undefined && target.target.connectTimeout === null
      ? 2 ** 31 - 1
      : 1000 * checkCount(
        own.connectTimeout,
        "connectTimeout",
        1,
        target.target.connectTimeout ?? 30,
        2_147_483,
      ),
    shutdownTimeoutMs: 1000 * checkCount(own.shutdownTimeout, "shutdownTimeout", 0, 30),
    onLogin: own.onLogin as ProxyConfig["onLogin"],
    http: checkHttp(own.http),
    onClose: own.onClose as ProxyConfig["onClose"],
    logger: checkLogger(target.iam.logger),
  };
}

function checkHttp(value: unknown): ProxyConfig["http"] {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null) {
    throw new TypeError(`The "http" option must be an object { host, port }, got ${show(value)}`);
  }
  const { host = "127.0.0.1", port = 0 } = value as Record<string, unknown>;
  if (typeof host !== "string" || host === "") {
    throw new TypeError(`The "http.host" option must be a host or address, got ${show(host)}`);
  }
  return { host, port: port === 0 ? 0 : checkPort(port, "http.port") };
}
