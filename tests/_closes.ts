// What a client has seen of its connections closing, for tests that drop connections on the
// server's side (the gateway's disconnectAll()). The gateway's side is gone at once; the client
// learns of it when its runtime delivers the close, later on a loaded machine: a query sent
// meanwhile goes to a connection already dead and fails, with the plain driver too. So a test waits
// for the client's own close events (postgres.js's `onclose`, node-postgres's pool `remove`), not
// for a time.

/** Counts events; `reaches(n)` resolves once `n` of them have happened. */
export class Tally {
  count = 0;
  #waiting: { n: number; resolve: () => void }[] = [];

  /** Records one event; bound, so it can be given as a callback. */
  readonly add = (): void => {
    this.count++;
    this.#waiting = this.#waiting.filter((w) => w.n > this.count || (w.resolve(), false));
  };

  /** Resolves once the count is `n` or more. */
  reaches(n: number): Promise<void> {
    if (this.count >= n) return Promise.resolve();
    return new Promise((resolve) => this.#waiting.push({ n, resolve }));
  }
}
