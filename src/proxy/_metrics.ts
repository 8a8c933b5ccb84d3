// The proxy's metrics and their Prometheus text exposition (format 0.0.4). Written here instead of
// taking prom-client: prom-client is Node-only (it brings cluster, process and GC collectors) and
// would be the proxy's only runtime dependency, while the counters, gauges and histograms the proxy
// keeps and their exposition text are a few dozen lines. Web APIs only, like the core.

import type { ConnectStep } from "../connection/errors.ts";

export type { ConnectStep };

/** A series' label values, by label name. */
export type LabelValues = Readonly<Record<string, string>>;

/** A counter: a value that only goes up. */
export interface Counter<L extends LabelValues = LabelValues> {
  /**
   * Adds `by` (default 1; finite, not negative) to the series of `labels`.
   *
   * @example
   * ```ts ignore
   * metrics.counter("pgiam_proxy_cancels_total", "Cancel requests forwarded.").inc();
   * ```
   */
  inc(labels?: L, by?: number): void;
}

/** A gauge: a value that goes up and down. */
export interface Gauge<L extends LabelValues = LabelValues> {
  /**
   * Sets the series of `labels` to `value` (finite).
   *
   * @example
   * ```ts ignore
   * metrics.gauge("pgiam_proxy_sessions", "Open sessions.").set(3);
   * ```
   */
  set(value: number, labels?: L): void;
  /**
   * Adds `by` (default 1, finite) to the series of `labels`.
   *
   * @example
   * ```ts ignore
   * sessions.inc();
   * ```
   */
  inc(labels?: L, by?: number): void;
  /**
   * Subtracts `by` (default 1, finite) from the series of `labels`.
   *
   * @example
   * ```ts ignore
   * sessions.dec();
   * ```
   */
  dec(labels?: L, by?: number): void;
}

/** A histogram: observations counted into buckets by upper bound, with their sum and count. */
export interface Histogram<L extends LabelValues = LabelValues> {
  /**
   * Counts `value` (finite) into the series of `labels`.
   *
   * @example
   * ```ts ignore
   * connectSeconds.observe(0.042);
   * ```
   */
  observe(value: number, labels?: L): void;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

type Kind = "counter" | "gauge" | "histogram";

interface Series {
  labels: string[];
  value: number;
  // Histograms: per-bucket counts (not cumulative), then the sum; value is the count.
  buckets?: number[];
  sum?: number;
}

interface Family {
  name: string;
  help: string;
  kind: Kind;
  labelNames: readonly string[];
  buckets?: readonly number[];
  series: Map<string, Series>;
}

/**
 * A registry of counters, gauges and histograms, rendered as Prometheus's text exposition format
 * (version 0.0.4): families in name order, series in label-value order. A family without labels
 * shows its one series from the start (0); a labelled one shows the series it has been given.
 *
 * @example
 * ```ts ignore
 * const metrics = new Metrics();
 * const requests = metrics.counter("app_requests_total", "Requests served.", ["code"]);
 * requests.inc({ code: "200" });
 * metrics.render(); // "# HELP app_requests_total Requests served.\n# TYPE app_requests_total counter\n…"
 * ```
 */
export class Metrics {
  readonly #families = new Map<string, Family>();
  // Every sample name taken, so that a histogram's _bucket/_sum/_count cannot clash with another.
  readonly #samples = new Set<string>();

  /**
   * A counter; its name must end in `_total`.
   *
   * @param name The metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`, ending in `_total`).
   * @param help What it counts, for a person.
   * @param labelNames The label names every series has, in order.
   * @example
   * ```ts ignore
   * const logins = new Metrics().counter("pgiam_proxy_logins_total", "Logins.", ["result"]);
   * logins.inc({ result: "ok" });
   * ```
   */
  counter<L extends LabelValues = LabelValues>(
    name: string,
    help: string,
    labelNames: readonly (keyof L & string)[] = [],
  ): Counter<L> {
    if (typeof name === "string" && !name.endsWith("_total")) {
      throw new RangeError(`counter ${JSON.stringify(name)}: a counter's name ends in _total`);
    }
    const family = this.#add(name, help, "counter", labelNames);
    return {
      inc: (labels, by = 1) => {
        if (typeof by !== "number" || !(by >= 0) || by === Infinity) {
          throw new RangeError(
            `${name}: inc by ${String(by)}: a counter only goes up, by finite steps`,
          );
        }
        this.#series(family, labels).value += by;
      },
    };
  }

