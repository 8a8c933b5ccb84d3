// Local stand-ins for the AWS endpoints the standard credential chain talks to, as real HTTP servers
// on 127.0.0.1 (node:http, so the same code serves on Node, Deno and Bun): the ECS / EKS Pod
// Identity container endpoint, EC2 IMDSv2, STS (AssumeRole, AssumeRoleWithWebIdentity) and the IAM
// Identity Center (SSO) portal. Each records the requests it got, so tests can check what the SDK
// sent, and can be switched to fail or to hang.
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";

/** Temporary credentials, as the SDK returns them. */
export interface TempKeys {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  expiration: Date;
}

/** Fresh temporary keys, distinct per `tag`, expiring `ttlMs` from now. */
export function tempKeys(tag: string, ttlMs = 3_600_000): TempKeys {
  const id = tag.toUpperCase().replace(/[^A-Z0-9]/g, "").padEnd(8, "X");
  return {
    accessKeyId: `ASIA${id}`,
    secretAccessKey: `secret/${tag}+Key=0123456789`,
    sessionToken: `session/${tag}+token==`,
    expiration: new Date(Date.now() + ttlMs),
  };
}

/** One request as the server saw it. */
export interface Recorded {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * How the endpoint answers: with these keys (or those a function returns at request time), with an
 * HTTP error status, or not at all.
 */
export type Behaviour = { keys: TempKeys | (() => TempKeys) } | { status: number } | "hang";

/** A running fake endpoint. */
export interface FakeEndpoint {
  /** `http://127.0.0.1:PORT` */
  url: string;
  requests: Recorded[];
  /** Changed at will between requests. */
  behaviour: Behaviour;
  close(): Promise<void>;
}

type Handler = (req: Recorded, res: http.ServerResponse, ep: FakeEndpoint) => void;

async function serve(behaviour: Behaviour, handler: Handler): Promise<FakeEndpoint> {
  const sockets = new Set<Socket>();
  const ep: FakeEndpoint = {
    url: "",
    requests: [],
    behaviour,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
  const server = http.createServer((req, res) => {
    const chunks: Uint8Array[] = [];
    req.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    req.on("end", () => {
      const recorded: Recorded = {
        method: req.method ?? "",
        path: req.url ?? "",
        headers: { ...req.headers },
        body: new TextDecoder().decode(concat(chunks)),
      };
      ep.requests.push(recorded);
      if (ep.behaviour === "hang") return; // never answered; close() drops the socket
      if ("status" in ep.behaviour) return send(res, ep.behaviour.status, "text/plain", "failing");
      try {
        handler(recorded, res, ep);
      } catch (error) {
        send(res, 500, "text/plain", String(error));
      }
    });
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  ep.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return ep;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function send(res: http.ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, {
    "content-type": type,
    "content-length": new TextEncoder().encode(body).length,
  });
  res.end(body);
}

function keysOf(ep: FakeEndpoint): TempKeys {
  const b = ep.behaviour as { keys: TempKeys | (() => TempKeys) };
  return typeof b.keys === "function" ? b.keys() : b.keys;
}

/**
 * The ECS / EKS Pod Identity container endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI` = `url` +
 * `/creds`). With `authorization`, requests must carry exactly that Authorization header (else
 * 401), as the EKS Pod Identity agent checks the projected service account token.
 */
export function containerEndpoint(
  behaviour: Behaviour,
  authorization?: string,
): Promise<FakeEndpoint> {
  return serve(behaviour, (req, res, ep) => {
    if (req.method !== "GET" || req.path !== "/creds") return send(res, 404, "text/plain", "no");
    if (authorization !== undefined && req.headers.authorization !== authorization) {
      return send(res, 401, "application/json", JSON.stringify({ Code: "Unauthorized" }));
    }
    const k = keysOf(ep);
    send(
      res,
      200,
      "application/json",
      JSON.stringify({
        AccessKeyId: k.accessKeyId,
        SecretAccessKey: k.secretAccessKey,
        Token: k.sessionToken,
        Expiration: k.expiration.toISOString(),
      }),
    );
  });
}

/** The IMDS token the fake hands out (and then requires). */
export const IMDS_TOKEN = "imds-session-token-AQAEAK";
/** The instance role name the fake IMDS lists. */
export const IMDS_ROLE = "pg-iam-instance-role";

/**
 * EC2's instance metadata service, IMDSv2 only (`AWS_EC2_METADATA_SERVICE_ENDPOINT` = `url`): a
 * PUT /latest/api/token with a TTL header gets a token, every GET must carry it (else 401).
 */
export function imdsEndpoint(behaviour: Behaviour): Promise<FakeEndpoint> {
  const base = "/latest/meta-data/iam/security-credentials/";
  return serve(behaviour, (req, res, ep) => {
    if (req.method === "PUT" && req.path === "/latest/api/token") {
      if (!req.headers["x-aws-ec2-metadata-token-ttl-seconds"]) {
        return send(res, 400, "text/plain", "missing ttl");
      }
      return send(res, 200, "text/plain", IMDS_TOKEN);
    }
    if (req.method !== "GET") return send(res, 405, "text/plain", "method");
    if (req.headers["x-aws-ec2-metadata-token"] !== IMDS_TOKEN) {
      return send(res, 401, "text/plain", "unauthorized");
    }
    if (req.path === base) return send(res, 200, "text/plain", IMDS_ROLE);
    if (req.path !== base + IMDS_ROLE) return send(res, 404, "text/plain", "not found");
    const k = keysOf(ep);
    send(
      res,
      200,
      "application/json",
      JSON.stringify({
        Code: "Success",
        LastUpdated: new Date().toISOString(),
        Type: "AWS-HMAC",
        AccessKeyId: k.accessKeyId,
        SecretAccessKey: k.secretAccessKey,
        Token: k.sessionToken,
        Expiration: k.expiration.toISOString(),
      }),
    );
  });
}

/** The form parameters of a recorded STS request. */
export function stsParams(req: Recorded): URLSearchParams {
  return new URLSearchParams(req.body);
}

/**
 * STS (`AWS_ENDPOINT_URL_STS` = `url`): answers AssumeRole and AssumeRoleWithWebIdentity (query
 * protocol: a form-encoded POST) with the XML shape STS uses; any other action gets a 400.
 */
export function stsEndpoint(behaviour: Behaviour): Promise<FakeEndpoint> {
  return serve(behaviour, (req, res, ep) => {
    const action = stsParams(req).get("Action");
    if (
      req.method !== "POST" || (action !== "AssumeRole" && action !== "AssumeRoleWithWebIdentity")
    ) {
      return send(
        res,
        400,
        "text/xml",
        `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>` +
          `<Code>InvalidAction</Code><Message>unsupported</Message></Error>` +
          `<RequestId>r</RequestId></ErrorResponse>`,
      );
    }
    const k = keysOf(ep);
    const role = stsParams(req).get("RoleArn") ?? "";
    const session = stsParams(req).get("RoleSessionName") ?? "session";
    send(
      res,
      200,
      "text/xml",
      `<${action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/">` +
        `<${action}Result><Credentials><AccessKeyId>${k.accessKeyId}</AccessKeyId>` +
        `<SecretAccessKey>${xml(k.secretAccessKey)}</SecretAccessKey>` +
        `<SessionToken>${xml(k.sessionToken)}</SessionToken>` +
        `<Expiration>${k.expiration.toISOString()}</Expiration></Credentials>` +
        `<AssumedRoleUser><Arn>${xml(role.replace(":role/", ":assumed-role/"))}/${
          xml(session)
        }</Arn>` +
        `<AssumedRoleId>AROAEXAMPLE:${xml(session)}</AssumedRoleId></AssumedRoleUser>` +
        `</${action}Result><ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata>` +
        `</${action}Response>`,
    );
  });
}

function xml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/**
 * The IAM Identity Center portal (`AWS_ENDPOINT_URL_SSO` = `url`): GET /federation/credentials
 * with the bearer token `accessToken` in x-amz-sso_bearer_token (else 401).
 */
export function ssoEndpoint(behaviour: Behaviour, accessToken: string): Promise<FakeEndpoint> {
  return serve(behaviour, (req, res, ep) => {
    if (req.method !== "GET" || !req.path.startsWith("/federation/credentials")) {
      return send(res, 404, "application/json", "{}");
    }
    if (req.headers["x-amz-sso_bearer_token"] !== accessToken) {
      return send(
        res,
        401,
        "application/json",
        JSON.stringify({ message: "Session token not found" }),
      );
    }
    const k = keysOf(ep);
    send(
      res,
      200,
      "application/json",
      JSON.stringify({
        roleCredentials: {
          accessKeyId: k.accessKeyId,
          secretAccessKey: k.secretAccessKey,
          sessionToken: k.sessionToken,
          expiration: k.expiration.getTime(),
        },
      }),
    );
  });
}
