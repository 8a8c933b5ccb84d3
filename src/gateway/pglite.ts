// The embedded default upstream: PostgreSQL compiled to WebAssembly (PGlite, in memory) behind a
// PostgreSQL wire-protocol TCP server (pglite-socket), so nothing has to be installed on the
// system. Both packages are optional: they are loaded with dynamic import() only when this starts,
// so the rest of the package never needs them.
//
// PGlite itself is single-connection; pglite-socket multiplexes several client connections onto
// it, and keeps the database to one connection while that connection's transaction is open. It
// does so one message at a time, though, so the extended-query messages of two connections
// (Parse, Bind, Execute, … up to Sync) can interleave on the one session and clobber each other's
// unnamed statement: postgres.js 4 returned another query's (empty) result and hung, 3.x was
// spared by how its writes happened to fall. `exclusiveBatches` keeps the database to one
// connection from the first message of a batch to its end (Sync, a simple Query, or a COPY's
// end) as well. It accepts any user name and password (no authentication).

import { importOptional } from "../core/env.ts";

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
  PGlite: { create(): Promise<PgliteDb> };
}
interface PgliteDb {
  close(): Promise<void>;
  isInTransaction(): boolean;
  exec(sql: string): Promise<unknown>;
  execProtocolRawStream(
    message: Uint8Array,
    options: { onRawData: (data: Uint8Array) => void },
  ): Promise<unknown>;
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
    db: exclusiveBatches(db),
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

// Frontend message types that end a batch: the server answers ReadyForQuery after each (a
// StartupMessage, which has no type byte, starts with a length byte of 0 and ends one too).
const SYNC = 0x53, QUERY = 0x51, TERMINATE = 0x58, COPY_DONE = 0x63, COPY_FAIL = 0x66;
const COPY_IN = 0x47, COPY_BOTH = 0x57; // the server's answers that start a COPY from the client

/**
 * The database as pglite-socket sees it: "in a transaction" (so its queue serves only the
 * connection it served last) also from a batch's first message to its end. A connection that
 * drops mid-batch gets pglite-socket's ROLLBACK, which ends the batch too.
 */
function exclusiveBatches(db: PgliteDb): PgliteDb {
  let midBatch = false;
  return new Proxy(db, {
    get(target, key) {
      if (key === "isInTransaction") return () => midBatch || target.isInTransaction();
      if (key === "exec") {
        return (sql: string) => {
          midBatch = false;
          return target.exec(sql);
        };
      }
      if (key === "execProtocolRawStream") {
        return (message: Uint8Array, options: { onRawData: (data: Uint8Array) => void }) => {
          const type = message[0];
          const ends = type === 0 || type === SYNC || type === QUERY || type === TERMINATE ||
            type === COPY_DONE || type === COPY_FAIL;
          const copying = messageTypes();
          return target.execProtocolRawStream(message, {
            onRawData: (data) => {
              copying.push(data);
              options.onRawData(data);
            },
          }).finally(() => {
            midBatch = copying.seen(COPY_IN) || copying.seen(COPY_BOTH) || !ends;
          });
        };
      }
      const value = Reflect.get(target, key);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** Notes the type of every backend message in a stream of chunks (headers may be split). */
function messageTypes(): { push(chunk: Uint8Array): void; seen(type: number): boolean } {
  const types = new Set<number>();
  let skip = 0; // body bytes of the current message still to come
  let header: number[] = []; // a header split across chunks
  return {
    push(chunk) {
      let i = 0;
      while (i < chunk.length) {
        if (skip > 0) {
          const n = Math.min(skip, chunk.length - i);
          skip -= n;
          i += n;
          continue;
        }
        header.push(chunk[i++]);
        if (header.length === 5) {
          types.add(header[0]);
          skip = ((header[1] << 24) | (header[2] << 16) | (header[3] << 8) | header[4]) - 4;
          header = [];
        }
      }
    },
    seen: (type) => types.has(type),
  };
}
