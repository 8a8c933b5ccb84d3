// The cost of transaction()'s nesting check, which runs each transaction's work inside an
// AsyncLocalStorage: transaction() throughput against the driver's own begin/commit, on
// postgres.js and node-postgres, against a trust-auth PostgreSQL (PGIAM_TEST_PG=host:port, else one
// started by tests/_postgres_server.mjs). Each measurement is a fresh process (bench/als/child.ts,
// which lists the variants), because on Node 20 the first AsyncLocalStorage.run() turns on promise
// hooks for the whole process: a process that has used it cannot measure one that has not. The
// variants run interleaved, in a rotating order, round after round; reported for each are the
// median throughput and client CPU time per transaction, and the medians of their per-round ratios
// to `plain` (the CPU time is the steadier on a loaded machine).
//
//   node bench/als.mjs [--rounds 7] [--ms 1000] [--concurrency 4] [--runtimes node,deno,bun]

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { startPostgres } from "../tests/_postgres_server.mjs";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const BIN = join(ROOT, "node_modules", ".bin");
const TMP = join(ROOT, ".tmp", "bench");
const arg = (name, fallback) => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : fallback;
};
const ROUNDS = Number(arg("--rounds", "7"));
const MS = arg("--ms", "1000");
const CONCURRENCY = arg("--concurrency", "4");
const RUNTIMES = arg("--runtimes", "node").split(",");
const TOGETHER = process.argv.includes("--together");
// Time for four children to start before the common start (more than their start-up takes).
const START_MS = { node: 1500, deno: 2500, bun: 1500 };
const DRIVERS = ["postgres", "pg"];
const VARIANTS = ["plain", "als-once", "als-run", "pg-iam"];

const log = (message) => process.stderr.write(message + "\n");
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Node runs the child bundled by esbuild (no tsx in the process), the drivers from node_modules. */
async function bundleForNode() {
  const esbuild = await import("esbuild");
  mkdirSync(TMP, { recursive: true });
  const outfile = join(TMP, "als-child.mjs");
  await esbuild.build({
    entryPoints: [join(ROOT, "bench", "als", "child.ts")],
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node20",
    packages: "external",
    outfile,
    logLevel: "error",
  });
  return outfile;
}

const child = join(ROOT, "bench", "als", "child.ts");
const commands = {
  node: (bundle) => [process.execPath, [bundle]],
  deno: () => [join(BIN, "deno"), ["run", "-A", "--quiet", child]],
  bun: () => [join(BIN, "bun"), [child]],
};

/** One child's measurement; `startAt` (epoch ms): when it begins its warm-up. */
function measure(runtime, bundle, driver, variant, address, startAt = 0) {
  const [cmd, pre] = commands[runtime](bundle);
  const args = [...pre, driver, variant, address, MS, "400", CONCURRENCY, String(startAt)];
  const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, NODE_OPTIONS: "" } });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => (stdout += chunk));
  child.stderr.on("data", (chunk) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (status) => {
      if (status !== 0) {
        reject(new Error(`${runtime} ${driver} ${variant} failed (${status}): ${stderr}`));
      } else resolve(JSON.parse(stdout.trim().split("\n").at(-1)));
    });
  });
}

let server;
let address = process.env.PGIAM_TEST_PG;
if (!address) {
  server = await startPostgres();
  address = `${server.host}:${server.port}`;
}
try {
  const bundle = RUNTIMES.includes("node") ? await bundleForNode() : undefined;
  const load = loadavg().map((x) => x.toFixed(2)).join(", ");
  const started = performance.now();
  log(`PostgreSQL at ${address}; ${cpus().length} cores, load average ${load}`);
  const results = {}; // runtime/driver -> variant -> tps[] (per round)
  for (let round = 0; round < ROUNDS; round++) {
    for (const runtime of RUNTIMES) {
      for (const driver of DRIVERS) {
        const key = `${runtime}/${driver}`;
        results[key] ??= Object.fromEntries(VARIANTS.map((v) => [v, []]));
        // A rotating order, so no variant always runs first (or right after another).
        const order = VARIANTS.map((_, i) => VARIANTS[(i + round) % VARIANTS.length]);
        const report = (variant, m) => {
          results[key][variant].push(m);
          log(
            `round ${round + 1}/${ROUNDS} ${key} ${variant}: ${m.tps} tx/s, ` +
              `${m.cpuUs.toFixed(1)} µs CPU/tx`,
          );
        };
        if (TOGETHER) {
          // All four at once, from the same instant: the same load on each, the server shared.
          const startAt = Date.now() + START_MS[runtime];
          const ms = await Promise.all(
            order.map((v) => measure(runtime, bundle, driver, v, address, startAt)),
          );
          order.forEach((v, i) => report(v, ms[i]));
        } else {
          for (const v of order) report(v, await measure(runtime, bundle, driver, v, address));
        }
      }
    }
  }
  const seconds = Math.round((performance.now() - started) / 1000);
  const after = loadavg().map((x) => x.toFixed(2)).join(", ");
  const out = [
    `transaction() throughput, ${CONCURRENCY} in flight, ${MS} ms per process, ${ROUNDS} rounds ` +
    `${
      TOGETHER ? "with the four variants at once" : "interleaved"
    } (${seconds} s); load average ${load} before, ${after} after, ${cpus().length} cores`,
    "",
    "| runtime / driver | variant | tx/s | tx/s vs plain | client CPU µs/tx | CPU vs plain |",
    "|---|---|---:|---:|---:|---:|",
  ];
  for (const [key, byVariant] of Object.entries(results)) {
    for (const variant of VARIANTS) {
      const runs = byVariant[variant];
      const ratio = (field) => median(runs.map((m, i) => m[field] / byVariant.plain[i][field]));
      out.push(
        `| ${key} | ${variant} | ${Math.round(median(runs.map((m) => m.tps)))} | ` +
          `${ratio("tps").toFixed(2)} | ${median(runs.map((m) => m.cpuUs)).toFixed(1)} | ` +
          `${ratio("cpuUs").toFixed(2)} |`,
      );
    }
  }
  process.stdout.write(out.join("\n") + "\n");
} finally {
  server?.stop();
}
