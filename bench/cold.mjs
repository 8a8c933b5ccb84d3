// Cold start: runtime start + import + first token, minus the runtime's bare start.
//
//   node bench/cold.mjs [--runs 15] [--runtimes node,deno,bun]
//   node bench/cold.mjs --drivers [--baseline <git ref>] [--runs 15] [--runtimes node,deno,bun]
//
// --drivers: the adapters instead: import + create a client (no connection) of plain postgres.js,
// pg-iam/postgres, plain pg, pg-iam/pg and AWS's Aurora DSQL connector for node-postgres; see
// driverColdStart() below. --baseline adds pg-iam as built from that commit, in the same passes.
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

import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { credentialEnv, CREDENTIALS, dsqlHost, RDS_HOST, REGION } from "./_fixtures.mjs";

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

// ---- the drivers: import + a client, pg-iam's adapters against the plain drivers ----

const DRIVERS = join(TMP, "drivers");
const DSQL_HOST = dsqlHost(1);

/**
 * pg-iam as its users get it, under DRIVERS/<label>: `npm/node_modules/pg-iam` holds package.json
 * and the dist/ that `npm run build` makes (what `npm pack` ships: npm users on Node and Bun);
 * `jsr/` has a deno.json mapping `pg-iam/*` to the sources (what JSR serves Deno users), with
 * node_modules for the npm: packages. Built from a copy: of commit `ref`, or of this checkout.
 */
function installPgIam(label, ref) {
  const dir = join(DRIVERS, label);
  const tree = join(dir, "tree");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(tree, { recursive: true });
  if (ref) {
    const tar = execFileSync("git", ["archive", "--format=tar", ref], {
      cwd: ROOT,
      maxBuffer: 1e9,
    });
    execFileSync("tar", ["-x", "-C", tree], { input: tar });
  } else {
    for (
      const entry of [
        "mod.ts",
        "src",
        "scripts",
        "package.json",
        "deno.json",
        "tsconfig.build.json",
      ]
    ) {
      cpSync(join(ROOT, entry), join(tree, entry), { recursive: true });
    }
  }
  symlinkSync(join(ROOT, "node_modules"), join(tree, "node_modules"));
  execFileSync("npm", ["run", "--silent", "build"], {
    cwd: tree,
    stdio: ["ignore", "ignore", "inherit"],
  });
  const pkg = join(dir, "npm", "node_modules", "pg-iam");
  mkdirSync(pkg, { recursive: true });
  cpSync(join(tree, "package.json"), join(pkg, "package.json"));
  cpSync(join(tree, "dist"), join(pkg, "dist"), { recursive: true });
  denoProject(join(dir, "jsr"), {
    "pg-iam/postgres": pathToFileURL(join(tree, "src", "postgres", "mod.ts")).href,
    "pg-iam/pg": pathToFileURL(join(tree, "src", "pg", "mod.ts")).href,
  });
  return dir;
}

/** A Deno project: deno.json with this checkout's imports plus `imports`, node_modules linked. */
function denoProject(dir, imports) {
  mkdirSync(dir, { recursive: true });
  const denoJson = JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8"));
  const connector = "@aws/aurora-dsql-node-postgres-connector";
  writeFileSync(
    join(dir, "deno.json"),
    JSON.stringify({
      nodeModulesDir: "manual",
      lock: false,
      imports: { ...denoJson.imports, [connector]: `npm:${connector}`, ...imports },
    }),
  );
  writeFileSync(join(dir, "package.json"), "{}");
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
}

const ENV = "const env = (name) =>\n" +
  "  globalThis.Deno ? globalThis.Deno.env.get(name) : globalThis.process.env[name];\n";
const URL_ = '`postgres://admin@${env("BENCH_HOST")}:5432/postgres`';

