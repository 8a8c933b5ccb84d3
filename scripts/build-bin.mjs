// Builds the npm bin, dist/pg-iam.cjs: the `pg-iam` command bundled into one CommonJS file.
//
// Why not the tsc output (dist/src/cli/mod.js, still the "./cli" export): Node 20 starts an ES
// module graph noticeably slower than one CommonJS file. Measured with bench/cli.mjs's method
// (fresh processes, medians, interleaved; bare `node -e 1` at ~21 ms): `pg-iam token` took ~43 ms
// from the ~15 tsc modules, ~38 ms from an ESM bundle and ~33 ms from this file. Optional packages
// (@aws-sdk/credential-provider-node, PGlite) stay outside, loaded with import() when needed; the
// subcommands' code is in the file but only runs when its command does.
import { build } from "esbuild";

await build({
  entryPoints: ["src/cli/mod.ts"],
  outfile: "dist/pg-iam.cjs",
  bundle: true,
  format: "cjs",
  platform: "node",
  target: "node20",
  packages: "external",
  // mod.ts runs the command when it is the entry point: in this file, it always is.
  define: { "import.meta.main": "true" },
  logOverride: { "empty-import-meta": "silent" },
  logLevel: "warning",
});
