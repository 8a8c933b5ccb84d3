// The pg-iam command, run for real as a subprocess of the runtime running this file (Node through
// tsx, Deno, Bun), against the gateway in front of Debian's PostgreSQL.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { drizzle } from "drizzle-orm/postgres-js";
import { sql as drizzleSql } from "drizzle-orm";
import { Kysely, sql as kyselySql } from "kysely";
import { PostgresJSDialect } from "kysely-postgres-js";
import { iamPostgres } from "../../src/postgres/mod.ts";
import { withEnv } from "../_env.ts";
import { type Gateway, type GatewayOptions, startGateway } from "../../src/gateway/mod.ts";
import { upstreamPostgres } from "../_postgres.ts";
import { childEnv as sharedChildEnv, type Result, run } from "../_cli.ts";
import { runtimeCommand } from "../_runtime.ts";
import { ca, cert, key } from "../fixtures/tls.ts";

const RDS = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";
const KEYS = { accessKeyId: "AKIDPGIAMCLI", secretAccessKey: "pg-iam/cli/test/secret/0123456789" };
const CLI = fileURLToPath(new URL("../../src/cli/mod.ts", import.meta.url));
const DIST_CLI = fileURLToPath(new URL("../../dist/pg-iam.cjs", import.meta.url));
const TIMEOUT = { timeout: 120_000 };
const MINUTE = 60_000;

const dir = mkdtempSync(join(tmpdir(), "pg-iam-cli-test-"));
const CA_FILE = join(dir, "ca.pem");
writeFileSync(CA_FILE, ca);

const gateways: Gateway[] = [];
after(async () => {
  await Promise.all(gateways.map((g) => g.close()));
});

/** A gateway impersonating the RDS endpoint, over Debian's PostgreSQL, with the test TLS cert. */
async function gateway(extra: Partial<GatewayOptions> = {}): Promise<Gateway> {
  const pg = await upstreamPostgres();
  const g = await startGateway({
    endpoint: RDS,
    credentials: KEYS,
    upstream: { host: pg.host, port: pg.port }, // the client's user goes upstream
    tls: { cert, key },
    ...extra,
  });
  gateways.push(g);
  return g;
}

/** The connection URL of `g` for `user`: connect to 127.0.0.1, sign for the endpoint. */
function urlOf(g: Gateway, user = "app", params = ""): string {
  return `postgres://${user}@127.0.0.1:${g.port}/postgres?iam_host=${RDS}&iam_port=5432` +
    `&sslrootcert=${CA_FILE}${params}`;
}

/** How this runtime runs a TypeScript file (the CLI unless told). */
function runtime(file = CLI): [string, string[]] {
  return runtimeCommand(file);
}

/** The environment of a child: ours without AWS_* and PG* variables, plus `env`. */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function childEnv(env: Record<string, string>): Record<string, string> {
  return sharedChildEnv(KEYS, dir, env);
}

/** Runs `pg-iam …args` to completion. */
function cli(
  args: string[],
  env: Record<string, string> = {},
  onSpawn?: (pid: number) => void,
): Promise<Result> {
  const [cmd, pre] = runtime();
  return run(cmd, [...pre, ...args], childEnv(env), undefined, onSpawn);
}

/** Logs in to `g` with `password` over verified TLS; resolves current_user or rejects. */
async function login(g: Gateway, user: string, password: string): Promise<string> {
  const sql = postgres({
    host: g.host,
    port: g.port,
    user,
    database: "postgres",
    password,
    ssl: { ca, servername: RDS },
    max: 1,
    onnotice: () => {},
  });
  try {
    const [row] = await sql`select current_user as u`;
    return row.u as string;
  } finally {
    await sql.end({ timeout: 0 });
  }
}

interface DoctorReport {
  ok: boolean;
  steps: { name: string; ok: boolean; detail: string }[];
  failure?: { step: string; error: string; cause: string };
  coldMs?: number;
  warmMs?: number;
}

async function doctor(args: string[], env: Record<string, string> = {}) {
  const r = await cli(["doctor", ...args, "--json", "--timeout", "5"], env);
  let report: DoctorReport;
  try {
    report = JSON.parse(r.stdout);
  } catch {
    throw new Error(`doctor printed no JSON (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
  return { ...r, report };
}

const STEPS = ["endpoint", "credentials", "sign", "dns", "tcp", "tls", "auth", "query", "warm"];

test(
  "pg-iam token prints one token that the gateway accepts; one signed with another secret is rejected",
  TIMEOUT,
  async () => {
    const g = await gateway();
    const r = await cli(["token", "--hostname", RDS, "--port", "5432", "--username", "app"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    assert.match(
      r.stdout,
      /^db\.cluster-abc123xyz\.us-east-1\.rds\.amazonaws\.com:5432\/\?Action=connect&DBUser=app&[^\n]*X-Amz-Signature=[0-9a-f]{64}[^\n]*\n$/,
    );
    assert.equal(await login(g, "app", r.stdout.trim()), "app");

    const other = await cli(["token", "--hostname", RDS, "--username", "app"], {
      AWS_SECRET_ACCESS_KEY: "another-secret",
    });
    assert.equal(other.code, 0, other.stderr);
    await assert.rejects(login(g, "app", other.stdout.trim()), /PAM authentication failed/);
    assert.equal(g.stats.rejections.signature, 1);
  },
);

test(
  "pg-iam token takes a connection URL, and signs DSQL for a bare cluster id with --region",
  TIMEOUT,
  async () => {
    const fromUrl = await cli([
      "token",
      `postgres://app@127.0.0.1:6543/db?iam_host=${RDS}&iam_port=5432`,
    ]);
    assert.equal(fromUrl.code, 0, fromUrl.stderr);
    assert.ok(fromUrl.stdout.startsWith(`${RDS}:5432/?Action=connect&DBUser=app&`));

    const dsql = await cli([
      "token",
      "--hostname",
      "abcdefghijklmnopqrstuvwxyz",
      "--region",
      "eu-west-1",
      "--expires-in",
      "3600",
    ]);
    assert.equal(dsql.code, 0, dsql.stderr);
    assert.match(
      dsql.stdout,
      /^abcdefghijklmnopqrstuvwxyz\.dsql\.eu-west-1\.on\.aws\/\?Action=DbConnectAdmin&.*%2Feu-west-1%2Fdsql%2F.*X-Amz-Expires=3600&/,
    );
    const role = await cli([
      "token",
      "postgres://reader@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres",
    ]);
    assert.match(role.stdout, /\?Action=DbConnect&/);
  },
);

