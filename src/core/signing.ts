// What exactly is signed, worked out once for rdsToken(), dsqlToken(), a driver's connections
// (connection/sign.ts) and the CLI: from a host, a user and the IAM inputs, the service, the name
// and port signed for, the action, the region and the lifetime; then the request to presign.
// Each caller says how its user typed each input (an option, a connection string parameter, a
// flag), and every message names it so.

import { type CredentialsContext, resolveCredentials } from "./credentials.ts";
import { bad, phrase, show, subject } from "./errors.ts";
import { checkEndpoint, dsqlEndpoint, isDsqlClusterId, type ParsedHostname } from "./hostname.ts";
import {
  checkPort,
  checkProfile,
  checkSigningDate,
  checkUsername,
  checkWhole,
  type RegionNames,
  resolveRegion,
  resolveRegionOrProfile,
} from "./checks.ts";
import { presign, type PresignInput } from "./sigv4.ts";

/**
 * The longest lifetime of an RDS token, in seconds: 15 minutes.
 *
 * @example
 * ```ts
 * import { RDS_MAX_EXPIRES_IN } from "@pg-iam/pg-iam";
 * console.log(RDS_MAX_EXPIRES_IN); // 900
 * ```
 */
export const RDS_MAX_EXPIRES_IN = 900;

/**
 * The longest lifetime of a DSQL token, in seconds: one week.
 *
 * @example
 * ```ts
 * import { DSQL_MAX_EXPIRES_IN } from "@pg-iam/pg-iam";
 * console.log(DSQL_MAX_EXPIRES_IN); // 604800
 * ```
 */
export const DSQL_MAX_EXPIRES_IN = 604800;

/** What a token is asked for, as the caller's user gave it (unchecked). */
export interface SigningInput {
  /** The host connected to (`hostname` of rdsToken() and dsqlToken()). */
  host: unknown;
  /** The endpoint name to sign for instead (a CNAME, tunnel or proxy). */
  signingHostname?: unknown;
  /** The port connected to. Default: 5432. */
  port?: unknown;
  /** The port to sign for (RDS). Default: `port`. */
  signingPort?: unknown;
  /** The database user. Default for DSQL: `admin`. */
  user?: unknown;
  region?: unknown;
  /** `"rds"` or `"dsql"`. Default: the endpoint name's, else `"rds"`. */
  service?: unknown;
  /** DSQL: `DbConnectAdmin` rather than `DbConnect`. Default: true for the user `admin`. */
  admin?: unknown;
  /** Seconds. Default: 900. */
  expiresIn?: unknown;
  /** The AWS profile whose region serves when nothing else gives one. */
  profile?: string;
}

/**
 * The word the user typed for each input, as messages name it: a library option's name
 * (`signingHostname`, read `the "signingHostname" option`), a connection string parameter
 * (`iam_host`), a flag (`--signing-hostname`) or a phrase (`the URL's host`). Default: the key.
 */
export type SigningNames = Partial<Record<keyof SigningInput, string>>;

/** What is signed, checked. */
export interface Signing {
  service: "rds" | "dsql";
  /** The name signed for: lower case; a bare DSQL cluster id expanded once its region is known. */
  signingHostname: string;
  /** The port signed for (RDS tokens carry it). */
  signingPort: number;
  user: string;
  /** `connect` (RDS), `DbConnectAdmin` or `DbConnect` (DSQL). */
  action: string;
  /** The signing region, or the promise of the profile's. */
  region: string | Promise<string>;
  expiresIn: number;
  /** What parseHostname() makes of the name signed for. */
  parsed: ParsedHostname | undefined;
}

/**
 * Works out what to sign from `input`, throwing a TypeError or RangeError that names the input
 * in `names`' words.
 */
export function resolveSigning(input: SigningInput, names: SigningNames = {}): Signing {
  // What only drivers and the CLI take: the service, and a port to sign other than the one used.
  const s = input.service;
  if (s !== undefined && s !== "rds" && s !== "dsql") {
    throw bad(names.service ?? "service", 'must be "rds" or "dsql"', s);
  }
  const signingPort = input.signingPort === undefined
    ? undefined
    : checkPort(input.signingPort, names.signingPort ?? "signingPort");
  const signing = resolve(input, names);
  if (input.admin !== undefined && signing.service !== "dsql") {
    throw new TypeError(`${subject(names.admin ?? "admin")} is for Aurora DSQL only (this is RDS)`);
  }
  if (signingPort !== undefined) signing.signingPort = signingPort;
  return signing;
}

