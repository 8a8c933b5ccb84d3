// The layers of src/ and the rules between them, read from the code's own imports:
// - src/core/ (the token engine, what mod.ts exports): Web APIs only, imports no other layer;
// - src/connection/ (driver-neutral: target, TLS, signing per connection, the socket, wire code):
//   imports the core only;
// - src/postgres/, src/pg/, src/bun/ (one adapter each): the core and the connection layer, never
//   another adapter;
// - src/listener/ (the server side of the protocol up to a client's StartupMessage, its limits):
//   the core and the connection layer;
// - src/gateway/, src/proxy/ and src/cli/ (tools): the core, the connection layer and the listener
//   (the CLI also runs the gateway and the proxy); no library module imports a tool;
// - nothing in src/ imports tests/ (the demo, which uses the test certificate, is in examples/);
// - a module whose name starts with `_` is its folder's: no other folder imports it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { posix } from "node:path";

const root = new URL("../../", import.meta.url);
const IMPORT =
  /^\s*(?:import|export)\b[^"';]*?\bfrom\s+["']([^"']+)["']|^\s*import\s+["']([^"']+)["']|\bimport\(\s*["']([^"']+)["']/gm;

// Every module reachable from `entry`, by static or dynamic import; fails on any import that is
// not a relative .ts path (node:, npm:, jsr:, a bare package name).
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

/** The layer a module of src/ belongs to: its folder ("core" for mod.ts; tests are no layer). */
function layer(path: string): string {
  if (path === "mod.ts") return "core";
  if (path.startsWith("tests/")) return "tests";
  const m = /^src\/([^/]+)\//.exec(path);
  return m ? m[1] : "unknown";
}

// Which layers each layer may import.
const MAY_IMPORT: Record<string, string[]> = {
  core: ["core"],
  connection: ["core", "connection"],
  postgres: ["core", "connection", "postgres"],
  pg: ["core", "connection", "pg"],
  bun: ["core", "connection", "bun"],
  listener: ["core", "connection", "listener"],
  gateway: ["core", "connection", "listener", "gateway"],
  proxy: ["core", "connection", "listener", "proxy"],
  cli: ["core", "connection", "listener", "gateway", "proxy", "cli"],
};

/** Every relative import of every module under src/ (and mod.ts), as [from, to] paths. */
function edges(): [string, string][] {
  const files = (readdirSync(new URL("src/", root), { recursive: true }) as string[])
    .filter((f) => f.endsWith(".ts")).map((f) => `src/${f}`).concat("mod.ts");
  const out: [string, string][] = [];
  for (const path of files) {
    for (const m of readFileSync(new URL(path, root), "utf8").matchAll(IMPORT)) {
      const spec = m[1] ?? m[2] ?? m[3];
      if (!spec.startsWith(".")) continue;
      out.push([path, new URL(spec, new URL(path, root)).href.slice(root.href.length)]);
    }
  }
  return out;
}

function violations(list: [string, string][]): string[] {
  return list.filter(([from, to]) => !(MAY_IMPORT[layer(from)] ?? []).includes(layer(to)))
    .map(([from, to]) => `${from} (${layer(from)}) imports ${to} (${layer(to)})`);
}

test("the core imports nothing but its own modules: no node:, npm: or jsr: specifiers", () => {
  const modules = graph("mod.ts");
  assert.ok(modules.has("src/core/sigv4.ts") && modules.has("src/core/crypto.ts"));
  assert.ok([...modules.keys()].every((p) => p === "mod.ts" || p.startsWith("src/core/")));
  const text = `import { x } from "node:crypto";\nexport { y } from "./y.ts";`;
  const specs = [...text.matchAll(IMPORT)].map((m) => m[1] ?? m[2] ?? m[3]);
  assert.deepEqual(specs, ["node:crypto", "./y.ts"]);
});

test("only src/core/env.ts touches Deno.* (crypto.ts only asks if it is there), and nothing in the core touches process outside it and crypto.ts", () => {
  for (const [path, text] of graph("mod.ts")) {
    const code = text.replace(/^\s*(\/\/|\*|\/\*\*).*$/gm, "");
    // crypto.ts may ask whether it runs on Deno (to leave node:crypto alone there), no more.
    const deno = path === "src/core/crypto.ts"
      ? code.replace(/\.Deno !== undefined|Deno\?: unknown/g, "")
      : code;
    if (path !== "src/core/env.ts") {
      assert.doesNotMatch(deno, /\bDeno\s*(\?\.|\.)|\.Deno\b|Deno\?:/, `${path} uses Deno`);
    }
    if (path !== "src/core/env.ts" && path !== "src/core/crypto.ts") {
      assert.doesNotMatch(code, /\bprocess\b/, `${path} uses process`);
    }
  }
});

test("the layers import only downwards: core ← connection ← adapters (never each other) and tools; nothing imports a tool", () => {
  const all = edges();
  assert.ok(all.length > 50, `only ${all.length} imports seen`);
  assert.deepEqual(violations(all), []);
  // Every module is in a layer the rules know.
  for (const [from, to] of all) {
    assert.ok(layer(from) in MAY_IMPORT, `${from} → ${to}`);
  }
  // The negative control: the rules do see an adapter importing another, and the core a layer.
  assert.deepEqual(
    violations([
      ["src/pg/mod.ts", "src/postgres/mod.ts"],
      ["src/core/rds.ts", "src/connection/sign.ts"],
      ["src/connection/socket.ts", "src/gateway/mod.ts"],
      ["src/gateway/mod.ts", "tests/fixtures/tls.ts"],
    ]).length,
    4,
  );
});

test("node: imports live only in the runtime-specific modules (socket, TLS, adapters, gateway, CLI); the rest of the connection layer is Web-only", () => {
  for (
    const entry of [
      "src/gateway/verify.ts",
      "src/connection/pgwire.ts",
      "src/connection/target.ts",
      "src/connection/sign.ts",
      "src/cli/_cert.ts",
      "src/proxy/_metrics.ts",
    ]
  ) {
    assert.ok(graph(entry).size >= 1); // graph() fails on any node:, npm: or jsr: import
  }
  const allowed =
    /^src\/(connection\/(socket(-plan|-workerd)?|tls)\.ts|(postgres|pg|bun|listener|gateway|proxy|cli)\/)/;
  const files = readdirSync(new URL("src/", root), { recursive: true }) as string[];
  const users = files.filter((f) => f.endsWith(".ts")).map((f) => `src/${f}`).filter((path) =>
    [...readFileSync(new URL(path, root), "utf8").matchAll(IMPORT)]
      .some((m) => /^node:/.test(m[1] ?? m[2] ?? m[3]))
  );
  assert.ok(users.includes("src/listener/server.ts")); // the scan sees them
  for (const path of users) assert.match(path, allowed, `${path} imports node:`);
});

/** The imports of a module whose name starts with `_` from another folder (mod.ts: the core's). */
function privateImports(list: [string, string][]): string[] {
  const folder = (path: string) => path === "mod.ts" ? "src/core" : posix.dirname(path);
  return list.filter(([from, to]) =>
    posix.basename(to).startsWith("_") && folder(from) !== folder(to)
  )
    .map(([from, to]) => `${from} imports ${to}`);
}

test("a module named _x.ts is private to its folder: no other folder imports it", () => {
  assert.deepEqual(privateImports(edges()), []);
  // The negative control: another folder's _ module is seen, the folder's own is not.
  assert.deepEqual(
    privateImports([
      ["src/gateway/mod.ts", "src/gateway/_server.ts"],
      ["src/cli/mod.ts", "src/cli/_args.ts"],
      ["src/pg/mod.ts", "src/core/_private.ts"],
      ["src/pg/mod.ts", "src/core/sha256.ts"],
    ]),
    ["src/pg/mod.ts imports src/core/_private.ts"],
  );
});