test(
  "pg-iam exits 2 with one line on stderr for bad usage, and prints nothing on stdout",
  TIMEOUT,
  async () => {
    const cases: [string[], RegExp][] = [
      [["token", "--hostnme", RDS], /--hostnme/],
      [["token", "--hostname", RDS], /no user: pass --username/],
      [["token", "--hostname", RDS, "--username", "app", "--port", "http"], /--port .*"http"/],
      [
        ["token", "--hostname", RDS, "--username", "app", "--expires-in", "901"],
        /--expires-in .*901/,
      ],
      [["token", "--hostname", "abcdefghijklmnopqrstuvwxyz"], /--region/],
      [["token", "postgres://app:secret@db.example.com/x"], /password/],
      [["doctor", "postgres://app@db.example.com/x?sslmode=prefer"], /prefer/],
      [["doctor", "postgres://app@db.example.com/x?sslmode=disable"], /--dangerously-disable-tls/],
      [["gateway", "--clock-offset", "soon"], /--clock-offset .*"soon"/],
      [["frobnicate"], /unknown command "frobnicate" \(see pg-iam --help\)$/m],
      [["tokn"], /unknown command "tokn"; did you mean "token"\? \(see pg-iam --help\)/],
      [["dcotor"], /did you mean "doctor"\?/],
      [["help", "gatway"], /did you mean "gateway"\?/],
    ];
    for (const [args, pattern] of cases) {
      const r = await cli(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.equal(r.stdout, "", args.join(" "));
      assert.match(r.stderr, pattern, args.join(" "));
      assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
    }
  },
);

test(
  "pg-iam --help and every subcommand's --help exit 0 and describe the command",
  TIMEOUT,
  async () => {
    const top = await cli(["--help"]);
    assert.equal(top.code, 0);
    for (const name of ["token", "env", "psql", "doctor", "gateway"]) {
      assert.match(top.stdout, new RegExp(`^  ${name} `, "m"));
      const r = await cli([name, "--help"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^Usage: pg-iam ${name} `));
      assert.match(r.stdout, /Examples:/);
    }
    const version = await cli(["--version"]);
    assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
  },
);

test(
  "pg-iam doctor through the gateway shows every step, cold and warm, and never the token or secret",
  TIMEOUT,
  async () => {
    const g = await gateway();
    const { code, report, stdout, stderr } = await doctor([urlOf(g)]);
    assert.equal(code, 0, stdout + stderr);
    assert.equal(report.ok, true);
    assert.deepEqual(report.steps.map((s) => s.name), STEPS);
    assert.ok(report.steps.every((s) => s.ok));
    const tls = report.steps.find((s) => s.name === "tls")!;
    assert.match(tls.detail, /verified against .*ca\.pem.* for db\.cluster-abc123xyz/);
    assert.ok(report.coldMs! > 0 && report.warmMs! > 0);
    assert.equal(g.stats.accepted, 2); // the cold and the warm connect each signed and logged in
    assert.ok(!stdout.includes(KEYS.secretAccessKey) && !stdout.includes("X-Amz-Signature"));

    // The human form: one line per step.
    const human = await cli(["doctor", urlOf(g)]);
    assert.equal(human.code, 0, human.stderr);
    for (const step of STEPS) assert.match(human.stdout, new RegExp(`^  ok +${step} `, "m"));
    assert.match(human.stdout, /^Connected: .* cold, .* warm\. The server's IAM check/m);
    assert.ok(!human.stdout.includes("X-Amz-Signature") && !human.stderr.includes("X-Amz"));
  },
);

test(
  "pg-iam doctor names the step a wrong region fails at: endpoint when the name says otherwise, else auth",
  TIMEOUT,
  async () => {
    const g = await gateway();
    // The endpoint name says us-east-1: pg-iam refuses to sign for another region.
    const named = await doctor([urlOf(g, "app", "&iam_region=us-west-2")]);
    assert.equal(named.code, 1);
    assert.equal(named.report.failure?.step, "endpoint");
    assert.match(named.report.failure!.error, /"us-west-2" contradicts the region "us-east-1"/);
    assert.equal(g.stats.accepted + g.stats.rejected, 0);

    // A name without a region in it (a private DNS name, here localhost): the server refuses.
    const local = await gateway({ endpoint: "localhost", service: "rds", region: "us-east-1" });
    const url =
      `postgres://app@localhost:${local.port}/postgres?iam_port=5432&sslrootcert=${CA_FILE}`;
    const wrong = await doctor([`${url}&iam_region=us-west-2`]);
    assert.equal(wrong.code, 1);
    assert.equal(wrong.report.failure?.step, "auth");
    assert.match(wrong.report.failure!.cause, /signed for region us-west-2 \(as you asked/);
    assert.deepEqual(wrong.report.steps.map((s) => s.ok), [
      true,
      true,
      true,
      true,
      true,
      true,
      false,
    ]);
    assert.equal(local.stats.rejections.scope, 1);
    // The control: the right region logs in.
    const right = await doctor([`${url}&iam_region=us-east-1`]);
    assert.equal(right.code, 0, JSON.stringify(right.report.failure));
  },
);

test(
  "pg-iam doctor with sslmode=disable against a TLS-only server says no token was sent, not that the token is wrong",
  TIMEOUT,
  async () => {
    const g = await gateway();
    const plain = await doctor([
      urlOf(g, "app", "&sslmode=disable").replace(/&sslrootcert=[^&]*/, ""),
      "--dangerously-disable-tls",
    ]);
    assert.equal(plain.report.failure?.step, "auth");
    assert.match(plain.report.failure!.cause, /no token was sent/);
    assert.match(plain.report.failure!.cause, /remove sslmode=disable/);
    assert.doesNotMatch(plain.report.failure!.cause, /region|rds-db:connect|rds_iam/);
    assert.equal(g.stats.rejections["no-tls"], 1);
    // The control: a token the server did check and refuse gets the token's causes.
    const wrong = await doctor([urlOf(g, "app")], { AWS_SECRET_ACCESS_KEY: "another-secret" });
    assert.equal(wrong.report.failure?.step, "auth");
    assert.match(wrong.report.failure!.cause, /rds-db:connect/);
    assert.doesNotMatch(wrong.report.failure!.cause, /no token was sent/);
  },
);

test("pg-iam doctor names auth for a user the database does not have", TIMEOUT, async () => {
  const g = await gateway();
  const { code, report } = await doctor([urlOf(g, "nosuchuser")]);
  assert.equal(code, 1);
  assert.equal(report.failure?.step, "auth");
  assert.match(report.failure!.error, /nosuchuser/);
  assert.match(report.failure!.cause, /has no user nosuchuser/);
  assert.equal(g.stats.accepted, 1); // the token was good: the database refused the role
});

test(
  "pg-iam doctor names tls for an untrusted CA and for a certificate of another name",
  TIMEOUT,
  async () => {
    const g = await gateway();
    // No sslrootcert: RDS endpoints are checked against the RDS CA bundle, which did not sign ours.
    const untrusted = await doctor([
      `postgres://app@127.0.0.1:${g.port}/postgres?iam_host=${RDS}&iam_port=5432`,
    ]);
    assert.equal(untrusted.code, 1);
    assert.equal(untrusted.report.failure?.step, "tls");
    assert.match(untrusted.report.failure!.error, /does not verify against the RDS CA bundle/);
    assert.match(untrusted.report.failure!.cause, /not signed by a CA you trust/);

    // Trusted CA, but the certificate does not carry the name signed for.
    const other = "db.cluster-zzz999zzz.us-east-1.rds.amazonaws.com";
    const wrongName = await doctor([
      `postgres://app@127.0.0.1:${g.port}/postgres?iam_host=${other}&sslrootcert=${CA_FILE}`,
    ]);
    assert.equal(wrongName.code, 1);
    assert.equal(wrongName.report.failure?.step, "tls");
    assert.match(wrongName.report.failure!.cause, /does not name db\.cluster-zzz999zzz/);
    assert.equal(g.stats.accepted + g.stats.rejected, 0); // no token was ever sent

    // The control: the same URL with the right CA and name passes TLS.
    const ok = await doctor([urlOf(g)]);
    assert.equal(ok.code, 0);
  },
);

test("pg-iam doctor names tcp for a closed port", TIMEOUT, async () => {
  const g = await gateway();
  const port = g.port;
  await g.close();
  const { code, report } = await doctor([
    `postgres://app@127.0.0.1:${port}/postgres?iam_host=${RDS}&sslrootcert=${CA_FILE}`,
  ]);
  assert.equal(code, 1);
  assert.equal(report.failure?.step, "tcp");
  assert.match(report.failure!.cause, /nothing accepts connections on port/);
  assert.deepEqual(report.steps.map((s) => s.name), STEPS.slice(0, 5));
});

test("pg-iam doctor names credentials when there are none", TIMEOUT, async () => {
  const g = await gateway();
  const { code, report } = await doctor([urlOf(g)], {
    AWS_ACCESS_KEY_ID: "",
    AWS_SECRET_ACCESS_KEY: "",
  });
  assert.equal(code, 1);
  assert.equal(report.failure?.step, "credentials");
});

test(
  "eval of pg-iam env lets psql log in through the gateway with verified TLS, until the token expires",
  TIMEOUT,
  async () => {
    const g = await gateway();
    const r = await cli(["env", urlOf(g, "app")]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^export PGHOST='${RDS.replaceAll(".", "\\.")}'$`, "m"));
    assert.match(r.stdout, /^export PGHOSTADDR='127\.0\.0\.1'$/m);
    assert.match(r.stdout, /^export PGSSLMODE='verify-full'$/m);
    assert.match(r.stdout, new RegExp(`^export PGSSLROOTCERT='${CA_FILE}'$`, "m"));
    const script = `${r.stdout}\npsql -X -tAc "select current_user"`;
    const sh = (s: string) => run("sh", ["-c", s], childEnv({}));
    const ok = await sh(script);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), "app");

    // The control: 16 minutes later by the gateway's clock, the same exports no longer log in.
    g.clockOffsetMs = 16 * MINUTE;
    const expired = await sh(script);
    assert.notEqual(expired.code, 0);
    assert.match(expired.stderr, /PAM authentication failed/);
    assert.equal(g.stats.rejections.expired, 1);
  },
);

test(
  "pg-iam env writes the RDS CA bundle to its cache for an RDS endpoint, and quotes for fish",
  TIMEOUT,
  async () => {
    const r = await cli(["env", `postgres://app@${RDS}/orders`, "--shell", "fish"]);
    assert.equal(r.code, 0, r.stderr);
    const file = join(dir, "cache", "pg-iam", "rds-ca-bundle.pem");
    assert.match(r.stdout, new RegExp(`^set -gx PGSSLROOTCERT '${file}'$`, "m"));
    assert.match(r.stdout, /^set -gx PGDATABASE 'orders'$/m);
    assert.ok(existsSync(file));
  },
);

test(
  "pg-iam psql runs psql with a fresh token and verified TLS; psql's exit code is its own but for a failed connection's 2, which is 1 (psql alone exits 2: the control)",
  TIMEOUT,
  async () => {
    const g = await gateway();
    const r = await cli(["psql", urlOf(g, "app"), "--", "-X", "-tAc", "select current_user"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), "app");

    const failed = await cli([
      "psql",
      urlOf(g, "nosuchuser"),
      "--",
      "-X",
      "-c",
      "select 1",
    ]);
    // psql's 2 (a failed connection) is 1, a connect or authentication failure: 2 is bad usage.
    assert.equal(failed.code, 1, failed.stderr);
    assert.match(failed.stderr, /role "nosuchuser" does not exist/);
    // The control: psql itself, given the same environment, exits 2.
    const env = await cli(["env", urlOf(g, "nosuchuser")]);
    assert.equal(env.code, 0, env.stderr);
    const plain = await run("sh", ["-c", `${env.stdout}\npsql -X -c "select 1"`], childEnv({}));
    assert.equal(plain.code, 2, plain.stderr);
    assert.match(plain.stderr, /role "nosuchuser" does not exist/);
  },
);

test(
  "pg-iam psql hands psql the RDS CA bundle in a private temporary file, removed when psql exits",
  TIMEOUT,
  async () => {
    // PSQL names the program to run: a script that reports what it was given.
    const fake = join(dir, "fake-psql.sh");
    writeFileSync(
      fake,
      `#!/bin/sh\necho "$PGSSLMODE $PGSSLROOTCERT $(stat -c %a "$PGSSLROOTCERT") $(stat -c %a "$(dirname "$PGSSLROOTCERT")") $*"\n` +
        `grep -c "BEGIN CERTIFICATE" "$PGSSLROOTCERT"\nexit 7\n`,
      { mode: 0o755 },
    );
    const r = await cli(["psql", `postgres://app@${RDS}/orders`, "--", "-c", "select 1"], {
      PSQL: fake,
    });
    assert.equal(r.code, 7, r.stderr); // psql's exit code, passed through
    const [line, count] = r.stdout.trim().split("\n");
    const [mode, file, fileMode, dirMode, ...rest] = line.split(" ");
    assert.equal(mode, "verify-full");
    assert.equal(fileMode, "600");
    assert.equal(dirMode, "700");
    assert.deepEqual(rest, ["-c", "select", "1"]);
    assert.ok(Number(count) > 10, `${count} certificates in the RDS bundle`);
    assert.equal(existsSync(file), false);

    // The control: without PSQL on a machine where it is missing, the error says what to install.
    const missing = await cli(["psql", `postgres://app@${RDS}/orders`], {
      PSQL: join(dir, "nope"),
    });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /not found: install the PostgreSQL client/);
  },
);

/** Starts `pg-iam gateway …args --json`; resolves its ready line and a stop() that awaits exit. */
async function gatewayCommand(
  args: string[],
  env: Record<string, string> = {},
  onSpawn?: (pid: number) => void,
) {
  const [cmd, pre] = runtime();
  const child = spawn(cmd, [...pre, "gateway", "--json", ...args], { env: childEnv(env) });
  // Before the child has even loaded its runtime, so before it writes any file.
  onSpawn?.(child.pid!);
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const lines: string[] = [];
  let buffer = "";
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      buffer += s;
      for (let i; (i = buffer.indexOf("\n")) >= 0;) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 1);
        lines.push(line);
        const event = JSON.parse(line);
        if (event.event === "ready") resolve(event);
      }
    });
    child.on("close", (code) => reject(new Error(`gateway exited ${code}: ${stderr}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
  return {
    ready,
    lines,
    stderr: () => stderr,
    /** Stops it with SIGTERM; resolves its last event (Deno reports a signal, not the code). */
    async stop(): Promise<Record<string, unknown>> {
      child.kill("SIGTERM");
      await exited;
      return JSON.parse(lines.at(-1) ?? "{}");
    },
  };
}

test(
  "pg-iam gateway over Debian's PostgreSQL: its generated CA verifies, its tokens log in, its clock offset expires them",
  TIMEOUT,
  async () => {
    const pg = await upstreamPostgres();
    const caOut = join(dir, "gateway-ca.pem");
    const gw = await gatewayCommand([
      "--listen",
      "127.0.0.1:0",
      "--upstream",
      `postgres://${pg.host}:${pg.port}`,
      "--endpoint",
      RDS,
      "--ca-out",
      caOut,
    ]);
    try {
      assert.equal(gw.ready.endpoint, RDS);
      assert.equal(gw.ready.ca, caOut);
      const url = String(gw.ready.url).replace("postgres://postgres@", "postgres://app@");
      const ok = await doctor([url]);
      assert.equal(ok.code, 0, JSON.stringify(ok.report.failure));
      assert.match(
        ok.report.steps.find((s) => s.name === "tls")!.detail,
        /pg-iam local gateway CA/,
      );

      // Another secret is refused by the gateway process.
      const wrong = await doctor([url], { AWS_SECRET_ACCESS_KEY: "another-secret" });
      assert.equal(wrong.report.failure?.step, "auth");
    } finally {
      assert.equal((await gw.stop()).event, "stopped", gw.stderr());
    }
    const logins = gw.lines.map((l) => JSON.parse(l)).filter((e) => e.event === "login");
    assert.deepEqual(logins.map((l) => l.accepted), [true, true, false]);
    assert.equal(logins[2].reason, "signature");

    // The control for the clock: the same client against a gateway 16 minutes ahead is refused.
    const ahead = await gatewayCommand([
      "--listen",
      "127.0.0.1:0",
      "--upstream",
      `postgres://${pg.host}:${pg.port}`,
      "--endpoint",
      RDS,
      "--ca-out",
      caOut,
      "--clock-offset",
      "+16m",
    ]);
    try {
      const url = String(ahead.ready.url).replace("postgres://postgres@", "postgres://app@");
      const late = await doctor([url]);
      assert.equal(late.report.failure?.step, "auth");
    } finally {
      await ahead.stop();
    }
    const late = ahead.lines.map((l) => JSON.parse(l)).filter((e) => e.event === "login");
    assert.equal(late[0].reason, "expired");
  },
);

test(
  "pg-iam gateway without --upstream serves an embedded PGlite, reachable with the URL it prints",
  TIMEOUT,
  async () => {
    const gw = await gatewayCommand([
      "--listen",
      "127.0.0.1:0",
      "--ca-out",
      join(dir, "lite-ca.pem"),
    ]);
    try {
      assert.equal(gw.ready.upstream, "embedded PGlite");
      assert.equal(gw.ready.endpoint, "localhost");
      const { code, report } = await doctor([String(gw.ready.url)]);
      assert.equal(code, 0, JSON.stringify(report.failure));
      assert.match(report.steps.find((s) => s.name === "query")!.detail, /PGlite|PostgreSQL/);
    } finally {
      assert.equal((await gw.stop()).event, "stopped", gw.stderr());
    }
  },
);

test(
  "pg-iam gateway logs each client in upstream as its own user, to its own database, and says so; --upstream-user and --upstream-database override; a user or database in --upstream is refused",
  TIMEOUT,
  async () => {
    const pg = await upstreamPostgres();
    const whoAmI = async (ready: Record<string, unknown>, user: string) => {
      const url = String(ready.url).replace("postgres://postgres@", `postgres://${user}@`);
      const sql = iamPostgres(url, {
        max: 1,
        credentials: KEYS,
        onnotice: () => {},
      });
      try {
        const [row] = await sql`select current_user as who, current_database() as db`;
        return `${row.who}@${row.db}`;
      } finally {
        await sql.end();
      }
    };
    const caOut = join(dir, "passthrough-ca.pem");
    const base = ["--listen", "127.0.0.1:0", "--ca-out", caOut];
    const through = await gatewayCommand([
      ...base,
      "--upstream",
      `postgres://${pg.host}:${pg.port}`,
    ]);
    try {
      assert.equal(through.ready.upstreamUser, null);
      assert.equal(through.ready.upstreamDatabase, null);
      assert.equal(await whoAmI(through.ready, "app"), "app@postgres");
      assert.equal(await whoAmI(through.ready, "admin"), "admin@postgres");
    } finally {
      await through.stop();
    }
    // The control: told otherwise, every client is the one user upstream.
    const fixed = await gatewayCommand([
      ...base,
      "--upstream",
      `postgres://${pg.host}:${pg.port}`,
      "--upstream-user",
      pg.user,
      "--upstream-database",
      "template1",
    ]);
    try {
      assert.equal(fixed.ready.upstreamUser, pg.user);
      assert.equal(await whoAmI(fixed.ready, "app"), `${pg.user}@template1`);
    } finally {
      await fixed.stop();
    }
    // --max-connection-rate: DSQL's answer beyond it. Two clients at once, one slot a second: one
    // gets in, the other is refused with 53400 until its 1-second connect timeout.
    const limited = await gatewayCommand([
      ...base,
      "--upstream",
      `postgres://${pg.host}:${pg.port}`,
      "--max-connection-rate",
      "1",
      "--connection-burst",
      "1",
    ]);
    try {
      assert.equal(limited.ready.maxConnectionRate, 1);
      const clients = [1, 2].map(() =>
        iamPostgres(String(limited.ready.url), {
          max: 1,
          credentials: KEYS,
          connect_timeout: 1,
          onnotice: () => {},
        })
      );
      const results = await Promise.allSettled(clients.map((sql) => sql`select 1`.execute()));
      assert.deepEqual(results.map((r) => r.status).sort(), ["fulfilled", "rejected"]);
      const refused = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
      assert.equal(refused.reason.code, "53400", String(refused.reason));
      await Promise.all(clients.map((sql) => sql.end({ timeout: 0 })));
    } finally {
      await limited.stop();
    }
    // The text banner says which it uses.
    const [cmd, pre] = runtime();
    const text = spawn(cmd, [
      ...pre,
      "gateway",
      ...base,
      "--upstream",
      `postgres://${pg.host}:${pg.port}`,
    ], { env: childEnv({}) });
    let out = "";
    text.stdout.setEncoding("utf8").on("data", (t: string) => out += t);
    for (let i = 0; i < 200 && !out.includes("Stop with"); i++) await sleep(50);
    text.kill("SIGTERM");
    assert.match(
      out,
      /upstream: {2}127\.0\.0\.1:\d+, logged in as each client's own user, to its own database/,
    );
    // A URL naming a user or database would have logged everyone in as them: refused, saying how.
    const named = await cli([
      "gateway",
      "--listen",
      "127.0.0.1:0",
      "--upstream",
      `postgres://postgres:hunter2@${pg.host}:${pg.port}/postgres`,
    ]);
    assert.equal(named.code, 2);
    assert.match(named.stderr, /--upstream names the user "postgres" and the database "postgres"/);
    assert.match(named.stderr, /--upstream-user postgres --upstream-database postgres/);
    assert.doesNotMatch(named.stderr, /hunter2/);
  },
);

test(
  "the URL pg-iam gateway prints works unchanged: iamPostgres(), the README's DATABASE_URL recipes, token, env, psql, doctor",
  TIMEOUT,
  async () => {
    const pg = await upstreamPostgres();
    const caOut = join(dir, "printed-url-ca.pem");
    const gw = await gatewayCommand([
      "--listen",
      "127.0.0.1:0",
      "--upstream",
      `postgres://${pg.host}:${pg.port}`,
      "--ca-out",
      caOut,
    ]);
    try {
      const url = String(gw.ready.url);
      assert.match(
        url,
        /^postgres:\/\/postgres@localhost:\d+\/postgres\?iam_region=us-east-1&sslrootcert=/,
      );
      const aws = {
        AWS_ACCESS_KEY_ID: KEYS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: KEYS.secretAccessKey,
      };
      const unset = Object.fromEntries(
        Object.keys(process.env).filter((k) => /^(PG|AWS_)/.test(k)).map((k) => [k, undefined]),
      );
      await withEnv({ ...unset, ...aws, DATABASE_URL: url }, async () => {
        // iamPostgres() as the README shows it.
        const sql = iamPostgres(process.env.DATABASE_URL, { max: 1, onnotice: () => {} });
        try {
          const [row] = await sql`select current_user as who`;
          assert.equal(row.who, "postgres");
        } finally {
          await sql.end();
        }
        // The README's recipes, word for word.
        const client = iamPostgres(process.env.DATABASE_URL, { onnotice: () => {} });
        const rows = await drizzle(client).execute(drizzleSql`select 40 + 2 as answer`);
        assert.deepEqual([...rows], [{ answer: 42 }]);
        await client.end();
        const db = new Kysely<Record<string, never>>({
          dialect: new PostgresJSDialect({ postgres: iamPostgres(process.env.DATABASE_URL) }),
        });
        const { rows: k } = await kyselySql<{ answer: number }>`select 40 + 2 as answer`.execute(
          db,
        );
        assert.deepEqual(k, [{ answer: 42 }]);
        await db.destroy();

        // The control: without its sslrootcert, the same URL fails TLS, and the error names the
        // CA source in use and sslrootcert, not signingHostname.
        const bare = iamPostgres(url.replace(/&sslrootcert=[^&]*/, ""), { max: 1 });
        await assert.rejects(bare`select 1`, (e: Error) => {
          assert.match(e.message, /RDS CA bundle/);
          assert.match(e.message, /sslrootcert/);
          assert.doesNotMatch(e.message, /signingHostname/);
          return true;
        });
        await bare.end({ timeout: 0 });
      });

      // Every CLI command.
      const token = await cli(["token", url]);
      assert.equal(token.code, 0, token.stderr);
      assert.match(token.stdout, /^localhost:\d+\/\?Action=connect&DBUser=postgres&/);
      const doc = await doctor([url]);
      assert.equal(doc.code, 0, JSON.stringify(doc.report.failure));
      const env = await cli(["env", url]);
      assert.equal(env.code, 0, env.stderr);
      const viaEnv = await run(
        "sh",
        ["-c", `${env.stdout}\npsql -X -tAc "select 1"`],
        childEnv({}),
      );
      assert.equal(viaEnv.code, 0, viaEnv.stderr);
      assert.equal(viaEnv.stdout.trim(), "1");
      const psql = await cli(["psql", url, "--", "-X", "-tAc", "select current_user"]);
      assert.equal(psql.code, 0, psql.stderr);
      assert.equal(psql.stdout.trim(), "postgres");
    } finally {
      assert.equal((await gw.stop()).event, "stopped", gw.stderr());
    }
    const logins = gw.lines.map((l) => JSON.parse(l)).filter((e) => e.event === "login");
    assert.ok(logins.length >= 7 && logins.every((l) => l.accepted), JSON.stringify(logins));
  },
);

test(
  "the npm bin (dist/pg-iam.cjs, one bundled file, as npx and bunx run it) signs the same token as the source",
  {
    ...TIMEOUT,
    skip: existsSync(DIST_CLI) ? false : "no dist/: run npm run build (npm test does)",
  },
  async () => {
    const g = await gateway();
    const g2 = globalThis as { Deno?: { execPath(): string } };
    const [cmd, pre] = g2.Deno
      ? [g2.Deno.execPath(), ["run", "-A", "--quiet"]]
      : [process.execPath, []];
    const r = await run(
      cmd,
      [...pre, DIST_CLI, "token", "--hostname", RDS, "--username", "app"],
      childEnv({}),
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await login(g, "app", r.stdout.trim()), "app");
    const bad = await run(cmd, [...pre, DIST_CLI, "token", "--username", "app"], childEnv({}));
    assert.equal(bad.code, 2);
  },
);

// AWS's documented example keys, given the wrong way round below.
const REAL = {
  AWS_ACCESS_KEY_ID: "AKIAIOSFODNN7EXAMPLE",
  AWS_SECRET_ACCESS_KEY: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
};
const SWAPPED = {
  AWS_ACCESS_KEY_ID: REAL.AWS_SECRET_ACCESS_KEY,
  AWS_SECRET_ACCESS_KEY: REAL.AWS_ACCESS_KEY_ID,
};
const leaks = (text: string) =>
  text.includes(REAL.AWS_ACCESS_KEY_ID) || text.includes(REAL.AWS_SECRET_ACCESS_KEY);

test(
  "every pg-iam command refuses swapped keys with exit 1 and a message that shows neither key",
  TIMEOUT,
  async () => {
    const url = `postgres://app@${RDS}/orders`;
    for (const args of [["token", url], ["env", url], ["psql", url, "--", "-c", "select 1"]]) {
      const r = await cli(args, { ...SWAPPED, PSQL: join(dir, "nope") });
      assert.equal(r.code, 1, `${args[0]}: ${r.stderr}`);
      assert.equal(r.stdout, "", args[0]);
      assert.match(r.stderr, /seems to have its keys swapped: AWS_ACCESS_KEY_ID has the shape/);
      assert.ok(!leaks(r.stdout + r.stderr), r.stderr);
    }
    // doctor fails at the credentials step, in both forms, and prints no key.
    const g = await gateway();
    const json = await doctor([urlOf(g)], SWAPPED);
    assert.equal(json.code, 1);
    assert.equal(json.report.failure?.step, "credentials");
    assert.match(json.report.failure!.error, /keys swapped/);
    assert.match(json.report.failure!.cause, /malformed/);
    assert.ok(!leaks(json.stdout + json.stderr), json.stdout);
    const human = await cli(["doctor", urlOf(g), "--timeout", "5"], SWAPPED);
    assert.equal(human.code, 1);
    assert.match(human.stdout, /FAIL +credentials/);
    assert.ok(!leaks(human.stdout + human.stderr), human.stdout);
    assert.ok(!/long-term key/.test(human.stdout));
    // The gateway, from the environment and from a file of each kind.
    const gw = await cli(["gateway", "--listen", "0", "--no-tls"], SWAPPED);
    assert.equal(gw.code, 1, gw.stderr);
    assert.match(gw.stderr, /keys swapped/);
    assert.ok(!leaks(gw.stdout + gw.stderr), gw.stderr);
    const jsonFile = join(dir, "swapped.json");
    writeFileSync(
      jsonFile,
      JSON.stringify({
        accessKeyId: REAL.AWS_SECRET_ACCESS_KEY,
        secretAccessKey: REAL.AWS_ACCESS_KEY_ID,
      }),
    );
    const iniFile = join(dir, "swapped.ini");
    writeFileSync(
      iniFile,
      `[default]\naws_access_key_id = ${REAL.AWS_SECRET_ACCESS_KEY}\n` +
        `aws_secret_access_key = ${REAL.AWS_ACCESS_KEY_ID}\n`,
    );
    for (const file of [jsonFile, iniFile]) {
      const r = await cli(["gateway", "--listen", "0", "--no-tls", "--credentials", file]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /keys swapped: (accessKeyId|aws_access_key_id) has the shape/);
      assert.ok(!leaks(r.stdout + r.stderr), r.stderr);
    }

    // The control: the same keys the right way round sign, and doctor names the key id.
    const ok = await cli(["token", url], REAL);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F/);
    const seen = await doctor([urlOf(g)], REAL);
    const step = seen.report.steps.find((s) => s.name === "credentials");
    assert.match(step!.detail, /long-term key AKIAIOSFODNN7EXAMPLE/);
  },
);

