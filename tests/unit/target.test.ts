// parseTarget(): connection strings (URL and libpq key=value), explicit options and the PG*
// variables, with libpq's precedence; tlsPlan() and tlsError(): the TLS that a target asks for.
// No network: every case runs with all libpq variables unset except the ones it sets.
import { test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type ConnectionTarget,
  KNOWN_PARAMS,
  optionsSetting,
  parseTarget,
  type TargetInput,
  type TlsSettings,
} from "../../src/connection/target.ts";
import { rdsCa, tlsError, type TlsPlan, tlsPlan, withRdsCa } from "../../src/connection/tls.ts";
import { ca as FIXTURE_CA, cert as FIXTURE_CERT, key as FIXTURE_KEY } from "../fixtures/tls.ts";
import { withEnv } from "../_env.ts";

type Env = Record<string, string>;
type ErrorType = typeof TypeError | typeof RangeError;

// Every variable libpq reads (https://www.postgresql.org/docs/current/libpq-envars.html), and
// any other PG* variable this process inherited (but not pg-iam's own PGIAM_*).
const LIBPQ_ENV = [
  "PGHOST",
  "PGHOSTADDR",
  "PGPORT",
  "PGDATABASE",
  "PGUSER",
  "PGPASSWORD",
  "PGPASSFILE",
  "PGREQUIREAUTH",
  "PGCHANNELBINDING",
  "PGSERVICE",
  "PGSERVICEFILE",
  "PGOPTIONS",
  "PGAPPNAME",
  "PGSSLMODE",
  "PGREQUIRESSL",
  "PGSSLNEGOTIATION",
  "PGSSLCOMPRESSION",
  "PGSSLCERT",
  "PGSSLKEY",
  "PGSSLCERTMODE",
  "PGSSLROOTCERT",
  "PGSSLCRL",
  "PGSSLCRLDIR",
  "PGSSLSNI",
  "PGREQUIREPEER",
  "PGSSLMINPROTOCOLVERSION",
  "PGSSLMAXPROTOCOLVERSION",
  "PGMINPROTOCOLVERSION",
  "PGMAXPROTOCOLVERSION",
  "PGGSSENCMODE",
  "PGKRBSRVNAME",
  "PGGSSLIB",
  "PGGSSDELEGATION",
  "PGCONNECT_TIMEOUT",
  "PGCLIENTENCODING",
  "PGTARGETSESSIONATTRS",
  "PGLOADBALANCEHOSTS",
  "PGDATESTYLE",
  "PGTZ",
  "PGGEQO",
  "PGSYSCONFDIR",
  "PGLOCALEDIR",
];

/** `env` over an environment with every libpq variable unset. */
function onlyEnv(env: Env): Record<string, string | undefined> {
  const inherited = Object.keys(process.env).filter((k) =>
    k.startsWith("PG") && !k.startsWith("PGIAM")
  );
  const vars: Record<string, string | undefined> = {};
  for (const name of [...LIBPQ_ENV, ...inherited]) vars[name] = undefined;
  return { ...vars, ...env };
}

/** parseTarget(input) with no libpq variable set but those in `env`. */
function target(input: TargetInput = {}, env: Env = {}): Promise<ConnectionTarget> {
  return withEnv(onlyEnv(env), () => parseTarget(input));
}

/** The error parseTarget(input) throws with only `env` set. */
async function failure(input: TargetInput, env: Env = {}): Promise<Error> {
  try {
    await target(input, env);
  } catch (error) {
    return error as Error;
  }
  assert.fail(`parseTarget(${JSON.stringify(input)}) with ${JSON.stringify(env)} did not throw`);
}

async function assertRejects(
  input: TargetInput,
  env: Env,
  type: ErrorType,
  message: RegExp,
): Promise<void> {
  const error = await failure(input, env);
  assert.equal(error.constructor, type, `expected a ${type.name}, got ${error.name}: ${error}`);
  assert.match(error.message, message);
}

// These are compared whole; elsewhere only the keys an expectation names are compared.
const WHOLE = new Set(["serverParams", "extraParams", "iam"]);

/** The parts of `actual` that `expected` names (recursively). */
function subset(actual: unknown, expected: unknown): unknown {
  if (
    typeof expected !== "object" || expected === null || Array.isArray(expected) ||
    typeof actual !== "object" || actual === null
  ) {
    return actual;
  }
  return Object.fromEntries(
    Object.entries(expected).map(([key, value]) => {
      const a = (actual as Record<string, unknown>)[key];
      return [key, WHOLE.has(key) ? a : subset(a, value)];
    }),
  );
}

const HOST = "db.example.com";
/** A URL to HOST with `query`. */
const q = (query: string): TargetInput => ({ url: `postgres://${HOST}/app?${query}` });

// ---- connection strings ----

type Parsed = [what: string, url: string, expected: Record<string, unknown>];

const PARSED: Parsed[] = [
  [
    "user, host (lower-cased), port and database of a URL",
    "postgres://app@DB.Example.COM:6543/mydb",
    { user: "app", host: "db.example.com", port: 6543, database: "mydb" },
  ],
  [
    "a postgresql:// URL",
    "postgresql://app@db.example.com/mydb",
    { user: "app", host: "db.example.com", port: undefined, database: "mydb" },
  ],
  [
    "a URL with an upper-case scheme and surrounding spaces",
    "  POSTGRESQL://db.example.com  ",
    { host: "db.example.com", user: undefined, port: undefined, database: undefined },
  ],
  ["an IPv6 host with a port", "postgres://app@[::1]:5433/db", { host: "::1", port: 5433 }],
  [
    "an IPv6 host (lower-cased) without a port",
    "postgres://[2001:DB8::A]/db",
    { host: "2001:db8::a", port: undefined, database: "db" },
  ],
  [
    "percent-encoded user and database",
    "postgres://my%40user@db.example.com/my%20db%2Fx",
    { user: "my@user", database: "my db/x" },
  ],
  [
    "the last of a repeated query parameter",
    "postgres://db.example.com/app?application_name=first&application_name=second",
    { serverParams: { application_name: "second" } },
  ],
  [
    "query parameters over the URL's own parts, as libpq does",
    "postgres://a@db.example.com:5432/app?host=other.example.com&port=7000&user=b&dbname=d",
    { host: "other.example.com", port: 7000, user: "b", database: "d" },
  ],
  [
    'a "+" in a query value as a space, as URLSearchParams writes one (unlike libpq)',
    "postgres://db.example.com/app?application_name=a+b%20c%2Bd",
    { serverParams: { application_name: "a b c+d" } },
  ],
  [
    "a URL without its fragment",
    "postgres://db.example.com/app#x?sslmode=disable",
    { database: "app", ssl: { mode: "verify-full", modeSource: "default" } },
  ],
  [
    "an empty query value as unset",
    "postgres://db.example.com/app?sslmode=&application_name=",
    { ssl: { mode: "verify-full", modeSource: "default" }, serverParams: {} },
  ],
  [
    "libpq key=value pairs",
    "host=db.example.com port=6543 user=app dbname=mydb",
    { host: "db.example.com", port: 6543, user: "app", database: "mydb" },
  ],
  [
    "quoted libpq values with escaped quotes and backslashes",
    String.raw`host=db.example.com dbname='my db' application_name='it\'s a \\ test'`,
    { database: "my db", serverParams: { application_name: String.raw`it's a \ test` } },
  ],
  [
    'spaces around "=" and between libpq pairs',
    "\thost = db.example.com \n port =5433  ",
    { host: "db.example.com", port: 5433 },
  ],
  [
    "a backslash escape in an unquoted libpq value",
    String.raw`host=db.example.com application_name=a\ b`,
    { serverParams: { application_name: "a b" } },
  ],
  [
    "a quote inside an unquoted libpq value as a literal quote",
    "host=db.example.com application_name=it's",
    { serverParams: { application_name: "it's" } },
  ],
  [
    "an empty quoted libpq value as unset",
    "host=db.example.com dbname=''",
    { host: "db.example.com", database: undefined },
  ],
];

for (const [what, url, expected] of PARSED) {
  test(`parseTarget() reads ${what}`, async () => {
    const t = await target({ url });
    assert.deepEqual(subset(t, expected), expected);
  });
}

type Refused = [what: string, input: TargetInput, env: Env, type: ErrorType, message: RegExp];

