// SCRAM-SHA-256 (RFC 5802, RFC 7677), the server's side, as PostgreSQL does it over a connection
// without channel binding: the proxy asks its clients for a local password this way when it
// listens beyond loopback, so no password crosses the network in the clear and the proxy keeps
// only a verifier. Only "SCRAM-SHA-256" is offered (no "-PLUS": the proxy has no TLS of its own to
// bind to). The checks and their wording follow PostgreSQL's auth-sasl.c and auth-scram.c, so a
// client sees what a server would have said.

import { message, ProtocolError } from "../connection/pgwire.ts";
import type { Inbox } from "../connection/inbox.ts";
import { sha256 } from "../core/sha256.ts";
import { checkWhole } from "../core/checks.ts";
import { hasLoneSurrogate, subject } from "../core/errors.ts";

/** The one mechanism offered. */
export const SCRAM_SHA_256 = "SCRAM-SHA-256";

/** PostgreSQL's default iteration count (scram_iterations). */
export const SCRAM_ITERATIONS = 4096;

/**
 * What the server keeps of a password (RFC 5802, section 3): enough to check a client's proof and
 * to prove itself, not enough to log in as the client.
 *
 * @example
 * ```ts
 * import { scramVerifier } from "./scram.ts";
 * const verifier = await scramVerifier("pencil");
 * console.assert(verifier.iterations === 4096 && verifier.salt.length === 16);
 * ```
 */
export interface ScramVerifier {
  /** PBKDF2's iteration count, sent to the client. */
  iterations: number;
  /** The salt, sent to the client. */
  salt: Uint8Array;
  /** H(HMAC(SaltedPassword, "Client Key")): checks the client's proof. */
  storedKey: Uint8Array;
  /** HMAC(SaltedPassword, "Server Key"): signs the server's final message. */
  serverKey: Uint8Array;
}

/** How a {@linkcode scramLogin} ended. */
export type ScramResult =
  | { ok: true }
  | {
    ok: false;
    /** The SQLSTATE for the client's ErrorResponse: 28P01, 08P01, 0A000, or 08006 (gone). */
    code: string;
    /** The ErrorResponse's message, PostgreSQL's words. */
    message: string;
    /** PostgreSQL's DETAIL for a malformed message, for the ErrorResponse. */
    detail?: string;
    /** Why, for the log only (a wrong password's 28P01 tells the client nothing more). */
    reason: string;
  };

const encoder = new TextEncoder();
const KEY_LENGTH = 32;
// PostgreSQL's PG_MAX_SASL_MESSAGE_LENGTH, the length field included: a SCRAM message is ~100 bytes.
const MAX_SASL_MESSAGE = 1024;
const P = 0x70; // 'p': SASLInitialResponse and SASLResponse
const VERIFIER_SHAPE = "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>";

/**
 * A verifier for `password`, as PostgreSQL computes one for `CREATE ROLE … PASSWORD` with
 * `password_encryption = 'scram-sha-256'`: SASLprep'd (see below), PBKDF2-HMAC-SHA-256 with
 * `iterations` (default 4096) over `salt` (default 16 random bytes). A TypeError or RangeError for
 * a bad input names the option and never quotes the password.
 *
 * @example
 * ```ts
 * import { formatScramVerifier, scramVerifier } from "./scram.ts";
 * const salt = new Uint8Array(16);
 * const verifier = await scramVerifier("pencil", { iterations: 4096, salt });
 * console.assert(formatScramVerifier(verifier).startsWith("SCRAM-SHA-256$4096:AAAA"));
 * ```
 */
