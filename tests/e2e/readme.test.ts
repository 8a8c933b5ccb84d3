// The code blocks of README.md and of every docs/*.md page it links to, run as written. Every ```ts,
// ```js and ```sh block is either run here,
// on the runtime running this file (Node through tsx --test, Deno, Bun), or mirrored by a named test
// that does what it shows; COVERAGE says which, and the first test fails for a block that is in
// neither, or for a named test that no longer exists. ```text and untagged blocks are sample output;
// ```json blocks (configurations to copy) must parse.
//
// Run here means: in a fresh project of the kind the README names, outside this repository, with
// the README's own command. Node and Bun: `npm init -y`, then `npm install pg-iam postgres pg`
// with the npm tarball of this checkout (built by `npm pack` from a copy, so dist/ is not touched)
// standing in for the registry's; each block is saved as app.mjs (Node) or app.ts (Bun) with its
// imports switched to the npm name its `// npm:` comment gives. Deno: a deno.json whose imports
// map `@pg-iam/pg-iam` and its subpaths to this checkout's sources (what `deno add jsr:…` would
// map them to on jsr.io), and the block saved unchanged as app.ts.
//
// AWS is not reachable here, so blocks that connect reach the local IAM gateway instead, in front
// of the tests' PostgreSQL. What is substituted, and nothing else:
// - the environment: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are the gateway's keys; DATABASE_URL
//   is the gateway's URL (127.0.0.1, iam_host the endpoint name, sslrootcert its CA); for the
//   blocks naming the endpoint (orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com) literally,
//   PGHOSTADDR=127.0.0.1 and PGPORT say where the gateway listens (the name stays the one signed
//   and verified) and PGSSLROOTCERT names its CA. The gateway relays to the database "postgres",
//   as the tests' server has no "orders"; the user is the client's (app).
// - Deno's permissions: --allow-read is added where PGSSLROOTCERT is read.
// - TypeScript blocks with type annotations run on Node through this repository's tsx (the README
//   says `npx tsx app.mts`); `deno run -A jsr:@pg-iam/pg-iam/cli` runs this checkout's CLI.
// - The gateway example's upstream is the tests' PostgreSQL rather than 127.0.0.1:5432.
// - Blocks that are part of an app that goes on (a pool left open, a handler, a Worker) are driven
//   by a few lines that import the block's module, call what it exports, then exit.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { generateTls } from "../../src/cli/_cert.ts";
import { type Gateway, startGateway } from "../../src/gateway/mod.ts";
import { upstreamPostgres } from "../_postgres.ts";
import { postgresMajor } from "../_postgres_major.mjs";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** README.md, then every page of docs/ (each one; a new page is scanned without being listed). */
const PAGES = [
  "README.md",
  ...readdirSync(join(ROOT, "docs")).filter((f) => f.endsWith(".md")).sort().map((f) =>
    `docs/${f}`
  ),
];
const RUNTIME: "node" | "deno" | "bun" = "Deno" in globalThis
  ? "deno"
  : "Bun" in globalThis
  ? "bun"
  : "node";
const ORDERS = "orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com";
const KEYS = { accessKeyId: "AKIDPGIAMREADME", secretAccessKey: "pg-iam/readme/secret" };
const SLOW = { timeout: 180_000 };

// ---- which test covers which block -----------------------------------------------------------

/** A block, found by a line it alone contains, and the tests (file, name) that run or mirror it. */
interface Cover {
  find: string;
  by: Array<[file: string, name: string]>;
}
const HERE = "tests/e2e/readme.test.ts";
const T = {
  project: "README Install: this checkout's npm tarball installs into a fresh project",
  imports: "README: every import shows the JSR name, and the npm name where it differs",
  tokens:
    "README and docs/tokens.md: the token examples (rdsToken, a tunnel, dsqlToken) run as written",
  postgres:
    "README and docs/postgres.md: the first example and app.ts run as written, with the page's command",
  dsql: "docs/dsql.md: iamPostgres() for a DSQL endpoint runs as written",
  serverless: "docs/serverless.md: the Lambda handler runs as written, logging one cold-start line",
  pg: "README node-postgres: iamPool() runs as written",
  bun: "README Bun.SQL: iamSql() runs as written (Bun only)",
  gateway:
    "docs/gateway.md: the certificate commands and the example run as written; without now, the client is refused once the clock moves (the control)",
  cli: "docs/cli.md: the --help line of this runtime runs as written",
  worker: "docs/workers.md: the Worker's fetch runs as written",
  demo: "README: npm run demo runs with zero failures (Node)",
  quick: "README Quick start: app.mjs logs in through the gateway with DATABASE_URL",
} as const;

