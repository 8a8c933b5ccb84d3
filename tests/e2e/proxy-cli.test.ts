// pg-iam proxy and pg-iam exec, run for real as subprocesses of the runtime running this file (Node
// through tsx, Deno, Bun), in front of the gateway (IAM verified, TLS with the test CA) in front of
// Debian's PostgreSQL; clients are Debian's psql, node-postgres and sh.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { childEnv, type Result, run } from "../_cli.ts";
import { closeTestGateways, RDS, testGateway } from "../_gateway.ts";
import { upstreamPostgres } from "../_postgres.ts";
import { runtimeCommand } from "../_runtime.ts";
import { ca, cert, key } from "../fixtures/tls.ts";

const KEYS = {
  accessKeyId: "AKIDPGIAMPROXYCLI",
  secretAccessKey: "pg-iam/proxy-cli/test/secret/01234",
};
const CLI = fileURLToPath(new URL("../../src/cli/mod.ts", import.meta.url));
const TIMEOUT = { timeout: 120_000 };

const dir = mkdtempSync(join(tmpdir(), "pg-iam-proxy-cli-test-"));
const CA_FILE = join(dir, "ca.pem");
writeFileSync(CA_FILE, ca);
const CERT_FILE = join(dir, "cert.pem");
writeFileSync(CERT_FILE, cert);
const KEY_FILE = join(dir, "key.pem");
writeFileSync(KEY_FILE, key, { mode: 0o600 });

const children = new Set<ChildProcess>();
after(async () => {
  for (const child of children) child.kill("SIGKILL");
  await closeTestGateways();
});

/** The proxy's target: the gateway on 127.0.0.1, signed for the endpoint, TLS with the test CA. */
function targetOf(port: number, user = ""): string {
  return `postgres://${user ? `${user}@` : ""}127.0.0.1:${port}/postgres?iam_host=${RDS}` +
    `&iam_port=5432&sslrootcert=${CA_FILE}`;
}

/** Runs `pg-iam …args` with this runtime, to completion. */
function cli(args: string[], env: Record<string, string> = {}): Promise<Result> {
  const [cmd, pre] = runtimeCommand(CLI);
  return run(cmd, [...pre, ...args], childEnv(KEYS, dir, env));
}

/** Starts `pg-iam …args`: its stdout lines as they come, and its exit. */
function start(args: string[], env: Record<string, string> = {}) {
  const [cmd, pre] = runtimeCommand(CLI);
  const child = spawn(cmd, [...pre, ...args], { env: childEnv(KEYS, dir, env) });
  children.add(child);
  let stdout = "";
  let stderr = "";
  const waiting: { match: RegExp; resolve: (line: string) => void }[] = [];
  const check = () => {
    for (const w of [...waiting]) {
      const line = stdout.split("\n").find((l) => w.match.test(l));
      if (line !== undefined) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve(line);
      }
    }
  };
  child.stdout!.setEncoding("utf8").on("data", (s: string) => {
    stdout += s;
    check();
  });
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.on("close", (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    })
  );
  return {
    child,
    exited,
    /**
     * Sends `signal` by process id: Deno's child_process reports a child it was asked to kill as
     * killed by that signal, whatever its exit code.
     */
    signal(signal: NodeJS.Signals): void {
      process.kill(child.pid!, signal);
    },
    stdout: () => stdout,
    stderr: () => stderr,
    /** The first stdout line matching `match`; rejects if the process exits first. */
    line(match: RegExp): Promise<string> {
      return Promise.race([
        new Promise<string>((resolve) => {
          waiting.push({ match, resolve });
          check();
        }),
        exited.then(({ code }) => {
          check();
          const found = stdout.split("\n").find((l) => match.test(l));
          if (found !== undefined) return found;
          throw new Error(`exited ${code} before ${match}: ${stdout}\n${stderr}`);
        }),
      ]);
    },
    /** The JSON line of `event`. */
    async event(event: string): Promise<Record<string, unknown>> {
      return JSON.parse(await this.line(new RegExp(`^\\{"event":"${event}"`)));
    },
  };
}

