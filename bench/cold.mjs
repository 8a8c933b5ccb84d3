// Cold start: runtime start + import + first token, minus the runtime's bare start.
//
//   node bench/cold.mjs [--runs 15] [--runtimes node,deno,bun]
//
// Every sample is a fresh process, timed from spawn to exit by this (parent) process. Each
// runtime runs bench/cold/bare.mjs (prints one line), bench/cold/pg-iam.ts and
// bench/cold/rds-signer.mjs, the last two in two credential modes:
//   env       no credentials or region in the call; AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
//             AWS_SESSION_TOKEN and AWS_REGION are set in the child's environment, so the SDK
//             runs its default provider chain (fromNodeProviderChain -> fromEnv).
//   explicit  a static credentials object and the region are passed in the call; no AWS_* vars.
//   profile   no AWS_ACCESS_KEY_ID: AWS_PROFILE names a profile with static keys in a temporary
//             shared credentials file, so pg-iam loads the standard chain
//             (@aws-sdk/credential-provider-node) and the SDK runs its chain to fromIni.
// Node and Bun run plain JavaScript, as npm users do: pg-iam.ts is bundled with esbuild (platform
// node, ESM, not minified) into .tmp/bench/ first; the SDK is imported from node_modules as users
// would. Deno runs the TypeScript as it is, as JSR users do. One untimed run of each variant fills on-disk caches (Deno's transpile
// cache) first. Samples of all variants are interleaved; the reported figures are the median
// wall time and the median of per-pass differences to the bare start.

import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { credentialEnv, CREDENTIALS, RDS_HOST, REGION } from "./_fixtures.mjs";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const BIN = join(ROOT, "node_modules", ".bin");
const TMP = join(ROOT, ".tmp", "bench");

/** The command line that runs `file` on `runtime`. */
function command(runtime, file) {
  switch (runtime) {
    case "node":
      return [process.execPath, [file]];
    case "deno":
      return [join(BIN, "deno"), ["run", "-A", "--cached-only", "--quiet", file]];
    case "bun":
      return [join(BIN, "bun"), [file]];
  }
  throw new Error(`unknown runtime ${runtime}`);
}

// Dropped from the child's environment: NODE_EXTRA_CA_CERTS makes Node (and Bun) parse a CA bundle
// at startup, which here added ~40 ms and most of the variance to every sample; NODE_OPTIONS could
// preload anything.
const DROP = new Set(["NODE_EXTRA_CA_CERTS", "NODE_OPTIONS"]);

/** The child's environment: ours minus any AWS_* settings, plus those of the mode. */
function childEnv(mode) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("AWS_") && !DROP.has(k)) env[k] = v;
  }
  Object.assign(env, {
    BENCH_HOST: RDS_HOST,
    BENCH_CREDS: mode,
    // Belt and braces: never let a credential chain fall through to instance metadata.
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: join(TMP, "no-such-config"),
    AWS_SHARED_CREDENTIALS_FILE: join(TMP, "no-such-credentials"),
    DENO_NO_UPDATE_CHECK: "1",
  });
  if (mode === "env") Object.assign(env, credentialEnv(), { AWS_REGION: REGION });
  if (mode === "profile") {
    Object.assign(env, {
      AWS_PROFILE: "bench",
      AWS_CONFIG_FILE: join(TMP, "profile-config"),
      AWS_SHARED_CREDENTIALS_FILE: join(TMP, "profile-credentials"),
    });
  }
  if (mode === "explicit") {
    Object.assign(env, {
      BENCH_REGION: REGION,
      BENCH_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
      BENCH_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
      BENCH_SESSION_TOKEN: CREDENTIALS.sessionToken,
    });
  }
  return env;
}

/** Bundles bench/cold/pg-iam.ts for plain Node. */
async function bundleForNode() {
  const esbuild = await import("esbuild");
  mkdirSync(TMP, { recursive: true });
  const outfile = join(TMP, "cold-pg-iam.mjs");
  await esbuild.build({
    entryPoints: [join(ROOT, "bench", "cold", "pg-iam.ts")],
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node20",
    outfile,
    logLevel: "error",
  });
  return outfile;
}

