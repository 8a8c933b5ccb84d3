// The listening side's options, checked once (by startGateway() and startProxy()): where to listen,
// TLS for clients, and the limits every connection is held to before it is a session.

import tls from "node:tls";
import { show } from "../core/errors.ts";
import { checkPort } from "../core/checks.ts";

export interface ListenerConfig {
  listenHost: string;
  listenPort: number;
  /** A Unix socket's path instead of host and port. */
  listenPath: string | undefined;
  secureContext: tls.SecureContext | undefined;
  maxConnections: number;
  maxStartups: number;
  maxStartupsPerAddress: number;
  maxConnectionRate: number | undefined;
  connectionBurst: number;
  authenticationTimeoutMs: number;
}

/** The limits' defaults, which a tool may lower or raise (the gateway's: 100 sessions). */
export interface LimitDefaults {
  maxConnections: number;
  authenticationTimeoutMs: number;
}

/** Checks `o.listen`, `o.tls` (given as `secureContext`) and the limits. */
export function checkListener(
  o: Record<string, unknown>,
  secureContext: tls.SecureContext | undefined,
  defaults: LimitDefaults,
): ListenerConfig {
  const listen = o.listen ?? {};
  if (typeof listen !== "object" || listen === null) {
    throw new TypeError(`The "listen" option must be an object, got ${show(listen)}`);
  }
  const { host: listenHost = "127.0.0.1", port: listenPort = 0, path } = listen as Record<
    string,
    unknown
  >;
  if (typeof listenHost !== "string" || listenHost === "") {
    throw new TypeError(
      `The "listen.host" option must be a host or address, got ${show(listenHost)}`,
    );
  }
  if (listenPort !== 0) checkPort(listenPort, "listen.port");
  if (path !== undefined && (typeof path !== "string" || path === "" || path.includes("\0"))) {
    throw new TypeError(`The "listen.path" option must be a file path, got ${show(path)}`);
  }
  const maxConnections = checkCount(o.maxConnections, "maxConnections", 1, defaults.maxConnections);
  const maxStartups = checkCount(o.maxStartups, "maxStartups", 1, 10 * maxConnections);
  return {
    listenHost,
    listenPort: listenPort as number,
    listenPath: path as string | undefined,
    secureContext,
    maxConnections,
    maxStartups,
    maxStartupsPerAddress: checkCount(
      o.maxStartupsPerAddress,
      "maxStartupsPerAddress",
      1,
      Math.min(maxConnections, maxStartups),
    ),
    maxConnectionRate: o.maxConnectionRate === undefined
      ? undefined
      : checkRate(o.maxConnectionRate, "maxConnectionRate"),
    connectionBurst: o.connectionBurst === undefined
      ? Math.max(1, Math.floor(Number(o.maxConnectionRate ?? 1)))
      : checkCount(o.connectionBurst, "connectionBurst", 1, 1),
    // setTimeout's longest delay.
    authenticationTimeoutMs: checkCount(
      o.authenticationTimeoutMs,
      "authenticationTimeoutMs",
      1,
      defaults.authenticationTimeoutMs,
      2 ** 31 - 1,
    ),
  };
}

function checkRate(value: unknown, option: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new RangeError(
      `The "${option}" option must be a positive number (per second), got ${show(value)}`,
    );
  }
  return value;
}

export function checkCount(
  value: unknown,
  option: string,
  min: number,
  fallback: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number") {
    throw new TypeError(`The "${option}" option must be a number, got ${show(value)}`);
  }
  if (!Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`;
    throw new RangeError(`The "${option}" option must be an integer ${range}, got ${show(value)}`);
  }
  return value;
}

// Secrets are described by their type only: an error message must never quote one.
export const kind = (value: unknown): string =>
  typeof value === "string" ? (value === "" ? "an empty string" : "a string") : show(value);

const PEM = (label: RegExp) => new RegExp(`-----BEGIN ${label.source}-----[\\s\\S]+-----END `);

/** `{ cert, key }` (PEM) as a server's secure context; false: none. `required`: the text if absent. */
export function checkServerTls(
  value: unknown,
  required: string | undefined,
): tls.SecureContext | undefined {
  if (value === false || (value === undefined && required === undefined)) return undefined;
  if (value === undefined) throw new TypeError(required);
  if (typeof value !== "object" || value === null) {
    throw new TypeError(`The "tls" option must be { cert, key } or false, got ${show(value)}`);
  }
  const { cert, key } = value as Record<string, unknown>;
  if (typeof cert !== "string" || !PEM(/CERTIFICATE/).test(cert)) {
    throw new TypeError(`The "tls.cert" option must be a PEM certificate, got ${kind(cert)}`);
  }
  if (typeof key !== "string" || !PEM(/(?:[A-Z]+ )?PRIVATE KEY/).test(key)) {
    throw new TypeError(`The "tls.key" option must be a PEM private key, got ${kind(key)}`);
  }
  try {
    return tls.createSecureContext({ cert, key });
  } catch (cause) {
    // The TLS library's own words (no key material in them), e.g. a key that does not match.
    throw new TypeError(
      `The "tls" option's cert and key cannot be used: ${(cause as Error).message}`,
      { cause },
    );
  }
}
