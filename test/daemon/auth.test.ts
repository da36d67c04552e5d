import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestNode } from '../helpers/node.js';

type TestNode = Awaited<ReturnType<typeof openTestNode>>;

describe('auth', () => {
  let t: TestNode;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    t = await openTestNode();
    for (const role of ['service', 'reader'] as const) {
      tokens[role] = (await t.call('POST', '/v1/admin/tokens', { name: role, role })).body.token;
    }
    await t.call('POST', '/v1/users', { id: 'alice', email: 'alice@example.com', tier: 'free' });
    await t.call('POST', '/v1/users', { id: 'bob', email: 'bob@example.com', tier: 'pro' });
    tokens.user = (await t.call('POST', '/v1/admin/tokens', { name: 'alice', role: 'user', user_id: 'alice' })).body.token;
  });
  afterAll(() => t.close());

  it('each role against an admin route: admin 200, others 403, none or unknown 401', async () => {
    expect((await t.call('GET', '/v1/admin/status')).status).toBe(200);
    for (const role of ['service', 'reader', 'user']) {
      const r = await t.call('GET', '/v1/admin/status', undefined, tokens[role]!);
      expect(r.status, role).toBe(403);
      expect(r.body.error.code).toBe('forbidden');
    }
    const none = await t.call('GET', '/v1/admin/status', undefined, null);
    expect(none.status).toBe(401);
    expect(none.body.error.code).toBe('unauthorized');
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect((await t.call('GET', '/v1/admin/status', undefined, 'strata_not-a-real-token')).status).toBe(401);
    expect((await t.call('POST', '/v1/admin/tokens', { name: 'x', role: 'admin' }, tokens.service!)).status).toBe(403);
  });

  it('status reports a primary with epoch and lsn', async () => {
    const s = (await t.call('GET', '/v1/admin/status')).body;
    expect(s).toMatchObject({ role: 'primary', epoch: 1, replicas: [] });
    expect(s.lsn).toBeGreaterThan(0);
  });

  it('stores only a SHA-256 of the token and shows the secret once', async () => {
    const created = await t.call('POST', '/v1/admin/tokens', { name: 'once', role: 'reader' });
    expect(created.status).toBe(201);
    const secret: string = created.body.token;
    expect(secret).toMatch(/^strata_[A-Za-z0-9_-]{43}$/);
    const rows = t.node.sql.db.prepare<{ id: string; hash: Uint8Array }>('SELECT * FROM tokens WHERE id = ?').all(created.body.id);
    expect(rows).toHaveLength(1);
    expect(JSON.stringify(rows)).not.toContain(secret);
    expect(Buffer.from(rows[0]!.hash).toString('hex')).toBe(createHash('sha256').update(secret).digest('hex'));
    // Not in the change log or the audit log either.
    const log = t.node.sql.db.prepare<{ payload: Uint8Array }>('SELECT payload FROM changelog').all();
    expect(log.some((r) => Buffer.from(r.payload).includes(secret))).toBe(false);
    const audit = await t.call('GET', '/v1/admin/audit?limit=1000');
    expect(JSON.stringify(audit.body)).not.toContain(secret);
    // No endpoint gives it back.
    expect(JSON.stringify((await t.call('GET', '/v1/admin/status')).body)).not.toContain(secret);
    // It works until it is revoked.
    expect((await t.call('GET', '/v1/users/alice', undefined, secret)).status).toBe(200);
    expect((await t.call('DELETE', `/v1/admin/tokens/${created.body.id}`)).status).toBe(204);
    expect((await t.call('GET', '/v1/users/alice', undefined, secret)).status).toBe(401);
    expect((await t.call('DELETE', `/v1/admin/tokens/${created.body.id}`)).status).toBe(404);
  });

  it('a user token reaching another user gets 404, as if it did not exist', async () => {
    expect((await t.call('GET', '/v1/users/alice', undefined, tokens.user!)).status).toBe(200);
    const other = await t.call('GET', '/v1/users/bob', undefined, tokens.user!);
    const missing = await t.call('GET', '/v1/users/nobody', undefined, tokens.user!);
    expect(other.status).toBe(404);
    expect(other.body.error.code).toBe('not_found');
    expect(missing.status).toBe(404);
    expect(other.body.error.message).toBe('user bob does not exist');
    expect((await t.call('PUT', '/v1/users/bob/preferences', { theme: 'x' }, tokens.user!)).status).toBe(404);
    expect((await t.call('GET', '/v1/users/bob/preferences')).body).toEqual({});
    expect((await t.call('PUT', '/v1/users/alice/preferences', { theme: 'dark' }, tokens.user!)).status).toBe(200);
    expect((await t.call('GET', '/v1/users/alice/preferences', undefined, tokens.user!)).body).toEqual({ theme: 'dark' });
  });

  it('a reader reads but cannot write; a user cannot create users', async () => {
    expect((await t.call('GET', '/v1/users/bob', undefined, tokens.reader!)).status).toBe(200);
    expect((await t.call('PUT', '/v1/users/bob/preferences', { a: 1 }, tokens.reader!)).status).toBe(403);
    expect((await t.call('POST', '/v1/users', { email: 'c@example.com', tier: 'free' }, tokens.user!)).status).toBe(403);
    expect((await t.call('POST', '/v1/users', { email: 'c@example.com', tier: 'free' }, tokens.service!)).status).toBe(201);
  });

  it('refuses bad token requests with invalid_input', async () => {
    const r = await t.call('POST', '/v1/admin/tokens', { name: 'u', role: 'user' });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: 'invalid_input', message: 'a token with role "user" needs a user_id' });
    expect((await t.call('POST', '/v1/admin/tokens', { name: 'u', role: 'root' })).status).toBe(400);
    expect((await t.call('POST', '/v1/admin/tokens', { name: 'u', role: 'admin', user_id: 'alice' })).status).toBe(400);
  });
});
