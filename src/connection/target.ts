// The connection target: where to connect, whom to sign for, and how to do TLS, read once from a
// connection string (URL or libpq `key=value` form), explicit options and the libpq environment
// variables, with libpq's precedence: an explicit option over the connection string over the
// environment. Every driver adapter and every CLI command reads its target here, so one URL means
// the same thing everywhere.
//
// Web APIs only (the environment through core/env.ts): files named by sslrootcert & co. are read by
// the runtime-specific TLS module, not here.
//
// libpq's parameters: https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS
// and its variables: https://www.postgresql.org/docs/current/libpq-envars.html

import { show } from "../core/errors.ts";
import { declareEnv, readEnv } from "../core/env.ts";

/** The TLS modes pg-iam connects with; `allow` and `prefer` are refused (they can fall back to plaintext). */
export type SslMode = "disable" | "require" | "verify-ca" | "verify-full";

/** TLS protocol versions, as libpq and `node:tls` name them. */
export type TlsVersion = "TLSv1" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3";

/** A file named by a parameter, and where that parameter came from (for error messages). */
export interface NamedFile {
  path: string;
  source: string;
}

/** TLS as the target asks for it (files are read by the runtime-specific TLS module). */
export interface TlsSettings {
  mode: SslMode;
  /** Where the mode came from: `default`, or a source like `PGSSLMODE`. */
  modeSource: string;
  /** CA certificates to trust instead of the default (RDS bundle or system roots). */
  rootcert: NamedFile | "system" | undefined;
  /** A client certificate and its key (libpq sslcert/sslkey), and the key's passphrase. */
  cert: NamedFile | undefined;
  key: NamedFile | undefined;
  password: string | undefined;
  /** A certificate revocation list. */
  crl: NamedFile | undefined;
  /** Send the server name (SNI); libpq `sslsni`. */
  sni: boolean;
  /**
   * libpq `sslnegotiation`: `postgres` asks for TLS with an SSLRequest first; `direct` starts the
   * TLS handshake at once, with ALPN `postgresql` (PostgreSQL 17 and later), saving a round trip.
   */
  negotiation: "postgres" | "direct";
  /** Where `direct` came from (a source like `PGSSLNEGOTIATION`); otherwise `default`. */
  negotiationSource: string;
  minVersion: TlsVersion | undefined;
  maxVersion: TlsVersion | undefined;
}

/** IAM settings a connection string can carry (`iam_*` parameters), already typed. */
export interface UrlIamOptions {
  region?: string;
  signingHostname?: string;
  signingPort?: number;
  expiresIn?: number;
  service?: string;
  admin?: boolean;
  profile?: string;
  tokenReuse?: boolean;
}

/** Everything a connection needs to know before it opens, resolved and checked. */
export interface ConnectionTarget {
  /** The server's name: what tokens are signed for and certificates checked against, unless `iam.signingHostname` says otherwise. */
  host: string | undefined;
  /** libpq `hostaddr`: the address to connect to, without resolving `host`. */
  hostaddr: string | undefined;
  port: number | undefined;
  user: string | undefined;
  database: string | undefined;
  ssl: TlsSettings;
  iam: UrlIamOptions;
  /**
   * The parameter each of `iam` came from, as written (`iam_expiration` or `iam_expires_in`), for
   * messages; absent when the connection string has none.
   */
  iamParams?: Partial<Record<keyof UrlIamOptions, string>>;
  /** Seconds; `null`: wait forever (libpq `connect_timeout=0`). */
  connectTimeout: number | null | undefined;
  /** TCP keep-alive idle seconds; `null`: off (libpq `keepalives=0`). */
  keepAlive: number | null | undefined;
  targetSessionAttrs: string | undefined;
  /** Startup parameters libpq itself sends the server: application_name, options, client_encoding, replication, and the PGDATESTYLE/PGTZ/PGGEQO settings. */
  serverParams: Record<string, string>;
  /** Connection string parameters neither libpq nor pg-iam knows (driver options, or server settings for drivers that forward them). */
  extraParams: Record<string, string>;
  /**
   * libpq's `require_auth` forbids `none`: a server that lets the client in without asking for
   * the password (trust) is refused, as libpq refuses it.
   */
  requirePassword: boolean;
}

