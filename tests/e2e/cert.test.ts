// The CLI's hand-written X.509 generator: openssl accepts what it writes, real TLS clients on each
// runtime (OpenSSL on Node, BoringSSL on Bun, rustls on Deno) accept the server certificate for the
// names it was made for and reject it otherwise. Flat tests only, so every runtime counts the same.
import { test } from "node:test";
import assert from "node:assert/strict";
import tls from "node:tls";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type GeneratedTls, generateTls } from "../../src/cli/_cert.ts";

const OPENSSL = "/usr/bin/openssl";
const RDS_HOST = "db.cluster-abc123xyz.us-east-1.rds.amazonaws.com";
const NAMES = ["localhost", "127.0.0.1", RDS_HOST, "::1"];
const SLOW = { timeout: 30_000 };

let pair: Promise<[GeneratedTls, GeneratedTls]> | undefined;
/** Two independent generations for NAMES: the second is the "other CA" of negative controls. */
const generated = (): Promise<[GeneratedTls, GeneratedTls]> =>
  pair ??= Promise.all([generateTls(NAMES), generateTls(NAMES)]);

/** Writes PEM files into a fresh temporary directory, runs `fn` on their paths, then cleans up. */
function withFiles<T>(files: Record<string, string>, fn: (path: (n: string) => string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), "pg-iam-cert-"));
  try {
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    return fn((name) => join(dir, name));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const openssl = (...args: string[]) => spawnSync(OPENSSL, args, { encoding: "utf8" });
const x509 = (pem: string, ...args: string[]): string =>
  withFiles({ "c.pem": pem }, (p) => execFileSync(OPENSSL, ["x509", "-in", p("c.pem"), ...args]))
    .toString();

test(
  "generateTls() certificates verify with openssl against their own CA, not another one",
  SLOW,
  async () => {
    const [mine, other] = await generated();
    withFiles({ "ca.pem": mine.ca, "other.pem": other.ca, "cert.pem": mine.cert }, (p) => {
      const ok = openssl("verify", "-x509_strict", "-CAfile", p("ca.pem"), p("cert.pem"));
      assert.equal(ok.status, 0, ok.stderr);
      assert.match(ok.stdout, /cert\.pem: OK/);
      const bad = openssl("verify", "-x509_strict", "-CAfile", p("other.pem"), p("cert.pem"));
      assert.notEqual(bad.status, 0);
      assert.match(bad.stdout + bad.stderr, /unable to get local issuer certificate/);
    });
  },
);

test(
  "generateTls() certificates show the SAN entries, and CA:TRUE only on the CA, in openssl x509 -text",
  SLOW,
  async () => {
    const [{ ca, cert }] = await generated();
    const leaf = x509(cert, "-noout", "-text");
    assert.match(
      leaf,
      new RegExp(
        `DNS:localhost, IP Address:127\\.0\\.0\\.1, DNS:${RDS_HOST.replaceAll(".", "\\.")}, ` +
          "IP Address:0:0:0:0:0:0:0:1\\n",
      ),
    );
    assert.match(leaf, /Subject: CN ?= ?localhost\n/);
    assert.match(leaf, /Issuer: CN ?= ?pg-iam local gateway CA\n/);
    assert.match(leaf, /CA:FALSE/);
    assert.doesNotMatch(leaf, /CA:TRUE/);
    assert.match(leaf, /Key Usage: critical\n\s*Digital Signature\n/);
    assert.match(leaf, /TLS Web Server Authentication/);
    assert.match(leaf, /Signature Algorithm: ecdsa-with-SHA256/);
    const root = x509(ca, "-noout", "-text");
    assert.match(root, /Basic Constraints: critical\n\s*CA:TRUE/);
    assert.match(root, /Key Usage: critical\n\s*Certificate Sign, CRL Sign\n/);
    assert.match(root, /Subject: CN ?= ?pg-iam local gateway CA\n/);
    assert.doesNotMatch(root, /Subject Alternative Name/);
    // The leaf's authorityKeyIdentifier is the CA's subjectKeyIdentifier.
    const ski = /Subject Key Identifier: ?\n\s*([0-9A-F:]+)/.exec(root)?.[1];
    assert.ok(ski);
    assert.match(leaf, new RegExp(`Authority Key Identifier: ?\\n\\s*(keyid:)?${ski}\\n`));
    assert.doesNotMatch(leaf, new RegExp(`Subject Key Identifier: ?\\n\\s*${ski}\\n`));
  },
);

/** Handshakes with a node:tls server presenting `server`; resolves undefined or the client error. */
async function handshake(
  server: GeneratedTls,
  client: tls.ConnectionOptions,
): Promise<Error | undefined> {
  const srv = tls.createServer({ cert: server.cert, key: server.key }, (s) => s.end());
  srv.on("tlsClientError", () => {}); // the client's rejection, seen from the server side
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as { port: number };
  try {
    return await new Promise<Error | undefined>((resolve) => {
      const socket = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: true, ...client });
      socket.on("secureConnect", () => {
        resolve(
          socket.authorized ? undefined : new Error(`unauthorized: ${socket.authorizationError}`),
        );
        socket.destroy();
      });
      socket.on("error", (err) => {
        resolve(err);
        socket.destroy();
      });
    });
  } finally {
    await new Promise((resolve) => srv.close(resolve));
  }
}

