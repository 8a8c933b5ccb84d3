// What a CLI command connects to and signs for, from a connection URL, flags and the PG*
// variables (flags win over the URL, the URL over the environment), checked up front so bad
// usage fails before any network traffic.

import type { Credentials } from "../core/credentials.ts";
import { dsqlToken } from "../core/dsql.ts";
import { rdsToken } from "../core/rds.ts";
import { readEnv } from "../core/_env.ts";
import {
  type ConnectionTarget,
  KNOWN_PARAMS,
  parseTarget,
  type SslMode,
  type TlsSettings,
} from "../connection/target.ts";
import {
  dsqlEndpoint,
  isDsqlClusterId,
  isRegion,
  type ParsedHostname,
  parseHostname,
} from "../core/hostname.ts";
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

/** A resolved target. */
export interface Target {
  /** The address to connect to: libpq's hostaddr if given, else the host (a bare DSQL cluster id expanded). */
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
  /** The flag or URL parameter the region came from: `--region` or `iam_region`. */
  regionFrom: string;
  /** Where the signing hostname came from, as the user wrote it (`--hostname`, `iam_host`, …). */
  hostFrom: string;
  /** What parseHostname() makes of the signing hostname. */
  parsed: ParsedHostname | undefined;
  expiresIn: number | undefined;
  profile: string | undefined;
  sslmode: SslMode;
  /** Everything about TLS the target asks for (client certificates, CRL, versions, SNI). */
  tls: TlsSettings;
  /** Startup parameters for the server (application_name, options, …). */
  serverParams: Record<string, string>;
}

/**
 * Resolves the target of `command` from its positional URL and flags. A region that contradicts
 * the endpoint name is a UsageError, unless `checkRegion` is false (the doctor reports it).
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
    if (error instanceof TypeError || error instanceof RangeError) {
      throw new UsageError(lower(error.message), command);
    }
    throw error;
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
  let host = t.host ?? t.hostaddr;
  if (host === undefined) {
    throw new UsageError(
      `no host was given: pass a connection URL (postgres://user@host/db), --hostname HOST, or ` +
        `set PGHOST`,
      command,
    );
  }
  const port = t.port ?? 5432;
  const region = flag("region") ?? iam.region;
  const regionFrom = flag("region") !== undefined ? "--region" : "iam_region";
  if (region !== undefined && !isRegion(region)) {
    throw new UsageError(
      `${regionFrom} must be an AWS region name like us-east-1, got ${JSON.stringify(region)}`,
      command,
    );
  }
  // With libpq's hostaddr, the host is the name: what the token and the certificate are for.
  const signingHostname = flag("signing-hostname") ?? iam.signingHostname ??
    (t.hostaddr !== undefined && t.host !== undefined ? t.host : undefined);
  const signingPort = int(values, "signing-port", 1, 65535, command) ?? iam.signingPort ?? port;
  if (!(signingPort >= 1 && signingPort <= 65535)) {
    throw new UsageError(`iam_port must be a port from 1 to 65535, got ${signingPort}`, command);
  }

  const service = iam.service;
  if (service !== undefined && service !== "rds" && service !== "dsql") {
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
  // Where the name signed for came from, as the user wrote it.
  const hostFrom = flag("signing-hostname") !== undefined
    ? "--signing-hostname"
    : iam.signingHostname !== undefined
    ? "iam_host"
    : flag("hostname") !== undefined
    ? "--hostname"
    : bare
    ? "the host argument"
    : urlNamesHost(url)
    ? "the URL's host"
    : "PGHOST";

  const user = t.user ?? (dsql ? "admin" : undefined);
  if (user === undefined) {
    throw new UsageError(`no user: pass --username (or put it in the URL)`, command);
  }
  const admin = values.admin === true || iam.admin === true ||
    (iam.admin === undefined && user === "admin");
  if (admin && !dsql) {
    throw new UsageError(`--admin is for Aurora DSQL; this is an RDS endpoint`, command);
  }

  let expiresIn = int(values, "expires-in", 1, dsql ? 604800 : 900, command);
  if (expiresIn === undefined && iam.expiresIn !== undefined) {
    expiresIn = iam.expiresIn;
    if (!(expiresIn >= 1 && expiresIn <= (dsql ? 604800 : 900))) {
      throw new UsageError(
        `iam_expires_in must be 1 to ${dsql ? 604800 : 900} seconds, got ${expiresIn}`,
        command,
      );
    }
  }

  const target: Target = {
    host: t.hostaddr ?? host,
    port,
    user,
    database: t.database ?? (dsql ? "postgres" : user),
    service: dsql ? "dsql" : "rds",
    region,
    admin: dsql && admin,
    signingHostname: signing,
    signingPort,
    parsed,
    expiresIn,
    regionFrom,
    hostFrom,
    profile: flag("profile") ?? iam.profile,
    sslmode: t.ssl.mode,
    tls: t.ssl,
    serverParams: t.serverParams,
  };
  const conflict = checkRegion ? regionConflict(target) : undefined;
  if (conflict) throw new UsageError(conflict, command);
  return target;
}

/**
 * Why the region asked for (--region, iam_region) cannot be used with the endpoint name, in the
 * user's words; undefined when it can.
 */
export function regionConflict(target: Target): string | undefined {
  const { region, parsed } = target;
  if (region === undefined || parsed === undefined || region === parsed.region) return undefined;
  return `${target.regionFrom} ${JSON.stringify(region)} contradicts the region ` +
    `${JSON.stringify(parsed.region)} of the endpoint ${JSON.stringify(target.signingHostname)} ` +
    `(${target.hostFrom}): a token signed for another region is always rejected; drop ` +
    `${target.regionFrom} or correct it`;
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
