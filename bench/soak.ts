// Gateway soak: the local IAM gateway (in this process, over the tests' Debian PostgreSQL, TLS
// with the test certificate, default limits) under hostile clients and legitimate iamPostgres()
// traffic for a few minutes, sampling the gateway process's memory and descriptors. The clients
// run in a child process of the same runtime, so the figures are the gateway's alone.
//
//   node_modules/.bin/tsx --expose-gc bench/soak.ts [--seconds 180] [--sample 5]
//   node_modules/.bin/deno run -A --v8-flags=--expose-gc bench/soak.ts --seconds 180
//   node_modules/.bin/bun bench/soak.ts --seconds 60
//
// With a collectable heap (--expose-gc; Bun always), each sample collects garbage first, so
// heapUsed and arrayBuffers are what is live. It exits 1 unless every legitimate login succeeded.
// --only legit,ssl,gss,slowloris,connections,malformed,long-user,cancel runs a part of the load.
//
// Hostile clients, all at once, each kind in a loop: SSLRequest and GSSENCRequest floods that
// never read; slowloris connections sending one byte of a startup packet every 5 s; every 10 s a
// flood of 150 connections at once, beyond the limit, held 1.5 s; oversized and malformed startup
// packets; 4,900-character user names with bad tokens, in plaintext and over TLS; random
// CancelRequests. Legitimate: one iamPostgres() connection querying throughout, and every 10 s a
// new iamPostgres() pool of 4 (fresh logins, fresh tokens) running 40 queries, between the
// connection floods: while a flood holds every slot, a new login is refused with 53300 by design,
// as PostgreSQL refuses it beyond max_connections.
//
// --only trickle (not part of the default load) is another scenario: a flood of one-byte trickles
// beside legitimate logins. In alternate 10 s phases, flood on and flood off: 150 connections from
// each of 127.0.0.2 and 127.0.0.3 that send one byte of a startup packet and then nothing (300,
// three times the gateway's old limit of 100 connections, logging in or not), and from 127.0.0.1
// a fresh iamPostgres() login every 250 ms, each one's time recorded with the phase it started
// in. --limits old starts the gateway with the old shared limit instead (100 connections logging
// in, whatever their address): the control.
//
// The server: PGIAM_TEST_PG=host:port, or one started here (tests/_postgres.ts).

import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import net from "node:net";
import process from "node:process";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { startGateway } from "../src/gateway/mod.ts";
import { iamPostgres } from "../src/postgres/mod.ts";
import {
  errorFields,
  MessageReader,
  passwordMessage,
  startupMessage,
} from "../src/connection/pgwire.ts";
import { presign } from "../src/core/sigv4.ts";
import { upstreamPostgres } from "../tests/_postgres.ts";
import { ca, cert, key } from "../tests/fixtures/tls.ts";

const ENDPOINT = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";
const KEY = { accessKeyId: "AKIDSOAK", secretAccessKey: "soak/secret/key/0123456789" };
const CYCLE_MS = 10_000;

const arg = (name: string): string | undefined => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : undefined;
};
const seconds = Number(arg("--seconds") ?? 180);
const sampleSeconds = Number(arg("--sample") ?? 5);
// A subset of the load, to look at one kind alone: legit,ssl,gss,slowloris,connections,malformed,
// long-user,cancel.
const only = arg("--only")?.split(",");
// "old": 100 connections logging in, from any address, as the gateway's one limit was.
const oldLimits = arg("--limits") === "old";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const runtime = "Deno" in globalThis
  ? `Deno ${(globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno}`
  : "Bun" in globalThis
  ? `Bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`
  : `Node ${process.versions.node}`;

// ---------------------------------------------------------------------------------------------
// The gateway's side: start it, start the load, sample, summarize.

interface Sample {
  t: number;
  rss: number;
  heapUsed: number;
  /** Memory of ArrayBuffers (received and sent bytes among them). */
  arrayBuffers: number;
  fds: number;
  /** The most client connections open at once since the previous sample (polled every 100 ms). */
  clients: number;
  /** The most connections logging in at once since the previous sample. */
  startups: number;
  relayed: number;
  /** How many logins stats.logins holds. */
  logins: number;
  accepted: number;
  rejected: number;
}

const g = globalThis as {
  Bun?: { gc(sync: boolean): void };
  Deno?: { execPath(): string };
  gc?: () => void;
};
const collect = g.Bun ? () => g.Bun!.gc(true) : g.gc;

