// Verifies an RDS or DSQL IAM auth token the way the server does: from the raw token alone,
// rebuilding the SigV4 canonical request from the query string as received (and the host in
// lowercase). Deliberately shares
// no code with the signer (sigv4.ts) beyond the hash primitives, so a signer bug cannot hide
// behind the same bug here. Web APIs only: the gateway runs it, but so could anything else.
// Reference: https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html

import { hmac, hmacHex, type HmacKey, hmacKey, sha256Hex } from "../core/sha256.ts";
import { DSQL_MAX_EXPIRES_IN, RDS_MAX_EXPIRES_IN } from "../core/signing.ts";
import type { GatewayRejectReason } from "./types.ts";

/**
 * Why a token was refused: the gateway's reasons (types.ts, public) but the two that are about the
 * connection, not the token (`no-tls`, `no-password`).
 */
export type RejectReason = Exclude<GatewayRejectReason, "no-tls" | "no-password">;

/** A key the verifier accepts: the secret, and the session token it was issued with, if any. */
export interface VerifySecret {
  secretAccessKey: string;
  sessionToken?: string;
}

/** What the token must match. */
export interface VerifyExpectation {
  /** The endpoint name the server answers to (compared case-insensitively). */
  hostname: string;
  /** The port signed into RDS tokens. Default: 5432. Ignored for DSQL. */
  port?: number;
  service: "rds" | "dsql";
  region: string;
  /** The user of the StartupMessage. */
  user: string;
  /** DSQL: whether the user is the admin role (needs DbConnectAdmin). Default: user === "admin". */
  admin?: boolean;
  /** The verifier's clock, ms since the epoch. */
  now: number;
  /** Accepted keys, by access key id. */
  credentials: ReadonlyMap<string, VerifySecret>;
  /** How far in the future X-Amz-Date may be. Default: 300000 (five minutes, as SigV4). */
  maxSkewMs?: number;
}

/** A verified token. */
export interface VerifyOk {
  ok: true;
  accessKeyId: string;
  action: string;
  signedAt: Date;
  expiresAt: Date;
  /** `now` − X-Amz-Date. Negative when the signer's clock is ahead. */
  ageMs: number;
}

/** A refused token. `detail` never holds the token, its signature, a secret or a session token. */
export interface VerifyRejected {
  ok: false;
  reason: RejectReason;
  detail: string;
}

/** The outcome of {@linkcode verifyToken}. */
export type VerifyResult = VerifyOk | VerifyRejected;

const ALGORITHM = "AWS4-HMAC-SHA256";
const EMPTY_HASH = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const MAX_EXPIRES = { rds: RDS_MAX_EXPIRES_IN, dsql: DSQL_MAX_EXPIRES_IN } as const;
// The scope's service name: RDS tokens are signed for "rds-db", not "rds".
const SCOPE_SERVICE = { rds: "rds-db", dsql: "dsql" } as const;
const LONG_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;
const SIGNATURE = /^[0-9a-fA-F]{64}$/;
const REQUIRED = [
  "X-Amz-Algorithm",
  "X-Amz-Credential",
  "X-Amz-Date",
  "X-Amz-Expires",
  "X-Amz-SignedHeaders",
  "X-Amz-Signature",
  "Action",
];

const reject = (reason: RejectReason, detail: string): VerifyRejected => ({
  ok: false,
  reason,
  detail,
});

// Quotes a value from the token for a detail message: short, so nothing long (a session token
// smuggled into another parameter) is ever echoed.
const quote = (s: string) => JSON.stringify(s.length > 64 ? s.slice(0, 61) + "..." : s);

