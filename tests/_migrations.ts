// Migration tools nobody here wrote, run as their users run them: the real CLIs (`knex
// migrate:latest`, `drizzle-kit migrate`) in the fixture directories of tests/fixtures/migrations/,
// configured by DATABASE_URL alone. The CLIs are Node programs (node_modules/.bin shims): they run
// under Node whatever the runtime of the test. Each run migrates a database of its own
// (scratchDatabase()), so reruns and the runtimes' runs never meet.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import process from "node:process";
import pg from "pg";
import { upstreamPostgres } from "./_postgres.ts";
import type { Wrap } from "./_psycopg.ts";

/** The migration tools with a fixture. */
export type MigrationTool = "knex" | "drizzle-kit";

/** What a finished CLI left. */
export interface MigrationResult {
  code: number;
  stdout: string;
  stderr: string;
}

const ROOT = fileURLToPath(new URL("..", import.meta.url));

const CLIS: Record<MigrationTool, { dir: string; bin: string; args: string[] }> = {
  knex: { dir: "knex", bin: "knex", args: ["migrate:latest"] },
  "drizzle-kit": { dir: "drizzle", bin: "drizzle-kit", args: ["migrate"] },
};

/**
 * What each fixture's migrations leave: a table `widgets` with the columns `id`, `name`, `size`
 * and the one row the second migration inserts, and the tool's own record of both migrations.
 */
export const MIGRATED: Record<MigrationTool, { widgets: string; applied: string }> = {
  knex: { widgets: "knex_widgets", applied: "knex_migrations" },
  "drizzle-kit": { widgets: "drizzle_widgets", applied: "drizzle.__drizzle_migrations" },
};

const running = new Set<{ kill(signal: "SIGKILL"): unknown }>();
// Killed if the test process ends first: Node and Bun emit "exit"; `deno test` dispatches "unload".
const killAll = () => running.forEach((child) => child.kill("SIGKILL"));
process.on("exit", killAll);
globalThis.addEventListener?.("unload", killAll);

/**
 * Runs `tool`'s migrate command on the fixture's migrations (in the fixture's directory), with
 * `env` (DATABASE_URL, PG*) added to ours less every PG* variable and DATABASE_URL; `options.wrap`
 * runs it through another command (`pg-iam exec <target> --`, say).
 *
 * @example
 * const r = await runMigrations("knex", { DATABASE_URL: `postgres://postgres@127.0.0.1:5432/${db.name}` });
 * // r.code === 0
 */
export function runMigrations(
  tool: MigrationTool,
  env: Record<string, string>,
  options: { wrap?: Wrap } = {},
): Promise<MigrationResult> {
  const cli = CLIS[tool];
  if (!cli) {
    throw new RangeError(`runMigrations(): tool must be "knex" or "drizzle-kit", not ${tool}`);
  }
  const base = Object.entries(process.env).filter(([k, v]) =>
    v !== undefined && !/^PG/.test(k) && k !== "DATABASE_URL" && k !== "NODE_OPTIONS"
  ) as [string, string][];
  return new Promise((resolve, reject) => {
    const bin = `${ROOT}node_modules/.bin/${cli.bin}`;
    const [command, args] = options.wrap ? options.wrap(bin, cli.args) : [bin, cli.args];
    const child = spawn(command, args, {
      cwd: `${ROOT}tests/fixtures/migrations/${cli.dir}`,
      env: { ...Object.fromEntries(base), NO_COLOR: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    running.add(child);
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    child.on("error", (err) => {
      running.delete(child);
      reject(err);
    });
    child.on("close", (code) => {
      running.delete(child);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** A database of its own on the test server, for one run of migrations. */
export interface ScratchDatabase {
  name: string;
  /** Where it is, directly: the test server's host, port and superuser. */
  host: string;
  port: number;
  user: string;
  /** postgres://user@host:port/name, or on another host and port (a proxy's, say). */
  url(at?: { host: string; port: number; user?: string }): string;
  /** The migrated state of `tool`'s fixture in it, read directly. */
  migrated(tool: MigrationTool): Promise<{ widgets: unknown[]; applied: number }>;
  /** Drops it (WITH (FORCE): sessions still in it are ended). */
  drop(): Promise<void>;
}

async function onServer<T>(
  at: { host: string; port: number; user: string },
  database: string,
  work: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const client = new pg.Client({ ...at, database });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/**
 * Creates an empty database of a unique name on the test server (tests/_postgres.ts).
 *
 * @example
 * const db = await scratchDatabase();
 * await runMigrations("drizzle-kit", { DATABASE_URL: db.url() });
 * console.log(await db.migrated("drizzle-kit")); // { widgets: [{ id: 1, name: "first", size: 2 }], applied: 2 }
 * await db.drop();
 */
export async function scratchDatabase(): Promise<ScratchDatabase> {
  const up = await upstreamPostgres();
  const name = `pgiam_migrate_${crypto.randomUUID().replaceAll("-", "")}`;
  await onServer(up, "postgres", (c) => c.query(`create database ${name}`));
  return {
    name,
    ...up,
    url: (at = up) => {
      const user = encodeURIComponent(at.user ?? up.user);
      const host = at.host.includes(":") ? `[${at.host}]` : at.host;
      return `postgres://${user}@${host}:${at.port}/${name}`;
    },
    migrated: (tool) =>
      onServer(up, name, async (c) => {
        const { widgets, applied } = MIGRATED[tool];
        const rows = (await c.query(`select id, name, size from ${widgets} order by id`)).rows;
        const count = (await c.query(`select count(*)::int as n from ${applied}`)).rows[0].n;
        return { widgets: rows, applied: count };
      }),
    drop: () =>
      onServer(up, "postgres", async (c) => {
        await c.query(`drop database ${name} with (force)`);
      }),
  };
}