const COVERAGE: Cover[] = [
  // docs/options.md: the logger option with pino.
  {
    find: "warn: (message, error) => log.warn({ err: error }, message),",
    by: [
      [
        "tests/e2e/logger.test.ts",
        "logger: a real pino logger takes the calls as they are (the message), and the documented wrapper gives pino the Error as err",
      ],
    ],
  },
  // docs/proxy.md and the README's proxy line.
  {
    find:
      "npx pg-iam proxy postgres://app@orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com/orders \\",
    by: [
      [
        "tests/e2e/proxy-cli.test.ts",
        "pg-iam proxy --listen 0 --http 0 --json: a ready line, psql logs in through it with no password (the gateway verified the token; straight at the gateway psql is refused, the control), login and close lines without any secret; SIGTERM stops it gracefully: an open session finishes, a new connection is refused, /readyz answers 503 (200 before, the control), exit 0",
      ],
      [
        "tests/e2e/proxy.test.ts",
        "startProxy: psql logs in through the proxy with no password (the gateway verified an IAM token over TLS); the same psql straight at the gateway is asked for a password it has not (the control)",
      ],
    ],
  },
  {
    find: "npx pg-iam exec $TARGET -- npx prisma migrate deploy",
    by: [
      [
        "tests/e2e/proxy-cli.test.ts",
        "pg-iam exec TARGET -- psql -tAc 'select current_user' prints the result and exits 0 (its token checked by the gateway); -- sh -c 'exit 3' exits 3 (the control for the exit code), no-such-command 127, no command or a command without -- 2",
      ],
      [
        "tests/e2e/proxy-cli.test.ts",
        "pg-iam exec: the command sees DATABASE_URL, PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE pointing at the proxy and no PGPASSWORD or PGSSLROOTCERT; the same sh run directly sees them (the control)",
      ],
      [
        "tests/e2e/proxy-clients.test.ts",
        "pg-iam exec TARGET -- knex migrate:latest applies its migrations through the proxy; with keys the server refuses, nothing is applied (the control)",
      ],
      [
        "tests/e2e/proxy-clients.test.ts",
        "pg-iam exec TARGET -- drizzle-kit migrate applies its migrations through the proxy; with keys the server refuses, nothing is applied (the control)",
      ],
      [
        "tests/e2e/proxy-clients.test.ts",
        "psycopg2 through the proxy: a new connection every 20 minutes for 3 simulated hours logs in, and a session opened at the start still answers at the end; a token frozen at the start (libpq's PGPASSWORD straight at the gateway) is refused after 15 minutes (the control)",
      ],
    ],
  },
  {
    find:
      "npx pg-iam exec postgres://app@orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com/orders \\",
    by: [
      [
        "tests/e2e/proxy-cli.test.ts",
        "pg-iam exec TARGET -- psql -tAc 'select current_user' prints the result and exits 0 (its token checked by the gateway); -- sh -c 'exit 3' exits 3 (the control for the exit code), no-such-command 127, no command or a command without -- 2",
      ],
      [
        "tests/e2e/proxy-cli.test.ts",
        "pg-iam exec: the command sees DATABASE_URL, PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE pointing at the proxy and no PGPASSWORD or PGSSLROOTCERT; the same sh run directly sees them (the control)",
      ],
    ],
  },
  {
    find: 'npx pg-iam proxy "$TARGET" --listen 127.0.0.1:5432 --http 0.0.0.0:9090 --json',
    by: [
      [
        "tests/e2e/proxy-cli.test.ts",
        "pg-iam proxy --listen 0 --http 0 --json: a ready line, psql logs in through it with no password (the gateway verified the token; straight at the gateway psql is refused, the control), login and close lines without any secret; SIGTERM stops it gracefully: an open session finishes, a new connection is refused, /readyz answers 503 (200 before, the control), exit 0",
      ],
      [
        "tests/e2e/proxy.test.ts",
        "startProxy's http port: /metrics counts a login, its token, its connect time and bytes, and a failed login by its step; /readyz turns 503 as shutdown() starts draining, while a session finishes; close() frees the port",
      ],
    ],
  },
  {
    find: "onLogin: (login) => console.log(login.ok, login.user, login.timings?.totalMs),",
    by: [
      [
        "tests/e2e/proxy.test.ts",
        "startProxy: psql logs in through the proxy with no password (the gateway verified an IAM token over TLS); the same psql straight at the gateway is asked for a password it has not (the control)",
      ],
      [
        "tests/e2e/proxy.test.ts",
        "startProxy: shutdown() stops accepting at once and lets an open session finish its query; close() after the limit drops the rest",
      ],
    ],
  },
  {
    find: "const url = await iamUrl({",
    by: [
      [
        "tests/e2e/proxy.test.ts",
        "iamUrl(): psql and node-postgres (whose connection-string parser drizzle-kit uses) log in through the gateway with the URL, TLS verified with the connection string's CA file; the URL with its token altered is refused (the control)",
      ],
    ],
  },
  {
    find: "pg-iam proxy postgres://db.cluster-c9akciq32.us-east-1.rds.amazonaws.com &",
    by: [
      [
        "tests/e2e/proxy-cli.test.ts",
        "pg-iam proxy --listen 0 --http 0 --json: a ready line, psql logs in through it with no password (the gateway verified the token; straight at the gateway psql is refused, the control), login and close lines without any secret; SIGTERM stops it gracefully: an open session finishes, a new connection is refused, /readyz answers 503 (200 before, the control), exit 0",
      ],
      [
        "tests/e2e/proxy-cli.test.ts",
        "pg-iam exec --unix-socket DIR: psql logs in through the proxy's socket with $DATABASE_URL and with the PG* variables (DIR created owner-only); the same psql with the TCP host is refused by the gateway (the control: no token of its own)",
      ],
    ],
  },
  {
    find: "pg-iam exec $DB -- npx prisma migrate deploy",
    by: [
      [
        "tests/e2e/proxy-cli.test.ts",
        "pg-iam exec TARGET -- psql -tAc 'select current_user' prints the result and exits 0 (its token checked by the gateway); -- sh -c 'exit 3' exits 3 (the control for the exit code), no-such-command 127, no command or a command without -- 2",
      ],
      [
        "tests/e2e/proxy-cli.test.ts",
        "pg-iam exec: the command sees DATABASE_URL, PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE pointing at the proxy and no PGPASSWORD or PGSSLROOTCERT; the same sh run directly sees them (the control)",
      ],
    ],
  },
  // docs/observability.md: a subscriber of one's own, and the OpenTelemetry recipe (examples/otel.ts).
  {
    find: "console.log(JSON.stringify({ token: { user, reused, signMs, credentialsSource } }));",
    by: [[
      "tests/e2e/otel.test.ts",
      "docs/observability.md: a subscriber of one's own logs one JSON line per connect (its steps' timings) and per token, postgres.js through the gateway, none with a secret; before it subscribes and after, a connect logs nothing (the controls)",
    ]],
  },
  {
    find: 'import { instrumentPgIam } from "./otel.ts";',
    by: [
      [
        "tests/e2e/otel.test.ts",
        "otel recipe, end to end: two postgres.js connections through the gateway are two pg-iam.connect spans with the contract's attributes, the five steps as events, each lasting at least its steps' sum; one token signed, one reused; no secret in any attribute (the search finds a planted one); unsubscribed, a further connect records nothing (the control)",
      ],
      [
        "tests/e2e/otel.test.ts",
        "otel recipe, end to end: keys the gateway refuses make an error span (error.type, pgiam.step auth, 2 attempts), a failure counted by step, two tokens signed and none reused, no secret anywhere; the right keys beside it make an ok span and count no failure (the control)",
      ],
      [
        "tests/e2e/otel.test.ts",
        "otel recipe, by hand: a contract-shaped connect on pg-iam:connect is one pg-iam.connect span from start to asyncEnd, with the attributes and the steps as events in order, and a duration point; unsubscribed, the same messages record nothing (the control)",
      ],
    ],
  },
  { find: "// region comes from the name", by: [[HERE, T.tokens]] },
  { find: "npm install pg-iam              # Node, Bun, from npm", by: [[HERE, T.project]] },
  {
    find: "npx pg-iam gateway --listen 5433 & # prints the URL below",
    by: [
      [
        "tests/e2e/cli.test.ts",
        "pg-iam gateway without --upstream serves an embedded PGlite, reachable with the URL it prints",
      ],
      [
        "tests/e2e/cli.test.ts",
        "the URL pg-iam gateway prints works unchanged: iamPostgres(), the README's DATABASE_URL recipes, token, env, psql, doctor",
      ],
    ],
  },
  { find: "// app.mjs: the quick start", by: [[HERE, T.quick]] },
  { find: "const rows = await sql`select ${id}::int as id", by: [[HERE, T.postgres]] },
  { find: "// app.ts (on Node: app.mjs)", by: [[HERE, T.postgres]] },
  { find: "&& node app.mjs", by: [[HERE, T.postgres]] },
  { find: 'user: "admin", // DbConnectAdmin', by: [[HERE, T.dsql]] },
  {
    find: 'begin: "isolation level serializable", // RDS, Aurora, PostgreSQL',
    by: [
      [
        "tests/e2e/transaction.test.ts",
        "postgres.js: concurrent SERIALIZABLE increments all land with transaction(); without it some fail (the control)",
      ],
      [
        "tests/e2e/transaction.test.ts",
        "postgres.js: the docs' counter loses no increment with begin: serializable; under READ COMMITTED (no begin) it loses them (the control)",
      ],
    ],
  },
  {
    find: "await transaction(tx, (sp) => sp`insert into audit (order_id)",
    by: [[
      "tests/e2e/transaction.test.ts",
      "postgres.js: transaction() three deep on a pool of 2: given the pool inside fn it fails at once with a TypeError, given fn's handle it nests in savepoints; the pool answers after",
    ]],
  },
  { find: "export async function handler(event: { id: number })", by: [[HERE, T.serverless]] },
  {
    find: "console.error(`${error.code} at ${error.step} (${error.host}:${error.port})`);",
    by: [[
      "tests/e2e/connect-error.test.ts",
      "docs/errors.md: the ConnectError example logs a refused connection, not the server's error (the control)",
    ]],
  },
  {
    find: 'import { drizzle } from "drizzle-orm/postgres-js";',
    by: [["tests/e2e/recipes.test.ts", "recipe: Drizzle on an iamPostgres() client"]],
  },
  {
    find: 'import { PostgresJSDialect } from "kysely-postgres-js";',
    by: [[
      "tests/e2e/recipes.test.ts",
      "recipe: Kysely with kysely-postgres-js on an iamPostgres() client",
    ]],
  },
  { find: 'const { rows } = await pool.query("select current_user");', by: [[HERE, T.pg]] },
  {
    find: "// Prisma 7 with @prisma/adapter-pg",
    by: [[
      "tests/e2e/recipes-pg.test.ts",
      "recipe: Prisma 7 with @prisma/adapter-pg on an iamPool()",
    ]],
  },
  {
    find: 'import { drizzle } from "drizzle-orm/node-postgres";',
    by: [[
      "tests/e2e/recipes-pg.test.ts",
      "recipe: Drizzle (drizzle-orm/node-postgres) on an iamPool()",
    ]],
  },
  {
    find: "import { Kysely, PostgresDialect }",
    by: [["tests/e2e/recipes-pg.test.ts", "recipe: Kysely's PostgresDialect on an iamPool()"]],
  },
  {
    find: "// Knex 3.3 or later",
    by: [["tests/e2e/recipes-pg.test.ts", "recipe: Knex (connectionPool) on an iamPool()"]],
  },
  {
    find: "// TypeORM: its driver option",
    by: [["tests/e2e/recipes-pg.test.ts", "recipe: TypeORM (driver.Pool) on an iamPool()"]],
  },
  { find: "const sql = iamSql(process.env.DATABASE_URL", by: [[HERE, T.bun]] },
  { find: '-subj "/CN=local gateway CA"', by: [[HERE, T.gateway]] },
  { find: 'import { startGateway } from "@pg-iam/pg-iam/gateway";', by: [[HERE, T.gateway]] },
  { find: "npx pg-iam --help", by: [[HERE, T.cli]] },
  {
    find: 'PGPASSWORD="$(pg-iam token --hostname',
    by: [
      [
        "tests/e2e/cli.test.ts",
        "pg-iam token prints one token that the gateway accepts; one signed with another secret is rejected",
      ],
      [
        "tests/e2e/cli.test.ts",
        "pg-iam token takes a connection URL, and signs DSQL for a bare cluster id with --region",
      ],
    ],
  },
  {
    find: 'psql "$(pg-iam token postgres://app@',
    by: [
      [
        "tests/e2e/token-url.test.ts",
        "pg-iam token --format url: psql logs in through the gateway with the printed URL, TLS verified, application_name kept and iam_* dropped; the URL with its token altered is refused (the control)",
      ],
      [
        "tests/e2e/token-url.test.ts",
        "pg-iam token --format json: the token, the URL and what they were made of, field by field; expiresAt is the signing time plus the expiry",
      ],
      [
        "tests/e2e/token-url.test.ts",
        "pg-iam token --format: the RDS CA bundle where pg-iam env caches it, the system's CAs in a file for DSQL, libpq parameters kept and iam_* dropped; a bad --format exits 2 naming it",
      ],
    ],
  },
  {
    find: 'eval "$(pg-iam env postgres://',
    by: [
      [
        "tests/e2e/cli.test.ts",
        "eval of pg-iam env lets psql log in through the gateway with verified TLS, until the token expires",
      ],
      [
        "tests/e2e/cli.test.ts",
        "pg-iam psql runs psql with a fresh token and verified TLS; psql's exit code is its own but for a failed connection's 2, which is 1 (psql alone exits 2: the control)",
      ],
    ],
  },
  {
    find: "#   connect:   postgres://postgres@localhost:5433/postgres",
    by: [
      [
        "tests/e2e/cli.test.ts",
        "pg-iam gateway without --upstream serves an embedded PGlite, reachable with the URL it prints",
      ],
      [
        "tests/e2e/cli.test.ts",
        "the URL pg-iam gateway prints works unchanged: iamPostgres(), the README's DATABASE_URL recipes, token, env, psql, doctor",
      ],
    ],
  },
  { find: "port: 5432, // default", by: [[HERE, T.tokens]] },
  { find: 'hostname: "127.0.0.1", // where you connect', by: [[HERE, T.tokens]] },
  { find: "const admin = await dsqlToken(", by: [[HERE, T.tokens]] },
  { find: "env: Record<string, string>): Promise<Response>", by: [[HERE, T.worker]] },
  {
    find: "DSQL_ENDPOINT: string; // abcdefghijklmnopqrstuvwxyz",
    by: [
      [
        "tests/e2e/workerd-postgres.test.ts",
        "workerd: iamPostgres() serves requests over cloudflare:sockets, TLS verified for the DSQL endpoint, a token per connection (tokenReuse: false)",
      ],
      [
        "tests/e2e/workerd-postgres.test.ts",
        "workerd: a throwing credentials provider fails the request with a clear CredentialsError (no secret), and the isolate lives on",
      ],
      [
        "tests/e2e/workerd-postgres.test.ts",
        "workerd: a client kept across requests fails there with the runtime's cross-request I/O error (hence a client per request); the next request's own client works",
      ],
    ],
  },
  {
    find: "fromTemporaryCredentials({",
    by: [[
      "tests/unit/sdk-compat.test.ts",
      "an AWS SDK v3 credential provider plugs into the credentials option unchanged",
    ]],
  },
  {
    find: "npm install && npm run demo",
    by: [[HERE, T.demo], [".ci/run", "npm test"], [".github/workflows/ci.yml", "npm test"]],
  },
  // `bash .ci/run` is `npm ci` then `npm test`: what the CI workflow runs.
  { find: "bash .ci/run   # installs PostgreSQL", by: [[".ci/run", "npm test"]] },
];

