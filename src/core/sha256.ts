// SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104) in plain JavaScript.
//
// Written by hand because the core must have no runtime dependencies, and neither alternative is
// good enough where node:crypto is missing or costly to load: WebCrypto is asynchronous at about
// 50 µs a call, and loading node:crypto costs Deno ~20 ms and Bun ~9 ms of cold start. A token
// needs one hash and one HMAC; with the HMAC's padded-key states computed once per signing key,
// this costs a few µs and nothing to load. Checked against FIPS/RFC vectors and node:crypto.

// The round constants and the initial state (FIPS 180-4, 4.2.2 and 5.3.3): the first 32 bits of
// the fractional parts of the cube roots of the first 64 primes, and of the square roots of the
// first 8. Computed rather than listed: 600 bytes less in every bundle; doubles carry ~50
// fractional bits here, and the tests check the results against the published vectors.
// Int32Array, not Uint32Array: words above 2^31 would read as doubles, and V8 would do the round
// arithmetic in floating point; as int32 it stays in integer registers (measured ~2x on Deno).
const K = new Int32Array(64);
const INITIAL = new Int32Array(8);
for (let n = 2, found = 0; found < 64; n++) {
  let prime = true;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) prime = false;
  if (!prime) continue;
  if (found < 8) INITIAL[found] = (Math.sqrt(n) % 1) * 2 ** 32;
  K[found++] = (Math.cbrt(n) % 1) * 2 ** 32;
}

// The message schedule. compress() hashes the block in W[0..15] into h.
const W = new Int32Array(64);

function compress(h: Int32Array): void {
  for (let i = 16; i < 64; i++) {
    const x = W[i - 15], y = W[i - 2];
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
  }
  let a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (hh + S1 + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & bb) ^ (a & c) ^ (bb & c))) | 0;
    hh = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = bb;
    bb = a;
    a = (t1 + t2) | 0;
  }
  h[0] = (h[0] + a) | 0;
  h[1] = (h[1] + bb) | 0;
  h[2] = (h[2] + c) | 0;
  h[3] = (h[3] + d) | 0;
  h[4] = (h[4] + e) | 0;
  h[5] = (h[5] + f) | 0;
  h[6] = (h[6] + g) | 0;
  h[7] = (h[7] + hh) | 0;
}

// Big-endian words of the 64 bytes of `b` at `off`, into W.
function load(b: Uint8Array, off: number): void {
  for (let i = 0; i < 16; i++, off += 4) {
    W[i] = (b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3];
  }
}

const TAIL = new Uint8Array(128);

// Hashes `len` bytes of `data` into `h`, which has already absorbed `prefix` bytes (whole blocks:
// the HMAC pads), and pads: `h` ends as the digest.
function finishBytes(h: Int32Array, prefix: number, data: Uint8Array, len: number): void {
  let off = 0;
  for (; off + 64 <= len; off += 64) {
    load(data, off);
    compress(h);
  }
  const rest = len - off;
  TAIL.fill(0);
  TAIL.set(data.subarray(off, len));
  pad(h, prefix + len, rest);
}

// Pads the `rest` bytes already in TAIL (zeros after them; a message of `total` bytes) and
// compresses. The length goes straight into the last block's final two words.
function pad(h: Int32Array, total: number, rest: number): void {
  TAIL[rest] = 0x80;
  load(TAIL, 0);
  if (rest >= 56) {
    compress(h);
    load(TAIL, 64);
  }
  const bits = total * 8;
  W[14] = Math.floor(bits / 0x100000000);
  W[15] = bits | 0;
  compress(h);
}