export async function scramVerifier(
  password: string,
  options: { iterations?: number; salt?: Uint8Array } = {},
): Promise<ScramVerifier> {
  if (typeof password !== "string") {
    throw new TypeError(`The password must be a string, got ${describe(password)}`);
  }
  // PostgreSQL refuses to set an empty password; no client could send one either.
  if (password === "") throw new RangeError("The password must not be empty");
  if (hasLoneSurrogate(password)) {
    throw new RangeError("The password is not valid Unicode (it has a lone UTF-16 surrogate)");
  }
  const iterations = options.iterations === undefined
    ? SCRAM_ITERATIONS
    : checkWhole(options.iterations, "iterations", 2 ** 31 - 1);
  let salt = options.salt;
  if (salt === undefined) salt = crypto.getRandomValues(new Uint8Array(16));
  else if (!(salt instanceof Uint8Array)) {
    throw new TypeError(`${subject("salt")} must be a Uint8Array, got ${describe(salt)}`);
  } else if (salt.length === 0) throw new RangeError(`${subject("salt")} must not be empty`);
  const key = await crypto.subtle.importKey("raw", prepare(password), "PBKDF2", false, [
    "deriveBits",
  ]);
  const salted = new Uint8Array(
    await crypto.subtle.deriveBits(
      { name: "PBKDF2", hash: "SHA-256", salt: own(salt), iterations },
      key,
      KEY_LENGTH * 8,
    ),
  );
  return {
    iterations,
    salt: own(salt),
    storedKey: sha256(await hmac(salted, encoder.encode("Client Key"))),
    serverKey: await hmac(salted, encoder.encode("Server Key")),
  };
}

/**
 * Whether `text` is meant as a stored verifier rather than a password: it starts as one does.
 *
 * @example
 * ```ts
 * import { isScramVerifier } from "./scram.ts";
 * console.assert(isScramVerifier("SCRAM-SHA-256$4096:…") && !isScramVerifier("pencil"));
 * ```
 */
export function isScramVerifier(text: string): boolean {
  return text.startsWith(`${SCRAM_SHA_256}$`);
}

/**
 * Reads a verifier as PostgreSQL stores it (`select rolpassword from pg_authid`):
 * `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64, so a user can give the
 * proxy a hash instead of a password. Malformed text is a RangeError naming `option`; it quotes no
 * more of the text than a verifier's first 14 characters (`SCRAM-SHA-256$`): it may be a password.
 *
 * @example
 * ```ts
 * import { parseScramVerifier } from "./scram.ts";
 * const verifier = parseScramVerifier(
 *   "SCRAM-SHA-256$4096:uWoepxsNVwSnJ/41k0rCNQ==$0dJ0xGd2nJq4Jz08VTWqIuqdXEbOliEVU6Q0AsnUN90=:" +
 *     "O6c2DMKBR8FNiC3uL2rK6o45EJWiGflAwDDBBnEY8dg=",
 * );
 * console.assert(verifier.iterations === 4096 && verifier.storedKey.length === 32);
 * ```
 */
export function parseScramVerifier(text: string, option = "password"): ScramVerifier {
  // Only a verifier's fixed head is ever quoted: any other text may be a password given by mistake.
  const got = typeof text !== "string"
    ? describe(text)
    : isScramVerifier(text)
    ? `"SCRAM-SHA-256$…"`
    : `text not starting with "SCRAM-SHA-256$" (${text.length} characters, not shown)`;
  const fail = (why: string) =>
    new RangeError(
      `${subject(option)} is not a SCRAM-SHA-256 verifier as PostgreSQL stores it ` +
        `(${VERIFIER_SHAPE}, in base64): ${why}, got ${got}`,
    );
  if (typeof text !== "string") throw fail("not a string");
  const parts = /^SCRAM-SHA-256\$([^:$]*):([^:$]*)\$([^:$]*):([^:$]*)$/.exec(text);
  if (!parts) throw fail("not of that shape");
  const [, count, salt, storedKey, serverKey] = parts;
  const iterations = /^[1-9]\d{0,9}$/.test(count) ? Number(count) : 0;
  if (iterations < 1 || iterations > 2 ** 31 - 1) {
    throw fail("the iteration count is not an integer from 1 to 2147483647");
  }
  const verifier = {
    iterations,
    salt: fromBase64(salt),
    storedKey: fromBase64(storedKey),
    serverKey: fromBase64(serverKey),
  };
  if (!verifier.salt?.length) throw fail("the salt is not base64");
  if (verifier.storedKey?.length !== KEY_LENGTH || verifier.serverKey?.length !== KEY_LENGTH) {
    throw fail("StoredKey and ServerKey must be 32 bytes each in base64");
  }
  return verifier as ScramVerifier;
}

