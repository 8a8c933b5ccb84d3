// A throwaway Debian PostgreSQL server for end-to-end tests, in plain JavaScript so that both
// tests/_run.mjs (plain Node, no tsx) and tests/_postgres.ts (Node, Deno, Bun) can use it. Only
// node:child_process, node:fs, node:net, node:os and node:path, which all three runtimes provide.
//
// The server: superuser `postgres`, trust authentication, listening on 127.0.0.1 only, on a free
// port, with its data and Unix socket in a fresh temporary directory; roles `app`, `admin` and
// `iam_user` exist with LOGIN. As root (CI), the binaries run as the `postgres` user through
// `runuser`, since initdb and postgres refuse to run as root.
import { execFileSync } from "node:child_process";
import {
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The roles every test server has, with LOGIN. */
export const TEST_ROLES = ["app", "admin", "iam_user"];

const PREFIX = "pg-iam-pg-";
const HOW_TO_INSTALL = "install it with `sudo apt-get install postgresql` (Debian/Ubuntu; the " +
  "server binaries land in /usr/lib/postgresql/<version>/bin), or run `bash .ci/run`, which " +
  "installs it; or point the tests at a running server (superuser `postgres`, trust auth on " +
  "127.0.0.1) with PGIAM_TEST_PG=host:port";

/**
 * The directory holding initdb, pg_ctl, postgres and psql: $PG_BINDIR if set, else the highest
 * version under /usr/lib/postgresql, else `pg_config --bindir`. Throws an Error saying how to
 * install PostgreSQL.
 * @returns {string}
 */
export function findPgBinDir() {
  const given = process.env.PG_BINDIR;
  if (given) {
    if (existsSync(join(given, "initdb"))) return given;
    throw new Error(`PG_BINDIR=${given} has no initdb: ${HOW_TO_INSTALL}`);
  }
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root)
    ? readdirSync(root)
      .filter((v) => /^\d+(\.\d+)?$/.test(v) && existsSync(join(root, v, "bin", "initdb")))
      .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length) return join(root, versions[0], "bin");
  try {
    const dir = execFileSync("pg_config", ["--bindir"], { encoding: "utf8", stdio: "pipe" }).trim();
    if (existsSync(join(dir, "initdb")) && existsSync(join(dir, "pg_ctl"))) return dir;
  } catch { /* no pg_config */ }
  throw new Error(`PostgreSQL server binaries not found (no initdb): ${HOW_TO_INSTALL}`);
}

/**
 * A TCP port on 127.0.0.1 that was free a moment ago.
 * @returns {Promise<number>}
 */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => port ? resolve(port) : reject(new Error("no port from listen(0)")));
    });
  });
}

const isRoot = () => process.getuid?.() === 0;
// As root the server runs as `postgres`, which must reach the directory: /tmp, not a TMPDIR that
// may sit under /root.
const baseDir = () => isRoot() ? "/tmp" : tmpdir();

/**
 * Runs a PostgreSQL binary (as the `postgres` user when we are root); returns its output.
 * @param {string} bin @param {string[]} args @param {string} cwd @returns {string}
 */
