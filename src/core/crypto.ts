// SHA-256 and HMAC-SHA-256 backends for the presigner: node:crypto, plain JavaScript and
// WebCrypto. All three must give identical output; tests compare them on every runtime. node:crypto
// is looked up at run time through `process.getBuiltinModule`, never imported statically, so
// bundles for edge runtimes stay clean.

import * as sha256 from "./sha256.ts";
import { onDeno } from "./env.ts";

/** An opaque, ready-to-use signing key produced by a backend. */
export type SigningKey = unknown;

/** The primitives the presigner needs. Every backend must produce identical output. */
export interface CryptoBackend {
  /** A short name for diagnostics and tests. */
  readonly name: string;
  /** Hex SHA-256 of a UTF-8 string. */
  sha256Hex(data: string): string | Promise<string>;
  /** SigV4 key derivation: HMAC chain over date, region, service and "aws4_request". */
  signingKey(
    secret: string,
    date: string,
    region: string,
    service: string,
  ): SigningKey | Promise<SigningKey>;
  /** Hex HMAC-SHA-256 of a UTF-8 string under a key from {@linkcode CryptoBackend.signingKey}. */
  hmacHex(key: SigningKey, data: string): string | Promise<string>;
}

// SigV4's key derivation: kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
// "aws4_request"), for any synchronous HMAC that returns something it also accepts as a key.
function deriveKey<K>(
  hmac: (key: K, data: string) => K,
  secretKey: K,
  date: string,
  region: string,
  service: string,
): K {
  return [date, region, service, "aws4_request"].reduce(hmac, secretKey);
}
const toHex = (bytes: ArrayBuffer) => sha256.toHex(new Uint8Array(bytes));

async function subtleHmac(key: BufferSource, data: string): Promise<ArrayBuffer> {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return crypto.subtle.sign("HMAC", k, sha256.encoder.encode(data));
}

/** The WebCrypto backend: available on every runtime. */
export const webCryptoBackend: CryptoBackend = {
  name: "webcrypto",
  async sha256Hex(data) {
    return toHex(await crypto.subtle.digest("SHA-256", sha256.encoder.encode(data)));
  },
  async signingKey(secret, date, region, service) {
    const kDate = await subtleHmac(sha256.encoder.encode("AWS4" + secret), date);
    const kRegion = await subtleHmac(kDate, region);
    const kService = await subtleHmac(kRegion, service);
    const kSigning = await subtleHmac(kService, "aws4_request");
    // Imported once, so each token costs one digest and one sign.
    return crypto.subtle.importKey("raw", kSigning, { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
    ]);
  },
  async hmacHex(key, data) {
    return toHex(await crypto.subtle.sign("HMAC", key as CryptoKey, sha256.encoder.encode(data)));
  },
};

/** The plain-JavaScript backend: synchronous, nothing to load, available everywhere. */
export const jsBackend: CryptoBackend = {
  name: "js",
  sha256Hex: sha256.sha256Hex,
  signingKey(secret, date, region, service) {
    const hmac = (key: Uint8Array, data: string) => sha256.hmac(sha256.hmacKey(key), data);
    const secretKey = sha256.encoder.encode("AWS4" + secret);
    return sha256.hmacKey(deriveKey(hmac, secretKey, date, region, service));
  },
  hmacHex: sha256.hmacHex as CryptoBackend["hmacHex"],
};

// The slice of node:crypto we use, typed here so the core needs no @types/node.
interface NodeCrypto {
  createHmac(alg: "sha256", key: unknown): {
    update(data: string): { digest(): Uint8Array; digest(enc: "hex"): string };
  };
  createHash(alg: "sha256"): { update(data: string): { digest(enc: "hex"): string } };
  createSecretKey(key: Uint8Array): unknown;
  hash?: (alg: "sha256", data: string, enc: "hex") => string;
}

function loadNodeCrypto(): NodeCrypto | undefined {
  try {
    const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } })
      .process;
    const mod = proc?.getBuiltinModule?.("node:crypto") as NodeCrypto | undefined;
    return typeof mod?.createHmac === "function" ? mod : undefined;
  } catch {
    return undefined;
  }
}

