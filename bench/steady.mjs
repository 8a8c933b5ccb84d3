// Runs bench/steady.ts (pg-iam's driver integrations against the same drivers used plainly, after
// login, over TLS) for each driver on each runtime in turn, each process with its own PostgreSQL
// server, and prints one markdown report to stdout (progress to stderr).
//
//   node bench/steady.mjs [--quick] [--rounds N] [--cases a,b,c,d,e] [--runtimes node,deno,bun]
//     [--drivers postgres,pg,bun] [--postgres 3|4]
//
// --postgres 3: every child loads postgres.js 3.x (the `postgres3` alias) where src/ and the bench
// import "postgres", remapped as the tests do it (tests/_postgres_major.mjs); the default is 4.
//
// postgres (iamPostgres vs postgres.js) and pg (iamPool vs node-postgres) run on Node, Deno and
// Bun; bun (iamSql vs Bun.SQL) on Bun only. A run that fails is reported as failed; the others
// still run.

import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { postgres3Remap } from "../tests/_postgres_major.mjs";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const BIN = join(ROOT, "node_modules", ".bin");
const STEADY = join(ROOT, "bench", "steady.ts");
const arg = (name) => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : undefined;
};
const passOn = [
  ...(process.argv.includes("--quick") ? ["--quick"] : []),
  ...["--rounds", "--cases"].flatMap((name) => arg(name) ? [name, arg(name)] : []),
];

const major = arg("--postgres") ?? "4";
if (major !== "3" && major !== "4") throw new Error(`--postgres must be 3 or 4, not ${major}`);
// A child of the default major must not inherit a remap from this process's environment.
const { PGIAM_TEST_POSTGRES: _, TSX_TSCONFIG_PATH: __, ...baseEnv } = process.env;
const remap = major === "3" ? postgres3Remap() : { env: {}, deno: [], bun: [] };
const postgresVersion = JSON.parse(
  readFileSync(
    join(ROOT, "node_modules", major === "3" ? "postgres3" : "postgres", "package.json"),
    "utf8",
  ),
).version;

const RUNTIMES = {
  node: [process.execPath, [join(ROOT, "node_modules", "tsx", "dist", "cli.mjs"), "--expose-gc"]],
  deno: [join(BIN, "deno"), ["run", "-A", "--quiet", "--v8-flags=--expose-gc"]],
  bun: [join(BIN, "bun"), []],
};
const wanted = (arg("--runtimes") ?? "node,deno,bun").split(",");
const unknown = wanted.filter((r) => !(r in RUNTIMES));
if (unknown.length) throw new Error(`unknown runtime(s) ${unknown.join(", ")}: use node,deno,bun`);
// Which runtimes each driver runs on, and what the report calls it.
const DRIVERS = {
  postgres: { runtimes: ["node", "deno", "bun"], label: "iamPostgres vs postgres.js" },
  pg: { runtimes: ["node", "deno", "bun"], label: "iamPool vs node-postgres" },
  bun: { runtimes: ["bun"], label: "iamSql vs Bun.SQL" },
};
const drivers = (arg("--drivers") ?? "postgres,pg,bun").split(",");
const unknownDrivers = drivers.filter((d) => !(d in DRIVERS));
if (unknownDrivers.length) {
  throw new Error(`unknown driver(s) ${unknownDrivers.join(", ")}: use postgres,pg,bun`);
}

function log(message) {
  process.stderr.write(message + "\n");
}

function git(args) {
  const r = spawnSync("git", args, { cwd: ROOT, encoding: "utf8" });
  return r.status === 0 ? r.stdout.trimEnd() : "";
}

/** The commit, and the library files changed since it (the bench measures the working tree). */
function codeState() {
  const changed = git(["status", "--porcelain", "--", "src", "mod.ts"]).split("\n")
    .filter(Boolean).map((l) => l.slice(3));
  return `${git(["rev-parse", "--short", "HEAD"]) || "unknown commit"}` +
    (changed.length ? `, with uncommitted changes in ${changed.join(", ")}` : "");
}

const started = performance.now();
const load0 = loadavg()[0];
const code = codeState();

