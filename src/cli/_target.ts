// What a CLI command connects to and signs for, from a connection URL, flags and the PG*
// variables (flags win over the URL, the URL over the environment), checked up front so bad
// usage fails before any network traffic.

import type { Credentials } from "../credentials.ts";
import { dsqlToken } from "../dsql.ts";
import { rdsToken } from "../rds.ts";
import { readEnv } from "../_env.ts";
import { dsqlEndpoint, isDsqlClusterId, type ParsedHostname, parseHostname } from "../hostname.ts";
import { type Flag, int, type Parsed, str, UsageError } from "./_args.ts";

/** Flags shared by token, env, psql and doctor; the names of `aws rds generate-db-auth-token`. */
export const TARGET_FLAGS: Record<string, Flag> = {
  hostname: {
    type: "string",
    arg: "HOST",
    help: "The endpoint (or a DSQL cluster id, with --region). Default: the URL's, else PGHOST.",
  },
  port: { type: "string", arg: "PORT", help: "The port. Default: the URL's, else 5432." },
  username: {
    type: "string",
    arg: "USER",
    help: "The database user. Default: the URL's, else PGUSER; for DSQL, admin.",
  },
  database: {
    type: "string",
    arg: "DB",
    help: "The database. Default: the URL's, else PGDATABASE.",
  },
  region: {
    type: "string",
    arg: "REGION",
    help: "The AWS region. Default: the endpoint's, else AWS_REGION, else the profile's.",
  },
  "expires-in": {
    type: "string",
    arg: "SECONDS",
    help: "Token lifetime: 1 to 900 (RDS), to 604800 (DSQL). Default: 900.",
  },
  dsql: { type: "boolean", help: "Sign for Aurora DSQL (automatic for DSQL endpoint names)." },
  admin: { type: "boolean", help: "DSQL: sign DbConnectAdmin (automatic for the user admin)." },
  "signing-hostname": {
    type: "string",
    arg: "HOST",
    help: "The endpoint name to sign for when you connect through a CNAME, tunnel or proxy.",
  },
  "signing-port": {
    type: "string",
    arg: "PORT",
    help: "The port to sign for (the endpoint's, behind a tunnel). Default: --port.",
  },
  profile: { type: "string", arg: "NAME", help: "The AWS profile for credentials and region." },
  sslmode: {
    type: "string",
    arg: "MODE",
    help: "verify-full (default), verify-ca or require; disable only with " +
      "--dangerously-disable-tls.",
  },
  sslrootcert: {
    type: "string",
    arg: "FILE",
    help: "CA certificates to trust. Default: the RDS CA bundle (RDS), the system's (DSQL).",
  },
  "dangerously-disable-tls": {
    type: "boolean",
    help: "Allow sslmode=disable, sending the token in plaintext (a local gateway only).",
  },
};

/** TLS modes the CLI accepts; allow and prefer can fall back to plaintext, so they are refused. */
export type SslMode = "verify-full" | "verify-ca" | "require" | "disable";

/** A resolved target. */
export interface Target {
  /** The host to connect to (a bare DSQL cluster id is expanded). */
  host: string;
  port: number;
  user: string;
  database: string;
  service: "rds" | "dsql";
  /** Explicit region (flag, URL or environment); undefined: the endpoint's or the profile's. */
  region: string | undefined;
  admin: boolean;
  /** The endpoint name the token is signed for, and the certificate must carry. */
  signingHostname: string;
  signingPort: number;
  /** What parseHostname() makes of the signing hostname. */
  parsed: ParsedHostname | undefined;
  expiresIn: number | undefined;
  profile: string | undefined;
  sslmode: SslMode;
  sslrootcert: string | undefined;
}

const URL_KEYS = new Set([
  "iam_region",
  "iam_host",
  "iam_port",
  "iam_expiration",
  "iam_expires_in",
  "iam_service",
  "iam_admin",
  "iam_profile",
  "sslmode",
  "ssl",
  "sslrootcert",
]);

