/**
 * A local proxy that gives any PostgreSQL client IAM authentication: `psql`, GUI tools,
 * migration tools, MCP servers, programs in any language. Clients connect to it with no password;
 * each connection gets its own connection to the server, signed and logged in with a fresh (or
 * still young) IAM token by pg-iam's connection layer, with TLS verified as the target says;
 * then bytes flow both ways unchanged. A client's cancel request cancels its query upstream.
 *
 * It listens on loopback or a Unix socket by default; another address needs `allowRemote` and a
 * password its clients must give (SCRAM-SHA-256). Runs on Deno, Node and Bun.
 *
 * For a tool that reads a URL once at start, {@linkcode iamUrl} makes one with a fresh token.
 *
 * @example Any client, through the proxy
 * ```ts ignore
 * import { startProxy } from "@pg-iam/pg-iam/proxy";
 *
 * await using proxy = await startProxy({
 *   connectionString: "postgres://app@db.cluster-abc123xyz.us-east-1.rds.amazonaws.com/app",
 *   listen: { port: 5433 },
 * });
 * console.log(`psql "host=${proxy.host} port=${proxy.port} user=app dbname=app"`);
 * ```
 *
 * @module
 */

import { chmod, mkdir, stat } from "node:fs/promises";
import process from "node:process";
import { checkProxyOptions } from "./_options.ts";
import { isScramVerifier, parseScramVerifier, scramVerifier } from "../listener/scram.ts";
import { ProxyServer } from "./_server.ts";
import type { Proxy, ProxyOptions } from "./types.ts";

export type { Proxy, ProxyLogin, ProxyOptions, ProxySessionEnd, ProxyStats } from "./types.ts";
export { iamUrl, type IamUrlOptions } from "./url.ts";
export type { ListenerLimits } from "../listener/types.ts";
// The types its options and events name, and the errors an `onIamConnect` event may carry.
export { CredentialsError, type CredentialsErrorCode } from "../core/errors.ts";
export type { Credentials, CredentialsOption, CredentialsProvider } from "../core/credentials.ts";
export type { IamOptions, Logger, TokenEvent } from "../connection/options.ts";
export type { SslOption } from "../connection/tls.ts";
export * from "../connection/public-socket.ts";

/**
 * Starts a proxy to `options.connectionString` (or the `PG*` variables), listening on
 * `options.listen`.
 *
 * @param options The target, where to listen, the limits.
 * @returns The running proxy, once it listens.
 * @throws {TypeError} If an option is missing or of the wrong type.
 * @throws {RangeError} If an option is out of range, or the address is not loopback without
 * `allowRemote` and `password`.
 *
 * @example A Unix socket, as libpq clients look for one
 * ```ts ignore
 * import { startProxy } from "@pg-iam/pg-iam/proxy";
 *
 * await using proxy = await startProxy({
 *   connectionString: "postgres://app@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres",
 *   listen: { dir: "/tmp/pg-iam", port: 5432 },
 * });
 * // psql "host=/tmp/pg-iam user=admin dbname=postgres"
 * ```
 */
export async function startProxy(options: ProxyOptions): Promise<Proxy> {
  const config = checkProxyOptions(options);
  if (config.socketDir !== undefined) await privateDir(config.socketDir);
  const password = config.password;
  const verifier = password === undefined
    ? undefined
    : isScramVerifier(password)
    ? parseScramVerifier(password, "password")
    : await scramVerifier(password);
  const proxy = new ProxyServer(config, verifier);
  await proxy.listen();
  // Owner-only, in an owner-only directory: another local user cannot connect and log in as
  // the proxy's AWS identity.
  if (config.listenPath !== undefined) await chmod(config.listenPath, 0o600);
  return proxy;
}

// The socket's directory: created owner-only when missing; an existing one must be the user's own
// and closed to others. In a shared directory (even a sticky one, as /tmp) the socket would exist
// for a moment before chmod() makes it owner-only, and another user with a permissive umask's
// socket mode could connect in between: none can enter an owner-only directory at all.
async function privateDir(dir: string): Promise<void> {
  const info = await stat(dir).catch(() => undefined);
  if (info === undefined) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return;
  }
  if (!info.isDirectory()) {
    throw new TypeError(`The "listen.dir" option must be a directory: ${dir} is not one`);
  }
  const uid = process.getuid?.();
  const mode = (info.mode & 0o7777).toString(8);
  if ((info.mode & 0o077) !== 0 || (uid !== undefined && info.uid !== uid)) {
    throw new RangeError(
      `The "listen.dir" directory ${dir} is ${
        (info.mode & 0o077) !== 0 ? `open to other users (mode ${mode})` : `another user's`
      }: one could reach or replace the proxy's socket. Give a directory only you can enter, ` +
        `such as a new one (it is created owner-only)`,
    );
  }
}
