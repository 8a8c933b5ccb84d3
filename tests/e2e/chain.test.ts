// The standard AWS credential chain (src/core/chain.ts), end to end: every source the chain knows —
// the ECS / EKS Pod Identity container endpoint, EC2 IMDSv2, web identity (EKS IRSA), profiles
// with static keys, role_arn + source_profile, credential_process and SSO — is served by a local
// fake (tests/_aws_endpoints.ts), and the credentials it hands out must end up in a token the IAM
// gateway, configured with exactly those keys, accepts against a real PostgreSQL. The gateway
// configured with other keys rejects the same token (the negative control). Then: the `profile`
// option and AWS_PROFILE, the profile's region, background refresh, failing and hanging sources,
// and the chain package missing altogether. Flat tests only, so every runtime counts the same.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { CredentialsError, rdsToken } from "../../mod.ts";
import { _resetChains, CHAIN_PACKAGE } from "../../src/core/chain.ts";
import { type GatewayCredentials, startGateway } from "../../src/gateway/mod.ts";
import { withEnv } from "../_env.ts";
import { upstreamPostgres } from "../_postgres.ts";
import {
  containerEndpoint,
  type FakeEndpoint,
  IMDS_ROLE,
  IMDS_TOKEN,
  imdsEndpoint,
  ssoEndpoint,
  stsEndpoint,
  stsParams,
  type TempKeys,
  tempKeys,
} from "../_aws_endpoints.ts";

const RDS_HOST = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";
const REPO = fileURLToPath(new URL("../..", import.meta.url));
const OTHER = {
  accessKeyId: "AKIDOTHERKEYS0000",
  secretAccessKey: "other/Secret+Key=0000000000",
};
const ENV_STATIC = { accessKeyId: "AKIDFROMENVIRONMENT", secretAccessKey: "env/Secret+Key=11111" };
const PROFILE_STATIC = {
  accessKeyId: "AKIDFROMPROFILEFILE",
  secretAccessKey: "profile/Secret+Key=22222",
};

// Every variable the chain (or pg-iam) reads; each test starts with all of them unset except the
// ones it sets, and with its own config files and HOME.
const CHAIN_VARS = [
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
  "AWS_CREDENTIAL_EXPIRATION",
  "AWS_PROFILE",
  "AWS_DEFAULT_PROFILE",
  "AWS_REGION",
  "AWS_DEFAULT_REGION",
  "AWS_CONTAINER_CREDENTIALS_FULL_URI",
  "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
  "AWS_CONTAINER_AUTHORIZATION_TOKEN",
  "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
  "AWS_WEB_IDENTITY_TOKEN_FILE",
  "AWS_ROLE_ARN",
  "AWS_ROLE_SESSION_NAME",
  "AWS_EC2_METADATA_SERVICE_ENDPOINT",
  "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
  "AWS_EC2_METADATA_V1_DISABLED",
  "AWS_ENDPOINT_URL",
  "AWS_ENDPOINT_URL_STS",
  "AWS_ENDPOINT_URL_SSO",
  "AWS_STS_REGIONAL_ENDPOINTS",
  "AWS_SDK_LOAD_CONFIG",
];

let seq = 0;

interface Scene {
  dir: string;
  /** Writes a file in the test's directory; returns its absolute path. */
  file(name: string, content: string): string;
}

/**
 * Runs `fn` in an isolated environment: a fresh temp directory as HOME holding the AWS config and
 * credentials files (unique paths: the SDK caches parsed files by path), every chain variable
 * unset but those in `env`, IMDS disabled unless `env` says otherwise, and no cached chain.
 */
