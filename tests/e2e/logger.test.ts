// The `logger` option, end to end: every warning pg-iam writes (an idle node-postgres client's
// error, a throwing onToken/onIamConnect/onRetry hook, a failed credentials refresh, iamPassword's
// default onError on postgres.js 3, the proxy's throwing onLogin/onClose) provoked for real through
// the IAM-verifying gateway, on every driver: the logger gets one `pg-iam: …` line and the Error,
// console gets nothing; the control, the same client without a logger, writes to console as pg-iam
// always did. A real pino logger takes the same calls. Nothing logged holds a secret.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { inspect } from "node:util";
import pg from "pg";
import pino from "pino";
import {
  iamPassword,
  iamPostgres,
  type Logger,
  transaction as postgresTransaction,
} from "../../src/postgres/mod.ts";
import { iamPool, transaction as pgTransaction } from "../../src/pg/mod.ts";
import { iamSql, transaction as bunTransaction } from "../../src/bun/mod.ts";
import { startProxy } from "../../src/proxy/mod.ts";
import type { Gateway } from "../../src/gateway/mod.ts";
import { closeTestGateways, RDS, testGateway } from "../_gateway.ts";
import { type DriverName, DRIVERS, onDriver } from "../_drivers.ts";
import { postgresMajor } from "../_postgres_major.mjs";
import { ca } from "../fixtures/tls.ts";

const KEYS = { accessKeyId: "AKIDPGIAMLOGGER", secretAccessKey: "pg-iam/logger/test/secret/0123" };
const TIMEOUT = { timeout: 60_000 };
const closers: (() => Promise<unknown>)[] = [];
after(async () => {
  await Promise.all(closers.splice(0).map((close) => close().catch(() => {})));
  await closeTestGateways();
});

interface Call {
  level: string;
  args: unknown[];
}

/** Calls recorded, and a way to wait for one (events, not sleeps). */
class Sink {
  readonly calls: Call[] = [];
  #waiters: (() => void)[] = [];