/**
 * The verifier as PostgreSQL stores it, which {@linkcode parseScramVerifier} reads back.
 *
 * @example
 * ```ts
 * import { formatScramVerifier, parseScramVerifier, scramVerifier } from "./scram.ts";
 * const text = formatScramVerifier(await scramVerifier("pencil"));
 * console.assert(formatScramVerifier(parseScramVerifier(text)) === text);
 * ```
 */
export function formatScramVerifier(verifier: ScramVerifier): string {
  const { iterations, salt, storedKey, serverKey } = verifier;
  return `${SCRAM_SHA_256}$${iterations}:${toBase64(salt)}$${toBase64(storedKey)}:${
    toBase64(serverKey)
  }`;
}

/**
 * Runs the SCRAM-SHA-256 exchange with a client whose StartupMessage has been read, for `user`
 * (the StartupMessage's; SCRAM's own user name is ignored, as PostgreSQL ignores it): sends
 * AuthenticationSASL, reads SASLInitialResponse, sends AuthenticationSASLContinue, reads
 * SASLResponse, checks the proof in constant time, and sends AuthenticationSASLFinal. It sends no
 * AuthenticationOk (the caller does, once its upstream login is done) and no ErrorResponse: on
 * failure the caller sends one (FATAL, `code`, `message`, `detail`) and closes. A wrong password
 * is 28P01 `password authentication failed for user "…"`; a malformed message 08P01 (0A000 for an
 * authorization identity or a mandatory extension) with PostgreSQL's message and detail; a client
 * gone mid-exchange 08006. The caller bounds the time it takes.
 *
 * `options.serverNonce` fixes the server's nonce, which is otherwise 18 random bytes in base64 as
 * PostgreSQL makes it: for replaying a recorded exchange in tests only, since a fixed nonce lets
 * an eavesdropper's recording be replayed too.
 *
 * @example
 * ```ts ignore
 * import { errorResponse } from "../connection/pgwire.ts";
 * const result = await scramLogin(inbox, (bytes) => socket.write(bytes), verifier, user);
 * if (!result.ok) {
 *   socket.end(errorResponse({ severity: "FATAL", ...result }));
 * }
 * ```
 */
export async function scramLogin(
  inbox: Inbox,
  send: (bytes: Uint8Array) => boolean,
  verifier: ScramVerifier,
  user: string,
  options: { serverNonce?: string } = {},
): Promise<ScramResult> {
  try {
    await exchange(inbox, send, verifier, user, options.serverNonce ?? randomNonce());
    return { ok: true };
  } catch (error) {
    if (error instanceof Refusal) {
      const { code, message, detail, reason } = error;
      return { ok: false, code, message, ...(detail === undefined ? {} : { detail }), reason };
    }
    if (error instanceof ProtocolError) {
      const message = "invalid message length";
      return { ok: false, code: "08P01", message, reason: `${message}: ${error.message}` };
    }
    throw error;
  }
}