async function soak(): Promise<void> {
  const pg = await upstreamPostgres();
  const gateway = await startGateway({
    endpoint: ENDPOINT,
    credentials: KEY,
    upstream: { host: pg.host, port: pg.port, user: pg.user },
    tls: { cert, key },
    ...(oldLimits ? { maxStartups: 100, maxStartupsPerAddress: 100 } : {}),
  });
  const fds = () => {
    try {
      return readdirSync("/proc/self/fd").length;
    } catch {
      return NaN; // not Linux
    }
  };
  const samples: Sample[] = [];
  const started = Date.now();
  let peak = 0;
  let peakStartups = 0;
  const poll = setInterval(() => {
    peak = Math.max(peak, gateway.clients());
    peakStartups = Math.max(peakStartups, gateway.startups());
  }, 100);
  const sample = async () => {
    // V8 frees dead ArrayBuffers' memory concurrently after a collection: a second one, a moment
    // later, counts only what is live.
    collect?.();
    if (collect) await sleep(100);
    collect?.();
    const m = process.memoryUsage();
    const s: Sample = {
      t: Math.round((Date.now() - started) / 1000),
      rss: m.rss,
      heapUsed: m.heapUsed,
      arrayBuffers: m.arrayBuffers,
      fds: fds(),
      clients: Math.max(peak, gateway.clients()),
      startups: Math.max(peakStartups, gateway.startups()),
      relayed: gateway.connections(),
      logins: gateway.stats.logins.length,
      accepted: gateway.stats.accepted,
      rejected: gateway.stats.rejected,
    };
    peak = peakStartups = 0;
    samples.push(s);
    process.stderr.write(
      `${String(s.t).padStart(4)} s  rss ${mb(s.rss)}  heap ${mb(s.heapUsed)}  ` +
        `arrayBuffers ${mb(s.arrayBuffers)}  fds ${s.fds}  ` +
        `clients ${s.clients}  logging in ${s.startups}  relayed ${s.relayed}  logins kept ${s.logins}  ` +
        `accepted ${s.accepted}  rejected ${s.rejected}\n`,
    );
  };
  await sample();
  const timer = setInterval(sample, sampleSeconds * 1000);

  const self = fileURLToPath(import.meta.url);
  const [cmd, pre] = g.Deno
    ? [g.Deno.execPath(), ["run", "-A", self]]
    : [process.execPath, [...process.execArgv, self]];
  const args = ["--load", String(gateway.port), "--seconds", String(seconds)];
  if (only) args.push("--only", only.join(","));
  const child = spawn(cmd, [...pre, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => (out += s));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  clearInterval(timer);
  clearInterval(poll);
  peak = peakStartups = 0; // the last sample: what is left once the clients are gone
  await sample();
  const report = JSON.parse(out.trim().split("\n").at(-1) ?? "{}") as LoadReport;
  await gateway.close();
  summarize(report, samples, gateway.stats, code);
  const trickleOk = !report.trickle ||
    Object.values(report.trickle).every((p) => p.failures.length === 0);
  process.exit(report.legit.ok === report.legit.attempts && trickleOk ? 0 : 1);
}

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;

function summarize(
  report: LoadReport,
  samples: Sample[],
  stats: { accepted: number; rejected: number; rejections: object; cancels: number },
  code: number | null,
): void {
  const row = (name: string, values: number[], show: (n: number) => string) => {
    const first = values.slice(0, Math.ceil(values.length / 4));
    const last = values.slice(-Math.ceil(values.length / 4));
    const avg = (list: number[]) => list.reduce((a, b) => a + b, 0) / list.length;
    return `| ${name} | ${show(Math.min(...values))} | ${show(Math.max(...values))} | ` +
      `${show(values.at(-1)!)} | ${show(avg(first))} | ${show(avg(last))} |`;
  };
  const { legit } = report;
  const sorted = [...legit.loginMs].sort((a, b) => a - b);
  const pct = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  const kinds = Object.entries(report.hostile).sort(([a], [b]) => a.localeCompare(b));
  const trickle = Object.entries(report.trickle ?? {}).map(([phase, p]) => {
    const ms = [...p.loginMs].sort((a, b) => a - b);
    const at = (q: number) => ms[Math.min(ms.length - 1, Math.floor(q * ms.length))];
    const within = (limit: number) => ms.filter((t) => t <= limit).length;
    return `| ${phase} | ${p.attempts} | ${p.attempts - p.failures.length} | ` +
      `${
        ms.length
          ? `${at(0.5).toFixed(0)} / ${at(0.95).toFixed(0)} / ${ms.at(-1)!.toFixed(0)}`
          : "–"
      } | ` +
      `${within(1000)} | ${p.failures.length ? p.failures.slice(0, 2).join("; ") : "none"} |`;
  });
  const lines = [
    `### ${runtime}, ${seconds} s (load exited ${code})${oldLimits ? ", old limits" : ""}`,
    ...(trickle.length
      ? [
        "",
        "| one-byte trickles | logins | succeeded | ms median / p95 / max | within 1 s | failures |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        ...trickle,
      ]
      : []),
    ...(legit.attempts === 0 && trickle.length ? [] : [
      "",
      `Legitimate logins: **${legit.ok} of ${legit.attempts} succeeded**` +
      (legit.failures.length ? ` (failures: ${legit.failures.slice(0, 3).join("; ")})` : "") +
      `; queries: ${legit.queriesOk} of ${legit.queries} succeeded, ` +
      `the steady connection's ${legit.steadyOk} of ${legit.steady} without a reconnect; ` +
      `login time median ${pct(0.5)?.toFixed(0)} ms, p95 ${pct(0.95)?.toFixed(0)} ms, ` +
      `max ${sorted.at(-1)?.toFixed(0)} ms.`,
    ]),
    "",
    "| hostile kind | connections | outcomes |",
    "| --- | ---: | --- |",
    ...kinds.map(([kind, { connections, outcomes }]) =>
      `| ${kind} | ${connections} | ${
        Object.entries(outcomes).sort(([, a], [, b]) => b - a).map(([o, n]) => `${o}: ${n}`)
          .join(", ")
      } |`
    ),
    "",
    `Gateway counters: ${stats.accepted} logins accepted, ${stats.rejected} rejected ` +
    `(${JSON.stringify(stats.rejections)}), ${stats.cancels} cancel requests relayed.`,
    "",
    `| gateway process (${samples.length} samples, every ${sampleSeconds} s` +
    `${collect ? ", after a collection" : ""}) | min | max | last | ` +
    `mean, first quarter | mean, last quarter |`,
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    row("rss", samples.map((s) => s.rss), mb),
    row("heapUsed", samples.map((s) => s.heapUsed), mb),
    row("arrayBuffers", samples.map((s) => s.arrayBuffers), mb),
    row("open descriptors", samples.map((s) => s.fds), (n) => n.toFixed(0)),
    row("client connections (peak)", samples.map((s) => s.clients), (n) => n.toFixed(0)),
    row("connections logging in (peak)", samples.map((s) => s.startups), (n) => n.toFixed(0)),
    row("relayed connections", samples.map((s) => s.relayed), (n) => n.toFixed(0)),
    row("logins kept in stats.logins", samples.map((s) => s.logins), (n) => n.toFixed(0)),
    "",
  ];
  console.log(lines.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The clients' side (the child process).

interface Kind {
  connections: number;
  outcomes: Record<string, number>;
}

interface LoadReport {
  legit: {
    attempts: number;
    ok: number;
    failures: string[];
    /** Each login's total time (TCP, TLS, token, authentication), ms. */
    loginMs: number[];
    queries: number;
    queriesOk: number;
    steady: number;
    steadyOk: number;
  };
  hostile: Record<string, Kind>;
  /** --only trickle: the legitimate logins by the phase they started in, flood on or off. */
  trickle?: Record<string, TricklePhase>;
}

interface TricklePhase {
  attempts: number;
  failures: string[];
  /** Each login's time, from the start of the connect to the end of its first query, ms. */
  loginMs: number[];
}

async function load(port: number): Promise<void> {
  const until = Date.now() + seconds * 1000;
  const running = () => Date.now() < until;
  const report: LoadReport = {
    legit: {
      attempts: 0,
      ok: 0,
      failures: [],
      loginMs: [],
      queries: 0,
      queriesOk: 0,
      steady: 0,
      steadyOk: 0,
    },
    hostile: {},
  };
  const tally = (kind: string, outcome: string, connections = 1) => {
    const k = report.hostile[kind] ??= { connections: 0, outcomes: {} };
    k.connections += connections;
    k.outcomes[outcome] = (k.outcomes[outcome] ?? 0) + 1;
  };
  // A loop of `concurrency` workers, each running `one` again and again until the end.
  const loop = (concurrency: number, one: () => Promise<void>, pauseMs = 0) =>
    Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (running()) {
          await one().catch(() => {});
          if (pauseMs) await sleep(pauseMs);
        }
      }),
    );
  const phase = () => Date.now() % CYCLE_MS;

  const legit = async () => {
    const options = {
      host: "127.0.0.1",
      port,
      user: "app",
      database: "postgres",
      signingHostname: ENDPOINT,
      signingPort: 5432,
      credentials: KEY,
      ssl: { ca, servername: ENDPOINT },
      onnotice: () => {},
      onConnect: (e: { ok: boolean; error?: Error; timings: { totalMs: number } }) => {
        report.legit.attempts++;
        report.legit.loginMs.push(e.timings.totalMs);
        if (e.ok) report.legit.ok++;
        else report.legit.failures.push(e.error?.message ?? "unknown");
      },
    };
    // One connection for the whole run: relayed connections outlive floods and deadlines.
    const steady = iamPostgres({ ...options, max: 1, idle_timeout: 0, max_lifetime: 0 });
    const steadyLoop = (async () => {
      while (running()) {
        report.legit.steady++;
        const [{ n }] = await steady`select count(*)::int as n from pg_stat_activity`;
        if (n > 0) report.legit.steadyOk++;
        await sleep(250);
      }
    })();
    // A new pool every cycle, between the connection floods.
    while (running()) {
      await sleep((CYCLE_MS + 4_000 - phase()) % CYCLE_MS);
      if (!running()) break;
      const pool = iamPostgres({ ...options, max: 4 });
      const queries = Array.from({ length: 40 }, (_, i) => {
        report.legit.queries++;
        return pool`select ${i}::int as i, pg_sleep(0.05)`.then(([row]) => {
          if (row.i === i) report.legit.queriesOk++;
        }, () => {});
      });
      await Promise.all(queries);
      await pool.end({ timeout: 1 });
    }
    await steadyLoop.catch((e) => report.legit.failures.push(`steady: ${e.message}`));
    await steady.end({ timeout: 1 });
  };

  const kinds: Record<string, () => Promise<unknown>> = {
    legit,
    ssl: () => loop(2, () => flood(port, 80877103, tally)),
    gss: () => loop(2, () => flood(port, 80877104, tally)),
    slowloris: () => loop(30, () => slowloris(port, running, tally)),
    connections: () => connectionFloods(port, running, tally),
    malformed: () => loop(2, () => malformed(port, tally), 50),
    "long-user": () => loop(2, () => longUser(port, tally), 50),
    cancel: () => loop(1, () => cancel(port, tally), 200),
    trickle: () => trickles(port, running, report, tally),
  };
  await Promise.all(
    Object.entries(kinds)
      .filter(([name]) => only ? only.includes(name) : name !== "trickle")
      .map(([, run]) => run()),
  );
  console.log(JSON.stringify(report));
  process.exit(0);
}

