// connection/inbox.ts and the messages pg-iam doctor reads after login (pgwire's queryMessage,
// parameterStatus, dataRow), against a real PostgreSQL over a plain TCP socket.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { Inbox } from "../../src/connection/inbox.ts";
import {
  dataRow,
  errorFields,
  type Message,
  parameterStatus,
  queryMessage,
  startupMessage,
} from "../../src/connection/pgwire.ts";
import { upstreamPostgres } from "../_postgres.ts";

const TIMEOUT = { timeout: 60_000 };

async function connect(): Promise<net.Socket> {
  const { host, port } = await upstreamPostgres();
  const socket = net.connect({ host, port });
  await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  return socket;
}

async function until(inbox: Inbox, type: string): Promise<Message[]> {
  const seen: Message[] = [];
  for (;;) {
    const m = await inbox.next(() => inbox.reader.message());
    assert.ok(m, `the connection ended before a ${type}`);
    seen.push(m);
    if (m.type === type.charCodeAt(0)) return seen;
  }
}

test(
  "Inbox and pgwire read a real session start and a query: ParameterStatus, DataRow (NULL, empty, multibyte), ErrorResponse",
  TIMEOUT,
  async () => {
    const socket = await connect();
    const inbox = new Inbox(socket);
    try {
      socket.write(startupMessage(new Map([["user", "postgres"], ["database", "postgres"]])));
      const start = await until(inbox, "Z");
      const params = new Map(
        start.filter((m) => m.type === 0x53).map((m) => parameterStatus(m.body)),
      );
      assert.match(params.get("server_version") ?? "", /^\d+/);
      assert.equal(params.get("client_encoding"), "UTF8");

      socket.write(queryMessage("select 1, null::text, '', 'grüße ✓'"));
      const rows = (await until(inbox, "Z")).filter((m) => m.type === 0x44);
      assert.deepEqual(rows.map((m) => dataRow(m.body)), [["1", null, "", "grüße ✓"]]);

      socket.write(queryMessage("select * from no_such_table"));
      const error = (await until(inbox, "Z")).find((m) => m.type === 0x45);
      assert.equal(errorFields(error!.body).get("C"), "42P01");
    } finally {
      socket.destroy();
    }
  },
);

test(
  "Inbox: the end of the connection ends the wait with undefined, and keeps the socket's error",
  TIMEOUT,
  async () => {
    const socket = await connect();
    const inbox = new Inbox(socket);
    // A database that does not exist: the server says so (FATAL 3D000) and closes.
    socket.write(startupMessage(new Map([["user", "postgres"], ["database", "no_such_db"]])));
    const seen: Message[] = [];
    for (let m; (m = await inbox.next(() => inbox.reader.message()));) seen.push(m);
    const last = seen.at(-1)!;
    assert.equal(last.type, 0x45);
    assert.equal(errorFields(last.body).get("C"), "3D000");
    assert.equal(inbox.error, undefined); // a close is no error

    const reset = await connect();
    const broken = new Inbox(reset);
    const boom = new Error("boom");
    reset.destroy(boom);
    assert.equal(await broken.next(() => broken.reader.message()), undefined);
    assert.equal(broken.error, boom);
  },
);