async function exchange(
  inbox: Inbox,
  send: (bytes: Uint8Array) => boolean,
  verifier: ScramVerifier,
  user: string,
  serverNonce: string,
): Promise<void> {
  send(authentication(10, encoder.encode(`${SCRAM_SHA_256}\0\0`)));
  let first = initialResponse(await response(inbox));
  if (first === null) {
    // No initial response: an empty challenge asks for it, as PostgreSQL does.
    send(authentication(11));
    first = await response(inbox);
  }
  const client = clientFirst(text(first));
  const serverFirst = `r=${client.nonce}${serverNonce},s=${
    toBase64(verifier.salt)
  },i=${verifier.iterations}`;
  send(authentication(11, bytes(serverFirst)));
  const final = clientFinal(text(await response(inbox)), client.flag);
  if (final.nonce !== client.nonce + serverNonce) {
    throw violation("invalid SCRAM response", "Nonce does not match.");
  }
  const authMessage = bytes(`${client.bare},${serverFirst},${final.withoutProof}`);
  const signature = await hmac(own(verifier.storedKey), authMessage);
  const clientKey = final.proof.map((byte, i) => byte ^ signature[i]);
  if (!equal(sha256(clientKey), verifier.storedKey)) {
    throw new Refusal(
      "28P01",
      `password authentication failed for user "${user}"`,
      undefined,
      "the client's SCRAM proof does not match the password",
    );
  }
  const serverSignature = await hmac(own(verifier.serverKey), authMessage);
  send(authentication(12, bytes(`v=${toBase64(serverSignature)}`)));
}

/** A failed exchange: what the client is told, and why for the log. */
class Refusal {
  constructor(
    readonly code: string,
    readonly message: string,
    readonly detail: string | undefined,
    readonly reason: string,
  ) {}
}

function violation(message: string, detail?: string, code = "08P01"): Refusal {
  return new Refusal(
    code,
    message,
    detail,
    detail === undefined ? message : `${message}: ${detail}`,
  );
}

const malformed = (detail: string) => violation("malformed SCRAM message", detail);

/** The body of the client's next message, which must be a 'p'. */
async function response(inbox: Inbox): Promise<Uint8Array> {
  const next = await inbox.next(() => inbox.reader.message(MAX_SASL_MESSAGE));
  if (next === undefined) {
    const why = "the client closed the connection during the SCRAM exchange";
    throw new Refusal("08006", why, undefined, why);
  }
  if (next.type !== P) throw violation(`expected SASL response, got message type ${next.type}`);
  return next.body;
}

/** SASLInitialResponse: the mechanism, then the client-first-message (`null` when absent). */
function initialResponse(body: Uint8Array): Uint8Array | null {
  const end = body.indexOf(0);
  if (end < 0) throw violation("invalid string in message");
  if (text(body.subarray(0, end)) !== SCRAM_SHA_256) {
    throw violation("client selected an invalid SASL authentication mechanism");
  }
  let at = end + 1;
  if (body.length - at < 4) throw violation("insufficient data left in message");
  const length = new DataView(body.buffer, body.byteOffset + at, 4).getInt32(0);
  at += 4;
  if (length === -1) {
    if (at !== body.length) throw violation("invalid message format");
    return null;
  }
  if (length < 0 || length > body.length - at) {
    throw violation("insufficient data left in message");
  }
  if (at + length !== body.length) throw violation("invalid message format");
  return body.subarray(at, at + length);
}

/**
 * Reads SCRAM attributes from a message held as a binary string (one character a byte), so the
 * parts put back together for the proof are the bytes the client sent, whatever their encoding.
 */
class Attributes {
  at = 0;
  constructor(readonly s: string) {}

  /** The character at the cursor, NUL at the end (PostgreSQL reads a C string). */
  char(): string {
    return this.s[this.at] ?? "\0";
  }

  /** The value of attribute `name`, which must come next. */
  value(name: string): string {
    if (this.char() !== name) {
      throw malformed(`Expected attribute "${name}" but found "${sanitize(this.char())}".`);
    }
    this.at++;
    return this.#rest(name);
  }

  /** The next attribute, whatever its name. */
  any(): [string, string] {
    const name = this.char();
    if (!/^[A-Za-z]$/.test(name)) {
      throw malformed(`Attribute expected, but found invalid character "${sanitize(name)}".`);
    }
    this.at++;
    return [name, this.#rest(name)];
  }

  #rest(name: string): string {
    if (this.char() !== "=") throw malformed(`Expected character "=" for attribute "${name}".`);
    const start = ++this.at;
    const comma = this.s.indexOf(",", start);
    const end = comma < 0 ? this.s.length : comma;
    this.at = comma < 0 ? end : end + 1;
    return this.s.slice(start, end);
  }
}