function pg(bin, args, cwd) {
  const [cmd, argv] = isRoot() ? ["runuser", ["-u", "postgres", "--", bin, ...args]] : [bin, args];
  // PGHOST, PGSSLMODE, PGOPTIONS & co. from the caller's environment must not steer them.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^PG/.test(k)));
  try {
    return execFileSync(cmd, argv, {
      cwd,
      env,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (err) {
    const e = /** @type {{ stderr?: string, stdout?: string, message: string }} */ (err);
    const detail = `${e.stderr ?? ""}${e.stdout ?? ""}`.trim() || e.message;
    throw new Error(`${[cmd, ...argv].join(" ")} failed: ${detail}`, { cause: err });
  }
}

/**
 * Stops the server in `dir` (immediate shutdown) and deletes `dir`. Synchronous, so it can run in
 * a process "exit" handler; never throws.
 * @param {string} binDir @param {string} dir
 */
function stopIn(binDir, dir) {
  try {
    if (existsSync(join(dir, "data", "postmaster.pid"))) {
      pg(join(binDir, "pg_ctl"), ["-D", join(dir, "data"), "-m", "immediate", "-w", "stop"], dir);
    }
  } catch { /* already stopped */ }
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch { /* best effort */ }
}

/** @param {number} pid */
function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return /** @type {{ code?: string }} */ (err).code === "EPERM";
  }
}

/**
 * Stops servers left behind by test processes that died without cleaning up (SIGKILL, crash):
 * each temporary directory records the pid of the process that owns it.
 * @param {string} binDir
 */
function sweepStale(binDir) {
  let entries = [];
  try {
    entries = readdirSync(baseDir()).filter((name) => name.startsWith(PREFIX));
  } catch { /* no tmpdir listing */ }
  for (const name of entries) {
    const dir = join(baseDir(), name);
    let owner = 0;
    try {
      owner = Number(readFileSync(join(dir, "owner.pid"), "utf8"));
    } catch { /* not (yet) ours */ }
    if (owner && !alive(owner)) stopIn(binDir, dir);
  }
}

/**
 * Starts a fresh server. The caller stops it with `stop()` (synchronous, idempotent).
 *
 * With `ssl` (PEM strings), the server also accepts TLS with that certificate and key (written to
 * server.crt and server.key in its directory); plaintext connections still work.
 * @param {{ ssl?: { cert: string, key: string } }} [options]
 * @returns {Promise<{ host: string, port: number, user: string, dir: string, seconds: number,
 *   stop(): void }>}
 */
export async function startPostgres({ ssl } = {}) {
  const started = Date.now();
  const binDir = findPgBinDir();
  sweepStale(binDir);
  let uid = -1, gid = -1;
  if (isRoot()) {
    try {
      [uid, gid] = ["-u", "-g"].map((flag) =>
        Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8", stdio: "pipe" }))
      );
    } catch {
      throw new Error(
        "Running as root, the PostgreSQL server must run as the `postgres` user, which does not " +
          `exist: ${HOW_TO_INSTALL}`,
      );
    }
  }
  const dir = mkdtempSync(join(baseDir(), PREFIX));
  writeFileSync(join(dir, "owner.pid"), String(process.pid));
  if (uid >= 0) chownSync(dir, uid, gid);
  const data = join(dir, "data");
  try {
    let sslOptions = "";
    if (ssl) {
      // PostgreSQL refuses a key file that its own user does not own or that others can read.
      const certFile = join(dir, "server.crt");
      const keyFile = join(dir, "server.key");
      writeFileSync(certFile, ssl.cert, { mode: 0o644 });
      writeFileSync(keyFile, ssl.key, { mode: 0o600 });
      if (uid >= 0) [certFile, keyFile].forEach((file) => chownSync(file, uid, gid));
      sslOptions = ` -c ssl=on -c ssl_cert_file=${certFile} -c ssl_key_file=${keyFile}`;
    }
    pg(join(binDir, "initdb"), [
      "-D",
      data,
      "--auth=trust",
      "-U",
      "postgres",
      "--no-sync",
      "-E",
      "UTF8",
      "--locale=C",
    ], dir);
    // The port is free when picked but could be taken before postgres binds it: retry.
    let port = 0;
    for (let attempt = 1;; attempt++) {
      port = await freePort();
      const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off ` +
        "-c max_connections=400 -c wal_level=logical" + // logical: postgres.js subscribe()
        sslOptions;
      try {
        pg(join(binDir, "pg_ctl"), [
          "-D",
          data,
          "-l",
          join(dir, "server.log"),
          "-w",
          "-t",
          "60",
          "-o",
          options,
          "start",
        ], dir);
        break;
      } catch (err) {
        if (attempt === 3) {
          let log = "";
          try {
            log = readFileSync(join(dir, "server.log"), "utf8").trim().split("\n").slice(-10)
              .join("\n");
          } catch { /* no log */ }
          throw new Error(`${/** @type {Error} */ (err).message}\nserver log:\n${log}`, {
            cause: err,
          });
        }
      }
    }
    const sql = TEST_ROLES.map((role) => `create role ${role} login;`).join(" ");
    pg(join(binDir, "psql"), [
      "-X",
      "-q",
      "-v",
      "ON_ERROR_STOP=1",
      "-h",
      "127.0.0.1",
      "-p",
      String(port),
      "-U",
      "postgres",
      "-d",
      "postgres",
      "-c",
      sql,
    ], dir);
    let stopped = false;
    return {
      host: "127.0.0.1",
      port,
      user: "postgres",
      dir,
      seconds: (Date.now() - started) / 1000,
      stop() {
        if (stopped) return;
        stopped = true;
        stopIn(binDir, dir);
      },
    };
  } catch (err) {
    stopIn(binDir, dir);
    throw err;
  }
}