// ---- README blocks -----------------------------------------------------------------------------

interface Block {
  /** The page, relative to the repository: README.md or docs/….md. */
  file: string;
  lang: string;
  line: number;
  code: string;
}

function readmeBlocks(): Block[] {
  const blocks: Block[] = [];
  for (const file of PAGES) {
    let open: Block | undefined;
    readFileSync(join(ROOT, file), "utf8").split("\n").forEach((text, i) => {
      const fence = /^```(\S*)\s*$/.exec(text);
      if (!open && fence) open = { file, lang: fence[1], line: i + 1, code: "" };
      else if (open && /^```\s*$/.test(text)) {
        blocks.push(open);
        open = undefined;
      } else if (open) open.code += text + "\n";
    });
  }
  return blocks;
}

const CODE = new Set(["ts", "js", "sh"]);

/** The one README block containing `find`. */
function block(find: string): Block {
  const found = readmeBlocks().filter((b) => b.code.includes(find));
  assert.equal(found.length, 1, `one block of ${PAGES} should contain ${JSON.stringify(find)}`);
  return found[0];
}

/** The block as npm users write it: each `@pg-iam/pg-iam…` import switched to its `// npm:` name. */
function npmFlavour(code: string): string {
  return code.replace(
    /(from\s+")(@pg-iam\/pg-iam[^"]*)(";\s*\/\/ npm: "([^"]+)")/g,
    (_, from, _jsr, rest, npm) => from + npm + rest,
  );
}

// ---- processes -------------------------------------------------------------------------------

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(
  cmd: string,
  args: string[],
  options: { cwd: string; env?: Record<string, string>; timeoutMs?: number },
): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: options.cwd,
      env: options.env ?? baseEnv(),
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // its own process group: a timeout kills what `sh -c` started too
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => stdout += s);
    child.stderr.setEncoding("utf8").on("data", (s: string) => stderr += s);
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    }, options.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const show = (r: Ran) => `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

function assertOk(r: Ran, what: string): void {
  assert.equal(r.code, 0, `${what} failed:\n${show(r)}`);
}

/** The environment without any PG*, AWS_* or DATABASE_URL of the caller's, with the tools on PATH. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !/^(PG|AWS_|NODE_TEST_)|^DATABASE_URL$/.test(k)) env[k] = v;
  }
  env.PATH = [dirname(process.execPath), join(ROOT, "node_modules/.bin"), env.PATH].join(":");
  env.NO_COLOR = "1";
  env.DENO_NO_UPDATE_CHECK = "1";
  return env;
}

// ---- the fresh project and the gateway ---------------------------------------------------------

interface Setup {
  dir: string;
  project: string;
  gateway: Gateway;
  caFile: string;
  upstream: { host: string; port: number; user: string };
  /** The gateway's keys and its DATABASE_URL. */
  env: Record<string, string>;
  /** And PGHOSTADDR, PGPORT, PGSSLROOTCERT: where the literal endpoint name is served. */
  literalEnv: Record<string, string>;
}

const TMP = mkdtempSync(join(tmpdir(), "pg-iam-readme-"));
let gatewayStarted: Gateway | undefined;
const removeTmp = () => rmSync(TMP, { recursive: true, force: true });
after(async () => {
  await gatewayStarted?.close();
  removeTmp();
});
// `deno test` does not run a top-level after(); it dispatches "unload".
globalThis.addEventListener?.("unload", removeTmp);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** `npm pack` of a copy of this checkout (its prepack builds dist/ there); returns the tarball. */
async function packTarball(): Promise<string> {
  const stage = join(TMP, "stage");
  mkdirSync(stage);
  const skip = new Set(["node_modules", "tests", "bench", "examples", "dist"]);
  for (const entry of readdirSync(ROOT)) {
    if (skip.has(entry) || entry.startsWith(".") || entry.endsWith(".tgz")) continue;
    cpSync(join(ROOT, entry), join(stage, entry), { recursive: true });
  }
  symlinkSync(join(ROOT, "node_modules"), join(stage, "node_modules"));
  const r = await run("npm", ["pack", "--pack-destination", TMP], {
    cwd: stage,
    timeoutMs: 120_000,
  });
  assertOk(r, "npm pack");
  const [tarball] = readdirSync(TMP).filter((f) => f.endsWith(".tgz"));
  assert.ok(tarball, `npm pack wrote no tarball:\n${show(r)}`);
  return join(TMP, tarball);
}

/** A fresh project for this runtime, with the README's packages installed. */
async function makeProject(): Promise<string> {
  const project = join(TMP, "app");
  mkdirSync(project);
  const npmInstall = (packages: string[]) =>
    run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", ...packages], {
      cwd: project,
      timeoutMs: 120_000,
    });
  if (RUNTIME === "deno") {
    // What `deno add jsr:@pg-iam/pg-iam npm:postgres` writes, with this checkout for jsr.io.
    const denoJson = JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8"));
    const imports: Record<string, string> = { ...denoJson.imports };
    // The postgres.js major under test (tests/_postgres_major.mjs), as a user's import map says.
    if (postgresMajor() === 3) imports.postgres = "npm:postgres@^3.4.0";
    for (const [sub, path] of Object.entries(denoJson.exports as Record<string, string>)) {
      imports[`@pg-iam/pg-iam${sub.slice(1)}`] = pathToFileURL(join(ROOT, path)).href;
    }
    writeFileSync(
      join(project, "deno.json"),
      JSON.stringify({ nodeModulesDir: "manual", lock: false, imports }, null, 2),
    );
    // Deno reads npm packages from node_modules ("manual"): the ones deno.json names.
    writeFileSync(join(project, "package.json"), "{}");
    const npmNames = Object.values(imports).filter((s) => s.startsWith("npm:"))
      .map((s) => s.slice(4));
    assertOk(await npmInstall(npmNames), "npm install (for Deno)");
  } else {
    const tarball = await packTarball();
    assertOk(await run("npm", ["init", "-y"], { cwd: project }), "npm init -y");
    const postgres = postgresMajor() === 3 ? "postgres@3" : "postgres";
    assertOk(await npmInstall([tarball, postgres, "pg"]), `npm install pg-iam ${postgres} pg`);
  }
  return project;
}

let setupOnce: Promise<Setup> | undefined;
function setup(): Promise<Setup> {
  setupOnce ??= (async () => {
    const [project, upstream, tls, port] = await Promise.all([
      makeProject(),
      upstreamPostgres(),
      generateTls([ORDERS, "127.0.0.1"]),
      freePort(),
    ]);
    const caFile = join(TMP, "gateway-ca.pem");
    writeFileSync(caFile, tls.ca);
    const gateway = gatewayStarted = await startGateway({
      endpoint: ORDERS,
      port, // the port tokens are signed for: the one connected to, PGPORT
      listen: { port },
      credentials: KEYS,
      upstream: { host: upstream.host, port: upstream.port, database: "postgres" },
      tls: { cert: tls.cert, key: tls.key },
    });
    const env = {
      ...baseEnv(),
      AWS_ACCESS_KEY_ID: KEYS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: KEYS.secretAccessKey,
      DATABASE_URL: `postgres://app@127.0.0.1:${port}/orders?iam_host=${ORDERS}` +
        `&sslrootcert=${encodeURIComponent(caFile)}`,
    };
    const literalEnv = {
      ...env,
      PGHOSTADDR: "127.0.0.1",
      PGPORT: String(port),
      PGSSLROOTCERT: caFile,
    };
    return { dir: TMP, project, gateway, caFile, upstream, env, literalEnv };
  })();
  return setupOnce;
}

