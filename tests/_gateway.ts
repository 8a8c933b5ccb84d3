// The gateway the end-to-end tests log in through: it impersonates an RDS endpoint (or, with
// `endpoint`, a DSQL one) in front of the tests' PostgreSQL, with the test certificate. Each test
// file closes the ones it started with closeTestGateways() in its `after` hook.
import { type Gateway, type GatewayOptions, startGateway } from "../src/gateway/mod.ts";
import { upstreamPostgres } from "./_postgres.ts";
import { cert, key } from "./fixtures/tls.ts";

/** The RDS endpoint name the test certificate carries. */
export const RDS = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";

const started: Gateway[] = [];

/**
 * A gateway accepting tokens of `credentials`, relaying as the server's superuser (or as
 * `extra.upstream` says).
 */
export async function testGateway(
  credentials: GatewayOptions["credentials"],
  extra: Partial<GatewayOptions> = {},
): Promise<Gateway> {
  const up = await upstreamPostgres();
  const g = await startGateway({
    endpoint: RDS,
    credentials,
    upstream: { host: up.host, port: up.port, user: up.user },
    tls: { cert, key },
    ...extra,
  });
  started.push(g);
  return g;
}

/** Closes every gateway testGateway() started in this process. */
export async function closeTestGateways(): Promise<void> {
  await Promise.all(started.splice(0).map((g) => g.close()));
}
