// pg-iam token: prints a token and nothing else, for PGPASSWORD=$(pg-iam token …); with --format
// url, a libpq connection URL carrying it, for tools configured with one; with --format json, both
// and what they were made of.

import { choice, type Command, type Parsed } from "./_args.ts";
import { lower, resolveTarget, signFor, type Target, TARGET_FLAGS } from "./_target.ts";

const FORMATS = ["token", "url", "json"] as const;

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
optional iam_region, iam_host, iam_port, iam_expires_in, iam_admin and iam_profile parameters.
--format url prints a libpq connection URL instead, the token as its password, with URL's libpq
parameters (not iam_*) and TLS as pg-iam verifies it (the RDS CA bundle written to pg-iam's cache,
the system's CAs for DSQL, both as files, as env writes them); --format json prints an object with the token, that URL, and what
they were made of (host, port, user, database, region, service, expiresAt, sslmode, sslrootcert).`,
  // The database and TLS flags are for the commands that connect, and for --format url and json.
  flags: {
    ...Object.fromEntries(
      Object.entries(TARGET_FLAGS).filter(([name]) =>
        !["database", "sslmode", "sslrootcert", "dangerously-disable-tls"].includes(name)
      ),
    ),
    format: {
      type: "string",
      arg: "FORMAT",
      help: "token (the default): the token alone; url: a postgres:// URL with the token as its " +
        "password; json: an object with both.",
    },
    ...Object.fromEntries(
      ["database", "sslmode", "sslrootcert", "dangerously-disable-tls"].map((name) => [name, {
        ...TARGET_FLAGS[name],
        help: `With --format url or json: ${lower(TARGET_FLAGS[name].help)}`,
      }]),
    ),
  },
  positionals: 1,
  examples: [
    "pg-iam token --hostname db.cluster-c9akciq32.us-east-1.rds.amazonaws.com --port 5432 \\",
    "  --username app",
    "PGPASSWORD=$(pg-iam token postgres://app@db.c9akciq32.us-east-1.rds.amazonaws.com/app) psql …",
    "pg-iam token --hostname abcdefghijklmnopqrstuvwxyz --region us-east-1 --admin",
    `psql "$(pg-iam token postgres://app@db.c9akciq32.us-east-1.rds.amazonaws.com/app --format url)"`,
  ],
};

/** Runs `pg-iam token`. */
export async function run(args: Parsed, out: (text: string) => void): Promise<number> {
  const format = choice(args.values, "format", FORMATS, "token", command.name);
  const target = resolveTarget(args.positionals[0], args.values, command.name);
  if (format === "token") {
    out(`${await signFor(target)}\n`);
    return 0;
  }
  const description = await describe(target);
  out(
    format === "url" ? `${description.url}\n` : `${JSON.stringify(description, null, 2)}\n`,
  );
  return 0;
}

/** What `--format json` prints. */
interface Description {
  token: string;
  url: string;
  host: string;
  port: number;
  user: string;
  database: string;
  region: string;
  service: "rds" | "dsql";
  expiresAt: string;
  sslmode: string;
  sslrootcert: string | null;
}

async function describe(target: Target): Promise<Description> {
  // Only here: url.ts imports node: modules, which the bare token's start on Deno does without.
  const { cachedFile, libpqParams, libpqUrl } = await import("../proxy/url.ts");
  // Whole seconds, as the token's X-Amz-Date: expiresAt is then exactly when it stops working.
  const at = new Date(Math.floor(Date.now() / 1000) * 1000);
  const token = await signFor(target, undefined, at);
  const params = await libpqParams(target, token, cachedFile);
  return {
    token,
    url: libpqUrl(params),
    host: params.host,
    port: target.port,
    user: target.user,
    database: target.database,
    region: await target.region,
    service: target.service,
    expiresAt: new Date(at.getTime() + target.expiresIn * 1000).toISOString(),
    sslmode: target.sslmode,
    sslrootcert: params.sslrootcert ?? null,
  };
}
