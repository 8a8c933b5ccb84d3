// Connect cost on workerd (the Cloudflare Workers runtime, from npm): a Worker request that opens
// a postgres.js pool, runs one query per connection, and ends the pool, through iamPostgres()
// (pg-iam's socket on cloudflare:sockets: credentials from bindings, a token signed per
// connection or reused, the SSLRequest, startTls(), the password exchange, then the hand-over)
// against plain postgres.js on workerd given one static password (a token signed up front;
// postgres.js's own cloudflare:sockets socket does TLS and the login). Both go through the same
// IAM gateway, which verifies every token, to the same PostgreSQL, and both have their TLS
// verified by workerd against the test CA. Rounds alternate the two, so machine noise hits both.
//
//   node_modules/.bin/tsx bench/workerd.ts [--rounds 21] [--pools 1,10]
//   (also: deno run -A bench/workerd.ts, bun bench/workerd.ts: the harness only sends requests)
//
// The Worker is tests/fixtures/workerd-postgres.ts, served by tests/fixtures/workerd-server.ts.

import process from "node:process";
import { createServer } from "node:net";
import { dsqlToken } from "../mod.ts";
import { startGateway } from "../src/gateway/mod.ts";
import { upstreamPostgres } from "../tests/_postgres.ts";
import { cert, key } from "../tests/fixtures/tls.ts";
import { KEYS, startWorkerd, workerdConfig } from "../tests/fixtures/workerd-server.ts";

const arg = (name: string, fallback: string) => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : fallback;
};
const ROUNDS = Number(arg("--rounds", "21"));
const POOLS = arg("--pools", "1,10").split(",").map(Number);
const endpoint = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";

const upstream = await upstreamPostgres();
const gateway = await startGateway({
  endpoint,
  credentials: KEYS,
  upstream: { host: upstream.host, port: upstream.port, user: "postgres" },
  tls: { cert, key },
});
const port = await new Promise<number>((resolve) => {
  const server = createServer().listen(0, "127.0.0.1", () => {
    const { port } = server.address() as { port: number };
    server.close(() => resolve(port));
  });
});
const dir = new URL("../.tmp/bench-workerd", import.meta.url).pathname;
let log = "";
const workerd = await startWorkerd(
  workerdConfig(dir, [{ name: "bench", port, trustTestCa: true }]),
  [port],
  (text) => log += text,
);

interface Answer {
  ok: boolean;
  pids?: number[];
  ms?: number;
  error?: { message: string };
  connects: Array<{ timings: Record<string, number> }>;
}

/** One request: a pool of `pool` filled at once, one query each, ended; wall time seen here. */
async function request(job: Record<string, unknown>, pool: number): Promise<[number, Answer]> {
  const t = performance.now();
  const res = await fetch(`http://127.0.0.1:${port}/`, {
    method: "POST",
    body: JSON.stringify({
      host: gateway.host,
      port: gateway.port,
      endpoint,
      user: "app",
      queries: pool,
      max: pool,
      ...job,
    }),
  });
  const answer = await res.json() as Answer;
  const ms = performance.now() - t;
  if (!answer.ok) throw new Error(`${JSON.stringify(answer.error)}\n${log}`);
  if (new Set(answer.pids).size !== pool) {
    throw new Error(`the request opened ${new Set(answer.pids).size} connections, not ${pool}`);
  }
  return [ms, answer];
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const runtime = (globalThis as { Deno?: unknown }).Deno
  ? "Deno"
  : (globalThis as { Bun?: unknown }).Bun
  ? "Bun"
  : "Node";
console.log(
  `workerd connect cost: ${ROUNDS} rounds after one warm-up, alternating; harness on ${runtime}`,
);
console.log(
  "| pool | static password: request / in Worker | iamPostgres: request / in Worker | IAM / static (request) | IAM / static (in Worker) | iamPostgres connect p50 (auth / total) |",
);
console.log("| ---: | ---: | ---: | ---: | ---: | ---: |");
try {
  for (const pool of POOLS) {
    const wall = { iam: [] as number[], static: [] as number[] };
    const inside = { iam: [] as number[], static: [] as number[] };
    const ratios: number[] = [];
    const insideRatios: number[] = [];
    const auth: number[] = [];
    const total: number[] = [];
    for (let round = 0; round <= ROUNDS; round++) {
      const password = await dsqlToken({
        hostname: endpoint,
        username: "app",
        credentials: KEYS,
      });
      const runs = [
        ["iam", { client: "iam" }],
        ["static", { client: "static", password, ssl: true }],
      ] as const;
      const order = round % 2 ? runs : [...runs].reverse();
      const got: Record<string, [number, Answer]> = {};
      for (const [name, job] of order) got[name] = await request(job, pool);
      if (round === 0) continue;
      for (const name of ["iam", "static"] as const) {
        wall[name].push(got[name][0]);
        inside[name].push(got[name][1].ms!);
      }
      ratios.push(got.iam[0] / got.static[0]);
      insideRatios.push(got.iam[1].ms! / got.static[1].ms!);
      for (const c of got.iam[1].connects) {
        auth.push(c.timings.authMs);
        total.push(c.timings.totalMs);
      }
    }
    const f = (x: number) => x.toFixed(1);
    console.log(
      `| ${pool} | ${f(median(wall.static))} / ${f(median(inside.static))} ms | ` +
        `${f(median(wall.iam))} / ${f(median(inside.iam))} ms | ` +
        `${median(ratios).toFixed(3)} | ${median(insideRatios).toFixed(3)} | ` +
        `${f(median(auth))} / ${f(median(total))} ms |`,
    );
  }
} finally {
  workerd.kill("SIGKILL");
  await gateway.close();
}
console.log(
  `gateway: ${gateway.stats.accepted} logins accepted, ${gateway.stats.rejected} rejected`,
);
process.exit(0);