type Tally = (kind: string, outcome: string, connections?: number) => void;

function open(port: number, localAddress?: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(
      { port, host: "127.0.0.1", ...(localAddress ? { localAddress } : {}) },
      () => resolve(socket),
    );
    socket.once("error", reject);
  });
}

// Alternate phases of TRICKLE_MS, flood on and flood off; a fresh login every 250 ms throughout.
const TRICKLE_MS = 10_000;
const TRICKLE_FROM = ["127.0.0.2", "127.0.0.3"];
const TRICKLES_PER_ADDRESS = 150;

async function trickles(
  port: number,
  running: () => boolean,
  report: LoadReport,
  tally: Tally,
): Promise<void> {
  const phases: Record<string, TricklePhase> = report.trickle = {
    "flood on": { attempts: 0, failures: [], loginMs: [] },
    "flood off": { attempts: 0, failures: [], loginMs: [] },
  };
  let on = false;
  const logins = (async () => {
    const pending: Promise<void>[] = [];
    while (running()) {
      const phase = phases[on ? "flood on" : "flood off"];
      phase.attempts++;
      const sql = iamPostgres({
        host: "127.0.0.1",
        port,
        user: "app",
        database: "postgres",
        signingHostname: ENDPOINT,
        signingPort: 5432,
        credentials: KEY,
        ssl: { ca, servername: ENDPOINT },
        max: 1,
        connect_timeout: 5,
        onnotice: () => {},
      });
      const started = performance.now();
      pending.push(
        sql`select 1 as one`.then(
          () => void phase.loginMs.push(performance.now() - started),
          (e: Error & { code?: string }) => void phase.failures.push(`${e.code}: ${e.message}`),
        ).finally(() => sql.end({ timeout: 1 })),
      );
      await sleep(250);
    }
    await Promise.all(pending);
  })();
  while (running()) {
    const flood = (await Promise.all(
      TRICKLE_FROM.flatMap((from) =>
        Array.from({ length: TRICKLES_PER_ADDRESS }, () => open(port, from).catch(() => undefined))
      ),
    )).filter((s) => s !== undefined);
    const results = flood.map((s) => {
      s.write(new Uint8Array([0]));
      return outcome(s, 60_000);
    });
    on = true;
    await sleep(TRICKLE_MS);
    on = false;
    for (const s of flood) s.destroy();
    for (const result of await Promise.all(results)) {
      tally(
        "one-byte trickle",
        result.startsWith("closed without") ? "held until the phase ended" : result,
      );
    }
    await sleep(TRICKLE_MS);
  }
  await logins;
}

