// Running the pg-iam command and other programs as child processes, for the CLI's end-to-end tests:
// to completion, with an environment of test keys and no AWS_* or PG* variable of our own.
import { spawn } from "node:child_process";
import { join } from "node:path";
import process from "node:process";

/** What a finished child process left. */
export interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The environment of a child: ours without AWS_* and PG* variables (nor NODE_OPTIONS), with `keys`
 * as the credentials, no AWS config or credentials file, the cache under `dir`, plus `env`.
 */
export function childEnv(
  keys: { accessKeyId: string; secretAccessKey: string },
  dir: string,
  env: Record<string, string> = {},
): Record<string, string> {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k, v]) =>
      v !== undefined && !/^(AWS_|PG)/.test(k) && k !== "NODE_OPTIONS"
    ),
  ) as Record<string, string>;
  return {
    ...base,
    AWS_ACCESS_KEY_ID: keys.accessKeyId,
    AWS_SECRET_ACCESS_KEY: keys.secretAccessKey,
    AWS_CONFIG_FILE: join(dir, "no-config"),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, "no-credentials"),
    XDG_CACHE_HOME: join(dir, "cache"),
    NO_COLOR: "1",
    ...env,
  };
}

/** Runs a program to completion. */
export function run(
  cmd: string,
  args: string[],
  env: Record<string, string>,
  cwd?: string,
  onSpawn?: (pid: number) => void,
): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, cwd });
    onSpawn?.(child.pid!);
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}
