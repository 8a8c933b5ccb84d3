// The listening server: accepts connections, holds the limits (sessions, connections logging in,
// per address, the connection rate) and every socket until it closes. What happens after a client's
// StartupMessage is its owner's (the gateway verifies a token, the proxy logs in upstream).

import net from "node:net";
import { errorResponse } from "../connection/pgwire.ts";
import type { ListenerConfig } from "./options.ts";
import {
  type Client,
  closeWith,
  type Host,
  RATE_EXCEEDED,
  type Refusal,
  TOO_MANY,
} from "./client.ts";
import { clientAddress, handleClient } from "./startup.ts";

/** What the owner of a listener does with its clients. */
export interface ListenerHooks {
  /** A client sent its StartupMessage (with `params`, in protocol 3.`minor`). */
  startup(client: Client, params: Map<string, string>, minor: number): Promise<void>;
  /** A client sent a CancelRequest (`packet`, whole). */
  cancel(client: Client, packet: Uint8Array): Promise<void>;
  /** A connection refused for a limit (53300, 53400). */
  refused?(code: "53300" | "53400"): void;
}

export class Listener implements Host {
  readonly config: ListenerConfig;
  readonly #hooks: ListenerHooks;
  readonly #server: net.Server;
  // Every socket held, so close() can drop connections still logging in.
  readonly #sockets = new Set<net.Socket>();
  // Sessions (logged in, or logging in upstream): what maxConnections bounds.
  #sessions = 0;
  // Connections logging in, in all and by client address: what maxStartups and
  // maxStartupsPerAddress bound. An address leaves the map with its last connection.
  #startups = 0;
  readonly #startupsFrom = new Map<string, number>();
  // Connections being refused (over a limit) after their startup packet, as PostgreSQL does.
  #refusing = 0;
  #bucket = Infinity;
  #filled = 0;
  #address: { host: string; port: number } = { host: "", port: 0 };
  #accepting = false;

  constructor(config: ListenerConfig, hooks: ListenerHooks) {
    this.config = config;
    this.#hooks = hooks;
    this.#server = net.createServer((socket) => this.#accept(socket));
  }

  get host(): string {
    return this.#address.host;
  }

  get port(): number {
    return this.#address.port;
  }

  /** Whether it accepts connections (listening, and not stopped). */
  get accepting(): boolean {
    return this.#accepting;
  }

  listen(): Promise<void> {
    const c = this.config;
    return new Promise((resolve, reject) => {
      this.#server.once("error", reject);
      const where = c.listenPath !== undefined
        ? { path: c.listenPath }
        : { port: c.listenPort, host: c.listenHost };
      this.#server.listen(where, () => {
        this.#server.off("error", reject);
        // A listening server's later errors (none expected) must not crash the process.
        this.#server.on("error", () => {});
        const address = this.#server.address();
        this.#address = typeof address === "object" && address
          ? { host: address.address, port: address.port }
          : { host: c.listenPath ?? "", port: c.listenPort };
        this.#accepting = true;
        resolve();
      });
    });
  }

  /** Connections logging in and sessions. */
  clients(): number {
    return this.#startups + this.#sessions;
  }

  startups(): number {
    return this.#startups;
  }

  sessions(): number {
    return this.#sessions;
  }

  refuse(code: "53300" | "53400"): void {
    this.#hooks.refused?.(code);
  }

  #accept(raw: net.Socket): void {
    this.track(raw);
    const c = this.config;
    const address = clientAddress(raw);
    const refusal: Refusal | undefined = this.#sessions >= c.maxConnections ||
        this.#startups >= c.maxStartups ||
        (this.#startupsFrom.get(address) ?? 0) >= c.maxStartupsPerAddress
      ? TOO_MANY
      : this.#overRate()
      ? RATE_EXCEEDED
      : undefined;
    if (refusal) {
      this.refuse(refusal.code);
      // As many refusals wait for their startup packet as connections may be logging in.
      if (this.#refusing >= c.maxStartups) {
        // A flood: no TLS handshake for it, the answer at once (libpq and pg-iam read an
        // ErrorResponse in place of the answer to their SSLRequest).
        return closeWith(raw, errorResponse({ severity: "FATAL", ...refusal }));
      }
      this.#refusing++;
      raw.once("close", () => this.#refusing--);
    }
    const endStartup = refusal ? () => {} : this.#startup(address, raw);
    handleClient(this, this.#hooks, raw, endStartup, refusal).catch(() => raw.destroy());
  }

  // Counts a connection logging in until it closes or becomes a session; returns what ends that.
  #startup(address: string, raw: net.Socket): () => void {
    this.#startups++;
    this.#startupsFrom.set(address, (this.#startupsFrom.get(address) ?? 0) + 1);
    let counted = true;
    const end = () => {
      if (!counted) return;
      counted = false;
      this.#startups--;
      const left = this.#startupsFrom.get(address)! - 1;
      if (left === 0) this.#startupsFrom.delete(address);
      else this.#startupsFrom.set(address, left);
    };
    raw.once("close", end);
    return end;
  }

  /** Whether a session can start now (fewer than maxConnections are open). */
  hasSessionSlot(): boolean {
    return this.#sessions < this.config.maxConnections;
  }

  /**
   * Makes a client a session, out of the startups; false when maxConnections are open (then the
   * client is to be refused with 53300, counted here) or it is gone already.
   */
  beginSession(client: Client): boolean {
    // Gone already (its close may have been emitted): nothing to count, nothing to answer.
    if (client.raw.destroyed) return false;
    if (!this.hasSessionSlot()) {
      this.refuse("53300");
      return false;
    }
    client.endStartup();
    this.#sessions++;
    client.raw.once("close", () => this.#sessions--);
    return true;
  }

  // A token bucket of connectionBurst, refilled at maxConnectionRate per second.
  #overRate(): boolean {
    const rate = this.config.maxConnectionRate;
    if (rate === undefined) return false;
    const now = performance.now();
    this.#bucket = Math.min(
      this.config.connectionBurst,
      this.#bucket + (now - this.#filled) * rate / 1000,
    );
    this.#filled = now;
    if (this.#bucket < 1) return true;
    this.#bucket--;
    return false;
  }

  /**
   * Stops accepting; resolves once every connection it accepted has closed (a Unix socket's file
   * is removed at once).
   */
  stop(): Promise<void> {
    this.#accepting = false;
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  /** Stops accepting and drops every connection. */
  close(): Promise<void> {
    const stopped = this.stop();
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
    return stopped;
  }

  /** Remembers a socket until it closes, with an error handler: a reset must not crash us. */
  track(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.on("error", () => {});
    socket.once("close", () => this.#sockets.delete(socket));
  }
}
