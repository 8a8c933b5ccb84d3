// Just enough of the PostgreSQL v3 wire protocol for a login, on either side: framing of the
// startup-phase packets (no type byte) and typed messages (MessageReader, for IamSocket and the
// gateway alike), the StartupMessage's parameters, ErrorResponse, and the authentication
// exchange. After login both hand over or relay bytes verbatim; only `pg-iam doctor` reads on, its
// session start and one simple query (ParameterStatus, Query, DataRow). Reference:
// https://www.postgresql.org/docs/current/protocol-message-formats.html

/** Protocol 3.0 in a StartupMessage. */
export const PROTOCOL_3 = 196608;
/** The codes a startup-phase packet can carry instead of a protocol version. */
export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;

/** The server's limit for a startup packet (MAX_STARTUP_PACKET_LENGTH). */
export const MAX_STARTUP_LENGTH = 10_000;
/** The server's limit for a PasswordMessage (PG_MAX_AUTH_TOKEN_LENGTH). */
export const MAX_PASSWORD_LENGTH = 65_535;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A typed message: its type byte and body (the bytes after the length). */
export interface Message {
  type: number;
  body: Uint8Array;
  /** The whole message as received, type and length included, for relaying verbatim. */
  raw: Uint8Array;
}

/** Thrown when the peer sends something that cannot be framed. */
export class ProtocolError extends Error {
  /** Creates a protocol error. */
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

/**
 * Accumulates received chunks and cuts whole packets out of them: TCP delivers messages split
 * across chunks and several in one chunk.
 */
export class MessageReader {
  #buf: Uint8Array = new Uint8Array(0);

  /** How many bytes are received but not yet taken. */
  get buffered(): number {
    return this.#buf.length;
  }

  /** The next byte, not taken, or `undefined` when none is buffered. */
  peek(): number | undefined {
    return this.#buf[0];
  }

