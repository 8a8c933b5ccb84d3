// Transactions run again on an optimistic-concurrency or serialization conflict (SQLSTATE 40001:
// Aurora DSQL reports every conflict so, with OC000 for data and OC001 for schema in the message;
// PostgreSQL's SERIALIZABLE isolation too), with exponential backoff and full jitter. Never when
// the outcome is unknown: a connection lost after the transaction's work was done may have
// committed. Driver-neutral: each adapter wraps its driver's transaction in `retrying()`.

import { show } from "../core/errors.ts";
import { backoffMs, sleep } from "./backoff.ts";
import { type Logger, messageOf, warn } from "./options.ts";

/** Each client's `logger` option, set by the adapters: transaction() reports onRetry's errors to it. */
export const loggers: WeakMap<object, Logger> = new WeakMap();

/**
 * Options of every adapter's `transaction()`: the retry policy, and how to begin. One type for
 * every driver (it replaces `PostgresTransactionOptions`, `PgTransactionOptions` and
 * `BunTransactionOptions`, kept as deprecated aliases).
 *
 * @example
 * ```ts
 * import type { TransactionOptions } from "@pg-iam/pg-iam/postgres";
 *
 * const options: TransactionOptions = { maxAttempts: 8, begin: "isolation level serializable" };
 * ```
 */
export interface TransactionOptions {
  /**
   * How to begin: what follows `BEGIN`, e.g. `"isolation level serializable"` (postgres.js's and
   * Bun.SQL's `sql.begin()` take it before the function; node-postgres sends `BEGIN <begin>`). In
   * a savepoint: none, or the outer transaction's.
   */
  begin?: string;
  /** How many times to run the transaction in all, the first included. Default: 5. */
  maxAttempts?: number;
  /** The first backoff's upper bound in ms (doubling each attempt, full jitter). Default: 20. */
  baseDelayMs?: number;
  /** The largest backoff in ms. Default: 2000. */
  maxDelayMs?: number;
  /** Told before each retry: the attempt that failed, its error, and the wait. */
  onRetry?: (event: RetryEvent) => void;
}

/**
 * What `onRetry` is told.
 *
 * @example
 * ```ts
 * import type { RetryEvent } from "@pg-iam/pg-iam/postgres";
 *
 * const log = (e: RetryEvent) => console.warn(`attempt ${e.attempt} conflicted; again in ${e.delayMs} ms`);
 * ```
 */
export interface RetryEvent {
  /** The attempt that failed (1 for the first). */
  attempt: number;
  /** Its error: a conflict (`isOccError(error)` is true). */
  error: Error;
  /** How long pg-iam waits before the next attempt, in ms. */
  delayMs: number;
}

/**
 * Whether `error` is an optimistic-concurrency or serialization conflict that running the
 * transaction again can resolve: SQLSTATE `40001` (Aurora DSQL's OC000 and OC001, PostgreSQL's
 * serialization failures), read from the driver's own field: `code` on postgres.js's and
 * node-postgres's errors, `errno` on Bun.SQL's (whose `code` is `ERR_POSTGRES_SERVER_ERROR`). Never
 * from the message: an application's error that merely mentions `(OC000)` is not retried.
 *
 * @param error Anything a query rejected with.
 * @returns `true` for a conflict.
 *
 * @example
 * ```ts
 * import { isOccError } from "@pg-iam/pg-iam/postgres";
 *
 * const conflict = Object.assign(new Error("change conflicts with another transaction (OC000)"), {
 *   code: "40001",
 * });
 * console.log(isOccError(conflict)); // true
 * console.log(isOccError(new Error("validation failed (OC000)"))); // false: no SQLSTATE
 * ```
 */
export function isOccError(error: unknown): boolean {
  return sqlstate(error) === "40001";
}

/**
 * The SQLSTATE of an error the server sent, from the driver's own field: `code` (postgres.js,
 * node-postgres) or, on Bun.SQL, `errno` beside the code `ERR_POSTGRES_SERVER_ERROR`. Nothing for
 * any other error: a driver's own code (CONNECTION_CLOSED) is not one, nor a system error's (EPIPE,
 * whose `errno` is a number).
 */
