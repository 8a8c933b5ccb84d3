// The serverless examples (examples/serverless/) as a Lambda runtime would use them, through the
// IAM gateway to a real PostgreSQL: imported once per driver (the module scope is the execution
// environment), a cold invocation on the connection opened during init, a warm one reusing it, one
// cold-start log line; then the negative controls: tokens the gateway rejects fail an invocation
// with a clear error (in a warm environment whose connection dropped, and at a cold start in a fresh
// process with a wrong key). The Bun.SQL example runs on Bun only.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import type { Gateway } from "../../src/gateway/mod.ts";
import { withEnv } from "../_env.ts";
import { closeTestGateways, RDS, testGateway } from "../_gateway.ts";
import { runtimeCommand } from "../_runtime.ts";
import { ca } from "../fixtures/tls.ts";

const KEYS = { accessKeyId: "AKIDPGIAMSERVERLESS", secretAccessKey: "pg-iam/serverless/secret" };
const MINUTE = 60_000;
const BUN = (globalThis as { Bun?: { SQL?: unknown } }).Bun?.SQL !== undefined;
const dir = mkdtempSync(join(tmpdir(), "pg-iam-serverless-test-"));
const CA_FILE = join(dir, "ca.pem");
writeFileSync(CA_FILE, ca);

interface Example {
  handler(event: { id?: number }): Promise<{ id: number; at: Date }>;
}

/** postgres.js and Bun.SQL read their `onclose` option from `sql.options` at each close. */
type WithOnclose = { options: { onclose?: (...args: unknown[]) => void } };

/**
 * Resolves at the client's next connection close, as it sees it: its own `onclose`, hooked from
 * outside since the example made the client (the example's own hook still runs).
 */
function nextOnclose(sql: WithOnclose): Promise<void> {
  const own = sql.options.onclose;
  return new Promise((resolve) => {
    sql.options.onclose = (...args) => {
      sql.options.onclose = own;
      own?.(...args);
      resolve();
    };
  });
}

// Literal specifiers, so that `deno check tests/` checks the examples too.
const EXAMPLES = {
  postgres: {
    file: "postgres.ts",
    load: () => import("../../examples/serverless/postgres.ts"),
    close: (m: Record<string, unknown>) =>
      (m as { sql: { end(o: object): Promise<void> } })
        .sql.end({ timeout: 0 }),
    closed: (m: Record<string, unknown>) => nextOnclose((m as { sql: WithOnclose }).sql),
  },
  pg: {
    file: "pg.ts",
    load: () => import("../../examples/serverless/pg.ts"),
    close: (m: Record<string, unknown>) => (m as { pool: { end(): Promise<void> } }).pool.end(),
    closed: (m: Record<string, unknown>) =>
      new Promise<void>((resolve) =>
        (m as { pool: { once(e: "remove", f: () => void): void } }).pool.once("remove", resolve)
      ),
  },
  bun: {
    file: "bun.ts",
    load: () => import("../../examples/serverless/bun.ts"),
    close: (m: Record<string, unknown>) =>
      (m as { sql: { close(o: object): Promise<void> } }).sql.close({ timeout: 0 }),
    closed: (m: Record<string, unknown>) => nextOnclose((m as { sql: WithOnclose }).sql),
  },
} as const;
type Driver = keyof typeof EXAMPLES;

const loaded = new Map<Driver, { module: Example & Record<string, unknown>; gateway: Gateway }>();
after(async () => {
  await Promise.all(
    [...loaded].map(([d, { module }]) => EXAMPLES[d].close(module).catch(() => {})),
  );
  await closeTestGateways();
  rmSync(dir, { recursive: true, force: true });
});

/** The connection URL of `g`: connect to 127.0.0.1, sign for the endpoint, trust the test CA. */
const urlOf = (g: Gateway) =>
  `postgres://app@127.0.0.1:${g.port}/postgres?iam_host=${RDS}&iam_port=5432` +
  `&sslrootcert=${CA_FILE}`;

/** A Lambda-like environment: no PG* or AWS_* but the function role's keys, and the URL. */
function lambdaEnv(
  g: Gateway,
  keys: typeof KEYS = KEYS,
): Record<string, string | undefined> {
  const unset = Object.fromEntries(
    Object.keys(process.env).filter((k) => /^(PG|AWS_)|DATABASE_URL$/.test(k))
      .map((k) => [k, undefined]),
  );
  return {
    ...unset,
    AWS_ACCESS_KEY_ID: keys.accessKeyId,
    AWS_SECRET_ACCESS_KEY: keys.secretAccessKey,
    DATABASE_URL: urlOf(g),
  };
}

/** Runs `fn` in the example's environment, with what it logs through console.log. */
function inLambda<T>(g: Gateway, fn: (logs: string[]) => Promise<T>): Promise<T> {
  return withEnv(lambdaEnv(g), async () => {
    const logs: string[] = [];
    const log = console.log;
    console.log = (...args: unknown[]) => void logs.push(args.map(String).join(" "));
    try {
      return await fn(logs);
    } finally {
      console.log = log;
    }
  });
}

const options = (driver: Driver) => ({
  skip: driver === "bun" && !BUN ? "Bun.SQL is Bun's own client" : false,
  timeout: 60_000,
});

