import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestNode } from '../helpers/node.js';
import { HAS_REDIS, startRedis, type RedisServer } from '../helpers/redis.js';

const PRICES = [
  'usage.prices={"m-big": {input_micros_per_million_tokens: 2000000, output_micros_per_million_tokens: 6000000}, "*": {input_micros_per_million_tokens: 1000000, output_micros_per_million_tokens: 1000000}}',
  'tiers={free: {daily_token_limit: 1000, conversation_retention_days: 7}, pro: {daily_token_limit: 100000, monthly_token_limit: 150000, conversation_retention_days: 30}}',
];

let redis: RedisServer | undefined;
beforeAll(async () => {
  if (HAS_REDIS) redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

const drivers: Array<[string, () => string[]]> = [['memory', () => []]];
if (HAS_REDIS) drivers.push(['redis', () => ['cache.driver=redis', `cache.redis.url=${redis!.url}`, `cache.redis.key_prefix="usage-${process.pid}-${Date.now()}:"`]]);

describe.each(drivers)('usage and quotas (%s cache)', (_name, cacheSet) => {
  let t: Awaited<ReturnType<typeof openTestNode>>;
  beforeAll(async () => {
    t = await openTestNode([...PRICES, ...cacheSet()]);
    await t.call('POST', '/v1/users', { id: 'f', email: 'f@example.com', tier: 'free' });
    await t.call('POST', '/v1/users', { id: 'p', email: 'p@example.com', tier: 'pro' });
    await t.call('POST', '/v1/users', { id: 'race', email: 'race@example.com', tier: 'free' });
  });
  afterAll(() => t.close());

  it('counts tokens and answers what is left', async () => {
    const r = await t.call('POST', '/v1/usage', { user_id: 'f', model: 'm-big', input_tokens: 100, output_tokens: 50 });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ period: new Date().toISOString().slice(0, 10), used_tokens: 150, limit_tokens: 1000, remaining_tokens: 850 });
  });

  it('refuses a call that would pass the limit with 429, and counts nothing for it', async () => {
    const before = (await t.call('POST', '/v1/usage', { user_id: 'f', model: 'x', input_tokens: 0, output_tokens: 0 })).body.used_tokens as number;
    const lsn = t.node.sql.writer.lastLsn;
    const r = await t.call('POST', '/v1/usage', { user_id: 'f', model: 'x', input_tokens: 1000, output_tokens: 0 });
    expect(r.status).toBe(429);
    expect(r.body.error.code).toBe('quota_exceeded');
    expect(t.node.sql.writer.lastLsn).toBe(lsn);
    expect((await t.call('POST', '/v1/usage', { user_id: 'f', model: 'x', input_tokens: 0, output_tokens: 0 })).body.used_tokens).toBe(before);
  });

  it('50 concurrent calls near the limit never overshoot it', async () => {
    // 1000 tokens a day, 30 per call: exactly 33 fit.
    const results = await Promise.all(Array.from({ length: 50 }, () => t.call('POST', '/v1/usage', { user_id: 'race', model: 'x', input_tokens: 20, output_tokens: 10 })));
    expect(results.filter((r) => r.status === 200)).toHaveLength(33);
    expect(results.filter((r) => r.status === 429)).toHaveLength(17);
    expect(Math.max(...results.filter((r) => r.status === 200).map((r) => r.body.used_tokens as number))).toBe(990);
    const summary = await t.call('GET', '/v1/users/race/usage?group_by=model');
    expect(summary.body.items).toEqual([{ model: 'x', input_tokens: 660, output_tokens: 330, cost_micros: 33 * 30 }]);
  });

  it('checks the monthly limit together with the daily one', async () => {
    const r = await t.call('POST', '/v1/usage', { user_id: 'p', model: 'x', input_tokens: 90_000, output_tokens: 0 });
    expect(r.body.month).toEqual({ period: new Date().toISOString().slice(0, 7), used_tokens: 90_000, limit_tokens: 150_000, remaining_tokens: 60_000 });
    // Pretend earlier days this month used 50k: the daily limit would allow 10k more, the month does not.
    const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
    if (yesterday.slice(0, 7) === new Date().toISOString().slice(0, 7)) {
      t.node.sql.db.prepare('INSERT INTO usage_daily VALUES (?, ?, ?, ?, ?, ?)').run('p2', yesterday, 'x', 140_000, 0, 0);
      await t.call('POST', '/v1/users', { id: 'p2', email: 'p2@example.com', tier: 'pro' });
      const refused = await t.call('POST', '/v1/usage', { user_id: 'p2', model: 'x', input_tokens: 10_001, output_tokens: 0 });
      expect(refused.status).toBe(429);
      expect(refused.body.error.message).toMatch(/monthly/);
      expect((await t.call('POST', '/v1/usage', { user_id: 'p2', model: 'x', input_tokens: 10_000, output_tokens: 0 })).status).toBe(200);
    }
  });

  it('summarises by day and by model with cost from the price table', async () => {
    await t.call('POST', '/v1/users', { id: 's', email: 's@example.com', tier: 'pro' });
    await t.call('POST', '/v1/usage', { user_id: 's', model: 'm-big', input_tokens: 1000, output_tokens: 500 });
    await t.call('POST', '/v1/usage', { user_id: 's', model: 'm-big', input_tokens: 1000, output_tokens: 500 });
    await t.call('POST', '/v1/usage', { user_id: 's', model: 'other', input_tokens: 10, output_tokens: 0 });
    const byModel = await t.call('GET', '/v1/users/s/usage?group_by=model');
    expect(byModel.body.items).toEqual([
      // 2000 in at 2 units/M = 4000 micros; 1000 out at 6 units/M = 6000 micros
      { model: 'm-big', input_tokens: 2000, output_tokens: 1000, cost_micros: 10_000 },
      { model: 'other', input_tokens: 10, output_tokens: 0, cost_micros: 10 },
    ]);
    const today = new Date().toISOString().slice(0, 10);
    const byDay = await t.call('GET', `/v1/users/s/usage?from=${today}&to=${today}T23:00:00Z`);
    expect(byDay.body.items).toEqual([{ day: today, input_tokens: 2010, output_tokens: 1000, cost_micros: 10_010 }]);
    expect((await t.call('GET', '/v1/users/s/usage?from=2001-01-01&to=2001-01-31')).body.items).toEqual([]);
  });

  it('refuses bad usage input with 400 and counts nothing', async () => {
    const lsn = t.node.sql.writer.lastLsn;
    for (const body of [
      { user_id: 'f', model: 'x', input_tokens: -1, output_tokens: 0 },
      { user_id: 'f', model: 'x', input_tokens: 1.5, output_tokens: 0 },
      { user_id: 'f', model: '', input_tokens: 1, output_tokens: 0 },
      { user_id: 'f', model: 'x', input_tokens: '1', output_tokens: 0 },
      { user_id: 'f', model: 'x', input_tokens: 1 },
      { user_id: 'f', model: 'x', input_tokens: 1, output_tokens: 0, extra: true },
    ]) {
      const r = await t.call('POST', '/v1/usage', body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.code).toBe('invalid_input');
    }
    expect((await t.call('POST', '/v1/usage', { user_id: 'ghost', model: 'x', input_tokens: 1, output_tokens: 0 })).status).toBe(404);
    for (const q of ['group_by=week', 'from=yesterday', 'from=2026-02-30', 'from=2026-05-02&to=2026-05-01']) {
      expect((await t.call('GET', `/v1/users/f/usage?${q}`)).status, q).toBe(400);
    }
    expect(t.node.sql.writer.lastLsn).toBe(lsn);
  });
});
