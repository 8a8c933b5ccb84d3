import { test } from "node:test";
import assert from "node:assert/strict";
import { type Credentials, CredentialsError, rdsToken } from "../../mod.ts";
import { withEnv } from "../_env.ts";

const HOST = "mydb.c9akciq32.us-east-1.rds.amazonaws.com";
const T0 = new Date("2026-06-01T12:00:00Z");
const MIN = 60_000;
const at = (minutes: number) => new Date(T0.getTime() + minutes * MIN);
const keyOf = (token: string) => /X-Amz-Credential=([^%]+)%2F/.exec(token)![1];

// A provider shaped like the AWS SDK's: records its calls and hands out numbered credentials.
function provider(lifetimeMinutes: number | ((call: number) => number | undefined), delayMs = 0) {
  const calls: Array<{ forceRefresh?: boolean } | undefined> = [];
  const fn = async (options?: { forceRefresh?: boolean }): Promise<Credentials> => {
    calls.push(options);
    const n = calls.length;
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
    const life = typeof lifetimeMinutes === "function" ? lifetimeMinutes(n) : lifetimeMinutes;
    return {
      accessKeyId: `ASIA${n}`,
      secretAccessKey: `secret${n}`,
      sessionToken: `token${n}`,
      expiration: life === undefined ? undefined : at(life),
    };
  };
  return { fn, calls };
}

const token = (credentials: unknown, signingDate = T0, expiresIn?: number) =>
  rdsToken({
    hostname: HOST,
    username: "app",
    credentials: credentials as Credentials,
    signingDate,
    expiresIn,
  });

test("a provider's credentials are reused while they outlive the token", async () => {
  const p = provider(60);
  for (let i = 0; i < 5; i++) assert.equal(keyOf(await token(p.fn, at(i))), "ASIA1");
  assert.equal(p.calls.length, 1);
  assert.equal(p.calls[0], undefined);
});

test("credentials without an expiration are resolved once", async () => {
  const p = provider(() => undefined);
  await token(p.fn, at(0));
  await token(p.fn, at(600));
  assert.equal(p.calls.length, 1);
});

test("concurrent callers share one in-flight resolution", async () => {
  const p = provider(60, 20);
  const tokens = await Promise.all(Array.from({ length: 10 }, () => token(p.fn)));
  assert.equal(p.calls.length, 1);
  assert.equal(new Set(tokens).size, 1);
});

test("credentials that would expire before the token does are refreshed first", async () => {
  // The first answer expires in 10 minutes: a 15-minute token signed with it would die at 10.
  const p = provider((n) => (n === 1 ? 10 : 60));
  assert.equal(keyOf(await token(p.fn)), "ASIA2");
  assert.deepEqual(p.calls, [undefined, { forceRefresh: true }]);
});

test("cached credentials are refreshed once the token would outlive them", async () => {
  const p = provider((n) => n * 20); // ASIA1 expires at +20 min, ASIA2 at +40 min
  assert.equal(keyOf(await token(p.fn, at(0))), "ASIA1");
  assert.equal(keyOf(await token(p.fn, at(4))), "ASIA1"); // token ends at +19
  assert.equal(keyOf(await token(p.fn, at(6))), "ASIA2"); // token would end at +21
  assert.deepEqual(p.calls, [undefined, { forceRefresh: true }]);
});

test("a shorter token lifetime lets credentials be used closer to their expiry", async () => {
  const p = provider(20);
  assert.equal(keyOf(await token(p.fn, at(0))), "ASIA1");
  assert.equal(p.calls.length, 1); // 20 minutes outlive a 15-minute token by more than 5: no refresh
  assert.equal(keyOf(await token(p.fn, at(15), 60)), "ASIA1"); // served at once, not awaited...
  assert.deepEqual(p.calls[1], { forceRefresh: true }); // ...while the next keys load ahead
});

test("still short-lived but valid credentials after a refresh are used", async () => {
  const p = provider(5);
  assert.equal(keyOf(await token(p.fn)), "ASIA2");
  assert.equal(p.calls.length, 2);
});

test("a provider returning expired credentials, even after a refresh, is an error", async () => {
  const p = provider(-1);
  await assert.rejects(token(p.fn), (e: unknown) => {
    assert.ok(e instanceof CredentialsError);
    assert.equal(e.code, "expired");
    assert.match(e.message, /access key id "ASIA2"\) expired at 2026-06-01T11:59:00.000Z/);
    return true;
  });
  assert.deepEqual(p.calls, [undefined, { forceRefresh: true }]);
});