const BAD_STRINGS: Refused[] = [
  [
    "a bare word",
    { url: "db.example.com" },
    {},
    TypeError,
    /^The connection string must be a postgres:\/\/ or postgresql:\/\/ URL or libpq "key=value" pairs, got "db\.example\.com"$/,
  ],
  ["an empty string", { url: "" }, {}, TypeError, /postgresql:\/\/ URL .*, got ""$/],
  ["another scheme", { url: "mysql://app@db" }, {}, TypeError, /, got "mysql:\/\/app@db"$/],
  [
    "a connection string that is not a string",
    { url: 5 as unknown as string },
    {},
    TypeError,
    /^The connection string must be a string, got 5$/,
  ],
  [
    "a bad percent-encoding",
    { url: "postgres://db.example.com/%E0%A4%A" },
    {},
    TypeError,
    /^The connection string has a bad percent-encoding in "%E0%A4%A"$/,
  ],
  [
    "a word without a value in libpq syntax",
    { url: "host=db.example.com oops" },
    {},
    TypeError,
    /^The connection string is not valid libpq "key=value" syntax near "oops"$/,
  ],
  [
    "an unterminated quote in libpq syntax",
    { url: "host=db.example.com dbname='my db" },
    {},
    TypeError,
    /^The connection string parameter "dbname" has an opening quote without a closing one$/,
  ],
  [
    "a port that is not a number",
    { url: "postgres://db.example.com:port/app" },
    {},
    RangeError,
    /^The connection string's port must be a port from 1 to 65535, got "port"$/,
  ],
  [
    "a port above 65535",
    { url: "postgres://db.example.com:70000/app" },
    {},
    RangeError,
    /^The connection string's port must be a port from 1 to 65535, got "70000"$/,
  ],
  // As libpq: "forbidden value %00 in percent-encoded value". A NUL would end the startup
  // parameter and start another (database "app\0options\0-c search_path=evil").
  [
    "%00 in the path's database",
    { url: "postgres://db.example.com/app%00options%00-c%20search_path%3Devil" },
    {},
    TypeError,
    /^The connection string's database has the forbidden value %00 in a percent-encoded value/,
  ],
  [
    "%00 in the user",
    { url: "postgres://app%00x@db.example.com/app" },
    {},
    TypeError,
    /^The connection string's user has the forbidden value %00/,
  ],
  [
    "%00 in a parameter's value",
    q("application_name=x%00options%00-c%20search_path%3Devil"),
    {},
    TypeError,
    /^The connection string parameter "application_name" has the forbidden value %00/,
  ],
  [
    "%00 in a parameter's name",
    q("search%00path=evil"),
    {},
    TypeError,
    /^The connection string parameter "search\\u0000path" has the forbidden value %00/,
  ],
  [
    "a NUL character, unquoted",
    { url: "host=db.example.com dbname=app\0options password=secret" },
    {},
    TypeError,
    /^The connection string contains a NUL character, which would end a startup parameter and start another: remove it$/,
  ],
  [
    "a NUL in an explicit value, escaped",
    { explicit: { database: "app\0options\0-c search_path=evil" } },
    {},
    TypeError,
    /^The "database" option contains a NUL character, .*: "app\\u0000options\\u0000-c search_path=evil"$/,
  ],
  // As libpq: "invalid URI query parameter" (and "invalid connection option" in key=value form).
  [
    "database= as a URL parameter",
    q("database=template1"),
    {},
    TypeError,
    /^The connection string parameter "database" is not libpq's .*: name the database in the URL's path or with dbname=$/,
  ],
  [
    "database= in key=value form",
    { url: "host=db.example.com dbname=app database=template1" },
    {},
    TypeError,
    /parameter "database" is not libpq's/,
  ],
];

test("optionsSetting() escapes every character the server splits options at (C's isspace) and backslashes, so that the server reads one -c setting with exactly the value", () => {
  assert.equal(
    optionsSetting("timezone", "UTC \t\n\v\f\r-c search_path=evil\\"),
    "-c timezone=UTC\\ \\\t\\\n\\\v\\\f\\\r-c\\ search_path=evil\\\\",
  );
});

for (const [what, input, env, type, message] of BAD_STRINGS) {
  test(`parseTarget() refuses ${what} with a ${type.name}`, async () => {
    await assertRejects(input, env, type, message);
  });
}

// ---- precedence: explicit option > connection string > environment ----

type Precedence = [
  param: string,
  variable: string,
  envValue: string,
  url: string,
  explicit: TargetInput["explicit"],
  read: (t: ConnectionTarget) => unknown,
  expected: [env: unknown, url: unknown, explicit: unknown],
];

const PRECEDENCE: Precedence[] = [
  [
    "host",
    "PGHOST",
    "env.example.com",
    "postgres://url.example.com/",
    { host: "explicit.example.com" },
    (t) => t.host,
    ["env.example.com", "url.example.com", "explicit.example.com"],
  ],
  [
    "port",
    "PGPORT",
    "5000",
    "postgres://h:6000/",
    { port: 7000 },
    (t) => t.port,
    [5000, 6000, 7000],
  ],
  [
    "user",
    "PGUSER",
    "env_user",
    "postgres://url_user@h/",
    { user: "explicit_user" },
    (t) => t.user,
    ["env_user", "url_user", "explicit_user"],
  ],
  [
    "dbname",
    "PGDATABASE",
    "env_db",
    "postgres://h/url_db",
    { database: "explicit_db" },
    (t) => t.database,
    ["env_db", "url_db", "explicit_db"],
  ],
  [
    "sslmode",
    "PGSSLMODE",
    "require",
    "postgres://h/?sslmode=verify-ca",
    { sslmode: "verify-full" },
    (t) => [t.ssl.mode, t.ssl.modeSource],
    [
      ["require", "the environment variable PGSSLMODE"],
      ["verify-ca", 'the connection string parameter "sslmode"'],
      ["verify-full", 'the "sslmode" option'],
    ],
  ],
  [
    "sslrootcert",
    "PGSSLROOTCERT",
    "/env/ca.pem",
    "postgres://h/?sslrootcert=/url/ca.pem",
    { sslrootcert: "/explicit/ca.pem" },
    (t) => t.ssl.rootcert,
    [
      { path: "/env/ca.pem", source: "the environment variable PGSSLROOTCERT" },
      { path: "/url/ca.pem", source: 'the connection string parameter "sslrootcert"' },
      { path: "/explicit/ca.pem", source: 'the "sslrootcert" option' },
    ],
  ],
];

for (const [param, variable, envValue, url, explicit, read, expected] of PRECEDENCE) {
  const env = { [variable]: envValue };
  test(`parseTarget() reads ${param} from ${variable} when nothing else sets it`, async () => {
    assert.deepEqual(read(await target({}, env)), expected[0]);
  });
  test(`parseTarget() prefers ${param} of the connection string to ${variable}`, async () => {
    assert.deepEqual(read(await target({ url }, env)), expected[1]);
  });
  test(`parseTarget() prefers an explicit ${param} to the connection string and ${variable}`, async () => {
    assert.deepEqual(read(await target({ url, explicit }, env)), expected[2]);
  });
}

test("parseTarget() skips an explicit undefined, keeping the connection string's value", async () => {
  const t = await target(
    { url: "postgres://u@url.example.com:6000/d", explicit: { host: undefined, port: undefined } },
    { PGHOST: "env.example.com" },
  );
  assert.deepEqual([t.host, t.port, t.user, t.database], ["url.example.com", 6000, "u", "d"]);
});

test("parseTarget() reads an empty PG* variable as unset", async () => {
  const t = await target({}, { PGHOST: "", PGPORT: "", PGSSLMODE: "" });
  assert.deepEqual([t.host, t.port, t.ssl.mode, t.ssl.modeSource], [
    undefined,
    undefined,
    "verify-full",
    "default",
  ]);
});

test("parseTarget() with no input, no connection string and no variables", async () => {
  const t = await target();
  assert.deepEqual(t, {
    host: undefined,
    hostaddr: undefined,
    port: undefined,
    user: undefined,
    database: undefined,
    ssl: {
      mode: "verify-full",
      modeSource: "default",
      rootcert: undefined,
      cert: undefined,
      key: undefined,
      password: undefined,
      crl: undefined,
      sni: true,
      negotiation: "postgres",
      negotiationSource: "default",
      minVersion: undefined,
      maxVersion: undefined,
    },
    iam: {},
    connectTimeout: undefined,
    keepAlive: undefined,
    targetSessionAttrs: undefined,
    serverParams: {},
    extraParams: {},
    requirePassword: false,
  });
});

// ---- each libpq parameter and its variable ----

type Read = [what: string, input: TargetInput, env: Env, expected: Record<string, unknown>];

