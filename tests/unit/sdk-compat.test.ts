import { test } from "node:test";
import assert from "node:assert/strict";
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from "@smithy/types";
import { type CredentialsOption, rdsToken } from "../../mod.ts";

// An AWS SDK v3 provider, typed as the SDK types it (fromNodeProviderChain(), fromIni(), … all
// are AwsCredentialIdentityProvider): `deno check` fails this file if our option stops accepting it.
const calls: Array<Record<string, unknown> | undefined> = [];
const sdkProvider: AwsCredentialIdentityProvider = (properties) => {
  calls.push(properties);
  const identity: AwsCredentialIdentity = {
    accessKeyId: "ASIASDKPROVIDER",
    secretAccessKey: "secret",
    sessionToken: "session",
    expiration: new Date(Date.now() + 3_600_000),
    accountId: "123456789012",
  };
  return Promise.resolve(identity);
};

test("an AWS SDK v3 credential provider plugs into the credentials option unchanged", async () => {
  const credentials: CredentialsOption = sdkProvider;
  const token = await rdsToken({
    hostname: "db.abc123.us-east-1.rds.amazonaws.com",
    username: "app",
    credentials,
  });
  assert.match(token, /X-Amz-Credential=ASIASDKPROVIDER%2F/);
  assert.match(token, /X-Amz-Security-Token=session&/);
  assert.deepEqual(calls, [undefined]);
});
