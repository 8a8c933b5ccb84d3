// What the adapter subpaths whose connections pg-iam opens itself (postgres.js, node-postgres)
// and the proxy export beside public.ts: the errors and events of those connections, and the
// diagnostics channels they publish to. Bun.SQL opens its own, so ./bun exports none of the
// errors (it exports the channels itself; the npm build inlines this module too; see
// scripts/build-npm.mjs).

export {
  ConnectError,
  type ConnectErrorCode,
  type ConnectErrorOptions,
  type PgIamConnectCode,
  type SystemErrorCode,
} from "./errors.ts";
export type { ConnectEvent, ConnectStep, ConnectTimings } from "./socket.ts";
export {
  CONNECT_CHANNEL,
  type ConnectChannelContext,
  type ConnectDriver,
  TOKEN_CHANNEL,
  type TokenChannelMessage,
} from "./diagnostics.ts";
export { IamAuthError } from "./sign.ts";
export type { IamConnectOptions } from "./adapter.ts";
