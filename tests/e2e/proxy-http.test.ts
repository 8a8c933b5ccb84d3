// The proxy's sidecar HTTP port (src/proxy/_http.ts): /livez, /readyz and /metrics through the
// runtime's own fetch and through a raw socket, readiness toggling, and close() releasing the port
// with connections still open.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { once } from "node:events";
import { startHttp } from "../../src/proxy/_http.ts";
import { proxyMetrics } from "../../src/proxy/_metrics.ts";

const METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8";

async function get(
  url: string,
  init?: RequestInit,
): Promise<{ status: number; body: string; headers: Headers }> {
  const response = await fetch(url, init);
  return { status: response.status, body: await response.text(), headers: response.headers };
}

// Resolves with what `socket` has received once `done` holds for it; rejects if it closes first.
function until(socket: net.Socket, done: (text: string) => boolean): Promise<string> {
  let text = "";
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      text += chunk.toString("latin1");
      if (done(text)) {
        socket.off("data", onData).off("close", onClose);
        resolve(text);
      }
    };
    const onClose = () => reject(new Error(`closed after ${JSON.stringify(text)}`));
    socket.on("data", onData).once("close", onClose);
  });
}

// True when `text` holds `count` whole responses whose bodies are `body` each.
const responses = (count: number, body: string) => (text: string) =>
  text.split("\r\n\r\n").length === count + 1 && text.endsWith(`\r\n\r\n${body}`);

async function connect(port: number): Promise<net.Socket> {
  const socket = net.connect(port, "127.0.0.1");
  await once(socket, "connect");
  return socket;
}

