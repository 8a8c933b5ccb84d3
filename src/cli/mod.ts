#!/usr/bin/env node
/**
 * The `pg-iam` command: IAM tokens for RDS, Aurora and Aurora DSQL from a shell, `psql` with a
 * fresh token, a `doctor` that times every step of an IAM connect, the local IAM-verifying
 * gateway, a local proxy that logs any client in with IAM, and `exec`, which runs a command with
 * `DATABASE_URL` pointing at a proxy of its own. Run it with `deno run -A jsr:@pg-iam/pg-iam/cli`,
 * `npx pg-iam` or `bunx pg-iam`.
 *
 * Exit codes: 0 success, 1 a connect, authentication or credentials failure (or a Deno permission
 * not granted), 2 bad usage; `pg-iam psql` exits with psql's code, its 2 (no connection) made 1;
 * `pg-iam exec` with its command's (128 + a signal's number, 127 for a command not found).
 * Errors are one line on stderr (`--verbose` adds details); tokens and secrets never appear there.
 *
 * @example Shell
 * ```sh
 * PGPASSWORD=$(npx pg-iam token --hostname db.c9akciq32.us-east-1.rds.amazonaws.com --username app) \
 *   psql "host=db.c9akciq32.us-east-1.rds.amazonaws.com user=app sslmode=verify-full"
 * npx pg-iam doctor postgres://app@db.c9akciq32.us-east-1.rds.amazonaws.com/app
 * ```
 *
 * @example From a program
 * ```ts ignore
 * import { main } from "@pg-iam/pg-iam/cli";
 *
 * const exitCode = await main(["token", "--hostname", "db.c9akciq32.us-east-1.rds.amazonaws.com", "--username", "app"]);
 * ```
 *
 * @module
 */

import { commandArgs, exitWhenFlushed, isProgram, writeErr, writeOut } from "./_io.ts";
import { deniedPermissions, EnvAccessError } from "../core/env.ts";
import { type Command, helpText, nearest, parse, type Parsed, UsageError } from "./_args.ts";
import { jsBackend, setCryptoBackend } from "../core/crypto.ts";

/** The version of pg-iam this command belongs to. */
export const VERSION = "0.1.0";

// The Deno permissions each command may need (the AWS credential chain reads files and the
// environment and asks the network), for one message naming all that are missing.
const PERMISSIONS: Record<string, string[]> = {
  token: ["env", "read", "sys", "net"],
  env: ["env", "read", "write", "sys", "net"],
  psql: ["env", "read", "write", "sys", "net", "run"],
  doctor: ["env", "read", "sys", "net"],
  gateway: ["env", "read", "write", "sys", "net"],
  proxy: ["env", "read", "write", "sys", "net"],
  exec: ["env", "read", "write", "sys", "net", "run"],
};

interface CommandModule {
  command: Command;
  run(args: Parsed, out: (text: string) => void): Promise<number>;
}

