import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon, type Daemon } from '../helpers/daemon.js';
import { HAS_REDIS, startRedis, type RedisServer } from '../helpers/redis.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

// The cache is never the truth. With Redis gone the daemon keeps answering from SQLite, says
// "degraded" on /readyz and in a metric, and heals by itself when Redis is back — without
// serving anything written while it was away from a stale cache entry.

const metric = async (d: Daemon, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec((await api(d, 'GET', '/metrics', undefined, null)).body)?.[1]);

describe.skipIf(!HAS_REDIS)('redis outage', () => {
  let redis: RedisServer;
  let proxy: TcpProxy;
  let d: Daemon;
  let conv: string;

  beforeAll(async () => {
    redis = await startRedis();
    proxy = await startTcpProxy(redis.port);
    d = await startDaemon({ set: ['cache.driver=redis', `cache.redis.url=redis://127.0.0.1:${proxy.port}`, 'cache.redis.command_timeout_ms=200'] });
    await api(d, 'POST', '/v1/users', { id: 'u', email: 'u@example.com', tier: 'pro' });
    conv = (await api(d, 'POST', '/v1/conversations', { user_id: 'u' })).body.id;
  });
  afterAll(async () => {
    await d?.stop();
    await proxy?.close();
    await redis?.stop();
  });

  const turn = async (i: number) => {
    const appended = await api(d, 'POST', `/v1/conversations/${conv}/messages`, { role: 'user', content: `turn ${i}`, tokens: 1 });
    const read = await api(d, 'GET', `/v1/conversations/${conv}/messages?last=5`);
    const usage = await api(d, 'POST', '/v1/usage', { user_id: 'u', model: 'm', input_tokens: 1, output_tokens: 1 });
    const prefs = await api(d, 'GET', '/v1/users/u/preferences');
    return { appended, read, usage, prefs };
  };

  it('keeps answering while redis is killed mid-run, then heals without a restart', async () => {
    expect((await api(d, 'GET', '/readyz', undefined, null)).body).toEqual({ status: 'ready' });
    expect(await metric(d, 'strata_redis_connected')).toBe(1);
    let i = 0;
    for (; i < 5; i++) await turn(i);
    await redis.kill();
    // Every call of a chat turn still succeeds, and reads see every write.
    for (; i < 15; i++) {
      const r = await turn(i);
      expect([r.appended.status, r.read.status, r.usage.status, r.prefs.status]).toEqual([201, 200, 200, 200]);
      expect(r.read.body.items.at(-1).content).toBe(`turn ${i}`);
    }
    const ready = await api(d, 'GET', '/readyz', undefined, null);
    expect(ready.status).toBe(200);
    expect(ready.body.status).toBe('degraded');
    expect(await metric(d, 'strata_cache_degraded')).toBe(1);
    expect(await metric(d, 'strata_redis_connected')).toBe(0);
    // Quotas still hold while Redis is away: SQLite knows the day's total.
    expect((await turn(i++)).usage.body.used_tokens).toBe(2 * i);

    await redis.restart();
    await expect.poll(async () => (await api(d, 'GET', '/readyz', undefined, null)).body.status, { timeout: 15_000, interval: 200 }).toBe('ready');
    expect(await metric(d, 'strata_redis_connected')).toBe(1);
    const after = await turn(i++);
    expect(after.read.body.items.at(-1).content).toBe(`turn ${i - 1}`);
    // The restarted Redis lost the counters; they are re-seeded from SQLite, not from zero.
    expect(after.usage.body.used_tokens).toBe(2 * i);
    const body = (await api(d, 'GET', `/v1/conversations/${conv}`)).body;
    expect(body.message_count).toBe(i);
  });

  it('after a partition (redis kept its data) no stale entry is served', async () => {
    await api(d, 'PUT', '/v1/users/u/preferences', { v: 1 });
    expect((await api(d, 'GET', '/v1/users/u/preferences')).body).toEqual({ v: 1 });
    const before = (await api(d, 'GET', `/v1/conversations/${conv}/messages?last=1`)).body.items[0].content;
    proxy.cut();
    await expect.poll(async () => (await api(d, 'GET', '/readyz', undefined, null)).body.status, { timeout: 10_000, interval: 100 }).toBe('degraded');
    // Written while Redis still holds the old entries but cannot be told to drop them.
    expect((await api(d, 'PUT', '/v1/users/u/preferences', { v: 2 })).status).toBe(200);
    expect((await api(d, 'POST', `/v1/conversations/${conv}/messages`, { role: 'assistant', content: 'during the partition' })).status).toBe(201);
    proxy.heal();
    await expect.poll(async () => (await api(d, 'GET', '/readyz', undefined, null)).body.status, { timeout: 15_000, interval: 200 }).toBe('ready');
    expect((await api(d, 'GET', '/v1/users/u/preferences')).body).toEqual({ v: 2 });
    const last = (await api(d, 'GET', `/v1/conversations/${conv}/messages?last=2`)).body.items;
    expect(last.map((m: { content: string }) => m.content)).toEqual([before, 'during the partition']);
  });
});
