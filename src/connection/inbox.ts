// Whole messages from a socket, as they arrive: pgwire's MessageReader fed by a socket's events,
// with waits that end on data, end, close or error. The gateway reads its clients and its upstream
// with it, and `pg-iam doctor` its one connection.

import { MessageReader } from "./pgwire.ts";

// deno-lint-ignore no-explicit-any
type Listener = (...args: any[]) => void;

/** What an inbox needs of a socket (node:net's, a TLS one, or pg-iam's IamSocket). */
export interface InboxSocket {
  on(event: string, listener: Listener): unknown;
  off(event: string, listener: Listener): unknown;
  pause(): unknown;
  resume(): unknown;
}

/**
 * What an inbox holds by default before it stops reading (the rest waits in the peer's TCP
 * buffers): more than a login needs (a startup packet is at most 10,000 bytes, a password 65,535);
 * only a client pipelining behind its password gets there.
 */
export const MAX_BUFFERED = 1 << 17;

/**
 * Reads whole packets from a socket as they complete. Each wait resolves on data, end or error,
 * so a peer that vanishes mid-handshake ends the wait with `undefined`, never a hang or a throw.
 * It pauses the socket while it holds more than `limit` bytes, and resumes it as they are taken.
 */
export class Inbox<S extends InboxSocket = InboxSocket> {
  readonly reader: MessageReader = new MessageReader();
  readonly socket: S;
  /** The socket's error, if one ended it. */
  error: Error | undefined;
  readonly #limit: number;
  #ended = false;
  #paused = false;
  #wake: (() => void) | undefined;
  readonly #onData = (chunk: Uint8Array) => {
    this.reader.push(chunk);
    if (!this.#paused && this.reader.buffered > this.#limit) {
      this.#paused = true;
      this.socket.pause();
    }
    this.#notify();
  };
  readonly #onEnd = (error?: unknown) => {
    if (error instanceof Error) this.error ??= error;
    this.#ended = true;
    this.#notify();
  };

  constructor(socket: S, limit: number = MAX_BUFFERED) {
    this.socket = socket;
    this.#limit = limit;
    socket.on("data", this.#onData);
    socket.on("end", this.#onEnd);
    socket.on("close", this.#onEnd);
    socket.on("error", this.#onEnd);
  }

  /** Waits until `take` returns something, or the socket ends (then `undefined`). */
  async next<T>(take: () => T | undefined): Promise<T | undefined> {
    for (;;) {
      const value = take();
      if (this.#paused && this.reader.buffered <= this.#limit) {
        this.#paused = false;
        this.socket.resume();
      }
      if (value !== undefined) return value;
      if (this.#ended) return undefined;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /**
   * Stops listening: the socket's data goes elsewhere from now on. Keeps an error handler. The
   * socket may be left paused: whoever reads it next resumes it.
   */
  detach(): void {
    this.socket.off("data", this.#onData);
    this.socket.off("end", this.#onEnd);
    this.socket.off("close", this.#onEnd);
    this.socket.off("error", this.#onEnd);
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}
