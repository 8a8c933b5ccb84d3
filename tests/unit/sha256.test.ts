import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { hmac, hmacHex, hmacKey, sha256, sha256Hex } from "../../src/core/sha256.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const bytes = (s: string) => new TextEncoder().encode(s);

// FIPS 180-4 examples (NIST CSRC "SHA-256" example values).
const FIPS: Array<[string, string]> = [
  ["", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
  ["abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
  [
    "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  ],
  ["a".repeat(1_000_000), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"],
];

for (const [input, expected] of FIPS) {
  test(`sha256Hex() of a ${input.length}-character FIPS 180 example`, () => {
    assert.equal(sha256Hex(input), expected);
    assert.equal(hex(sha256(bytes(input))), expected);
  });
}

// RFC 4231 test cases 1, 2 and 6 (a key longer than the block is hashed first).
const RFC4231: Array<[Uint8Array, string, string]> = [
  [
    new Uint8Array(20).fill(0x0b),
    "Hi There",
    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
  ],
  [
    bytes("Jefe"),
    "what do ya want for nothing?",
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  ],
  [
    new Uint8Array(131).fill(0xaa),
    "Test Using Larger Than Block-Size Key - Hash Key First",
    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
  ],
];

for (const [i, [key, data, expected]] of RFC4231.entries()) {
  test(`hmacHex() of RFC 4231 case ${[1, 2, 6][i]}`, () => {
    assert.equal(hmacHex(hmacKey(key), data), expected);
    assert.equal(hex(hmac(hmacKey(key), data)), expected);
  });
}

test("sha256Hex() and hmacHex() agree with node:crypto on 2,000 random strings", () => {
  let seed = 0x2545f491;
  const rand = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const alphabet = ["a", "Z", "0", "/", "+", "=", " ", "\n", "é", "€", "😀", "\u0000"];
  const key = bytes("AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
  const prepared = hmacKey(key);
  for (let n = 0; n < 2000; n++) {
    // Lengths cluster around the block boundaries where padding changes shape.
    const len = n < 300
      ? n
      : [55, 56, 63, 64, 65, 119, 120, 127, 128][n % 9] + Math.floor(rand() * 3000) * (n % 2);
    let s = "";
    while (s.length < len) s += alphabet[Math.floor(rand() * alphabet.length)];
    assert.equal(sha256Hex(s), createHash("sha256").update(s).digest("hex"), `length ${len}`);
    assert.equal(hmacHex(prepared, s), createHmac("sha256", key).update(s).digest("hex"));
  }
});

// Longer than any input before it in this file, so the reused buffer must grow here.
test("a long input after short ones is hashed whole (the scratch buffer grows first)", () => {
  sha256Hex("short");
  const long = "x".repeat(1_500_000) + "end";
  assert.equal(sha256Hex(long), createHash("sha256").update(long).digest("hex"));
  const key = hmacKey(bytes("k"));
  hmacHex(key, "short");
  const longer = "y".repeat(2_000_000);
  assert.equal(hmacHex(key, longer), createHmac("sha256", "k").update(longer).digest("hex"));
});