/** Values given explicitly (an options object, command-line flags): they win over the rest. */
export interface ExplicitTarget {
  host?: string;
  hostaddr?: string;
  port?: number | string;
  user?: string;
  database?: string;
  sslmode?: string;
  sslrootcert?: string;
  sslcert?: string;
  sslkey?: string;
  sslpassword?: string;
  sslcrl?: string;
  require_auth?: string;
  channel_binding?: string;
}

/** How to read the target. */
export interface TargetInput {
  /** A connection string: `postgres://…` / `postgresql://…`, or libpq `key=value …`. */
  url?: string;
  /** Explicit values, over the connection string and the environment. */
  explicit?: ExplicitTarget;
  /** How an explicit value is named in errors. Default: `the "<key>" option`. */
  explicitName?: (key: string) => string;
  /** Allows `sslmode=disable` (tokens in plaintext). */
  dangerouslyDisableTls?: boolean;
  /** How that opt-out is spelled where the caller comes from. Default: `dangerouslyDisableTls: true`. */
  optOutName?: string;
}

type Setting = { value: string; source: string };

// How each libpq parameter is treated. `env`: its variable. `use`: read into the target;
// `server`: sent to the server as a startup parameter, as libpq does; `ignore`: accepted and
// without effect (as in libpq here); `auth`: about passwords or Kerberos, which IAM replaces:
// an error in a connection string, ignored in the environment (it is ambient, and may serve other
// tools); `refuse`: cannot be honoured, an error from any source.
type Use = "use" | "server" | "ignore" | "auth" | "refuse";
const OAUTH = "is for OAuth logins, which IAM authentication replaces";
const LIBPQ: Record<string, [env: string | undefined, use: Use, why?: string]> = {
  host: ["PGHOST", "use"],
  hostaddr: ["PGHOSTADDR", "use"],
  port: ["PGPORT", "use"],
  dbname: ["PGDATABASE", "use"],
  user: ["PGUSER", "use"],
  password: ["PGPASSWORD", "auth"],
  passfile: ["PGPASSFILE", "auth"],
  require_auth: ["PGREQUIREAUTH", "use"],
  channel_binding: ["PGCHANNELBINDING", "use"],
  connect_timeout: ["PGCONNECT_TIMEOUT", "use"],
  client_encoding: ["PGCLIENTENCODING", "server"],
  options: ["PGOPTIONS", "server"],
  application_name: ["PGAPPNAME", "server"],
  fallback_application_name: [undefined, "use"],
  keepalives: [undefined, "use"],
  keepalives_idle: [undefined, "use"],
  keepalives_interval: [undefined, "refuse", "the JavaScript runtimes set only the idle time"],
  keepalives_count: [undefined, "refuse", "the JavaScript runtimes set only the idle time"],
  tcp_user_timeout: [undefined, "refuse", "the JavaScript runtimes cannot set it"],
  replication: [undefined, "server"],
  gssencmode: ["PGGSSENCMODE", "use"],
  sslmode: ["PGSSLMODE", "use"],
  sslnegotiation: ["PGSSLNEGOTIATION", "use"],
  sslcompression: ["PGSSLCOMPRESSION", "ignore"],
  sslcert: ["PGSSLCERT", "use"],
  sslkey: ["PGSSLKEY", "use"],
  sslcertmode: ["PGSSLCERTMODE", "use"],
  sslpassword: [undefined, "use"],
  sslrootcert: ["PGSSLROOTCERT", "use"],
  sslcrl: ["PGSSLCRL", "use"],
  sslcrldir: ["PGSSLCRLDIR", "refuse", "only a single CRL file (sslcrl) can be loaded"],
  sslsni: ["PGSSLSNI", "use"],
  requirepeer: ["PGREQUIREPEER", "refuse", "it is for unix sockets, and IAM connects over TCP"],
  ssl_min_protocol_version: ["PGSSLMINPROTOCOLVERSION", "use"],
  ssl_max_protocol_version: ["PGSSLMAXPROTOCOLVERSION", "use"],
  min_protocol_version: ["PGMINPROTOCOLVERSION", "use"],
  max_protocol_version: ["PGMAXPROTOCOLVERSION", "use"],
  krbsrvname: ["PGKRBSRVNAME", "auth"],
  gsslib: ["PGGSSLIB", "auth"],
  gssdelegation: ["PGGSSDELEGATION", "auth"],
  oauth_issuer: [undefined, "auth", OAUTH],
  oauth_client_id: [undefined, "auth", OAUTH],
  oauth_client_secret: [undefined, "auth", OAUTH],
  oauth_scope: [undefined, "auth", OAUTH],
  service: [
    "PGSERVICE",
    "auth",
    "names an entry of a connection service file (pg_service.conf), which pg-iam does not read",
  ],
  target_session_attrs: ["PGTARGETSESSIONATTRS", "use"],
  load_balance_hosts: ["PGLOADBALANCEHOSTS", "ignore"],
};

