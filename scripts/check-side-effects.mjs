// Checks package.json "sideEffects": every module npm users get (dist/**/*.js, built by `npm run
// build`) that it does not list must do nothing observable when imported, so that bundlers may drop
// it when nothing of it is used. The CLI entry is listed: run as a program, it runs the command.
//
// Each module is imported in turn in one child process, comparing before and a moment after:
// globals, properties of the built-in prototypes, process listeners, timers and handles,
// environment variables, the exit code, and anything written to stdout or stderr. A module made to
// have a side effect is imported first, as the negative control: the check fails if it goes
// unnoticed.
// Prints one line; exits 1 naming each module and what it changed.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const pkg = JSON.parse(readFileSync(`${root}package.json`, "utf8"));

if (!Array.isArray(pkg.sideEffects)) {
  console.error(`package.json "sideEffects" should list the modules that have them`);
  process.exit(1);
}
const listed = new Set(pkg.sideEffects.map((p) => p.replace(/^\.\//, "")));
const modules = readdirSync(`${root}dist`, { recursive: true })
  .filter((f) => /\.c?js$/.test(f))
  .map((f) => `dist/${f.split("\\").join("/")}`)
  .sort();
const missing = [...listed].filter((f) => !modules.includes(f));
if (!modules.length || missing.length) {
  console.error(
    modules.length
      ? `package.json "sideEffects" lists ${missing.join(", ")}, not in dist/`
      : "dist/ has no modules: run `npm run build` first",
  );
  process.exit(1);
}
const pure = modules.filter((f) => !listed.has(f));

// Runs in the child: prints one JSON line, { module: [changes] } for each module that changed
// something.
function probe(urls) {
  const protos = { Object, Array, String, Function, Promise, Error, RegExp, Map, Set };
  const written = [];
  const report = process.stdout.write.bind(process.stdout);
  for (const stream of [process.stdout, process.stderr]) {
    stream.write = (chunk) => written.push(String(chunk)) > 0;
  }
  const snapshot = () => ({
    globals: Object.getOwnPropertyNames(globalThis).sort().join(),
    protos: Object.entries(protos)
      .map(([name, C]) => `${name}:${Reflect.ownKeys(C.prototype).map(String).sort()}`).join(";"),
    listeners: process.eventNames().map((e) => `${String(e)}=${process.listenerCount(e)}`).sort()
      .join(),
    resources: process.getActiveResourcesInfo().sort().join(),
    env: JSON.stringify(Object.entries(process.env).sort()),
    exitCode: String(process.exitCode),
  });
  return (async () => {
    const found = {};
    for (const url of urls) {
      const before = snapshot();
      written.length = 0;
      await import(url);
      // Let the module loader's own file reads and closes finish: they are not the module's.
      await new Promise((resolve) => setTimeout(resolve, 20));
      const after = snapshot();
      const changes = Object.keys(before).filter((k) => before[k] !== after[k]);
      if (written.length) changes.push(`output ${JSON.stringify(written.join("").slice(0, 80))}`);
      if (changes.length) found[url] = changes;
    }
    report("\u0000" + JSON.stringify(found) + "\n");
  })();
}

const control = "data:text/javascript,globalThis.__pgIamSideEffect = setInterval(() => {}, 1e6);" +
  "clearInterval(globalThis.__pgIamSideEffect);";
const urls = [control, ...pure.map((f) => pathToFileURL(root + f).href)];
const out = execFileSync(
  process.execPath,
  ["--input-type=module", "-e", `await (${probe})(${JSON.stringify(urls)}); process.exit(0);`],
  { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], timeout: 60_000 },
);
const found = JSON.parse(out.slice(out.lastIndexOf("\u0000") + 1));

const problems = [];
if (!found[control]) problems.push("the negative control (a global set on import) went unnoticed");
for (const [url, changes] of Object.entries(found)) {
  if (url === control) continue;
  problems.push(`${fileURLToPath(url).slice(root.length)}: ${changes.join(", ")}`);
}
if (problems.length) {
  console.error(
    `importing these modules (or one they import first), not listed in package.json ` +
      `"sideEffects", had side effects:\n` +
      problems.map((p) => `  ${p}`).join("\n"),
  );
  process.exit(1);
}
const exempt = [...listed].join(", ");
console.log(`${pure.length} modules import without side effects ("sideEffects": ${exempt})`);