/**
 * The driver scenario's scripts: each imports one driver by its package name and creates a client
 * for BENCH_HOST (no connection), then prints "ok". Written out by placeScripts(), beside the
 * pg-iam install they are to load (`pg-iam/*` resolves only there).
 */
const SCRIPTS = {
  "postgres.mjs": `import postgres from "postgres";\n${ENV}` +
    `const sql = postgres(${URL_}, { ssl: "require" });\n` +
    `console.log(typeof sql === "function" ? "ok" : "no client");\n`,
  "pg-iam-postgres.mjs": `import { iamPostgres } from "pg-iam/postgres";\n${ENV}` +
    `const sql = iamPostgres(${URL_});\n` +
    `console.log(typeof sql === "function" ? "ok" : "no client");\n`,
  "pg.mjs": `import pg from "pg";\n${ENV}` +
    `const pool = new pg.Pool({ connectionString: ${URL_}, ssl: true });\n` +
    `console.log(typeof pool.query === "function" ? "ok" : "no pool");\n`,
  "pg-iam-pg.mjs": `import { iamPool } from "pg-iam/pg";\n${ENV}` +
    `const pool = iamPool({ connectionString: ${URL_} });\n` +
    `console.log(typeof pool.query === "function" ? "ok" : "no pool");\n`,
  "dsql-connector.mjs":
    `import { AuroraDSQLPool } from "@aws/aurora-dsql-node-postgres-connector";\n` +
    `${ENV}const pool = new AuroraDSQLPool({ host: env("BENCH_HOST"), user: "admin" });\n` +
    `console.log(typeof pool.query === "function" ? "ok" : "no pool");\n`,
};

/**
 * Writes the driver scripts into `dir`, so that imports resolve from there (a package.json of its
 * own: else this checkout's, named pg-iam, would resolve `pg-iam/*` to itself).
 */
function placeScripts(dir) {
  mkdirSync(dir, { recursive: true });
  if (!dir.endsWith("jsr")) {
    writeFileSync(join(dir, "package.json"), `{ "name": "cold-bench", "private": true }`);
  }
  for (const [file, text] of Object.entries(SCRIPTS)) writeFileSync(join(dir, file), text);
}

/**
 * Import + client creation, no connection, in fresh processes: bare start, plain postgres.js,
 * pg-iam/postgres for a DSQL and an RDS endpoint, plain pg, pg-iam/pg for both, and AWS's DSQL
 * connector for node-postgres; with `baseline`, pg-iam as built from that commit beside this
 * checkout's, in the same passes. Node and Bun load the npm package (dist/), Deno the sources.
 * Each result: median wall time, and the medians of paired differences to the bare start and to
 * the plain driver of the same pass.
 */
