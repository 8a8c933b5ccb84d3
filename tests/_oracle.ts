// Helpers for tests/unit/differential.test.ts: a seeded input generator and two
// independent oracles built from the official AWS SDK packages.
//
//   (a) the SDK signers themselves (@aws-sdk/rds-signer Signer#getAuthToken,
//       @aws-sdk/dsql-signer DsqlSigner), with the wall clock pinned to the
//       case's signing instant (see withPinnedClock);
//   (b) SignatureV4#presign from @smithy/signature-v4 with an explicit
//       signingDate, given the same GET request the SDK signers build, then
//       formatted the way the SDK formats it.
//
// Nothing in here imports pg-iam, so the oracles stay independent of it.

import { Sha256 } from "@aws-crypto/sha256-js";
import { DsqlSigner } from "@aws-sdk/dsql-signer";
import { Signer } from "@aws-sdk/rds-signer";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import process from "node:process";

// ---------------------------------------------------------------------------
// Seeded PRNG
// ---------------------------------------------------------------------------

/** mulberry32: a tiny 32-bit-state PRNG; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Rng {
  readonly #next: () => number;
  constructor(seed: number) {
    this.#next = mulberry32(seed);
  }
  /** Float in [0, 1). */
  float(): number {
    return this.#next();
  }
  /** Integer in [min, max], both inclusive. */
  int(min: number, max: number): number {
    return min + Math.floor(this.#next() * (max - min + 1));
  }
  chance(p: number): boolean {
    return this.#next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.#next() * items.length)];
  }
  chars(alphabet: string, length: number): string {
    let out = "";
    for (let i = 0; i < length; i++) out += alphabet[Math.floor(this.#next() * alphabet.length)];
    return out;
  }
}

export const DEFAULT_SEED = 0x9e3779b9;

/**
 * The seed: PG_IAM_SEED (decimal or 0x-hex; "random" for a fresh one), or a
 * fixed default so that CI runs are reproducible.
 */
export function resolveSeed(): number {
  let raw: string | undefined;
  try {
    raw = process.env.PG_IAM_SEED;
  } catch {
    raw = undefined; // e.g. Deno without --allow-env
  }
  if (raw === undefined || raw.trim() === "") return DEFAULT_SEED;
  if (raw.trim().toLowerCase() === "random") return (Math.random() * 2 ** 32) >>> 0;
  const n = Number(raw.trim());
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new Error(`PG_IAM_SEED must be an integer in [0, 2^32), got ${JSON.stringify(raw)}`);
  }
  return n >>> 0;
}

export function seedHex(seed: number): string {
  return `0x${seed.toString(16).padStart(8, "0")}`;
}

// ---------------------------------------------------------------------------
// Case model
// ---------------------------------------------------------------------------

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

export type CredentialProvider = () => Promise<Credentials>;

/** Mirrors pg-iam's rdsToken() options. */
export interface RdsOptions {
  hostname: string;
  port?: number;
  username: string;
  region?: string;
  credentials: Credentials | CredentialProvider;
  expiresIn?: number;
  signingDate: Date;
  signingHostname?: string;
}

/** Mirrors pg-iam's dsqlToken() options. */
export interface DsqlOptions {
  hostname: string;
  username?: string;
  admin?: boolean;
  region?: string;
  credentials: Credentials | CredentialProvider;
  expiresIn?: number;
  signingDate: Date;
}

/** What the token must be signed for, worked out independently of pg-iam. */
export interface Expected {
  service: "rds-db" | "dsql";
  /** Hostname to sign for and to start the token with. */
  host: string;
  /** RDS only. */
  port?: number;
  region: string;
  /** RDS: DBUser. */
  username?: string;
  /** DSQL: DbConnectAdmin or DbConnect. RDS: connect. */
  action: string;
  credentials: Credentials;
  expiresIn: number;
  signingDate: Date;
}

export interface RdsCase {
  kind: "rds";
  index: number;
  options: RdsOptions;
  expected: Expected;
  tags: string[];
}

export interface DsqlCase {
  kind: "dsql";
  index: number;
  options: DsqlOptions;
  expected: Expected;
  tags: string[];
}

export type Case = RdsCase | DsqlCase;

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

const LOWER = "abcdefghijklmnopqrstuvwxyz";
const DIGITS = "0123456789";
const UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const ALNUM_LOWER = LOWER + DIGITS;
const BASE64 = UPPER + LOWER + DIGITS + "+/";

const AWS_REGIONS = [
  "us-east-1",
  "us-east-2",
  "us-west-1",
  "us-west-2",
  "eu-west-1",
  "eu-west-2",
  "eu-west-3",
  "eu-central-1",
  "eu-central-2",
  "eu-north-1",
  "eu-south-2",
  "ap-northeast-1",
  "ap-northeast-2",
  "ap-northeast-3",
  "ap-southeast-1",
  "ap-southeast-2",
  "ap-southeast-7",
  "ap-south-1",
  "ca-central-1",
  "ca-west-1",
  "sa-east-1",
  "me-central-1",
  "af-south-1",
  "il-central-1",
  "mx-central-1",
] as const;
const CN_REGIONS = ["cn-north-1", "cn-northwest-1"] as const;
const GOV_REGIONS = ["us-gov-west-1", "us-gov-east-1"] as const;
const ISO_REGIONS = ["us-iso-east-1", "us-iso-west-1"] as const;
const ISOB_REGIONS = ["us-isob-east-1"] as const;
const ALL_REGIONS = [
  ...AWS_REGIONS,
  ...CN_REGIONS,
  ...GOV_REGIONS,
  ...ISO_REGIONS,
  ...ISOB_REGIONS,
];
const DSQL_REGIONS = [
  "us-east-1",
  "us-east-2",
  "us-west-2",
  "eu-west-1",
  "eu-west-2",
  "eu-west-3",
  "eu-central-1",
  "ap-northeast-1",
  "ap-northeast-2",
  "ap-northeast-3",
  "ap-southeast-2",
  "ca-central-1",
] as const;

/** Kinds of RDS endpoints, by the prefix of the label before the region. */
export const RDS_ENDPOINT_KINDS = [
  "instance", // <id>.<hash>.
  "cluster", // <id>.cluster-<hash>.
  "cluster-ro", // <id>.cluster-ro-<hash>.
  "cluster-custom", // <id>.cluster-custom-<hash>.
  "proxy", // <id>.proxy-<hash>.
  "proxy-endpoint", // <endpoint>.endpoint.proxy-<hash>.
  "limitless", // <shard-group>.shardgrp-<hash>. (Aurora Limitless shard group)
] as const;

const RDS_KIND_LABEL: Record<(typeof RDS_ENDPOINT_KINDS)[number], (hash: string) => string> = {
  "instance": (hash) => hash,
  "cluster": (hash) => `cluster-${hash}`,
  "cluster-ro": (hash) => `cluster-ro-${hash}`,
  "cluster-custom": (hash) => `cluster-custom-${hash}`,
  "proxy": (hash) => `proxy-${hash}`,
  "proxy-endpoint": (hash) => `endpoint.proxy-${hash}`,
  "limitless": (hash) => `shardgrp-${hash}`,
};

/** Partition / suffix forms of RDS endpoints. */
export const RDS_PARTITION_FORMS = [
  "aws",
  "aws-cn-rds-first", // <id>.<hash>.rds.cn-north-1.amazonaws.com.cn
  "aws-cn-region-first", // <id>.<hash>.cn-north-1.rds.amazonaws.com.cn
  "aws-us-gov",
  "aws-iso",
  "aws-iso-b",
] as const;

type RdsPartitionForm = (typeof RDS_PARTITION_FORMS)[number];
type RdsEndpointKind = (typeof RDS_ENDPOINT_KINDS)[number];

function dnsLabel(rng: Rng, min: number, max: number): string {
  const len = rng.int(min, max);
  let s = rng.chars(LOWER, 1);
  for (let i = 1; i < len; i++) {
    // hyphens only inside, never doubled
    const prevHyphen = s.endsWith("-");
    s += i < len - 1 && !prevHyphen && rng.chance(0.12) ? "-" : rng.chars(ALNUM_LOWER, 1);
  }
  return s;
}

function rdsEndpoint(
  rng: Rng,
  form: RdsPartitionForm,
  kind: RdsEndpointKind,
): { hostname: string; region: string } {
  const id = dnsLabel(rng, 1, rng.chance(0.1) ? 63 : 20);
  const hash = rng.chars(ALNUM_LOWER, 12);
  const second = RDS_KIND_LABEL[kind](hash);
  switch (form) {
    case "aws": {
      const region = rng.pick(AWS_REGIONS);
      return { hostname: `${id}.${second}.${region}.rds.amazonaws.com`, region };
    }
    case "aws-cn-rds-first": {
      const region = rng.pick(CN_REGIONS);
      return { hostname: `${id}.${second}.rds.${region}.amazonaws.com.cn`, region };
    }
    case "aws-cn-region-first": {
      const region = rng.pick(CN_REGIONS);
      return { hostname: `${id}.${second}.${region}.rds.amazonaws.com.cn`, region };
    }
    case "aws-us-gov": {
      const region = rng.pick(GOV_REGIONS);
      return { hostname: `${id}.${second}.${region}.rds.amazonaws.com`, region };
    }
    case "aws-iso": {
      const region = rng.pick(ISO_REGIONS);
      return { hostname: `${id}.${second}.${region}.rds.c2s.ic.gov`, region };
    }
    case "aws-iso-b": {
      const region = rng.pick(ISOB_REGIONS);
      return { hostname: `${id}.${second}.${region}.rds.sc2s.sgov.gov`, region };
    }
  }
}

function ipv4(rng: Rng): string {
  return [rng.int(1, 254), rng.int(0, 255), rng.int(0, 255), rng.int(1, 254)].join(".");
}

/**
 * Custom DNS names from which no region can be derived. `localhost` only where allowed: for
 * DSQL, pg-iam reads a name without dots as a cluster id.
 */
function customName(rng: Rng, allowLocalhost: boolean): { hostname: string; tag: string } {
  switch (rng.int(allowLocalhost ? 0 : 1, 5)) {
    case 0:
      return { hostname: "localhost", tag: "host:localhost" };
    case 1:
      return { hostname: `${dnsLabel(rng, 2, 12)}.example.com`, tag: "host:custom" };
    case 2:
      return { hostname: `pg-${dnsLabel(rng, 1, 8)}.internal`, tag: "host:custom" };
    case 3:
      return {
        hostname: `${dnsLabel(rng, 1, 10)}.${dnsLabel(rng, 1, 10)}.corp.example.co.uk`,
        tag: "host:custom",
      };
    case 4: {
      // mixed case: pg-iam signs it in lower case (see signHost)
      const base = `${dnsLabel(rng, 2, 10)}.Example.ORG`;
      return { hostname: base.replace(/^./, (c) => c.toUpperCase()), tag: "host:mixed-case" };
    }
    default:
      return { hostname: `db${rng.int(0, 999)}.${dnsLabel(rng, 3, 9)}.net`, tag: "host:custom" };
  }
}

/** Usernames that must appear in every corpus (they are the first cases). */
export const FORCED_USERNAMES: readonly string[] = [
  "postgres",
  "iam user",
  "a+b",
  "user@example.com",
  "path/to/user",
  "100%",
  "%41%2F",
  "k=v",
  "a&b=c",
  "~tilde",
  "star*",
  "o'brien",
  "fn(x)",
  "bang!",
  "semi;colon:comma,",
  'quote"back\\slash',
  "hash#question?",
  "dollar$caret^",
  "tab\tnewline\n",
  "ünïcödé",
  "Ωmega Жук",
  "日本語ユーザー",
  "e\u0301 combining",
  "🐘",
  "emoji 😀 + 👩‍💻 / 🇯🇵",
  "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
  "mixed 🐘+@/%=&~*'( all",
  "x".repeat(63),
  "long-" + "ü🐘/+".repeat(60),
  "L".repeat(1000),
  "admin",
  "Admin",
  " leading and trailing ",
];

const USER_ATOMS_SPECIAL = [
  " ",
  "+",
  "@",
  "/",
  "%",
  "=",
  "&",
  "~",
  "*",
  "'",
  "(",
  ")",
  "!",
  "-",
  "_",
  ".",
  "?",
  "#",
  ":",
  ";",
  ",",
  '"',
  "\\",
  "$",
  "[",
  "]",
];
const USER_ATOMS_UNICODE = [
  "é",
  "ß",
  "ñ",
  "Ω",
  "Ж",
  "日本",
  "中文",
  "ﬁ",
  "e\u0301",
  "\u00a0",
  "\u200d",
  "עברית",
  "🐘",
  "😀",
  "👩‍💻",
  "𝔘",
  "🇯🇵",
  "\u{10ffff}",
];

function randomUsername(rng: Rng): string {
  const long = rng.chance(0.05);
  const len = long ? rng.int(100, 400) : rng.int(1, 32);
  let s = "";
  for (let i = 0; i < len; i++) {
    const r = rng.float();
    if (r < 0.7) s += rng.chars(LOWER + UPPER + DIGITS, 1);
    else if (r < 0.87) s += rng.pick(USER_ATOMS_SPECIAL);
    else s += rng.pick(USER_ATOMS_UNICODE);
  }
  return s;
}

function accessKeyId(rng: Rng): string {
  switch (rng.int(0, 6)) {
    case 0:
    case 1:
      return "AKIA" + rng.chars(UPPER + "234567", 16);
    case 2:
    case 3:
      return "ASIA" + rng.chars(UPPER + "234567", 16);
    case 4:
      return "AKID";
    case 5:
      return rng.chars(UPPER + LOWER + DIGITS, rng.int(16, 128));
    default:
      return rng.chars(LOWER + DIGITS + "_-", rng.int(1, 40));
  }
}

function secretAccessKey(rng: Rng): string {
  switch (rng.int(0, 6)) {
    case 0:
    case 1:
    case 2:
      return rng.chars(BASE64, 40);
    case 3:
      return "secret";
    case 4:
      return rng.chars(BASE64 + "=", rng.int(41, 200));
    case 5:
      return rng.chars(BASE64, rng.int(1, 39));
    default:
      return "sécret-🔑-" + rng.chars(BASE64, 8);
  }
}

function base64ish(rng: Rng, length: number): string {
  // always contains "/", "+" and "=" so escaping is exercised
  const body = rng.chars(BASE64, Math.max(0, length - 4));
  const cut = rng.int(0, body.length);
  return body.slice(0, cut) + "/+" + body.slice(cut) + (rng.chance(0.5) ? "==" : "=A");
}

function sessionToken(rng: Rng): { token?: string; tag: string } {
  const r = rng.float();
  if (r < 0.4) return { tag: "token:absent" };
  if (r < 0.43) return { token: "", tag: "token:empty" };
  if (r < 0.5) return { token: "token", tag: "token:short" };
  return { token: base64ish(rng, rng.int(100, 1200)), tag: "token:base64" };
}

const DAY_MS = 86_400_000;
const MIN_DATE = Date.UTC(1971, 0, 1);
const MAX_DATE = Date.UTC(2099, 11, 31);

export const FORCED_DATES: readonly string[] = [
  "1970-01-01T00:00:00.000Z",
  "1999-12-31T23:59:59.999Z",
  "2000-01-01T00:00:00.000Z",
  "2000-02-29T12:00:00.500Z",
  "2024-02-29T23:59:59.999Z",
  "2024-03-01T00:00:00.000Z",
  "2025-12-31T23:59:59.001Z",
  "2026-01-01T00:00:00.999Z",
  "2038-01-19T03:14:07.999Z",
  "2038-01-19T03:14:08.000Z",
  "2099-12-31T23:59:59.999Z",
];

function signingDate(rng: Rng, index: number): { date: Date; tag: string } {
  if (index < FORCED_DATES.length) {
    return { date: new Date(FORCED_DATES[index]), tag: "date:forced" };
  }
  const r = rng.float();
  const day = Math.floor(rng.int(MIN_DATE, MAX_DATE) / DAY_MS) * DAY_MS;
  if (r < 0.15) {
    return { date: new Date(day + DAY_MS - 1000 + rng.int(0, 999)), tag: "date:23:59:59" };
  }
  if (r < 0.25) return { date: new Date(day), tag: "date:00:00:00.000" };
  if (r < 0.3) return { date: new Date(day + rng.int(0, 999)), tag: "date:00:00:00.xxx" };
  return { date: new Date(rng.int(MIN_DATE, MAX_DATE)), tag: "date:random" };
}

function credentials(rng: Rng, tags: string[]): {
  plain: Credentials;
  input: Credentials | CredentialProvider;
} {
  const plain: Credentials = {
    accessKeyId: accessKeyId(rng),
    secretAccessKey: secretAccessKey(rng),
  };
  const st = sessionToken(rng);
  tags.push(st.tag);
  if (st.token !== undefined) plain.sessionToken = st.token;
  if (rng.chance(0.3)) {
    // far in the future: never "expired", never within a refresh window
    plain.expiration = new Date(rng.int(Date.UTC(2100, 0, 1), Date.UTC(2199, 0, 1)));
    tags.push("creds:expiration");
  }
  if (rng.chance(0.2)) {
    tags.push("creds:provider");
    const snapshot = { ...plain };
    return { plain, input: () => Promise.resolve({ ...snapshot }) };
  }
  tags.push("creds:object");
  return { plain, input: plain };
}

export function generateRdsCases(seed: number, count: number): RdsCase[] {
  const rng = new Rng(seed ^ 0x5244_5321); // "RDS!"
  const hostForms = [...RDS_PARTITION_FORMS, "ip", "custom"] as const;
  const cases: RdsCase[] = [];
  for (let index = 0; index < count; index++) {
    const tags: string[] = [];
    const form = hostForms[index % hostForms.length];
    let hostname: string;
    let signHost: string;
    let region: string;
    let explicitRegion: string | undefined;
    let signingHostname: string | undefined;

    if (form === "ip" || form === "custom") {
      const named = form === "ip"
        ? { hostname: ipv4(rng), tag: "host:ipv4" }
        : customName(rng, true);
      tags.push(named.tag);
      hostname = named.hostname;
      // pg-iam signs the lower-case name, as botocore and the AWS CLI do (the JS SDK signs the
      // name as typed): the oracles are given the lower-case name.
      signHost = hostname.toLowerCase();
      region = rng.pick(ALL_REGIONS);
      explicitRegion = region;
      tags.push("region:explicit");
      if (rng.chance(0.3)) {
        // connect to an IP / tunnel, sign for the real endpoint
        const ep = rdsEndpoint(rng, rng.pick(RDS_PARTITION_FORMS), rng.pick(RDS_ENDPOINT_KINDS));
        signingHostname = ep.hostname;
        signHost = ep.hostname;
        region = ep.region;
        explicitRegion = ep.region;
        tags.push("signingHostname");
      }
    } else {
      const kind = rng.pick(RDS_ENDPOINT_KINDS);
      const ep = rdsEndpoint(rng, form, kind);
      tags.push(`rds:${form}`, `rds:${kind}`);
      hostname = ep.hostname;
      signHost = ep.hostname;
      region = ep.region;
      if (rng.chance(0.2)) {
        explicitRegion = region;
        tags.push("region:explicit-matching");
      } else {
        tags.push("region:derived");
      }
    }
    if (form !== "ip" && rng.chance(0.08)) {
      hostname += ".";
      tags.push("host:trailing-dot");
    }

    const portChoice = rng.int(0, 7);
    const port = portChoice === 0
      ? 1
      : portChoice === 1
      ? 5432
      : portChoice === 2
      ? 65535
      : portChoice === 3
      ? undefined
      : portChoice === 4
      ? 5433
      : rng.int(1, 65535);
    tags.push(port === undefined ? "port:default" : `port:${port}`);

    const username = index < FORCED_USERNAMES.length
      ? FORCED_USERNAMES[index]
      : randomUsername(rng);

    const creds = credentials(rng, tags);
    const date = signingDate(rng, index);
    tags.push(date.tag);

    const expiryChoice = rng.int(0, 6);
    const expiresIn = expiryChoice <= 1
      ? undefined
      : expiryChoice <= 3
      ? 900
      : expiryChoice === 4
      ? rng.pick([1, 2, 899])
      : rng.int(1, 900);
    tags.push(expiresIn === undefined ? "expires:default" : `expires:${expiresIn}`);

    const options: RdsOptions = {
      hostname,
      username,
      credentials: creds.input,
      signingDate: date.date,
    };
    if (port !== undefined) options.port = port;
    if (explicitRegion !== undefined) options.region = explicitRegion;
    if (expiresIn !== undefined) options.expiresIn = expiresIn;
    if (signingHostname !== undefined) options.signingHostname = signingHostname;

    cases.push({
      kind: "rds",
      index,
      options,
      tags,
      expected: {
        service: "rds-db",
        host: signHost,
        port: port ?? 5432,
        region,
        username,
        action: "connect",
        credentials: creds.plain,
        expiresIn: expiresIn ?? 900,
        signingDate: date.date,
      },
    });
  }
  return cases;
}

export const DSQL_HOST_FORMS = ["dsql", "dsql-xxxx", "bare-id", "ip", "custom"] as const;

export function generateDsqlCases(seed: number, count: number): DsqlCase[] {
  const rng = new Rng(seed ^ 0x4453_514c); // "DSQL"
  const cases: DsqlCase[] = [];
  for (let index = 0; index < count; index++) {
    const tags: string[] = [];
    const form = DSQL_HOST_FORMS[index % DSQL_HOST_FORMS.length];
    tags.push(`dsql:${form}`);
    const clusterId = rng.chars(ALNUM_LOWER, 26);
    let hostname: string;
    let signHost: string;
    let region: string;
    let explicitRegion: string | undefined;
    switch (form) {
      case "dsql":
        region = rng.pick(DSQL_REGIONS);
        hostname = signHost = `${clusterId}.dsql.${region}.on.aws`;
        break;
      case "dsql-xxxx":
        region = rng.pick(DSQL_REGIONS);
        hostname = signHost = `${clusterId}.dsql-${rng.chars(ALNUM_LOWER, 4)}.${region}.on.aws`;
        break;
      case "bare-id":
        region = rng.pick(DSQL_REGIONS);
        hostname = clusterId;
        signHost = `${clusterId}.dsql.${region}.on.aws`;
        explicitRegion = region;
        break;
      case "ip":
        region = rng.pick(ALL_REGIONS);
        hostname = signHost = ipv4(rng);
        explicitRegion = region;
        break;
      case "custom": {
        region = rng.pick(ALL_REGIONS);
        const named = customName(rng, false);
        tags.push(named.tag);
        hostname = named.hostname;
        signHost = hostname.toLowerCase(); // see the RDS cases
        explicitRegion = region;
        break;
      }
    }
    if (explicitRegion === undefined && rng.chance(0.2)) {
      explicitRegion = region;
      tags.push("region:explicit-matching");
    } else {
      tags.push(explicitRegion === undefined ? "region:derived" : "region:explicit");
    }

    // username / admin combinations
    let username: string | undefined;
    let admin: boolean | undefined;
    const who = rng.int(0, 6);
    if (who === 0) {
      username = undefined;
    } else if (who === 1) {
      username = "admin";
    } else if (who === 2) {
      username = undefined;
      admin = true;
    } else if (who === 3) {
      username = "admin";
      admin = false;
    } else {
      username = index < FORCED_USERNAMES.length ? FORCED_USERNAMES[index] : randomUsername(rng);
      if (rng.chance(0.25)) admin = rng.chance(0.5);
    }
    const isAdmin = admin ?? ((username ?? "admin") === "admin");
    tags.push(isAdmin ? "dsql:admin" : "dsql:non-admin");
    tags.push(
      username === undefined
        ? "dsql:username-omitted"
        : username === "admin"
        ? "dsql:username-admin"
        : "dsql:username-other",
    );
    if (admin !== undefined) tags.push(`dsql:admin-flag-${admin}`);

    const creds = credentials(rng, tags);
    const date = signingDate(rng, index);
    tags.push(date.tag);

    const expiryChoice = rng.int(0, 7);
    const expiresIn = expiryChoice === 0
      ? undefined
      : expiryChoice === 1
      ? 900
      : expiryChoice === 2
      ? 1
      : expiryChoice === 3
      ? 604800
      : expiryChoice === 4
      ? rng.pick([3600, 43200, 86400, 604799])
      : rng.int(1, 604800);
    tags.push(expiresIn === undefined ? "expires:default" : `expires:${expiresIn}`);

    const options: DsqlOptions = {
      hostname,
      credentials: creds.input,
      signingDate: date.date,
    };
    if (username !== undefined) options.username = username;
    if (admin !== undefined) options.admin = admin;
    if (explicitRegion !== undefined) options.region = explicitRegion;
    if (expiresIn !== undefined) options.expiresIn = expiresIn;

    cases.push({
      kind: "dsql",
      index,
      options,
      tags,
      expected: {
        service: "dsql",
        host: signHost,
        region,
        action: isAdmin ? "DbConnectAdmin" : "DbConnect",
        credentials: creds.plain,
        expiresIn: expiresIn ?? 900,
        signingDate: date.date,
      },
    });
  }
  return cases;
}

// ---------------------------------------------------------------------------
// Oracle (a): the SDK signers, with the clock pinned
// ---------------------------------------------------------------------------

/**
 * Runs fn with globalThis.Date replaced by a stand-in whose no-argument
 * constructor and Date.now() return `instant`; every other form of the
 * constructor and every static method behaves as usual, and instances are
 * genuine Dates (same prototype). The SDK signers read the clock only through
 * `new Date()` (SignatureV4#presign's default signingDate) and Date.now()
 * (rds-signer's credential refresh check), both of which resolve the global
 * `Date` binding at call time. Restored in finally. fn must only await
 * microtasks (no timers / I/O), so no other code observes the pinned clock.
 */
export async function withPinnedClock<T>(instant: Date, fn: () => Promise<T>): Promise<T> {
  const RealDate = globalThis.Date;
  const ms = instant.getTime();
  const Pinned = function (this: unknown, ...args: unknown[]): unknown {
    if (new.target === undefined) return new RealDate(ms).toString();
    return Reflect.construct(RealDate, args.length === 0 ? [ms] : args, new.target);
  } as unknown as DateConstructor;
  Object.setPrototypeOf(Pinned, RealDate);
  Object.defineProperty(Pinned, "prototype", { value: RealDate.prototype });
  Object.defineProperty(Pinned, "now", { value: () => ms, configurable: true, writable: true });
  globalThis.Date = Pinned;
  try {
    return await fn();
  } finally {
    globalThis.Date = RealDate;
  }
}

/** The SDK signer's token, or undefined where the SDK cannot express the case. */
export async function sdkToken(c: Case): Promise<string | undefined> {
  const e = c.expected;
  const credentials = c.options.credentials;
  if (c.kind === "rds") {
    if (e.expiresIn !== 900) return undefined; // Signer#getAuthToken hardcodes 900
    const signer = new Signer({
      hostname: e.host,
      port: e.port!,
      username: e.username!,
      region: e.region,
      credentials,
    });
    return await withPinnedClock(e.signingDate, () => signer.getAuthToken());
  }
  const signer = new DsqlSigner({
    hostname: e.host,
    region: e.region,
    credentials,
    expiresIn: e.expiresIn,
  });
  return await withPinnedClock(
    e.signingDate,
    () =>
      e.action === "DbConnectAdmin"
        ? signer.getDbConnectAdminAuthToken()
        : signer.getDbConnectAuthToken(),
  );
}

// ---------------------------------------------------------------------------
// Oracle (b): SignatureV4#presign with an explicit signingDate
// ---------------------------------------------------------------------------

/** RFC 3986 percent-encoding as SigV4 wants it: only A-Z a-z 0-9 - _ . ~ stay. */
export function sigv4Escape(s: string): string {
  return encodeURIComponent(s).replace(
    /[!'()*]/g,
    (ch) => "%" + ch.charCodeAt(0).toString(16).toUpperCase(),
  );
}

/** Presigns the GET request the SDK signers build and formats it like they do. */
export async function presignToken(e: Expected): Promise<string> {
  const signer = new SignatureV4({
    service: e.service,
    region: e.region,
    credentials: e.credentials,
    sha256: Sha256,
  });
  const hostHeader = e.port === undefined ? e.host : `${e.host}:${e.port}`;
  const query: Record<string, string> = { Action: e.action };
  if (e.username !== undefined) query.DBUser = e.username;
  const request = new HttpRequest({
    method: "GET",
    protocol: "https:",
    hostname: e.host,
    port: e.port,
    query,
    headers: { host: hostHeader },
  });
  const presigned = await signer.presign(request, {
    expiresIn: e.expiresIn,
    signingDate: e.signingDate,
  });
  const signed = presigned.query ?? {};
  const params = Object.keys(signed)
    .sort()
    .map((k) => `${sigv4Escape(k)}=${sigv4Escape(String(signed[k]))}`);
  return `${hostHeader}${presigned.path}?${params.join("&")}`;
}

// ---------------------------------------------------------------------------
// Comparison and reporting
// ---------------------------------------------------------------------------

interface ParsedToken {
  base: string;
  names: string[];
  values: Map<string, string>;
}

function parseToken(token: string): ParsedToken {
  const q = token.indexOf("?");
  const base = q < 0 ? token : token.slice(0, q);
  const names: string[] = [];
  const values = new Map<string, string>();
  if (q >= 0) {
    for (const part of token.slice(q + 1).split("&")) {
      const eq = part.indexOf("=");
      const name = eq < 0 ? part : part.slice(0, eq);
      names.push(name);
      values.set(name, eq < 0 ? "" : part.slice(eq + 1));
    }
  }
  return { base, names, values };
}

/**
 * The parts in which two tokens differ: "<host/path>", query parameter names
 * (missing, extra or with a different value), "<parameter order>". Empty when
 * the tokens are byte-identical.
 */
export function tokenDifferences(actual: string, expected: string): string[] {
  if (actual === expected) return [];
  const a = parseToken(actual);
  const b = parseToken(expected);
  const out: string[] = [];
  if (a.base !== b.base) out.push("<host/path>");
  for (const name of new Set([...b.names, ...a.names])) {
    if (a.values.get(name) !== b.values.get(name)) out.push(name);
  }
  if (a.names.length !== a.values.size || b.names.length !== b.values.size) {
    out.push("<duplicate parameter>");
  }
  if (a.names.join("&") !== b.names.join("&")) out.push("<parameter order>");
  if (out.length === 0) out.push("<unknown: tokens differ but no part does>");
  return out;
}

const SECRET_PARAMS = new Set(["X-Amz-Signature"]);

function clip(s: string, max = 96): string {
  return s.length <= max ? s : `${s.slice(0, max)}…(${s.length} chars)`;
}

/** Differing values, except signatures, for a failure message. */
export function describeDifferences(actual: string, expected: string): string {
  const diffs = tokenDifferences(actual, expected);
  const a = parseToken(actual);
  const b = parseToken(expected);
  const lines = [`differing parts: ${diffs.join(", ")}`];
  for (const d of diffs) {
    if (d === "<host/path>") {
      lines.push(`  host/path: pg-iam=${JSON.stringify(a.base)} oracle=${JSON.stringify(b.base)}`);
    } else if (d === "<parameter order>") {
      lines.push(`  order: pg-iam=[${a.names.join(",")}] oracle=[${b.names.join(",")}]`);
    } else if (!d.startsWith("<") && !SECRET_PARAMS.has(d)) {
      const av = a.values.get(d);
      const bv = b.values.get(d);
      lines.push(
        `  ${d}: pg-iam=${av === undefined ? "(absent)" : JSON.stringify(clip(av))} oracle=${
          bv === undefined ? "(absent)" : JSON.stringify(clip(bv))
        }`,
      );
    }
  }
  return lines.join("\n");
}

/** The case's options as JSON, without the secret key. */
export function describeOptions(c: Case): string {
  const o = c.options;
  const creds = typeof o.credentials === "function" ? c.expected.credentials : o.credentials;
  const shownCreds: Record<string, unknown> = {
    accessKeyId: creds.accessKeyId,
    secretAccessKey: `<redacted, ${creds.secretAccessKey.length} chars>`,
  };
  if ("sessionToken" in creds) shownCreds.sessionToken = clip(String(creds.sessionToken), 48);
  if (creds.expiration) shownCreds.expiration = creds.expiration.toISOString();
  const shown: Record<string, unknown> = { ...o, signingDate: o.signingDate.toISOString() };
  shown.credentials = typeof o.credentials === "function"
    ? { provider: "async () => credentials", resolvesTo: shownCreds }
    : shownCreds;
  return JSON.stringify(shown);
}

export function caseLabel(seed: number, c: Case): string {
  return `${c.kind} case seed=${seedHex(seed)} index=${c.index} (rerun with PG_IAM_SEED=${
    seedHex(seed)
  }) tags=[${c.tags.join(",")}]`;
}
