// iamPostgres() on the real workerd (the Cloudflare Workers runtime, from npm): a Worker
// (tests/fixtures/workerd-postgres.ts, bundled with postgres.js's `workerd` build) serves requests
// by querying through the IAM gateway on loopback, over cloudflare:sockets. The workerd config lets
// the Worker reach loopback and trusts the gateway's test CA (tlsOptions.trustedCertificates), as
// Cloudflare trusts public CAs; a second service trusts the browser CAs only, the control.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import type { Gateway } from "../../src/gateway/mod.ts";
import { closeTestGateways, testGateway } from "../_gateway.ts";
import { ca } from "../fixtures/tls.ts";
import { KEYS, startWorkerd, workerdConfig } from "../fixtures/workerd-server.ts";
import { postgresMajor } from "../_postgres_major.mjs";

const DSQL = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
const dir = new URL("../../.tmp/workerd-postgres", import.meta.url).pathname;
const SLOW = { timeout: 120_000 };

let workerd: ChildProcess | undefined;
let log = "";
const ports = { trusting: 0, untrusting: 0 };
let dsql: Gateway;
let rds: Gateway;
let busy: Gateway;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    }).on("error", reject);
  });
}

before(async () => {
  dsql = await testGateway(KEYS, { endpoint: DSQL });
  rds = await testGateway(KEYS);
  busy = await testGateway(KEYS, { endpoint: DSQL, maxConnectionRate: 5, connectionBurst: 1 });
  ports.trusting = await freePort();
  ports.untrusting = await freePort();
  workerdConfig(dir, [
    { name: "trusting", port: ports.trusting, trustTestCa: true },
    { name: "untrusting", port: ports.untrusting, trustTestCa: false },
  ]);
  workerd = await startWorkerd(
    `${dir}/config.capnp`,
    [ports.trusting, ports.untrusting],
    (text) => log += text,
  );
}, SLOW);

after(async () => {
  workerd?.kill("SIGKILL");
  await closeTestGateways();
});

interface Answer {
  ok: boolean;
  requests: number;
  onWorkerd: boolean;
  pids?: number[];
  user?: string;
  error?: { name: string; message: string; code?: string; cause?: string };
  inner?: string;
  connects: Array<{
    ok: boolean;
    attempts: number;
    step?: string;
    tokenSent: boolean;
    timings: Record<string, number>;
  }>;
  tokens: Array<{ reused: boolean }>;
  channels?: {
    traces: Array<Record<string, unknown> & { events: string[] }>;
    tokens: Array<Record<string, unknown>>;
  };
}

/** Sends the Worker one job (see tests/fixtures/workerd-postgres.ts). */
async function ask(
  job: Record<string, unknown>,
  service: keyof typeof ports = "trusting",
): Promise<Answer> {
  const res = await fetch(`http://127.0.0.1:${ports[service]}/`, {
    method: "POST",
    body: JSON.stringify({ host: "127.0.0.1", user: "app", ...job }),
  });
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`workerd answered ${res.status} ${text}\n${log}`);
  }
}

const through = (g: Gateway) => ({
  port: g.port,
  endpoint: g.endpoint,
  ...(g.service === "rds" ? { signingPort: 5432 } : {}),
});
const since = (g: Gateway, n: number) => g.stats.logins.slice(n);

test(
  "workerd: iamPostgres() serves requests over cloudflare:sockets, TLS verified for the DSQL endpoint, a token per connection (tokenReuse: false)",
  SLOW,
  async () => {
    const before = dsql.stats.logins.length;
    const r = await ask({
      client: "iam",
      ...through(dsql),
      queries: 3,
      max: 3,
      sleepMs: 50,
      tokenReuse: false,
      tickingClock: true,
    });
    assert.equal(r.ok, true, JSON.stringify(r.error) + log);
    assert.equal(r.onWorkerd, true);
    assert.equal(new Set(r.pids).size, 3);
    assert.equal(r.connects.length, 3);
    for (const c of r.connects) {
      assert.deepEqual([c.ok, c.attempts, c.tokenSent], [true, 1, true]);
      assert.ok(c.timings.totalMs >= c.timings.authMs);
    }
    assert.deepEqual(r.tokens.map((t) => t.reused), [false, false, false]);
    const logins = since(dsql, before);
    assert.equal(logins.length, 3);
    assert.ok(logins.every((l) => l.accepted && l.tls && l.action === "DbConnect"));
    assert.equal(new Set(logins.map((l) => l.tokenId)).size, 3, "one token per connection");
  },
);