test(
  "pg-iam names the flag meant for an unknown one: psql's -U and -h, libpq's host and user, and near misses",
  TIMEOUT,
  async () => {
    const cases: [string[], RegExp][] = [
      [["token", "--host", RDS], /unknown option --host: use --hostname HOST/],
      [["token", "--user", "app"], /unknown option --user: use --username USER/],
      [["env", "-U", "app"], /unknown option -U: use --username USER/],
      [["doctor", "-h", RDS], /-h is --help here \(alone\); for a host, use --hostname HOST/],
      [["psql", "-d", "orders"], /unknown option -d: use --database DB/],
      [["psql", "-p", "5432"], /unknown option -p: use --port PORT/],
      [["token", "--dbname=orders", "--hostname", RDS], /unknown option --dbname/],
      [["token", "-W"], /unknown option -W: pg-iam signs an IAM token in place of a password/],
      [["gateway", "--port", "6543"], /unknown option --port: use --listen \[HOST:\]PORT/],
      [["gateway", "--host", "0.0.0.0"], /unknown option --host: use --listen \[HOST:\]PORT/],
      [["token", "--usernme", "app"], /unknown option --usernme: did you mean --username\?/],
      [["token", "--frobnicate"], /^pg-iam token: unknown option --frobnicate \(see/],
    ];
    for (const [args, pattern] of cases) {
      const r = await cli(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.equal(r.stdout, "");
      assert.match(r.stderr, pattern, args.join(" "));
      assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
    }
    // The controls: -h alone is still help, and the flags it suggests work.
    const help = await cli(["token", "-h"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: pg-iam token /);
    const ok = await cli(["token", "--hostname", RDS, "--username", "app"]);
    assert.equal(ok.code, 0, ok.stderr);
  },
);

test(
  "pg-iam env --shell takes zsh and bash (POSIX exports, as sh) and refuses a shell it cannot write for",
  TIMEOUT,
  async () => {
    const url = `postgres://app@${RDS}/orders`;
    const sh = await cli(["env", url]);
    for (const shell of ["zsh", "bash"]) {
      const r = await cli(["env", url, "--shell", shell]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^export PGDATABASE='orders'$/m);
      // The same lines as sh, but for the token, signed a moment apart.
      const strip = (s: string) => s.replace(/^export PGPASSWORD=.*$/m, "");
      assert.equal(strip(r.stdout), strip(sh.stdout));
      const evaluated = await run(
        "bash",
        ["-c", `${r.stdout}\necho "$PGHOST $PGDATABASE"`],
        childEnv({}),
      );
      assert.equal(evaluated.stdout, `${RDS} orders\n`);
    }
    const help = await cli(["env", "--help"]);
    assert.match(help.stdout, /sh, bash or zsh/);
    // The control: a shell with another syntax is refused, naming those it takes.
    const tcsh = await cli(["env", url, "--shell", "tcsh"]);
    assert.equal(tcsh.code, 2);
    assert.match(tcsh.stderr, /--shell must be sh, bash, zsh, fish, powershell, got "tcsh"/);
  },
);

test(
  "a region that contradicts the endpoint names the flag or parameter the user wrote, never signingHostname",
  TIMEOUT,
  async () => {
    const cases: [string[], RegExp][] = [
      [
        ["token", "--hostname", RDS, "--username", "app", "--region", "us-west-2"],
        /--region "us-west-2" contradicts the region "us-east-1" of the endpoint "db\.cluster-abc123xyz\.us-east-1\.rds\.amazonaws\.com" \(--hostname\).*drop --region or correct it/,
      ],
      [
        ["env", `postgres://app@127.0.0.1:6543/db?iam_host=${RDS}&iam_region=eu-west-1`],
        /iam_region "eu-west-1" contradicts the region "us-east-1" .*\(iam_host\)/,
      ],
      [
        ["token", `postgres://app@${RDS}/db`, "--region", "us-west-2"],
        /--region "us-west-2" contradicts .*\(the URL's host\)/,
      ],
      [
        ["psql", RDS, "--username", "app", "--region", "us-west-2"],
        /\(the host argument\)/,
      ],
      [
        [
          "token",
          "--hostname",
          "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws",
          "--region",
          "us-west-2",
        ],
        /--region "us-west-2" contradicts the region "us-east-1" .*\(--hostname\)/,
      ],
      [
        ["token", "--hostname", "db.example.com", "--username", "app", "--region", "mars-1"],
        /--region must be an AWS region name like us-east-1, got "mars-1"/,
      ],
    ];
    for (const [args, pattern] of cases) {
      const r = await cli(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, pattern, args.join(" "));
      assert.doesNotMatch(r.stderr, /signingHostname|"hostname" option|"region" option/);
    }
    const fromEnv = await cli(["token", "--username", "app", "--region", "us-west-2"], {
      PGHOST: RDS,
    });
    assert.match(fromEnv.stderr, /\(PGHOST\)/);
    // The controls: the endpoint's own region, and any region for a name without one.
    const same = await cli([
      "token",
      "--hostname",
      RDS,
      "--username",
      "app",
      "--region",
      "us-east-1",
    ]);
    assert.equal(same.code, 0, same.stderr);
    const local = await cli([
      "token",
      "--hostname",
      "db.internal",
      "--username",
      "app",
      "--region",
      "us-west-2",
    ]);
    assert.equal(local.code, 0, local.stderr);
    assert.match(local.stdout, /%2Fus-west-2%2Frds-db%2F/);
  },
);

test(
  "with no host, every command says none was given and how to give one, never localhost",
  TIMEOUT,
  async () => {
    for (
      const args of [["token", "--username", "app"], ["env"], ["psql"], ["doctor"], [
        "token",
        "postgres:///db",
      ]]
    ) {
      const r = await cli(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(
        r.stderr,
        /no host was given: pass a connection URL \(postgres:\/\/user@host\/db\), --hostname HOST, or set PGHOST/,
      );
      assert.doesNotMatch(r.stderr, /localhost/);
    }
    // The control: PGHOST is a host.
    const r = await cli(["token", "--username", "app"], { PGHOST: RDS });
    assert.equal(r.code, 0, r.stderr);
  },
);

/** Listens on a free port of 127.0.0.1 until closed: a port in use. */
function occupy(): Promise<Server & { port: number }> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      resolve(Object.assign(server, { port: (server.address() as { port: number }).port }));
    });
  });
}