async function scene<T>(
  files: { config?: string; credentials?: string },
  env: Record<string, string | undefined>,
  fn: (s: Scene) => Promise<T>,
): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `pg-iam-chain-${++seq}-`));
  const file = (name: string, content: string) => {
    const at = path.join(dir, name);
    fs.mkdirSync(path.dirname(at), { recursive: true });
    fs.writeFileSync(at, content);
    return at;
  };
  const vars: Record<string, string | undefined> = Object.fromEntries(
    CHAIN_VARS.map((k) => [k, undefined]),
  );
  Object.assign(vars, {
    HOME: dir,
    USERPROFILE: dir,
    AWS_CONFIG_FILE: file("aws/config", files.config ?? ""),
    AWS_SHARED_CREDENTIALS_FILE: file("aws/credentials", files.credentials ?? ""),
    AWS_EC2_METADATA_DISABLED: "true",
    ...env,
  });
  _resetChains();
  try {
    return await withEnv(vars, () => fn({ dir, file }));
  } finally {
    _resetChains();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The access key id and region a token was signed with. */
function signedWith(token: string): { accessKeyId: string; region: string } {
  const credential = new URLSearchParams(token.slice(token.indexOf("?") + 1)).get(
    "X-Amz-Credential",
  );
  assert.ok(credential, `no X-Amz-Credential in the token`);
  const [accessKeyId, , region] = credential.split("/");
  return { accessKeyId, region };
}

/**
 * Logs in with `token` through a gateway accepting exactly `keys` (and tokens for `endpoint`, in
 * `region`): "ok" when `select 1` ran, else the error's SQLSTATE (28P01: rejected).
 */
async function login(
  token: string,
  keys: GatewayCredentials | GatewayCredentials[],
  endpoint = RDS_HOST,
  region?: string,
): Promise<string> {
  const upstream = await upstreamPostgres();
  const gateway = await startGateway({
    endpoint,
    ...(region ? { region, service: "rds" as const } : {}),
    credentials: keys,
    upstream: { host: upstream.host, port: upstream.port, user: upstream.user },
    tls: false,
  });
  const sql = postgres({
    host: gateway.host,
    port: gateway.port,
    user: "app",
    database: "postgres",
    password: token,
    ssl: false,
    max: 1,
    connect_timeout: 10,
    onnotice: () => {},
  });
  try {
    const [row] = await sql`select 1 as one`;
    assert.equal(row.one, 1);
    return "ok";
  } catch (error) {
    return String((error as { code?: string }).code ?? error);
  } finally {
    await sql.end({ timeout: 1 });
    await gateway.close();
  }
}

/** The token is accepted by a gateway with `keys`, and rejected by one with other keys. */
async function assertAcceptedOnlyWith(
  token: string,
  keys: GatewayCredentials,
  endpoint?: string,
  region?: string,
): Promise<void> {
  assert.equal(signedWith(token).accessKeyId, keys.accessKeyId);
  assert.equal(await login(token, keys, endpoint, region), "ok");
  assert.equal(await login(token, OTHER, endpoint, region), "28P01", "other keys must reject");
}

const gatewayKeys = (k: TempKeys): GatewayCredentials => ({
  accessKeyId: k.accessKeyId,
  secretAccessKey: k.secretAccessKey,
  sessionToken: k.sessionToken,
});

const token = (o: Partial<Parameters<typeof rdsToken>[0]> = {}) =>
  rdsToken({ hostname: RDS_HOST, username: "app", ...o });

async function failure(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected a failure, got a token");
}

/** Rejects after `ms` (a hang guard only: no test asserts how fast anything is). */
function hangGuard<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}

async function using<T>(endpoints: FakeEndpoint[], fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } finally {
    await Promise.all(endpoints.map((e) => e.close()));
  }
}

// Bun's test runner gives a test 5 s by default; the SDK's retries alone take 3 s or more. This is a
// bound on a hang, not a timing assertion.
const SLOW = { timeout: 60_000 };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// Sources