// Reads everything until the gateway closes (or `ms` pass): "FATAL <code>", or how it closed.
function outcome(socket: net.Socket, ms = 10_000): Promise<string> {
  return new Promise((resolve) => {
    const reader = new MessageReader();
    let answer = "";
    socket.on("error", () => {});
    socket.on("data", (chunk: Uint8Array) => reader.push(chunk));
    const timer = setTimeout(() => {
      answer = `still open after ${ms / 1000} s`;
      socket.destroy();
    }, ms);
    socket.once("close", () => {
      clearTimeout(timer);
      if (answer) return resolve(answer);
      try {
        for (let m = reader.message(); m; m = reader.message()) {
          if (m.type === 69) return resolve(`FATAL ${errorFields(m.body).get("C")}`);
        }
      } catch {
        // not messages: an answer byte, say
      }
      resolve("closed without an error");
    });
  });
}

const requestPacket = (code: number) => {
  const packet = new Uint8Array(8);
  new DataView(packet.buffer).setInt32(0, 8);
  new DataView(packet.buffer).setInt32(4, code);
  return packet;
};

// SSLRequests or GSSENCRequests, 64 KiB every 100 ms, never reading an answer.
async function flood(port: number, code: number, tally: Tally): Promise<void> {
  const kind = code === 80877103 ? "SSLRequest flood, never reading" : "GSSENCRequest flood";
  const socket = await open(port);
  socket.pause();
  const burst = new Uint8Array(1 << 16);
  for (let at = 0; at < burst.length; at += 8) burst.set(requestPacket(code), at);
  const started = Date.now();
  const result = await new Promise<string>((resolve) => {
    const timer = setInterval(() => socket.write(burst), 100);
    socket.on("error", () => {});
    const limit = setTimeout(() => socket.destroy(), 10_000);
    socket.once("close", () => {
      clearInterval(timer);
      clearTimeout(limit);
      resolve(Date.now() - started < 10_000 ? "dropped within 10 s" : "still open after 10 s");
    });
    socket.write(burst);
  });
  tally(kind, result);
}

