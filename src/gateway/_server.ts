// The listening server: accepts connections, holds the limits (sessions, connections logging in,
// per address, the connection rate), the stats, and every socket until it closes.

import net from "node:net";
import { errorResponse } from "../connection/pgwire.ts";
import type { Gateway, GatewayLogin, GatewayStats } from "./types.ts";
import { checkOffset, type Config } from "./_options.ts";
import {
  type Client,
  closeWith,
  type Host,
  RATE_EXCEEDED,
  type Relay,
  TOO_MANY,
} from "./_client.ts";
import { clientAddress, handleClient } from "./_startup.ts";

export class GatewayServer implements Gateway, Host {
  readonly endpoint: string;
  readonly service: "rds" | "dsql";
  readonly region: string;
  readonly stats: GatewayStats = {
    accepted: 0,
    rejected: 0,
    rejections: {},
    logins: [],
    cancels: 0,
    refused: { "53300": 0, "53400": 0 },
  };
  readonly config: Config;
  #clockOffsetMs: number;
  readonly #server: net.Server;
  // Every socket the gateway holds, so close() can drop connections still logging in.
  readonly #sockets = new Set<net.Socket>();
  readonly #relays = new Set<Relay>();
  // Sessions (token accepted: relayed, or logging in upstream): what maxConnections bounds.
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

  constructor(config: Config) {
    this.config = config;
    this.endpoint = config.endpoint;
    this.service = config.service;
    this.region = config.region;
    this.#clockOffsetMs = config.clockOffsetMs;
    this.#server = net.createServer((socket) => this.#accept(socket));
  }

  get host(): string {
    return this.#address.host;
  }

  get port(): number {
    return this.#address.port;
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(this.config.listenPort, this.config.listenHost, () => {
        this.#server.off("error", reject);
        // A listening server's later errors (none expected) must not crash the process.
        this.#server.on("error", () => {});
        const address = this.#server.address() as net.AddressInfo;
        this.#address = { host: address.address, port: address.port };
        resolve();
      });
    });
  }

  get clockOffsetMs(): number {
    return this.#clockOffsetMs;
  }

  // Checked when set: a NaN clock would make every token "expired" with no hint why.
  set clockOffsetMs(value: number) {
    checkOffset(value, "clockOffsetMs");
    this.#clockOffsetMs = value;
  }

  now(): number {
    return Date.now() + this.#clockOffsetMs;
  }

  connections(): number {
    return this.#relays.size;
  }

  clients(): number {
    return this.#startups + this.#sessions;
  }

  startups(): number {
    return this.#startups;
  }

  #accept(raw: net.Socket): void {
    this.track(raw);
    const c = this.config;
    const address = clientAddress(raw);
    const refusal = this.#sessions >= c.maxConnections || this.#startups >= c.maxStartups ||
        (this.#startupsFrom.get(address) ?? 0) >= c.maxStartupsPerAddress
      ? TOO_MANY
      : this.#overRate()
      ? RATE_EXCEEDED
      : undefined;
    if (refusal) {
      this.stats.refused[refusal.code as "53300" | "53400"]++;
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
    handleClient(this, raw, endStartup, refusal).catch(() => raw.destroy());
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
   * Makes a client whose token was accepted a session, out of the startups; false when
   * maxConnections are open (then the client is to be refused with 53300).
   */
  beginSession(client: Client): boolean {
    // Gone already (its close may have been emitted): nothing to count, nothing to answer.
    if (client.raw.destroyed) return false;
    if (!this.hasSessionSlot()) {
      this.stats.refused["53300"]++;
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

  disconnectAll(): number {
    const count = this.#relays.size;
    for (const { client, upstream } of this.#relays) {
      client.destroy();
      upstream.destroy();
    }
    this.#relays.clear();
    return count;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.disconnectAll();
      for (const socket of this.#sockets) socket.destroy();
      this.#sockets.clear();
    });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Remembers a socket until it closes, with an error handler: a reset must not crash us. */
  track(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.on("error", () => {});
    socket.once("close", () => this.#sockets.delete(socket));
  }

  addRelay(relay: Relay): void {
    this.#relays.add(relay);
  }

  removeRelay(relay: Relay): void {
    this.#relays.delete(relay);
  }

  record(login: GatewayLogin): void {
    const s = this.stats;
    if (login.accepted) s.accepted++;
    else {
      s.rejected++;
      s.rejections[login.reason!] = (s.rejections[login.reason!] ?? 0) + 1;
    }
    s.logins.push(login);
    const over = s.logins.length - this.config.recentLogins;
    if (over > 0) s.logins.splice(0, over);
    try {
      this.config.onLogin?.(login);
    } catch {
      // Documented: the callback's exceptions are ignored; a test's broken callback must not
      // take the gateway down.
    }
  }
}
