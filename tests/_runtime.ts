// How a test starts a TypeScript file in a child process of the runtime running the test: Deno
// with every permission, Bun as is, Node through tsx.
import process from "node:process";

/** The command and arguments that run `file` (a path) with this runtime. */
export function runtimeCommand(file: string): [string, string[]] {
  const g = globalThis as { Deno?: { execPath(): string }; Bun?: unknown };
  if (g.Deno) return [g.Deno.execPath(), ["run", "-A", "--quiet", file]];
  if (g.Bun) return [process.execPath, [file]];
  return [process.execPath, ["--import", "tsx", file]];
}