test(
  "workerd: transaction() of a client inside a transaction() of it fails at once (AsyncLocalStorage, nodejs_compat) on a pool of 1, which waited forever before; given the handle it nests in a savepoint",
  SLOW,
  async () => {
    const r = await ask({ client: "iam", ...through(dsql), max: 1, nesting: true });
    assert.equal(r.ok, true, JSON.stringify(r.error) + log);
    assert.equal(r.onWorkerd, true);
    assert.match(r.inner ?? "", /^TypeError: .*savepoint/);
    assert.equal(r.pids?.length, 2);
    assert.equal(r.pids?.[0], r.pids?.[1]); // the savepoint ran on the transaction's connection
    assert.equal(r.connects.length, 1);
  },
);

test(
  "workerd: with token reuse (the default) a pool filling at once presents one token; every connection still logs in",
  SLOW,
  async () => {
    const before = dsql.stats.logins.length;
    const r = await ask({
      client: "iam",
      ...through(dsql),
      queries: 3,
      max: 3,
      sleepMs: 50,
      tickingClock: true,
    });
    assert.equal(r.ok, true, JSON.stringify(r.error));
    assert.deepEqual(r.tokens.map((t) => t.reused).sort(), [false, true, true]);
    const logins = since(dsql, before);
    assert.equal(logins.length, 3);
    assert.ok(logins.every((l) => l.accepted));
    assert.equal(new Set(logins.map((l) => l.tokenId)).size, 1);
  },
);

test(
  "workerd: past the token's lifetime iamPostgres() still connects; the negative control, plain postgres.js with one frozen token, is refused",
  SLOW,
  async () => {
    // The frozen token is signed on the isolate's first "frozen" request, and works then.
    const fresh = await ask({ client: "frozen", ...through(dsql) });
    assert.equal(fresh.ok, true, JSON.stringify(fresh.error));
    dsql.clockOffsetMs = 20 * 60_000;
    try {
      const iam = await ask({ client: "iam", ...through(dsql), offsetMs: 20 * 60_000 });
      assert.equal(iam.ok, true, JSON.stringify(iam.error));
      const frozen = await ask({ client: "frozen", ...through(dsql) });
      assert.equal(frozen.ok, false);
      assert.match(frozen.error!.message, /PAM authentication failed/);
      assert.equal(dsql.stats.logins.at(-1)!.reason, "expired");
    } finally {
      dsql.clockOffsetMs = 0;
    }
  },
);

test(
  "workerd: a throwing credentials provider fails the request with a clear CredentialsError (no secret), and the isolate lives on",
  SLOW,
  async () => {
    const before = dsql.stats.logins.length;
    const failed = await ask({ client: "iam", ...through(dsql), credentials: "throws" });
    assert.equal(failed.ok, false);
    assert.equal(failed.error!.name, "CredentialsError");
    assert.match(failed.error!.message, /provider failed/);
    assert.doesNotMatch(failed.error!.message, /do-not-print-me/);
    assert.deepEqual(
      failed.connects.map((c) => [c.ok, c.step, c.tokenSent]),
      [[false, "credentials", false]],
    );
    assert.equal(dsql.stats.logins.length, before, "nothing reached the server");
    // The same isolate (its request counter goes on) serves the next request.
    const next = await ask({ client: "iam", ...through(dsql) });
    assert.equal(next.ok, true, JSON.stringify(next.error));
    assert.equal(next.requests, failed.requests + 1);
  },
);

test(
  "workerd: a rejected token is retried once with force-refreshed credentials; the control, credentials that stay wrong, is an IamAuthError",
  SLOW,
  async () => {
    const retried = await ask({
      client: "iam",
      ...through(dsql),
      credentials: "stale-until-refresh",
    });
    assert.equal(retried.ok, true, JSON.stringify(retried.error));
    assert.deepEqual(retried.connects.map((c) => [c.ok, c.attempts]), [[true, 2]]);
    const stale = await ask({ client: "iam", ...through(dsql), credentials: "stale" });
    assert.equal(stale.ok, false);
    assert.equal(stale.error!.name, "IamAuthError");
    assert.match(stale.error!.message, /rejected twice/);
    assert.doesNotMatch(stale.error!.message, /not-known-to-the-gateway|X-Amz-Signature/);
  },
);

