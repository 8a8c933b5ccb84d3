// The one resolver of what to sign (src/core/signing.ts), through each of its callers: the same
// token from rdsToken() and from a driver's connection, and each mistake named in the words the
// user typed: a library option, a connection string parameter (through iamPool()), a CLI flag.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DSQL_MAX_EXPIRES_IN, dsqlToken, RDS_MAX_EXPIRES_IN, rdsToken } from "../../mod.ts";
import { iamPool } from "../../src/pg/mod.ts";
import { signFor, signingConfig } from "../../src/connection/sign.ts";
import { presignInput, resolveSigning } from "../../src/core/signing.ts";
import { resolveTarget, signFor as cliSignFor } from "../../src/cli/_target.ts";
import { withEnv } from "../_env.ts";

const KEYS = {
  accessKeyId: "AKIDEXAMPLE",
  secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
};
const RDS = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";
const DSQL_ID = "abcdefghijklmnopqrstuvwxyz";
const DATE = new Date("2026-12-05T10:00:00Z");
// No PG* or AWS_* variable of the machine may decide a case.
const CLEAN = {
  PGHOST: undefined,
  PGPORT: undefined,
  PGUSER: undefined,
  PGDATABASE: undefined,
  PGSSLMODE: undefined,
  AWS_REGION: undefined,
  AWS_DEFAULT_REGION: undefined,
  AWS_PROFILE: undefined,
  AWS_CONFIG_FILE: "/nonexistent/pg-iam-test/config",
  AWS_ACCESS_KEY_ID: KEYS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: KEYS.secretAccessKey,
};

// The message of what `fn` throws or rejects with.
async function message(fn: () => unknown): Promise<string> {
  try {
    await fn();
  } catch (error) {
    return (error as Error).message;
  }
  assert.fail("expected an error");
}

const library = (o: Record<string, unknown>) => () =>
  rdsToken({ hostname: RDS, username: "app", credentials: KEYS, ...o } as never);
const url = (query: string) => () =>
  iamPool({ connectionString: `postgres://app@${RDS}/app?${query}`, credentials: KEYS });
const cli = (...args: string[]) => () => {
  const flags: Record<string, string | boolean> = {};
  for (let i = 0; i < args.length; i += 2) flags[args[i].slice(2)] = args[i + 1];
  return resolveTarget(undefined, { hostname: RDS, username: "app", ...flags }, "token");
};

// [what, library option, connection string parameter, CLI flag, the message for each]
const SAME_MISTAKE: [string, () => unknown, () => unknown, () => unknown, RegExp[]][] = [
  [
    "a region that contradicts the endpoint",
    library({ region: "eu-west-1" }),
    url("iam_region=eu-west-1"),
    cli("--region", "eu-west-1"),
    [
      /^The "region" option "eu-west-1" contradicts the region "us-east-1" of the endpoint "db\.cluster-abc123xyz\.us-east-1\.rds\.amazonaws\.com" \(the "hostname" option\): a token signed for another region is always rejected; drop the "region" option or correct it$/,
      /^The connection string parameter "iam_region" "eu-west-1" contradicts the region "us-east-1" .*drop the connection string parameter "iam_region" or correct it$/,
      /^--region "eu-west-1" contradicts the region "us-east-1" .*\(--hostname\).*drop --region or correct it$/,
    ],
  ],
  [
    "a signing host name with a path",
    library({ signingHostname: `${RDS}/app` }),
    url(`iam_host=${RDS}/app`),
    cli("--signing-hostname", `${RDS}/app`),
    [
      /^The "signingHostname" option must not include a path, got ".*": pass the bare host name$/,
      /^The connection string parameter "iam_host" must not include a path/,
      /^--signing-hostname must not include a path/,
    ],
  ],
  [
    "a lifetime over RDS's limit",
    library({ expiresIn: RDS_MAX_EXPIRES_IN + 1 }),
    url(`iam_expiration=${RDS_MAX_EXPIRES_IN + 1}`),
    cli("--expires-in", String(RDS_MAX_EXPIRES_IN + 1)),
    [
      /^The "expiresIn" option must be a whole number of seconds from 1 to 900, got 901$/,
      /^The connection string parameter "iam_expiration" must be a whole number of seconds from 1 to 900, got 901$/,
      /^--expires-in must be a whole number of seconds from 1 to 900, got 901$/,
    ],
  ],
];

