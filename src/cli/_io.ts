// The process as the CLI's entry and `pg-iam token` use it: arguments, stdout, stderr, exit, and
// whether this module is the program. On Deno through Deno's own API: touching `process` or any
// node: module there starts Deno's Node compatibility layer, ~17–26 ms of a command that otherwise
// takes ~25 ms. Node and Bun have `process` as a global. (Other subcommands import node: modules
// freely: a connect or a gateway outlasts that cost.)

interface DenoLike {
  args: string[];
  stdout: { writeSync(bytes: Uint8Array): number };
  stderr: { writeSync(bytes: Uint8Array): number };
  exit(code: number): never;
}

interface ProcessLike {
  argv: string[];
  stdout: { write(text: string, callback?: () => void): boolean };
  stderr: { write(text: string): boolean };
  exit(code: number): never;
  getBuiltinModule?(id: string): unknown;
}

const deno = (globalThis as { Deno?: DenoLike }).Deno;
const proc = () => (globalThis as unknown as { process: ProcessLike }).process;
const encoder = new TextEncoder();

function writeAll(stream: { writeSync(bytes: Uint8Array): number }, text: string): void {
  let bytes = encoder.encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(stream.writeSync(bytes));
}

/** The command line after the program name. */
export function commandArgs(): string[] {
  return deno ? deno.args : proc().argv.slice(2);
}

/** Writes to stdout. */
export function writeOut(text: string): void {
  if (deno) writeAll(deno.stdout, text);
  else proc().stdout.write(text);
}

/** Writes to stderr. */
export function writeErr(text: string): void {
  if (deno) writeAll(deno.stderr, text);
  else proc().stderr.write(text);
}

/** Exits with `code` once stdout is flushed. */
export function exitWhenFlushed(code: number): void {
  if (deno) deno.exit(code);
  const p = proc();
  p.stdout.write("", () => p.exit(code));
}

/**
 * Whether the module at `url` is the program: `main` is import.meta.main (Deno, Bun, and the npm
 * bin, which defines it); on Node, the script path compared with `url`, links resolved.
 */
export function isProgram(main: boolean | undefined, url: string): boolean {
  if (typeof main === "boolean") return main;
  try {
    const p = proc();
    const fs = p.getBuiltinModule?.("node:fs") as
      | { realpathSync(path: string | URL): string }
      | undefined;
    const script = p.argv[1];
    if (!script) return false;
    if (fs) return fs.realpathSync(script) === fs.realpathSync(new URL(url));
    return new URL(url).pathname === script;
  } catch {
    return false;
  }
}