interface RunBlock {
  /** TypeScript with type annotations: Node runs it through tsx. */
  typed?: boolean;
  /** Deno's permissions. */
  deno?: string[];
  /** Lines run after importing the block's module (`m`), before exiting. */
  drive?: string;
  /** Replaces the environment. */
  env?: Record<string, string>;
  /** The directory to run in (default: a new one in the project). */
  cwd?: string;
  /** Edits the block before it is saved (the control). */
  edit?: (code: string) => string;
}

const CONNECT = ["--allow-net", "--allow-env", "--allow-read"];
let runs = 0;

/** Saves the block as the README says for this runtime and runs it there. */
async function runBlock(code: string, options: RunBlock = {}): Promise<Ran> {
  const s = await setup();
  const cwd = options.cwd ?? join(s.project, `block${++runs}`);
  mkdirSync(cwd, { recursive: true });
  const source = options.edit ? options.edit(code) : code;
  // Node: app.mjs, or app.mts through tsx (npm init -y makes .ts files CommonJS, without top-level await).
  const ext = RUNTIME !== "node" ? "ts" : options.typed ? "mts" : "mjs";
  writeFileSync(join(cwd, `app.${ext}`), RUNTIME === "deno" ? source : npmFlavour(source));
  let entry = `app.${ext}`;
  if (options.drive !== undefined) {
    entry = `main.${ext}`;
    writeFileSync(
      join(cwd, entry),
      `const m = await import("./app.${ext}");\n${options.drive}\nprocess.exit(0);\n`,
    );
  }
  const [cmd, args] = RUNTIME === "deno"
    ? [process.execPath, ["run", ...(options.deno ?? CONNECT), entry]]
    : RUNTIME === "bun"
    ? [process.execPath, [entry]]
    : ext === "mts"
    ? [join(ROOT, "node_modules/.bin/tsx"), [entry]]
    : [process.execPath, [entry]];
  return await run(cmd, args, { cwd, env: options.env ?? s.env });
}