test(
  "chain: ECS / EKS Pod Identity container endpoint, with the authorization token file",
  SLOW,
  async () => {
    const keys = tempKeys("container");
    const ep = await containerEndpoint({ keys }, "pod-identity-token-abc");
    await using([ep], () =>
      scene({}, {}, async (s) => {
        process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI = `${ep.url}/creds`;
        process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = s.file(
          "eks-token",
          "pod-identity-token-abc",
        );
        const t = await token();
        assert.equal(ep.requests.length, 1);
        assert.equal(ep.requests[0].headers.authorization, "pod-identity-token-abc");
        await assertAcceptedOnlyWith(t, gatewayKeys(keys));
      }));
  },
);

test(
  "chain: a container endpoint refusing the authorization token (401) is a clear error",
  SLOW,
  async () => {
    const keys = tempKeys("container");
    const ep = await containerEndpoint({ keys }, "the-right-token");
    await using([ep], () =>
      scene({}, {}, async (s) => {
        process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI = `${ep.url}/creds`;
        process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = s.file("wrong", "a-wrong-token");
        const error = await hangGuard(failure(token()), 30_000, "a refused container endpoint");
        assert.ok(error instanceof CredentialsError, String(error));
        assert.equal(error.code, "missing");
        assert.match(error.message, /standard AWS credential chain found no credentials/);
        // The SDK's chain ends with its own "Could not load credentials from any providers": the
        // endpoint's 401 does not reach the message. The server saw the wrong token every time.
        assert.ok(ep.requests.length > 0);
        assert.ok(ep.requests.every((r) => r.headers.authorization !== "the-right-token"));
        // Negative control: the same endpoint, the right token file.
        _resetChains();
        process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = s.file("right", "the-right-token");
        assert.equal(signedWith(await token()).accessKeyId, keys.accessKeyId);
      }));
  },
);

test(
  "chain: EC2 IMDSv2 (session token required), and nothing when IMDS is disabled",
  SLOW,
  async () => {
    const keys = tempKeys("instance");
    const ep = await imdsEndpoint({ keys });
    await using([ep], () =>
      scene({}, { AWS_EC2_METADATA_DISABLED: undefined }, async () => {
        process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT = ep.url;
        const t = await token();
        const [put, ...gets] = ep.requests;
        assert.equal(put.method, "PUT");
        assert.equal(put.path, "/latest/api/token");
        assert.ok(put.headers["x-aws-ec2-metadata-token-ttl-seconds"]);
        assert.deepEqual(
          gets.map((r) => [r.method, r.path, r.headers["x-aws-ec2-metadata-token"]]),
          [
            ["GET", "/latest/meta-data/iam/security-credentials/", IMDS_TOKEN],
            ["GET", `/latest/meta-data/iam/security-credentials/${IMDS_ROLE}`, IMDS_TOKEN],
          ],
        );
        await assertAcceptedOnlyWith(t, gatewayKeys(keys));
        // Negative control: IMDS disabled, the same environment has no credentials at all.
        _resetChains();
        process.env.AWS_EC2_METADATA_DISABLED = "true";
        const before = ep.requests.length;
        const error = await failure(token());
        assert.ok(error instanceof CredentialsError, String(error));
        assert.equal(error.code, "missing");
        assert.equal(ep.requests.length, before);
      }));
  },
);

test(
  "chain: web identity (EKS IRSA) from AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, via STS",
  SLOW,
  async () => {
    const keys = tempKeys("webidentity");
    const sts = await stsEndpoint({ keys });
    const role = "arn:aws:iam::123456789012:role/pg-iam-irsa";
    await using(
      [sts],
      () =>
        scene({}, { AWS_ENDPOINT_URL_STS: sts.url, AWS_ROLE_ARN: role }, async (s) => {
          process.env.AWS_WEB_IDENTITY_TOKEN_FILE = s.file("oidc-token", "eyJ.oidc.token");
          const t = await token();
          assert.equal(sts.requests.length, 1);
          const params = stsParams(sts.requests[0]);
          assert.equal(params.get("Action"), "AssumeRoleWithWebIdentity");
          assert.equal(params.get("RoleArn"), role);
          assert.equal(params.get("WebIdentityToken"), "eyJ.oidc.token");
          await assertAcceptedOnlyWith(t, gatewayKeys(keys));
        }),
    );
  },
);

