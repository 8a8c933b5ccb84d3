// The local IAM gateway: token verification (every reject reason, against tokens from pg-iam and
// from the AWS SDK signers), then the gateway itself, end to end with postgres.js as the client
// and a real PostgreSQL as the upstream. Flat tests only, so every runtime counts the same.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { spawn } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { Signer } from "@aws-sdk/rds-signer";
import { DsqlSigner } from "@aws-sdk/dsql-signer";
import { dsqlToken, rdsToken } from "../../mod.ts";
import { presign } from "../../src/core/sigv4.ts";
import {
  type VerifyExpectation,
  type VerifyResult,
  verifyToken,
} from "../../src/gateway/verify.ts";
import { type Gateway, type GatewayOptions, startGateway } from "../../src/gateway/mod.ts";
import {
  authCode,
  errorFields,
  GSSENC_REQUEST,
  type Message,
  MessageReader,
  passwordMessage,
  startupMessage,
} from "../../src/connection/pgwire.ts";
import { withPinnedClock } from "../_oracle.ts";
import { upstreamPostgres } from "../_postgres.ts";
import { runtimeCommand } from "../_runtime.ts";
import { ca, cert, key } from "../fixtures/tls.ts";

const RDS_HOST = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";
const DSQL_HOST = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
const KEY = { accessKeyId: "AKIDGATEWAYTEST", secretAccessKey: "gw/Secret+Key=0123456789" };
const TEMP_KEY = {
  accessKeyId: "ASIAGATEWAYTEMP",
  secretAccessKey: "temp/Secret+Key=abcdef",
  sessionToken: "FwoGZXIvYXdzE+session/token=value//more",
};
const SIGNED_AT = new Date("2026-01-01T12:00:00Z");
const NOW = SIGNED_AT.getTime() + 1000;

const keys = (...list: Array<typeof KEY | typeof TEMP_KEY>) =>
  new Map(list.map((k) => [k.accessKeyId, k]));

function rdsExpect(overrides: Partial<VerifyExpectation> = {}): VerifyExpectation {
  return {
    hostname: RDS_HOST,
    port: 5432,
    service: "rds",
    region: "us-east-1",
    user: "app",
    now: NOW,
    credentials: keys(KEY, TEMP_KEY),
    ...overrides,
  };
}

function dsqlExpect(overrides: Partial<VerifyExpectation> = {}): VerifyExpectation {
  return { ...rdsExpect(), hostname: DSQL_HOST, service: "dsql", user: "admin", ...overrides };
}

const rds = (o: Partial<Parameters<typeof rdsToken>[0]> = {}) =>
  rdsToken({ hostname: RDS_HOST, username: "app", credentials: KEY, signingDate: SIGNED_AT, ...o });
const dsql = (o: Partial<Parameters<typeof dsqlToken>[0]> = {}) =>
  dsqlToken({ hostname: DSQL_HOST, credentials: KEY, signingDate: SIGNED_AT, ...o });

function assertRejected(result: VerifyResult, reason: string): void {
  assert.equal(result.ok, false, `expected a rejection (${reason}), got an acceptance`);
  if (!result.ok) assert.equal(result.reason, reason, result.detail);
}

// Every reject case asserts the unchanged token is accepted first: the negative control.
async function rejects(
  make: () => Promise<string>,
  expect: VerifyExpectation,
  variant: (token: string) => { token?: string; expect?: Partial<VerifyExpectation> },
  reason: string,
): Promise<void> {
  const token = await make();
  assert.equal(verifyToken(token, expect).ok, true, "the unchanged token must be accepted");
  const v = variant(token);
  const result = verifyToken(v.token ?? token, { ...expect, ...v.expect });
  assertRejected(result, reason);
  if (!result.ok) assertNoSecrets(result.detail, v.token ?? token);
}

// A detail names what is wrong, never the token, its signature, a secret or a session token.
function assertNoSecrets(detail: string, token: string): void {
  const signature = /X-Amz-Signature=([0-9a-f]+)/.exec(token)?.[1] ?? "no signature";
  for (const secret of [token, signature, KEY.secretAccessKey, TEMP_KEY.secretAccessKey]) {
    assert.ok(!detail.includes(secret), `detail leaks a secret: ${detail}`);
  }
  for (const s of [TEMP_KEY.sessionToken, encodeURIComponent(TEMP_KEY.sessionToken)]) {
    assert.ok(!detail.includes(s), `detail leaks a session token: ${detail}`);
  }
}

const replaceParam = (token: string, name: string, value: string) =>
  token.replace(new RegExp(`([?&]${name}=)[^&]*`), `$1${value}`);

// ---------------------------------------------------------------------------------------------
// verifyToken

test("verifyToken accepts an RDS token and reports its key, action and times", async () => {
  const result = verifyToken(await rds(), rdsExpect());
  assert.deepEqual(result, {
    ok: true,
    accessKeyId: KEY.accessKeyId,
    action: "connect",
    signedAt: SIGNED_AT,
    expiresAt: new Date(SIGNED_AT.getTime() + 900_000),
    ageMs: 1000,
  });
});

test("verifyToken accepts DSQL DbConnectAdmin and DbConnect tokens for the matching roles", async () => {
  const admin = await dsql();
  const role = await dsql({ username: "reporting" });
  assert.equal(verifyToken(admin, dsqlExpect()).ok, true);
  assert.equal(verifyToken(role, dsqlExpect({ user: "reporting" })).ok, true);
  // Negative controls: each token for the other kind of role.
  assertRejected(verifyToken(admin, dsqlExpect({ user: "reporting" })), "action");
  assertRejected(verifyToken(role, dsqlExpect()), "action");
  // An explicit `admin` overrides the user name.
  assert.equal(verifyToken(admin, dsqlExpect({ user: "boss", admin: true })).ok, true);
});

// What `aws rds generate-db-auth-token` (aws-cli 1.45.11, botocore 1.43.11) printed for
// --hostname DB.Cluster-ABC123XYZ.us-east-1.rds.amazonaws.com --port 5432 --username app with KEY:
// the host as typed starts the token, but botocore signed the lowercase host.
const AWS_CLI_MIXED_CASE_TOKEN = "DB.Cluster-ABC123XYZ.us-east-1.rds.amazonaws.com:5432/" +
  "?Action=connect&DBUser=app&X-Amz-Algorithm=AWS4-HMAC-SHA256" +
  "&X-Amz-Credential=AKIDGATEWAYTEST%2F20261129%2Fus-east-1%2Frds-db%2Faws4_request" +
  "&X-Amz-Date=20261129T070224Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host" +
  "&X-Amz-Signature=bb58405160cae10b67806af69fc05af2aacc45bc149a580c20c40cd887c84805";
const AWS_CLI_SIGNED_AT = Date.parse("2026-11-29T07:02:24Z");

test("verifyToken compares host names case-insensitively and verifies the lowercase host, as AWS", async () => {
  // The AWS CLI's token: mixed case in the text, lowercase in the signature.
  const cli = rdsExpect({ now: AWS_CLI_SIGNED_AT + 1000 });
  assert.equal(verifyToken(AWS_CLI_MIXED_CASE_TOKEN, cli).ok, true);
  assert.equal(
    verifyToken(AWS_CLI_MIXED_CASE_TOKEN, { ...cli, hostname: RDS_HOST.toUpperCase() }).ok,
    true,
  );
  assertRejected(verifyToken(AWS_CLI_MIXED_CASE_TOKEN, { ...cli, user: "other" }), "user");
  // Signed for the lowercase name, whatever the case of the text or of the expected name.
  const lower = await presign({
    host: `${RDS_HOST}:5432`,
    params: { Action: "connect", DBUser: "app" },
    service: "rds-db",
    region: "us-east-1",
    signingDate: SIGNED_AT,
    expiresIn: 900,
  }, KEY);
  const upperText = RDS_HOST.toUpperCase() + lower.slice(RDS_HOST.length);
  assert.equal(verifyToken(lower, rdsExpect()).ok, true);
  assert.equal(verifyToken(upperText, rdsExpect()).ok, true);
  assert.equal(verifyToken(lower, rdsExpect({ hostname: RDS_HOST.toUpperCase() })).ok, true);
  assertRejected(verifyToken(lower, rdsExpect({ hostname: "other." + RDS_HOST })), "host");
  // A signature over the mixed-case host is not one over the name AWS verifies.
  const mixedSigned = await presign({
    host: `${RDS_HOST.toUpperCase()}:5432`,
    params: { Action: "connect", DBUser: "app" },
    service: "rds-db",
    region: "us-east-1",
    signingDate: SIGNED_AT,
    expiresIn: 900,
  }, KEY);
  assertRejected(verifyToken(mixedSigned, rdsExpect()), "signature");
});

test("verifyToken accepts tokens of @aws-sdk/rds-signer and rejects them under a wrong secret", async () => {
  const signer = new Signer({
    hostname: RDS_HOST,
    port: 5432,
    username: "app",
    region: "us-east-1",
    credentials: TEMP_KEY,
  });
  const token = await withPinnedClock(SIGNED_AT, () => signer.getAuthToken());
  assert.equal(verifyToken(token, rdsExpect()).ok, true);
  const wrongSecret = new Map([[TEMP_KEY.accessKeyId, { ...TEMP_KEY, secretAccessKey: "x" }]]);
  assertRejected(verifyToken(token, rdsExpect({ credentials: wrongSecret })), "signature");
});

test("verifyToken accepts tokens of @aws-sdk/dsql-signer (admin and role) and rejects altered ones", async () => {
  const signer = new DsqlSigner({
    hostname: DSQL_HOST,
    region: "us-east-1",
    credentials: KEY,
    expiresIn: 3600,
  });
  const admin = await withPinnedClock(SIGNED_AT, () => signer.getDbConnectAdminAuthToken());
  const role = await withPinnedClock(SIGNED_AT, () => signer.getDbConnectAuthToken());
  assert.equal(verifyToken(admin, dsqlExpect()).ok, true);
  assert.equal(verifyToken(role, dsqlExpect({ user: "reporting" })).ok, true);
  const longer = replaceParam(admin, "X-Amz-Expires", "7200");
  assertRejected(verifyToken(longer, dsqlExpect()), "signature");
});