// Hashes the ASCII `text` into `h` (after `prefix` bytes) straight from its char codes, four to a
// word: no UTF-8 buffer, no call into the runtime (TextEncoder is one on Deno). What is signed is
// ASCII: the query is percent-encoded and host names are ASCII. Returns false, with `h` partly
// updated, at the first character beyond ASCII.
function finishAscii(h: Int32Array, prefix: number, text: string): boolean {
  const len = text.length;
  let off = 0;
  for (; off + 64 <= len; off += 64) {
    for (let i = 0, k = off; i < 16; i++, k += 4) {
      const c0 = text.charCodeAt(k), c1 = text.charCodeAt(k + 1);
      const c2 = text.charCodeAt(k + 2), c3 = text.charCodeAt(k + 3);
      if ((c0 | c1 | c2 | c3) > 0x7f) return false;
      W[i] = (c0 << 24) | (c1 << 16) | (c2 << 8) | c3;
    }
    compress(h);
  }
  const rest = len - off;
  TAIL.fill(0);
  for (let i = 0; i < rest; i++) {
    const c = text.charCodeAt(off + i);
    if (c > 0x7f) return false;
    TAIL[i] = c;
  }
  pad(h, prefix + len, rest);
  return true;
}

/** UTF-8, for the hash and its callers. */
export const encoder: TextEncoder = new TextEncoder();
let scratch = new Uint8Array(4096);

// The digest of `text` (UTF-8) after `state`, which has absorbed `prefix` bytes, into H.
const H = new Int32Array(8);
function digestText(state: Int32Array, prefix: number, text: string): Int32Array {
  H.set(state);
  if (finishAscii(H, prefix, text)) return H;
  H.set(state);
  if (text.length * 3 > scratch.length) scratch = new Uint8Array(text.length * 3);
  finishBytes(H, prefix, scratch, encoder.encodeInto(text, scratch).written);
  return H;
}

function bytesOf(words: Int32Array): Uint8Array {
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = words[i >> 2] >>> (24 - 8 * (i & 3));
  return out;
}

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Lowercase hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += HEX[bytes[i]];
  return out;
}

function hexOf(words: Int32Array): string {
  let out = "";
  for (let i = 0; i < 8; i++) {
    const w = words[i];
    out += HEX[w >>> 24] + HEX[(w >>> 16) & 255] + HEX[(w >>> 8) & 255] + HEX[w & 255];
  }
  return out;
}

/** Hex SHA-256 of the UTF-8 encoding of `text`. */
export function sha256Hex(text: string): string {
  return hexOf(digestText(INITIAL, 0, text));
}

/** SHA-256 of raw bytes. */
export function sha256(data: Uint8Array): Uint8Array {
  H.set(INITIAL);
  finishBytes(H, 0, data, data.length);
  return bytesOf(H);
}

/** An HMAC key with its padded blocks already hashed: each use skips two compressions. */
export interface HmacKey {
  readonly inner: Int32Array;
  readonly outer: Int32Array;
}

/** Prepares an HMAC-SHA-256 key. */
export function hmacKey(key: Uint8Array): HmacKey {
  const k = key.length > 64 ? sha256(key) : key;
  // The state after one block of the key XOR `pad`.
  const padded = (pad: number) => {
    const block = new Uint8Array(64).fill(pad);
    for (let i = 0; i < k.length; i++) block[i] ^= k[i];
    const h = INITIAL.slice();
    load(block, 0);
    compress(h);
    return h;
  };
  return { inner: padded(0x36), outer: padded(0x5c) };
}

// HMAC(key, text) into H: the inner digest goes into the outer hash as words, one block with its
// padding (64 + 32 bytes = 768 bits).
function hmacWords(key: HmacKey, text: string): Int32Array {
  const inner = digestText(key.inner, 64, text);
  for (let i = 0; i < 8; i++) W[i] = inner[i];
  W[8] = 0x80000000 | 0;
  W.fill(0, 9, 15);
  W[15] = 768;
  H.set(key.outer);
  compress(H);
  return H;
}

/** HMAC-SHA-256 of the UTF-8 encoding of `text`, as bytes. */
export function hmac(key: HmacKey, text: string): Uint8Array {
  return bytesOf(hmacWords(key, text));
}

/** HMAC-SHA-256 of the UTF-8 encoding of `text`, as hex. */
export function hmacHex(key: HmacKey, text: string): string {
  return hexOf(hmacWords(key, text));
}
