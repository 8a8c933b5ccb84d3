// A throwaway CA and a server certificate for the local gateway's TLS, written by hand over
// WebCrypto. The CLI must work through `deno run jsr:…` and `npx` with nothing else installed; the
// libraries that do this pull in many packages (@peculiar/x509: ~10, including reflect-metadata and
// tsyringe) or do RSA in plain JavaScript (node-forge, slow key generation). A CA plus one leaf in
// DER is ~170 lines: ECDSA P-256 keys, ecdsa-with-SHA256 signatures, Web APIs only.

/** PEM texts of a generated CA certificate and a server certificate it signed. */
export interface GeneratedTls {
  /** The CA certificate (PEM): what clients trust (sslrootcert). */
  ca: string;
  /** The server certificate (PEM), for `names`. */
  cert: string;
  /** The server certificate's private key (PKCS#8 PEM). */
  key: string;
}

type Bytes = Uint8Array<ArrayBuffer>;

const CA_NAME = "pg-iam local gateway CA";
const ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2";
const EC_SIGN = { name: "ECDSA", hash: "SHA-256" } as const;

// --- DER ---------------------------------------------------------------------------------------

function concat(parts: readonly Uint8Array[]): Bytes {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
}

function tlv(tag: number, ...content: Uint8Array[]): Bytes {
  const body = concat(content);
  let n = body.length;
  const len: number[] = [];
  if (n < 0x80) len.push(n);
  else {
    for (; n > 0; n >>>= 8) len.unshift(n & 0xff);
    len.unshift(0x80 | len.length);
  }
  return concat([Uint8Array.of(tag, ...len), body]);
}

const seq = (...items: Uint8Array[]): Bytes => tlv(0x30, ...items);
const set = (...items: Uint8Array[]): Bytes => tlv(0x31, ...items);
const octets = (bytes: Uint8Array): Bytes => tlv(0x04, bytes);
const bits = (bytes: Uint8Array, unused = 0): Bytes => tlv(0x03, Uint8Array.of(unused), bytes);
const utf8 = (text: string): Bytes => tlv(0x0c, new TextEncoder().encode(text));
const TRUE = Uint8Array.of(0x01, 0x01, 0xff);

/** A non-negative INTEGER from big-endian bytes: minimal, with a 0x00 when the high bit is set. */
function int(bytes: Uint8Array): Bytes {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const v = bytes.subarray(i);
  return tlv(0x02, ...(v[0] & 0x80 ? [Uint8Array.of(0), v] : [v]));
}

function oid(dotted: string): Bytes {
  const [a, b, ...rest] = dotted.split(".").map(Number);
  const out = [40 * a + b];
  for (const arc of rest) {
    const groups = [arc & 0x7f];
    for (let v = arc >>> 7; v > 0; v >>>= 7) groups.unshift(0x80 | (v & 0x7f));
    out.push(...groups);
  }
  return tlv(0x06, Uint8Array.from(out));
}

/** UTCTime before 2050, GeneralizedTime from then on (RFC 5280, 4.1.2.5). */
function time(date: Date): Bytes {
  const s = date.toISOString().replace(/\.\d+/, "").replace(/[-:T]/g, ""); // YYYYMMDDHHMMSSZ
  return date.getUTCFullYear() < 2050
    ? tlv(0x17, new TextEncoder().encode(s.slice(2)))
    : tlv(0x18, new TextEncoder().encode(s));
}

const name = (cn: string): Bytes => seq(set(seq(oid("2.5.4.3"), utf8(cn))));
const ext = (id: string, critical: boolean, value: Uint8Array): Bytes =>
  critical ? seq(oid(id), TRUE, octets(value)) : seq(oid(id), octets(value));

// --- Names -------------------------------------------------------------------------------------

function ipv4(text: string): number[] | undefined {
  const parts = text.split(".");
  const octet = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
  return parts.length === 4 && parts.every((p) => octet.test(p)) ? parts.map(Number) : undefined;
}

function ipv6(text: string): number[] | undefined {
  const halves = text.replace(/^\[(.*)\]$/, "$1").split("::");
  if (halves.length > 2) return undefined;
  const groups = halves.map((h) => (h === "" ? [] : h.split(":")));
  const words: number[][] = [];
  for (const [i, half] of groups.entries()) {
    const out: number[] = [];
    for (const [j, g] of half.entries()) {
      const v4 = i === groups.length - 1 && j === half.length - 1 ? ipv4(g) : undefined;
      if (v4) out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      else if (/^[0-9a-f]{1,4}$/i.test(g)) out.push(parseInt(g, 16));
      else return undefined;
    }
    words.push(out);
  }
  const count = words.reduce((n, w) => n + w.length, 0);
  if (words.length === 1 ? count !== 8 : count > 7) return undefined;
  const all = [...words[0], ...Array(8 - count).fill(0), ...(words[1] ?? [])];
  return all.flatMap((w) => [w >> 8, w & 0xff]);
}

const DNS_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i;

