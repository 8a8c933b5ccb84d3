// The churn scenario, written once and run for every driver (tests/e2e/postgres.test.ts,
// tests/e2e/pg.test.ts, tests/e2e/bun.test.ts): a pool of 5 with 2-second connections across two simulated
// hours, the gateway's clock moved 5 minutes a step, every connection dropped by the server twice
// and the pool emptied by its idle timeout three times. It waits on the client's own close events
// (tests/_closes.ts), never on a time.
import assert from "node:assert/strict";
import type { Gateway } from "../src/gateway/mod.ts";
import type { Tally } from "./_closes.ts";

const MINUTE = 60_000;

/** A driver's client as the scenario drives it, made by `open(now)` with the simulated clock. */
export interface ChurnClient {
  /** `select pg_backend_pid() as pid, pg_sleep(0.02)`: the backend that answered. */
  query(): Promise<number>;
  /** How many connections opened so far, as the client saw them. */
  opened(): number;
  /** The client's own close events (postgres.js's `onclose`, pg-pool's `remove`, Bun's `onclose`). */
  closes: Tally;
  /** Every token the client signed or reused (its `onToken` events). */
  tokens: unknown[];
  /** Its connect events (`onConnect`, `onIamConnect`), where the driver has them. */
  connects?: { ok: boolean; attempts: number }[];
  end(): Promise<unknown>;
}

/**
 * Runs the churn through gateway `g` on the client `open` makes with the simulated clock (a pool
 * of 5, 2-second connections, a 1-second idle timeout): zero failures, and every connection
 * presented a token signed as it connected.
 */
export async function churn(g: Gateway, open: (now: () => number) => ChurnClient): Promise<void> {
  let offset = 0;
  const client = open(() => Date.now() + offset);
  // Every connection opened so far closed, as the client saw it: none is dead but thought open.
  // (A connection that failed to open is not counted: postgres.js 4 calls no onclose for it.)
  const allClosed = () => client.closes.reaches(client.opened());
  let failures = 0;
  const pids = new Set<number>();
  try {
    for (let step = 0; step < 24; step++) { // 24 × 5 simulated minutes = 2 hours
      offset += 5 * MINUTE;
      g.clockOffsetMs = offset;
      const results = await Promise.allSettled(Array.from({ length: 8 }, client.query));
      for (const r of results) {
        if (r.status === "rejected") failures++;
        else pids.add(r.value);
      }
      if (step % 6 === 5) { // a server kill of every connection
        g.disconnectAll();
        await allClosed();
      }
      if (step % 8 === 7) await allClosed(); // the idle timeout empties the pool
    }
  } finally {
    await client.end();
  }
  assert.equal(failures, 0);
  assert.equal(g.stats.rejected, 0, JSON.stringify(g.stats.rejections));
  assert.ok(g.stats.accepted >= 12, `only ${g.stats.accepted} connections opened`);
  assert.ok(pids.size >= 12, `only ${pids.size} backends served the queries`);
  // One token per physical connection, each signed right before it was presented (the gateway's
  // clock moved 2 hours; a token from an earlier step would be ≥ 5 simulated minutes old).
  assert.equal(client.tokens.length, g.stats.accepted);
  for (const login of g.stats.logins) {
    assert.ok(login.accepted);
    assert.ok(login.tokenAgeMs! < 2_000 && login.tokenAgeMs! > -1_000, `age ${login.tokenAgeMs}`);
  }
  if (client.connects) assert.ok(client.connects.every((e) => e.ok && e.attempts === 1));
}
