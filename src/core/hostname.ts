// Endpoint names of RDS, Aurora and Aurora DSQL, in every partition. No region allowlist: a region
// is recognised by its shape, so regions launched tomorrow work today. Endpoint formats:
// https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/Aurora.Overview.Endpoints.html
// https://docs.aws.amazon.com/aurora-dsql/latest/userguide/SECTION_authentication-token.html

import { bad, show, subject } from "./errors.ts";

/** The AWS partition an endpoint lives in. */
export type Partition =
  | "aws"
  | "aws-cn"
  | "aws-us-gov"
  | "aws-iso"
  | "aws-iso-b"
  | "aws-iso-e"
  | "aws-iso-f"
  | "aws-eusc";

/**
 * What an RDS endpoint points at: a DB instance, an Aurora cluster's writer (`cluster`), reader
 * (`cluster-ro`) or custom endpoint, an RDS Proxy (or one of its endpoints), or an Aurora Limitless
 * shard group.
 */
export type RdsEndpointKind =
  | "instance"
  | "cluster"
  | "cluster-ro"
  | "cluster-custom"
  | "proxy"
  | "limitless";

/** An RDS or Aurora endpoint, parsed. */
export interface ParsedRdsHostname {
  /** Always `"rds"`. */
  service: "rds";
  /** The region in the name, for example `"us-east-1"`. */
  region: string;
  /** What the endpoint points at. */
  kind: RdsEndpointKind;
  /** The instance, cluster, proxy or shard group name (the first label, lowercased). */
  identifier: string;
  /** The partition whose DNS suffix the name ends in. */
  partition: Partition;
}

/** An Aurora DSQL cluster endpoint, parsed. */
export interface ParsedDsqlHostname {
  /** Always `"dsql"`. */
  service: "dsql";
  /** The region in the name, for example `"us-east-1"`. */
  region: string;
  /** Always `"cluster"`. */
  kind: "cluster";
  /** The cluster id (the first label, lowercased). */
  identifier: string;
  /** The partition whose DNS suffix the name ends in. */
  partition: Partition;
}

/** What {@linkcode parseHostname} derives from an AWS database endpoint. */
export type ParsedHostname = ParsedRdsHostname | ParsedDsqlHostname;

// DNS suffix (after the "rds" and region labels) → partition.
const RDS_SUFFIXES: Readonly<Record<string, Partition>> = {
  "amazonaws.com.cn": "aws-cn",
  "amazonaws.com": "aws",
  "amazonaws.eu": "aws-eusc",
  "sc2s.sgov.gov": "aws-iso-b",
  "csp.hci.ic.gov": "aws-iso-f",
  "c2s.ic.gov": "aws-iso",
  "cloud.adc-e.uk": "aws-iso-e",
};

const R = "[a-z]{2,}(?:-[a-z]+)*-[a-z]+-\\d+";
const REGION = new RegExp(`^${R}$`);
// `<identifier>.<kind prefix><hash>.<region>.rds.<suffix>` (or `.rds.<region>.`, China's older
// layout, and others), a proxy's endpoint with `<endpoint>.endpoint.` before its own name.
const RDS_NAME = new RegExp(
  `^([^.]+)\\.(?:(endpoint)\\.)?(cluster-custom-|cluster-ro-|cluster-|proxy-|shardgrp-)?` +
    `[a-z0-9]+\\.(?:(${R})\\.rds(?:-fips)?|rds(?:-fips)?\\.(${R}))\\.(${
      Object.keys(RDS_SUFFIXES).join("|").replace(/\./g, "\\.")
    })$`,
);
// `<cluster id>.dsql[-<suffix>].<region>.on.aws`
const DSQL_NAME = new RegExp(`^([^.]+)\\.dsql(?:-[a-z0-9]+)?\\.(${R})\\.on\\.aws$`);
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** Whether `value` has the shape of an AWS region name (`us-east-1`, `us-gov-west-1`, …). */
export function isRegion(value: string): boolean {
  return REGION.test(value);
}

function partitionOf(suffix: Partition, region: string): Partition {
  return suffix === "aws" && region.startsWith("us-gov-") ? "aws-us-gov" : suffix;
}

/**
 * Derives service, region, endpoint kind, identifier and partition from an RDS, Aurora or Aurora
 * DSQL endpoint name. Case-insensitive; a trailing dot is allowed.
 *
 * @param hostname An endpoint name such as `mydb.cluster-abc123.us-east-1.rds.amazonaws.com`.
 * @returns The parsed endpoint, or `undefined` for IP addresses, custom DNS names (CNAMEs) and
 * anything else that is not an AWS database endpoint.
 * @throws {TypeError} If `hostname` is not a string.
 *
 * @example Parsing RDS and DSQL endpoints
 * ```ts
 * import { parseHostname } from "@pg-iam/pg-iam";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseHostname("orders.cluster-ro-c9akciq32.eu-west-1.rds.amazonaws.com"), {
 *   service: "rds",
 *   region: "eu-west-1",
 *   kind: "cluster-ro",
 *   identifier: "orders",
 *   partition: "aws",
 * });
 * assert.equal(parseHostname("abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws")?.service, "dsql");
 * assert.equal(parseHostname("db.example.com"), undefined);
 * ```
 */
