// pg-iam proxy: the local proxy (./proxy) as a command. Any PostgreSQL client connects to it with no
// password; each connection is logged in upstream with IAM by the connection layer.

import { readFileSync } from "node:fs";
import process from "node:process";
import { readEnv } from "../core/env.ts";
import { parseHostname } from "../core/hostname.ts";
import { DSQL_MAX_EXPIRES_IN, RDS_MAX_EXPIRES_IN } from "../core/signing.ts";
import { type ConnectionTarget, KNOWN_PARAMS, parseTarget } from "../connection/target.ts";
import {
  type Proxy,
  type ProxyLogin,
  type ProxyOptions,
  type ProxySessionEnd,
  startProxy,
} from "../proxy/mod.ts";
import { type Command, type Flag, int, type Parsed, str, UsageError } from "./_args.ts";
import {
  DETAIL_MAX,
  jsonLine,
  listenAddress,
  NAME_MAX,
  onSignals,
  printable,
  type Signal,
} from "./_serve.ts";
import { lower, TARGET_FLAGS } from "./_target.ts";

/** The target flags, as the proxy reads them: the user and database are each client's by default. */
export const PROXY_TARGET_FLAGS: Record<string, Flag> = {
  ...TARGET_FLAGS,
  username: {
    ...TARGET_FLAGS.username,
    help: "Log every client in upstream as USER. Default: the URL's, else PGUSER, else each " +
      "client's own.",
  },
  database: {
    ...TARGET_FLAGS.database,
    help: "Connect every client to DB. Default: the URL's, else PGDATABASE, else each client's " +
      "own.",
  },
};

/** The `proxy` subcommand. */
export const command: Command = {
  name: "proxy",
  summary: "Run a local proxy that logs every client in with IAM.",
  usage: "[URL] [options]",
  description: `
Listens on 127.0.0.1 (or a Unix socket directory) and logs each client connection in to the target
with IAM: a token per upstream connection (reused while young), TLS verified as the target says,
then the bytes flow both ways unchanged. psql, GUI tools, migration tools, MCP servers and programs
in any language connect with no password. URL is postgres://[user@]host:port/[db] with libpq
parameters and pg-iam's iam_* ones; without a user or database there, each client's own go
upstream. Another address than loopback needs --allow-remote and a password clients must give
(--password-file, or PGIAM_PROXY_PASSWORD). SIGINT or SIGTERM stops it gracefully: no new
connections, open sessions get --shutdown-timeout to finish; a second signal closes them at once.
The ready line goes to stdout, each login and close to stderr (--json: JSON lines on stdout).`,
  flags: {
    ...PROXY_TARGET_FLAGS,
    listen: {
      type: "string",
      arg: "[HOST:]PORT",
      help: "Where to listen. Default: 127.0.0.1:5432 (port 0: any free port).",
    },
    "unix-socket": {
      type: "string",
      arg: "DIR",
      help: "Listen on DIR/.s.PGSQL.PORT instead, as libpq names it (PORT: --listen's, else " +
        "5432); DIR is created owner-only, the socket made owner-only.",
    },
    "allow-remote": {
      type: "boolean",
      help: "Allow an address other than loopback in --listen (needs a password).",
    },
    "password-file": {
      type: "string",
      arg: "FILE",
      help: "The password clients must give the proxy (SCRAM-SHA-256), read from FILE's first " +
        "line. Default: PGIAM_PROXY_PASSWORD, else none (loopback and Unix sockets only).",
    },
    "tls-cert": {
      type: "string",
      arg: "FILE",
      help: "The proxy's certificate (PEM), for clients that ask for TLS. Default: no TLS.",
    },
    "tls-key": { type: "string", arg: "FILE", help: "Its private key (PEM)." },
    "max-connections": {
      type: "string",
      arg: "N",
      help: "Sessions at most; one more is refused as PostgreSQL refuses it (53300). Default: 100.",
    },
    "connect-timeout": {
      type: "string",
      arg: "SECONDS",
      help: "Each upstream login's limit. Default: the URL's connect_timeout, else 30.",
    },
    "shutdown-timeout": {
      type: "string",
      arg: "SECONDS",
      help: "On SIGINT or SIGTERM, how long open sessions may take to finish. Default: 30.",
    },
    http: {
      type: "string",
      arg: "[HOST:]PORT",
      help:
        "Serve GET /livez, /readyz (503 once stopping) and /metrics (Prometheus) on PORT, for " +
        "running it as a sidecar. HOST default: 127.0.0.1 (no data or secret is served there). " +
        "Default: none.",
    },
    json: {
      type: "boolean",
      help: "Print the ready line, each login and close, and the stop as JSON lines on stdout.",
    },
    quiet: { type: "boolean", help: "Do not print each login and close." },
  },
  positionals: 1,
  examples: [
    "pg-iam proxy postgres://db.cluster-c9akciq32.us-east-1.rds.amazonaws.com",
    `psql "host=127.0.0.1 user=app dbname=orders"`,
    "pg-iam proxy postgres://admin@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres \\",
    "  --listen 15432 --json",
    "pg-iam proxy postgres://app@db.c9akciq32.us-east-1.rds.amazonaws.com/app \\",
    "  --unix-socket /tmp/pg-iam",
  ],
};