test("chain: a profile with web_identity_token_file + role_arn, via STS", SLOW, async () => {
  const keys = tempKeys("webidprofile");
  const sts = await stsEndpoint({ keys });
  const role = "arn:aws:iam::123456789012:role/pg-iam-web";
  await using([sts], () =>
    scene({}, { AWS_ENDPOINT_URL_STS: sts.url }, async (s) => {
      const tokenFile = s.file("web-token", "eyJ.profile.token");
      fs.writeFileSync(
        process.env.AWS_CONFIG_FILE!,
        `[profile web]\nrole_arn = ${role}\nweb_identity_token_file = ${tokenFile}\n` +
          `region = us-east-1\n`,
      );
      const t = await token({ profile: "web" });
      assert.equal(sts.requests.length, 1);
      const params = stsParams(sts.requests[0]);
      assert.equal(params.get("Action"), "AssumeRoleWithWebIdentity");
      assert.equal(params.get("RoleArn"), role);
      assert.equal(params.get("WebIdentityToken"), "eyJ.profile.token");
      await assertAcceptedOnlyWith(t, gatewayKeys(keys));
    }));
});

test(
  "chain: role_arn + source_profile assumes the role, signed with the source profile's key",
  SLOW,
  async () => {
    const assumed = tempKeys("assumedrole");
    const sts = await stsEndpoint({ keys: assumed });
    const role = "arn:aws:iam::123456789012:role/pg-iam-assumed";
    await using([sts], () =>
      scene(
        {
          config: `[profile app]\nrole_arn = ${role}\nsource_profile = base\nregion = us-east-1\n`,
          credentials: `[base]\naws_access_key_id = ${PROFILE_STATIC.accessKeyId}\n` +
            `aws_secret_access_key = ${PROFILE_STATIC.secretAccessKey}\n`,
        },
        { AWS_ENDPOINT_URL_STS: sts.url },
        async () => {
          const t = await token({ profile: "app" });
          assert.equal(sts.requests.length, 1);
          const req = sts.requests[0];
          assert.equal(stsParams(req).get("Action"), "AssumeRole");
          assert.equal(stsParams(req).get("RoleArn"), role);
          assert.match(
            String(req.headers.authorization),
            new RegExp(`Credential=${PROFILE_STATIC.accessKeyId}/`),
          );
          await assertAcceptedOnlyWith(t, gatewayKeys(assumed));
          // The source profile's own keys are not the token's.
          assert.equal(await login(t, PROFILE_STATIC), "28P01");
        },
      ));
  },
);

test("chain: credential_process in a profile", SLOW, async () => {
  const script = path.join(REPO, "tests", "fixtures", "credential-process.mjs");
  const expiry = new Date(Date.now() + 3_600_000).toISOString();
  const keys = {
    accessKeyId: "ASIAFROMPROCESS01",
    secretAccessKey: "process/Secret+Key=33333",
    sessionToken: "process-session-token",
  };
  await scene(
    {
      config: `[profile proc]\ncredential_process = "${process.execPath}" "${script}" ` +
        `${keys.accessKeyId} ${keys.secretAccessKey} ${keys.sessionToken} ${expiry}\n`,
    },
    {},
    async () => {
      const t = await token({ profile: "proc" });
      await assertAcceptedOnlyWith(t, keys);
      // Without the session token the process printed, the gateway refuses the token.
      assert.equal(await login(t, { ...keys, sessionToken: undefined }), "28P01");
    },
  );
});

