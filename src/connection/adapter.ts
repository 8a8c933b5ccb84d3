// The contract every driver adapter fulfils (postgres.js, node-postgres, Bun.SQL), and the steps
// they share: the options split into pg-iam's and the driver's, aliases resolved, the target
// parsed with libpq's meaning, the default host and port, what is signed, DSQL's lifetime rule,
// the socket plan, and the checks around transaction() and prewarm(). An adapter holds only its
// driver's glue; `satisfies Adapter<…>` in each makes the compiler hold it to the contract.

import { show } from "../core/errors.ts";
import { checkCount, driverArgs, type IamOptions, splitIam, urlNames } from "./options.ts";
import { type SigningConfig, signingConfig } from "./sign.ts";
import { type ConnectionTarget, parseTarget, sslModeOption, stringOption } from "./target.ts";
import type { SslOption } from "./tls.ts";
import type { ConnectEvent, SocketPlan } from "./socket.ts";
import { socketPlan } from "./socket-plan.ts";
import type { ConnectDriver } from "./diagnostics.ts";
import { checkMax, pacedPrewarm, type PrewarmOptions, type PrewarmResult } from "./prewarm.ts";
import type { TransactionOptions } from "./retry.ts";

/**
 * The connection options of the adapters whose connections pg-iam opens (postgres.js and
 * node-postgres), beside the {@linkcode IamOptions} and the driver's own.
 *
 * @example
 * ```ts
 * import type { IamConnectOptions } from "@pg-iam/pg-iam/pg";
 *
 * const options: IamConnectOptions = {
 *   ssl: "verify-full",
 *   onIamConnect: (e) => console.log(e.ok, e.timings.totalMs),
 * };
 * ```
 */
export interface IamConnectOptions {
  /**
   * TLS. Default `"verify-full"`: RDS against the RDS CA bundle, DSQL against the system roots,
   * both checked against `signingHostname` (or the host). An object is merged over those
   * defaults (`ca`, `servername`, …). Plaintext needs `dangerouslyDisableTls: true`.
   */
  ssl?: SslOption;
  /** Sends tokens without TLS. For a local gateway only: a token on the wire is a password. */
  dangerouslyDisableTls?: boolean;
  /**
   * Cloudflare Workers only: check the server's certificate against the CAs the Worker's
   * runtime trusts (publicly trusted CAs; a workerd config's `trustedCertificates`) instead of
   * the RDS CA or your `sslrootcert`/`ssl.ca`, which a Worker cannot be given. Without it, such
   * a target is refused on Workers when the client is created. Ignored elsewhere.
   */
  dangerouslyUsePlatformCas?: boolean;
  /**
   * Called for every physical connection start, with timings; the same name on every driver
   * (node-postgres's own `onConnect` is pg-pool's, called with the connected client).
   */
  onIamConnect?: (event: ConnectEvent) => void;
}

/** What the adapter contract asks of every adapter's options. */
export interface AdapterOptions extends IamOptions {
  /** TLS: a mode or TLS options. */
  ssl?: SslOption;
  /** Sends tokens without TLS. */
  dangerouslyDisableTls?: boolean;
  /** The connection hook (refused where the driver cannot time connections). */
  onIamConnect?: (event: ConnectEvent) => void;
}

/**
 * What an adapter module exports, for a driver whose client is `Client`, whose transactions hand
 * `fn` a `Handle`, and whose options are `Options`.
 */
export interface Adapter<Client, Handle, Options extends AdapterOptions> {
  /** Creates the driver's client with IAM authentication (iamPostgres, iamPool, iamSql). */
  create:
    | ((url?: string | Options, options?: Options) => Client)
    | ((config?: Options) => Client);
  /** Opens connections ahead of traffic; never rejects. */
  prewarm: (
    client: Client,
    connections: number,
    options?: PrewarmOptions,
  ) => Promise<PrewarmResult>;
  /** Runs `fn` in a transaction, again on a conflict; given a `Handle`, in a savepoint. */
  transaction: <T>(
    client: Client | Handle,
    fn: (handle: Handle) => T | Promise<T>,
    options?: TransactionOptions,
  ) => Promise<T>;
}

/** How an adapter's driver names its options, for {@linkcode intake}. */
export interface IntakeSpec {
  /** The adapter function, as errors name it: `iamPostgres`. */
  fn: string;
  /**
   * The connection string: the first argument (`"argument"`, with the options second) or an
   * option of this name (`"connectionString"`, the options the only argument).
   */
  url: "argument" | "connectionString";
  /** The driver's aliases of host, user and database (`hostname`), each winning over its option. */
  aliases?: Readonly<Record<string, "host" | "user" | "database">>;
  /** The driver's other names for them, used when the option is not given (postgres.js's `db`). */
  fallbacks?: Readonly<Record<string, "host" | "user" | "database">>;
  /** Reads a host or port option into one value (postgres.js also takes a list). */
  one?: (value: unknown, option: string) => string | number | undefined;
  /** libpq settings this driver also takes as options, read as explicit target values. */
  libpqOptions?: readonly ("require_auth" | "channel_binding")[];
  /** The hook's deprecated name on this driver (postgres.js: `onConnect`, its own name before). */
  deprecatedHook?: "onConnect";
  /** The driver cannot time connections (Bun.SQL): `onIamConnect` is refused with this reason. */
  noConnectEvents?: string;
  /** Driver-specific refusals, run on its options before the target is parsed. */
  check?: (driver: Record<string, unknown>) => void;
  /** The host when none is given: before `"localhost"` (node-postgres's `pg.defaults`). */
  defaultHost?: () => string | undefined;
  /** The port when none is given: before 5432. */
  defaultPort?: () => number | undefined;
}