for (const [what, ...rest] of SAME_MISTAKE) {
  const calls = rest.slice(0, 3) as (() => unknown)[];
  const patterns = rest[3] as RegExp[];
  test(`${what} is named as the user wrote it: option, connection string parameter, flag`, async () => {
    await withEnv(CLEAN, async () => {
      const [option, param, flag] = await Promise.all(calls.map(message));
      assert.match(option, patterns[0]);
      assert.match(param, patterns[1]);
      assert.match(flag, patterns[2]);
      // The controls: no vocabulary leaks into another's message.
      assert.doesNotMatch(option, /iam_|--/);
      assert.doesNotMatch(param, /" option|--/);
      assert.doesNotMatch(flag, /" option|iam_|connection string/);
    });
  });
}

test("an option given beside the connection string's parameter is named as the option", async () => {
  await withEnv(CLEAN, async () => {
    const both = () =>
      iamPool({
        connectionString: `postgres://app@${RDS}/app?iam_region=us-east-1`,
        credentials: KEYS,
        region: "eu-west-1",
      });
    assert.match(await message(both), /^The "region" option "eu-west-1" contradicts/);
    // The control: the parameter alone is named as the parameter.
    assert.match(await message(url("iam_region=eu-west-1")), /^The connection string parameter/);
  });
});

test("the expiry limits are the exported constants, per service", async () => {
  assert.equal(RDS_MAX_EXPIRES_IN, 900);
  assert.equal(DSQL_MAX_EXPIRES_IN, 604800);
  const dsql = { hostname: `${DSQL_ID}.dsql.us-east-1.on.aws`, credentials: KEYS };
  assert.ok(await dsqlToken({ ...dsql, expiresIn: DSQL_MAX_EXPIRES_IN }));
  assert.match(
    await message(() => dsqlToken({ ...dsql, expiresIn: DSQL_MAX_EXPIRES_IN + 1 })),
    /from 1 to 604800, got 604801$/,
  );
  // The control: RDS's limit is the lower one.
  assert.match(await message(library({ expiresIn: 901 })), /from 1 to 900, got 901$/);
});

test("what is signed: the signing host and port, the action, the region, lower case", () => {
  const rds = resolveSigning({
    host: "127.0.0.1",
    port: 15432,
    signingHostname: RDS.toUpperCase(),
    signingPort: 5432,
    user: "app",
  });
  assert.deepEqual(
    { ...rds, parsed: rds.parsed?.kind },
    {
      service: "rds",
      signingHostname: RDS,
      signingPort: 5432,
      user: "app",
      action: "connect",
      region: "us-east-1",
      expiresIn: RDS_MAX_EXPIRES_IN,
      parsed: "cluster",
    },
  );
  assert.deepEqual(presignInput(rds, "us-east-1", DATE), {
    host: `${RDS}:5432`,
    params: { Action: "connect", DBUser: "app" },
    service: "rds-db",
    region: "us-east-1",
    signingDate: DATE,
    expiresIn: 900,
  });
  // A bare DSQL cluster id is expanded with its region; the user admin signs DbConnectAdmin,
  // another DbConnect.
  const dsql = resolveSigning({
    host: DSQL_ID,
    service: "dsql",
    region: "eu-west-1",
    user: "admin",
  });
  assert.equal(dsql.signingHostname, `${DSQL_ID}.dsql.eu-west-1.on.aws`);
  assert.equal(dsql.action, "DbConnectAdmin");
  assert.equal(
    resolveSigning({ host: DSQL_ID, service: "dsql", region: "eu-west-1", user: "r" }).action,
    "DbConnect",
  );
  // The control: admin: false wins over the user's name.
  assert.equal(
    resolveSigning({ host: DSQL_ID, service: "dsql", region: "eu-west-1", admin: false }).action,
    "DbConnect",
  );
});

test("rdsToken(), a driver's connection and the CLI sign the same bytes for the same inputs", async () => {
  await withEnv(CLEAN, async () => {
    const token = await rdsToken({
      hostname: "127.0.0.1",
      port: 5432,
      signingHostname: RDS,
      username: "app",
      credentials: KEYS,
      signingDate: DATE,
    });
    const options = {
      host: "127.0.0.1",
      port: 15432,
      user: "app",
      signingHostname: RDS,
      signingPort: 5432,
      credentials: KEYS,
      now: () => DATE.getTime(),
      tokenReuse: false,
    };
    const config = signingConfig(options, 30);
    assert.equal((await signFor(config, false)).token, token);
    // The CLI signs at the current time: its token differs only in the date and signature.
    const target = resolveTarget(
      `postgres://app@127.0.0.1:15432/app?iam_host=${RDS}&iam_port=5432`,
      {},
      "token",
    );
    const strip = (t: string) => t.replace(/X-Amz-(Date|Signature|Credential)=[^&]*/g, "");
    assert.equal(strip(await cliSignFor(target, KEYS)), strip(token));
    // The control: another signing port is another token.
    const other = signingConfig({ ...options, signingPort: 6432 }, 30);
    assert.notEqual((await signFor(other, false)).token, token);
  });
});

test("the CLI signs for the RDS user admin (no DSQL admin action), and refuses --admin on RDS", async () => {
  await withEnv(CLEAN, async () => {
    const target = resolveTarget(undefined, { hostname: RDS, username: "admin" }, "token");
    assert.equal(target.service, "rds");
    assert.equal(target.action, "connect");
    assert.match(await cliSignFor(target), /\?Action=connect&DBUser=admin&/);
    // The control: --admin asks for DSQL's DbConnectAdmin, which RDS has not.
    assert.match(
      await message(() =>
        resolveTarget(undefined, { hostname: RDS, username: "admin", admin: true }, "token")
      ),
      /^--admin is for Aurora DSQL only/,
    );
  });
});

test("a connection's host is checked only when it is signed for; rdsToken() checks its hostname", async () => {
  await withEnv(CLEAN, async () => {
    // A link-local address with its zone, behind a tunnel to the endpoint: only RDS is signed for.
    const zoned = { host: "fe80::1%eth0", port: 5432, user: "app", credentials: KEYS };
    const config = signingConfig({ ...zoned, signingHostname: RDS }, 30);
    assert.equal(config.signingHostname, RDS);
    // The controls: signed for itself, the address is refused; so is rdsToken()'s hostname.
    assert.throws(() => signingConfig(zoned, 30), /^TypeError: The host connected to must not/);
    assert.match(
      await message(() =>
        rdsToken({ hostname: "fe80::1%eth0", signingHostname: RDS, username: "app" })
      ),
      /^The "hostname" option must not include a port/,
    );
  });
});