for (const driver of Object.keys(EXAMPLES) as Driver[]) {
  const { file } = EXAMPLES[driver];

  test(
    `examples/serverless/${file}: a cold invocation answers on the connection opened during init, a warm one reuses it, and one JSON line logs the cold start`,
    options(driver),
    async () => {
      const g = await testGateway(KEYS);
      await inLambda(g, async (logs) => {
        const module = await EXAMPLES[driver].load() as unknown as
          & Example
          & Record<string, unknown>;
        loaded.set(driver, { module, gateway: g });
        assert.equal(g.stats.accepted, 1, "the connection opens during init");
        assert.deepEqual(logs, [], "nothing logged before the first invocation");

        const cold = await module.handler({ id: 7 });
        assert.equal(cold.id, 7);
        assert.ok(cold.at instanceof Date);
        const warm = await module.handler({ id: 8 });
        assert.equal(warm.id, 8);
        assert.equal(g.stats.accepted, 1, "warm invocations reuse the connection");
        assert.equal(g.stats.rejected, 0);

        assert.equal(logs.length, 1, `one line per cold start, got ${logs.length}`);
        const line = JSON.parse(logs[0]);
        assert.equal(line.message, "cold start");
        assert.deepEqual(line.prewarmErrors, []);
        assert.ok(line.prewarmMs > 0 && line.firstQueryMs > 0);
        if (driver === "bun") {
          assert.equal(line.tokens.length, 1);
          assert.ok(line.tokens[0].credentialsMs >= 0 && line.tokens[0].signMs >= 0);
        } else {
          assert.equal(line.connects.length, 1);
          const c = line.connects[0];
          assert.equal(c.ok, true);
          assert.equal(c.attempts, 1);
          for (const step of ["credentialsMs", "signMs", "connectMs", "tlsMs", "authMs"]) {
            assert.ok(c[step] >= 0 && c[step] <= c.totalMs, `${step} ${c[step]} of ${c.totalMs}`);
          }
          assert.ok(c.tlsMs > 0 && c.authMs > 0, "TLS and the gateway's IAM check are timed");
        }
        assert.doesNotMatch(logs[0], /X-Amz-Signature|Action=connect|pg-iam\/serverless\/secret/);
      });
    },
  );

  test(
    `examples/serverless/${file}: negative control: once its connection drops, a token the gateway rejects (clock 20 minutes ahead) fails the invocation clearly; with the clock back it answers`,
    options(driver),
    async () => {
      const example = loaded.get(driver);
      assert.ok(example, "the example loaded in the previous test");
      const { module, gateway: g } = example;
      await inLambda(g, async (logs) => {
        const closed = EXAMPLES[driver].closed(module);
        assert.equal(g.disconnectAll(), 1);
        await closed; // the client saw its connection close: none is dead but thought open
        g.clockOffsetMs = 20 * MINUTE;
        await assert.rejects(module.handler({ id: 9 }), (e: Error & { errno?: string }) => {
          if (driver === "bun") {
            assert.equal(e.errno, "28P01"); // Bun.SQL reports the server's refusal as it is
            assert.match(e.message, /PAM authentication failed for user "app"/);
          } else {
            assert.equal(e.name, "IamAuthError");
            assert.match(e.message, /clock/);
          }
          assert.doesNotMatch(e.message, /X-Amz-Signature|Action=connect/);
          return true;
        });
        assert.ok((g.stats.rejections.expired ?? 0) >= 1, JSON.stringify(g.stats.rejections));
        g.clockOffsetMs = 0;
        assert.equal((await module.handler({ id: 10 })).id, 10);
        assert.deepEqual(logs, [], "the cold-start line is not logged again");
      });
    },
  );

  test(
    `examples/serverless/${file}: negative control: a cold start in a fresh process with a wrong secret key logs the refused connect, and the invocation fails`,
    options(driver),
    async () => {
      const g = await testGateway(KEYS);
      const wrong = { ...KEYS, secretAccessKey: "not-the-gateway-key" };
      const lines = await child(driver, lambdaEnv(g, wrong));
      const cold = lines.find((l) => l.message === "cold start");
      assert.ok(cold, `no cold-start line in ${JSON.stringify(lines)}`);
      assert.equal(cold.prewarmErrors.length, 1);
      if (driver !== "bun") {
        assert.equal(cold.connects[0].ok, false);
        assert.equal(cold.connects[0].step, "auth");
        assert.equal(cold.connects[0].tokenSent, true);
        assert.match(cold.connects[0].error, /IAM|PAM/);
      }
      const invocation = lines.find((l) => l.invocation)?.invocation;
      assert.equal(invocation?.ok, false);
      assert.match(
        invocation.error,
        driver === "bun" ? /PAM authentication failed/ : /IamAuthError/,
      );
      assert.ok((g.stats.rejections.signature ?? 0) >= 1, JSON.stringify(g.stats.rejections));
      assert.equal(g.stats.accepted, 0);
      assert.doesNotMatch(JSON.stringify(lines), /not-the-gateway-key|X-Amz-Signature/);
    },
  );
}

/** Runs one invocation in a fresh process of this runtime (bench/_serverless_child.ts). */
function child(driver: Driver, env: Record<string, string | undefined>) {
  const script = fileURLToPath(new URL("../../bench/_serverless_child.ts", import.meta.url));
  const [cmd, args] = runtimeCommand(script);
  const base = Object.fromEntries(Object.entries(process.env).filter(([, v]) => v !== undefined));
  const proc = spawn(cmd, [...args, driver, "iam"], {
    cwd: fileURLToPath(new URL("../..", import.meta.url)),
    env: { ...base, ...env } as Record<string, string>,
  });
  proc.stdin.end("invoke\n");
  let out = "", err = "";
  proc.stdout.setEncoding("utf8").on("data", (t: string) => out += t);
  proc.stderr.setEncoding("utf8").on("data", (t: string) => err += t);
  // deno-lint-ignore no-explicit-any
  return new Promise<any[]>((resolve, reject) =>
    proc.on(
      "close",
      (code) =>
        code === 0
          ? resolve(out.trim().split("\n").map((l) => JSON.parse(l)))
          : reject(new Error(`the child exited ${code}: ${err}`)),
    )
  );
}