/** The proxy's target from the command line, and what it says, for the ready line and exec. */
export interface ProxyTarget {
  options: ProxyOptions;
  /** The target as libpq reads it (the PG* variables included). */
  parsed: ConnectionTarget;
  host: string;
  port: number;
  /** Whether it signs for Aurora DSQL. */
  dsql: boolean;
}

/**
 * The target of `proxy` and `exec`, from the URL and the target flags (flags win over the URL,
 * the URL over the PG* variables), checked up front so that bad usage fails before listening.
 */
export function proxyTarget(
  url: string | undefined,
  v: Parsed["values"],
  name: string,
): ProxyTarget {
  const flag = (key: string) => str(v, key);
  const usage = (text: string) => new UsageError(text, name);
  // A positional without a scheme or "=" is a host name, as `psql -h` takes one.
  const bare = url !== undefined && !url.includes("://") && !/^\s*[A-Za-z_]+\s*=/.test(url);
  const host = flag("hostname") ?? (bare ? url : undefined);
  const port = int(v, "port", 1, 65535, name);
  const rootcert = flag("sslrootcert");
  let connectionString = bare ? undefined : url;
  // The only TLS file the proxy's options do not take: as a connection parameter, after (so
  // over) the URL's own.
  if (rootcert !== undefined) {
    const quoted = `'${rootcert.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
    connectionString = connectionString === undefined
      ? `sslrootcert=${quoted}`
      : /^\s*postgres(?:ql)?:\/\//i.test(connectionString)
      ? `${connectionString}${connectionString.includes("?") ? "&" : "?"}sslrootcert=${
        encodeURIComponent(rootcert)
      }`
      : `${connectionString} sslrootcert=${quoted}`;
  }
  let parsed: ConnectionTarget;
  try {
    parsed = parseTarget({
      url: connectionString,
      explicit: {
        host,
        port,
        user: flag("username"),
        database: flag("database"),
        sslmode: flag("sslmode"),
      },
      explicitName: (key) => `--${key === "host" ? "hostname" : key === "user" ? "username" : key}`,
      dangerouslyDisableTls: v["dangerously-disable-tls"] === true,
      optOutName: "--dangerously-disable-tls",
    });
  } catch (error) {
    if (error instanceof TypeError || error instanceof RangeError) {
      throw usage(lower(error.message));
    }
    throw error;
  }
  const unknown = Object.keys(parsed.extraParams);
  if (unknown.length) {
    throw usage(
      `unknown connection URL parameter ${JSON.stringify(unknown[0])} (pg-iam reads ` +
        `${KNOWN_PARAMS.join(", ")})`,
    );
  }
  const target = parsed.host ?? parsed.hostaddr;
  if (target === undefined) {
    throw usage(
      `no host was given: pass a connection URL (postgres://host/db), --hostname HOST, or set ` +
        `PGHOST`,
    );
  }
  const signingPort = int(v, "signing-port", 1, 65535, name);
  const signingHostname = flag("signing-hostname");
  const dsql = v.dsql === true || parsed.iam.service === "dsql" ||
    parseHostname(signingHostname ?? parsed.iam.signingHostname ?? target)?.service === "dsql";
  // Checked now, not at the first client's login (where the proxy signs its first token).
  const max = dsql ? DSQL_MAX_EXPIRES_IN : RDS_MAX_EXPIRES_IN;
  const expiresIn = int(v, "expires-in", 1, max, name);
  const urlExpiresIn = parsed.iam.expiresIn;
  if (typeof urlExpiresIn === "number" && !(urlExpiresIn >= 1 && urlExpiresIn <= max)) {
    throw usage(
      `${parsed.iamParams?.expiresIn ?? "iam_expires_in"} must be from 1 to ${max} seconds ` +
        `for ${dsql ? "Aurora DSQL" : "RDS"}, got ${urlExpiresIn}`,
    );
  }
  const options: ProxyOptions = {
    ...(connectionString === undefined ? {} : { connectionString }),
    ...(host === undefined ? {} : { host }),
    ...(port === undefined ? {} : { port }),
    ...(flag("username") === undefined ? {} : { user: flag("username") }),
    ...(flag("database") === undefined ? {} : { database: flag("database") }),
    ...(flag("sslmode") === undefined ? {} : { ssl: flag("sslmode") as ProxyOptions["ssl"] }),
    ...(v["dangerously-disable-tls"] === true ? { dangerouslyDisableTls: true } : {}),
    ...(flag("region") === undefined ? {} : { region: flag("region") }),
    ...(flag("profile") === undefined ? {} : { profile: flag("profile") }),
    ...(expiresIn === undefined ? {} : { expiresIn }),
    ...(signingHostname === undefined ? {} : { signingHostname }),
    ...(signingPort === undefined ? {} : { signingPort }),
    ...(v.dsql === true ? { service: "dsql" as const } : {}),
    ...(v.admin === true ? { admin: true } : {}),
  };
  return { options, parsed, host: target, port: parsed.port ?? 5432, dsql };
}

