// Checks what `npm publish` would upload, from `npm pack --dry-run` on the built dist/ (run
// `npm run build` first): every file package.json points at ("exports", "main", "types", "bin") is
// in it, the bin starts with its shebang, and nothing else is, beyond dist/ and the files "files"
// names.
// Prints one line; exits 1 naming what is missing or extra.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const pkg = JSON.parse(readFileSync(`${root}package.json`, "utf8"));
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const [pack] = JSON.parse(
  execFileSync(npm, ["pack", "--dry-run", "--json", "--ignore-scripts"], {
    cwd: root,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  }),
);
const files = new Set(pack.files.map((f) => f.path));
const strip = (path) => path.replace(/^\.\//, "");

const pointedAt = new Set(
  [
    ...Object.values(pkg.exports).flatMap((e) => typeof e === "string" ? [e] : Object.values(e)),
    pkg.main,
    pkg.types,
    ...Object.values(pkg.bin ?? {}),
  ].filter(Boolean).map(strip),
);

const problems = [];
for (const path of pointedAt) {
  if (!files.has(path)) problems.push(`missing ${path}`);
}
for (const [name, path] of Object.entries(pkg.bin ?? {})) {
  if (files.has(strip(path)) && !readFileSync(root + strip(path), "utf8").startsWith("#!")) {
    problems.push(`bin ${name} (${path}) does not start with a shebang`);
  }
}
const allowed = new Set(["package.json", ...pkg.files.filter((f) => !f.endsWith("/"))]);
const dirs = pkg.files.filter((f) => f.endsWith("/"));
for (const path of files) {
  if (!allowed.has(path) && !dirs.some((d) => path.startsWith(d))) problems.push(`extra ${path}`);
}
for (const path of allowed) {
  if (!files.has(path)) problems.push(`missing ${path}`);
}

if (problems.length) {
  console.error(`npm pack: ${problems.join(", ")}`);
  process.exit(1);
}
console.log(
  `${pack.filename}: ${files.size} files, ${(pack.size / 1024).toFixed(0)} KiB; ` +
    `every export, main, types and bin target in it`,
);
