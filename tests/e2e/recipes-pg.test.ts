// The ORM recipes on node-postgres, run for real: Prisma 7 (@prisma/adapter-pg), Drizzle, Kysely,
// Knex and TypeORM each get an iamPool() and query PostgreSQL through the IAM gateway, and each
// physical connection they open presents a token signed for it. Each has a negative control: the
// same ORM given a plain pg.Pool with one token frozen in as its password fails with 28P01 once
// the gateway's clock passes the token's 15 minutes, while the iamPool-backed one, signing by the
// same moved clock, keeps working.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import process from "node:process";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { PrismaPg } from "@prisma/adapter-pg";
import { drizzle } from "drizzle-orm/node-postgres";
import { eq, sql as drizzleSql } from "drizzle-orm";
import { pgTable, serial, text } from "drizzle-orm/pg-core";
import { type Generated, Kysely, PostgresDialect, sql as kyselySql } from "kysely";
import knex from "knex";
import { DataSource, EntitySchema } from "typeorm";
import { rdsToken } from "../../mod.ts";
import { iamPool, type IamPoolConfig, type TokenEvent } from "../../src/pg/mod.ts";
import type { Gateway } from "../../src/gateway/mod.ts";
import { closeTestGateways, RDS, testGateway } from "../_gateway.ts";
import { ca } from "../fixtures/tls.ts";
import { Tally } from "../_closes.ts";

const KEYS = { accessKeyId: "AKIDRECIPESPG", secretAccessKey: "recipes/node-postgres/secret" };
const MINUTE = 60_000;
const TIMEOUT = { timeout: 30_000 };
/** How many connections each recipe is made to open at once (its pool's max). */
const CONNECTIONS = 3;

after(closeTestGateways);

function gateway(): Promise<Gateway> {
  return testGateway(KEYS);
}

/** iamPool() options for the gateway: connect to its port, sign for the endpoint, trust the CA. */
function target(g: Gateway, extra: Partial<IamPoolConfig> = {}): IamPoolConfig {
  return {
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    signingHostname: RDS,
    signingPort: 5432,
    credentials: KEYS,
    ssl: { ca },
    max: CONNECTIONS,
    ...extra,
  };
}

/** What pg-iam replaces: a plain pg.Pool given one token, signed at start-up, as its password. */
async function frozenPool(g: Gateway): Promise<pg.Pool> {
  const pool = new pg.Pool({
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    password: await rdsToken({ hostname: RDS, port: 5432, username: "app", credentials: KEYS }),
    ssl: { ca, servername: RDS },
    max: CONNECTIONS,
  });
  pool.on("error", () => {}); // idle clients dropped by disconnectAll()
  return pool;
}

/**
 * Runs `pid` (a query through the ORM returning pg_backend_pid(), slowed by pg_sleep) CONNECTIONS
 * times at once, so that the ORM's pool opens that many connections; returns the backends seen.
 */
async function concurrentBackends(pid: () => Promise<number>): Promise<Set<number>> {
  return new Set(await Promise.all(Array.from({ length: CONNECTIONS }, pid)));
}
const PID_SQL = "select pg_backend_pid() as pid from pg_sleep(0.05)";

/**
 * Every physical connection presented a token signed for it: as many accepted logins as tokens
 * signed and as backends seen, none rejected, each token a moment old when the gateway checked it.
 */
function assertTokenPerConnection(g: Gateway, tokens: TokenEvent[], backends: Set<number>): void {
  assert.equal(backends.size, CONNECTIONS, `backends ${[...backends]}`);
  assert.equal(g.stats.rejected, 0, JSON.stringify(g.stats.rejections));
  assert.equal(g.stats.accepted, CONNECTIONS);
  assert.equal(tokens.length, g.stats.accepted);
  for (const login of g.stats.logins) {
    assert.ok(login.accepted && login.tokenAgeMs! < 2_000, `token age ${login.tokenAgeMs} ms`);
  }
}

/** An ORM on a given pg.Pool, reduced to what the negative control needs. */
interface OnPool {
  /** current_user, through the ORM. */
  who(): Promise<string>;
  /** The SQLSTATE of pg's error, where the ORM's error carries it. */
  sqlState(error: unknown): string | undefined;
  close(): Promise<void>;
}

