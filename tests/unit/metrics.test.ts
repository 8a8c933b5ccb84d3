// The proxy's metrics registry (src/proxy/_metrics.ts) and its Prometheus text exposition, format
// 0.0.4. The expected texts are written out by hand from the format's specification
// (prometheus.io/docs/instrumenting/exposition_formats): no JavaScript parser of it is both
// strict and maintained (parse-prometheus-text-format, last published 2024, accepts a sample with
// no value, an unknown escape and a histogram without +Inf), so the tests pin the exact text.
import { test } from "node:test";
import assert from "node:assert/strict";
import { CONNECT_BUCKETS, Metrics, proxyMetrics } from "../../src/proxy/_metrics.ts";

test("metrics: the exposition of a small registry, exactly: families by name, series by label values, unlabelled ones at 0 from the start", () => {
  const m = new Metrics();
  const requests = m.counter("app_requests_total", "Requests served.", ["method", "code"]);
  const open = m.gauge("app_open", "Connections open.");
  const idle = m.gauge("app_idle", "Idle connections.", ["pool"]);
  const untouched = m.counter("app_untouched_total", "Never counted.");
  requests.inc({ method: "get", code: "200" });
  requests.inc({ code: "200", method: "get" }, 2);
  requests.inc({ method: "get", code: "404" }, 0.5);
  requests.inc({ method: "delete", code: "200" });
  open.inc();
  open.inc(undefined, 4);
  open.dec();
  idle.set(7, { pool: "b" });
  idle.set(-1.5, { pool: "a" });
  idle.dec({ pool: "b" }, 2);
  void untouched;
  assert.equal(
    m.render(),
    [
      "# HELP app_idle Idle connections.",
      "# TYPE app_idle gauge",
      'app_idle{pool="a"} -1.5',
      'app_idle{pool="b"} 5',
      "# HELP app_open Connections open.",
      "# TYPE app_open gauge",
      "app_open 4",
      "# HELP app_requests_total Requests served.",
      "# TYPE app_requests_total counter",
      'app_requests_total{method="delete",code="200"} 1',
      'app_requests_total{method="get",code="200"} 3',
      'app_requests_total{method="get",code="404"} 0.5',
      "# HELP app_untouched_total Never counted.",
      "# TYPE app_untouched_total counter",
      "app_untouched_total 0",
      "",
    ].join("\n"),
  );
  // The same events in another order give the same text.
  const again = new Metrics();
  again.gauge("app_open", "Connections open.").set(4);
  again.counter("app_untouched_total", "Never counted.");
  const idle2 = again.gauge("app_idle", "Idle connections.", ["pool"]);
  idle2.set(5, { pool: "b" });
  idle2.set(-1.5, { pool: "a" });
  const requests2 = again.counter("app_requests_total", "Requests served.", ["method", "code"]);
  requests2.inc({ method: "get", code: "404" }, 0.5);
  requests2.inc({ method: "delete", code: "200" });
  requests2.inc({ method: "get", code: "200" }, 3);
  assert.equal(again.render(), m.render());
  // The control: one event more is a different text.
  requests2.inc({ method: "get", code: "200" });
  assert.notEqual(again.render(), m.render());
  assert.equal(new Metrics().render(), "");
});

test("metrics: label values escape backslash, double quote and newline; HELP escapes backslash and newline only", () => {
  const m = new Metrics();
  const c = m.counter("x_total", 'A "quoted" help\\text\nover two lines.', ["path"]);
  c.inc({ path: 'C:\\DIR\\FILE.TXT "name"\nnext' });
  c.inc({ path: "" });
  c.inc({ path: "ünïcødé {},=" });
  assert.equal(
    m.render(),
    [
      '# HELP x_total A "quoted" help\\\\text\\nover two lines.',
      "# TYPE x_total counter",
      'x_total{path=""} 1',
      'x_total{path="C:\\\\DIR\\\\FILE.TXT \\"name\\"\\nnext"} 1',
      'x_total{path="ünïcødé {},="} 1',
      "",
    ].join("\n"),
  );
  // Every line is one line: the newlines in the help and the label value did not break any.
  assert.equal(m.render().split("\n").length, 6);
  // Values that differ only where an unescaped join would collide stay two series.
  const j = new Metrics();
  const two = j.counter("j_total", "Joined.", ["a", "b"]);
  two.inc({ a: 'x","y', b: "z" });
  two.inc({ a: "x", b: 'y","z' });
  two.inc({ a: "1:x", b: "" });
  two.inc({ a: "", b: "1:x" });
  two.inc({ b: "1:x", a: "" });
  assert.deepEqual(j.render().split("\n").filter((line) => line.startsWith("j_total{")), [
    'j_total{a="",b="1:x"} 2',
    'j_total{a="1:x",b=""} 1',
    'j_total{a="x",b="y\\",\\"z"} 1',
    'j_total{a="x\\",\\"y",b="z"} 1',
  ]);
});

