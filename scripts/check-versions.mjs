// Checks that everything stating pg-iam's version states the same one: package.json,
// package-lock.json, jsr.json, deno.json and the CLI's VERSION. Run by `npm test` and, with the
// release options, by .github/workflows/publish.yml before anything is published.
//
//   node scripts/check-versions.mjs [--tag vX.Y.Z] [--repository owner/name]
//
// --tag: the git tag being released must be "v" + that version, and CHANGELOG.md must have a dated
//   entry for it ("## [X.Y.Z] - YYYY-MM-DD").
// --repository: package.json "repository" must point at this GitHub repository (npm rejects a
//   provenance statement from any other).
// Prints one line; exits 1 listing every disagreement.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const read = (file) => readFileSync(root + file, "utf8");
const readJson = (file) => JSON.parse(read(file));

const { values: options } = parseArgs({
  options: { tag: { type: "string" }, repository: { type: "string" } },
});

const pkg = readJson("package.json");
const lock = readJson("package-lock.json");
const cliVersion = /^export const VERSION = "([^"]*)";$/m.exec(read("src/cli/mod.ts"))?.[1];
const stated = {
  "package.json": pkg.version,
  "package-lock.json": lock.version,
  'package-lock.json packages[""]': lock.packages?.[""]?.version,
  "jsr.json": readJson("jsr.json").version,
  "deno.json": readJson("deno.json").version,
  "src/cli/mod.ts VERSION": cliVersion,
};

const version = pkg.version;
const problems = [];
if (!/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(version ?? "")) {
  problems.push(`package.json version ${JSON.stringify(version)} is not a semantic version`);
}
for (const [where, value] of Object.entries(stated)) {
  if (value !== version) {
    problems.push(`${where} states ${JSON.stringify(value)}, package.json ${version}`);
  }
}

if (options.tag !== undefined) {
  if (options.tag !== `v${version}`) {
    problems.push(`tag ${JSON.stringify(options.tag)} is not v${version}, the version stated`);
  }
  const escaped = version.replaceAll(".", "\\.");
  const entry = new RegExp(`^## \\[${escaped}\\] - \\d{4}-\\d{2}-\\d{2}$`, "m");
  if (!entry.test(read("CHANGELOG.md"))) {
    problems.push(`CHANGELOG.md has no "## [${version}] - YYYY-MM-DD" entry`);
  }
}

if (options.repository !== undefined) {
  const url = typeof pkg.repository === "string" ? pkg.repository : pkg.repository?.url;
  const named = /github\.com[/:]([^/]+\/[^/]+?)(?:\.git)?\/?$/.exec(url ?? "")?.[1];
  if (named?.toLowerCase() !== options.repository.toLowerCase()) {
    problems.push(
      `package.json repository ${JSON.stringify(url)} is not github.com/${options.repository}`,
    );
  }
}

if (problems.length) {
  console.error(`version check failed:\n${problems.map((p) => `  ${p}`).join("\n")}`);
  process.exit(1);
}
const release = options.tag === undefined ? "" : `, tag ${options.tag} and CHANGELOG.md entry`;
console.log(`${version} in ${Object.keys(stated).join(", ")}${release}`);
