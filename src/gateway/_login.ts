// The login of a client that sent its StartupMessage: protocol options, the password asked for and
// verified as an IAM token, the login recorded, then the upstream.

import { sha256Hex } from "../core/sha256.ts";
import {
  authCleartext,
  MAX_PASSWORD_LENGTH,
  negotiateProtocolVersion,
  passwordOf,
  typeName,
} from "../connection/pgwire.ts";
import { verifyToken } from "./verify.ts";
import type { GatewayRejectReason } from "./types.ts";
import { type Client, fail, send, type Session, TOO_MANY } from "../listener/client.ts";
import { connectUpstream } from "./_upstream.ts";
import type { GatewayServer } from "./_server.ts";

export async function login(
  gateway: GatewayServer,
  client: Client,
  params: Map<string, string>,
  minor: number,
): Promise<void> {
  const { inbox } = client;
  const socket = inbox.socket;
  // Protocol options (_pq_.*) are the gateway's to negotiate, and it knows none: they are
  // refused in NegotiateProtocolVersion, never sent upstream. So is a minor version beyond 3.0
  // (3.2 is PostgreSQL 18's): the client goes on in 3.0, as the upstream login is.
  const unrecognized = [...params.keys()].filter((name) => name.startsWith("_pq_."));
  for (const name of unrecognized) params.delete(name);
  if (minor > 0 || unrecognized.length > 0) {
    if (!send(socket, negotiateProtocolVersion(0, unrecognized))) return;
  }
  const user = params.get("user") ?? "";
  const database = params.get("database") || user;
  const session: Session = Object.assign(client, { user, database });
  if (user === "") {
    reject(gateway, session, "malformed", "the startup packet names no user");
    return fail(client, "28000", "no PostgreSQL user name specified in startup packet");
  }
  if (gateway.config.secureContext && !client.tls) {
    reject(gateway, session, "no-tls", "the client did not request TLS");
    return fail(
      client,
      "28000",
      `no pg_hba.conf entry for host "${socket.remoteAddress}", user "${user}", database "${database}", no encryption`,
      { hint: "This server requires TLS: connect with sslmode=require or stricter." },
    );
  }

  if (!send(socket, authCleartext())) return;
  const reply = await inbox.next(() => inbox.reader.message(MAX_PASSWORD_LENGTH));
  if (reply === undefined || reply.type !== "p".charCodeAt(0)) {
    // psql closes here when it has no password yet, then asks for one and reconnects.
    reject(
      gateway,
      session,
      "no-password",
      reply
        ? `expected a password, got a ${typeName(reply.type)} message`
        : client.timedOut
        ? `no password within the authentication timeout ` +
          `(${gateway.config.authenticationTimeoutMs} ms from the connection)`
        : "the client closed instead of sending a password",
    );
    return reply ? fail(client, "08P01", "expected password response") : void socket.destroy();
  }
  const password = passwordOf(reply.body);
  if (password === "") {
    reject(gateway, session, "no-password", "the password is empty");
    return fail(client, "28P01", `PAM authentication failed for user "${user}"`);
  }

  const now = gateway.now();
  const c = gateway.config;
  const result = verifyToken(password, {
    hostname: c.endpoint,
    port: c.port,
    service: c.service,
    region: c.region,
    user,
    now,
    credentials: c.keys,
  });
  const tokenId = sha256Hex(password).slice(0, 16);
  if (!result.ok) {
    reject(gateway, session, result.reason, result.detail, tokenId);
    // The server says no more than this, whatever the reason: the detail is for the operator.
    return fail(client, "28P01", `PAM authentication failed for user "${user}"`);
  }
  gateway.record({
    accepted: true,
    user,
    database,
    at: new Date(now),
    accessKeyId: result.accessKeyId,
    action: result.action,
    tokenId,
    signedAt: result.signedAt,
    tokenAgeMs: result.ageMs,
    tls: client.tls,
  });
  // Sessions that started since the startup packet took the last slot.
  if (!gateway.beginSession(client)) return fail(client, TOO_MANY.code, TOO_MANY.message);
  await connectUpstream(gateway, session, params);
}

function reject(
  gateway: GatewayServer,
  session: Session,
  reason: GatewayRejectReason,
  detail: string,
  tokenId?: string,
): void {
  const { user, database, tls } = session;
  gateway.record({
    accepted: false,
    reason,
    detail,
    user,
    database,
    at: new Date(gateway.now()),
    ...(tokenId === undefined ? {} : { tokenId }),
    tls,
  });
}
