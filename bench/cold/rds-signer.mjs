// Cold start of @aws-sdk/rds-signer: import it as users do, make one token, print its length.
// BENCH_CREDS=env: no credentials or region passed, so the SDK's default chain reads AWS_* vars.
// BENCH_CREDS=explicit: a static credentials object and the region are passed.
// The bench's own inputs are read through Deno.env on Deno, so this script does not itself touch
// Deno's Node compatibility layer (the SDK does).
import { Signer } from "@aws-sdk/rds-signer";

const env = (name) =>
  globalThis.Deno ? globalThis.Deno.env.get(name) : globalThis.process.env[name];
const options = {
  hostname: env("BENCH_HOST"),
  port: 5432,
  username: "bench_user",
};
if (env("BENCH_CREDS") === "explicit") {
  options.region = env("BENCH_REGION");
  options.credentials = {
    accessKeyId: env("BENCH_ACCESS_KEY_ID"),
    secretAccessKey: env("BENCH_SECRET_ACCESS_KEY"),
    sessionToken: env("BENCH_SESSION_TOKEN"),
  };
}
const token = await new Signer(options).getAuthToken();
console.log(token.length);