test(
  "pg-iam gateway on a port in use says so, and leaves the CA files of the gateway running untouched",
  TIMEOUT,
  async () => {
    const pg = await upstreamPostgres();
    const busy = await occupy();
    const cacheCa = join(dir, "cache", "pg-iam", "gateway-ca.pem");
    mkdirSync(join(dir, "cache", "pg-iam"), { recursive: true });
    const caOut = join(dir, "busy-ca.pem");
    const before = "the CA of the gateway already running\n";
    writeFileSync(cacheCa, before);
    writeFileSync(caOut, before);
    const mtimes = [statSync(cacheCa).mtimeMs, statSync(caOut).mtimeMs];
    try {
      const upstream = ["--upstream", `postgres://${pg.host}:${pg.port}`];
      for (const extra of [[], ["--ca-out", caOut]]) {
        const r = await cli([
          "gateway",
          "--listen",
          `127.0.0.1:${busy.port}`,
          ...upstream,
          ...extra,
        ]);
        assert.equal(r.code, 1, r.stderr);
        assert.equal(r.stdout, "");
        assert.equal(
          r.stderr,
          `pg-iam gateway: port ${busy.port} is in use on 127.0.0.1: another gateway? Stop it, or ` +
            `pick another port with --listen [HOST:]PORT (--listen 0: any free port)\n`,
        );
        assert.doesNotMatch(r.stderr, /EADDRINUSE|listen EADDR/);
      }
      assert.equal(readFileSync(cacheCa, "utf8"), before);
      assert.equal(readFileSync(caOut, "utf8"), before);
      assert.deepEqual([statSync(cacheCa).mtimeMs, statSync(caOut).mtimeMs], mtimes);
      assert.deepEqual(
        readdirSync(join(dir, "cache", "pg-iam")).filter((f) => f.endsWith(".tmp")),
        [],
      );

      // The control: on a free port the same command writes its CA, once it listens.
      const gw = await gatewayCommand(["--listen", "127.0.0.1:0", ...upstream, "--ca-out", caOut]);
      try {
        assert.match(readFileSync(caOut, "utf8"), /^-----BEGIN CERTIFICATE-----/);
        const url = String(gw.ready.url);
        const ok = await doctor([url.replace("postgres://postgres@", "postgres://app@")]);
        assert.equal(ok.code, 0, JSON.stringify(ok.report.failure));
      } finally {
        await gw.stop();
      }
    } finally {
      busy.close();
    }
  },
);

