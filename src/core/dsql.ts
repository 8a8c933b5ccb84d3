import type { CredentialsOption } from "./credentials.ts";
import { DSQL_MAX_EXPIRES_IN, token } from "./signing.ts";

export { DSQL_MAX_EXPIRES_IN };

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
  return token(options, "dsqlToken", (o) => ({
    host: o.hostname,
    user: o.username,
    admin: o.admin,
    service: "dsql",
  }));
}
