// pg-iam doctor: one real IAM connect, step by step, each step timed, and the failing step named
// with its likely cause in plain words. Then a second connect, to show warm against cold.
//
// It connects with the same socket the drivers get (src/connection/socket.ts), whose step events
// time DNS, TCP, TLS, the server's IAM check and the session start apart (seed 004: the seconds
// were in the IAM check), and reads the first query itself, so a failure is pinned on one step.

import { lookup, resolveCname } from "node:dns/promises";
import net from "node:net";
import tls from "node:tls";
import { type Credentials, resolveCredentials } from "../core/credentials.ts";
import { CredentialsError } from "../core/errors.ts";
import { envProfile } from "../core/chain.ts";
import { withTimeout } from "../core/deadline.ts";
import { readEnv } from "../core/env.ts";
import { parseHostname } from "../core/hostname.ts";
import { NoRegionError } from "../core/checks.ts";
import { Inbox } from "../connection/inbox.ts";
import {
  dataRow,
  errorFields,
  type Message,
  message,
  parameterStatus,
  queryMessage,
  startupMessage,
} from "../connection/pgwire.ts";
import { type ConnectOutcome, IamSocket, type SocketPlan } from "../connection/socket.ts";
import { ConnectError } from "../connection/errors.ts";
import { type Command, int, type Parsed, UsageError } from "./_args.ts";
import { type TlsPlan, tlsPlan } from "../connection/tls.ts";
import { lower, resolveTarget, signFor, type Target, TARGET_FLAGS } from "./_target.ts";
// mod.ts loads this module on demand, once it has run: the cycle is harmless.
import { VERSION } from "./mod.ts";

/** The `doctor` subcommand. */
export const command: Command = {
  name: "doctor",
  summary: "Connect for real and time every step; name the one that fails.",
  usage: "[URL] [options]",
  description: `
Performs a real IAM connect and prints each step with its time: the endpoint (service, region,
kind), credentials (source, expiry), signing, DNS (and whether the name is a CNAME of an AWS
endpoint: tokens must be signed for the endpoint's own name), TCP, TLS (certificate issuer and
whether it verifies), authentication (the server's IAM check), the first query (select 1), and a
second connect, warm. On failure it names the failing step and the likely cause, and exits 1.
The token and secrets are never printed.`,
  flags: {
    ...TARGET_FLAGS,
    json: {
      type: "boolean",
      help: "Print one JSON document instead: the target, versions, each step (name, ok, ms, " +
        "detail, data), warnings, the verdict (ok) and the failure. Exit codes unchanged.",
    },
    timeout: {
      type: "string",
      arg: "SECONDS",
      help: "How long each network step may take. Default: 10.",
    },
  },
  positionals: 1,
  examples: [
    "pg-iam doctor postgres://app@db.cluster-c9akciq32.us-east-1.rds.amazonaws.com/orders",
    "pg-iam doctor postgres://admin@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres --json",
    "pg-iam doctor postgres://app@127.0.0.1:15432/orders?iam_host=db.c9akciq32.us-east-1.rds.amazonaws.com&iam_port=5432",
  ],
};

/** The steps of a connect, in order. */
export type StepName =
  | "endpoint"
  | "credentials"
  | "sign"
  | "dns"
  | "tcp"
  | "tls"
  | "auth"
  | "query"
  | "warm";

/** One step's outcome. */
export interface Step {
  step: StepName;
  ok: boolean;
  ms: number;
  /** What was found, in words. */
  detail: string;
  /** The same, for machines. */
  data?: Record<string, unknown>;
}

/** One step as `--json` prints it. */
export interface JsonStep {
  /** The step: `endpoint`, `credentials`, `sign`, `dns`, `tcp`, `tls`, `auth`, `query`, `warm`. */
  name: StepName;
  ok: boolean;
  /** Its time in ms. */
  ms: number;
  /** What was found, in words (the human output's line). */
  detail: string;
  /** The same, for machines. */
  data?: Record<string, unknown>;
}

