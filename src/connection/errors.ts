// The error a connection start fails with when pg-iam's own part of it fails (TCP, TLS, the login
// exchange, the connect timeout): one class, a stable code, the step. A server's ErrorResponse
// during the login is not one of these: the driver reads it itself and raises its own class.

/** The steps of a connection start, in order. */
export type ConnectStep = "credentials" | "connect" | "tls" | "auth";

/**
 * pg-iam's own codes. `CONNECT_TIMEOUT` and `CONNECTION_CLOSED` are postgres.js's words for the same
 * events (its pool retries a `CONNECTION_CLOSED`, as it does without pg-iam).
 */
export type PgIamConnectCode =
  /** The connect timeout (the driver's `connect_timeout` / `connectionTimeoutMillis`) ran out. */
  | "CONNECT_TIMEOUT"
  /** The server closed the connection before the login was done. */
  | "CONNECTION_CLOSED"
  /** The server sent what a PostgreSQL server does not at that point (malformed, unexpected). */
  | "PROTOCOL_VIOLATION"
  /** The server asked for another authentication method than the cleartext password IAM uses. */
  | "AUTH_METHOD"
  /** The server answered the SSLRequest with "N": TLS refused. */
  | "TLS_REFUSED"
  /** The TLS handshake failed with no code of the runtime's own. */
  | "TLS"
  /** A direct TLS handshake (`sslnegotiation=direct`) failed: the server does not speak it. */
  | "DIRECT_TLS_FAILED"
  /** Direct TLS was set up without the "postgresql" ALPN protocol: not a PostgreSQL server. */
  | "DIRECT_TLS_ALPN"
  /** Cloudflare Workers: opening the connection failed (the runtime gives no code). */
  | "CONNECT"
  /** A server's ErrorResponse, as reported to `onIamConnect` (the query gets the driver's class). */
  | "SERVER_ERROR";

/**
 * The runtime's own code of a failed socket or TLS handshake, passed through unchanged, as the
 * plain driver passes it: `ECONNREFUSED`, `ECONNRESET`, `ETIMEDOUT`, `ENOTFOUND`, `EAI_AGAIN`,
 * `EHOSTUNREACH`, `ERR_TLS_CERT_ALTNAME_INVALID`, `CERT_HAS_EXPIRED`,
 * `DEPTH_ZERO_SELF_SIGNED_CERT`, `SELF_SIGNED_CERT_IN_CHAIN`, `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, …
 */
export type SystemErrorCode = `E${string}` | `${string}CERT${string}` | `UNABLE_TO_${string}`;

/** Every `code` a {@linkcode ConnectError} can have. */
export type ConnectErrorCode = PgIamConnectCode | SystemErrorCode;

/** What a {@linkcode ConnectError} is made of. */
export interface ConnectErrorOptions {
  /** The code. */
  code: ConnectErrorCode;
  /** The step the connection start failed at. */
  step: ConnectStep;
  /** The host connected to, when known. */
  host?: string;
  /** The port connected to, when known. */
  port?: number;
  /** The error this one explains (a socket's or TLS handshake's own). */
  cause?: unknown;
  /** `SERVER_ERROR`: the server's ErrorResponse fields, by their protocol letter (S, C, M, D, H). */
  server?: Readonly<Record<string, string>>;
}

const SYSTEM = /^(E[A-Z0-9_]+|[A-Z0-9_]*CERT[A-Z0-9_]*|UNABLE_TO_[A-Z0-9_]+)$/;

/**
 * A connection start that failed in pg-iam's part of it: TCP, TLS, the login exchange, or the
 * connect timeout. `code` says what (see {@linkcode ConnectErrorCode}; a socket's own code such as
 * `ECONNREFUSED` is kept as it is), `step` where. Never holds a token or a secret: the messages
 * name the host, the port and what the server did.
 *
 * Other failures keep their own classes: a rejected token is an `IamAuthError`, a credentials
 * failure a `CredentialsError`, bad input a `TypeError` or `RangeError`, and a server's error
 * during the login (`3D000` database does not exist, `53300` too many connections, …) is the
 * driver's own (postgres.js's `PostgresError`, node-postgres's `DatabaseError`), as without pg-iam.
 *
 * @example
 * ```ts ignore
 * import { ConnectError, iamPostgres } from "@pg-iam/pg-iam/postgres";
 *
 * try {
 *   await iamPostgres(process.env.DATABASE_URL)`select 1`;
 * } catch (error) {
 *   if (error instanceof ConnectError && error.code === "CONNECT_TIMEOUT") {
 *     console.error(`no answer from ${error.host}:${error.port} (while at ${error.step})`);
 *   }
 * }
 * ```
 */
export class ConnectError extends Error {
  /** What failed: pg-iam's code, or the runtime's own (e.g. `ECONNREFUSED`). */
  readonly code: ConnectErrorCode;
  /** The step the connection start failed at. */
  readonly step: ConnectStep;
  /** The host connected to, when known. */
  declare readonly host?: string;
  /** The port connected to, when known. */
  declare readonly port?: number;
  /** `SERVER_ERROR`: the server's SQLSTATE (e.g. `3D000`). */
  declare readonly sqlState?: string;
  /** `SERVER_ERROR`: the server's severity (e.g. `FATAL`). */
  declare readonly severity?: string;
  /** A socket error's errno, as Node gives it. */
  declare readonly errno?: number | string;
  /** A socket error's system call (e.g. `connect`), as Node gives it. */
  declare readonly syscall?: string;
  /** A socket error's address, as Node gives it. */
  declare readonly address?: string;

  /**
   * Creates the error (pg-iam does; you would only catch it).
   *
   * @param message What happened, for a person.
   * @param options The code, the step and what else is known.
   */
  constructor(message: string, options: ConnectErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = options.code;
    this.step = options.step;
    const cause = options.cause as
      | { errno?: number | string; syscall?: string; address?: string }
      | undefined;
    // Only what is known, so that a log of the error shows no row of undefined.
    const known = {
      host: options.host,
      port: options.port,
      sqlState: options.server?.C,
      severity: options.server?.S,
      errno: cause?.errno,
      syscall: cause?.syscall,
      address: cause?.address,
    };
    for (const [key, value] of Object.entries(known)) {
      if (value !== undefined) {
        Object.defineProperty(this, key, {
          value,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
    }
  }

  /**
   * A socket's or TLS handshake's own error as a ConnectError with the same code, errno, syscall
   * and address and the same message (what the plain driver would have shown), the original as
   * its cause; a ConnectError, or an error of another class that is not a system error, unchanged.
   */
  static from(error: unknown, step: ConnectStep, host?: string, port?: number): unknown {
    if (error instanceof ConnectError || !(error instanceof Error)) return error;
    const code = (error as { code?: unknown }).code;
    if (typeof code !== "string" || !SYSTEM.test(code)) return error;
    if (error instanceof TypeError || error instanceof RangeError) return error;
    return new ConnectError(error.message, {
      code: code as SystemErrorCode,
      step,
      host,
      port,
      cause: error,
    });
  }
}

Object.defineProperty(ConnectError.prototype, "name", {
  value: "ConnectError",
  writable: true,
  configurable: true,
});
