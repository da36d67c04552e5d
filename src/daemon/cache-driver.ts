import type { Cache } from '../engines/cache/cache.js';
import { MemoryCache } from '../engines/cache/memory-cache.js';
import { RedisCache, type RedisTopology } from '../engines/cache/redis-cache.js';
import type { StrataConfig } from './config.js';
import type { Logger } from './logger.js';

/**
 * The cache driver the config names. A Redis that cannot be reached at start does not stop
 * the node: it starts degraded (reads from SQLite) and heals when Redis answers.
 */
export async function openCache(config: StrataConfig['cache'], log: Logger): Promise<Cache> {
  if (config.driver === 'memory' || !config.redis) return new MemoryCache(config.memory.max_bytes);
  const r = config.redis;
  const topology: RedisTopology =
    r.mode === 'cluster'
      ? { mode: 'cluster', nodes: r.nodes ?? [] }
      : r.mode === 'sentinel'
        ? { mode: 'sentinel', sentinels: r.sentinels ?? [], name: r.master_name ?? '' }
        : { mode: 'standalone', url: r.url };
  const cache = new RedisCache({
    topology,
    username: r.username || undefined,
    password: r.password || undefined,
    tls: r.tls,
    keyPrefix: r.key_prefix,
    commandTimeoutMs: r.command_timeout_ms,
  });
  if ((await cache.waitReady(2000)) !== 'ok') {
    log.warn({ mode: r.mode }, 'redis is not reachable; serving from SQLite until it is (the cache is degraded)');
  }
  cache.onStateChange((s) => {
    if (s === 'ok') log.info('redis is reachable again; cache healed');
    else log.warn('redis connection lost; cache degraded, reads fall back to SQLite');
  });
  return cache;
}
