#!/usr/bin/env node
// Runs a driver's own test suite, from a checkout of its repository, through pg-iam, and compares
// the tests that fail with the differences pg-iam has by design (tests/driver-suites-expected.json,
// each with its reason). Fails when the two sets differ in either direction: a new failure is a
// difference from the plain driver to fix (or to justify there); a listed test that passes is an
// entry to remove.
//
//   node scripts/driver-suites.mjs postgres <checkout of porsager/postgres at v3.4.9> [--plain]
//   node scripts/driver-suites.mjs pg <checkout of brianc/node-postgres at pg@8.23.0> [--plain]
//
// Or DRIVER_SUITES_CHECKOUT=<path>. `--plain` runs the same suite with the plain driver (no pg-iam)
// and compares nothing: every test should pass (the baseline). Nothing of the checkout is changed
// or copied: module hooks (scripts/driver-suites/hooks.mjs) put pg-iam's wrapper in the driver's
// place and a runner of ours in its test runner's (which stops at the first failure).
//
// Needs PostgreSQL's server binaries (as npm test does): a fresh server is started, configured as
// the suite's own CI configures it (its pg_hba.conf, the test certificate for ssl=on), and stopped
// at the end. The checkout's driver runs as it is (postgres.js needs no build or install).
import { execFileSync, spawn } from "node:child_process";
import { createServer } from "node:net";
import { chownSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { userInfo } from "node:os";
import process from "node:process";
import { findPgBinDir, startPostgres } from "../tests/_postgres_server.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const EXPECTED = join(ROOT, "tests", "driver-suites-expected.json");
const MARK = "DRIVER-SUITE-RESULT ";
const SUITES = {
  postgres: { entry: "tests/index.js", hba: "tests/pg_hba.conf", timeoutMs: 20 * 60_000 },
  // pg-pool's mocha tests (the checkout at pg-pool@3.14.0), with mocha and their other test
  // dependencies from DRIVER_SUITES_NODE_PATH (e.g. the checkout's node_modules after an install).
  "pg-pool": { entry: "packages/pg-pool/test/index.js", timeoutMs: 20 * 60_000 },
  // node-postgres's integration tests (the checkout at pg@8.23.0): each file a process, as its
  // Makefile runs them; its dependencies (pg-protocol built, …) from pg-iam's node_modules.
  pg: { entry: "packages/pg/test/integration", timeoutMs: 30 * 60_000 },
};

const args = process.argv.slice(2);
const plain = args.includes("--plain");
const [suite, checkoutArg] = args.filter((a) => !a.startsWith("--"));
const checkout = resolve(checkoutArg ?? process.env.DRIVER_SUITES_CHECKOUT ?? "");
if (!(suite in SUITES) || !existsSync(join(checkout, SUITES[suite]?.entry ?? "-"))) {
  console.error(
    `usage: node scripts/driver-suites.mjs <${Object.keys(SUITES).join("|")}> <checkout> ` +
      `[--plain]\n(the checkout's ${SUITES[suite]?.entry ?? "test entry"} was not found in ` +
      `${checkout})`,
  );
  process.exit(2);
}
const spec = SUITES[suite];

const server = await startPostgres();
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    server.stop();
    process.exit(1);
  });
}
try {
  configure(server);
  // The suites name port 5432 here and there (a URL, a socket of their own): use it when free.
  server.port = await restart(server, await isFree(5432) ? 5432 : server.port);
  const results = await runSuite(server);
  process.exitCode = compare(results);
} finally {
  server.stop();
}

/** The suite's server configuration: its pg_hba.conf, and a certificate so that ssl=on works. */
function configure(server) {
  const data = join(server.dir, "data");
  const owner = statSync(join(data, "pg_hba.conf"));
  const write = (name, text, mode = 0o600) => {
    writeFileSync(join(data, name), text, { mode });
    chownSync(join(data, name), owner.uid, owner.gid);
  };
  // Their rules, after one letting the harness's superuser in over TCP whatever they say.
  if (spec.hba) {
    write(
      "pg_hba.conf",
      "host all postgres 127.0.0.1/32 trust\n" + readFileSync(join(checkout, spec.hba), "utf8"),
    );
  }
  const fixtures = readFileSync(join(ROOT, "tests", "fixtures", "tls.ts"), "utf8");
  const pem = (name) => {
    const match = new RegExp(`export const ${name} = \`([^\`]+)\``).exec(fixtures);
    if (!match) throw new Error(`tests/fixtures/tls.ts has no ${name}`);
    return match[1];
  };
  write("server.crt", pem("cert"));
  write("server.key", pem("key"));
}