// What every caller shares. `fn`: rdsToken() or dsqlToken(), whose service is their own.
function resolve(input: SigningInput, names: SigningNames, fn?: boolean): Signing {
  const n = (key: keyof SigningInput) => names[key] ?? key;
  const hostKey = input.signingHostname === undefined ? "host" : "signingHostname";
  // The host connected to matters only when it is signed for, but rdsToken() requires its own.
  if (fn && hostKey !== "host") checkEndpoint(input.host, n("host"));
  const { name, parsed } = checkEndpoint(input.signingHostname ?? input.host, n(hostKey));
  const service = (input.service ?? (parsed?.service === "dsql" ? "dsql" : "rds")) as
    | "rds"
    | "dsql";
  const what = (service: string) => service === "dsql" ? "Aurora DSQL" : "RDS";
  // The host's input and value, starting a message.
  const hostIs = () => `${subject(n(hostKey))} ${show(name)} is`;
  if (parsed && parsed.service !== service) {
    throw new TypeError(
      `${hostIs()} an ${what(parsed.service)} endpoint` +
        (fn
          ? `: use ${parsed.service}Token()`
          : `, but ${phrase(n("service"))} asks for ${what(service)}`),
    );
  }
  const admin = input.admin;
  if (admin !== undefined && typeof admin !== "boolean") {
    throw bad(n("admin"), "must be a boolean", admin);
  }
  const user = checkUsername(input.user, service === "dsql" ? "admin" : undefined, n("user"));
  const expiresIn = checkWhole(
    input.expiresIn ?? RDS_MAX_EXPIRES_IN,
    n("expiresIn"),
    service === "rds" ? RDS_MAX_EXPIRES_IN : DSQL_MAX_EXPIRES_IN,
    "a whole number",
    " of seconds",
  );
  const regionNames: RegionNames = { region: n("region"), host: n(hostKey) };
  let signingHostname = name;
  let region: string | Promise<string>;
  if (service === "dsql" && !name.includes(".")) {
    if (!isDsqlClusterId(name)) {
      throw new RangeError(
        `${hostIs()} neither a DSQL endpoint nor a DSQL cluster id ` +
          `(26 lowercase letters and digits)`,
      );
    }
    // The name to connect to is needed now, but rdsToken() and dsqlToken() can wait for it.
    region = fn
      ? resolveRegionOrProfile(input.region, undefined, regionNames, name, input.profile)
      : resolveRegion(input.region, undefined, regionNames, name);
    if (typeof region === "string") signingHostname = dsqlEndpoint(name, region);
  } else {
    region = resolveRegionOrProfile(input.region, parsed, regionNames, name, input.profile);
  }
  if (typeof region !== "string") region.catch(() => {}); // reported when a token needs it
  return {
    service,
    signingHostname,
    signingPort: checkPort(input.port, n("port")),
    user,
    action: service === "rds"
      ? "connect"
      : (admin ?? user === "admin")
      ? "DbConnectAdmin"
      : "DbConnect",
    region,
    expiresIn,
    parsed,
  };
}

/** The request to presign for `signing`, in `region` at `signingDate`. */
export function presignInput(signing: Signing, region: string, signingDate: Date): PresignInput {
  const { signingHostname: host, service } = signing;
  const rds = service === "rds";
  return {
    host: rds
      ? `${host}:${signing.signingPort}`
      : host.includes(".")
      ? host
      : dsqlEndpoint(host, region),
    params: rds ? { Action: "connect", DBUser: signing.user } : { Action: signing.action },
    service: rds ? "rds-db" : "dsql",
    region,
    signingDate,
    expiresIn: signing.expiresIn,
  };
}

/**
 * A token for `signing` at `signingDate`: the `credentials` option resolved for the token's whole
 * lifetime, then presigned. Not async itself, and no await unless a provider or the profile's
 * region is involved: on the hot path every promise layer costs a measurable share of a token.
 */
export function signToken(
  credentials: unknown,
  signing: Signing,
  signingDate: Date,
  context?: CredentialsContext,
): Promise<string> {
  const sign = (region: string) => {
    const resolved = resolveCredentials(
      credentials as Parameters<typeof resolveCredentials>[0],
      signingDate,
      signingDate.getTime() + signing.expiresIn * 1000,
      false,
      context,
    );
    const request = presignInput(signing, region, signingDate);
    return resolved instanceof Promise
      ? resolved.then((c) => presign(request, c))
      : presign(request, resolved);
  };
  const { region } = signing;
  return typeof region === "string" ? sign(region) : region.then(sign);
}

/**
 * The body of rdsToken() and dsqlToken(), named `fn`: `options` checked, `input` picks the
 * resolver's inputs from them, and a token is signed.
 */
export function token(
  options: unknown,
  fn: string,
  input: (o: Record<string, unknown>) => SigningInput,
): Promise<string> {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${fn}() expects an options object, got ${show(options)}`);
  }
  const o = options as Record<string, unknown>;
  const context = credentialsContext(o);
  const signingDate = checkSigningDate(o.signingDate);
  const signing = resolve(
    { region: o.region, expiresIn: o.expiresIn, ...input(o), profile: context.profile },
    { host: "hostname", user: "username" },
    true,
  );
  return signToken(o.credentials, signing, signingDate, context);
}

/** The `profile` and `onRefreshError` options, checked. */
export function credentialsContext(o: Record<string, unknown>): CredentialsContext {
  if (o.onRefreshError !== undefined && typeof o.onRefreshError !== "function") {
    throw bad("onRefreshError", "must be a function", o.onRefreshError);
  }
  return {
    profile: checkProfile(o.profile),
    onRefreshError: o.onRefreshError as CredentialsContext["onRefreshError"],
  };
}
