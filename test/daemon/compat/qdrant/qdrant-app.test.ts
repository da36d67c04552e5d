import { describe, expect, it } from 'vitest';
import { createQdrantApp } from '../../../../src/daemon/compat/qdrant/qdrant-app.js';
import { openTestNode } from '../../../helpers/node.js';

// The Qdrant app in process: what the client tests cannot see from outside — a big upsert is
// decoded off the event loop, a bad element in it is a 400 naming it, and nothing is written.

describe('Qdrant app', () => {
  it('decodes a big upsert on the decode worker; a bad element is a 400 naming it and nothing is stored', async () => {
    const t = await openTestNode();
    try {
      const q = createQdrantApp(t.node);
      const call = async (method: string, path: string, body?: unknown) => {
        const res = await q.request(path, { method, headers: { 'api-key': t.adminToken, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
        return { status: res.status, body: (await res.json()) as { result?: any; status: any } };
      };
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
    } finally {
      await t.close();
    }
  });
});