/** psql with no password and nothing of ours in its environment. */
function psql(host: string, port: number, user: string, query: string): Promise<Result> {
  return run(
    "psql",
    ["-X", "-w", "-tA", "-h", host, "-p", String(port), "-U", user, "-d", "postgres", "-c", query],
    childEnv(KEYS, dir),
  );
}

/** No secret key, signature or token in `text`. */
function assertNoSecret(text: string): void {
  assert.ok(!text.includes(KEYS.secretAccessKey), text);
  assert.ok(!/X-Amz-Signature|Action=connect|X-Amz-Credential/i.test(text), text);
}

test(
  "pg-iam proxy --listen 0 --http 0 --json: a ready line, psql logs in through it with no password (the gateway verified the token; straight at the gateway psql is refused, the control), login and close lines without any secret; SIGTERM stops it gracefully: an open session finishes, a new connection is refused, /readyz answers 503 (200 before, the control), exit 0",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const proxy = start(["proxy", targetOf(g.port), "--listen", "0", "--http", "0", "--json"]);
    const ready = await proxy.event("ready");
    const http = ready.http as { host: string; port: number };
    assert.equal(http.host, "127.0.0.1");
    const get = (path: string) => fetch(`http://127.0.0.1:${http.port}${path}`);
    assert.equal(ready.host, "127.0.0.1");
    assert.ok(typeof ready.port === "number" && ready.port > 0);
    assert.equal(ready.path, null);
    assert.equal(ready.target, `127.0.0.1:${g.port}`);
    assert.equal(ready.sslmode, "verify-full");
    assert.equal(ready.user, null); // each client's own
    const port = ready.port as number;

    const ok = await psql("127.0.0.1", port, "app", "select 41 + 1");
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), "42");
    assert.equal(g.stats.logins.at(-1)!.accepted, true);
    assert.equal(g.stats.logins.at(-1)!.user, "app");
    const login = await proxy.event("login");
    assert.equal(login.ok, true);
    assert.equal(login.user, "app");
    assert.equal(login.database, "postgres");
    assert.equal(login.attempts, 1);
    assert.match(String(login.client), /^127\.0\.0\.1:\d+$/);
    const timings = login.timings as Record<string, number>;
    assert.ok(timings.totalMs > 0 && timings.tlsMs > 0, JSON.stringify(timings));
    const close = await proxy.event("close");
    assert.equal(close.user, "app");
    assert.ok((close.bytes as { toClient: number }).toClient > 0);

    // Without --tls-cert the proxy offers no TLS: a client that requires it is refused (the
    // control for --tls-cert below).
    const tls = await run(
      "psql",
      ["-X", "-w", "-c", "select 1", `host=127.0.0.1 port=${port} user=app sslmode=require`],
      childEnv(KEYS, dir),
    );
    assert.equal(tls.code, 2);
    assert.match(tls.stderr, /server does not support SSL/);

    // The control: psql straight at the gateway has no token to give.
    const direct = await psql("127.0.0.1", g.port, "app", "select 1");
    assert.notEqual(direct.code, 0);
    assert.match(direct.stderr, /password/);

    // The sidecar's port: the login counted; ready until stopping (below).
    const metrics = await (await get("/metrics")).text();
    assert.match(metrics, /^pgiam_proxy_logins_total\{result="ok"\} 1$/m);
    assert.equal((await get("/readyz")).status, 200);

    // Graceful stop: the open session goes on answering after SIGTERM; a new one is refused.
    const session = new pg.Client({ host: "127.0.0.1", port, user: "app", database: "postgres" });
    await session.connect();
    proxy.signal("SIGTERM");
    const stopping = await proxy.event("stopping");
    assert.equal(stopping.sessions, 1);
    assert.equal(stopping.signal, "SIGTERM");
    // Draining: not ready (a load balancer sends no one new), still alive.
    assert.equal((await get("/readyz")).status, 503);
    assert.equal((await get("/livez")).status, 200);
    const after = await session.query("select 7 as n");
    assert.equal(after.rows[0].n, 7);
    const late = new pg.Client({ host: "127.0.0.1", port, user: "app", database: "postgres" });
    await assert.rejects(late.connect(), /ECONNREFUSED|Connection terminated|closed/);
    await session.end();
    const stopped = await proxy.event("stopped");
    assert.deepEqual(stopped.logins, { ok: 2, refused: 0, failed: 0 });
    assert.deepEqual(await proxy.exited, { code: 0, signal: null });
    assert.equal(proxy.stderr(), "");
    // Every line is JSON, and none holds the secret, a signature or a token; the gateway checked
    // tokens signed with that secret (above), so the proxy had them.
    const lines = proxy.stdout().trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.map((l) => l.event),
      ["ready", "login", "close", "login", "stopping", "close", "stopped"],
    );
    assertNoSecret(proxy.stdout() + proxy.stderr());
  },
);