test(
  "chain: the `profile` option and AWS_PROFILE pick a profile's static keys over the environment's",
  SLOW,
  async () => {
    await scene(
      {
        credentials: `[static]\naws_access_key_id = ${PROFILE_STATIC.accessKeyId}\n` +
          `aws_secret_access_key = ${PROFILE_STATIC.secretAccessKey}\n`,
      },
      {
        AWS_ACCESS_KEY_ID: ENV_STATIC.accessKeyId,
        AWS_SECRET_ACCESS_KEY: ENV_STATIC.secretAccessKey,
      },
      async () => {
        // Negative control first: no profile asked for, the environment's keys sign.
        const fromEnv = await token();
        await assertAcceptedOnlyWith(fromEnv, ENV_STATIC);
        const byOption = await token({ profile: "static" });
        await assertAcceptedOnlyWith(byOption, PROFILE_STATIC);
        assert.equal(await login(byOption, ENV_STATIC), "28P01");
        process.env.AWS_PROFILE = "static";
        const byEnv = await token();
        assert.equal(signedWith(byEnv).accessKeyId, PROFILE_STATIC.accessKeyId);
        assert.equal(await login(byEnv, PROFILE_STATIC), "ok");
        // An unknown profile is an error, not a fallback to the environment's keys.
        const error = await failure(token({ profile: "nonesuch" }));
        assert.ok(error instanceof CredentialsError, String(error));
        assert.equal(error.code, "missing");
        assert.match(error.message, /nonesuch/);
      },
    );
  },
);

test(
  "chain: SSO (sso_session) with a cached token, from a local portal endpoint",
  SLOW,
  async () => {
    const keys = tempKeys("ssorole");
    const accessToken = "sso-access-token-xyz";
    const portal = await ssoEndpoint({ keys }, accessToken);
    await using([portal], () =>
      scene(
        {
          config: `[profile dev]\nsso_session = corp\nsso_account_id = 123456789012\n` +
            `sso_role_name = DbAccess\nregion = us-east-1\n\n[sso-session corp]\n` +
            `sso_start_url = https://corp.awsapps.com/start\nsso_region = us-east-1\n`,
        },
        { AWS_ENDPOINT_URL_SSO: portal.url },
        async (s) => {
          const cacheName = createHash("sha1").update("corp").digest("hex");
          s.file(
            `.aws/sso/cache/${cacheName}.json`,
            JSON.stringify({
              startUrl: "https://corp.awsapps.com/start",
              region: "us-east-1",
              accessToken,
              expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
            }),
          );
          const t = await token({ profile: "dev" });
          assert.equal(portal.requests.length, 1);
          const q = new URL(portal.requests[0].path, portal.url).searchParams;
          assert.equal(q.get("account_id"), "123456789012");
          assert.equal(q.get("role_name"), "DbAccess");
          await assertAcceptedOnlyWith(t, gatewayKeys(keys));
        },
      ));
  },
);

// ---------------------------------------------------------------------------------------------
// Region

test(
  "chain: the region comes from the profile for a custom hostname, and is signed in",
  SLOW,
  async () => {
    await scene(
      {
        config: `[profile eu]\nregion = eu-west-3\n\n[profile noregion]\noutput = json\n`,
        credentials: `[eu]\naws_access_key_id = ${PROFILE_STATIC.accessKeyId}\n` +
          `aws_secret_access_key = ${PROFILE_STATIC.secretAccessKey}\n\n[noregion]\n` +
          `aws_access_key_id = ${PROFILE_STATIC.accessKeyId}\n` +
          `aws_secret_access_key = ${PROFILE_STATIC.secretAccessKey}\n`,
      },
      {},
      async () => {
        const host = "db.example.com";
        const t = await token({ hostname: host, profile: "eu" });
        assert.deepEqual(signedWith(t), {
          accessKeyId: PROFILE_STATIC.accessKeyId,
          region: "eu-west-3",
        });
        assert.equal(await login(t, PROFILE_STATIC, host, "eu-west-3"), "ok");
        assert.equal(await login(t, PROFILE_STATIC, host, "us-east-1"), "28P01"); // wrong scope
        // Negative control: a profile without a region leaves the region unknown.
        const error = await failure(token({ hostname: host, profile: "noregion" }));
        assert.ok(error instanceof TypeError, String(error));
        assert.match(error.message, /region/i);
        // AWS_PROFILE selects the profile's region as well; AWS_REGION wins over it.
        process.env.AWS_PROFILE = "eu";
        assert.equal(signedWith(await token({ hostname: host })).region, "eu-west-3");
        process.env.AWS_REGION = "ap-south-1";
        assert.equal(signedWith(await token({ hostname: host })).region, "ap-south-1");
        // The hostname's own region wins over the profile's.
        delete process.env.AWS_REGION;
        assert.equal(signedWith(await token()).region, "us-east-1");
      },
    );
  },
);

