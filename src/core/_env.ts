// Environment variables on every runtime. This is the one runtime-specific module of the core:
// Deno exposes `Deno.env` (which needs --allow-env), Node and Bun `process.env`, and edge runtimes
// may have neither, in which case variables simply read as unset.

interface DenoEnv {
  env: { get(name: string): string | undefined };
}

/** Thrown when the runtime refuses to let us read the environment. */
export class EnvAccessError extends Error {
  constructor(name: string, options: { cause: unknown }) {
    super(
      `Cannot read the environment variable ${name}: permission denied (on Deno, run with ` +
        `--allow-env=${name}, or pass the option explicitly)`,
      options,
    );
    this.name = "EnvAccessError";
  }
}

/** The value of an environment variable; empty strings read as unset. */
export function readEnv(name: string): string | undefined {
  const g = globalThis as {
    Deno?: DenoEnv;
    process?: { env?: Record<string, string | undefined> };
  };
  let value: string | undefined;
  try {
    value = g.Deno?.env ? g.Deno.env.get(name) : g.process?.env?.[name];
  } catch (cause) {
    throw new EnvAccessError(name, { cause });
  }
  return value === "" ? undefined : value;
}

/** Whether this is Deno (which loads npm packages through `npm:` specifiers). */
export function onDeno(): boolean {
  return (globalThis as { Deno?: unknown }).Deno !== undefined;
}

/**
 * Imports an optional npm package on first use. The specifier is computed, so bundlers for edge
 * runtimes leave the package out; on Deno it is an `npm:` specifier with `version`, which Deno
 * resolves from node_modules or fetches on first use.
 */
export function importOptional(name: string, version: string): Promise<Record<string, unknown>> {
  const specifier = onDeno()
    ? `npm:${name.replace(/^(@[^/]+\/[^/]+|[^/]+)/, `$1@${version}`)}`
    : name;
  return import(specifier);
}