test(
  "pg-iam proxy --max-connections 1 refuses a second session (53300); a second SIGTERM closes open sessions at once, with --shutdown-timeout 60 left (the first alone keeps them, the control); without --json the ready line is on stdout, the login and stop lines on stderr",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const proxy = start([
      "proxy",
      targetOf(g.port),
      "--listen",
      "127.0.0.1:0",
      "--shutdown-timeout",
      "60",
      "--max-connections",
      "1",
    ]);
    const banner = await proxy.line(/^pg-iam proxy listening on /);
    const port = Number(/listening on 127\.0\.0\.1:(\d+) /.exec(banner)![1]);
    assert.match(
      banner,
      new RegExp(`for 127\\.0\\.0\\.1:${g.port} \\(rds, sslmode verify-full\\)`),
    );

    const session = new pg.Client({ host: "127.0.0.1", port, user: "app", database: "postgres" });
    await session.connect();
    // --max-connections 1: that session is the one; another is refused as PostgreSQL refuses it.
    const second = new pg.Client({ host: "127.0.0.1", port, user: "app", database: "postgres" });
    await assert.rejects(second.connect(), (e: Error & { code?: string }) => e.code === "53300");
    const ended = new Promise<Error>((resolve) => session.once("error", resolve));
    proxy.signal("SIGTERM");
    await waitFor(() => /^stopping \(SIGTERM\)/m.test(proxy.stderr()));
    // The control: after the first signal the session still answers.
    assert.equal((await session.query("select 1 as n")).rows[0].n, 1);
    proxy.signal("SIGTERM");
    assert.match(String(await ended), /terminated|ECONNRESET|closed/i);
    assert.deepEqual(await proxy.exited, { code: 0, signal: null });

    const log = proxy.stderr();
    assert.match(log, /^login ok: app@postgres from 127\.0\.0\.1:\d+ \(\d/m);
    assert.match(
      log,
      /^stopped: 1 logins ok, 0 failed, 0 refused by the proxy, 1 connection over a limit$/m,
    );
    assertNoSecret(proxy.stdout() + log);
  },
);