export function sqlstate(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const { code, errno } = error as { code?: unknown; errno?: unknown };
  const state = (c: unknown): c is string => typeof c === "string" && /^[0-9A-Z]{5}$/.test(c);
  if (code === "ERR_POSTGRES_SERVER_ERROR") return state(errno) ? errno : undefined;
  return state(code) && typeof errno !== "number" ? code : undefined;
}

/**
 * A transaction whose outcome is unknown: the connection was lost after its work was done, while
 * it was being committed. It may or may not have committed, so it is not run again.
 *
 * @example
 * ```ts ignore
 * import { iamPostgres, transaction, TransactionOutcomeUnknownError } from "@pg-iam/pg-iam/postgres";
 *
 * const sql = iamPostgres(process.env.DATABASE_URL);
 * try {
 *   await transaction(sql, (tx) => tx`insert into orders (id) values (${42})`);
 * } catch (error) {
 *   if (error instanceof TransactionOutcomeUnknownError) {
 *     // look for order 42 before inserting it again
 *   }
 * }
 * ```
 */
export class TransactionOutcomeUnknownError extends Error {
  /**
   * Creates the error (pg-iam does; you would only catch it).
   *
   * @param cause The connection error.
   */
  constructor(cause: unknown) {
    super(
      `The connection was lost while the transaction was committing: it may or may not have ` +
        `committed, so pg-iam did not run it again. Check its effects before retrying it ` +
        `(cause: ${cause instanceof Error ? cause.message : show(cause)})`,
      { cause },
    );
    this.name = "TransactionOutcomeUnknownError";
  }
}

/**
 * Whether a COMMIT that failed with `error` may have committed: unless the server answered (a
 * SQLSTATE, read as {@linkcode sqlstate} does) other than connection exceptions (class 08) and
 * shutdowns (57P01–57P03), the connection was lost with the COMMIT in flight, or the driver failed
 * in a way that says nothing about the server.
 */
export function connectionLost(error: unknown): boolean {
  const code = sqlstate(error);
  return code === undefined || code.startsWith("08") || /^57P0[123]$/.test(code);
}

/** Checked TransactionOptions with their defaults. */
export function checkTransactionOptions(
  o: TransactionOptions | undefined,
): Required<Omit<TransactionOptions, "onRetry" | "begin">> & Pick<TransactionOptions, "onRetry"> {
  if (o !== undefined && (typeof o !== "object" || o === null)) {
    throw new TypeError(`The transaction options must be an object, got ${show(o)}`);
  }
  const whole = (
    name: "maxAttempts" | "baseDelayMs" | "maxDelayMs",
    fallback: number,
    min: number,
  ) => {
    const value = o?.[name] ?? fallback;
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > 1e6) {
      throw new RangeError(
        `The "${name}" option must be a whole number from ${min}, got ${show(value)}`,
      );
    }
    return value;
  };
  if (o?.onRetry !== undefined && typeof o.onRetry !== "function") {
    throw new TypeError(`The "onRetry" option must be a function, got ${show(o.onRetry)}`);
  }
  return {
    maxAttempts: whole("maxAttempts", 5, 1),
    baseDelayMs: whole("baseDelayMs", 20, 0),
    maxDelayMs: whole("maxDelayMs", 2000, 0),
    onRetry: o?.onRetry,
  };
}

/**
 * Runs `attempt` until it succeeds, fails with something other than a conflict, or has run
 * `maxAttempts` times. `attempt(done)` calls `done()` once the transaction's work is finished and
 * only the commit remains: a connection error after that is an unknown outcome, never retried.
 */