const READ: Read[] = [
  // hostaddr
  [
    "hostaddr beside host",
    q("hostaddr=10.0.0.5"),
    {},
    { host: HOST, hostaddr: "10.0.0.5" },
  ],
  ["PGHOSTADDR", {}, { PGHOSTADDR: "10.0.0.6" }, { host: undefined, hostaddr: "10.0.0.6" }],
  // require_auth: whether a server that never asks for the password (trust) is refused
  ["require_auth=password (trust refused)", q("require_auth=password"), {}, {
    requirePassword: true,
  }],
  ["require_auth=password,none (trust allowed)", q("require_auth=password%2Cnone"), {}, {
    requirePassword: false,
  }],
  ["PGREQUIREAUTH=!md5 (trust allowed)", {}, { PGREQUIREAUTH: "!md5" }, {
    requirePassword: false,
  }],
  ["PGREQUIREAUTH=!none,!md5 (trust refused)", {}, { PGREQUIREAUTH: "!none,!md5" }, {
    requirePassword: true,
  }],
  // connect_timeout
  ["connect_timeout=0 as no timeout (null)", q("connect_timeout=0"), {}, { connectTimeout: null }],
  ["a negative connect_timeout as no timeout", q("connect_timeout=-5"), {}, {
    connectTimeout: null,
  }],
  ["connect_timeout=1 as 2 seconds, libpq's minimum", q("connect_timeout=1"), {}, {
    connectTimeout: 2,
  }],
  ["connect_timeout=10", q("connect_timeout=10"), {}, { connectTimeout: 10 }],
  ["PGCONNECT_TIMEOUT", {}, { PGCONNECT_TIMEOUT: "15" }, { connectTimeout: 15 }],
  // keepalives
  ["keepalives_idle", q("keepalives_idle=30"), {}, { keepAlive: 30 }],
  ["keepalives=1 with keepalives_idle", q("keepalives=1&keepalives_idle=45"), {}, {
    keepAlive: 45,
  }],
  ["keepalives=0 as keep-alive off (null)", q("keepalives=0&keepalives_idle=30"), {}, {
    keepAlive: null,
  }],
  ["keepalives_idle=0 as the default (libpq: the system's)", q("keepalives_idle=0"), {}, {
    keepAlive: undefined,
  }],
  // application_name
  ["application_name", q("application_name=web"), {}, {
    serverParams: { application_name: "web" },
  }],
  ["PGAPPNAME", {}, { PGAPPNAME: "worker" }, { serverParams: { application_name: "worker" } }],
  [
    "fallback_application_name when nothing sets application_name",
    q("fallback_application_name=fallback"),
    {},
    { serverParams: { application_name: "fallback" } },
  ],
  [
    "application_name over fallback_application_name",
    q("fallback_application_name=fallback&application_name=web"),
    {},
    { serverParams: { application_name: "web" } },
  ],
  [
    "PGAPPNAME over fallback_application_name",
    q("fallback_application_name=fallback"),
    { PGAPPNAME: "worker" },
    { serverParams: { application_name: "worker" } },
  ],
  // options, client_encoding, replication, and the server settings of the environment
  ["options", q("options=-c%20search_path%3Dapp"), {}, {
    serverParams: { options: "-c search_path=app" },
  }],
  ["PGOPTIONS", {}, { PGOPTIONS: "-c geqo=off" }, { serverParams: { options: "-c geqo=off" } }],
  ["client_encoding", q("client_encoding=UTF8"), {}, {
    serverParams: { client_encoding: "UTF8" },
  }],
  ["PGCLIENTENCODING", {}, { PGCLIENTENCODING: "LATIN1" }, {
    serverParams: { client_encoding: "LATIN1" },
  }],
  ["replication", q("replication=database"), {}, {
    serverParams: { replication: "database" },
  }],
  [
    "PGDATESTYLE, PGTZ and PGGEQO as server settings",
    {},
    { PGDATESTYLE: "ISO, MDY", PGTZ: "UTC", PGGEQO: "off" },
    { serverParams: { datestyle: "ISO, MDY", timezone: "UTC", geqo: "off" } },
  ],
  // libpq sends none of them whose value is "default", in any case.
  ["PGTZ=default and PGGEQO=DEFAULT, not sent", {}, { PGTZ: "default", PGGEQO: "DEFAULT" }, {
    serverParams: {},
  }],
  // target_session_attrs
  ["target_session_attrs", q("target_session_attrs=read-write"), {}, {
    targetSessionAttrs: "read-write",
  }],
  ["PGTARGETSESSIONATTRS", {}, { PGTARGETSESSIONATTRS: "standby" }, {
    targetSessionAttrs: "standby",
  }],
  // sslmode
  ["the default sslmode, verify-full", q(""), {}, {
    ssl: { mode: "verify-full", modeSource: "default" },
  }],
  ["sslmode=verify-full", q("sslmode=verify-full"), {}, { ssl: { mode: "verify-full" } }],
  ["sslmode=verify-ca", q("sslmode=verify-ca"), {}, { ssl: { mode: "verify-ca" } }],
  ["sslmode=require", q("sslmode=require"), {}, { ssl: { mode: "require" } }],
  [
    "sslmode=disable with dangerouslyDisableTls",
    { ...q("sslmode=disable"), dangerouslyDisableTls: true },
    {},
    { ssl: { mode: "disable" } },
  ],
  [
    "dangerouslyDisableTls alone as sslmode=disable",
    { url: `postgres://${HOST}/app`, dangerouslyDisableTls: true },
    {},
    { ssl: { mode: "disable" } },
  ],
  [
    "dangerouslyDisableTls over PGSSLMODE (an explicit option outranks the environment)",
    { url: `postgres://${HOST}/app`, dangerouslyDisableTls: true },
    { PGSSLMODE: "require" },
    { ssl: { mode: "disable" } },
  ],
  [
    "ssl=true as verify-full (postgres.js's alias)",
    q("ssl=true"),
    {},
    { ssl: { mode: "verify-full", modeSource: 'the connection string parameter "ssl"' } },
  ],
  ["ssl=require", q("ssl=require"), {}, { ssl: { mode: "require" } }],
  [
    "ssl=false as disable, with dangerouslyDisableTls",
    { ...q("ssl=false"), dangerouslyDisableTls: true },
    {},
    { ssl: { mode: "disable" } },
  ],
  [
    "sslmode over its alias ssl",
    q("ssl=require&sslmode=verify-ca"),
    {},
    { ssl: { mode: "verify-ca", modeSource: 'the connection string parameter "sslmode"' } },
  ],
  // sslrootcert
  ["sslrootcert=system", q("sslrootcert=system"), {}, {
    ssl: { mode: "verify-full", rootcert: "system" },
  }],
  [
    "sslrootcert=system with sslmode=verify-full",
    q("sslrootcert=system&sslmode=verify-full"),
    {},
    { ssl: { mode: "verify-full", rootcert: "system" } },
  ],
  [
    "sslmode=require with a root certificate as verify-ca, as libpq does",
    q("sslmode=require&sslrootcert=/etc/ca.pem"),
    {},
    { ssl: { mode: "verify-ca" } },
  ],
  [
    "PGSSLMODE=require with PGSSLROOTCERT as verify-ca",
    {},
    { PGSSLMODE: "require", PGSSLROOTCERT: "/etc/ca.pem" },
    {
      ssl: {
        mode: "verify-ca",
        modeSource: "the environment variable PGSSLMODE",
        rootcert: { path: "/etc/ca.pem", source: "the environment variable PGSSLROOTCERT" },
      },
    },
  ],
  // client certificates
  [
    "sslcert, sslkey and sslpassword",
    q("sslcert=/c.pem&sslkey=/k.pem&sslpassword=pass"),
    {},
    {
      ssl: {
        cert: { path: "/c.pem", source: 'the connection string parameter "sslcert"' },
        key: { path: "/k.pem", source: 'the connection string parameter "sslkey"' },
        password: "pass",
      },
    },
  ],
  [
    "PGSSLCERT and PGSSLKEY",
    {},
    { PGSSLCERT: "/c.pem", PGSSLKEY: "/k.pem" },
    {
      ssl: {
        cert: { path: "/c.pem", source: "the environment variable PGSSLCERT" },
        key: { path: "/k.pem", source: "the environment variable PGSSLKEY" },
      },
    },
  ],
  [
    "sslcertmode=disable as no client certificate",
    q("sslcert=/c.pem&sslkey=/k.pem&sslcertmode=disable"),
    {},
    { ssl: { cert: undefined, key: undefined } },
  ],
  [
    "sslcertmode=require with a certificate",
    q("sslcert=/c.pem&sslkey=/k.pem&sslcertmode=require"),
    {},
    { ssl: { cert: { path: "/c.pem", source: 'the connection string parameter "sslcert"' } } },
  ],
  [
    "PGSSLCERTMODE=allow",
    q("sslcert=/c.pem&sslkey=/k.pem"),
    { PGSSLCERTMODE: "allow" },
    { ssl: { key: { path: "/k.pem", source: 'the connection string parameter "sslkey"' } } },
  ],
  [
    "sslkey without sslcert as nothing",
    q("sslkey=/k.pem"),
    {},
    { ssl: { cert: undefined, key: undefined } },
  ],
  // sslcrl, sslsni, TLS versions
  ["sslcrl", q("sslcrl=/crl.pem"), {}, {
    ssl: { crl: { path: "/crl.pem", source: 'the connection string parameter "sslcrl"' } },
  }],
  ["PGSSLCRL", {}, { PGSSLCRL: "/crl.pem" }, {
    ssl: { crl: { path: "/crl.pem", source: "the environment variable PGSSLCRL" } },
  }],
  ["sslsni=0", q("sslsni=0"), {}, { ssl: { sni: false } }],
  ["sslsni=1", q("sslsni=1"), {}, { ssl: { sni: true } }],
  ["PGSSLSNI=0", {}, { PGSSLSNI: "0" }, { ssl: { sni: false } }],
  [
    "ssl_min_protocol_version and ssl_max_protocol_version",
    q("ssl_min_protocol_version=TLSv1.2&ssl_max_protocol_version=TLSv1.3"),
    {},
    { ssl: { minVersion: "TLSv1.2", maxVersion: "TLSv1.3" } },
  ],
  [
    "equal minimum and maximum TLS versions",
    q("ssl_min_protocol_version=TLSv1.3&ssl_max_protocol_version=TLSv1.3"),
    {},
    { ssl: { minVersion: "TLSv1.3", maxVersion: "TLSv1.3" } },
  ],
  [
    "PGSSLMINPROTOCOLVERSION and PGSSLMAXPROTOCOLVERSION",
    {},
    { PGSSLMINPROTOCOLVERSION: "TLSv1.2", PGSSLMAXPROTOCOLVERSION: "TLSv1.2" },
    { ssl: { minVersion: "TLSv1.2", maxVersion: "TLSv1.2" } },
  ],
  // protocol versions, negotiation, GSSAPI, channel binding, require_auth: what IAM allows
  [
    "min_protocol_version=3.0 and max_protocol_version=latest",
    q("min_protocol_version=3.0&max_protocol_version=latest"),
    {},
    { host: HOST },
  ],
  ["max_protocol_version=3.2", q("max_protocol_version=3.2"), {}, { host: HOST }],
  ["PGMAXPROTOCOLVERSION=3.0", {}, { PGMAXPROTOCOLVERSION: "3.0" }, { host: undefined }],
  ["sslnegotiation=postgres", q("sslnegotiation=postgres"), {}, {
    ssl: { negotiation: "postgres", negotiationSource: "default" },
  }],
  [
    "sslnegotiation=direct (verify-full by default)",
    q("sslnegotiation=direct"),
    {},
    {
      ssl: {
        mode: "verify-full",
        negotiation: "direct",
        negotiationSource: 'the connection string parameter "sslnegotiation"',
      },
    },
  ],
  [
    "PGSSLNEGOTIATION=direct with sslmode=require",
    q("sslmode=require"),
    { PGSSLNEGOTIATION: "direct" },
    { ssl: { mode: "require", negotiation: "direct" } },
  ],
  [
    "PGSSLNEGOTIATION=direct under dangerouslyDisableTls (the opt-out outranks the environment)",
    { url: `postgres://${HOST}/app`, dangerouslyDisableTls: true },
    { PGSSLNEGOTIATION: "direct" },
    { ssl: { mode: "disable", negotiation: "postgres" } },
  ],
  ["gssencmode=prefer and gssencmode=disable", q("gssencmode=prefer&gssencmode=disable"), {}, {
    host: HOST,
  }],
  ["channel_binding=prefer", q("channel_binding=prefer"), {}, { host: HOST }],
  ["require_auth=password", q("require_auth=password"), {}, { host: HOST }],
  [
    "require_auth listing password among others",
    q("require_auth=scram-sha-256,password"),
    {},
    { host: HOST },
  ],
  ["require_auth=!md5 (password still allowed)", q("require_auth=!md5,!gss"), {}, { host: HOST }],
  // accepted without effect
  ["sslcompression=1", q("sslcompression=1"), {}, { host: HOST }],
  ["load_balance_hosts=random", q("load_balance_hosts=random"), {}, { host: HOST }],
  [
    "PGSSLCOMPRESSION and PGLOADBALANCEHOSTS",
    {},
    { PGSSLCOMPRESSION: "0", PGLOADBALANCEHOSTS: "disable" },
    { host: undefined },
  ],
  // parameters pg-iam does not know, and its own
  [
    "unknown parameters into extraParams",
    q("max=10&idle_timeout=20&search_path=app"),
    {},
    { extraParams: { max: "10", idle_timeout: "20", search_path: "app" }, serverParams: {} },
  ],
  [
    "unknown libpq-syntax parameters into extraParams",
    { url: "host=db.example.com max=10" },
    {},
    { extraParams: { max: "10" } },
  ],
  [
    "iam_* parameters, typed",
    q(
      "iam_region=eu-west-1&iam_host=db.cluster-x.eu-west-1.rds.amazonaws.com&iam_port=6432" +
        "&iam_expiration=600&iam_service=rds&iam_admin=true&iam_profile=prod",
    ),
    {},
    {
      iam: {
        region: "eu-west-1",
        signingHostname: "db.cluster-x.eu-west-1.rds.amazonaws.com",
        signingPort: 6432,
        expiresIn: 600,
        service: "rds",
        admin: true,
        profile: "prod",
      },
      extraParams: {},
    },
  ],
  ["iam_expires_in and iam_admin=0", q("iam_expires_in=300&iam_admin=0"), {}, {
    iam: { expiresIn: 300, admin: false },
  }],
  ["iam_admin=1 as true", q("iam_admin=1"), {}, { iam: { admin: true } }],
  ["iam_token_reuse=false", q("iam_token_reuse=false"), {}, { iam: { tokenReuse: false } }],
  ["iam_* parameters in libpq syntax", { url: "host=db.example.com iam_admin=false" }, {}, {
    iam: { admin: false },
  }],
  // the variables of password and Kerberos logins are ambient: ignored
  [
    "PGPASSWORD, PGPASSFILE, PGSERVICE, PGKRBSRVNAME, PGGSSLIB, PGGSSDELEGATION (ignored)",
    {},
    {
      PGHOST: HOST,
      PGPASSWORD: "pw",
      PGPASSFILE: "/pgpass",
      PGSERVICE: "svc",
      PGKRBSRVNAME: "postgres",
      PGGSSLIB: "gssapi",
      PGGSSDELEGATION: "1",
    },
    { host: HOST, serverParams: {}, extraParams: {} },
  ],
];