test("proxy http: GET and HEAD /livez, /readyz and /metrics; 404 for another path, 405 for another method", async () => {
  const metrics = proxyMetrics();
  let scrapes = 0;
  const server = await startHttp({
    host: "127.0.0.1",
    port: 0,
    metrics: () => {
      scrapes++;
      metrics.cancels.inc();
      return metrics.render();
    },
    ready: () => true,
  });
  try {
    assert.equal(server.host, "127.0.0.1");
    assert.ok(server.port > 0, `port ${server.port}`);
    const base = `http://127.0.0.1:${server.port}`;

    for (const path of ["/livez", "/readyz"]) {
      const r = await get(base + path);
      assert.deepEqual([r.status, r.body], [200, "ok"], path);
      assert.equal(r.headers.get("content-type"), "text/plain; charset=utf-8");
      assert.equal(r.headers.get("cache-control"), "no-store");
    }

    // Each scrape renders anew: the counter the metrics function bumps shows 1, then 2.
    const first = await get(`${base}/metrics`);
    assert.equal(first.status, 200);
    assert.equal(first.headers.get("content-type"), METRICS_TYPE);
    assert.match(first.body, /^# HELP pgiam_proxy_bytes_total /);
    assert.match(first.body, /^pgiam_proxy_cancels_total 1$/m);
    assert.equal(
      Number(first.headers.get("content-length")),
      new TextEncoder().encode(first.body).length,
    );
    const second = await get(`${base}/metrics?name[]=pgiam_proxy_sessions`);
    assert.equal(second.status, 200);
    assert.match(second.body, /^pgiam_proxy_cancels_total 2$/m);
    assert.equal(scrapes, 2);

    // HEAD: the same status and length, no body.
    for (const [path, length] of [["/livez", 2], ["/readyz", 2], ["/metrics", first.body.length]]) {
      const r = await get(base + path, { method: "HEAD" });
      assert.deepEqual([r.status, r.body], [200, ""], String(path));
      assert.equal(Number(r.headers.get("content-length")), length, String(path));
    }
    // HEAD /metrics renders, to give the length GET would have.
    assert.equal(scrapes, 3);
    // fetch drops whatever follows a HEAD response's head; on the wire, a HEAD answered with a
    // body would be read as the start of the next response on the connection. Two requests sent
    // at once: after a HEAD the next response starts right after the head; the control, after a
    // GET, after the body.
    const pipelined = async (method: string) => {
      const socket = await connect(server.port);
      socket.write(
        `${method} /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n` +
          "GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
      );
      const wire = await until(socket, responses(2, "ok"));
      socket.destroy();
      return wire.split("\r\n\r\n");
    };
    const afterHead = await pipelined("HEAD");
    assert.match(afterHead[0], /^HTTP\/1\.1 200 OK\r\n[^]*^content-length: 2$/im);
    assert.match(afterHead[1], /^HTTP\/1\.1 200 OK\r\n/);
    assert.equal(afterHead[2], "ok");
    const afterGet = await pipelined("GET");
    assert.match(afterGet[1], /^okHTTP\/1\.1 200 OK\r\n/);

    // Another method on a served path: 405 with Allow, the body sent (unread) or not.
    for (const method of ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"]) {
      for (const path of ["/livez", "/readyz", "/metrics"]) {
        const body = method === "POST" || method === "PUT" ? "x".repeat(100) : undefined;
        const r = await get(base + path, { method, body });
        assert.deepEqual([r.status, r.body], [405, "method not allowed"], `${method} ${path}`);
        assert.equal(r.headers.get("allow"), "GET, HEAD");
      }
    }
    // The control: none of those reached the metrics.
    assert.equal(scrapes, 3);

    // Any other path: 404, whatever the method.
    for (const path of ["/", "/metrics/", "/metricsx", "/livez/x", "/READYZ", "/healthz"]) {
      for (const method of ["GET", "HEAD", "POST"]) {
        const r = await get(base + path, { method });
        assert.equal(r.status, 404, `${method} ${path}`);
        assert.equal(r.body, method === "HEAD" ? "" : "not found", `${method} ${path}`);
      }
    }
    assert.equal(scrapes, 3);
  } finally {
    await server.close();
  }
});

test("proxy http: /readyz is 503 while ready() is false (or throws) and 200 again when true; /livez stays 200; a failing metrics() is a 500 that tells nothing of it", async () => {
  let ready: boolean | "throw" = true;
  let failing = false;
  const server = await startHttp({
    host: "127.0.0.1",
    port: 0,
    metrics: () => {
      if (failing) throw new Error("secret-token-abc");
      return "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n";
    },
    ready: () => {
      if (ready === "throw") throw new Error("secret-token-abc");
      return ready;
    },
  });
  try {
    const base = `http://127.0.0.1:${server.port}`;
    const status = async (path: string) => {
      const r = await get(base + path);
      return `${r.status} ${r.body}`;
    };
    assert.equal(await status("/readyz"), "200 ok");
    ready = false;
    assert.equal(await status("/readyz"), "503 not ready");
    assert.equal((await get(`${base}/readyz`, { method: "HEAD" })).status, 503);
    assert.equal(await status("/livez"), "200 ok");
    ready = true;
    assert.equal(await status("/readyz"), "200 ok");
    ready = "throw";
    assert.equal(await status("/readyz"), "503 not ready");
    ready = true;
    assert.equal(await status("/readyz"), "200 ok");

    assert.equal(
      await status("/metrics"),
      "200 # HELP a_total A.\n# TYPE a_total counter\na_total 1\n",
    );
    failing = true;
    const r = await get(`${base}/metrics`);
    assert.deepEqual([r.status, r.body], [500, "metrics failed"]);
    assert.doesNotMatch(JSON.stringify([...r.headers]), /secret/);
    assert.equal(await status("/livez"), "200 ok");
  } finally {
    await server.close();
  }
});

test("proxy http: close() frees the port (a second listen on it then succeeds) and ends kept-alive and half-sent connections instead of waiting for them", async () => {
  const server = await startHttp({
    host: "127.0.0.1",
    port: 0,
    metrics: () => "",
    ready: () => true,
  });
  const { port } = server;
  // "listening", or the error code of a second listen on the port.
  const listen = async () => {
    const other = net.createServer();
    const result = await new Promise<string>((resolve) => {
      other.once("error", (error: NodeJS.ErrnoException) => resolve(String(error.code)));
      other.listen(port, "127.0.0.1", () => resolve("listening"));
    });
    if (other.listening) await new Promise((resolve) => other.close(resolve));
    return result;
  };

  // A kept-alive connection: two requests answered on it, and it stays open.
  const kept = await connect(port);
  const request = "GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n";
  kept.write(request);
  const one = await until(kept, responses(1, "ok"));
  assert.match(one, /^HTTP\/1\.1 200 /);
  assert.doesNotMatch(one, /^connection: close/im);
  kept.write(request);
  await until(kept, responses(1, "ok"));
  // A connection whose request head is half sent, which the server waits on.
  const half = await connect(port);
  half.write("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n");
  // A request with a body it does not read: answered, and that connection closed.
  const withBody = await connect(port);
  withBody.write("POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\n");
  const refused = await until(withBody, responses(1, "method not allowed"));
  assert.match(refused, /^HTTP\/1\.1 405 /);
  assert.match(refused, /^connection: close\r$/im);
  await once(withBody, "close");

  // The control: the port is taken while the server listens.
  assert.equal(await listen(), "EADDRINUSE");
  assert.ok(!kept.destroyed && !half.destroyed);

  // close() resolves with both connections open at its start: it ends them itself (neither
  // client ends its side), rather than waiting for them to time out.
  const keptClosed = once(kept, "close");
  const halfClosed = once(half, "close");
  await server.close();
  await Promise.all([keptClosed, halfClosed]);
  assert.equal(await listen(), "listening");
  // A second close() is the first.
  await server.close();
  await assert.rejects(fetch(`http://127.0.0.1:${port}/livez`));
});

test("proxy http: bad options are a TypeError or RangeError naming them; a taken port rejects", async () => {
  const good = { host: "127.0.0.1", port: 0, metrics: () => "", ready: () => true };
  await assert.rejects(startHttp({ ...good, host: "" }), /TypeError: http host ""/);
  await assert.rejects(startHttp({ ...good, port: 65536 }), /RangeError: http port 65536/);
  await assert.rejects(startHttp({ ...good, port: 1.5 }), /RangeError: http port 1\.5/);
  await assert.rejects(startHttp({ ...good, port: -1 }), /RangeError: http port -1/);
  await assert.rejects(
    startHttp({ ...good, metrics: "x" as unknown as () => string }),
    /TypeError: http metrics x: not a function/,
  );
  await assert.rejects(
    startHttp({ ...good, ready: undefined as unknown as () => boolean }),
    /TypeError: http ready undefined: not a function/,
  );
  const first = await startHttp(good);
  try {
    await assert.rejects(startHttp({ ...good, port: first.port }), { code: "EADDRINUSE" });
  } finally {
    await first.close();
  }
});