test(
  "generateTls() certificate is accepted by node:tls for servername localhost, host 127.0.0.1 (IP SAN) and the RDS name",
  SLOW,
  async () => {
    const [mine] = await generated();
    assert.equal(await handshake(mine, { ca: mine.ca, servername: "localhost" }), undefined);
    assert.equal(await handshake(mine, { ca: mine.ca }), undefined);
    assert.equal(await handshake(mine, { ca: mine.ca, servername: RDS_HOST }), undefined);
  },
);

test(
  "generateTls() certificate is rejected by node:tls for a name not in its SAN",
  SLOW,
  async () => {
    const [mine] = await generated();
    const err = await handshake(mine, { ca: mine.ca, servername: "other.example.com" });
    assert.ok(err, "handshake for a name not in the SAN must fail");
    assert.match(String(err), /altname|hostname|NotValidForName|not valid for/i);
    // The same for an IP address: a certificate for localhost alone does not cover 127.0.0.1.
    const dnsOnly = await generateTls(["localhost"]);
    const ipErr = await handshake(dnsOnly, { ca: dnsOnly.ca });
    assert.ok(ipErr, "handshake for an IP not in the SAN must fail");
    assert.match(String(ipErr), /altname|hostname|NotValidForName|not valid for/i);
  },
);

test(
  "generateTls() certificate is rejected by node:tls when the client trusts another generated CA",
  SLOW,
  async () => {
    const [mine, other] = await generated();
    const err = await handshake(mine, { ca: other.ca, servername: "localhost" });
    assert.ok(err, "handshake against another CA must fail");
    assert.match(String(err), /unable to (verify|get)|self.signed|UnknownIssuer|unknown issuer/i);
  },
);

test(
  "generateTls() rejects no names and an invalid name with a TypeError naming the value",
  SLOW,
  async () => {
    await assert.rejects(
      generateTls([]),
      (e: unknown) => e instanceof TypeError && /\[\]/.test(e.message),
    );
    for (const bad of ["bad name!", "-leading.example", "a..b", "999.1.1.1", "1:2:3", "1::2::3"]) {
      await assert.rejects(
        generateTls(["localhost", bad]),
        (e: unknown) => e instanceof TypeError && e.message.includes(bad),
        bad,
      );
    }
    // Control: valid DNS names and IPv4/IPv6 forms are accepted.
    const ok = await generateTls([
      "a-b.example",
      "*.example.com",
      "10.0.0.1",
      "::",
      "fe80::1:2",
      "::ffff:1.2.3.4",
    ]);
    assert.match(
      x509(ok.cert, "-noout", "-ext", "subjectAltName"),
      /DNS:a-b\.example, DNS:\*\.example\.com, IP Address:10\.0\.0\.1, IP Address:0:0:0:0:0:0:0:0, IP Address:FE80:0:0:0:0:0:1:2, IP Address:0:0:0:0:0:FFFF:102:304\n/,
    );
  },
);

const MONTHS = "JanFebMarAprMayJunJulAugSepOctNovDec";
/** notBefore/notAfter from `openssl x509 -noout -dates` ("Nov 30 23:00:00 2049 GMT"). */
function dates(pem: string): { notBefore: Date; notAfter: Date } {
  const out = x509(pem, "-noout", "-dates");
  const parse = (field: string): Date => {
    const m = new RegExp(`${field}=(\\w{3}) +(\\d+) (\\d\\d):(\\d\\d):(\\d\\d) (\\d{4}) GMT`).exec(
      out,
    );
    assert.ok(m, `${field} in ${out}`);
    const [, mon, day, h, min, s, y] = m;
    return new Date(Date.UTC(+y, MONTHS.indexOf(mon) / 3, +day, +h, +min, +s));
  };
  return { notBefore: parse("notBefore"), notAfter: parse("notAfter") };
}

test(
  "generateTls() honours now and days: notBefore is now - 1 hour, notAfter now + days (default 365)",
  SLOW,
  async () => {
    const now = new Date("2030-03-04T05:06:07.890Z");
    const HOUR = 3600_000, DAY = 86400_000;
    const t = await generateTls(["localhost"], { now, days: 7 });
    for (const pem of [t.ca, t.cert]) {
      const { notBefore, notAfter } = dates(pem);
      assert.equal(notBefore.toISOString(), "2030-03-04T04:06:07.000Z");
      assert.equal(notAfter.toISOString(), "2030-03-11T05:06:07.000Z");
    }
    // Control: without days the validity is a year; without now it is around the current time.
    const year = dates((await generateTls(["localhost"], { now })).cert);
    assert.equal(year.notAfter.getTime() - year.notBefore.getTime(), 365 * DAY + HOUR);
    const current = dates((await generateTls(["localhost"])).cert);
    assert.ok(Math.abs(current.notBefore.getTime() - (Date.now() - HOUR)) < 60_000);
    // Dates from 2050 on are GeneralizedTime; openssl reads both forms back.
    const late = dates(
      (await generateTls(["localhost"], { now: new Date("2049-12-01T00:00:00Z"), days: 400 })).cert,
    );
    assert.equal(late.notBefore.toISOString(), "2049-11-30T23:00:00.000Z");
    assert.equal(late.notAfter.toISOString(), "2051-01-05T00:00:00.000Z");
  },
);
