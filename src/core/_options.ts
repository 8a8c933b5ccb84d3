// Checks of single inputs, shared by the resolver of what to sign (signing.ts) and the gateway.
// Each error names the input in the caller's words (see `phrase`) and quotes the value.

import { hasLoneSurrogate, phrase, show, subject } from "./errors.ts";
import { isDsqlClusterId, isRegion, type ParsedHostname } from "./hostname.ts";
import { EnvAccessError, readEnv } from "./_env.ts";
import { profileRegion } from "./_chain.ts";

export function checkOptions(options: unknown, fn: string): Record<string, unknown> {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${fn}() expects an options object, got ${show(options)}`);
  }
  return options as Record<string, unknown>;
}

export function checkPort(value: unknown, option = "port"): number {
  if (value === undefined) return 5432;
  if (typeof value !== "number") {
    throw new TypeError(`${subject(option)} must be a number, got ${show(value)}`);
  }
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    throw new RangeError(
      `${subject(option)} must be an integer from 1 to 65535, got ${show(value)}`,
    );
  }
  return value;
}

export function checkSigningDate(value: unknown): Date {
  if (value === undefined) return new Date();
  if (!(value instanceof Date)) {
    throw new TypeError(`The "signingDate" option must be a Date, got ${show(value)}`);
  }
  const t = value.getTime();
  // SigV4 dates have four-digit years; toISOString() would give "+010000-…" past 9999.
  if (isNaN(t) || t < 0 || t >= 253402300800000) {
    throw new RangeError(
      `The "signingDate" option must be a valid date from 1970 to 9999, got ${show(value)}`,
    );
  }
  return value;
}

export function checkUsername(value: unknown, fallback?: string, option = "username"): string {
  if (value === undefined && fallback !== undefined) return fallback;
  const s = subject(option);
  if (value === undefined || value === null) {
    throw new TypeError(`${s} is required: pass the database user name`);
  }
  if (typeof value !== "string") throw new TypeError(`${s} must be a string, got ${show(value)}`);
  if (value === "") throw new TypeError(`${s} must not be empty`);
  if (hasLoneSurrogate(value)) {
    throw new TypeError(`${s} is not valid Unicode, got ${show(value)}`);
  }
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
    if (typeof value !== "string") {
      throw new TypeError(`${subject(names.region)} must be a string, got ${show(value)}`);
    }
    if (!isRegion(value)) {
      throw new RangeError(
        `${subject(names.region)} is not an AWS region name (like "us-east-1"), got ${show(value)}`,
      );
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
      throw new RangeError(
        `The environment variable ${name} is not an AWS region name, got ${show(env)}`,
      );
    }
    return env;
  }
  throw new NoRegionError(
    `${why}no region can be derived from it. Pass ${region} (or set AWS_REGION, or a region in ` +
      `the AWS config file's profile)`,
  );
}

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
        throw new RangeError(
          `The region of the AWS profile ${show(profile ?? "default")} is not an AWS region ` +
            `name, got ${show(region)}`,
        );
      }
      return region;
    });
  }
}

export function checkProfile(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value === "" || hasLoneSurrogate(value)) {
    throw new TypeError(`The "profile" option must be a non-empty string, got ${show(value)}`);
  }
  return value;
}
