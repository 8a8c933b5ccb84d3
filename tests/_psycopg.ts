// Python's psycopg2 (Debian's python3-psycopg2: libpq under a driver nobody here wrote) as a test
// client, from Node, Deno and Bun alike (node:child_process). Scripts run under /usr/bin/python3,
// whose module path holds Debian's package (a pyenv python3 first on PATH does not), and connect
// with psycopg2.connect(""): libpq takes everything from the environment (PGHOST, PGPORT, PGUSER,
// PGDATABASE, PGPASSWORD, PGSSLMODE, PGSSLROOTCERT…), as a program pointed at `pg-iam exec` does.
//
// Scripts report on stdout as JSON lines; a psycopg2 exception they do not catch ends them with
// status 3 and a line {"error": class, "pgcode": SQLSTATE, "message": …}.
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import process from "node:process";

/** Debian's Python, the one python3-psycopg2 installs for. */
export const PYTHON = "/usr/bin/python3";

/**
 * How to run a command through another: `pg-iam exec <target> --` for the proxy's tests, say.
 * Given the command and its arguments, returns the ones to spawn instead.
 */
export type Wrap = (command: string, args: string[]) => [string, string[]];

/** How a script is run: its arguments, its stdin, and a wrapping command. */
export interface RunOptions {
  /** The script's `ARGS`. */
  args?: string[];
  /** Written to the script's stdin, which is then closed. */
  stdin?: string;
  /** Runs Python through another command, with `env` given to that command. */
  wrap?: Wrap;
}

/** What a finished script left. */
export interface PsycopgResult {
  /** The exit status: 0, 3 after an uncaught psycopg2 exception, or -1 if killed by a signal. */
  code: number;
  stdout: string;
  stderr: string;
}

/** A psycopg2 exception, as a script reports it. */
export interface PsycopgError {
  /** Its class: `OperationalError`, `QueryCanceled`… */
  error: string;
  /** Its SQLSTATE; null for one raised by libpq itself (a refused connection, a login failure). */
  pgcode: string | null;
  message: string;
}

/** A script's result with its report read back. */
export interface PsycopgOutcome<T> extends PsycopgResult {
  /** The script's last JSON line, unless it ended on an exception. */
  value?: T;
  /** The exception it ended on. */
  error?: PsycopgError;
}

// sys.argv: ["-c", script, *args]. The script runs in this module's namespace.
const PRELUDE = String.raw`
import hashlib, io, json, os, sys, threading, uuid
import psycopg2

ARGS = sys.argv[2:]

def emit(**fields):
    sys.stdout.write(json.dumps(fields, default=str) + "\n")
    sys.stdout.flush()

def describe(e):
    return {"error": type(e).__name__, "pgcode": e.pgcode, "message": str(e).strip()}

def connect():
    """A connection from libpq's environment, in autocommit (CREATE DATABASE and the like work)."""
    conn = psycopg2.connect("")
    conn.autocommit = True
    return conn

def rows(cur):
    return {"columns": [c.name for c in cur.description or []],
            "rows": [list(r) for r in cur.fetchall()] if cur.description else []}

try:
    exec(compile(sys.argv[1], "<script>", "exec"))
except psycopg2.Error as e:
    emit(**describe(e))
    sys.exit(3)
`;

let missing: string | false | undefined;

/**
 * Why psycopg2 cannot run here (for a test's `skip`), or false when it can. Memoized.
 *
 * @example
 * test("psycopg2 …", { skip: psycopgMissing() }, async () => {});
 */
export function psycopgMissing(): string | false {
  missing ??= !existsSync(PYTHON)
    ? `no ${PYTHON}: install python3-psycopg2 (bash .ci/run does)`
    : spawnSync(PYTHON, ["-c", "import psycopg2"], { env: cleanEnv({}) }).status === 0
    ? false
    : `${PYTHON} has no psycopg2: install python3-psycopg2 (bash .ci/run does)`;
  return missing;
}