// Variables libpq turns into server settings in the startup packet.
const ENV_SETTINGS: Record<string, string> = {
  PGDATESTYLE: "datestyle",
  PGTZ: "timezone",
  PGGEQO: "geqo",
};

/** pg-iam's own connection string parameters. `iam_host`, `iam_region` and `iam_expiration` are the Python wrapper's names. */
const IAM_PARAMS: Record<string, keyof UrlIamOptions> = {
  iam_region: "region",
  iam_host: "signingHostname",
  iam_port: "signingPort",
  iam_expiration: "expiresIn",
  iam_expires_in: "expiresIn",
  iam_service: "service",
  iam_admin: "admin",
  iam_profile: "profile",
  iam_token_reuse: "tokenReuse",
};

/** Every parameter name a connection string may carry for pg-iam or libpq. */
export const KNOWN_PARAMS: readonly string[] = [...Object.keys(IAM_PARAMS), ...Object.keys(LIBPQ)];

/**
 * Reads a connection target. Throws a TypeError or RangeError naming the parameter, variable or
 * option and the bad value; nothing secret is ever quoted.
 */
// The PG* variables read below, so that Deno's refusal of one lists them all (one rerun).
declareEnv(
  ...Object.values(LIBPQ).flatMap(([env, use]) => env === undefined || use === "auth" ? [] : [env]),
  ...Object.keys(ENV_SETTINGS),
);