test("chain: AWS_DEFAULT_REGION is honoured for a custom hostname", SLOW, async () => {
  await scene(
    { config: `[profile eu]\nregion = eu-west-3\n` },
    {
      AWS_ACCESS_KEY_ID: ENV_STATIC.accessKeyId,
      AWS_SECRET_ACCESS_KEY: ENV_STATIC.secretAccessKey,
    },
    async () => {
      const host = "db.example.com";
      // Negative control: no region anywhere.
      const error = await failure(token({ hostname: host }));
      assert.ok(error instanceof TypeError, String(error));
      process.env.AWS_DEFAULT_REGION = "sa-east-1";
      const t = await token({ hostname: host });
      assert.equal(signedWith(t).region, "sa-east-1");
      assert.equal(await login(t, ENV_STATIC, host, "sa-east-1"), "ok");
      assert.equal(await login(t, ENV_STATIC, host, "eu-west-3"), "28P01");
    },
  );
});

// ---------------------------------------------------------------------------------------------
// Expiry, refresh, failures

// Credentials expiring 6 minutes ahead, tokens living 2: the credentials outlive every token, but
// expire less than 5 minutes after it, so pg-iam serves them and fetches the next in the background.
const SOON = 6 * 60_000;
const SHORT_TOKEN = { expiresIn: 120 };

test(
  "chain: credentials expiring soon are refreshed in the background, the old ones serve meanwhile",
  SLOW,
  async () => {
    const a = tempKeys("keysa", SOON);
    const ep = await containerEndpoint({ keys: a });
    await using([ep], () =>
      scene({}, {}, async () => {
        process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI = `${ep.url}/creds`;
        const errors: Error[] = [];
        const options = { ...SHORT_TOKEN, onRefreshError: (e: Error) => errors.push(e) };
        const first = await token(options);
        assert.equal(signedWith(first).accessKeyId, a.accessKeyId);
        assert.equal(await login(first, gatewayKeys(a)), "ok");
        const b = tempKeys("keysb", SOON);
        ep.behaviour = { keys: b };
        const served = ep.requests.length;
        const second = await token(options); // starts the refresh, signs with A meanwhile
        assert.equal(signedWith(second).accessKeyId, a.accessKeyId);
        assert.equal(await login(second, gatewayKeys(a)), "ok");
        let later = second;
        for (let i = 0; i < 200 && signedWith(later).accessKeyId !== b.accessKeyId; i++) {
          await sleep(50);
          later = await token(options);
        }
        assert.equal(signedWith(later).accessKeyId, b.accessKeyId, "the refreshed keys never came");
        assert.ok(ep.requests.length > served, "the endpoint was asked again");
        await assertAcceptedOnlyWith(later, gatewayKeys(b));
        assert.equal(await login(later, gatewayKeys(a)), "28P01");
        assert.deepEqual(errors, []);
      }));
  },
);

