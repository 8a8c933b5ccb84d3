import { test } from "node:test";
import assert from "node:assert/strict";
import { type ParsedHostname, parseHostname } from "../../mod.ts";

const rds = (
  region: string,
  kind: string,
  identifier: string,
  partition: string,
): ParsedHostname => ({ service: "rds", region, kind, identifier, partition } as ParsedHostname);
const dsql = (region: string, identifier: string, partition = "aws"): ParsedHostname =>
  ({ service: "dsql", region, kind: "cluster", identifier, partition }) as ParsedHostname;

const ID = "abcdefghijklmnopqrstuvwxyz";

const CASES: Array<[string, ParsedHostname | undefined]> = [
  // Every RDS endpoint kind, commercial partition.
  ["mydb.c9akciq32.us-east-1.rds.amazonaws.com", rds("us-east-1", "instance", "mydb", "aws")],
  [
    "orders.cluster-c9akciq32.eu-west-1.rds.amazonaws.com",
    rds("eu-west-1", "cluster", "orders", "aws"),
  ],
  [
    "orders.cluster-ro-c9akciq32.eu-west-1.rds.amazonaws.com",
    rds("eu-west-1", "cluster-ro", "orders", "aws"),
  ],
  [
    "olap.cluster-custom-c9akciq32.ap-southeast-2.rds.amazonaws.com",
    rds("ap-southeast-2", "cluster-custom", "olap", "aws"),
  ],
  [
    "my-proxy.proxy-c9akciq32.us-west-2.rds.amazonaws.com",
    rds("us-west-2", "proxy", "my-proxy", "aws"),
  ],
  [
    "ro-ep.endpoint.proxy-c9akciq32.us-west-2.rds.amazonaws.com",
    rds("us-west-2", "proxy", "ro-ep", "aws"),
  ],
  [
    "shards.shardgrp-c9akciq32.us-east-2.rds.amazonaws.com",
    rds("us-east-2", "limitless", "shards", "aws"),
  ],
  // Regions not launched when this was written still parse: there is no allowlist.
  ["db.abc.mx-central-1.rds.amazonaws.com", rds("mx-central-1", "instance", "db", "aws")],
  ["db.abc.xx-newplace-9.rds.amazonaws.com", rds("xx-newplace-9", "instance", "db", "aws")],
  // Case-insensitive, trailing dot allowed, FIPS label.
  [
    "MyDB.Cluster-C9AKCIQ32.US-EAST-1.RDS.AMAZONAWS.COM.",
    rds("us-east-1", "cluster", "mydb", "aws"),
  ],
  ["db.abc.us-east-1.rds-fips.amazonaws.com", rds("us-east-1", "instance", "db", "aws")],
  // China, both layouts.
  ["db.cluster-abc.rds.cn-north-1.amazonaws.com.cn", rds("cn-north-1", "cluster", "db", "aws-cn")],
  ["db.abc.cn-northwest-1.rds.amazonaws.com.cn", rds("cn-northwest-1", "instance", "db", "aws-cn")],
  // GovCloud, ISO partitions, the European Sovereign Cloud.
  [
    "db.cluster-abc.us-gov-west-1.rds.amazonaws.com",
    rds("us-gov-west-1", "cluster", "db", "aws-us-gov"),
  ],
  ["db.abc.rds.us-gov-east-1.amazonaws.com", rds("us-gov-east-1", "instance", "db", "aws-us-gov")],
  ["db.cluster-abc.us-iso-east-1.rds.c2s.ic.gov", rds("us-iso-east-1", "cluster", "db", "aws-iso")],
  ["db.abc.us-isob-east-1.rds.sc2s.sgov.gov", rds("us-isob-east-1", "instance", "db", "aws-iso-b")],
  [
    "db.abc.eu-isoe-west-1.rds.cloud.adc-e.uk",
    rds("eu-isoe-west-1", "instance", "db", "aws-iso-e"),
  ],
  [
    "db.abc.us-isof-south-1.rds.csp.hci.ic.gov",
    rds("us-isof-south-1", "instance", "db", "aws-iso-f"),
  ],
  ["db.abc.eusc-de-east-1.rds.amazonaws.eu", rds("eusc-de-east-1", "instance", "db", "aws-eusc")],
  // DSQL, plain and suffixed service labels.
  [`${ID}.dsql.us-east-1.on.aws`, dsql("us-east-1", ID)],
  [`${ID}.dsql-fnh4.eu-central-1.on.aws`, dsql("eu-central-1", ID)],
  [`${ID.toUpperCase()}.DSQL.US-EAST-2.ON.AWS.`, dsql("us-east-2", ID)],
  [`${ID}.dsql.us-gov-west-1.on.aws`, dsql("us-gov-west-1", ID, "aws-us-gov")],
  // Not AWS database endpoints.
  ["10.0.1.50", undefined],
  ["::1", undefined],
  ["localhost", undefined],
  ["db.example.com", undefined],
  ["db.internal.mycompany.rds.amazonaws.com.evil.com", undefined],
  ["rds.amazonaws.com", undefined],
  ["us-east-1.rds.amazonaws.com", undefined],
  ["db.abc.notaregion.rds.amazonaws.com", undefined],
  ["db.a-b.us-east-1.rds.amazonaws.com", undefined],
  ["a.b.abc.us-east-1.rds.amazonaws.com", undefined],
  ["elb-name.elb.us-east-2.amazonaws.com", undefined],
  ["global-db.global-abc.global.rds.amazonaws.com", undefined],
  [`${ID}.dsql.us-east-1.on.aws.example.com`, undefined],
  [`x.${ID}.dsql.us-east-1.on.aws`, undefined],
  [`${ID}.notdsql.us-east-1.on.aws`, undefined],
  ["", undefined],
  ["db..abc.us-east-1.rds.amazonaws.com", undefined],
];

for (const [hostname, expected] of CASES) {
  test(`parseHostname() of ${JSON.stringify(hostname)} is ${expected ? `${expected.service} ${expected.kind} in ${expected.region}` : "undefined"}`, () => {
    assert.deepEqual(parseHostname(hostname), expected);
  });
}

test("parseHostname() rejects a non-string with a TypeError naming the value", () => {
  assert.throws(() => parseHostname(42 as unknown as string), {
    name: "TypeError",
    message: /string hostname, got 42/,
  });
});