function isFree(port) {
  return new Promise((resolvePromise) => {
    const probe = createServer();
    probe.once("error", () => resolvePromise(false));
    probe.listen(port, "127.0.0.1", () => probe.close(() => resolvePromise(true)));
  });
}

/** Restarts the server with what the suites' CI sets: TLS, prepared transactions, the port. */
function restart(server, port) {
  const options = `-p ${port} -k ${server.dir} -c listen_addresses=127.0.0.1 -c fsync=off ` +
    "-c max_connections=400 -c wal_level=logical -c max_prepared_transactions=100 -c ssl=on";
  const pgCtl = [
    join(findPgBinDir(), "pg_ctl"),
    "-D",
    join(server.dir, "data"),
    "-l",
    join(server.dir, "server.log"),
    "-w",
    "-t",
    "60",
    "-o",
    options,
    "restart",
  ];
  // As root (CI), PostgreSQL runs as the postgres user.
  const [command, ...rest] = process.getuid?.() === 0
    ? ["runuser", "-u", "postgres", "--", ...pgCtl]
    : pgCtl;
  execFileSync(command, rest, { cwd: server.dir, stdio: "pipe" });
  return port;
}

/** Runs the suite; resolves with each test's result, by name. */
function runSuite(server) {
  const bin = findPgBinDir();
  const env = {
    ...process.env,
    PATH: `${bin}:${process.env.PATH}`,
    PGHOST: server.host,
    PGPORT: String(server.port),
    PGUSER: server.user,
    PGDATABASE: "postgres",
    PGSOCKET: server.dir,
    DRIVER_SUITES_CHECKOUT: checkout,
    DRIVER_SUITES_MODE: plain ? "plain" : "iam",
  };
  const tsx = join(ROOT, "node_modules", "tsx", "dist", "loader.mjs");
  const hooks = join(ROOT, "scripts", "driver-suites", "hooks.mjs");
  let command = ["--import", tsx, "--import", hooks, spec.entry];
  let cwd = checkout;
  let report;
  if (suite === "pg-pool") {
    // The suite's test tools, then pg-iam's node_modules (pg and its dependencies, built), then
    // the checkout's packages (pg-cursor, which a test uses, as the workspace would link it).
    const paths = [
      ...(process.env.DRIVER_SUITES_NODE_PATH ?? "").split(":"),
      join(ROOT, "node_modules"),
      join(checkout, "packages"),
    ].filter(Boolean);
    env.NODE_PATH = paths.join(":");
    const mocha = paths.map((p) => join(p, "mocha", "bin", "mocha.js")).find(existsSync);
    if (!mocha) throw new Error("mocha not found: set DRIVER_SUITES_NODE_PATH to a node_modules");
    report = join(server.dir, "mocha.json");
    cwd = join(checkout, "packages", "pg-pool");
    command = [
      "--import",
      tsx,
      ...(plain ? [] : ["--import", join(ROOT, "scripts", "driver-suites", "pg-setup.ts")]),
      mocha,
      "--exit",
      "--timeout",
      "10000",
      "--reporter",
      "json",
      "--reporter-option",
      `output=${report}`,
    ];
  }
  if (suite === "pg") return runPgFiles(env, tsx, hooks);
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, command, {
      cwd,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const results = new Map();
    let done = false;
    let buffer = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (!line.startsWith(MARK)) continue;
        const result = JSON.parse(line.slice(MARK.length));
        if (result.done) done = true;
        else results.set(uniqueName(results, result.name), result);
      }
    });
    child.stderr.on("data", (chunk) => (stderr = (stderr + chunk).slice(-4000)));
    const timer = setTimeout(() => child.kill("SIGKILL"), spec.timeoutMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (report && existsSync(report)) {
        // mocha's JSON report: each test with its error (an empty object when it passed).
        const { tests, pending } = JSON.parse(readFileSync(report, "utf8"));
        for (const test of pending) {
          results.set(uniqueName(results, test.fullTitle), { status: "skipped" });
        }
        for (const test of tests) {
          if (pending.some((p) => p.fullTitle === test.fullTitle)) continue;
          const failed = test.err && Object.keys(test.err).length > 0;
          results.set(uniqueName(results, test.fullTitle), {
            status: failed ? "failed" : "passed",
            error: failed ? String(test.err.message).slice(0, 500) : undefined,
          });
        }
        done = true;
      }
      if (!done) {
        reject(
          new Error(
            `the ${suite} suite stopped before its end (exit ${code ?? signal}, ${results.size} ` +
              `results):\n${stderr}`,
          ),
        );
      } else resolvePromise(results);
    });
  });
}