export function parseTarget(input: TargetInput = {}): ConnectionTarget {
  const settings = new Map<string, Setting>();
  const iam = new Map<string, Setting>();
  const extraParams: Record<string, string> = {};
  const serverParams: Record<string, string> = {};

  // Lowest precedence first: the environment, then the connection string, then explicit values.
  for (const [key, [env, use]] of Object.entries(LIBPQ)) {
    if (env === undefined || use === "auth") continue;
    const value = readEnv(env);
    if (value !== undefined) {
      settings.set(key, { value, source: `the environment variable ${env}` });
    }
  }
  for (const [env, name] of Object.entries(ENV_SETTINGS)) {
    const value = readEnv(env);
    // As libpq: "default" (any case) leaves the server's own setting.
    if (value !== undefined && value.toLowerCase() !== "default") serverParams[name] = value;
  }
  if (input.url !== undefined) {
    if (typeof input.url !== "string") {
      throw new TypeError(`The connection string must be a string, got ${show(input.url)}`);
    }
    if (input.url.includes("\0")) {
      // Not quoted: it may hold a password. libpq's connection strings are C strings.
      throw new TypeError(
        `The connection string contains a NUL character, which would end a startup parameter ` +
          `and start another: remove it`,
      );
    }
    const parsed = /^\s*postgres(?:ql)?:\/\//i.test(input.url)
      ? parseUri(input.url)
      : /^\s*[A-Za-z_]+\s*=/.test(input.url)
      ? parseKeywords(input.url)
      : undefined;
    if (parsed === undefined) {
      throw new TypeError(
        `The connection string must be a postgres:// or postgresql:// URL or libpq ` +
          `"key=value" pairs, got ${show(redact(input.url))}`,
      );
    }
    // `ssl=…` (postgres.js's name) is sslmode by another name; sslmode wins if both are there.
    const sslAlias = parsed.get("ssl");
    parsed.delete("ssl");
    if (sslAlias && !parsed.has("sslmode")) parsed.set("sslmode", sslAlias);
    for (const [key, setting] of parsed) {
      if (key in IAM_PARAMS) iam.set(key, setting);
      else if (key.startsWith("iam_")) {
        throw new TypeError(
          `Unknown connection string parameter ${show(key)}; pg-iam knows ${
            Object.keys(IAM_PARAMS).join(", ")
          }`,
        );
      } else if (key in LIBPQ) settings.set(key, setting);
      else if (key === "database") {
        // Not a driver option or a server setting but the StartupMessage's own database, which
        // postgres.js would send over the path's: libpq refuses it ("invalid URI query
        // parameter"), and so does pg-iam, whatever the driver.
        throw new TypeError(
          `The connection string parameter "database" is not libpq's (libpq: invalid URI query ` +
            `parameter): name the database in the URL's path or with dbname=`,
        );
      } else extraParams[key] = setting.value;
    }
  }
  const name = input.explicitName ?? ((key: string) => `the "${key}" option`);
  for (const [key, value] of Object.entries(input.explicit ?? {})) {
    if (value === undefined) continue;
    const keyword = key === "database" ? "dbname" : key;
    if (typeof value === "string" && value.includes("\0") && keyword !== "sslpassword") {
      throw new TypeError(
        `${cap(name(key))} contains a NUL character, which would end a startup parameter and ` +
          `start another: ${JSON.stringify(value)}`,
      );
    }
    settings.set(keyword, { value: String(value), source: name(key) });
  }

  const get = (key: string) => settings.get(key);
  for (const [key, setting] of settings) {
    const [, use, why] = LIBPQ[key];
    if (use === "refuse") {
      throw new TypeError(
        `${cap(setting.source)} (${key}) is not supported by pg-iam: ${why}; remove it`,
      );
    }
    if (use === "auth" && !setting.source.startsWith("the environment")) {
      throw new TypeError(
        key === "password"
          ? `${cap(setting.source)} is a password, which cannot be combined with IAM ` +
            `authentication: pg-iam signs a token for every connection (remove the password)`
          : `${cap(setting.source)} (${key}) ${
            why ?? "is for password or Kerberos logins, which IAM authentication replaces"
          }: remove it`,
      );
    }
    if (use === "server") serverParams[key] = setting.value;
  }
  if (serverParams.application_name === undefined && get("fallback_application_name")) {
    serverParams.application_name = get("fallback_application_name")!.value;
  }

  const requirePassword = checkAuthParams(get);
  const host = hostOf(get("host"));
  const hostaddr = hostOf(get("hostaddr"));
  return {
    host,
    hostaddr,
    port: portOf(get("port")),
    user: get("user")?.value,
    database: get("dbname")?.value,
    ssl: tlsSettings(
      get,
      input.dangerouslyDisableTls ?? false,
      input.optOutName ?? "dangerouslyDisableTls: true",
    ),
    iam: iamOptions(iam),
    ...(iam.size
      ? { iamParams: Object.fromEntries([...iam.keys()].map((k) => [IAM_PARAMS[k], k])) }
      : {}),
    connectTimeout: connectTimeoutOf(get("connect_timeout")),
    keepAlive: keepAliveOf(get("keepalives"), get("keepalives_idle")),
    targetSessionAttrs: oneOf(get("target_session_attrs"), [
      "any",
      "read-write",
      "read-only",
      "primary",
      "standby",
      "prefer-standby",
    ]),
    serverParams,
    extraParams,
    requirePassword,
  };
}

/**
 * A driver's `ssl` option as an sslmode for {@linkcode parseTarget}: a mode name as is, `true` and
 * `node:tls` options as verify-full (an object is merged over the TLS plan later), `false` as
 * disable.
 */
export function sslModeOption(ssl: unknown): string | undefined {
  if (ssl === undefined || typeof ssl === "string") return ssl;
  if (ssl === true) return "verify-full";
  if (ssl === false) return "disable";
  if (typeof ssl === "object" && ssl !== null) return "verify-full";
  throw new TypeError(
    `The "ssl" option must be a boolean, "verify-full", "verify-ca", "require", "disable" or ` +
      `node:tls options, got ${show(ssl)}`,
  );
}

/**
 * `-c name=value` for the `options` startup parameter, escaped so that the server sees exactly
 * `value`: it splits `options` at every space, tab, newline, vertical tab, form feed and carriage
 * return (C's isspace, in pg_split_opts), and a backslash keeps the character after it.
 */