test("a failed resolution is not cached: the next call asks again", async () => {
  let n = 0;
  const fn = () => {
    if (++n === 1) throw new Error("throttled");
    return { accessKeyId: "AKID", secretAccessKey: "s" };
  };
  await assert.rejects(token(fn), (e: Error) => {
    assert.equal(e.name, "CredentialsError");
    assert.match((e.cause as Error).message, /throttled/);
    return true;
  });
  assert.equal(keyOf(await token(fn)), "AKID");
  assert.equal(n, 2);
});

test("concurrent callers all see a provider's failure, which is then forgotten", async () => {
  let n = 0;
  const fn = async () => {
    n++;
    await new Promise((r) => setTimeout(r, 10));
    throw new Error("IMDS unreachable");
  };
  const results = await Promise.allSettled([token(fn), token(fn), token(fn)]);
  assert.ok(results.every((r) => r.status === "rejected" && r.reason instanceof CredentialsError));
  assert.equal(n, 1);
});

test("synchronous providers work too", async () => {
  const fn = () => ({ accessKeyId: "AKIDSYNC", secretAccessKey: "s" });
  assert.equal(keyOf(await token(fn)), "AKIDSYNC");
});

const ENV_NONE = {
  AWS_ACCESS_KEY_ID: undefined,
  AWS_SECRET_ACCESS_KEY: undefined,
  AWS_SESSION_TOKEN: undefined,
  AWS_CREDENTIAL_EXPIRATION: undefined,
  AWS_PROFILE: undefined,
  // The chain must find nothing: no files, no container endpoint, no instance metadata.
  AWS_CONFIG_FILE: "/nonexistent/pg-iam-test/config",
  AWS_SHARED_CREDENTIALS_FILE: "/nonexistent/pg-iam-test/credentials",
  AWS_CONTAINER_CREDENTIALS_FULL_URI: undefined,
  AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: undefined,
  AWS_WEB_IDENTITY_TOKEN_FILE: undefined,
  AWS_EC2_METADATA_DISABLED: "true",
};

test("omitted credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN", async () => {
  const explicit = await token({
    accessKeyId: "AKIDENV",
    secretAccessKey: "s/e+c",
    sessionToken: "t/o+k=",
  });
  await withEnv(
    {
      ...ENV_NONE,
      AWS_ACCESS_KEY_ID: "AKIDENV",
      AWS_SECRET_ACCESS_KEY: "s/e+c",
      AWS_SESSION_TOKEN: "t/o+k=",
    },
    async () => assert.equal(await token(undefined), explicit),
  );
});

test("missing env credentials: the error says where it looked and what to do", async () => {
  await withEnv(ENV_NONE, async () => {
    await assert.rejects(token(undefined), (e: unknown) => {
      assert.ok(e instanceof CredentialsError);
      assert.equal(e.code, "missing");
      // The standard chain (installed here as a dev dependency) was asked next, and said why.
      assert.match(e.message, /standard AWS credential chain found no credentials/);
      assert.match(e.message, /none in the environment either/);
      return true;
    });
  });
});

test("half-set env credentials name the missing variable", async () => {
  await withEnv({ ...ENV_NONE, AWS_ACCESS_KEY_ID: "AKID" }, async () => {
    await assert.rejects(token(undefined), {
      name: "CredentialsError",
      message: /AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not/,
    });
  });
});

test("env credentials past AWS_CREDENTIAL_EXPIRATION are an error, not a dead token", async () => {
  await withEnv(
    {
      ...ENV_NONE,
      AWS_ACCESS_KEY_ID: "AKID",
      AWS_SECRET_ACCESS_KEY: "topsecret",
      AWS_CREDENTIAL_EXPIRATION: "2026-06-01T11:00:00Z",
    },
    async () => {
      await assert.rejects(token(undefined), (e: unknown) => {
        assert.ok(e instanceof CredentialsError && e.code === "expired");
        assert.ok(!e.message.includes("topsecret"));
        return true;
      });
      assert.equal(keyOf(await token(undefined, at(-61))), "AKID");
    },
  );
});

test("a session token put in AWS_CREDENTIAL_EXPIRATION is not quoted; a real bad date is", async () => {
  const sessionToken = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDsecretsecret";
  for (const [value, shown] of [[sessionToken, false], ["2026-13-45", true]] as const) {
    await withEnv(
      {
        ...ENV_NONE,
        AWS_ACCESS_KEY_ID: "AKID",
        AWS_SECRET_ACCESS_KEY: "topsecret",
        AWS_CREDENTIAL_EXPIRATION: value,
      },
      async () => {
        await assert.rejects(token(undefined), (e: unknown) => {
          assert.ok(e instanceof CredentialsError && e.code === "invalid");
          assert.match(e.message, /AWS_CREDENTIAL_EXPIRATION is not a date/);
          // The control: a date-shaped value is quoted, so the check would see a leak.
          assert.equal(e.message.includes(value), shown, e.message);
          assert.ok(!e.message.includes(sessionToken.slice(0, 12)));
          return true;
        });
      },
    );
  }
});