/** What {@linkcode intake} read: the target, pg-iam's options checked, and the driver's. */
export interface Intake {
  /** The IAM options given explicitly (the connection string's are in `target.iam`). */
  iam: Record<string, unknown>;
  /** The driver's own options: pg-iam's, the connection string and the target's are taken out. */
  driver: Record<string, unknown>;
  /** The target read from the options, the connection string and the `PG*` variables. */
  target: ConnectionTarget;
  /** The host connected to: the target's, its `hostaddr`, the driver's default, `localhost`. */
  host: string;
  /** The port connected to: the target's, the driver's default, 5432. */
  port: number;
  /** The `ssl` option as given. */
  ssl: unknown;
  /** TLS options given as the `ssl` object, merged over pg-iam's. */
  tlsOverride: TlsOverride | undefined;
  /** The connection hook (`onIamConnect`, or its deprecated name). */
  onIamConnect: ((event: ConnectEvent) => void) | undefined;
  dangerouslyUsePlatformCas: boolean;
  /** The `prewarm` option, checked. */
  prewarm: number | undefined;
}

/** TLS options (`node:tls`'s), as the `ssl` option gives them. */
export type TlsOverride = NonNullable<Parameters<typeof socketPlan>[0]["tlsOverride"]>;

/** The keys intake() takes out of every driver's options. */
const OWN = ["ssl", "dangerouslyDisableTls", "dangerouslyUsePlatformCas", "prewarm"] as const;

/**
 * The shared first step of every adapter: `(url?, options?)` or `(config)` split into pg-iam's
 * options and the driver's, aliases resolved, the hook's names reconciled, the target parsed.
 */
export function intake(spec: IntakeSpec, url: unknown, options?: unknown): Intake {
  let args: { url: unknown; iam: Record<string, unknown>; rest: Record<string, unknown> };
  if (spec.url === "argument") args = driverArgs(spec.fn, url, options);
  else {
    if (typeof url !== "object" || url === null) {
      throw new TypeError(`${spec.fn}() expects a config object, got ${show(url)}`);
    }
    const { iam, rest } = splitIam(url as Record<string, unknown>);
    const { [spec.url]: connectionString, ...driver } = rest;
    args = { url: connectionString, iam, rest: driver };
  }
  const driver = { ...args.rest };
  const own: Record<string, unknown> = {};
  for (const key of OWN) {
    own[key] = driver[key];
    delete driver[key];
  }
  const hook = connectHook(driver, spec);
  const platformCas = own.dangerouslyUsePlatformCas;
  if (platformCas !== undefined && typeof platformCas !== "boolean") {
    throw new TypeError(
      `The "dangerouslyUsePlatformCas" option must be a boolean, got ${show(platformCas)}`,
    );
  }
  spec.check?.(driver);
  if (spec.url === "connectionString" && args.url !== undefined && typeof args.url !== "string") {
    throw new TypeError(`The "${spec.url}" option must be a string, got ${show(args.url)}`);
  }

  // The aliases: `hostname ?? host`, named as given.
  const given: Record<string, { value: unknown; name: string }> = {};
  for (const key of ["host", "port", "user", "database"]) {
    given[key] = { value: driver[key], name: key };
    delete driver[key];
  }
  for (const [alias, key] of Object.entries(spec.aliases ?? {})) {
    const value = driver[alias];
    delete driver[alias];
    if (value !== undefined) given[key] = { value, name: alias };
  }
  for (const [other, key] of Object.entries(spec.fallbacks ?? {})) {
    const value = driver[other];
    delete driver[other];
    if (given[key].value === undefined) given[key] = { value, name: other };
  }
  const one = spec.one ?? ((value: unknown) => value as string | number | undefined);
  const libpq: Record<string, string | undefined> = {};
  for (const key of spec.libpqOptions ?? []) {
    libpq[key] = stringOption(driver[key], key);
    delete driver[key];
  }
  const target = parseTarget({
    url: args.url as string | undefined,
    explicit: {
      host: stringOption(one(given.host.value, given.host.name), given.host.name),
      port: one(given.port.value, given.port.name),
      user: stringOption(given.user.value, given.user.name),
      database: stringOption(given.database.value, given.database.name),
      sslmode: sslModeOption(own.ssl),
      ...libpq,
    },
    explicitName: (key) => `the "${key === "sslmode" ? "ssl" : key}" option`,
    dangerouslyDisableTls: own.dangerouslyDisableTls === true,
  });
  const ssl = own.ssl;
  return {
    iam: args.iam,
    driver,
    target,
    host: target.host ?? target.hostaddr ?? spec.defaultHost?.() ?? "localhost",
    port: target.port ?? spec.defaultPort?.() ?? 5432,
    ssl,
    tlsOverride: typeof ssl === "object" && ssl !== null ? ssl as TlsOverride : undefined,
    onIamConnect: hook,
    dangerouslyUsePlatformCas: platformCas === true,
    prewarm: own.prewarm === undefined ? undefined : checkCount(own.prewarm, "prewarm"),
  };
}