export function optionsSetting(name: string, value: string): string {
  return `-c ${name}=${value.replace(/[\\ \t\n\v\f\r]/g, "\\$&")}`;
}

/** A driver's string option (host, user, …), checked. */
export function stringOption(value: unknown, option: string): string | undefined {
  if (value !== undefined && typeof value !== "string") {
    throw new TypeError(`The "${option}" option must be a string, got ${show(value)}`);
  }
  return value;
}

// ---- connection strings ----

/** A libpq URI: postgres[ql]://[user@][host][:port][/dbname][?param=value&…]. */
function parseUri(text: string): Map<string, Setting> {
  const out = new Map<string, Setting>();
  const part = (key: string, name: string, value: string) =>
    value !== "" && out.set(key, { value, source: `the connection string's ${name}` });
  const trimmed = text.trim();
  const afterScheme = trimmed.slice(trimmed.indexOf("://") + 3);
  const [beforeQuery, query = ""] = afterScheme.split("#")[0].split(/\?(.*)/s);
  const slash = beforeQuery.indexOf("/");
  const authority = slash < 0 ? beforeQuery : beforeQuery.slice(0, slash);
  const at = authority.lastIndexOf("@");
  const userinfo = at >= 0 ? authority.slice(0, at) : "";
  const hostport = authority.slice(at + 1);
  // A "/", "?" or "#" left unencoded in a password ends the authority before the "@": what is left
  // is no list of host[:port], and an "@" follows. Still a password, and never to be quoted.
  const hosts = /^(?:\[[^\]]*\]|[^:,[\]]*)(?::\d*)?(?:,(?:\[[^\]]*\]|[^:,[\]]*)(?::\d*)?)*$/;
  if (
    userinfo.includes(":") ||
    (at < 0 && !hosts.test(hostport) && afterScheme.includes("@", authority.length))
  ) {
    throw new TypeError(
      `The connection string has a password, which cannot be combined with IAM authentication: ` +
        `pg-iam signs a token for every connection (remove ":<password>" from the URL)`,
    );
  }
  if (hostport.includes(",")) {
    throw new TypeError(
      `The connection string names several hosts (${show(hostport)}): pg-iam connects to one ` +
        `host (its token and certificate name are for that host); make one client per host`,
    );
  }
  const m = /^(\[[^\]]*\]|[^:]*)(?::(.*))?$/.exec(hostport)!;
  const host = m[1].startsWith("[")
    ? m[1].slice(1, -1)
    : decode(m[1], "the connection string's host");
  // DNS names are case-insensitive; lower case signs the same token whatever the URL's case.
  part("user", "user", decode(userinfo, "the connection string's user"));
  part("host", "host", host.startsWith("/") ? host : host.toLowerCase());
  part("port", "port", m[2] ?? "");
  part(
    "dbname",
    "database",
    decode(slash < 0 ? "" : beforeQuery.slice(slash + 1), "the connection string's database"),
  );
  // The last of a repeated parameter wins, as in libpq.
  for (const [key, value] of new URLSearchParams(query)) {
    // URLSearchParams decodes %00 without a word: refused here as decode() refuses it.
    if (key.includes("\0")) forbiddenNul(`the connection string parameter ${show(key)}`);
    if (value.includes("\0")) forbiddenNul(`the connection string parameter "${key}"`);
    if (value === "") continue;
    out.set(key, { value, source: `the connection string parameter "${key}"` });
  }
  return out;
}

/** A percent-decoded part of a URL (`what` names it); `%00` is refused, as libpq refuses it. */
function decode(text: string, what: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(text);
  } catch {
    throw new TypeError(`The connection string has a bad percent-encoding in ${show(text)}`);
  }
  if (decoded.includes("\0")) forbiddenNul(what);
  return decoded;
}

function forbiddenNul(what: string): never {
  throw new TypeError(
    `${cap(what)} has the forbidden value %00 in a percent-encoded value (as libpq says): a NUL ` +
      `would end the startup parameter and start another`,
  );
}

