import { monitorEventLoopDelay } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SYSTEM } from '../../../src/daemon/strata-node.js';
import { openTestNode } from '../../helpers/node.js';
import { clustered, exactTopK, recall } from '../../helpers/vectors.js';

const N = 12_000;
const DIMS = 48;
const data = clustered(N, DIMS, 40, 7);
const groups = ['red', 'green', 'blue', 'amber'];
const meta = (i: number) => ({ cluster: data.cluster[i], group: groups[i % 4], rank: i % 1000, rare: i % 500 === 0, tags: i % 3 === 0 ? ['x', 'y'] : ['y'] });

describe('vector collections', () => {
  let t: Awaited<ReturnType<typeof openTestNode>>;
  beforeAll(async () => {
    t = await openTestNode(['vectors.max_batch=4000', 'vectors.exact_search_max=600']);
    await t.call('POST', '/v1/collections', { name: 'docs', dimensions: DIMS, metric: 'cos' });
    for (let i = 0; i < N; i += 4000) {
      const batch = data.points.slice(i, i + 4000).map((values, j) => ({ id: `v${i + j}`, values, metadata: meta(i + j) }));
      await t.node.vectors.upsert(SYSTEM, 'docs', batch);
    }
  });
  afterAll(() => t.close());

  const query = async (body: Record<string, unknown>) => {
    const r = await t.call('POST', '/v1/collections/docs/query', body);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return { ids: (r.body.matches as Array<{ id: string }>).map((m) => m.id), matches: r.body.matches, plan: r.headers.get('x-strata-plan') };
  };

  it('recall@10 is at least 0.95 against exact search on clustered data', async () => {
    const qs = data.queries(50);
    let total = 0;
    for (const q of qs) {
      const { ids, plan } = await query({ vector: q, top_k: 10 });
      expect(plan).toBe('hnsw');
      total += recall(ids, exactTopK(data.points, q, 10).map((i) => `v${i}`));
    }
    expect(total / qs.length).toBeGreaterThanOrEqual(0.95);
    expect((await t.call('GET', '/v1/collections/docs')).body).toMatchObject({ count: N, dimensions: DIMS, metric: 'cos', dtype: 'f32' });
  });

  it('filtered queries return exactly top_k when that many match, with high recall, on both plans', async () => {
    const cases: Array<{ filter: Record<string, unknown>; pred: (i: number) => boolean; plan: string }> = [
      // 24 vectors match: exact search over them.
      { filter: { rare: true }, pred: (i) => i % 500 === 0, plan: 'exact' },
      { filter: { group: 'blue', rank: { $lt: 50 } }, pred: (i) => i % 4 === 2 && i % 1000 < 50, plan: 'exact' },
      // Thousands match: HNSW with oversampling.
      { filter: { group: { $in: ['red', 'green'] } }, pred: (i) => i % 4 < 2, plan: 'filtered_hnsw' },
      { filter: { rank: { $gte: 100, $lt: 400 }, tags: 'x' }, pred: (i) => i % 1000 >= 100 && i % 1000 < 400 && i % 3 === 0, plan: 'filtered_hnsw' },
    ];
    for (const c of cases) {
      const allowed = data.points.map((_, i) => i).filter(c.pred);
      let total = 0;
      for (const q of data.queries(10, 99)) {
        const { ids, matches, plan } = await query({ vector: q, top_k: 20, filter: c.filter, include_metadata: true });
        expect(plan, JSON.stringify(c.filter)).toBe(c.plan);
        expect(ids).toHaveLength(Math.min(20, allowed.length));
        expect(ids.every((id) => c.pred(Number(id.slice(1)))), 'every match passes the filter').toBe(true);
        expect(matches[0].metadata).toBeDefined();
        total += recall(ids, exactTopK(data.points, q, 20, allowed).map((i) => `v${i}`));
      }
      expect(total / 10, JSON.stringify(c.filter)).toBeGreaterThanOrEqual(0.95);
    }
    expect((await query({ vector: data.points[0], top_k: 5, filter: { group: 'purple' } })).ids).toEqual([]);
  });

  it('upsert replaces, fetch returns values and metadata, delete by ids and by filter', async () => {
    const v = data.points[5]!.map((x) => -x);
    await t.call('POST', '/v1/collections/docs/upsert', { vectors: [{ id: 'v5', values: v, metadata: { group: 'moved' } }] });
    const f = await t.call('POST', '/v1/collections/docs/fetch', { ids: ['v5', 'nope', 'v6'] });
    expect(f.body.vectors.map((x: { id: string }) => x.id)).toEqual(['v5', 'v6']);
    expect(f.body.vectors[0].metadata).toEqual({ group: 'moved' });
    expect(f.body.vectors[0].values[0]).toBeCloseTo(v[0]!, 5);
    expect((await query({ vector: v, top_k: 1 })).ids).toEqual(['v5']);
    expect((await query({ vector: v, top_k: 3, filter: { group: 'moved' } })).ids).toEqual(['v5']);
    expect((await t.call('POST', '/v1/collections/docs/delete', { filter: { group: 'moved' } })).body).toEqual({ deleted: 1 });
    expect((await t.call('POST', '/v1/collections/docs/delete', { ids: ['v6', 'v7', 'ghost'] })).body).toEqual({ deleted: 2 });
    expect((await query({ vector: data.points[6], top_k: 10 })).ids).not.toContain('v6');
    expect((await t.call('GET', '/v1/collections/docs')).body.count).toBe(N - 3);
  });

  it('compacts tombstones in the background: results stay right and the event loop stays free', async () => {
    // Delete 40% of the vectors: their slots stay in the graph as tombstones.
    const doomed = Array.from({ length: N }, (_, i) => i).filter((i) => i % 5 < 2 && i > 10);
    for (let i = 0; i < doomed.length; i += 4000) {
      await t.node.vectors.delete(SYSTEM, 'docs', { ids: doomed.slice(i, i + 4000).map((j) => `v${j}`) });
    }
    const before = await t.node.vectors.stats('docs');
    expect(before.tombstones).toBeGreaterThan(N * 0.35);
    const h = monitorEventLoopDelay({ resolution: 5 });
    h.enable();
    // The rebuild (thousands of native inserts) and a burst of 1000-result searches run in
    // workers; queries keep being answered by the old index until the new one swaps in.
    const heavy = data.queries(40, 5).map((q) => t.call('POST', '/v1/collections/docs/query', { vector: q, top_k: 1000 }));
    const compacted = await t.node.vectors.compactIfNeeded();
    const answers = await Promise.all(heavy);
    h.disable();
    expect(compacted).toEqual(['docs']);
    expect(answers.filter((a) => a.status !== 200).map((a) => JSON.stringify(a.body))).toEqual([]);
    // p99, not max: a single GC pause on this shared 2-core machine can pass 100 ms, while a
    // native build or search on the main thread would push the whole distribution up. The
    // bound leaves room for the other test files competing for the two cores.
    expect(h.percentile(99) / 1e6).toBeLessThan(50);
    const after = await t.node.vectors.stats('docs');
    expect(after.tombstones).toBe(0);
    expect(after.size).toBe(N - 3 - doomed.length + (doomed.includes(6) ? 1 : 0) + (doomed.includes(7) ? 1 : 0));
    const gone = new Set(doomed.map((i) => `v${i}`));
    const alive = data.points.map((_, i) => i).filter((i) => !gone.has(`v${i}`) && i !== 5 && i !== 6 && i !== 7);
    let total = 0;
    for (const q of data.queries(20, 11)) {
      const { ids } = await query({ vector: q, top_k: 10 });
      expect(ids.some((id) => gone.has(id))).toBe(false);
      total += recall(ids, exactTopK(data.points, q, 10, alive).map((i) => `v${i}`));
    }
    expect(total / 20).toBeGreaterThanOrEqual(0.95);
  });
});
