// Differential test: pg-iam's tokens must be byte-identical to the AWS SDK's, for thousands of
// seeded random inputs, under every crypto backend. Oracles and the generator are in _oracle.ts.
// Reproduce a failure with the seed it prints: PG_IAM_SEED=0x… (or PG_IAM_SEED=random to explore).

import assert from "node:assert/strict";
import { test } from "node:test";
import { dsqlToken, rdsToken } from "../../mod.ts";
import {
  bunBackend,
  type CryptoBackend,
  jsBackend,
  nodeCryptoBackend,
  setCryptoBackend,
  webCryptoBackend,
} from "../../src/core/crypto.ts";
import {
  type Case,
  caseLabel,
  describeDifferences,
  describeOptions,
  DSQL_HOST_FORMS,
  type DsqlCase,
  generateDsqlCases,
  generateRdsCases,
  presignToken,
  RDS_ENDPOINT_KINDS,
  RDS_PARTITION_FORMS,
  type RdsCase,
  resolveSeed,
  sdkToken,
  seedHex,
  tokenDifferences,
} from "../_oracle.ts";

const RDS_COUNT = 1200;
const DSQL_COUNT = 1200;
const MAX_REPORTED = 5;

const SEED = resolveSeed();
const rdsCases: RdsCase[] = generateRdsCases(SEED, RDS_COUNT);
const dsqlCases: DsqlCase[] = generateDsqlCases(SEED, DSQL_COUNT);

interface Oracle {
  /** SDK signer with the clock pinned; undefined where the SDK cannot express the case. */
  sdk?: string;
  /** SignatureV4#presign with an explicit signingDate. */
  presign: string;
}

let oracles: Promise<Map<Case, Oracle>> | undefined;

/** Both oracles for every case, computed once and shared by the tests. */
function getOracles(): Promise<Map<Case, Oracle>> {
  oracles ??= (async () => {
    const map = new Map<Case, Oracle>();
    for (const c of [...rdsCases, ...dsqlCases]) {
      map.set(c, { sdk: await sdkToken(c), presign: await presignToken(c.expected) });
    }
    return map;
  })();
  return oracles;
}

function token(c: Case): Promise<string> {
  return c.kind === "rds" ? rdsToken(c.options) : dsqlToken(c.options);
}

function errorText(e: unknown): string {
  const s = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return s.length > 300 ? `${s.slice(0, 300)}…` : s;
}

/** Runs pg-iam on every case under `backend`; fails listing the first mismatches. */
async function compareAll(cases: Case[], backend: CryptoBackend | undefined): Promise<void> {
  const table = await getOracles();
  const failures: string[] = [];
  let sdkCompared = 0;
  setCryptoBackend(backend);
  try {
    for (const c of cases) {
      const oracle = table.get(c)!;
      let actual: string;
      try {
        actual = await token(c);
      } catch (e) {
        failures.push(
          `${caseLabel(SEED, c)}\n  input: ${describeOptions(c)}\n  threw ${errorText(e)}`,
        );
        continue;
      }
      const against: [string, string | undefined][] = [
        ["SDK signer", oracle.sdk],
        ["SignatureV4.presign", oracle.presign],
      ];
      if (oracle.sdk !== undefined) sdkCompared++;
      for (const [name, expected] of against) {
        if (expected === undefined || actual === expected) continue;
        failures.push(
          `${caseLabel(SEED, c)}: differs from ${name}\n  input: ${describeOptions(c)}\n  ${
            describeDifferences(actual, expected).replace(/\n/g, "\n  ")
          }`,
        );
        break; // the oracles agree (checked by another test): one report per case
      }
    }
  } finally {
    setCryptoBackend(undefined);
  }
  if (failures.length > 0) {
    assert.fail(
      `${failures.length} of ${cases.length} ${cases[0].kind} cases differ (seed=${
        seedHex(SEED)
      }, backend=${backend?.name ?? "automatic"}); first ${
        Math.min(MAX_REPORTED, failures.length)
      }:\n${failures.slice(0, MAX_REPORTED).join("\n")}`,
    );
  }
  assert.ok(sdkCompared > 0, "no case was compared with the SDK signer");
}

// ---------------------------------------------------------------------------