// One byte of a startup packet every 5 s, until the gateway drops it or the run ends.
async function slowloris(port: number, running: () => boolean, tally: Tally): Promise<void> {
  const socket = await open(port);
  const bytes = startupMessage(new Map([["user", "slowloris"], ["database", "postgres"]]));
  const started = Date.now();
  let at = 0;
  let ended = false;
  const timer = setInterval(() => {
    if (running()) return void socket.write(bytes.subarray(at, ++at));
    ended = true;
    socket.destroy();
  }, 5000);
  const result = await outcome(socket, 120_000);
  clearInterval(timer);
  const lived = Math.round((Date.now() - started) / 5_000) * 5;
  tally(
    "slowloris, a byte every 5 s",
    ended ? "still open at the end of the run" : `${result} after ~${lived} s`,
  );
}

// Every cycle, 150 connections at once, sending nothing, held 1.5 s.
async function connectionFloods(
  port: number,
  running: () => boolean,
  tally: Tally,
): Promise<void> {
  while (running()) {
    await sleep(CYCLE_MS - (Date.now() % CYCLE_MS));
    if (!running()) break;
    const sockets = await Promise.all(
      Array.from({ length: 150 }, () => open(port).catch(() => undefined)),
    );
    const results = sockets.map((s) => s ? outcome(s, 1500) : Promise.resolve("connect failed"));
    for (const result of await Promise.all(results)) {
      tally(
        "flood of 150 connections at once",
        result.startsWith("still open") ? "held a slot 1.5 s" : result,
      );
    }
  }
}

