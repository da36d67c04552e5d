import { describe, expect, it } from 'vitest';
import { openTestNode } from '../helpers/node.js';

describe('privacy routes', () => {
  it('POST /v1/privacy/scan returns typed findings with offsets; bad input is a 400', async () => {
    const t = await openTestNode();
    const text = 'reach me at a@b.io, card 4242 4242 4242 4242';
    const r = await t.call('POST', '/v1/privacy/scan', { text });
    expect(r.status).toBe(200);
    expect(r.body.findings.map((f: { type: string; start: number; end: number }) => [f.type, text.slice(f.start, f.end)])).toEqual([
      ['email', 'a@b.io'],
      ['credit_card', '4242 4242 4242 4242'],
    ]);
    expect((await t.call('POST', '/v1/privacy/scan', { text: 42 })).status).toBe(400);
    expect((await t.call('POST', '/v1/privacy/scan', {})).status).toBe(400);
    await t.close();
  });

  it('tags a conversation with the kinds of personal data its messages contain', async () => {
    const t = await openTestNode();
    await t.call('POST', '/v1/users', { id: 'u', email: 'u@example.com', tier: 'free' });
    const id = (await t.call('POST', '/v1/conversations', { user_id: 'u' })).body.id;
    await t.call('POST', `/v1/conversations/${id}/messages`, { role: 'user', content: 'hello there' });
    expect((await t.call('GET', `/v1/conversations/${id}`)).body.pii).toEqual([]);
    await t.call('POST', `/v1/conversations/${id}/messages`, { role: 'user', content: 'mail me: x@y.org' });
    await t.call('POST', `/v1/conversations/${id}/messages`, { role: 'user', content: 'my ssn is 123-45-6789, mail x@y.org' });
    expect((await t.call('GET', `/v1/conversations/${id}`)).body.pii).toEqual(['email', 'ssn']);
    expect((await t.call('GET', '/v1/conversations?user_id=u')).body.items[0].pii).toEqual(['email', 'ssn']);
    await t.close();
  });
});
