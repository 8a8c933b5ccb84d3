// pg-iam env and pg-iam psql: libpq's PG* variables with a fresh token and TLS verified, printed
// for `eval` or handed to psql.
//
// libpq checks the certificate against PGHOST. Behind a tunnel, proxy or CNAME the name to check
// is the endpoint's (the signing hostname), so PGHOST gets that name and PGHOSTADDR the address
// actually connected to: libpq then connects to PGHOSTADDR and verifies PGHOST.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { readEnv } from "../core/env.ts";
import { cachedFile, libpqParams } from "../proxy/url.ts";
import { choice, type Command, type Parsed } from "./_args.ts";
import { resolveTarget, signFor, type Target, TARGET_FLAGS } from "./_target.ts";

/** The `env` subcommand. */
export const envCommand: Command = {
  name: "env",
  summary: "Print PG* shell exports with a fresh token, for eval.",
  usage: "[URL] [options]",
  description: `
Prints PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD (a fresh IAM token), PGSSLMODE and, for
verified TLS, PGSSLROOTCERT as shell assignments, for eval "$(pg-iam env …)". RDS endpoints are
checked against the RDS CA bundle, written to pg-iam's cache directory; DSQL against the system's
CAs. Behind a tunnel or CNAME (--signing-hostname), PGHOST is the endpoint name the certificate
carries and PGHOSTADDR the address to connect to. The token expires (900 s by default): run it
again for a new session.`,
  flags: {
    ...TARGET_FLAGS,
    shell: {
      type: "string",
      arg: "SHELL",
      help: "sh, bash or zsh (the default: POSIX export lines), fish, or powershell.",
    },
  },
  positionals: 1,
  examples: [
    `eval "$(pg-iam env postgres://app@db.cluster-c9akciq32.us-east-1.rds.amazonaws.com/orders)"`,
    `psql -c "select current_user"`,
    `pg-iam env postgres://admin@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres --shell fish | source`,
  ],
};

/** The `psql` subcommand. */
export const psqlCommand: Command = {
  name: "psql",
  summary: "Run psql with a fresh token and TLS verified.",
  usage: "[URL] [options] [-- psql arguments]",
  description: `
Runs psql (PSQL overrides the program) with a fresh IAM token and verify-full TLS: the RDS CA
bundle (or, for DSQL, the system's CAs) is written to a private temporary file that is removed when
psql exits. Arguments after -- go to psql. Exits with psql's exit code, except that its 2 (the
connection failed or was lost) is 1, as for every pg-iam command (2 is bad usage).`,
  flags: TARGET_FLAGS,
  positionals: 1,
  examples: [
    "pg-iam psql postgres://app@db.cluster-c9akciq32.us-east-1.rds.amazonaws.com/orders",
    `pg-iam psql postgres://admin@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres -- -c "select 1"`,
  ],
};

// The syntaxes, by the shells that read them: bash and zsh take the POSIX export lines.
const SHELLS = { sh: "sh", bash: "sh", zsh: "sh", fish: "fish", powershell: "powershell" } as const;

/** Runs `pg-iam env`. */
export async function runEnv(args: Parsed, out: (text: string) => void): Promise<number> {
  const names = Object.keys(SHELLS) as (keyof typeof SHELLS)[];
  const shell = SHELLS[choice(args.values, "shell", names, "sh", envCommand.name)];
  const target = resolveTarget(args.positionals[0], args.values, envCommand.name);
  const vars = await pgVariables(target, (pem, name) => cachedFile(pem, name));
  out(
    Object.entries(vars).map(([k, v]) => assignment(shell, k, v))
      .join("\n") + "\n",
  );
  return 0;
}

/** Runs `pg-iam psql`. */
export async function runPsql(args: Parsed): Promise<number> {
  const target = resolveTarget(args.positionals[0], args.values, psqlCommand.name);
  let dir: string | undefined;
  const vars = await pgVariables(target, (pem, name) => {
    dir = mkdtempSync(join(tmpdir(), "pg-iam-")); // mode 0700: private to this user
    const file = join(dir, name);
    writeFileSync(file, pem, { mode: 0o600 });
    return file;
  });
  // psql handles Ctrl-C itself (it cancels the query); we only wait for it to exit.
  const ignore = () => {};
  process.on("SIGINT", ignore);
  try {
    const program = readEnv("PSQL") ?? "psql";
    return await new Promise<number>((resolve, reject) => {
      const child = spawn(program, args.rest, {
        stdio: "inherit",
        env: { ...process.env, ...vars },
      });
      child.on("error", (error: Error & { code?: string }) =>
        reject(
          error.code === "ENOENT"
            ? new Error(
              `${program} not found: install the PostgreSQL client (Debian: apt install ` +
                `postgresql-client; macOS: brew install libpq), or set PSQL to its path`,
            )
            : error,
        ));
      child.on(
        "exit",
        // psql's 2 is a failed connection (an IAM token refused included); pg-iam's 2 is bad usage.
        (code, signal) =>
          resolve(code === 2 ? 1 : code ?? (signal ? 128 + signalNumber(signal) : 1)),
      );
    });
  } finally {
    process.off("SIGINT", ignore);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

function signalNumber(signal: string): number {
  return ({ SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[
    signal
  ] ?? 1;
}

/** The PG* variables for `target`; `caFile` writes a CA bundle and returns its path. */
export async function pgVariables(
  target: Target,
  caFile: (pem: string, name: string) => string,
): Promise<Record<string, string>> {
  const params = await libpqParams(target, await signFor(target), caFile);
  const vars: Record<string, string> = {};
  for (const [keyword, value] of Object.entries(params)) {
    // Parameters libpq reads from no variable (keepalives, replication, sslpassword) are left out.
    if (Object.hasOwn(VARIABLES, keyword)) vars[VARIABLES[keyword]] = value;
  }
  return vars;
}

// libpq's variable for each keyword libpqParams() returns that has one.
const VARIABLES: Record<string, string> = {
  host: "PGHOST",
  hostaddr: "PGHOSTADDR",
  port: "PGPORT",
  user: "PGUSER",
  dbname: "PGDATABASE",
  password: "PGPASSWORD",
  sslmode: "PGSSLMODE",
  sslrootcert: "PGSSLROOTCERT",
  sslcert: "PGSSLCERT",
  sslkey: "PGSSLKEY",
  sslcrl: "PGSSLCRL",
  sslsni: "PGSSLSNI",
  ssl_min_protocol_version: "PGSSLMINPROTOCOLVERSION",
  ssl_max_protocol_version: "PGSSLMAXPROTOCOLVERSION",
  sslnegotiation: "PGSSLNEGOTIATION",
  application_name: "PGAPPNAME",
  options: "PGOPTIONS",
  client_encoding: "PGCLIENTENCODING",
  connect_timeout: "PGCONNECT_TIMEOUT",
  target_session_attrs: "PGTARGETSESSIONATTRS",
};

function assignment(shell: "sh" | "fish" | "powershell", name: string, value: string): string {
  switch (shell) {
    case "sh":
      return `export ${name}='${value.replaceAll("'", `'\\''`)}'`;
    case "fish":
      return `set -gx ${name} '${value.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
    case "powershell":
      return `$env:${name} = '${value.replaceAll("'", "''")}'`;
  }
}