/** What `--json` prints: one document, whatever the outcome. */
export interface Report {
  /** The verdict: connected (exit 0), or not (exit 1, `failure` says why). */
  ok: boolean;
  target: Record<string, unknown>;
  /** pg-iam's, the runtime's and (once logged in) the server's. */
  versions: { pgIam: string; runtime: string; runtimeVersion: string; postgres?: string };
  /** The steps taken, in order; the failing one last. */
  steps: JsonStep[];
  warnings: string[];
  /** The failing step, its error, and the likely cause in plain words. */
  failure?: { step: StepName; error: string; cause: string; code?: string };
  /** Total time of the first (cold) and second (warm) connect, in ms. */
  coldMs?: number;
  warmMs?: number;
  /** Per-step times of the warm connect. */
  warm?: Record<string, number>;
}

/** A step that failed: its error and the likely cause. */
class StepFailure extends Error {
  constructor(
    readonly step: StepName,
    message: string,
    readonly likely: string,
    readonly code?: string,
    readonly ms = 0,
  ) {
    super(message);
  }
}

const ms = (t: number) => Math.round((performance.now() - t) * 10) / 10;

/** Runs `pg-iam doctor`. */
export async function run(args: Parsed, out: (text: string) => void): Promise<number> {
  const target = resolveTarget(args.positionals[0], args.values, command.name, false);
  const timeoutMs = (int(args.values, "timeout", 1, 3600, command.name) ?? 10) * 1000;
  const json = args.values.json === true;
  // The same TLS settings a connection would use (CA, client certificate, CRL, versions, SNI);
  // the doctor checks chain and name itself, to say which of them is wrong.
  let plan: TlsPlan | undefined;
  try {
    plan = tlsPlan(target.tls, target.service, target.signingHostname);
  } catch (error) {
    throw new UsageError(lower((error as Error).message), command.name);
  }

  const report: Report = {
    ok: false,
    target: {
      host: target.host,
      port: target.port,
      user: target.user,
      database: target.database,
      service: target.service,
      signingHostname: target.signingHostname,
      signingPort: target.signingPort,
      sslmode: target.sslmode,
    },
    versions: { pgIam: VERSION, ...runtimeVersion() },
    steps: [],
    warnings: [],
  };
  const print = (line: string) => json || out(line + "\n");
  const add = (step: Step) => {
    const { step: name, ok, ms, detail, data } = step;
    report.steps.push({ name, ok, ms, detail, ...(data === undefined ? {} : { data }) });
    if (name === "auth" && typeof step.data?.server === "string") {
      report.versions.postgres ??= step.data.server;
    }
    print(`  ${step.ok ? "ok  " : "FAIL"}  ${step.step.padEnd(12)}${fmt(step.ms)}  ${step.detail}`);
  };
  const warn = (text: string) => {
    report.warnings.push(text);
    print(`  warn  ${text}`);
  };
  print(
    `pg-iam doctor: ${target.user}@${target.host}:${target.port}/${target.database} ` +
      `(${target.service.toUpperCase()}, sslmode ${target.sslmode})`,
  );

  try {
    const region = await endpointStep(target, add, warn);
    report.target.region = region;
    const cold = await connect(true, target, region, plan, timeoutMs, add, warn);
    report.coldMs = cold.total;
    const warm = await connect(false, target, region, plan, timeoutMs, () => {}, () => {});
    report.warmMs = warm.total;
    report.warm = warm.times;
    add({
      step: "warm",
      ok: true,
      ms: warm.total,
      detail: `a second connect: ` +
        Object.entries(warm.times).map(([k, v]) => `${k} ${v}`).join(", ") + " ms",
      data: warm.times,
    });
    report.ok = true;
    const auth = cold.times.auth;
    print(
      `\nConnected: ${fmt(cold.total).trim()} cold, ${fmt(warm.total).trim()} warm. The ` +
        `server's IAM check (auth) took ${fmt(auth).trim()}, ` +
        `${Math.round((auth / cold.total) * 100)}% of the cold connect.`,
    );
  } catch (error) {
    const f = error instanceof StepFailure ? error : new StepFailure(
      "endpoint",
      (error as Error).message,
      "an unexpected error; run again with --verbose for details",
    );
    if (!report.steps.some((s) => s.name === f.step && !s.ok)) {
      add({ step: f.step, ok: false, ms: f.ms, detail: f.message });
    }
    report.failure = { step: f.step, error: f.message, cause: f.likely, code: f.code };
    print(`\nFailed at ${f.step}: ${f.likely}`);
  }
  if (json) out(JSON.stringify(report, null, 2) + "\n");
  return report.ok ? 0 : 1;
}