function makeNodeBackend(c: NodeCrypto): CryptoBackend {
  const hmac = (key: unknown, data: string) => c.createHmac("sha256", key).update(data).digest();
  const oneShot = c.hash;
  return {
    name: "node:crypto",
    sha256Hex: oneShot
      ? (data) => oneShot("sha256", data, "hex")
      : (data) => c.createHash("sha256").update(data).digest("hex"),
    signingKey(secret, date, region, service) {
      const k = deriveKey<unknown>(hmac, "AWS4" + secret, date, region, service);
      // A KeyObject skips re-importing the raw bytes on every HMAC.
      return c.createSecretKey(k as Uint8Array);
    },
    hmacHex: (key, data) => c.createHmac("sha256", key).update(data).digest("hex"),
  };
}

let nodeBackend: CryptoBackend | undefined | null = null;

/**
 * The node:crypto backend, loaded on first call, or `undefined` where the runtime has no
 * `process.getBuiltinModule` (Node >= 20.16, Deno 2, Bun, workerd with nodejs_compat have it).
 */
export function nodeCryptoBackend(): CryptoBackend | undefined {
  if (nodeBackend === null) {
    const c = loadNodeCrypto();
    nodeBackend = c ? makeNodeBackend(c) : undefined;
  }
  return nodeBackend;
}

// Bun's own hasher: a global, so nothing to load, and native (~1 µs an HMAC).
interface BunHasher {
  update(data: string | Uint8Array): BunHasher;
  digest(): Uint8Array;
  digest(enc: "hex"): string;
}
type BunHasherClass = new (alg: "sha256", key?: Uint8Array) => BunHasher;

function makeBunBackend(Hasher: BunHasherClass): CryptoBackend {
  const hmac = (key: Uint8Array, data: string) => new Hasher("sha256", key).update(data).digest();
  return {
    name: "bun",
    sha256Hex: (data) => new Hasher("sha256").update(data).digest("hex"),
    signingKey: (secret, date, region, service) =>
      deriveKey(hmac, sha256.encoder.encode("AWS4" + secret), date, region, service),
    hmacHex: (key, data) => new Hasher("sha256", key as Uint8Array).update(data).digest("hex"),
  };
}

/** The backend over `Bun.CryptoHasher`, or `undefined` outside Bun. */
export const bunBackend: CryptoBackend | undefined = (() => {
  const Hasher = (globalThis as { Bun?: { CryptoHasher?: BunHasherClass } }).Bun?.CryptoHasher;
  return typeof Hasher === "function" ? makeBunBackend(Hasher) : undefined;
})();

// Node has node:crypto loaded already, and its HMAC takes ~2 µs. Bun has its own native hasher as
// a global. Deno would pay ~35 ms of cold start for node:crypto (even reading `process` starts its
// Node layer), so it gets the plain-JS backend, a few µs a token slower. Edge runtimes get
// node:crypto where nodejs_compat provides it, else plain JS. WebCrypto, at ~50 µs an asynchronous
// call, is kept as an independent implementation the others are tested against.
function automaticBackend(): CryptoBackend {
  if (bunBackend) return bunBackend;
  if (onDeno()) return jsBackend;
  return nodeCryptoBackend() ?? jsBackend;
}

// Chosen on first use, not on import: a process that imports pg-iam and never signs (or signs once,
// as `pg-iam token`, which asks for the plain-JS backend) does not load node:crypto (~4 ms on Node).
let automatic: CryptoBackend | undefined;
let active: CryptoBackend | undefined;

/** The backend the presigner uses now. */
export function getCryptoBackend(): CryptoBackend {
  return active ??= automaticCryptoBackend();
}

/** The backend chosen for this runtime when none is forced. */
export function automaticCryptoBackend(): CryptoBackend {
  return automatic ??= automaticBackend();
}

/** Every backend by name, `undefined` where this runtime lacks it: for tests and benchmarks. */
export function allCryptoBackends(): Record<string, CryptoBackend | undefined> {
  return {
    js: jsBackend,
    webcrypto: webCryptoBackend,
    "node:crypto": nodeCryptoBackend(),
    bun: bunBackend,
  };
}

/**
 * Forces a backend (tests and benchmarks compare them); `undefined` restores the automatic choice.
 * Clears the signing-key cache, whose keys are backend-specific.
 */
export function setCryptoBackend(backend: CryptoBackend | undefined): void {
  active = backend ?? automaticCryptoBackend();
  onBackendChange?.();
}

let onBackendChange: (() => void) | undefined;

/** Lets the key cache register its reset without an import cycle. */
export function _onBackendChange(fn: () => void): void {
  onBackendChange = fn;
}