/**
 * The negative control, for the ORM `open` puts on a pool: the frozen-password pool works, then
 * fails with 28P01 once the gateway's clock is 16 minutes ahead and its connections are dropped;
 * an iamPool() signing by that same clock keeps working, with a fresh token per new connection.
 */
async function control(open: (pool: pg.Pool) => Promise<OnPool>): Promise<void> {
  const g = await gateway();
  let offset = 0;
  const tokens: TokenEvent[] = [];
  const iam = iamPool(
    target(g, { now: () => Date.now() + offset, onToken: (e) => tokens.push(e) }),
  );
  iam.on("error", () => {}); // idle clients dropped by disconnectAll()
  const frozenPg = await frozenPool(g);
  // Each pool's clients, opened and removed (after a close it saw): tests/_closes.ts.
  const opened = new Tally();
  const removed = new Tally();
  for (const p of [frozenPg, iam]) {
    p.on("connect", opened.add);
    p.on("remove", removed.add);
  }
  const frozen = await open(frozenPg);
  const signed = await open(iam);
  try {
    assert.equal(await frozen.who(), "postgres"); // the upstream role the gateway relays to
    assert.equal(await signed.who(), "postgres");
    assert.equal(g.stats.rejected, 0);
    const acceptedBefore = g.stats.accepted;
    const tokensBefore = tokens.length;

    offset = 16 * MINUTE;
    g.clockOffsetMs = offset;
    g.disconnectAll(); // a new connection is needed: the frozen token is now 16 minutes old
    await removed.reaches(opened.count); // no client is dead but thought open

    await assert.rejects(frozen.who(), (e: unknown) => {
      assert.equal(frozen.sqlState(e), "28P01", String(e));
      return true;
    });
    assert.ok(g.stats.rejections.expired! >= 1, JSON.stringify(g.stats.rejections));
    assert.equal(await signed.who(), "postgres");
    const newLogins = g.stats.logins.filter((l) => l.accepted).slice(acceptedBefore);
    assert.ok(newLogins.length >= 1);
    assert.equal(newLogins.length, tokens.length - tokensBefore); // one token per new connection
    for (const login of newLogins) {
      assert.ok(login.tokenAgeMs! < 2_000, `token age ${login.tokenAgeMs} ms`);
    }
  } finally {
    await frozen.close();
    await signed.close();
  }
}

// ---- Prisma 7 ----
//
// The client is generated from tests/fixtures/prisma/schema.prisma into .tmp/prisma-client
// (git-ignored), once per process, so a fresh clone needs no step besides `npm ci`. `prisma
// generate` would first download a schema engine (which generating a client does not use):
// PRISMA_SCHEMA_ENGINE_BINARY pointing at any executable skips that, so it runs offline. The CLI
// runs on Node: this process's on Node, `node` from PATH on Deno and Bun.

const PRISMA_SCHEMA = fileURLToPath(new URL("../fixtures/prisma/schema.prisma", import.meta.url));
/** Where the schema's generator `output` puts the client. */
const PRISMA_CLIENT = new URL("../../.tmp/prisma-client/client.ts", import.meta.url).href;
const ROOT = fileURLToPath(new URL("../..", import.meta.url));

interface PrismaNote {
  id: number;
  body: string;
}
/**
 * The generated PrismaClient, as much of it as the recipe uses. Written out because the client
 * does not exist until the test generates it, while `deno check` (which `npm test` runs first)
 * must type-check this file in a fresh clone; the recipe itself (PrismaPg on an iamPool) is
 * checked against @prisma/adapter-pg's own types.
 */
interface PrismaClientLike {
  recipeNote: {
    create(args: { data: { body: string } }): Promise<PrismaNote>;
    findUnique(args: { where: { id: number } }): Promise<PrismaNote | null>;
  };
  $queryRaw<T>(query: TemplateStringsArray, ...values: unknown[]): Promise<T>;
  $executeRawUnsafe(query: string): Promise<number>;
  $disconnect(): Promise<void>;
}
/** Where a PrismaClientKnownRequestError carries the driver adapter's error. */
interface PrismaAdapterFailure {
  meta?: { driverAdapterError?: { cause?: { kind?: string; originalCode?: string } } };
}
type PrismaClientClass = new (options: { adapter: PrismaPg }) => PrismaClientLike;