function checkLength(s: string): void {
  if (s === "") throw malformed("The message is empty.");
  if (s.includes("\0")) throw malformed("Message length does not match input length.");
}

/** client-first-message: gs2 header ("n,," or "y,,"), then n=user,r=nonce[,extensions]. */
function clientFirst(s: string): { flag: string; bare: string; nonce: string } {
  checkLength(s);
  const a = new Attributes(s);
  const flag = a.char();
  if (flag === "p") {
    // The client wants channel binding, which a mechanism without -PLUS cannot give.
    throw malformed(
      "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message " +
        "includes channel binding data.",
    );
  }
  // "y": the client could bind but thinks the server cannot. True here (no -PLUS is offered), so
  // no downgrade to detect.
  if (flag !== "n" && flag !== "y") {
    throw malformed(`Unexpected channel-binding flag "${sanitize(flag)}".`);
  }
  a.at++;
  if (a.char() !== ",") {
    throw malformed(`Comma expected, but found character "${sanitize(a.char())}".`);
  }
  a.at++;
  if (a.char() === "a") {
    throw violation(
      "client uses authorization identity, but it is not supported",
      undefined,
      "0A000",
    );
  }
  if (a.char() !== ",") {
    throw malformed(`Unexpected attribute "${sanitize(a.char())}" in client-first-message.`);
  }
  a.at++;
  const bare = s.slice(a.at);
  if (a.char() === "m") {
    throw violation("client requires an unsupported SCRAM extension", undefined, "0A000");
  }
  a.value("n");
  const nonce = a.value("r");
  // Printable ASCII but ',' (RFC 5802's printable), which the nonce is sent back in.
  if (!/^[\x21-\x2b\x2d-\x7e]*$/.test(nonce)) {
    throw violation("non-printable characters in SCRAM nonce");
  }
  while (a.at < s.length) a.any();
  return { flag, bare, nonce };
}

/** client-final-message: c=base64(gs2 header),r=nonce[,extensions],p=proof. */
function clientFinal(
  s: string,
  flag: string,
): { nonce: string; proof: Uint8Array; withoutProof: string } {
  checkLength(s);
  const a = new Attributes(s);
  const binding = a.value("c");
  // base64 of "n,," or "y,,", the header the client sent first.
  if (!(binding === "biws" && flag === "n") && !(binding === "eSws" && flag === "y")) {
    throw violation("unexpected SCRAM channel-binding attribute in client-final-message");
  }
  const nonce = a.value("r");
  let proofAt: number;
  let name: string, value: string;
  do {
    proofAt = a.at;
    [name, value] = a.any();
  } while (name !== "p");
  const proof = fromBase64(value);
  if (proof?.length !== KEY_LENGTH) throw malformed("Malformed proof in client-final-message.");
  if (a.at < s.length) throw malformed("Garbage found at the end of client-final-message.");
  return { nonce, proof, withoutProof: s.slice(0, proofAt - 1) };
}

/** A byte as PostgreSQL quotes it: 'c' when printable, else its hex. */
function sanitize(c: string): string {
  const code = c.charCodeAt(0);
  return code >= 0x21 && code <= 0x7e ? `'${c}'` : `0x${code.toString(16).padStart(2, "0")}`;
}

/** An Authentication ('R') message: its code, then `data`. */
function authentication(code: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const body = new Uint8Array(4 + data.length);
  new DataView(body.buffer).setInt32(0, code);
  body.set(data, 4);
  return message("R", body);
}

// 18 random bytes in base64 (24 characters), PostgreSQL's SCRAM_RAW_NONCE_LEN.
function randomNonce(): string {
  return toBase64(crypto.getRandomValues(new Uint8Array(18)));
}

async function hmac(key: Uint8Array<ArrayBuffer>, data: Uint8Array<ArrayBuffer>) {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, data));
}

// Compares every byte whatever the first difference, so the time taken says nothing of where.
function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** A copy on an ArrayBuffer of its own, which WebCrypto's types ask for. */
function own(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes);
}