/** The runtime running the command, and its version. */
function runtimeVersion(): { runtime: string; runtimeVersion: string } {
  const g = globalThis as {
    Deno?: { version: { deno: string } };
    Bun?: { version: string };
    process?: { versions?: { node?: string } };
  };
  if (g.Deno) return { runtime: "deno", runtimeVersion: g.Deno.version.deno };
  if (g.Bun) return { runtime: "bun", runtimeVersion: g.Bun.version };
  return { runtime: "node", runtimeVersion: g.process?.versions?.node ?? "unknown" };
}

function fmt(n: number): string {
  return `${n < 10 ? n.toFixed(1) : Math.round(n)} ms`.padStart(9);
}

async function endpointStep(
  target: Target,
  add: (s: Step) => void,
  warn: (w: string) => void,
): Promise<string> {
  const t = performance.now();
  const parsed = target.parsed;
  if (target.conflict) {
    throw new StepFailure(
      "endpoint",
      target.conflict,
      `the region given (${target.conflict.split(" ")[0]}) is not the endpoint's: a token signed ` +
        `for another region is always rejected; drop it or correct it`,
    );
  }
  let region: string;
  try {
    region = await target.region;
  } catch (error) {
    throw new StepFailure(
      "endpoint",
      (error as Error).message,
      error instanceof NoRegionError
        ? `no AWS region: ${target.signingHostname} is not an AWS endpoint name, so pass ` +
          `--region (or iam_region=, AWS_REGION, or a profile with a region)`
        : `the region of the AWS profile is not usable: correct it`,
    );
  }
  const what = parsed
    ? `${parsed.service}, ${parsed.region}, ${parsed.kind} endpoint ${
      JSON.stringify(parsed.identifier)
    }` +
      ` (${parsed.partition})`
    : `${target.service}, region ${region} (${JSON.stringify(target.signingHostname)} is not an ` +
      `AWS endpoint name)`;
  const signing = target.signingHostname === target.host && target.signingPort === target.port
    ? ""
    : `; signing for ${target.signingHostname}:${target.signingPort}`;
  add({
    step: "endpoint",
    ok: true,
    ms: ms(t),
    detail: what + signing,
    data: {
      service: target.service,
      region,
      kind: parsed?.kind,
      identifier: parsed?.identifier,
      partition: parsed?.partition,
    },
  });
  if (parsed && region !== parsed.region) {
    warn(
      `the token is signed for region ${region}, but the endpoint is in ${parsed.region}: the ` +
        `server will reject it`,
    );
  }
  if (!parsed && !target.host.startsWith("127.") && target.host !== "localhost") {
    warn(
      `${target.signingHostname} is not an RDS or DSQL endpoint name: if it is a CNAME, tunnel ` +
        `or proxy, sign for the endpoint's own name with --signing-hostname`,
    );
  }
  return region;
}

interface Connected {
  total: number;
  times: Record<string, number>;
}

