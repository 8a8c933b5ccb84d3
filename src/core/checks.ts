// Checks of single inputs, shared by the resolver of what to sign (signing.ts) and the gateway.
// Each error names the input in the caller's words (see `phrase`) and quotes the value.

import { bad, hasLoneSurrogate, phrase, show, subject } from "./errors.ts";
import { isDsqlClusterId, isRegion, type ParsedHostname } from "./hostname.ts";
import { EnvAccessError, readEnv } from "./env.ts";
import { profileRegion } from "./chain.ts";

export function checkPort(value: unknown, option = "port"): number {
  return value === undefined ? 5432 : checkWhole(value, option, 65535);
}

/** A whole number from 1 to `max`: `what` and `unit` say which (`a whole number`, ` of seconds`). */
export function checkWhole(
  value: unknown,
  word: string,
  max: number,
  what = "an integer",
  unit = "",
): number {
  if (typeof value !== "number") throw bad(word, `must be a number${unit}`, value);
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw bad(word, `must be ${what}${unit} from 1 to ${max}`, value, RangeError);
  }
  return value;
}

export function checkSigningDate(value: unknown): Date {
  if (value === undefined) return new Date();
  if (!(value instanceof Date)) throw bad("signingDate", "must be a Date", value);
  const t = value.getTime();
  // SigV4 dates have four-digit years; toISOString() would give "+010000-…" past 9999.
  if (isNaN(t) || t < 0 || t >= 253402300800000) {
    throw bad("signingDate", "must be a valid date from 1970 to 9999", value, RangeError);
  }
  return value;
}

export function checkUsername(value: unknown, fallback?: string, option = "username"): string {
  if (value === undefined && fallback !== undefined) return fallback;
  if (value === undefined || value === null) {
    throw new TypeError(`${subject(option)} is required: pass the database user name`);
  }
  if (typeof value !== "string") throw bad(option, "must be a string", value);
  if (value === "") throw new TypeError(`${subject(option)} must not be empty`);
  if (hasLoneSurrogate(value)) throw bad(option, "is not valid Unicode", value);
  return value;
}

/** The words naming the region and the host it is checked against, in messages. */
export interface RegionNames {
  /** The region's input (`region`, `--region`, `iam_region`). */
  region: string;
  /** The host name's input (`hostname`, `signingHostname`, `--hostname`, `iam_host`, …). */
  host: string;
}

/**
 * The signing region: the `region` input, else the one in the endpoint name, else `AWS_REGION`
 * or `AWS_DEFAULT_REGION`. A region that contradicts the endpoint name is an error: a token signed
 * for the wrong region is always rejected, and only at connect time.
 */
export function resolveRegion(
  value: unknown,
  parsed: ParsedHostname | undefined,
  names: RegionNames,
  host: string,
): string {
  const region = phrase(names.region);
  if (value !== undefined) {
    if (typeof value !== "string") throw bad(names.region, "must be a string", value);
    if (!isRegion(value)) {
      throw bad(names.region, `${NOT_REGION} (like "us-east-1")`, value, RangeError);
    }
    if (parsed && parsed.region !== value) {
      throw new RangeError(
        `${subject(names.region)} ${show(value)} contradicts the region ${
          show(parsed.region)
        } of the endpoint ${show(host)} (${phrase(names.host)}): a token signed for another ` +
          `region is always rejected; drop ${region} or correct it`,
      );
    }
    return value;
  }
  if (parsed) return parsed.region;
  const why = `No region: ${show(host)} (${phrase(names.host)}) is ${
    isDsqlClusterId(host) ? "a bare DSQL cluster id" : "not an AWS endpoint name"
  }, so `;
  for (const name of ["AWS_REGION", "AWS_DEFAULT_REGION"]) {
    let env;
    try {
      env = readEnv(name);
    } catch (cause) {
      if (!(cause instanceof EnvAccessError)) throw cause;
      throw new TypeError(`${why}pass ${region}. ${cause.message}`, { cause });
    }
    if (env === undefined) continue;
    if (!isRegion(env)) {
      throw bad(`the environment variable ${name}`, NOT_REGION, env, RangeError);
    }
    return env;
  }
  throw new NoRegionError(
    `${why}no region can be derived from it. Pass ${region} (or set AWS_REGION, or a region in ` +
      `the AWS config file's profile)`,
  );
}

const NOT_REGION = "is not an AWS region name";

/** No region from the input, the endpoint name or the environment: the profile may have one. */
export class NoRegionError extends TypeError {}

/**
 * The region as {@linkcode resolveRegion} finds it, else the `region` of the AWS profile in the
 * config file (through the SDK's loader, when installed), else the NoRegionError.
 */
export function resolveRegionOrProfile(
  value: unknown,
  parsed: ParsedHostname | undefined,
  names: RegionNames,
  host: string,
  profile: string | undefined,
): string | Promise<string> {
  try {
    return resolveRegion(value, parsed, names, host);
  } catch (error) {
    if (!(error instanceof NoRegionError)) throw error;
    return profileRegion(profile).then((region) => {
      if (region === undefined) throw error;
      if (!isRegion(region)) {
        const where = `the region of the AWS profile ${show(profile ?? "default")}`;
        throw bad(where, NOT_REGION, region, RangeError);
      }
      return region;
    });
  }
}

export function checkProfile(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value === "" || hasLoneSurrogate(value)) {
    throw bad("profile", "must be a non-empty string", value);
  }
  return value;
}
