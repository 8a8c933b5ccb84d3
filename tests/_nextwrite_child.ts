// One run of postgres.js 3.4.x's `nextWrite` crash (tests/e2e/transaction.test.ts): a transaction whose
// connection the server ends while `fn` awaits something else; once postgres.js has seen the close,
// `fn` returns (AFTER=commit: the COMMIT is sent) or queries again (AFTER=query). DRIVER=plain is
// postgres.js itself, DRIVER=iam iamPostgres() through a gateway. Prints the transaction's error
// code, then "survived" once all is closed; postgres.js 3.4.x instead throws from a setImmediate
// callback and the process exits with the uncaught TypeError.
import process from "node:process";
import postgres from "postgres";
import { iamPostgres } from "../src/postgres/mod.ts";
import { closeTestGateways, RDS, testGateway } from "./_gateway.ts";
import { upstreamPostgres } from "./_postgres.ts";
import { ca } from "./fixtures/tls.ts";

const up = await upstreamPostgres();
let seenClose!: () => void;
const closeSeen = new Promise<void>((resolve) => (seenClose = resolve));
// postgres.js calls `onclose` after it has dropped its socket: the order the crash needs.
const common = { database: "postgres", max: 1, onclose: () => seenClose(), onnotice: () => {} };
let sql: postgres.Sql;
if (process.env.DRIVER === "iam") {
  const keys = { accessKeyId: "AKIDPGIAMNW", secretAccessKey: "pg-iam/nextwrite/secret" };
  const g = await testGateway(keys);
  sql = iamPostgres({
    ...common,
    host: g.host,
    port: g.port,
    user: "app",
    signingHostname: RDS,
    signingPort: 5432,
    credentials: keys,
    ssl: { ca },
  });
} else {
  sql = postgres({ ...common, host: up.host, port: up.port, user: up.user });
}
const admin = postgres({ host: up.host, port: up.port, user: up.user, max: 1 });

/** Resolves once the server runs `query` in session `pid`. */
async function untilRunning(pid: number, query: string): Promise<void> {
  while (true) {
    const rows = await admin`
      select 1 from pg_stat_activity where pid = ${pid} and state = 'active' and query = ${query}`;
    if (rows.length) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

try {
  await sql.begin(async (tx) => {
    const [{ pid }] = await tx`select pg_backend_pid() as pid`;
    if (process.env.AFTER === "inflight") {
      const running = tx`select pg_sleep(30)`.execute();
      await untilRunning(pid, "select pg_sleep(30)");
      await admin`select pg_terminate_backend(${pid})`;
      return await running; // fails: postgres.js then sends ROLLBACK
    }
    await admin`select pg_terminate_backend(${pid})`;
    await closeSeen;
    if (process.env.AFTER === "query") await tx`select 1`;
  });
  console.log("committed");
} catch (error) {
  console.log((error as { code?: string }).code);
}
// A round trip on another connection: postgres.js 3.4.x's write (and crash) is scheduled before
// this query is even sent, and sql.end() would cancel it.
await admin`select 1`;
await Promise.all([sql.end({ timeout: 0 }), admin.end({ timeout: 0 })]);
await closeTestGateways();
console.log("survived");