async function connect(
  cold: boolean,
  target: Target,
  region: string,
  plan: TlsPlan | undefined,
  timeoutMs: number,
  add: (s: Step) => void,
  warn: (w: string) => void,
): Promise<Connected> {
  const times: Record<string, number> = {};
  const start = performance.now();
  const timed = (step: StepName, t: number) => (times[step] = ms(t));

  // Credentials.
  let t = performance.now();
  const expiresIn = target.expiresIn;
  let creds: Credentials;
  try {
    creds = await resolveCredentials(
      undefined,
      new Date(),
      Date.now() + expiresIn * 1000,
      false,
      { profile: target.profile, onRefreshError: () => {} },
    );
  } catch (error) {
    throw new StepFailure(
      "credentials",
      (error as Error).message,
      error instanceof CredentialsError && error.code === "missing"
        ? "no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, " +
          "AWS_PROFILE (or --profile), or log in (aws sso login)"
        : error instanceof CredentialsError && error.code === "invalid"
        ? "the AWS credentials are malformed: correct them where they are set (the access key " +
          "id in AWS_ACCESS_KEY_ID or aws_access_key_id, the secret in AWS_SECRET_ACCESS_KEY or " +
          "aws_secret_access_key)"
        : "the AWS credentials could not be loaded or have expired: refresh them",
      (error as CredentialsError).code,
      ms(t),
    );
  }
  add({
    step: "credentials",
    ok: true,
    ms: timed("credentials", t),
    detail: describeCredentials(creds, target),
    data: {
      source: credentialSource(target),
      accessKeyId: creds.accessKeyId,
      temporary: creds.sessionToken !== undefined,
      expiration: creds.expiration?.toISOString(),
    },
  });

  // Sign.
  t = performance.now();
  const token = await signFor({ ...target, region }, creds).catch((error: Error) => {
    throw new StepFailure("sign", error.message, "the token could not be signed", undefined, ms(t));
  });
  const action = `${target.service === "rds" ? "rds-db" : "dsql"}:${target.action}`;
  add({
    step: "sign",
    ok: true,
    ms: timed("sign", t),
    detail: `${action} token for ${target.user} at ${target.signingHostname}` +
      (target.service === "rds" ? `:${target.signingPort}` : "") +
      `, ${region}, valid ${expiresIn} s (${token.length} characters, not shown)`,
    data: { action, region, expiresIn, length: token.length },
  });

  // DNS.
  t = performance.now();
  let addresses: string[];
  let dnsDetail: string;
  if (net.isIP(target.host)) {
    addresses = [target.host];
    dnsDetail = `${target.host} is an IP address: no lookup`;
  } else {
    try {
      const found = await within(lookup(target.host, { all: true }), timeoutMs, "dns");
      addresses = found.map((a) => a.address);
    } catch (error) {
      throw new StepFailure(
        "dns",
        `cannot resolve ${target.host}: ${(error as Error).message}`,
        `the name does not resolve: check it for typos; a private endpoint resolves only inside ` +
          `its VPC (or over a VPN, or through the VPC's resolver)`,
        (error as { code?: string }).code,
        ms(t),
      );
    }
    dnsDetail = `${target.host} → ${addresses.join(", ")}`;
  }
  const dnsMs = timed("dns", t);
  // The CNAME check is advice, not part of a connect: untimed, and on the cold connect only.
  if (cold && !net.isIP(target.host)) {
    const cname = await cnameOf(target.host);
    if (cname !== undefined) {
      dnsDetail += ` (CNAME of ${cname})`;
      const aws = parseHostname(cname);
      if (aws && target.signingHostname === target.host) {
        warn(
          `${target.host} is a CNAME of the endpoint ${cname}: RDS and DSQL check the token ` +
            `against their own name, so sign for it: --signing-hostname ${cname} ` +
            `(iam_host=${cname})`,
        );
      }
    }
  }
  add({ step: "dns", ok: true, ms: dnsMs, detail: dnsDetail, data: { addresses } });

  if (target.sslmode === "disable") {
    warn("TLS is disabled (sslmode disable): the token travels in plaintext");
  }

  // TCP, TLS and the login, through the connection layer's socket (the one the drivers use); its
  // steps are reported as they complete. Each address in turn, as long as TCP is what fails.
  let session: Session | undefined;
  let failure: StepFailure | undefined;
  for (const address of addresses) {
    const attempt = await login(target, region, token, address, plan, timeoutMs, add, times);
    if (attempt instanceof StepFailure) {
      failure = attempt;
      if (attempt.step === "tcp") continue;
      break;
    }
    session = attempt;
    break;
  }
  if (!session) {
    if (failure?.step === "tcp" && addresses.length > 1) {
      failure = new StepFailure(
        "tcp",
        `cannot connect to ${addresses.join(" or ")} port ${target.port}: ${failure.message}`,
        failure.likely,
        failure.code,
        failure.ms,
      );
    }
    throw failure!;
  }
  const { socket, inbox, loggedInAt } = session;
  try {
    // The session start: from AuthenticationOk to ReadyForQuery.
    t = performance.now();
    let server: string | undefined;
    for (;;) {
      const m = await within(next(inbox), timeoutMs, "auth").catch((error: Error) => {
        throw new StepFailure("auth", error.message, "the session did not start", undefined, ms(t));
      });
      if (m.type === S) {
        const [name, value] = parameterStatus(m.body);
        if (name === "server_version") server = value;
      } else if (m.type === E) {
        const error = ServerError.of(m.body);
        throw new StepFailure("auth", error.message, authCause(error, target, region), error.code);
      } else if (m.type === Z) break;
    }
    const sessionMs = Math.round((performance.now() - loggedInAt) * 10) / 10;
    const checkMs = Math.round(session.checkMs * 10) / 10;
    times.auth = Math.round((checkMs + sessionMs) * 10) / 10;
    add({
      step: "auth",
      ok: true,
      ms: times.auth,
      detail: `accepted: the server's IAM check took ${checkMs} ms, session start ` +
        `${sessionMs} ms`,
      data: { checkMs, sessionMs, server },
    });

    // First query.
    t = performance.now();
    const value = await within(query(inbox, "select 1"), timeoutMs, "query").catch((error) => {
      throw new StepFailure(
        "query",
        (error as Error).message,
        "logged in, but the first query failed",
        (error as { code?: string }).code,
        ms(t),
      );
    });
    add({
      step: "query",
      ok: true,
      ms: timed("query", t),
      detail: `select 1 → ${value}` + (server ? ` (PostgreSQL ${server})` : ""),
    });
    socket.end(message("X"));
  } finally {
    socket.destroy();
  }
  return { total: ms(start), times };
}

