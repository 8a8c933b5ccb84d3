// One client connection while it logs in: its inbox, what the server is to it (Host), and how it is
// written to, refused and closed.

import type net from "node:net";
import { errorResponse } from "../connection/pgwire.ts";
import { Inbox as SocketInbox } from "../connection/inbox.ts";
import type { GatewayLogin, GatewayStats } from "./types.ts";
import type { Config } from "./_options.ts";

// A relayed connection: the client socket (TLS or not) and the upstream one.
export interface Relay {
  client: net.Socket;
  upstream: net.Socket;
}

/** What a client connection needs of the server that accepted it. */
export interface Host {
  readonly config: Config;
  readonly stats: GatewayStats;
  now(): number;
  track(socket: net.Socket): void;
  hasSessionSlot(): boolean;
  beginSession(client: Client): boolean;
  record(login: GatewayLogin): void;
  addRelay(relay: Relay): void;
  removeRelay(relay: Relay): void;
}

// What the gateway queues for a client during login before it drops one that does not read.
const MAX_UNSENT = 1 << 20;
// How long a refused client has to read the ErrorResponse and close before it is dropped.
const CLOSE_GRACE_MS = 1000;

/**
 * Reads a client's (or the upstream's) whole packets (connection/inbox.ts). It holds at most
 * MAX_BUFFERED of a client's input, times maxStartups for all connections logging in.
 */
export class Inbox extends SocketInbox<net.Socket> {}

/** A client connection, from accept until it is relayed or closed. */
export interface Client {
  gateway: Host;
  /** The TCP socket, under the TLS one if any. */
  raw: net.Socket;
  /** Reads the socket the client speaks on: the TCP one, then the TLS one once negotiated. */
  inbox: Inbox;
  tls: boolean;
  /** The authentication deadline, from accept; cleared once relaying starts. */
  deadline: ReturnType<typeof setTimeout>;
  /** Whether the deadline passed (and the connection was dropped for it). */
  timedOut: boolean;
  /** Stops counting it among the connections logging in (it became a session). */
  endStartup: () => void;
}

/** A client that sent its StartupMessage. */
export interface Session extends Client {
  user: string;
  database: string;
}

/** A server's answer to a connection it will not take. */
export interface Refusal {
  code: string;
  message: string;
}

export const TOO_MANY: Refusal = { code: "53300", message: "sorry, too many clients already" };
export const RATE_EXCEEDED: Refusal = {
  code: "53400",
  message: "unable to accept connection, rate exceeded",
};

// Writes to a client that is logging in; drops one that does not read what it was sent.
export function send(socket: net.Socket, bytes: Uint8Array | string): boolean {
  if (socket.destroyed) return false;
  if (socket.writableLength > MAX_UNSENT) {
    socket.destroy();
    return false;
  }
  socket.write(bytes);
  return true;
}

// Sends a FATAL ErrorResponse and closes.
export function fail(
  client: Client,
  code: string,
  message: string,
  extra: { detail?: string; hint?: string } = {},
): void {
  client.inbox.detach();
  closeWith(client.inbox.socket, errorResponse({ severity: "FATAL", code, message, ...extra }));
}

// Sends `bytes` (if any) and closes: a FIN once they are written, then the socket is dropped when
// the peer closes too, or CLOSE_GRACE_MS later. Whatever the peer still sends is read and
// discarded meanwhile: closing with unread input would be a reset, which can destroy the message
// before the peer reads it.
export function closeWith(socket: net.Socket, bytes?: Uint8Array): void {
  if (socket.destroyed) return;
  socket.on("data", () => {});
  socket.resume();
  if (bytes) socket.end(bytes);
  else socket.end();
  const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
  socket.once("close", () => clearTimeout(timer));
}
