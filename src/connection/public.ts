// What every adapter subpath exports beside its own functions: the errors its users `instanceof`
// (the very classes the root and the other subpaths export), and the option and event types they
// share. Each adapter re-exports this module, so that no subpath can miss one (the npm build
// inlines it, so each subpath re-exports these names, not the whole connection chunk).

export { CredentialsError, type CredentialsErrorCode } from "../core/errors.ts";
export type { Credentials, CredentialsOption, CredentialsProvider } from "../core/credentials.ts";
export type { IamOptions, Logger, TokenEvent } from "./options.ts";
export type { SslOption } from "./tls.ts";
export type { PrewarmOptions, PrewarmResult } from "./prewarm.ts";
export {
  isOccError,
  type RetryEvent,
  type TransactionOptions,
  TransactionOutcomeUnknownError,
} from "./retry.ts";
