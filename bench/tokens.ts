// Warm throughput: tokens per second, pg-iam against the AWS SDK signers, in one process.
//
//   npx tsx --expose-gc bench/tokens.ts                      (Node)
//   npx deno run -A --v8-flags=--expose-gc bench/tokens.ts   (Deno)
//   npx bun bench/tokens.ts                                  (Bun)
//
// (--expose-gc is optional: with it, a full GC runs before every round; Bun always does.)
//
// Flags: --rounds N (timed rounds per case, default 7), --ms N (length of a round, default 250),
// --backends (also pg-iam with each crypto backend forced), --json (also print one
// `BENCH_JSON {...}` line for bench/run.mjs).
//
// Without --backends the process signs with one backend, the runtime's automatic one, as every
// user process does. Forcing others in the same process makes the presigner's calls into the
// backend polymorphic, which slowed the automatic case by up to half on Deno (measured: 71k
// tokens/s here against 150k+ alone); so the headline ratios come from a run without them.
//
// Every call gets a distinct username (RDS) or cluster hostname (DSQL), so neither side can reuse a
// previous token; both sides get the same static credentials object. Rounds of all cases are
// interleaved so that drift (thermal, GC, JIT tiering, other load) hits every case alike. The
// reported rate is the median of the rounds; the pg-iam/SDK ratio is the median of per-round
// ratios. Nothing here asserts on timings.

import process from "node:process";
import { Signer } from "@aws-sdk/rds-signer";
import { DsqlSigner } from "@aws-sdk/dsql-signer";
import { dsqlToken, rdsToken } from "../mod.ts";
import {
  type CryptoBackend,
  jsBackend,
  nodeCryptoBackend,
  setCryptoBackend,
  webCryptoBackend,
} from "../src/core/crypto.ts";
import { CREDENTIALS, dsqlHost, RDS_HOST, RDS_PORT, REGION, username } from "./_fixtures.mjs";

interface Case {
  name: string;
  group: "rds" | "dsql";
  lib: "pg-iam" | "pg-iam (webcrypto)" | "pg-iam (node:crypto)" | "pg-iam (js)" | "sdk";
  call: (i: number) => Promise<string>;
  /** A forced crypto backend; default: the automatic choice for this runtime. */
  backend?: CryptoBackend;
}

const credentials = { ...CREDENTIALS };

const pgIamRds = (i: number) =>
  rdsToken({
    hostname: RDS_HOST,
    port: RDS_PORT,
    username: username(i),
    region: REGION,
    credentials,
  });

// pg-iam with the runtime's automatic backend, then with each other backend forced.
const rdsVariants: Case[] = ([
  ["", undefined],
  [" webcrypto", webCryptoBackend],
  [" node:crypto", nodeCryptoBackend()],
  [" js", jsBackend],
] as const).map(([suffix, backend]) => ({
  name: `rds pg-iam${suffix}`,
  group: "rds",
  lib: suffix ? `pg-iam (${suffix.trim()})` as Case["lib"] : "pg-iam",
  backend,
  call: pgIamRds,
}));

const allCases: Case[] = [
  ...rdsVariants,
  {
    name: "rds sdk",
    group: "rds",
    lib: "sdk",
    call: (i) =>
      new Signer({
        hostname: RDS_HOST,
        port: RDS_PORT,
        username: username(i),
        region: REGION,
        credentials,
      }).getAuthToken(),
  },
  {
    name: "dsql pg-iam",
    group: "dsql",
    lib: "pg-iam",
    call: (i) => dsqlToken({ hostname: dsqlHost(i), region: REGION, credentials }),
  },
  {
    name: "dsql pg-iam webcrypto",
    group: "dsql",
    lib: "pg-iam (webcrypto)",
    backend: webCryptoBackend,
    call: (i) => dsqlToken({ hostname: dsqlHost(i), region: REGION, credentials }),
  },
  {
    name: "dsql sdk",
    group: "dsql",
    lib: "sdk",
    call: (i) =>
      new DsqlSigner({ hostname: dsqlHost(i), region: REGION, credentials, expiresIn: 900 })
        .getDbConnectAdminAuthToken(),
  },
];

const BACKENDS = process.argv.includes("--backends");
const cases = allCases.filter((c) => BACKENDS || c.backend === undefined);