test(
  "pg-iam proxy with keys the gateway refuses: psql gets the proxy's 28000 error, the login line says FAILED with its step and code, a client-chosen user name escaped (a newline and ESC cannot forge a line or reach the terminal), --json the same as fields without a stack; no secret anywhere",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const wrong = { AWS_SECRET_ACCESS_KEY: "pg-iam/proxy-cli/test/other/secret" };
    const evil = "app\nlogin ok: forged\x1b[2J";
    const texts: string[] = [];
    for (const json of [false, true]) {
      const proxy = start(
        ["proxy", targetOf(g.port), "--listen", "0", ...(json ? ["--json"] : [])],
        wrong,
      );
      const ready = json ? await proxy.event("ready") : undefined;
      const banner = json ? "" : await proxy.line(/^pg-iam proxy listening on /);
      const port = ready?.port ?? Number(/listening on 127\.0\.0\.1:(\d+) /.exec(banner)![1]);
      const refused = await run(
        "psql",
        ["-X", "-w", "-c", "select 1", `host=127.0.0.1 port=${port} dbname=postgres`],
        childEnv(KEYS, dir, { PGUSER: evil }),
      );
      assert.equal(refused.code, 2);
      assert.match(refused.stderr, /FATAL: {2}pg-iam proxy: /);
      if (json) await proxy.event("login");
      else await waitFor(() => /^login FAILED/m.test(proxy.stderr()));
      proxy.signal("SIGTERM");
      assert.equal((await proxy.exited).code, 0);
      texts.push(proxy.stdout(), proxy.stderr(), refused.stderr);
      if (json) {
        const login = JSON.parse(proxy.stdout().split("\n")[1]);
        assert.equal(login.ok, false);
        assert.equal(login.user, evil);
        assert.equal(login.code, "28000");
        assert.equal(login.step, "auth");
        assert.equal(login.attempts, 2);
        assert.match(login.message, /^pg-iam proxy: /);
        assert.equal(login.error, undefined);
        assert.equal(login.stack, undefined);
      } else {
        const log = proxy.stderr();
        assert.match(
          log,
          /^login FAILED: app\\nlogin ok: forged\\x1b\[2J@postgres from 127\.0\.0\.1:\d+: 28000 pg-iam proxy: .* \(step auth\)$/m,
        );
        assert.ok(!log.includes("\x1b"), log);
        assert.ok(!/^login ok/m.test(log), log);
      }
    }
    // The gateway saw tokens signed with the other secret: the proxy held one it never shows.
    assert.ok((g.stats.rejections.signature ?? 0) >= 2, JSON.stringify(g.stats.rejections));
    for (const text of texts) {
      assertNoSecret(text);
      assert.ok(!text.includes(wrong.AWS_SECRET_ACCESS_KEY), text);
    }
  },
);

test(
  "pg-iam proxy refuses a non-loopback --listen without --allow-remote, and --allow-remote without a password, and an --expires-in over RDS's 900 s (exit 2, naming the flags, before listening); with --allow-remote and --password-file it listens (the control), and psql logs in with that password (SCRAM-SHA-256) over TLS with --tls-cert and --tls-key, and is refused with another",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const target = targetOf(g.port);
    const remote = await cli(["proxy", target, "--listen", "0.0.0.0:0"]);
    assert.equal(remote.code, 2);
    assert.equal(remote.stdout, "");
    assert.match(
      remote.stderr,
      /^pg-iam proxy: --listen 0\.0\.0\.0 is not a loopback address: anyone who reaches it would log in as this proxy's AWS identity\. .* pass --allow-remote with --password-file FILE/,
    );
    const noPassword = await cli(["proxy", target, "--listen", "0.0.0.0:0", "--allow-remote"]);
    assert.equal(noPassword.code, 2);
    assert.match(noPassword.stderr, /--allow-remote needs a password clients must give/);
    const expiry = await cli(["proxy", target, "--expires-in", "901"]);
    assert.equal(expiry.code, 2);
    assert.match(expiry.stderr, /--expires-in must be an integer from 1 to 900, got "901"/);
    const flag = await cli(["proxy", target, "--password", "x"]);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /unknown option --password: pg-iam signs an IAM token/);

    const file = join(dir, "proxy-password");
    writeFileSync(file, "local secret\n", { mode: 0o600 });
    const proxy = start([
      "proxy",
      target,
      "--listen",
      "0.0.0.0:0",
      "--allow-remote",
      "--password-file",
      file,
      "--tls-cert",
      CERT_FILE,
      "--tls-key",
      KEY_FILE,
      "--json",
    ]);
    const ready = await proxy.event("ready");
    assert.equal(ready.host, "0.0.0.0");
    assert.equal(ready.password, true);
    // Over TLS with the proxy's certificate (--tls-cert), verified against the test CA.
    const login = (password: string) =>
      run(
        "psql",
        [
          "-X",
          "-tAc",
          "select 1",
          "-c",
          "\\conninfo",
          `host=localhost port=${ready.port} user=app dbname=postgres sslmode=verify-ca ` +
          `sslrootcert=${CA_FILE}`,
        ],
        childEnv(KEYS, dir, { PGPASSWORD: password }),
      );
    const ok = await login("local secret");
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^1\n.*SSL connection \(protocol: TLSv1\.[23]/s);
    const wrong = await login("local secret!");
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /password authentication failed for user "app"/);
    proxy.signal("SIGINT");
    assert.equal((await proxy.exited).code, 0);
    assert.ok(!proxy.stdout().includes("local secret"));
  },
);