test("verifyToken rejects: malformed", async () => {
  await rejects(rds, rdsExpect(), () => ({ token: "hunter2" }), "malformed");
  await rejects(
    rds,
    rdsExpect(),
    (t) => ({ token: t.replace(/&X-Amz-Date=[^&]*/, "") }),
    "malformed",
  );
  await rejects(rds, rdsExpect(), (t) => ({ token: t + "&DBUser=app" }), "malformed");
  await rejects(
    rds,
    rdsExpect(),
    (t) => ({ token: replaceParam(t, "X-Amz-Date", "2026") }),
    "malformed",
  );
  await rejects(
    rds,
    rdsExpect(),
    (t) => ({ token: t.replace("DBUser=", "DB%ZZUser=") }),
    "malformed",
  );
});

test("verifyToken rejects: algorithm", async () => {
  await rejects(
    rds,
    rdsExpect(),
    (t) => ({ token: replaceParam(t, "X-Amz-Algorithm", "AWS4-HMAC-SHA1") }),
    "algorithm",
  );
});

test("verifyToken rejects: unknown-access-key", async () => {
  await rejects(
    rds,
    rdsExpect(),
    () => ({ expect: { credentials: keys(TEMP_KEY) } }),
    "unknown-access-key",
  );
});

test("verifyToken rejects: session-token, when either side lacks one or they differ", async () => {
  const temp = () => rds({ credentials: TEMP_KEY });
  // The key is configured with a session token; the token has none.
  const noSession = new Map([[KEY.accessKeyId, { ...KEY, sessionToken: "expected" }]]);
  await rejects(rds, rdsExpect(), () => ({ expect: { credentials: noSession } }), "session-token");
  // The token has one; the key is configured without.
  const plain = new Map([[TEMP_KEY.accessKeyId, { secretAccessKey: TEMP_KEY.secretAccessKey }]]);
  await rejects(temp, rdsExpect(), () => ({ expect: { credentials: plain } }), "session-token");
  // Both have one, different.
  const other = new Map([[TEMP_KEY.accessKeyId, { ...TEMP_KEY, sessionToken: "another" }]]);
  await rejects(temp, rdsExpect(), () => ({ expect: { credentials: other } }), "session-token");
});

test("verifyToken rejects: scope (region, service, date)", async () => {
  await rejects(rds, rdsExpect(), () => ({ expect: { region: "eu-west-1" } }), "scope");
  // A token for the DSQL host name signed for the service rds-db, not dsql (rdsToken refuses a
  // DSQL endpoint, so it is signed by hand).
  const rdsDb = await presign({
    host: DSQL_HOST,
    params: { Action: "DbConnectAdmin" },
    service: "rds-db",
    region: "us-east-1",
    signingDate: SIGNED_AT,
    expiresIn: 900,
  }, KEY);
  assert.equal(verifyToken(await dsql(), dsqlExpect()).ok, true);
  assertRejected(verifyToken(rdsDb, dsqlExpect()), "scope");
  await rejects(
    rds,
    rdsExpect(),
    (t) => ({ token: t.replace("%2F20260101%2F", "%2F20260102%2F") }),
    "scope",
  );
});

test("verifyToken rejects: host and port", async () => {
  await rejects(
    rds,
    rdsExpect(),
    () => ({ expect: { hostname: "db.cluster-other.us-east-1.rds.amazonaws.com" } }),
    "host",
  );
  await rejects(rds, rdsExpect(), () => ({ expect: { port: 5433 } }), "port");
  await rejects(
    dsql,
    dsqlExpect(),
    () => ({ expect: { hostname: "zyxwvutsrqponmlkjihgfedcba.dsql.us-east-1.on.aws" } }),
    "host",
  );
});

test("verifyToken rejects: user (RDS DBUser is not the startup user)", async () => {
  await rejects(rds, rdsExpect(), () => ({ expect: { user: "App" } }), "user");
});

test("verifyToken rejects: action", async () => {
  const notConnect = () =>
    presign({
      host: `${RDS_HOST}:5432`,
      params: { Action: "DbConnect", DBUser: "app" },
      service: "rds-db",
      region: "us-east-1",
      signingDate: SIGNED_AT,
      expiresIn: 900,
    }, KEY);
  assert.equal(verifyToken(await rds(), rdsExpect()).ok, true);
  assertRejected(verifyToken(await notConnect(), rdsExpect()), "action");
  await rejects(dsql, dsqlExpect(), () => ({ expect: { user: "reporting" } }), "action");
});

test("verifyToken rejects: expires-range (RDS over 900 s, DSQL over a week)", async () => {
  const sign = (service: string, host: string, params: Record<string, string>, expiresIn: number) =>
    presign({ host, params, service, region: "us-east-1", signingDate: SIGNED_AT, expiresIn }, KEY);
  const rdsParams = { Action: "connect", DBUser: "app" };
  assert.equal(
    verifyToken(await sign("rds-db", `${RDS_HOST}:5432`, rdsParams, 900), rdsExpect()).ok,
    true,
  );
  assertRejected(
    verifyToken(await sign("rds-db", `${RDS_HOST}:5432`, rdsParams, 901), rdsExpect()),
    "expires-range",
  );
  const admin = { Action: "DbConnectAdmin" };
  assert.equal(verifyToken(await sign("dsql", DSQL_HOST, admin, 604800), dsqlExpect()).ok, true);
  assertRejected(
    verifyToken(await sign("dsql", DSQL_HOST, admin, 604801), dsqlExpect()),
    "expires-range",
  );
  await rejects(
    rds,
    rdsExpect(),
    (t) => ({ token: replaceParam(t, "X-Amz-Expires", "0") }),
    "expires-range",
  );
  await rejects(
    rds,
    rdsExpect(),
    (t) => ({ token: replaceParam(t, "X-Amz-Expires", "9e2") }),
    "expires-range",
  );
});

test("verifyToken rejects: not-yet-valid beyond the clock skew, and expired", async () => {
  const skew = 300_000;
  const t = SIGNED_AT.getTime();
  await rejects(rds, rdsExpect(), () => ({ expect: { now: t - skew - 1 } }), "not-yet-valid");
  assert.equal(verifyToken(await rds(), rdsExpect({ now: t - skew })).ok, true);
  await rejects(rds, rdsExpect(), () => ({ expect: { now: t + 900_001 } }), "expired");
  assert.equal(verifyToken(await rds(), rdsExpect({ now: t + 900_000 })).ok, true);
  await rejects(
    rds,
    rdsExpect(),
    () => ({ expect: { now: t - 2000, maxSkewMs: 1000 } }),
    "not-yet-valid",
  );
});

test("verifyToken rejects: signature (wrong secret, altered user, altered session token)", async () => {
  const wrong = new Map([[KEY.accessKeyId, { secretAccessKey: "not the secret" }]]);
  await rejects(rds, rdsExpect(), () => ({ expect: { credentials: wrong } }), "signature");
  await rejects(
    rds,
    rdsExpect(),
    (t) => ({ token: replaceParam(t, "DBUser", "root"), expect: { user: "root" } }),
    "signature",
  );
  await rejects(
    rds,
    rdsExpect(),
    (t) => ({ token: t.replace(/X-Amz-Signature=./, "X-Amz-Signature=0") }),
    "signature",
  );
});

// ---------------------------------------------------------------------------------------------
// The gateway

interface Harness {
  gateway: Gateway;
  upstream: { host: string; port: number; user: string };
}

async function gateway(options: Partial<GatewayOptions> = {}): Promise<Harness> {
  const upstream = await upstreamPostgres();
  const gw = await startGateway({
    endpoint: RDS_HOST,
    credentials: [KEY, TEMP_KEY],
    upstream: { host: upstream.host, port: upstream.port, user: upstream.user },
    tls: { cert, key },
    ...options,
  });
  return { gateway: gw, upstream };
}

type Sql = ReturnType<typeof postgres>;

// A postgres.js client of the gateway; `password` may be a fixed string or a token factory.
function client(gw: Gateway, o: postgres.Options<Record<string, never>> = {}): Sql {
  return postgres({
    host: gw.host,
    port: gw.port,
    user: "app",
    database: "postgres",
    ssl: { ca, servername: RDS_HOST },
    password: () => rdsToken({ hostname: RDS_HOST, username: "app", credentials: KEY }),
    max: 1,
    connect_timeout: 10,
    onnotice: () => {},
    ...o,
  });
}

async function within<T>(h: Harness, sqls: Sql[], fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } finally {
    await Promise.all(sqls.map((s) => s.end({ timeout: 1 })));
    await h.gateway.close();
  }
}

async function errorOf(promise: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await promise;
  } catch (error) {
    return error as { code?: string; message: string };
  }
  throw new Error("expected the query to fail, but it succeeded");
}

test("gateway: relays queries over TLS verified against the test CA as the RDS endpoint", async () => {
  const h = await gateway();
  const sql = client(h.gateway);
  const wrongName = client(h.gateway, { ssl: { ca, servername: "db.example.com" } });
  const noCa = client(h.gateway, { ssl: { servername: RDS_HOST } });
  await within(h, [sql, wrongName, noCa], async () => {
    const [row] = await sql`select 1 as one, current_user as who,
      (select ssl from pg_stat_ssl where pid = pg_backend_pid()) as upstream_ssl`;
    assert.deepEqual({ ...row }, { one: 1, who: h.upstream.user, upstream_ssl: false });
    assert.equal(h.gateway.connections(), 1);
    // Negative controls: the certificate is checked, for the name and against the CA.
    const e1 = await errorOf(wrongName`select 1`);
    assert.match(e1.message, /altname|hostname|certificate/i);
    const e2 = await errorOf(noCa`select 1`);
    assert.match(e2.message, /certificate|self.signed|issuer/i);
    assert.deepEqual(h.gateway.stats.logins.map((l) => [l.accepted, l.tls]), [[true, true]]);
  });
});

