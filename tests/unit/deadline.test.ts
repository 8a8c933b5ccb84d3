// core/deadline.ts: the one deadline helper (connection starts, the AWS credential chain's bound,
// pg-iam doctor's steps). No assertion on how long anything took: only which of two settled first,
// and timers firing in the order they are due.
import { test } from "node:test";
import assert from "node:assert/strict";
import { deadline, withTimeout } from "../../src/core/deadline.ts";

const never = new Promise<never>(() => {});
const later = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test("withTimeout: a promise that never settles rejects with the error built when the time passes; one that settles wins and its error is never built", async () => {
  let built = 0;
  const error = () => (built++, new RangeError("step timed out"));
  await assert.rejects(withTimeout(never, 1, error), {
    name: "RangeError",
    message: "step timed out",
  });
  assert.equal(built, 1);

  assert.equal(await withTimeout(Promise.resolve("ok"), 1, error), "ok");
  await assert.rejects(withTimeout(Promise.reject(new Error("own")), 1, error), { message: "own" });
  await later(5); // past the 1 ms timers: cleared, they built nothing
  assert.equal(built, 1);
});

test("deadline: one timer raced by several promises until cleared; cleared, its error is never built, and passing unraced is no unhandled rejection", async () => {
  let built = 0;
  const limit = deadline(1, () => (built++, new Error("deadline passed")));
  assert.equal(await limit.race(Promise.resolve(1)), 1);
  await assert.rejects(limit.race(never), { message: "deadline passed" });
  await assert.rejects(limit.race(never), { message: "deadline passed" }); // still passed
  assert.equal(built, 1);

  const cleared = deadline(1, () => (built++, new Error("cleared")));
  cleared.clear();
  const unraced = deadline(1, () => new Error("nobody races this"));
  await later(5);
  assert.equal(built, 1);
  void unraced;
});
