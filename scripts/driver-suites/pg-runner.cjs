// node-postgres's test/suite.js (its Suite class), written anew for scripts/driver-suites.mjs:
// every test of a file runs, one after another, within its timeout, whatever the others did (its
// own ends the process at the first failure); each result is printed as one line. Preloaded with
// --require; the suite's module is swapped for this one as it loads.
"use strict";
const Module = require("node:module");

const MARK = "DRIVER-SUITE-RESULT ";
const file = process.argv[1] ? require("node:path").relative(process.cwd(), process.argv[1]) : "";
const report = (result) => process.stdout.write(MARK + JSON.stringify(result) + "\n");

class Suite {
  constructor() {
    this.queue = [];
    this.running = false;
  }

  test(name, action) {
    this.queue.push({ name, action, timeout: 5000 });
    if (!this.running) {
      this.running = true;
      setImmediate(() => this.next());
    }
  }

  next() {
    const test = this.queue.shift();
    if (!test) return void (this.running = false);
    const name = `${file}: ${test.name}`;
    if (!test.action) {
      report({ name, status: "skipped" });
      return this.next();
    }
    let settled = false;
    const finish = (error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      report(
        error
          ? { name, status: "failed", error: String(error?.message ?? error).slice(0, 500) }
          : { name, status: "passed" },
      );
      setImmediate(() => this.next());
    };
    const timer = setTimeout(
      () => finish(new Error(`did not complete within ${test.timeout}ms`)),
      test.timeout,
    );
    try {
      if (test.action.length) test.action.call(test, (error) => finish(error));
      else {
        const result = test.action.call(test);
        if (result && typeof result.then === "function") {
          result.then(() => finish(), (error) => finish(error || new Error("rejected")));
        } else finish();
      }
    } catch (error) {
      finish(error);
    }
  }
}

// A test that throws outside its callback (an assertion in an event handler) fails the test that
// is running, as the suite's own runner would fail the file.
process.on(
  "uncaughtException",
  (error) =>
    report({
      name: `${file}: (uncaught)`,
      status: "failed",
      error: String(error?.message ?? error).slice(0, 500),
    }),
);

const load = Module._load;
Module._load = function (request, parent, isMain) {
  const exports = load.apply(this, arguments);
  if (!/suite(\.js)?$/.test(request)) return exports;
  let filename = "";
  try {
    filename = Module._resolveFilename(request, parent, isMain);
  } catch { /* not resolvable here */ }
  return /[/\\]packages[/\\]pg[/\\]test[/\\]suite\.js$/.test(filename) ? Suite : exports;
};
