import { describe, expect, it } from 'vitest';
import { MemoryCache } from '../../../src/engines/cache/memory-cache.js';
import { cacheContract } from './cache.contract.js';

cacheContract('memory', async () => new MemoryCache(1024 * 1024));

describe('memory cache', () => {
  it('stays inside its byte budget, evicting the least recently used', async () => {
    const cache = new MemoryCache(10_000);
    for (let i = 0; i < 100; i++) await cache.set(`k${i}`, Buffer.alloc(1000));
    expect(cache.bytes).toBeLessThanOrEqual(10_000);
    expect(await cache.get('k99')).toBeDefined();
    expect(await cache.get('k0')).toBeUndefined();
  });

  it('never evicts a quota counter to make room for entries', async () => {
    const cache = new MemoryCache(2_000);
    const spec = { key: 'q', max: 10, ttlSeconds: 60, initial: () => 0 };
    await cache.increment([spec], 10);
    for (let i = 0; i < 100; i++) await cache.set(`k${i}`, Buffer.alloc(500));
    expect((await cache.increment([spec], 1)).applied).toBe(false);
  });

  it('does not cache a value larger than its whole budget', async () => {
    const cache = new MemoryCache(100);
    await cache.set('big', Buffer.alloc(1000));
    expect(await cache.get('big')).toBeUndefined();
  });

  it('keeps a deferred value as its object, counts its size against the budget, and encodes it only for a byte read', async () => {
    const cache = new MemoryCache(10_000);
    let encoded = 0;
    const value = { decoded: { hello: 'world' }, size: 4_000, encode: () => (encoded++, Buffer.from('bytes')) };
    await cache.setDeferred('a', value);
    expect(await cache.getStored('a')).toBe(value);
    expect(encoded).toBe(0);
    expect(cache.bytes).toBeGreaterThanOrEqual(4_000);
    expect((await cache.get('a'))?.toString()).toBe('bytes');
    expect(await cache.getMany(['a', 'b'])).toEqual([Buffer.from('bytes'), undefined]);
    expect(encoded).toBe(2);
    // Its declared size evicts like bytes do.
    await cache.setDeferred('b', { ...value, size: 7_000 });
    expect(await cache.getStored('a')).toBeUndefined();
  });
});