for (const [what, input, env, expected] of READ) {
  test(`parseTarget() reads ${what}`, async () => {
    const t = await target(input, env);
    assert.deepEqual(subset(t, expected), expected);
  });
}

const REFUSED: Refused[] = [
  // values out of range or unknown
  [
    "a connect_timeout that is not a number",
    q("connect_timeout=soon"),
    {},
    RangeError,
    /^The connection string parameter "connect_timeout" must be a whole number from -2147483648 to 2147483647, got "soon"$/,
  ],
  [
    "a bad PGCONNECT_TIMEOUT",
    {},
    { PGCONNECT_TIMEOUT: "1.5" },
    RangeError,
    /^The environment variable PGCONNECT_TIMEOUT must be a whole number .*, got "1\.5"$/,
  ],
  [
    "keepalives other than 0 or 1",
    q("keepalives=2"),
    {},
    TypeError,
    /^The connection string parameter "keepalives" must be "0" or "1", got "2"$/,
  ],
  [
    "a negative keepalives_idle",
    q("keepalives_idle=-1"),
    {},
    RangeError,
    /^The connection string parameter "keepalives_idle" must be a whole number from 0 to 2147483, got "-1"$/,
  ],
  [
    "an unknown target_session_attrs",
    {},
    { PGTARGETSESSIONATTRS: "master" },
    TypeError,
    /^The environment variable PGTARGETSESSIONATTRS must be "any", "read-write", "read-only", "primary", "standby" or "prefer-standby", got "master"$/,
  ],
  // sslmode
  [
    "sslmode=allow",
    q("sslmode=allow"),
    {},
    TypeError,
    /^The connection string parameter "sslmode" is "allow", which can fall back to plaintext and send the IAM token unencrypted: use "verify-full" \(the default\) or "require"$/,
  ],
  [
    "PGSSLMODE=prefer",
    {},
    { PGSSLMODE: "prefer" },
    TypeError,
    /^The environment variable PGSSLMODE is "prefer", which can fall back to plaintext/,
  ],
  [
    "sslmode=disable without the opt-out",
    q("sslmode=disable"),
    {},
    TypeError,
    /^The connection string parameter "sslmode" is "disable", which would send IAM tokens in plaintext: opt in with dangerouslyDisableTls: true \(a local gateway only\), or remove it$/,
  ],
  [
    "PGSSLMODE=disable without the opt-out",
    {},
    { PGSSLMODE: "disable" },
    TypeError,
    /^The environment variable PGSSLMODE is "disable", which would send IAM tokens in plaintext/,
  ],
  [
    "ssl=false without the opt-out, naming the ssl parameter",
    q("ssl=false"),
    {},
    TypeError,
    /^The connection string parameter "ssl" is "disable", which would send IAM tokens in plaintext/,
  ],
  [
    "sslmode=disable, naming the caller's opt-out",
    { ...q("sslmode=disable"), optOutName: "--dangerously-disable-tls" },
    {},
    TypeError,
    /opt in with --dangerously-disable-tls \(a local gateway only\)/,
  ],
  [
    "an sslmode that contradicts the opt-out",
    { ...q("sslmode=require"), dangerouslyDisableTls: true },
    {},
    TypeError,
    /^dangerouslyDisableTls: true contradicts the connection string parameter "sslmode" "require": choose one$/,
  ],
  [
    "an unknown sslmode",
    q("sslmode=verify"),
    {},
    TypeError,
    /^The connection string parameter "sslmode" must be "verify-full", "verify-ca", "require" or "disable", got "verify"$/,
  ],
  [
    "an explicit sslmode=prefer, named as the caller names it",
    {
      url: `postgres://${HOST}/app`,
      explicit: { sslmode: "prefer" },
      explicitName: (key) => `the "${key === "sslmode" ? "ssl" : key}" option`,
    },
    {},
    TypeError,
    /^The "ssl" option is "prefer", which can fall back to plaintext/,
  ],
  [
    "an sslmode flag of the CLI, named as the CLI names it",
    {
      explicit: { sslmode: "allow" },
      explicitName: (key) => `--${key}`,
    },
    {},
    TypeError,
    /^--sslmode is "allow", which can fall back/,
  ],
  // sslrootcert=system
  [
    "sslrootcert=system with sslmode=require",
    q("sslrootcert=system&sslmode=require"),
    {},
    TypeError,
    /^The connection string parameter "sslmode" is "require", which may not be combined with sslrootcert=system \(the system's CAs sign certificates for any name\): use "verify-full"$/,
  ],
  [
    "sslrootcert=system with sslmode=verify-ca",
    q("sslrootcert=system&sslmode=verify-ca"),
    {},
    TypeError,
    /is "verify-ca", which may not be combined with sslrootcert=system/,
  ],
  [
    "PGSSLROOTCERT=system with PGSSLMODE=require",
    {},
    { PGSSLROOTCERT: "system", PGSSLMODE: "require" },
    TypeError,
    /^The environment variable PGSSLMODE is "require", which may not be combined with sslrootcert=system/,
  ],
  // client certificates
  [
    "sslcert without sslkey",
    q("sslcert=/c.pem"),
    {},
    TypeError,
    /^The connection string parameter "sslcert" needs its private key: set sslkey too$/,
  ],
  [
    "sslcertmode=require without a certificate",
    {},
    { PGSSLCERTMODE: "require" },
    TypeError,
    /^The environment variable PGSSLCERTMODE is "require" but no client certificate is given \(sslcert and sslkey\)$/,
  ],
  [
    "an unknown sslcertmode",
    q("sslcertmode=always"),
    {},
    TypeError,
    /^The connection string parameter "sslcertmode" must be "disable", "allow" or "require", got "always"$/,
  ],
  [
    "sslsni other than 0 or 1",
    q("sslsni=yes"),
    {},
    TypeError,
    /^The connection string parameter "sslsni" must be "0" or "1", got "yes"$/,
  ],
  // TLS versions
  [
    "a minimum TLS version above the maximum, naming both",
    q("ssl_min_protocol_version=TLSv1.3&ssl_max_protocol_version=TLSv1.2"),
    {},
    RangeError,
    /^The connection string parameter "ssl_min_protocol_version" is "TLSv1\.3", above the connection string parameter "ssl_max_protocol_version" "TLSv1\.2"$/,
  ],
  [
    "PGSSLMINPROTOCOLVERSION above PGSSLMAXPROTOCOLVERSION",
    {},
    { PGSSLMINPROTOCOLVERSION: "TLSv1.2", PGSSLMAXPROTOCOLVERSION: "TLSv1.1" },
    RangeError,
    /^The environment variable PGSSLMINPROTOCOLVERSION is "TLSv1\.2", above the environment variable PGSSLMAXPROTOCOLVERSION "TLSv1\.1"$/,
  ],
  [
    "an unknown TLS version",
    q("ssl_max_protocol_version=TLSv1.4"),
    {},
    TypeError,
    /^The connection string parameter "ssl_max_protocol_version" must be "TLSv1", "TLSv1\.1", "TLSv1\.2" or "TLSv1\.3", got "TLSv1\.4"$/,
  ],
  [
    "min_protocol_version=3.2 (pg-iam speaks 3.0)",
    q("min_protocol_version=3.2"),
    {},
    TypeError,
    /^The connection string parameter "min_protocol_version" must be "3\.0", got "3\.2"$/,
  ],
  [
    "PGMINPROTOCOLVERSION=latest",
    {},
    { PGMINPROTOCOLVERSION: "latest" },
    TypeError,
    /^The environment variable PGMINPROTOCOLVERSION must be "3\.0", got "latest"$/,
  ],
  [
    "an unknown max_protocol_version",
    q("max_protocol_version=4"),
    {},
    TypeError,
    /^The connection string parameter "max_protocol_version" must be "3\.0", "3\.2" or "latest", got "4"$/,
  ],
  // what IAM authentication cannot work with
  [
    "sslmode=prefer with sslnegotiation=direct (libpq 17 refuses it too)",
    q("sslmode=prefer&sslnegotiation=direct"),
    {},
    TypeError,
    /^The connection string parameter "sslmode" is "prefer", which may not be combined with sslnegotiation=direct \(the connection string parameter "sslnegotiation"\): use "require", "verify-ca" or "verify-full"$/,
  ],
  [
    "PGSSLMODE=allow with PGSSLNEGOTIATION=direct",
    {},
    { PGSSLMODE: "allow", PGSSLNEGOTIATION: "direct" },
    TypeError,
    /^The environment variable PGSSLMODE is "allow", which may not be combined with sslnegotiation=direct \(the environment variable PGSSLNEGOTIATION\)/,
  ],
  [
    "sslmode=disable with sslnegotiation=direct, even opted out",
    { ...q("sslmode=disable&sslnegotiation=direct"), dangerouslyDisableTls: true },
    {},
    TypeError,
    /^The connection string parameter "sslmode" is "disable", which may not be combined with sslnegotiation=direct/,
  ],
  [
    "dangerouslyDisableTls with sslnegotiation=direct",
    { ...q("sslnegotiation=direct"), dangerouslyDisableTls: true },
    {},
    TypeError,
    /^dangerouslyDisableTls: true contradicts the connection string parameter "sslnegotiation" "direct" \(direct TLS\): choose one$/,
  ],
  [
    "an unknown sslnegotiation",
    q("sslnegotiation=requiredirect"),
    {},
    TypeError,
    /^The connection string parameter "sslnegotiation" must be "postgres" or "direct", got "requiredirect"$/,
  ],
  [
    "gssencmode=require",
    q("gssencmode=require"),
    {},
    TypeError,
    /^The connection string parameter "gssencmode" is "require": pg-iam encrypts with TLS, not GSSAPI; remove it$/,
  ],
  [
    "PGGSSENCMODE=require",
    {},
    { PGGSSENCMODE: "require" },
    TypeError,
    /^The environment variable PGGSSENCMODE is "require"/,
  ],
  [
    "an unknown gssencmode",
    q("gssencmode=always"),
    {},
    TypeError,
    /^The connection string parameter "gssencmode" must be "disable", "prefer" or "require", got "always"$/,
  ],
  [
    "channel_binding=require",
    q("channel_binding=require"),
    {},
    TypeError,
    /^The connection string parameter "channel_binding" is "require": channel binding is part of SCRAM/,
  ],
  [
    "PGCHANNELBINDING=require",
    {},
    { PGCHANNELBINDING: "require" },
    TypeError,
    /^The environment variable PGCHANNELBINDING is "require"/,
  ],
  [
    "require_auth without password",
    q("require_auth=scram-sha-256"),
    {},
    TypeError,
    /^The connection string parameter "require_auth" is "scram-sha-256", which forbids the cleartext password exchange IAM tokens are sent with \(over TLS\): allow "password" or remove it$/,
  ],
  [
    "require_auth=!password",
    q("require_auth=!password"),
    {},
    TypeError,
    /^The connection string parameter "require_auth" is "!password", which forbids/,
  ],
  [
    "require_auth=!md5,!password",
    q("require_auth=!md5,!password"),
    {},
    TypeError,
    /is "!md5,!password", which forbids/,
  ],
  [
    "PGREQUIREAUTH without password",
    {},
    { PGREQUIREAUTH: "md5" },
    TypeError,
    /^The environment variable PGREQUIREAUTH is "md5", which forbids/,
  ],
  // password and Kerberos logins, in a connection string
  [
    "password in a connection string",
    q("password=pw"),
    {},
    TypeError,
    /^The connection string parameter "password" is a password, which cannot be combined with IAM authentication: pg-iam signs a token for every connection \(remove the password\)$/,
  ],
  [
    "a password in a URL",
    { url: `postgres://app:pw@${HOST}/app` },
    {},
    TypeError,
    /^The connection string has a password, which cannot be combined with IAM authentication/,
  ],
  [
    "passfile in a connection string",
    q("passfile=/pgpass"),
    {},
    TypeError,
    /^The connection string parameter "passfile" \(passfile\) is for password or Kerberos logins, which IAM authentication replaces: remove it$/,
  ],
  [
    "krbsrvname in a connection string",
    q("krbsrvname=postgres"),
    {},
    TypeError,
    /^The connection string parameter "krbsrvname" \(krbsrvname\) is for password or Kerberos logins/,
  ],
  [
    "gsslib in a connection string",
    { url: "host=db.example.com gsslib=gssapi" },
    {},
    TypeError,
    /"gsslib" \(gsslib\) is for password or Kerberos logins/,
  ],
  [
    "service in a connection string",
    q("service=prod"),
    {},
    TypeError,
    /^The connection string parameter "service" \(service\) names an entry of a connection service file \(pg_service\.conf\), which pg-iam does not read: remove it$/,
  ],
  [
    "oauth_client_secret in a connection string (PostgreSQL 18), not forwarded as an extra",
    q("oauth_client_secret=abc"),
    {},
    TypeError,
    /^The connection string parameter "oauth_client_secret" \(oauth_client_secret\) is for OAuth logins, which IAM authentication replaces: remove it$/,
  ],
  // what the runtimes cannot do
  [
    "keepalives_interval",
    q("keepalives_interval=10"),
    {},
    TypeError,
    /^The connection string parameter "keepalives_interval" \(keepalives_interval\) is not supported by pg-iam: the JavaScript runtimes set only the idle time; remove it$/,
  ],
  [
    "keepalives_count",
    q("keepalives_count=3"),
    {},
    TypeError,
    /"keepalives_count" \(keepalives_count\) is not supported by pg-iam: the JavaScript runtimes set only the idle time/,
  ],
  [
    "tcp_user_timeout",
    q("tcp_user_timeout=1000"),
    {},
    TypeError,
    /"tcp_user_timeout" \(tcp_user_timeout\) is not supported by pg-iam: the JavaScript runtimes cannot set it/,
  ],
  [
    "requirepeer",
    q("requirepeer=postgres"),
    {},
    TypeError,
    /"requirepeer" \(requirepeer\) is not supported by pg-iam: it is for unix sockets/,
  ],
  [
    "PGREQUIREPEER",
    {},
    { PGREQUIREPEER: "postgres" },
    TypeError,
    /^The environment variable PGREQUIREPEER \(requirepeer\) is not supported by pg-iam/,
  ],
  [
    "sslcrldir",
    q("sslcrldir=/crls"),
    {},
    TypeError,
    /^The connection string parameter "sslcrldir" \(sslcrldir\) is not supported by pg-iam: only a single CRL file \(sslcrl\) can be loaded; remove it$/,
  ],
  [
    "PGSSLCRLDIR",
    {},
    { PGSSLCRLDIR: "/crls" },
    TypeError,
    /^The environment variable PGSSLCRLDIR \(sslcrldir\) is not supported by pg-iam/,
  ],
  // checked although without effect
  [
    "sslcompression other than 0 or 1",
    q("sslcompression=2"),
    {},
    TypeError,
    /^The connection string parameter "sslcompression" must be "0" or "1", got "2"$/,
  ],
  [
    "an unknown load_balance_hosts",
    {},
    { PGLOADBALANCEHOSTS: "roundrobin" },
    TypeError,
    /^The environment variable PGLOADBALANCEHOSTS must be "disable" or "random", got "roundrobin"$/,
  ],
  // pg-iam's own parameters
  [
    "an unknown iam_* parameter, listing the known ones",
    q("iam_regoin=us-east-1"),
    {},
    TypeError,
    /^Unknown connection string parameter "iam_regoin"; pg-iam knows iam_region, iam_host, iam_port, iam_expiration, iam_expires_in, iam_service, iam_admin, iam_profile, iam_token_reuse$/,
  ],
  [
    "an iam_port that is not a number",
    q("iam_port=abc"),
    {},
    RangeError,
    /^The connection string parameter "iam_port" must be a whole number, got "abc"$/,
  ],
  [
    "a negative iam_expiration",
    q("iam_expiration=-5"),
    {},
    RangeError,
    /^The connection string parameter "iam_expiration" must be a whole number, got "-5"$/,
  ],
  [
    "an iam_admin other than true or false",
    q("iam_admin=yes"),
    {},
    TypeError,
    /^The connection string parameter "iam_admin" must be true or false, got "yes"$/,
  ],
  // ports from every source
  [
    "PGPORT=0",
    {},
    { PGPORT: "0" },
    RangeError,
    /^The environment variable PGPORT must be a port from 1 to 65535, got "0"$/,
  ],
  [
    "an explicit port of 0",
    { explicit: { port: 0 } },
    {},
    RangeError,
    /^The "port" option must be a port from 1 to 65535, got "0"$/,
  ],
  [
    "an explicit port, named as the CLI names it",
    { explicit: { port: "http" }, explicitName: (key) => `--${key}` },
    {},
    RangeError,
    /^--port must be a port from 1 to 65535, got "http"$/,
  ],
  // several hosts, unix sockets
  [
    "several hosts in a URL",
    { url: "postgres://h1.example.com,h2.example.com/app" },
    {},
    TypeError,
    /^The connection string names several hosts \("h1\.example\.com,h2\.example\.com"\): pg-iam connects to one host \(its token and certificate name are for that host\); make one client per host$/,
  ],
  [
    "several hosts with ports in a URL",
    { url: "postgres://app@h1:5432,h2:5433/app" },
    {},
    TypeError,
    /^The connection string names several hosts \("h1:5432,h2:5433"\)/,
  ],
  [
    "several hosts in PGHOST",
    {},
    { PGHOST: "h1.example.com,h2.example.com" },
    TypeError,
    /^The environment variable PGHOST names several hosts \("h1\.example\.com,h2\.example\.com"\): pg-iam connects to one host/,
  ],
  [
    "several hosts in a host parameter",
    { url: "host=h1,h2 dbname=app" },
    {},
    TypeError,
    /^The connection string parameter "host" names several hosts \("h1,h2"\)/,
  ],
  [
    "several addresses in PGHOSTADDR",
    {},
    { PGHOSTADDR: "10.0.0.1,10.0.0.2" },
    TypeError,
    /^The environment variable PGHOSTADDR names several hosts \("10\.0\.0\.1,10\.0\.0\.2"\)/,
  ],
  [
    "a unix socket as a URL's host",
    { url: "postgres://%2Fvar%2Frun%2Fpostgresql/app" },
    {},
    TypeError,
    /^The connection string's host is the unix socket "\/var\/run\/postgresql": IAM tokens are for RDS and DSQL endpoints \(or a local gateway on a TCP port\), reached over TCP$/,
  ],
  [
    "a unix socket as a URL's host parameter",
    { url: "postgres:///app?host=/tmp" },
    {},
    TypeError,
    /^The connection string parameter "host" is the unix socket "\/tmp"/,
  ],
  [
    "a unix socket in PGHOST",
    {},
    { PGHOST: "/var/run/postgresql" },
    TypeError,
    /^The environment variable PGHOST is the unix socket "\/var\/run\/postgresql"/,
  ],
  [
    "an abstract unix socket in libpq syntax",
    { url: "host=@pg dbname=app" },
    {},
    TypeError,
    /^The connection string parameter "host" is the unix socket "@pg"/,
  ],
  [
    "an explicit unix socket",
    { explicit: { host: "/tmp" } },
    {},
    TypeError,
    /^The "host" option is the unix socket "\/tmp"/,
  ],
];

for (const [what, input, env, type, message] of REFUSED) {
  test(`parseTarget() refuses ${what} with a ${type.name}`, async () => {
    await assertRejects(input, env, type, message);
  });
}

// ---- passwords never appear in an error ----

const SECRET = "s3cr3tPa55";
const WITH_PASSWORD: string[] = [
  `postgres://app:${SECRET}@${HOST}/app`,
  `postgres://app:${SECRET}@${HOST}/app?sslmode=prefer`,
  `postgres://app:${SECRET}%zz@${HOST}/app`,
  `postgres://app:${SECRET}@h1,h2/app`,
  `postgres://app:${SECRET}@${HOST}:bad/app`,
  // "/", "?", "#" and "," unencoded in a password: the authority seems to end early
  `postgres://app:${SECRET}/K7MDENG+x@${HOST}/app`,
  `postgres://app:${SECRET}?x@${HOST}/app`,
  `postgres://app:${SECRET}#x@${HOST}/app`,
  `postgres://app:x,${SECRET}/y@${HOST}/app`,
  `postgres://${HOST}/app?password=${SECRET}`,
  `postgres://${HOST}/app?sslmode=prefer&password=${SECRET}`,
  `postgres://${HOST}/app?sslpassword=${SECRET}&sslmode=prefer`,
  `mysql://app:${SECRET}@${HOST}/app`,
  `host=${HOST} password=${SECRET}`,
  `password=${SECRET} host=${HOST} sslmode=prefer`,
  `host=${HOST} password='my ${SECRET}`,
  `host=${HOST} password='${SECRET}'trailing`,
  `host=${HOST} password=my ${SECRET}`,
  `host=${HOST} password=${SECRET}'x`,
  `host=${HOST} sslpassword='${SECRET}`,
  `host=${HOST} sslpassword=my ${SECRET} sslmode=prefer`,
];

for (const url of WITH_PASSWORD) {
  test(`parseTarget() keeps the password out of its error for ${JSON.stringify(url)}`, async () => {
    const error = await failure({ url }, { PGPASSWORD: SECRET });
    assert.ok(error instanceof TypeError || error instanceof RangeError, String(error));
    assert.ok(!error.message.includes("s3cr3t"), error.message);
    assert.ok(!error.message.includes("K7MDENG"), error.message);
  });
}

test("KNOWN_PARAMS lists pg-iam's and libpq's parameters once each", () => {
  for (const name of ["iam_region", "iam_host", "iam_admin", "host", "sslmode", "sslrootcert"]) {
    assert.ok(KNOWN_PARAMS.includes(name), name);
  }
  assert.equal(new Set(KNOWN_PARAMS).size, KNOWN_PARAMS.length);
  assert.ok(!KNOWN_PARAMS.includes("ssl") && !KNOWN_PARAMS.includes("max"));
});

// ---- tlsPlan ----

const NAME = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";

/** The TLS settings of a URL to NAME with `query` (and only `env` set). */
async function ssl(query: string, env: Env = {}): Promise<TlsSettings> {
  return (await target({ url: `postgres://${NAME}/app?${query}` }, env)).ssl;
}

/** Runs `fn` with `files` written to a new temporary directory, then removes it. */
async function withFiles<T>(
  files: Record<string, string>,
  fn: (path: (name: string) => string) => T | Promise<T>,
): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), "pg-iam-target-"));
  try {
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    return await fn((name) => join(dir, name));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function plan(...args: Parameters<typeof tlsPlan>): TlsPlan {
  const p = tlsPlan(...args);
  assert.ok(p, "expected a TLS plan");
  return p;
}

test("tlsPlan() is undefined for sslmode=disable", async () => {
  const settings = (await target({ url: `postgres://${NAME}/app`, dangerouslyDisableTls: true }))
    .ssl;
  assert.equal(tlsPlan(settings, "rds", NAME), undefined);
});

test("tlsPlan() for verify-full on RDS checks the name against the RDS CA bundle", async () => {
  const p = plan(await ssl(""), "rds", NAME);
  assert.equal(p.mode, "verify-full");
  assert.equal(p.name, NAME);
  assert.equal(p.options.host, NAME);
  assert.equal(p.options.servername, NAME);
  assert.equal(p.options.rejectUnauthorized, true);
  assert.equal(p.options.checkServerIdentity, undefined);
  // The bundle is imported at the first connection (withRdsCa), not with pg-iam.
  assert.equal(p.rdsCa, true);
  assert.equal(p.options.ca, undefined);
  await withRdsCa(p);
  const RDS_CA = await rdsCa();
  assert.deepEqual(p.options.ca, [...RDS_CA]);
  assert.ok(RDS_CA.length > 0 && RDS_CA.every((c) => c.includes("BEGIN CERTIFICATE")));
  assert.match(p.trust, /^the RDS CA bundle/);
  assert.match(p.otherCa, /sslrootcert=<file>.*PGSSLROOTCERT/);
});

test("tlsPlan() offers ALPN postgresql with sslnegotiation=direct only", async () => {
  const direct = plan(await ssl("sslnegotiation=direct"), "rds", NAME);
  assert.equal(direct.direct, true);
  assert.deepEqual(direct.options.ALPNProtocols, ["postgresql"]);
  const negotiated = plan(await ssl(""), "rds", NAME);
  assert.equal(negotiated.direct, false);
  assert.equal(negotiated.options.ALPNProtocols, undefined);
});

test("tlsPlan() for verify-full on DSQL trusts the system's roots (no ca)", async () => {
  const name = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
  const p = plan(await ssl(""), "dsql", name);
  assert.equal(p.rdsCa, false);
  await withRdsCa(p);
  assert.equal(p.options.ca, undefined);
  assert.equal(p.options.servername, name);
  assert.equal(p.name, name);
  assert.equal(p.trust, "the system's root CAs (pg-iam's default for Aurora DSQL)");
});

for (const ip of ["127.0.0.1", "::1", "::ffff:127.0.0.1", "fe80::1%lo0"]) {
  test(`tlsPlan() sends no SNI servername for the IP address ${ip}`, async () => {
    const p = plan(await ssl(""), "rds", ip);
    assert.equal(p.options.servername, undefined);
    assert.equal(p.options.host, ip);
    assert.equal(p.name, ip);
  });
}

test("tlsPlan() sends SNI for names that only look like addresses, as for any name", async () => {
  for (const name of ["1.2.3", "10.0.0.256", "0x7f.1", "db.example.com"]) {
    assert.equal(plan(await ssl(""), "rds", name).options.servername, name);
  }
});

test("tlsPlan() with sslsni=0 sends no servername but keeps the host", async () => {
  const p = plan(await ssl("sslsni=0"), "rds", NAME);
  assert.equal(p.options.servername, undefined);
  assert.equal(p.options.host, NAME);
  assert.equal(p.name, NAME);
});

test("tlsPlan() with sslrootcert reads the file and names it and its source in trust", async () => {
  await withFiles({ "ca.pem": FIXTURE_CA }, async (path) => {
    const p = plan(await ssl(`sslrootcert=${encodeURIComponent(path("ca.pem"))}`), "rds", NAME);
    assert.equal(p.options.ca, FIXTURE_CA);
    assert.equal(
      p.trust,
      `the CA file ${
        JSON.stringify(path("ca.pem"))
      } (the connection string parameter "sslrootcert")`,
    );
    assert.equal(p.mode, "verify-full");
  });
});

test("tlsPlan() names PGSSLROOTCERT as the source of the CA file", async () => {
  await withFiles({ "ca.pem": FIXTURE_CA }, async (path) => {
    const p = plan(await ssl("", { PGSSLROOTCERT: path("ca.pem") }), "dsql", NAME);
    assert.equal(p.options.ca, FIXTURE_CA);
    assert.match(p.trust, /\(the environment variable PGSSLROOTCERT\)$/);
  });
});

test("tlsPlan() refuses a missing sslrootcert file with a TypeError naming file and parameter", async () => {
  await withFiles({}, async (path) => {
    const missing = path("missing.pem");
    const settings = await ssl(`sslrootcert=${encodeURIComponent(missing)}`);
    assert.throws(() => tlsPlan(settings, "rds", NAME), (error: Error) => {
      assert.equal(error.constructor, TypeError);
      assert.ok(
        error.message.startsWith(
          `Cannot read the sslrootcert file ${
            JSON.stringify(missing)
          } (the connection string parameter "sslrootcert"): `,
        ),
        error.message,
      );
      assert.ok(error.cause instanceof Error);
      return true;
    });
  });
});

test("tlsPlan() with sslrootcert=system sets no ca and says so in trust", async () => {
  const p = plan(await ssl("sslrootcert=system"), "rds", NAME);
  assert.equal(p.options.ca, undefined);
  assert.equal(p.trust, "the system's root CAs (sslrootcert=system)");
  assert.equal(p.name, NAME);
});

test("tlsPlan() for verify-ca checks the chain but not the name", async () => {
  const p = plan(await ssl("sslmode=verify-ca"), "rds", NAME);
  assert.equal(p.mode, "verify-ca");
  assert.equal(p.name, undefined);
  assert.equal(p.options.rejectUnauthorized, true);
  assert.equal(typeof p.options.checkServerIdentity, "function");
  assert.equal(p.options.checkServerIdentity!("other.example.com", {} as never), undefined);
  await withRdsCa(p);
  assert.deepEqual(p.options.ca, [...await rdsCa()]);
});

test("tlsPlan() for require plus a root certificate verifies the chain (verify-ca)", async () => {
  await withFiles({ "ca.pem": FIXTURE_CA }, async (path) => {
    const p = plan(
      await ssl(`sslmode=require&sslrootcert=${encodeURIComponent(path("ca.pem"))}`),
      "rds",
      NAME,
    );
    assert.equal(p.mode, "verify-ca");
    assert.equal(p.options.rejectUnauthorized, true);
    assert.equal(typeof p.options.checkServerIdentity, "function");
  });
});

test("tlsPlan() for require accepts any certificate (rejectUnauthorized false)", async () => {
  const p = plan(await ssl("sslmode=require"), "rds", NAME);
  assert.equal(p.mode, "require");
  assert.equal(p.options.rejectUnauthorized, false);
  assert.equal(p.name, undefined);
  assert.equal(p.options.servername, NAME);
});

test("tlsPlan() copies the client certificate, key, passphrase, CRL and TLS versions", async () => {
  const files = { "c.pem": FIXTURE_CERT, "k.pem": FIXTURE_KEY, "crl.pem": "a CRL" };
  await withFiles(files, async (path) => {
    const p = plan(
      await ssl(
        `sslcert=${encodeURIComponent(path("c.pem"))}&sslkey=${
          encodeURIComponent(path("k.pem"))
        }&sslpassword=pass&sslcrl=${encodeURIComponent(path("crl.pem"))}` +
          "&ssl_min_protocol_version=TLSv1.2&ssl_max_protocol_version=TLSv1.3",
      ),
      "rds",
      NAME,
    );
    assert.equal(p.options.cert, FIXTURE_CERT);
    assert.equal(p.options.key, FIXTURE_KEY);
    assert.equal(p.options.passphrase, "pass");
    assert.equal(p.options.crl, "a CRL");
    assert.equal(p.options.minVersion, "TLSv1.2");
    assert.equal(p.options.maxVersion, "TLSv1.3");
  });
});

test("tlsPlan() sets no passphrase, cert or key without a client certificate", async () => {
  const p = plan(await ssl("sslpassword=pass"), "rds", NAME);
  assert.equal(p.options.passphrase, undefined);
  assert.equal(p.options.cert, undefined);
  assert.equal(p.options.key, undefined);
  assert.equal(p.options.minVersion, undefined);
});

test("tlsPlan() refuses a missing sslkey file, naming it and PGSSLKEY", async () => {
  await withFiles({ "c.pem": FIXTURE_CERT }, async (path) => {
    const settings = await ssl("", { PGSSLCERT: path("c.pem"), PGSSLKEY: path("k.pem") });
    assert.throws(
      () => tlsPlan(settings, "rds", NAME),
      (error: Error) =>
        error.constructor === TypeError &&
        error.message.startsWith(
          `Cannot read the sslkey file ${
            JSON.stringify(path("k.pem"))
          } (the environment variable PGSSLKEY): `,
        ),
    );
  });
});

test("tlsPlan() lets an override win over its own options", async () => {
  const p = plan(await ssl(""), "rds", NAME, {
    rejectUnauthorized: false,
    servername: "override.example.com",
  });
  assert.equal(p.options.rejectUnauthorized, false);
  assert.equal(p.options.servername, "override.example.com");
  await withRdsCa(p);
  assert.deepEqual(p.options.ca, [...await rdsCa()]);
  assert.match(p.trust, /^the RDS CA bundle/);
});

test("tlsPlan() with an override ca trusts it and says so in trust", async () => {
  const p = plan(await ssl("sslrootcert=system"), "rds", NAME, { ca: FIXTURE_CA });
  assert.equal(p.options.ca, FIXTURE_CA);
  // Over the RDS CA bundle too, even as an explicit undefined (the system's roots), as before.
  const over = plan(await ssl(""), "rds", NAME, { ca: FIXTURE_CA });
  await withRdsCa(over);
  assert.equal(over.options.ca, FIXTURE_CA);
  const none = plan(await ssl(""), "rds", NAME, { ca: undefined });
  await withRdsCa(none);
  assert.equal(none.options.ca, undefined);
  assert.equal(p.trust, "the CA certificates of the ssl option (ssl.ca)");
});

// ---- tlsError ----

function tlsFailure(code: string | undefined, message: string): Error & { code?: string } {
  return Object.assign(new Error(message), code === undefined ? {} : { code });
}

test("tlsError() for a name mismatch suggests signingHostname", async () => {
  const p = plan(await ssl(""), "rds", "localhost");
  const cause = tlsFailure(
    "ERR_TLS_CERT_ALTNAME_INVALID",
    "Hostname/IP does not match certificate's altnames: Host: localhost. is not in the cert's altnames",
  );
  const error = tlsError(cause, p, "127.0.0.1", 5432) as Error & { code?: string };
  assert.match(
    error.message,
    /^pg-iam: TLS with 127\.0\.0\.1:5432 failed \(ERR_TLS_CERT_ALTNAME_INVALID\): the certificate is not for the name "localhost"\./,
  );
  assert.match(error.message, /Set signingHostname to the endpoint name/);
  assert.equal(error.code, "ERR_TLS_CERT_ALTNAME_INVALID");
  assert.equal(error.cause, cause);
});

for (
  const [code, message] of [
    ["UNABLE_TO_VERIFY_LEAF_SIGNATURE", "unable to verify the first certificate"],
    ["SELF_SIGNED_CERT_IN_CHAIN", "self-signed certificate in certificate chain"],
  ]
) {
  test(`tlsError() for ${code} names the CA source and sslrootcert, not signingHostname`, async () => {
    await withFiles({ "ca.pem": FIXTURE_CA }, async (path) => {
      const p = plan(await ssl(`sslrootcert=${encodeURIComponent(path("ca.pem"))}`), "rds", NAME);
      const error = tlsError(tlsFailure(code, message), p, NAME, 5432) as Error & {
        code?: string;
      };
      assert.ok(error.message.includes(p.trust), error.message);
      assert.ok(error.message.includes(JSON.stringify(path("ca.pem"))), error.message);
      assert.match(error.message, /sslrootcert=<file>/);
      assert.match(error.message, new RegExp(`failed \\(${code}\\): the certificate chain`));
      assert.doesNotMatch(error.message, /signingHostname/);
      assert.equal(error.code, code);
    });
  });
}

test("tlsError() for an untrusted chain on RDS names the RDS CA bundle", async () => {
  const p = plan(await ssl(""), "rds", NAME);
  const error = tlsError(
    tlsFailure("UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "unable to get local issuer certificate"),
    p,
    NAME,
    5432,
  );
  assert.match(error.message, /does not lead to a CA in the RDS CA bundle/);
  assert.doesNotMatch(error.message, /signingHostname/);
});

test("tlsError() for an expired certificate speaks of validity, not signingHostname", async () => {
  const p = plan(await ssl(""), "rds", NAME);
  const error = tlsError(tlsFailure("CERT_HAS_EXPIRED", "certificate has expired"), p, NAME, 5432);
  assert.match(error.message, /outside its validity period .* checked against the RDS CA bundle/);
  assert.doesNotMatch(error.message, /signingHostname/);
});

test("tlsError() for another failure names the trust and the name checked; a dropped connection is said as such", async () => {
  const p = plan(await ssl(""), "rds", NAME);
  const error = tlsError(tlsFailure(undefined, "wrong version number"), p, NAME, 6543) as Error & {
    code?: string;
  };
  assert.equal(
    error.message,
    `pg-iam: TLS with ${NAME}:6543 failed (wrong version number): the certificate was checked ` +
      `against ${p.trust} for the name ${JSON.stringify(NAME)}`,
  );
  assert.equal(error.code, "TLS");
  // A connection dropped mid-handshake is said as such, not as a certificate check.
  const dropped = tlsError(tlsFailure(undefined, "socket hang up"), p, NAME, 6543);
  assert.match(dropped.message, /dropped during the TLS handshake, before any certificate/);
  const reset = tlsError(tlsFailure("ECONNRESET", "read ECONNRESET"), p, NAME, 6543);
  assert.match(reset.message, /dropped during the TLS handshake/);
  assert.equal((reset as { code?: string }).code, "ECONNRESET");
});

test("tlsPlan() for an RDS Proxy endpoint trusts the Amazon roots its certificates chain to, in the default bundle", async () => {
  const { X509Certificate } = await import("node:crypto");
  const RDS_CA = await rdsCa();
  const names = RDS_CA.map((pem) => new X509Certificate(pem).subject);
  // RDS Proxy serves ACM certificates (Amazon Root CA 1-4, Starfield G2), not the RDS CA's.
  for (
    const root of ["Amazon Root CA 1", "Amazon Root CA 2", "Amazon Root CA 3", "Amazon Root CA 4"]
  ) {
    assert.ok(names.some((n) => n.includes(`CN=${root}`)), root);
  }
  // The control: the bundle is the RDS one too (its regional roots), so the check can tell.
  assert.ok(names.some((n) => n.includes("CN=Amazon RDS us-east-1 Root CA")));
  const host = "my-proxy.proxy-c9akciq32.us-east-1.rds.amazonaws.com";
  const t = await target({ url: `postgres://app@${host}/db` });
  const proxyPlan = tlsPlan(t.ssl, "rds", host);
  assert.equal(proxyPlan!.options.servername, host);
  await withRdsCa(proxyPlan!);
  assert.deepEqual(proxyPlan!.options.ca, [...RDS_CA]);
});
