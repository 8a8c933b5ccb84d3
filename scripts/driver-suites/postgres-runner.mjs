// postgres.js's test API (t, nt, ot from its tests/test.js, written anew): every test runs, one
// after another, each within its timeout, whatever the others did; each result is printed as one
// line for scripts/driver-suites.mjs. A test returns [expected, got]; it passes when they are ===.
import util from "node:util";

const MARK = "DRIVER-SUITE-RESULT ";
const tests = [];
let only = false;
let scheduled = false;

function add(isOnly, name, options, fn) {
  if (typeof options !== "object") [fn, options] = [options, {}];
  tests.push({ name, options, fn, only: isOnly });
  if (!scheduled) {
    scheduled = true;
    setTimeout(run, 0);
  }
}

export const t = (...args) => add(false, ...args);
t.timeout = 5;
export const ot = (...args) => ((only = true), add(true, ...args));
export const nt = (name) => report({ name, status: "skipped" });

function report(result) {
  process.stdout.write(MARK + JSON.stringify(result) + "\n");
}

async function run() {
  for (const test of tests) {
    if (only && !test.only) continue;
    let timer;
    try {
      const seconds = test.options.timeout || t.timeout;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error("Timed out")), seconds * 1000);
      });
      const x = await Promise.race([test.fn(), timeout]);
      if (!Array.isArray(x)) throw new Error("Test should return result array");
      const [expected, got] = await Promise.race([Promise.all(x), timeout]);
      if (expected !== got) {
        throw new Error(util.inspect(expected) + " != " + util.inspect(got));
      }
      report({ name: test.name, status: "passed" });
    } catch (error) {
      const message = error instanceof Error ? error.message : util.inspect(error);
      report({ name: test.name, status: "failed", error: message.slice(0, 500) });
    } finally {
      clearTimeout(timer);
    }
  }
  report({ done: true });
  process.exit(0);
}