test("gateway: megabytes relay intact both ways over TLS", async () => {
  const h = await gateway();
  const sql = client(h.gateway);
  await within(h, [sql], async () => {
    const rows = await sql`select i, repeat(chr(65 + i % 26), 1000) as s
      from generate_series(1, 3000) as i`;
    assert.equal(rows.length, 3000);
    for (const { i, s } of rows) assert.equal(s, String.fromCharCode(65 + i % 26).repeat(1000));
    const big = "pg-iam".repeat(500_000); // 3 MB up
    const [{ n, md5 }] = await sql`select length(${big}) as n, md5(${big}) as md5`;
    assert.equal(n, big.length);
    const [{ expected }] = await sql`select md5(repeat('pg-iam', 500000)) as expected`;
    assert.equal(md5, expected);
  });
});

test("gateway: a bad token fails with 28P01 and the PAM message; the reason is recorded", async () => {
  const h = await gateway();
  const wrongKey = { ...KEY, secretAccessKey: "wrong" };
  const bad = client(h.gateway, {
    password: () => rdsToken({ hostname: RDS_HOST, username: "app", credentials: wrongKey }),
  });
  const good = client(h.gateway);
  await within(h, [bad, good], async () => {
    const error = await errorOf(bad`select 1`);
    assert.equal(error.code, "28P01");
    assert.equal(error.message, 'PAM authentication failed for user "app"');
    assert.deepEqual((await good`select 1 as x`)[0], { x: 1 }); // negative control
    const [rejected, accepted] = h.gateway.stats.logins;
    assert.equal(rejected.accepted, false);
    assert.equal(rejected.reason, "signature");
    assert.equal(accepted.accepted, true);
    assert.equal(accepted.accessKeyId, KEY.accessKeyId);
    assert.equal(accepted.action, "connect");
  });
});

test("gateway: with TLS configured, a plaintext client is refused (no-tls); without, it is served", async () => {
  const h = await gateway();
  const plain = client(h.gateway, { ssl: false });
  const h2 = await gateway({ tls: false });
  const plain2 = client(h2.gateway, { ssl: false });
  const prefer = client(h2.gateway, { ssl: "prefer" });
  try {
    await within(h, [plain], async () => {
      const error = await errorOf(plain`select 1`);
      assert.equal(error.code, "28000");
      assert.match(error.message, /^no pg_hba\.conf entry for host .*user "app".*no encryption$/);
      assert.equal(h.gateway.stats.rejections["no-tls"], 1);
    });
    assert.deepEqual((await plain2`select 1 as x`)[0], { x: 1 });
    // sslmode=prefer: the gateway answers the SSLRequest 'N' and the client goes on in plaintext.
    assert.deepEqual((await prefer`select 2 as x`)[0], { x: 2 });
    assert.deepEqual(h2.gateway.stats.logins.map((l) => [l.accepted, l.tls]), [[true, false], [
      true,
      false,
    ]]);
  } finally {
    await Promise.all([plain2.end(), prefer.end()]);
    await h2.gateway.close();
  }
});

test("gateway: DSQL admin and custom roles, with the upstream user overridden", async () => {
  const h = await gateway({ endpoint: DSQL_HOST });
  const password = (username: string, admin?: boolean) => () =>
    dsqlToken({ hostname: DSQL_HOST, username, admin, credentials: KEY });
  const admin = client(h.gateway, {
    user: "admin",
    password: password("admin"),
    ssl: { ca, servername: DSQL_HOST },
  });
  const role = client(h.gateway, {
    user: "reporting",
    password: password("reporting"),
    ssl: { ca, servername: DSQL_HOST },
  });
  const wrongAction = client(h.gateway, {
    user: "reporting",
    password: password("reporting", true),
    ssl: { ca, servername: DSQL_HOST },
  });
  await within(h, [admin, role, wrongAction], async () => {
    assert.equal(h.gateway.service, "dsql");
    assert.equal(h.gateway.region, "us-east-1");
    assert.deepEqual((await admin`select current_user as u`)[0], { u: h.upstream.user });
    assert.deepEqual((await role`select current_user as u`)[0], { u: h.upstream.user });
    assert.equal((await errorOf(wrongAction`select 1`)).code, "28P01");
    assert.deepEqual(h.gateway.stats.logins.map((l) => [l.user, l.action ?? l.reason]), [
      ["admin", "DbConnectAdmin"],
      ["reporting", "DbConnect"],
      ["reporting", "action"],
    ]);
  });
});

test("gateway: the client's own user goes upstream unless upstream.user overrides it", async () => {
  const h = await gateway();
  const upstream = await upstreamPostgres();
  const h2 = await gateway({ upstream: { host: upstream.host, port: upstream.port } });
  const overridden = client(h.gateway);
  const own = client(h2.gateway);
  try {
    await within(h, [overridden], async () => {
      assert.deepEqual((await overridden`select current_user as u`)[0], { u: upstream.user });
    });
    assert.deepEqual((await own`select current_user as u`)[0], { u: "app" });
  } finally {
    await own.end();
    await h2.gateway.close();
  }
});

test("gateway: session-token keys need tokens carrying that session token", async () => {
  const h = await gateway({ credentials: TEMP_KEY });
  const temp = client(h.gateway, {
    password: () => rdsToken({ hostname: RDS_HOST, username: "app", credentials: TEMP_KEY }),
  });
  const stripped = client(h.gateway, {
    password: () =>
      rdsToken({
        hostname: RDS_HOST,
        username: "app",
        credentials: {
          accessKeyId: TEMP_KEY.accessKeyId,
          secretAccessKey: TEMP_KEY.secretAccessKey,
        },
      }),
  });
  await within(h, [temp, stripped], async () => {
    assert.deepEqual((await temp`select 1 as x`)[0], { x: 1 });
    assert.equal((await errorOf(stripped`select 1`)).code, "28P01");
    assert.equal(h.gateway.stats.logins[1].reason, "session-token");
  });
});

test("gateway: moving its clock past a token's lifetime expires the token", async () => {
  const h = await gateway();
  const token = await rdsToken({
    hostname: RDS_HOST,
    username: "app",
    credentials: KEY,
    expiresIn: 60,
  });
  const first = client(h.gateway, { password: token });
  const second = client(h.gateway, { password: token });
  await within(h, [first, second], async () => {
    assert.deepEqual((await first`select 1 as x`)[0], { x: 1 }); // the same token, accepted before
    h.gateway.clockOffsetMs = 61_000;
    // The wall clock first: read after the gateway's, it may have moved a millisecond (a flake).
    const wall = Date.now();
    assert.ok(h.gateway.now() - wall >= 61_000);
    assert.equal((await errorOf(second`select 1`)).code, "28P01");
    const [ok, expired] = h.gateway.stats.logins;
    assert.equal(ok.accepted, true);
    assert.ok(ok.tokenAgeMs! >= 0 && ok.tokenAgeMs! < 60_000);
    assert.equal(expired.reason, "expired");
    // And back: the offset is all that changed.
    h.gateway.clockOffsetMs = 0;
    const third = client(h.gateway, { password: token });
    try {
      assert.deepEqual((await third`select 3 as x`)[0], { x: 3 });
    } finally {
      await third.end();
    }
  });
});

test("gateway: clockOffsetMs option sets the initial clock; a future token is not yet valid", async () => {
  const h = await gateway({ clockOffsetMs: -3_600_000 });
  const sql = client(h.gateway);
  await within(h, [sql], async () => {
    assert.equal((await errorOf(sql`select 1`)).code, "28P01");
    assert.equal(h.gateway.stats.logins[0].reason, "not-yet-valid");
    h.gateway.clockOffsetMs = 0;
    assert.deepEqual((await sql`select 1 as x`)[0], { x: 1 });
  });
});

test("gateway: cancel requests reach the upstream (57014), counted in stats", async () => {
  const h = await gateway();
  const sql = client(h.gateway);
  await within(h, [sql], async () => {
    await sql`select 1`; // connected, so the cancel key is known
    assert.deepEqual((await sql`select pg_sleep(0) as x`)[0], { x: "" }); // not cancelled
    assert.equal(h.gateway.stats.cancels, 0);
    const query = sql`select pg_sleep(10) -- to cancel`;
    query.execute();
    // A cancel reaching an idle backend is dropped: wait (through a second, watching client of
    // the gateway) until the sleep is running.
    const watcher = client(h.gateway);
    try {
      for (;;) {
        const [{ n }] = await watcher`select count(*)::int as n from pg_stat_activity
          where state = 'active' and query like 'select pg_sleep(10)%'`;
        if (n > 0) break;
      }
    } finally {
      await watcher.end();
    }
    query.cancel();
    const error = await errorOf(query);
    assert.equal(error.code, "57014");
    assert.equal(h.gateway.stats.cancels, 1);
    assert.equal(h.gateway.stats.logins.length, 2); // a cancel is not a login
  });
});

test("gateway: disconnectAll drops every relayed connection; clients reconnect with fresh tokens", async () => {
  const h = await gateway();
  const sql = client(h.gateway, { max: 2 });
  await within(h, [sql], async () => {
    const a = await sql.reserve();
    const b = await sql.reserve();
    // Negative control: both connections are alive before.
    const [{ pid: pidA }] = await a`select pg_backend_pid() as pid`;
    const [{ pid: pidB }] = await b`select pg_backend_pid() as pid`;
    a.release();
    b.release();
    assert.equal(h.gateway.connections(), 2);
    assert.equal(h.gateway.disconnectAll(), 2);
    assert.equal(h.gateway.connections(), 0);
    // (Querying a dropped reserved connection crashes postgres.js, so the pool is used instead.)
    // Give the pool a moment to see its sockets close, then it logs in again with a new token.
    await new Promise((resolve) => setTimeout(resolve, 100));
    let pid: number | undefined;
    for (let i = 0; i < 5 && pid === undefined; i++) {
      pid = await sql`select pg_backend_pid() as pid`.then(([row]) => row.pid, () => undefined);
    }
    assert.ok(pid !== undefined && pid !== pidA && pid !== pidB, "a new upstream session");
    assert.equal(h.gateway.stats.accepted, 3);
    assert.equal(h.gateway.connections(), 1);
    assert.equal(h.gateway.disconnectAll(), 1);
  });
});