test("differential: the seeded corpus covers every required input class", () => {
  assert.ok(rdsCases.length >= 1000 && dsqlCases.length >= 1000);
  const rdsTags = new Set(rdsCases.flatMap((c) => c.tags));
  const dsqlTags = new Set(dsqlCases.flatMap((c) => c.tags));
  const need = (tags: Set<string>, wanted: string[], what: string) => {
    const missing = wanted.filter((t) => !tags.has(t));
    assert.deepEqual(missing, [], `seed=${seedHex(SEED)}: no ${what} case tagged ${missing}`);
  };
  need(rdsTags, RDS_PARTITION_FORMS.map((f) => `rds:${f}`), "RDS");
  need(rdsTags, RDS_ENDPOINT_KINDS.map((k) => `rds:${k}`), "RDS");
  need(rdsTags, [
    "host:ipv4",
    "host:localhost",
    "host:custom",
    "host:mixed-case",
    "host:trailing-dot",
    "signingHostname",
    "region:derived",
    "region:explicit",
    "region:explicit-matching",
    "port:1",
    "port:5432",
    "port:65535",
    "port:default",
    "expires:1",
    "expires:900",
    "expires:default",
  ], "RDS");
  need(dsqlTags, DSQL_HOST_FORMS.map((f) => `dsql:${f}`), "DSQL");
  need(dsqlTags, [
    "dsql:admin",
    "dsql:non-admin",
    "dsql:username-omitted",
    "dsql:username-admin",
    "dsql:username-other",
    "dsql:admin-flag-true",
    "dsql:admin-flag-false",
    "region:derived",
    "region:explicit",
    "region:explicit-matching",
    "expires:1",
    "expires:604800",
    "expires:default",
  ], "DSQL");
  for (const tags of [rdsTags, dsqlTags]) {
    need(tags, [
      "token:absent",
      "token:base64",
      "token:empty",
      "creds:object",
      "creds:provider",
      "creds:expiration",
      "date:23:59:59",
      "date:00:00:00.000",
      "date:00:00:00.xxx",
    ], "RDS/DSQL");
  }
  const randomPorts = rdsCases.filter((c) => ![undefined, 1, 5432, 65535].includes(c.options.port));
  assert.ok(randomPorts.length > 100, "random ports");
  const rdsOtherExpiries = rdsCases.filter((c) => ![1, 900].includes(c.expected.expiresIn));
  assert.ok(rdsOtherExpiries.length > 100, "RDS expiries other than 1 and 900");
  const dsqlOtherExpiries = dsqlCases.filter((c) =>
    ![1, 900, 604800].includes(c.expected.expiresIn)
  );
  assert.ok(dsqlOtherExpiries.length > 100, "DSQL expiries other than 1, 900, 604800");

  const names = rdsCases.map((c) => c.options.username);
  for (const ch of [" ", "+", "@", "/", "%", "=", "&", "~", "*", "'", "(", "\u00e9"]) {
    assert.ok(names.some((n) => n.includes(ch)), `a username containing ${JSON.stringify(ch)}`);
  }
  assert.ok(names.some((n) => [...n].some((p) => p.codePointAt(0)! > 0xffff)), "astral plane");
  assert.ok(names.some((n) => n.length >= 200), "a long username");
  const tokens = [...rdsCases, ...dsqlCases].map((c) => c.expected.credentials.sessionToken ?? "");
  for (const ch of ["/", "+", "="]) {
    assert.ok(tokens.some((t) => t.includes(ch)), `a session token containing ${ch}`);
  }
  const dates = [...rdsCases, ...dsqlCases].map((c) => c.expected.signingDate);
  assert.ok(new Set(dates.map((d) => d.getUTCFullYear())).size >= 50, "many years");
  assert.ok(dates.filter((d) => d.getUTCMilliseconds() !== 0).length > 500, "milliseconds");
  const keyShapes = new Set(rdsCases.map((c) => c.expected.credentials.accessKeyId.slice(0, 4)));
  assert.ok(keyShapes.has("AKIA") && keyShapes.has("ASIA") && keyShapes.size > 50, "key shapes");
});

test("differential: SDK signers with a pinned clock agree with SignatureV4.presign", async () => {
  const table = await getOracles();
  let rdsSdk = 0;
  let dsqlSdk = 0;
  const failures: string[] = [];
  for (const [c, o] of table) {
    // The signing instant, formatted independently of both oracles.
    const longDate = c.expected.signingDate.toISOString().replace(/\.\d{3}Z$/, "Z").replace(
      /[-:]/g,
      "",
    );
    if (!o.presign.includes(`&X-Amz-Date=${longDate}&`)) {
      failures.push(`${caseLabel(SEED, c)}: presign lacks X-Amz-Date=${longDate}`);
    }
    if (o.sdk === undefined) continue;
    if (c.kind === "rds") rdsSdk++;
    else dsqlSdk++;
    if (o.sdk !== o.presign) {
      failures.push(
        `${caseLabel(SEED, c)}: SDK signer vs presign\n  input: ${describeOptions(c)}\n  ${
          describeDifferences(o.presign, o.sdk)
        }`,
      );
    }
  }
  assert.deepEqual(failures.slice(0, MAX_REPORTED), [], `${failures.length} oracle disagreements`);
  // Every DSQL case and every RDS case with expiresIn 900 went through the SDK signer.
  assert.equal(dsqlSdk, dsqlCases.length);
  assert.equal(rdsSdk, rdsCases.filter((c) => c.expected.expiresIn === 900).length);
  assert.ok(rdsSdk >= 500, `only ${rdsSdk} RDS cases compared with the SDK signer`);
});

