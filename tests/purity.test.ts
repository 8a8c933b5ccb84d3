import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";

const root = new URL("../", import.meta.url);
const IMPORT =
  /^\s*(?:import|export)\b[^"';]*?\bfrom\s+["']([^"']+)["']|^\s*import\s+["']([^"']+)["']|\bimport\(\s*["']([^"']+)["']/gm;

// Every module reachable from mod.ts, by static or dynamic import.
function graph(entry: string): Map<string, string> {
  const seen = new Map<string, string>();
  const visit = (path: string) => {
    if (seen.has(path)) return;
    const text = readFileSync(new URL(path, root), "utf8");
    seen.set(path, text);
    for (const m of text.matchAll(IMPORT)) {
      const spec = m[1] ?? m[2] ?? m[3];
      assert.ok(spec.startsWith("./") || spec.startsWith("../"), `${path} imports ${spec}`);
      assert.ok(spec.endsWith(".ts"), `${path} imports ${spec} without its .ts extension`);
      visit(new URL(spec, new URL(path, root)).href.slice(root.href.length));
    }
  };
  visit(entry);
  return seen;
}

test("the core imports nothing but its own modules: no node:, npm: or jsr: specifiers", () => {
  const modules = graph("mod.ts");
  assert.ok(modules.has("src/sigv4.ts") && modules.has("src/_crypto.ts"));
  assert.ok(!modules.has("src/demo.ts"), "mod.ts must not reach the demo");
});

test("only src/_env.ts touches Deno.* (_crypto.ts only asks if it is there), and nothing in the core touches process outside it and _crypto.ts", () => {
  for (const [path, text] of graph("mod.ts")) {
    const code = text.replace(/^\s*(\/\/|\*|\/\*\*).*$/gm, "");
    // _crypto.ts may ask whether it runs on Deno (to leave node:crypto alone there), no more.
    const deno = path === "src/_crypto.ts"
      ? code.replace(/\.Deno !== undefined|Deno\?: unknown/g, "")
      : code;
    if (path !== "src/_env.ts") {
      assert.doesNotMatch(deno, /\bDeno\s*(\?\.|\.)|\.Deno\b|Deno\?:/, `${path} uses Deno`);
    }
    if (path !== "src/_env.ts" && path !== "src/_crypto.ts") {
      assert.doesNotMatch(code, /\bprocess\b/, `${path} uses process`);
    }
  }
});

test("the negative control: the scan does see a node: import", () => {
  const text = `import { x } from "node:crypto";\nexport { y } from "./y.ts";`;
  const specs = [...text.matchAll(IMPORT)].map((m) => m[1] ?? m[2] ?? m[3]);
  assert.deepEqual(specs, ["node:crypto", "./y.ts"]);
});

test("node: imports live only in the runtime-specific modules (gateway, postgres socket, TLS, PGlite, demo, CLI); the connection-target parser is Web-only", () => {
  for (
    const entry of [
      "src/_verify.ts",
      "src/_pgwire.ts",
      "src/cli/_cert.ts",
      "src/connection/target.ts",
    ]
  ) {
    assert.ok(graph(entry).size >= 1); // graph() fails on any node:, npm: or jsr: import
  }
  const allowed = new Set([
    "src/gateway.ts",
    "src/postgres.ts",
    "src/connection/socket.ts",
    "src/connection/tls.ts",
    "src/_pglite.ts",
    "src/demo.ts",
    "src/cli.ts",
    "src/cli/_args.ts",
    "src/cli/env.ts",
    "src/cli/doctor.ts",
    "src/cli/gateway.ts",
  ]);
  const files = readdirSync(new URL("src/", root), { recursive: true }) as string[];
  const users = files.filter((f) => f.endsWith(".ts")).map((f) => `src/${f}`).filter((path) =>
    [...readFileSync(new URL(path, root), "utf8").matchAll(IMPORT)]
      .some((m) => /^node:/.test(m[1] ?? m[2] ?? m[3]))
  );
  assert.ok(users.includes("src/gateway.ts")); // the scan sees them
  for (const path of users) assert.ok(allowed.has(path), `${path} imports node:`);
});
