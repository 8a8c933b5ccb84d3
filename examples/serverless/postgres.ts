// An AWS Lambda handler on postgres.js with IAM authentication, shaped for short, visible cold
// starts: the client lives at module scope (warm invocations reuse its connection), the
// connection opens during Init (an awaited prewarm), and each cold start logs one JSON line saying
// where the connect time went (onIamConnect: credentials, signing, TCP, TLS, the server's IAM check).
//
// Deploy with DATABASE_URL=postgres://app@<endpoint>:5432/<database> (the user granted rds_iam);
// the function's role provides AWS_ACCESS_KEY_ID and friends, the region comes from the endpoint.
// Outside this repository, import the published package instead:
//   import { type ConnectEvent, iamPostgres, prewarm } from "pg-iam/postgres"; // npm
//   import { type ConnectEvent, iamPostgres, prewarm } from "@pg-iam/pg-iam/postgres"; // JSR
import process from "node:process";
import { type ConnectEvent, iamPostgres, prewarm } from "../../src/postgres/mod.ts";

const initStart = performance.now();
const round = (ms: number) => Math.round(ms * 10) / 10;
let cold = true;
const connects: ConnectEvent[] = [];

/** The client: one per execution environment, reused by every invocation it serves. */
export const sql = iamPostgres(process.env.DATABASE_URL, {
  max: 1, // Lambda sends an execution environment one event at a time
  onIamConnect: (event) => cold && connects.push(event),
});
// Awaited, so the connection is open when Init ends: a connect still running when Lambda freezes
// the environment would stall until the first invocation thaws it.
const warmed = await prewarm(sql, 1);
const prewarmMs = performance.now() - initStart;

/** Answers one event; the first invocation of an environment also logs its cold start. */
export async function handler(event: { id?: number }): Promise<{ id: number; at: Date }> {
  const start = performance.now();
  try {
    const [row] = await sql<{ id: number; at: Date }[]>`
      select ${event.id ?? 0}::int as id, now() as at`;
    return row;
  } finally {
    if (cold) {
      cold = false;
      console.log(JSON.stringify({
        message: "cold start",
        driver: "postgres.js",
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
