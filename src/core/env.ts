// Environment variables on every runtime. This is the one runtime-specific module of the core:
// Deno exposes `Deno.env` (which needs --allow-env), Node and Bun `process.env`, and edge runtimes
// may have neither, in which case variables simply read as unset.

interface PermissionStatus {
  state: "granted" | "denied" | "prompt";
}

interface DenoLike {
  env: { get(name: string): string | undefined };
  permissions?: {
    querySync?(descriptor: { name: string; variable?: string }): PermissionStatus;
  };
}

// Every variable pg-iam reads, so that Deno's refusal of one names them all at once (one rerun,
// not one per variable). The core's are here; the other layers declare theirs (declareEnv).
const VARIABLES = new Set<string>([
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
  "AWS_CREDENTIAL_EXPIRATION",
  "AWS_PROFILE",
  "AWS_REGION",
  "AWS_DEFAULT_REGION",
]);

/** Adds `names` to the variables listed when the runtime refuses to let us read one of them. */
export function declareEnv(...names: string[]): void {
  for (const name of names) VARIABLES.add(name);
}

function deno(): DenoLike | undefined {
  return (globalThis as { Deno?: DenoLike }).Deno;
}

/**
 * The declared variables the runtime would refuse to read (Deno without `--allow-env` for them), in
 * the order declared; empty on runtimes without permissions.
 */
export function deniedEnv(): string[] {
  const query = deno()?.permissions?.querySync;
  if (!query) return [];
  return [...VARIABLES].filter((variable) => {
    try {
      return query.call(deno()!.permissions, { name: "env", variable }).state !== "granted";
    } catch {
      return true;
    }
  });
}

/**
 * Of the permissions `names` (Deno's: `"env"`, `"read"`, `"net"`, …), those not granted in full;
 * empty on runtimes without permissions.
 */
export function deniedPermissions(names: readonly string[]): string[] {
  const query = deno()?.permissions?.querySync;
  if (!query) return [];
  return names.filter((name) => {
    try {
      return query.call(deno()!.permissions, { name }).state !== "granted";
    } catch {
      return true;
    }
  });
}

/**
 * Thrown when the runtime refuses to let us read the environment. The message names every variable
 * pg-iam reads that is refused, so that one rerun with them all allowed is enough.
 */
export class EnvAccessError extends Error {
  /** Every variable pg-iam reads that the runtime refuses, the one asked for among them. */
  readonly variables: string[];

  constructor(name: string, options: { cause: unknown }) {
    const denied = deniedEnv();
    const variables = denied.includes(name) ? denied : [name, ...denied];
    super(
      `Cannot read the environment variable ${name}: permission denied (on Deno, allow every ` +
        `variable pg-iam reads at once: --allow-env=${variables.join(",")}; or pass the ` +
        `options explicitly)`,
      options,
    );
    this.name = "EnvAccessError";
    this.variables = variables;
  }
}

/** The value of an environment variable; empty strings read as unset. */
export function readEnv(name: string): string | undefined {
  VARIABLES.add(name);
  const g = globalThis as {
    Deno?: DenoLike;
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
  return deno() !== undefined;
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
