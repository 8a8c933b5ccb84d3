// Prewarming for every adapter: connections opened ahead of traffic at a steady pace, each held
// until all have opened (so that each is a separate physical connection), then given back.

import { show } from "../core/errors.ts";
import { checkCount } from "./options.ts";
import { sleep } from "./backoff.ts";

/** The result of an adapter's `prewarm()`: how many connections opened, and why others did not. */
export interface PrewarmResult {
  /** Connections that opened and answered. */
  opened: number;
  /** Errors of the connections that did not. */
  errors: Error[];
}

/** Options of the adapters' `prewarm()`. */
export interface PrewarmOptions {
  /**
   * Connections started per second, at most. Default: 50, half of Aurora DSQL's 100 new
   * connections per second per cluster, leaving room for the rest of the fleet.
   */
  rate?: number;
}

/** The default `rate`: under DSQL's 100 new connections per second. */
export const PREWARM_RATE = 50;

/**
 * Opens `connections` with `open`, started `1000 / rate` ms apart, holds them all until every one
 * has opened or failed, then gives them back with `release`. Never rejects.
 *
 * `client[closer]` (the client's end or close method) is wrapped while this runs: a client being
 * closed first gets its held connections back, and no more are opened, or closing it would wait
 * for a prewarm that waits for it. The original method is put back when done.
 */
export async function pacedPrewarm<T>(
  connections: number,
  options: PrewarmOptions | undefined,
  open: () => Promise<T>,
  release: (connection: T) => void,
  client?: Record<string, unknown>,
  closers: readonly string[] = [],
): Promise<PrewarmResult> {
  const rate = checkRate(options);
  const gap = 1000 / rate;
  const held = new Set<T>();
  let stopped = false;
  const stop = () => {
    stopped = true;
    for (const connection of held) release(connection);
    held.clear();
  };
  const restore = wrapClosers(client, closers, stop);
  const errors: Error[] = [];
  let opened = 0;
  try {
    const started: Promise<unknown>[] = [];
    const t0 = performance.now();
    for (let i = 0; i < connections && !stopped; i++) {
      const wait = t0 + i * gap - performance.now();
      if (wait > 1) await sleep(wait);
      if (stopped) break;
      started.push(
        open().then(
          (connection) => {
            opened++;
            if (stopped) release(connection);
            else held.add(connection);
          },
          (error: Error) => void errors.push(error),
        ),
      );
    }
    await Promise.all(started);
  } finally {
    restore();
    stop();
  }
  return { opened, errors };
}

// Wraps client[name] for each closer: `before` runs first. Returns what puts them back.
function wrapClosers(
  client: Record<string, unknown> | undefined,
  names: readonly string[],
  before: () => void,
): () => void {
  const restores: (() => void)[] = [];
  for (const name of names) {
    const original = client?.[name];
    if (typeof original !== "function") continue;
    const wrapped = function (this: unknown, ...args: unknown[]) {
      before();
      return original.apply(this, args);
    };
    client![name] = wrapped;
    restores.push(() => {
      if (client![name] === wrapped) client![name] = original;
    });
  }
  return () => restores.forEach((restore) => restore());
}

function checkRate(options: PrewarmOptions | undefined): number {
  if (options === undefined) return PREWARM_RATE;
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`prewarm() expects an options object, got ${show(options)}`);
  }
  const rate = options.rate ?? PREWARM_RATE;
  if (typeof rate !== "number" || !Number.isFinite(rate) || rate <= 0) {
    throw new RangeError(
      `The "rate" option must be a positive number of connections per second, got ${show(rate)}`,
    );
  }
  return rate;
}

/** `connections` checked against the pool's `max`: holding more than `max` would wait forever. */
export function checkMax(connections: number, max: number | undefined): void {
  checkCount(connections, "connections");
  if (typeof max === "number" && connections > max) {
    throw new RangeError(
      `prewarm() cannot open ${connections} connections in a pool of at most ${max} (its "max")`,
    );
  }
}
