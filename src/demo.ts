// `npm run demo`: the token engine on embedded example keys, no AWS account needed. Signs RDS and
// DSQL tokens, checks each byte for byte against the AWS SDK signers (dev dependencies), and times
// both. Not published: it imports the SDK, which pg-iam itself never does.

import { Signer } from "@aws-sdk/rds-signer";
import { DsqlSigner } from "@aws-sdk/dsql-signer";
import { dsqlToken, parseHostname, rdsToken } from "../mod.ts";
import { getCryptoBackend } from "./_crypto.ts";

// AWS's documentation example keys: syntactically real, authorised for nothing.
const credentials = {
  accessKeyId: "AKIAIOSFODNN7EXAMPLE",
  secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
};
const rdsHost = "orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com";
const dsqlHost = "abcdefghijklmnopqrstuvwxyz.dsql.eu-west-1.on.aws";

// The SDK signers read the clock themselves; sign both sides within one second, retrying if the
// second ticked in between.
async function sameSecond(pair: () => Promise<[string, string]>): Promise<[string, string]> {
  for (;;) {
    const before = Math.floor(Date.now() / 1000);
    const result = await pair();
    if (Math.floor(Date.now() / 1000) === before) return result;
  }
}

async function perToken(fn: (i: number) => Promise<string>, n = 2000): Promise<number> {
  for (let i = 0; i < 200; i++) await fn(i);
  const start = performance.now();
  for (let i = 0; i < n; i++) await fn(i);
  return ((performance.now() - start) / n) * 1000;
}

const rows: string[][] = [];
let failures = 0;

for (const host of [rdsHost, dsqlHost]) {
  const p = parseHostname(host)!;
  console.log(
    `${host}\n  → ${p.service} ${p.kind} "${p.identifier}" in ${p.region} (${p.partition})`,
  );
}

const [ours, sdk] = await sameSecond(async () => [
  await rdsToken({ hostname: rdsHost, username: "app", credentials }),
  await new Signer({
    hostname: rdsHost,
    port: 5432,
    username: "app",
    region: "us-east-1",
    credentials,
  })
    .getAuthToken(),
]);
const [oursDsql, sdkDsql] = await sameSecond(async () => [
  await dsqlToken({ hostname: dsqlHost, credentials }),
  await new DsqlSigner({ hostname: dsqlHost, region: "eu-west-1", credentials })
    .getDbConnectAdminAuthToken(),
]);

for (const [name, a, b] of [["RDS", ours, sdk], ["DSQL admin", oursDsql, sdkDsql]]) {
  const same = a === b;
  if (!same) failures++;
  // Only the start of the token: its signature is a credential.
  console.log(`\n${name} token: ${a.slice(0, a.indexOf("&X-Amz-Credential"))}&…`);
  console.log(`  identical to the AWS SDK's: ${same ? "yes" : "NO"}`);
}

const rdsUs = await perToken((i) =>
  rdsToken({ hostname: rdsHost, username: `u${i}`, credentials })
);
const sdkUs = await perToken((i) =>
  new Signer({ hostname: rdsHost, port: 5432, username: `u${i}`, region: "us-east-1", credentials })
    .getAuthToken()
);
rows.push(["RDS token", rdsUs.toFixed(1), sdkUs.toFixed(1), (sdkUs / rdsUs).toFixed(1) + "x"]);
const dsqlUs = await perToken((i) =>
  dsqlToken({ hostname: dsqlHost, username: i % 2 ? "admin" : "app", credentials })
);
const sdkDsqlUs = await perToken((i) => {
  const s = new DsqlSigner({ hostname: dsqlHost, region: "eu-west-1", credentials });
  return i % 2 ? s.getDbConnectAdminAuthToken() : s.getDbConnectAuthToken();
});
rows.push([
  "DSQL token",
  dsqlUs.toFixed(1),
  sdkDsqlUs.toFixed(1),
  (sdkDsqlUs / dsqlUs).toFixed(1) + "x",
]);

console.log(`\nPer token, warm (crypto backend: ${getCryptoBackend().name}):`);
console.log("  what        pg-iam µs   AWS SDK µs   speed-up");
for (const r of rows) {
  console.log(
    `  ${r[0].padEnd(11)} ${r[1].padStart(9)}   ${r[2].padStart(10)}   ${r[3].padStart(8)}`,
  );
}
console.log(
  `\n${failures === 0 ? "All tokens identical to the AWS SDK's." : `${failures} mismatch(es)!`}`,
);
if (failures) (globalThis as { process?: { exitCode?: number } }).process!.exitCode = 1;
