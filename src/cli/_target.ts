// What a CLI command connects to and signs for, from a connection URL, flags and the PG*
// variables (flags win over the URL, the URL over the environment), checked up front so bad
// usage fails before any network traffic.

import type { UrlTarget } from "../proxy/url.ts";
import type { Credentials } from "../core/credentials.ts";
import { isDsqlClusterId, isRegion, parseHostname } from "../core/hostname.ts";
import {
  DSQL_MAX_EXPIRES_IN,
  RDS_MAX_EXPIRES_IN,
  resolveSigning,
  type Signing,
  type SigningNames,
  signToken,
} from "../core/signing.ts";
import {
  type ConnectionTarget,
  KNOWN_PARAMS,
  parseTarget,
  type SslMode,
} from "../connection/target.ts";
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
    help: `Token lifetime: 1 to ${RDS_MAX_EXPIRES_IN} (RDS), to ${DSQL_MAX_EXPIRES_IN} (DSQL). ` +
      `Default: ${RDS_MAX_EXPIRES_IN}.`,
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
      "--dangerously-disable-tls. Default: the URL's, else PGSSLMODE.",
  },
  sslrootcert: {
    type: "string",
    arg: "FILE",
    help: "CA certificates to trust (a file, or system). Default: the URL's, else " +
      "PGSSLROOTCERT, else the RDS CA bundle (RDS), the system's (DSQL).",
  },
  "dangerously-disable-tls": {
    type: "boolean",
    help: "Allow sslmode=disable, sending the token in plaintext (a local gateway only).",
  },
};

export type { SslMode };

/**
 * A resolved target: what to connect to, what to sign (the core's {@linkcode Signing}), TLS and
 * the startup parameters ({@linkcode UrlTarget}, which a URL is made of), and the CLI's extras.
 */
export interface Target extends UrlTarget {
  /** DSQL: whether `DbConnectAdmin` is signed. */
  admin: boolean;
  profile: string | undefined;
  /** The flag or URL parameter that asked for a region (`--region`, `iam_region`), if any. */
  regionFrom: string | undefined;
  /** Why the region asked for cannot be used (only when resolveTarget's `checkRegion` is false). */
  conflict?: string;
  sslmode: SslMode;
}

/**
 * Resolves the target of `command` from its positional URL and flags. A region that contradicts
 * the endpoint name is a UsageError, unless `checkRegion` is false (the doctor reports it: the
 * target then signs for the endpoint's region, and `conflict` says why).
 */
