// The gateway's options, checked once by startGateway() into the Config every connection reads.

import type tls from "node:tls";
import { checkNotSwapped } from "../core/credentials.ts";
import { show } from "../core/errors.ts";
import { checkHostname, isRegion, parseHostname } from "../core/hostname.ts";
import { checkPort } from "../core/checks.ts";
import type { VerifySecret } from "./verify.ts";
import type { GatewayLogin, GatewayUpstream } from "./types.ts";
import {
  checkCount,
  checkListener,
  checkServerTls,
  kind,
  type ListenerConfig,
} from "../listener/options.ts";

export interface Config extends ListenerConfig {
  endpoint: string;
  port: number;
  service: "rds" | "dsql";
  region: string;
  keys: Map<string, VerifySecret>;
  upstream: GatewayUpstream;
  clockOffsetMs: number;
  onLogin: ((login: GatewayLogin) => void) | undefined;
  recentLogins: number;
}

export function checkGatewayOptions(options: unknown): Config {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`startGateway() expects an options object, got ${show(options)}`);
  }
  const o = options as Record<string, unknown>;
  // DNS names are case-insensitive, and AWS signs and verifies the lowercase name.
  const endpoint = checkHostname(o.endpoint, "endpoint").toLowerCase();
  const parsed = parseHostname(endpoint);

  let service = parsed?.service;
  if (o.service !== undefined) {
    if (o.service !== "rds" && o.service !== "dsql") {
      throw new TypeError(`The "service" option must be "rds" or "dsql", got ${show(o.service)}`);
    }
    if (parsed && parsed.service !== o.service) {
      throw new RangeError(
        `The "service" option ${show(o.service)} contradicts the "endpoint" ${show(endpoint)}, ` +
          `an ${parsed.service.toUpperCase()} endpoint`,
      );
    }
    service = o.service;
  }
  if (service === undefined) {
    throw new TypeError(
      `The "service" option is required: the "endpoint" ${show(endpoint)} is not an AWS ` +
        `database endpoint name, so pass "rds" or "dsql"`,
    );
  }

  let region = parsed?.region;
  if (o.region !== undefined) {
    if (typeof o.region !== "string" || !isRegion(o.region)) {
      throw new RangeError(
        `The "region" option is not an AWS region name (like "us-east-1"), got ${show(o.region)}`,
      );
    }
    if (parsed && parsed.region !== o.region) {
      throw new RangeError(
        `The "region" option ${show(o.region)} contradicts the region ${show(parsed.region)} of ` +
          `the "endpoint" ${show(endpoint)}`,
      );
    }
    region = o.region;
  }
  if (region === undefined) {
    throw new TypeError(
      `The "region" option is required: the "endpoint" ${show(endpoint)} is not an AWS ` +
        `database endpoint name, so no region can be derived from it`,
    );
  }

  const clockOffsetMs = o.clockOffsetMs ?? 0;
  checkOffset(clockOffsetMs, "clockOffsetMs");
  if (o.onLogin !== undefined && typeof o.onLogin !== "function") {
    throw new TypeError(`The "onLogin" option must be a function, got ${show(o.onLogin)}`);
  }

  return {
    ...checkListener(o, checkTls(o.tls), { maxConnections: 100, authenticationTimeoutMs: 60_000 }),
    endpoint,
    port: checkPort(o.port),
    service,
    region,
    keys: checkCredentials(o.credentials),
    upstream: checkUpstream(o.upstream),
    clockOffsetMs: clockOffsetMs as number,
    onLogin: o.onLogin as Config["onLogin"],
    recentLogins: checkCount(o.recentLogins, "recentLogins", 0, 1000),
  };
}

export function checkOffset(value: unknown, option: string): asserts value is number {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new TypeError(`The "${option}" option must be a finite number of ms, got ${show(value)}`);
  }
}

function checkCredentials(value: unknown): Map<string, VerifySecret> {
  if (value === undefined || value === null) {
    throw new TypeError(`The "credentials" option is required: pass the access keys to accept`);
  }
  const list = Array.isArray(value) ? value : [value];
  if (list.length === 0) throw new TypeError(`The "credentials" option must not be an empty array`);
  const keys = new Map<string, VerifySecret>();
  list.forEach((c: unknown, i) => {
    const name = Array.isArray(value) ? `credentials[${i}]` : "credentials";
    if (typeof c !== "object" || c === null) {
      throw new TypeError(`The "${name}" option must be an object, got ${show(c)}`);
    }
    const { accessKeyId, secretAccessKey, sessionToken } = c as Record<string, unknown>;
    if (typeof accessKeyId === "string" && typeof secretAccessKey === "string") {
      checkNotSwapped(
        accessKeyId,
        secretAccessKey,
        `The "${name}" option`,
        "accessKeyId",
        "secretAccessKey",
      );
    }
    if (typeof accessKeyId !== "string" || !/^[A-Za-z0-9_-]+$/.test(accessKeyId)) {
      // Not quoted when it has characters only a secret has: it may be one.
      const shown = typeof accessKeyId === "string" && /[/+]/.test(accessKeyId)
        ? `a string with "/" or "+" (not shown: a secret access key?)`
        : show(accessKeyId);
      throw new TypeError(
        `The "${name}.accessKeyId" option must be an access key id (letters and digits), got ${shown}`,
      );
    }
    if (typeof secretAccessKey !== "string" || secretAccessKey === "") {
      throw new TypeError(
        `The "${name}.secretAccessKey" option must be a non-empty string, got ${
          kind(secretAccessKey)
        }`,
      );
    }
    if (sessionToken !== undefined && (typeof sessionToken !== "string" || sessionToken === "")) {
      throw new TypeError(
        `The "${name}.sessionToken" option must be a non-empty string or absent, got ${
          kind(sessionToken)
        }`,
      );
    }
    if (keys.has(accessKeyId)) {
      throw new TypeError(`The "${name}.accessKeyId" ${show(accessKeyId)} is listed twice`);
    }
    keys.set(accessKeyId, { secretAccessKey, sessionToken });
  });
  return keys;
}

function checkUpstream(value: unknown): GatewayUpstream {
  if (typeof value !== "object" || value === null) {
    throw new TypeError(
      `The "upstream" option must be an object { host, port }, got ${show(value)}`,
    );
  }
  const u = value as Record<string, unknown>;
  const host = checkHostname(u.host, "upstream.host");
  if (u.port === undefined) throw new TypeError(`The "upstream.port" option is required`);
  const port = checkPort(u.port, "upstream.port");
  for (const field of ["user", "database"] as const) {
    if (u[field] !== undefined && (typeof u[field] !== "string" || u[field] === "")) {
      throw new TypeError(
        `The "upstream.${field}" option must be a non-empty string, got ${show(u[field])}`,
      );
    }
  }
  if (u.password !== undefined && typeof u.password !== "string") {
    throw new TypeError(`The "upstream.password" option must be a string, got ${kind(u.password)}`);
  }
  return {
    host,
    port,
    user: u.user as string | undefined,
    password: u.password as string | undefined,
    database: u.database as string | undefined,
  };
}

function checkTls(value: unknown): tls.SecureContext | undefined {
  return checkServerTls(
    value,
    `The "tls" option is required: pass { cert, key } (PEM), or false for no TLS at all`,
  );
}
