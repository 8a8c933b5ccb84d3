// The serverless pattern, measured: the example Lambda handlers of examples/serverless/ (a client
// at module scope, an awaited prewarm, one cold-start log line), invoked cold (a fresh process of
// this runtime per invocation: load the handler, one invocation, exit) and warm (one process
// serving invocation after invocation), rounds interleaving the two and rotating the drivers.
//
//   node_modules/.bin/tsx bench/serverless.ts [--runs 15] [--warm 5] [--drivers postgres,pg,bun]
//     [--kinds iam,static-gw,static]
//   (also: deno run -A bench/serverless.ts, bun bench/serverless.ts; bun is Bun's own client)
//
// Kinds, per driver:
// - iam: the example handler, through the IAM gateway (TLS, every token's SigV4 signature and
//   expiry verified) to PostgreSQL;
// - static-gw: the same pattern on the plain driver with one token signed up front as a static
//   password, through the same gateway: what pg-iam itself adds (credentials, signing, its socket);
// - static: the plain driver with a static password straight to PostgreSQL (TLS when the server
//   offers it): no IAM at all.
//
// Upstream: PGIAM_TEST_PG=host:port, or a Debian PostgreSQL started here with TLS.

import process from "node:process";
import { spawn } from "node:child_process";
import { connect } from "node:net";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { rdsToken } from "../mod.ts";
import { startGateway } from "../src/gateway/mod.ts";
import { parseTestPg } from "../tests/_postgres.ts";
import { startPostgres } from "../tests/_postgres_server.mjs";
import { ca, cert, key } from "../tests/fixtures/tls.ts";

const arg = (name: string, fallback: string) => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : fallback;
};
const RUNS = Number(arg("--runs", "15"));
const WARM = Number(arg("--warm", "5")); // warm invocations per round
const g = globalThis as { Deno?: { execPath(): string; version: { deno: string } }; Bun?: unknown };
const runtime = g.Deno
  ? `Deno ${g.Deno.version.deno}`
  : g.Bun
  ? `Bun ${process.versions.bun}`
  : `Node ${process.versions.node}`;
const DRIVERS = arg("--drivers", g.Bun ? "postgres,pg,bun" : "postgres,pg").split(",");
const KINDS = arg("--kinds", "iam,static-gw,static").split(",") as Kind[];
type Kind = "iam" | "static-gw" | "static";
const NAMES: Record<string, string> = {
  postgres: "postgres.js",
  pg: "node-postgres",
  bun: "Bun.SQL",
};
for (const d of DRIVERS) if (!(d in NAMES)) throw new Error(`unknown driver ${d}`);
if (DRIVERS.includes("bun") && !g.Bun) throw new Error("--drivers bun needs Bun (Bun.SQL)");

const root = fileURLToPath(new URL("..", import.meta.url));
const CHILD = join(root, "bench/_serverless_child.ts");
const command: [string, string[]] = g.Deno
  ? [g.Deno.execPath(), ["run", "-A", "--quiet", CHILD]]
  : g.Bun
  ? [process.execPath, [CHILD]]
  : [process.execPath, ["--import", "tsx", CHILD]];

// ---- PostgreSQL, the gateway, the children's environments ----
const dir = mkdtempSync(join(tmpdir(), "pg-iam-serverless-"));
const CA_FILE = join(dir, "ca.pem");
writeFileSync(CA_FILE, ca);
let stopPostgres = () => {};
const upstream = process.env.PGIAM_TEST_PG
  ? parseTestPg(process.env.PGIAM_TEST_PG)
  : await (async () => {
    const started = await startPostgres({ ssl: { cert, key } });
    stopPostgres = started.stop;
    return started;
  })();
