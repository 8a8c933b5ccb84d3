// The socket plan on Cloudflare Workers, on every runtime (forced with `workerd: true`): sockets
// from cloudflare:sockets, and TLS only as far as a Worker can verify it. A target whose
// certificate chains to the RDS CA or another CA of the user's is refused when the client is
// created, saying what works; the same targets off Workers keep their CA (the control). End to end
// on the real workerd: tests/e2e/workerd-postgres.test.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { NODE_BACKEND } from "../../src/connection/socket.ts";
import { socketPlan } from "../../src/connection/socket-plan.ts";
import { WORKERD_BACKEND } from "../../src/connection/socket-workerd.ts";
import { parseTarget } from "../../src/connection/target.ts";
import { signingConfig } from "../../src/connection/sign.ts";
import { rdsCa, withRdsCa } from "../../src/connection/tls.ts";
import { iamPostgres } from "../../src/postgres/mod.ts";

const KEYS = { accessKeyId: "AKIDPGIAMTEST", secretAccessKey: "pg-iam/test/secret/key/0123456789" };
const RDS = "orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com";
const PROXY = "orders.proxy-c9akciq32.us-east-1.rds.amazonaws.com";
const DSQL = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";

function plan(
  url: string,
  o: { workerd?: boolean; ssl?: Record<string, unknown>; platformCas?: boolean } = {},
) {
  const target = parseTarget({ url });
  const host = target.host!;
  return socketPlan({
    target,
    host,
    port: 5432,
    signing: signingConfig({ host, port: 5432, user: "app", credentials: KEYS }, 30),
    tlsOverride: o.ssl,
    connectTimeoutMs: 30_000,
    workerd: o.workerd ?? true,
    dangerouslyUsePlatformCas: o.platformCas,
  });
}

test("socketPlan() on workerd: cloudflare:sockets, verify-full for DSQL and RDS Proxy against the platform's CAs", () => {
  for (const host of [DSQL, PROXY]) {
    const p = plan(`postgres://app@${host}/postgres`);
    assert.equal(p.backend, WORKERD_BACKEND);
    assert.equal(p.tls!.mode, "verify-full");
    assert.equal(p.tls!.name, host);
    assert.match(p.tls!.trust, /the CAs the Worker's runtime trusts/);
    assert.equal(p.tls!.options.ca, undefined);
  }
  // sslrootcert=system asks for the platform's CAs: fine on Workers, even for RDS.
  assert.equal(plan(`postgres://app@${RDS}/postgres?sslrootcert=system`).tls!.name, RDS);
  // sslmode=disable stays plaintext (it needs dangerouslyDisableTls, checked by the target).
  const target = parseTarget({
    url: `postgres://app@${DSQL}/postgres?sslmode=disable`,
    dangerouslyDisableTls: true,
  });
  assert.equal(
    socketPlan({
      target,
      host: DSQL,
      port: 5432,
      signing: signingConfig({ host: DSQL, port: 5432, user: "app", credentials: KEYS }, 30),
      connectTimeoutMs: 30_000,
      workerd: true,
    }).tls,
    undefined,
  );
});

test("socketPlan() on workerd refuses an RDS or Aurora endpoint with verify-full, naming RDS Proxy, Hyperdrive and dangerouslyUsePlatformCas; off workerd the RDS CA is used (the control)", async () => {
  for (const mode of ["verify-full", "verify-ca", "require"]) {
    assert.throws(() => plan(`postgres://app@${RDS}/postgres?sslmode=${mode}`), (e: Error) => {
      assert.ok(e instanceof TypeError);
      assert.match(e.message, /cannot verify the certificate of "orders\.cluster-/);
      assert.match(e.message, /RDS CA/);
      assert.match(e.message, /RDS Proxy endpoint/);
      assert.match(e.message, /Hyperdrive/);
      assert.match(e.message, /dangerouslyUsePlatformCas: true/);
      return true;
    });
  }
  const node = plan(`postgres://app@${RDS}/postgres`, { workerd: false });
  assert.equal(node.backend, NODE_BACKEND);
  assert.equal(node.tls!.rdsCa, true);
  await withRdsCa(node.tls!);
  assert.deepEqual(node.tls!.options.ca, [...await rdsCa()]);
  // The opt-out: verified against the platform's CAs instead.
  const optedOut = plan(`postgres://app@${RDS}/postgres`, { platformCas: true });
  assert.equal(optedOut.tls!.name, RDS);
  assert.equal(optedOut.tls!.options.ca, undefined);
  assert.ok(!optedOut.tls!.rdsCa);
});

test("socketPlan() on workerd refuses what a Worker's TLS cannot do: another CA, a client certificate, other node:tls options", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ ca: "-----BEGIN CERTIFICATE-----" }, /cannot use the ssl option's ca/],
    [{ cert: "x", key: "y" }, /cannot honour the ssl option's "cert", the ssl option's "key"/],
    [{ rejectUnauthorized: false }, /the ssl option's "rejectUnauthorized".*always verifies/],
  ];
  for (const [ssl, want] of cases) {
    assert.throws(() => plan(`postgres://app@${DSQL}/postgres`, { ssl }), (e: Error) => {
      assert.ok(e instanceof TypeError);
      assert.match(e.message, want);
      return true;
    });
    // The control: the same options off Workers are node:tls options, merged as ever.
    assert.equal(
      plan(`postgres://app@${DSQL}/postgres`, { ssl, workerd: false }).backend,
      NODE_BACKEND,
    );
  }
  assert.throws(
    () => plan(`postgres://app@${DSQL}/postgres?sslrootcert=/etc/ssl/my-ca.pem`),
    /cannot use the sslrootcert file "\/etc\/ssl\/my-ca\.pem" \(the connection string parameter "sslrootcert"\)/,
  );
  // A servername is the one node:tls option that means something there: the name checked.
  const other = "zyxwvutsrqponmlkjihgfedcba.dsql.us-east-1.on.aws";
  assert.equal(
    plan(`postgres://app@${DSQL}/postgres`, { ssl: { servername: other } }).tls!.name,
    other,
  );
});

test("iamPostgres() checks dangerouslyUsePlatformCas is a boolean", () => {
  assert.throws(
    () => iamPostgres({ host: DSQL, credentials: KEYS, dangerouslyUsePlatformCas: "yes" as never }),
    {
      name: "TypeError",
      message: /"dangerouslyUsePlatformCas" option must be a boolean, got "yes"/,
    },
  );
  // Off Workers it changes nothing: the client is built as ever.
  const sql = iamPostgres({ host: RDS, credentials: KEYS, dangerouslyUsePlatformCas: true });
  void sql.end();
});
