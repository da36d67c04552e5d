import client from 'prom-client';
import { describe, expect, it } from 'vitest';
import { RequestHistogram } from '../../src/daemon/request-histogram.js';

// The hand-kept request histogram must be indistinguishable, on /metrics, from the prom-client
// histogram it replaced: dashboards and alert rules query its series by name and label.

const BOUNDS = [0.001, 0.01, 0.1, 1];
const OBSERVED: Array<[string, string, number, number]> = [
  ['GET', '/healthz', 200, 0.0004],
  ['GET', '/healthz', 200, 0.001], // on a bound: counted in that bucket (le is inclusive)
  ['GET', '/healthz', 200, 0.02],
  ['POST', '/v1/users', 201, 0.5],
  ['POST', '/v1/users', 413, 3], // above every bound: only +Inf
  ['GET', '/v1/users/:user_id', 404, 0.003],
];

describe('RequestHistogram', () => {
  it('exports the same text as a prom-client histogram fed the same observations', async () => {
    const ours = new client.Registry();
    const theirs = new client.Registry();
    const h = new RequestHistogram('strata_http_request_duration_seconds', 'latency', BOUNDS, ours);
    const p = new client.Histogram({ name: 'strata_http_request_duration_seconds', help: 'latency', labelNames: ['method', 'route', 'status'], buckets: BOUNDS, registers: [theirs] });
    for (const [method, route, status, seconds] of OBSERVED) {
      h.observe(method, route, status, seconds);
      p.labels(method, route, String(status)).observe(seconds);
    }
    const lines = (text: string) => text.split('\n').filter(Boolean).sort();
    expect(lines(await ours.metrics())).toEqual(lines(await theirs.metrics()));
    expect(await ours.metrics()).toContain('strata_http_request_duration_seconds_bucket{le="0.001",method="GET",route="/healthz",status="200"} 2');
    // The JSON form too, but for prom-client's `exemplar: null` on each of its values.
    const withoutExemplars = (json: unknown) => JSON.parse(JSON.stringify(json, (k, v: unknown) => (k === 'exemplar' ? undefined : v)));
    expect(withoutExemplars(await ours.getMetricsAsJSON())).toEqual(withoutExemplars(await theirs.getMetricsAsJSON()));
  });

  it('starts empty again after a registry reset', async () => {
    const registry = new client.Registry();
    const h = new RequestHistogram('req', 'latency', BOUNDS, registry);
    h.observe('GET', '/healthz', 200, 0.0001);
    registry.resetMetrics();
    expect(await registry.metrics()).not.toContain('route="/healthz"');
  });
});
