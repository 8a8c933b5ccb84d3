// node-postgres's and pg-pool's own tests, through pg-iam (loaded with --import before the suite,
// by scripts/driver-suites.mjs): every pg.Client the suite makes, itself or through a pool, is
// made by pg-iam's iamClient() instead. A client meant for the suite's PostgreSQL goes through
// pg-iam's gateway in front of it (IAM token checked, TLS verified); one meant for a server of the
// test's own (another port) goes there without TLS, unless the test asks for TLS. What pg-iam
// refuses by design (a password, a unix socket, a stream of the caller's) is passed on, and
// refused; the empty password of node-postgres's test helper is none, and left out.
import Module, { createRequire } from "node:module";
import net from "node:net";
import process from "node:process";
import { startGateway } from "../../src/gateway/mod.ts";
import { ca, cert, key } from "../../tests/fixtures/tls.ts";

const ENDPOINT = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";
const KEYS = { accessKeyId: "AKIDDRIVERSUITES", secretAccessKey: "pg-iam/driver-suites/key" };
const PGHOST = process.env.PGHOST ?? "127.0.0.1";
const PGPORT = Number(process.env.PGPORT ?? 5432);

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
// The gateway's listening socket does not keep a test file's process alive (node-postgres's files
// end when idle, as pg-pool's spawned programs must).
const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
for (const handle of handles) if (handle instanceof net.Server) handle.unref();

/** node-postgres's Client defaults (pg.defaults) of the copy being wrapped, for isSuiteServer. */
let pgDefaults: Record<string, unknown> = {};

/** Whether host and port (unset: as pg reads them, PG* variables then pg.defaults) are the suite's. */
function isSuiteServer(host: unknown, port: unknown): boolean {
  const h = String(host || process.env.PGHOST || pgDefaults.host || "localhost");
  const p = Number(port || process.env.PGPORT || pgDefaults.port || 5432);
  return ["localhost", "127.0.0.1", PGHOST].includes(h) && p === PGPORT;
}

/** pg's config (an object, a connection string or nothing) as iamClient() takes it. */
function iamConfig(config: unknown): Record<string, unknown> {
  const given: Record<string, unknown> = typeof config === "string"
    ? { connectionString: config }
    : { ...(config ?? {}) as Record<string, unknown> };
  let { host, port } = given;
  if (typeof given.connectionString === "string" && host === undefined) {
    try {
      const url = new URL(given.connectionString);
      host = url.hostname || undefined;
      port ??= url.port || undefined;
    } catch { /* not a URL: pg-iam reads it */ }
  }
  const options: Record<string, unknown> = {
    ...given,
    signingHostname: ENDPOINT,
    signingPort: 5432,
    credentials: KEYS,
  };
  for (const k of ["password", "stream"]) {
    if (options[k] === undefined || options[k] === null) delete options[k];
  }
  // node-postgres's test helper sets `password: process.env.PGPASSWORD || ""`: no password, which
  // a user of pg-iam leaves out (pg-iam refuses the empty one too, as any password).
  if (options.password === "") delete options.password;
  // pg-pool passes its own options on to each client; pg-iam's clients take no pool options (but
  // `Promise` is pg.Client's too).
  for (const k of ["Client", "max", "min", "idleTimeoutMillis", "maxUses", "log"]) {
    delete options[k];
  }
  if (typeof host === "string" && host.startsWith("/")) {
    // a unix socket: passed on as given (refused)
  } else if (isSuiteServer(host, port)) {
    Object.assign(options, { host: gateway.host, port: gateway.port });
    if (given.ssl === undefined || given.ssl === false) options.ssl = { ca };
  } else if (given.ssl === undefined || given.ssl === false) {
    // A server of the test's own, which speaks no TLS.
    options.dangerouslyDisableTls = true;
    delete options.ssl;
  }
  return options;
}

// Every module that is node-postgres's Client (the suite's copy or the one pg-iam imports) is
// replaced, as it loads, by a subclass whose constructor returns iamClient()'s client; iamClient
// itself makes the subclass with `building` set, which then constructs as pg's own.
const wrapped = new Map<unknown, unknown>();
let building = false;
const load = (Module as unknown as { _load: (...args: unknown[]) => unknown })._load;
(Module as unknown as { _load: (...args: unknown[]) => unknown })._load = function (
  this: unknown,
  ...args: unknown[]
) {
  const exports = load.apply(this, args);
  const [request, parent] = args as [string, { filename?: string } | undefined];
  if (!/(^|\/)client(\.js)?$/.test(request) || typeof exports !== "function") return exports;
  let filename = "";
  try {
    filename = (Module as unknown as { _resolveFilename: (...a: unknown[]) => string })
      ._resolveFilename(request, parent);
  } catch { /* not resolvable here */ }
  if (!/[/\\]pg[/\\]lib[/\\]client\.js$/.test(filename)) return exports;
  if (!wrapped.has(exports)) {
    pgDefaults = createRequire(filename)("./defaults.js");
    const Client = exports as new (config?: unknown) => object;
    class IamShimClient extends Client {
      // Returns iamClient()'s client instead of constructing one (an instance of this class too).
      // deno-lint-ignore constructor-super
      constructor(config?: unknown) {
        if (building) {
          super(config);
          return;
        }
        building = true;
        try {
          return iamClient(iamConfig(config) as never) as unknown as IamShimClient;
        } finally {
          building = false;
        }
      }
    }
    Object.assign(IamShimClient, Client);
    wrapped.set(exports, IamShimClient);
  }
  return wrapped.get(exports);
};

// Loaded after the hook: the pg that pg-iam imports gets the subclass too (its index.js captures
// the Client it requires).
const { iamClient } = await import("../../src/pg/mod.ts");
