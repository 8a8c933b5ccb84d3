// postgres.js 3 and 4 from one checkout. `postgres` in package.json is the major users get today
// (4.x); `postgres3` is an npm alias for the other. With PGIAM_TEST_POSTGRES=3 in the environment
// (tests/_run.mjs sets it for its second pass), every `import ... from "postgres"` of src/ and
// tests/ resolves to the alias instead, on every runtime and in every child process a test starts:
// tsx through a tsconfig `paths` entry (TSX_TSCONFIG_PATH), Bun through --tsconfig-override, Deno
// through an import map, esbuild through --alias. The library itself is untouched: it imports
// "postgres", as in a user's project.
//
// Plain JavaScript (node: modules only), for tests/_run.mjs and for tests on all three runtimes.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DIR = join(ROOT, ".tmp", "postgres3");

/** The postgres.js major the tests run against: 3 when PGIAM_TEST_POSTGRES=3, else the default. */
export function postgresMajor() {
  return process.env.PGIAM_TEST_POSTGRES === "3" ? 3 : 4;
}

/** The npm package name that holds that major (for esbuild's alias and npm installs). */
export function postgresPackage() {
  return postgresMajor() === 3 ? "postgres3" : "postgres";
}

/**
 * Writes the tsconfig and import map that point "postgres" at the alias (from deno.json's own
 * imports, so the two never disagree) and returns the environment and per-runtime arguments that
 * use them.
 * @returns {{ tsc: string, env: Record<string, string>, deno: string[], bun: string[] }}
 */
export function postgres3Remap() {
  mkdirSync(DIR, { recursive: true });
  const main = JSON.parse(readFileSync(join(ROOT, "node_modules/postgres3/package.json"), "utf8"))
    .exports.import; // postgres.js 3 exports one ESM entry for Node, Bun and Deno alike
  const tsconfig = join(DIR, "tsconfig.json");
  writeFileSync(
    tsconfig,
    JSON.stringify({
      compilerOptions: {
        baseUrl: ROOT,
        paths: { postgres: [join("node_modules/postgres3", main)] },
      },
    }),
  );
  const denoJson = JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8"));
  const version =
    JSON.parse(readFileSync(join(ROOT, "node_modules/postgres3/package.json"), "utf8"))
      .version;
  const importMap = join(DIR, "import_map.json");
  writeFileSync(
    importMap,
    JSON.stringify({ imports: { ...denoJson.imports, postgres: `npm:postgres@${version}` } }),
  );
  // tsc, for the published types: the build's settings, "postgres" resolved to the alias's types.
  const tscConfig = join(DIR, "tsconfig.build.json");
  writeFileSync(
    tscConfig,
    JSON.stringify({
      extends: join(ROOT, "tsconfig.build.json"),
      compilerOptions: {
        noEmit: true,
        paths: { postgres: [join(ROOT, "node_modules/postgres3")] },
      },
      include: [join(ROOT, "mod.ts"), join(ROOT, "src/**/*.ts")],
    }),
  );
  return {
    tsc: tscConfig,
    // Deno's own cache apart: its type-check cache keyed by file would mix the two majors' types.
    env: { PGIAM_TEST_POSTGRES: "3", TSX_TSCONFIG_PATH: tsconfig, DENO_DIR: join(DIR, "deno") },
    deno: [`--import-map=${importMap}`],
    bun: [`--tsconfig-override=${tsconfig}`],
  };
}

/**
 * The arguments a `deno run` or `bun` child needs to see the same major as its parent test (the
 * environment, TSX_TSCONFIG_PATH and DENO_DIR included, it inherits).
 */
export function childRuntimeArgs(runtime) {
  if (postgresMajor() !== 3) return [];
  if (runtime === "deno") return [`--import-map=${join(DIR, "import_map.json")}`];
  if (runtime === "bun") return [`--tsconfig-override=${join(DIR, "tsconfig.json")}`];
  return []; // tsx reads TSX_TSCONFIG_PATH from the environment it inherits
}
