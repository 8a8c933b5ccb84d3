// What the long-running commands (gateway, proxy, exec) share: the --listen address, log lines
// safe for a terminal, JSON lines, and the signals that stop them.

import process from "node:process";
import { UsageError } from "./_args.ts";

/** `[HOST:]PORT` (a bracketed IPv6 host allowed) as host and port; throws a UsageError. */
export function listenAddress(
  text: string,
  defaultHost: string,
  flag: string,
  command: string,
): { host: string; port: number } {
  const m = /^(?:(.+):)?(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) {
    throw new UsageError(`${flag} must be [HOST:]PORT, got ${JSON.stringify(text)}`, command);
  }
  return { host: (m[1] ?? defaultHost).replace(/^\[(.*)\]$/, "$1"), port };
}

// How much of a client-chosen name, and of a rejection's detail, a log line shows.
export const NAME_MAX = 200;
export const DETAIL_MAX = 400;

// Characters that must not reach a terminal or a log raw: C0 and C1 controls and DEL (a newline
// forges a line, ESC and CSI drive the terminal), the Unicode line and paragraph separators, the
// bidirectional overrides (which reorder what is shown), and lone surrogates.
const UNSAFE =
  // deno-lint-ignore no-control-regex
  /[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]|[\ud800-\udfff]/;
const SHORT: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * `text` for a text log line: every unsafe character escaped (`\n`, `\x1b`, `\u2028`), and at
 * most `max` characters of it shown, then `…`. A client-chosen name (`max` given) has its
 * backslashes doubled too, so that it cannot spell an escape.
 */
export function printable(text: string, max = Infinity): string {
  let out = "";
  let count = 0;
  for (const char of text) {
    if (count++ === max) return out + "…";
    if (SHORT[char] !== undefined) out += SHORT[char];
    else if (char === "\\" && max !== Infinity) out += "\\\\";
    else if (char.length === 1 && UNSAFE.test(char)) {
      const code = char.charCodeAt(0);
      out += code <= 0xff
        ? `\\x${code.toString(16).padStart(2, "0")}`
        : `\\u${code.toString(16).padStart(4, "0")}`;
    } else out += char;
  }
  return out;
}

/**
 * One JSON line. JSON.stringify escapes C0 controls and lone surrogates; DEL, C1 controls, the
 * line and paragraph separators and the bidirectional overrides are escaped here too, so that no
 * reader splits the line or shows a terminal a control sequence.
 */
export function jsonLine(value: unknown): string {
  return JSON.stringify(value).replace(
    /[\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  ) + "\n";
}

/** The signals the commands handle. */
export type Signal = "SIGINT" | "SIGTERM" | "SIGHUP";

/**
 * Calls `handler` with each of `signals` received until the returned function is called. The
 * listeners stay for the whole run: a runtime whose last listener for a signal is gone may let
 * the next one kill the process (a second Ctrl-C must reach the handler too).
 */
export function onSignals(
  signals: readonly Signal[],
  handler: (signal: Signal) => void,
): () => void {
  const listeners = signals.map((signal) => [signal, () => handler(signal)] as const);
  for (const [signal, listener] of listeners) process.on(signal, listener);
  return () => {
    for (const [signal, listener] of listeners) process.off(signal, listener);
  };
}
