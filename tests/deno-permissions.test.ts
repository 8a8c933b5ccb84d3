import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import process from "node:process";
import { rdsToken } from "../mod.ts";

const root = new URL("../", import.meta.url).pathname;
const DENO = `${root}node_modules/.bin/deno`;
const CORE_VARIABLES = [
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
  "AWS_CREDENTIAL_EXPIRATION",
  "AWS_PROFILE",
  "AWS_REGION",
  "AWS_DEFAULT_REGION",
];
const KEYS = { AWS_ACCESS_KEY_ID: "AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY: "secret" };

/** Runs `deno run --no-prompt …flags file …args` with the environment `env` over ours. */
function deno(
  flags: string[],
  file: string,
  args: string[] = [],
  env: Record<string, string> = {},
) {
  const r = spawnSync(DENO, ["run", "--no-prompt", "--quiet", ...flags, file, ...args], {
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1", ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The --allow-env list a message asks for. */
const allowEnv = (message: string) => /--allow-env=([\w,]+)/.exec(message)?.[1].split(",");

test("on Deno with no permissions, explicit options sign and env lookups fail naming every variable to allow at once", async () => {
  const r = JSON.parse(deno([], `${root}tests/_no_permissions.ts`).stdout);
  const expected = await rdsToken({
    hostname: "db.abc123.us-east-1.rds.amazonaws.com",
    username: "app",
    credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret" },
    signingDate: new Date("2026-01-01T00:00:00Z"),
  });
  assert.equal(r.explicit.token, expected);
  assert.match(r.envCredentials.error, /^CredentialsError: No AWS credentials: .* --allow-env=/);
  assert.deepEqual(allowEnv(r.envCredentials.error), CORE_VARIABLES);
  assert.match(r.envRegion.error, /^TypeError: No region: .* pass the "region" option\. /);
  assert.deepEqual(allowEnv(r.envRegion.error), CORE_VARIABLES);
});

test("on Deno, one rerun with the variables the message lists is enough; those already allowed are not listed", () => {
  const some = deno(
    ["--allow-env=AWS_ACCESS_KEY_ID,AWS_REGION"],
    `${root}tests/_no_permissions.ts`,
  );
  const partial = JSON.parse(some.stdout);
  const listed = allowEnv(partial.envCredentials.error)!;
  assert.deepEqual(listed, CORE_VARIABLES.filter((v) => !/^AWS_(ACCESS_KEY_ID|REGION)$/.test(v)));
  // The rerun: what was allowed plus what the message listed.
  const all = ["AWS_ACCESS_KEY_ID", "AWS_REGION", ...listed].join(",");
  const rerun = deno([`--allow-env=${all}`], `${root}tests/_no_permissions.ts`, [], {
    ...KEYS,
    AWS_REGION: "us-east-1",
  });
  const r = JSON.parse(rerun.stdout);
  assert.ok(r.envCredentials.token, JSON.stringify(r));
  assert.ok(r.envRegion.token, JSON.stringify(r));
});

test("the pg-iam command on Deno names every permission it is missing in one line, and runs once they are granted", () => {
  const cli = `${root}src/cli/mod.ts`;
  const args = [
    "token",
    "--hostname",
    "db.abc123.us-east-1.rds.amazonaws.com",
    "--username",
    "app",
  ];
  const none = deno([], cli, args, KEYS);
  assert.equal(none.code, 1);
  assert.equal(none.stdout, "");
  assert.match(none.stderr, /^pg-iam token: Deno refused a permission \(.*\)\. Grant all/);
  assert.match(none.stderr, / --allow-env --allow-read --allow-sys --allow-net \(or -A\)\n$/);
  assert.equal(none.stderr.split("\n").length, 2, none.stderr);
  // Those already granted are not asked for again.
  const some = deno(["--allow-read", "--allow-sys", "--allow-env=PGHOST"], cli, args, KEYS);
  assert.match(some.stderr, /in one go: --allow-env --allow-net \(or -A\)\n$/);
  // The control: with what it asked for, it signs.
  const granted = deno(
    ["--allow-env", "--allow-read", "--allow-sys", "--allow-net"],
    cli,
    args,
    KEYS,
  );
  assert.equal(granted.code, 0, granted.stderr);
  assert.match(
    granted.stdout,
    /^db\.abc123\.us-east-1\.rds\.amazonaws\.com:5432\/\?Action=connect&/,
  );
});