  /** Appends a received chunk. */
  push(chunk: Uint8Array): void {
    if (this.#buf.length === 0) {
      this.#buf = chunk;
      return;
    }
    const joined = new Uint8Array(this.#buf.length + chunk.length);
    joined.set(this.#buf);
    joined.set(chunk, this.#buf.length);
    this.#buf = joined;
  }

  /**
   * The next typed message's type byte and length field (its body's length + 4), not taken, or
   * `undefined` until five bytes are here: a message can be refused by its header before the rest
   * of it arrives.
   */
  header(): { type: number; length: number } | undefined {
    if (this.#buf.length < 5) return undefined;
    return { type: this.#buf[0], length: readInt32(this.#buf, 1) };
  }

  /** The next startup-phase packet (length + body), or `undefined` until one is complete. */
  startup(): Uint8Array | undefined {
    if (this.#buf.length < 4) return undefined;
    const length = readInt32(this.#buf, 0);
    if (length < 8 || length > MAX_STARTUP_LENGTH) {
      throw new ProtocolError(`invalid startup packet length ${length}`);
    }
    return this.#take(length);
  }

  /** The next typed message, or `undefined` until one is complete. */
  message(maxLength = 1 << 30): Message | undefined {
    if (this.#buf.length < 5) return undefined;
    const length = readInt32(this.#buf, 1);
    if (length < 4 || length > maxLength) {
      throw new ProtocolError(
        `invalid length ${length} of a message of type ${typeName(this.#buf[0])}`,
      );
    }
    const raw = this.#take(length + 1);
    return raw && { type: raw[0], body: raw.subarray(5), raw };
  }

  /** Everything received but not yet taken, emptying the reader. */
  rest(): Uint8Array {
    const rest = this.#buf;
    this.#buf = new Uint8Array(0);
    return rest;
  }

  #take(length: number): Uint8Array | undefined {
    if (this.#buf.length < length) return undefined;
    const packet = this.#buf.subarray(0, length);
    this.#buf = this.#buf.subarray(length);
    return packet;
  }
}

/** The code of a startup-phase packet: a protocol version or one of the request codes. */
export function startupCode(packet: Uint8Array): number {
  return readInt32(packet, 4);
}

/** The parameters of a StartupMessage (user, database, options, application_name, …). */
export function startupParams(packet: Uint8Array): Map<string, string> {
  const strings = decoder.decode(packet.subarray(8)).split("\0");
  const params = new Map<string, string>();
  // name\0value\0 … \0: the list ends with an empty name.
  for (let i = 0; i + 1 < strings.length && strings[i] !== ""; i += 2) {
    params.set(strings[i], strings[i + 1]);
  }
  return params;
}

/**
 * The parameters of a StartupMessage, read as the server reads them: pairs of NUL-terminated name
 * and value, then one NUL that must be the packet's last byte. `undefined` for any other layout (a
 * missing terminator, a name without a value), which the server refuses.
 */
export function startupParameters(packet: Uint8Array): Map<string, string> | undefined {
  // From the protocol version on, as the server's buffer, read as if one NUL followed it.
  const buf = packet.subarray(4);
  const len = buf.length;
  const end = (from: number) => {
    const nul = buf.indexOf(0, from);
    return nul < 0 ? len : nul;
  };
  const params = new Map<string, string>();
  let offset = 4;
  while (offset < len && buf[offset] !== 0) {
    const nameEnd = end(offset);
    if (nameEnd + 1 >= len) break;
    const valueEnd = end(nameEnd + 1);
    params.set(
      decoder.decode(buf.subarray(offset, nameEnd)),
      decoder.decode(buf.subarray(nameEnd + 1, valueEnd)),
    );
    offset = valueEnd + 1;
  }
  return offset === len - 1 ? params : undefined;
}

/**
 * NegotiateProtocolVersion ('v'): the newest minor version of protocol 3 the server supports, and
 * the `_pq_.` options of the StartupMessage it does not recognize. The version is sent whole
 * (`3 << 16 | minor`), as PostgreSQL sends it: libpq 18 refuses one below 3.0.
 */
export function negotiateProtocolVersion(
  minor: number,
  unrecognized: readonly string[],
): Uint8Array {
  const names = encoder.encode(unrecognized.map((name) => name + "\0").join(""));
  const body = new Uint8Array(8 + names.length);
  writeInt32(body, 0, PROTOCOL_3 | minor);
  writeInt32(body, 4, unrecognized.length);
  body.set(names, 8);
  return message("v", body);
}

/**
 * Refuses a NUL in a startup parameter's name or value: in the StartupMessage it would end the
 * parameter and start another (`database` = `"db\0options\0-c search_path=evil"` sends an
 * `options` of its own), and no libpq connection string can hold one. Other control characters
 * travel as they are: the server reads each value up to its NUL terminator.
 */
export function checkStartupParameters(params: Iterable<readonly [string, unknown]>): void {
  for (const [name, value] of params) {
    if (name.includes("\0")) {
      throw new TypeError(
        `A startup parameter's name contains a NUL character, which would end it and start ` +
          `another parameter: ${JSON.stringify(name)}`,
      );
    }
    if ((typeof value === "string" || typeof value === "number") && String(value).includes("\0")) {
      throw new TypeError(
        `The startup parameter "${name}" contains a NUL character, which would end it and start ` +
          `another parameter: ${JSON.stringify(value)}`,
      );
    }
  }
}

/** What a NegotiateProtocolVersion ('v') body says, or why it is invalid. */
export type ProtocolNegotiation =
  | { ok: true; minor: number; unrecognized: string[] }
  | { ok: false; reason: string };

/**
 * Reads a NegotiateProtocolVersion ('v') body as libpq 18 does, for a StartupMessage that asked for
 * protocol 3.0 with the parameter names `requested`: the version must be 3.0 (no higher than asked
 * for, no lower than 3.0), it must ask for a change, and each option named must be a `_pq_.` one
 * the StartupMessage carried, with nothing after the last.
 */
export function readProtocolNegotiation(
  body: Uint8Array,
  requested: ReadonlySet<string>,
): ProtocolNegotiation {
  const fail = (reason: string) => ({ ok: false as const, reason });
  if (body.length < 8) return fail("message too short");
  const version = readInt32(body, 0) | 0;
  const count = readInt32(body, 4) | 0;
  if (version > PROTOCOL_3) return fail("server requested downgrade to a higher-numbered version");
  if (version < PROTOCOL_3) return fail("server requested downgrade to pre-3.0 protocol version");
  if (count < 0) return fail("server reported negative number of unsupported parameters");
  if (count === 0) return fail("server negotiated but asks for no changes");
  const unrecognized: string[] = [];
  let at = 8;
  for (let i = 0; i < count; i++) {
    const end = body.indexOf(0, at);
    if (end < 0) return fail("message too short");
    const name = decoder.decode(body.subarray(at, end));
    at = end + 1;
    if (!name.startsWith("_pq_.")) {
      return fail(
        `server reported unsupported parameter name without a "_pq_." prefix (${
          JSON.stringify(name.slice(0, 64))
        })`,
      );
    }
    if (!requested.has(name)) {
      return fail(
        `server reported an unsupported parameter that was not requested (${
          JSON.stringify(name.slice(0, 64))
        })`,
      );
    }
    unrecognized.push(name);
  }
  if (at !== body.length) return fail("message too long");
  return { ok: true, minor: version & 0xffff, unrecognized };
}

/** A StartupMessage for protocol 3.0 with `params` (a NUL in any is a TypeError). */
export function startupMessage(params: ReadonlyMap<string, string>): Uint8Array {
  checkStartupParameters(params);
  let text = "";
  for (const [name, value] of params) text += `${name}\0${value}\0`;
  const body = encoder.encode(text + "\0");
  const packet = new Uint8Array(8 + body.length);
  writeInt32(packet, 0, packet.length);
  writeInt32(packet, 4, PROTOCOL_3);
  packet.set(body, 8);
  return packet;
}

/** A typed message: type byte, length, body. */
export function message(type: string, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(5 + body.length);
  out[0] = type.charCodeAt(0);
  writeInt32(out, 1, 4 + body.length);
  out.set(body, 5);
  return out;
}

/** The fields of an ErrorResponse the gateway sends. */
export interface ErrorFields {
  /** `"FATAL"` or `"ERROR"`; sent as both S (localized) and V (never localized). */
  severity: string;
  /** The SQLSTATE, for example `"28P01"`. */
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

/** An ErrorResponse ('E'). */
export function errorResponse(fields: ErrorFields): Uint8Array {
  const parts: Array<[string, string | undefined]> = [
    ["S", fields.severity],
    ["V", fields.severity],
    ["C", fields.code],
    ["M", fields.message],
    ["D", fields.detail],
    ["H", fields.hint],
  ];
  let text = "";
  for (const [tag, value] of parts) if (value !== undefined) text += `${tag}${value}\0`;
  return message("E", encoder.encode(text + "\0"));
}

/** The fields of an ErrorResponse body, by tag letter. */
export function errorFields(body: Uint8Array): Map<string, string> {
  const fields = new Map<string, string>();
  for (const field of decoder.decode(body).split("\0")) {
    if (field !== "") fields.set(field[0], field.slice(1));
  }
  return fields;
}

/** Authentication request codes of an 'R' message. */
export const AUTH_OK = 0;
export const AUTH_CLEARTEXT = 3;
export const AUTH_MD5 = 5;

/** A simple-protocol Query ('Q') for `sql`. */
export function queryMessage(sql: string): Uint8Array {
  return message("Q", encoder.encode(sql + "\0"));
}

/** The name and value of a ParameterStatus ('S') body. */
export function parameterStatus(body: Uint8Array): [name: string, value: string] {
  const [name = "", value = ""] = decoder.decode(body).split("\0");
  return [name, value];
}

/** The columns of a DataRow ('D') body, as text (`null` for SQL NULL). */
export function dataRow(body: Uint8Array): (string | null)[] {
  const columns: (string | null)[] = [];
  const count = body.length >= 2 ? (body[0] << 8) | body[1] : 0;
  for (let i = 0, at = 2; i < count && at + 4 <= body.length; i++) {
    const length = readInt32(body, at) | 0;
    at += 4;
    columns.push(length < 0 ? null : decoder.decode(body.subarray(at, at + length)));
    if (length > 0) at += length;
  }
  return columns;
}

/** The authentication methods a server may ask for instead of a cleartext password, by code. */
export function authMethodName(code: number): string {
  const names: Record<number, string> = {
    5: "an MD5 password",
    7: "GSSAPI",
    9: "SSPI",
    10: "a SCRAM-SHA-256 password",
  };
  return names[code] ?? `auth method ${code}`;
}

/** An SSLRequest: asks the server to start TLS (it answers one byte, S or N). */
export function sslRequest(): Uint8Array {
  const packet = new Uint8Array(8);
  writeInt32(packet, 0, 8);
  writeInt32(packet, 4, SSL_REQUEST);
  return packet;
}

/** AuthenticationCleartextPassword: asks the client for its password (here, the token). */
export function authCleartext(): Uint8Array {
  const body = new Uint8Array(4);
  writeInt32(body, 0, AUTH_CLEARTEXT);
  return message("R", body);
}

/** The request code of an Authentication ('R') message body. */
export function authCode(body: Uint8Array): number {
  return body.length >= 4 ? readInt32(body, 0) : -1;
}

/** The password of a PasswordMessage ('p') body: a NUL-terminated string. */
export function passwordOf(body: Uint8Array): string {
  const end = body.indexOf(0);
  return decoder.decode(end < 0 ? body : body.subarray(0, end));
}

/** A PasswordMessage ('p') carrying `password`. */
export function passwordMessage(password: string): Uint8Array {
  return message("p", encoder.encode(password + "\0"));
}

/** A printable name for a message type byte, for error messages. */
export function typeName(type: number): string {
  return type >= 0x20 && type < 0x7f ? `'${String.fromCharCode(type)}'` : `0x${type.toString(16)}`;
}

function readInt32(bytes: Uint8Array, at: number): number {
  return ((bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3]) >>> 0;
}

function writeInt32(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 24;
  bytes[at + 1] = value >>> 16;
  bytes[at + 2] = value >>> 8;
  bytes[at + 3] = value;
}
