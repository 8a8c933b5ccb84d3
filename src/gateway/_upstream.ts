// After a token is accepted: the gateway's own login to the upstream server, then bytes relayed
// verbatim both ways; and a CancelRequest forwarded.

import net from "node:net";
import {
  AUTH_CLEARTEXT,
  AUTH_MD5,
  AUTH_OK,
  authCode,
  errorFields,
  passwordMessage,
  startupMessage,
  typeName,
} from "../connection/pgwire.ts";
import {
  type Client,
  closeWith,
  fail,
  Inbox,
  relay,
  send,
  type Session,
} from "../listener/client.ts";
import type { GatewayServer, Relay } from "./_server.ts";

// Opens a TCP connection; resolves with the socket or the connection error.
function connect(host: string, port: number): Promise<net.Socket | Error> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const onError = (error: Error) => {
      socket.destroy();
      resolve(error);
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      resolve(socket);
    });
  });
}

export async function connectUpstream(
  gateway: GatewayServer,
  session: Session,
  params: Map<string, string>,
): Promise<void> {
  const { inbox } = session;
  const client = inbox.socket;
  const { host, port, user, database, password } = gateway.config.upstream;
  const target = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  const upstream = await connect(host, port);
  if (upstream instanceof Error) {
    return fail(
      session,
      "08006",
      `the gateway cannot reach the upstream server at ${target}: ${upstream.message}`,
    );
  }
  gateway.track(upstream);
  upstream.setNoDelay(true);
  if (client.destroyed) return void upstream.destroy();
  // A client gone (or past its deadline) before the upstream login completes takes it along.
  const drop = () => upstream.destroy();
  client.once("close", drop);

  const sent = new Map(params);
  if (user !== undefined) sent.set("user", user);
  if (database !== undefined) sent.set("database", database);
  upstream.write(startupMessage(sent));
  // The upstream is trusted: what it sends during login is read whole.
  const upInbox = new Inbox(upstream, Infinity);
  const upstreamUser = sent.get("user")!;

  for (;;) {
    const m = await upInbox.next(() => upInbox.reader.message());
    if (m === undefined) {
      upstream.destroy();
      return fail(
        session,
        "08006",
        `the upstream server at ${target} closed the connection during login`,
      );
    }
    const type = String.fromCharCode(m.type);
    if (type === "E") {
      upstream.destroy();
      const fields = Object.fromEntries(errorFields(m.body));
      // The upstream refusing the gateway's own login (a wrong upstream password, pg_hba.conf)
      // is not the client's token failing: as 28P01/28000 the client would retry with a new
      // token and report it rejected.
      if (fields.C === "28P01" || fields.C === "28000") {
        return fail(
          session,
          UPSTREAM_LOGIN_FAILED,
          `the gateway accepted the IAM token, but its own login to the upstream server at ` +
            `${target} as "${upstreamUser}" failed: ${fields.M ?? "no message"}`,
          { detail: `The upstream server answered with SQLSTATE ${fields.C}.` },
        );
      }
      // The upstream's own refusal (no such database, …): the client sees it as is.
      inbox.detach();
      return closeWith(client, m.raw);
    }
    if (type === "N") {
      if (!send(client, m.raw)) return void upstream.destroy();
      continue;
    }
    const code = type === "R" ? authCode(m.body) : -1;
    if (code === AUTH_OK) {
      client.off("close", drop);
      upInbox.detach();
      inbox.detach();
      const pair: Relay = { client, upstream };
      clearTimeout(session.deadline); // logged in: from now on idle connections are fine
      gateway.addRelay(pair);
      return relay(
        client,
        upstream,
        [m.raw, upInbox.reader.rest()],
        inbox.reader.rest(),
        () => gateway.removeRelay(pair),
      );
    }
    const reply = code === AUTH_CLEARTEXT
      ? password
      : code === AUTH_MD5 && password !== undefined && m.body.length >= 8
      ? await md5Password(password, upstreamUser, m.body.subarray(4, 8))
      : undefined;
    if (reply === undefined) {
      upstream.destroy();
      const what = type === "R"
        ? `authentication method ${AUTH_NAMES[code] ?? code}`
        : `a ${typeName(m.type)} message`;
      return fail(
        session,
        UPSTREAM_LOGIN_FAILED,
        `the gateway accepted the IAM token, but cannot log in to the upstream server at ` +
          `${target} as "${upstreamUser}": it asks for ${what}` +
          (code === AUTH_CLEARTEXT || code === AUTH_MD5 ? ", and no upstream password is set" : ""),
        {
          hint: code === AUTH_CLEARTEXT || code === AUTH_MD5
            ? `Set the gateway's "upstream.password" option.`
            : `Configure the upstream server for trust, password or md5 authentication of user "${upstreamUser}".`,
        },
      );
    }
    upstream.write(passwordMessage(reply));
  }
}

// 08004 (sqlserver_rejected_establishment_of_sqlconnection): the connection was refused for a
// reason other than the client's credentials, so pg-iam's clients do not retry with a new token.
const UPSTREAM_LOGIN_FAILED = "08004";

const AUTH_NAMES: Record<number, string> = {
  2: "Kerberos V5",
  3: "password",
  5: "md5",
  7: "GSSAPI",
  9: "SSPI",
  10: "SASL (SCRAM)",
};

// md5 auth: "md5" + md5hex(md5hex(password + user) + salt). node:crypto is loaded only here, for
// the rare md5 upstream.
async function md5Password(password: string, user: string, salt: Uint8Array): Promise<string> {
  const { createHash } = await import("node:crypto");
  const inner = createHash("md5").update(password + user).digest("hex");
  return "md5" + createHash("md5").update(inner).update(salt).digest("hex");
}

// A CancelRequest goes to the upstream as is: the client's cancel key is the upstream's, since
// BackendKeyData was relayed verbatim. The server answers nothing; it just closes.
export async function forwardCancel(
  gateway: GatewayServer,
  { inbox }: Client,
  packet: Uint8Array,
): Promise<void> {
  inbox.detach(); // the server reads nothing after a CancelRequest
  const { host, port } = gateway.config.upstream;
  const upstream = await connect(host, port);
  if (!(upstream instanceof Error)) {
    gateway.track(upstream);
    gateway.stats.cancels++;
    upstream.end(packet);
  }
  closeWith(inbox.socket);
}