/** `host:port`, an IPv6 address in brackets. */
function hostPort(host: string, port: number): string {
  return `${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** Whether `host` is a loopback address or name (127.0.0.0/8, ::1, localhost). */
function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) ||
    /^::ffff:127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Reads a PEM file named by a flag; a UsageError naming the flag if it cannot. */
function readFlagFile(file: string, flag: string, name: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (error) {
    throw new UsageError(
      `cannot read ${flag} ${JSON.stringify(file)}: ${(error as Error).message}`,
      name,
    );
  }
}

/** Timings to a tenth of a millisecond: a log line needs no more. */
function rounded(timings: ProxyLogin["timings"]): Record<string, number> | undefined {
  if (timings === undefined) return undefined;
  return Object.fromEntries(
    Object.entries(timings).map(([k, ms]) => [k, Math.round(ms * 10) / 10]),
  );
}

/** What a log shows of a login: never the error object (its stack, its causes). */
export function loginEvent(login: ProxyLogin): Record<string, unknown> {
  return {
    event: "login",
    ok: login.ok,
    client: login.client,
    user: login.user,
    database: login.database,
    attempts: login.attempts,
    ...(login.timings ? { timings: rounded(login.timings) } : {}),
    ...(login.step ? { step: login.step } : {}),
    ...(login.code ? { code: login.code } : {}),
    ...(login.message ? { message: login.message } : {}),
  };
}

/** A login as one short text line (names escaped: they are the client's choice). */
export function loginLine(login: ProxyLogin): string {
  const who = `${printable(login.user, NAME_MAX)}@${printable(login.database, NAME_MAX)} from ` +
    printable(login.client, NAME_MAX);
  if (login.ok) {
    const ms = login.timings ? `${Math.round(login.timings.totalMs * 10) / 10} ms` : "";
    const retried = login.attempts > 1 ? `, ${login.attempts} attempts` : "";
    return `login ok: ${who}${ms || retried ? ` (${ms}${retried})` : ""}\n`;
  }
  return `login FAILED: ${who}: ${login.code ?? ""} ${printable(login.message ?? "", DETAIL_MAX)}` +
    (login.step ? ` (step ${login.step})` : "") + "\n";
}

function closeEvent(session: ProxySessionEnd): Record<string, unknown> {
  return {
    event: "close",
    client: session.client,
    user: session.user,
    database: session.database,
    durationMs: Math.round(session.durationMs),
    bytes: session.bytes,
  };
}

function closeLine(session: ProxySessionEnd): string {
  return `closed: ${printable(session.user, NAME_MAX)}@${printable(session.database, NAME_MAX)} ` +
    `from ${printable(session.client, NAME_MAX)} after ${
      (session.durationMs / 1000).toFixed(1)
    } s, ${session.bytes.toServer} bytes to the server, ${session.bytes.toClient} to the client\n`;
}

/** A failure to listen, in words the command line can act on. */
export function listenError(error: unknown, where: string): unknown {
  const code = (error as { code?: unknown }).code;
  if (code === "EADDRINUSE") {
    return new Error(
      `${where} is in use: a PostgreSQL server, or another proxy? Pick another port with ` +
        `--listen [HOST:]PORT (--listen 0: any free port)`,
      { cause: error },
    );
  }
  if (code === "EACCES") {
    return new Error(
      `not allowed to listen on ${where} (ports below 1024 need privileges): pick another ` +
        `with --listen [HOST:]PORT`,
      { cause: error },
    );
  }
  return error;
}

/** Runs `pg-iam proxy` until SIGINT or SIGTERM. */
export async function run(args: Parsed, out: (text: string) => void): Promise<number> {
  const v = args.values;
  const usage = (text: string) => new UsageError(text, command.name);
  const target = proxyTarget(args.positionals[0], v, command.name);

  const dir = str(v, "unix-socket");
  const listenText = str(v, "listen");
  const listen = listenAddress(
    listenText ?? "127.0.0.1:5432",
    "127.0.0.1",
    "--listen",
    command.name,
  );
  if (dir !== undefined && listenText !== undefined && /:/.test(listenText)) {
    throw usage(`--unix-socket takes a port from --listen, not a host: pass --listen PORT`);
  }
  if (dir !== undefined && listen.port === 0) {
    throw usage(`--unix-socket needs a port to name the socket (.s.PGSQL.PORT), not 0`);
  }
  const allowRemote = v["allow-remote"] === true;
  const passwordFile = str(v, "password-file");
  let password = passwordFile === undefined
    ? readEnv("PGIAM_PROXY_PASSWORD")
    : readFlagFile(passwordFile, "--password-file", command.name).split(/\r?\n/)[0];
  if (password === "") {
    if (passwordFile !== undefined) {
      throw usage(`--password-file ${JSON.stringify(passwordFile)} has an empty first line`);
    }
    password = undefined;
  }
  if (dir === undefined && !isLoopback(listen.host)) {
    if (!allowRemote) {
      throw usage(
        `--listen ${listen.host} is not a loopback address: anyone who reaches it would log in ` +
          `as this proxy's AWS identity. Listen on 127.0.0.1 (the default) or --unix-socket DIR, ` +
          `or pass --allow-remote with --password-file FILE (or PGIAM_PROXY_PASSWORD): a password ` +
          `clients must give`,
      );
    }
    if (password === undefined) {
      throw usage(
        `--allow-remote needs a password clients must give: --password-file FILE, or ` +
          `PGIAM_PROXY_PASSWORD (never a flag: other local users can read a command line)`,
      );
    }
  }
  const cert = str(v, "tls-cert");
  const key = str(v, "tls-key");
  if ((cert === undefined) !== (key === undefined)) {
    throw usage(`--tls-cert and --tls-key go together`);
  }
  const tls = cert === undefined ? undefined : {
    cert: readFlagFile(cert, "--tls-cert", command.name),
    key: readFlagFile(key!, "--tls-key", command.name),
  };
  const maxConnections = int(v, "max-connections", 1, 1_000_000, command.name);
  const connectTimeout = int(v, "connect-timeout", 1, 2_147_483, command.name);
  const shutdownTimeout = int(v, "shutdown-timeout", 0, 2_147_483, command.name) ?? 30;
  const httpText = str(v, "http");
  const http = httpText === undefined
    ? undefined
    : listenAddress(httpText, "127.0.0.1", "--http", command.name);
  const json = v.json === true;
  const quiet = v.quiet === true;
  const log = (line: string) => process.stderr.write(line);

  let proxy: Proxy;
  try {
    proxy = await startProxy({
      ...target.options,
      listen: dir === undefined ? listen : { dir, port: listen.port },
      ...(allowRemote ? { allowRemote } : {}),
      ...(password === undefined ? {} : { password }),
      ...(tls === undefined ? {} : { tls }),
      ...(maxConnections === undefined ? {} : { maxConnections }),
      ...(connectTimeout === undefined ? {} : { connectTimeout }),
      shutdownTimeout,
      ...(http === undefined ? {} : { http }),
      onLogin: quiet ? undefined : (login) => {
        if (json) out(jsonLine(loginEvent(login)));
        else log(loginLine(login));
      },
      onClose: quiet ? undefined : (session) => {
        if (json) out(jsonLine(closeEvent(session)));
        else log(closeLine(session));
      },
    });
  } catch (error) {
    throw listenError(
      error,
      dir === undefined ? `port ${listen.port} on ${listen.host}` : `the socket in ${dir}`,
    );
  }

  // Listening for the signals before the ready line: whoever reads it may signal at once.
  const stopped = new Promise<void>((resolve) => {
    let stopping = false;
    // Kept until the process exits: a second signal must find a listener.
    onSignals(["SIGINT", "SIGTERM"], (signal: Signal) => {
      if (stopping) {
        proxy.close().then(resolve, resolve);
        return;
      }
      stopping = true;
      const sessions = proxy.sessions();
      if (json) out(jsonLine({ event: "stopping", signal, sessions, shutdownTimeout }));
      else {
        log(
          `stopping (${signal}): no new connections; ${sessions} open session` +
            `${sessions === 1 ? "" : "s"} may take ${shutdownTimeout} s to finish (again: now)\n`,
        );
      }
      proxy.shutdown(shutdownTimeout * 1000).then(resolve, resolve);
    });
  });
  // The socket's port is the one in its name (the proxy reports 0 for a socket).
  const port = dir === undefined ? proxy.port : listen.port;
  const user = target.parsed.user;
  const database = target.parsed.database;
  const ready = {
    event: "ready",
    host: proxy.host,
    port,
    path: proxy.path ?? null,
    http: proxy.http ?? null,
    target: hostPort(target.host, target.port),
    service: target.dsql ? "dsql" : "rds",
    sslmode: target.parsed.ssl.mode,
    // Who each client is upstream: its own user and database unless the target names them.
    user: user ?? null,
    database: database ?? null,
    tls: tls !== undefined,
    password: password !== undefined,
    maxConnections: maxConnections ?? 100,
    shutdownTimeout,
  };
  if (json) out(jsonLine(ready));
  else {
    const where = proxy.path ?? `${proxy.host}:${port}`;
    const libpqHost = proxy.path === undefined ? proxy.host : dir!;
    const as = user === undefined ? "each client's user" : `user ${user}`;
    const to = database === undefined ? "its database" : `database ${database}`;
    out(
      [
        `pg-iam proxy listening on ${where} for ${ready.target} (${ready.service}, ` +
        `sslmode ${ready.sslmode}): IAM login as ${as}, to ${to}`,
        `  connect:  psql "host=${libpqHost} port=${port}` +
        ` user=${user ?? "USER"} dbname=${database ?? user ?? "DB"}"`,
        ...(proxy.http
          ? [
            `  http:     http://${
              hostPort(proxy.http.host, proxy.http.port)
            }/metrics, /livez, /readyz`,
          ]
          : []),
        `Stop with Ctrl-C (open sessions get ${shutdownTimeout} s to finish; twice: at once).`,
        "",
      ].map((line) => printable(line)).join("\n"),
    );
  }

  await stopped;
  const stats = proxy.stats;
  const over = stats.refused["53300"] + stats.refused["53400"];
  if (json) out(jsonLine({ event: "stopped", ...stats }));
  else {
    log(
      `stopped: ${stats.logins.ok} logins ok, ${stats.logins.failed} failed, ` +
        `${stats.logins.refused} refused by the proxy, ${over} connection${
          over === 1 ? "" : "s"
        } ` +
        `over a limit\n`,
    );
  }
  return 0;
}
