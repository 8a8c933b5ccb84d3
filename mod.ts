/**
 * IAM database authentication tokens for Amazon RDS, Aurora and Aurora DSQL, on Deno, Node, Bun
 * and edge runtimes. A small SigV4 presigner over Web APIs whose tokens are byte-identical to the
 * AWS SDK's `@aws-sdk/rds-signer` and `@aws-sdk/dsql-signer`, with input validation that turns a
 * mistake into a clear error instead of a token the server rejects later.
 *
 * @example RDS or Aurora
 * ```ts
 * import { rdsToken } from "@pg-iam/pg-iam";
 *
 * // Region from the endpoint name, credentials from AWS_ACCESS_KEY_ID & co. unless given.
 * const password = await rdsToken({
 *   hostname: "orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com",
 *   username: "app",
 *   credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/EXAMPLEKEY" },
 * });
 * ```
 *
 * @example Aurora DSQL
 * ```ts
 * import { dsqlToken } from "@pg-iam/pg-iam";
 *
 * const password = await dsqlToken({
 *   hostname: "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws",
 *   credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/EXAMPLEKEY" },
 * });
 * ```
 *
 * @module
 */

export { RDS_MAX_EXPIRES_IN, rdsToken, type RdsTokenOptions } from "./src/core/rds.ts";
export { DSQL_MAX_EXPIRES_IN, dsqlToken, type DsqlTokenOptions } from "./src/core/dsql.ts";
export {
  type ParsedDsqlHostname,
  type ParsedHostname,
  type ParsedRdsHostname,
  parseHostname,
  type Partition,
  type RdsEndpointKind,
} from "./src/core/hostname.ts";
export type {
  Credentials,
  CredentialsOption,
  CredentialsProvider,
} from "./src/core/credentials.ts";
export { CredentialsError, type CredentialsErrorCode } from "./src/core/errors.ts";
