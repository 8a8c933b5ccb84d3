// pg-iam token --format url and json, run for real as a subprocess of the runtime running this file
// (Node through tsx, Deno, Bun): Debian's psql connects with the printed URL through the gateway in
// front of Debian's PostgreSQL, TLS verified with the test CA.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { childEnv, type Result, run } from "../_cli.ts";
import { closeTestGateways, RDS, testGateway } from "../_gateway.ts";
import { runtimeCommand } from "../_runtime.ts";
import { ca } from "../fixtures/tls.ts";

const KEYS = { accessKeyId: "AKIDPGIAMURL", secretAccessKey: "pg-iam/token-url/test/secret/0123" };
const CLI = fileURLToPath(new URL("../../src/cli/mod.ts", import.meta.url));
const TIMEOUT = { timeout: 120_000 };
const DSQL = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
const DENO = fileURLToPath(new URL("../../node_modules/.bin/deno", import.meta.url));

const dir = mkdtempSync(join(tmpdir(), "pg-iam-token-url-test-"));
const CA_FILE = join(dir, "ca.pem");
writeFileSync(CA_FILE, ca);

after(closeTestGateways);

/** Runs `pg-iam …args` with this runtime. */
function cli(args: string[], env: Record<string, string> = {}): Promise<Result> {
  const [cmd, pre] = runtimeCommand(CLI);
  return run(cmd, [...pre, ...args], childEnv(KEYS, dir, env));
}

/** Runs psql with `url` as its connection string. */
function psql(url: string, query: string): Promise<Result> {
  return run("psql", ["-X", "-tA", "-c", query, url], childEnv(KEYS, dir));
}

/** The gateway's target: connect to 127.0.0.1, sign for the endpoint, trust the test CA. */
function targetOf(port: number, params = ""): string {
  return `postgres://app@127.0.0.1:${port}/postgres?iam_host=${RDS}&iam_port=5432` +
    `&sslrootcert=${CA_FILE}${params}`;
}

test(
  "pg-iam token --format url: psql logs in through the gateway with the printed URL, TLS verified, application_name kept and iam_* dropped; the URL with its token altered is refused (the control)",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const r = await cli([
      "token",
      targetOf(g.port, "&application_name=url%20test&iam_expires_in=300"),
      "--format",
      "url",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    assert.match(r.stdout, /^postgres:\/\/[^\n]+\n$/);
    const url = r.stdout.trim();
    const parsed = new URL(url);
    assert.equal(parsed.username, "app");
    assert.equal(parsed.hostname, RDS); // what the certificate is checked against
    assert.equal(parsed.port, String(g.port));
    assert.equal(parsed.pathname, "/postgres");
    assert.match(
      decodeURIComponent(parsed.password),
      new RegExp(`^${RDS}:5432/\\?Action=connect&`),
    );
    assert.deepEqual(Object.fromEntries(parsed.searchParams), {
      hostaddr: "127.0.0.1",
      sslmode: "verify-full",
      sslrootcert: CA_FILE,
      application_name: "url test",
    });
    assert.ok(!url.includes("iam_"), url);

    const ok = await psql(url, "select 1, current_setting('application_name')");
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), "1|url test");

    // The control: one hex digit of the signature changed, the gateway refuses the token.
    const altered = url.replace(
      /(X-Amz-Signature%3D[0-9a-f]{63})([0-9a-f])/,
      (_, head: string, last: string) => head + (last === "0" ? "1" : "0"),
    );
    assert.notEqual(altered, url);
    const refused = await psql(altered, "select 1");
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /PAM authentication failed/);
    assert.equal(g.stats.rejections.signature, 1);

    // Why iam_* goes: libpq refuses a parameter it does not know.
    const withIam = await psql(`${url}&iam_region=us-east-1`, "select 1");
    assert.equal(withIam.code, 2);
    assert.match(withIam.stderr, /invalid URI query parameter: "iam_region"/);
  },
);