  push(level: string, args: unknown[]): void {
    this.calls.push({ level, args });
    for (const wake of this.#waiters.splice(0)) wake();
  }

  async next(match: RegExp): Promise<Call> {
    for (;;) {
      const call = this.calls.find((c) =>
        match.test(c.args.map((a) => a instanceof Error ? a.message : String(a)).join(" "))
      );
      if (call) return call;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  logger(): Logger {
    return {
      warn: (...args: unknown[]) => this.push("warn", args),
      error: (...args: unknown[]) => this.push("error", args),
    };
  }
}

/** Runs `fn` with console.warn and console.error recording pg-iam's lines (others pass through). */
async function withConsole<T>(fn: (console: Sink) => Promise<T>): Promise<T> {
  const sink = new Sink();
  const { warn, error } = console;
  const capture = (level: "warn" | "error", original: (...args: unknown[]) => void) =>
  (
    ...args: unknown[]
  ) => {
    if (typeof args[0] === "string" && args[0].startsWith("pg-iam")) sink.push(level, args);
    else original.apply(console, args);
  };
  console.warn = capture("warn", warn);
  console.error = capture("error", error);
  try {
    return await fn(sink);
  } finally {
    console.warn = warn;
    console.error = error;
  }
}

/** Nothing logged holds the secret key, a signature or a token. */
function assertNoSecret(sinks: Sink[]): void {
  for (const sink of sinks) {
    const text = inspect(sink.calls, { depth: 6 });
    assert.ok(!text.includes(KEYS.secretAccessKey), text);
    assert.ok(!/X-Amz-Signature|X-Amz-Credential|Action=connect/i.test(text), text);
  }
}

/** The logger's call: one line, `pg-iam: … <the error's message>`, and the Error itself. */
function assertLine(call: Call, level: string, line: RegExp, message: string): Error {
  assert.equal(call.level, level);
  assert.equal(call.args.length, 2);
  const [text, error] = call.args as [string, Error];
  assert.match(text, line);
  assert.ok(!text.includes("\n"), text);
  assert.ok(text.endsWith(message), text);
  assert.ok(error instanceof Error, String(error));
  assert.equal(error.message, message);
  return error;
}

const common = (g: Gateway) => ({
  host: g.host,
  port: g.port,
  user: "app",
  database: "postgres",
  signingHostname: RDS,
  signingPort: 5432,
  credentials: KEYS,
  ssl: { ca },
});

interface Client {
  query(text: string): Promise<unknown>;
  /** Opens a connection, then (that one done signing) a second one. */
  secondConnection(): Promise<void>;
  transaction(
    fn: (q: (text: string) => Promise<unknown>) => Promise<unknown>,
    onRetry: () => void,
  ): Promise<unknown>;
}

function client(name: DriverName, g: Gateway, extra: Record<string, unknown>): Client {
  const options = { ...common(g), max: name === "Bun.SQL" ? 1 : 2, ...extra };
  if (name === "node-postgres") {
    const pool = iamPool(options);
    closers.push(() => pool.end());
    return {
      query: (text) => pool.query(text),
      secondConnection: async () => {
        await pool.query("select 1");
        const held = await Promise.all([pool.connect(), pool.connect()]);
        for (const c of held) c.release();
      },
      transaction: (fn, onRetry) =>
        pgTransaction(pool, (c) => fn((text) => c.query(text)), { baseDelayMs: 0, onRetry }),
    };
  }
  if (name === "postgres.js") {
    const sql = iamPostgres({ ...options, onnotice: () => {} });
    closers.push(() => sql.end({ timeout: 0 }));
    return {
      query: (text) => sql.unsafe(text),
      secondConnection: async () => {
        await sql`select 1`;
        const held = await Promise.all([sql.reserve(), sql.reserve()]);
        for (const c of held) c.release();
      },
      transaction: (fn, onRetry) =>
        postgresTransaction(sql, (tx) => fn((text) => tx.unsafe(text)), {
          baseDelayMs: 0,
          onRetry,
        }),
    };
  }
  const sql = iamSql(options);
  closers.push(() => sql.close({ timeout: 0 }));
  return {
    query: (text) => sql.unsafe(text),
    // Bun.SQL opens all of a client's connections on its first query: the first one is ended by
    // the server, and the next query opens another.
    secondConnection: async () => {
      await sql`select 1`;
      await sql`select pg_terminate_backend(pg_backend_pid())`.catch(() => {});
      await sql`select 1`;
    },
    transaction: (fn, onRetry) =>
      bunTransaction(sql, (tx) => fn((text) => tx.unsafe(text)), { baseDelayMs: 0, onRetry }),
  };
}

/**
 * Runs `provoke` with a logger (which must get the line; console nothing), then again without one
 * (the control: console gets what pg-iam always wrote). Returns both sinks' calls.
 */
async function scenario(
  provoke: (extra: Record<string, unknown>) => Promise<void>,
  match: RegExp,
): Promise<{ logged: Call; console: Call }> {
  const logger = new Sink();
  const logged = await withConsole(async (output) => {
    await provoke({ logger: logger.logger() });
    // Whichever gets it first: a line on console instead fails at once, not at the timeout.
    await Promise.race([logger.next(match), output.next(match)]);
    assert.deepEqual(output.calls, [], "console got nothing");
    return await logger.next(match);
  });
  return await withConsole(async (output) => {
    await provoke({});
    const call = await output.next(match);
    assertNoSecret([logger, output]);
    return { logged, console: call };
  });
}

/** Today's console call for a throwing hook: the prefix, then the Error (its stack printed). */
function assertHookConsole(call: Call, message: string, prefix = "pg-iam: a hook threw:"): void {
  assert.equal(call.level, "error");
  assert.equal(call.args[0], prefix);
  assert.equal((call.args[1] as Error).message, message);
}

test("logger: a logger without warn and error, or not an object, is a TypeError naming the option", () => {
  const makers: [string, (logger: unknown) => unknown][] = [
    ["iamPostgres", (logger) => iamPostgres({ host: RDS, user: "app", logger } as never)],
    ["iamPool", (logger) => iamPool({ host: RDS, user: "app", logger } as never)],
    ["iamPassword", (logger) => iamPassword({ hostname: RDS, username: "app", logger } as never)],
  ];
  for (const [fn, make] of makers) {
    for (const bad of ["console", null, 42, {}, { warn: () => {} }, { error: () => {} }]) {
      assert.throws(() => make(bad), (error: Error) => {
        assert.ok(error instanceof TypeError, `${fn}: ${error}`);
        assert.match(error.message, /^The "logger" option must be an object with warn and error/);
        return true;
      });
    }
    // The control: console and a { warn, error } object are taken.
    for (const good of [console, { warn() {}, error() {} }]) {
      const made = make(good) as { end?: () => Promise<void> };
      void made.end?.();
    }
  }
  return startProxy({ connectionString: `postgres://app@${RDS}`, logger: {} as never }).then(
    () => assert.fail("startProxy took a bad logger"),
    (error: Error) => {
      assert.ok(error instanceof TypeError, String(error));
      assert.match(error.message, /^The "logger" option must be an object with warn and error/);
    },
  );
});

for (const name of DRIVERS) {
  test(
    `logger: ${name}: a throwing onToken hook goes to the logger, not console; without a logger, to console.error (the control)`,
    onDriver(name),
    async () => {
      const g = await testGateway(KEYS);
      const onToken = () => {
        throw new Error("onToken boom");
      };
      const { logged, console } = await scenario(async (extra) => {
        const c = client(name, g, { onToken, ...extra });
        // The connection lives: a hook's error is never thrown into it.
        await c.query("select 1");
      }, /hook threw/);
      assertLine(logged, "error", /^pg-iam: a hook threw: /, "onToken boom");
      assertHookConsole(console, "onToken boom");
    },
  );
}

for (const name of ["node-postgres", "postgres.js"] as const) {
  test(
    `logger: ${name}: a throwing onIamConnect hook goes to the logger, not console; without a logger, to console.error (the control)`,
    onDriver(name),
    async () => {
      const g = await testGateway(KEYS);
      const onIamConnect = () => {
        throw new Error("onIamConnect boom");
      };
      const { logged, console } = await scenario(async (extra) => {
        await client(name, g, { onIamConnect, ...extra }).query("select 1");
      }, /hook threw/);
      assertLine(logged, "error", /^pg-iam: a hook threw: /, "onIamConnect boom");
      assertHookConsole(console, "onIamConnect boom");
    },
  );
}

for (const name of DRIVERS) {
  test(
    `logger: ${name}: a throwing onRetry hook goes to the client's logger, not console; without a logger, to console.error (the control)`,
    onDriver(name),
    async () => {
      const g = await testGateway(KEYS);
      const onRetry = () => {
        throw new Error("onRetry boom");
      };
      const { logged, console } = await scenario(async (extra) => {
        const c = client(name, g, extra);
        let attempts = 0;
        // A real serialization failure (SQLSTATE 40001) on the first attempt, none on the second.
        const result = await c.transaction(async (q) => {
          if (++attempts === 1) {
            await q(
              `do $$ begin raise exception using errcode = '40001', message = 'conflict'; end $$`,
            );
          }
          return attempts;
        }, onRetry);
        assert.equal(result, 2);
      }, /onRetry hook threw/);
      assertLine(logged, "error", /^pg-iam: the onRetry hook threw: /, "onRetry boom");
      assertHookConsole(console, "onRetry boom", "pg-iam: the onRetry hook threw:");
    },
  );
}

for (const name of DRIVERS) {
  test(
    `logger: ${name}: a failed background credentials refresh goes to the logger's warn, not console; without a logger, to console.warn (the control)`,
    onDriver(name),
    async () => {
      const g = await testGateway(KEYS);
      const { logged, console } = await scenario(async (extra) => {
        let asked = 0;
        // Keys expiring 6 minutes ahead, tokens living 2: the second connection's signing starts a
        // refresh in the background (less than 5 minutes would be left after the token), which fails.
        const credentials = () => {
          if (asked++ === 0) {
            return Promise.resolve({ ...KEYS, expiration: new Date(Date.now() + 6 * 60_000) });
          }
          return Promise.reject(new Error("the test's provider refuses a refresh"));
        };
        await client(name, g, { credentials, expiresIn: 120, ...extra }).secondConnection();
      }, /credentials refresh failed/);
      const error = assertLine(
        logged,
        "warn",
        /^pg-iam: credentials refresh failed, current ones kept: /,
        (logged.args[1] as Error).message,
      );
      assert.match(inspect(error), /the test's provider refuses a refresh/);
      assert.equal(console.level, "warn");
      assert.deepEqual(console.args, [logged.args[0]], "the same line");
    },
  );
}

test(
  "logger: node-postgres: an idle client's error (its backend terminated) goes to the logger, not console; without a logger, to console.error (the control)",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const { logged, console } = await scenario(async (extra) => {
      const pool = iamPool({ ...common(g), max: 2, ...extra });
      closers.push(() => pool.end());
      const [a, b] = await Promise.all([pool.connect(), pool.connect()]);
      const pid = (await a.query("select pg_backend_pid() as pid")).rows[0].pid;
      a.release(); // idle in the pool
      await b.query("select pg_terminate_backend($1)", [pid]);
      b.release();
    }, /idle client/);
    assertLine(
      logged,
      "error",
      /^pg-iam: an idle client of the pool failed: /,
      (logged.args[1] as Error).message,
    );
    assert.equal(console.level, "error");
    assert.deepEqual(console.args, [logged.args[0]], "the same line");
  },
);

test(
  "logger: postgres.js: iamPassword's default onError goes to the logger on postgres.js 3; on 4 the query gets the error and nothing is logged",
  TIMEOUT,
  async () => {
    const credentials = () => Promise.reject(new Error("no credentials here"));
    const logger = new Sink();
    await withConsole(async (output) => {
      const password = iamPassword({
        hostname: RDS,
        username: "app",
        credentials,
        logger: logger.logger(),
      });
      if (postgresMajor() === 3) {
        assert.equal(await password(), "");
        const call = await logger.next(/provider/);
        assertLine(
          call,
          "error",
          /^pg-iam: The "credentials" provider failed/,
          (call.args[1] as Error).message,
        );
      } else {
        await assert.rejects(password(), { name: "CredentialsError" });
        assert.deepEqual(logger.calls, []);
      }
      assert.deepEqual(output.calls, []);
    });
    // The control: without a logger, console.error on 3.x (nothing on 4.x).
    await withConsole(async (output) => {
      const password = iamPassword({ hostname: RDS, username: "app", credentials });
      if (postgresMajor() === 3) {
        assert.equal(await password(), "");
        assert.deepEqual(output.calls.map((c) => c.args), logger.calls.map((c) => [c.args[0]]));
      } else {
        await assert.rejects(password(), { name: "CredentialsError" });
        assert.deepEqual(output.calls, []);
      }
    });
  },
);

test(
  "logger: the proxy: a throwing onLogin or onClose goes to the logger (it was ignored silently before), not console; without a logger, to console.error (the control)",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const { logged, console } = await scenario(async (extra) => {
      const proxy = await startProxy({
        connectionString:
          `postgres://app@127.0.0.1:${g.port}/postgres?iam_host=${RDS}&iam_port=5432`,
        credentials: KEYS,
        ssl: { ca },
        onLogin: () => {
          throw new Error("onLogin boom");
        },
        onClose: () => {
          throw new Error("onClose boom");
        },
        ...extra,
      });
      closers.push(() => proxy.close());
      const c = new pg.Client({
        host: proxy.host,
        port: proxy.port,
        user: "app",
        database: "postgres",
      });
      await c.connect();
      assert.equal((await c.query("select 1 as one")).rows[0].one, 1);
      await c.end();
    }, /onClose boom/);
    assertLine(logged, "error", /^pg-iam: a hook threw: /, "onClose boom");
    assertHookConsole(console, "onClose boom");
  },
);

test(
  "logger: a real pino logger takes the calls as they are (the message), and the documented wrapper gives pino the Error as err",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const lines: Record<string, unknown>[] = [];
    const log = pino({ base: null }, { write: (s: string) => void lines.push(JSON.parse(s)) });
    const onToken = () => {
      throw new Error("onToken boom");
    };
    await withConsole(async (output) => {
      const plain: Logger = log;
      await client("node-postgres", g, { onToken, logger: plain }).query("select 1");
      const wrapped: Logger = {
        warn: (message, error) => log.warn({ err: error }, message),
        error: (message, error) => log.error({ err: error }, message),
      };
      await client("node-postgres", g, { onToken, logger: wrapped }).query("select 1");
      assert.deepEqual(output.calls, []);
    });
    assert.equal(lines.length, 2);
    assert.equal(lines[0].level, 50);
    assert.equal(lines[0].msg, "pg-iam: a hook threw: onToken boom");
    assert.equal(lines[0].err, undefined); // pino leaves a format argument without a placeholder out
    assert.equal(lines[1].msg, "pg-iam: a hook threw: onToken boom");
    assert.equal((lines[1].err as { message: string }).message, "onToken boom");
    assert.ok(!JSON.stringify(lines).includes(KEYS.secretAccessKey));
  },
);