// Another user, for the files a shared directory lets them plant: nobody, when we are root.
const ROOT = process.getuid?.() === 0;
const NOBODY = 65534;
const AS_ROOT = {
  ...TIMEOUT,
  skip: ROOT ? false : "needs root, to create files owned by another user (uid 65534)",
};

/** A directory shared as /tmp is: writable by every user, sticky. */
function sharedDir(name: string, mode = 0o1777): string {
  const shared = join(dir, name);
  mkdirSync(shared, { recursive: true });
  chmodSync(shared, mode);
  return shared;
}

/** An unrelated private file (mode 600) outside the shared directory: what a planted link aims at. */
function privateFile(name: string): { file: string; text: string } {
  const file = join(dir, name);
  const text = `${name}: private, not a CA\n`;
  writeFileSync(file, text, { mode: 0o600 });
  return { file, text };
}

/** Asserts `file` is a regular file of ours, mode 644, holding a PEM certificate. */
function assertOwnCa(file: string): void {
  const stat = lstatSync(file);
  assert.ok(stat.isFile(), `${file} is not a regular file`);
  assert.equal(stat.mode & 0o7777, 0o644);
  assert.equal(stat.uid, process.getuid?.());
  assert.match(readFileSync(file, "utf8"), /^-----BEGIN CERTIFICATE-----/);
}

