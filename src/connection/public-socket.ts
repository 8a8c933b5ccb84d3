// What the adapter subpaths whose connections pg-iam opens itself (postgres.js, node-postgres)
// export beside public.ts: the errors and events of those connections. Bun.SQL opens its own, so
// ./bun exports none of them (the npm build inlines this module too; see scripts/build-npm.mjs).

export {
  ConnectError,
  type ConnectErrorCode,
  type ConnectErrorOptions,
  type PgIamConnectCode,
  type SystemErrorCode,
} from "./errors.ts";
export type { ConnectEvent, ConnectStep, ConnectTimings } from "./socket.ts";
export { IamAuthError } from "./sign.ts";
export type { IamConnectOptions } from "./adapter.ts";
