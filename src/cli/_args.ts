// Command-line parsing for the CLI, with each subcommand described once so its parser and its
// --help text cannot disagree.
//
// By hand rather than node:util's parseArgs: on Deno, importing any node: module starts its Node
// compatibility layer, ~26 ms of a `pg-iam token` that otherwise takes ~25 ms (measured). What the
// CLI needs is small: long flags (--name value, --name=value), -h, positionals, and "--".

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
  const values: Record<string, string | boolean | undefined> = {};
  const positionals: string[] = [];
  for (let i = 0; i < own.length; i++) {
    const arg = own[i];
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    const long = arg.startsWith("--");
    const eq = long ? arg.indexOf("=") : -1;
    const rawName = eq < 0 ? (long ? arg : arg.slice(0, 2)) : arg.slice(0, eq);
    const given = rawName.slice(long ? 2 : 1);
    const name = long
      ? given
      : Object.keys(flags).find((flag) => flags[flag].short === given) ?? given;
    // psql's -h HOST: here -h is --help; say what to use instead.
    if (
      !long && name === "help" && arg === "-h" && own[i + 1] !== undefined &&
      !own[i + 1].startsWith("-")
    ) {
      const meant = suggestion(command, "h");
      if (meant) {
        throw new UsageError(`-h is --help here (alone); for a host, ${meant}`, command.name);
      }
    }
    if (
      !Object.hasOwn(flags, name) || (!long && arg.length > 2 && flags[name].type === "boolean")
    ) {
      // An unknown flag is named with the one meant (psql's -U, libpq's host).
      const meant = suggestion(command, given);
      throw new UsageError(`unknown option ${rawName}${meant ? `: ${meant}` : ""}`, command.name);
    }
    const flag = flags[name];
    const shown = `--${name}${flag.arg ? ` ${flag.arg}` : ""}`;
    if (flag.type === "boolean") {
      if (eq >= 0) throw new UsageError(`option --${name} takes no value`, command.name);
      values[name] = true;
    } else if (eq >= 0) {
      values[name] = arg.slice(eq + 1);
    } else if (!long && arg.length > 2) {
      values[name] = arg.slice(2);
    } else {
      const value = own[i + 1];
      if (value === undefined) throw new UsageError(`option ${shown} needs a value`, command.name);
      const isFlag = value === "-h" ||
        (value.startsWith("--") && Object.hasOwn(flags, value.slice(2).split("=")[0]));
      if (isFlag) {
        throw new UsageError(
          `option ${shown} needs a value, got the option ${value} (for a value that starts ` +
            `with "-", write --${name}=${value})`,
          command.name,
        );
      }
      values[name] = value;
      i++;
    }
  }
  const parsed = { values, positionals };
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

// The flags of psql and libpq's parameter names, by what pg-iam calls them (the first of the
// command's flags that exists).
const ALIASES: Record<string, string[]> = {
  h: ["hostname", "listen"],
  host: ["hostname", "listen"],
  H: ["hostname", "listen"],
  p: ["port", "listen"],
  port: ["listen"],
  U: ["username"],
  u: ["username"],
  user: ["username"],
  d: ["database"],
  dbname: ["database"],
  db: ["database"],
  "signing-host": ["signing-hostname"],
  "iam-host": ["signing-hostname"],
  "iam-port": ["signing-port"],
  "iam-region": ["region"],
  expires: ["expires-in"],
  expiration: ["expires-in"],
  ca: ["sslrootcert", "ca-out"],
  "no-ssl": ["dangerously-disable-tls", "no-tls"],
};

/** What to use instead of the flag `name`, in words; undefined when nothing comes close. */
function suggestion(command: Command, name: string): string | undefined {
  const flags = { ...command.flags, ...COMMON };
  const use = (flag: string) => `use --${flag}${flags[flag].arg ? ` ${flags[flag].arg}` : ""}`;
  const alias = ALIASES[name]?.find((flag) => Object.hasOwn(flags, flag));
  if (alias) return use(alias);
  if (/^(W|password)$/.test(name)) {
    return "pg-iam signs an IAM token in place of a password, so there is no password flag";
  }
  if (name.length < 3) return undefined;
  const best = nearest(name, Object.keys(flags));
  return best === undefined ? undefined : `did you mean --${best}?`;
}

/** The one of `candidates` nearest to a mistyped `name` (edit distance at most 2, and under its length), if any. */
export function nearest(name: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.min(3, name.length);
  for (const candidate of candidates) {
    const d = distance(name.toLowerCase(), candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best;
}

/** Levenshtein distance, a swap of two neighbours counting one (as git's suggestions do). */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
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

/**
 * A string flag that must be one of `choices` (`fallback` when not given); throws a UsageError
 * naming the flag, the value, and the nearest choice.
 */
export function choice<T extends string>(
  values: Parsed["values"],
  name: string,
  choices: readonly T[],
  fallback: T,
  command: string,
): T {
  const v = str(values, name) ?? fallback;
  if ((choices as readonly string[]).includes(v)) return v as T;
  const near = nearest(v, choices);
  throw new UsageError(
    `--${name} must be ${choices.join(", ")}, got ${JSON.stringify(v)}` +
      (near ? `; did you mean ${near}?` : ""),
    command,
  );
}
