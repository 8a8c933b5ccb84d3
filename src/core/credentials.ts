// Credentials: a static object, an SDK-style provider function, or the environment. A provider's
// result is cached per provider function and reused while it outlives the token being signed;
// concurrent callers share one resolution. A token signed with temporary credentials dies with
// them, so credentials that would expire first are refreshed before signing.

import { CredentialsError, hasLoneSurrogate, show } from "./errors.ts";
import { EnvAccessError, readEnv } from "./env.ts";
import type { SigningCredentials } from "./sigv4.ts";
import { chainProvider, envProfile } from "./chain.ts";

/**
 * AWS credentials, the shape of the AWS SDK v3's `AwsCredentialIdentity`.
 *
 * @example Static credentials
 * ```ts
 * import type { Credentials } from "@pg-iam/pg-iam";
 *
 * const credentials: Credentials = {
 *   accessKeyId: "AKIAIOSFODNN7EXAMPLE",
 *   secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
 * };
 * ```
 */
export interface Credentials {
  /** The access key id, for example `AKIAIOSFODNN7EXAMPLE`. */
  readonly accessKeyId: string;
  /** The secret access key. Never logged, never part of an error message. */
  readonly secretAccessKey: string;
  /** The session token of temporary credentials. */
  readonly sessionToken?: string;
  /** When temporary credentials expire. */
  readonly expiration?: Date;
}

/**
 * A function returning credentials, the shape of the AWS SDK v3's credential providers, so
 * `fromNodeProviderChain()`, `fromIni()`, `fromTemporaryCredentials()` and friends plug in as they
 * are. pg-iam calls it with `{ forceRefresh: true }` when the credentials it returned last would
 * expire before the token being signed.
 *
 * @example A provider reading credentials from your own secret store
 * ```ts
 * import type { CredentialsProvider } from "@pg-iam/pg-iam";
 *
 * const provider: CredentialsProvider = async () => {
 *   const expiration = new Date(Date.now() + 3_600_000);
 *   return { accessKeyId: "ASIAEXAMPLE", secretAccessKey: "…", sessionToken: "…", expiration };
 * };
 * ```
 */
export type CredentialsProvider = (
  options?: { forceRefresh?: boolean },
) => Credentials | Promise<Credentials>;

/**
 * The `credentials` option: credentials, or a provider of them. When omitted, pg-iam reads
 * `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` and `AWS_CREDENTIAL_EXPIRATION`
 * from the environment.
 *
 * @example Passing an AWS SDK provider
 * ```ts ignore
 * import { fromNodeProviderChain } from "@aws-sdk/credential-providers";
 * import { rdsToken } from "@pg-iam/pg-iam";
 *
 * const credentials = fromNodeProviderChain();
 * const token = await rdsToken({
 *   hostname: "db.abc123xyz.us-east-1.rds.amazonaws.com",
 *   username: "app",
 *   credentials,
 * });
 * ```
 */
export type CredentialsOption = Credentials | CredentialsProvider;

const invalid = (message: string) => new CredentialsError("invalid", message);

function check(value: unknown, source: string): Credentials {
  if (typeof value !== "object" || value === null) {
    throw invalid(`${source} must be an object, got ${typeName(value)}`);
  }
  const c = value as Record<string, unknown>;
  // Only the types of the key fields are ever described: their values may be secret.
  for (const field of ["accessKeyId", "secretAccessKey"] as const) {
    if (typeof c[field] !== "string" || c[field] === "") {
      const got = c[field] === "" ? "an empty string" : typeName(c[field]);
      throw invalid(
        `${source} must have a non-empty string ${field}, got ${got}`,
      );
    }
  }
  if (c.sessionToken != null && typeof c.sessionToken !== "string") {
    throw invalid(
      `${source} has a sessionToken that is not a string (${typeof c.sessionToken})`,
    );
  }
  if (c.expiration != null && !(c.expiration instanceof Date && !isNaN(c.expiration.getTime()))) {
    throw invalid(
      `${source} has an expiration that is not a valid Date, got ${dateLike(c.expiration)}`,
    );
  }
  for (const field of ["accessKeyId", "sessionToken"] as const) {
    if (typeof c[field] === "string" && hasLoneSurrogate(c[field] as string)) {
      throw invalid(`${source} has a ${field} that is not valid Unicode`);
    }
  }
  checkNotSwapped(
    c.accessKeyId as string,
    c.secretAccessKey as string,
    source,
    "accessKeyId",
    "secretAccessKey",
  );
  return value as Credentials;
}