interface UrlParts {
  host?: string;
  port?: string;
  user?: string;
  database?: string;
  params: URLSearchParams;
}

/** Reads a connection URL (or a bare host name) into its parts. */
function readUrl(text: string, command: string): UrlParts {
  if (!text.includes("://")) return { host: text, params: new URLSearchParams() };
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(
      `the connection URL is not valid: expected postgres://user@host:port/database?…`,
      command,
    );
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new UsageError(
      `the connection URL must start with postgres:// or postgresql://, got ${url.protocol}//`,
      command,
    );
  }
  if (url.password) {
    throw new UsageError(
      `the connection URL has a password, which IAM authentication replaces with a token: ` +
        `remove ":<password>"`,
      command,
    );
  }
  if (url.hostname.includes(",")) {
    throw new UsageError(`the connection URL names several hosts: give one`, command);
  }
  for (const key of url.searchParams.keys()) {
    if (!URL_KEYS.has(key)) {
      throw new UsageError(
        `unknown connection URL parameter ${JSON.stringify(key)} (pg-iam reads ` +
          `${[...URL_KEYS].join(", ")})`,
        command,
      );
    }
  }
  return {
    host: url.hostname.replace(/^\[(.*)\]$/, "$1") || undefined,
    port: url.port || undefined,
    user: url.username ? decodeURIComponent(url.username) : undefined,
    database: url.pathname.length > 1 ? decodeURIComponent(url.pathname.slice(1)) : undefined,
    params: url.searchParams,
  };
}

function portOf(value: string | undefined, what: string, command: string): number | undefined {
  if (value === undefined) return undefined;
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= 65535)) {
    throw new UsageError(
      `${what} must be a port from 1 to 65535, got ${JSON.stringify(value)}`,
      command,
    );
  }
  return n;
}