/** A logged-in connection: the socket, its messages, when AuthenticationOk came, the IAM check. */
interface Session {
  socket: IamSocket;
  inbox: Inbox<IamSocket>;
  loggedInAt: number;
  checkMs: number;
}

/**
 * TCP, TLS and the login with `token` at `address`, through the connection layer's socket, with
 * the TCP and TLS steps added as they complete; a failure is returned as the step it failed at.
 */
async function login(
  target: Target,
  region: string,
  token: string,
  address: string,
  tlsPlanned: TlsPlan | undefined,
  timeoutMs: number,
  add: (s: Step) => void,
  times: Record<string, number>,
): Promise<Session | StepFailure> {
  let tlsFailure: StepFailure | undefined;
  let tlsDetail: Omit<Step, "ms"> | undefined;
  let outcome: (value: ConnectOutcome) => void;
  const done = new Promise<ConnectOutcome>((resolve) => (outcome = resolve));
  const round = (n: number) => Math.round(n * 10) / 10;
  const plan: SocketPlan = {
    host: target.host,
    address,
    port: target.port,
    // Chain and name are checked in checkTls, to say which of them is wrong.
    tls: tlsPlanned && {
      ...tlsPlanned,
      options: {
        ...tlsPlanned.options,
        rejectUnauthorized: false,
        checkServerIdentity: () => undefined,
      },
    },
    connectTimeoutMs: timeoutMs,
    retry: false, // one login, timed as it is
    token: () => Promise.resolve({ token, credentialsMs: 0, signMs: 0 }),
    authError: (fields) => new ServerError(fields),
    onConnect: (o) => outcome(o),
    onStep: (step, elapsed, socket) => {
      if (step === "connect") {
        times.tcp = round(elapsed);
        add({
          step: "tcp",
          ok: true,
          ms: times.tcp,
          detail: `connected to ${socket.remoteAddress}:${socket.remotePort}`,
        });
      } else {
        times.tls = round(elapsed);
        add({ ...tlsDetail!, ms: times.tls });
      }
    },
    checkTls: (secure) => {
      try {
        tlsDetail = checkCertificate(secure, target, tlsPlanned!);
      } catch (error) {
        tlsFailure = error as StepFailure;
        throw error;
      }
    },
  };
  const socket = new IamSocket(plan);
  // Listening before the login: what came with AuthenticationOk is emitted at the hand-over.
  const inbox = new Inbox(socket);
  socket.write(
    startupMessage(
      new Map([
        ["user", target.user],
        ["database", target.database],
        ["application_name", "pg-iam doctor"],
      ]),
    ),
  );
  const result = await done;
  if (result.ok) {
    return { socket, inbox, loggedInAt: performance.now(), checkMs: result.timings.authMs };
  }
  socket.destroy();
  const error = result.error as Error & { code?: string };
  const t = result.timings;
  switch (result.step) {
    case "connect":
      return tcpFailure(error, target, timeoutMs, t.connectMs);
    case "tls":
      return tlsFailure ?? tlsStepFailure(error, t.tlsMs);
    default: {
      const elapsed = round(t.totalMs - t.connectMs - t.tlsMs);
      if (error.code === "AUTH_METHOD") {
        return new StepFailure(
          "auth",
          error.message.replace(/^pg-iam: /, ""),
          `the user ${target.user} is not set up for IAM: on RDS and Aurora, GRANT rds_iam TO ` +
            `${target.user}; and enable IAM database authentication on the instance or cluster`,
          "AUTH_METHOD",
          elapsed,
        );
      }
      // The socket's error for what the server said carries its severity (as postgres.js's).
      const severity = (error as { severity?: unknown }).severity;
      const server = error instanceof ServerError
        ? error
        : typeof severity === "string"
        ? new ServerError({
          S: severity,
          M: error.message,
          C: (error instanceof ConnectError ? error.sqlState : error.code) ?? "",
        })
        : undefined;
      if (server && !result.tokenSent) {
        const f = refusedBeforeToken(server, target);
        return new StepFailure(f.step, f.message, f.likely, f.code, elapsed);
      }
      return new StepFailure(
        "auth",
        server?.message ?? error.message,
        server ? authCause(server, target, region) : authCause(error, target, region),
        error.code,
        elapsed,
      );
    }
  }
}

