// transaction(): conflicts (SQLSTATE 40001) run again, with backoff; an unknown outcome never does.
// Real SERIALIZABLE conflicts on real PostgreSQL, through the IAM gateway. The claims made on every
// driver (postgres.js, node-postgres, and Bun.SQL on Bun) are written once, against
// tests/_drivers.ts, each next to its negative control (the driver's own BEGIN, the server's own
// error, node-postgres's plain pool).
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { postgresMajor } from "../_postgres_major.mjs";
import { spawn } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import {
  iamPostgres,
  isOccError,
  type RetryEvent,
  transaction,
  TransactionOutcomeUnknownError,
} from "../../src/postgres/mod.ts";
import { iamPool, transaction as pgTransaction } from "../../src/pg/mod.ts";
import { closeTestGateways, RDS, testGateway } from "../_gateway.ts";
import {
  type Driver,
  driver as openDriver,
  type DriverName,
  DRIVERS,
  onDriver,
  type Query,
} from "../_drivers.ts";
import { ca } from "../fixtures/tls.ts";
import { upstreamPostgres } from "../_postgres.ts";
import { connectionLost } from "../../src/connection/retry.ts";
import { runtimeCommand } from "../_runtime.ts";

const KEYS = { accessKeyId: "AKIDPGIAMTX", secretAccessKey: "pg-iam/transaction/secret" };
const CONCURRENT = 8;
const TIMEOUT = { timeout: 60_000 };

const ends: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const end of ends) await end().catch(() => {});
  await closeTestGateways();
});

async function setup() {
  const g = await testGateway(KEYS);
  const common = {
    host: g.host,
    port: g.port,
    user: "app",
    database: "postgres",
    signingHostname: RDS,
    signingPort: 5432,
    credentials: KEYS,
    ssl: { ca },
  };
  const sql = iamPostgres({ ...common, max: CONCURRENT + 1, onnotice: () => {} });
  ends.push(() => sql.end({ timeout: 0 }));
  const pool = iamPool({ ...common, max: CONCURRENT + 1 });
  pool.on("error", () => {});
  ends.push(() => pool.end());
  const table = `counter_${Math.random().toString(36).slice(2, 10)}`;
  await sql.unsafe(`create table ${table} (id int primary key, n int not null)`);
  await sql.unsafe(`insert into ${table} values (1, 0)`);
  ends.push(() => sql.unsafe(`drop table if exists ${table}`));
  return { sql, pool, table };
}

const SERIALIZABLE = "isolation level serializable";

test("isOccError() reads SQLSTATE 40001 from the drivers' own fields, never the message: an application's error that mentions (OC000) is no conflict", () => {
  const cases: [unknown, boolean][] = [
    [Object.assign(new Error("could not serialize access"), { code: "40001" }), true],
    // Bun.SQL's PostgresError (checked against a real server in the Bun.SQL test below)
    [
      Object.assign(new Error("conflict"), { code: "ERR_POSTGRES_SERVER_ERROR", errno: "40001" }),
      true,
    ],
    [Object.assign(new Error("change conflicts, please retry: (OC000)"), { code: "40001" }), true],
    // The attack: an application's own errors, merely naming DSQL's codes
    [new Error("validation failed: (OC000)"), false],
    [new Error("schema has been updated by another transaction, please retry: (OC001)"), false],
    [Object.assign(new Error("(OC000) but a unique violation"), { code: "23505" }), false],
    [Object.assign(new Error("not Bun's server error"), { errno: "40001" }), false],
    [new Error("connection closed"), false],
    [null, false],
    ["40001", false],
  ];
  for (const [error, expected] of cases) assert.equal(isOccError(error), expected, String(error));
});

