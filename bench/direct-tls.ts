// What sslnegotiation=direct saves per connect at a realistic round trip: pg-iam (postgres.js)
// connecting to a real PostgreSQL 18 with TLS, through a loopback relay that delays every chunk
// by --delay ms each way, with an SSLRequest first (sslnegotiation=postgres, the default) against
// direct TLS. Rounds interleave the two (alternating which goes first); each connect is a fresh
// client: TCP, (SSLRequest,) TLS 1.3, startup and trust login, timed by pg-iam's onConnect.
//
//   node_modules/.bin/tsx bench/direct-tls.ts [--rounds 20] [--delay 15]
//   (also: deno run -A bench/direct-tls.ts, bun bench/direct-tls.ts)
//
// PostgreSQL 18: PGIAM_TEST_PG18=host:port (TLS on with the test certificate), or started here
// from the npm binaries (tests/_postgres_server.mjs).

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { type ConnectEvent, iamPostgres } from "../src/postgres/mod.ts";
import { upstreamPostgres18 } from "../tests/_postgres.ts";
import { ca } from "../tests/fixtures/tls.ts";

const arg = (name: string, fallback: number) => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
};
const ROUNDS = arg("--rounds", 20);
const DELAY = arg("--delay", 15);

/** A TCP relay to `port` that holds every chunk `delay` ms, in order, in each direction. */
async function delayRelay(port: number, delay: number): Promise<net.Server> {
  const forward = (from: net.Socket, to: net.Socket) => {
    from.on(
      "data",
      (chunk: Uint8Array) => setTimeout(() => to.destroyed || to.write(chunk), delay),
    );
    from.on("end", () => setTimeout(() => to.end(), delay));
  };
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: "127.0.0.1", port });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    for (const s of [client, upstream]) {
      s.on("error", () => {});
      s.on("close", () => (client.destroy(), upstream.destroy()));
    }
    forward(client, upstream);
    forward(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server;
}

const server18 = await upstreamPostgres18();
const relay = await delayRelay(server18.port, DELAY);
const relayPort = (relay.address() as net.AddressInfo).port;
const dir = mkdtempSync(join(tmpdir(), "pg-iam-bench-direct-"));
const caFile = join(dir, "ca.pem");
writeFileSync(caFile, ca);

type Mode = "postgres" | "direct";

/** One connection start (fresh client, one query); pg-iam's timings of it. */
async function connectOnce(mode: Mode): Promise<ConnectEvent["timings"]> {
  let event: ConnectEvent | undefined;
  const sql = iamPostgres(
    `postgres://app@127.0.0.1:${relayPort}/postgres?sslmode=verify-full` +
      `&sslrootcert=${encodeURIComponent(caFile)}&sslnegotiation=${mode}`,
    {
      signingHostname: "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com",
      signingPort: 5432,
      credentials: { accessKeyId: "AKIDBENCH", secretAccessKey: "bench/secret/key" },
      max: 1,
      onConnect: (e) => (event = e),
    },
  );
  try {
    await sql`select 1`;
  } finally {
    await sql.end({ timeout: 0 });
  }
  if (!event?.ok) throw new Error(`connect (${mode}) failed: ${event?.error?.message}`);
  return event.timings;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

// Warm-up: credentials, TLS and driver code paths, both modes.
await connectOnce("postgres");
await connectOnce("direct");

const results: Record<Mode, { total: number[]; tls: number[] }> = {
  postgres: { total: [], tls: [] },
  direct: { total: [], tls: [] },
};
const ratios: number[] = [];
const saved: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const order: Mode[] = round % 2 ? ["direct", "postgres"] : ["postgres", "direct"];
  const t: Partial<Record<Mode, ConnectEvent["timings"]>> = {};
  for (const mode of order) {
    t[mode] = await connectOnce(mode);
    results[mode].total.push(t[mode]!.totalMs);
    results[mode].tls.push(t[mode]!.tlsMs);
  }
  ratios.push(t.direct!.totalMs / t.postgres!.totalMs);
  saved.push(t.postgres!.totalMs - t.direct!.totalMs);
}

relay.close();
rmSync(dir, { recursive: true, force: true });

const runtime = "Deno" in globalThis
  ? `Deno ${(globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno}`
  : "Bun" in globalThis
  ? `Bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`
  : `Node ${process.version}`;
const f = (n: number) => n.toFixed(1);
console.log(
  `## sslnegotiation=direct vs SSLRequest (${runtime}, ${ROUNDS} interleaved rounds, ` +
    `+${DELAY} ms each way = ${2 * DELAY} ms round trip)\n`,
);
console.log("| negotiation | connect (median ms) | of which TLS step (median ms) |");
console.log("|---|---:|---:|");
for (const mode of ["postgres", "direct"] as Mode[]) {
  console.log(
    `| ${mode === "postgres" ? "postgres (SSLRequest)" : "direct"} | ${
      f(median(results[mode].total))
    } | ${f(median(results[mode].tls))} |`,
  );
}
console.log(
  `\ndirect/postgres connect time: ${median(ratios).toFixed(3)} (median of per-round ratios); ` +
    `saved per connect: ${f(median(saved))} ms (median of per-round differences; min ${
      f(Math.min(...saved))
    }, max ${f(Math.max(...saved))})`,
);
process.exit(0);