let prismaClient: Promise<PrismaClientClass> | undefined;

/** Generates the Prisma client (once per process) and imports it. */
function generatedPrismaClient(): Promise<PrismaClientClass> {
  prismaClient ??= (async () => {
    const runtime = globalThis as { Deno?: unknown; Bun?: unknown };
    const node = runtime.Deno || runtime.Bun ? "node" : process.execPath;
    const cli = createRequire(import.meta.url).resolve("prisma/build/index.js");
    await new Promise<void>((resolve, reject) => {
      execFile(
        node,
        [cli, "generate", "--schema", PRISMA_SCHEMA],
        {
          cwd: ROOT,
          timeout: 60_000,
          env: {
            ...process.env,
            PRISMA_SCHEMA_ENGINE_BINARY: "/bin/true",
            CHECKPOINT_DISABLE: "1", // no version check over the network
            PRISMA_HIDE_UPDATE_MESSAGE: "1",
          },
        },
        (error, stdout, stderr) => {
          if (error) {
            reject(new Error(`prisma generate failed: ${error.message}\n${stdout}${stderr}`));
          } else resolve();
        },
      );
    });
    const { PrismaClient } = await import(PRISMA_CLIENT) as { PrismaClient: PrismaClientClass };
    return PrismaClient;
  })();
  return prismaClient;
}

test("recipe: Prisma 7 with @prisma/adapter-pg on an iamPool()", TIMEOUT, async () => {
  const PrismaClient = await generatedPrismaClient();
  const g = await gateway();
  const tokens: TokenEvent[] = [];
  // The recipe: PrismaPg given the pool itself (given a config, it would build a plain pg.Pool).
  const pool = iamPool(target(g, { onToken: (e) => tokens.push(e) }));
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
  try {
    await prisma.$executeRawUnsafe(
      "create table if not exists recipe_pg_prisma_notes (id serial primary key, body text not null)",
    );
    const note = await prisma.recipeNote.create({ data: { body: "signed per connection" } });
    assert.deepEqual(await prisma.recipeNote.findUnique({ where: { id: note.id } }), note);
    const [{ who }] = await prisma.$queryRaw<{ who: string }[]>`select current_user as who`;
    assert.equal(who, "postgres");
    const backends = await concurrentBackends(async () => {
      const [row] = await prisma.$queryRaw<{ pid: number }[]>`
        select pg_backend_pid() as pid from pg_sleep(0.05)`;
      return row.pid;
    });
    assertTokenPerConnection(g, tokens, backends);
  } finally {
    await prisma.$disconnect(); // leaves a pool it was given open
    await pool.end();
  }
});

test(
  "recipe: Prisma 7 control: on a pg.Pool with a frozen token it fails with 28P01 after 15 minutes; on iamPool() it keeps working",
  TIMEOUT,
  async () => {
    const PrismaClient = await generatedPrismaClient();
    await control((pool) => {
      const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
      return Promise.resolve({
        who: async () =>
          (await prisma.$queryRaw<{ who: string }[]>`select current_user as who`)[0].who,
        // PrismaClientKnownRequestError P2010 ("raw query failed"), pg's code in the adapter's
        // error, of kind AuthenticationFailed
        sqlState: (e) => {
          const cause = (e as PrismaAdapterFailure).meta?.driverAdapterError?.cause;
          assert.equal(cause?.kind, "AuthenticationFailed");
          return cause?.originalCode;
        },
        close: async () => {
          await prisma.$disconnect();
          await pool.end();
        },
      });
    });
  },
);

// ---- Drizzle ----

const drizzleNotes = pgTable("recipe_pg_drizzle_notes", {
  id: serial("id").primaryKey(),
  body: text("body").notNull(),
});