/** Verifies `token` against `expect`; never throws for any token string. */
export function verifyToken(token: string, expect: VerifyExpectation): VerifyResult {
  const parsed = parseToken(token);
  if (typeof parsed === "string") return reject("malformed", parsed);
  const { host, params, query } = parsed;

  const missing = REQUIRED.filter((name) => !params.has(name));
  if (missing.length) return reject("malformed", `the token lacks ${missing.join(", ")}`);
  const get = (name: string) => params.get(name)!;

  if (get("X-Amz-Algorithm") !== ALGORITHM) {
    return reject(
      "algorithm",
      `X-Amz-Algorithm is ${quote(get("X-Amz-Algorithm"))}, not ${ALGORITHM}`,
    );
  }
  if (get("X-Amz-SignedHeaders") !== "host") {
    return reject(
      "malformed",
      `X-Amz-SignedHeaders is ${quote(get("X-Amz-SignedHeaders"))}, not "host"`,
    );
  }
  if (!SIGNATURE.test(get("X-Amz-Signature"))) {
    return reject("malformed", "X-Amz-Signature is not 64 hex digits");
  }
  const longDate = get("X-Amz-Date");
  const signedAt = parseLongDate(longDate);
  if (signedAt === undefined) {
    return reject("malformed", `X-Amz-Date ${quote(longDate)} is not a YYYYMMDDTHHMMSSZ date`);
  }
  const maxExpires = MAX_EXPIRES[expect.service];
  const expiresText = get("X-Amz-Expires");
  const expires = /^\d{1,7}$/.test(expiresText) ? Number(expiresText) : NaN;
  if (!(expires >= 1 && expires <= maxExpires)) {
    return reject(
      "expires-range",
      `X-Amz-Expires ${
        quote(expiresText)
      } is not a whole number of seconds from 1 to ${maxExpires}`,
    );
  }

  // X-Amz-Credential: <access key id>/<date>/<region>/<service>/aws4_request
  const scope = get("X-Amz-Credential").split("/");
  if (scope.length !== 5 || scope[0] === "") {
    return reject(
      "malformed",
      "X-Amz-Credential is not <key id>/<date>/<region>/<service>/aws4_request",
    );
  }
  const [accessKeyId, shortDate, region, service, terminator] = scope;
  const secret = expect.credentials.get(accessKeyId);
  if (secret === undefined) {
    return reject("unknown-access-key", `the access key id ${quote(accessKeyId)} is not accepted`);
  }
  const scopeProblem = checkScope(
    [shortDate, region, service, terminator],
    longDate,
    expect.region,
    SCOPE_SERVICE[expect.service],
  );
  if (scopeProblem) return reject("scope", scopeProblem);

  const hostProblem = checkHost(host, expect);
  if (hostProblem) return hostProblem;

  const action = get("Action");
  if (expect.service === "rds") {
    if (action !== "connect") {
      return reject("action", `Action is ${quote(action)}; RDS tokens must be "connect"`);
    }
    if (!params.has("DBUser")) return reject("malformed", "the token lacks DBUser");
    if (get("DBUser") !== expect.user) {
      return reject(
        "user",
        `the token is for the user ${quote(get("DBUser"))}, the login for ${quote(expect.user)}`,
      );
    }
  } else {
    const admin = expect.admin ?? expect.user === "admin";
    const wanted = admin ? "DbConnectAdmin" : "DbConnect";
    if (action !== wanted) {
      return reject(
        "action",
        `Action is ${quote(action)}; the ${admin ? "admin role" : "role"} ${
          quote(expect.user)
        } needs ${wanted}`,
      );
    }
  }

  const tokenSession = params.get("X-Amz-Security-Token");
  if (tokenSession !== secret.sessionToken) {
    // Either side may lack one; which one is safe to say, the values are not.
    const detail = secret.sessionToken === undefined
      ? `the token has a session token, but the key ${quote(accessKeyId)} has none`
      : tokenSession === undefined
      ? `the token has no session token, but the key ${quote(accessKeyId)} needs one`
      : `the token's session token is not the one of the key ${quote(accessKeyId)}`;
    return reject("session-token", detail);
  }

  const expected = signature(query, host, longDate, shortDate, region, service, secret);
  if (!constantTimeEqual(expected, get("X-Amz-Signature"))) {
    return reject("signature", "the signature does not match: wrong secret or altered token");
  }

  // Times last: only a genuine token learns whether it is early or late.
  const maxSkew = expect.maxSkewMs ?? 300_000;
  const expiresAt = signedAt + expires * 1000;
  if (signedAt - expect.now > maxSkew) {
    return reject(
      "not-yet-valid",
      `signed at ${iso(signedAt)}, more than ${maxSkew} ms after the server's ${iso(expect.now)}`,
    );
  }
  if (expect.now > expiresAt) {
    return reject(
      "expired",
      `signed at ${iso(signedAt)} for ${expires} s, expired at ${iso(expiresAt)}; ` +
        `the server's clock says ${iso(expect.now)}`,
    );
  }
  return {
    ok: true,
    accessKeyId,
    action,
    signedAt: new Date(signedAt),
    expiresAt: new Date(expiresAt),
    ageMs: expect.now - signedAt,
  };
}

interface ParsedToken {
  host: string;
  params: Map<string, string>;
  /** [name, value] pairs, decoded, in token order. */
  query: Array<[string, string]>;
}