// Ours without PG* (the script's libpq reads only what the test gives) and PYTHON* variables.
function cleanEnv(env: Record<string, string>): Record<string, string> {
  const base = Object.entries(process.env).filter(([k, v]) =>
    v !== undefined && !/^(PG|PYTHON)/.test(k)
  ) as [string, string][];
  return { ...Object.fromEntries(base), ...env };
}

const running = new Set<{ kill(signal: "SIGKILL"): unknown }>();
// Killed if the test process ends first: Node and Bun emit "exit"; `deno test` dispatches "unload".
const killAll = () => running.forEach((child) => child.kill("SIGKILL"));
process.on("exit", killAll);
globalThis.addEventListener?.("unload", killAll);

interface Started {
  /** Lines of stdout as they come, parsed. */
  onLine(listener: (line: Record<string, unknown>) => void): void;
  write(text: string): void;
  end(): void;
  kill(): void;
  done: Promise<PsycopgResult>;
}

function start(
  script: string,
  env: Record<string, string>,
  args: string[],
  wrap: Wrap = (command, args) => [command, args],
): Started {
  const [command, argv] = wrap(PYTHON, ["-c", PRELUDE, script, ...args]);
  const child = spawn(command, argv, {
    env: cleanEnv(env),
    stdio: ["pipe", "pipe", "pipe"],
  });
  running.add(child);
  let stdout = "";
  let stderr = "";
  let pending = "";
  const listeners: ((line: Record<string, unknown>) => void)[] = [];
  child.stdout.setEncoding("utf8").on("data", (s: string) => {
    stdout += s;
    pending += s;
    for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      let parsed: Record<string, unknown> | undefined;
      try {
        parsed = JSON.parse(line);
      } catch { /* not a report line */ }
      if (parsed) listeners.forEach((listener) => listener(parsed));
    }
  });
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  // A script that exits without reading all of its stdin makes our writes fail: not our concern.
  child.stdin.on("error", () => {});
  const done = new Promise<PsycopgResult>((resolve, reject) => {
    child.on("error", (err) => {
      running.delete(child);
      reject(err);
    });
    child.on("close", (code) => {
      running.delete(child);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
  return {
    onLine: (listener) => listeners.push(listener),
    write: (text) => child.stdin.write(text),
    end: () => child.stdin.end(),
    kill: () => child.kill("SIGKILL"),
    done,
  };
}

/**
 * Runs a Python `script` after a prelude that imports psycopg2 and defines `connect()` (libpq's
 * environment, autocommit), `emit(**fields)` (one JSON line on stdout), `rows(cursor)` and
 * `describe(exception)`; `ARGS` holds `options.args`. `env` is added to ours less every PG* and
 * PYTHON* variable; `options.stdin` is written to the script, then closed; `options.wrap` runs it
 * through another command.
 *
 * @example
 * const r = await psycopg(`emit(one=connect().cursor().execute("select 1") or 1)`, {
 *   PGHOST: "127.0.0.1", PGPORT: "5432", PGUSER: "postgres", PGDATABASE: "postgres",
 * });
 */
export function psycopg(
  script: string,
  env: Record<string, string>,
  options: RunOptions = {},
): Promise<PsycopgResult> {
  const child = start(script, env, options.args ?? [], options.wrap);
  if (options.stdin !== undefined) child.write(options.stdin);
  child.end();
  return child.done;
}

/** Reads a result's report: its last JSON line, as the value or as the exception it ended on. */
export function outcome<T>(result: PsycopgResult): PsycopgOutcome<T> {
  const lines = result.stdout.split("\n").filter((l) => l.startsWith("{"));
  const last = lines.length ? JSON.parse(lines[lines.length - 1]) : undefined;
  if (result.code === 3 && last && "error" in last) return { ...result, error: last };
  return { ...result, value: last };
}

/** A query's result as psycopg2 returns it (JSON of its Python values: decimals and dates as text). */
export interface QueryRows {
  columns: string[];
  rows: unknown[][];
}

/**
 * Connects, runs `sql` (no parameters) and reports its rows.
 *
 * @example
 * const { value } = await psycopgQuery("select 1 as one", env); // { columns: ["one"], rows: [[1]] }
 */
export async function psycopgQuery(
  sql: string,
  env: Record<string, string>,
  options: { wrap?: Wrap } = {},
): Promise<PsycopgOutcome<QueryRows>> {
  const script = `
conn = connect()
cur = conn.cursor()
cur.execute(ARGS[0])
emit(**rows(cur))
conn.close()
`;
  return outcome(await psycopg(script, env, { args: [sql], wrap: options.wrap }));
}

/** What the held session reports at the end: its backend (as it was told at login) and rows. */
export interface HeldRows extends QueryRows {
  /** The backend process id of the connection, from its BackendKeyData. */
  pid: number;
}

/**
 * Opens a connection, then waits while `between()` runs (a test advances the gateway's clock, say),
 * then runs `sql` on that same connection and reports its rows: a session opened before its
 * token expired must keep working. If `between()` throws, the script is killed and that is thrown.
 *
 * @example
 * const r = await psycopgHeld(env, "select 1", async () => { gateway.clockOffsetMs = HOUR; });
 */
export async function psycopgHeld(
  env: Record<string, string>,
  sql: string,
  between: (session: { pid: number }) => Promise<void> | void,
  options: { wrap?: Wrap } = {},
): Promise<PsycopgOutcome<HeldRows>> {
  const script = `
conn = connect()
emit(ready=True, pid=conn.get_backend_pid())
if sys.stdin.readline().strip() == "go":
    cur = conn.cursor()
    cur.execute(ARGS[0])
    emit(pid=conn.get_backend_pid(), **rows(cur))
conn.close()
`;
  const child = start(script, env, [sql], options.wrap);
  const ready = new Promise<{ pid: number } | undefined>((resolve) => {
    child.onLine((line) => line.ready === true && resolve({ pid: Number(line.pid) }));
    child.done.then(() => resolve(undefined), () => resolve(undefined));
  });
  const session = await ready;
  // Exited before it was ready: its report says why.
  if (!session) return outcome(await child.done);
  try {
    await between(session);
  } catch (err) {
    child.kill();
    await child.done.catch(() => {});
    throw err;
  }
  child.write("go\n");
  child.end();
  return outcome(await child.done);
}

/** What the cancel script reports. */
export interface CancelReport {
  /** Whether pg_sleep returned (false: it raised `error`). */
  completed: boolean;
  error?: PsycopgError;
  /** Whether conn.cancel() was called (once pg_stat_activity showed the query running). */
  cancelSent: boolean;
  /** `select 1` on the same connection afterwards: 1, as the connection survives a cancel. */
  afterwards: number;
}

/**
 * Runs `select pg_sleep(seconds)`; with `cancel`, a second thread waits until pg_stat_activity
 * shows that query running (seen from a second connection of the same environment) and calls
 * psycopg2's conn.cancel() (libpq's PQcancel: a CancelRequest on a new connection), once. The
 * cancelled query raises QueryCanceled, SQLSTATE 57014. Then `select 1` on the same connection.
 *
 * @example
 * const { value } = await psycopgCancel(env, { seconds: 30, cancel: true });
 * // value.error.pgcode === "57014"
 */
export async function psycopgCancel(
  env: Record<string, string>,
  options: { seconds: number; cancel: boolean; wrap?: Wrap },
): Promise<PsycopgOutcome<CancelReport>> {
  const script = `
seconds = float(ARGS[0])
marker = "pgiam_cancel_" + uuid.uuid4().hex
conn = connect()
done = threading.Event()
sent = []
watch_error = []

def canceller():
    try:
        watch = connect()
        cur = watch.cursor()
        while not done.is_set():
            cur.execute(
                "select count(*) from pg_stat_activity where pid <> pg_backend_pid()"
                " and state = 'active' and strpos(query, %s) > 0", (marker,))
            if cur.fetchone()[0]:
                conn.cancel()
                sent.append(True)
                break
            done.wait(0.01)
        watch.close()
    except psycopg2.Error as e:
        watch_error.append(describe(e))

thread = threading.Thread(target=canceller) if ARGS[1] == "cancel" else None
if thread:
    thread.start()
report = {}
try:
    conn.cursor().execute("select pg_sleep(%s) /* " + marker + " */", (seconds,))
    report["completed"] = True
except psycopg2.Error as e:
    report["completed"] = False
    report["error"] = describe(e)
done.set()
if thread:
    thread.join()
if watch_error:
    report["watchError"] = watch_error[0]
cur = conn.cursor()
cur.execute("select 1")
emit(cancelSent=bool(sent), afterwards=cur.fetchone()[0], **report)
conn.close()
`;
  const args = [String(options.seconds), options.cancel ? "cancel" : "no-cancel"];
  return outcome(await psycopg(script, env, { args, wrap: options.wrap }));
}

/** What the COPY script reports. */
export interface CopyReport {
  rows: number;
  /** The row count COPY FROM STDIN reported. */
  copiedIn: number;
  /** count(*) of the table afterwards. */
  count: number;
  bytesSent: number;
  bytesReceived: number;
  /** SHA-256 of the bytes sent by COPY FROM STDIN, and of those COPY TO STDOUT returned. */
  sentSha256: string;
  receivedSha256: string;
  /** md5 of the bytes sent, and the server's md5 of the same text rebuilt from the table's rows. */
  sentMd5: string;
  serverMd5: string;
}

/**
 * COPY both ways with psycopg2's copy_expert: creates a table of a unique name, copies `rows`
 * rows (about 70 bytes each: 20 000 make 1.4 MB) in with COPY FROM STDIN, reads them back with
 * COPY TO STDOUT, drops the table, and reports checksums of both directions and the server's own
 * md5 of what it stored.
 *
 * @example
 * const { value } = await psycopgCopy(env, { rows: 20_000 });
 * // value.sentSha256 === value.receivedSha256 && value.sentMd5 === value.serverMd5
 */
export async function psycopgCopy(
  env: Record<string, string>,
  options: { rows?: number; wrap?: Wrap } = {},
): Promise<PsycopgOutcome<CopyReport>> {
  const script = `
n = int(ARGS[0])
table = "pgiam_copy_" + uuid.uuid4().hex
conn = connect()
cur = conn.cursor()
cur.execute(f"create table {table} (id integer primary key, body text not null)")
try:
    sent = "".join(f"{i}\\t{hashlib.sha256(str(i).encode()).hexdigest()}\\n" for i in range(n)).encode()
    cur.copy_expert(f"copy {table} (id, body) from stdin", io.BytesIO(sent))
    copied_in = cur.rowcount
    cur.execute(f"select count(*), md5(string_agg(id || E'\\\\t' || body || E'\\\\n', '' order by id)) from {table}")
    count, server_md5 = cur.fetchone()
    out = io.BytesIO()
    cur.copy_expert(f"copy (select id, body from {table} order by id) to stdout", out)
    received = out.getvalue()
finally:
    cur.execute(f"drop table if exists {table}")
emit(rows=n, copiedIn=copied_in, count=count, bytesSent=len(sent), bytesReceived=len(received),
     sentSha256=hashlib.sha256(sent).hexdigest(), receivedSha256=hashlib.sha256(received).hexdigest(),
     sentMd5=hashlib.md5(sent).hexdigest(), serverMd5=server_md5)
conn.close()
`;
  const args = [String(options.rows ?? 20_000)];
  return outcome(await psycopg(script, env, { args, wrap: options.wrap }));
}