/** Bytes as a binary string, one character each. */
function text(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

/** A binary string (or ASCII) back to bytes. */
function bytes(s: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function toBase64(data: Uint8Array): string {
  return btoa(text(data));
}

// Strict base64 (padding required), or undefined: atob alone would skip spaces.
function fromBase64(s: string): Uint8Array | undefined {
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return undefined;
  try {
    return bytes(atob(s));
  } catch {
    return undefined;
  }
}

function describe(value: unknown): string {
  return value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`;
}

// SASLprep (RFC 4013) as PostgreSQL's pg_saslprep applies it to a password: ASCII as it is;
// otherwise non-ASCII spaces become spaces, the characters "commonly mapped to nothing" go, NFKC;
// a result that is empty or holds a prohibited character means the raw password is used instead
// (PostgreSQL's leniency: it cannot know the client's encoding). Left out, to keep this small: the
// table of code points unassigned in Unicode 3.2 and the check of right-to-left strings, which
// PostgreSQL also treats as "use the raw password". A password where they matter (one mixing
// right-to-left and left-to-right letters, or with characters newer than Unicode 3.2 beside ones
// NFKC changes) may then be hashed differently from PostgreSQL: its logins fail, never succeed
// wrongly; the verifier PostgreSQL computes (parseScramVerifier) avoids that.
function prepare(password: string): Uint8Array<ArrayBuffer> {
  // deno-lint-ignore no-control-regex
  if (/^[\x00-\x7f]*$/.test(password)) return encoder.encode(password);
  let out = "";
  for (const char of password) {
    const code = char.codePointAt(0)!;
    if (within(code, NON_ASCII_SPACE)) out += " ";
    else if (!within(code, MAPPED_TO_NOTHING)) out += char;
  }
  out = out.normalize("NFKC");
  for (const char of out) {
    const code = char.codePointAt(0)!;
    if (within(code, PROHIBITED) || (code & 0xfffe) === 0xfffe) return encoder.encode(password);
  }
  return encoder.encode(out === "" ? password : out);
}

function within(code: number, ranges: readonly number[]): boolean {
  for (let i = 0; i < ranges.length; i += 2) {
    if (code >= ranges[i] && code <= ranges[i + 1]) return true;
  }
  return false;
}

// RFC 3454 tables, as [first, last] pairs. C.1.2: non-ASCII spaces.
const NON_ASCII_SPACE = [
  0xa0,
  0xa0,
  0x1680,
  0x1680,
  0x2000,
  0x200b,
  0x202f,
  0x202f,
  0x205f,
  0x205f,
  0x3000,
  0x3000,
];
// B.1: commonly mapped to nothing.
const MAPPED_TO_NOTHING = [
  0xad,
  0xad,
  0x34f,
  0x34f,
  0x1806,
  0x1806,
  0x180b,
  0x180d,
  0x200b,
  0x200d,
  0x2060,
  0x2060,
  0xfe00,
  0xfe0f,
  0xfeff,
  0xfeff,
];
// C.1.2, C.2.1, C.2.2, C.3, C.4 (but each plane's last two, tested apart), C.5 to C.9.
const PROHIBITED = [
  ...NON_ASCII_SPACE,
  0x0,
  0x1f,
  0x7f,
  0x9f,
  0x340,
  0x341,
  0x6dd,
  0x6dd,
  0x70f,
  0x70f,
  0x180e,
  0x180e,
  0x200c,
  0x200f,
  0x2028,
  0x202e,
  0x2060,
  0x2063,
  0x206a,
  0x206f,
  0x2ff0,
  0x2ffb,
  0xd800,
  0xdfff,
  0xe000,
  0xf8ff,
  0xfdd0,
  0xfdef,
  0xfeff,
  0xfeff,
  0xfff9,
  0xfffd,
  0x1d173,
  0x1d17a,
  0xe0001,
  0xe0001,
  0xe0020,
  0xe007f,
  0xf0000,
  0xffffd,
  0x100000,
  0x10fffd,
];
