// pg-iam gateway: the local IAM-verifying PostgreSQL gateway (./gateway) as a command, in front of
// a PostgreSQL server of yours or, when none is given, an embedded in-memory PGlite.

import { mkdirSync, readFileSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { dirname, join } from "node:path";
import process from "node:process";
import { readEnv } from "../core/env.ts";
import { isRegion, parseHostname } from "../core/hostname.ts";
import {
  type Gateway,
  type GatewayCredentials,
  type GatewayUpstream,
  startGateway,
} from "../gateway/mod.ts";
import { checkNotSwapped } from "../core/credentials.ts";
import { type Command, int, type Parsed, str, UsageError } from "./_args.ts";
import { writeFileAtomically } from "../proxy/files.ts";
import { DETAIL_MAX, jsonLine, listenAddress, NAME_MAX, printable } from "./_serve.ts";
import { lower } from "./_target.ts";
import { cacheDir } from "../proxy/url.ts";

/** The `gateway` subcommand. */
export const command: Command = {
  name: "gateway",
  summary: "Run the local IAM-verifying PostgreSQL gateway.",
  usage: "[options]",
  description: `
Listens like an RDS or DSQL endpoint: it accepts a login only with an IAM token signed by the
credentials it is given, for its endpoint name, region and port, and unexpired by its clock (which
--clock-offset moves); it then relays the connection to the upstream PostgreSQL server, or to an
embedded in-memory PGlite when --upstream is omitted (that needs the @electric-sql/pglite and
@electric-sql/pglite-socket packages). It accepts the credentials in AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, or in --credentials FILE (JSON with accessKeyId,
secretAccessKey, sessionToken, or an AWS credentials file with --profile). Without --tls-cert it
generates a certificate for the endpoint name, localhost and 127.0.0.1, and writes the CA that
signed it to --ca-out once it listens (a failed start leaves the file alone), for clients'
sslrootcert. Runs until interrupted.`,
  flags: {
    listen: {
      type: "string",
      arg: "[HOST:]PORT",
      help: "Where to listen. Default: 127.0.0.1:5433 (port 0: any free port).",
    },
    upstream: {
      type: "string",
      arg: "URL",
      help: "The PostgreSQL server to relay to, postgres://[:password@]host:port; each client " +
        "logs in there as its own user, to its own database. Default: an embedded PGlite.",
    },
    "upstream-user": {
      type: "string",
      arg: "USER",
      help: "Log every client in upstream as USER instead of its own user.",
    },
    "upstream-database": {
      type: "string",
      arg: "DB",
      help: "Connect every client upstream to DB instead of its own database.",
    },
    endpoint: {
      type: "string",
      arg: "NAME",
      help: "The endpoint name tokens must be signed for. Default: localhost.",
    },
    service: { type: "string", arg: "rds|dsql", help: "Default: the endpoint's, else rds." },
    region: {
      type: "string",
      arg: "REGION",
      help: "Default: the endpoint's, else AWS_REGION, else us-east-1.",
    },
    "signing-port": {
      type: "string",
      arg: "PORT",
      help: "The port RDS tokens must be signed for. Default: 5432 for an AWS endpoint name, " +
        "else the listening port.",
    },
    credentials: {
      type: "string",
      arg: "FILE",
      help: "The credentials whose tokens are accepted. Default: the AWS_* variables.",
    },
    profile: {
      type: "string",
      arg: "NAME",
      help: "The section of an AWS credentials file given with --credentials. Default: default.",
    },
    "tls-cert": { type: "string", arg: "FILE", help: "The server certificate (PEM)." },
    "tls-key": { type: "string", arg: "FILE", help: "Its private key (PEM)." },
    "ca-out": {
      type: "string",
      arg: "FILE",
      help: "Where to write the generated CA certificate. Default: pg-iam's cache directory.",
    },
    "no-tls": { type: "boolean", help: "Refuse TLS (clients then need sslmode=disable)." },
    "clock-offset": {
      type: "string",
      arg: "DURATION",
      help: "Move the gateway's clock, e.g. +20m, -90s, 1h, 500ms: test token expiry.",
    },
    "max-connections": {
      type: "string",
      arg: "N",
      help: "How many sessions (clients logged in) may be open at once, as PostgreSQL's " +
        "max_connections; one more is refused as PostgreSQL refuses it, FATAL 53300. " +
        "Connections still logging in count against --max-startups instead. Default: 100.",
    },
    "max-startups": {
      type: "string",
      arg: "N",
      help: "How many connections may be logging in at once (token not yet accepted), as sshd's " +
        "MaxStartups; one more is refused, FATAL 53300. Default: 10 × --max-connections (1000).",
    },
    "max-startups-per-address": {
      type: "string",
      arg: "N",
      help: "How many of those may come from one client address, so that one host's " +
        "unfinished logins cannot lock the others out; one more is refused, FATAL 53300. " +
        "Default: --max-connections (100).",
    },
    "max-connection-rate": {
      type: "string",
      arg: "N",
      help: "New connections accepted per second, as Aurora DSQL limits them (100); one more is " +
        "refused as DSQL refuses it, FATAL 53400. Default: no limit.",
    },
    "connection-burst": {
      type: "string",
      arg: "N",
      help: "How many connections may arrive at once under --max-connection-rate. " +
        "Default: one second's.",
    },
    json: { type: "boolean", help: "Print the ready line and each login as JSON lines." },
    quiet: { type: "boolean", help: "Do not print each login." },
  },
  positionals: 0,
  examples: [
    "AWS_ACCESS_KEY_ID=AKIDLOCAL AWS_SECRET_ACCESS_KEY=local-secret pg-iam gateway",
    "pg-iam gateway --upstream postgres://127.0.0.1:5432 \\",
    "  --endpoint db.cluster-abc123xyz.us-east-1.rds.amazonaws.com --credentials keys.json",
    "pg-iam gateway --listen 0 --clock-offset +16m --json",
  ],
};

/** Runs `pg-iam gateway` until SIGINT or SIGTERM. */
export async function run(args: Parsed, out: (text: string) => void): Promise<number> {
  const v = args.values;
  const usage = (text: string) => new UsageError(text, command.name);

  const listen = listenAddress(
    str(v, "listen") ?? "127.0.0.1:5433",
    "127.0.0.1",
    "--listen",
    command.name,
  );
  const listenHost = listen.host;
  let listenPort = listen.port;

  // DNS names are case-insensitive; AWS signs and verifies the lowercase name, and so does the
  // gateway.
  const endpoint = (str(v, "endpoint") ?? "localhost").toLowerCase();
  const parsed = parseHostname(endpoint);
  const service = str(v, "service") ?? parsed?.service ?? "rds";
  if (service !== "rds" && service !== "dsql") {
    throw usage(`--service must be rds or dsql, got ${JSON.stringify(service)}`);
  }
  const region = str(v, "region") ?? parsed?.region ?? readEnv("AWS_REGION") ??
    readEnv("AWS_DEFAULT_REGION") ?? "us-east-1";
  if (!isRegion(region)) {
    throw usage(`--region is not an AWS region, got ${JSON.stringify(region)}`);
  }
  const signingPortFlag = int(v, "signing-port", 1, 65535, command.name);
  const maxConnections = int(v, "max-connections", 1, 1_000_000, command.name) ?? 100;
  const maxStartups = int(v, "max-startups", 1, 10_000_000, command.name) ?? 10 * maxConnections;
  const maxStartupsPerAddress = int(v, "max-startups-per-address", 1, 10_000_000, command.name) ??
    Math.min(maxConnections, maxStartups);
  const maxConnectionRate = int(v, "max-connection-rate", 1, 1_000_000, command.name);
  const connectionBurst = int(v, "connection-burst", 1, 1_000_000, command.name);
  if (connectionBurst !== undefined && maxConnectionRate === undefined) {
    throw usage(`--connection-burst needs --max-connection-rate`);
  }
  const clockOffsetMs = duration(str(v, "clock-offset"));
  const credentials = loadCredentials(str(v, "credentials"), str(v, "profile"));
  const upstreamUrl = str(v, "upstream");
  const upstreamUser = str(v, "upstream-user");
  const upstreamDatabase = str(v, "upstream-database");
  if (upstreamUrl === undefined && (upstreamUser ?? upstreamDatabase) !== undefined) {
    throw usage(
      `--upstream-${upstreamUser === undefined ? "database" : "user"} needs --upstream ` +
        `(the embedded PGlite has one user and one database)`,
    );
  }
  const upstream = upstreamUrl === undefined ? undefined : {
    ...parseUpstream(upstreamUrl),
    ...(upstreamUser === undefined ? {} : { user: upstreamUser }),
    ...(upstreamDatabase === undefined ? {} : { database: upstreamDatabase }),
  };
  const cert = str(v, "tls-cert");
  const key = str(v, "tls-key");
  if ((cert === undefined) !== (key === undefined)) {
    throw usage(`--tls-cert and --tls-key go together`);
  }
  if (v["no-tls"] && cert !== undefined) throw usage(`--no-tls contradicts --tls-cert`);
  const readPem = (file: string, flag: string) => {
    try {
      return readFileSync(file, "utf8");
    } catch (error) {
      throw usage(`cannot read ${flag} ${JSON.stringify(file)}: ${(error as Error).message}`);
    }
  };
  let tlsOption: { cert: string; key: string } | false = false;
  let caFile: string | undefined;
  let caPem: string | undefined;
  if (cert !== undefined) {
    tlsOption = { cert: readPem(cert, "--tls-cert"), key: readPem(key!, "--tls-key") };
  } else if (!v["no-tls"]) {
    const { generateTls } = await import("./_cert.ts");
    const names = [endpoint, "localhost", "127.0.0.1", "::1"];
    if (!["0.0.0.0", "::"].includes(listenHost)) names.push(listenHost);
    const generated = await generateTls([...new Set(names)]);
    tlsOption = { cert: generated.cert + generated.ca, key: generated.key };
    caPem = generated.ca;
    // Written once the gateway listens: a start that fails must not replace the CA that the
    // clients of a gateway still running trust.
    caFile = str(v, "ca-out") ?? join(cacheDir(), "gateway-ca.pem");
  }

  // RDS tokens name a port: by default the endpoint's 5432, or for a local name the port clients
  // connect to (a free one is picked now when --listen says 0).
  if (listenPort === 0 && !parsed && signingPortFlag === undefined) {
    listenPort = await freePort(listenHost);
  }
  const signedPort = signingPortFlag ?? (parsed ? 5432 : listenPort);

  let pglite: { host: string; port: number; close(): Promise<void> } | undefined;
  if (upstream === undefined) {
    try {
      const { startPglite } = await import("../gateway/pglite.ts");
      pglite = await startPglite();
    } catch (error) {
      throw new Error(
        `no --upstream was given, and the embedded PGlite that stands in for it cannot start: ` +
          `${lower((error as Error).message)}. To relay to a PostgreSQL server of yours instead, ` +
          `pass --upstream postgres://user@host:port/database`,
        { cause: error },
      );
    }
  }
  const json = v.json === true;
  const quiet = v.quiet === true;
  let gateway: Gateway;
  try {
    gateway = await startGateway({
      endpoint,
      service,
      region,
      port: signedPort,
      credentials,
      upstream: upstream ?? { host: pglite!.host, port: pglite!.port },
      listen: { host: listenHost, port: listenPort },
      tls: tlsOption,
      clockOffsetMs,
      maxConnections,
      maxStartups,
      maxStartupsPerAddress,
      ...(maxConnectionRate === undefined ? {} : { maxConnectionRate }),
      ...(connectionBurst === undefined ? {} : { connectionBurst }),
      onLogin: quiet ? undefined : (login) => {
        if (json) {
          out(jsonLine({ event: "login", ...login }));
          return;
        }
        // User and database names are the client's choice: one line each, whatever they hold.
        const who = `${printable(login.user, NAME_MAX)}@${printable(login.database, NAME_MAX)}`;
        const age = login.tokenAgeMs === undefined ? "" : ` token age ${login.tokenAgeMs} ms`;
        process.stderr.write(
          login.accepted
            ? `login accepted: ${who}${age}\n`
            : `login REJECTED: ${who}: ${login.reason}` +
              (login.detail ? ` (${printable(login.detail, DETAIL_MAX)})` : "") + "\n",
        );
      },
    });
  } catch (error) {
    await pglite?.close();
    const code = (error as { code?: unknown }).code;
    if (code === "EADDRINUSE") {
      throw new Error(
        `port ${listenPort} is in use on ${listenHost}: another gateway? Stop it, or pick ` +
          `another port with --listen [HOST:]PORT (--listen 0: any free port)`,
        { cause: error },
      );
    }
    if (code === "EACCES") {
      throw new Error(
        `not allowed to listen on port ${listenPort} (ports below 1024 need privileges): pick ` +
          `another with --listen [HOST:]PORT`,
        { cause: error },
      );
    }
    throw error;
  }
  if (caFile !== undefined) {
    try {
      mkdirSync(dirname(caFile), { recursive: true });
      writeFileAtomically(caFile, caPem!, 0o644);
    } catch (error) {
      await gateway.close();
      await pglite?.close();
      throw usage(`cannot write --ca-out ${JSON.stringify(caFile)}: ${(error as Error).message}`);
    }
  }
  const clientHost = parsed ? gateway.host : endpoint;
  const params = new URLSearchParams();
  if (parsed) {
    params.set("iam_host", endpoint);
    params.set("iam_port", String(signedPort));
  } else params.set("iam_region", region);
  if (service === "dsql" && !parsed) params.set("iam_service", "dsql");
  if (caFile) params.set("sslrootcert", caFile);
  if (tlsOption === false) params.set("sslmode", "disable");
  const user = service === "dsql" ? "admin" : "postgres";
  const url = `postgres://${user}@${clientHost.includes(":") ? `[${clientHost}]` : clientHost}:` +
    `${gateway.port}/postgres?${params.toString().replaceAll("%2F", "/")}`;
  const ready = {
    event: "ready",
    host: gateway.host,
    port: gateway.port,
    endpoint,
    service,
    region,
    signingPort: signedPort,
    tls: tlsOption !== false,
    ca: caFile,
    upstream: upstream ? `${upstream.host}:${upstream.port}` : "embedded PGlite",
    // Who each client is upstream: its own user and database unless the flags say otherwise.
    upstreamUser: upstream?.user ?? null,
    upstreamDatabase: upstream?.database ?? null,
    accessKeyIds: (Array.isArray(credentials) ? credentials : [credentials]).map((c) =>
      c.accessKeyId
    ),
    clockOffsetMs,
    maxConnections,
    maxStartups,
    maxStartupsPerAddress,
    maxConnectionRate: maxConnectionRate ?? null,
    url,
  };
  // Listening for the signals before saying so: a signal sent as soon as the ready line is read
  // must stop the gateway, not kill the process (the default action).
  const stopped = new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  if (json) out(jsonLine(ready));
  else {
    out(
      [
        `pg-iam gateway listening on ${gateway.host}:${gateway.port} as ${endpoint} ` +
        `(${service}, ${region}${service === "rds" ? `, port ${signedPort}` : ""})`,
        `  upstream:  ${ready.upstream}${
          upstream
            ? `, ${loginAs(upstream.user, upstream.database)}`
            : " (in memory: data is lost on exit)"
        }`,
        `  accepts:   tokens signed with ${ready.accessKeyIds.join(", ")}`,
        `  TLS:       ${
          tlsOption === false ? "off (--no-tls)" : caFile ? `generated; CA in ${caFile}` : cert
        }`,
        ...(clockOffsetMs
          ? [`  clock:     ${clockOffsetMs > 0 ? "+" : ""}${clockOffsetMs} ms`]
          : []),
        `  connect:   ${url}` + (tlsOption === false ? " (add --dangerously-disable-tls)" : ""),
        `Stop with Ctrl-C.`,
        "",
      ].map((line) => printable(line)).join("\n"),
    );
  }

  await stopped;
  await gateway.close();
  await pglite?.close();
  const { accepted, rejected, rejections } = gateway.stats;
  if (json) out(jsonLine({ event: "stopped", accepted, rejected, rejections }));
  else process.stderr.write(`stopped: ${accepted} logins accepted, ${rejected} rejected\n`);
  return 0;
}

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** How clients log in upstream, for the start banner. */
function loginAs(user: string | undefined, database: string | undefined): string {
  const who = user === undefined ? "each client's own user" : `user ${user} (--upstream-user)`;
  const where = database === undefined
    ? "its own database"
    : `database ${database} (--upstream-database)`;
  return `logged in as ${who}, to ${where}`;
}

/** `+20m`, `-90s`, `1h`, `500ms` in milliseconds. */
function duration(text: string | undefined): number {
  if (text === undefined) return 0;
  const m = /^([+-]?)(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text);
  if (!m) {
    throw new UsageError(
      `--clock-offset must be a duration like +20m, -90s, 1h or 500ms, got ${JSON.stringify(text)}`,
      command.name,
    );
  }
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[3]]!;
  return (m[1] === "-" ? -1 : 1) * Math.round(Number(m[2]) * unit);
}