/** Runs a block and checks it exits 0 having logged in through the gateway `logins` times. */
async function runConnecting(code: string, logins: number, options: RunBlock = {}): Promise<Ran> {
  const s = await setup();
  const before = s.gateway.stats.accepted;
  const r = await runBlock(code, options);
  assertOk(r, "the block");
  assert.ok(
    s.gateway.stats.accepted - before >= logins,
    `expected ${logins} login(s) through the gateway, saw ${s.gateway.stats.accepted - before}`,
  );
  return r;
}

// ---- the tests ---------------------------------------------------------------------------------

/** What is wrong with COVERAGE for these blocks: uncovered blocks, stale entries, lost test names. */
function coverageProblems(blocks: Block[]): string[] {
  const problems: string[] = [];
  const covered = new Set<Block>();
  for (const cover of COVERAGE) {
    const found = blocks.filter((b) => b.code.includes(cover.find));
    if (found.length !== 1) {
      problems.push(`${JSON.stringify(cover.find)} is in ${found.length} blocks, not 1`);
    }
    for (const b of found) {
      if (covered.has(b)) problems.push(`${b.file}:${b.line} is covered twice`);
      covered.add(b);
    }
    for (const [file, name] of cover.by) {
      const path = join(ROOT, file);
      const text = existsSync(path) ? readFileSync(path, "utf8") : "";
      const named = file.endsWith(".ts") ? JSON.stringify(name) : name;
      // A test written once for every driver (tests/_drivers.ts) is named `${name}: …` in a loop.
      const driver = /^(postgres\.js|node-postgres|Bun\.SQL): /.exec(name)?.[0];
      const perDriver = driver !== undefined && file.endsWith(".ts") &&
        /for \(const name of DRIVERS\)/.test(text) &&
        text.includes("`${name}: " + name.slice(driver.length) + "`");
      if (!text.includes(named) && !perDriver) {
        problems.push(`${file} has no test ${JSON.stringify(name)}`);
      }
    }
  }
  for (const b of blocks) {
    if (CODE.has(b.lang) && !covered.has(b)) {
      problems.push(
        `${b.file}:${b.line}: a \`\`\`${b.lang} block no test runs or mirrors (add it to COVERAGE ` +
          `in ${HERE}): ${b.code.split("\n")[0]}`,
      );
    }
    if (b.lang === "json") {
      // A configuration to copy (an MCP client's): it must at least be JSON.
      try {
        JSON.parse(b.code);
      } catch (error) {
        problems.push(`${b.file}:${b.line}: a \`\`\`json block is not JSON: ${error}`);
      }
    } else if (!CODE.has(b.lang) && !["text", ""].includes(b.lang)) {
      problems.push(`${b.file}:${b.line}: unknown block language ${JSON.stringify(b.lang)}`);
    }
  }
  return problems;
}