test("chain: credentials expiring before the token are replaced before signing", SLOW, async () => {
  const a = tempKeys("firstkeys", SOON);
  const b = tempKeys("nextkeys", SOON);
  let served = 0;
  const ep = await containerEndpoint({ keys: () => served++ === 0 ? a : b });
  await using([ep], () =>
    scene({}, {}, async () => {
      process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI = `${ep.url}/creds`;
      // A 15-minute token would outlive A (6 minutes): pg-iam asks the chain again, and the SDK,
      // told to force a refresh, asks the endpoint again instead of returning its cached A.
      const t = await token();
      assert.equal(served, 2);
      await assertAcceptedOnlyWith(t, gatewayKeys(b));
      // Negative control: a 2-minute token is signed with the first keys, without asking again.
      _resetChains();
      served = 0;
      const short = await token(SHORT_TOKEN);
      assert.equal(served, 1);
      assert.equal(signedWith(short).accessKeyId, a.accessKeyId);
    }));
});

test(
  "chain: a failing refresh keeps serving the valid credentials and calls onRefreshError",
  SLOW,
  async () => {
    const a = tempKeys("keysa", SOON);
    const ep = await containerEndpoint({ keys: a });
    await using([ep], () =>
      scene({}, {}, async () => {
        process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI = `${ep.url}/creds`;
        let reported!: (e: Error) => void;
        const refreshFailed = new Promise<Error>((resolve) => reported = resolve);
        const options = { ...SHORT_TOKEN, onRefreshError: (e: Error) => reported(e) };
        const first = await token(options);
        assert.equal(signedWith(first).accessKeyId, a.accessKeyId);
        ep.behaviour = { status: 500 };
        const second = await token(options); // starts the refresh, which fails
        assert.equal(signedWith(second).accessKeyId, a.accessKeyId);
        const error = await hangGuard(refreshFailed, 30_000, "onRefreshError");
        assert.ok(error instanceof CredentialsError, String(error));
        assert.equal(error.code, "missing");
        assert.match(error.message, /standard AWS credential chain/);
        assert.ok(ep.requests.length > 1, "the refresh did ask the endpoint");
        const third = await token(options);
        assert.equal(signedWith(third).accessKeyId, a.accessKeyId);
        await assertAcceptedOnlyWith(third, gatewayKeys(a));
      }));
  },
);

// The SDK's fromHttp (container endpoint) passes requestTimeout 1000 to @smithy/node-http-handler
// without throwOnRequestTimeout, which then only logs a warning, and sets no socket timeout: a
// connected endpoint that never answers would hold the SDK call forever. pg-iam's chain wrapper
// (src/core/chain.ts) bounds it (CHAIN_TIMEOUT_MS); this test failed before that bound existed.
test(
  "chain: a container endpoint that never answers is a CredentialsError, not a hang",
  SLOW,
  async () => {
    const ep = await containerEndpoint("hang");
    await using([ep], () =>
      scene({}, {}, async () => {
        process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI = `${ep.url}/creds`;
        const error = await hangGuard(failure(token()), 20_000, "a hanging container endpoint");
        assert.ok(error instanceof CredentialsError, String(error));
        assert.equal(error.code, "missing");
        assert.match(error.message, /standard AWS credential chain gave no answer within 10s/);
        assert.ok(ep.requests.length >= 1, "the endpoint was asked");
        // Negative control: the same endpoint answering.
        const keys = tempKeys("awake");
        ep.behaviour = { keys };
        _resetChains();
        assert.equal(signedWith(await token()).accessKeyId, keys.accessKeyId);
      }));
  },
);

test(
  "chain: an instance metadata service that never answers is a CredentialsError, not a hang",
  SLOW,
  async () => {
    const ep = await imdsEndpoint("hang");
    await using([ep], () =>
      scene({}, { AWS_EC2_METADATA_DISABLED: undefined }, async () => {
        process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT = ep.url;
        const error = await hangGuard(failure(token()), 20_000, "a hanging IMDS");
        assert.ok(error instanceof CredentialsError, String(error));
        assert.equal(error.code, "missing");
        assert.match(
          error.message,
          /standard AWS credential chain (gave no answer within 10s|found no credentials)/,
        );
        assert.ok(ep.requests.length >= 1, "the endpoint was asked");
        // Negative control: the same endpoint answering.
        const keys = tempKeys("awake");
        ep.behaviour = { keys };
        _resetChains();
        assert.equal(signedWith(await token()).accessKeyId, keys.accessKeyId);
      }));
  },
);

