// pg-iam token: prints a token and nothing else, for PGPASSWORD=$(pg-iam token …).

import type { Command, Parsed } from "./_args.ts";
import { resolveTarget, signFor, TARGET_FLAGS } from "./_target.ts";

/** The `token` subcommand. */
export const command: Command = {
  name: "token",
  summary: "Print an IAM token for RDS, Aurora or Aurora DSQL (and nothing else).",
  usage: "[URL] [options]",
  description: `
Signs an IAM authentication token with the credentials of the environment, the AWS profile or the
standard AWS chain, and prints it on stdout followed by a newline. The flags are those of
\`aws rds generate-db-auth-token\`; DSQL is recognised from the endpoint name (or --dsql), and a bare
DSQL cluster id with --region expands to its endpoint. URL is postgres://user@host:port/db, with
optional iam_region, iam_host, iam_port, iam_expires_in, iam_admin and iam_profile parameters.`,
  // The TLS and database flags are for the commands that connect.
  flags: Object.fromEntries(
    Object.entries(TARGET_FLAGS).filter(([name]) =>
      !["database", "sslmode", "sslrootcert", "dangerously-disable-tls"].includes(name)
    ),
  ),
  positionals: 1,
  examples: [
    "pg-iam token --hostname db.cluster-c9akciq32.us-east-1.rds.amazonaws.com --port 5432 \\",
    "  --username app",
    "PGPASSWORD=$(pg-iam token postgres://app@db.c9akciq32.us-east-1.rds.amazonaws.com/app) psql …",
    "pg-iam token --hostname abcdefghijklmnopqrstuvwxyz --region us-east-1 --admin",
  ],
};

/** Runs `pg-iam token`. */
export async function run(args: Parsed, out: (text: string) => void): Promise<number> {
  const target = resolveTarget(args.positionals[0], args.values, command.name);
  out(`${await signFor(target)}\n`);
  return 0;
}
