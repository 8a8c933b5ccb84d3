// pg-iam exec: a command run with DATABASE_URL and the PG* variables pointing at a proxy of its own
// (./proxy, on a free loopback port), for tools that cannot sign a token themselves.

import { type ChildProcess, spawn } from "node:child_process";
import { constants, userInfo } from "node:os";
import process from "node:process";
import { readEnv } from "../core/env.ts";
import { type Proxy, startProxy } from "../proxy/mod.ts";
import { type Command, int, type Parsed, str, UsageError } from "./_args.ts";
import { onSignals, printable } from "./_serve.ts";
import { listenError, loginLine, PROXY_TARGET_FLAGS, proxyTarget } from "./proxy.ts";

/** The `exec` subcommand. */
export const command: Command = {
  name: "exec",
  summary: "Run a command with DATABASE_URL and PG* pointing at a proxy of its own.",
  usage: "[URL] [options] -- <command> [args…]",
  description: `
Starts the proxy (see pg-iam proxy) on 127.0.0.1 with a free port, or on --unix-socket DIR, and
runs the command with DATABASE_URL=postgres://USER@127.0.0.1:PORT/DB?sslmode=disable and PGHOST,
PGPORT, PGUSER, PGDATABASE and PGSSLMODE=disable pointing at it, so that a tool that reads either
(psql, prisma, drizzle-kit, knex, any libpq program) connects with IAM and no password. USER and DB
are the target's, else PGUSER and PGDATABASE, else libpq's defaults (the login name; the user's
name for the database; admin and postgres for DSQL). PGPASSWORD, PGPASSFILE, PGHOSTADDR, PGSERVICE
and the PGSSL* variables of the server are not passed on. SIGINT, SIGTERM and SIGHUP are forwarded
to the command; pg-iam exec exits with its exit code (128 + the signal's number if a signal ended
it; 127 if it is not found), then stops the proxy. Each failed login is one line on stderr.`,
  flags: {
    ...PROXY_TARGET_FLAGS,
    "unix-socket": {
      type: "string",
      arg: "DIR",
      help: "Listen on DIR/.s.PGSQL.5432 instead (PGHOST is then DIR).",
    },
    "connect-timeout": {
      type: "string",
      arg: "SECONDS",
      help: "Each upstream login's limit. Default: the URL's connect_timeout, else 30.",
    },
    "database-url-var": {
      type: "string",
      arg: "NAME",
      help: "Also set the URL as NAME (e.g. PRISMA_DATABASE_URL), besides DATABASE_URL.",
    },
  },
  // What is not after -- is a mistake the run() names.
  positionals: Infinity,
  examples: [
    "pg-iam exec postgres://app@db.cluster-c9akciq32.us-east-1.rds.amazonaws.com/orders \\",
    "  -- npx prisma migrate deploy",
    `pg-iam exec postgres://app@db.c9akciq32.us-east-1.rds.amazonaws.com/app -- psql -c "select 1"`,
  ],
};

// libpq's variables of the server connection that would contradict the proxy's: a password, a
// service file, another address, TLS settings for the server (the proxy does TLS upstream).
const DROPPED =
  /^PG(PASSWORD|PASSFILE|HOSTADDR|SERVICE|SERVICEFILE|SSL.*|REQUIRESSL|GSSENCMODE|REQUIREAUTH|CHANNELBINDING|KRBSRVNAME|GSSLIB|GSSDELEGATION|TARGETSESSIONATTRS|LOADBALANCEHOSTS)$/;

// libpq's default port, in the socket's name: a client given only the directory finds it.
const SOCKET_PORT = 5432;

