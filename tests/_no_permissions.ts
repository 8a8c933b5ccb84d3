// Run by tests/e2e/deno-permissions.test.ts as `deno run` with no permissions, or only some.
import { rdsToken } from "../mod.ts";

const hostname = "db.abc123.us-east-1.rds.amazonaws.com";
const credentials = { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret" };
const signingDate = new Date("2026-01-01T00:00:00Z");
const outcome = (p: Promise<string>) =>
  p.then((token) => ({ token }), (e: Error) => ({ error: `${e.name}: ${e.message}` }));

console.log(JSON.stringify({
  explicit: await outcome(rdsToken({ hostname, username: "app", credentials, signingDate })),
  envCredentials: await outcome(rdsToken({ hostname, username: "app", signingDate })),
  envRegion: await outcome(rdsToken({ hostname: "db.example.com", username: "app", credentials })),
}));
