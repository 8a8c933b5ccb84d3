// The gateway: a listener (src/listener: accept, limits, TLS, up to the StartupMessage) whose
// clients log in with an IAM token (_login.ts) and are relayed upstream (_upstream.ts); the stats.

import type net from "node:net";
import type { Gateway, GatewayLogin, GatewayStats } from "./types.ts";
import { checkOffset, type Config } from "./_options.ts";
import { Listener } from "../listener/server.ts";
import type { Client } from "../listener/client.ts";
import { login } from "./_login.ts";
import { forwardCancel } from "./_upstream.ts";

// A relayed connection: the client socket (TLS or not) and the upstream one.
export interface Relay {
  client: net.Socket;
  upstream: net.Socket;
}

export class GatewayServer implements Gateway {
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
  readonly listener: Listener;
  #clockOffsetMs: number;
  readonly #relays = new Set<Relay>();

  constructor(config: Config) {
    this.config = config;
    this.endpoint = config.endpoint;
    this.service = config.service;
    this.region = config.region;
    this.#clockOffsetMs = config.clockOffsetMs;
    this.listener = new Listener(config, {
      startup: (client, params, minor) => login(this, client, params, minor),
      cancel: (client, packet) => forwardCancel(this, client, packet),
      refused: (code) => void this.stats.refused[code]++,
    });
  }

  get host(): string {
    return this.listener.host;
  }

  get port(): number {
    return this.listener.port;
  }

  listen(): Promise<void> {
    return this.listener.listen();
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
    return this.listener.clients();
  }

  startups(): number {
    return this.listener.startups();
  }

  /** Makes a client whose token was accepted a session (false: refuse it with 53300). */
  beginSession(client: Client): boolean {
    return this.listener.beginSession(client);
  }

  track(socket: net.Socket): void {
    this.listener.track(socket);
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
    this.disconnectAll();
    return this.listener.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
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
