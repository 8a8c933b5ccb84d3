// Module hooks for scripts/driver-suites.mjs, loaded with `--import` into the process that runs a
// driver's own test suite from its checkout. They swap modules by resolved URL (nothing of the
// checkout is changed or copied):
// - postgres.js's tests/test.js (its test runner) → postgres-runner.mjs, which runs every test
//   (its own stops at the first failure) and prints one result line per test;
// - for node-postgres's own suite (DRIVER_SUITES_PG_LIB), pg-iam's import of "pg" → the checkout's;
// - in "iam" mode, the driver those tests import (src/index.js) → postgres-shim.ts (pg-iam's
//   iamPostgres in its place), and pg-iam's own import of "postgres" → the checkout's driver.
import { register } from "node:module";
import { pathToFileURL } from "node:url";

const checkout = pathToFileURL(process.env.DRIVER_SUITES_CHECKOUT + "/").href;
const here = new URL("./", import.meta.url).href;
const pgIamSrc = new URL("../../src/", import.meta.url).href;

register(
  "data:text/javascript," + encodeURIComponent(`
    const checkout = ${JSON.stringify(checkout)};
    const here = ${JSON.stringify(here)};
    const pgIamSrc = ${JSON.stringify(pgIamSrc)};
    const mode = ${JSON.stringify(process.env.DRIVER_SUITES_MODE ?? "iam")};
    const pgLib = ${JSON.stringify(process.env.DRIVER_SUITES_PG_LIB ?? "")};
    export async function resolve(specifier, context, next) {
      const parent = context.parentURL ?? "";
      if (specifier === "postgres" && parent.startsWith(pgIamSrc)) {
        return next(checkout + "src/index.js", context);
      }
      if (specifier === "pg" && pgLib && parent.startsWith(pgIamSrc)) {
        return next(pgLib, context);
      }
      const resolved = await next(specifier, context);
      if (resolved.url === checkout + "tests/test.js") {
        return next(here + "postgres-runner.mjs", context);
      }
      if (
        mode === "iam" && resolved.url === checkout + "src/index.js" &&
        parent.startsWith(checkout + "tests/")
      ) {
        return next(here + "postgres-shim.ts", context);
      }
      return resolved;
    }
  `),
);