/** node-postgres's integration test files, one process each; their results, by name. */
async function runPgFiles(env, tsx, hooks) {
  const cwd = join(checkout, "packages", "pg");
  env.NODE_PATH = [
    ...(process.env.DRIVER_SUITES_NODE_PATH ?? "").split(":"),
    join(ROOT, "node_modules"),
    join(checkout, "packages"),
  ].filter(Boolean).join(":");
  env.DRIVER_SUITES_PG_LIB = join(cwd, "lib", "index.js");
  // pg.defaults.user is $USER, which a test compares with; a login shell (and CI) sets it.
  env.USER ??= userInfo().username;
  const files = readdirSync(join(cwd, "test", "integration"), { recursive: true })
    .filter((f) => f.endsWith("-tests.js"))
    .map((f) => join("test", "integration", f))
    .sort();
  const results = new Map();
  for (const file of files) {
    const command = [
      "--import",
      tsx,
      ...(plain ? [] : [
        "--import",
        hooks,
        "--import",
        join(ROOT, "scripts", "driver-suites", "pg-setup.ts"),
      ]),
      "--require",
      join(ROOT, "scripts", "driver-suites", "pg-runner.cjs"),
      file,
      "postgres://",
    ];
    const { code, stdout } = await new Promise((resolvePromise) => {
      const child = spawn(process.execPath, command, {
        cwd,
        env,
        stdio: ["ignore", "pipe", "ignore"],
      });
      let out = "";
      child.stdout.on("data", (chunk) => (out += chunk));
      const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
      child.on("exit", (exitCode, signal) => {
        clearTimeout(timer);
        // Spawned processes of its own may hold stdout: read what arrived.
        setTimeout(() => resolvePromise({ code: exitCode ?? signal, stdout: out }), 100);
      });
    });
    for (const line of stdout.split("\n")) {
      // The suite's helper prints the file's name with no newline before the first result.
      const at = line.indexOf(MARK);
      if (at < 0) continue;
      const result = JSON.parse(line.slice(at + MARK.length));
      results.set(uniqueName(results, result.name), result);
    }
    if (code !== 0) {
      results.set(uniqueName(results, `${file}: (exit)`), {
        status: "failed",
        error: `exit ${code}`,
      });
    }
  }
  return results;
}

/** Test names repeat in some suites: the second "x" is "x (2)". */
function uniqueName(results, name) {
  let unique = name;
  for (let i = 2; results.has(unique); i++) unique = `${name} (${i})`;
  return unique;
}

/** Prints the counts and the differences; returns the exit code. */
function compare(results) {
  const all = [...results.values()];
  const count = (status) => all.filter((r) => r.status === status).length;
  const failed = [...results].filter(([, r]) => r.status === "failed").map(([name]) => name);
  const label = `${suite} suite, ${plain ? "plain driver" : "through pg-iam"}`;
  console.log(
    `${label}: ${count("passed")}/${all.length} passed, ${failed.length} failed, ` +
      `${count("skipped")} skipped`,
  );
  if (plain) {
    for (const name of failed) console.log(`  failed: ${name}: ${results.get(name).error}`);
    return failed.length ? 1 : 0;
  }
  const expected = JSON.parse(readFileSync(EXPECTED, "utf8"))[suite] ?? {};
  // A reason starting "timing:" marks a test whose own timing assumption an IAM login (signing,
  // TLS, the gateway) may miss on a loaded machine: either outcome is accepted.
  const either = (name) => String(expected[name]).startsWith("timing:");
  const unexpected = failed.filter((name) => !(name in expected));
  const fixed = Object.keys(expected).filter((name) => !failed.includes(name) && !either(name));
  for (const name of unexpected) {
    console.log(`  NEW DIFFERENCE: ${name}: ${results.get(name).error}`);
  }
  for (const name of fixed) {
    console.log(
      `  LISTED BUT ${results.has(name) ? "PASSES" : "NOT RUN"}: ${name} (remove it from ` +
        `tests/driver-suites-expected.json)`,
    );
  }
  const ok = unexpected.length === 0 && fixed.length === 0;
  console.log(
    ok
      ? `driver-suites: 1 passed, 0 failed (every failing test is a listed by-design difference)`
      : `driver-suites: 0 passed, 1 failed (${unexpected.length} new difference(s), ` +
        `${fixed.length} listed test(s) not failing)`,
  );
  return ok ? 0 : 1;
}
