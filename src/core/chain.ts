// The standard AWS credential chain, loaded only when the environment has no credentials (or a
// profile is asked for): profiles (static keys, role_arn + source_profile, credential_process,
// SSO), web identity (EKS), ECS and EKS Pod Identity container endpoints, EC2 IMDSv2.
//
// We do not write these sources by hand: the AWS SDK's own chain
// (@aws-sdk/credential-provider-node, what @aws-sdk/rds-signer uses) is well kept, follows every
// new source and setting, and is an optional dependency, loaded with import() on first use. Its
// name is computed, so bundlers for edge runtimes leave it out (there, credentials come from the
// `credentials` option or the environment), and on Deno it is an `npm:` specifier, which Deno
// resolves from node_modules or fetches on first use.

import { CredentialsError, excerpt } from "./errors.ts";
import { importOptional, readEnv } from "./env.ts";
import { withTimeout } from "./deadline.ts";

/** The npm package providing the chain. */
export const CHAIN_PACKAGE = "@aws-sdk/credential-provider-node";

// The shape of credentials.ts's CredentialsProvider, spelled out so the chain needs nothing of the
// module that uses it (credentials.ts checks what the provider returns).
type CredentialsProvider = (options?: { forceRefresh?: boolean }) => Promise<{
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
  readonly expiration?: Date;
}>;

const chains = new Map<string, CredentialsProvider>();

/** The longest the chain may take to answer (the SDK's own timeouts and retries fit well within). */
export const CHAIN_TIMEOUT_MS = 10_000;

/**
 * The chain for `profile` (undefined: `AWS_PROFILE`, else the default chain), created once and
 * reused, so the SDK's own caches of IMDS and STS answers are shared by every caller.
 */
export async function chainProvider(profile: string | undefined): Promise<CredentialsProvider> {
  const key = profile ?? "";
  const known = chains.get(key);
  if (known) return known;
  const where = profile ? ` (profile ${JSON.stringify(profile)})` : "";
  let mod: Record<string, unknown>;
  try {
    mod = await importOptional(CHAIN_PACKAGE, "^3");
  } catch (cause) {
    throw new CredentialsError(
      "missing",
      `No AWS credentials in the environment${where}, and the standard AWS credential chain ` +
        `needs ${CHAIN_PACKAGE}: npm install ${CHAIN_PACKAGE} (Deno: deno add ` +
        `npm:${CHAIN_PACKAGE}); on edge runtimes pass "credentials"`,
      { cause },
    );
  }
  const defaultProvider = mod.defaultProvider as (init: { profile?: string }) => (
    options?: { forceRefresh?: boolean },
  ) => Promise<ReturnType<CredentialsProvider>>;
  const sdk = defaultProvider(profile === undefined ? {} : { profile });
  const provider: CredentialsProvider = async (options) => {
    // The SDK bounds most sources itself, but not all: its container-endpoint client only logs a
    // warning when the endpoint never answers. A connect must not wait forever on that.
    try {
      return await withTimeout(sdk(options), CHAIN_TIMEOUT_MS, () =>
        new CredentialsError(
          "missing",
          `The standard AWS credential chain${where} gave no answer within ` +
            `${CHAIN_TIMEOUT_MS / 1000}s (an unresponsive container endpoint, IMDS or STS?)`,
        ));
    } catch (cause) {
      if (cause instanceof CredentialsError) throw cause;
      const reason = cause instanceof Error ? cause.message : String(cause);
      throw new CredentialsError(
        "missing",
        `The standard AWS credential chain${where} found no credentials (none in the ` +
          `environment either): ${excerpt(reason)}`,
        { cause },
      );
    }
  };
  chains.set(key, provider);
  return provider;
}

/**
 * The `region` of `profile` (or `AWS_PROFILE`, else `default`) in the AWS config file, through the
 * SDK's loader (so `AWS_CONFIG_FILE` is honoured); undefined when there is none, or no SDK.
 */
export async function profileRegion(profile: string | undefined): Promise<string | undefined> {
  let mod: Record<string, unknown>;
  try {
    // The SDK's config-file loader, installed with it.
    mod = await importOptional("@smithy/core/config", "^3");
  } catch {
    return undefined;
  }
  const load = mod.loadSharedConfigFiles as (
    init?: { ignoreCache?: boolean },
  ) => Promise<{ configFile: Record<string, Record<string, string | undefined>> }>;
  const name = profile ?? envProfile() ?? "default";
  const { configFile } = await load({ ignoreCache: true });
  return configFile[name]?.region;
}

/** `AWS_PROFILE`, or undefined when unset or unreadable (no permission: the default profile). */
export function envProfile(): string | undefined {
  try {
    return readEnv("AWS_PROFILE");
  } catch {
    return undefined;
  }
}

/** Forgets the chains (tests change the environment between cases). */
export function _resetChains(): void {
  chains.clear();
}
