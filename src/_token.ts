// The last step shared by every token: credentials valid for the token's lifetime, then presign.

import { type CredentialsOption, resolveCredentials } from "./credentials.ts";
import { presign, type PresignInput } from "./sigv4.ts";

/**
 * Resolves the `credentials` option for the token's whole lifetime, then presigns `request`.
 * Not async itself, and no await unless a provider is involved: on the hot path every promise
 * layer costs a measurable share of a token.
 */
export function signToken(credentialsOption: unknown, request: PresignInput): Promise<string> {
  const { signingDate, expiresIn } = request;
  const resolved = resolveCredentials(
    credentialsOption as CredentialsOption | undefined,
    signingDate,
    signingDate.getTime() + expiresIn * 1000,
  );
  return resolved instanceof Promise
    ? resolved.then((credentials) => presign(request, credentials))
    : presign(request, resolved);
}