test("metrics: a histogram's buckets are cumulative, with +Inf, _sum and _count; an observation on a bound counts in that bucket", () => {
  const m = new Metrics();
  const h = m.histogram("rt_seconds", "Round trips.", [0.005, 0.1, 1, 2.5], ["kind"]);
  for (const value of [0.001, 0.005, 0.05, 0.1, 3, 40]) h.observe(value, { kind: "q" });
  h.observe(0.25, { kind: "a" });
  const plain = m.histogram("plain_seconds", "Nothing observed.", [1]);
  void plain;
  assert.equal(
    m.render(),
    [
      "# HELP plain_seconds Nothing observed.",
      "# TYPE plain_seconds histogram",
      'plain_seconds_bucket{le="1"} 0',
      'plain_seconds_bucket{le="+Inf"} 0',
      "plain_seconds_sum 0",
      "plain_seconds_count 0",
      "# HELP rt_seconds Round trips.",
      "# TYPE rt_seconds histogram",
      'rt_seconds_bucket{kind="a",le="0.005"} 0',
      'rt_seconds_bucket{kind="a",le="0.1"} 0',
      'rt_seconds_bucket{kind="a",le="1"} 1',
      'rt_seconds_bucket{kind="a",le="2.5"} 1',
      'rt_seconds_bucket{kind="a",le="+Inf"} 1',
      'rt_seconds_sum{kind="a"} 0.25',
      'rt_seconds_count{kind="a"} 1',
      'rt_seconds_bucket{kind="q",le="0.005"} 2',
      'rt_seconds_bucket{kind="q",le="0.1"} 4',
      'rt_seconds_bucket{kind="q",le="1"} 4',
      'rt_seconds_bucket{kind="q",le="2.5"} 4',
      'rt_seconds_bucket{kind="q",le="+Inf"} 6',
      `rt_seconds_sum{kind="q"} ${0.001 + 0.005 + 0.05 + 0.1 + 3 + 40}`,
      'rt_seconds_count{kind="q"} 6',
      "",
    ].join("\n"),
  );
  // Cumulative: every bucket line of a series is at least the one before it, +Inf is the count.
  const q = m.render().split("\n").filter((line) => line.startsWith('rt_seconds_bucket{kind="q"'));
  const counts = q.map((line) => Number(line.split(" ")[1]));
  assert.deepEqual(counts, [...counts].sort((a, b) => a - b));
  // Small and large bounds are written as Go's ParseFloat reads them.
  const tiny = new Metrics();
  tiny.histogram("t_seconds", "Tiny.", [1e-7, 0.0025, 1e21]).observe(1e-8);
  assert.match(tiny.render(), /le="1e-7"\} 1\n.*le="0\.0025"\} 1\n.*le="1e\+21"\} 1\n/s);
});