/** A libpq keyword/value string: `host=db port=5432 dbname='my db'`. */
function parseKeywords(text: string): Map<string, Setting> {
  const out = new Map<string, Setting>();
  // As in libpq, an unquoted value runs to the next space (quotes inside it are literal).
  const re = /\s*([A-Za-z_]+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|((?!')(?:[^\s\\]|\\.)*))/y;
  let i = 0;
  let previous = "";
  while (i < text.length) {
    if (/^\s*$/.test(text.slice(i))) break;
    re.lastIndex = i;
    const m = re.exec(text);
    if (!m) {
      // Never quote what may be part of a value (a password's, say): only keys, or a lone word.
      const key = /\s*([A-Za-z_]+)\s*=/y;
      key.lastIndex = i;
      const open = key.exec(text)?.[1];
      const word = text.slice(i).trim().split(/\s/)[0];
      throw new TypeError(
        open !== undefined
          ? `The connection string parameter "${open}" has an opening quote without a closing one`
          : /^\s/.test(text.slice(i)) && !/password/i.test(previous + word)
          ? `The connection string is not valid libpq "key=value" syntax near ${
            show(word.slice(0, 20))
          }`
          : `The connection string is not valid libpq "key=value" syntax after the "${previous}" ` +
            `parameter (quote a value with spaces: key='a b c')`,
      );
    }
    previous = m[1];
    const value = (m[2] ?? m[3]).replace(/\\(.)/g, "$1");
    if (value !== "") out.set(m[1], { value, source: `the connection string parameter "${m[1]}"` });
    i = re.lastIndex;
  }
  return out;
}

/** A connection string for messages: any password replaced. */
function redact(text: string): string {
  return text.replace(/(:\/\/[^:/?#@]*:)[^@/?#]*@/, "$1***@").replace(
    /(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)/gi,
    "$1***",
  );
}

// ---- the parameters ----

function hostOf(setting: Setting | undefined): string | undefined {
  if (!setting) return undefined;
  const value = setting.value;
  if (value.includes(",")) {
    throw new TypeError(
      `${cap(setting.source)} names several hosts (${show(value)}): pg-iam connects to one host ` +
        `(its token and certificate name are for that host); make one client per host`,
    );
  }
  if (value.startsWith("/") || value.startsWith("@")) {
    throw new TypeError(
      `${cap(setting.source)} is the unix socket ${show(value)}: IAM tokens are for RDS and ` +
        `DSQL endpoints (or a local gateway on a TCP port), reached over TCP`,
    );
  }
  return value;
}

function portOf(setting: Setting | undefined): number | undefined {
  if (!setting) return undefined;
  const n = /^\d+$/.test(setting.value) ? Number(setting.value) : NaN;
  if (!(n >= 1 && n <= 65535)) {
    throw new RangeError(
      `${cap(setting.source)} must be a port from 1 to 65535, got ${show(setting.value)}`,
    );
  }
  return n;
}

function wholeNumber(setting: Setting, min: number, max: number): number {
  const n = /^-?\d+$/.test(setting.value.trim()) ? Number(setting.value) : NaN;
  if (!(n >= min && n <= max)) {
    throw new RangeError(
      `${cap(setting.source)} must be a whole number from ${min} to ${max}, got ${
        show(setting.value)
      }`,
    );
  }
  return n;
}

function oneOf<T extends string>(setting: Setting | undefined, values: T[]): T | undefined {
  if (!setting) return undefined;
  if (!values.includes(setting.value as T)) {
    throw new TypeError(
      `${cap(setting.source)} must be ${list(values)}, got ${show(setting.value)}`,
    );
  }
  return setting.value as T;
}

function flag(setting: Setting | undefined): boolean | undefined {
  const v = oneOf(setting, ["0", "1"]);
  return v === undefined ? undefined : v === "1";
}

function connectTimeoutOf(setting: Setting | undefined): number | null | undefined {
  if (!setting) return undefined;
  const n = wholeNumber(setting, -2147483648, 2147483647);
  // libpq: zero or negative waits forever; below 2 seconds counts as 2.
  return n <= 0 ? null : Math.max(n, 2);
}

function keepAliveOf(
  on: Setting | undefined,
  idle: Setting | undefined,
): number | null | undefined {
  if (flag(on) === false) return null;
  // libpq: keepalives_idle=0 is the system default.
  return idle ? wholeNumber(idle, 0, 2147483) || undefined : undefined;
}

/** Checks the authentication parameters; returns whether require_auth forbids "none". */
function checkAuthParams(get: (key: string) => Setting | undefined): boolean {
  // IAM tokens are sent as a cleartext password (over TLS): every other method is out.
  const requireAuth = get("require_auth");
  let requirePassword = false;
  if (requireAuth) {
    const methods = requireAuth.value.split(",").map((s) => s.trim());
    const negated = methods.every((m) => m.startsWith("!"));
    const known = ["password", "md5", "gss", "sspi", "scram-sha-256", "oauth", "none"];
    const unknown = methods.find((m) =>
      m.startsWith("!") !== negated || !known.includes(negated ? m.slice(1) : m)
    );
    if (unknown !== undefined) {
      throw new TypeError(
        `${cap(requireAuth.source)} is ${show(requireAuth.value)}: ${show(unknown)} is not ` +
          `${list(known)}, or mixes negated and plain methods`,
      );
    }
    const allowed = negated ? !methods.includes("!password") : methods.includes("password");
    // libpq: a server that lets the client in without asking (trust) is refused unless "none"
    // is allowed.
    requirePassword = negated ? methods.includes("!none") : !methods.includes("none");
    if (!allowed) {
      throw new TypeError(
        `${cap(requireAuth.source)} is ${show(requireAuth.value)}, which forbids the cleartext ` +
          `password exchange IAM tokens are sent with (over TLS): allow "password" or remove it`,
      );
    }
  }
  if (oneOf(get("channel_binding"), ["disable", "prefer", "require"]) === "require") {
    throw new TypeError(
      `${cap(get("channel_binding")!.source)} is "require": channel binding is part of SCRAM, ` +
        `and IAM authentication does not use SCRAM (TLS protects the token); remove it`,
    );
  }
  if (oneOf(get("gssencmode"), ["disable", "prefer", "require"]) === "require") {
    throw new TypeError(
      `${cap(get("gssencmode")!.source)} is "require": pg-iam encrypts with TLS, not GSSAPI; ` +
        `remove it`,
    );
  }
  oneOf(get("min_protocol_version"), ["3.0"]);
  oneOf(get("max_protocol_version"), ["3.0", "3.2", "latest"]);
  oneOf(get("sslcompression"), ["0", "1"]);
  oneOf(get("load_balance_hosts"), ["disable", "random"]);
  return requirePassword;
}

const VERSIONS: TlsVersion[] = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];

function tlsSettings(
  get: (key: string) => Setting | undefined,
  disable: boolean,
  optOut: string,
): TlsSettings {
  const modeSetting = get("sslmode");
  let raw = modeSetting?.value;
  if (raw === "true") raw = "verify-full"; // postgres.js's ssl=true verifies against the system
  if (raw === "false") raw = "disable";
  const rootSetting = get("sslrootcert");
  const rootcert = rootSetting === undefined
    ? undefined
    : rootSetting.value === "system"
    ? "system" as const
    : { path: rootSetting.value, source: rootSetting.source };
  const negotiationSetting = get("sslnegotiation");
  let negotiation = oneOf(negotiationSetting, ["postgres", "direct"]) ?? "postgres";
  // An opt-out outranks the environment's PGSSLNEGOTIATION, as it does PGSSLMODE.
  if (disable && negotiationSetting?.source.startsWith("the environment")) negotiation = "postgres";
  if (
    negotiation === "direct" && raw !== undefined &&
    !(disable && modeSetting!.source.startsWith("the environment")) &&
    !["require", "verify-ca", "verify-full"].includes(raw)
  ) {
    // As libpq 17: direct TLS with a mode that may do without TLS would be a trap (no fallback).
    throw new TypeError(
      `${cap(modeSetting!.source)} is ${show(raw)}, which may not be combined with ` +
        `sslnegotiation=direct (${negotiationSetting!.source}): use "require", "verify-ca" or ` +
        `"verify-full"`,
    );
  }
  if (negotiation === "direct" && disable) {
    throw new TypeError(
      `${optOut} contradicts ${negotiationSetting!.source} "direct" (direct TLS): choose one`,
    );
  }
  let mode: SslMode;
  // An explicit opt-out outranks the environment, as any explicit option does.
  if (raw === undefined || (disable && modeSetting!.source.startsWith("the environment"))) {
    mode = disable ? "disable" : "verify-full";
  } else if (raw === "allow" || raw === "prefer") {
    throw new TypeError(
      `${cap(modeSetting!.source)} is ${show(raw)}, which can fall back to plaintext and send ` +
        `the IAM token unencrypted: use "verify-full" (the default) or "require"`,
    );
  } else if (raw === "disable") {
    if (!disable) {
      throw new TypeError(
        `${cap(modeSetting!.source)} is "disable", which would send IAM tokens in plaintext: ` +
          `opt in with ${optOut} (a local gateway only), or remove it`,
      );
    }
    mode = "disable";
  } else if (raw === "require" || raw === "verify-ca" || raw === "verify-full") {
    mode = raw;
  } else {
    throw new TypeError(
      `${cap(modeSetting!.source)} must be ${
        list(["verify-full", "verify-ca", "require", "disable"])
      }, got ${show(raw)}`,
    );
  }
  if (disable && mode !== "disable") {
    throw new TypeError(
      `${optOut} contradicts ${modeSetting!.source} ${show(raw)}: choose one`,
    );
  }
  if (rootcert === "system" && modeSetting && mode !== "verify-full" && mode !== "disable") {
    // libpq refuses this too: the system's CAs sign certificates for anyone's names.
    throw new TypeError(
      `${cap(modeSetting.source)} is ${show(mode)}, which may not be combined with ` +
        `sslrootcert=system (the system's CAs sign certificates for any name): use "verify-full"`,
    );
  }
  // libpq: "if a root CA file exists, sslmode=require behaves like verify-ca".
  if (mode === "require" && rootcert !== undefined) mode = "verify-ca";

  const file = (key: string) => {
    const s = get(key);
    return s && { path: s.value, source: s.source };
  };
  let cert = file("sslcert");
  const certMode = oneOf(get("sslcertmode"), ["disable", "allow", "require"]);
  if (certMode === "disable") cert = undefined;
  if (certMode === "require" && cert === undefined) {
    throw new TypeError(
      `${cap(get("sslcertmode")!.source)} is "require" but no client certificate is given ` +
        `(sslcert and sslkey)`,
    );
  }
  const key = cert && file("sslkey");
  if (cert && !key) {
    throw new TypeError(`${cap(cert.source)} needs its private key: set sslkey too`);
  }
  const minVersion = oneOf(get("ssl_min_protocol_version"), VERSIONS);
  const maxVersion = oneOf(get("ssl_max_protocol_version"), VERSIONS);
  if (minVersion && maxVersion && VERSIONS.indexOf(minVersion) > VERSIONS.indexOf(maxVersion)) {
    throw new RangeError(
      `${cap(get("ssl_min_protocol_version")!.source)} is ${show(minVersion)}, above ${
        get("ssl_max_protocol_version")!.source
      } ${show(maxVersion)}`,
    );
  }
  return {
    mode,
    modeSource: modeSetting?.source ?? "default",
    rootcert,
    cert,
    key,
    password: get("sslpassword")?.value,
    crl: file("sslcrl"),
    sni: flag(get("sslsni")) ?? true,
    negotiation,
    negotiationSource: negotiation === "direct" ? negotiationSetting!.source : "default",
    minVersion,
    maxVersion,
  };
}

function iamOptions(params: Map<string, Setting>): UrlIamOptions {
  const out: Record<string, unknown> = {};
  for (const [key, { value }] of params) {
    const option = IAM_PARAMS[key];
    if (option === "expiresIn" || option === "signingPort") {
      if (!/^\d+$/.test(value)) {
        throw new RangeError(
          `The connection string parameter "${key}" must be a whole number, got ${show(value)}`,
        );
      }
      out[option] = Number(value);
    } else if (option === "admin" || option === "tokenReuse") {
      if (value !== "true" && value !== "1" && value !== "false" && value !== "0") {
        throw new TypeError(
          `The connection string parameter "${key}" must be true or false, got ${show(value)}`,
        );
      }
      out[option] = value === "true" || value === "1";
    } else out[option] = value;
  }
  return out as UrlIamOptions;
}

function cap(text: string): string {
  return text[0].toUpperCase() + text.slice(1);
}

function list(values: string[]): string {
  return values.map((v) => `"${v}"`).join(", ").replace(/, ([^,]*)$/, " or $1");
}
