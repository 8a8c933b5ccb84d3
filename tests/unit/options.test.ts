import { test } from "node:test";
import assert from "node:assert/strict";
import { CredentialsError, dsqlToken, rdsToken } from "../../mod.ts";
import { withEnv } from "../_env.ts";

const SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzSECRETzKEY";
const SESSION = "IQoJb3JpZ2luX2VjEJr//SESSIONzTOKEN+abc==";
const creds = { accessKeyId: "AKIDEXAMPLE", secretAccessKey: SECRET, sessionToken: SESSION };
const RDS_HOST = "mydb.c9akciq32.us-east-1.rds.amazonaws.com";
const DSQL_ID = "abcdefghijklmnopqrstuvwxyz";
const rds = { hostname: RDS_HOST, username: "app", credentials: creds };
const dsql = { hostname: `${DSQL_ID}.dsql.us-east-1.on.aws`, credentials: creds };

type Case = [
  what: string,
  call: () => Promise<string>,
  error: typeof TypeError | typeof RangeError | typeof CredentialsError,
  message: RegExp,
];

const r = (o: Record<string, unknown>) => () => rdsToken({ ...rds, ...o } as never);
const d = (o: Record<string, unknown>) => () => dsqlToken({ ...dsql, ...o } as never);

const CASES: Case[] = [
  [
    "no options object",
    () => rdsToken(undefined as never),
    TypeError,
    /rdsToken\(\) expects an options object, got undefined/,
  ],
  ["a missing hostname", r({ hostname: undefined }), TypeError, /"hostname" option is required/],
  [
    "an empty hostname",
    r({ hostname: "" }),
    TypeError,
    /"hostname" option must not be empty, got ""/,
  ],
  [
    "a blank hostname",
    r({ hostname: "  " }),
    TypeError,
    /"hostname" option must not be empty, got " {2}"/,
  ],
  [
    "a numeric hostname",
    r({ hostname: 5 }),
    TypeError,
    /"hostname" option must be a string, got 5/,
  ],
  [
    "a hostname with a scheme",
    r({ hostname: `postgres://${RDS_HOST}` }),
    TypeError,
    /"hostname" option must not include a scheme, got "postgres:\/\/mydb/,
  ],
  [
    "a hostname with a path",
    r({ hostname: `${RDS_HOST}/db` }),
    TypeError,
    /"hostname" option must not include a path/,
  ],
  [
    "a hostname with a port",
    r({ hostname: `${RDS_HOST}:5432` }),
    TypeError,
    /"hostname" option must not include a port \(use the port option\), got "mydb/,
  ],
  [
    "a hostname with whitespace",
    r({ hostname: `${RDS_HOST} ` }),
    TypeError,
    /"hostname" option must not contain whitespace/,
  ],
  [
    "a hostname with a user",
    r({ hostname: `app@${RDS_HOST}` }),
    TypeError,
    /"hostname" option is not a host name, got "app@/,
  ],
  [
    "a non-ASCII hostname",
    r({ hostname: "bücher.example" }),
    TypeError,
    /"hostname" option has characters .* "bücher.example": use the ASCII \(punycode\) form/,
  ],
  [
    "an empty label",
    r({ hostname: "db..example.com" }),
    TypeError,
    /"hostname" option is not a valid DNS name/,
  ],
  [
    "a bad signingHostname",
    r({ hostname: "127.0.0.1", signingHostname: "https://x" }),
    TypeError,
    /"signingHostname" option must not include a scheme/,
  ],
  ["a missing username", r({ username: undefined }), TypeError, /"username" option is required/],
  ["an empty username", r({ username: "" }), TypeError, /"username" option must not be empty/],
  [
    "a numeric username",
    r({ username: 7 }),
    TypeError,
    /"username" option must be a string, got 7/,
  ],
  [
    "a username with a lone surrogate",
    r({ username: "a\uD800b" }),
    TypeError,
    /"username" option is not valid Unicode/,
  ],
  ["a string port", r({ port: "5432" }), TypeError, /"port" option must be a number, got "5432"/],
  [
    "a fractional port",
    r({ port: 5432.5 }),
    RangeError,
    /"port" option must be an integer from 1 to 65535, got 5432.5/,
  ],
  ["port 0", r({ port: 0 }), RangeError, /"port" option must be an integer from 1 to 65535, got 0/],
  ["port 65536", r({ port: 65536 }), RangeError, /got 65536/],
  ["a NaN port", r({ port: NaN }), RangeError, /got NaN/],
  [
    "expiresIn NaN",
    r({ expiresIn: NaN }),
    RangeError,
    /"expiresIn" option must be a whole number of seconds from 1 to 900, got NaN/,
  ],
  ["expiresIn 0", r({ expiresIn: 0 }), RangeError, /from 1 to 900, got 0/],
  ["a negative expiresIn", r({ expiresIn: -5 }), RangeError, /got -5/],
  ["a fractional expiresIn", r({ expiresIn: 1.5 }), RangeError, /got 1.5/],
  [
    "a string expiresIn",
    r({ expiresIn: "900" }),
    TypeError,
    /"expiresIn" option must be a number of seconds, got "900"/,
  ],
  ["an RDS expiresIn above 900", r({ expiresIn: 901 }), RangeError, /from 1 to 900, got 901/],
  ["Infinity expiresIn", r({ expiresIn: Infinity }), RangeError, /got Infinity/],
  [
    "a DSQL expiresIn above one week",
    d({ expiresIn: 604801 }),
    RangeError,
    /from 1 to 604800, got 604801/,
  ],
  [
    "a string signingDate",
    r({ signingDate: "2026-01-01" }),
    TypeError,
    /"signingDate" option must be a Date, got "2026-01-01"/,
  ],
  [
    "an invalid signingDate",
    r({ signingDate: new Date(NaN) }),
    RangeError,
    /"signingDate" option must be a valid date .* got Invalid Date/,
  ],
  [
    "a signingDate past 9999",
    r({ signingDate: new Date(Date.UTC(10000, 0)) }),
    RangeError,
    /"signingDate" option must be a valid date from 1970 to 9999/,
  ],
  [
    "a malformed region",
    r({ hostname: "10.0.0.1", region: "us east 1" }),
    RangeError,
    /"region" option is not an AWS region name \(like "us-east-1"\), got "us east 1"/,
  ],
  [
    'the string "undefined" as region',
    r({ hostname: "10.0.0.1", region: "undefined" }),
    RangeError,
    /got "undefined"/,
  ],
  ["a numeric region", r({ region: 1 }), TypeError, /"region" option must be a string, got 1/],
  [
    "a region contradicting the hostname",
    r({ region: "eu-west-1" }),
    RangeError,
    /^The "region" option "eu-west-1" contradicts the region "us-east-1" of the endpoint "mydb\.c9akciq32\.us-east-1\.rds\.amazonaws\.com" \(the "hostname" option\): a token signed for another region is always rejected; drop the "region" option or correct it$/,
  ],
  [
    "a region contradicting the signingHostname",
    r({ hostname: "127.0.0.1", signingHostname: RDS_HOST, region: "us-west-2" }),
    RangeError,
    /contradicts the region "us-east-1" of the endpoint "mydb\.c9akciq32\.us-east-1\.rds\.amazonaws\.com" \(the "signingHostname" option\)/,
  ],
  [
    "no region for a custom name",
    r({ hostname: "db.example.com" }),
    TypeError,
    /No region: "db\.example\.com" \(the "hostname" option\) is not an AWS endpoint name.*Pass the "region" option \(or set AWS_REGION/,
  ],
  [
    "a DSQL endpoint given to rdsToken",
    r({ hostname: `${DSQL_ID}.dsql.us-east-1.on.aws` }),
    TypeError,
    /is an Aurora DSQL endpoint: use dsqlToken\(\)/,
  ],
  [
    "an RDS endpoint given to dsqlToken",
    d({ hostname: RDS_HOST }),
    TypeError,
    /is an RDS endpoint: use rdsToken\(\)/,
  ],
  [
    "a short DSQL cluster id",
    d({ hostname: "abc123", region: "us-east-1" }),
    RangeError,
    /"hostname" option "abc123" is neither a DSQL endpoint nor a DSQL cluster id \(26 lowercase letters and digits\)/,
  ],
  [
    "a DSQL cluster id one character too long",
    d({ hostname: DSQL_ID + "a", region: "us-east-1" }),
    RangeError,
    /neither a DSQL endpoint nor a DSQL cluster id/,
  ],
  [
    "a DSQL cluster id without region",
    d({ hostname: DSQL_ID }),
    TypeError,
    /No region: .* Pass the "region" option/,
  ],
  [
    "a non-boolean admin",
    d({ admin: "yes" }),
    TypeError,
    /"admin" option must be a boolean, got "yes"/,
  ],
  ["an empty DSQL username", d({ username: "" }), TypeError, /"username" option must not be empty/],
  [
    "credentials without keys",
    r({ credentials: {} }),
    CredentialsError,
    /"credentials" option must have a non-empty string accessKeyId, got undefined/,
  ],
  [
    "a numeric secret",
    r({ credentials: { accessKeyId: "AKID", secretAccessKey: 12345 } }),
    CredentialsError,
    /must have a non-empty string secretAccessKey, got a number/,
  ],
  [
    "credentials as a string",
    r({ credentials: SECRET }),
    CredentialsError,
    /"credentials" option must be an object, got a string/,
  ],
  [
    "a numeric session token",
    r({ credentials: { ...creds, sessionToken: 5 } }),
    CredentialsError,
    /sessionToken that is not a string \(number\)/,
  ],
  [
    "a string expiration",
    r({ credentials: { ...creds, expiration: "2030-01-01" } }),
    CredentialsError,
    /expiration that is not a valid Date, got "2030-01-01"/,
  ],
  [
    "a session token put in expiration, without quoting it",
    r({
      credentials: {
        ...creds,
        expiration: "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJGMEQCIH",
      },
    }),
    CredentialsError,
    /expiration that is not a valid Date, got a string of 54 characters \(not shown/,
  ],
  [
    "a provider whose error quotes a secret, without repeating it",
    r({
      credentials: () => {
        throw Object.assign(new Error("bad key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), {
          code: "InvalidClientTokenId",
        });
      },
    }),
    CredentialsError,
    /^The "credentials" provider failed \(Error, code InvalidClientTokenId\)[^/]*$/,
  ],
  [
    "expired credentials",
    r({ credentials: { ...creds, expiration: new Date(Date.now() - 1000) } }),
    CredentialsError,
    /The AWS credentials \(access key id "AKIDEXAMPLE"\) expired at .* refresh them/,
  ],
  [
    "a throwing provider",
    r({
      credentials: () => {
        throw new Error("SSO session expired");
      },
    }),
    CredentialsError,
    /The "credentials" provider failed \(Error\); its own error is this one's cause/,
  ],
  [
    "a rejecting provider",
    r({ credentials: () => Promise.reject(new Error("IMDS timeout")) }),
    CredentialsError,
    /The "credentials" provider failed \(Error\)/,
  ],
  [
    "a provider returning nothing",
    r({ credentials: () => undefined }),
    CredentialsError,
    /value returned by the "credentials" provider must be an object, got undefined/,
  ],
];

for (const [what, call, error, message] of CASES) {
  test(`rejects ${what} with a ${error.name} naming the option`, async () => {
    const env = {
      AWS_REGION: undefined,
      AWS_DEFAULT_REGION: undefined,
      AWS_PROFILE: undefined,
      AWS_CONFIG_FILE: "/nonexistent/pg-iam-test/config", // no region from a profile either
    };
    await withEnv(env, async () => {
      const err = await call().then(
        () => assert.fail("expected a rejection"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof error, `expected ${error.name}, got ${err}`);
      assert.match((err as Error).message, message);
      for (const secret of [SECRET, SESSION]) {
        assert.ok(!String(err).includes(secret), "secret in toString()");
        assert.ok(!(err as Error).message.includes(secret), "secret in message");
      }
    });
  });
}

test("a throwing provider's error is kept as the cause", async () => {
  const original = new Error("boom");
  const err = await rdsToken({ ...rds, credentials: () => Promise.reject(original) }).catch(
    (e) => e,
  );
  assert.ok(err instanceof CredentialsError);
  assert.equal(err.code, "provider");
  assert.equal(err.cause, original);
});

test("a token passed by mistake as a hostname is withheld from the error message", async () => {
  const token = await rdsToken(rds);
  const err = await rdsToken({ ...rds, hostname: token }).catch((e) => e);
  assert.ok(err instanceof TypeError);
  assert.match(err.message, /<a token, withheld>/);
  assert.ok(!err.message.includes("X-Amz-Signature"));
});

test("region: undefined behaves as omitted", async () => {
  const at = new Date("2026-03-01T12:00:00Z");
  assert.equal(
    await rdsToken({ ...rds, region: undefined, signingDate: at }),
    await rdsToken({ ...rds, signingDate: at }),
  );
});

test("AWS_REGION, then AWS_DEFAULT_REGION, give the region of a custom DNS name", async () => {
  const at = new Date("2026-03-01T12:00:00Z");
  const base = { ...rds, hostname: "db.example.com", signingDate: at };
  const explicit = await rdsToken({ ...base, region: "eu-west-3" });
  await withEnv({ AWS_REGION: undefined, AWS_DEFAULT_REGION: "eu-west-3" }, async () => {
    assert.equal(await rdsToken(base), explicit);
  });
  await withEnv({ AWS_REGION: "eu-west-3", AWS_DEFAULT_REGION: "us-east-1" }, async () => {
    assert.equal(await rdsToken(base), explicit);
  });
});

test("the hostname's region wins over AWS_REGION", async () => {
  const at = new Date("2026-03-01T12:00:00Z");
  const expected = await rdsToken({ ...rds, region: "us-east-1", signingDate: at });
  await withEnv({ AWS_REGION: "eu-west-1" }, async () => {
    assert.equal(await rdsToken({ ...rds, signingDate: at }), expected);
  });
});

test("a malformed AWS_REGION is an error naming the variable", async () => {
  await withEnv({ AWS_REGION: "nowhere" }, async () => {
    await assert.rejects(rdsToken({ ...rds, hostname: "db.example.com" }), {
      name: "RangeError",
      message: /environment variable AWS_REGION is not an AWS region name, got "nowhere"/,
    });
  });
});

test("bad options reject the returned promise; nothing throws synchronously", async () => {
  let promise: Promise<string> | undefined;
  assert.doesNotThrow(() => {
    promise = rdsToken({ hostname: "", username: "" });
  });
  await assert.rejects(promise!, TypeError);
  assert.doesNotThrow(() => {
    promise = dsqlToken(null as never);
  });
  await assert.rejects(promise!, TypeError);
});

test("an endpoint name in any case is signed in lower case, as botocore and the AWS CLI sign it", async () => {
  const credentials = { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret" };
  const signingDate = new Date("2026-06-01T12:00:00Z");
  const host = "orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com";
  const lower = await rdsToken({ hostname: host, username: "app", credentials, signingDate });
  const upper = await rdsToken({
    hostname: host.toUpperCase().replace("RDS.AMAZONAWS.COM", "rds.Amazonaws.com"),
    username: "app",
    credentials,
    signingDate,
  });
  assert.equal(upper, lower);
  assert.ok(lower.startsWith(`${host}:5432/?`));
  // An upper-case DSQL cluster id is the lower-case cluster's.
  const id = await dsqlToken({
    hostname: DSQL_ID.toUpperCase(),
    region: "us-east-1",
    credentials,
    signingDate,
  });
  assert.ok(id.startsWith(`${DSQL_ID}.dsql.us-east-1.on.aws/?Action=DbConnectAdmin&`));
  // The control: another name signs another token.
  const other = await rdsToken({ hostname: "x" + host, username: "app", credentials, signingDate });
  assert.notEqual(other, lower);
});