export function parseHostname(hostname: string): ParsedHostname | undefined {
  if (typeof hostname !== "string") {
    throw new TypeError(`parseHostname() expects a string hostname, got ${show(hostname)}`);
  }
  const name = hostname.toLowerCase().replace(/\.$/, "");
  const labels = name.split(".");
  if (!labels.every((l) => LABEL.test(l))) return undefined;
  const rds = RDS_NAME.exec(name);
  if (rds) {
    const [, identifier, endpoint, prefix = "", r1, r2, suffix] = rds;
    if (endpoint && prefix !== "proxy-") return undefined;
    const region = r1 ?? r2;
    return {
      service: "rds",
      region,
      kind: prefix === "shardgrp-"
        ? "limitless"
        : (prefix.slice(0, -1) || "instance") as RdsEndpointKind,
      identifier,
      partition: partitionOf(RDS_SUFFIXES[suffix], region),
    };
  }
  const dsql = DSQL_NAME.exec(name);
  return dsql
    ? {
      service: "dsql",
      region: dsql[2],
      kind: "cluster",
      identifier: dsql[1],
      partition: partitionOf("aws", dsql[2]),
    }
    : undefined;
}

const DSQL_CLUSTER_ID = /^[a-z0-9]{26}$/;

/** Whether `value` is a bare Aurora DSQL cluster id: 26 lowercase letters and digits. */
export function isDsqlClusterId(value: string): boolean {
  return DSQL_CLUSTER_ID.test(value);
}

/** The endpoint of a DSQL cluster: `<id>.dsql.<region>.on.aws`. */
export function dsqlEndpoint(clusterId: string, region: string): string {
  return `${clusterId}.dsql.${region}.on.aws`;
}

const HOST_CHARS = /^[A-Za-z0-9._-]+$/;
// The common case in one test: dot-separated labels of 1 to 63 characters, maybe a trailing dot.
const PLAIN_NAME = /^[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?$/;
const IPV6 = /^\[?[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]?$/;

/**
 * Checks that `value` is a bare host name for the input `option` (see `phrase`) and returns it without a
 * trailing dot. Rejects schemes, paths, ports, credentials, whitespace and non-ASCII names, each
 * with a message that says what to pass instead.
 */
export function checkHostname(value: unknown, option: string): string {
  if (typeof value === "string" && value.length <= 253 && PLAIN_NAME.test(value)) {
    return value.replace(/\.$/, "");
  }
  const s = subject(option);
  if (value == null) {
    throw new TypeError(`${s} is required: pass the database endpoint name`);
  }
  if (typeof value !== "string") throw bad(option, "must be a string", value);
  if (value.trim() === "") throw bad(option, "must not be empty", value);
  const fix = (what: string) =>
    new TypeError(`${s} ${what}, got ${show(value)}: pass the bare host name`);
  if (/\s/.test(value)) throw fix("must not contain whitespace");
  if (value.includes("://")) throw fix("must not include a scheme");
  if (value.includes("/")) throw fix("must not include a path");
  if (/[@?#]/.test(value)) throw fix("is not a host name");
  if (IPV6.test(value) && (value.match(/:/g)?.length ?? 0) >= 2) return value;
  if (value.includes(":")) throw fix("must not include a port (use the port option)");
  if (!HOST_CHARS.test(value)) {
    throw new TypeError(
      `${s} has characters a DNS name cannot have, got ${show(value)}` +
        (/[^ -~]/.test(value) ? ": use the ASCII (punycode) form" : ""),
    );
  }
  const name = value.replace(/\.$/, "");
  if (name.length > 253 || name.split(".").some((l) => l.length === 0 || l.length > 63)) {
    throw fix("is not a valid DNS name (empty or over-long label)");
  }
  return name;
}

/** A checked endpoint name and what {@linkcode parseHostname} makes of it. */
export interface Endpoint {
  readonly name: string;
  readonly parsed: ParsedHostname | undefined;
}

// Applications sign for the same few endpoints over and over: check and parse each name once.
const MAX_ENDPOINTS = 64;
const endpoints = new Map<string, Endpoint>();

/** {@linkcode checkHostname} and {@linkcode parseHostname}, memoized per name. */
export function checkEndpoint(value: unknown, option: string): Endpoint {
  const hit = typeof value === "string" ? endpoints.get(value) : undefined;
  if (hit !== undefined) return hit;
  // Lower case, as botocore and the AWS CLI sign it: DNS names are case-insensitive, AWS's endpoint
  // names are lower case, and a signature over "DB.Cluster-…" is not one over the name AWS checks.
  // (@aws-sdk/rds-signer signs the name as typed.)
  const name = checkHostname(value, option).toLowerCase();
  const endpoint: Endpoint = { name, parsed: parseHostname(name) };
  if (endpoints.size >= MAX_ENDPOINTS) endpoints.delete(endpoints.keys().next().value!);
  endpoints.set(value as string, endpoint);
  return endpoint;
}