test(
  "pg-iam gateway --ca-out in a shared directory writes through no link planted at a name it could predict: the unrelated mode-600 file is untouched, the CA is a file of its own",
  TIMEOUT,
  async () => {
    const pg = await upstreamPostgres();
    const shared = sharedDir("shared-link");
    const caOut = join(shared, "gateway-ca.pem");
    const victim = privateFile("victim-of-ca-out");
    const planted: string[] = [];
    // The attack: links at the names the gateway's process id made predictable.
    const gw = await gatewayCommand(
      [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        `postgres://${pg.host}:${pg.port}`,
        "--ca-out",
        caOut,
      ],
      {},
      (pid) => {
        for (const name of [`${caOut}.${pid}.tmp`, `${caOut}.tmp`]) {
          symlinkSync(victim.file, name);
          planted.push(name);
        }
      },
    );
    try {
      assert.equal(gw.ready.ca, caOut);
    } finally {
      await gw.stop();
    }
    assert.equal(readFileSync(victim.file, "utf8"), victim.text);
    assert.equal(statSync(victim.file).mode & 0o777, 0o600);
    assertOwnCa(caOut);
    for (const name of planted) assert.ok(lstatSync(name).isSymbolicLink());
    // Nothing else is left behind: the temporary file was renamed.
    assert.deepEqual(
      readdirSync(shared).sort(),
      ["gateway-ca.pem", ...planted.map((p) => p.slice(shared.length + 1))].sort(),
    );
  },
);