test(
  "pg-iam exec TARGET -- psql -tAc 'select current_user' prints the result and exits 0 (its token checked by the gateway); -- sh -c 'exit 3' exits 3 (the control for the exit code), no-such-command 127, no command or a command without -- 2",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const up = await upstreamPostgres();
    const r = await cli([
      "exec",
      targetOf(g.port, "app"),
      "--",
      "psql",
      "-X",
      "-tAc",
      "select current_user",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), up.user); // the gateway relays as the server's user
    assert.equal(g.stats.logins.at(-1)!.user, "app");
    assert.equal(g.stats.logins.at(-1)!.accepted, true);
    assert.equal(r.stderr, "");

    const three = await cli(["exec", targetOf(g.port, "app"), "--", "sh", "-c", "exit 3"]);
    assert.equal(three.code, 3, three.stderr);

    const missing = await cli(["exec", targetOf(g.port, "app"), "--", "no-such-command", "x"]);
    assert.equal(missing.code, 127);
    assert.equal(missing.stderr, "pg-iam exec: no-such-command: command not found\n");

    const none = await cli(["exec", targetOf(g.port, "app")]);
    assert.equal(none.code, 2);
    assert.match(
      none.stderr,
      /^pg-iam exec: no command to run: pg-iam exec \[URL\] \[options\] -- <command>/,
    );
    const noDash = await cli(["exec", targetOf(g.port, "app"), "psql"]);
    assert.equal(noDash.code, 2);
    assert.match(noDash.stderr, /put the command after --: /);

    // A login the gateway refuses (other keys): one line on stderr, and the command's own error.
    const bad = await cli(
      ["exec", targetOf(g.port, "app"), "--", "psql", "-X", "-tAc", "select 1"],
      { AWS_SECRET_ACCESS_KEY: "pg-iam/proxy-cli/test/other/secret" },
    );
    assert.equal(bad.code, 2); // psql's own code
    assert.match(
      bad.stderr,
      /^pg-iam exec: login FAILED: app@postgres from 127\.0\.0\.1:\d+: 28000 pg-iam proxy: .* \(step auth\)$/m,
    );
    assert.match(bad.stderr, /^psql: .*FATAL: {2}pg-iam proxy: /m);
    assertNoSecret(r.stdout + r.stderr + bad.stderr + missing.stderr);
  },
);

