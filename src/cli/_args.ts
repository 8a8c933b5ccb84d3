// Command-line parsing for the CLI: node:util's parseArgs (on Node, Deno and Bun alike), with
// each subcommand described once so its parser and its --help text cannot disagree.

import { parseArgs } from "node:util";

/** Bad usage: an unknown flag, a missing or malformed value. The CLI exits with 2. */
export class UsageError extends Error {
  /** Creates a usage error; `command` names the subcommand whose --help to point to. */
  constructor(message: string, readonly command?: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** One flag of a subcommand. */
export interface Flag {
  type: "string" | "boolean";
  short?: string;
  /** The value's placeholder in --help (string flags). */
  arg?: string;
  help: string;
}

/** A subcommand: its flags and --help text. */
export interface Command {
  name: string;
  /** One line, for `pg-iam --help`. */
  summary: string;
  /** What follows `pg-iam <name>` in the usage line. */
  usage: string;
  /** Paragraphs after the usage line. */
  description: string;
  flags: Record<string, Flag>;
  /** How many positional arguments it takes. */
  positionals: number;
  examples: string[];
}

/** What parse() returns: flag values, positionals, and the arguments after `--`. */
export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
  rest: string[];
}

const COMMON: Record<string, Flag> = {
  verbose: { type: "boolean", help: "On failure, also print the error's details and causes." },
  help: { type: "boolean", short: "h", help: "Show this help." },
};

/** Parses `argv` (what follows the subcommand) for `command`; throws a UsageError. */
export function parse(command: Command, argv: readonly string[]): Parsed {
  const dash = argv.indexOf("--");
  const own = dash < 0 ? argv : argv.slice(0, dash);
  const rest = dash < 0 ? [] : argv.slice(dash + 1);
  const flags = { ...command.flags, ...COMMON };
  let parsed;
  try {
    parsed = parseArgs({
      args: [...own],
      options: Object.fromEntries(
        Object.entries(flags).map(([name, f]) => [
          name,
          f.short ? { type: f.type, short: f.short } : { type: f.type },
        ]),
      ),
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    // parseArgs's messages name the flag; drop its advice about "--", which is ours to give.
    const text = (error as Error).message
      .replace(/;? ?To specify a positional argument.*$/s, "").replace(/\.$/, "");
    throw new UsageError(text, command.name);
  }
  if (!parsed.values.help && parsed.positionals.length > command.positionals) {
    const extra = parsed.positionals.slice(command.positionals).map((p) => JSON.stringify(p));
    throw new UsageError(`unexpected argument ${extra.join(" ")}`, command.name);
  }
  return {
    values: parsed.values as Record<string, string | boolean | undefined>,
    positionals: parsed.positionals,
    rest,
  };
}

/** The --help text of `command`. */
export function helpText(command: Command): string {
  const flags = { ...command.flags, ...COMMON };
  const rows = Object.entries(flags).map(([name, f]) => {
    const left = `${f.short ? `-${f.short}, ` : "    "}--${name}${f.arg ? ` ${f.arg}` : ""}`;
    return [left, f.help] as const;
  });
  const width = Math.max(...rows.map(([left]) => left.length)) + 2;
  const lines = [
    `Usage: pg-iam ${command.name} ${command.usage}`,
    "",
    command.description.trim(),
    "",
    "Options:",
    ...rows.map(([left, help]) => `  ${left.padEnd(width)}${wrap(help, width + 2)}`),
    "",
    "Examples:",
    ...command.examples.map((e) => `  ${e}`),
  ];
  return lines.join("\n") + "\n";
}

function wrap(text: string, indent: number, width = 100): string {
  const words = text.split(" ");
  const lines: string[] = [];
  let line = "";
  for (const word of words) {
    if (line && indent + line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  lines.push(line);
  return lines.join("\n" + " ".repeat(indent));
}

/** A string flag's value, or undefined. */
export function str(values: Parsed["values"], name: string): string | undefined {
  const v = values[name];
  return typeof v === "string" ? v : undefined;
}

/** An integer flag in [min, max]; throws a UsageError naming the flag and the value. */
export function int(
  values: Parsed["values"],
  name: string,
  min: number,
  max: number,
  command: string,
): number | undefined {
  const v = str(values, name);
  if (v === undefined) return undefined;
  const n = /^\d+$/.test(v) ? Number(v) : NaN;
  if (!(n >= min && n <= max)) {
    throw new UsageError(
      `--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`,
      command,
    );
  }
  return n;
}
