import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisCache } from '../../../src/engines/cache/redis-cache.js';
import { HAS_REDIS, startRedis, startRedisCluster, startRedisSentinel, type RedisServer } from '../../helpers/redis.js';
import type { RedisTopology } from '../../../src/engines/cache/redis-cache.js';
import { cacheContract } from './cache.contract.js';

let server: RedisServer;
let n = 0;

async function open(url = server.url, waitMs = 5000): Promise<RedisCache> {
  // A fresh prefix per cache: tests share one server but never each other's keys.
  const cache = new RedisCache({ topology: { mode: 'standalone', url }, keyPrefix: `t${process.pid}-${n++}:`, commandTimeoutMs: 1000 });
  await cache.waitReady(waitMs);
  return cache;
}

describe.skipIf(!HAS_REDIS)('redis cache', () => {
  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    await server?.stop();
  });

  cacheContract('redis', () => open());

  it('fails fast while redis is down, says degraded, and heals on its own when it is back', async () => {
    const cache = await open();
    const states: string[] = [];
    cache.onStateChange((s) => states.push(s));
    await cache.set('k', Buffer.from('v'));
    await server.kill();
    await expect.poll(() => cache.state(), { timeout: 5000 }).toBe('degraded');
    const started = Date.now();
    await expect(cache.get('k')).rejects.toThrow(/redis/);
    await expect(cache.increment([{ key: 'c', max: 10, ttlSeconds: 10, initial: () => 0 }], 1)).rejects.toThrow(/redis/);
    expect(Date.now() - started).toBeLessThan(1000);
    await server.restart();
    await expect.poll(() => cache.state(), { timeout: 10_000 }).toBe('ok');
    // The restarted server has no persistence: the entry is gone, and that is fine.
    expect(await cache.get('k')).toBeUndefined();
    await cache.set('k', Buffer.from('again'));
    expect((await cache.get('k'))?.toString()).toBe('again');
    expect(states).toContain('degraded');
    expect(states.at(-1)).toBe('ok');
    await cache.close();
  });

  it('starts degraded, without throwing, when redis is not there yet', async () => {
    const cache = await open('redis://127.0.0.1:1', 300);
    expect(cache.state()).toBe('degraded');
    await expect(cache.get('x')).rejects.toThrow();
    await cache.close();
  });
});

describe.skipIf(!HAS_REDIS)('redis cache on a Cluster', () => {
  let cluster: Awaited<ReturnType<typeof startRedisCluster>>;
  beforeAll(async () => {
    cluster = await startRedisCluster();
  });
  afterAll(async () => {
    await cluster?.stop();
  });
  cacheContract('redis cluster', () => openTopology({ mode: 'cluster', nodes: cluster.nodes }));
});

describe.skipIf(!HAS_REDIS)('redis cache behind Sentinel', () => {
  let sentinel: Awaited<ReturnType<typeof startRedisSentinel>>;
  beforeAll(async () => {
    sentinel = await startRedisSentinel();
  });
  afterAll(async () => {
    await sentinel?.stop();
  });
  cacheContract('redis sentinel', () => openTopology({ mode: 'sentinel', sentinels: sentinel.sentinels, name: sentinel.name }));
});

async function openTopology(topology: RedisTopology): Promise<RedisCache> {
  const cache = new RedisCache({ topology, keyPrefix: `t${process.pid}-${n++}:`, commandTimeoutMs: 1000 });
  await cache.waitReady(10_000);
  return cache;
}
