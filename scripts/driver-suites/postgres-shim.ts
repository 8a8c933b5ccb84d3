// postgres.js's own tests, through pg-iam: this module stands in for the driver they import
// (scripts/driver-suites/hooks.mjs). Each postgres(...) becomes iamPostgres(...): a client meant for
// the suite's PostgreSQL goes through pg-iam's gateway (IAM token checked, TLS verified) in front
// of it; one meant for a server of the test's own (a fake on another port) goes there without TLS.
// Passwords, unix sockets, several hosts and custom sockets are passed on, and pg-iam refuses them:
// those differences are by design (tests/driver-suites-expected.json).
import process from "node:process";
import { pathToFileURL } from "node:url";
import { startGateway } from "../../src/gateway/mod.ts";
import { iamPostgres } from "../../src/postgres/mod.ts";
import { ca, cert, key } from "../../tests/fixtures/tls.ts";

const ENDPOINT = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";
const KEYS = { accessKeyId: "AKIDDRIVERSUITES", secretAccessKey: "pg-iam/driver-suites/key" };
const PGHOST = process.env.PGHOST ?? "127.0.0.1";
const PGPORT = Number(process.env.PGPORT ?? 5432);

const driver = await import(
  pathToFileURL(`${process.env.DRIVER_SUITES_CHECKOUT}/src/index.js`).href
);
const real = driver.default as (...args: unknown[]) => unknown;

// One gateway, in the suite's main process; the processes a test spawns use it too (a gateway of
// their own would keep them from exiting when idle).
const gateway = process.env.DRIVER_SUITES_GATEWAY
  ? JSON.parse(process.env.DRIVER_SUITES_GATEWAY) as { host: string; port: number }
  : await startGateway({
    endpoint: ENDPOINT,
    credentials: KEYS,
    upstream: { host: PGHOST, port: PGPORT },
    tls: { cert, key },
  });
process.env.DRIVER_SUITES_GATEWAY = JSON.stringify({ host: gateway.host, port: gateway.port });

/** Whether `host:port` (as the test gave them, or not) is the suite's PostgreSQL. */
function isSuiteServer(host: unknown, port: unknown): boolean {
  const h = host === undefined || host === "" ? "localhost" : String(host);
  const p = port === undefined || port === "" ? PGPORT : Number(port);
  return ["localhost", "127.0.0.1", PGHOST].includes(h) && p === PGPORT;
}

function postgres(a?: unknown, b?: unknown): unknown {
  const [url, given] = typeof a === "string" ? [a, (b ?? {}) as Record<string, unknown>] : [
    undefined,
    (a ?? {}) as Record<string, unknown>,
  ];
  let host = given.host ?? given.hostname;
  let port = given.port;
  if (url !== undefined && host === undefined) {
    try {
      const u = new URL(url);
      host = u.hostname || undefined;
      port ??= u.port || undefined;
    } catch { /* not a URL: pg-iam reads it */ }
  }
  const options: Record<string, unknown> = {
    ...given,
    signingHostname: ENDPOINT,
    signingPort: 5432,
    credentials: KEYS,
  };
  for (const k of ["pass", "password"]) if (options[k] === undefined) delete options[k];
  if (typeof host === "string" && host.includes(",")) {
    // several hosts: passed on as given (refused)
  } else if (isSuiteServer(host, port)) {
    delete options.hostname;
    Object.assign(options, { host: gateway.host, port: gateway.port });
    if (given.ssl === undefined || given.ssl === false) options.ssl = { ca };
  } else {
    options.dangerouslyDisableTls = true;
    if (given.ssl === undefined) delete options.ssl;
  }
  return url === undefined
    ? iamPostgres(options as never)
    : iamPostgres(url as never, options as never);
}

// The driver's statics (PostgresError, toCamel, BigInt, …), as the tests use them.
Object.assign(postgres, real);
export default postgres;
