import { describe, expect, it } from 'vitest';
import type { Cache } from '../../../src/engines/cache/cache.js';

// What every cache driver must do. Each driver's test file calls this with a factory for a
// fresh, connected cache (as hono's common.case.test.ts does for its routers).

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function cacheContract(name: string, open: () => Promise<Cache>): void {
  describe(`cache contract: ${name}`, () => {
    it('keeps bytes exactly, and forgets what was deleted', async () => {
      const cache = await open();
      const value = Buffer.from([0, 1, 2, 255, 254, 0]);
      await cache.set('a', value);
      expect(await cache.get('a')).toEqual(value);
      expect(await cache.get('missing')).toBeUndefined();
      await cache.delete(['a', 'never-set']);
      expect(await cache.get('a')).toBeUndefined();
      await cache.close();
    });

    it('reads many keys at once, in order, with gaps for misses', async () => {
      const cache = await open();
      await cache.set('k1', Buffer.from('one'));
      await cache.set('k3', Buffer.from('three'));
      const got = await cache.getMany(['k1', 'k2', 'k3']);
      expect(got.map((b) => b?.toString())).toEqual(['one', undefined, 'three']);
      expect(await cache.getMany([])).toEqual([]);
      await cache.close();
    });

    it('expires an entry after its TTL', async () => {
      const cache = await open();
      await cache.set('short', Buffer.from('x'), 1);
      expect(await cache.get('short')).toBeDefined();
      await sleep(1300);
      expect(await cache.get('short')).toBeUndefined();
      await cache.close();
    });

    it('slides the TTL forward on each read that asks for it', async () => {
      const cache = await open();
      await cache.set('sliding', Buffer.from('x'), 2);
      for (let i = 0; i < 3; i++) {
        await sleep(900);
        expect(await cache.get('sliding', { slideTtlSeconds: 2 })).toBeDefined();
      }
      // 2.7 s after the set, past the original 2 s: only sliding kept it alive.
      await sleep(2300);
      expect(await cache.get('sliding')).toBeUndefined();
      await cache.close();
    });

    it('increments counters all or none, never past their max, starting from the initial value', async () => {
      const cache = await open();
      const day = { key: 'q:{u1}:day', max: 100, ttlSeconds: 60, initial: () => 10 };
      const month = { key: 'q:{u1}:month', max: 1000, ttlSeconds: 60, initial: () => 950 };
      expect(await cache.increment([day, month], 30)).toEqual({ applied: true, values: [40, 980] });
      // The month counter would pass its max: nothing changes, the day counter included.
      expect(await cache.increment([day, month], 30)).toEqual({ applied: false, values: [40, 980] });
      expect(await cache.increment([day, month], 20)).toEqual({ applied: true, values: [60, 1000] });
      // Once a counter exists its initial value is ignored.
      expect(await cache.increment([{ ...day, initial: () => 0 }], 0)).toEqual({ applied: true, values: [60] });
      await cache.close();
    });

    it('lets exactly the calls that fit through when many race for the last tokens', async () => {
      const cache = await open();
      const spec = { key: 'q:{race}:day', max: 1000, ttlSeconds: 60, initial: () => 0 };
      const results = await Promise.all(Array.from({ length: 50 }, () => cache.increment([spec], 30)));
      expect(results.filter((r) => r.applied)).toHaveLength(33);
      expect(Math.max(...results.map((r) => r.values[0]!))).toBe(990);
      await cache.close();
    });

    it('expires a counter with its period', async () => {
      const cache = await open();
      const spec = { key: 'q:{ttl}:day', max: 10, ttlSeconds: 1, initial: () => 0 };
      expect((await cache.increment([spec], 10)).applied).toBe(true);
      expect((await cache.increment([spec], 1)).applied).toBe(false);
      await sleep(1300);
      expect(await cache.increment([spec], 1)).toEqual({ applied: true, values: [1] });
      await cache.close();
    });

    it('says it is ok when connected', async () => {
      const cache = await open();
      expect(cache.state()).toBe('ok');
      await cache.close();
    });
  });
}
