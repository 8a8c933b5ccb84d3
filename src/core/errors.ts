/**
 * Why credentials could not be used:
 * - `"missing"`: none were given and none were found.
 * - `"invalid"`: the object lacks string `accessKeyId` / `secretAccessKey`, or has a bad field.
 * - `"expired"`: they expired before the token would be signed.
 * - `"provider"`: the credentials provider threw or rejected; its error is the `cause`.
 */
export type CredentialsErrorCode = "missing" | "invalid" | "expired" | "provider";

/**
 * Thrown (as a rejection) when credentials are missing, malformed, expired, or their provider
 * fails. The message names the `credentials` option and never contains a secret.
 *
 * @example Telling credential problems apart from bad options
 * ```ts
 * import { CredentialsError, rdsToken } from "@pg-iam/pg-iam";
 *
 * try {
 *   await rdsToken({
 *     hostname: "db.abc123xyz.us-east-1.rds.amazonaws.com",
 *     username: "app",
 *     credentials: () => Promise.reject(new Error("no session")),
 *   });
 * } catch (error) {
 *   if (error instanceof CredentialsError) console.error(error.code, error.message);
 * }
 * ```
 */
export class CredentialsError extends Error {
  /** What went wrong, for programs to branch on. */
  readonly code: CredentialsErrorCode;

  /**
   * Creates a credentials error.
   *
   * @param code What went wrong.
   * @param message A message naming the `credentials` option, free of secrets.
   * @param options `cause`: the provider's own error, when there is one.
   */
  constructor(code: CredentialsErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CredentialsError";
    this.code = code;
  }
}

// Quotes a bad value for an error message. Strings are truncated, and anything that looks like a
// presigned token is withheld, so a token passed by mistake never reaches a log.
export function show(value: unknown): string {
  if (typeof value === "string") {
    return TOKEN_LIKE.test(value) ? WITHHELD : JSON.stringify(cut(value, 80));
  }
  if (["number", "boolean", "bigint"].includes(typeof value)) return String(value);
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (value instanceof Date) return isNaN(value.getTime()) ? "Invalid Date" : value.toISOString();
  if (Array.isArray(value)) return "an array";
  return `a ${typeof value}`;
}

const TOKEN_LIKE = /X-Amz-(Signature|Security-Token|Credential)/i;
const WITHHELD = "<a token, withheld>";
const cut = (s: string, max: number) => s.length > max ? s.slice(0, max - 3) + "..." : s;

// Another error's message, for inclusion in ours: shortened, and withheld if it holds a token.
export function excerpt(message: string): string {
  return TOKEN_LIKE.test(message) ? WITHHELD : cut(message, 300);
}

// Matches a UTF-16 surrogate without its pair: such a string has no UTF-8 form to sign.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export function hasLoneSurrogate(s: string): boolean {
  return LONE_SURROGATE.test(s);
}

/**
 * How a message names an input, from the word the user typed: a library option (`region`) reads
 * `the "region" option`; anything else (`--region`, `iam_region`, `PGHOST`, a whole phrase such as
 * `the URL's host`) is used as it is.
 */
export function phrase(word: string): string {
  return /^[a-z][a-zA-Z.]*$/.test(word) ? `the "${word}" option` : word;
}

/** The error for a bad `value` of the input `word`: `The "port" option must …, got 0`. */
export function bad(
  word: string,
  what: string,
  value: unknown,
  E: typeof TypeError | typeof RangeError = TypeError,
): Error {
  return new E(`${subject(word)} ${what}, got ${show(value)}`);
}

/** {@linkcode phrase} starting a sentence. */
export function subject(word: string): string {
  const p = phrase(word);
  return p[0].toUpperCase() + p.slice(1);
}
