// Moves every development dependency (drivers, runtimes, ORMs, the AWS SDK oracle, PostgreSQL from
// npm, the tools) to its newest release, the way a new user's `npm install` would get them, so
// that the weekly workflow (.github/workflows/weekly.yml) runs the suite against them and the next
// major is found by us, not by a user's ERESOLVE. An npm alias stays on its major (`postgres3` is
// postgres.js 3: its newest 3.x). Prints what moved, as a markdown table, to stdout.
//
// Usage: node scripts/use-latest.mjs [--dry-run]
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

const dryRun = process.argv.includes("--dry-run");
const pkg = JSON.parse(readFileSync("package.json", "utf8"));
const npm = (args) =>
  execFileSync("npm", args, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim();

/** The newest version matching `range` of `name` (the `latest` tag when no range). */
function newest(name, range) {
  const out = npm(["view", range ? `${name}@${range}` : name, "version", "--json"]);
  const versions = [JSON.parse(out)].flat();
  return versions[versions.length - 1];
}

const installed = (name) => {
  try {
    return JSON.parse(readFileSync(`node_modules/${name}/package.json`, "utf8")).version;
  } catch {
    return "-";
  }
};

const specs = [];
const rows = [];
for (const [name, spec] of Object.entries(pkg.devDependencies)) {
  const alias = /^npm:((?:@[^/@]+\/)?[^@]+)@\^?(\d+)/.exec(spec);
  const version = alias ? newest(alias[1], `${alias[2]}`) : newest(name);
  specs.push(alias ? `${name}@npm:${alias[1]}@${version}` : `${name}@${version}`);
  rows.push(
    `| ${name}${alias ? ` (${alias[1]} ${alias[2]}.x)` : ""} | ${installed(name)} | ${version} |`,
  );
}
console.log("| package | before | now |\n|---|---|---|\n" + rows.join("\n"));
if (!dryRun) {
  // Peer ranges of packages that lag behind a new major (kysely-postgres-js and postgres.js 4)
  // are what users meet too; package.json "overrides" says how we meet them.
  npm(["install", "--no-audit", "--no-fund", ...specs]);
}
