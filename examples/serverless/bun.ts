// An AWS Lambda handler on Bun's built-in client (Bun.SQL) with IAM authentication, for a Bun
// custom runtime, shaped for short, visible cold starts: the client lives at module scope (warm
// invocations reuse its connection), the connection opens during Init (an awaited prewarm), and
// each cold start logs one JSON line. Bun opens its sockets itself and reports no per-connection
// TCP, TLS or login timings, so the line has the token's (onToken: credentials, signing) and the
// prewarm's wall time (connect, TLS, login and one `select 1`).
//
// Deploy with DATABASE_URL=postgres://app@<endpoint>:5432/<database> (the user granted rds_iam);
// the function's role provides AWS_ACCESS_KEY_ID and friends, the region comes from the endpoint.
// Outside this repository, import the published package instead:
//   import { iamSql, prewarm, type TokenEvent } from "pg-iam/bun"; // npm
//   import { iamSql, prewarm, type TokenEvent } from "@pg-iam/pg-iam/bun"; // JSR
import process from "node:process";
import { iamSql, prewarm, type TokenEvent } from "../../src/bun/mod.ts";

const initStart = performance.now();
const round = (ms: number) => Math.round(ms * 10) / 10;
let cold = true;
const tokens: TokenEvent[] = [];

/** The client: one per execution environment, reused by every invocation it serves. */
export const sql = iamSql(process.env.DATABASE_URL, {
  max: 1, // Lambda sends an execution environment one event at a time
  onToken: (event) => cold && tokens.push(event),
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
        driver: "Bun.SQL",
        prewarmMs: round(prewarmMs),
        firstQueryMs: round(performance.now() - start),
        prewarmErrors: warmed.errors.map((e) => e.message),
        tokens: tokens.map((e) => ({
          credentialsMs: round(e.credentialsMs),
          signMs: round(e.signMs),
          reused: e.reused,
        })),
      }));
    }
  }
}