  /**
   * A gauge.
   *
   * @param name The metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
   * @param help What it measures, for a person.
   * @param labelNames The label names every series has, in order.
   * @example
   * ```ts ignore
   * const sessions = new Metrics().gauge("pgiam_proxy_sessions", "Open sessions.");
   * sessions.inc();
   * ```
   */
  gauge<L extends LabelValues = LabelValues>(
    name: string,
    help: string,
    labelNames: readonly (keyof L & string)[] = [],
  ): Gauge<L> {
    const family = this.#add(name, help, "gauge", labelNames);
    const add = (labels: L | undefined, by: number) => {
      this.#series(family, labels).value += by;
    };
    return {
      set: (value, labels) => {
        finite(name, "set", value);
        this.#series(family, labels).value = value;
      },
      inc: (labels, by = 1) => add(labels, finite(name, "inc by", by)),
      dec: (labels, by = 1) => add(labels, -finite(name, "dec by", by)),
    };
  }

  /**
   * A histogram: each observation is counted in the first bucket whose upper bound it does not
   * exceed (rendered cumulatively, with `+Inf`), and added to the sum.
   *
   * @param name The metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
   * @param help What it measures, for a person.
   * @param buckets The buckets' upper bounds: finite, strictly increasing (`+Inf` is added).
   * @param labelNames The label names every series has, in order (not `le`).
   * @example
   * ```ts ignore
   * const seconds = new Metrics().histogram("app_seconds", "Time taken.", [0.1, 1, 10]);
   * seconds.observe(0.25);
   * ```
   */
  histogram<L extends LabelValues = LabelValues>(
    name: string,
    help: string,
    buckets: readonly number[],
    labelNames: readonly (keyof L & string)[] = [],
  ): Histogram<L> {
    if (
      !Array.isArray(buckets) || buckets.length === 0 ||
      !buckets.every((b, i) => Number.isFinite(b) && (i === 0 || b > buckets[i - 1]))
    ) {
      throw new RangeError(
        `histogram ${JSON.stringify(name)}: buckets ${
          Array.isArray(buckets) ? `[${buckets.join(", ")}]` : String(buckets)
        }: finite upper bounds in increasing order, at least one (+Inf is added)`,
      );
    }
    if (Array.isArray(labelNames) && labelNames.includes("le" as keyof L & string)) {
      throw new RangeError(`histogram ${JSON.stringify(name)}: label name "le" is the buckets'`);
    }
    const family = this.#add(name, help, "histogram", labelNames, [...buckets]);
    return {
      observe: (value, labels) => {
        finite(name, "observe", value);
        const series = this.#series(family, labels);
        let i = 0;
        while (i < buckets.length && value > buckets[i]) i++;
        if (i < buckets.length) series.buckets![i]++;
        series.sum! += value;
        series.value++;
      },
    };
  }

