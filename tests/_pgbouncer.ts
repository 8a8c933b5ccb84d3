// Debian's PgBouncer as a test relay (the reference relay the proxy is compared with), from Node,
// Deno and Bun: a temporary configuration, 127.0.0.1 on a free port, no Unix socket, not
// daemonized, its log in the temporary directory. As root (CI) it runs as `postgres`, since
// PgBouncer refuses to run as root.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";

/** Where Debian installs it (not on a non-root PATH). */
const CANDIDATES = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"];

/** The PgBouncer binary, or undefined if it is not installed. */
export const PGBOUNCER: string | undefined = CANDIDATES.find((path) => existsSync(path));

/**
 * Why PgBouncer cannot run here (for a test's `skip`), or false when it can.
 *
 * @example
 * test("pgbouncer …", { skip: pgbouncerMissing() }, async () => {});
 */
export function pgbouncerMissing(): string | false {
  return PGBOUNCER
    ? false
    : "pgbouncer is not installed: apt-get install pgbouncer (bash .ci/run does)";
}

/** The server PgBouncer relays to, and who it logs in as there. */
export interface PgbouncerUpstream {
  host: string;
  port: number;
  user: string;
  /** For `password` or `md5`/SCRAM upstream auth; trust needs none. */
  password?: string;
  /** The upstream database, which is also the name clients connect to. */
  database: string;
}

/** Options of {@linkcode startPgbouncer}. */
export interface PgbouncerOptions {
  /** `pool_mode`. Default: `"session"`. */
  poolMode?: "session" | "transaction";
  /** `default_pool_size`: server connections per user and database. Default: `20`. */
  poolSize?: number;
  /** `max_client_conn`. Default: `200`. */
  maxClientConn?: number;
}

/** A running PgBouncer. */
export interface Pgbouncer {
  host: string;
  port: number;
  /** Its process id (gone once close() resolves). */
  pid: number;
  /** Its log file (deleted by close()). */
  logFile: string;
  /** Stops it (SIGTERM: immediate shutdown), waits for it to exit, deletes its directory. */
  close(): Promise<void>;
}

// Each running PgBouncer and its directory.
const running = new Map<ChildProcess, string>();
// Killed, its directory removed, if the test process ends first: Node and Bun emit "exit"; `deno
// test` dispatches "unload".
const killAll = () =>
  running.forEach((dir, child) => {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
process.on("exit", killAll);
globalThis.addEventListener?.("unload", killAll);

const isRoot = () => process.getuid?.() === 0;

// A connection-string value in PgBouncer's [databases] syntax: single-quoted, ' doubled.
const value = (s: string) => `'${s.replaceAll("'", "''")}'`;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    socket.on("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

/**
 * Starts PgBouncer in front of `upstream`: clients connect to 127.0.0.1 on the returned port, to
 * database `upstream.database`, as any user with any password or none (`auth_type = any`: the
 * database entry fixes the upstream user, as `trust` would with every user listed). Resolves once
 * it accepts connections.
 *
 * @example
 * const bouncer = await startPgbouncer({ host: "127.0.0.1", port: 5432, user: "postgres", database: "postgres" });
 * // connect to bouncer.host:bouncer.port, database "postgres"
 * await bouncer.close();
 */
export async function startPgbouncer(
  upstream: PgbouncerUpstream,
  options: PgbouncerOptions = {},
): Promise<Pgbouncer> {
  const bin = PGBOUNCER;
  if (!bin) throw new Error(pgbouncerMissing() || "pgbouncer is not installed");
  const poolMode = options.poolMode ?? "session";
  if (poolMode !== "session" && poolMode !== "transaction") {
    throw new RangeError(
      `startPgbouncer(): poolMode must be "session" or "transaction", not ${poolMode}`,
    );
  }
  // The [databases] key of PgBouncer's ini syntax takes no quoting.
  if (!/^[A-Za-z0-9_.-]+$/.test(upstream.database)) {
    throw new RangeError(
      `startPgbouncer(): upstream.database must be letters, digits, "_", "." or "-", not ${upstream.database}`,
    );
  }
  // As root it runs as `postgres`, which must reach the directory: /tmp, not a TMPDIR under /root.
  const dir = mkdtempSync(join(isRoot() ? "/tmp" : tmpdir(), "pg-iam-pgbouncer-"));
  const args: string[] = [];
  if (isRoot()) {
    const [uid, gid] = ["-u", "-g"].map((flag) =>
      Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8", stdio: "pipe" }))
    );
    chownSync(dir, uid, gid);
    args.push("-u", "postgres");
  }
  const logFile = join(dir, "pgbouncer.log");
  const server = [
    `host=${value(upstream.host)}`,
    `port=${upstream.port}`,
    `user=${value(upstream.user)}`,
    ...(upstream.password !== undefined ? [`password=${value(upstream.password)}`] : []),
    `dbname=${value(upstream.database)}`,
  ].join(" ");
  // The port is found free, then bound by PgBouncer: another process may take it in between, so a
  // failure to bind is tried again on another port (a resource race, not a test retried).
  for (let attempt = 1;; attempt++) {
    const port = await freePort();
    const ini = join(dir, "pgbouncer.ini");
    writeFileSync(
      ini,
      [
        "[databases]",
        `${upstream.database} = ${server}`,
        "",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        `listen_port = ${port}`,
        "unix_socket_dir =",
        "auth_type = any",
        `pool_mode = ${poolMode}`,
        `default_pool_size = ${options.poolSize ?? 20}`,
        `max_client_conn = ${options.maxClientConn ?? 200}`,
        `logfile = ${logFile}`,
        "",
      ].join("\n"),
    );
    const child = spawn(bin, [...args, ini], { stdio: ["ignore", "ignore", "pipe"] });
    running.set(child, dir);
    let stderr = "";
    const exited = new Promise<void>((resolve) => {
      const gone = () => {
        running.delete(child);
        resolve();
      };
      child.on("exit", gone);
      child.on("error", gone); // not started: no "exit" follows
    });
    const up = await new Promise<boolean>((resolve) => {
      child.stderr!.setEncoding("utf8").on("data", (s: string) => {
        if (stderr.length < 65_536) stderr += s;
        if (/ process up: /.test(stderr)) resolve(true);
      });
      child.on("error", (err) => {
        stderr += `cannot start ${bin}: ${err.message}`;
        resolve(false);
      });
      exited.then(() => resolve(false));
    });
    if (up && await canConnect("127.0.0.1", port)) {
      const pid = child.pid!;
      // Nothing reads its stderr from now on: the log file has it all.
      child.stderr!.removeAllListeners("data").resume();
      let closing: Promise<void> | undefined;
      return {
        host: "127.0.0.1",
        port,
        pid,
        logFile,
        close: () =>
          closing ??= (async () => {
            if (running.has(child)) {
              child.kill("SIGTERM");
              const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
              await exited;
              clearTimeout(timer);
            }
            rmSync(dir, { recursive: true, force: true });
          })(),
      };
    }
    child.kill("SIGKILL");
    await exited;
    if (attempt < 5 && /address already in use/i.test(stderr)) continue;
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`pgbouncer did not start: ${stderr.trim()}`);
  }
}
