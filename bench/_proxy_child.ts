// A relay of bench/proxy.ts in its own process, so that its CPU is not the client's: the IAM
// gateway (`gateway`, in front of PostgreSQL) or `pg-iam proxy`'s startProxy() (`proxy`, in front
// of that gateway), on whichever runtime runs this file (Node via tsx, Deno, Bun).
//
//   <runtime> bench/_proxy_child.ts gateway <pg host> <pg port> <pg user> [plain]
//   <runtime> bench/_proxy_child.ts proxy <gateway port> <CA file> [plain]
//
// `plain`: the gateway without TLS, the proxy to it with sslmode=disable (to tell the cost of TLS
// from the cost of the hop; never a real setup, tokens would cross in plaintext).
//
// It prints `READY {"host","port","pid","runtime"}` once it listens, then answers each line on
// stdin: `cpu` with `CPU {"user","system"}` (process.cpuUsage(), microseconds, all threads),
// `stats` with `STATS {...}` (the proxy's or gateway's counters); it closes and exits on `close`
// or when stdin ends (its parent gone).
import process from "node:process";
import { createInterface } from "node:readline";
import { startGateway } from "../src/gateway/mod.ts";
import { startProxy } from "../src/proxy/mod.ts";
import { cert, key } from "../tests/fixtures/tls.ts";

/** The endpoint the test certificate names, which the proxy signs for and the gateway verifies. */
export const ENDPOINT = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";
/** The keys the proxy signs with and the gateway accepts. */
export const CREDENTIALS = { accessKeyId: "AKIDBENCH", secretAccessKey: "bench/secret/key" };

const runtime = "Deno" in globalThis
  ? `Deno ${(globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno}`
  : "Bun" in globalThis
  ? `Bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`
  : `Node ${process.versions.node}`;

async function main(): Promise<void> {
  const [role, ...args] = process.argv.slice(2);
  let relay: { host: string; port: number; stats: unknown; close(): Promise<void> };
  if (role === "gateway") {
    const [host, port, user, plain] = args;
    relay = await startGateway({
      endpoint: ENDPOINT,
      credentials: CREDENTIALS,
      upstream: { host, port: Number(port), user },
      tls: plain === "plain" ? false : { cert, key },
      maxConnections: 1000,
    });
  } else if (role === "proxy") {
    const [port, caFile, plain] = args;
    relay = await startProxy({
      connectionString: `postgres://127.0.0.1:${port}?iam_host=${ENDPOINT}&iam_port=5432` +
        (plain === "plain" ? "&sslmode=disable" : `&sslrootcert=${caFile}`),
      dangerouslyDisableTls: plain === "plain",
      credentials: CREDENTIALS,
      maxConnections: 1000,
    });
  } else {
    throw new Error(`usage: _proxy_child.ts gateway|proxy ..., not ${role}`);
  }
  const out = (line: string) => process.stdout.write(line + "\n");
  out(`READY ${JSON.stringify({ host: relay.host, port: relay.port, pid: process.pid, runtime })}`);
  const done = async () => {
    await relay.close();
    process.exit(0);
  };
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (line === "cpu") out(`CPU ${JSON.stringify(process.cpuUsage())}`);
    else if (line === "stats") out(`STATS ${JSON.stringify(relay.stats)}`);
    else if (line === "close") void done();
  });
  lines.on("close", () => void done());
}

// bench/proxy.ts imports the constants above; run as a script, it is the relay.
if (/_proxy_child\.ts$/.test(process.argv[1] ?? "")) await main();