// The shapes of keys given the wrong way round. An access key id is 16 to 128 word characters
// (AWS IAM's AccessKeyIdType, "[\w]+"), never "/" or "+"; the ones AWS issues are AKIA (long-term)
// or ASIA (temporary) and 16 uppercase letters and digits. A secret access key is 40 characters of
// base64. So: a secret holding a real key id, or a key id of 40 base64 characters with a "/" or "+"
// in it (the key ids of tests, like AKIDEXAMPLE, and other word characters pass).
const KEY_ID_SHAPE = /^A[KS]IA[A-Z0-9]{16}$/;
const SECRET_SHAPE = /^(?=.*[/+])[A-Za-z0-9/+]{40}$/;

/**
 * Throws a CredentialsError when the access key id and the secret access key look swapped. Neither
 * value is quoted: one of them is a secret, and which one is the question.
 *
 * @param source What held them, for the message (`The "credentials" option`).
 * @param idName How the access key id is named there (`accessKeyId`, `AWS_ACCESS_KEY_ID`).
 * @param secretName How the secret is named there.
 */
export function checkNotSwapped(
  accessKeyId: string,
  secretAccessKey: string,
  source: string,
  idName: string,
  secretName: string,
): void {
  // The lengths first: this runs on every token signed with static keys.
  const idIsSecret = accessKeyId.length === 40 && SECRET_SHAPE.test(accessKeyId);
  const secretIsId = secretAccessKey.length === 20 && KEY_ID_SHAPE.test(secretAccessKey);
  if (!idIsSecret && !secretIsId) return;
  const why = [
    idIsSecret && `${idName} has the shape of a secret access key (40 characters of base64)`,
    secretIsId && `${secretName} has the shape of an access key id (AKIA or ASIA and 16 more)`,
  ].filter(Boolean).join(", and ");
  throw new CredentialsError(
    "invalid",
    `${source} seems to have its keys swapped: ${why}. Give the access key id as ${idName} ` +
      `and the secret as ${secretName} (neither value is shown here)`,
  );
}

// A would-be date, quoted only when it is made of digits and date punctuation: a string of any
// other kind may be a session token or secret given in the wrong place (it has happened).
function dateLike(value: unknown): string {
  if (typeof value !== "string") return show(value);
  return /^[\d\s:TZ.+\-/]{1,40}$/.test(value)
    ? JSON.stringify(value)
    : `a string of ${value.length} characters (not shown: it may be a secret in the wrong place)`;
}

// Describes a value by its type only: a credentials value may be a secret given in the wrong place.
function typeName(value: unknown): string {
  return value === undefined || value === null ? String(value) : `a ${typeof value}`;
}

function lastsUntil(c: Credentials, until: number): boolean {
  return c.expiration == null || c.expiration.getTime() > until;
}

// The variables of the environment's credentials, in the order read.
const ENV = [
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
  "AWS_CREDENTIAL_EXPIRATION",
];

function fromEnv(): Credentials | undefined {
  let values;
  try {
    values = ENV.map((name) => readEnv(name));
  } catch (cause) {
    if (!(cause instanceof EnvAccessError)) throw cause;
    throw new CredentialsError(
      "missing",
      `No AWS credentials: the "credentials" option was not given, and the environment could ` +
        `not be read. ${cause.message}`,
      { cause },
    );
  }
  const [accessKeyId, secretAccessKey, sessionToken, expiration] = values;
  if (accessKeyId === undefined && secretAccessKey === undefined) return undefined;
  if (accessKeyId === undefined || secretAccessKey === undefined) {
    const [set, unset] = accessKeyId === undefined ? [ENV[1], ENV[0]] : ENV;
    throw new CredentialsError(
      "missing",
      `Incomplete AWS credentials in the environment: ${set} is set but ${unset} is not`,
    );
  }
  checkNotSwapped(accessKeyId, secretAccessKey, "The environment", ENV[0], ENV[1]);
  let expires: Date | undefined;
  if (expiration !== undefined) {
    expires = new Date(expiration);
    if (isNaN(expires.getTime())) {
      throw invalid(`The environment variable ${ENV[3]} is not a date: ${dateLike(expiration)}`);
    }
  }
  return { accessKeyId, secretAccessKey, sessionToken, expiration: expires };
}

interface Cached {
  value?: Credentials;
  pending?: Promise<Credentials>;
}

// Keyed by the provider function itself, so each provider keeps its own cache and a provider
// dropped by the application is garbage-collected with it.
const providerCache = new WeakMap<CredentialsProvider, Cached>();

/**
 * Forgets a provider call still in flight, so the next resolution calls the provider again. For
 * callers that gave up waiting (a connect bounded in time): one hung call must not hold every
 * later connection hostage.
 */
export function abandonPending(option: CredentialsOption | undefined): void {
  if (typeof option !== "function") return;
  const entry = providerCache.get(option);
  if (entry) entry.pending = undefined;
}

function load(provider: CredentialsProvider, entry: Cached, forceRefresh: boolean) {
  if (entry.pending) return entry.pending;
  const pending: Promise<Credentials> = call(provider, forceRefresh).then((value) => {
    entry.value = value;
    return value;
  }).finally(() => {
    // Settled, successfully or not: the next caller asks the provider again if it must.
    if (entry.pending === pending) entry.pending = undefined;
  });
  return entry.pending = pending;
}

