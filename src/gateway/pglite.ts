// The embedded default upstream: PostgreSQL compiled to WebAssembly (PGlite, in memory) behind a
// PostgreSQL wire-protocol TCP server (pglite-socket), so nothing has to be installed on the
// system. Both packages are optional: they are loaded with dynamic import() only when this starts,
// so the rest of the package never needs them.
//
// PGlite itself is single-connection; pglite-socket multiplexes several client connections onto
// it, one protocol message batch at a time (an open transaction keeps the database to its
// connection until it ends). It accepts any user name and password (no authentication).

import { importOptional } from "../core/_env.ts";

/** A running embedded server. */
export interface PgliteServer {
  /** The address it listens on (127.0.0.1 unless asked otherwise). */
  host: string;
  /** Its TCP port (a free one chosen by the system unless asked otherwise). */
  port: number;
  /** Stops listening, drops the client connections, and closes the database. */
  close(): Promise<void>;
}

/** Options of {@link startPglite}. */
export interface PgliteOptions {
  /** Address to listen on. Default 127.0.0.1. */
  host?: string;
  /** Port to listen on. Default 0: a free port chosen by the system. */
  port?: number;
  /**
   * How many client connections may be open at once (more are refused). Default 100. Queries of
   * different connections run one after another, not in parallel.
   */
  maxConnections?: number;
}

// The parts of the two packages used here (they are loaded by computed name, so untyped).
interface PgliteModule {
  PGlite: { create(): Promise<{ close(): Promise<void> }> };
}
interface SocketModule {
  PGLiteSocketServer: new (options: {
    db: unknown;
    host: string;
    port: number;
    maxConnections: number;
  }) => { start(): Promise<void>; stop(): Promise<void>; getServerConn(): string };
}

const PACKAGES = ["@electric-sql/pglite", "@electric-sql/pglite-socket"];

function missing(cause: unknown): Error {
  return new Error(
    `The embedded PostgreSQL server needs the optional packages ${PACKAGES.join(" and ")}, ` +
      `which could not be loaded: install them (npm install ${PACKAGES.join(" ")}; on Deno, ` +
      `deno add ${PACKAGES.map((p) => `npm:${p}`).join(" ")}), or use a PostgreSQL server of ` +
      `your own (${String((cause as Error)?.message ?? cause)})`,
    { cause },
  );
}

/** Starts an in-memory PGlite database behind a TCP server and resolves once it listens. */
export async function startPglite(options: PgliteOptions = {}): Promise<PgliteServer> {
  let modules;
  try {
    modules = await Promise.all([
      importOptional("@electric-sql/pglite", "^0.5"),
      importOptional("@electric-sql/pglite-socket", "^0.2"),
    ]);
  } catch (cause) {
    throw missing(cause);
  }
  const [{ PGlite }, { PGLiteSocketServer }] = modules as unknown as [PgliteModule, SocketModule];
  const db = await PGlite.create();
  const host = options.host ?? "127.0.0.1";
  const server = new PGLiteSocketServer({
    db,
    host,
    port: options.port ?? 0,
    maxConnections: options.maxConnections ?? 100,
  });
  try {
    await server.start();
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
  // The server keeps the bound port (port 0 resolved) private; getServerConn() is "host:port".
  const port = Number(server.getServerConn().split(":").pop());
  let closing: Promise<void> | undefined;
  return {
    host,
    port,
    close() {
      closing ??= (async () => {
        try {
          await server.stop();
        } finally {
          await db.close();
        }
      })();
      return closing;
    },
  };
}
