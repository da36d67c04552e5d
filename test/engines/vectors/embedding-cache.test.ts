import { describe, expect, it } from 'vitest';
import { MemoryCache } from '../../../src/engines/cache/memory-cache.js';
import { EmbeddingCache, fromHalf, toHalf } from '../../../src/engines/vectors/embedding-cache.js';
import { openTestNode } from '../../helpers/node.js';

describe('embedding cache', () => {
  it('answers a batch lookup aligned with the input, and counts hits and misses', async () => {
    const t = await openTestNode();
    const v = (seed: number) => Array.from({ length: 8 }, (_, i) => Math.sin(seed + i));
    expect((await t.call('POST', '/v1/embeddings/cache', { model: 'e5', items: [{ text: 'hello', values: v(1) }, { text: 'world', values: v(2) }] })).status).toBe(200);
    const r = await t.call('POST', '/v1/embeddings/cache/lookup', { model: 'e5', texts: ['world', 'unknown', 'hello', 'hello'] });
    expect(r.body.results.map((x: { index: number } | null) => x?.index ?? null)).toEqual([0, null, 2, 3]);
    // f16 by default: about three significant digits.
    r.body.results[0].values.forEach((x: number, i: number) => expect(x).toBeCloseTo(v(2)[i]!, 2));
    // Another model's embedding of the same text is another entry.
    expect((await t.call('POST', '/v1/embeddings/cache/lookup', { model: 'other', texts: ['hello'] })).body.results).toEqual([null]);
    const m = await t.node.metrics.render();
    expect(m).toMatch(/strata_embedding_cache_hits_total 3/);
    expect(m).toMatch(/strata_embedding_cache_misses_total 2/);
    await t.close();
  });

  it('keeps float32 exactly when configured so, and stays inside its byte budget (LRU)', async () => {
    const exact = new EmbeddingCache(new MemoryCache(1 << 20), { dtype: 'f32', ttlSeconds: 60 });
    await exact.put('m', [{ text: 't', values: [0.1, 1 / 3] }]);
    expect((await exact.lookup('m', ['t']))[0]).toEqual([Math.fround(0.1), Math.fround(1 / 3)]);
    const small = new MemoryCache(20_000);
    const bounded = new EmbeddingCache(small, { dtype: 'f16', ttlSeconds: 60 });
    for (let i = 0; i < 100; i++) await bounded.put('m', [{ text: `t${i}`, values: new Array(384).fill(i / 100) }]);
    expect(small.bytes).toBeLessThanOrEqual(20_000);
    const found = await bounded.lookup('m', ['t0', 't99']);
    expect(found[0]).toBeNull();
    expect(found[1]![0]).toBeCloseTo(0.99, 2);
  });

  it('converts to and from float16 like IEEE 754 binary16', () => {
    for (const [x, h] of [[0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [1e6, 0x7c00], [2 ** -24, 0x0001], [0.333251953125, 0x3555]] as const) {
      expect(toHalf(x), String(x)).toBe(h);
    }
    expect(fromHalf(0x3555)).toBe(0.333251953125);
    expect(fromHalf(0x7c00)).toBe(Infinity);
    expect(fromHalf(toHalf(0.1))).toBeCloseTo(0.1, 3);
  });
});