function tcpFailure(
  error: Error & { code?: string },
  target: Target,
  timeoutMs: number,
  elapsed: number,
): StepFailure {
  const code = error.code === "CONNECT_TIMEOUT" ? "ETIMEDOUT" : error.code;
  return new StepFailure(
    "tcp",
    `cannot connect to port ${target.port}: ${error.message.replace(/^pg-iam: /, "")}`,
    code === "ECONNREFUSED"
      ? `nothing accepts connections on port ${target.port} there: check the port, and that ` +
        `the database (or your tunnel) is running`
      : code === "ETIMEDOUT"
      ? `no answer within ${timeoutMs / 1000} s: a security group, network ACL or firewall ` +
        `drops the traffic, or the database is not publicly accessible`
      : `the network path to the database is broken (${code ?? "error"})`,
    code,
    Math.round(elapsed * 10) / 10,
  );
}

function tlsStepFailure(error: Error & { code?: string }, elapsed: number): StepFailure {
  const ms = Math.round(elapsed * 10) / 10;
  if (error.code === "TLS_REFUSED") {
    return new StepFailure(
      "tls",
      "the server refused TLS (it answered the SSLRequest with N)",
      "the server does not offer TLS; pg-iam sends tokens only over TLS (for a local " +
        "gateway without TLS: sslmode=disable with --dangerously-disable-tls)",
      undefined,
      ms,
    );
  }
  if (error.code === "PROTOCOL_VIOLATION") {
    return new StepFailure(
      "tls",
      "the server's answer to the SSLRequest is not PostgreSQL's",
      "this port does not speak the PostgreSQL protocol",
      undefined,
      ms,
    );
  }
  if (error.code === "CONNECTION_CLOSED") {
    return new StepFailure(
      "tls",
      `no answer to the TLS request: ${error.message.replace(/^pg-iam: /, "")}`,
      "the server closed the connection instead of answering: is this a PostgreSQL port?",
      undefined,
      ms,
    );
  }
  return new StepFailure(
    "tls",
    `the TLS handshake failed: ${error.message.replace(/^pg-iam: /, "")}`,
    "the server and this client share no TLS version or cipher, or the connection broke",
    error.code,
    ms,
  );
}

function credentialSource(target: Target): string {
  const profile = target.profile ?? envProfile();
  if (profile === undefined && readEnv("AWS_ACCESS_KEY_ID") && readEnv("AWS_SECRET_ACCESS_KEY")) {
    return "environment variables";
  }
  return `AWS SDK credential chain${profile ? ` (profile ${profile})` : ""}`;
}

