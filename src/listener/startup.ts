// A client connection up to its StartupMessage: the authentication deadline, SSLRequest and
// GSSENCRequest, direct TLS, the protocol version, and a server that is full answering so. The
// StartupMessage or CancelRequest then goes to the listener's owner.

import type net from "node:net";
import tls from "node:tls";
import {
  CANCEL_REQUEST,
  GSSENC_REQUEST,
  SSL_REQUEST,
  startupCode,
  startupParameters,
} from "../connection/pgwire.ts";
import {
  type Client,
  closeWith,
  fail,
  type Host,
  Inbox,
  type Refusal,
  send,
  TOO_MANY,
} from "./client.ts";
import type { ListenerHooks } from "./server.ts";

// The protocol versions spoken, as PostgreSQL words it when refusing another.
const SUPPORTED = "server supports 3.0 to 3.0";

export async function handleClient(
  server: Host,
  hooks: ListenerHooks,
  raw: net.Socket,
  endStartup: () => void,
  refusal?: Refusal,
): Promise<void> {
  raw.setNoDelay(true);
  const client: Client = {
    server,
    raw,
    inbox: new Inbox(raw),
    tls: false,
    // Like authentication_timeout: fixed from accept, whatever the client sends meanwhile. The
    // server closes without a word; so does the listener.
    deadline: setTimeout(() => {
      client.timedOut = true;
      raw.destroy();
    }, server.config.authenticationTimeoutMs),
    timedOut: false,
    endStartup,
  };
  raw.once("close", () => clearTimeout(client.deadline));
  // One SSLRequest and one GSSENCRequest, in either order, as PostgreSQL (which fixed clients
  // alternating them forever); a repeat is then an unsupported protocol version, 1234.5679 or
  // 1234.5680. TLS negotiated counts as both.
  let sslDone = false;
  let gssDone = false;
  // Direct TLS (PostgreSQL 17's sslnegotiation=direct): a ClientHello as the connection's first
  // byte (0x16 cannot begin a startup packet: its length would be hundreds of megabytes).
  const first = await client.inbox.next(() => client.inbox.reader.buffered > 0 || undefined);
  if (first === undefined) return void raw.destroy();
  if (client.inbox.reader.peek() === TLS_HANDSHAKE) {
    const secured = server.config.secureContext !== undefined && await directTls(client);
    // As PostgreSQL: without TLS, or without ALPN "postgresql", the connection is closed unanswered.
    if (!secured) return closeWith(raw);
    sslDone = gssDone = true;
  }
  for (;;) {
    const inbox = client.inbox;
    const packet = await inbox.next(() => inbox.reader.startup());
    if (packet === undefined) return void raw.destroy();
    const code = startupCode(packet);
    if (code === CANCEL_REQUEST) return hooks.cancel(client, packet);
    const secureContext = server.config.secureContext;
    if (code === SSL_REQUEST && !sslDone && secureContext) {
      // Bytes after the SSLRequest would be a client ignoring our answer: refuse, as the server.
      if (inbox.reader.buffered > 0) return void raw.destroy();
      inbox.detach();
      raw.write("S");
      const socket = new tls.TLSSocket(raw, { isServer: true, secureContext });
      server.track(socket);
      client.inbox = new Inbox(socket);
      client.tls = true;
      sslDone = gssDone = true;
      continue;
    }
    const ssl = code === SSL_REQUEST && !sslDone;
    if (ssl || (code === GSSENC_REQUEST && !gssDone)) {
      if (ssl) sslDone = true;
      else gssDone = true;
      if (!send(inbox.socket, "N")) return;
      if (inbox.reader.buffered > 0) {
        // Sent before the answer, so sent in plaintext whatever the answer: the server refuses it.
        const request = ssl ? "SSL request" : "GSSAPI encryption request";
        return fail(client, "08P01", `received unencrypted data after ${request}`, {
          detail: "This could be either a client-software bug or evidence of an attempted " +
            "man-in-the-middle attack.",
        });
      }
      continue;
    }
    const major = code >>> 16;
    const minor = code & 0xffff;
    if (major !== 3) {
      return fail(client, "0A000", `unsupported frontend protocol ${major}.${minor}: ${SUPPORTED}`);
    }
    const params = startupParameters(packet);
    if (params === undefined) {
      return fail(
        client,
        "08P01",
        "invalid startup packet layout: expected terminator as last byte",
      );
    }
    // PostgreSQL says it is full only now, after TLS and the startup packet.
    if (refusal) return fail(client, refusal.code, refusal.message);
    if (!server.hasSessionSlot()) {
      server.refuse("53300");
      return fail(client, TOO_MANY.code, TOO_MANY.message);
    }
    return hooks.startup(client, params, minor);
  }
}

// The address a connection comes from, IPv4 as such when it arrives on an IPv6 socket.
export function clientAddress(socket: net.Socket): string {
  const address = socket.remoteAddress ?? "";
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

// The first byte of a TLS record carrying a handshake message (the ClientHello).
const TLS_HANDSHAKE = 0x16;
// The ALPN protocol PostgreSQL 17 and later require on direct TLS.
const PG_ALPN = "postgresql";

/**
 * The TLS handshake a client started without an SSLRequest; the client's inbox moves to the TLS
 * socket. False when the handshake fails or the client did not offer ALPN "postgresql".
 */
async function directTls(client: Client): Promise<boolean> {
  const { server, raw } = client;
  const received = client.inbox.reader.rest();
  client.inbox.detach();
  // The bytes already read go back to the socket, for the TLS socket to read first.
  raw.pause();
  raw.unshift(received);
  const socket = new tls.TLSSocket(raw, {
    isServer: true,
    secureContext: server.config.secureContext,
    ALPNProtocols: [PG_ALPN],
  });
  server.track(socket);
  const secure = await new Promise<boolean>((resolve) => {
    socket.once("secure", () => resolve(true));
    socket.once("error", () => resolve(false));
    socket.once("close", () => resolve(false));
  });
  if (!secure || socket.alpnProtocol !== PG_ALPN) {
    socket.destroy();
    return false;
  }
  client.inbox = new Inbox(socket);
  client.tls = true;
  return true;
}
