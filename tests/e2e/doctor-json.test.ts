// `pg-iam doctor --json`, run for real as a subprocess of the runtime running this file, against
// the IAM-verifying gateway: one JSON document on stdout with the target, the versions, every step
// in order (name, ok, ms, detail) and the verdict; exit 0. The control: keys the gateway does not
// know fail at auth, exit 1, the same document with the failure. Human output without the flag;
// never a secret or token in either.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Gateway } from "../../src/gateway/mod.ts";
import type { Report } from "../../src/cli/doctor.ts";
import { VERSION } from "../../src/cli/mod.ts";
import { closeTestGateways, RDS, testGateway } from "../_gateway.ts";
import { childEnv, type Result, run } from "../_cli.ts";
import { runtimeCommand } from "../_runtime.ts";
import { ca } from "../fixtures/tls.ts";

const KEYS = { accessKeyId: "AKIDPGIAMDOCTOR", secretAccessKey: "pg-iam/doctor/json/secret/0123" };
const WRONG = { accessKeyId: "AKIDPGIAMDOCTOR", secretAccessKey: "pg-iam/doctor/json/wrong/4567" };
const CLI = fileURLToPath(new URL("../../src/cli/mod.ts", import.meta.url));
const TIMEOUT = { timeout: 120_000 };
const STEPS = ["endpoint", "credentials", "sign", "dns", "tcp", "tls", "auth", "query", "warm"];

const dir = mkdtempSync(join(tmpdir(), "pg-iam-doctor-json-"));
const CA_FILE = join(dir, "ca.pem");
writeFileSync(CA_FILE, ca);

after(() => closeTestGateways());

function urlOf(g: Gateway): string {
  return `postgres://app@127.0.0.1:${g.port}/postgres?iam_host=${RDS}&iam_port=5432` +
    `&sslrootcert=${CA_FILE}`;
}

function doctor(args: string[], keys = KEYS): Promise<Result> {
  const [cmd, pre] = runtimeCommand(CLI);
  return run(cmd, [...pre, "doctor", ...args, "--timeout", "5"], childEnv(keys, dir));
}

/** stdout is exactly one JSON document (and a newline). */
function parse(r: Result): Report {
  assert.ok(r.stdout.endsWith("}\n"), r.stdout);
  try {
    return JSON.parse(r.stdout) as Report;
  } catch {
    throw new Error(`not one JSON document (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
}

function assertNoSecret(text: string): void {
  for (const keys of [KEYS, WRONG]) assert.ok(!text.includes(keys.secretAccessKey), text);
  assert.ok(!/X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Action=connect/i.test(text));
}

function assertShape(report: Report, g: Gateway): void {
  assert.deepEqual(Object.keys(report.target).sort(), [
    "database",
    "host",
    "port",
    "region",
    "service",
    "signingHostname",
    "signingPort",
    "sslmode",
    "user",
  ]);
  assert.equal(report.target.host, "127.0.0.1");
  assert.equal(report.target.port, g.port);
  assert.equal(report.target.signingHostname, RDS);
  assert.equal(report.target.region, "us-east-1");
  assert.equal(report.versions.pgIam, VERSION);
  const runtime = (globalThis as { Deno?: unknown }).Deno
    ? "deno"
    : (globalThis as { Bun?: unknown }).Bun
    ? "bun"
    : "node";
  assert.equal(report.versions.runtime, runtime);
  assert.match(report.versions.runtimeVersion, /^\d+\.\d+\.\d+/);
  for (const step of report.steps) {
    assert.ok(STEPS.includes(step.name), step.name);
    assert.equal(typeof step.ok, "boolean");
    assert.ok(typeof step.ms === "number" && step.ms >= 0, String(step.ms));
    assert.ok(typeof step.detail === "string" && step.detail.length > 0);
  }
}

test(
  "pg-iam doctor --json through the gateway: one JSON document with the target, the versions, every step in order (name, ok, ms, detail) and ok: true, exit 0; without --json the same steps as lines, no JSON",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const r = await doctor([urlOf(g), "--json"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stderr, "");
    const report = parse(r);
    assertShape(report, g);
    assert.equal(report.ok, true);
    assert.equal(report.failure, undefined);
    assert.deepEqual(report.steps.map((s) => s.name), STEPS);
    assert.ok(report.steps.every((s) => s.ok));
    assert.match(report.versions.postgres!, /^\d+/);
    assert.ok(report.coldMs! > 0 && report.warmMs! > 0);
    // The cold connect's steps add up to no more than it took.
    const cold = report.steps.filter((s) => !["endpoint", "warm"].includes(s.name));
    const sum = cold.reduce((total, s) => total + s.ms, 0);
    assert.ok(sum <= report.coldMs! + 1, `${sum} > ${report.coldMs}`);
    assert.deepEqual(Object.keys(report.warm!), STEPS.slice(1, 8));
    assert.equal(g.stats.accepted, 2);
    assertNoSecret(r.stdout);

    // Human output without the flag: a line per step, the same steps, no JSON.
    const human = await doctor([urlOf(g)]);
    assert.equal(human.code, 0, human.stderr);
    assert.ok(!human.stdout.trimStart().startsWith("{"), human.stdout);
    const lines = human.stdout.split("\n").filter((l) => /^ {2}(ok {2}|FAIL) {2}/.test(l));
    assert.deepEqual(lines.map((l) => l.slice(8).split(" ")[0]), STEPS);
    assert.match(human.stdout, /^Connected: .* cold, .* warm\./m);
    assertNoSecret(human.stdout + human.stderr);
  },
);

test(
  "pg-iam doctor --json with keys the gateway does not know (the control): the same document with ok: false, the steps up to auth, the failure and its cause, exit 1, no secret",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const r = await doctor([urlOf(g), "--json"], WRONG);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const report = parse(r);
    assertShape(report, g);
    assert.equal(report.ok, false);
    assert.deepEqual(report.steps.map((s) => s.name), STEPS.slice(0, 7));
    assert.deepEqual(report.steps.map((s) => s.ok), [true, true, true, true, true, true, false]);
    assert.equal(report.failure?.step, "auth");
    assert.equal(report.failure?.code, "28P01");
    assert.match(report.failure!.cause, /rejected the IAM token/);
    assert.equal(report.versions.postgres, undefined); // never logged in
    assert.equal(report.coldMs, undefined);
    assert.equal(g.stats.rejected, 1);
    assertNoSecret(r.stdout + r.stderr);

    const human = await doctor([urlOf(g)], WRONG);
    assert.equal(human.code, 1);
    assert.match(human.stdout, /^ {2}FAIL {2}auth /m);
    assert.match(human.stdout, /^Failed at auth: the server rejected the IAM token/m);
    assertNoSecret(human.stdout + human.stderr);
  },
);
