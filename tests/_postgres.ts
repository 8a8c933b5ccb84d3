// A real (Debian) PostgreSQL server for end-to-end tests, on Node, Deno and Bun.
//
// With PGIAM_TEST_PG=host:port (or user@host:port; `npm test` sets it, having started one server
// for the whole run) that server is used. Otherwise the first call starts a fresh one (see
// tests/_postgres_server.mjs): superuser `postgres`, trust auth on 127.0.0.1, roles `app`, `admin`
// and `iam_user` with LOGIN; it is stopped and its directory deleted when the process exits (one
// left behind by a killed process is stopped by the next start).
import process from "node:process";
import { startPostgres, TEST_ROLES } from "./_postgres_server.mjs";

export { TEST_ROLES };

/** Where to connect; no password needed. */
export interface UpstreamPostgres {
  host: string;
  port: number;
  user: string;
}

let server: Promise<UpstreamPostgres> | undefined;

/** Parses PGIAM_TEST_PG: `host:port` or `user@host:port` (`[::1]:port` for IPv6). */
export function parseTestPg(value: string): UpstreamPostgres {
  const match = /^(?:([^@]+)@)?(\[[^\]]+\]|[^:]+):(\d+)$/.exec(value.trim());
  if (!match) throw new Error(`PGIAM_TEST_PG must be host:port or user@host:port, not ${value}`);
  const [, user = "postgres", host, port] = match;
  return { host: host.replace(/^\[(.*)\]$/, "$1"), port: Number(port), user };
}

/** The test server (one per process, memoized): from PGIAM_TEST_PG, or started on first use. */
export function upstreamPostgres(): Promise<UpstreamPostgres> {
  server ??= (async () => {
    const fromEnv = process.env.PGIAM_TEST_PG;
    if (fromEnv) return parseTestPg(fromEnv);
    const started = await startPostgres();
    // Node and Bun (test runners included) emit process "exit"; `deno test` does not (`deno run`
    // does), but dispatches "unload". stop() is synchronous and idempotent.
    process.on("exit", () => started.stop());
    globalThis.addEventListener?.("unload", () => started.stop());
    return { host: started.host, port: started.port, user: started.user };
  })();
  return server;
}

let server18: Promise<UpstreamPostgres> | undefined;

/**
 * A PostgreSQL 18 server with TLS on (the test certificate of tests/fixtures/tls.ts), which
 * accepts direct TLS (sslnegotiation=direct): from PGIAM_TEST_PG18=host:port (a server started
 * with `startPostgres({ version: 18, ssl: true })`), else started on first use from the npm
 * binaries and stopped when the process exits. Memoized; rejects saying why it cannot start.
 */
export function upstreamPostgres18(): Promise<UpstreamPostgres> {
  server18 ??= (async () => {
    const fromEnv = process.env.PGIAM_TEST_PG18;
    if (fromEnv) return parseTestPg(fromEnv);
    const started = await startPostgres({ version: 18, ssl: true });
    process.on("exit", () => started.stop());
    globalThis.addEventListener?.("unload", () => started.stop());
    return { host: started.host, port: started.port, user: started.user };
  })();
  return server18;
}