/** Resolves the target of `command` from its positional URL and flags. */
export function resolveTarget(
  url: string | undefined,
  values: Parsed["values"],
  command: string,
): Target {
  const u: UrlParts = url === undefined ? { params: new URLSearchParams() } : readUrl(url, command);
  // The last of a repeated parameter wins, as in libpq.
  const p = { get: (name: string) => u.params.getAll(name).at(-1) ?? null };
  const flag = (name: string) => str(values, name);

  let host = flag("hostname") ?? u.host ?? readEnv("PGHOST");
  if (host === undefined) {
    throw new UsageError(`no host: pass a connection URL or --hostname`, command);
  }
  if (host.startsWith("/")) {
    throw new UsageError(
      `IAM authentication needs a TCP host, got the unix socket ${JSON.stringify(host)}`,
      command,
    );
  }
  const port = int(values, "port", 1, 65535, command) ??
    portOf(u.port, "the URL's port", command) ??
    portOf(readEnv("PGPORT"), "PGPORT", command) ?? 5432;
  const region = flag("region") ?? p.get("iam_region") ?? undefined;
  const signingHostname = flag("signing-hostname") ?? p.get("iam_host") ?? undefined;
  const signingPort = int(values, "signing-port", 1, 65535, command) ??
    portOf(p.get("iam_port") ?? undefined, "iam_port", command) ?? port;

  const service = p.get("iam_service");
  if (service !== null && service !== "rds" && service !== "dsql") {
    throw new UsageError(
      `iam_service must be rds or dsql, got ${JSON.stringify(service)}`,
      command,
    );
  }
  let parsed = parseHostname(signingHostname ?? host);
  const clusterId = isDsqlClusterId(host) && signingHostname === undefined;
  const dsql = values.dsql === true || service === "dsql" || parsed?.service === "dsql" ||
    clusterId;
  if (dsql && parsed?.service === "rds") {
    throw new UsageError(
      `${JSON.stringify(signingHostname ?? host)} is an RDS endpoint, not Aurora DSQL`,
      command,
    );
  }
  if (clusterId && dsql) {
    const r = region ?? readEnv("AWS_REGION") ?? readEnv("AWS_DEFAULT_REGION");
    if (r === undefined) {
      throw new UsageError(
        `${JSON.stringify(host)} is a bare DSQL cluster id: pass --region (or iam_region)`,
        command,
      );
    }
    host = dsqlEndpoint(host, r);
    parsed = parseHostname(host);
  }
  const signing = signingHostname ?? host;

  const user = flag("username") ?? u.user ?? readEnv("PGUSER") ??
    (dsql ? "admin" : undefined);
  if (user === undefined) {
    throw new UsageError(`no user: pass --username (or put it in the URL)`, command);
  }
  const adminParam = p.get("iam_admin");
  const admin = values.admin === true || adminParam === "true" || adminParam === "1" ||
    (adminParam === null && user === "admin");
  if (admin && !dsql) {
    throw new UsageError(`--admin is for Aurora DSQL; this is an RDS endpoint`, command);
  }

  let expiresIn = int(values, "expires-in", 1, dsql ? 604800 : 900, command);
  const expiresParam = p.get("iam_expires_in") ?? p.get("iam_expiration");
  if (expiresIn === undefined && expiresParam !== null) {
    expiresIn = /^\d+$/.test(expiresParam) ? Number(expiresParam) : NaN;
    if (!(expiresIn >= 1 && expiresIn <= (dsql ? 604800 : 900))) {
      throw new UsageError(
        `iam_expires_in must be 1 to ${dsql ? 604800 : 900} seconds, got ` +
          JSON.stringify(expiresParam),
        command,
      );
    }
  }

  const sslRaw = flag("sslmode") ?? p.get("sslmode") ?? p.get("ssl") ?? readEnv("PGSSLMODE") ??
    "verify-full";
  const sslmode = sslRaw === "true" ? "verify-full" : sslRaw === "false" ? "disable" : sslRaw;
  if (sslmode === "allow" || sslmode === "prefer") {
    throw new UsageError(
      `sslmode ${sslmode} can fall back to plaintext, which would send the IAM token ` +
        `unencrypted: use verify-full (the default)`,
      command,
    );
  }
  if (!["verify-full", "verify-ca", "require", "disable"].includes(sslmode)) {
    throw new UsageError(
      `sslmode must be verify-full, verify-ca, require or disable, got ${JSON.stringify(sslRaw)}`,
      command,
    );
  }
  if (sslmode === "disable" && values["dangerously-disable-tls"] !== true) {
    throw new UsageError(
      `sslmode disable would send the IAM token in plaintext: add --dangerously-disable-tls ` +
        `if you mean it (a local gateway)`,
      command,
    );
  }
  let sslrootcert = flag("sslrootcert") ?? p.get("sslrootcert") ?? readEnv("PGSSLROOTCERT");
  if (sslrootcert === "system") sslrootcert = undefined;

  return {
    host,
    port,
    user,
    database: flag("database") ?? u.database ??
      readEnv("PGDATABASE") ?? (dsql ? "postgres" : user),
    service: dsql ? "dsql" : "rds",
    region,
    admin: dsql && admin,
    signingHostname: signing,
    signingPort,
    parsed,
    expiresIn,
    profile: flag("profile") ?? p.get("iam_profile") ?? undefined,
    sslmode: sslmode as SslMode,
    sslrootcert,
  };
}

/** Signs a token for `target` (credentials: given, else the environment, else the AWS chain). */
export function signFor(target: Target, credentials?: Credentials): Promise<string> {
  const common = {
    region: target.region,
    expiresIn: target.expiresIn,
    profile: target.profile,
    credentials,
  };
  return target.service === "dsql"
    ? dsqlToken({
      hostname: target.signingHostname,
      username: target.user,
      admin: target.admin,
      ...common,
    })
    : rdsToken({
      hostname: target.host,
      signingHostname: target.signingHostname,
      port: target.signingPort,
      username: target.user,
      ...common,
    });
}