test("recipe: Drizzle (drizzle-orm/node-postgres) on an iamPool()", TIMEOUT, async () => {
  const g = await gateway();
  const tokens: TokenEvent[] = [];
  // The recipe.
  const pool = iamPool(target(g, { onToken: (e) => tokens.push(e) }));
  const db = drizzle({ client: pool });
  try {
    await db.execute(drizzleSql`
      create table if not exists recipe_pg_drizzle_notes (id serial primary key, body text not null)`);
    const [note] = await db.insert(drizzleNotes).values({ body: "signed per connection" })
      .returning();
    assert.deepEqual(await db.select().from(drizzleNotes).where(eq(drizzleNotes.id, note.id)), [
      note,
    ]);
    const { rows } = await db.execute<{ who: string }>(drizzleSql`select current_user as who`);
    assert.deepEqual(rows, [{ who: "postgres" }]);
    const backends = await concurrentBackends(async () =>
      (await db.execute<{ pid: number }>(drizzleSql.raw(PID_SQL))).rows[0].pid
    );
    assertTokenPerConnection(g, tokens, backends);
  } finally {
    await pool.end();
  }
});

test(
  "recipe: Drizzle control: on a pg.Pool with a frozen token it fails with 28P01 after 15 minutes; on iamPool() it keeps working",
  TIMEOUT,
  async () => {
    await control((pool) => {
      const db = drizzle({ client: pool });
      return Promise.resolve({
        who: async () =>
          (await db.execute<{ who: string }>(drizzleSql`select current_user as who`)).rows[0].who,
        sqlState: (e) => ((e as Error).cause as { code?: string })?.code, // a DrizzleQueryError
        close: () => pool.end(),
      });
    });
  },
);

// ---- Kysely ----

interface KyselyDatabase {
  recipe_pg_kysely_notes: { id: Generated<number>; body: string };
}

test("recipe: Kysely's PostgresDialect on an iamPool()", TIMEOUT, async () => {
  const g = await gateway();
  const tokens: TokenEvent[] = [];
  // The recipe.
  const db = new Kysely<KyselyDatabase>({
    dialect: new PostgresDialect({ pool: iamPool(target(g, { onToken: (e) => tokens.push(e) })) }),
  });
  try {
    await kyselySql`
      create table if not exists recipe_pg_kysely_notes (id serial primary key, body text not null)`
      .execute(db);
    const note = await db.insertInto("recipe_pg_kysely_notes")
      .values({ body: "signed per connection" }).returningAll().executeTakeFirstOrThrow();
    assert.deepEqual(
      await db.selectFrom("recipe_pg_kysely_notes").selectAll().where("id", "=", note.id)
        .execute(),
      [note],
    );
    const { rows } = await kyselySql<{ who: string }>`select current_user as who`.execute(db);
    assert.deepEqual(rows, [{ who: "postgres" }]);
    const backends = await concurrentBackends(async () =>
      (await kyselySql<{ pid: number }>`${kyselySql.raw(PID_SQL)}`.execute(db)).rows[0].pid
    );
    assertTokenPerConnection(g, tokens, backends);
  } finally {
    await db.destroy(); // ends the pool
  }
});

test(
  "recipe: Kysely control: on a pg.Pool with a frozen token it fails with 28P01 after 15 minutes; on iamPool() it keeps working",
  TIMEOUT,
  async () => {
    await control((pool) => {
      const db = new Kysely<KyselyDatabase>({ dialect: new PostgresDialect({ pool }) });
      return Promise.resolve({
        who: async () =>
          (await kyselySql<{ who: string }>`select current_user as who`.execute(db)).rows[0].who,
        sqlState: (e) => (e as { code?: string }).code, // pg's own error
        close: () => db.destroy(),
      });
    });
  },
);

// ---- Knex ----
//
// Knex builds its own pool of pg.Clients from `connection`, and a `connection` function only
// supplies options to `new pg.Client()`: pg-iam's socket (the token per connection, verified TLS,
// the retry) cannot be passed that way, and a `password` function would be pg's plain one. Knex
// 3.3 takes a pool instead: `connectionPool` accepts a native pg.Pool, so it gets the iamPool and
// every connection Knex uses comes from it. Knex then does not own the pool: destroy() leaves it
// open (end it yourself), and Knex's `pool` and `searchPath` options do not apply (set `max` and
// `options: "-c search_path=…"` on iamPool).