function flag(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  const value = at >= 0 ? Number(process.argv[at + 1]) : NaN;
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

const ROUNDS = flag("--rounds", 7);
const ROUND_MS = flag("--ms", 250);
const WARMUP_MS = flag("--warmup-ms", 400);
const BATCH = 32;

let counter = 0;
let sink = 0;

// A full collection before each round, where the runtime offers one without flags (Bun), or where
// Node/Deno were started with --expose-gc, so one case's garbage is not collected on another's time.
const g = globalThis as { Bun?: { gc(sync: boolean): void }; gc?: () => void };
const collect = g.Bun ? () => g.Bun!.gc(true) : g.gc ?? (() => {});

/** Runs `c` for at least `ms` milliseconds; returns calls per second. */
async function measure(c: Case, ms: number): Promise<number> {
  collect();
  setCryptoBackend(c.backend);
  try {
    let n = 0;
    const start = performance.now();
    let elapsed = 0;
    do {
      for (let k = 0; k < BATCH; k++) sink += (await c.call(counter++)).length;
      n += BATCH;
      elapsed = performance.now() - start;
    } while (elapsed < ms);
    return (n / elapsed) * 1000;
  } finally {
    setCryptoBackend(undefined);
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function runtime(): string {
  const g = globalThis as { Deno?: { version: { deno: string } }; Bun?: { version: string } };
  if (g.Deno) return `Deno ${g.Deno.version.deno}`;
  if (g.Bun) return `Bun ${g.Bun.version}`;
  return `Node ${process.versions.node}`;
}

/** Same inputs, same second: pg-iam and the SDK must agree (a sanity check, not a test). */
async function sanity(ours: Case, sdk: Case): Promise<void> {
  const dateOf = (t: string) => /X-Amz-Date=(\w+)/.exec(t)?.[1];
  for (let attempt = 0; attempt < 3; attempt++) {
    const a = await ours.call(1);
    const b = await sdk.call(1);
    if (a === b) return;
    if (dateOf(a) === dateOf(b)) {
      throw new Error(`${ours.name} and ${sdk.name} differ:\n${a}\n${b}`);
    }
  }
}

const byName = (name: string) => cases.find((c) => c.name === name)!;
await sanity(byName("rds pg-iam"), byName("rds sdk"));
await sanity(byName("dsql pg-iam"), byName("dsql sdk"));
for (const c of cases) await measure(c, WARMUP_MS);

const samples = new Map<Case, number[]>(cases.map((c) => [c, []]));
for (let r = 0; r < ROUNDS; r++) {
  // Rotate the order each round so no case always runs right after the same other one.
  for (let k = 0; k < cases.length; k++) {
    const c = cases[(k + r) % cases.length];
    samples.get(c)!.push(await measure(c, ROUND_MS));
  }
}

const results = cases.map((c) => {
  const xs = samples.get(c)!;
  return {
    name: c.name,
    group: c.group,
    lib: c.lib,
    opsPerSec: median(xs),
    min: Math.min(...xs),
    max: Math.max(...xs),
  };
});
// Ratios are the median of per-round ratios: within a round the two cases ran a few hundred ms
// apart, so background load that varies over the run cancels out better than in a ratio of medians.
const ratio = (ours: string, sdk: string) => {
  const a = samples.get(cases.find((c) => c.name === ours)!)!;
  const b = samples.get(cases.find((c) => c.name === sdk)!)!;
  return median(a.map((x, r) => x / b[r]));
};
const ratios = {
  rds: ratio("rds pg-iam", "rds sdk"),
  dsql: ratio("dsql pg-iam", "dsql sdk"),
  ...(BACKENDS
    ? {
      rdsWebcrypto: ratio("rds pg-iam webcrypto", "rds sdk"),
      dsqlWebcrypto: ratio("dsql pg-iam webcrypto", "dsql sdk"),
    }
    : {}),
};
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
console.log(
  `\n${runtime()}: ${ROUNDS} rounds x ${ROUND_MS} ms, median tokens/s (min..max); vs SDK = median of per-round ratios\n`,
);
console.log("| case | tokens/s | min..max | vs SDK |");
console.log("| --- | ---: | ---: | ---: |");
for (const r of results) {
  const vs = r.lib === "sdk" ? "1.00x" : `${ratio(r.name, `${r.group} sdk`).toFixed(2)}x`;
  console.log(`| ${r.name} | ${fmt(r.opsPerSec)} | ${fmt(r.min)}..${fmt(r.max)} | ${vs} |`);
}
if (sink === 0) console.log("(no tokens?)");
if (process.argv.includes("--json")) {
  console.log(
    "BENCH_JSON " + JSON.stringify({ runtime: runtime(), rounds: ROUNDS, results, ratios }),
  );
}
