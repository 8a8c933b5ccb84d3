// Bundle size: `esbuild --bundle --minify --format=esm` of mod.ts against an entry that imports
// { Signer } from @aws-sdk/rds-signer (and { DsqlSigner } from @aws-sdk/dsql-signer), per
// platform. Reports minified bytes, gzip bytes (level 9), the node_modules packages that went into
// the bundle, and the imports esbuild left external (node builtins).
//
//   node bench/size.mjs

import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));

const ENTRIES = [
  { name: "pg-iam (mod.ts)", lib: "pg-iam", file: join(ROOT, "mod.ts") },
  {
    name: "@aws-sdk/rds-signer { Signer }",
    lib: "sdk",
    contents: 'export { Signer } from "@aws-sdk/rds-signer";',
  },
  {
    name: "@aws-sdk/dsql-signer { DsqlSigner }",
    lib: "sdk-dsql",
    contents: 'export { DsqlSigner } from "@aws-sdk/dsql-signer";',
  },
];
const PLATFORMS = ["node", "browser", "neutral"];

function packageOf(path) {
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path);
  return m?.[1];
}

async function build(esbuild, entry, platform) {
  const options = {
    bundle: true,
    minify: true,
    format: "esm",
    platform,
    write: false,
    metafile: true,
    logLevel: "silent",
    absWorkingDir: ROOT,
  };
  if (entry.file) options.entryPoints = [entry.file];
  else options.stdin = { contents: entry.contents, resolveDir: ROOT, loader: "js" };
  try {
    const result = await esbuild.build(options);
    const code = result.outputFiles[0].contents;
    const inputs = Object.keys(result.metafile.inputs);
    const packages = [...new Set(inputs.map(packageOf).filter(Boolean))].sort();
    const outputs = Object.values(result.metafile.outputs);
    const external = [
      ...new Set(outputs.flatMap((o) => o.imports.filter((i) => i.external).map((i) => i.path))),
    ].sort();
    return {
      ok: true,
      minified: code.length,
      gzip: gzipSync(code, { level: 9 }).length,
      packages,
      external,
    };
  } catch (error) {
    const first = error.errors?.[0];
    const why = first ? `${first.text}${first.location ? ` (${first.location.file})` : ""}` : error;
    return { ok: false, error: String(why).slice(0, 160) };
  }
}

/** Builds every entry for every platform; returns one row per (entry, platform). */
export async function bundleSizes() {
  const esbuild = await import("esbuild");
  const rows = [];
  for (const entry of ENTRIES) {
    if (entry.file && !existsSync(entry.file)) continue;
    for (const platform of PLATFORMS) {
      rows.push({
        name: entry.name,
        lib: entry.lib,
        platform,
        ...(await build(esbuild, entry, platform)),
      });
    }
  }
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
  return { rows, runtimeDependencies: Object.keys(pkg.dependencies ?? {}) };
}

const kb = (n) => `${(n / 1000).toFixed(1)} kB`;

/** The markdown table for {@link bundleSizes}' result. */
export function sizeTable({ rows }) {
  const lines = [
    "| bundle | platform | minified | gzip | npm packages inside | left external |",
    "| --- | --- | ---: | ---: | ---: | --- |",
  ];
  for (const r of rows) {
    if (!r.ok) {
      lines.push(`| ${r.name} | ${r.platform} | fails to build: ${r.error} | | | |`);
      continue;
    }
    lines.push(
      `| ${r.name} | ${r.platform} | ${r.minified.toLocaleString("en-US")} B (${
        kb(r.minified)
      }) | ` +
        `${r.gzip.toLocaleString("en-US")} B (${kb(r.gzip)}) | ${r.packages.length} | ` +
        `${r.external.join(", ") || "none"} |`,
    );
  }
  return lines.join("\n");
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const result = await bundleSizes();
  console.log(sizeTable(result));
  console.log(
    `\npackage.json runtime dependencies: ${result.runtimeDependencies.join(", ") || "none"}`,
  );
}