test("static credentials that expired are an error", async () => {
  await assert.rejects(
    token({ accessKeyId: "AKID", secretAccessKey: "s", expiration: at(0) }),
    {
      name: "CredentialsError",
      message: /expired at 2026-06-01T12:00:00.000Z, before the signing time/,
    },
  );
});

// AWS's documented example keys: an access key id and the secret that goes with it.
const REAL_ID = "AKIAIOSFODNN7EXAMPLE";
const REAL_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const TEMP_ID = "ASIAQ3EGUWZNY7HEXAMP";
const TEMP_SECRET = "Ab3+9sLk2PqR7tV1wXyZ0aBcDeFgHiJkLmNoPqRs";

/** Asserts `e` is an "invalid" CredentialsError saying the keys are swapped, quoting no key. */
function swapped(named: RegExp, ...values: string[]) {
  return (e: unknown) => {
    assert.ok(e instanceof CredentialsError, String(e));
    assert.equal(e.code, "invalid");
    assert.match(e.message, /seems to have its keys swapped/);
    assert.match(e.message, named);
    for (const v of values) {
      assert.ok(!e.message.includes(v), e.message);
      assert.ok(!String(e).includes(v) && !(e.stack ?? "").includes(v));
    }
    return true;
  };
}

test("credentials given the wrong way round are a CredentialsError that shows neither key", async () => {
  for (const [id, secret] of [[REAL_ID, REAL_SECRET], [TEMP_ID, TEMP_SECRET]]) {
    // Both swapped, as the option, from a provider, and from the environment.
    await assert.rejects(
      token({ accessKeyId: secret, secretAccessKey: id }),
      swapped(
        /"credentials" option .*accessKeyId has the shape of a secret.*secretAccessKey has the shape of an access key id/,
        id,
        secret,
      ),
    );
    await assert.rejects(
      token(() => Promise.resolve({ accessKeyId: secret, secretAccessKey: id, sessionToken: "t" })),
      swapped(/returned by the "credentials" provider/, id, secret),
    );
    await withEnv(
      { ...ENV_NONE, AWS_ACCESS_KEY_ID: secret, AWS_SECRET_ACCESS_KEY: id },
      () =>
        assert.rejects(
          token(undefined),
          swapped(
            /^The environment .*AWS_ACCESS_KEY_ID has the shape.*AWS_SECRET_ACCESS_KEY has the shape/,
            id,
            secret,
          ),
        ),
    );
  }
  // Either half alone is enough: a secret in the id's place, or an id in the secret's.
  await assert.rejects(
    token({ accessKeyId: REAL_SECRET, secretAccessKey: "something" }),
    swapped(/accessKeyId has the shape of a secret access key/, REAL_SECRET),
  );
  await assert.rejects(
    token({ accessKeyId: "AKIDEXAMPLE", secretAccessKey: REAL_ID }),
    swapped(/secretAccessKey has the shape of an access key id/, REAL_ID),
  );
});

test("the swap check passes real keys and the shapes tests use: any id of word characters, any secret but a key id", async () => {
  const ids = [
    REAL_ID,
    TEMP_ID,
    "AKIDEXAMPLE",
    "AKIDTEST",
    "AKID",
    "K0",
    "ASIA1",
    "AROAEXAMPLEROLEID1234",
    "a".repeat(128),
    "Ab3c9sLk2PqR7tV1wXyZ0aBcDeFgHiJkLmNoPqRs", // 40 word characters: no "/" or "+"
    "lower_case-id-0123456789",
  ];
  const secrets = [
    REAL_SECRET,
    TEMP_SECRET,
    "secret",
    "s/e+c",
    "AKIAIOSFODNN7EXAMPL", // 19 characters: not a key id
    "akiaiosfodnn7example", // lower case: not a key id
    "AKIAIOSFODNN7EXAMPLE" + "EXTRA",
  ];
  for (const accessKeyId of ids) {
    for (const secretAccessKey of secrets) {
      const t = await token({ accessKeyId, secretAccessKey });
      assert.equal(keyOf(t), accessKeyId);
    }
  }
  await withEnv(
    { ...ENV_NONE, AWS_ACCESS_KEY_ID: REAL_ID, AWS_SECRET_ACCESS_KEY: REAL_SECRET },
    async () => {
      assert.equal(keyOf(await token(undefined)), REAL_ID);
    },
  );
});