test("README and docs/: every ts, js and sh block is run by a test or mirrored by a named one, and every test named exists", () => {
  const blocks = readmeBlocks();
  assert.ok(PAGES.length > 1 && blocks.some((b) => b.file.startsWith("docs/")), "docs/ is read");
  assert.deepEqual(coverageProblems(blocks), []);
  // The negative control: a new block nobody covers is reported, in README.md and in a docs page.
  for (const file of ["README.md", "docs/cli.md"]) {
    const extra = { file, lang: "sh", line: 9999, code: "pg-iam something-new\n" };
    assert.deepEqual(coverageProblems([...blocks, extra]), [
      `${file}:9999: a \`\`\`sh block no test runs or mirrors (add it to COVERAGE in ` +
      "tests/e2e/readme.test.ts): pg-iam something-new",
    ]);
  }
});

// The repository on GitHub (package.json's "repository"), where links to what the packages do not
// ship (bench/, examples/) point: `${REPO}/blob/main/<file>`, `${REPO}/tree/main/<folder>`.
const REPO = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).repository.url as string)
  .replace(/^git\+/, "").replace(/\.git$/, "");
// What both packages ship of this checkout besides the code: npm's "files" that JSR includes too.
const SHIPPED: string[] = (() => {
  const npm: string[] = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).files;
  const jsr: string[] = JSON.parse(readFileSync(join(ROOT, "jsr.json"), "utf8")).publish.include;
  return npm.filter((path) => jsr.includes(path));
})();