const upstreamTls = await offersTls(upstream.host, upstream.port);
const endpoint = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";
const credentials = { accessKeyId: "AKIDSERVERLESSBENCH", secretAccessKey: "serverless/bench/key" };
const gateway = await startGateway({
  endpoint,
  credentials,
  upstream: { host: upstream.host, port: upstream.port, user: upstream.user },
  tls: { cert, key },
  maxConnections: 1000,
});
const base = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !/^(PG|AWS_)/.test(k) || k === "PGIAM_TEST_PG"),
);
const token = () => rdsToken({ hostname: endpoint, username: "app", credentials });
async function envOf(kind: Kind): Promise<Record<string, string | undefined>> {
  if (kind === "iam") {
    const url = `postgres://app@127.0.0.1:${gateway.port}/postgres?iam_host=${endpoint}` +
      `&iam_port=5432&sslrootcert=${CA_FILE}`;
    return {
      ...base,
      AWS_ACCESS_KEY_ID: credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
      // Bun.SQL would read DATABASE_URL itself (see examples/serverless/bun.ts).
      DATABASE_URL: url,
    };
  }
  const config = kind === "static-gw"
    ? {
      url: `postgres://app@127.0.0.1:${gateway.port}/postgres`,
      password: await token(), // valid 15 minutes: signed again for each environment
      ca,
      servername: endpoint,
    }
    : {
      url: `postgres://${upstream.user}@${upstream.host}:${upstream.port}/postgres`,
      password: "a-static-password",
      ...(upstreamTls ? { ca, servername: "localhost" } : {}),
    };
  return { ...base, PGIAM_BENCH_STATIC: JSON.stringify(config) };
}

/** Whether the server answers an SSLRequest with "S". */
function offersTls(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, host, () => {
      socket.write(new Uint8Array([0, 0, 0, 8, 4, 210, 22, 47]));
    });
    socket.once("data", (data) => {
      resolve(data[0] === 0x53);
      socket.destroy();
    });
    socket.once("error", () => resolve(false));
  });
}

// ---- an execution environment: a child process speaking JSON lines ----
interface Env {
  startMs: number; // spawn → handler loaded
  loadMs: number; // the child's own import (or setup) time, connect included
  prewarmMs: number;
  coldLog?: ColdLog;
  invoke(): Promise<{ ms: number; wallMs: number }>;
  end(): void;
}
interface ColdLog {
  prewarmMs: number;
  firstQueryMs: number;
  prewarmErrors: string[];
  connects?: Record<string, number | boolean>[];
  tokens?: { credentialsMs: number; signMs: number }[];
}

async function environment(driver: string, kind: Kind): Promise<Env> {
  const spawned = performance.now();
  const child = spawn(command[0], [...command[1], driver, kind === "iam" ? "iam" : "static"], {
    cwd: root,
    env: await envOf(kind),
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (t: string) => stderr += t);
  const waiting: ((line: Record<string, unknown>) => void)[] = [];
  const failed = new Promise<never>((_, reject) =>
    child.on(
      "exit",
      (code) => reject(new Error(`${driver}/${kind} child exited ${code}: ${stderr}`)),
    )
  );
  failed.catch(() => {});
  let buffer = "";
  const env = {} as Env;
  child.stdout!.setEncoding("utf8").on("data", (text: string) => {
    buffer += text;
    for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
      const line = JSON.parse(buffer.slice(0, nl));
      buffer = buffer.slice(nl + 1);
      if (line.message === "cold start") env.coldLog = line;
      else waiting.shift()?.(line);
    }
  });
  const next = () =>
    Promise.race([failed, new Promise<Record<string, unknown>>((r) => waiting.push(r))]);
  const ready = (await next()).ready as { loadMs: number; prewarmMs?: number };
  env.startMs = performance.now() - spawned;
  env.loadMs = ready.loadMs;
  env.prewarmMs = ready.prewarmMs ?? NaN;
  env.invoke = async () => {
    const t = performance.now();
    child.stdin!.write("invoke\n");
    const r = (await next()).invocation as { ms: number; ok: boolean; error?: string };
    if (!r.ok) throw new Error(`${driver}/${kind}: the invocation failed: ${r.error}`);
    return { ms: r.ms, wallMs: performance.now() - t };
  };
  env.end = () => child.stdin!.end();
  return env;
}