export async function retrying<T>(
  attempt: (workDone: () => void) => Promise<T>,
  options: TransactionOptions | undefined,
  isConnectionError: (error: unknown) => boolean,
  logger?: Logger,
): Promise<T> {
  const o = checkTransactionOptions(options);
  for (let n = 1;; n++) {
    let committing = false;
    try {
      return await attempt(() => (committing = true));
    } catch (error) {
      if (committing && !isOccError(error) && isConnectionError(error)) {
        throw new TransactionOutcomeUnknownError(error);
      }
      if (!isOccError(error) || n >= o.maxAttempts) throw error;
      // Full jitter: a random wait up to an exponentially growing cap.
      const delayMs = Math.round(backoffMs(n, o.baseDelayMs, o.maxDelayMs));
      if (o.onRetry) {
        try {
          o.onRetry({ attempt: n, error: error as Error, delayMs });
        } catch (hookError) {
          warn(
            logger,
            "error",
            `pg-iam: the onRetry hook threw: ${messageOf(hookError)}`,
            hookError,
            [
              "pg-iam: the onRetry hook threw:",
              hookError,
            ],
          );
        }
      }
      await sleep(delayMs);
    }
  }
}

/** What `node:async_hooks` gives, as far as {@linkcode nestingOf} needs it. */
export interface AsyncHooks {
  AsyncLocalStorage?: new () => AsyncContext<Running>;
}

/**
 * The adapters' one Nesting factory: AsyncLocalStorage from the `node:async_hooks` module they pass
 * in (this layer is Web-only), made on first use; none where the runtime has none.
 */
export function nestingOf(hooks: AsyncHooks, handle: string): Nesting {
  const { AsyncLocalStorage } = hooks;
  return new Nesting(() => AsyncLocalStorage ? new AsyncLocalStorage() : undefined, handle);
}

/** AsyncLocalStorage's two methods: the adapters pass node:async_hooks' in (this layer is Web-only). */
export interface AsyncContext<T> {
  getStore(): T | undefined;
  run<R>(store: T, callback: () => R): R;
}

/** A transaction() running in an async context: of which pool, whether it still runs, and the one around it. */
export interface Running {
  readonly pool: object;
  done: boolean;
  readonly outer: Running | undefined;
}

/**
 * The mark a running transaction() leaves in its async context. A transaction() of the same pool
 * inside it would wait for a second connection while holding the first: once the pool is
 * exhausted (a pool of 2, three levels deep), forever, and the pool answers nothing after. It fails
 * at once instead, telling the caller to pass the transaction's handle (a savepoint). Without
 * AsyncLocalStorage (`context` gives nothing) nothing is marked, and nothing checked.
 */
export class Nesting {
  #context: AsyncContext<Running> | undefined | null = null;
  readonly #make: () => AsyncContext<Running> | undefined;
  readonly #handle: string;

  /**
   * @param make Makes the AsyncLocalStorage, on first use.
   * @param handle What `fn` is given, as the error names it ("the client", "tx").
   */
  constructor(make: () => AsyncContext<Running> | undefined, handle: string) {
    this.#make = make;
    this.#handle = handle;
  }

  #get(): AsyncContext<Running> | undefined {
    if (this.#context === null) {
      try {
        this.#context = this.#make();
      } catch {
        this.#context = undefined;
      }
    }
    return this.#context;
  }

  /** Throws a TypeError when a transaction() of `pool` is running in this async context. */
  check(pool: object): void {
    for (let mark = this.#get()?.getStore(); mark; mark = mark.outer) {
      if (mark.pool === pool && !mark.done) {
        throw new TypeError(
          `transaction() was given the pool of a transaction() that is running here: it would wait ` +
            `for a second connection while holding the first (forever once the pool is ` +
            `exhausted). Pass ${this.#handle}, the handle fn was given, to run the inner one in a ` +
            `savepoint of the outer transaction, or start it outside fn`,
        );
      }
    }
  }

  /** Runs `fn` marked as inside a transaction() of `pool`; the mark ends when `fn` settles. */
  async run<T>(pool: object, fn: () => T | Promise<T>): Promise<T> {
    const context = this.#get();
    if (context === undefined) return await fn();
    const mark: Running = { pool, done: false, outer: context.getStore() };
    try {
      return await context.run(mark, fn);
    } finally {
      mark.done = true;
    }
  }
}