test(
  "pg-iam token --format json: the token, the URL and what they were made of, field by field; expiresAt is the signing time plus the expiry",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const before = Math.floor(Date.now() / 1000) * 1000;
    const r = await cli(["token", targetOf(g.port, "&iam_expires_in=120"), "--format", "json"]);
    const after = Date.now();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    const json = JSON.parse(r.stdout);
    assert.deepEqual(Object.keys(json), [
      "token",
      "url",
      "host",
      "port",
      "user",
      "database",
      "region",
      "service",
      "expiresAt",
      "sslmode",
      "sslrootcert",
    ]);
    assert.match(json.token, new RegExp(`^${RDS}:5432/\\?Action=connect&DBUser=app&`));
    assert.equal(
      json.url,
      `postgres://app:${encodeURIComponent(json.token)}@${RDS}:${g.port}/postgres?` +
        `hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert=${encodeURIComponent(CA_FILE)}`,
    );
    assert.equal(json.host, RDS);
    assert.equal(json.port, g.port);
    assert.equal(json.user, "app");
    assert.equal(json.database, "postgres");
    assert.equal(json.region, "us-east-1");
    assert.equal(json.service, "rds");
    assert.equal(json.sslmode, "verify-full");
    assert.equal(json.sslrootcert, CA_FILE);
    // The token's own signing time (X-Amz-Date, whole seconds) plus its X-Amz-Expires.
    const query = new URLSearchParams(json.token.slice(json.token.indexOf("?")));
    assert.equal(query.get("X-Amz-Expires"), "120");
    const d = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(query.get("X-Amz-Date")!)!;
    const signedAt = Date.UTC(+d[1], +d[2] - 1, +d[3], +d[4], +d[5], +d[6]);
    assert.ok(signedAt >= before && signedAt <= after, `${signedAt} in [${before}, ${after}]`);
    assert.equal(json.expiresAt, new Date(signedAt + 120_000).toISOString());

    const ok = await psql(json.url, "select 1");
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), "1");
  },
);

test(
  "pg-iam token --format: the RDS CA bundle where pg-iam env caches it, the system's CAs in a file for DSQL, libpq parameters kept and iam_* dropped; a bad --format exits 2 naming it",
  TIMEOUT,
  async () => {
    const target = `postgres://app@${RDS}/orders?iam_region=us-east-1&iam_expires_in=60` +
      `&connect_timeout=7&keepalives=0&target_session_attrs=read-write&options=-c%20x%3Dy`;
    const r = await cli(["token", target, "--format", "url"]);
    assert.equal(r.code, 0, r.stderr);
    const url = new URL(r.stdout.trim());
    const bundle = join(dir, "cache", "pg-iam", "rds-ca-bundle.pem");
    assert.deepEqual(Object.fromEntries(url.searchParams), {
      sslmode: "verify-full",
      sslrootcert: bundle,
      options: "-c x=y",
      connect_timeout: "7",
      keepalives: "0",
      target_session_attrs: "read-write",
    });
    assert.ok(existsSync(bundle));
    // pg-iam env: the same file, and the same parameters by their variables (keepalives has none).
    const env = await cli(["env", target]);
    assert.equal(env.code, 0, env.stderr);
    assert.match(env.stdout, new RegExp(`^export PGSSLROOTCERT='${bundle}'$`, "m"));
    assert.match(env.stdout, /^export PGOPTIONS='-c x=y'$/m);
    assert.match(env.stdout, /^export PGCONNECT_TIMEOUT='7'$/m);
    assert.match(env.stdout, /^export PGTARGETSESSIONATTRS='read-write'$/m);
    assert.doesNotMatch(env.stdout, /KEEPALIVE/);

    // On Deno, writing that file needs --allow-write, asked for up front; the bare token does not.
    const denoFlags = ["--allow-env", "--allow-read", "--allow-sys", "--allow-net"];
    const [deno, pre] = [DENO, [
      "run",
      "--no-prompt",
      "--quiet",
      ...denoFlags,
      CLI,
      "token",
      target,
    ]];
    const denied = await run(deno, [...pre, "--format", "url"], childEnv(KEYS, dir));
    assert.equal(denied.code, 1);
    assert.equal(denied.stdout, "");
    assert.match(denied.stderr, /^pg-iam token: Deno has not granted .* --allow-write \(or -A\)$/m);
    const bare = await run(deno, pre, childEnv(KEYS, dir));
    assert.equal(bare.code, 0, bare.stderr);
    assert.match(bare.stdout, new RegExp(`^${RDS}:5432/\\?Action=connect&`));

    const dsql = await cli(["token", `postgres://admin@${DSQL}/postgres`, "--format", "json"]);
    assert.equal(dsql.code, 0, dsql.stderr);
    const json = JSON.parse(dsql.stdout);
    assert.equal(json.service, "dsql");
    const roots = join(dir, "cache", "pg-iam", "system-roots.pem");
    assert.equal(json.sslrootcert, roots);
    assert.ok(existsSync(roots));
    assert.equal(new URL(json.url).searchParams.get("sslrootcert"), roots);
    const dsqlEnv = await cli(["env", `postgres://admin@${DSQL}/postgres`]);
    assert.match(dsqlEnv.stdout, new RegExp(`^export PGSSLROOTCERT='${roots}'$`, "m"));

    for (
      const [format, message] of [
        ["yaml", /^pg-iam token: --format must be token, url, json, got "yaml" \(see/],
        ["jsn", /got "jsn"; did you mean json\? \(see pg-iam token --help\)/],
      ] as const
    ) {
      const bad = await cli(["token", target, "--format", format]);
      assert.equal(bad.code, 2);
      assert.equal(bad.stdout, "");
      assert.match(bad.stderr, message);
    }
  },
);
