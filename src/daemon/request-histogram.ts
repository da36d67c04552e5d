import type client from 'prom-client';

// strata_http_request_duration_seconds, kept by hand. A prom-client child from labels() still
// converts, validates and hashes its labels on every observe (about 1.3 µs, a fifteenth of a
// small request's whole cost here); this resolves a series once per route, method and status —
// three lookups of strings the router already holds, no string built per request — and then
// adds to plain numbers. The registry formats it exactly like a prom-client histogram (the
// `_bucket` series with cumulative `le` labels and +Inf, `_sum`, `_count`), since it asks any
// registered metric for the same {name, help, type, values} object.

interface Value {
  labels: Record<string, string | number>;
  sharedLabels?: Record<string, string>;
  value: number;
  metricName: string;
}

interface Series {
  labels: { method: string; route: string; status: string };
  /** Per bucket, not cumulative; the last slot counts what is above every bound. */
  buckets: Float64Array;
  sum: number;
  count: number;
}

export class RequestHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  /** As on prom-client's metrics: the ops-pack test checks dashboard queries against it. */
  readonly labelNames = ['method', 'route', 'status'] as const;
  private readonly byRoute = new Map<string, Map<string, Map<number, Series>>>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
    registry: client.Registry,
  ) {
    registry.registerMetric(this as unknown as client.Metric);
  }

  observe(method: string, route: string, status: number, seconds: number): void {
    let byMethod = this.byRoute.get(route);
    if (!byMethod) this.byRoute.set(route, (byMethod = new Map()));
    let byStatus = byMethod.get(method);
    if (!byStatus) byMethod.set(method, (byStatus = new Map()));
    let s = byStatus.get(status);
    if (!s) byStatus.set(status, (s = { labels: { method, route, status: String(status) }, buckets: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 }));
    let i = 0;
    while (i < this.bounds.length && seconds > this.bounds[i]!) i++;
    s.buckets[i]!++;
    s.sum += seconds;
    s.count++;
  }

  /** What the registry formats: per value, `le` as its own labels and the series' as shared ones (as prom-client does). */
  getForPromString(): { name: string; help: string; type: string; aggregator: string; values: Value[] } {
    const values: Value[] = [];
    const bucket = `${this.name}_bucket`;
    for (const byMethod of this.byRoute.values()) {
      for (const byStatus of byMethod.values()) {
        for (const s of byStatus.values()) {
          let acc = 0;
          for (let i = 0; i < this.bounds.length; i++) {
            acc += s.buckets[i]!;
            values.push({ labels: { le: this.bounds[i]! }, sharedLabels: s.labels, value: acc, metricName: bucket });
          }
          values.push({ labels: { le: '+Inf' }, sharedLabels: s.labels, value: s.count, metricName: bucket });
          values.push({ labels: {}, sharedLabels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
          values.push({ labels: {}, sharedLabels: s.labels, value: s.count, metricName: `${this.name}_count` });
        }
      }
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** The JSON form (registry.getMetricsAsJSON): every label on the value itself. */
  get(): { name: string; help: string; type: string; aggregator: string; values: Value[] } {
    const data = this.getForPromString();
    return { ...data, values: data.values.map((v) => ({ labels: { ...v.labels, ...v.sharedLabels }, value: v.value, metricName: v.metricName })) };
  }

  reset(): void {
    this.byRoute.clear();
  }
}
