// Cold start of pg-iam: import it, make one token, print its length. Same modes as
// rds-signer.mjs. Deno and Bun run this file as is; for Node, bench/cold.mjs bundles it first.
// The bench's own inputs are read through Deno.env on Deno: touching `process` there would start
// Deno's Node compatibility layer (~20 ms) and charge it to pg-iam.
import { rdsToken } from "../../mod.ts";

const g = globalThis as { process?: { env: Record<string, string | undefined> } };
const env = (name: string): string | undefined =>
  globalThis.Deno ? globalThis.Deno.env.get(name) : g.process!.env[name];
const explicit = env("BENCH_CREDS") === "explicit";
const token = await rdsToken({
  hostname: env("BENCH_HOST")!,
  port: 5432,
  username: "bench_user",
  ...(explicit
    ? {
      region: env("BENCH_REGION"),
      credentials: {
        accessKeyId: env("BENCH_ACCESS_KEY_ID")!,
        secretAccessKey: env("BENCH_SECRET_ACCESS_KEY")!,
        sessionToken: env("BENCH_SESSION_TOKEN"),
      },
    }
    : {}),
});
console.log(token.length);