const BACKENDS: [string, CryptoBackend | undefined, boolean][] = [
  ["automatic", undefined, true],
  ["js", jsBackend, true],
  ["webcrypto", webCryptoBackend, true],
  ["node:crypto", nodeCryptoBackend(), nodeCryptoBackend() !== undefined],
  ["bun", bunBackend, bunBackend !== undefined],
];

for (const [name, backend, available] of BACKENDS) {
  const skip = available ? false : `${name} backend unavailable on this runtime`;
  test(
    `differential: rdsToken is byte-identical to the SDK (${name} backend)`,
    { skip },
    () => compareAll(rdsCases, backend),
  );
  test(
    `differential: dsqlToken is byte-identical to the SDK (${name} backend)`,
    { skip },
    () => compareAll(dsqlCases, backend),
  );
}

test("differential: negative control, the comparison catches a wrong second or secret", async () => {
  // A case that goes through the SDK signer, with a session token, signed at 23:59:59.999.
  const c =
    rdsCases.find((c) =>
      c.expected.expiresIn === 900 && c.expected.credentials.sessionToken &&
      c.expected.signingDate.toISOString().endsWith("T23:59:59.999Z")
    ) ?? rdsCases.find((c) => c.expected.expiresIn === 900)!;
  const oracle = (await getOracles()).get(c)!;
  const label = caseLabel(SEED, c);
  assert.ok(oracle.sdk !== undefined, label);
  const base = c.options.signingDate.getTime();
  const seconds = base - (base % 1000);

  // Same second, other milliseconds: SigV4 truncates them, so the token is identical.
  for (const ms of [0, 1, 999]) {
    const same = await rdsToken({ ...c.options, signingDate: new Date(seconds + ms) });
    assert.deepEqual(tokenDifferences(same, oracle.sdk), [], `${caseLabel(SEED, c)} +${ms}ms`);
  }

  // The next second: date and signature differ.
  const later = await rdsToken({ ...c.options, signingDate: new Date(seconds + 1000) });
  const laterDiffs = tokenDifferences(later, oracle.sdk);
  assert.ok(laterDiffs.includes("X-Amz-Date") && laterDiffs.includes("X-Amz-Signature"), label);
  if (new Date(seconds).getUTCDate() !== new Date(seconds + 1000).getUTCDate()) {
    assert.ok(laterDiffs.includes("X-Amz-Credential"), `${label}: a new day changes the scope`);
  }
  // The SDK oracle pinned one second later differs from the presign oracle in the same way.
  const sdkLater = await sdkToken({
    ...c,
    expected: { ...c.expected, signingDate: new Date(seconds + 1000) },
  });
  assert.deepEqual(tokenDifferences(sdkLater!, later), [], label);
  assert.notEqual(sdkLater, oracle.presign, label);

  // One character of the secret changed: only the signature differs.
  const creds = c.expected.credentials;
  const secret = creds.secretAccessKey;
  const flipped = secret.slice(0, -1) + (secret.endsWith("A") ? "B" : "A");
  const wrong = await rdsToken({
    ...c.options,
    credentials: { ...creds, secretAccessKey: flipped },
  });
  assert.deepEqual(tokenDifferences(wrong, oracle.sdk), ["X-Amz-Signature"], label);

  // A different user: DBUser and the signature differ.
  const other = await rdsToken({ ...c.options, username: c.options.username + "x" });
  assert.deepEqual(tokenDifferences(other, oracle.sdk), ["DBUser", "X-Amz-Signature"], label);

  // The failure message names parameters but shows neither secret nor signatures.
  const message = describeOptions(c) + describeDifferences(later, oracle.sdk);
  const signature = (t: string) => /X-Amz-Signature=([0-9a-f]{64})/.exec(t)![1];
  assert.ok(message.includes("X-Amz-Signature") && message.includes("X-Amz-Date"));
  assert.ok(!message.includes(signature(later)) && !message.includes(signature(oracle.sdk)));
  assert.ok(!message.includes(secret) || secret.length < 8, "the secret is redacted");
});

test("differential: negative control, DSQL action and expiry are compared", async () => {
  const c = dsqlCases.find((c) => c.expected.action === "DbConnectAdmin")!;
  const oracle = (await getOracles()).get(c)!;
  const label = caseLabel(SEED, c);
  const notAdmin = await dsqlToken({ ...c.options, admin: false });
  assert.deepEqual(tokenDifferences(notAdmin, oracle.sdk!), ["Action", "X-Amz-Signature"], label);
  const expiresIn = c.expected.expiresIn === 1 ? 2 : c.expected.expiresIn - 1;
  const shorter = await dsqlToken({ ...c.options, expiresIn });
  assert.deepEqual(
    tokenDifferences(shorter, oracle.sdk!),
    ["X-Amz-Expires", "X-Amz-Signature"],
    label,
  );
});
