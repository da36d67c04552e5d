import { describe, expect, it } from 'vitest';
import { createQdrantApp } from '../../../../src/daemon/compat/qdrant/qdrant-app.js';
import { openTestNode } from '../../../helpers/node.js';

// The Qdrant app in process: what the client tests cannot see from outside — a big upsert is
// decoded off the event loop, a bad element in it is a 400 naming it, and nothing is written —
// and the review's findings, each as it was found.

/** Runs a test against a Qdrant app over an in-process node, closed afterwards. */
async function withQdrant(overrides: string[], test: (q: { t: Awaited<ReturnType<typeof openTestNode>>; call: (method: string, path: string, body?: unknown) => Promise<{ status: number; body: { result?: any; status: any } }> }) => Promise<void>) {
  const t = await openTestNode(overrides);
  const q = createQdrantApp(t.node);
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await q.request(path, { method, headers: { 'api-key': t.adminToken, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    return { status: res.status, body: (await res.json()) as { result?: any; status: any } };
  };
  try {
    await test({ t, call });
  } finally {
    await t.close();
  }
}

describe('Qdrant app', () => {
  it('decodes a big upsert on the decode worker; a bad element is a 400 naming it and nothing is stored', () =>
    withQdrant([], async ({ t, call }) => {
      expect((await call('PUT', '/collections/big', { vectors: { size: 768, distance: 'Cosine' } })).status).toBe(200);
      const points = Array.from({ length: 200 }, (_, i) => ({ id: i, vector: Array.from({ length: 768 }, (_, d) => Math.sin(i + d)), payload: { i } }));
      const before = t.node.vectors.bodiesDecodedOffLoop;
      const ok = await call('PUT', '/collections/big/points?wait=true', { points });
      expect(ok.body.result?.status, JSON.stringify(ok.body)).toBe('completed');
      expect(t.node.vectors.bodiesDecodedOffLoop).toBe(before + 1);
      const lsn = t.node.sql.writer.lastLsn;
      const bad = points.map((p) => ({ ...p, id: p.id + 1000 }));
      bad[150] = { ...bad[150]!, vector: [...bad[150]!.vector.slice(0, 767), 1e39] };
      const refused = await call('PUT', '/collections/big/points?wait=true', { points: bad });
      expect(refused.status).toBe(400);
      expect(refused.body.status.error).toBe('points[150].vector[767] is not a finite number (or overflows float32)');
      const badId = await call('PUT', '/collections/big/points?wait=true', { points: [...points.slice(1), { id: 'x', vector: points[0]!.vector }] });
      expect(badId.body.status.error).toMatch(/^points\[199\]\.id/);
      expect(t.node.vectors.bodiesDecodedOffLoop).toBe(before + 3);
      expect(t.node.sql.writer.lastLsn).toBe(lsn);
      expect((await call('POST', '/collections/big/points/count', {})).body.result.count).toBe(200);
      // Over vectors.max_batch: refused before any element is checked.
      const many = await call('PUT', '/collections/big/points', { points: Array.from({ length: 1001 }, (_, i) => ({ id: i, vector: [] })) });
      expect(many.body.status.error).toMatch(/at most 1000 points per call/);
    }));

  it('deleting payload keys follows only the payload: __proto__ paths touch nothing else (review: the process died)', () =>
    withQdrant(['vectors.max_batch=10000'], async ({ t, call }) => {
      await call('PUT', '/collections/p', { vectors: { size: 2, distance: 'Dot' } });
      await call('PUT', '/collections/p/points?wait=true', { points: [{ id: 1, vector: [1, 0], payload: { a: { b: 1, c: 2 }, k: 1 } }] });
      for (const key of ['__proto__.hasOwnProperty', 'constructor.prototype.toString', '__proto__', 'a.__proto__.x']) {
        expect((await call('POST', '/collections/p/points/payload/delete', { keys: [key], points: [1] })).status).toBe(200);
      }
      expect(typeof Object.prototype.hasOwnProperty).toBe('function');
      expect(typeof Object.prototype.toString).toBe('function');
      await call('POST', '/collections/p/points/payload/delete', { keys: ['a.b'], points: [1] });
      expect((await call('POST', '/collections/p/points', { ids: [1] })).body.result[0].payload).toEqual({ a: { c: 2 }, k: 1 });
      expect((await call('PUT', '/collections/p/points?wait=true', { points: [{ id: 2, vector: [0, 1] }] })).status).toBe(200);
    }));

  it('values_count is grouped once, not counted per point: 8× the points costs about 8×, and 0 counts', () =>
    withQdrant(['vectors.max_batch=10000'], async ({ t, call }) => {
      const timed = async (n: number) => {
        const name = `vc${n}`;
        await call('PUT', `/collections/${name}`, { vectors: { size: 2, distance: 'Dot' } });
        for (let i = 0; i < n; i += 10_000) {
          await call('PUT', `/collections/${name}/points?wait=true`, { points: Array.from({ length: Math.min(10_000, n - i) }, (_, j) => ({ id: i + j, vector: [1, (i + j) % 7], payload: { g: Array.from({ length: (i + j) % 3 }, (_, k) => k) } })) });
        }
        const filter = { must: [{ key: 'g', values_count: { gte: 1 } }] };
        await call('POST', `/collections/${name}/points/count`, { filter });
        const started = performance.now();
        for (let r = 0; r < 5; r++) await call('POST', `/collections/${name}/points/count`, { filter });
        return { ms: performance.now() - started, count: (await call('POST', `/collections/${name}/points/count`, { filter })).body.result.count };
      };
      const small = await timed(3000);
      const big = await timed(24_000);
      expect(small.count).toBe(2000);
      expect(big.count).toBe(16_000);
      // Quadratic would be 64×; linear 8×, with room for a loaded machine.
      expect(big.ms / small.ms).toBeLessThan(32);
      const zero = await call('POST', '/collections/vc3000/points/count', { filter: { must: [{ key: 'g', values_count: { lt: 1 } }] } });
      expect(zero.body.result.count).toBe(1000);
      const two = await call('POST', '/collections/vc3000/points/count', { filter: { must: [{ key: 'g', values_count: { gt: 1, lte: 2 } }] } });
      expect(two.body.result.count).toBe(1000);
    }));

  it('MMR picks diverse points, is bounded, and a deep search page binds its keys in chunks (review: 500)', () =>
    withQdrant(['vectors.max_batch=10000'], async ({ t, call }) => {
      await call('PUT', '/collections/m', { vectors: { size: 2, distance: 'Cosine' } });
      const at = (deg: number) => [Math.cos((deg * Math.PI) / 180), Math.sin((deg * Math.PI) / 180)];
      // Three near-duplicates at 0°, one point at 30°: MMR with diversity takes 0° and then 30°.
      await call('PUT', '/collections/m/points?wait=true', { points: [{ id: 1, vector: at(0) }, { id: 2, vector: at(0.1) }, { id: 3, vector: at(0.2) }, { id: 4, vector: at(30) }] });
      const plain = await call('POST', '/collections/m/points/query', { query: at(0), limit: 2 });
      expect(plain.body.result.points.map((p: { id: number }) => p.id)).toEqual([1, 2]);
      const mmr = await call('POST', '/collections/m/points/query', { query: { nearest: at(0), mmr: { diversity: 0.7, candidates_limit: 4 } }, limit: 2 });
      expect(mmr.body.result.points.map((p: { id: number }) => p.id)).toEqual([1, 4]);
      expect((await call('POST', '/collections/m/points/query', { query: { nearest: at(0), mmr: { candidates_limit: 5000 } }, limit: 2 })).status).toBe(400);
      await call('PUT', '/collections/deep', { vectors: { size: 2, distance: 'Cosine' } });
      for (let i = 0; i < 40_000; i += 10_000) await call('PUT', '/collections/deep/points?wait=true', { points: Array.from({ length: 10_000 }, (_, j) => ({ id: i + j, vector: at((i + j) % 360), payload: { g: 1 } })) });
      const page = await call('POST', '/collections/deep/points/search', { vector: [1, 0], limit: 10_000, offset: 30_000, filter: { must: [{ key: 'g', range: { gte: 0 } }] } });
      expect(page.status).toBe(200);
    }));

  it('ids a listing shows can be paged from, read and deleted, natively created ones included (review: skipped or refused)', () =>
    withQdrant(['vectors.max_batch=10000'], async ({ t, call }) => {
      await call('PUT', '/collections/mix', { vectors: { size: 2, distance: 'Dot' } });
      await t.call('POST', '/v1/collections/mix/upsert', { vectors: ['doc-1', '0123', '7', 'AAAAAAAA-0000-0000-0000-000000000000'].map((id) => ({ id, values: [1, 0] })) });
      await call('PUT', '/collections/mix/points?wait=true', { points: ['0a000000-0000-0000-0000-000000000000', 'bb000000-0000-0000-0000-000000000000'].map((id) => ({ id, vector: [1, 0] })) });
      const seen: unknown[] = [];
      let offset: unknown;
      do {
        const page = await call('POST', '/collections/mix/points/scroll', { limit: 1, ...(offset === undefined ? {} : { offset }) });
        expect(page.status, JSON.stringify(page.body)).toBe(200);
        seen.push(...page.body.result.points.map((p: { id: unknown }) => p.id));
        offset = page.body.result.next_page_offset ?? undefined;
      } while (offset !== undefined);
      expect(seen).toHaveLength(6);
      expect(new Set(seen).size).toBe(6);
      expect((await call('GET', '/collections/mix/points/AAAAAAAA-0000-0000-0000-000000000000')).status).toBe(200);
      expect((await call('POST', '/collections/mix/points/delete?wait=true', { points: ['AAAAAAAA-0000-0000-0000-000000000000', 'doc-1'] })).status).toBe(200);
      expect((await call('POST', '/collections/mix/points/count', {})).body.result.count).toBe(4);
    }));

  it('is_empty sees values the index does not descend into; deeper keys than indexed are refused (review: must_not widened)', () =>
    withQdrant(['vectors.max_batch=10000'], async ({ t, call }) => {
      await call('PUT', '/collections/e', { vectors: { size: 2, distance: 'Dot' } });
      const deep = { d: { e: { f: { g: { h: { i: { j: { k: { l: 1 } } } } } } } } };
      await call('PUT', '/collections/e/points?wait=true', { points: [{ id: 1, vector: [1, 0], payload: { a: { 'x y': 1 } } }, { id: 2, vector: [1, 0], payload: deep }, { id: 3, vector: [1, 0], payload: { a: [[1]] } }, { id: 4, vector: [1, 0], payload: { a: {}, d: [] } }] });
      const ids = async (filter: unknown) => (await call('POST', '/collections/e/points/scroll', { filter, with_payload: false })).body.result.points.map((p: { id: number }) => p.id);
      expect(await ids({ must: [{ is_empty: { key: 'a' } }] })).toEqual([2]);
      expect(await ids({ must: [{ is_empty: { key: 'd' } }] })).toEqual([1, 3, 4]);
      expect(await ids({ must_not: [{ is_empty: { key: 'a' } }] })).toEqual([1, 3, 4]);
      expect((await call('POST', '/collections/e/points/count', { filter: { must: [{ key: 'd.e.f.g.h.i.j.k.l', match: { value: 1 } }] } })).status).toBe(400);
    }));

  it('payload index declarations are checked and bounded (review: 3 MiB schemas slowed every request)', () =>
    withQdrant(['vectors.max_batch=10000'], async ({ t, call }) => {
      await call('PUT', '/collections/i', { vectors: { size: 2, distance: 'Dot' } });
      expect((await call('PUT', '/collections/i/index', { field_name: 'f', field_schema: 'nonsense' })).status).toBe(400);
      expect((await call('PUT', '/collections/i/index', { field_name: 'f', field_schema: { type: 'keyword', junk: 'x'.repeat(2000) } })).status).toBe(400);
      expect((await call('PUT', '/collections/i/index', { field_name: 'a b', field_schema: 'keyword' })).status).toBe(400);
      for (let i = 0; i < 64; i++) expect((await call('PUT', '/collections/i/index', { field_name: `f${i}`, field_schema: { type: 'integer', lookup: true } })).status).toBe(200);
      expect((await call('PUT', '/collections/i/index', { field_name: 'f64', field_schema: 'keyword' })).status).toBe(400);
      expect((await call('PUT', '/collections/i/index', { field_name: 'f3', field_schema: 'keyword' })).status).toBe(200);
    }));
});