/**
 * The broken links of `file`: a relative one that does not resolve, or that leaves what the
 * packages ship (it works on GitHub only); a link into the repository (`REPO/blob/main/…`,
 * `REPO/tree/main/…`) to a file or folder this checkout does not have.
 */
function linkProblems(file: string, text: string): string[] {
  const problems: string[] = [];
  for (const [, target] of text.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)) {
    if (target.startsWith(`${REPO}/`)) {
      const m = /^\/(blob|tree)\/main\/(.+?)\/?$/.exec(target.slice(REPO.length));
      const local = m && join(ROOT, m[2]);
      if (!m || !existsSync(local!)) problems.push(`${file}: ${target} (no such path here)`);
      else if (statSync(local!).isDirectory() !== (m[1] === "tree")) {
        problems.push(`${file}: ${target} (${m[1] === "tree" ? "a file" : "a folder"} here)`);
      }
      continue;
    }
    if (/^[a-z]+:/.test(target)) continue;
    const path = join(dirname(file), target);
    if (!existsSync(join(ROOT, path))) problems.push(`${file}: ${target}`);
    else if (!SHIPPED.some((s) => path === s.replace(/\/$/, "") || path.startsWith(s))) {
      problems.push(`${file}: ${target} (not in the packages: link ${REPO}/blob/main/${path})`);
    }
  }
  return problems;
}

test("README links to every docs/ page, and every link of README and docs/ resolves, in the packages or the repository", () => {
  const problems: string[] = [];
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  for (const page of PAGES.slice(1)) {
    if (!readme.includes(`](${page})`) && !readme.includes(`](${page}#`)) {
      problems.push(`README.md does not link to ${page}`);
    }
  }
  for (const file of PAGES) {
    problems.push(...linkProblems(file, readFileSync(join(ROOT, file), "utf8")));
  }
  assert.deepEqual(problems, []);
  assert.ok(SHIPPED.includes("docs/") && REPO === "https://github.com/pg-iam/pg-iam", REPO);
  // The controls: the links the pages have pass; a missing file, a folder linked as a file, and a
  // relative link to what the packages do not ship fail.
  const ok =
    `[a](${REPO}/blob/main/bench/README.md#x) [b](${REPO}/tree/main/examples/serverless/)` +
    ` [c](cli.md) [d](../README.md#install)`;
  assert.deepEqual(linkProblems("docs/x.md", ok), []);
  assert.deepEqual(
    linkProblems(
      "docs/x.md",
      `[a](${REPO}/blob/main/bench/NOPE.md) [b](${REPO}/blob/main/bench) [c](../bench/README.md)`,
    ),
    [
      `docs/x.md: ${REPO}/blob/main/bench/NOPE.md (no such path here)`,
      `docs/x.md: ${REPO}/blob/main/bench (a folder here)`,
      `docs/x.md: ../bench/README.md (not in the packages: link ${REPO}/blob/main/bench/README.md)`,
    ],
  );
});

test(T.imports, () => {
  const problems: string[] = [];
  for (const b of readmeBlocks().filter((b) => b.lang === "ts" || b.lang === "js")) {
    for (const line of b.code.split("\n")) {
      const spec = /\bfrom\s+"((?:@pg-iam\/)?pg-iam[^"]*)"/.exec(line)?.[1];
      if (!spec) continue;
      const npm = /\/\/ npm: "([^"]+)"/.exec(line)?.[1];
      if (!spec.startsWith("@pg-iam/pg-iam")) {
        problems.push(`${b.file}:${b.line}: imports the npm name alone: ${line}`);
      } else if (npm !== spec.replace("@pg-iam/pg-iam", "pg-iam")) {
        problems.push(`${b.file}:${b.line}: no matching \`// npm: "…"\` comment: ${line}`);
      }
    }
  }
  assert.deepEqual(problems, []);
  assert.equal(
    npmFlavour('import { x } from "@pg-iam/pg-iam/pg"; // npm: "pg-iam/pg"'),
    'import { x } from "pg-iam/pg"; // npm: "pg-iam/pg"',
  );
});

test(T.project, SLOW, async () => {
  const s = await setup();
  const name = RUNTIME === "deno" ? "deno.json" : "node_modules/pg-iam/package.json";
  assert.ok(existsSync(join(s.project, name)), `${name} in the fresh project`);
  if (RUNTIME !== "deno") {
    // Installed from the tarball, not linked to this checkout.
    assert.ok(!existsSync(join(s.project, "node_modules/pg-iam/src")));
    assert.ok(existsSync(join(s.project, "node_modules/pg-iam/dist/mod.js")));
  }
});

test(T.tokens, SLOW, async () => {
  for (
    const find of [
      "// region comes from the name",
      "port: 5432, // default",
      'hostname: "127.0.0.1", // where you connect',
      "const admin = await dsqlToken(",
    ]
  ) {
    const r = await runBlock(block(find).code, { deno: ["--allow-env"] });
    assertOk(r, find);
    assert.equal(r.stderr, "");
  }
});