test("metrics: bad names, labels, buckets and values are a RangeError or TypeError naming them", () => {
  const m = new Metrics();
  const cases: Array<[() => unknown, RegExp, ErrorConstructor]> = [
    [() => m.gauge("1abc", "x"), /gauge name "1abc": not a metric name/, RangeError],
    [() => m.gauge("a-b", "x"), /gauge name "a-b"/, RangeError],
    [() => m.gauge("", "x"), /gauge name ""/, RangeError],
    [
      () => m.counter("requests", "x"),
      /counter "requests": a counter's name ends in _total/,
      RangeError,
    ],
    [() => m.histogram("h b", "x", [1]), /histogram name "h b"/, RangeError],
    [() => m.gauge("g", "x", ["a-b"]), /gauge g: label name "a-b": not a label name/, RangeError],
    [() => m.gauge("g", "x", ["__name"]), /label name "__name"/, RangeError],
    [() => m.gauge("g", "x", ["9a"]), /label name "9a"/, RangeError],
    [() => m.gauge("g", "x", ["a", "a"]), /label name "a" given twice/, RangeError],
    [() => m.histogram("h", "x", [1], ["le"]), /histogram "h": label name "le"/, RangeError],
    [() => m.histogram("h", "x", []), /histogram "h": buckets \[\]/, RangeError],
    [() => m.histogram("h", "x", [1, 1]), /buckets \[1, 1\]/, RangeError],
    [() => m.histogram("h", "x", [2, 1]), /buckets \[2, 1\]/, RangeError],
    [() => m.histogram("h", "x", [1, Infinity]), /buckets \[1, Infinity\]/, RangeError],
    [() => m.gauge("g", 3 as unknown as string), /gauge g: help 3: not a string/, TypeError],
  ];
  for (const [make, message, type] of cases) {
    assert.throws(make, (error: Error) => {
      assert.ok(error instanceof type, `${error}`);
      assert.match(error.message, message);
      return true;
    });
  }
  // A name once taken, also by a histogram's _bucket/_sum/_count, is taken.
  m.histogram("h", "x", [1]);
  assert.throws(() => m.gauge("h_sum", "x"), /gauge h_sum: the name h_sum is taken already/);
  assert.throws(() => m.histogram("h", "x", [1]), /histogram h: the name h is taken already/);
  m.gauge("g", "x", ["a"]);
  assert.throws(() => m.gauge("g", "x"), /the name g is taken/);
  // The control: valid names, colons included, pass.
  m.counter("ns:sub_total", "x", ["_a", "B9"]).inc({ _a: "1", B9: "2" });
  assert.match(m.render(), /^ns:sub_total\{_a="1",B9="2"\} 1$/m);

  const c = m.counter("c_total", "x", ["a"]);
  const g = m.gauge("gg", "x");
  const h = m.histogram("hh", "x", [1]);
  const uses: Array<[() => unknown, RegExp, ErrorConstructor]> = [
    [() => c.inc({ a: "1" }, -1), /c_total: inc by -1: a counter only goes up/, RangeError],
    [() => c.inc({ a: "1" }, NaN), /c_total: inc by NaN/, RangeError],
    [() => c.inc({ a: "1" }, Infinity), /c_total: inc by Infinity/, RangeError],
    [
      () => c.inc({ a: "1", b: "2" } as { a: string }),
      /c_total: label "b": not one of \[a\]/,
      RangeError,
    ],
    [() => c.inc({} as { a: string }), /c_total: label a: undefined: not a string/, TypeError],
    [() => c.inc(), /c_total: label a: undefined/, TypeError],
    [() => c.inc({ a: 1 as unknown as string }), /c_total: label a: 1: not a string/, TypeError],
    [() => g.set(NaN), /gg: set NaN: not a finite number/, RangeError],
    [() => g.inc(undefined, Infinity), /gg: inc by Infinity/, RangeError],
    [() => g.dec(undefined, NaN), /gg: dec by NaN/, RangeError],
    [() => h.observe(NaN), /hh: observe NaN/, RangeError],
    [() => h.observe(1, { le: "2" }), /hh: label "le": not one of \[\]/, RangeError],
  ];
  for (const [use, message, type] of uses) {
    assert.throws(use, (error: Error) => {
      assert.ok(error instanceof type, `${error}`);
      assert.match(error.message, message);
      return true;
    });
  }
  // Nothing of the refused uses was counted; the control: a valid use is.
  assert.doesNotMatch(m.render(), /^c_total\{/m);
  c.inc({ a: "1" });
  assert.match(m.render(), /^c_total\{a="1"\} 1$/m);
});

test("metrics: proxyMetrics renders every pgiam_proxy_ family with HELP and TYPE, each known label value at 0 from the start", () => {
  const metrics = proxyMetrics();
  const families: Record<string, string> = {
    pgiam_proxy_sessions: "gauge",
    pgiam_proxy_startups: "gauge",
    pgiam_proxy_logins_total: "counter",
    pgiam_proxy_tokens_total: "counter",
    pgiam_proxy_upstream_failures_total: "counter",
    pgiam_proxy_connect_seconds: "histogram",
    pgiam_proxy_refused_total: "counter",
    pgiam_proxy_cancels_total: "counter",
    pgiam_proxy_bytes_total: "counter",
  };
  const text = metrics.render();
  const types = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]]);
  assert.deepEqual(Object.fromEntries(types), families);
  assert.equal(types.length, Object.keys(families).length);
  for (const name of Object.keys(families)) {
    assert.match(text, new RegExp(`^# HELP ${name} \\S`, "m"));
  }
  const zero = [
    'pgiam_proxy_logins_total{result="failed"} 0',
    'pgiam_proxy_logins_total{result="ok"} 0',
    'pgiam_proxy_logins_total{result="refused"} 0',
    'pgiam_proxy_tokens_total{reused="false"} 0',
    'pgiam_proxy_tokens_total{reused="true"} 0',
    'pgiam_proxy_upstream_failures_total{step="auth"} 0',
    'pgiam_proxy_upstream_failures_total{step="connect"} 0',
    'pgiam_proxy_upstream_failures_total{step="credentials"} 0',
    'pgiam_proxy_upstream_failures_total{step="tls"} 0',
    'pgiam_proxy_refused_total{code="53300"} 0',
    'pgiam_proxy_refused_total{code="53400"} 0',
    'pgiam_proxy_bytes_total{direction="client_to_server"} 0',
    'pgiam_proxy_bytes_total{direction="server_to_client"} 0',
    "pgiam_proxy_cancels_total 0",
    "pgiam_proxy_sessions 0",
    "pgiam_proxy_startups 0",
    'pgiam_proxy_connect_seconds_bucket{le="0.001"} 0',
    'pgiam_proxy_connect_seconds_bucket{le="10"} 0',
    'pgiam_proxy_connect_seconds_bucket{le="+Inf"} 0',
    "pgiam_proxy_connect_seconds_count 0",
  ];
  const lines = new Set(text.split("\n"));
  for (const line of zero) assert.ok(lines.has(line), line);
  assert.equal(CONNECT_BUCKETS[0], 0.001);
  assert.equal(CONNECT_BUCKETS.at(-1), 10);

  // Each field feeds its family.
  metrics.sessions.inc();
  metrics.startups.set(2);
  metrics.logins.inc({ result: "ok" });
  metrics.tokens.inc({ reused: "true" }, 3);
  metrics.upstreamFailures.inc({ step: "tls" });
  metrics.connectSeconds.observe(0.02);
  metrics.refused.inc({ code: "53300" });
  metrics.cancels.inc();
  metrics.bytes.inc({ direction: "server_to_client" }, 8192);
  const after = new Set(metrics.render().split("\n"));
  for (
    const line of [
      "pgiam_proxy_sessions 1",
      "pgiam_proxy_startups 2",
      'pgiam_proxy_logins_total{result="ok"} 1',
      'pgiam_proxy_tokens_total{reused="true"} 3',
      'pgiam_proxy_upstream_failures_total{step="tls"} 1',
      'pgiam_proxy_connect_seconds_bucket{le="0.01"} 0',
      'pgiam_proxy_connect_seconds_bucket{le="0.025"} 1',
      "pgiam_proxy_connect_seconds_sum 0.02",
      'pgiam_proxy_refused_total{code="53300"} 1',
      "pgiam_proxy_cancels_total 1",
      'pgiam_proxy_bytes_total{direction="server_to_client"} 8192',
    ]
  ) assert.ok(after.has(line), line);
  // Two registries are two: the proxy's counts are its own.
  assert.ok(new Set(proxyMetrics().render().split("\n")).has("pgiam_proxy_sessions 0"));
});
