import type { CredentialsOption } from "./credentials.ts";
import { show } from "./errors.ts";
import { checkEndpoint, dsqlEndpoint, isDsqlClusterId } from "./hostname.ts";
import {
  checkExpiresIn,
  checkOptions,
  checkSigningDate,
  checkUsername,
  resolveRegionOrProfile,
} from "./_options.ts";
import { credentialsContext, signToken } from "./_token.ts";

/** Options of {@linkcode dsqlToken}. */
export interface DsqlTokenOptions {
  /**
   * The cluster endpoint, for example `abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws`, or a
   * bare 26-character cluster id, expanded to `<id>.dsql.<region>.on.aws`.
   */
  hostname: string;
  /** The database role. Default: `"admin"`. */
  username?: string;
  /**
   * Whether to sign `DbConnectAdmin` (the `admin` role) rather than `DbConnect` (custom roles).
   * Default: `username === "admin"`.
   */
  admin?: boolean;
  /**
   * The AWS region. Default: the region in the endpoint name, else `AWS_REGION` or
   * `AWS_DEFAULT_REGION`. Required with a bare cluster id when neither variable is set.
   */
  region?: string;
  /**
   * Credentials or a provider of them. Default: the `AWS_*` environment variables, else the
   * standard AWS chain (profiles, SSO, ECS, EKS, EC2), if `@aws-sdk/credential-provider-node` is
   * installed.
   */
  credentials?: CredentialsOption;
  /**
   * The AWS profile to take credentials (and, if needed, the region) from, when `credentials` is
   * omitted. Default: `AWS_PROFILE`. Needs `@aws-sdk/credential-provider-node`.
   */
  profile?: string;
  /**
   * Told when refreshing expiring credentials in the background fails; the current ones keep
   * serving while valid. Default: a `console.warn` line.
   */
  onRefreshError?: (error: Error) => void;
  /** Token lifetime in seconds, 1 to 604800 (one week). Default: `900`. */
  expiresIn?: number;
  /** The signing time. Default: now. */
  signingDate?: Date;
}

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

/**
 * Creates an Aurora DSQL authentication token. Byte-identical to `DsqlSigner`'s
 * `getDbConnectAdminAuthToken()` (admin) or `getDbConnectAuthToken()` of `@aws-sdk/dsql-signer`.
 *
 * @param options The cluster, role and credentials.
 * @returns The token: `host/?Action=DbConnectAdmin&X-Amz-…` (or `Action=DbConnect`).
 * @throws {TypeError} If an option is missing or of the wrong type, or no region can be found.
 * @throws {RangeError} If `expiresIn`, `signingDate` or `region` is out of range, the region
 * contradicts the endpoint name, or `hostname` is neither an endpoint nor a cluster id.
 * @throws {CredentialsError} If credentials are missing, malformed, expired, or their provider
 * fails.
 *
 * @example A token for the admin role, from a cluster id
 * ```ts
 * import { dsqlToken } from "@pg-iam/pg-iam";
 *
 * const token = await dsqlToken({
 *   hostname: "abcdefghijklmnopqrstuvwxyz",
 *   region: "us-east-1",
 *   credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/EXAMPLEKEY" },
 * });
 * console.log(token.startsWith("abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/?Action=DbConnectAdmin&"));
 * ```
 *
 * @example A token for a custom role
 * ```ts
 * import { dsqlToken } from "@pg-iam/pg-iam";
 *
 * const token = await dsqlToken({
 *   hostname: "abcdefghijklmnopqrstuvwxyz.dsql.eu-west-1.on.aws",
 *   username: "reporting",
 *   credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/EXAMPLEKEY" },
 * });
 * console.log(token.includes("Action=DbConnect&"));
 * ```
 */
// Async although nothing is awaited here: a bad option must reject, never throw synchronously.
// deno-lint-ignore require-await
export async function dsqlToken(options: DsqlTokenOptions): Promise<string> {
  const o = checkOptions(options, "dsqlToken");
  const { name: host, parsed } = checkEndpoint(o.hostname, "hostname");
  const username = checkUsername(o.username, "admin");
  if (o.admin !== undefined && typeof o.admin !== "boolean") {
    throw new TypeError(`The "admin" option must be a boolean, got ${show(o.admin)}`);
  }
  const admin = o.admin ?? username === "admin";
  const expiresIn = checkExpiresIn(o.expiresIn, DSQL_MAX_EXPIRES_IN);
  const signingDate = checkSigningDate(o.signingDate);

  const context = credentialsContext(o);
  let region: string | Promise<string>;
  if (!host.includes(".")) {
    if (!isDsqlClusterId(host)) {
      throw new RangeError(
        `The "hostname" option ${show(host)} is neither a DSQL endpoint nor a DSQL cluster id ` +
          `(26 lowercase letters and digits)`,
      );
    }
    region = resolveRegionOrProfile(o.region, undefined, "hostname", host, context?.profile);
  } else {
    if (parsed?.service === "rds") {
      throw new TypeError(
        `The "hostname" option ${show(host)} is an RDS endpoint: use rdsToken()`,
      );
    }
    region = resolveRegionOrProfile(o.region, parsed, "hostname", host, context?.profile);
  }
  const sign = (region: string) =>
    signToken(o.credentials, {
      host: host.includes(".") ? host : dsqlEndpoint(host, region),
      params: { Action: admin ? "DbConnectAdmin" : "DbConnect" },
      service: "dsql",
      region,
      signingDate,
      expiresIn,
    }, context);
  return typeof region === "string" ? sign(region) : region.then(sign);
}