/**
 * A transaction's mode as `begin` gives it, for comparing: lower case, single spaces.
 */
export function normalMode(mode: string): string {
  return mode.trim().replace(/\s+/g, " ").toLowerCase();
}

/**
 * Throws unless a nested transaction() may run with `begin`: a savepoint runs in its transaction's
 * mode, and cannot change it (as postgres.js 4's nested `begin` refuses to).
 */
export function checkNestedMode(begin: string | undefined, outer: string | undefined): void {
  if (!begin || (outer !== undefined && normalMode(begin) === normalMode(outer))) return;
  throw new TypeError(
    `The "begin" option (${show(begin)}) cannot apply to a nested transaction(): it runs in a ` +
      `savepoint, in the mode of the transaction around it (${
        outer === undefined ? "not known" : show(outer)
      })`,
  );
}

/** A transaction handle of a driver with a `savepoint()` API (postgres.js, Bun.SQL). */
export interface SavepointHandle {
  // deno-lint-ignore no-explicit-any
  savepoint(fn: (sp: any) => unknown): Promise<unknown>;
}

/** The mode (`begin`) of each transaction()'s handle, and of the savepoints in it. */
const modes = new WeakMap<object, string>();

/**
 * The checks of every adapter's `transaction(client, fn, options)` call: `fn` a function, `begin`
 * a string. Returns `begin` (`""` when not given).
 */
export function transactionCall(fn: unknown, options: { begin?: unknown } | undefined): string {
  if (typeof fn !== "function") {
    throw new TypeError(`transaction() expects a function, got ${show(fn)}`);
  }
  const begin = options?.begin ?? "";
  if (typeof begin !== "string") {
    throw new TypeError(`The "begin" option must be a string, got ${show(begin)}`);
  }
  return begin;
}

/** A driver whose transactions hand `fn` a handle with a `savepoint()` API (postgres.js, Bun.SQL). */
export interface SavepointDriver<C, H> {
  /** What transaction() expects, as its error names it: `"a postgres.js client"`. */
  client: string;
  /** The marker of this driver's running transaction()s (from {@linkcode nestingOf}). */
  nesting: Nesting;
  /** Begins a transaction of `sql` with `begin` (or none when empty), running `work` in it. */
  begin: (sql: C, begin: string, work: (tx: H) => Promise<unknown>) => Promise<unknown>;
}

/**
 * transaction() on a driver with a `savepoint()` API: given a transaction's handle, `fn` in a
 * savepoint of it, in its mode and never retried by itself; given the client, a transaction run
 * again on a conflict, refused while one of the same client runs in this async context.
 */
export function savepointTransaction<C extends object, H extends SavepointHandle, T>(
  sql: C | H,
  fn: (tx: H) => T | Promise<T>,
  options: TransactionOptions | undefined,
  driver: SavepointDriver<C, H>,
): Promise<T> {
  const begin = transactionCall(fn, options);
  if (typeof (sql as { savepoint?: unknown })?.savepoint === "function") {
    // A transaction's handle: the drivers give only those a savepoint().
    const tx = sql as H;
    checkTransactionOptions(options);
    const mode = modes.get(tx);
    checkNestedMode(begin, mode);
    return tx.savepoint((sp: H) => {
      if (mode !== undefined) modes.set(sp, mode);
      return fn(sp);
    }) as Promise<T>;
  }
  if (typeof (sql as { begin?: unknown })?.begin !== "function") {
    throw new TypeError(
      `transaction() expects ${driver.client}, or the tx of a running transaction, got ${
        show(sql)
      }`,
    );
  }
  const { nesting } = driver;
  nesting.check(sql);
  return retrying(
    (workDone) =>
      driver.begin(sql as C, begin, async (tx) => {
        modes.set(tx, begin);
        const result = await nesting.run(sql, () => fn(tx));
        workDone();
        return result;
      }) as Promise<T>,
    options,
    connectionLost,
    loggers.get(sql),
  );
}