test("connectionLost() reads the same fields: a COMMIT's outcome is known only from the server's own SQLSTATE (a system error's EPIPE is none)", () => {
  const cases: [unknown, boolean][] = [
    [Object.assign(new Error("duplicate key"), { code: "23505" }), false],
    [
      Object.assign(new Error("conflict"), { code: "ERR_POSTGRES_SERVER_ERROR", errno: "40001" }),
      false,
    ],
    [Object.assign(new Error("terminating connection"), { code: "57P01" }), true],
    [Object.assign(new Error("gone"), { code: "ERR_POSTGRES_SERVER_ERROR", errno: "08006" }), true],
    [
      Object.assign(new Error("write EPIPE"), { code: "EPIPE", errno: -32, syscall: "write" }),
      true,
    ],
    [
      Object.assign(new Error("closed"), { code: "CONNECTION_CLOSED", errno: "CONNECTION_CLOSED" }),
      true,
    ],
    [Object.assign(new Error("closed"), { code: "ERR_POSTGRES_CONNECTION_CLOSED" }), true],
    [new Error("Connection terminated unexpectedly"), true],
  ];
  for (const [error, expected] of cases) {
    assert.equal(connectionLost(error), expected, String(error));
  }
});

test(
  "postgres.js: the docs' counter loses no increment with begin: serializable; under READ COMMITTED (no begin) it loses them (the control)",
  TIMEOUT,
  async () => {
    const { sql, table } = await setup();
    // docs/transactions.md's counter, every transaction reading before any writes: a barrier (an
    // event, not a sleep) holds each first attempt between its read and its write until all have read.
    const counter = async (begin: string | undefined) => {
      let arrived = 0;
      let release!: () => void;
      const allRead = new Promise<void>((r) => release = r);
      await Promise.all(Array.from({ length: CONCURRENT }, () => {
        let attempt = 0;
        return transaction(sql, async (tx) => {
          const [{ n }] = await tx.unsafe(`select n from ${table} where id = 1`);
          if (++attempt === 1 && ++arrived === CONCURRENT) release();
          await allRead;
          await tx.unsafe(`update ${table} set n = ${Number(n) + 1} where id = 1`);
        }, { begin, maxAttempts: CONCURRENT + 1, baseDelayMs: 1 });
      }));
      const [{ n }] = await sql.unsafe(`select n from ${table} where id = 1`);
      return Number(n);
    };
    // The control: READ COMMITTED, PostgreSQL's default. No transaction fails, and every one of
    // them wrote the same n + 1.
    assert.equal(await counter(undefined), 1);
    // As the docs write it: every conflict is detected and run again, and every increment lands.
    assert.equal(await counter("isolation level serializable"), 1 + CONCURRENT);
  },
);

test(
  "transaction() gives up after maxAttempts with the last conflict, and never retries other errors",
  TIMEOUT,
  async () => {
    const { sql, pool } = await setup();
    let runs = 0;
    const retried: number[] = [];
    await assert.rejects(
      transaction(sql, () => {
        runs++;
        throw Object.assign(new Error("change conflicts (OC000)"), { code: "40001" });
      }, { maxAttempts: 3, baseDelayMs: 1, onRetry: (e) => retried.push(e.attempt) }),
      { code: "40001" },
    );
    assert.equal(runs, 3);
    assert.deepEqual(retried, [1, 2]);
    let pgRuns = 0;
    await assert.rejects(
      pgTransaction(pool, async (client) => {
        pgRuns++;
        await client.query("select 1/0");
      }),
      { code: "22012" },
    );
    assert.equal(pgRuns, 1);
    await assert.rejects(transaction(sql, () => 1, { maxAttempts: 0 }), RangeError);
  },
);

