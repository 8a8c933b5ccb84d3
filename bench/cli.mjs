// Cold `pg-iam token` against `aws rds generate-db-auth-token`: wall time of a fresh process that
// prints one RDS token, for the same inputs and credentials.
//
//   node bench/cli.mjs [--runs 15] [--aws /usr/bin/aws]
//
// The AWS CLI is Debian's `awscli` package (/usr/bin/aws; `apt-get install awscli`), else the
// `aws` on PATH. pg-iam runs as users run it:
//   node dist/pg-iam.cjs       what `npx pg-iam` and the npm bin execute (built by `npm run build`,
//                          run first if dist/ is missing); npx's own start-up is not included
//   deno run src/cli/mod.ts    what `deno run -A jsr:@pg-iam/pg-iam/cli` executes (TypeScript, Deno's
//                          transpile cache warm)
//   bun src/cli/mod.ts         what `bunx pg-iam` executes with Bun
// Credentials and region come from the environment (static temporary keys), and AWS_CONFIG_FILE /
// AWS_SHARED_CREDENTIALS_FILE point to empty files, so neither side reads a profile or calls
// IMDS. One untimed run of each fills disk caches; samples are interleaved; figures are medians.
// Both sides' tokens are checked to carry the same parameters up to X-Amz-Date and
// X-Amz-Signature, and the same signature whenever the two were signed in the same second.

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { CREDENTIALS, RDS_HOST, RDS_PORT, REGION } from "./_fixtures.mjs";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "node_modules", ".bin");
const { values } = parseArgs({
  options: { runs: { type: "string", default: "15" }, aws: { type: "string" } },
});
const RUNS = Number(values.runs);
const AWS = values.aws ?? (existsSync("/usr/bin/aws") ? "/usr/bin/aws" : "aws");

if (!existsSync(join(ROOT, "dist/pg-iam.cjs"))) {
  spawnSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "inherit" });
}

const empty = mkdtempSync(join(tmpdir(), "pg-iam-bench-cli-"));
writeFileSync(join(empty, "config"), "");
writeFileSync(join(empty, "credentials"), "");
const env = {
  PATH: process.env.PATH,
  HOME: empty,
  AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
  AWS_SESSION_TOKEN: CREDENTIALS.sessionToken,
  AWS_REGION: REGION,
  AWS_DEFAULT_REGION: REGION,
  AWS_CONFIG_FILE: join(empty, "config"),
  AWS_SHARED_CREDENTIALS_FILE: join(empty, "credentials"),
  AWS_EC2_METADATA_DISABLED: "true",
  AWS_PAGER: "",
  NO_COLOR: "1",
};
const flags = ["--hostname", RDS_HOST, "--port", String(RDS_PORT), "--username", "app"];
const variants = {
  // The floor: a runtime that starts and prints one line. No command on Node can beat it.
  "node -e (bare start, the floor)": [process.execPath, ["-e", "console.log(1)"]],
  "aws rds generate-db-auth-token": [AWS, [
    "rds",
    "generate-db-auth-token",
    ...flags,
    "--region",
    REGION,
  ]],
  "pg-iam token (node, npm bin)": [process.execPath, [
    join(ROOT, "dist/pg-iam.cjs"),
    "token",
    ...flags,
  ]],
  "pg-iam token (deno)": [join(BIN, "deno"), [
    "run",
    "-A",
    "--quiet",
    join(ROOT, "src/cli/mod.ts"),
    "token",
    ...flags,
  ]],
  "pg-iam token (bun)": [join(BIN, "bun"), [join(ROOT, "src/cli/mod.ts"), "token", ...flags]],
};

function once([cmd, args]) {
  const start = performance.now();
  const r = spawnSync(cmd, args, { env, encoding: "utf8" });
  const ms = performance.now() - start;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status}): ${r.stderr}`);
  return { ms, token: r.stdout.trim() };
}

// botocore orders the query parameters differently from the JS SDK (and pg-iam, which matches the
// JS SDK byte for byte); the signature does not depend on that order. Compare parameter sets.
const params = (token, drop = []) => {
  const [host, query] = token.split("/?");
  const kept = query.split("&").filter((p) => !drop.some((d) => p.startsWith(`${d}=`)));
  return `${host}/?${kept.sort().join("&")}`;
};
const shape = (token) => params(token, ["X-Amz-Date", "X-Amz-Signature"]);
const version = spawnSync(AWS, ["--version"], { encoding: "utf8" });
console.error(`AWS CLI: ${AWS}: ${(version.stdout || version.stderr).trim()}`);

// Warm-up, and the equality check.
const tokens = Object.fromEntries(
  Object.entries(variants).filter(([name]) => !name.includes("bare")).map((
    [name, v],
  ) => [name, once(v).token]),
);
const reference = tokens["aws rds generate-db-auth-token"];
for (const [name, token] of Object.entries(tokens)) {
  if (shape(token) !== shape(reference)) {
    throw new Error(
      `${name} differs from the AWS CLI beyond date and signature:\n${token}\n${reference}`,
    );
  }
}
let identical = 0;
for (let i = 0; i < 5; i++) {
  const a = once(variants["aws rds generate-db-auth-token"]).token;
  const b = once(variants["pg-iam token (node, npm bin)"]).token;
  if (a.match(/X-Amz-Date=(\w+)/)[1] === b.match(/X-Amz-Date=(\w+)/)[1]) {
    if (params(a) !== params(b)) throw new Error(`same second, different tokens:\n${a}\n${b}`);
    identical++;
  }
}

const samples = Object.fromEntries(Object.keys(variants).map((name) => [name, []]));
for (let i = 0; i < RUNS; i++) {
  for (const [name, v] of Object.entries(variants)) samples[name].push(once(v).ms);
  process.stderr.write(".");
}
process.stderr.write("\n");

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const aws = median(samples["aws rds generate-db-auth-token"]);
console.log(`| command (${RUNS} fresh processes each) | median ms | min ms | AWS CLI / this |`);
console.log("|---|---:|---:|---:|");
for (const [name, xs] of Object.entries(samples)) {
  const m = median(xs);
  console.log(
    `| ${name} | ${m.toFixed(0)} | ${Math.min(...xs).toFixed(0)} | ${(aws / m).toFixed(1)}x |`,
  );
}
console.log(
  `\nTokens carry the AWS CLI's parameters (botocore orders them differently) up to date and ` +
    `signature; in ${identical} of 5 pairs signed in the same second, the signatures were equal too.`,
);