// ---- the run ----
type Series = Record<string, number[]>;
const results = new Map<string, Series>();
const push = (key: string, name: string, value: number | undefined) => {
  if (value === undefined || Number.isNaN(value)) return;
  const s = results.get(key) ?? {};
  (s[name] ??= []).push(value);
  results.set(key, s);
};
const cases = DRIVERS.flatMap((d) => KINDS.map((k) => [d, k] as const));
const warmEnvs = new Map<string, Env>();
for (const [d, k] of cases) {
  const env = await environment(d, k);
  await env.invoke(); // its cold invocation: not counted
  warmEnvs.set(`${d}/${k}`, env);
}
console.error(
  `${runtime}: ${RUNS} rounds of ${cases.length} cold environments + ${WARM} warm ` +
    `invocations each`,
);
for (let round = 0; round <= RUNS; round++) {
  const order = cases.map((_, i) => cases[(i + round) % cases.length]);
  for (const [d, k] of order) {
    const key = `${d}/${k}`;
    const env = await environment(d, k);
    const first = await env.invoke();
    env.end();
    for (let i = 0; i < WARM; i++) {
      const warm = await warmEnvs.get(key)!.invoke();
      if (round > 0) push(key, "warm", warm.ms);
    }
    if (round === 0) continue; // round 0 warms up the machine (and tsx's cache)
    push(key, "start", env.startMs);
    push(key, "load", env.loadMs);
    push(key, "first", first.ms);
    push(key, "cold", env.startMs + first.wallMs);
    const log = env.coldLog;
    push(key, "prewarm", log?.prewarmMs ?? env.prewarmMs);
    if (log?.prewarmErrors.length) throw new Error(`${key}: ${log.prewarmErrors.join("; ")}`);
    const c = log?.connects?.[0];
    if (c) {
      for (const step of ["credentialsMs", "signMs", "connectMs", "tlsMs", "authMs", "totalMs"]) {
        push(key, step, c[step] as number);
      }
    }
    const t = log?.tokens?.[0];
    if (t) {
      push(key, "credentialsMs", t.credentialsMs);
      push(key, "signMs", t.signMs);
    }
  }
  console.error(`round ${round}/${RUNS}`);
}
for (const env of warmEnvs.values()) env.end();
await gateway.close();
stopPostgres();
rmSync(dir, { recursive: true, force: true });

// ---- the report ----
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(p * xs.length) - 1)];
const ms = (x: number) => x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
const cell = (s: Series | undefined, name: string) =>
  s?.[name]?.length ? `${ms(pct(s[name], 0.5))} / ${ms(pct(s[name], 0.9))}` : "–";
const LABEL: Record<Kind, string> = {
  iam: "IAM (example handler, gateway)",
  "static-gw": "static token (gateway)",
  static: `static password (direct${upstreamTls ? ", TLS" : ", no TLS"})`,
};
console.log(
  `Serverless invocations, ${runtime}, ${RUNS} cold environments and ${RUNS * WARM} warm ` +
    `invocations per row, interleaved; ms, median / p90. Upstream PostgreSQL at ` +
    `${upstream.host}:${upstream.port}${upstreamTls ? " (TLS)" : " (no TLS)"}.\n`,
);
console.log(
  "| driver | kind | spawn → ready | load (import + connect) | connect (prewarm) | first query | " +
    "cold: spawn → answer | warm query |",
);
console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const [d, k] of cases) {
  const s = results.get(`${d}/${k}`);
  console.log(
    `| ${NAMES[d]} | ${LABEL[k]} | ${cell(s, "start")} | ${cell(s, "load")} | ` +
      `${cell(s, "prewarm")} | ${cell(s, "first")} | ${cell(s, "cold")} | ${cell(s, "warm")} |`,
  );
}
console.log(
  "\nIAM connect, from the handler's cold-start log line (onConnect; Bun.SQL: onToken):\n",
);
console.log(
  "| driver | credentials | sign | tcp | tls | auth (gateway check + upstream login) | total |",
);
console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const d of DRIVERS) {
  const s = results.get(`${d}/iam`);
  if (!s) continue;
  console.log(
    `| ${NAMES[d]} | ${cell(s, "credentialsMs")} | ${cell(s, "signMs")} | ${
      cell(s, "connectMs")
    } | ` +
      `${cell(s, "tlsMs")} | ${cell(s, "authMs")} | ${cell(s, "totalMs")} |`,
  );
}
const ratio = (d: string, base: Kind, name: string) => {
  const a = results.get(`${d}/iam`)?.[name], b = results.get(`${d}/${base}`)?.[name];
  return a?.length && b?.length ? (pct(a, 0.5) / pct(b, 0.5)).toFixed(2) : "–";
};
for (const base of ["static-gw", "static"] as const) {
  if (!KINDS.includes("iam") || !KINDS.includes(base)) continue;
  console.log(`\nIAM / ${LABEL[base]}, ratio of medians:\n`);
  console.log(
    "| driver | spawn → ready | connect (prewarm) | first query | cold: spawn → answer | warm query |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
  for (const d of DRIVERS) {
    console.log(
      `| ${NAMES[d]} | ${ratio(d, base, "start")} | ${ratio(d, base, "prewarm")} | ` +
        `${ratio(d, base, "first")} | ${ratio(d, base, "cold")} | ${ratio(d, base, "warm")} |`,
    );
  }
}
process.exit(0);