test(
  "a connection lost while committing is an unknown outcome: never run again, and said so",
  TIMEOUT,
  async () => {
    const { sql, pool, table } = await setup();
    // The COMMIT waits inside the server, in a deferred trigger, for an advisory lock the test
    // holds: the session is killed while it is known to be committing.
    const key = Math.floor(Math.random() * 2 ** 31);
    await sql.unsafe(`create function ${table}_gate() returns trigger language plpgsql as $$
      begin perform pg_advisory_xact_lock(${key}); return null; end $$`);
    await sql.unsafe(`create constraint trigger gate after update on ${table}
      deferrable initially deferred for each row execute function ${table}_gate()`);
    ends.push(() => sql.unsafe(`drop function if exists ${table}_gate() cascade`));
    const holder = await sql.reserve();
    ends.push(() => Promise.resolve(holder.release()));
    const kill = async (pid: number) => {
      const [{ done }] = await sql`select pg_terminate_backend(${pid}, 30000) as done`;
      assert.equal(done, true); // the session is gone, not just told to go
    };
    /** Resolves once session `pid` is inside COMMIT, waiting for the test's lock. */
    const committing = async (pid: number) => {
      while (true) {
        const rows = await sql`
          select 1 from pg_stat_activity where pid = ${pid} and state = 'active'
            and lower(query) = 'commit' and wait_event = 'advisory'`;
        if (rows.length) return;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    };
    const cases: [string, (started: (pid: number) => void) => Promise<unknown>][] = [
      ["postgres.js", (started) =>
        transaction(sql, async (tx) => {
          const [{ pid }] = await tx`select pg_backend_pid() as pid`;
          started(pid);
          await tx.unsafe(`update ${table} set n = n + 100 where id = 1`);
        }, { begin: SERIALIZABLE })],
      ["node-postgres", (started) =>
        pgTransaction(pool, async (client) => {
          const { rows } = await client.query("select pg_backend_pid() as pid");
          started(rows[0].pid);
          await client.query(`update ${table} set n = n + 100 where id = 1`);
        })],
    ];
    for (const [driver, run] of cases) {
      let runs = 0;
      let started!: (pid: number) => void;
      const pid = new Promise<number>((resolve) => started = resolve);
      await holder`select pg_advisory_lock(${key})`;
      const outcome = run((p) => (runs++, started(p))).then(() => null, (e: unknown) => e);
      await committing(await pid);
      await kill(await pid);
      // A run again would commit now, and be seen.
      await holder`select pg_advisory_unlock(${key})`;
      const error = await outcome;
      assert.ok(error instanceof TransactionOutcomeUnknownError, `${driver}: ${error}`);
      assert.match(error.message, /may or may not have committed/);
      assert.equal(runs, 1, driver);
    }
    // node-postgres, the server's goodbye arriving while the client sits idle inside fn: pg emits
    // "error" on a checked-out client, which crashed the process without a listener.
    // (postgres.js 3.4.x crashes there itself: the test above.)
    let runs = 0;
    const error = await pgTransaction(pool, async (client) => {
      runs++;
      const { rows } = await client.query("select pg_backend_pid() as pid");
      await client.query(`update ${table} set n = n + 100 where id = 1`);
      const ended = new Promise((resolve) => client.once("end", resolve));
      await kill(rows[0].pid);
      await ended;
    }).then(() => null, (e: unknown) => e);
    assert.ok(error instanceof TransactionOutcomeUnknownError, String(error));
    assert.equal(runs, 1);
    const [{ n }] = await sql.unsafe(`select n from ${table} where id = 1`);
    assert.equal(n, 0); // here it had not committed: only the caller can find that out
  },
);

/** tests/_nextwrite_child.ts in a child process of this runtime: its exit code and output. */
async function nextWriteChild(driver: "plain" | "iam", after: string) {
  const up = await upstreamPostgres();
  const [cmd, args] = runtimeCommand(
    fileURLToPath(new URL("../_nextwrite_child.ts", import.meta.url)),
  );
  const child = spawn(cmd, args, {
    cwd: fileURLToPath(new URL("../..", import.meta.url)),
    env: {
      ...process.env,
      PGIAM_TEST_PG: `${up.user}@${up.host}:${up.port}`,
      DRIVER: driver,
      AFTER: after,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (t: string) => out += t);
  child.stderr.setEncoding("utf8").on("data", (t: string) => err += t);
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  return { code, out, err };
}

const MAJOR = postgresMajor(); // what "postgres" resolves to here and in the child

// The server ends the session of a running transaction; postgres.js has handled the 'close' (and
// dropped its socket) before the transaction's next query, COMMIT or ROLLBACK, whose write it
// defers to a setImmediate that reads the dropped socket. pg-iam's socket cannot reorder that:
// postgres.js nulls its own variable in its own 'close' handler, and the close must be reported
// when it happens (an in-flight query fails only through it). README: prefer postgres.js 4.
test(
  `postgres.js ${MAJOR}: a transaction whose connection is lost ${
    MAJOR === 3
      ? "crashes the process in nextWrite, with or without pg-iam"
      : "fails, and the process lives on"
  }`,
  TIMEOUT,
  async () => {
    for (const after of ["commit", "query", "inflight"]) {
      for (const driver of ["plain", "iam"] as const) {
        const { code, out, err } = await nextWriteChild(driver, after);
        const what = `${driver} ${after}: exit ${code}\n${out}\n${err.slice(-1500)}`;
        // Either way the transaction failed as a lost connection, never committed.
        assert.match(out, /^(CONNECTION_CLOSED|57P01)$/m, what);
        if (MAJOR === 3) {
          assert.notEqual(code, 0, what);
          assert.match(err, /reading 'write'|evaluating 'socket\.write'/, what);
        } else {
          assert.equal(code, 0, what);
          assert.match(out, /survived/, what);
        }
      }
    }
  },
);

// ---- the same claims on each driver: conflicts, an application's errors, lost connections and
// nesting (tests/_drivers.ts) ----

const driver = (name: DriverName, max: number) => openDriver(name, max, KEYS, ends);

/** A fresh table, dropped before the pools end. */
async function table(d: Driver): Promise<string> {
  const name = `tx_${Math.random().toString(36).slice(2, 10)}`;
  await d.query(`create table ${name} (id int primary key)`);
  ends.unshift(() => d.query(`drop table if exists ${name}`));
  return name;
}

const pidOf = async (q: Query) => Number((await q("select pg_backend_pid() as pid"))[0].pid);

/** A real server error with SQLSTATE `state`, in each driver's own fields. */
const raise = (state: string, message: string) =>
  `do $$ begin raise exception '${message}' using errcode = '${state}'; end $$`;

/**
 * CONCURRENT read-then-write increments under SERIALIZABLE, every first attempt held between its
 * read and its write until all have read (a barrier, not a sleep): by the driver's own BEGIN (the
 * control) all but one conflict and fail; with transaction() every conflict runs again and every
 * increment lands.
 */
async function concurrentIncrements(name: DriverName): Promise<void> {
  const d = await driver(name, CONCURRENT + 1);
  const t = `counter_${Math.random().toString(36).slice(2, 10)}`;
  await d.query(`create table ${t} (id int primary key, n int not null)`);
  await d.query(`insert into ${t} values (1, 0)`);
  ends.unshift(() => d.query(`drop table if exists ${t}`));
  const count = async () => Number((await d.query(`select n from ${t} where id = 1`))[0].n);
  /** Increments that run at once, each first read waiting for all the others'. */
  const increments = () => {
    let arrived = 0;
    let release!: () => void;
    const allRead = new Promise<void>((r) => release = r);
    return () => {
      let attempt = 0;
      return async (q: Query) => {
        const [{ n }] = await q(`select n from ${t} where id = 1`);
        if (++attempt === 1 && ++arrived === CONCURRENT) release();
        await allRead;
        await q(`update ${t} set n = ${Number(n) + 1} where id = 1`);
      };
    };
  };

  const plainOne = increments();
  const plain = await Promise.allSettled(
    Array.from({ length: CONCURRENT }, () => d.plain(SERIALIZABLE, plainOne())),
  );
  const failed = plain.filter((r) => r.status === "rejected");
  assert.ok(failed.length > 0, "no conflict: the control proves nothing");
  for (const r of failed) {
    assert.ok(isOccError((r as PromiseRejectedResult).reason), String(r));
  }
  assert.equal(await count(), CONCURRENT - failed.length);

  const retries: RetryEvent[] = [];
  const one = increments();
  await Promise.all(Array.from({ length: CONCURRENT }, () => {
    const increment = one();
    return d.run((q) => increment(q), {
      begin: SERIALIZABLE,
      maxAttempts: 20,
      onRetry: (e) => retries.push(e),
    });
  }));
  assert.equal(await count(), 2 * CONCURRENT - failed.length);
  assert.ok(retries.length > 0);
  assert.ok(retries.every((r) => isOccError(r.error) && r.delayMs >= 0 && r.delayMs <= 2000));
}

/** 20 application errors roll back and keep the connection; a lost connection is discarded. */
async function applicationErrors(name: DriverName): Promise<void> {
  // One connection at most: Bun.SQL gives a transaction's connection back after the
  // transaction has settled, so the next one may open a second connection meanwhile.
  const d = await driver(name, 1);
  const t = await table(d);
  const pids = new Set<number>();
  for (let i = 0; i < 20; i++) {
    await assert.rejects(
      d.run(async (q) => {
        pids.add(await pidOf(q));
        await q(`insert into ${t} values (${i})`);
        throw new Error("validation failed");
      }),
      { message: "validation failed" },
    );
  }
  assert.deepEqual([pids.size, d.gateway.stats.accepted], [1, 1]);
  assert.equal((await d.query(`select id from ${t}`)).length, 0); // each one rolled back

  // The control: the server ends the session inside fn. Whether fn lets the connection's
  // error through or throws its own instead, that connection is not reused. (postgres.js 3
  // crashes the process there, with or without pg-iam: the nextWrite test above.)
  if (name === "postgres.js" && MAJOR === 3) return;
  const ended: number[] = [];
  for (const swallow of [false, true]) {
    const error = await d.run(async (q) => {
      ended.push(await pidOf(q));
      const terminated = await q("select pg_terminate_backend(pg_backend_pid())")
        .then(() => null, (e: unknown) => e);
      assert.ok(terminated !== null, "the session was not ended");
      throw swallow ? new Error("validation failed") : terminated;
    }).then(() => null, (e: unknown) => e);
    assert.ok(error instanceof Error, String(error));
    const next = await d.run((q) => pidOf(q));
    assert.ok(!ended.includes(next), `session ${next} was ended, and used again`);
  }
  assert.equal(ended[0], [...pids][0]);
  assert.equal(d.gateway.stats.accepted, 3);
}

/** An application's error naming (OC000) is not retried; the server's own 40001 is. */
async function occInMessage(name: DriverName): Promise<void> {
  const d = await driver(name, 2);
  let runs = 0;
  await assert.rejects(
    d.run(() => {
      runs++;
      throw new Error("validation failed: (OC000)");
    }, { maxAttempts: 3 }),
    { message: "validation failed: (OC000)" },
  );
  assert.equal(runs, 1);
  let conflicts = 0;
  const error = await d.run(async (q) => {
    conflicts++;
    await q(raise("40001", "change conflicts with another transaction, please retry: (OC000)"));
  }, { maxAttempts: 3 }).then(() => null, (e: unknown) => e);
  assert.ok(isOccError(error), String(error));
  assert.equal(conflicts, 3);
}

/** Nested three deep on a pool of 2: the pool at once a TypeError, the handle savepoints. */
async function nestedThreeDeep(name: DriverName): Promise<void> {
  const d = await driver(name, 2);
  const t = await table(d);
  // The attack: each level asks the pool for a connection while holding one. Before, the
  // third waited forever, and so did every later query on the pool.
  let depth = 0;
  const error = await d.run(async (q) => {
    depth++;
    await q(`insert into ${t} values (0)`);
    await d.run(async () => {
      depth++;
      await d.run(() => Promise.resolve(void depth++));
    });
  }).then(() => null, (e: unknown) => e);
  assert.ok(error instanceof TypeError, String(error));
  assert.match(error.message, /running here.*savepoint/s);
  assert.equal(depth, 1);
  // The control: the same nesting by hand on node-postgres's own pool; the third checkout waits
  // for a connection the two before it hold, and would forever were they waiting for it.
  if (d.waitingAfterThreeCheckouts) assert.equal(await d.waitingAfterThreeCheckouts(), 1);
  const answers = await Promise.all([d.query("select 1 as n"), d.query("select 2 as n")]);
  assert.deepEqual(answers.map((rows) => Number(rows[0].n)), [1, 2]);

  // Savepoints, on the one connection: the innermost's failure undoes only its own insert.
  const pids = new Set<number>();
  const result = await d.run(async (q, tx) => {
    pids.add(await pidOf(q));
    await q(`insert into ${t} values (1)`);
    return await d.nested(tx, async (q2, tx2) => {
      pids.add(await pidOf(q2));
      await q2(`insert into ${t} values (2)`);
      await assert.rejects(
        d.nested(tx2, async (q3) => {
          await q3(`insert into ${t} values (3)`);
          throw new Error("inner failed");
        }),
        { message: "inner failed" },
      );
      await d.nested(tx2, (q3) => q3(`insert into ${t} values (4)`));
      return "done";
    });
  });
  assert.equal(result, "done");
  assert.equal(pids.size, 1);
  const ids = (await d.query(`select id from ${t} order by id`)).map((r) => Number(r.id));
  assert.deepEqual(ids, [1, 2, 4]);

  // A conflict inside a savepoint runs the whole transaction again, from the outermost.
  let outer = 0;
  let inner = 0;
  await d.run(async (_q, tx) => {
    outer++;
    await d.nested(tx, async (q2) => {
      inner++;
      if (outer === 1) await q2(raise("40001", "could not serialize access"));
    });
  }, { maxAttempts: 3 });
  assert.deepEqual([outer, inner], [2, 2]);

  // A savepoint runs in its transaction's mode: another mode is refused, the same one runs.
  const serializable = { begin: "isolation level serializable" };
  await d.run((_q, tx) => {
    assert.throws(() => d.nested(tx, () => Promise.resolve(), serializable), TypeError);
    return Promise.resolve();
  });
  await d.run(
    (_q, tx) => d.nested(tx, () => Promise.resolve(), { begin: "ISOLATION LEVEL  Serializable" }),
    serializable,
  );
  assert.deepEqual(
    (await d.query("select 3 as n")).map((r) => Number(r.n)),
    [3],
  );
}

for (const name of DRIVERS) {
  test(
    `${name}: concurrent SERIALIZABLE increments all land with transaction(); without it some fail (the control)`,
    onDriver(name),
    () => concurrentIncrements(name),
  );
  test(
    `${name}: 20 application errors in transaction() roll back and keep the connection (1 physical connection, 1 IAM login); a lost connection is discarded and the next transaction works (the control)`,
    onDriver(name),
    () => applicationErrors(name),
  );
  test(
    `${name}: an application's error that mentions (OC000) fails transaction() at once; the server's own 40001 runs it again (the control)`,
    onDriver(name),
    () => occInMessage(name),
  );
  test(
    `${name}: transaction() three deep on a pool of 2: given the pool inside fn it fails at once with a TypeError, given fn's handle it nests in savepoints; the pool answers after`,
    onDriver(name),
    () => nestedThreeDeep(name),
  );
}