function parseUpstream(text: string): GatewayUpstream {
  const url = URL.canParse(text) ? new URL(text) : undefined;
  if (!url || (url.protocol !== "postgres:" && url.protocol !== "postgresql:") || !url.hostname) {
    throw new UsageError(
      `--upstream must be postgres://user:password@host:port/database, got a malformed URL`,
      command.name,
    );
  }
  // A user or database here would log every client in as that one, whatever it asked for: that
  // takes saying so (--upstream-user, --upstream-database), not a URL that looks like a client's.
  const user = url.username ? decodeURIComponent(url.username) : undefined;
  const database = url.pathname.length > 1 ? decodeURIComponent(url.pathname.slice(1)) : undefined;
  if (user !== undefined || database !== undefined) {
    const named = [
      ...(user === undefined ? [] : [`the user ${JSON.stringify(user)}`]),
      ...(database === undefined ? [] : [`the database ${JSON.stringify(database)}`]),
    ].join(" and ");
    const flags = [
      ...(user === undefined ? [] : [`--upstream-user ${user}`]),
      ...(database === undefined ? [] : [`--upstream-database ${database}`]),
    ].join(" ");
    throw new UsageError(
      `--upstream names ${named}: the gateway logs each client in upstream as the client's own ` +
        `user, to its own database. Give the server alone (postgres://${
          url.password ? ":…@" : ""
        }${url.host}), and to log every client in as one user or database instead, add ${flags}`,
      command.name,
    );
  }
  return {
    host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: url.port ? Number(url.port) : 5432,
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
  };
}