/** The connection hook, by its one name or (postgres.js) its deprecated one, checked. */
function connectHook(
  driver: Record<string, unknown>,
  spec: IntakeSpec,
): ((event: ConnectEvent) => void) | undefined {
  let hook = driver.onIamConnect;
  let name = "onIamConnect";
  delete driver.onIamConnect;
  if (spec.noConnectEvents !== undefined && hook !== undefined) {
    throw new TypeError(`The "onIamConnect" option is not available: ${spec.noConnectEvents}`);
  }
  const old = spec.deprecatedHook;
  if (old !== undefined && driver[old] !== undefined) {
    if (hook !== undefined) {
      throw new TypeError(
        `Pass "onIamConnect" alone: "${old}" is its deprecated name, and both were given`,
      );
    }
    hook = driver[old];
    name = old;
  }
  if (old !== undefined) delete driver[old];
  if (hook !== undefined && typeof hook !== "function") {
    throw new TypeError(`The "${name}" option must be a function, got ${show(hook)}`);
  }
  return hook as ((event: ConnectEvent) => void) | undefined;
}

/**
 * What each connection signs: the target's IAM parameters under the explicit options, for `user`
 * at the intake's host and port, credentials bounded by `connectTimeout` (seconds).
 */
export function intakeSigning(i: Intake, user: string, connectTimeout: number): SigningConfig {
  return signingConfig(
    { ...i.target.iam as IamOptions, ...i.iam as IamOptions, host: i.host, port: i.port, user },
    connectTimeout,
    urlNames(i.target, i.iam),
  );
}

/**
 * DSQL's lifetime rule: Aurora DSQL closes connections at 60 minutes, so a driver's lifetime option
 * must be below it. Returns true when it was not given (`unset`: by default, `undefined`; the
 * driver's own default for postgres.js): the adapter then gives each connection 45–55 minutes
 * (`dsqlLifetime`).
 */
export function dsqlDefaultLifetime(
  option: string,
  value: unknown,
  unset: boolean = value === undefined,
): boolean {
  if (unset) return true;
  if (typeof value === "number" && value > 0 && value < 3600) return false;
  throw new RangeError(
    `The "${option}" option must be from 1 to 3599 seconds for Aurora DSQL, which closes ` +
      `connections at 60 minutes; got ${show(value)}`,
  );
}

/** The socket plan of a client whose connections pg-iam opens (postgres.js, node-postgres). */
export function intakePlan(
  i: Intake,
  signing: SigningConfig,
  o: {
    connectTimeoutMs: number | (() => number);
    busy?: readonly string[];
    startupParams?: () => Iterable<readonly [string, unknown]>;
    /** The driver, named on the `pg-iam:connect` channel. */
    driver?: ConnectDriver;
  },
): SocketPlan {
  return socketPlan({
    target: i.target,
    host: i.host,
    port: i.port,
    signing,
    tlsOverride: i.tlsOverride,
    connectTimeoutMs: o.connectTimeoutMs,
    onConnect: i.onIamConnect,
    dangerouslyUsePlatformCas: i.dangerouslyUsePlatformCas,
    busy: o.busy,
    startupParams: o.startupParams,
    driver: o.driver,
  });
}

/** How an adapter's driver lends a connection out, for {@linkcode prewarmClient}. */
export interface PrewarmGlue<T> {
  /** Takes a connection of the pool (postgres.js's `reserve()`, pg's `connect()`). */
  open: () => Promise<T>;
  /** Gives it back. */
  release: (connection: T) => void;
  /** The client's methods that close it: a prewarm under way gives its connections back first. */
  closers: readonly string[];
}

/** Every adapter's `prewarm()`: `connections` checked against the client's `max`, then paced. */
export function prewarmClient<T>(
  client: object,
  max: unknown,
  connections: number,
  options: PrewarmOptions | undefined,
  glue: PrewarmGlue<T>,
): Promise<PrewarmResult> {
  checkMax(connections, typeof max === "number" ? max : undefined);
  return pacedPrewarm(
    connections,
    options,
    glue.open,
    glue.release,
    client as Record<string, unknown>,
    glue.closers,
  );
}
