// An AWS Lambda handler on node-postgres with IAM authentication, shaped for short, visible cold
// starts: the pool lives at module scope (warm invocations reuse its connection), the connection
// opens during Init (an awaited prewarm), and each cold start logs one JSON line saying where the
// connect time went (onIamConnect: credentials, signing, TCP, TLS, the server's IAM check).
//
// Deploy with DATABASE_URL=postgres://app@<endpoint>:5432/<database> (the user granted rds_iam);
// the function's role provides AWS_ACCESS_KEY_ID and friends, the region comes from the endpoint.
// Outside this repository, import the published package instead:
//   import { type ConnectEvent, iamPool, prewarm } from "pg-iam/pg"; // npm
//   import { type ConnectEvent, iamPool, prewarm } from "@pg-iam/pg-iam/pg"; // JSR
import process from "node:process";
import { type ConnectEvent, iamPool, prewarm } from "../../src/pg/mod.ts";

const initStart = performance.now();
const round = (ms: number) => Math.round(ms * 10) / 10;
let cold = true;
const connects: ConnectEvent[] = [];

/** The pool: one per execution environment, reused by every invocation it serves. */
export const pool = iamPool({
  connectionString: process.env.DATABASE_URL,
  max: 1, // Lambda sends an execution environment one event at a time
  onIamConnect: (event) => cold && connects.push(event),
});
// Awaited, so the connection is open when Init ends: a connect still running when Lambda freezes
// the environment would stall until the first invocation thaws it.
const warmed = await prewarm(pool, 1);
const prewarmMs = performance.now() - initStart;

/** Answers one event; the first invocation of an environment also logs its cold start. */
export async function handler(event: { id?: number }): Promise<{ id: number; at: Date }> {
  const start = performance.now();
  try {
    const { rows } = await pool.query<{ id: number; at: Date }>(
      "select $1::int as id, now() as at",
      [event.id ?? 0],
    );
    return rows[0];
  } finally {
    if (cold) {
      cold = false;
      console.log(JSON.stringify({
        message: "cold start",
        driver: "node-postgres",
        prewarmMs: round(prewarmMs),
        firstQueryMs: round(performance.now() - start),
        prewarmErrors: warmed.errors.map((e) => e.message),
        connects: connects.map(({ ok, attempts, step, tokenSent, error, timings }) => ({
          ok,
          attempts,
          ...(ok ? {} : { step, tokenSent, error: error?.message }),
          ...Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, round(v)])),
        })),
      }));
    }
  }
}