test("gateway: an unreachable upstream is a FATAL 08006 naming it", async () => {
  // Port 1 (tcpmux), where nothing listens: a port found free and closed again could be taken by
  // another test's server before the gateway connects (seen: 08004, a refused upstream login).
  const port = 1;
  const h = await gateway({ upstream: { host: "127.0.0.1", port } });
  const sql = client(h.gateway);
  await within(h, [sql], async () => {
    const error = await errorOf(sql`select 1`);
    assert.equal(error.code, "08006");
    assert.ok(error.message.includes(`127.0.0.1:${port}`), error.message);
    assert.equal(h.gateway.stats.accepted, 1); // the token itself was fine
  });
});

test("gateway: stats count accepted and rejected logins in order, and onLogin sees each", async () => {
  const seen: string[] = [];
  const h = await gateway({ onLogin: (l) => seen.push(l.accepted ? "ok" : l.reason!) });
  const good = client(h.gateway);
  const otherUser = client(h.gateway, { user: "admin" }); // a token for "app"
  const junk = client(h.gateway, { password: "not a token" });
  await within(h, [good, otherUser, junk], async () => {
    assert.deepEqual({ ...h.gateway.stats }, {
      accepted: 0,
      rejected: 0,
      rejections: {},
      logins: [],
      cancels: 0,
      refused: { "53300": 0, "53400": 0 },
    });
    await good`select 1`;
    await errorOf(otherUser`select 1`);
    await errorOf(junk`select 1`);
    const { stats } = h.gateway;
    assert.equal(stats.accepted, 1);
    assert.equal(stats.rejected, 2);
    assert.deepEqual(stats.rejections, { user: 1, malformed: 1 });
    assert.deepEqual(seen, ["ok", "user", "malformed"]);
    assert.deepEqual(stats.logins.map((l) => [l.user, l.database]), [
      ["app", "postgres"],
      ["admin", "postgres"],
      ["app", "postgres"],
    ]);
    for (const login of stats.logins) {
      assert.ok(login.at instanceof Date);
      if (!login.accepted) {
        assert.ok(!login.detail!.includes("X-Amz-Signature"), login.detail ?? "");
      }
    }
  });
});

// ---- raw protocol: split and pipelined bytes, resets, requests postgres.js never sends ----