function variants(runtime, pgIamNodeFile) {
  const cold = join(ROOT, "bench", "cold");
  // Node and Bun users get compiled JavaScript from npm; Deno users get the TypeScript from JSR.
  const pgIam = runtime === "deno" ? join(cold, "pg-iam.ts") : pgIamNodeFile;
  const sdk = join(cold, "rds-signer.mjs");
  return [
    { runtime, name: "bare", file: join(cold, "bare.mjs"), mode: "none" },
    { runtime, name: "pg-iam env", lib: "pg-iam", file: pgIam, mode: "env" },
    { runtime, name: "rds-signer env", lib: "sdk", file: sdk, mode: "env" },
    { runtime, name: "pg-iam explicit", lib: "pg-iam", file: pgIam, mode: "explicit" },
    { runtime, name: "rds-signer explicit", lib: "sdk", file: sdk, mode: "explicit" },
    { runtime, name: "pg-iam profile", lib: "pg-iam", file: pgIam, mode: "profile" },
    { runtime, name: "rds-signer profile", lib: "sdk", file: sdk, mode: "profile" },
  ];
}

/** One fresh process; returns its wall time in ms. Throws if it failed or printed no token. */
function runOnce(v) {
  const [cmd, args] = command(v.runtime, v.file);
  const env = childEnv(v.mode);
  const start = performance.now();
  const r = spawnSync(cmd, args, { cwd: ROOT, env, encoding: "utf8" });
  const ms = performance.now() - start;
  const out = (r.stdout ?? "").trim();
  const ok = r.status === 0 && (v.name === "bare" ? out === "ok" : Number(out) > 100);
  if (!ok) {
    throw new Error(
      `${v.runtime} ${v.name} failed (status ${r.status}): ${out}\n${r.stderr ?? r.error}`,
    );
  }
  return ms;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Measures every runtime in `runtimes`; returns one result per (runtime, variant) with median
 * wall time and median overhead over the bare start.
 */
export async function coldStart({ runs = 15, runtimes = ["node", "deno", "bun"] } = {}) {
  mkdirSync(TMP, { recursive: true });
  writeFileSync(join(TMP, "profile-config"), `[profile bench]\nregion = ${REGION}\n`);
  writeFileSync(
    join(TMP, "profile-credentials"),
    `[bench]\naws_access_key_id = ${CREDENTIALS.accessKeyId}\n` +
      `aws_secret_access_key = ${CREDENTIALS.secretAccessKey}\n` +
      `aws_session_token = ${CREDENTIALS.sessionToken}\n`,
  );
  const pgIamNodeFile = runtimes.some((r) => r !== "deno") ? await bundleForNode() : undefined;
  const out = [];
  for (const runtime of runtimes) {
    const vs = variants(runtime, pgIamNodeFile);
    for (const v of vs) runOnce(v); // untimed: fills caches
    const samples = vs.map(() => []);
    for (let i = 0; i < runs; i++) {
      for (let k = 0; k < vs.length; k++) {
        const j = (k + i) % vs.length;
        samples[j].push(runOnce(vs[j]));
      }
    }
    // Overhead is the median of paired differences: sample i of a variant minus sample i of the
    // bare start, which ran within the same pass, so slow drifts in machine load cancel out.
    vs.forEach((v, j) => {
      const ms = median(samples[j]);
      const overhead = median(samples[j].map((t, i) => t - samples[0][i]));
      out.push({ runtime, name: v.name, lib: v.lib, mode: v.mode, ms, overhead });
    });
  }
  return out;
}

/** The markdown table for {@link coldStart}'s results. */
export function coldTable(results, versions = {}) {
  const lines = [
    "| runtime | credentials | bare start ms | pg-iam ms (overhead) | rds-signer ms (overhead) " +
    "| overhead pg-iam/SDK |",
    "| --- | --- | ---: | ---: | ---: | ---: |",
  ];
  const runtimes = [...new Set(results.map((r) => r.runtime))];
  for (const runtime of runtimes) {
    const get = (name) => results.find((r) => r.runtime === runtime && r.name === name);
    const bare = get("bare").ms;
    for (const mode of ["env", "explicit", "profile"]) {
      const ours = get(`pg-iam ${mode}`);
      const sdk = get(`rds-signer ${mode}`);
      lines.push(
        `| ${versions[runtime] ?? runtime} | ${mode} | ${bare.toFixed(1)} | ` +
          `${ours.ms.toFixed(1)} (+${ours.overhead.toFixed(1)}) | ` +
          `${sdk.ms.toFixed(1)} (+${sdk.overhead.toFixed(1)}) | ` +
          `${(Math.max(ours.overhead, 0) / sdk.overhead).toFixed(3)} |`,
      );
    }
  }
  return lines.join("\n");
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const arg = (name, fallback) => {
    const at = process.argv.indexOf(name);
    return at >= 0 ? process.argv[at + 1] : fallback;
  };
  const runs = Number(arg("--runs", "15"));
  const runtimes = arg("--runtimes", "node,deno,bun").split(",");
  const results = await coldStart({ runs, runtimes });
  console.log(`Cold start, median of ${runs} fresh processes each:\n`);
  console.log(coldTable(results));
}