export function resolveTarget(
  url: string | undefined,
  values: Parsed["values"],
  command: string,
  checkRegion = true,
): Target {
  const flag = (name: string) => str(values, name);
  // A positional without a scheme or "=" is a host name, as `psql -h` takes one.
  const bare = url !== undefined && !url.includes("://") && !/^\s*[A-Za-z_]+\s*=/.test(url);
  let t: ConnectionTarget;
  try {
    t = parseTarget({
      url: bare ? undefined : url,
      explicit: {
        host: flag("hostname") ?? (bare ? url : undefined),
        port: int(values, "port", 1, 65535, command),
        user: flag("username"),
        database: flag("database"),
        sslmode: flag("sslmode"),
        sslrootcert: flag("sslrootcert"),
      },
      explicitName: (key) => `--${key === "host" ? "hostname" : key === "user" ? "username" : key}`,
      dangerouslyDisableTls: values["dangerously-disable-tls"] === true,
      optOutName: "--dangerously-disable-tls",
    });
  } catch (error) {
    throw usage(error, command);
  }
  const unknown = Object.keys(t.extraParams);
  if (unknown.length) {
    throw new UsageError(
      `unknown connection URL parameter ${JSON.stringify(unknown[0])} (pg-iam reads ` +
        `${KNOWN_PARAMS.join(", ")})`,
      command,
    );
  }
  const iam = t.iam;
  const host = t.host ?? t.hostaddr;
  if (host === undefined) {
    throw new UsageError(
      `no host was given: pass a connection URL (postgres://user@host/db), --hostname HOST, or ` +
        `set PGHOST`,
      command,
    );
  }
  const port = t.port ?? 5432;
  const region = flag("region") ?? iam.region;
  const regionFrom = flag("region") === undefined && iam.region !== undefined
    ? "iam_region"
    : "--region";
  if (region !== undefined && !isRegion(region)) {
    throw new UsageError(
      `${regionFrom} must be an AWS region name like us-east-1, got ${JSON.stringify(region)}`,
      command,
    );
  }
  // With libpq's hostaddr, the host is the name: what the token and the certificate are for.
  const signingHostname = flag("signing-hostname") ?? iam.signingHostname ??
    (t.hostaddr !== undefined && t.host !== undefined ? t.host : undefined);
  // Each input named as the user wrote it: a flag, a URL parameter, or where the host came from.
  const names: SigningNames = {
    host: flag("hostname") !== undefined
      ? "--hostname"
      : bare
      ? "the host argument"
      : urlNamesHost(url)
      ? "the URL's host"
      : "PGHOST",
    signingHostname: flag("signing-hostname") !== undefined
      ? "--signing-hostname"
      : iam.signingHostname !== undefined
      ? "iam_host"
      : "the URL's host",
    signingPort: flag("signing-port") !== undefined ? "--signing-port" : "iam_port",
    port: "--port",
    user: "--username",
    region: regionFrom,
    service: values.dsql === true ? "--dsql" : "iam_service",
    admin: values.admin === true ? "--admin" : "iam_admin",
    expiresIn: flag("expires-in") !== undefined
      ? "--expires-in"
      : t.iamParams?.expiresIn ?? "iam_expires_in",
  };
  // The CLI's own default: a bare DSQL cluster id (and --dsql) signs for DSQL, whose user is admin.
  const dsql = values.dsql === true ||
    (iam.service === undefined && signingHostname === undefined && isDsqlClusterId(host));
  const user = t.user;
  if (
    user === undefined && !dsql && iam.service !== "dsql" &&
    parseHostname(signingHostname ?? host)?.service !== "dsql"
  ) {
    throw new UsageError(`no user: pass --username (or put it in the URL)`, command);
  }
  const input = {
    host,
    signingHostname,
    port,
    signingPort: number(flag("signing-port")) ?? iam.signingPort,
    user,
    region,
    service: dsql ? "dsql" : iam.service,
    admin: values.admin === true ? true : iam.admin,
    expiresIn: number(flag("expires-in")) ?? iam.expiresIn,
    profile: flag("profile") ?? iam.profile,
  };
  let signing: Signing;
  let conflict: string | undefined;
  try {
    try {
      signing = resolveSigning(input, names);
    } catch (error) {
      // The doctor reports a region that contradicts the endpoint as its first step.
      if (checkRegion || !/ contradicts the region /.test((error as Error).message)) throw error;
      conflict = lower((error as Error).message);
      signing = resolveSigning({ ...input, region: undefined }, names);
    }
  } catch (error) {
    throw usage(error, command);
  }
  const id = signing.service === "dsql" && signingHostname === undefined && isDsqlClusterId(host);
  return {
    ...signing,
    host: t.hostaddr ?? (id ? signing.signingHostname : host),
    port,
    database: t.database ?? (signing.service === "dsql" ? "postgres" : signing.user),
    admin: signing.action === "DbConnectAdmin",
    profile: input.profile,
    regionFrom: region === undefined ? undefined : regionFrom,
    conflict,
    sslmode: t.ssl.mode,
    tls: t.ssl,
    serverParams: t.serverParams,
    connectTimeout: t.connectTimeout,
    keepAlive: t.keepAlive,
    targetSessionAttrs: t.targetSessionAttrs,
  };
}

// A flag's whole number, else the text itself (for the resolver to name and quote).
function number(value: string | undefined): number | string | undefined {
  return value !== undefined && /^\d+$/.test(value) ? Number(value) : value;
}

// A TypeError or RangeError of a check, as bad usage.
function usage(error: unknown, command: string): unknown {
  return error instanceof TypeError || error instanceof RangeError
    ? new UsageError(lower(error.message), command)
    : error;
}

// Whether a connection string names a host (else the host came from PGHOST).
function urlNamesHost(url: string | undefined): boolean {
  if (url === undefined) return false;
  if (/^\s*[A-Za-z_]+\s*=/.test(url)) return /(^|\s)(host|hostaddr)\s*=/.test(url);
  return /^\s*[a-z]+:\/\/(?:[^@/?#]*@)?[^/?#:@]/i.test(url);
}

/** Messages from the parser start a sentence; the CLI's continue one. */
export function lower(message: string): string {
  return message[0].toLowerCase() + message.slice(1);
}

/**
 * Signs a token for `target` at `at` (credentials: given, else the environment, else the AWS
 * chain).
 */
export function signFor(
  target: Target,
  credentials?: Credentials,
  at: Date = new Date(),
): Promise<string> {
  return signToken(credentials, target, at, { profile: target.profile });
}