test(T.postgres, SLOW, async () => {
  // The first example: a pool the app goes on using, so it is exited once its query is done.
  const s = await setup();
  await runConnecting(block("const rows = await sql`select ${id}::int as id").code, 1, {
    drive: "",
    env: s.literalEnv,
  });
  // app.ts, run with the line of the README's command block for this runtime.
  const app = block("// app.ts (on Node: app.mjs)").code;
  const commands = block("&& node app.mjs").code.split("\n").filter(Boolean);
  const line = commands.find((l) => l.includes(RUNTIME === "bun" ? "bun app.ts" : `${RUNTIME} `));
  assert.ok(line, `a command for ${RUNTIME}`);
  let command = line.slice(line.indexOf("&&") + 2).replace(/#.*/, "").trim();
  if (RUNTIME === "deno") command = command.replace("--allow-env", "--allow-env --allow-read");
  const cwd = join(s.project, "app-ts");
  mkdirSync(cwd);
  const file = command.split(" ").at(-1)!;
  assert.equal(file, RUNTIME === "node" ? "app.mjs" : "app.ts");
  writeFileSync(join(cwd, file), RUNTIME === "deno" ? app : npmFlavour(app));
  const before = s.gateway.stats.accepted;
  const r = await run("sh", ["-c", command], { cwd, env: s.literalEnv });
  assertOk(r, command);
  assert.match(r.stdout, /current_user/);
  assert.match(r.stdout, /app/);
  assert.ok(s.gateway.stats.accepted - before >= 2, "prewarm: 2 opened two connections");
});

test(T.quick, SLOW, async () => {
  await runConnecting(block("// app.mjs: the quick start").code, 1);
});

test(T.dsql, SLOW, async () => {
  const r = await runBlock(block('user: "admin", // DbConnectAdmin').code, { drive: "" });
  assertOk(r, "the DSQL block");
});

test(T.serverless, SLOW, async () => {
  const r = await runConnecting(block("export async function handler(").code, 1, {
    typed: true,
    drive: "console.log(JSON.stringify(await m.handler({ id: 7 })));",
  });
  assert.match(r.stdout, /"message":"cold start"/);
  assert.match(r.stdout, /^\{"id":7\}$/m);
});

test(T.pg, SLOW, async () => {
  await runConnecting(block('await pool.query("select current_user")').code, 1);
});

test(T.bun, { ...SLOW, skip: RUNTIME === "bun" ? false : "Bun.SQL is Bun's" }, async () => {
  await runConnecting(block("const sql = iamSql(process.env.DATABASE_URL").code, 1, {
    drive: "",
  });
});

test(T.gateway, SLOW, async () => {
  const s = await setup();
  const certs = block('-subj "/CN=local gateway CA"').code;
  const example = block('import { startGateway } from "@pg-iam/pg-iam/gateway";').code;
  // The tests' PostgreSQL stands in for "your PostgreSQL" at 127.0.0.1:5432.
  const upstream = 'upstream: { host: "127.0.0.1", port: 5432, user: "postgres" }';
  assert.ok(example.includes(upstream), "the example's upstream");
  const edit = (code: string) =>
    code.replace(
      upstream,
      `upstream: { host: ${JSON.stringify(s.upstream.host)}, port: ${s.upstream.port}, ` +
        `user: ${JSON.stringify(s.upstream.user)} }`,
    );
  const cwd = join(s.project, "gateway");
  mkdirSync(cwd);
  assertOk(await run("sh", ["-c", certs], { cwd }), "the openssl commands");
  const env = baseEnv(); // no keys, no PG* variables: the example brings its own
  const r = await runBlock(example, { cwd, env, edit });
  assertOk(r, "the gateway example");
  assert.match(r.stdout, /current_user: ["']postgres["']/);
  assert.match(r.stdout, /ok: 1/);
  assert.match(r.stdout, /^2 \{\}$/m);
  // The control: without `now`, the client signs by the system clock, and once the gateway's clock
  // is 20 minutes on, its fresh tokens are refused as expired.
  const nowLine = /^ {2}now: \(\) => gateway\.now\(\),.*\n/m;
  assert.match(example, nowLine);
  const control = await runBlock(example, {
    cwd,
    env,
    edit: (code) => edit(code).replace(nowLine, ""),
  });
  assert.notEqual(control.code, 0, show(control));
  assert.match(control.stdout, /current_user/); // before the clock moved
  assert.match(control.stderr, /PAM authentication failed for user "app"/);
});

test(T.cli, SLOW, async () => {
  const s = await setup();
  const lines = block("npx pg-iam --help").code.split("\n").filter(Boolean);
  const prefix = { node: "npx ", bun: "bunx ", deno: "deno " }[RUNTIME];
  let line = lines.find((l) => l.startsWith(prefix))!.replace(/#.*/, "").trim();
  // Not on jsr.io: Deno runs this checkout's CLI.
  line = line.replace("jsr:@pg-iam/pg-iam/cli", pathToFileURL(join(ROOT, "src/cli/mod.ts")).href);
  const r = await run("sh", ["-c", line], { cwd: s.project });
  assertOk(r, line);
  assert.match(r.stdout, /pg-iam/);
  assert.match(r.stdout, /token/);
});

test(T.worker, SLOW, async () => {
  const r = await runBlock(block("env: Record<string, string>): Promise<Response>").code, {
    typed: true,
    deno: [],
    env: baseEnv(), // a Worker has no process environment: its bindings are `env`
    drive: `const env = ${
      JSON.stringify({
        DB_HOST: ORDERS,
        AWS_ACCESS_KEY_ID: KEYS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: KEYS.secretAccessKey,
      })
    };
const response = await m.default.fetch(new Request("https://example.com/"), env);
console.log(response.status, await response.text());`,
  });
  assertOk(r, "the Worker");
  assert.equal(r.stdout.trim(), "200 ok");
});

test(T.demo, { ...SLOW, skip: RUNTIME === "node" ? false : "npm run is Node's" }, async () => {
  assert.match(block("npm install && npm run demo").code, /^npm install && npm run demo /m);
  // `npm install` is done: this checkout is the one under test.
  const r = await run("npm", ["run", "--silent", "demo"], { cwd: ROOT, timeoutMs: 120_000 });
  assertOk(r, "npm run demo");
  assert.match(r.stdout, /zero failures/);
});
