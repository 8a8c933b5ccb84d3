import { test } from "node:test";
import assert from "node:assert/strict";
import { dsqlToken, rdsToken } from "../../mod.ts";
import {
  allCryptoBackends,
  automaticCryptoBackend,
  bunBackend,
  getCryptoBackend,
  jsBackend,
  nodeCryptoBackend,
  setCryptoBackend,
} from "../../src/core/crypto.ts";
import {
  canonicalRequest,
  credentialScope,
  escapeUri,
  formatDate,
  stringToSign,
} from "../../src/core/sigv4.ts";

// The worked example of AWS's SigV4 documentation ("Create a signed AWS API request", and the
// signing-key derivation example): a ListUsers call to IAM on 2015-08-30.
const DOC = {
  secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
  canonicalRequest: [
    "GET",
    "/",
    "Action=ListUsers&Version=2010-05-08",
    "content-type:application/x-www-form-urlencoded; charset=utf-8",
    "host:iam.amazonaws.com",
    "x-amz-date:20150830T123600Z",
    "",
    "content-type;host;x-amz-date",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  ].join("\n"),
  canonicalRequestHash: "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59",
  signature: "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
};

// A fixed list, each skipped where the runtime lacks it, so every runtime counts the same tests.
const ALL = Object.entries(allCryptoBackends());
const BACKENDS = ALL.flatMap(([, b]) => (b ? [b] : []));

for (const [name, backend = jsBackend] of ALL) {
  const skip = allCryptoBackends()[name] ? false : `no ${name} on this runtime`;
  test(`${name}: hashes AWS's documented canonical request`, { skip }, async () => {
    assert.equal(await backend.sha256Hex(DOC.canonicalRequest), DOC.canonicalRequestHash);
  });

  test(`${name}: derives the key and signature of AWS's documented example`, { skip }, async () => {
    const key = await backend.signingKey(DOC.secret, "20150830", "us-east-1", "iam");
    const scope = credentialScope("20150830", "us-east-1", "iam");
    const sts = stringToSign("20150830T123600Z", scope, DOC.canonicalRequestHash);
    assert.equal(await backend.hmacHex(key, sts), DOC.signature);
  });
}

test("js, webcrypto and node:crypto are available on every runtime, bun on Bun", () => {
  const isBun = (globalThis as { Bun?: unknown }).Bun !== undefined;
  const names = ["js", "webcrypto", "node:crypto", ...(isBun ? ["bun"] : [])];
  assert.deepEqual(BACKENDS.map((b) => b.name), names);
});

test("the automatic backend is node:crypto on Node, bun on Bun, plain JS on Deno", () => {
  const g = globalThis as { Deno?: unknown; Bun?: unknown };
  const expected = g.Bun !== undefined
    ? bunBackend
    : g.Deno !== undefined
    ? jsBackend
    : nodeCryptoBackend();
  assert.equal(automaticCryptoBackend(), expected);
  assert.equal(getCryptoBackend(), expected);
});

const creds = {
  accessKeyId: "AKIDEXAMPLE",
  secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
  sessionToken: "FwoGZXIvYXdzE/a+b=c",
};
const at = new Date("2026-11-22T23:59:59.999Z");

test("a token's signature is HMAC(signing key, string to sign(canonical request)) of its own query", async () => {
  const token = await rdsToken({
    hostname: "mydb.c9akciq32.us-east-1.rds.amazonaws.com",
    username: "app",
    credentials: creds,
    signingDate: at,
  });
  const [host, query] = token.split("/?");
  const params = query.split("&");
  const signature = params.find((p) => p.startsWith("X-Amz-Signature="))!.split("=")[1];
  const unsigned = params.filter((p) => !p.startsWith("X-Amz-Signature=")).join("&");
  const { longDate, shortDate } = formatDate(at);
  assert.equal(longDate, "20261122T235959Z");
  const scope = credentialScope(shortDate, "us-east-1", "rds-db");
  assert.ok(unsigned.includes(`X-Amz-Credential=${escapeUri(`AKIDEXAMPLE/${scope}`)}`));
  assert.ok(unsigned.includes(`X-Amz-Security-Token=${escapeUri(creds.sessionToken)}`));
  for (const backend of BACKENDS) {
    const hash = await backend.sha256Hex(canonicalRequest(unsigned, host));
    const key = await backend.signingKey(creds.secretAccessKey, shortDate, "us-east-1", "rds-db");
    assert.equal(await backend.hmacHex(key, stringToSign(longDate, scope, hash)), signature);
  }
});

test("every backend produces identical RDS and DSQL tokens", async () => {
  const make = () =>
    Promise.all([
      rdsToken({
        hostname: "h.abc.eu-west-1.rds.amazonaws.com",
        username: "ü s+r",
        credentials: creds,
        signingDate: at,
      }),
      dsqlToken({
        hostname: "abcdefghijklmnopqrstuvwxyz",
        region: "us-east-2",
        credentials: creds,
        signingDate: at,
      }),
    ]);
  const results: string[][] = [];
  try {
    for (const backend of BACKENDS) {
      setCryptoBackend(backend);
      results.push(await make());
    }
  } finally {
    setCryptoBackend(undefined);
  }
  for (const r of results.slice(1)) assert.deepEqual(r, results[0]);
});

test("escapeUri() encodes the RFC 3986 reserved characters encodeURIComponent leaves", () => {
  assert.equal(escapeUri("a b+c/d!e'f(g)h*i~j_k.l-m"), "a%20b%2Bc%2Fd%21e%27f%28g%29h%2Ai~j_k.l-m");
});

test("formatDate() drops milliseconds and keeps UTC", () => {
  assert.deepEqual(formatDate(new Date("2027-01-01T00:00:00.999Z")), {
    longDate: "20270101T000000Z",
    shortDate: "20270101",
  });
});

test("a new secret under the same access key id is not signed with the cached key", async () => {
  const opts = { hostname: "h.abc.eu-west-1.rds.amazonaws.com", username: "u", signingDate: at };
  const a = await rdsToken({
    ...opts,
    credentials: { accessKeyId: "AKID1", secretAccessKey: "one" },
  });
  const b = await rdsToken({
    ...opts,
    credentials: { accessKeyId: "AKID1", secretAccessKey: "two" },
  });
  assert.notEqual(a, b);
  setCryptoBackend(undefined); // clears the key cache
  const fresh = await rdsToken({
    ...opts,
    credentials: { accessKeyId: "AKID1", secretAccessKey: "two" },
  });
  assert.equal(b, fresh);
});

test("the signing key cache stays correct past its bound", async () => {
  const opts = { hostname: "h.abc.eu-west-1.rds.amazonaws.com", username: "u", signingDate: at };
  const first = await rdsToken({
    ...opts,
    credentials: { accessKeyId: "K0", secretAccessKey: "s0" },
  });
  for (let i = 1; i < 200; i++) {
    await rdsToken({ ...opts, credentials: { accessKeyId: `K${i}`, secretAccessKey: `s${i}` } });
  }
  assert.equal(
    await rdsToken({ ...opts, credentials: { accessKeyId: "K0", secretAccessKey: "s0" } }),
    first,
  );
});