test(
  "pg-iam gateway --ca-out in a shared directory does not adopt a file another user created at a name it could predict: the CA is its own, not theirs to rewrite",
  AS_ROOT,
  async () => {
    const pg = await upstreamPostgres();
    const shared = sharedDir("shared-planted");
    const caOut = join(shared, "gateway-ca.pem");
    const theirs = "another user's file, writable by them\n";
    let planted = "";
    const gw = await gatewayCommand(
      [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        `postgres://${pg.host}:${pg.port}`,
        "--ca-out",
        caOut,
      ],
      {},
      (pid) => {
        planted = `${caOut}.${pid}.tmp`;
        writeFileSync(planted, theirs, { mode: 0o666 });
        chmodSync(planted, 0o666);
        chownSync(planted, NOBODY, NOBODY);
      },
    );
    await gw.stop();
    assertOwnCa(caOut);
    assert.equal(lstatSync(planted).uid, NOBODY);
    assert.equal(readFileSync(planted, "utf8"), theirs);
  },
);

test(
  "pg-iam gateway --ca-out refuses to replace a file another user owns in a shared directory, saying why",
  AS_ROOT,
  async () => {
    const pg = await upstreamPostgres();
    const args = ["--listen", "127.0.0.1:0", "--upstream", `postgres://${pg.host}:${pg.port}`];
    const start = (caOut: string) =>
      gatewayCommand([...args, "--ca-out", caOut]).then(
        async (gw) => {
          await gw.stop();
          return "the gateway started";
        },
        (error: Error) => error.message,
      );

    const shared = sharedDir("shared-owned");
    const caOut = join(shared, "gateway-ca.pem");
    const theirs = "another user's CA\n";
    writeFileSync(caOut, theirs);
    chownSync(caOut, NOBODY, NOBODY);
    assert.match(
      await start(caOut),
      new RegExp(
        `^gateway exited \\d+: pg-iam gateway: cannot write --ca-out "${caOut}": ${caOut} ` +
          `already exists, owned by another user \\(uid ${NOBODY}\\), in the shared directory ` +
          `${shared} \\(writable by every user, sticky\\): it is not replaced`,
      ),
    );
    assert.equal(readFileSync(caOut, "utf8"), theirs);
    assert.equal(lstatSync(caOut).uid, NOBODY);

    // The control: a file of our own in the shared directory is replaced.
    chownSync(caOut, 0, 0);
    assert.equal(await start(caOut), "the gateway started");
    assertOwnCa(caOut);
  },
);

