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

describe('erasing a user (DELETE /v1/users/{id})', () => {
  it('removes the user from every engine of the node, caches and archives included; billing stays', async () => {
    const t = await openTestNode();
    await t.call('POST', '/v1/users', { id: 'gone', email: 'gone@example.com', tier: 'free' });
    await t.call('POST', '/v1/users', { id: 'stays', email: 'stays@example.com', tier: 'free' });
    const token = (await t.call('POST', '/v1/admin/tokens', { name: 'g', role: 'user', user_id: 'gone' })).body.token;
    await t.call('PUT', '/v1/users/gone/preferences', { a: 1 });
    expect((await t.call('GET', '/v1/users/gone/preferences')).body).toEqual({ a: 1 }); // now cached
    const hot = (await t.call('POST', '/v1/conversations', { user_id: 'gone' })).body.id;
    await t.call('POST', `/v1/conversations/${hot}/messages`, { role: 'user', content: 'hello' });
    await t.call('GET', `/v1/conversations/${hot}/messages`); // cached
    const old = (await t.call('POST', '/v1/conversations', { user_id: 'gone' })).body.id;
    await t.call('POST', `/v1/conversations/${old}/messages`, { role: 'user', content: 'old' });
    const keep = (await t.call('POST', '/v1/conversations', { user_id: 'stays' })).body.id;
    await t.call('POST', `/v1/conversations/${keep}/messages`, { role: 'user', content: 'keep me' });
    // Idle past the free tier's hot window (3 days), inside its retention (7).
    t.node.sql.db.prepare('UPDATE conversations SET updated_at = ? WHERE id = ?').run(new Date(Date.now() - 4 * 86_400_000).toISOString(), old);
    await t.node.runConversationArchive(Date.now());
    const archiveKey = (await t.call('GET', `/v1/conversations/${old}/archive`)).body.key as string;
    await t.call('POST', '/v1/usage', { user_id: 'gone', model: 'm', input_tokens: 1, output_tokens: 1 });
    await t.call('POST', '/v1/billing/entries', { user_id: 'gone', kind: 'charge', amount_micros: 1, currency: 'EUR', ref: 'g-1' });

    const started = await t.call('DELETE', '/v1/users/gone');
    expect(started.status).toBe(202);
    await expect.poll(async () => (await t.call('GET', `/v1/jobs/${started.body.job_id}`)).body, { timeout: 10_000 }).toMatchObject({ state: 'done', progress: 1 });

    expect((await t.call('GET', '/v1/users/gone')).status).toBe(404);
    expect((await t.call('GET', '/v1/users/gone/preferences')).status).toBe(404);
    expect((await t.call('GET', `/v1/conversations/${hot}/messages`)).status).toBe(404);
    expect((await t.call('GET', `/v1/conversations/${old}`)).status).toBe(404);
    expect((await t.call('GET', '/v1/users/gone/usage')).status).toBe(404);
    expect((await t.call('GET', '/v1/users/stays', undefined, token)).status).toBe(401);
    expect(await t.node.conversationArchive['objects'].head(archiveKey)).toBeUndefined();
    for (const table of ['messages', 'usage_events', 'usage_daily', 'preferences', 'conversation_segments']) {
      const col = table === 'messages' ? 'conversation_id' : 'user_id';
      const ids = table === 'messages' ? [hot, old] : ['gone'];
      const n = t.node.sql.db.prepare(`SELECT COUNT(*) AS n FROM ${table} WHERE ${col} IN (${ids.map(() => '?').join(',')})`).get(...ids) as { n: number };
      expect(n.n, table).toBe(0);
    }
    // Another user's data is untouched; the ledger keeps its (append-only) record.
    expect((await t.call('GET', `/v1/conversations/${keep}/messages`)).body.items[0].content).toBe('keep me');
    expect((await t.call('GET', '/v1/billing/entries?user_id=gone')).body.items).toHaveLength(1);
    expect((await t.call('GET', '/v1/admin/audit?limit=5')).body.items.map((e: { action: string }) => e.action)).toEqual(expect.arrayContaining(['users.erase', 'users.erase_done']));
    // An erasure cut short after its commit (kill -9, a failing object store) left archive
    // objects that no row names any more: erasing the id again runs the clean-up again.
    const leftover = `conversations/gone/${old}/9.msgpack.gz`;
    await t.node.conversationArchive['objects'].put(leftover, (async function* () {
      yield Buffer.from('left behind');
    })());
    const again = await t.call('DELETE', '/v1/users/gone');
    expect(again.status).toBe(202);
    await expect.poll(async () => (await t.call('GET', `/v1/jobs/${again.body.job_id}`)).body, { timeout: 10_000 }).toMatchObject({ state: 'done', result: { archive_objects: 1 } });
    expect(await t.node.conversationArchive['objects'].head(leftover)).toBeUndefined();
    expect((await t.call('DELETE', '/v1/users/never-was')).status).toBe(404);
    await t.close();
  });

  it('never gives an erased id out again, so nothing keyed by it (the ledger above all) reaches a new owner', async () => {
    const t = await openTestNode();
    try {
      await t.call('POST', '/v1/users', { id: 'recyc', email: 'old@example.com', tier: 'free' });
      await t.call('POST', '/v1/billing/entries', { user_id: 'recyc', kind: 'charge', amount_micros: 100, currency: 'USD', ref: 'r-1', description: 'OLD OWNER visa 4242' });
      const erase = await t.call('POST', '/v1/users/recyc/erase');
      await expect.poll(async () => (await t.call('GET', `/v1/jobs/${erase.body.job_id}`)).body.state, { timeout: 10_000 }).toBe('done');
      // 0.7.0 created the user again, and its token read the old owner's billing entry.
      const again = await t.call('POST', '/v1/users', { id: 'recyc', email: 'new@example.com', tier: 'free' });
      expect(again.status).toBe(409);
      expect(again.body.error.message).toMatch(/belonged to an erased user and is never reused/);
      // Nor can a token be bound to the id, nor a ledger entry written for it.
      expect((await t.call('POST', '/v1/admin/tokens', { name: 'x', role: 'user', user_id: 'recyc' })).status).toBe(404);
      expect((await t.call('POST', '/v1/billing/entries', { user_id: 'recyc', kind: 'charge', amount_micros: 1, currency: 'USD', ref: 'r-2' })).status).toBe(404);
      // A server-chosen id is a fresh UUID; the old entry stays in the ledger under the old id only.
      const fresh = await t.call('POST', '/v1/users', { email: 'new@example.com', tier: 'free' });
      expect(fresh.status).toBe(201);
      const token = (await t.call('POST', '/v1/admin/tokens', { name: 'n', role: 'user', user_id: fresh.body.id })).body.token;
      expect((await t.call('GET', '/v1/billing/entries', undefined, token)).body.items).toEqual([]);
      expect((await t.call('GET', '/v1/billing/entries?user_id=recyc')).body.items.map((e: { ref: string }) => e.ref)).toEqual(['r-1']);
      // The tombstone survives a restart, and erasures from before the tombstone table are known from the audit log.
      expect(t.node.sql.db.prepare('SELECT id FROM erased_users').all()).toEqual([{ id: 'recyc' }]);
    } finally {
      await t.close();
    }
  });

  it('nothing written for a user survives an erasure that commits first, and feedback needs a live user', async () => {
    const t = await openTestNode();
    try {
      await t.call('POST', '/v1/users', { id: 'race', email: 'race@example.com', tier: 'free' });
      // Creates racing the erasure: each either commits before it (and is erased) or is refused.
      const erase = t.call('POST', '/v1/users/race/erase');
      const creates = Array.from({ length: 60 }, (_, i) => t.call('POST', '/v1/conversations', { user_id: 'race', title: `c${i}` }));
      const job = (await erase).body.job_id;
      const statuses = (await Promise.all(creates)).map((r) => r.status);
      await expect.poll(async () => (await t.call('GET', `/v1/jobs/${job}`)).body.state, { timeout: 10_000 }).toBe('done');
      expect(statuses.every((s) => s === 201 || s === 404)).toBe(true);
      expect(t.node.sql.db.prepare("SELECT COUNT(*) AS n FROM conversations WHERE user_id = 'race'").get()).toEqual({ n: 0 });
      // In review feedback attached to erased and never-created ids alike.
      for (const user_id of ['race', 'never-was']) {
        expect((await t.call('POST', '/v1/feedback/ratings', { prompt: 'p', response: 'r', score: 5, user_id })).status, user_id).toBe(404);
        expect((await t.call('POST', '/v1/feedback/comparisons', { prompt: 'p', responses: ['a', 'b'], chosen: 0, user_id })).status, user_id).toBe(404);
      }
    } finally {
      await t.close();
    }
  });
});
