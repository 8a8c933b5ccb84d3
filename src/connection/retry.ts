// Transactions run again on an optimistic-concurrency or serialization conflict (SQLSTATE 40001:
// Aurora DSQL reports every conflict so, with OC000 for data and OC001 for schema in the message;
// PostgreSQL's SERIALIZABLE isolation too), with exponential backoff and full jitter. Never when
// the outcome is unknown: a connection lost after the transaction's work was done may have
// committed. Driver-neutral: each adapter wraps its driver's transaction in `retrying()`.

import { show } from "../core/errors.ts";

/**
 * Options of the adapters' `transaction()`.
 *
 * @example
 * ```ts
 * import type { TransactionOptions } from "@pg-iam/pg-iam/postgres";
 *
 * const options: TransactionOptions = { maxAttempts: 8, maxDelayMs: 500 };
 * ```
 */
export interface TransactionOptions {
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
 * serialization failures), whatever the driver (postgres.js and node-postgres put the SQLSTATE in
 * `code`, Bun.SQL in `errno`).
 *
 * @param error Anything a query rejected with.
 * @returns `true` for a conflict.
 *
 * @example
 * ```ts
 * import { isOccError } from "@pg-iam/pg-iam/postgres";
 *
 * console.log(isOccError(Object.assign(new Error("change conflicts with another transaction, please retry: (OC000)"), { code: "40001" })));
 * ```
 */
export function isOccError(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const e = error as { code?: unknown; errno?: unknown; message?: unknown };
  if (e.code === "40001" || e.errno === "40001") return true;
  // A driver that keeps the SQLSTATE elsewhere still carries DSQL's own codes in the message.
  return typeof e.message === "string" && /\(OC00[01]\)/.test(e.message) && e.code === undefined;
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
 * Whether `error` means the connection was lost (rather than the server refusing something): a
 * driver's own code (CONNECTION_CLOSED, ECONNRESET, …) or SQLSTATE class 08 and 57P01–57P03.
 */
export function connectionLost(error: unknown): boolean {
  const e = error as { code?: unknown; errno?: unknown } | undefined;
  // The SQLSTATE is `code` (postgres.js, node-postgres) or `errno` (Bun.SQL, whose `code` is its own).
  const sqlstate = [e?.code, e?.errno].find((c) =>
    typeof c === "string" && /^[0-9A-Z]{5}$/.test(c)
  );
  if (sqlstate === undefined) return true;
  const code = sqlstate as string;
  return code.startsWith("08") || /^57P0[123]$/.test(code);
}

/** Checked TransactionOptions with their defaults. */
function checkTransactionOptions(
  o: TransactionOptions | undefined,
): Required<Omit<TransactionOptions, "onRetry">> & Pick<TransactionOptions, "onRetry"> {
  if (o !== undefined && (typeof o !== "object" || o === null)) {
    throw new TypeError(`The transaction options must be an object, got ${show(o)}`);
  }
  const whole = (name: keyof TransactionOptions, fallback: number, min: number) => {
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
      const delayMs = Math.round(Math.random() * Math.min(o.maxDelayMs, o.baseDelayMs * 2 ** n));
      if (o.onRetry) {
        try {
          o.onRetry({ attempt: n, error: error as Error, delayMs });
        } catch (hookError) {
          console.error("pg-iam: the onRetry hook threw:", hookError);
        }
      }
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}