// ---------------------------------------------------------------------------------------------
// No chain

/** Runs a command; resolves its exit code and output (stdout + stderr). */
function run(
  cmd: string,
  args: string[],
  cwd: string,
  env: Record<string, string>,
): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => out += d);
    child.stderr.on("data", (d) => out += d);
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, out }));
  });
}

test(
  "chain: without @aws-sdk/credential-provider-node, the error says what to install",
  SLOW,
  async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pg-iam-nochain-"));
    try {
      fs.copyFileSync(path.join(REPO, "mod.ts"), path.join(dir, "mod.ts"));
      fs.cpSync(path.join(REPO, "src"), path.join(dir, "src"), { recursive: true });
      fs.writeFileSync(path.join(dir, "package.json"), `{ "type": "module" }\n`);
      fs.writeFileSync(
        path.join(dir, "probe.ts"),
        `import { rdsToken } from "./mod.ts";\n` +
          `try {\n` +
          `  const t = await rdsToken({ hostname: ${
            JSON.stringify(RDS_HOST)
          }, username: "app" });\n` +
          `  console.log(JSON.stringify({ token: t.slice(0, 20) }));\n` +
          `} catch (e) {\n` +
          `  console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message }));\n` +
          `}\n`,
      );
      // No node_modules anywhere above the copy (so the import really fails), no credentials.
      let up = dir;
      while (path.dirname(up) !== up) {
        up = path.dirname(up);
        assert.ok(!fs.existsSync(path.join(up, "node_modules")), `${up} has a node_modules`);
      }
      const env: Record<string, string> = {
        PATH: process.env.PATH ?? "",
        HOME: dir,
        AWS_EC2_METADATA_DISABLED: "true",
        NO_COLOR: "1",
        DENO_NO_UPDATE_CHECK: "1",
      };
      const bin = (name: string) => path.join(REPO, "node_modules", ".bin", name);
      const runtimes: Array<[string, string, string[]]> = [
        ["node (tsx)", "node", [
          path.join(REPO, "node_modules", "tsx", "dist", "cli.mjs"),
          "probe.ts",
        ]],
        ["deno", bin("deno"), ["run", "-A", "--no-npm", "--no-config", "probe.ts"]],
        ["bun", bin("bun"), ["--no-install", "probe.ts"]],
      ];
      for (const [name, cmd, args] of runtimes) {
        const { code, out } = await hangGuard(run(cmd, args, dir, env), 60_000, name);
        assert.equal(code, 0, `${name}: ${out}`);
        const line = out.trim().split("\n").findLast((l) => l.startsWith("{"));
        assert.ok(line, `${name}: no result line in ${out}`);
        const result = JSON.parse(line);
        assert.equal(result.name, "CredentialsError", `${name}: ${out}`);
        assert.equal(result.code, "missing", name);
        assert.match(result.message, new RegExp(`npm install ${CHAIN_PACKAGE}`), name);
        assert.match(result.message, new RegExp(`deno add npm:${CHAIN_PACKAGE}`), name);
        assert.match(result.message, /"credentials"/, name);
        // Negative control: with keys in the environment the same copy signs without the chain.
        const withKeys = await run(cmd, args, dir, {
          ...env,
          AWS_ACCESS_KEY_ID: ENV_STATIC.accessKeyId,
          AWS_SECRET_ACCESS_KEY: ENV_STATIC.secretAccessKey,
        });
        assert.match(withKeys.out, /"token":"db\.cluster-abc123/, `${name}: ${withKeys.out}`);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
);
