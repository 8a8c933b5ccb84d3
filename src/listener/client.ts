// One client connection while it logs in: its inbox, what the server that accepted it is to it
// (Host), and how it is written to, refused and closed.

import type net from "node:net";
import { errorResponse } from "../connection/pgwire.ts";
import { Inbox as SocketInbox } from "../connection/inbox.ts";
import type { ListenerConfig } from "./options.ts";

/** What a client connection needs of the server that accepted it. */
export interface Host {
  readonly config: ListenerConfig;
  track(socket: net.Socket): void;
  hasSessionSlot(): boolean;
  /** Counts a connection refused with 53300 or 53400. */
  refuse(code: "53300" | "53400"): void;
}

// What is queued for a client during login before one that does not read is dropped.
const MAX_UNSENT = 1 << 20;
// How long a refused client has to read the ErrorResponse and close before it is dropped.
const CLOSE_GRACE_MS = 1000;

/**
 * Reads a client's (or an upstream's) whole packets (connection/inbox.ts). It holds at most
 * MAX_BUFFERED of a client's input, times maxStartups for all connections logging in.
 */
export class Inbox extends SocketInbox<net.Socket> {}

/** A client connection, from accept until it is relayed or closed. */
export interface Client {
  server: Host;
  /** The TCP (or Unix) socket, under the TLS one if any. */
  raw: net.Socket;
  /** Reads the socket the client speaks on: the TCP one, then the TLS one once negotiated. */
  inbox: Inbox;
  tls: boolean;
  /** The authentication deadline, from accept; cleared once the session starts relaying. */
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
  code: "53300" | "53400";
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

// Relays bytes verbatim both ways from now on: `toClient` (what the upstream sent with its
// AuthenticationOk) to the client, `toUpstream` (anything the client pipelined) to the upstream.
// `onClose` runs once, when either side ends. `count` sees every chunk, for metrics.
export function relay(
  client: net.Socket,
  upstream: net.Socket,
  toClient: Uint8Array[],
  toUpstream: Uint8Array,
  onClose: () => void,
  count?: (direction: "up" | "down", bytes: number) => void,
): void {
  let closed = false;
  const closeBoth = () => {
    if (closed) return;
    closed = true;
    onClose();
    // Whatever is still queued is delivered before the other side closes.
    for (const socket of [client, upstream]) {
      if (!socket.destroyed) socket.end(() => socket.destroy());
    }
  };
  const pipe = (from: net.Socket, to: net.Socket, direction: "up" | "down") => {
    from.on("data", (chunk: Uint8Array) => {
      count?.(direction, chunk.length);
      if (!to.write(chunk)) from.pause();
    });
    to.on("drain", () => from.resume());
    from.once("end", closeBoth);
    from.once("close", closeBoth);
  };
  pipe(client, upstream, "up");
  pipe(upstream, client, "down");
  let clientDrained = true;
  for (const chunk of toClient) {
    if (chunk.length) {
      count?.("down", chunk.length);
      clientDrained = client.write(chunk);
    }
  }
  if (toUpstream.length) count?.("up", toUpstream.length);
  const upstreamDrained = toUpstream.length ? upstream.write(toUpstream) : true;
  // Either socket may have been paused by its inbox, and a 'data' listener does not resume a
  // paused stream: each flows now unless the other side has yet to drain.
  if (upstreamDrained) client.resume();
  else client.pause();
  if (clientDrained) upstream.resume();
  else upstream.pause();
  if (client.destroyed || upstream.destroyed) closeBoth();
}
