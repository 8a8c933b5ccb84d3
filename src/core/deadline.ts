// A deadline raced against promises: a connection start bounded by its connect timeout, a
// credentials provider by credentialsTimeout, the AWS credential chain by its own bound, each step
// of `pg-iam doctor` by --timeout. Web APIs only (setTimeout), so every layer can use it.

/** A deadline that promises can be raced against until it is cleared. */
export interface Deadline {
  /** Settles as `promise` does, or rejects with the deadline's error once it passes first. */
  race<T>(promise: Promise<T>): Promise<T>;
  /** Disarms the deadline: its error is never built. */
  clear(): void;
}

/**
 * A deadline `ms` from now. `error()` builds the rejection when the deadline passes, so it can say
 * what was going on then.
 */
export function deadline(ms: number, error: () => Error): Deadline {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const passed = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(error()), ms);
  });
  passed.catch(() => {}); // passing while nothing races it is no unhandled rejection
  return {
    race: (promise) => Promise.race([promise, passed]),
    clear: () => clearTimeout(timer),
  };
}

/**
 * `promise`, or `error()` if it has not settled within `ms`; the timer is cleared either way. One
 * race, so it needs no Deadline (and the core, which bundles only this, stays under 20 KB).
 */
export function withTimeout<T>(promise: Promise<T>, ms: number, error: () => Error): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const passed = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(error()), ms);
  });
  return Promise.race([promise, passed]).finally(() => clearTimeout(timer));
}