/** The accepted credentials: --credentials FILE (JSON or an AWS credentials file), else env. */
function loadCredentials(
  file: string | undefined,
  profile: string | undefined,
): GatewayCredentials | GatewayCredentials[] {
  const usage = (text: string) => new UsageError(text, command.name);
  if (file === undefined) {
    const accessKeyId = readEnv("AWS_ACCESS_KEY_ID");
    const secretAccessKey = readEnv("AWS_SECRET_ACCESS_KEY");
    if (!accessKeyId || !secretAccessKey) {
      throw usage(
        `the gateway needs the credentials whose tokens it accepts: set AWS_ACCESS_KEY_ID and ` +
          `AWS_SECRET_ACCESS_KEY (any values, shared with your clients), or pass --credentials FILE`,
      );
    }
    checkNotSwapped(
      accessKeyId,
      secretAccessKey,
      "The environment",
      "AWS_ACCESS_KEY_ID",
      "AWS_SECRET_ACCESS_KEY",
    );
    const sessionToken = readEnv("AWS_SESSION_TOKEN");
    return { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
  }
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw usage(`cannot read --credentials ${JSON.stringify(file)}: ${(error as Error).message}`);
  }
  if (/^\s*[[{]/.test(text) && !/^\s*\[[\w .-]+\]\s*$/m.test(text.split("\n")[0])) {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw usage(`--credentials ${JSON.stringify(file)} is not valid JSON`);
    }
    const list = Array.isArray(value) ? value : [value];
    for (const c of list) {
      if (
        typeof c !== "object" || c === null || typeof c.accessKeyId !== "string" ||
        typeof c.secretAccessKey !== "string"
      ) {
        throw usage(
          `--credentials ${JSON.stringify(file)} must hold {"accessKeyId", "secretAccessKey", ` +
            `"sessionToken"?} objects`,
        );
      }
    }
    for (const [i, c] of list.entries()) {
      checkNotSwapped(
        c.accessKeyId,
        c.secretAccessKey,
        `--credentials ${JSON.stringify(file)}` + (Array.isArray(value) ? ` (entry ${i})` : ""),
        "accessKeyId",
        "secretAccessKey",
      );
    }
    return list as GatewayCredentials[];
  }
  // An AWS shared credentials file: [profile] sections of key = value lines.
  const section = profile ?? "default";
  const values = new Map<string, string>();
  let current: string | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[\s*(?:profile\s+)?([^\]]+?)\s*\]$/.exec(line);
    if (header) current = header[1];
    else if (current === section) {
      const eq = line.indexOf("=");
      if (eq > 0) values.set(line.slice(0, eq).trim().toLowerCase(), line.slice(eq + 1).trim());
    }
  }
  const accessKeyId = values.get("aws_access_key_id");
  const secretAccessKey = values.get("aws_secret_access_key");
  if (!accessKeyId || !secretAccessKey) {
    throw usage(
      `--credentials ${JSON.stringify(file)} has no aws_access_key_id and ` +
        `aws_secret_access_key in [${section}]`,
    );
  }
  checkNotSwapped(
    accessKeyId,
    secretAccessKey,
    `--credentials ${JSON.stringify(file)} [${section}]`,
    "aws_access_key_id",
    "aws_secret_access_key",
  );
  const sessionToken = values.get("aws_session_token");
  return { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
}
