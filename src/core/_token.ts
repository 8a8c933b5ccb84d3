// The last step shared by every token: credentials valid for the token's lifetime, then presign.

import {
  type CredentialsContext,
  type CredentialsOption,
  resolveCredentials,
} from "./credentials.ts";
import { presign, type PresignInput } from "./sigv4.ts";
import { show } from "./errors.ts";
import { checkProfile } from "./_options.ts";

/**
 * Resolves the `credentials` option for the token's whole lifetime, then presigns `request`.
 * Not async itself, and no await unless a provider is involved: on the hot path every promise
 * layer costs a measurable share of a token.
 */
export function signToken(
  credentialsOption: unknown,
  request: PresignInput,
  context?: CredentialsContext,
): Promise<string> {
  const { signingDate, expiresIn } = request;
  const resolved = resolveCredentials(
    credentialsOption as CredentialsOption | undefined,
    signingDate,
    signingDate.getTime() + expiresIn * 1000,
    false,
    context,
  );
  return resolved instanceof Promise
    ? resolved.then((credentials) => presign(request, credentials))
    : presign(request, resolved);
}

/** The `profile` and `onRefreshError` options, checked; undefined when neither is given. */
export function credentialsContext(o: Record<string, unknown>): CredentialsContext | undefined {
  if (o.profile === undefined && o.onRefreshError === undefined) return undefined;
  if (o.onRefreshError !== undefined && typeof o.onRefreshError !== "function") {
    throw new TypeError(
      `The "onRefreshError" option must be a function, got ${show(o.onRefreshError)}`,
    );
  }
  return {
    profile: checkProfile(o.profile),
    onRefreshError: o.onRefreshError as CredentialsContext["onRefreshError"],
  };
}
