// Waiting before asking again: a busy server at connect (IamSocket), a transaction conflict
// (retrying()). Web APIs only.

/**
 * Full jitter: a random wait up to `baseMs` doubled `attempt` times, capped at `maxMs`, so that
 * clients failing together do not ask again together.
 */
export function backoffMs(attempt: number, baseMs: number, maxMs: number): number {
  return Math.random() * Math.min(maxMs, baseMs * 2 ** attempt);
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