  /**
   * The text exposition of every metric (format 0.0.4), ending in a newline.
   *
   * @example
   * ```ts ignore
   * response.end(metrics.render());
   * ```
   */
  render(): string {
    let out = "";
    for (const family of [...this.#families.values()].sort((a, b) => compare(a.name, b.name))) {
      const { name, kind, labelNames } = family;
      out += `# HELP ${name} ${family.help.replaceAll("\\", "\\\\").replaceAll("\n", "\\n")}\n`;
      out += `# TYPE ${name} ${kind}\n`;
      const all = [...family.series.values()].sort((a, b) => compareLabels(a.labels, b.labels));
      for (const series of all) {
        const pairs = labelNames.map((label, i) => `${label}="${escape(series.labels[i])}"`);
        if (kind !== "histogram") {
          out += `${name}${braces(pairs)} ${number(series.value)}\n`;
          continue;
        }
        let cumulative = 0;
        family.buckets!.forEach((le, i) => {
          cumulative += series.buckets![i];
          out += `${name}_bucket${braces([...pairs, `le="${number(le)}"`])} ${cumulative}\n`;
        });
        out += `${name}_bucket${braces([...pairs, `le="+Inf"`])} ${series.value}\n`;
        out += `${name}_sum${braces(pairs)} ${number(series.sum!)}\n`;
        out += `${name}_count${braces(pairs)} ${series.value}\n`;
      }
    }
    return out;
  }

  #add(
    name: string,
    help: string,
    kind: Kind,
    labelNames: readonly string[],
    buckets?: readonly number[],
  ): Family {
    if (typeof name !== "string" || !METRIC_NAME.test(name)) {
      throw new RangeError(`${kind} name ${JSON.stringify(name)}: not a metric name`);
    }
    if (typeof help !== "string") {
      throw new TypeError(`${kind} ${name}: help ${String(help)}: not a string`);
    }
    if (!Array.isArray(labelNames)) {
      throw new TypeError(`${kind} ${name}: labelNames ${String(labelNames)}: not an array`);
    }
    for (const [i, label] of labelNames.entries()) {
      if (typeof label !== "string" || !LABEL_NAME.test(label) || label.startsWith("__")) {
        throw new RangeError(
          `${kind} ${name}: label name ${JSON.stringify(label)}: not a label name` +
            " ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
        );
      }
      if (labelNames.indexOf(label) !== i) {
        throw new RangeError(`${kind} ${name}: label name ${JSON.stringify(label)} given twice`);
      }
    }
    const samples = kind === "histogram"
      ? [name, `${name}_bucket`, `${name}_sum`, `${name}_count`]
      : [name];
    const taken = samples.find((sample) => this.#samples.has(sample));
    if (taken !== undefined) {
      throw new RangeError(`${kind} ${name}: the name ${taken} is taken already`);
    }
    for (const sample of samples) this.#samples.add(sample);
    const family: Family = {
      name,
      help,
      kind,
      labelNames: [...labelNames],
      buckets,
      series: new Map(),
    };
    this.#families.set(name, family);
    if (labelNames.length === 0) this.#series(family, undefined);
    return family;
  }

  // The series of `labels` (exactly the family's label names, string values), made at first use.
  // Called per relayed chunk (the bytes counter): no allocation once the series exists.
  #series(family: Family, labels: LabelValues | undefined): Series {
    const { name, labelNames } = family;
    if (labels !== undefined && (typeof labels !== "object" || labels === null)) {
      throw new TypeError(`${name}: labels ${String(labels)}: not an object`);
    }
    let key = "";
    let count = 0;
    for (const label of labelNames) {
      const value = labels?.[label];
      if (typeof value !== "string") {
        throw new TypeError(`${name}: label ${label}: ${String(value)}: not a string`);
      }
      // One label: its value; more: length-prefixed, so that no two lists of values make one key.
      key = labelNames.length === 1 ? value : `${key}${value.length}:${value}`;
      count++;
    }
    for (const _ in labels) count--;
    if (count !== 0) {
      const extra = Object.keys(labels!).find((label) => !labelNames.includes(label));
      throw new RangeError(
        `${name}: label ${JSON.stringify(extra)}: not one of [${labelNames.join(", ")}]`,
      );
    }
    let series = family.series.get(key);
    if (series === undefined) {
      series = { labels: labelNames.map((label) => labels![label]), value: 0 };
      if (family.buckets) {
        series.buckets = family.buckets.map(() => 0);
        series.sum = 0;
      }
      family.series.set(key, series);
    }
    return series;
  }
}

function finite(name: string, verb: string, value: number): number {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new RangeError(`${name}: ${verb} ${String(value)}: not a finite number`);
  }
  return value;
}