test(
  "workerd: a busy server (53400) is asked again with backoff; every connection gets in",
  SLOW,
  async () => {
    const refused = busy.stats.refused["53400"];
    const r = await ask({
      client: "iam",
      ...through(busy),
      queries: 4,
      max: 4,
      sleepMs: 20,
      tokenReuse: false,
    });
    assert.equal(r.ok, true, JSON.stringify(r.error));
    assert.equal(r.connects.filter((c) => c.ok).length, 4, JSON.stringify(r));
    assert.ok(busy.stats.refused["53400"] > refused, "the gateway did refuse some");
  },
);

test(
  "workerd: the certificate is verified: a name it does not carry, or a CA the runtime does not trust, fails at TLS before any token is sent",
  SLOW,
  async () => {
    const before = dsql.stats.logins.length;
    const otherName = await ask({
      client: "iam",
      port: dsql.port,
      endpoint: "abcdefghijklmnopqrstuvwxyz.dsql.eu-west-1.on.aws",
    });
    assert.equal(otherName.ok, false);
    assert.match(otherName.error!.message, /TLS with 127\.0\.0\.1:\d+ failed/);
    assert.match(otherName.error!.message, /dsql\.eu-west-1\.on\.aws/);
    assert.deepEqual(otherName.connects.map((c) => [c.step, c.tokenSent]), [["tls", false]]);
    // The same request from a service whose runtime does not trust the test CA.
    const untrusted = await ask({ client: "iam", ...through(dsql) }, "untrusting");
    assert.equal(untrusted.ok, false);
    assert.match(untrusted.error!.message, /must chain to the CAs the Worker's runtime trusts/);
    assert.deepEqual(untrusted.connects.map((c) => [c.step, c.tokenSent]), [["tls", false]]);
    assert.equal(dsql.stats.logins.length, before);
    // Nothing listening: the connect step fails, naming where.
    const closed = await ask({ client: "iam", port: await freePort(), endpoint: DSQL });
    assert.match(closed.error!.message, /pg-iam: connecting to 127\.0\.0\.1:\d+ failed/);
    assert.deepEqual(closed.connects.map((c) => [c.step, c.tokenSent]), [["connect", false]]);
    // The control: the trusting service connects with the same job.
    assert.equal((await ask({ client: "iam", ...through(dsql) })).ok, true);
  },
);

test(
  "workerd: an RDS endpoint with verify-full is refused when the client is created, naming RDS Proxy, Hyperdrive and the opt-out; RDS Proxy names are accepted",
  SLOW,
  async () => {
    const before = rds.stats.logins.length;
    const refused = await ask({ client: "iam", ...through(rds) });
    assert.equal(refused.ok, false);
    assert.equal(refused.error!.name, "TypeError");
    for (const want of [/RDS CA/, /RDS Proxy/, /Hyperdrive/, /dangerouslyUsePlatformCas: true/]) {
      assert.match(refused.error!.message, want);
    }
    assert.deepEqual(refused.connects, []);
    assert.equal(rds.stats.logins.length, before);
    // The same on Node connects (the control is tests/e2e/postgres.test.ts); here, an sslrootcert or
    // ssl.ca is refused too, and an RDS Proxy endpoint is not.
    const withCa = await ask({ client: "iam", ...through(dsql), ssl: { ca } });
    assert.match(withCa.error!.message, /cannot use the ssl option's ca/);
    const proxy = await ask({
      client: "iam",
      ...through(rds),
      endpoint: "orders.proxy-abc123xyz.us-east-1.rds.amazonaws.com",
      constructOnly: true,
    });
    assert.equal(proxy.ok, true, JSON.stringify(proxy.error));
    // The opt-out: the certificate is checked against the runtime's CAs (here the test CA).
    const optedOut = await ask({ client: "iam", ...through(rds), dangerouslyUsePlatformCas: true });
    assert.equal(optedOut.ok, true, JSON.stringify(optedOut.error));
    assert.equal(since(rds, before).filter((l) => l.accepted && l.tls).length, 1);
  },
);

test(
  "workerd: a query is cancelled through the connection layer (a CancelRequest on a connection of its own)",
  SLOW,
  async () => {
    const r = await ask({ client: "iam", ...through(dsql), cancelAfterMs: 300 });
    assert.equal(r.ok, false);
    assert.equal(r.error!.code, "57014", JSON.stringify(r.error));
    assert.match(r.error!.message, /canceling statement due to user request/);
    // The control, postgres.js 4 alone: its default timers, called as methods of an object, are
    // refused by the runtime (iamPostgres() gives it bound ones on Workers).
    if (postgresMajor() === 4) {
      const plain = await ask({ client: "frozen", ...through(dsql), cancelAfterMs: 300 });
      assert.match(plain.error?.message ?? "", /Illegal invocation/, JSON.stringify(plain));
    }
  },
);

test(
  "workerd: a client kept across requests fails there with the runtime's cross-request I/O error (hence a client per request); the next request's own client works",
  SLOW,
  async () => {
    const first = await ask({ client: "iam", ...through(dsql), keep: true });
    assert.equal(first.ok, true, JSON.stringify(first.error));
    const second = await ask({ client: "iam", ...through(dsql) });
    assert.equal(second.ok, false);
    // postgres.js 4 fails a query on an established connection with CONNECTION_CLOSED, the
    // socket's own error as its cause.
    assert.match(
      postgresMajor() === 3 ? second.error!.message : `${second.error!.cause}`,
      /Cannot perform I\/O on behalf of a different request/,
      JSON.stringify(second.error),
    );
    const third = await ask({ client: "iam", ...through(dsql) });
    assert.equal(third.ok, true, JSON.stringify(third.error));
  },
);

test(
  "workerd: iamPool() (node-postgres) serves requests too, a token per connection; the control, credentials the server does not know, is an IamAuthError",
  SLOW,
  async () => {
    const before = dsql.stats.logins.length;
    const r = await ask({
      client: "pg",
      ...through(dsql),
      queries: 3,
      max: 3,
      sleepMs: 50,
      tokenReuse: false,
      tickingClock: true,
    });
    assert.equal(r.ok, true, JSON.stringify(r.error) + log);
    assert.equal(new Set(r.pids).size, 3);
    assert.equal(r.user, "postgres"); // the gateway relays as the upstream's superuser
    assert.ok(r.connects.length === 3 && r.connects.every((c) => c.ok && c.tokenSent));
    const logins = since(dsql, before);
    assert.equal(logins.length, 3);
    assert.ok(logins.every((l) => l.accepted && l.tls));
    assert.equal(new Set(logins.map((l) => l.tokenId)).size, 3);
    const wrong = await ask({ client: "pg", ...through(dsql), credentials: "stale" });
    assert.equal(wrong.ok, false);
    assert.equal(wrong.error?.name, "IamAuthError", JSON.stringify(wrong.error));
    assert.equal(wrong.requests, r.requests + 1); // the same isolate
    // An RDS endpoint: refused at creation as with postgres.js; the opt-out logs in.
    const rdsBefore = rds.stats.logins.length;
    const refused = await ask({ client: "pg", ...through(rds) });
    assert.equal(refused.error?.name, "TypeError");
    assert.match(refused.error!.message, /RDS Proxy/);
    assert.equal(rds.stats.logins.length, rdsBefore);
    const optedOut = await ask({ client: "pg", ...through(rds), dangerouslyUsePlatformCas: true });
    assert.equal(optedOut.ok, true, JSON.stringify(optedOut.error));
    assert.equal(since(rds, rdsBefore).filter((l) => l.accepted && l.tls).length, 1);
  },
);

test(
  "workerd (nodejs_compat): pg-iam:connect and pg-iam:token fire for iamPostgres() over cloudflare:sockets, as on Node (tests/e2e/diagnostics.test.ts), each trace's timings onIamConnect's",
  SLOW,
  async () => {
    const job = {
      client: "iam",
      ...through(rds),
      queries: 2,
      max: 2,
      dangerouslyUsePlatformCas: true,
    };
    const r = await ask({ ...job, channels: true });
    assert.equal(r.ok, true, JSON.stringify(r.error) + log);
    const traces = r.channels!.traces;
    assert.equal(traces.length, 2);
    const totals = r.connects.map((c) => c.timings.totalMs).sort();
    assert.deepEqual(traces.map((t) => (t.timings as { totalMs: number }).totalMs).sort(), totals);
    for (const { events, timings: _, ...c } of traces) {
      assert.deepEqual(events, ["start", "end", "asyncStart", "asyncEnd"]);
      const { tokenReused: __, ...fields } = c;
      assert.deepEqual(fields, {
        driver: "postgres",
        host: "127.0.0.1",
        port: rds.port,
        user: "app",
        database: "postgres",
        service: "rds",
        region: "us-east-1",
        ok: true,
        attempts: 1,
      });
    }
    assert.deepEqual(r.channels!.tokens.map((t) => t.reused).sort(), [false, true]);
    assert.ok(!JSON.stringify(r.channels).includes(KEYS.secretAccessKey));
    assert.doesNotMatch(JSON.stringify(r.channels), /X-Amz-Signature|Action=connect/);
  },
);
