import type { CredentialsOption } from "./credentials.ts";
import { RDS_MAX_EXPIRES_IN, token } from "./signing.ts";

export { RDS_MAX_EXPIRES_IN };

/** Options of {@linkcode rdsToken}. */
export interface RdsTokenOptions {
  /** The endpoint you connect to, for example `mydb.abc123xyz.us-east-1.rds.amazonaws.com`. */
  hostname: string;
  /** The port the token is signed for. Default: `5432`. */
  port?: number;
  /** The database user, granted `rds_iam`. */
  username: string;
  /**
   * The AWS region. Default: the region in the endpoint name, else `AWS_REGION` or
   * `AWS_DEFAULT_REGION`.
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
  /** Token lifetime in seconds, 1 to 900. Default: `900`. */
  expiresIn?: number;
  /** The signing time. Default: now. */
  signingDate?: Date;
  /**
   * The endpoint name to sign for, when `hostname` is another name for it: a CNAME, an SSH or
   * SSM tunnel, a local proxy. RDS checks the token against its own endpoint name.
   */
  signingHostname?: string;
}

/**
 * Creates an IAM authentication token for RDS or Aurora (PostgreSQL or MySQL): the password to
 * connect with. Byte-identical to `Signer#getAuthToken()` of `@aws-sdk/rds-signer`.
 *
 * @param options The endpoint, user and credentials.
 * @returns The token: `host:port/?Action=connect&DBUser=…&X-Amz-…`.
 * @throws {TypeError} If an option is missing or of the wrong type, or no region can be found.
 * @throws {RangeError} If `port`, `expiresIn`, `signingDate` or `region` is out of range, or the
 * region contradicts the endpoint name.
 * @throws {CredentialsError} If credentials are missing, malformed, expired, or their provider
 * fails.
 *
 * @example Connecting with a fresh token
 * ```ts
 * import { rdsToken } from "@pg-iam/pg-iam";
 *
 * const token = await rdsToken({
 *   hostname: "orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com",
 *   username: "app",
 *   credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/EXAMPLEKEY" },
 * });
 * console.log(token.startsWith("orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com:5432/?"));
 * ```
 *
 * @example Connecting through a tunnel on localhost
 * ```ts
 * import { rdsToken } from "@pg-iam/pg-iam";
 *
 * const token = await rdsToken({
 *   hostname: "127.0.0.1",
 *   signingHostname: "orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com",
 *   username: "app",
 *   credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/EXAMPLEKEY" },
 * });
 * ```
 */
// Async although nothing is awaited here: a bad option must reject, never throw synchronously.
// deno-lint-ignore require-await
export async function rdsToken(options: RdsTokenOptions): Promise<string> {
  return token(options, "rdsToken", (o) => ({
    host: o.hostname,
    signingHostname: o.signingHostname,
    port: o.port,
    user: o.username,
    service: "rds",
  }));
}
