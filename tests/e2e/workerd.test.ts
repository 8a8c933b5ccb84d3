// The core on an edge runtime: bundled for platform "neutral" and served by the real workerd (the
// Cloudflare Workers runtime, from npm), once without and once with nodejs_compat. Its tokens must
// be byte-identical to the AWS SDK's, computed here.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import {
  type Case,
  generateDsqlCases,
  generateRdsCases,
  presignToken,
  sdkToken,
} from "../_oracle.ts";

const root = new URL("../../", import.meta.url).pathname;
const dir = `${root}.tmp/workerd`;
let workerd: ChildProcess | undefined;
let log = "";
const ports: Record<"plain" | "compat", number> = { plain: 0, compat: 0 };

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    }).on("error", reject);
  });
}

const worker = (flags: string) =>
  `(modules = [(name = "worker.js", esModule = embed "worker.js")], ` +
  `compatibilityDate = "2026-01-01", compatibilityFlags = [${flags}])`;

before(async () => {
  mkdirSync(dir, { recursive: true });
  execFileSync(`${root}node_modules/.bin/esbuild`, [
    `${root}tests/_worker.ts`,
    "--bundle",
    "--format=esm",
    "--platform=neutral",
    "--log-level=warning",
    `--outfile=${dir}/worker.js`,
  ]);
  ports.plain = await freePort();
  ports.compat = await freePort();
  writeFileSync(
    `${dir}/config.capnp`,
    `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "plain", worker = ${worker("")}),
    (name = "compat", worker = ${worker('"nodejs_compat"')}),
  ],
  sockets = [
    (name = "plain", address = "127.0.0.1:${ports.plain}", http = (), service = "plain"),
    (name = "compat", address = "127.0.0.1:${ports.compat}", http = (), service = "compat"),
  ],
);
`,
  );
  workerd = spawn(`${root}node_modules/.bin/workerd`, ["serve", `${dir}/config.capnp`], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  workerd.stdout!.on("data", (d) => log += d);
  workerd.stderr!.on("data", (d) => log += d);
  // Ready when both sockets answer.
  const deadline = Date.now() + 15_000;
  for (const port of [ports.plain, ports.compat]) {
    for (;;) {
      try {
        await fetch(`http://127.0.0.1:${port}/`, { method: "POST", body: "[]" });
        break;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`workerd did not start: ${e}\n${log}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
});

after(() => {
  workerd?.kill("SIGKILL");
});

async function sign(
  kind: "plain" | "compat",
  jobs: unknown[],
): Promise<
  {
    backend: string;
    results: Array<{ token?: string; error?: string; credentialsError?: boolean }>;
  }
> {
  const res = await fetch(`http://127.0.0.1:${ports[kind]}/`, {
    method: "POST",
    body: JSON.stringify(jobs),
  });
  assert.equal(res.status, 200, log);
  return await res.json();
}

// A sample of the differential corpus, its credentials resolved to plain objects to send.
async function corpus(): Promise<Case[]> {
  const cases = [...generateRdsCases(0x5eed, 60), ...generateDsqlCases(0x5eed, 60)];
  for (const c of cases) {
    const creds = c.options.credentials;
    if (typeof creds === "function") c.options.credentials = await creds();
  }
  return cases;
}

for (const kind of ["plain", "compat"] as const) {
  test(`workerd (${kind === "plain" ? "no nodejs_compat" : "nodejs_compat"}): tokens byte-identical to the AWS SDK's`, async () => {
    const cases = await corpus();
    const { backend, results } = await sign(
      kind,
      cases.map((c) => ({ kind: c.kind, options: c.options })),
    );
    // Without nodejs_compat there is no node:crypto: the plain-JS backend must have been chosen.
    assert.equal(backend, kind === "plain" ? "js" : "node:crypto");
    let sdkCompared = 0;
    for (const [i, c] of cases.entries()) {
      const r = results[i];
      assert.equal(r.error, undefined, `case ${i}: ${r.error}`);
      assert.equal(r.token, await presignToken(c.expected), `case ${i} differs from SignatureV4`);
      const sdk = await sdkToken(c);
      if (sdk !== undefined) {
        sdkCompared++;
        assert.equal(r.token, sdk, `case ${i} differs from the SDK signer`);
      }
    }
    assert.ok(sdkCompared >= 60, `only ${sdkCompared} cases went through the SDK signers`);
  });
}

test("workerd: no credentials and no environment is a clear CredentialsError, not a crash", async () => {
  const { results } = await sign("plain", [{
    kind: "rds",
    options: { hostname: "db.abc.us-east-1.rds.amazonaws.com", username: "app" },
  }]);
  assert.equal(results[0].credentialsError, true);
  // No environment, and the standard chain cannot be loaded on an edge runtime: the error says so.
  assert.match(results[0].error!, /No AWS credentials in the environment/);
  assert.match(results[0].error!, /on edge runtimes pass "credentials"/);
});

test("workerd: the negative control, a token signed a second later differs", async () => {
  const [c] = await corpus();
  const later = { ...c.options, signingDate: new Date(c.options.signingDate.getTime() + 1000) };
  const { results } = await sign("plain", [{ kind: c.kind, options: later }]);
  assert.notEqual(results[0].token, await presignToken(c.expected));
});
