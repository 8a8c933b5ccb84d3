// How a test starts a TypeScript file in a child process of the runtime running the test: Deno
// with every permission, Bun as is, Node through tsx; each resolving "postgres" to the same
// postgres.js major as the test itself (tests/_postgres_major.mjs).
import process from "node:process";
import { childRuntimeArgs } from "./_postgres_major.mjs";

/** The command and arguments that run `file` (a path) with this runtime. */
export function runtimeCommand(file: string): [string, string[]] {
  const g = globalThis as { Deno?: { execPath(): string }; Bun?: unknown };
  if (g.Deno) {
    return [g.Deno.execPath(), ["run", "-A", "--quiet", ...childRuntimeArgs("deno"), file]];
  }
  if (g.Bun) return [process.execPath, [...childRuntimeArgs("bun"), file]];
  return [process.execPath, ["--import", "tsx", file]];
}