// Label values escape backslash, double quote and newline; HELP text only backslash and newline.
function escape(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function braces(pairs: string[]): string {
  return pairs.length === 0 ? "" : `{${pairs.join(",")}}`;
}

// Go's ParseFloat, which Prometheus reads values with, takes JavaScript's number text as it is
// ("0.005", "1e-7", "1e+21"); only the infinities are spelled otherwise.
function number(value: number): string {
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

// By UTF-16 code unit, not locale: the same order everywhere.
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareLabels(a: string[], b: string[]): number {
  for (let i = 0; i < a.length; i++) {
    const c = compare(a[i], b[i]);
    if (c !== 0) return c;
  }
  return 0;
}

/** How a client's login ended: logged in, refused by the proxy (a limit), or failed upstream. */
export type LoginResult = "ok" | "refused" | "failed";

/** The SQLSTATE a client was refused with: too many connections (53300), the connection rate (53400). */
export type RefusedCode = "53300" | "53400";

/** The direction bytes are relayed in. */
export type Direction = "client_to_server" | "server_to_client";

/** The proxy's metrics, each named `pgiam_proxy_*`, and their exposition. */
export interface ProxyMetrics {
  /** `pgiam_proxy_sessions` (gauge): sessions open, logged in upstream and relaying. */
  readonly sessions: Gauge<Record<never, string>>;
  /** `pgiam_proxy_startups` (gauge): clients connected and logging in. */
  readonly startups: Gauge<Record<never, string>>;
  /** `pgiam_proxy_logins_total{result}` (counter): logins by how they ended. */
  readonly logins: Counter<{ result: LoginResult }>;
  /** `pgiam_proxy_tokens_total{reused}` (counter): tokens used upstream, signed or reused. */
  readonly tokens: Counter<{ reused: "true" | "false" }>;
  /** `pgiam_proxy_upstream_failures_total{step}` (counter): upstream connects failed, by step. */
  readonly upstreamFailures: Counter<{ step: ConnectStep }>;
  /** `pgiam_proxy_connect_seconds` (histogram): time to log in upstream, in seconds. */
  readonly connectSeconds: Histogram<Record<never, string>>;
  /** `pgiam_proxy_refused_total{code}` (counter): clients refused by a limit, by SQLSTATE. */
  readonly refused: Counter<{ code: RefusedCode }>;
  /** `pgiam_proxy_cancels_total` (counter): cancel requests forwarded upstream. */
  readonly cancels: Counter<Record<never, string>>;
  /** `pgiam_proxy_bytes_total{direction}` (counter): bytes relayed, by direction. */
  readonly bytes: Counter<{ direction: Direction }>;
  /** The exposition of them all (format 0.0.4). */
  render(): string;
}

// Keyed by every ConnectStep, so that a step added there fails to compile here.
const STEPS = Object.keys(
  { credentials: 0, connect: 0, tls: 0, auth: 0 } satisfies Record<ConnectStep, 0>,
) as ConnectStep[];

/** Connect time buckets, in seconds: 1 ms to 10 s. */
export const CONNECT_BUCKETS: readonly number[] = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/**
 * The proxy's metrics, every labelled series there from the start at 0 (so that a rate over them
 * is defined before the first event).
 *
 * @example
 * ```ts ignore
 * const metrics = proxyMetrics();
 * metrics.logins.inc({ result: "ok" });
 * metrics.bytes.inc({ direction: "client_to_server" }, chunk.length);
 * metrics.render();
 * ```
 */
export function proxyMetrics(): ProxyMetrics {
  const m = new Metrics();
  const sessions = m.gauge("pgiam_proxy_sessions", "Sessions open: logged in upstream, relaying.");
  const startups = m.gauge("pgiam_proxy_startups", "Clients connected and logging in.");
  const logins = m.counter<{ result: LoginResult }>(
    "pgiam_proxy_logins_total",
    "Client logins by result: ok, refused by the proxy (a limit), failed (upstream).",
    ["result"],
  );
  for (const result of ["ok", "refused", "failed"] as const) logins.inc({ result }, 0);
  const tokens = m.counter<{ reused: "true" | "false" }>(
    "pgiam_proxy_tokens_total",
    "IAM tokens used upstream: signed (reused=false) or reused while young (reused=true).",
    ["reused"],
  );
  for (const reused of ["true", "false"] as const) tokens.inc({ reused }, 0);
  const upstreamFailures = m.counter<{ step: ConnectStep }>(
    "pgiam_proxy_upstream_failures_total",
    "Upstream connection starts that failed, by step: credentials, connect, tls, auth.",
    ["step"],
  );
  for (const step of STEPS) upstreamFailures.inc({ step }, 0);
  const connectSeconds = m.histogram(
    "pgiam_proxy_connect_seconds",
    "Time to log in upstream (credentials, TCP, TLS, authentication), in seconds.",
    CONNECT_BUCKETS,
  );
  const refused = m.counter<{ code: RefusedCode }>(
    "pgiam_proxy_refused_total",
    "Clients refused by a limit, by SQLSTATE: 53300 too many connections, 53400 connection rate.",
    ["code"],
  );
  for (const code of ["53300", "53400"] as const) refused.inc({ code }, 0);
  const cancels = m.counter("pgiam_proxy_cancels_total", "Cancel requests forwarded upstream.");
  const bytes = m.counter<{ direction: Direction }>(
    "pgiam_proxy_bytes_total",
    "Bytes relayed, by direction: client_to_server, server_to_client.",
    ["direction"],
  );
  for (const direction of ["client_to_server", "server_to_client"] as const) {
    bytes.inc({ direction }, 0);
  }
  return {
    sessions,
    startups,
    logins,
    tokens,
    upstreamFailures,
    connectSeconds,
    refused,
    cancels,
    bytes,
    render: () => m.render(),
  };
}