class RawClient {
  readonly socket: net.Socket;
  readonly reader: MessageReader = new MessageReader();
  #closed = false;
  #wake: (() => void) | undefined;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Uint8Array) => {
      this.reader.push(chunk);
      this.#wake?.();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      this.#closed = true;
      this.#wake?.();
    });
  }

  /** Connects to `gw`, from `localAddress` when given (127.0.0.2 …: another client address). */
  static connect(gw: Gateway, localAddress?: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(
        { port: gw.port, host: gw.host, ...(localAddress ? { localAddress } : {}) },
        () => resolve(new RawClient(socket)),
      );
      socket.once("error", reject);
    });
  }

  /** The next message, or undefined when the connection closed. */
  async message(): Promise<Message | undefined> {
    for (;;) {
      const m = this.reader.message();
      if (m) return m;
      if (this.#closed) return undefined;
      await new Promise<void>((r) => (this.#wake = r));
    }
  }

  /** The single byte answering an SSLRequest or GSSENCRequest; what follows it stays unread. */
  async byte(): Promise<string> {
    for (;;) {
      const rest = this.reader.rest();
      if (rest.length) {
        this.reader.push(rest.subarray(1));
        return String.fromCharCode(rest[0]);
      }
      if (this.#closed) return "";
      await new Promise<void>((r) => (this.#wake = r));
    }
  }

  /** Whether the connection closed. */
  get isClosed(): boolean {
    return this.#closed;
  }

  async closed(): Promise<void> {
    while (!this.#closed) await new Promise<void>((r) => (this.#wake = r));
  }

  /** Writes each chunk separately, waiting a turn of the event loop between them. */
  async writeSplit(bytes: Uint8Array, size: number): Promise<void> {
    for (let i = 0; i < bytes.length; i += size) {
      this.socket.write(bytes.subarray(i, i + size));
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }
}

const startup = (user: string) =>
  startupMessage(new Map([["user", user], ["database", "postgres"]]));
const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
};
const query = (text: string) => {
  const body = new TextEncoder().encode(text + "\0");
  const m = new Uint8Array(5 + body.length);
  m[0] = "Q".charCodeAt(0);
  new DataView(m.buffer).setInt32(1, 4 + body.length);
  m.set(body, 5);
  return m;
};

// Reads messages until ReadyForQuery; returns their type letters.
async function untilReady(c: RawClient): Promise<string> {
  let types = "";
  for (let m = await c.message(); m; m = await c.message()) {
    types += String.fromCharCode(m.type);
    if (m.type === "Z".charCodeAt(0)) break;
  }
  return types;
}

/** A raw client logged in through `gw` (without TLS) and at ReadyForQuery: one session. */
async function session(gw: Gateway, localAddress?: string): Promise<RawClient> {
  const c = await RawClient.connect(gw, localAddress);
  const token = await rdsToken({ hostname: RDS_HOST, username: "app", credentials: KEY });
  c.socket.write(concat(startup("app"), passwordMessage(token)));
  assert.match(await untilReady(c), /^R.*Z$/);
  return c;
}

test("gateway: messages split into one-byte chunks, and a query pipelined with the password", async () => {
  const h = await gateway({ tls: false });
  const token = await rdsToken({ hostname: RDS_HOST, username: "app", credentials: KEY });
  const split = await RawClient.connect(h.gateway);
  const piped = await RawClient.connect(h.gateway);
  try {
    await split.writeSplit(startup("app"), 1);
    const request = await split.message();
    assert.equal(authCode(request!.body), 3); // AuthenticationCleartextPassword
    await split.writeSplit(passwordMessage(token), 7);
    const ok = await split.message();
    assert.equal(String.fromCharCode(ok!.type), "R");
    assert.equal(authCode(ok!.body), 0);
    assert.match(await untilReady(split), /^[SK]*Z$/); // ParameterStatus…, BackendKeyData, Ready

    // Everything in one write: startup, then (unprompted) password and a query.
    piped.socket.write(concat(startup("app"), passwordMessage(token), query("select 41 + 1")));
    assert.equal(authCode((await piped.message())!.body), 3);
    assert.equal(authCode((await piped.message())!.body), 0);
    assert.match(await untilReady(piped), /Z$/);
    assert.equal(await untilReady(piped), "TDCZ"); // RowDescription, DataRow, Complete, Ready
    assert.equal(h.gateway.stats.accepted, 2);
  } finally {
    split.socket.destroy();
    piped.socket.destroy();
    await h.gateway.close();
  }
});

test("gateway: clients vanishing mid-handshake do not disturb it", async () => {
  const h = await gateway();
  const sql = client(h.gateway);
  await within(h, [sql], async () => {
    // Half a startup packet, then a reset.
    const half = await RawClient.connect(h.gateway);
    half.socket.write(startup("app").subarray(0, 5));
    half.socket.resetAndDestroy?.() ?? half.socket.destroy();
    // An SSLRequest, then gone before the TLS handshake.
    const tlsGone = await RawClient.connect(h.gateway);
    tlsGone.socket.write(new Uint8Array([0, 0, 0, 8, 4, 210, 22, 47]));
    assert.equal(await tlsGone.byte(), "S");
    tlsGone.socket.destroy();
    // Garbage: an impossible length. The gateway just closes.
    const garbage = await RawClient.connect(h.gateway);
    garbage.socket.write(new Uint8Array([0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]));
    await garbage.closed();
    // Negative control: the gateway still serves a login.
    assert.deepEqual((await sql`select 1 as x`)[0], { x: 1 });
    assert.equal(h.gateway.stats.accepted, 1);
  });
});

test("gateway: a client that closes instead of sending a password is recorded as no-password", async () => {
  const h = await gateway({ tls: false });
  try {
    const c = await RawClient.connect(h.gateway);
    c.socket.write(startup("app"));
    assert.equal(authCode((await c.message())!.body), 3);
    c.socket.end();
    await c.closed();
    // The gateway records it once it sees the close; wait for that without a timing assumption.
    while (h.gateway.stats.logins.length === 0) await new Promise((r) => setTimeout(r, 5));
    assert.equal(h.gateway.stats.logins[0].reason, "no-password");
    // Negative control: an empty password is no-password too, a wrong one is not.
    const empty = await RawClient.connect(h.gateway);
    empty.socket.write(concat(startup("app"), passwordMessage("")));
    await empty.message();
    const error = await empty.message();
    assert.equal(errorFields(error!.body).get("C"), "28P01");
    const wrong = await RawClient.connect(h.gateway);
    wrong.socket.write(concat(startup("app"), passwordMessage("x")));
    await wrong.message();
    await wrong.message();
    assert.deepEqual(h.gateway.stats.logins.map((l) => l.reason), [
      "no-password",
      "no-password",
      "malformed",
    ]);
  } finally {
    await h.gateway.close();
  }
});

test("gateway: GSSENCRequest is declined with N, then a startup goes on as usual", async () => {
  const h = await gateway({ tls: false });
  try {
    const c = await RawClient.connect(h.gateway);
    const gss = new Uint8Array(8);
    new DataView(gss.buffer).setInt32(0, 8);
    new DataView(gss.buffer).setInt32(4, GSSENC_REQUEST);
    c.socket.write(gss);
    assert.equal(await c.byte(), "N");
    c.socket.write(startup("app"));
    assert.equal(authCode((await c.message())!.body), 3);
    // Without TLS configured, an SSLRequest is declined too.
    const s = await RawClient.connect(h.gateway);
    s.socket.write(new Uint8Array([0, 0, 0, 8, 4, 210, 22, 47]));
    assert.equal(await s.byte(), "N");
    c.socket.destroy();
    s.socket.destroy();
  } finally {
    await h.gateway.close();
  }
});

test("gateway: close() stops listening and drops connections", async () => {
  const h = await gateway();
  const sql = client(h.gateway);
  try {
    await sql`select 1`;
    const { host, port } = h.gateway;
    assert.equal(h.gateway.connections(), 1);
    await h.gateway.close();
    assert.equal(h.gateway.connections(), 0);
    const refused = await new Promise<string>((resolve) => {
      const s = net.connect(port, host, () => {
        s.destroy();
        resolve("connected");
      });
      s.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    assert.equal(refused, "ECONNREFUSED");
  } finally {
    await sql.end({ timeout: 1 });
  }
});

test("gateway: defaults come from the endpoint name; listen defaults to 127.0.0.1", async () => {
  const h = await gateway();
  await h.gateway.close();
  assert.equal(h.gateway.endpoint, RDS_HOST);
  assert.equal(h.gateway.service, "rds");
  assert.equal(h.gateway.region, "us-east-1");
  assert.equal(h.gateway.host, "127.0.0.1");
  assert.ok(h.gateway.port > 0);
  assert.equal(h.gateway.clockOffsetMs, 0);
  const custom = await gateway({
    endpoint: "db.internal.example",
    service: "rds",
    region: "eu-west-1",
    port: 6543,
  });
  await within(custom, [], async () => {
    assert.equal(custom.gateway.region, "eu-west-1");
    const token = await rdsToken({
      hostname: "db.internal.example",
      port: 6543,
      region: "eu-west-1",
      username: "app",
      credentials: KEY,
    });
    const sql = client(custom.gateway, { password: token, ssl: false });
    const wrongPort = client(custom.gateway, {
      password: () =>
        rdsToken({
          hostname: "db.internal.example",
          region: "eu-west-1",
          username: "app",
          credentials: KEY,
        }),
      ssl: { ca, servername: "localhost" },
    });
    try {
      assert.equal((await errorOf(sql`select 1`)).code, "28000"); // TLS is on
      assert.equal((await errorOf(wrongPort`select 1`)).code, "28P01");
      assert.equal(custom.gateway.stats.logins[1].reason, "port");
    } finally {
      await Promise.all([sql.end(), wrongPort.end()]);
    }
  });
});

test("startGateway: bad options are errors naming the option and the value, never a secret", async () => {
  const upstream = { host: "127.0.0.1", port: 5432 };
  const valid: GatewayOptions = { endpoint: RDS_HOST, credentials: KEY, upstream, tls: false };
  const secret = "do-not-print-this-secret";
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ endpoint: undefined }, /"endpoint" option is required/],
    [{ endpoint: "https://x.example" }, /"endpoint".*scheme/],
    [{ endpoint: "db.example.com" }, /"service" option is required/],
    [{ endpoint: "db.example.com", service: "rds" }, /"region" option is required/],
    [{ service: "dsql" }, /"service" option "dsql" contradicts/],
    [{ service: "mysql" }, /"service" option must be "rds" or "dsql", got "mysql"/],
    [{ region: "eu-west-1" }, /"region" option "eu-west-1" contradicts/],
    [{ region: "moon" }, /"region" option is not an AWS region name.*"moon"/],
    [{ port: 0 }, /"port" option must be an integer from 1 to 65535, got 0/],
    [{ credentials: undefined }, /"credentials" option is required/],
    [{ credentials: [] }, /"credentials" option must not be an empty array/],
    [
      { credentials: [KEY, { accessKeyId: "A B", secretAccessKey: secret }] },
      /"credentials\[1\]\.accessKeyId".*"A B"/,
    ],
    [
      { credentials: { accessKeyId: "AKID", secretAccessKey: 42 } },
      /"credentials\.secretAccessKey".*got 42/,
    ],
    [
      { credentials: { accessKeyId: "AKID", secretAccessKey: secret, sessionToken: "" } },
      /"credentials\.sessionToken"/,
    ],
    [{ credentials: [KEY, KEY] }, /listed twice/],
    [
      { credentials: { accessKeyId: "AKID/with/slashes", secretAccessKey: secret } },
      /"credentials\.accessKeyId".*not shown: a secret access key\?/,
    ],
    [{ upstream: undefined }, /"upstream" option must be an object/],
    [{ upstream: { host: "127.0.0.1" } }, /"upstream\.port" option is required/],
    [{ upstream: { host: "127.0.0.1", port: 70000 } }, /"upstream\.port".*70000/],
    [{ upstream: { host: "pg:5432", port: 5432 } }, /"upstream\.host".*port/],
    [{ upstream: { ...upstream, user: 7 } }, /"upstream\.user".*7/],
    [
      { upstream: { ...upstream, password: { secret } } },
      /"upstream\.password" option must be a string/,
    ],
    [{ tls: undefined }, /"tls" option is required/],
    [{ tls: true }, /"tls" option must be \{ cert, key \} or false, got true/],
    [{ tls: { cert: "nope", key } }, /"tls\.cert" option must be a PEM certificate, got a string/],
    [{ tls: { cert, key: secret } }, /"tls\.key" option must be a PEM private key, got a string/],
    [{ listen: { port: -1 } }, /"listen\.port".*-1/],
    [{ listen: { host: 5 } }, /"listen\.host".*5/],
    [{ clockOffsetMs: NaN }, /"clockOffsetMs" option must be a finite number.*NaN/],
    [{ onLogin: "log" }, /"onLogin" option must be a function/],
    [{ maxConnections: 0 }, /"maxConnections" option must be an integer of at least 1, got 0/],
    [{ maxConnections: "10" }, /"maxConnections" option must be a number, got "10"/],
    [{ maxStartups: 0 }, /"maxStartups" option must be an integer of at least 1, got 0/],
    [{ maxStartups: 1.5 }, /"maxStartups" option must be an integer of at least 1, got 1\.5/],
    [
      { maxStartupsPerAddress: "5" },
      /"maxStartupsPerAddress" option must be a number, got "5"/,
    ],
    [
      { maxStartupsPerAddress: -1 },
      /"maxStartupsPerAddress" option must be an integer of at least 1, got -1/,
    ],
    [
      { authenticationTimeoutMs: 2 ** 31 },
      /"authenticationTimeoutMs" option must be an integer from 1 to 2147483647, got 2147483648/,
    ],
    [{ authenticationTimeoutMs: 0.5 }, /"authenticationTimeoutMs".*got 0\.5/],
    [{ recentLogins: -1 }, /"recentLogins" option must be an integer of at least 0, got -1/],
    [{ maxConnectionRate: 0 }, /"maxConnectionRate" option must be a positive number.*got 0/],
    [{ maxConnectionRate: "100" }, /"maxConnectionRate" option must be a positive number.*"100"/],
    [{ connectionBurst: 0 }, /"connectionBurst" option must be an integer of at least 1, got 0/],
  ];
  for (const [change, pattern] of cases) {
    const error = await errorOf(startGateway({ ...valid, ...change } as GatewayOptions));
    assert.ok(error instanceof TypeError || error instanceof RangeError, `${pattern}: ${error}`);
    assert.match(error.message, pattern);
    assert.ok(!error.message.includes(secret), error.message);
    assert.ok(!error.message.includes(KEY.secretAccessKey), error.message);
  }
  assert.equal(
    (await errorOf(startGateway(null as unknown as GatewayOptions))).constructor,
    TypeError,
  );
  // Negative control: the valid options start a gateway (nothing connects to port 5432 here).
  const gw = await startGateway(valid);
  await gw.close();
  // The clock offset is checked when set, too.
  gw.clockOffsetMs = 5;
  assert.equal(gw.clockOffsetMs, 5);
  assert.throws(() => (gw.clockOffsetMs = NaN), /"clockOffsetMs" option must be a finite number/);
  assert.equal(gw.clockOffsetMs, 5);
});

// ---- hostile clients: PostgreSQL's limits (issue 11) ----

const SSL = 80877103;
const request = (code: number) => {
  const packet = new Uint8Array(8);
  new DataView(packet.buffer).setInt32(0, 8);
  new DataView(packet.buffer).setInt32(4, code);
  return packet;
};
// A startup-phase packet with any version code and body, framed by hand.
const packetOf = (code: number, body: string) => {
  const bytes = new TextEncoder().encode(body);
  const packet = new Uint8Array(8 + bytes.length);
  new DataView(packet.buffer).setInt32(0, packet.length);
  new DataView(packet.buffer).setInt32(4, code);
  packet.set(bytes, 8);
  return packet;
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// Waits until `check()` holds, polling; fails after `ms`.
async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  for (const started = Date.now(); !check();) {
    if (Date.now() - started > ms) throw new Error(`${what}: not after ${ms} ms`);
    await sleep(5);
  }
}

async function timeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

// The next message, which must be a FATAL ErrorResponse; then the connection must close.
async function fatal(c: RawClient): Promise<{ code?: string; message?: string; detail?: string }> {
  const m = await timeout(c.message(), 5000, "an ErrorResponse");
  assert.ok(m, "expected an ErrorResponse, got a close");
  assert.equal(String.fromCharCode(m.type), "E");
  const fields = errorFields(m.body);
  assert.equal(fields.get("S"), "FATAL");
  await timeout(c.closed(), 5000, "the close after a FATAL");
  return { code: fields.get("C"), message: fields.get("M"), detail: fields.get("D") };
}

// Connects, negotiates TLS with the test CA, and reads and writes inside it.
async function tlsClient(gw: Gateway): Promise<RawClient> {
  const raw = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(gw.port, gw.host, () => resolve(s));
    s.once("error", reject);
  });
  raw.write(request(SSL));
  const answer = await new Promise<Uint8Array>((resolve) => raw.once("data", resolve));
  assert.equal(String.fromCharCode(answer[0]), "S");
  const secure = tls.connect({ socket: raw, ca, servername: RDS_HOST });
  await new Promise((resolve, reject) => {
    secure.once("secureConnect", resolve);
    secure.once("error", reject);
  });
  return new RawClient(secure);
}

test("gateway: one SSLRequest and one GSSENCRequest per connection; a repeat is FATAL 0A000, as PostgreSQL", async () => {
  const h = await gateway({ tls: false });
  try {
    const gssTwice = await RawClient.connect(h.gateway);
    gssTwice.socket.write(request(GSSENC_REQUEST));
    assert.equal(await gssTwice.byte(), "N");
    gssTwice.socket.write(request(GSSENC_REQUEST));
    assert.deepEqual(await fatal(gssTwice), {
      code: "0A000",
      message: "unsupported frontend protocol 1234.5680: server supports 3.0 to 3.0",
      detail: undefined,
    });

    const sslAgain = await RawClient.connect(h.gateway);
    sslAgain.socket.write(request(SSL));
    assert.equal(await sslAgain.byte(), "N");
    sslAgain.socket.write(request(GSSENC_REQUEST));
    assert.equal(await sslAgain.byte(), "N");
    sslAgain.socket.write(request(SSL));
    assert.equal(
      (await fatal(sslAgain)).message,
      "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0",
    );

    // Negative control: each once, in either order, then a startup goes on.
    const both = await RawClient.connect(h.gateway);
    both.socket.write(request(GSSENC_REQUEST));
    assert.equal(await both.byte(), "N");
    both.socket.write(request(SSL));
    assert.equal(await both.byte(), "N");
    both.socket.write(startup("app"));
    assert.equal(authCode((await both.message())!.body), 3);
    both.socket.destroy();
    assert.equal(h.gateway.stats.logins.length, 0);
  } finally {
    await h.gateway.close();
  }
});

test("gateway: inside TLS, a second SSLRequest or a GSSENCRequest is FATAL 0A000, as PostgreSQL", async () => {
  const h = await gateway();
  try {
    const ssl = await tlsClient(h.gateway);
    ssl.socket.write(request(SSL));
    assert.deepEqual(await fatal(ssl), {
      code: "0A000",
      message: "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0",
      detail: undefined,
    });
    const gss = await tlsClient(h.gateway);
    gss.socket.write(request(GSSENC_REQUEST));
    assert.equal(
      (await fatal(gss)).message,
      "unsupported frontend protocol 1234.5680: server supports 3.0 to 3.0",
    );
    // Negative control: a startup inside TLS is asked for its password.
    const ok = await tlsClient(h.gateway);
    ok.socket.write(startup("app"));
    assert.equal(authCode((await ok.message())!.body), 3);
    ok.socket.destroy();
  } finally {
    await h.gateway.close();
  }
});

test("gateway: a client flooding GSSENCRequests without reading the answers is refused at once; logins go on", async () => {
  const h = await gateway({ tls: false });
  const sql = client(h.gateway, { ssl: false });
  await within(h, [sql], async () => {
    const flood = await RawClient.connect(h.gateway);
    // 131,072 requests in one write, none of the answers read.
    const requests = new Uint8Array(1 << 20);
    for (let i = 0; i < requests.length; i += 8) requests.set(request(GSSENC_REQUEST), i);
    flood.socket.write(requests);
    assert.deepEqual((await sql`select 1 as x`)[0], { x: 1 });
    await timeout(flood.closed(), 5000, "the flooding connection's close");
    // One answer, then PostgreSQL's refusal of what was sent before it: unencrypted data.
    assert.equal(await flood.byte(), "N");
    const m = await flood.message();
    assert.equal(String.fromCharCode(m!.type), "E");
    const fields = errorFields(m!.body);
    assert.equal(fields.get("C"), "08P01");
    assert.equal(
      fields.get("M"),
      "received unencrypted data after GSSAPI encryption request",
    );
    assert.equal(flood.reader.rest().length, 0);
    // The flood's connection is gone; the pool's, relayed, is the one left.
    await until(() => h.gateway.clients() === 1, "the flood's connection counted");
    assert.equal(h.gateway.connections(), 1);
  });
});

test("gateway: input pipelined behind the password waits in the client's TCP buffers until the upstream login is done, then all of it is relayed", async () => {
  // A fake upstream that holds the login until released, then counts what it is sent.
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let received = 0;
  const upstream = net.createServer((socket) => {
    socket.on("error", () => {});
    const reader = new MessageReader();
    let started = false;
    socket.on("data", (chunk: Uint8Array) => {
      if (started) return void (received += chunk.length);
      reader.push(chunk);
      if (reader.startup() === undefined) return;
      started = true;
      received += reader.rest().length;
      void released.then(() =>
        socket.write(concat(
          new Uint8Array([82, 0, 0, 0, 8, 0, 0, 0, 0]), // AuthenticationOk
          new Uint8Array([90, 0, 0, 0, 5, 73]), // ReadyForQuery, idle
        ))
      );
    });
  });
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  const port = (upstream.address() as net.AddressInfo).port;
  const h = await gateway({ tls: false, upstream: { host: "127.0.0.1", port } });
  const c = await RawClient.connect(h.gateway);
  try {
    const token = await rdsToken({ hostname: RDS_HOST, username: "app", credentials: KEY });
    const pipelined = new Uint8Array(64 << 20).fill(7);
    c.socket.write(concat(startup("app"), passwordMessage(token)));
    assert.equal(authCode((await c.message())!.body), 3);
    // 64 KiB at a time, each once the previous one is in the kernel: what the gateway reads, and
    // its TCP buffers hold, gets through; then a write waits.
    let flushed = 0;
    while (flushed < pipelined.length) {
      const chunk = pipelined.subarray(flushed, flushed + (1 << 16));
      const written = new Promise<boolean>((resolve) => c.socket.write(chunk, () => resolve(true)));
      if (!await Promise.race([written, sleep(500).then(() => false)])) break;
      flushed += chunk.length;
    }
    assert.ok(flushed < 32 << 20, `the gateway let ${flushed >> 20} MiB in ahead of the login`);
    c.socket.write(pipelined.subarray(flushed + (1 << 16)));
    assert.equal(received, 0);
    // Once logged in upstream, the relay resumes the client: every byte gets through.
    release();
    assert.equal(authCode((await c.message())!.body), 0);
    assert.equal(String.fromCharCode((await c.message())!.type), "Z");
    for (let i = 0; i < 300 && received < pipelined.length; i++) await sleep(100);
    assert.equal(received, pipelined.length);
    assert.equal(h.gateway.connections(), 1);
  } finally {
    c.socket.destroy();
    await h.gateway.close();
    await new Promise((resolve) => upstream.close(resolve));
  }
});

test("gateway: a client that does not read is dropped, not written to without end", async () => {
  // A fake upstream that sends 16 MiB of NoticeResponses during its login, then holds it.
  const notice = new Uint8Array(1 << 18).fill(65);
  notice[0] = 78; // 'N'
  new DataView(notice.buffer).setInt32(1, notice.length - 1);
  notice[notice.length - 1] = 0;
  let upstreamClosed = false;
  const upstream = net.createServer((socket) => {
    socket.on("error", () => {});
    socket.once("data", () => {
      for (let i = 0; i < 64; i++) socket.write(notice);
    });
    socket.once("close", () => (upstreamClosed = true));
  });
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  const port = (upstream.address() as net.AddressInfo).port;
  const h = await gateway({ tls: false, upstream: { host: "127.0.0.1", port } });
  const token = await rdsToken({ hostname: RDS_HOST, username: "app", credentials: KEY });
  const socket = net.connect(h.gateway.port, h.gateway.host);
  socket.on("error", () => {});
  socket.pause(); // never reads
  try {
    socket.write(concat(startup("app"), passwordMessage(token)));
    await until(() => h.gateway.stats.accepted === 1, "the login");
    await until(() => h.gateway.clients() === 0, "the non-reading client dropped", 10_000);
    await until(() => upstreamClosed, "its upstream connection dropped with it");
  } finally {
    socket.destroy();
    await h.gateway.close();
    await new Promise((resolve) => upstream.close(resolve));
  }
});

test("gateway: the authentication deadline is fixed from the connection, whatever the client sends; relayed connections have none", async () => {
  const h = await gateway({ tls: false, authenticationTimeoutMs: 300 });
  const sql = client(h.gateway, { ssl: false });
  await within(h, [sql], async () => {
    // A byte every 50 ms: an idle timeout would never fire.
    const slow = await RawClient.connect(h.gateway);
    const started = Date.now();
    const bytes = startup("app");
    for (let i = 0; i < 60 && !slow.isClosed; i++) {
      slow.socket.write(bytes.subarray(i % bytes.length, i % bytes.length + 1));
      await sleep(50);
    }
    assert.ok(slow.isClosed, "the trickling connection is still open after 3 s");
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 290, `closed after ${elapsed} ms, before the deadline`);
    assert.equal(slow.reader.rest().length, 0); // closed without a word, as the server

    // A client that never sends its password is recorded as such.
    const silent = await RawClient.connect(h.gateway);
    silent.socket.write(startup("app"));
    assert.equal(authCode((await silent.message())!.body), 3);
    await timeout(silent.closed(), 3000, "the close at the deadline");
    await until(() => h.gateway.stats.logins.length === 1, "the login recorded");
    assert.equal(h.gateway.stats.logins[0].reason, "no-password");
    assert.match(h.gateway.stats.logins[0].detail!, /authentication timeout \(300 ms/);

    // Negative control: a relayed connection outlives the deadline.
    assert.deepEqual((await sql`select 1 as x`)[0], { x: 1 });
    await sleep(500);
    assert.deepEqual((await sql`select 2 as x`)[0], { x: 2 });
    assert.equal(h.gateway.stats.accepted, 1);
  });
});

test("gateway: beyond maxConnections sessions a connection gets FATAL 53300 after its startup packet, as PostgreSQL, and is closed; a freed slot serves again", async () => {
  const h = await gateway({ tls: false, maxConnections: 2 });
  // postgres.js 4 asks again on 53300 until connect_timeout, then answers queries with that failure
  // until its backoff has passed: no backoff, so the slot freed below serves the next query.
  const sql = client(h.gateway, { ssl: false, connect_timeout: 1, backoff: () => 0 });
  await within(h, [sql], async () => {
    const a = await session(h.gateway);
    const b = await session(h.gateway);
    assert.equal(h.gateway.connections(), 2);
    assert.equal(h.gateway.startups(), 0);
    // Answered once it says who it is, as PostgreSQL (which checks in ProcessStartupPacket).
    const c = await RawClient.connect(h.gateway);
    c.socket.write(startup("app"));
    assert.deepEqual(await fatal(c), {
      code: "53300",
      message: "sorry, too many clients already",
      detail: undefined,
    });
    // postgres.js reads it as the server's error.
    assert.equal((await errorOf(sql`select 1`)).code, "53300");
    assert.equal(h.gateway.clients(), 2);
    assert.equal(h.gateway.stats.logins.length, 2); // the two sessions' only
    a.socket.destroy();
    await until(() => h.gateway.clients() === 1, "the closed connection uncounted");
    assert.deepEqual((await sql`select 1 as x`)[0], { x: 1 });
    assert.equal(h.gateway.clients(), 2);
    b.socket.destroy();
  });
});

test("gateway: a connection logging in holds no session slot: when the last one is taken while it logs in, its accepted token is answered 53300 and the slot stays with the session", async () => {
  const h = await gateway({ tls: false, maxConnections: 1 });
  await within(h, [], async () => {
    // Asked for its password while the slot is free.
    const early = await RawClient.connect(h.gateway);
    early.socket.write(startup("app"));
    assert.equal(authCode((await early.message())!.body), 3);
    // Meanwhile another client logs in and takes the one session slot (from another address:
    // with maxConnections 1, one connection logging in per address is the default).
    const taken = await session(h.gateway, "127.0.0.2");
    assert.equal(h.gateway.connections(), 1);
    const token = await rdsToken({ hostname: RDS_HOST, username: "app", credentials: KEY });
    early.socket.write(passwordMessage(token));
    assert.deepEqual(await fatal(early), {
      code: "53300",
      message: "sorry, too many clients already",
      detail: undefined,
    });
    assert.equal(h.gateway.stats.accepted, 2); // its token was good
    assert.equal(h.gateway.stats.refused["53300"], 1);
    await until(() => h.gateway.clients() === 1, "the refused connection gone");
    assert.equal(h.gateway.connections(), 1);
    // The session goes on.
    taken.socket.write(query("select 1"));
    assert.equal(await untilReady(taken), "TDCZ");
    taken.socket.destroy();
  });
});

/** `count` connections from `from`, each sending one byte of a startup packet, then nothing. */
async function trickles(gw: Gateway, count: number, from: string): Promise<RawClient[]> {
  const flood: RawClient[] = [];
  for (let i = 0; i < count; i++) {
    const c = await RawClient.connect(gw, from);
    c.socket.write(new Uint8Array([0]));
    flood.push(c);
  }
  return flood;
}

// The finding: 120 one-byte sockets held every one of the 100 connection slots for the whole
// authentication deadline (60 s), so no login got in; the attacker reconnects at the deadline.
test("gateway: a flood of one-byte trickles from one address beyond the old connection limit is capped per address (maxStartupsPerAddress), and logins from another address succeed; the control, the old shared limit, locks them out", async () => {
  const h = await gateway(); // the defaults: maxConnections 100, maxStartups 1000, 100 per address
  const sqls = [1, 2, 3, 4].map(() => client(h.gateway));
  await within(h, sqls, async () => {
    const flood = await trickles(h.gateway, 120, "127.0.0.2");
    // (Counted as the old code counts too: there, the 100 left hold every connection slot.)
    await until(() => h.gateway.stats.refused["53300"] === 20, "20 of the flood refused");
    // Four logins at once from 127.0.0.1, beside the flood.
    const rows = await Promise.all(sqls.map((sql, x) => sql`select ${x}::int as x`));
    assert.deepEqual(rows.map((r) => r[0].x), [0, 1, 2, 3]);
    assert.equal(h.gateway.stats.accepted, 4);
    assert.equal(h.gateway.connections(), 4);
    assert.equal(h.gateway.startups(), 100);
    for (const c of flood) c.socket.destroy();
  });

  // The control: one limit of 100 for every connection logging in, as maxConnections was.
  const old = await gateway({ maxStartups: 100, maxStartupsPerAddress: 1000 });
  const locked = client(old.gateway, { connect_timeout: 1, backoff: () => 0 });
  await within(old, [locked], async () => {
    const flood = await trickles(old.gateway, 120, "127.0.0.2");
    await until(() => old.gateway.startups() === 100, "the flood holding every slot");
    assert.equal((await errorOf(locked`select 1`)).code, "53300");
    assert.equal(old.gateway.stats.accepted, 0);
    for (const c of flood) c.socket.destroy();
  });
});

test("gateway: a flood beyond maxStartups from many addresses is refused with 53300 while sessions go on, and a login gets in once slots free", async () => {
  const h = await gateway({ tls: false, maxStartups: 6, maxStartupsPerAddress: 2 });
  const sql = client(h.gateway, { ssl: false });
  // postgres.js 4 asks again on 53300 until connect_timeout: a short one, and no backoff.
  const late = client(h.gateway, { ssl: false, connect_timeout: 1, backoff: () => 0 });
  await within(h, [sql, late], async () => {
    assert.deepEqual((await sql`select 1 as x`)[0], { x: 1 }); // a session before the flood
    // Each address is capped at 2: three of them fill the 6 slots; the flood goes on from more.
    const flood: RawClient[] = [];
    for (const host of [2, 3, 4, 5, 6]) {
      flood.push(...await trickles(h.gateway, 3, `127.0.0.${host}`));
    }
    await until(() => h.gateway.startups() === 6, "six of the flood logging in");
    assert.equal(h.gateway.stats.refused["53300"], 9);
    const refused = await RawClient.connect(h.gateway, "127.0.0.7");
    refused.socket.write(startup("app"));
    assert.equal((await fatal(refused)).code, "53300");
    // The session goes on; a new login is refused, as PostgreSQL refuses one when full.
    assert.deepEqual((await sql`select 2 as x`)[0], { x: 2 });
    assert.equal((await errorOf(late`select 1`)).code, "53300");
    // Two of the flood's slots free: a login gets in.
    for (const c of flood.slice(0, 3)) c.socket.destroy();
    await until(() => h.gateway.startups() === 4, "two slots freed");
    assert.deepEqual((await late`select 3 as x`)[0], { x: 3 });
    assert.deepEqual((await sql`select 4 as x`)[0], { x: 4 });
    assert.equal(h.gateway.connections(), 2);
    for (const c of flood) c.socket.destroy();
  });
});

test("gateway: access keys given the wrong way round are refused, quoting neither", async () => {
  const id = "AKIAIOSFODNN7EXAMPLE";
  const key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
  const error = await errorOf(startGateway({
    endpoint: RDS_HOST,
    credentials: [KEY, { accessKeyId: key, secretAccessKey: id }],
    upstream: { host: "127.0.0.1", port: 5432 },
    tls: false,
  }));
  assert.match(error.message, /"credentials\[1\]" option seems to have its keys swapped/);
  assert.ok(!error.message.includes(key) && !error.message.includes(id), error.message);
  // The control: the same keys the right way round start a gateway.
  const g = await startGateway({
    endpoint: RDS_HOST,
    credentials: { accessKeyId: id, secretAccessKey: key },
    upstream: { host: "127.0.0.1", port: 5432 },
    tls: false,
  });
  await g.close();
});

test("gateway: beyond maxConnectionRate a connection gets DSQL's FATAL 53400 after its startup packet; the bucket refills at the rate", async () => {
  const h = await gateway({ tls: false, maxConnectionRate: 10, connectionBurst: 2 });
  const sql = client(h.gateway, { ssl: false, max: 1 });
  await within(h, [sql], async () => {
    const a = await RawClient.connect(h.gateway);
    const b = await RawClient.connect(h.gateway);
    const c = await RawClient.connect(h.gateway); // the burst is spent
    c.socket.write(startup("app"));
    assert.deepEqual(await fatal(c), {
      code: "53400",
      message: "unable to accept connection, rate exceeded",
      detail: undefined,
    });
    // A plain driver reads it as the server's error.
    assert.equal((await errorOf(sql`select 1`)).code, "53400");
    assert.deepEqual(h.gateway.stats.refused, { "53300": 0, "53400": 2 });
    assert.equal(h.gateway.stats.logins.length, 0); // not logins
    a.socket.destroy();
    b.socket.destroy();
    await sleep(150); // 10 per second: one more token in the bucket
    assert.deepEqual((await sql`select 1 as x`)[0], { x: 1 });
  });
});

test("gateway: refusals beyond maxStartups at once are answered without waiting for the client (a flood costs no TLS handshakes)", async () => {
  const h = await gateway({ maxStartups: 1 });
  await within(h, [], async () => {
    const held = await RawClient.connect(h.gateway);
    await until(() => h.gateway.startups() === 1, "one connection counted");
    const waiting = await RawClient.connect(h.gateway); // refused once it sends its startup packet
    await sleep(50);
    const flood = await RawClient.connect(h.gateway); // nothing sent: answered at once
    assert.equal((await fatal(flood)).code, "53300");
    assert.equal(h.gateway.stats.refused["53300"], 2);
    waiting.socket.destroy();
    held.socket.destroy();
  });
});

test("gateway: stats.logins keeps the last recentLogins logins; the counters count every one", async () => {
  const loginAs = async (gw: Gateway, user: string) => {
    const c = await RawClient.connect(gw);
    c.socket.write(concat(startup(user), passwordMessage("not a token")));
    await c.closed();
  };
  const h = await gateway({ tls: false, recentLogins: 3 });
  const none = await gateway({ tls: false, recentLogins: 0 });
  try {
    for (let i = 0; i < 5; i++) await loginAs(h.gateway, `user${i}`);
    await until(() => h.gateway.stats.rejected === 5, "five logins recorded");
    assert.deepEqual(h.gateway.stats.logins.map((l) => l.user), ["user2", "user3", "user4"]);
    assert.deepEqual(h.gateway.stats.rejections, { malformed: 5 });
    await loginAs(none.gateway, "app");
    await until(() => none.gateway.stats.rejected === 1, "the login recorded");
    assert.deepEqual(none.gateway.stats.logins, []);
  } finally {
    await h.gateway.close();
    await none.gateway.close();
  }
});

test("gateway: startup packets read as PostgreSQL reads them: the layout checked, 3.2 and _pq_ options negotiated to 3.0, other versions refused", async () => {
  const h = await gateway({ tls: false });
  const token = await rdsToken({ hostname: RDS_HOST, username: "app", credentials: KEY });
  try {
    const layout = "invalid startup packet layout: expected terminator as last byte";
    for (const body of ["user\0app\0", "user\0app\0database\0", "user\0app", ""]) {
      const c = await RawClient.connect(h.gateway);
      c.socket.write(packetOf(196608, body));
      assert.deepEqual(await fatal(c), { code: "08P01", message: layout, detail: undefined });
    }
    for (const [major, minor] of [[4, 0], [2, 0], [3, 0x7fff]]) {
      const c = await RawClient.connect(h.gateway);
      c.socket.write(packetOf((major << 16) | minor, "user\0app\0\0"));
      if (major === 3) {
        // A newer minor version is negotiated, not refused.
        assert.equal(String.fromCharCode((await c.message())!.type), "v");
        c.socket.destroy();
        continue;
      }
      assert.deepEqual(await fatal(c), {
        code: "0A000",
        message: `unsupported frontend protocol ${major}.${minor}: server supports 3.0 to 3.0`,
        detail: undefined,
      });
    }

    // Protocol 3.2 with protocol options: NegotiateProtocolVersion names them, the login goes on
    // in 3.0, and the upstream (which would negotiate them itself) never sees them.
    const c = await RawClient.connect(h.gateway);
    c.socket.write(concat(
      packetOf(
        (3 << 16) | 2,
        "user\0app\0database\0postgres\0_pq_.test_option\0on\0application_name\0negotiated\0" +
          "_pq_.other\0x\0\0",
      ),
      passwordMessage(token),
      query("select current_setting('application_name') as a"),
    ));
    const v = (await c.message())!;
    assert.equal(String.fromCharCode(v.type), "v");
    const view = new DataView(v.body.buffer, v.body.byteOffset, v.body.length);
    // The newest version, 3.0, whole as PostgreSQL sends it (libpq 18 refuses 0 as pre-3.0).
    assert.equal(view.getInt32(0), 3 << 16);
    assert.equal(view.getInt32(4), 2);
    assert.deepEqual(new TextDecoder().decode(v.body.subarray(8)).split("\0"), [
      "_pq_.test_option",
      "_pq_.other",
      "",
    ]);
    assert.equal(authCode((await c.message())!.body), 3);
    assert.equal(authCode((await c.message())!.body), 0);
    assert.match(await untilReady(c), /K.*Z$/);
    const rows = [];
    for (let m = await c.message(); m && m.type !== 90; m = await c.message()) {
      if (m.type === 68) rows.push(new TextDecoder().decode(m.body.subarray(6)));
    }
    assert.deepEqual(rows, ["negotiated"]);
    c.socket.destroy();

    // 3.0 with only a protocol option is negotiated too; plain 3.0 is not (negative control).
    const option = await RawClient.connect(h.gateway);
    option.socket.write(packetOf(196608, "user\0app\0_pq_.x\0y\0\0"));
    assert.equal(String.fromCharCode((await option.message())!.type), "v");
    assert.equal(authCode((await option.message())!.body), 3);
    option.socket.destroy();
    const plain = await RawClient.connect(h.gateway);
    plain.socket.write(packetOf(196608, "user\0app\0\0"));
    assert.equal(authCode((await plain.message())!.body), 3);
    plain.socket.destroy();
  } finally {
    await h.gateway.close();
  }
});

test("gateway: an uppercase endpoint is the lowercase one: tokens signed for the lowercase name log in, the AWS CLI's too", async () => {
  const upper = "DB.Cluster-ABC123XYZ.us-east-1.rds.amazonaws.com";
  const h = await gateway({ endpoint: upper, tls: false });
  const lower = client(h.gateway, {
    ssl: false,
    password: () => rdsToken({ hostname: upper.toLowerCase(), username: "app", credentials: KEY }),
  });
  const cli = client(h.gateway, { ssl: false, password: AWS_CLI_MIXED_CASE_TOKEN });
  await within(h, [lower, cli], async () => {
    assert.equal(h.gateway.endpoint, upper.toLowerCase());
    assert.equal(h.gateway.region, "us-east-1");
    assert.deepEqual((await lower`select 1 as x`)[0], { x: 1 });
    h.gateway.clockOffsetMs = AWS_CLI_SIGNED_AT + 60_000 - Date.now();
    assert.deepEqual((await cli`select 2 as x`)[0], { x: 2 });
    assert.deepEqual(h.gateway.stats.logins.map((l) => l.accepted), [true, true]);
  });
});

// ---- pg-iam gateway's log lines ----

const CLI = fileURLToPath(new URL("../../src/cli/mod.ts", import.meta.url));

/** Runs `pg-iam gateway …args` with this file's runtime; resolves once it listens. */
async function gatewayCommand(args: string[], json: boolean) {
  const [cmd, pre] = runtimeCommand(CLI);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !/^(AWS_|PG)/.test(k) && k !== "NODE_OPTIONS") env[k] = v;
  }
  const child = spawn(cmd, [...pre, "gateway", ...(json ? ["--json"] : []), ...args], {
    env: { ...env, AWS_ACCESS_KEY_ID: KEY.accessKeyId, AWS_SECRET_ACCESS_KEY: KEY.secretAccessKey },
  });
  let stdout = "";
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      stdout += s;
      const m = /listening on 127\.0\.0\.1:(\d+)|"port":(\d+)/.exec(stdout);
      if (m) resolve(Number(m[1] ?? m[2]));
    });
    child.on("close", (code) => reject(new Error(`gateway exited ${code}: ${stderr}`)));
  });
  const exited = new Promise((resolve) => child.on("close", resolve));
  return {
    port,
    output: () => ({ stdout, stderr }),
    async stop() {
      child.kill("SIGTERM");
      await exited;
      return { stdout, stderr };
    },
  };
}

