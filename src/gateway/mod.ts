/**
 * A local IAM gateway: a PostgreSQL-protocol proxy that authenticates clients the way Amazon RDS
 * IAM authentication and Aurora DSQL do — the password must be a valid, unexpired IAM token for
 * the impersonated endpoint, user and region — then relays the connection to a real PostgreSQL.
 * For tests, demos and local development: exercise token refresh, expiry and TLS without AWS.
 *
 * Runs on Deno, Node and Bun (it uses `node:net` and `node:tls`).
 *
 * @example An RDS look-alike in front of a local PostgreSQL
 * ```ts ignore
 * import { startGateway } from "@pg-iam/pg-iam/gateway";
 *
 * await using gateway = await startGateway({
 *   endpoint: "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com",
 *   credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/EXAMPLEKEY" },
 *   upstream: { host: "127.0.0.1", port: 5432 },
 *   tls: false,
 * });
 * console.log(`connect to ${gateway.host}:${gateway.port} with an IAM token as the password`);
 * ```
 *
 * @module
 */

import type { Gateway, GatewayOptions } from "./types.ts";
export type { ListenerLimits } from "../listener/types.ts";
import { checkGatewayOptions } from "./_options.ts";
import { GatewayServer } from "./_server.ts";

export type {
  Gateway,
  GatewayCredentials,
  GatewayLogin,
  GatewayOptions,
  GatewayRejectReason,
  GatewayStats,
  GatewayUpstream,
} from "./types.ts";

/**
 * Starts a gateway that accepts IAM tokens for `options.endpoint` and relays authenticated
 * connections to `options.upstream`.
 *
 * @param options What to impersonate, which keys to accept, where to relay, TLS.
 * @returns The running gateway, once it listens.
 * @throws {TypeError} If an option is missing or of the wrong type.
 * @throws {RangeError} If an option is out of range, or the region or service contradicts the
 * endpoint name.
 *
 * @example A DSQL look-alike, connected to with a pg-iam token
 * ```ts ignore
 * import { dsqlToken } from "@pg-iam/pg-iam";
 * import { startGateway } from "@pg-iam/pg-iam/gateway";
 * import postgres from "postgres";
 *
 * const credentials = { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/EXAMPLEKEY" };
 * const endpoint = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
 * await using gateway = await startGateway({
 *   endpoint,
 *   credentials,
 *   upstream: { host: "127.0.0.1", port: 5432, user: "postgres" },
 *   tls: false,
 * });
 * const sql = postgres({
 *   host: gateway.host,
 *   port: gateway.port,
 *   user: "admin",
 *   password: () => dsqlToken({ hostname: endpoint, credentials }),
 * });
 * await sql`select 1`;
 * await sql.end();
 * ```
 */
export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const config = checkGatewayOptions(options);
  const gateway = new GatewayServer(config);
  await gateway.listen();
  return gateway;
}