// Splits `host[:port]/?query` into its parts; returns a reason string when it cannot.
function parseToken(token: string): ParsedToken | string {
  if (typeof token !== "string" || token === "") return "the token is empty";
  const slash = token.indexOf("/?");
  if (slash <= 0) return "the token is not <host>/?<query>";
  const host = token.slice(0, slash);
  if (/[\s/?#@]/.test(host)) return "the token's host part is not a host name";
  const params = new Map<string, string>();
  const query: Array<[string, string]> = [];
  for (const pair of token.slice(slash + 2).split("&")) {
    const eq = pair.indexOf("=");
    if (eq <= 0) return "the token's query has a parameter without a name or value";
    let name: string, value: string;
    try {
      name = decodeURIComponent(pair.slice(0, eq));
      value = decodeURIComponent(pair.slice(eq + 1));
    } catch {
      return "the token's query has an invalid percent-encoding";
    }
    // A repeated parameter would make "which one counts" ambiguous: the server refuses it too.
    if (params.has(name)) return `the token's query repeats ${quote(name)}`;
    params.set(name, value);
    query.push([name, value]);
  }
  return { host, params, query };
}

function parseLongDate(text: string): number | undefined {
  const m = LONG_DATE.exec(text);
  if (!m) return undefined;
  const [y, mo, d, h, mi, s] = m.slice(1).map(Number);
  const t = Date.UTC(y, mo - 1, d, h, mi, s);
  // Date.UTC rolls "20260231" over into March: such a date was not written by a signer.
  const back = new Date(t);
  if (back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d || h > 23 || mi > 59 || s > 59) {
    return undefined;
  }
  return t;
}

function checkScope(
  [shortDate, region, service, terminator]: string[],
  longDate: string,
  wantRegion: string,
  wantService: string,
): string | undefined {
  if (shortDate !== longDate.slice(0, 8)) {
    return `the credential scope's date ${quote(shortDate)} is not the day of X-Amz-Date`;
  }
  if (region !== wantRegion) {
    return `the token is signed for the region ${quote(region)}, the server is in ${
      quote(wantRegion)
    }`;
  }
  if (service !== wantService) {
    return `the token is signed for the service ${quote(service)}, not ${quote(wantService)}`;
  }
  if (terminator !== "aws4_request") return "the credential scope does not end in aws4_request";
  return undefined;
}

function checkHost(host: string, expect: VerifyExpectation): VerifyRejected | undefined {
  const colon = host.lastIndexOf(":");
  const name = colon < 0 ? host : host.slice(0, colon);
  const want = expect.hostname.replace(/\.$/, "");
  if (name.toLowerCase() !== want.toLowerCase()) {
    return reject("host", `the token is signed for the host ${quote(name)}, not ${quote(want)}`);
  }
  if (expect.service === "dsql") {
    return colon < 0 ? undefined : reject("port", "DSQL tokens carry no port, this one does");
  }
  const port = expect.port ?? 5432;
  if (colon < 0) return reject("port", `the token carries no port; the server's is ${port}`);
  const signed = host.slice(colon + 1);
  if (signed !== String(port)) {
    return reject("port", `the token is signed for the port ${quote(signed)}, not ${port}`);
  }
  return undefined;
}

// SigV4 encoding of a query component: everything but A-Z a-z 0-9 - _ . ~ percent-encoded.
function encode(s: string): string {
  return encodeURIComponent(s).replace(
    /[!'()*]/g,
    (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase(),
  );
}

function signature(
  query: Array<[string, string]>,
  host: string,
  longDate: string,
  shortDate: string,
  region: string,
  service: string,
  secret: VerifySecret,
): string {
  // The canonical query: every parameter but the signature, encoded, sorted by encoded name.
  const canonicalQuery = query
    .filter(([name]) => name !== "X-Amz-Signature")
    .map(([name, value]) => [encode(name), encode(value)])
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, value]) => `${name}=${value}`)
    .join("&");
  // The host as AWS verifies it: lowercase, whatever the case the token spells it in. DNS names
  // are case-insensitive, and botocore (the AWS CLI) signs the lowercase host while its token
  // starts with the name as typed: RDS accepts those tokens, so it verifies the lowercase host;
  // a token whose signature covers a mixed-case host verifies on neither.
  const request = `GET\n/\n${canonicalQuery}\nhost:${host.toLowerCase()}\n\nhost\n${EMPTY_HASH}`;
  const scope = `${shortDate}/${region}/${service}/aws4_request`;
  const toSign = `${ALGORITHM}\n${longDate}\n${scope}\n${sha256Hex(request)}`;
  let key: HmacKey = hmacKey(new TextEncoder().encode("AWS4" + secret.secretAccessKey));
  for (const part of [shortDate, region, service, "aws4_request"]) key = hmacKey(hmac(key, part));
  return hmacHex(key, toSign);
}

// Compares two strings in time that depends only on their lengths.
function constantTimeEqual(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ (b.charCodeAt(i % b.length) | 0);
  return diff === 0;
}

const iso = (ms: number) => new Date(ms).toISOString();