// Oversized, short, unterminated, other-version and garbage startup packets.
async function malformed(port: number, tally: Tally): Promise<void> {
  const cases: Array<[string, Uint8Array]> = [
    ["length 2^31-1", new Uint8Array([0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0])],
    ["length 10,001", packet(196608, "user\0" + "x".repeat(9986) + "\0\0")],
    ["length 4", new Uint8Array([0, 0, 0, 4, 0, 3, 0, 0])],
    ["no terminator", packet(196608, "user\0app\0database\0postgres\0")],
    ["name without value", packet(196608, "user\0app\0database\0")],
    ["protocol 4.0", packet(4 << 16, "user\0app\0\0")],
    ["protocol 2.0", packet(2 << 16, "user\0app\0\0")],
    ["random bytes", crypto.getRandomValues(new Uint8Array(64))],
  ];
  const [name, bytes] = cases[Math.floor(Math.random() * cases.length)];
  const socket = await open(port);
  socket.write(bytes);
  tally(`malformed startup: ${name}`, await outcome(socket));
}

function packet(code: number, body: string): Uint8Array {
  const bytes = new TextEncoder().encode(body);
  const out = new Uint8Array(8 + bytes.length);
  new DataView(out.buffer).setInt32(0, out.length);
  new DataView(out.buffer).setInt32(4, code);
  out.set(bytes, 8);
  return out;
}

// A 4,900-character user name and a bad token: in plaintext (refused: no TLS), or over TLS with
// junk or a well-formed token signed with another secret (verified, then refused).
async function longUser(port: number, tally: Tally): Promise<void> {
  const user = Array.from({ length: 4900 }, () => String.fromCharCode(33 + Math.random() * 90))
    .join("");
  const signed = Math.random() < 0.5;
  const token = signed
    ? await presign({
      host: `${ENDPOINT}:5432`,
      params: { Action: "connect", DBUser: user },
      service: "rds-db",
      region: "us-east-1",
      signingDate: new Date(),
      expiresIn: 900,
    }, { ...KEY, secretAccessKey: "another secret" })
    : `${ENDPOINT}:5432/?Action=connect&DBUser=${"x".repeat(900)}`;
  const hello = startupMessage(new Map([["user", user], ["database", "postgres"]]));
  let socket: net.Socket = await open(port);
  const overTls = Math.random() < 0.5;
  if (overTls) {
    socket.write(requestPacket(80877103));
    const answer = await new Promise<Uint8Array>((resolve) => socket.once("data", resolve));
    if (answer[0] !== 83) {
      socket.destroy();
      const refused = answer[0] === 69 ? "FATAL 53300 before TLS" : "no TLS";
      return tally("4,900-character user, bad token, over TLS", `${refused}`);
    }
    const secure = tls.connect({ socket, ca, servername: ENDPOINT });
    await new Promise((resolve, reject) => {
      secure.once("secureConnect", resolve);
      secure.once("error", reject);
    });
    socket = secure;
  }
  socket.write(hello);
  socket.write(passwordMessage(token));
  const result = await outcome(socket);
  tally(
    `4,900-character user, bad token, ${overTls ? "over TLS" : "plaintext"}`,
    overTls && result === "FATAL 28P01" ? `${result} (${signed ? "signature" : "junk"})` : result,
  );
}

// A CancelRequest with a random process id and key.
async function cancel(port: number, tally: Tally): Promise<void> {
  const request = new Uint8Array(16);
  const view = new DataView(request.buffer);
  view.setInt32(0, 16);
  view.setInt32(4, 80877102);
  crypto.getRandomValues(request.subarray(8));
  const socket = await open(port);
  socket.write(request);
  tally("random CancelRequest", await outcome(socket));
}

// Last, once every constant above is initialized.
if (arg("--load") !== undefined) await load(Number(arg("--load")));
else await soak();
