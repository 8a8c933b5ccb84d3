import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { rdsToken } from "../mod.ts";

const root = new URL("../", import.meta.url).pathname;

test("on Deno with no permissions, explicit options sign and env lookups fail with what to allow", async () => {
  const out = execFileSync(
    `${root}node_modules/.bin/deno`,
    ["run", "--no-prompt", "--quiet", `${root}tests/_no_permissions.ts`],
    { encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } },
  );
  const r = JSON.parse(out);
  const expected = await rdsToken({
    hostname: "db.abc123.us-east-1.rds.amazonaws.com",
    username: "app",
    credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret" },
    signingDate: new Date("2026-01-01T00:00:00Z"),
  });
  assert.equal(r.explicit.token, expected);
  assert.match(
    r.envCredentials.error,
    /^CredentialsError: No AWS credentials: .* run with --allow-env=AWS_ACCESS_KEY_ID/,
  );
  assert.match(
    r.envRegion.error,
    /^TypeError: No region: .* pass the "region" option\. .*--allow-env=AWS_REGION/,
  );
});
