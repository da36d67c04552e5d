import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestNode } from '../helpers/node.js';

// A user token is its own user's only. On another user's ids every endpoint of the chat side
// answers as if they did not exist (404), or refuses the role outright (403) where the
// endpoint is for trusted backends — and nothing of the other user changes.

describe('tenant isolation: conversations, users, usage, billing', () => {
  let t: Awaited<ReturnType<typeof openTestNode>>;
  let alice: string;
  let reader: string;
  let bobConv: string;
  let aliceConv: string;

  beforeAll(async () => {
    t = await openTestNode();
    for (const id of ['alice', 'bob']) await t.call('POST', '/v1/users', { id, email: `${id}@example.com`, tier: 'pro' });
    alice = (await t.call('POST', '/v1/admin/tokens', { name: 'alice', role: 'user', user_id: 'alice' })).body.token;
    reader = (await t.call('POST', '/v1/admin/tokens', { name: 'dash', role: 'reader' })).body.token;
    bobConv = (await t.call('POST', '/v1/conversations', { user_id: 'bob', title: 'secret' })).body.id;
    await t.call('POST', `/v1/conversations/${bobConv}/messages`, { role: 'user', content: 'bob only' });
    await t.call('PUT', '/v1/users/bob/preferences', { theme: 'dark' });
    await t.call('POST', '/v1/usage', { user_id: 'bob', model: 'm', input_tokens: 5, output_tokens: 5 });
    await t.call('POST', '/v1/billing/entries', { user_id: 'bob', kind: 'charge', amount_micros: 5, currency: 'USD', ref: 'bob-1' });
    await t.call('POST', '/v1/billing/entries', { user_id: 'alice', kind: 'charge', amount_micros: 7, currency: 'USD', ref: 'alice-1' });
    aliceConv = (await t.call('POST', '/v1/conversations', { user_id: 'alice' }, alice)).body.id;
  });
  afterAll(() => t.close());

  it("a user token on another user's ids gets 404 (or 403 on service-only routes), and changes nothing", async () => {
    const lsn = t.node.sql.writer.lastLsn;
    const matrix: Array<[string, string, unknown, number]> = [
      ['GET', '/v1/users/bob', undefined, 404],
      ['GET', '/v1/users/bob/preferences', undefined, 404],
      ['PUT', '/v1/users/bob/preferences', { theme: 'pink' }, 404],
      ['GET', '/v1/users/bob/usage', undefined, 404],
      ['POST', '/v1/conversations', { user_id: 'bob' }, 404],
      ['GET', '/v1/conversations?user_id=bob', undefined, 404],
      ['GET', `/v1/conversations/${bobConv}`, undefined, 404],
      ['POST', `/v1/conversations/${bobConv}/messages`, { role: 'user', content: 'hi bob' }, 404],
      ['GET', `/v1/conversations/${bobConv}/messages`, undefined, 404],
      ['GET', `/v1/conversations/${bobConv}/archive`, undefined, 404],
      ['DELETE', `/v1/conversations/${bobConv}`, undefined, 404],
      ['GET', '/v1/billing/entries?user_id=bob', undefined, 404],
      ['PATCH', '/v1/users/bob', { tier: 'free' }, 403],
      ['DELETE', '/v1/users/bob', undefined, 403],
      ['POST', '/v1/usage', { user_id: 'bob', model: 'm', input_tokens: 1, output_tokens: 1 }, 403],
      ['POST', '/v1/billing/entries', { user_id: 'bob', kind: 'credit', amount_micros: 1, currency: 'USD', ref: 'evil' }, 403],
      ['GET', '/v1/billing/verify', undefined, 403],
      ['POST', '/v1/admin/jobs/conversation-archive', undefined, 403],
    ];
    for (const [method, path, body, status] of matrix) {
      const r = await t.call(method, path, body, alice);
      expect(r.status, `${method} ${path}`).toBe(status);
      expect(r.body.error.code).toBe(status === 404 ? 'not_found' : 'forbidden');
    }
    // The 404 for bob's conversation is the same as for one that never existed.
    const ghost = await t.call('GET', '/v1/conversations/never-was', undefined, alice);
    const real = await t.call('GET', `/v1/conversations/${bobConv}`, undefined, alice);
    expect(real.body.error.message.replace(bobConv, 'X')).toBe(ghost.body.error.message.replace('never-was', 'X'));
    expect(t.node.sql.writer.lastLsn).toBe(lsn);
    expect((await t.call('GET', `/v1/conversations/${bobConv}`)).body.message_count).toBe(1);
    expect((await t.call('GET', '/v1/users/bob/preferences')).body).toEqual({ theme: 'dark' });
  });

  it("a user token cannot probe for another user's conversation ids: choosing an id is refused alike for taken and free ids", async () => {
    const lsn = t.node.sql.writer.lastLsn;
    // 0.7.0 answered 409 "a conversation with id … already exists" for bob's id.
    const taken = await t.call('POST', '/v1/conversations', { user_id: 'alice', id: bobConv }, alice);
    const free = await t.call('POST', '/v1/conversations', { user_id: 'alice', id: 'never-used-id' }, alice);
    for (const r of [taken, free]) {
      expect(r.status).toBe(403);
      expect(r.body.error.message).toBe('a user token cannot choose a conversation id; leave id out and the server assigns one');
    }
    expect(t.node.sql.writer.lastLsn).toBe(lsn);
    // A trusted backend still chooses ids (and a taken one is a conflict for it).
    expect((await t.call('POST', '/v1/conversations', { user_id: 'alice', id: 'svc-chosen' })).status).toBe(201);
    expect((await t.call('POST', '/v1/conversations', { user_id: 'alice', id: bobConv })).status).toBe(409);
  });

  it('the same token works on its own data, and its lists hold only its own', async () => {
    expect((await t.call('POST', `/v1/conversations/${aliceConv}/messages`, { role: 'user', content: 'mine' }, alice)).status).toBe(201);
    expect((await t.call('GET', `/v1/conversations/${aliceConv}/messages`, undefined, alice)).body.items).toHaveLength(1);
    const list = await t.call('GET', '/v1/conversations', undefined, alice);
    expect(list.body.items.map((c: { id: string }) => c.id).sort()).toEqual([aliceConv, 'svc-chosen'].sort());
    const bills = await t.call('GET', '/v1/billing/entries', undefined, alice);
    expect(bills.body.items.map((e: { ref: string }) => e.ref)).toEqual(['alice-1']);
    expect((await t.call('GET', '/v1/users/alice/usage', undefined, alice)).status).toBe(200);
    expect((await t.call('PUT', '/v1/users/alice/preferences', { lang: 'fr' }, alice)).status).toBe(200);
  });

  it('a reader token reads anyone but writes nothing', async () => {
    expect((await t.call('GET', `/v1/conversations/${bobConv}/messages`, undefined, reader)).status).toBe(200);
    expect((await t.call('GET', '/v1/billing/entries', undefined, reader)).body.items).toHaveLength(2);
    expect((await t.call('POST', `/v1/conversations/${bobConv}/messages`, { role: 'user', content: 'x' }, reader)).status).toBe(403);
    expect((await t.call('POST', '/v1/conversations', { user_id: 'bob' }, reader)).status).toBe(403);
    expect((await t.call('DELETE', `/v1/conversations/${bobConv}`, undefined, reader)).status).toBe(403);
  });

  it('no token: 401 everywhere', async () => {
    for (const path of ['/v1/conversations?user_id=bob', `/v1/conversations/${bobConv}`, '/v1/billing/entries', '/v1/users/bob/usage']) {
      expect((await t.call('GET', path, undefined, null)).status).toBe(401);
    }
  });
});