const results = [];
for (
  const [driver, runtime] of drivers.flatMap((d) =>
    wanted.filter((r) => DRIVERS[d].runtimes.includes(r)).map((r) => [d, r])
  )
) {
  const [cmd, pre] = RUNTIMES[runtime];
  log(`${driver} on ${runtime}...`);
  const remapArgs = { node: [], deno: remap.deno, bun: remap.bun }[runtime];
  const args = [...pre, ...remapArgs, STEADY, "--json", "--driver", driver, ...passOn];
  const r = spawnSync(cmd, args, {
    cwd: ROOT,
    encoding: "utf8",
    env: { ...baseEnv, ...remap.env, DENO_NO_UPDATE_CHECK: "1" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const line = (r.stdout ?? "").split("\n").find((l) => l.startsWith("BENCH_JSON "));
  if (r.status === 0 && line) {
    results.push(JSON.parse(line.slice("BENCH_JSON ".length)));
  } else {
    const why = r.error?.message ?? `exit ${r.status ?? r.signal}`;
    results.push({ runtime, driver, failed: `${why}; see stderr above` });
  }
}

const ms = (n) => n.toFixed(1);
const kb = (n) => (n / 1024).toFixed(1);
const cpu = cpus();
const report = [
  "## Steady state: pg-iam vs the plain driver after login, over verified TLS",
  "",
  `Machine: ${cpu.length} cores (${cpu[0]?.model.trim() ?? "unknown CPU"}), ` +
  `${Math.round(totalmem() / 2 ** 30)} GiB, ${process.platform}-${process.arch}. ` +
  `Code: ${code}; postgres.js ${postgresVersion}.` +
  (codeState() === code ? "" : ` **The code changed during the run** (now: ${codeState()}).`),
  "",
  "Medians over the rounds; the ratios are medians of per-round iam/plain ratios (rounds " +
  "alternate which client goes first). CPU is the process's user + system time.",
  "",
  "| driver | runtime | case | rounds | plain wall ms | iam wall ms | wall iam/plain " +
  "| plain CPU ms | iam CPU ms | CPU iam/plain |",
  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
];
for (const res of results) {
  const label = DRIVERS[res.driver].label;
  if (res.failed) {
    report.push(`| ${label} | ${res.runtime} | **failed**: ${res.failed} | | | | | | | |`);
    continue;
  }
  for (const r of res.rows) {
    report.push(
      `| ${label} | ${res.runtime} | ${r.name} | ${r.rounds} | ${ms(r.wall.plain)} | ` +
        `${ms(r.wall.iam)} | ` +
        `**${r.wallRatio.toFixed(3)}** | ${ms(r.cpu.plain)} | ${ms(r.cpu.iam)} | ` +
        `**${r.cpuRatio.toFixed(3)}** |`,
    );
  }
}
const withMemory = results.filter((r) => r.memory);
if (withMemory.length) {
  report.push(
    "",
    `Memory per open connection: growth from 2 to ${withMemory[0].memory.pool} open ` +
      "connections in a fresh process (after a full GC), per connection; median over processes.",
    "",
    "| driver | runtime | processes per client | plain heap + external KB " +
      "| iam heap + external KB | plain RSS KB | iam RSS KB |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ...withMemory.map(({ driver, runtime, memory: m }) =>
      `| ${DRIVERS[driver].label} | ${runtime} | ${m.rounds} | ${kb(m.heap.plain)} | ` +
      `${kb(m.heap.iam)} | ` +
      `${kb(m.rss.plain)} | ${kb(m.rss.iam)} |`
    ),
  );
}
report.push("", "TLS seen (pg_stat_ssl):");
for (const res of results.filter((r) => !r.failed)) {
  report.push(
    `- ${DRIVERS[res.driver].label}, ${res.runtime}: ` +
      `${res.tls.sort().join("; ") || "(memory children only)"}`,
  );
}
report.push(
  "",
  `Total bench time: ${((performance.now() - started) / 1000).toFixed(0)} s. Load average ` +
    `(1 min) at start ${load0.toFixed(2)}, at end ${loadavg()[0].toFixed(2)}.`,
);
console.log(report.join("\n"));
if (results.some((r) => r.failed)) process.exitCode = 1;