/** A SAN GeneralName for a DNS name ([2] dNSName) or an IP address ([7] iPAddress). */
function generalName(value: string): Bytes {
  const ip = ipv4(value) ?? (value.includes(":") ? ipv6(value) : undefined);
  if (ip) return tlv(0x87, Uint8Array.from(ip));
  const labels = value.split(".");
  const dns = value.length <= 253 &&
    labels.every((l, i) => DNS_LABEL.test(l) || (i === 0 && l === "*" && labels.length > 2)) &&
    !/^\d+$/.test(labels[labels.length - 1]);
  if (!dns) throw new TypeError(`Not a DNS name or IP address: ${JSON.stringify(value)}`);
  return tlv(0x82, new TextEncoder().encode(value));
}

// --- Certificates ------------------------------------------------------------------------------

function pem(label: string, der: ArrayBuffer): string {
  const b64 = btoa(String.fromCharCode(...new Uint8Array(der)));
  return `-----BEGIN ${label}-----\n${b64.match(/.{1,64}/g)!.join("\n")}\n-----END ${label}-----\n`;
}

/** WebCrypto's raw r||s signature as the DER ECDSA-Sig-Value X.509 wants. */
function derSignature(raw: ArrayBuffer): Bytes {
  const rs = new Uint8Array(raw);
  return seq(int(rs.subarray(0, rs.length / 2)), int(rs.subarray(rs.length / 2)));
}

const EC_KEY: EcKeyGenParams = { name: "ECDSA", namedCurve: "P-256" };
const ecKeys = (extractable: boolean): Promise<CryptoKeyPair> =>
  crypto.subtle.generateKey(EC_KEY, extractable, ["sign", "verify"]);

async function keyId(key: CryptoKey): Promise<Bytes> {
  const point = await crypto.subtle.exportKey("raw", key);
  return new Uint8Array(await crypto.subtle.digest("SHA-1", point));
}

interface CertSpec {
  subject: string;
  issuer: string;
  publicKey: CryptoKey;
  signingKey: CryptoKey;
  notBefore: Date;
  notAfter: Date;
  extensions: Uint8Array[];
}

async function certificate(spec: CertSpec): Promise<string> {
  const serial = crypto.getRandomValues(new Uint8Array(16));
  serial[0] = (serial[0] & 0x7f) | 0x40; // positive, full 16 bytes
  const algorithm = seq(oid(ECDSA_WITH_SHA256));
  const tbs = seq(
    tlv(0xa0, int(Uint8Array.of(2))), // version: v3
    int(serial),
    algorithm,
    name(spec.issuer),
    seq(time(spec.notBefore), time(spec.notAfter)),
    name(spec.subject),
    new Uint8Array(await crypto.subtle.exportKey("spki", spec.publicKey)),
    tlv(0xa3, seq(...spec.extensions)),
  );
  const signature = await crypto.subtle.sign(EC_SIGN, spec.signingKey, tbs);
  return pem("CERTIFICATE", seq(tbs, algorithm, bits(derSignature(signature))).buffer);
}

/** Generates a throwaway CA and a server certificate for `names` (DNS names and IP addresses, v4 or v6). */
export async function generateTls(
  names: readonly string[],
  options: { days?: number; now?: Date } = {},
): Promise<GeneratedTls> {
  if (names.length === 0) throw new TypeError("generateTls: no names given: []");
  const san = names.map(generalName);
  const now = options.now ?? new Date();
  const notBefore = new Date(now.getTime() - 3600_000);
  const notAfter = new Date(now.getTime() + (options.days ?? 365) * 86400_000);

  const caKeys = await ecKeys(false);
  const leafKeys = await ecKeys(true);
  const caId = await keyId(caKeys.publicKey);
  const validity = { notBefore, notAfter, signingKey: caKeys.privateKey, issuer: CA_NAME };

  const ca = await certificate({
    ...validity,
    subject: CA_NAME,
    publicKey: caKeys.publicKey,
    extensions: [
      ext("2.5.29.19", true, seq(TRUE)), // basicConstraints: CA:TRUE
      ext("2.5.29.15", true, bits(Uint8Array.of(0x06), 1)), // keyUsage: keyCertSign, cRLSign
      ext("2.5.29.14", false, octets(caId)), // subjectKeyIdentifier
    ],
  });
  const cert = await certificate({
    ...validity,
    subject: names[0],
    publicKey: leafKeys.publicKey,
    extensions: [
      ext("2.5.29.17", false, seq(...san)), // subjectAltName
      ext("2.5.29.19", false, seq()), // basicConstraints: CA:FALSE
      ext("2.5.29.15", true, bits(Uint8Array.of(0x80), 7)), // keyUsage: digitalSignature
      ext("2.5.29.37", false, seq(oid("1.3.6.1.5.5.7.3.1"))), // extendedKeyUsage: serverAuth
      ext("2.5.29.35", false, seq(tlv(0x80, caId))), // authorityKeyIdentifier
      ext("2.5.29.14", false, octets(await keyId(leafKeys.publicKey))), // subjectKeyIdentifier
    ],
  });
  const key = pem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", leafKeys.privateKey));
  return { ca, cert, key };
}