/** Runs `pg-iam exec`: resolves the command's exit code. */
export async function run(args: Parsed): Promise<number> {
  const v = args.values;
  const usage = (text: string) => new UsageError(text, command.name);
  const [url, ...extra] = args.positionals;
  if (extra.length > 0) {
    throw usage(
      `put the command after --: pg-iam exec ${url} [options] -- ${extra.join(" ")} …` +
        ` (unexpected argument ${JSON.stringify(extra[0])})`,
    );
  }
  const [program, ...programArgs] = args.rest;
  if (program === undefined) {
    throw usage(`no command to run: pg-iam exec [URL] [options] -- <command> [args…]`);
  }
  const urlVar = str(v, "database-url-var");
  if (urlVar !== undefined && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(urlVar)) {
    throw usage(`--database-url-var must be a variable name, got ${JSON.stringify(urlVar)}`);
  }
  const target = proxyTarget(url, v, command.name);
  const dir = str(v, "unix-socket");
  const connectTimeout = int(v, "connect-timeout", 1, 2_147_483, command.name);
  const user = target.parsed.user ?? (target.dsql ? "admin" : loginName());
  const database = target.parsed.database ?? (target.dsql ? "postgres" : user);

  let proxy: Proxy;
  try {
    proxy = await startProxy({
      ...target.options,
      listen: dir === undefined ? { host: "127.0.0.1", port: 0 } : { dir, port: SOCKET_PORT },
      ...(connectTimeout === undefined ? {} : { connectTimeout }),
      shutdownTimeout: 0,
      // The command sees its own error; this line says where the login failed and why.
      onLogin: (login) => {
        if (!login.ok) process.stderr.write(`pg-iam exec: ${loginLine(login)}`);
      },
    });
  } catch (error) {
    throw listenError(error, dir === undefined ? "a port on 127.0.0.1" : `the socket in ${dir}`);
  }
  try {
    const e = encodeURIComponent;
    const host = dir === undefined ? proxy.host : dir;
    // The socket's port is the one in its name (the proxy reports 0 for a socket).
    const port = dir === undefined ? proxy.port : SOCKET_PORT;
    const databaseUrl = `postgres://${e(user)}@${dir === undefined ? host : e(host)}:${port}` +
      `/${e(database)}?sslmode=disable`;
    const env: Record<string, string> = {};
    for (const [name, value] of Object.entries(process.env)) {
      if (value !== undefined && !DROPPED.test(name)) env[name] = value;
    }
    Object.assign(env, {
      DATABASE_URL: databaseUrl,
      PGHOST: host,
      PGPORT: String(port),
      PGUSER: user,
      PGDATABASE: database,
      PGSSLMODE: "disable",
      ...(urlVar === undefined ? {} : { [urlVar]: databaseUrl }),
    });
    return await runChild(program, programArgs, env);
  } finally {
    // The command is gone: what it left connected goes with it.
    await proxy.close();
  }
}

/** Runs `program` with `env`, signals forwarded; resolves its exit code as a shell reports it. */
function runChild(program: string, args: string[], env: Record<string, string>): Promise<number> {
  return new Promise<number>((resolve) => {
    // Listening before the command starts: it may tell the world it runs before spawn() returns.
    const running: { child?: ChildProcess } = {};
    const forwarding = onSignals(["SIGINT", "SIGTERM", "SIGHUP"], (signal) => {
      // By process id: Deno's child_process reports a child it was asked to kill as killed by
      // that signal, whatever the child then does (a trap's own exit code).
      try {
        if (running.child?.pid !== undefined) process.kill(running.child.pid, signal);
      } catch {
        // Already gone.
      }
    });
    let settled = false;
    const done = (code: number) => {
      if (settled) return;
      settled = true;
      forwarding();
      resolve(code);
    };
    const child = running.child = spawn(program, args, { stdio: "inherit", env });
    child.once("error", (error: Error & { code?: string }) => {
      if (settled) return;
      // As shells: 127 not found, 126 found but not runnable.
      const missing = error.code === "ENOENT";
      process.stderr.write(
        `pg-iam exec: ${printable(program, 200)}: ${
          missing ? "command not found" : `cannot run it: ${printable(error.message)}`
        }\n`,
      );
      done(missing ? 127 : 126);
    });
    child.once("exit", (code, signal) => {
      done(code ?? 128 + (signal ? signalNumber(signal) : 0));
    });
  });
}

function signalNumber(signal: string): number {
  const numbers = constants?.signals as Record<string, number> | undefined;
  return numbers?.[signal] ??
    ({ SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[
      signal
    ] ?? 0;
}

/** libpq's default user: the login name. */
function loginName(): string {
  try {
    return userInfo().username;
  } catch {
    return readEnv("USER") ?? readEnv("LOGNAME") ?? "postgres";
  }
}