function describeCredentials(creds: Credentials, target: Target): string {
  const kind = creds.sessionToken ? "temporary" : "long-term";
  const expiry = creds.expiration
    ? `, expire ${creds.expiration.toISOString()} (in ${
      Math.round((creds.expiration.getTime() - Date.now()) / 60_000)
    } min)`
    : "";
  return `${credentialSource(target)}: ${kind} key ${creds.accessKeyId}${expiry}`;
}

/** The name `host` is a CNAME of, if it is one; DNS trouble here is not an error. */
async function cnameOf(host: string): Promise<string | undefined> {
  if (host === "localhost") return undefined;
  try {
    const names = await within(resolveCname(host), 2000, "dns");
    return names[0];
  } catch {
    return undefined;
  }
}

/**
 * The certificate, described and checked (chain against the CA in use, name against the signing
 * host): the step's detail, or a StepFailure saying which check failed.
 */
function checkCertificate(
  secure: tls.TLSSocket,
  target: Target,
  plan: TlsPlan,
): Omit<Step, "ms"> {
  const name = target.signingHostname;
  const cert = secure.getPeerCertificate();
  const subject = cert?.subject?.CN ?? "?";
  const issuer = [cert?.issuer?.CN, cert?.issuer?.O].filter(Boolean).join(", ") || "?";
  const chainError = secure.authorized ? undefined : String(secure.authorizationError ?? "");
  const nameError = cert && Object.keys(cert).length
    ? tls.checkServerIdentity(name, cert)
    : undefined;
  const trust = plan.trust;
  const protocol = secure.getProtocol() ?? "TLS";
  const data = { protocol, subject, issuer, verified: false, trust };
  if (target.sslmode === "require") {
    return {
      step: "tls",
      ok: true,
      detail: `${protocol}, certificate ${subject} issued by ${issuer}, NOT verified ` +
        `(sslmode require)`,
      data,
    };
  }
  const fail = (what: string, likely: string, code?: string): never => {
    throw new StepFailure(
      "tls",
      `${protocol}: the certificate (${subject}, issued by ${issuer}) ${what}`,
      likely,
      code,
    );
  };
  if (chainError) {
    fail(
      `does not verify against ${trust}: ${chainError}`,
      `the server's certificate is not signed by a CA you trust: for RDS and Aurora the RDS CA ` +
        `bundle is used by default; for a gateway or proxy pass its CA with ` +
        `sslrootcert=<file> (or --sslrootcert)`,
      chainError,
    );
  }
  if (nameError && target.sslmode === "verify-full") {
    fail(
      `is not for ${name}: ${nameError.message}`,
      `the certificate does not name ${name}: connecting by IP, through a tunnel, proxy or ` +
        `CNAME? pass the endpoint's name with --signing-hostname (iam_host=), which is also ` +
        `the name the token is signed for`,
      (nameError as { code?: string }).code,
    );
  }
  return {
    step: "tls",
    ok: true,
    detail: `${protocol}, certificate ${subject} issued by ${issuer}, verified against ${trust}` +
      (target.sslmode === "verify-full" ? ` for ${name}` : " (name not checked: verify-ca)"),
    data: { ...data, verified: true },
  };
}

const [E, S, D, Z] = [0x45, 0x53, 0x44, 0x5a]; // ErrorResponse, ParameterStatus, DataRow, ReadyForQuery

/** The server's next message; the connection's end is an error. */
async function next(inbox: Inbox): Promise<Message> {
  const m = await inbox.next(() => inbox.reader.message());
  if (m) return m;
  throw inbox.error ?? Object.assign(
    new Error("the server closed the connection"),
    { code: "CONNECTION_CLOSED" },
  );
}

/** What the server said in an ErrorResponse, by field letter. */
class ServerError extends Error {
  static of(body: Uint8Array): ServerError {
    return new ServerError(Object.fromEntries(errorFields(body)));
  }
  constructor(readonly fields: Readonly<Record<string, string | undefined>>) {
    super(`${fields.S ?? "ERROR"}: ${fields.M ?? "server error"} (${fields.C ?? "?"})`);
  }
  get code(): string | undefined {
    return this.fields.C;
  }
}

/**
 * The server said no before it asked for a password: whatever is wrong, the token is not (it was
 * never sent), so the causes of a rejected token must not be listed.
 */