// Each subcommand is loaded only when it runs, so `pg-iam token` starts without the rest.
const COMMANDS: Record<string, { summary: string; load: () => Promise<CommandModule> }> = {
  token: {
    summary: "Print an IAM token (RDS, Aurora, Aurora DSQL) and nothing else",
    load: () => import("./token.ts"),
  },
  env: {
    summary: "Print PG* shell exports with a fresh token, for eval",
    load: () => import("./env.ts").then((m) => ({ command: m.envCommand, run: m.runEnv })),
  },
  psql: {
    summary: "Run psql with a fresh token and TLS verified",
    load: () => import("./env.ts").then((m) => ({ command: m.psqlCommand, run: m.runPsql })),
  },
  doctor: {
    summary: "Connect for real and time every step; name the one that fails",
    load: () => import("./doctor.ts"),
  },
  gateway: {
    summary: "Run the local IAM-verifying PostgreSQL gateway",
    load: () => import("./gateway.ts"),
  },
  proxy: {
    summary: "Run a local proxy that logs every client in with IAM",
    load: () => import("./proxy.ts"),
  },
  exec: {
    summary: "Run a command with DATABASE_URL and PG* pointing at a proxy of its own",
    load: () => import("./exec.ts"),
  },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length)) + 2;
  return [
    `pg-iam ${VERSION}: IAM database authentication for PostgreSQL on AWS`,
    "",
    "Usage: pg-iam <command> [options]",
    "",
    "Commands:",
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`),
    "",
    "Run pg-iam <command> --help for a command's options.",
    "Exit codes: 0 success, 1 connect, authentication or credentials failure, 2 bad usage",
    "(pg-iam psql: psql's own, its 2 for a failed connection made 1; pg-iam exec: its command's).",
    "",
  ].join("\n");
}

/**
 * Runs the `pg-iam` command with `args` (what follows `pg-iam`), writing to stdout and stderr.
 * Resolves to the exit code; never rejects. `pg-iam gateway` and `pg-iam proxy` resolve when they
 * are stopped, `pg-iam exec` when its command ends.
 *
 * @param args The command line after the program name, for example `["token", "--help"]`.
 * @returns 0 on success, 1 on a connect, authentication or credentials failure, 2 on bad usage.
 *
 * @example
 * ```ts ignore
 * import { main } from "@pg-iam/pg-iam/cli";
 *
 * Deno.exit(await main(Deno.args));
 * ```
 */
export async function main(args: readonly string[]): Promise<number> {
  const out = writeOut;
  const err = writeErr;
  const [name, ...rest] = args;
  const verbose = rest.includes("--verbose");
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    const topic = name === "help" ? rest[0] : undefined;
    if (topic === undefined) {
      out(usage());
      return 0;
    }
    return main([topic, "--help"]);
  }
  if (name === "--version" || name === "-v" || name === "version") {
    out(`${VERSION}\n`);
    return 0;
  }
  const entry = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!entry) {
    const near = nearest(name, Object.keys(COMMANDS));
    err(
      `pg-iam: unknown command ${JSON.stringify(name)}` +
        (near ? `; did you mean ${JSON.stringify(near)}?` : "") + " (see pg-iam --help)\n",
    );
    return 2;
  }
  let permissions = PERMISSIONS[name];
  try {
    const mod = await entry.load();
    const parsed = parse(mod.command, rest);
    if (parsed.values.help) {
      out(helpText(mod.command));
      return 0;
    }
    // token --format url and json write the RDS CA bundle to the cache, as env does.
    if (name === "token" && (parsed.values.format ?? "token") !== "token") {
      permissions = PERMISSIONS.env;
    }
    // Deno would prompt at each first use: every environment variable and each permission, one by
    // one. Asked once here instead, before anything runs.
    const missing = deniedPermissions(permissions);
    if (missing.length) {
      err(
        `pg-iam ${name}: Deno has not granted all the permissions pg-iam ${name} may use. ` +
          `Grant them in one go: ${missing.map((p) => `--allow-${p}`).join(" ")} (or -A)\n`,
      );
      return 1;
    }
    return await mod.run(parsed, out);
  } catch (error) {
    const denied = permissionError(error) ? deniedPermissions(permissions) : [];
    if (denied.length) {
      err(
        `pg-iam ${name}: Deno refused a permission (${oneLine(permissionError(error))}). ` +
          `Grant all that pg-iam ${name} may use, in one go: ` +
          `${denied.map((p) => `--allow-${p}`).join(" ")} (or -A)\n`,
      );
      if (verbose) err(details(error));
      return 1;
    }
    const usageError = error instanceof UsageError || error instanceof TypeError ||
      error instanceof RangeError;
    err(
      `pg-iam ${name}: ${oneLine(error)}` + (usageError ? ` (see pg-iam ${name} --help)` : "") +
        "\n",
    );
    if (verbose) err(details(error));
    return usageError ? 2 : 1;
  }
}

/** The runtime's refusal of a permission in `error` or its causes, if that is what it is. */
function permissionError(error: unknown): Error | undefined {
  for (let e = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof EnvAccessError) return e.cause instanceof Error ? e.cause : e;
    if (e.name === "NotCapable" || e.name === "PermissionDenied") return e;
  }
  return undefined;
}

function oneLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/\s*\n\s*/g, " ").trim();
}

/** The stack and the chain of causes, for --verbose. */
function details(error: unknown): string {
  const lines: string[] = [];
  for (let e = error, depth = 0; e !== undefined && depth < 8; depth++) {
    if (e instanceof Error) {
      lines.push((depth ? "caused by: " : "") + (e.stack ?? `${e.name}: ${e.message}`));
      e = e.cause;
    } else {
      lines.push(`caused by: ${String(e)}`);
      break;
    }
  }
  return lines.join("\n") + "\n";
}

// Deno and Bun say whether this is the program; so does the npm bin (scripts/build-bin.mjs defines
// it); on Node, the script path tells.
if (isProgram((import.meta as ImportMeta & { main?: boolean }).main, import.meta.url)) {
  // A command signs a token or two: the plain-JS hash takes microseconds and nothing to load, where
  // loading node:crypto would add ~4 ms to Node's start (Bun's native hasher is a global: kept).
  if ((globalThis as { Bun?: unknown }).Bun === undefined) setCryptoBackend(jsBackend);
  // Exit once stdout is flushed: sockets or timers left by a failed connect must not hold us.
  main(commandArgs()).then(exitWhenFlushed);
}