test(
  "pg-iam exec: the command sees DATABASE_URL, PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE pointing at the proxy and no PGPASSWORD or PGSSLROOTCERT; the same sh run directly sees them (the control)",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const script = 'echo "$DATABASE_URL"; echo "$PGHOST $PGPORT $PGUSER $PGDATABASE $PGSSLMODE"; ' +
      'echo "${PGPASSWORD-unset} ${PGSSLROOTCERT-unset}"; echo "${PRISMA_URL-unset}"';
    const parent = { PGPASSWORD: "hunter2", PGSSLROOTCERT: "/elsewhere.pem" };
    const r = await cli(
      [
        "exec",
        targetOf(g.port, "app"),
        "--database-url-var",
        "PRISMA_URL",
        "--",
        "sh",
        "-c",
        script,
      ],
      parent,
    );
    assert.equal(r.code, 0, r.stderr);
    const [url, pgVars, secrets, prisma] = r.stdout.trim().split("\n");
    const m = /^postgres:\/\/app@127\.0\.0\.1:(\d+)\/postgres\?sslmode=disable$/.exec(url);
    assert.ok(m, url);
    assert.equal(pgVars, `127.0.0.1 ${m[1]} app postgres disable`);
    assert.equal(secrets, "unset unset");
    assert.equal(prisma, url);

    const direct = await run("sh", ["-c", script], childEnv(KEYS, dir, parent));
    assert.equal(direct.stdout.split("\n")[2], "hunter2 /elsewhere.pem");

    // No user in the target: PGUSER and PGDATABASE of the environment, as libpq takes them.
    const own = await cli(["exec", targetOf(g.port), "--", "sh", "-c", script], {
      PGUSER: "reporter",
      PGDATABASE: "postgres",
    });
    assert.equal(own.code, 0, own.stderr);
    assert.match(
      own.stdout,
      /^postgres:\/\/reporter@127\.0\.0\.1:\d+\/postgres\?sslmode=disable$/m,
    );
  },
);

test(
  "pg-iam exec forwards SIGTERM to the command: a command trapping it exits 9, and pg-iam exec with it; one that does not is ended by it, 128 + 15 (the control)",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const trapping = start([
      "exec",
      targetOf(g.port, "app"),
      "--",
      "sh",
      "-c",
      `trap 'kill $!; exit 9' TERM; echo started; sleep 30 >/dev/null 2>&1 & wait`,
    ]);
    await trapping.line(/^started$/);
    trapping.signal("SIGTERM");
    assert.deepEqual(await trapping.exited, { code: 9, signal: null });

    const plain = start([
      "exec",
      targetOf(g.port, "app"),
      "--",
      "sh",
      "-c",
      "echo started; exec sleep 30",
    ]);
    await plain.line(/^started$/);
    plain.signal("SIGTERM");
    assert.deepEqual(await plain.exited, { code: 143, signal: null });
  },
);

test(
  "pg-iam exec --unix-socket DIR: psql logs in through the proxy's socket with $DATABASE_URL and with the PG* variables (DIR created owner-only); the same psql with the TCP host is refused by the gateway (the control: no token of its own)",
  TIMEOUT,
  async () => {
    const g = await testGateway(KEYS);
    const socketDir = join(dir, "socket");
    const script = `ls -ld "$PGHOST" | cut -c1-10; ` +
      `psql -X -tAc "select 'url', inet_server_port() is null" "$DATABASE_URL"; ` +
      `psql -X -tAc "select 'env', current_database()"`;
    // The CA as a flag this time (--sslrootcert), the URL without it.
    const r = await cli([
      "exec",
      targetOf(g.port, "app").replace(`&sslrootcert=${CA_FILE}`, ""),
      "--sslrootcert",
      CA_FILE,
      "--unix-socket",
      socketDir,
      "--",
      "sh",
      "-c",
      script,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "drwx------\nurl|f\nenv|postgres\n");
    assert.equal(g.stats.logins.filter((l) => l.accepted && l.user === "app").length, 2);

    const direct = await run(
      "psql",
      ["-X", "-w", "-tAc", "select 1", `host=127.0.0.1 port=${g.port} user=app dbname=postgres`],
      childEnv(KEYS, dir),
    );
    assert.equal(direct.code, 2);
  },
);

test("pg-iam proxy --help and pg-iam exec --help describe the commands", TIMEOUT, async () => {
  for (const name of ["proxy", "exec"]) {
    const r = await cli([name, "--help"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^Usage: pg-iam ${name} `));
  }
  const top = await cli(["--help"]);
  assert.match(top.stdout, /^ {2}proxy {2,}Run a local proxy/m);
  assert.match(top.stdout, /^ {2}exec {2,}Run a command with DATABASE_URL/m);
});

/** Resolves once `done()` holds (checked every few milliseconds). */
async function waitFor(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((resolve) => setTimeout(resolve, 5));
}