function refusedBeforeToken(error: ServerError, target: Target): StepFailure {
  const said = `${error.fields.M ?? ""} ${error.fields.H ?? ""}`;
  const likely = target.sslmode === "disable" && /encrypt|SSL|TLS/i.test(said)
    ? `the server accepts only TLS connections and refused this plaintext one before asking for ` +
      `a password (no token was sent): remove sslmode=disable`
    : error.code === "3D000" || /role .* does not exist/.test(said)
    ? authCauseFor(error.code, said, target)
    : `the server refused the connection before asking for a password (no token was sent): ` +
      `read its message; the token is not the cause`;
  return new StepFailure("auth", error.message, likely, error.code);
}

async function query(inbox: Inbox<IamSocket>, sql: string): Promise<string> {
  inbox.socket.write(queryMessage(sql));
  let value = "";
  let error: ServerError | undefined;
  for (;;) {
    const m = await next(inbox);
    if (m.type === D) value = dataRow(m.body)[0] ?? "null";
    else if (m.type === E) error = ServerError.of(m.body);
    else if (m.type === Z) {
      if (error) throw error;
      return value;
    }
  }
}

/** The likely cause of a failed login, in plain words. */
function authCauseFor(code: string | undefined, said: string, target: Target): string {
  return code === "3D000"
    ? `the database ${target.database} does not exist`
    : `the database has no user ${target.user}: create it (and GRANT rds_iam TO it on RDS); ` +
      `the server said so before asking for a password: ${said.trim()}`;
}

function authCause(
  error: Error & { code?: string },
  target: Target,
  region: string,
): string {
  const code = error.code;
  if (code === "3D000") return `the database ${target.database} does not exist`;
  if (code === "28000" && /role .* does not exist/.test(error.message)) {
    return `the database has no user ${target.user}: create it (and GRANT rds_iam TO it on RDS)`;
  }
  if (code === "28P01" || code === "28000") {
    const causes: string[] = [];
    const parsed = target.parsed;
    if (parsed && parsed.region !== region) {
      causes.push(`the token is signed for ${region}, but the endpoint is in ${parsed.region}`);
    }
    if (!parsed && target.regionFrom !== undefined) {
      causes.push(
        `the token is signed for region ${region} (as you asked with ${target.regionFrom}): ` +
          `is that the database's region?`,
      );
    }
    if (!parsed) {
      causes.push(
        `the token is signed for ${target.signingHostname}:${target.signingPort}, which is not ` +
          `an endpoint name: behind a tunnel or CNAME, pass the endpoint's name and port with ` +
          `--signing-hostname and --signing-port`,
      );
    }
    if (target.service === "rds") {
      causes.push(
        `the IAM identity lacks rds-db:connect on ` +
          `arn:aws:rds-db:${region}:<account>:dbuser:<DbiResourceId or cluster id>/${target.user}`,
        `the user ${target.user} lacks GRANT rds_iam, or IAM authentication is off on the ` +
          `instance or cluster`,
      );
    } else {
      causes.push(
        target.admin
          ? `the IAM identity lacks dsql:DbConnectAdmin on the cluster`
          : `the IAM identity lacks dsql:DbConnect, or the role ${target.user} is not mapped ` +
            `to it (AWS IAM GRANT ${target.user} TO '<IAM role ARN>')`,
      );
    }
    causes.push(
      `the user name differs in case from the one signed (${target.user})`,
      `this machine's clock is off by more than a few minutes`,
    );
    return `the server rejected the IAM token. Likely causes: ${causes.join("; ")}`;
  }
  if (error.message.includes("timed out")) {
    return `the server's IAM check did not answer in time: the database may be overloaded ` +
      `or IAM throttled; raise --timeout to see how long it takes`;
  }
  return `the server refused the login: ${error.message}`;
}

/** `promise`, or the step's timeout error (ETIMEDOUT, as the OS names one) after `timeoutMs`. */
function within<T>(promise: Promise<T>, timeoutMs: number, step: StepName): Promise<T> {
  return withTimeout(
    promise,
    timeoutMs,
    () =>
      Object.assign(new Error(`${step} timed out after ${timeoutMs / 1000} s`), {
        code: "ETIMEDOUT",
      }),
  );
}