test("pg-iam gateway escapes control characters in its log lines and bounds client-chosen names; JSON lines too", async () => {
  const pg = await upstreamPostgres();
  const forged = "evil\nlogin accepted: admin@postgres token age 1 ms";
  const painted = "red\x1b[31mALERT\u2028line\u2029para\x9b2J\x7f\\n" + "A".repeat(500);
  const signed = await presign({
    host: `${RDS_HOST}:5432`,
    params: { Action: "connect", DBUser: painted },
    service: "rds-db",
    region: "us-east-1",
    signingDate: new Date(),
    expiresIn: 900,
  }, KEY);
  const logins = async (port: number) => {
    for (const [user, password] of [[forged, "not a token"], [painted, signed]]) {
      const c = await RawClient.connect({ host: "127.0.0.1", port } as Gateway);
      c.socket.write(concat(
        startupMessage(new Map([["user", user], ["database", "postgres"]])),
        passwordMessage(password),
      ));
      const types = await untilReady(c);
      assert.match(types, user === forged ? /^RE$/ : /^RR.*Z$/);
      c.socket.destroy();
    }
  };
  const args = [
    "--listen",
    "127.0.0.1:0",
    "--upstream",
    `postgres://${pg.host}:${pg.port}`,
    "--upstream-user",
    pg.user,
    "--endpoint",
    RDS_HOST,
    "--no-tls",
    "--max-connections",
    "2",
    "--max-startups",
    "3",
    "--max-startups-per-address",
    "2",
  ];
  // deno-lint-ignore no-control-regex
  const controls = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]/;

  const text = await gatewayCommand(args, false);
  try {
    // --max-startups-per-address: with two connections from 127.0.0.1 logging in, the next one
    // from there is refused; one from 127.0.0.2 is served; --max-startups: a fourth, refused.
    const at = { host: "127.0.0.1", port: text.port } as Gateway;
    const idle = [await RawClient.connect(at), await RawClient.connect(at)];
    await sleep(100);
    const refused = await RawClient.connect(at);
    refused.socket.write(startup("app"));
    assert.equal((await fatal(refused)).code, "53300");
    const other = await RawClient.connect(at, "127.0.0.2");
    other.socket.write(startup("app"));
    assert.equal(authCode((await other.message())!.body), 3);
    const full = await RawClient.connect(at, "127.0.0.3");
    full.socket.write(startup("app"));
    assert.equal((await fatal(full)).code, "53300");
    for (const c of [...idle, other]) c.socket.destroy();
    await sleep(100);
    // --max-connections: two sessions open, the next login is refused.
    const sessions = [await session(at), await session(at)];
    const third = await RawClient.connect(at);
    third.socket.write(startup("app"));
    assert.equal((await fatal(third)).code, "53300");
    for (const c of sessions) c.socket.destroy();
    await sleep(100);
    await logins(text.port);
  } finally {
    await text.stop();
  }
  const { stderr } = text.output();
  assert.ok(!controls.test(stderr), `a raw control character in: ${JSON.stringify(stderr)}`);
  const lines = stderr.split("\n");
  const evil = lines.filter((l) => l.includes("evil"));
  assert.equal(evil.length, 1, stderr);
  assert.ok(
    evil[0].startsWith("login REJECTED: evil\\nlogin accepted: admin@postgres token age 1 ms@"),
    evil[0],
  );
  assert.ok(!lines.some((l) => l.startsWith("login accepted: admin")), stderr);
  const red = lines.filter((l) => l.includes("ALERT"));
  assert.equal(red.length, 1, stderr);
  assert.ok(
    red[0].startsWith(
      "login accepted: red\\x1b[31mALERT\\u2028line\\u2029para\\x9b2J\\x7f\\\\nAAAA",
    ),
    red[0],
  );
  assert.match(red[0], /A…@postgres token age -?\d+ ms$/);
  assert.ok(red[0].length < 300, `${red[0].length} characters`);

  const json = await gatewayCommand(args, true);
  try {
    await logins(json.port);
  } finally {
    await json.stop();
  }
  const { stdout } = json.output();
  assert.ok(!controls.test(stdout), `a raw control character in: ${JSON.stringify(stdout)}`);
  const events = stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(
    events.filter((e) => e.event === "login").map((e) => [e.user, e.accepted]),
    [[forged, false], [painted, true]],
  );
});
