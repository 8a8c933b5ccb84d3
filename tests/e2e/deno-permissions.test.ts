import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { rdsToken } from "../../mod.ts";

const root = new URL("../../", import.meta.url).pathname;
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
  assert.match(
    none.stderr,
    /^pg-iam token: Deno has not granted all the permissions .* in one go:/,
  );
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

/**
 * Runs `deno run …args` on a terminal (util-linux `script` gives it one, so Deno may prompt),
 * answering nothing; resolves with what it printed once it exits or shows a permission prompt.
 */
function onTerminal(args: string[], env: Record<string, string>): Promise<string> {
  const command = [DENO, "run", ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
  return new Promise((resolve, reject) => {
    const child = spawn("script", ["-qfec", command, "/dev/null"], {
      env: { ...process.env, NO_COLOR: "1", ...env },
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
    });
    let output = "";
    const done = () => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch { /* gone */ }
      resolve(output);
    };
    child.stdout.setEncoding("utf8").on("data", (text: string) => {
      output += text;
      if (/Deno requests/.test(output)) done(); // a prompt, waiting for an answer: enough
    });
    child.on("error", reject);
    child.on("close", done);
  });
}

const SCRIPT = ["/usr/bin/script", "/bin/script"].some((p) => existsSync(p));

test(
  "the pg-iam command on a terminal asks for Deno's permissions once, in one line, instead of prompting for each (a script reading one variable is prompted: the control)",
  { timeout: 60_000, skip: SCRIPT ? false : "util-linux script is not installed" },
  async () => {
    const cli = `${root}src/cli/mod.ts`;
    const out = await onTerminal(
      [cli, "token", "--hostname", "db.abc123.us-east-1.rds.amazonaws.com", "--username", "app"],
      KEYS,
    );
    assert.doesNotMatch(out, /Deno requests/);
    assert.match(out, /in one go: --allow-env --allow-read --allow-sys --allow-net \(or -A\)/);
    // The control: the same terminal, a program reading a variable: Deno prompts.
    const dir = mkdtempSync(join(tmpdir(), "pg-iam-prompt-"));
    try {
      writeFileSync(join(dir, "read.ts"), 'console.log(Deno.env.get("PGHOST"));\n');
      const control = await onTerminal([join(dir, "read.ts")], {});
      assert.match(control, /Deno requests env access to "PGHOST"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
