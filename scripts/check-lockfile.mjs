// Checks that package-lock.json's root entry says what package.json says, field by field, as npm
// writes it (the fields npm copies from a project's package.json into packages[""]). A lockfile
// that lags behind package.json is rewritten by the next `npm install`; `npm ci` only notices
// missing dependencies, not a stale "bin", "engines" or "license".
// Prints one line; exits 1 naming each field that differs.
import { readFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const readJson = (file) => JSON.parse(readFileSync(root + file, "utf8"));
const pkg = readJson("package.json");
const lock = readJson("package-lock.json");

const FIELDS = [
  "name",
  "version",
  "license",
  "dependencies",
  "devDependencies",
  "optionalDependencies",
  "peerDependencies",
  "peerDependenciesMeta",
  "bundleDependencies",
  "bin",
  "engines",
  "os",
  "cpu",
  "libc",
  "funding",
  "workspaces",
  "deprecated",
];

/** A field as npm records it: empty objects and false values left out, bin paths normalized. */
function recorded(field, value) {
  if (!value || (typeof value === "object" && Object.keys(value).length === 0)) return undefined;
  if (field === "license" && typeof value === "object") return value.type;
  if (field === "bin") {
    const bins = typeof value === "string" ? { [pkg.name.replace(/^@[^/]+\//, "")]: value } : value;
    return Object.fromEntries(
      Object.entries(bins).map(([name, path]) => [name, path.replace(/^(\.\/)+/, "")]),
    );
  }
  return value;
}

const problems = [];
if (lock.lockfileVersion !== 3) {
  problems.push(`lockfileVersion is ${lock.lockfileVersion}, npm 9 and later write 3`);
}
for (const key of ["name", "version"]) {
  if (lock[key] !== pkg[key]) problems.push(`top-level "${key}": ${lock[key]}, not ${pkg[key]}`);
}
const entry = lock.packages?.[""] ?? {};
for (const field of FIELDS) {
  const want = recorded(field, pkg[field]);
  const have = entry[field];
  if (!isDeepStrictEqual(have, want)) {
    problems.push(`packages[""].${field}: ${JSON.stringify(have)}, not ${JSON.stringify(want)}`);
  }
}

if (problems.length) {
  console.error(
    "package-lock.json is out of step with package.json " +
      "(`npm install --package-lock-only` rewrites it):\n" +
      problems.map((p) => `  ${p}`).join("\n"),
  );
  process.exit(1);
}
console.log(`package-lock.json's root entry matches package.json (${FIELDS.length} fields)`);