test("recipe: Knex (connectionPool) on an iamPool()", TIMEOUT, async () => {
  const g = await gateway();
  const tokens: TokenEvent[] = [];
  // The recipe.
  const pool = iamPool(target(g, { onToken: (e) => tokens.push(e) }));
  const db = knex({ client: "pg", connectionPool: pool });
  try {
    await db.raw(
      "create table if not exists recipe_pg_knex_notes (id serial primary key, body text not null)",
    );
    const [note] = await db("recipe_pg_knex_notes").insert({ body: "signed per connection" })
      .returning("*");
    assert.deepEqual(await db("recipe_pg_knex_notes").where({ id: note.id }).first(), note);
    const { rows } = await db.raw("select current_user as who");
    assert.deepEqual(rows, [{ who: "postgres" }]);
    const backends = await concurrentBackends(async () => (await db.raw(PID_SQL)).rows[0].pid);
    assertTokenPerConnection(g, tokens, backends);
  } finally {
    await db.destroy(); // leaves the pool open
    await pool.end();
  }
});

test(
  "recipe: Knex control: on a pg.Pool with a frozen token it fails with 28P01 after 15 minutes; on iamPool() it keeps working",
  TIMEOUT,
  async () => {
    await control((pool) => {
      // Knex logs a failed acquire as a warning before rethrowing it: expected here.
      const db = knex({ client: "pg", connectionPool: pool, log: { warn: () => {} } });
      return Promise.resolve({
        who: async () => (await db.raw("select current_user as who")).rows[0].who,
        sqlState: (e) => (e as { code?: string }).code, // pg's own error
        close: async () => {
          await db.destroy();
          await pool.end();
        },
      });
    });
  },
);

// ---- TypeORM ----
//
// TypeORM builds its pool with `new driver.Pool(options)`, `driver` defaulting to pg; its `extra`
// options are merged into what it passes, but pg-iam's socket is not an option one could pass
// there. Its `driver` option is the way in: a driver whose Pool constructor returns the iamPool.
// TypeORM then owns the pool (destroy() ends it); its own connection options (host, username,
// password, ssl, poolSize, extra) are not used: set them on iamPool.

interface TypeormNote {
  id: number;
  body: string;
}
const TypeormNote = new EntitySchema<TypeormNote>({
  name: "RecipePgTypeormNote",
  tableName: "recipe_pg_typeorm_notes",
  columns: {
    id: { type: Number, primary: true, generated: true },
    body: { type: String },
  },
});

test("recipe: TypeORM (driver.Pool) on an iamPool()", TIMEOUT, async () => {
  const g = await gateway();
  const tokens: TokenEvent[] = [];
  // The recipe.
  const pool = iamPool(target(g, { onToken: (e) => tokens.push(e) }));
  const dataSource = new DataSource({
    type: "postgres",
    driver: {
      Pool: function () {
        return pool;
      },
    },
    entities: [TypeormNote],
  });
  await dataSource.initialize();
  try {
    await dataSource.query(
      "create table if not exists recipe_pg_typeorm_notes (id serial primary key, body text not null)",
    );
    const notes = dataSource.getRepository(TypeormNote);
    const note = await notes.save({ body: "signed per connection" });
    assert.deepEqual(await notes.findOneBy({ id: note.id }), { id: note.id, body: note.body });
    assert.deepEqual(await dataSource.query("select current_user as who"), [{ who: "postgres" }]);
    const backends = await concurrentBackends(async () => (await dataSource.query(PID_SQL))[0].pid);
    assertTokenPerConnection(g, tokens, backends);
  } finally {
    await dataSource.destroy(); // ends the pool
  }
});

test(
  "recipe: TypeORM control: on a pg.Pool with a frozen token it fails with 28P01 after 15 minutes; on iamPool() it keeps working",
  TIMEOUT,
  async () => {
    await control(async (pool) => {
      const dataSource = new DataSource({
        type: "postgres",
        driver: {
          Pool: function () {
            return pool;
          },
        },
      });
      await dataSource.initialize();
      return {
        who: async () => (await dataSource.query("select current_user as who"))[0].who,
        sqlState: (e) => (e as { code?: string }).code, // pg's own error (connecting, not a query)
        close: () => dataSource.destroy(),
      };
    });
  },
);
