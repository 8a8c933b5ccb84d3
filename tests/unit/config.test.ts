// Keeps the package manifests in step: deno.json and jsr.json (JSR), package.json (npm, which
// ships the compiled dist/ that tsconfig.build.json emits from the same sources).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// deno-lint-ignore no-explicit-any
type Json = any;
const readJson = (name: string): Json =>
  JSON.parse(readFileSync(new URL(`../../${name}`, import.meta.url), "utf8"));

const deno = readJson("deno.json");
const jsr = readJson("jsr.json");
const pkg = readJson("package.json");
const tsBuild = readJson("tsconfig.build.json");

/** Subpath → source file, whether "exports" is a bare string or a map. */
const denoExports = (): Record<string, string> =>
  typeof deno.exports === "string" ? { ".": deno.exports } : deno.exports;

/** `./mod.ts` → `./dist/mod` (the npm build keeps the source tree under dist/). */
const distBase = (source: string): string => {
  assert.match(source, /^\.\/.+\.ts$/, `deno.json export ${source} should be a ./*.ts file`);
  return `./dist/${source.slice(2, -3)}`;
};

for (const key of ["name", "version", "license", "exports", "publish"]) {
  test(`deno.json and jsr.json agree on "${key}"`, () => {
    assert.notEqual(deno[key], undefined, `deno.json has no "${key}"`);
    assert.deepEqual(jsr[key], deno[key]);
  });
}

for (const key of ["version", "license"]) {
  test(`package.json and deno.json agree on "${key}"`, () => {
    assert.equal(pkg[key], deno[key]);
  });
}

test("package.json exports the same subpaths as deno.json, from dist/", () => {
  const expected = Object.fromEntries(
    Object.entries(denoExports()).map(([subpath, source]) => {
      const base = distBase(source);
      return [subpath, { types: `${base}.d.ts`, default: `${base}.js` }];
    }),
  );
  assert.deepEqual(pkg.exports, expected);
});

test('package.json "main" and "types" match its "." export', () => {
  assert.equal(pkg.main, pkg.exports["."].default);
  assert.equal(pkg.types, pkg.exports["."].types);
});

test("tsconfig.build.json compiles every deno.json export into dist/", () => {
  const { rootDir, outDir } = tsBuild.compilerOptions;
  assert.equal(rootDir, ".");
  assert.equal(outDir, "dist");
  const include: string[] = tsBuild.include;
  for (const source of Object.values(denoExports())) {
    const file = source.slice(2);
    const covered = include.some((pattern) =>
      pattern === file ||
      (pattern.endsWith("/**/*.ts") && file.startsWith(pattern.slice(0, -"**/*.ts".length)))
    );
    assert.ok(covered, `${file} is not in tsconfig.build.json "include" (${include.join(", ")})`);
  }
});

test('package.json "files" ships dist/ and the same extra files as the JSR package', () => {
  const notCode = (f: string) => !f.endsWith(".ts") && !f.endsWith("/");
  assert.ok(pkg.files.includes("dist/"), 'package.json "files" lacks "dist/"');
  assert.deepEqual(
    pkg.files.filter(notCode).sort(),
    deno.publish.include.filter(notCode).sort(),
  );
});

test('package.json "bin" is the "./cli" entry bundled by scripts/build-bin.mjs, and the CLI states the package version', async () => {
  assert.deepEqual(pkg.bin, { "pg-iam": "dist/pg-iam.cjs" });
  const build = readFileSync(new URL("../../scripts/build-bin.mjs", import.meta.url), "utf8");
  assert.match(build, new RegExp(`entryPoints: \\["${denoExports()["./cli"].slice(2)}"\\]`));
  assert.match(build, /outfile: "dist\/pg-iam\.cjs"/);
  const { VERSION } = await import("../../src/cli/mod.ts");
  assert.equal(VERSION, pkg.version);
  const source = readFileSync(new URL("../../src/cli/mod.ts", import.meta.url), "utf8");
  assert.ok(source.startsWith("#!/usr/bin/env node\n"), "src/cli/mod.ts lacks its shebang");
});

const DIST = fileURLToPath(new URL("../../dist/", import.meta.url));
const NO_DIST = existsSync(join(DIST, "chunks")) ? false : "no bundled dist/: run npm run build";

/** The relative imports of a built module, followed: every file Node loads for it. */
function graph(file: string, seen = new Set<string>()): Set<string> {
  if (seen.has(file)) return seen;
  seen.add(file);
  const text = readFileSync(file, "utf8");
  for (const [, path] of text.matchAll(/(?:^|\n)(?:import|export)\b[^"']*?from\s*"(\.[^"]+)"/g)) {
    graph(join(dirname(file), path), seen);
  }
  return seen;
}

test(
  "npm's dist: an adapter is 3 files (itself, the connection layer, the core; tsc made 19), the core 2",
  { skip: NO_DIST },
  () => {
    const files = (entry: string) =>
      [...graph(join(DIST, entry))].map((f) => f.slice(DIST.length)).sort();
    for (const adapter of ["postgres", "pg", "bun"]) {
      assert.deepEqual(files(`src/${adapter}/mod.js`), [
        "chunks/connection.js",
        "chunks/core.js",
        `src/${adapter}/mod.js`,
      ]);
    }
    assert.deepEqual(files("mod.js"), ["chunks/core.js", "mod.js"]);
  },
);

test(
  "npm's dist: one IamAuthError and one CredentialsError whichever export they come from (a layer bundled into each export would make two)",
  { skip: NO_DIST },
  async () => {
    const url = (entry: string) => new URL(`../../dist/${entry}`, import.meta.url).href;
    const postgres = await import(url("src/postgres/mod.js"));
    const pg = await import(url("src/pg/mod.js"));
    const root = await import(url("mod.js"));
    const core = await import(url("chunks/core.js"));
    assert.equal(typeof postgres.IamAuthError, "function");
    assert.equal(postgres.IamAuthError, pg.IamAuthError);
    assert.equal(root.CredentialsError, core.CredentialsError);
  },
);