test(
  "pg-iam gateway --ca-out refuses a directory every user may write to that is not sticky (anyone could replace the file there), saying why",
  TIMEOUT,
  async () => {
    const pg = await upstreamPostgres();
    const open = sharedDir("open-dir", 0o777);
    const caOut = join(open, "gateway-ca.pem");
    const args = ["--listen", "127.0.0.1:0", "--upstream", `postgres://${pg.host}:${pg.port}`];
    const started = await gatewayCommand([...args, "--ca-out", caOut]).then(
      async (gw) => {
        await gw.stop();
        return "the gateway started";
      },
      (error: Error) => error.message,
    );
    assert.match(
      started,
      new RegExp(
        `cannot write --ca-out "${caOut}": its directory ${open} is writable by every user and ` +
          `not sticky \\(mode 777\\): anyone could replace the file`,
      ),
    );
    assert.deepEqual(readdirSync(open), []);
    // The control: the same directory, sticky, takes it.
    chmodSync(open, 0o1777);
    const gw = await gatewayCommand([...args, "--ca-out", caOut]);
    await gw.stop();
    assertOwnCa(caOut);
  },
);

test(
  "pg-iam env caching the RDS CA bundle in a shared directory writes through no link planted at a name it could predict",
  TIMEOUT,
  async () => {
    const cache = join(dir, "shared-cache");
    const shared = sharedDir(join("shared-cache", "pg-iam"));
    const bundle = join(shared, "rds-ca-bundle.pem");
    const victim = privateFile("victim-of-env");
    const env = { XDG_CACHE_HOME: cache };
    const url = `postgres://app@${RDS}/orders`;
    let planted = "";
    const r = await cli(["env", url], env, (pid) => {
      planted = `${bundle}.${pid}.tmp`;
      symlinkSync(victim.file, planted);
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^export PGSSLROOTCERT='${bundle}'$`, "m"));
    assert.equal(readFileSync(victim.file, "utf8"), victim.text);
    assert.ok(lstatSync(planted).isSymbolicLink());
    const stat = lstatSync(bundle);
    assert.ok(stat.isFile());
    assert.equal(stat.mode & 0o7777, 0o644);
    assert.match(readFileSync(bundle, "utf8"), /^-----BEGIN CERTIFICATE-----/);
  },
);

test(
  "pg-iam env does not hand out a cached RDS CA bundle another user owns in a shared directory, even one saying the right thing: they could rewrite it once it is trusted",
  AS_ROOT,
  async () => {
    const cache = join(dir, "shared-cache-owned");
    const shared = sharedDir(join("shared-cache-owned", "pg-iam"));
    const bundle = join(shared, "rds-ca-bundle.pem");
    const env = { XDG_CACHE_HOME: cache };
    const url = `postgres://app@${RDS}/orders`;
    // The control: the bundle cached by us is used.
    assert.equal((await cli(["env", url], env)).code, 0);
    chownSync(bundle, NOBODY, NOBODY);
    const refused = await cli(["env", url], env);
    assert.equal(refused.code, 1, refused.stderr);
    assert.equal(refused.stdout, "");
    assert.match(
      refused.stderr,
      new RegExp(
        `^pg-iam env: ${bundle} already exists, owned by another user \\(uid ${NOBODY}\\)`,
      ),
    );
  },
);

test(
  "pg-iam gateway without PGlite installed says to install it or pass --upstream",
  TIMEOUT,
  async () => {
    // A copy of pg-iam whose node_modules has everything but @electric-sql.
    const copy = mkdtempSync(join(tmpdir(), "pg-iam-no-pglite-"));
    const root = fileURLToPath(new URL("../../", import.meta.url));
    for (const entry of ["src", "mod.ts", "package.json", "deno.json"]) {
      cpSync(join(root, entry), join(copy, entry), { recursive: true });
    }
    mkdirSync(join(copy, "node_modules"));
    for (const entry of readdirSync(join(root, "node_modules"))) {
      if (entry !== "@electric-sql") {
        symlinkSync(join(root, "node_modules", entry), join(copy, "node_modules", entry));
      }
    }
    const [cmd, pre] = runtime(join(copy, "src", "cli", "mod.ts"));
    const r = await run(cmd, [...pre, "gateway", "--listen", "0", "--no-tls"], childEnv({}), copy);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^pg-iam gateway: no --upstream was given, and the embedded PGlite/);
    assert.match(r.stderr, /npm install @electric-sql\/pglite @electric-sql\/pglite-socket/);
    assert.match(r.stderr, /pass --upstream postgres:\/\/user@host:port\/database\n$/);
    // The control: the same copy relays to a server given with --upstream.
    const pg = await upstreamPostgres();
    const [cmd2, pre2] = runtime(join(copy, "src", "cli", "mod.ts"));
    const child = spawn(cmd2, [
      ...pre2,
      "gateway",
      "--json",
      "--listen",
      "127.0.0.1:0",
      "--no-tls",
      "--upstream",
      `postgres://${pg.host}:${pg.port}`,
    ], { env: childEnv({}), cwd: copy });
    const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
      let out = "";
      let err = "";
      child.stderr.setEncoding("utf8").on("data", (s: string) => (err += s));
      child.stdout.setEncoding("utf8").on("data", (s: string) => {
        out += s;
        if (out.includes("\n")) resolve(JSON.parse(out.slice(0, out.indexOf("\n"))));
      });
      child.on("close", (code) => reject(new Error(`exited ${code}: ${err}`)));
    });
    const exited = new Promise((resolve) => child.on("close", resolve));
    child.kill("SIGTERM");
    await exited;
    assert.equal(ready.event, "ready");
    assert.equal(ready.upstream, `${pg.host}:${pg.port}`);
    rmSync(copy, { recursive: true, force: true });
  },
);

test("the CLI's argument parser: --name value, --name=value, -h, positionals, --, values starting with a dash, and clear errors", async () => {
  const { parse } = await import("../../src/cli/_args.ts");
  const command = {
    name: "x",
    summary: "",
    usage: "",
    description: "",
    examples: [],
    positionals: 1,
    flags: {
      port: { type: "string" as const, arg: "PORT", help: "" },
      offset: { type: "string" as const, arg: "DURATION", help: "" },
      json: { type: "boolean" as const, help: "" },
    },
  };
  assert.deepEqual(
    parse(command, ["url", "--port", "5432", "--offset=-90s", "--json", "--", "-c", "select 1"]),
    {
      values: { port: "5432", offset: "-90s", json: true },
      positionals: ["url"],
      rest: ["-c", "select 1"],
    },
  );
  assert.equal(parse(command, ["--offset", "-90s"]).values.offset, "-90s"); // not a flag: a value
  assert.equal(parse(command, ["-h"]).values.help, true);
  const usage = (argv: string[], pattern: RegExp) =>
    assert.throws(() => parse(command, argv), (e: Error) => {
      assert.equal(e.name, "UsageError");
      assert.match(e.message, pattern);
      return true;
    });
  usage(["--port"], /^option --port PORT needs a value$/);
  usage(["--port", "--json"], /needs a value, got the option --json \(for a value that starts/);
  usage(["--json=yes"], /^option --json takes no value$/);
  usage(["a", "b"], /^unexpected argument "b"$/);
  usage(["--prot", "1"], /^unknown option --prot: did you mean --port\?/);
});
