// The last step shared by every token: credentials valid for the token's lifetime, then presign.

import { type CredentialsOption, resolveCredentials } from "./credentials.ts";
import { presign, type PresignInput } from "./sigv4.ts";

/** Resolves the `credentials` option for the token's whole lifetime, then presigns `request`. */
export async function signToken(
  credentialsOption: unknown,
  request: Omit<PresignInput, "credentials">,
): Promise<string> {
  const { signingDate, expiresIn } = request;
  const resolved = resolveCredentials(
    credentialsOption as CredentialsOption | undefined,
    signingDate,
    signingDate.getTime() + expiresIn * 1000,
  );
  const credentials = resolved instanceof Promise ? await resolved : resolved;
  return presign({ ...request, credentials });
}
