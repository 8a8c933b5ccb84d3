// SigV4 query-string presigning of a `GET /` request whose only signed header is `host`: the shape
// of every RDS and DSQL auth token. The stages are separate functions so each can be checked
// against AWS's documented examples. Reference:
// https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html

import {
  _onBackendChange,
  type CryptoBackend,
  getCryptoBackend,
  type SigningKey,
} from "./crypto.ts";

/** Access keys as the presigner uses them: already validated strings. */
export interface SigningCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/** What to presign. */
export interface PresignInput {
  /** The `host` header value, which also starts the token: `host:port` for RDS, `host` for DSQL. */
  host: string;
  /** Service-specific query parameters, unencoded (for example `Action` and `DBUser`). */
  params: Readonly<Record<string, string>>;
  service: string;
  region: string;
  signingDate: Date;
  /** Lifetime in seconds. */
  expiresIn: number;
}

export const ALGORITHM = "AWS4-HMAC-SHA256";
// Hex SHA-256 of the empty body, as the AWS SDK signs a presigned GET.
export const EMPTY_PAYLOAD_HASH =
  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const RESERVED = /[!'()*]/g;
const hexEscape = (c: string) => "%" + c.charCodeAt(0).toString(16).toUpperCase();

/** RFC 3986 percent-encoding of a query component, as SigV4 requires. */
export function escapeUri(value: string): string {
  return UNRESERVED.test(value) ? value : encodeURIComponent(value).replace(RESERVED, hexEscape);
}
const UNRESERVED = /^[A-Za-z0-9_.~-]*$/;

/** `{ longDate: "YYYYMMDDTHHMMSSZ", shortDate: "YYYYMMDD" }`; milliseconds are dropped. */
export function formatDate(date: Date): { longDate: string; shortDate: string } {
  // Tokens signed in the same second share their dates: format each second once.
  const second = Math.floor(date.getTime() / 1000);
  if (second !== lastSecond) {
    // "2026-11-22T10:35:00.123Z" → "20261122T103500Z"
    const longDate = date.toISOString().slice(0, 19).replace(/[-:]/g, "") + "Z";
    lastDates = { longDate, shortDate: longDate.slice(0, 8) };
    lastSecond = second;
  }
  return lastDates;
}
let lastSecond = NaN;
let lastDates = { longDate: "", shortDate: "" };

/** The credential scope: `date/region/service/aws4_request`. */
export function credentialScope(shortDate: string, region: string, service: string): string {
  return `${shortDate}/${region}/${service}/aws4_request`;
}

/** The canonical request for a `GET /` whose only signed header is `host`. */
export function canonicalRequest(canonicalQuery: string, host: string): string {
  return `GET\n/\n${canonicalQuery}\nhost:${host}\n\nhost\n${EMPTY_PAYLOAD_HASH}`;
}

/** The string to sign, given the hex SHA-256 of the canonical request. */
export function stringToSign(
  longDate: string,
  scope: string,
  canonicalRequestHash: string,
): string {
  return `${ALGORITHM}\n${longDate}\n${scope}\n${canonicalRequestHash}`;
}

// Derived keys are valid for one (date, region, service) and are the costly part of signing (four
// HMACs), so they are cached. The cache is keyed by access key id, never by the secret; the secret
// is kept beside the key only to notice a different secret under the same id. Bounded, oldest out.
const MAX_KEYS = 64;
const keyCache = new Map<string, { secret: string; key: SigningKey }>();
_onBackendChange(() => keyCache.clear());

function cachedSigningKey(
  backend: CryptoBackend,
  creds: SigningCredentials,
  shortDate: string,
  region: string,
  service: string,
): SigningKey | Promise<SigningKey> {
  const id = `${creds.accessKeyId}\n${shortDate}\n${region}\n${service}`;
  const secret = creds.secretAccessKey;
  const hit = keyCache.get(id);
  if (hit?.secret === secret) return hit.key;
  const store = (key: SigningKey) => {
    keyCache.delete(id);
    if (keyCache.size >= MAX_KEYS) keyCache.delete(keyCache.keys().next().value!);
    keyCache.set(id, { secret, key });
    return key;
  };
  const key = backend.signingKey(secret, shortDate, region, service);
  return key instanceof Promise ? key.then(store) : store(key);
}

/**
 * Presigns `GET https://{host}/?{params}` and returns it without the scheme: `{host}/?{query}`,
 * the query sorted and encoded exactly as the AWS SDK formats it.
 */
export async function presign(input: PresignInput, creds: SigningCredentials): Promise<string> {
  const backend = getCryptoBackend();
  const { service, region } = input;
  const { longDate, shortDate } = formatDate(input.signingDate);
  const scope = credentialScope(shortDate, region, service);

  // The query, sorted by name: the service's own parameters (their names sort before "X-Amz-"),
  // then the X-Amz-* ones, in their fixed order. The canonical query is the same without the
  // signature, which sorts between Security-Token and SignedHeaders.
  let query = "";
  for (const name of Object.keys(input.params).sort()) {
    if (name >= "X-Amz-") throw new RangeError(`Query parameter ${name} must sort before X-Amz-*`);
    query += `${escapeUri(name)}=${escapeUri(input.params[name])}&`;
  }
  query += `X-Amz-Algorithm=${ALGORITHM}&X-Amz-Credential=${
    escapeUri(`${creds.accessKeyId}/${scope}`)
  }&X-Amz-Date=${longDate}&X-Amz-Expires=${input.expiresIn}`;
  if (creds.sessionToken) query += `&X-Amz-Security-Token=${escapeToken(creds.sessionToken)}`;
  const signedHeaders = "&X-Amz-SignedHeaders=host";

  // The synchronous backends' results are used as they are: an await costs a turn of the
  // microtask queue, a sizeable share of a token that takes a few µs.
  const h = backend.sha256Hex(canonicalRequest(query + signedHeaders, input.host));
  const hash = typeof h === "string" ? h : await h;
  const k = cachedSigningKey(backend, creds, shortDate, region, service);
  const key = k instanceof Promise ? await k : k;
  const sig = backend.hmacHex(key, stringToSign(longDate, scope, hash));
  const signature = typeof sig === "string" ? sig : await sig;
  return `${input.host}/?${query}&X-Amz-Signature=${signature}${signedHeaders}`;
}

// Session tokens are long (about a kilobyte) and the same for hours: encode each once.
let lastToken = "";
let lastEscapedToken = "";
function escapeToken(token: string): string {
  if (token !== lastToken) {
    lastEscapedToken = escapeUri(token);
    lastToken = token;
  }
  return lastEscapedToken;
}
