import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestNode } from '../helpers/node.js';

describe('users and preferences', () => {
  let t: Awaited<ReturnType<typeof openTestNode>>;
  beforeAll(async () => {
    t = await openTestNode();
  });
  afterAll(() => t.close());

  it('creates, reads and patches a user; email unique regardless of case', async () => {
    const created = await t.call('POST', '/v1/users', { email: 'Ann@Example.com', tier: 'free' });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ email: 'Ann@Example.com', tier: 'free' });
    expect(created.body.id).toMatch(/[0-9a-f-]{36}/);
    const dup = await t.call('POST', '/v1/users', { email: 'ann@example.COM', tier: 'pro' });
    expect(dup.status).toBe(409);
    expect(dup.body.error.code).toBe('conflict');
    const patched = await t.call('PATCH', `/v1/users/${created.body.id}`, { tier: 'pro' });
    expect(patched.body.tier).toBe('pro');
    expect((await t.call('GET', `/v1/users/${created.body.id}`)).body.tier).toBe('pro');
    expect((await t.call('POST', '/v1/users', { id: created.body.id, email: 'z@example.com', tier: 'free' })).status).toBe(409);
  });

  it('rejects bad input with a 400 and writes nothing', async () => {
    const before = t.node.sql.writer.lastLsn;
    for (const body of [
      { email: 'not-an-email', tier: 'free' },
      { email: 'x@example.com', tier: 'platinum' },
      { email: 'x@example.com', tier: 'free', extra: 1 },
      { id: '../etc', email: 'x@example.com', tier: 'free' },
      [1, 2],
    ]) {
      const r = await t.call('POST', '/v1/users', body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.code).toBe('invalid_input');
      expect(typeof r.body.error.message).toBe('string');
    }
    expect(t.node.sql.writer.lastLsn).toBe(before);
    expect((await t.call('GET', '/v1/users/x')).status).toBe(404);
  });

  it('refuses malformed paths, queries, cursors and bodies with invalid_input', async () => {
    const cases: Array<[string, string, unknown]> = [
      ['GET', '/v1/users/%E0%A4%A', undefined],
      ['GET', '/v1/users/a%00b', undefined],
      ['GET', '/v1/admin/audit?limit=abc', undefined],
      ['GET', '/v1/admin/audit?limit=0', undefined],
      ['GET', '/v1/admin/audit?cursor=%ZZ', undefined],
      ['POST', '/v1/users', 'null'],
      ['POST', '/v1/users', '"just a string"'],
      ['POST', '/v1/users', ''],
    ];
    for (const [method, path, body] of cases) {
      const r = await t.call(method, path, body);
      expect(r.status, `${method} ${path} ${String(body)}`).toBe(400);
      expect(r.body.error.code).toBe('invalid_input');
    }
    const res = await t.app.request('/v1/users', {
      method: 'POST',
      headers: { authorization: `Bearer ${t.adminToken}`, 'content-type': 'text/plain' },
      body: 'email=x',
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as any).error.message).toMatch(/must be JSON/);
  });

  it('preferences are any JSON object up to 64 KiB', async () => {
    await t.call('POST', '/v1/users', { id: 'p1', email: 'p1@example.com', tier: 'free' });
    expect((await t.call('GET', '/v1/users/p1/preferences')).body).toEqual({});
    const doc = { theme: 'dark', nested: { a: [1, 2, 3] } };
    expect((await t.call('PUT', '/v1/users/p1/preferences', doc)).body).toEqual(doc);
    expect((await t.call('GET', '/v1/users/p1/preferences')).body).toEqual(doc);
    const big = await t.call('PUT', '/v1/users/p1/preferences', { blob: 'x'.repeat(70_000) });
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe('payload_too_large');
    expect((await t.call('GET', '/v1/users/p1/preferences')).body).toEqual(doc);
    expect((await t.call('PUT', '/v1/users/p1/preferences', [1])).status).toBe(400);
    expect((await t.call('PUT', '/v1/users/nobody/preferences', { a: 1 })).status).toBe(404);
  });
});