async function call(provider: CredentialsProvider, forceRefresh: boolean): Promise<Credentials> {
  let value: unknown;
  try {
    value = await provider(forceRefresh ? { forceRefresh: true } : undefined);
  } catch (cause) {
    if (cause instanceof CredentialsError) throw cause; // the chain's own, already explained
    // The provider's own message is not repeated: it is not ours to vet, and may quote secrets
    // (a credential_process's output, say). Its name and code are; the whole error is the cause.
    const e = cause as { name?: unknown; code?: unknown } | undefined;
    const name = cause instanceof Error && /^\w{1,60}$/.test(String(e!.name))
      ? e!.name
      : typeName(cause);
    const code = typeof e?.code === "string" && /^[\w.-]{1,60}$/.test(e.code)
      ? `, code ${e.code}`
      : "";
    throw new CredentialsError(
      "provider",
      `The "credentials" provider failed (${name}${code}); its own error is this one's cause ` +
        `(error.cause), not repeated here as it may hold secrets`,
      { cause },
    );
  }
  return check(value, `The value returned by the "credentials" provider`);
}

/** Credentials expiring this soon after a token would are replaced in the background. */
const REFRESH_AHEAD_MS = 5 * 60_000;

async function fromProvider(
  provider: CredentialsProvider,
  until: number,
  forceRefresh: boolean,
  onRefreshError: ((error: Error) => void) | undefined,
): Promise<Credentials> {
  let entry = providerCache.get(provider);
  if (entry === undefined) providerCache.set(provider, entry = {});
  const cached = entry.value;
  if (!forceRefresh && cached !== undefined && lastsUntil(cached, until)) {
    // Good for this token. If they expire soon after it, fetch the next ones now, in the
    // background, so a later connect does not wait on STS or IMDS; until those arrive (or if that
    // fails) the cached ones keep serving while they last.
    if (
      cached.expiration && !entry.pending &&
      cached.expiration.getTime() - until < REFRESH_AHEAD_MS
    ) {
      load(provider, entry, true).catch((error: Error) => report(onRefreshError, error));
    }
    return cached;
  }
  // A stale cached value means the provider's own cache may hold it too: ask it to refresh.
  const forced = forceRefresh || entry.value !== undefined;
  const value = await load(provider, entry, forced);
  return lastsUntil(value, until) || forced ? value : load(provider, entry, true);
}

/** Where credentials come from when the `credentials` option is omitted, and refresh reports. */
export interface CredentialsContext {
  /** A profile of the AWS config files (default: `AWS_PROFILE`). Skips the environment's keys. */
  profile?: string;
  /** Told when refreshing credentials in the background fails (they keep serving meanwhile). */
  onRefreshError?: (error: Error) => void;
}

/**
 * Resolves the `credentials` option into keys valid at `signingDate`, preferring keys that outlive
 * `until` (the token's expiry, in epoch milliseconds). Omitted: the environment's keys, else (or
 * with a profile) the standard AWS chain, loaded on first use.
 */
export function resolveCredentials(
  option: CredentialsOption | undefined,
  signingDate: Date,
  until: number,
  forceRefresh = false,
  context?: CredentialsContext,
): SigningCredentials | Promise<SigningCredentials> {
  // Synchronous unless a provider is involved: static and env credentials cost no await.
  if (typeof option === "function") {
    return fromProvider(option, until, forceRefresh, context?.onRefreshError)
      .then((c) => unexpired(c, signingDate));
  }
  if (option != null) return unexpired(check(option, `The "credentials" option`), signingDate);
  const profile = context?.profile ?? envProfile();
  if (profile === undefined) {
    const env = fromEnv();
    if (env !== undefined) return unexpired(env, signingDate);
  }
  return chainProvider(profile)
    .then((chain) => fromProvider(chain, until, forceRefresh, context?.onRefreshError))
    .then((c) => unexpired(c, signingDate));
}

function report(hook: ((error: Error) => void) | undefined, error: Error): void {
  try {
    if (hook) hook(error);
    else console.warn(`pg-iam: credentials refresh failed, current ones kept: ${error.message}`);
  } catch {
    // A throwing hook must not turn into an unhandled rejection.
  }
}

function unexpired(creds: Credentials, signingDate: Date): Credentials {
  if (creds.expiration && creds.expiration.getTime() <= signingDate.getTime()) {
    throw new CredentialsError(
      "expired",
      `The AWS credentials (access key id ${show(creds.accessKeyId)}) expired at ` +
        `${creds.expiration.toISOString()}, before the signing time ` +
        `${signingDate.toISOString()}: refresh them or pass a provider that does`,
    );
  }
  return creds;
}