export function driverColdStart(
  { runs = 15, runtimes = ["node", "deno", "bun"], baseline } = {},
) {
  rmSync(DRIVERS, { recursive: true, force: true });
  const labels = [];
  if (baseline) {
    const commit = execFileSync("git", ["rev-parse", "--short", baseline], {
      cwd: ROOT,
      encoding: "utf8",
    }).trim();
    labels.push({ label: commit, dir: installPgIam("base", baseline) });
  }
  labels.push({ label: "this checkout", dir: installPgIam("head", undefined) });
  const plain = join(DRIVERS, "plain");
  placeScripts(join(plain, "npm"));
  denoProject(join(plain, "jsr"), {});
  placeScripts(join(plain, "jsr"));
  for (const { dir } of labels) {
    placeScripts(join(dir, "npm"));
    placeScripts(join(dir, "jsr"));
  }
  const out = [];
  for (const runtime of runtimes) {
    const at = (dir, file) => ({
      cwd: join(dir, runtime === "deno" ? "jsr" : "npm"),
      file: `${file}.mjs`,
    });
    const vs = [
      { name: "bare", cwd: ROOT, file: join(ROOT, "bench", "cold", "bare.mjs") },
      { name: "postgres.js", driver: "postgres.js", host: DSQL_HOST, ...at(plain, "postgres") },
      ...labels.flatMap(({ label, dir }) =>
        [
          { name: "pg-iam/postgres DSQL", driver: "postgres.js", label, host: DSQL_HOST },
          { name: "pg-iam/postgres RDS", driver: "postgres.js", label, host: RDS_HOST },
        ].map((v) => ({ ...v, ...at(dir, "pg-iam-postgres") }))
      ),
      { name: "pg", driver: "pg", host: DSQL_HOST, ...at(plain, "pg") },
      ...labels.flatMap(({ label, dir }) =>
        [
          { name: "pg-iam/pg DSQL", driver: "pg", label, host: DSQL_HOST },
          { name: "pg-iam/pg RDS", driver: "pg", label, host: RDS_HOST },
        ].map((v) => ({ ...v, ...at(dir, "pg-iam-pg") }))
      ),
      {
        name: "AWS DSQL connector (pg)",
        driver: "pg",
        host: DSQL_HOST,
        ...at(plain, "dsql-connector"),
      },
    ].map((v) => ({ ...v, runtime }));
    for (const v of vs) runDriver(v); // untimed: fills caches
    const samples = vs.map(() => []);
    for (let i = 0; i < runs; i++) {
      for (let k = 0; k < vs.length; k++) {
        const j = (k + i) % vs.length;
        samples[j].push(runDriver(vs[j]));
      }
    }
    const paired = (a, b) => median(a.map((t, i) => t - b[i]));
    vs.forEach((v, j) => {
      const plainIndex = vs.findIndex((p) => p.name === v.driver);
      out.push({
        runtime,
        name: v.name,
        label: v.label,
        ms: median(samples[j]),
        overBare: paired(samples[j], samples[0]),
        overPlain: v.driver && plainIndex !== j
          ? paired(samples[j], samples[plainIndex])
          : undefined,
      });
    });
  }
  return out;
}

/** One fresh process of a driver variant; returns its wall time in ms. */
function runDriver(v) {
  const [cmd, args] = command(v.runtime, v.file);
  if (v.runtime === "deno") args.splice(1, 0, "--config", "deno.json");
  const env = childEnv("none");
  if (v.host) env.BENCH_HOST = v.host;
  const start = performance.now();
  const r = spawnSync(cmd, args, { cwd: v.cwd, env, encoding: "utf8" });
  const ms = performance.now() - start;
  if (r.status !== 0 || (r.stdout ?? "").trim() !== "ok") {
    throw new Error(
      `${v.runtime} ${v.name} ${v.label ?? ""} failed (status ${r.status}): ${r.stdout}\n` +
        `${r.stderr ?? r.error}`,
    );
  }
  return ms;
}

/** The markdown table for {@link driverColdStart}'s results. */
export function driverColdTable(results, versions = {}) {
  const lines = [
    "| runtime | import + client | pg-iam | ms | over bare start | over the plain driver |",
    "| --- | --- | --- | ---: | ---: | ---: |",
  ];
  const sign = (n) => `${n >= 0 ? "+" : ""}${n.toFixed(1)}`;
  for (const r of results) {
    lines.push(
      `| ${versions[r.runtime] ?? r.runtime} | ${r.name} | ${r.label ?? ""} | ${
        r.ms.toFixed(1)
      } | ` +
        `${r.name === "bare" ? "" : sign(r.overBare)} | ` +
        `${r.overPlain === undefined ? "" : `**${sign(r.overPlain)}**`} |`,
    );
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
  if (process.argv.includes("--drivers")) {
    const results = driverColdStart({ runs, runtimes, baseline: arg("--baseline") });
    console.log(`Import + client, median of ${runs} fresh processes each:\n`);
    console.log(driverColdTable(results));
  } else {
    const results = await coldStart({ runs, runtimes });
    console.log(`Cold start, median of ${runs} fresh processes each:\n`);
    console.log(coldTable(results));
  }
}
